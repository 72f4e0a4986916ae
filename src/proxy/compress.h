/* compress: streaming gzip (zlib) and brotli encoders for proxied
 * responses, and a decoder of (already validated) chunked framing.
 *
 * Memory per compressed response is bounded: zlib with a 32 KiB window
 * (about 256 KiB of state), brotli quality 4 with a 256 KiB window (lgwin
 * 18, about 1 MiB); the proxy feeds them from its 32 KiB buffers and writes
 * their output as chunks from another 32 KiB buffer, so bodies are never
 * held whole. */
#ifndef DV_PROXY_COMPRESS_H
#define DV_PROXY_COMPRESS_H

#include "proxy/edge.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dv_compressor;

/* gzip level (1-9) and brotli quality (0-11) used by the proxy. */
#define DV_COMPRESS_GZIP_LEVEL 5
#define DV_COMPRESS_BR_QUALITY 4

/* NULL if the encoder cannot be created (out of memory in the library). */
struct dv_compressor *dv_compressor_new(enum dv_edge_encoding enc);
void dv_compressor_free(struct dv_compressor *c);

enum dv_compress_op { DV_COMPRESS_PROCESS, DV_COMPRESS_FLUSH, DV_COMPRESS_FINISH };

/* Runs the encoder: consumes up to len input bytes (*consumed), writes up to
 * cap output bytes (*produced). FLUSH emits everything buffered so far
 * (a sync flush); FINISH ends the stream once all input is consumed.
 * Returns 1 when FINISH completed (everything written), 0 to call again
 * (more output room, more input), -1 on an encoder error. */
int dv_compressor_run(struct dv_compressor *c, enum dv_compress_op op, const void *in, size_t len,
                      size_t *consumed, void *out, size_t cap, size_t *produced);

/* Chunked framing decoder for bodies the proxy has already validated. */
struct dv_unchunk {
	int state;
	uint64_t remaining; /* data bytes left in the current chunk */
	bool done;          /* the last chunk and trailers were passed */
};

void dv_unchunk_init(struct dv_unchunk *u);
/* Skips framing at the start of in[0..len); returns the bytes skipped and
 * sets *data to the chunk data bytes that follow (possibly 0). Consume data
 * with dv_unchunk_took(). */
size_t dv_unchunk_skip(struct dv_unchunk *u, const char *in, size_t len, size_t *data);
void dv_unchunk_took(struct dv_unchunk *u, size_t n);

#endif

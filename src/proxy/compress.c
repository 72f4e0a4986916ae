#include "proxy/compress.h"

#include "core/alloc.h"

#include <brotli/encode.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct dv_compressor {
	enum dv_edge_encoding enc;
	z_stream z;
	BrotliEncoderState *br;
	bool finished;
};

struct dv_compressor *dv_compressor_new(enum dv_edge_encoding enc)
{
	struct dv_compressor *c = dv_xcalloc(1, sizeof *c);
	c->enc = enc;
	if (enc == DV_EDGE_ENC_GZIP) {
		/* windowBits 15 + 16: a gzip wrapper; memLevel 8: zlib's default. */
		if (deflateInit2(&c->z, DV_COMPRESS_GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
			free(c);
			return NULL;
		}
	} else if (enc == DV_EDGE_ENC_BR) {
		c->br = BrotliEncoderCreateInstance(NULL, NULL, NULL);
		if (!c->br) {
			free(c);
			return NULL;
		}
		BrotliEncoderSetParameter(c->br, BROTLI_PARAM_QUALITY, DV_COMPRESS_BR_QUALITY);
		BrotliEncoderSetParameter(c->br, BROTLI_PARAM_LGWIN, 18);
		BrotliEncoderSetParameter(c->br, BROTLI_PARAM_MODE, BROTLI_MODE_TEXT);
	} else {
		free(c);
		return NULL;
	}
	return c;
}

void dv_compressor_free(struct dv_compressor *c)
{
	if (!c)
		return;
	if (c->enc == DV_EDGE_ENC_GZIP)
		deflateEnd(&c->z);
	else if (c->br)
		BrotliEncoderDestroyInstance(c->br);
	free(c);
}

int dv_compressor_run(struct dv_compressor *c, enum dv_compress_op op, const void *in, size_t len,
                      size_t *consumed, void *out, size_t cap, size_t *produced)
{
	*consumed = *produced = 0;
	if (c->finished)
		return 1;
	if (c->enc == DV_EDGE_ENC_GZIP) {
		c->z.next_in = (Bytef *)(uintptr_t)in;
		c->z.avail_in = (uInt)(len > 0x7fffffff ? 0x7fffffff : len);
		c->z.next_out = out;
		c->z.avail_out = (uInt)cap;
		int flush = op == DV_COMPRESS_FINISH ? Z_FINISH : op == DV_COMPRESS_FLUSH ? Z_SYNC_FLUSH : Z_NO_FLUSH;
		int rc = deflate(&c->z, flush);
		*consumed = (size_t)((const Bytef *)c->z.next_in - (const Bytef *)in);
		*produced = cap - c->z.avail_out;
		if (rc == Z_STREAM_END) {
			c->finished = true;
			return 1;
		}
		if (rc != Z_OK && rc != Z_BUF_ERROR)
			return -1;
		return 0;
	}
	size_t avail_in = len, avail_out = cap;
	const uint8_t *next_in = in;
	uint8_t *next_out = out;
	BrotliEncoderOperation bop = op == DV_COMPRESS_FINISH  ? BROTLI_OPERATION_FINISH
	                             : op == DV_COMPRESS_FLUSH ? BROTLI_OPERATION_FLUSH
	                                                       : BROTLI_OPERATION_PROCESS;
	if (!BrotliEncoderCompressStream(c->br, bop, &avail_in, &next_in, &avail_out, &next_out, NULL))
		return -1;
	*consumed = len - avail_in;
	*produced = cap - avail_out;
	if (op == DV_COMPRESS_FINISH && BrotliEncoderIsFinished(c->br)) {
		c->finished = true;
		return 1;
	}
	return 0;
}

/* ---- chunked framing ---- */

enum { U_SIZE, U_EXT, U_DATA, U_DATA_CR, U_DATA_LF, U_TRAILER_START, U_TRAILER, U_DONE };

void dv_unchunk_init(struct dv_unchunk *u)
{
	memset(u, 0, sizeof *u);
	u->state = U_SIZE;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t dv_unchunk_skip(struct dv_unchunk *u, const char *in, size_t len, size_t *data)
{
	size_t i = 0;
	*data = 0;
	while (i < len) {
		char ch = in[i];
		switch (u->state) {
		case U_SIZE: {
			int h = hexval(ch);
			if (h >= 0) {
				u->remaining = u->remaining * 16 + (uint64_t)h;
				i++;
				break;
			}
			u->state = U_EXT;
			break;
		}
		case U_EXT: /* extensions, up to LF */
			i++;
			if (ch == '\n')
				u->state = u->remaining ? U_DATA : U_TRAILER_START;
			break;
		case U_DATA:
			*data = len - i < u->remaining ? len - i : (size_t)u->remaining;
			return i;
		case U_DATA_CR:
			i++;
			u->state = ch == '\r' ? U_DATA_LF : U_SIZE;
			if (ch == '\n')
				u->state = U_SIZE;
			break;
		case U_DATA_LF:
			i++;
			u->state = U_SIZE;
			break;
		case U_TRAILER_START: /* an empty line ends the body */
			i++;
			if (ch == '\n') {
				u->state = U_DONE;
				u->done = true;
			} else if (ch != '\r') {
				u->state = U_TRAILER;
			}
			break;
		case U_TRAILER:
			i++;
			if (ch == '\n')
				u->state = U_TRAILER_START;
			break;
		case U_DONE:
			return i;
		}
	}
	if (u->state == U_DATA)
		*data = 0;
	return i;
}

void dv_unchunk_took(struct dv_unchunk *u, size_t n)
{
	if (n == 0 || u->state != U_DATA)
		return;
	u->remaining -= n;
	if (u->remaining == 0)
		u->state = U_DATA_CR;
}

/* static: files and single-page apps served by the proxy itself, for routes
 * whose edge policy has a static directory.
 *
 * Paths are normalised (percent-decoded; "." and ".." segments, encoded
 * slashes and dots, NUL, backslashes and hidden files refused) and opened
 * with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) under the root's
 * directory fd, so that neither the request nor a symlink can leave the
 * root; kernels without openat2 get a walk with O_NOFOLLOW on every
 * component (no symlinks at all). */
#ifndef DV_PROXY_STATIC_H
#define DV_PROXY_STATIC_H

#include "proxy/edge.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct dv_static_request {
	bool head;                    /* HEAD: no body */
	const char *method;
	size_t method_len;
	const char *target;           /* the request target (path and query) */
	size_t target_len;
	const char *if_none_match, *if_modified_since, *range, *if_range, *accept_encoding;
	size_t if_none_match_len, if_modified_since_len, range_len, if_range_len, accept_encoding_len;
};

struct dv_static_response {
	int status;                   /* 200, 206, 301, 304, or an error (400 403 404 405 416) */
	const char *message;          /* for errors: a static reason */
	char fields[1536];            /* response fields for 2xx/3xx ("Name: value\r\n"...) and for
	                               * 405/416 (Allow, Content-Range) */
	size_t fields_len;
	int fd;                       /* the file to send (-1: none); the caller closes it */
	off_t offset;
	uint64_t length;              /* body bytes to send from offset */
};

/* Answers a request from the policy's directory. Never fails otherwise. */
void dv_static_serve(const struct dv_edge_policy *p, const struct dv_static_request *req,
                     struct dv_static_response *resp);

/* Normalises a request path (up to the query) into out: the path relative to the
 * root without a leading slash ("" for the root itself), segments joined by
 * '/'. *dir is set when the path ends with '/'. Returns 0, or -1 for a path
 * that must be refused (traversal, encoded '/' or '.', NUL, backslash,
 * hidden segment other than .well-known, bad escape, too long). */
int dv_static_normalize(const char *path, size_t len, char *out, size_t cap, bool *dir);

/* True for file names that carry a content hash (app.3f9a1c2b.js,
 * index-BdX3kq7_.js): those get immutable one-year caching. */
bool dv_static_hashed_name(const char *name);

/* Strong ETag of a file version: "\"SIZE-MTIMENS\"" in hex (+ suffix). */
void dv_static_etag(uint64_t size, uint64_t mtime_ns, const char *suffix, char *out, size_t cap);

/* True if an If-None-Match value matches the ETag (weak comparison). */
bool dv_static_etag_match(const char *header, size_t len, const char *etag);

/* Parses a single "bytes=" range against a file size. Returns 1 with
 * start and end (inclusive) for a satisfiable range, 0 to ignore the header
 * (malformed or several ranges: the whole file is sent), -1 for 416. */
int dv_static_parse_range(const char *v, size_t len, uint64_t size, uint64_t *start, uint64_t *end);

#endif

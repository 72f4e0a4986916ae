/* http1: a strict, zero-copy HTTP/1.1 message parser (RFC 9110 / RFC 9112).
 *
 * The parser never allocates and never copies: every pointer it returns points
 * into the caller's buffer and is valid as long as that buffer is unchanged.
 * It parses a complete message head (start line + header fields + empty line)
 * in one call; a caller that has only part of a head calls again with more
 * bytes (heads are small, so re-scanning is cheaper than keeping state).
 * Bodies are framed by the caller from the result: Content-Length, chunked
 * (scanned incrementally by struct dv_http1_chunked), or until close.
 *
 * It is strict wherever leniency enables request smuggling or response
 * splitting: see dv_http1_parse_request() for the list of what is rejected.
 */
#ifndef DV_HTTP_HTTP1_H
#define DV_HTTP_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Return codes of the parse functions (a non-negative value is the length of
 * the parsed head in bytes, including the final CRLF CRLF). */
#define DV_HTTP1_INCOMPLETE (-1) /* need more bytes; nothing is wrong yet */
#define DV_HTTP1_ERROR (-2)      /* malformed: see the result's error_status/error */

/* Limits applied while parsing. Exceeding one is an error with the status
 * given beside it (a server answers with that status and closes). */
struct dv_http1_limits {
	size_t max_start_line;   /* request/status line incl. CRLF; default 8192 -> 414 */
	size_t max_head_bytes;   /* whole head incl. start line;  default 65536 -> 431 */
	size_t max_fields;       /* header field lines;           default 100   -> 431 */
};

/* Fills *limits with the defaults above. */
void dv_http1_limits_default(struct dv_http1_limits *limits);

/* One header field: name and value point into the parsed buffer. The value has
 * leading and trailing whitespace (SP/HTAB) removed. */
struct dv_http1_field {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

enum dv_http1_framing {
	DV_HTTP1_BODY_NONE = 0, /* no body (no CL/TE in a request; 1xx/204/304/HEAD response) */
	DV_HTTP1_BODY_LENGTH,   /* exactly content_length bytes (may be 0) */
	DV_HTTP1_BODY_CHUNKED,  /* chunked transfer coding; scan with dv_http1_chunked */
	DV_HTTP1_BODY_UNTIL_CLOSE /* responses only: the body ends when the server closes */
};

/* What both request and response results share. Filled by the parse calls.
 * `fields` is caller-provided storage for up to `fields_cap` fields; a head
 * with more fields than limits->max_fields is rejected with 431. */
struct dv_http1_head {
	int minor_version;            /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
	struct dv_http1_field *fields; /* caller's array (set before the call) */
	size_t fields_cap;            /* its capacity (set before the call) */
	size_t nfields;               /* how many were parsed */

	enum dv_http1_framing framing;
	uint64_t content_length;      /* valid when framing == DV_HTTP1_BODY_LENGTH */
	bool keep_alive;              /* after this message the connection may be reused
	                               * (HTTP/1.1 without "close", or HTTP/1.0 with
	                               * "keep-alive"); a response framed until close
	                               * always has keep_alive == false */
	bool connection_upgrade;      /* Connection header lists "upgrade" */
	const char *upgrade;          /* Upgrade header value, or NULL */
	size_t upgrade_len;

	/* On DV_HTTP1_ERROR: the status a server should answer with (400, 414,
	 * 431, 501 for an unknown transfer coding in a request, 502 for any
	 * malformed response) and a short static English reason. */
	int error_status;
	const char *error;
};

struct dv_http1_request {
	struct dv_http1_head head;
	const char *method;
	size_t method_len;
	const char *target;           /* request-target as sent (origin-form, absolute-form,
	                               * authority-form for CONNECT, or "*") */
	size_t target_len;
	const char *host;             /* Host header value (or the authority of an
	                               * absolute-form target), NULL if absent */
	size_t host_len;
	bool expect_continue;         /* Expect: 100-continue present */
};

struct dv_http1_response {
	struct dv_http1_head head;
	int status;                   /* 100..999 */
	const char *reason;
	size_t reason_len;
};

/* Parses a request head at the start of buf[0..len).
 * Returns the head length (> 0), DV_HTTP1_INCOMPLETE, or DV_HTTP1_ERROR with
 * req->head.error_status and req->head.error set. Set req->head.fields and
 * req->head.fields_cap before calling; other members are overwritten.
 * limits may be NULL for the defaults.
 *
 * Leading empty lines (CRLF) before the request line are skipped, as RFC 9112
 * section 2.2 allows; they count toward the returned length.
 *
 * Rejected (400 unless stated): an invalid method token; a target with
 * control characters, spaces or non-ASCII bytes; a version other than
 * HTTP/1.0 or HTTP/1.1 (505); bare LF or bare CR anywhere in the head;
 * obs-fold (a field line starting with SP/HTAB); whitespace between a field
 * name and the colon; an empty or non-token field name; control characters
 * (other than HTAB) or DEL in a field value; both Content-Length and
 * Transfer-Encoding; Content-Length that is not all digits, overflows, or
 * appears more than once with different values (identical repeats, also as
 * a comma list "5, 5", are accepted); Transfer-Encoding whose final coding is
 * not "chunked", that lists "chunked" more than once, or that arrives in
 * HTTP/1.0 (the last two: 400); any other coding before chunked (501);
 * more than one Host header, a missing Host in HTTP/1.1, or a Host with
 * characters not allowed in an authority; start line longer than
 * max_start_line (414); head longer than max_head_bytes or more fields than
 * max_fields (431). An INCOMPLETE head that already exceeds a limit is
 * reported as the error at once (so a slow client cannot grow the buffer).
 */
int dv_http1_parse_request(const char *buf, size_t len, const struct dv_http1_limits *limits,
                           struct dv_http1_request *req);

/* Parses a response head at the start of buf[0..len). request_method is the
 * method of the request this answers (it decides that a response to HEAD has
 * no body; a 2xx to CONNECT has no body either). Returns as
 * dv_http1_parse_request(); any malformed response gives error_status 502.
 * Framing: 1xx, 204 and 304 have no body; else Transfer-Encoding chunked
 * (final coding), else Content-Length, else until close. Rejects the same
 * field-level problems as requests (CL+TE, differing CLs, obs-fold, ...),
 * except that a missing Host is of course fine.
 */
int dv_http1_parse_response(const char *buf, size_t len, const struct dv_http1_limits *limits,
                            const char *request_method, size_t request_method_len,
                            struct dv_http1_response *resp);

/* Case-insensitive comparison of a field name (or any token) with a
 * NUL-terminated lower-case literal. */
bool dv_http1_token_eq(const char *s, size_t len, const char *lower_literal);

/* Finds the first field named `lower_name` (lower-case literal) in a parsed
 * head; returns it or NULL. */
const struct dv_http1_field *dv_http1_find_field(const struct dv_http1_head *head,
                                                 const char *lower_name);

/* True if the field name is hop-by-hop and must not be forwarded by a proxy:
 * Connection, Keep-Alive, Proxy-Connection, Proxy-Authenticate (response),
 * Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade. (A proxy
 * re-adds Transfer-Encoding/Upgrade itself when it keeps that framing.)
 * Any field named by a token of the Connection header is hop-by-hop too: use
 * dv_http1_connection_lists() for that. */
bool dv_http1_is_hop_by_hop(const char *name, size_t name_len);

/* True if the Connection header(s) of `head` list the token `name`
 * (case-insensitive). */
bool dv_http1_connection_lists(const struct dv_http1_head *head, const char *name, size_t name_len);

/* ---- chunked transfer coding -------------------------------------------
 * An incremental scanner over a chunked body (RFC 9112 section 7.1). It does
 * not copy or rewrite: the caller forwards the scanned bytes verbatim (a proxy
 * passing the framing through) or uses the DATA spans to decode. Chunk
 * extensions are accepted if well-formed (";" token ["=" token|quoted-string]
 * with optional whitespace); trailers are parsed as header fields and
 * validated like header fields (they count toward max_trailer_bytes).
 * Rejected: a chunk size that is empty, has non-hex digits, or exceeds
 * 2^62; missing CRLF after chunk data; bare LF/CR; malformed extensions or
 * trailer lines; a chunk-size line longer than 4096 bytes; trailers longer
 * than max_trailer_bytes. */
struct dv_http1_chunked {
	int state;            /* private */
	uint64_t remaining;   /* private: data bytes left in the current chunk */
	size_t line_len;      /* private: bytes of the current size/trailer line */
	size_t trailer_bytes; /* private */
	size_t max_trailer_bytes; /* set by init; 65536 by default, may be changed */
	const char *error;    /* static reason when dv_http1_chunked_scan returned ERROR */
};

/* A run of bytes inside the caller's buffer. */
struct dv_http1_span {
	const char *data;
	size_t len;
};

enum dv_http1_chunked_result {
	DV_HTTP1_CHUNKED_MORE = 0, /* all of the input was consumed; body not finished */
	DV_HTTP1_CHUNKED_DONE = 1, /* body finished (last chunk, trailers and final CRLF);
	                            * *consumed tells where it ends: later bytes belong to
	                            * the next message */
	DV_HTTP1_CHUNKED_ERROR = -1 /* malformed; scanner->error says why */
};

void dv_http1_chunked_init(struct dv_http1_chunked *scanner);

/* Scans buf[0..len) and sets *consumed to how many bytes belong to the body
 * (== len unless DONE or ERROR). If data_spans is non-NULL, the chunk data
 * found in this call are reported through it (pointers into buf), up to
 * data_spans_cap spans; *ndata_spans receives the count, and scanning stops
 * early (returning MORE with *consumed < len) when the array is full.
 * Safe to call with any split of the input, down to one byte at a time. */
enum dv_http1_chunked_result dv_http1_chunked_scan(struct dv_http1_chunked *scanner,
                                                   const char *buf, size_t len, size_t *consumed,
                                                   struct dv_http1_span *data_spans,
                                                   size_t data_spans_cap, size_t *ndata_spans);

#endif

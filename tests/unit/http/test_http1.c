/* Unit tests for src/http/http1.c, through its public header only.
 *
 * Most of the coverage is two corpora of messages (requests, responses), each
 * entry with the exact expected outcome. Every entry is also re-parsed at every
 * shorter length: a prefix of a valid head must be INCOMPLETE, a prefix of a
 * malformed one INCOMPLETE or the same error, never a success. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http/http1.h"

#define MAX_FIELDS 128

/* Expected return: the whole message is the head, or the head is what comes
 * before the first CRLF CRLF (and a body follows). */
#define WHOLE (-100)
#define HEAD_END (-101)

enum { ANY = -1 };

struct msg_case {
	const char *name;
	const char *msg;
	size_t len;      /* 0: strlen(msg) (set it for messages with NUL bytes) */
	int expect;      /* WHOLE, HEAD_END, DV_HTTP1_INCOMPLETE or DV_HTTP1_ERROR */
	int status;      /* error_status when expect is DV_HTTP1_ERROR */
	int framing;     /* enum dv_http1_framing when valid */
	uint64_t content_length;
	int keep_alive;  /* 1, 0 or ANY */
	const char *method; /* responses: the request's method (NULL: GET) */
};

#define OK(n, m, f, cl, ka) { n, m, 0, WHOLE, 0, f, cl, ka, NULL }
#define OK_BODY(n, m, f, cl, ka) { n, m, 0, HEAD_END, 0, f, cl, ka, NULL }
#define BAD(n, m, st) { n, m, 0, DV_HTTP1_ERROR, st, 0, 0, ANY, NULL }
/* For messages with NUL bytes: m must be a string literal. */
#define BAD_NUL(n, m, st) { n, m, sizeof(m) - 1, DV_HTTP1_ERROR, st, 0, 0, ANY, NULL }
#define PARTIAL(n, m) { n, m, 0, DV_HTTP1_INCOMPLETE, 0, 0, 0, ANY, NULL }
#define ROK(n, meth, m, f, cl, ka) { n, m, 0, WHOLE, 0, f, cl, ka, meth }
#define ROK_BODY(n, meth, m, f, cl, ka) { n, m, 0, HEAD_END, 0, f, cl, ka, meth }
#define RBAD(n, m) { n, m, 0, DV_HTTP1_ERROR, 502, 0, 0, ANY, NULL }

enum {
	NONE = DV_HTTP1_BODY_NONE,
	LENGTH = DV_HTTP1_BODY_LENGTH,
	CHUNKED = DV_HTTP1_BODY_CHUNKED,
	CLOSE = DV_HTTP1_BODY_UNTIL_CLOSE,
};

#define H "Host: example.com\r\n"

static const struct msg_case request_cases[] = {
	/* valid */
	OK("simple GET 1.1", "GET / HTTP/1.1\r\n" H "\r\n", NONE, 0, 1),
	OK("GET 1.0 without Host", "GET /index.html HTTP/1.0\r\n\r\n", NONE, 0, 0),
	OK("1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", NONE, 0, 1),
	OK("1.0 keep-alive any case", "GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n", NONE, 0, 1),
	OK("1.0 keep-alive then close", "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
	   NONE, 0, 0),
	OK("1.1 close", "GET / HTTP/1.1\r\n" H "Connection: close\r\n\r\n", NONE, 0, 0),
	OK("1.1 close upper case", "GET / HTTP/1.1\r\n" H "CONNECTION: CLOSE\r\n\r\n", NONE, 0, 0),
	OK("1.1 Upgrade, close list", "GET / HTTP/1.1\r\n" H "Connection: Upgrade, close\r\n\r\n",
	   NONE, 0, 0),
	OK("1.1 close in second Connection line",
	   "GET / HTTP/1.1\r\n" H "Connection: upgrade\r\nConnection: ,close,\r\n\r\n", NONE, 0, 0),
	OK("1.1 'closed' is not close", "GET / HTTP/1.1\r\n" H "Connection: closed\r\n\r\n", NONE, 0,
	   1),
	OK_BODY("POST with Content-Length",
	        "POST /submit HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\nhello", LENGTH, 5, 1),
	OK("Content-Length 0", "POST / HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n", LENGTH, 0, 1),
	OK("identical duplicate Content-Length",
	   "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", LENGTH, 5, 1),
	OK("Content-Length list 5, 5", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\n",
	   LENGTH, 5, 1),
	OK("Content-Length list 5,5", "POST / HTTP/1.1\r\n" H "Content-Length: 5,5\r\n\r\n", LENGTH,
	   5, 1),
	OK("Content-Length leading zeros", "POST / HTTP/1.1\r\n" H "Content-Length: 007\r\n\r\n",
	   LENGTH, 7, 1),
	OK("Content-Length 2^64-1",
	   "POST / HTTP/1.1\r\n" H "Content-Length: 18446744073709551615\r\n\r\n", LENGTH,
	   UINT64_MAX, 1),
	OK("chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n", CHUNKED, 0, 1),
	OK("chunked any case", "POST / HTTP/1.1\r\n" H "transfer-encoding: ChUnKeD\r\n\r\n",
	   CHUNKED, 0, 1),
	OK("chunked with empty list elements",
	   "POST / HTTP/1.1\r\n" H "Transfer-Encoding: , chunked ,\r\n\r\n", CHUNKED, 0, 1),
	OK("leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", NONE, 0, 1),
	OK("OPTIONS *", "OPTIONS * HTTP/1.1\r\n" H "\r\n", NONE, 0, 1),
	OK("CONNECT authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
	   NONE, 0, 1),
	OK("absolute-form", "GET http://example.com:8080/a?b HTTP/1.1\r\nHost: other\r\n\r\n", NONE,
	   0, 1),
	OK("IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", NONE, 0, 1),
	OK("empty Host value", "GET / HTTP/1.1\r\nHost:\r\n\r\n", NONE, 0, 1),
	OK("Host with pct-encoding", "GET / HTTP/1.1\r\nHost: a%41b.example\r\n\r\n", NONE, 0, 1),
	OK("obs-text in a value", "GET / HTTP/1.1\r\n" H "X-Name: caf\xc3\xa9\r\n\r\n", NONE, 0, 1),
	OK("HTAB in a value", "GET / HTTP/1.1\r\n" H "X-A: a\tb\r\n\r\n", NONE, 0, 1),
	OK("no space after colon", "GET / HTTP/1.1\r\nHost:example.com\r\n\r\n", NONE, 0, 1),
	OK("empty value", "GET / HTTP/1.1\r\n" H "X-Empty:\r\nX-Spaces: \t \r\n\r\n", NONE, 0, 1),
	OK("extension method", "PURGE /x HTTP/1.1\r\n" H "\r\n", NONE, 0, 1),
	OK("method with dash", "M-SEARCH /x HTTP/1.1\r\n" H "\r\n", NONE, 0, 1),
	OK("target with query and odd chars", "GET /a/b?c=d&e=%20f|{}\"<> HTTP/1.1\r\n" H "\r\n", NONE,
	   0, 1),
	OK("Expect 100-continue",
	   "PUT /f HTTP/1.1\r\n" H "Expect: 100-Continue\r\nContent-Length: 3\r\n\r\n", LENGTH, 3, 1),
	OK("Upgrade websocket",
	   "GET /ws HTTP/1.1\r\n" H "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", NONE, 0, 1),

	/* incomplete */
	PARTIAL("empty buffer", ""),
	PARTIAL("method only", "GET"),
	PARTIAL("no final CRLF", "GET / HTTP/1.1\r\n" H),
	PARTIAL("ends in CR", "GET / HTTP/1.1\r\n" H "\r"),
	PARTIAL("ends in version", "GET / HTTP/1."),
	PARTIAL("ends in CR of request line", "GET / HTTP/1.1\r"),
	PARTIAL("only leading CRLFs", "\r\n\r\n\r"),
	PARTIAL("ends inside field name", "GET / HTTP/1.1\r\nHos"),

	/* start line */
	BAD("invalid method char", "G(T / HTTP/1.1\r\n" H "\r\n", 400),
	BAD("empty method", " / HTTP/1.1\r\n" H "\r\n", 400),
	BAD("two spaces after method", "GET  / HTTP/1.1\r\n" H "\r\n", 400),
	BAD("two spaces before version", "GET /  HTTP/1.1\r\n" H "\r\n", 400),
	BAD("control char in target", "GET /a\x01 HTTP/1.1\r\n" H "\r\n", 400),
	BAD("non-ASCII in target", "GET /caf\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 400),
	BAD("DEL in target", "GET /a\x7f HTTP/1.1\r\n" H "\r\n", 400),
	BAD("HTAB in target", "GET /a\tb HTTP/1.1\r\n" H "\r\n", 400),
	BAD("HTTP/0.9 style (no version)", "GET /\r\n\r\n", 400),
	BAD("HTTP/1.2", "GET / HTTP/1.2\r\n" H "\r\n", 505),
	BAD("HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", 505),
	BAD("HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505),
	BAD("h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
	BAD("lower-case version", "GET / http/1.1\r\n" H "\r\n", 400),
	BAD("version 1.10", "GET / HTTP/1.10\r\n" H "\r\n", 400),
	BAD("version 11.1", "GET / HTTP/11.1\r\n" H "\r\n", 400),
	BAD("space after version", "GET / HTTP/1.1 \r\n" H "\r\n", 400),
	BAD("'*' target for GET", "GET * HTTP/1.1\r\n" H "\r\n", 400),
	BAD("relative target", "GET index.html HTTP/1.1\r\n" H "\r\n", 400),
	BAD("CONNECT with origin-form", "CONNECT / HTTP/1.1\r\n" H "\r\n", 400),
	BAD("CONNECT without port", "CONNECT example.com HTTP/1.1\r\n" H "\r\n", 400),
	BAD("absolute-form with userinfo", "GET http://user@example.com/ HTTP/1.1\r\n" H "\r\n", 400),
	BAD("absolute-form with empty authority", "GET http:///x HTTP/1.1\r\n" H "\r\n", 400),
	BAD("absolute-form without //", "GET http:x HTTP/1.1\r\n" H "\r\n", 400),

	/* line endings and control characters */
	BAD("bare LF line ends", "GET / HTTP/1.1\n" H "\n", 400),
	BAD("bare LF after request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
	BAD("bare LF ending a field", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
	BAD("bare LF ending the head", "GET / HTTP/1.1\r\n" H "\n", 400),
	BAD("leading bare LF", "\nGET / HTTP/1.1\r\n" H "\r\n", 400),
	BAD("bare CR in request line", "GET / HTTP/1.1\rX\n" H "\r\n", 400),
	BAD("bare CR in value", "GET / HTTP/1.1\r\n" H "X-A: a\rb\r\n\r\n", 400),
	BAD("bare CR ending the head", "GET / HTTP/1.1\r\n" H "\rX", 400),
	BAD("bare CR in leading empty lines", "\r\rGET / HTTP/1.1\r\n" H "\r\n", 400),
	BAD("control char in value", "GET / HTTP/1.1\r\n" H "X-A: a\x01" "b\r\n\r\n", 400),
	BAD("escape char in value", "GET / HTTP/1.1\r\n" H "X-A: \x1b[0m\r\n\r\n", 400),
	BAD("DEL in value", "GET / HTTP/1.1\r\n" H "X-A: a\x7f\r\n\r\n", 400),
	BAD_NUL("NUL in value", "GET / HTTP/1.1\r\n" H "X-A: a\0b\r\n\r\n", 400),
	BAD_NUL("NUL in method", "G\0T / HTTP/1.1\r\n" H "\r\n", 400),
	BAD_NUL("NUL in target", "GET /\0 HTTP/1.1\r\n" H "\r\n", 400),

	/* field lines */
	BAD("obs-fold", "GET / HTTP/1.1\r\n" H "X-A: a\r\n b\r\n\r\n", 400),
	BAD("obs-fold with HTAB", "GET / HTTP/1.1\r\n" H "X-A: a\r\n\tb\r\n\r\n", 400),
	BAD("whitespace before first field", "GET / HTTP/1.1\r\n " H "\r\n", 400),
	BAD("space before colon", "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400),
	BAD("HTAB before colon", "GET / HTTP/1.1\r\n" H "Content-Length\t: 5\r\n\r\n", 400),
	BAD("empty field name", "GET / HTTP/1.1\r\n" H ": x\r\n\r\n", 400),
	BAD("non-token char in name", "GET / HTTP/1.1\r\n" H "X@Y: z\r\n\r\n", 400),
	BAD("non-ASCII in name", "GET / HTTP/1.1\r\n" H "X\xc3\xa9: z\r\n\r\n", 400),
	BAD("field without colon", "GET / HTTP/1.1\r\n" H "NoColon\r\n\r\n", 400),

	/* smuggling: Content-Length and Transfer-Encoding */
	BAD("CL and TE", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	    400),
	BAD("TE and CL", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
	    400),
	BAD("differing duplicate CL", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 6\r\n\r\n",
	    400),
	BAD("CL list 5, 6", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 6\r\n\r\n", 400),
	BAD("CL list then differing line",
	    "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\nContent-Length: 6\r\n\r\n", 400),
	BAD("CL empty", "POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", 400),
	BAD("CL non-digit", "POST / HTTP/1.1\r\n" H "Content-Length: abc\r\n\r\n", 400),
	BAD("CL plus sign", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n", 400),
	BAD("CL negative", "POST / HTTP/1.1\r\n" H "Content-Length: -5\r\n\r\n", 400),
	BAD("CL hex", "POST / HTTP/1.1\r\n" H "Content-Length: 0x10\r\n\r\n", 400),
	BAD("CL space inside", "POST / HTTP/1.1\r\n" H "Content-Length: 1 0\r\n\r\n", 400),
	BAD("CL trailing comma", "POST / HTTP/1.1\r\n" H "Content-Length: 5,\r\n\r\n", 400),
	BAD("CL overflow", "POST / HTTP/1.1\r\n" H "Content-Length: 18446744073709551616\r\n\r\n", 400),
	BAD("CL huge", "POST / HTTP/1.1\r\n" H "Content-Length: 99999999999999999999999999\r\n\r\n",
	    400),
	BAD("TE gzip only", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n", 400),
	BAD("TE chunked, gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, gzip\r\n\r\n",
	    400),
	BAD("TE gzip, chunked (unsupported coding)",
	    "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
	BAD("TE gzip then chunked on two lines",
	    "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
	BAD("TE chunked twice", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n",
	    400),
	BAD("TE chunked on two lines",
	    "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	    400),
	BAD("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
	BAD("TE empty", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n\r\n", 400),
	BAD("TE identity", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: identity\r\n\r\n", 400),
	BAD("TE chunked with parameter", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;q=1\r\n\r\n",
	    400),
	BAD("TE two tokens without comma", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked chunked\r\n\r\n",
	    400),
	BAD("TE quoted", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: \"chunked\"\r\n\r\n", 400),
	BAD("TE with vertical tab", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\x0b\r\n\r\n",
	    400),

	/* Host */
	BAD("missing Host in 1.1", "GET / HTTP/1.1\r\n\r\n", 400),
	BAD("missing Host with absolute-form", "GET http://example.com/ HTTP/1.1\r\n\r\n", 400),
	BAD("two Host headers", "GET / HTTP/1.1\r\n" H H "\r\n", 400),
	BAD("two different Host headers", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400),
	BAD("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
	BAD("Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
	BAD("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
	BAD("Host with comma", "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400),
	BAD("Host with bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
	BAD("Host with bad pct-encoding", "GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", 400),
	BAD("Host unclosed IPv6", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
	BAD("Host port only", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
};

static const struct msg_case response_cases[] = {
	ROK_BODY("200 with CL", NULL, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", LENGTH, 5,
	         1),
	ROK("200 chunked", NULL, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", CHUNKED, 0,
	    1),
	ROK("200 until close", NULL, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", CLOSE, 0,
	    0),
	ROK("until close wins over keep-alive", NULL,
	    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", CLOSE, 0, 0),
	ROK("HEAD response with CL", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", NONE,
	    0, 1),
	ROK("HEAD response chunked", "HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	    NONE, 0, 1),
	ROK("204", NULL, "HTTP/1.1 204 No Content\r\n\r\n", NONE, 0, 1),
	ROK("204 with CL 0", NULL, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", NONE, 0, 1),
	ROK("304 with CL", NULL, "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", NONE, 0, 1),
	ROK("100 Continue", NULL, "HTTP/1.1 100 Continue\r\n\r\n", NONE, 0, 1),
	ROK("101 Switching Protocols", NULL,
	    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	    NONE, 0, 1),
	ROK("CONNECT 200", "CONNECT", "HTTP/1.1 200 Connection established\r\n\r\n", NONE, 0, 1),
	ROK("CONNECT 407 with CL", "CONNECT",
	    "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", LENGTH, 0, 1),
	ROK("1.0 with CL", NULL, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", LENGTH, 2, 0),
	ROK("1.0 with CL and keep-alive", NULL,
	    "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n", LENGTH, 2, 1),
	ROK("1.1 with close", NULL, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
	    LENGTH, 2, 0),
	ROK("no reason phrase, no SP", NULL, "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", LENGTH, 0, 1),
	ROK("empty reason phrase", NULL, "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", LENGTH, 0, 1),
	ROK("obs-text in reason", NULL, "HTTP/1.1 200 D\xc3\xa9j\xc3\xa0 vu\r\nContent-Length: 0\r\n\r\n",
	    LENGTH, 0, 1),
	ROK("status 999", NULL, "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", LENGTH, 0, 1),
	ROK("duplicate identical CL", NULL,
	    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", LENGTH, 3, 1),
	ROK("two Host headers are no concern", NULL,
	    "HTTP/1.1 200 OK\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n", LENGTH, 0, 1),

	{ "incomplete response", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", 0, DV_HTTP1_INCOMPLETE, 0,
	  0, 0, ANY, NULL },

	RBAD("status with two digits", "HTTP/1.1 20 OK\r\n\r\n"),
	RBAD("status with four digits", "HTTP/1.1 2000 OK\r\n\r\n"),
	RBAD("status 099", "HTTP/1.1 099 Low\r\n\r\n"),
	RBAD("status not digits", "HTTP/1.1 abc OK\r\n\r\n"),
	RBAD("HTTP/2 response", "HTTP/2 200 OK\r\n\r\n"),
	RBAD("HTTP/1.2 response", "HTTP/1.2 200 OK\r\n\r\n"),
	RBAD("lower-case version", "http/1.1 200 OK\r\n\r\n"),
	RBAD("leading CRLF", "\r\nHTTP/1.1 200 OK\r\n\r\n"),
	RBAD("bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
	RBAD("control char in reason", "HTTP/1.1 200 O\x01K\r\n\r\n"),
	RBAD("CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
	RBAD("differing CLs", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
	RBAD("TE gzip, chunked is 502 not 501",
	     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
	RBAD("TE not ending in chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
	RBAD("TE in HTTP/1.0 response", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
	RBAD("obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n"),
	RBAD("space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
	RBAD("CL with 204 still validated",
	     "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n"),
};

static int expected_length(const struct msg_case *c, size_t len)
{
	if (c->expect == WHOLE)
		return (int)len;
	if (c->expect == HEAD_END) {
		const char *end = memmem(c->msg, len, "\r\n\r\n", 4);
		assert_non_null(end);
		return (int)(end + 4 - c->msg);
	}
	return c->expect;
}

static size_t case_len(const struct msg_case *c)
{
	return c->len ? c->len : strlen(c->msg);
}

/* Every pointer the parser returns must lie inside the head it parsed. */
static void assert_inside(const char *p, size_t n, const char *buf, int head_len)
{
	assert_true(p >= buf && p + n <= buf + head_len);
}

static void check_head_pointers(const struct dv_http1_head *head, const char *buf, int head_len)
{
	for (size_t i = 0; i < head->nfields; i++) {
		assert_inside(head->fields[i].name, head->fields[i].name_len, buf, head_len);
		assert_inside(head->fields[i].value, head->fields[i].value_len, buf, head_len);
		assert_true(head->fields[i].name_len > 0);
	}
	if (head->upgrade)
		assert_inside(head->upgrade, head->upgrade_len, buf, head_len);
}

static int parse_case(const struct msg_case *c, const char *buf, size_t len,
                      struct dv_http1_field *fields, struct dv_http1_head **head_out,
                      struct dv_http1_request *req, struct dv_http1_response *resp, bool request)
{
	if (request) {
		req->head.fields = fields;
		req->head.fields_cap = MAX_FIELDS;
		*head_out = &req->head;
		return dv_http1_parse_request(buf, len, NULL, req);
	}
	const char *method = c->method ? c->method : "GET";
	resp->head.fields = fields;
	resp->head.fields_cap = MAX_FIELDS;
	*head_out = &resp->head;
	return dv_http1_parse_response(buf, len, NULL, method, strlen(method), resp);
}

static void run_case(const struct msg_case *c, bool request)
{
	struct dv_http1_field fields[MAX_FIELDS];
	size_t len = case_len(c);
	struct dv_http1_request req;
	struct dv_http1_response resp;
	struct dv_http1_head *head;
	int want = expected_length(c, len);
	int rc = parse_case(c, c->msg, len, fields, &head, &req, &resp, request);
	if (rc != want || (want == DV_HTTP1_ERROR && head->error_status != c->status)) {
		fail_msg("%s case \"%s\": got %d (status %d, %s), want %d (status %d)",
		         request ? "request" : "response", c->name, rc, head->error_status,
		         head->error ? head->error : "-", want, c->status);
	}
	if (rc == DV_HTTP1_ERROR) {
		assert_non_null(head->error);
	} else if (rc >= 0) {
		if ((int)head->framing != c->framing || head->content_length != c->content_length ||
		    (c->keep_alive != ANY && head->keep_alive != (c->keep_alive == 1)))
			fail_msg("case \"%s\": framing %d cl %llu keep_alive %d", c->name, head->framing,
			         (unsigned long long)head->content_length, head->keep_alive);
		assert_int_equal(head->error_status, 0);
		assert_null(head->error);
		check_head_pointers(head, c->msg, rc);
	}
	/* Every shorter prefix: INCOMPLETE, or the same error (errors found
	 * only once the head is complete cannot show in a prefix). */
	size_t upto = rc >= 0 ? (size_t)rc : len;
	for (size_t k = 0; k < upto; k++) {
		int prc = parse_case(c, c->msg, k, fields, &head, &req, &resp, request);
		if (prc == DV_HTTP1_INCOMPLETE)
			continue;
		if (rc == DV_HTTP1_ERROR && prc == DV_HTTP1_ERROR && head->error_status == c->status)
			continue;
		fail_msg("case \"%s\": prefix of %zu bytes gave %d", c->name, k, prc);
	}
}

/* One cmocka test per corpus message; the state is the message. */
static void test_request_case(void **state)
{
	run_case(*state, true);
}

static void test_response_case(void **state)
{
	run_case(*state, false);
}

#define NREQUEST_CASES (sizeof request_cases / sizeof request_cases[0])
#define NRESPONSE_CASES (sizeof response_cases / sizeof response_cases[0])

static void test_corpus_size(void **state)
{
	(void)state;
	/* The module's brief asks for at least 60 messages. */
	assert_true(NREQUEST_CASES + NRESPONSE_CASES >= 60);
}

/* ---- field-level checks ---------------------------------------------------- */

#define S(lit) lit, sizeof(lit) - 1

static bool span_is(const char *p, size_t n, const char *lit)
{
	return p && n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static int parse_req(const char *msg, struct dv_http1_request *req, struct dv_http1_field *fields)
{
	req->head.fields = fields;
	req->head.fields_cap = MAX_FIELDS;
	return dv_http1_parse_request(msg, strlen(msg), NULL, req);
}

static void test_request_fields(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	const char *msg = "POST /api/items?x=1 HTTP/1.1\r\n"
	                  "Host: Example.COM:8080\r\n"
	                  "Content-Type:  application/json \t\r\n"
	                  "X-Empty:\r\n"
	                  "Content-Length: 2\r\n"
	                  "\r\n"
	                  "{}";
	int rc = parse_req(msg, &req, fields);
	assert_int_equal(rc, (int)strlen(msg) - 2);
	assert_true(span_is(req.method, req.method_len, "POST"));
	assert_true(span_is(req.target, req.target_len, "/api/items?x=1"));
	assert_true(span_is(req.host, req.host_len, "Example.COM:8080"));
	assert_int_equal(req.head.minor_version, 1);
	assert_int_equal(req.head.nfields, 4);
	assert_true(span_is(req.head.fields[0].name, req.head.fields[0].name_len, "Host"));
	assert_true(span_is(req.head.fields[1].value, req.head.fields[1].value_len,
	                    "application/json"));
	assert_int_equal(req.head.fields[2].value_len, 0);
	assert_true(span_is(req.head.fields[2].name, req.head.fields[2].name_len, "X-Empty"));
	assert_int_equal(req.head.framing, DV_HTTP1_BODY_LENGTH);
	assert_int_equal(req.head.content_length, 2);
	assert_false(req.expect_continue);
	assert_false(req.head.connection_upgrade);
	assert_null(req.head.upgrade);
	assert_true(req.head.keep_alive);
	/* Nothing outside the head is looked at. */
	assert_true(req.head.fields[3].value + req.head.fields[3].value_len <= msg + rc);
}

static void test_leading_crlf_counted(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	const char *msg = "\r\n\r\nGET /x HTTP/1.0\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(span_is(req.method, req.method_len, "GET"));
	assert_true(span_is(req.target, req.target_len, "/x"));
	assert_int_equal(req.head.minor_version, 0);
	assert_null(req.host);
}

static void test_upgrade_detection(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	const char *msg = "GET /chat HTTP/1.1\r\n" H "Connection: keep-alive, Upgrade\r\n"
	                  "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(req.head.connection_upgrade);
	assert_true(span_is(req.head.upgrade, req.head.upgrade_len, "websocket"));
	assert_true(req.head.keep_alive);

	/* An Upgrade header that Connection does not list: not an upgrade. */
	msg = "GET / HTTP/1.1\r\n" H "Upgrade: h2c\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_false(req.head.connection_upgrade);
	assert_true(span_is(req.head.upgrade, req.head.upgrade_len, "h2c"));

	/* Connection: upgrade without an Upgrade header. */
	msg = "GET / HTTP/1.1\r\n" H "Connection: UPGRADE\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(req.head.connection_upgrade);
	assert_null(req.head.upgrade);

	struct dv_http1_response resp;
	resp.head.fields = fields;
	resp.head.fields_cap = MAX_FIELDS;
	msg = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
	assert_int_equal(dv_http1_parse_response(msg, strlen(msg), NULL, S("GET"), &resp),
	                 (int)strlen(msg));
	assert_int_equal(resp.status, 101);
	assert_true(resp.head.connection_upgrade);
	assert_true(span_is(resp.head.upgrade, resp.head.upgrade_len, "websocket"));
	assert_int_equal(resp.head.framing, DV_HTTP1_BODY_NONE);
}

static void test_expect_continue(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	const char *msg = "PUT /f HTTP/1.1\r\n" H "Expect: 100-continue\r\nContent-Length: 10\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(req.expect_continue);
	msg = "PUT /f HTTP/1.1\r\n" H "Expect: 100-CONTINUE \r\nContent-Length: 10\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(req.expect_continue);
	msg = "PUT /f HTTP/1.1\r\n" H "Expect: 200-ok\r\nContent-Length: 10\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_false(req.expect_continue);
	msg = "PUT /f HTTP/1.1\r\n" H "X-Expect: 100-continue\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_false(req.expect_continue);
}

static void test_absolute_form_host(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	const char *msg = "GET http://Target.example:81/p?q HTTP/1.1\r\nHost: header.example\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(span_is(req.host, req.host_len, "Target.example:81"));
	assert_true(span_is(req.target, req.target_len, "http://Target.example:81/p?q"));

	msg = "GET https://example.org?x HTTP/1.1\r\nHost: example.org\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(span_is(req.host, req.host_len, "example.org"));

	msg = "GET http://[2001:db8::1]:8080 HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(span_is(req.host, req.host_len, "[2001:db8::1]:8080"));

	/* HTTP/1.0 needs no Host even with absolute-form. */
	msg = "GET http://a.example/ HTTP/1.0\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(span_is(req.host, req.host_len, "a.example"));

	/* CONNECT: the host is the Host header, the target stays as sent. */
	msg = "CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n";
	assert_int_equal(parse_req(msg, &req, fields), (int)strlen(msg));
	assert_true(span_is(req.target, req.target_len, "db.example:5432"));
	assert_true(span_is(req.host, req.host_len, "db.example:5432"));
}

static void test_pipelined(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	const char *buf = "GET /one HTTP/1.1\r\n" H "\r\n"
	                  "POST /two HTTP/1.1\r\n" H "Content-Length: 3\r\n\r\nabc"
	                  "\r\nGET /three HTTP/1.1\r\n" H "Connection: close\r\n\r\n"
	                  "GET /four HT";
	size_t len = strlen(buf), off = 0;
	req.head.fields = fields;
	req.head.fields_cap = MAX_FIELDS;

	int rc = dv_http1_parse_request(buf + off, len - off, NULL, &req);
	assert_true(rc > 0);
	assert_true(span_is(req.target, req.target_len, "/one"));
	assert_int_equal(req.head.framing, DV_HTTP1_BODY_NONE);
	off += (size_t)rc;

	rc = dv_http1_parse_request(buf + off, len - off, NULL, &req);
	assert_true(rc > 0);
	assert_true(span_is(req.target, req.target_len, "/two"));
	assert_int_equal(req.head.framing, DV_HTTP1_BODY_LENGTH);
	off += (size_t)rc;
	assert_memory_equal(buf + off, "abc", 3);
	off += req.head.content_length;

	/* The stray CRLF after the body is skipped as an empty line. */
	rc = dv_http1_parse_request(buf + off, len - off, NULL, &req);
	assert_true(rc > 0);
	assert_true(span_is(req.target, req.target_len, "/three"));
	assert_false(req.head.keep_alive);
	off += (size_t)rc;

	rc = dv_http1_parse_request(buf + off, len - off, NULL, &req);
	assert_int_equal(rc, DV_HTTP1_INCOMPLETE);
	assert_true(span_is(buf + off, len - off, "GET /four HT"));
}

static void test_every_split_point(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	/* A head as a client would send it, copied into a buffer that grows one
	 * byte at a time (so ASan sees any read past what was "received"). */
	const char *msg = "\r\nPOST http://example.com/upload?id=7 HTTP/1.1\r\n"
	                  "Host: example.com\r\n"
	                  "User-Agent: test/1.0\r\n"
	                  "Transfer-Encoding: chunked\r\n"
	                  "Connection: keep-alive, Upgrade\r\n"
	                  "Upgrade: websocket\r\n"
	                  "Expect: 100-continue\r\n"
	                  "X-Tab:\tvalue with\ttabs \r\n"
	                  "\r\n";
	size_t len = strlen(msg);
	char buf[512];
	assert_true(len < sizeof buf);
	req.head.fields = fields;
	req.head.fields_cap = MAX_FIELDS;
	for (size_t k = 0; k <= len; k++) {
		char *copy = buf + sizeof buf - k; /* the prefix ends at the end of buf */
		memcpy(copy, msg, k);
		int rc = dv_http1_parse_request(copy, k, NULL, &req);
		if (k < len) {
			if (rc != DV_HTTP1_INCOMPLETE)
				fail_msg("prefix %zu: %d (%s)", k, rc, req.head.error ? req.head.error : "");
		} else {
			assert_int_equal(rc, (int)len);
			assert_int_equal(req.head.framing, DV_HTTP1_BODY_CHUNKED);
			assert_true(req.expect_continue);
			assert_true(req.head.connection_upgrade);
			assert_true(span_is(req.host, req.host_len, "example.com"));
			assert_int_equal(req.head.nfields, 7);
			assert_true(span_is(req.head.fields[6].value, req.head.fields[6].value_len,
			                    "value with\ttabs"));
		}
	}
}

/* ---- limits ------------------------------------------------------------ */

static void test_limits_default(void **state)
{
	(void)state;
	struct dv_http1_limits l;
	dv_http1_limits_default(&l);
	assert_int_equal(l.max_start_line, 8192);
	assert_int_equal(l.max_head_bytes, 65536);
	assert_int_equal(l.max_fields, 100);
}

static void test_start_line_limit(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req = { .head = { .fields = fields, .fields_cap = MAX_FIELDS } };
	struct dv_http1_limits l = { .max_start_line = 32, .max_head_bytes = 1024, .max_fields = 10 };

	/* "GET /1234567890123456 HTTP/1.1\r\n" is exactly 32 bytes: accepted. */
	const char *ok = "GET /1234567890123456 HTTP/1.1\r\n" H "\r\n";
	assert_int_equal(dv_http1_parse_request(ok, strlen(ok), &l, &req), (int)strlen(ok));
	const char *big = "GET /12345678901234567 HTTP/1.1\r\n" H "\r\n";
	assert_int_equal(dv_http1_parse_request(big, strlen(big), &l, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 414);
	/* An incomplete line that already exceeds the limit fails at once. */
	const char *partial = "GET /12345678901234567890123456789";
	assert_int_equal(dv_http1_parse_request(partial, strlen(partial), &l, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 414);
	assert_int_equal(dv_http1_parse_request(partial, 31, &l, &req), DV_HTTP1_INCOMPLETE);
	/* Leading empty lines do not count toward the start line. */
	const char *crlf = "\r\n\r\nGET /1234567890123456 HTTP/1.1\r\n" H "\r\n";
	assert_int_equal(dv_http1_parse_request(crlf, strlen(crlf), &l, &req), (int)strlen(crlf));

	/* A response's status line over the limit: 502. */
	struct dv_http1_response resp = { .head = { .fields = fields, .fields_cap = MAX_FIELDS } };
	const char *r = "HTTP/1.1 200 A very long reason phrase\r\n\r\n";
	assert_int_equal(dv_http1_parse_response(r, strlen(r), &l, S("GET"), &resp),
	                 DV_HTTP1_ERROR);
	assert_int_equal(resp.head.error_status, 502);

	/* Default limit: an 8 KiB target is refused with 414. */
	static char huge[9000];
	memcpy(huge, "GET /", 5);
	memset(huge + 5, 'a', sizeof huge - 5);
	assert_int_equal(dv_http1_parse_request(huge, sizeof huge, NULL, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 414);
}

static void test_head_limit(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req = { .head = { .fields = fields, .fields_cap = MAX_FIELDS } };
	const char *msg = "GET / HTTP/1.1\r\n" H "X-Pad: 0123456789\r\n\r\n";
	size_t len = strlen(msg);
	struct dv_http1_limits l = { .max_start_line = 100, .max_head_bytes = len, .max_fields = 10 };

	/* Exactly at the limit: accepted; one byte less: refused. */
	assert_int_equal(dv_http1_parse_request(msg, len, &l, &req), (int)len);
	l.max_head_bytes = len - 1;
	assert_int_equal(dv_http1_parse_request(msg, len, &l, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 431);
	/* INCOMPLETE but already at the limit: refused at once. */
	assert_int_equal(dv_http1_parse_request(msg, len - 1, &l, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 431);
	assert_int_equal(dv_http1_parse_request(msg, len - 2, &l, &req), DV_HTTP1_INCOMPLETE);

	/* Endless empty lines count toward the head limit. */
	static char crlfs[70000];
	for (size_t i = 0; i < sizeof crlfs; i += 2)
		memcpy(crlfs + i, "\r\n", 2);
	assert_int_equal(dv_http1_parse_request(crlfs, sizeof crlfs, NULL, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 431);
	assert_int_equal(dv_http1_parse_request(crlfs, 1000, NULL, &req), DV_HTTP1_INCOMPLETE);

	/* Default limit: 64 KiB of fields with no end. */
	static char big[70000];
	const char *start = "GET / HTTP/1.1\r\nX-Big: ";
	memcpy(big, start, strlen(start));
	memset(big + strlen(start), 'x', sizeof big - strlen(start));
	assert_int_equal(dv_http1_parse_request(big, sizeof big, NULL, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 431);
	assert_int_equal(dv_http1_parse_request(big, 65535, NULL, &req), DV_HTTP1_INCOMPLETE);
	assert_int_equal(dv_http1_parse_request(big, 65536, NULL, &req), DV_HTTP1_ERROR);

	struct dv_http1_response resp = { .head = { .fields = fields, .fields_cap = MAX_FIELDS } };
	memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
	assert_int_equal(dv_http1_parse_response(big, sizeof big, NULL, S("GET"), &resp),
	                 DV_HTTP1_ERROR);
	assert_int_equal(resp.head.error_status, 502);
}

static void test_field_count_limit(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req = { .head = { .fields = fields, .fields_cap = MAX_FIELDS } };
	struct dv_http1_limits l = { .max_start_line = 100, .max_head_bytes = 4096, .max_fields = 3 };

	const char *three = "GET / HTTP/1.1\r\n" H "A: 1\r\nB: 2\r\n\r\n";
	assert_int_equal(dv_http1_parse_request(three, strlen(three), &l, &req), (int)strlen(three));
	assert_int_equal(req.head.nfields, 3);
	const char *four = "GET / HTTP/1.1\r\n" H "A: 1\r\nB: 2\r\nC: 3\r\n\r\n";
	assert_int_equal(dv_http1_parse_request(four, strlen(four), &l, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 431);
	/* INCOMPLETE: the first byte of a fourth field line is enough. */
	const char *partial = "GET / HTTP/1.1\r\n" H "A: 1\r\nB: 2\r\nC";
	assert_int_equal(dv_http1_parse_request(partial, strlen(partial), &l, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 431);
	assert_int_equal(dv_http1_parse_request(partial, strlen(partial) - 1, &l, &req),
	                 DV_HTTP1_INCOMPLETE);

	/* The caller's array is a limit too. */
	req.head.fields_cap = 2;
	l.max_fields = 100;
	assert_int_equal(dv_http1_parse_request(three, strlen(three), &l, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 431);

	/* Default: 100 fields pass, 101 do not. */
	static char buf[8192];
	size_t n = 0;
	n += (size_t)snprintf(buf + n, sizeof buf - n, "GET / HTTP/1.1\r\n" H);
	for (int i = 1; i < 100; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "X-%d: v\r\n", i);
	size_t before_last = n;
	n += (size_t)snprintf(buf + n, sizeof buf - n, "\r\n");
	req.head.fields_cap = MAX_FIELDS;
	assert_int_equal(dv_http1_parse_request(buf, n, NULL, &req), (int)n);
	assert_int_equal(req.head.nfields, 100);
	n = before_last + (size_t)snprintf(buf + before_last, sizeof buf - before_last,
	                                   "X-101: v\r\n\r\n");
	assert_int_equal(dv_http1_parse_request(buf, n, NULL, &req), DV_HTTP1_ERROR);
	assert_int_equal(req.head.error_status, 431);
}

/* ---- responses ----------------------------------------------------------- */

static void test_response_fields(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_response resp = { .head = { .fields = fields, .fields_cap = MAX_FIELDS } };
	const char *msg = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nServer: x\r\n\r\nnot found";
	int rc = dv_http1_parse_response(msg, strlen(msg), NULL, S("GET"), &resp);
	assert_int_equal(rc, (int)strlen(msg) - 9);
	assert_int_equal(resp.status, 404);
	assert_true(span_is(resp.reason, resp.reason_len, "Not Found"));
	assert_int_equal(resp.head.minor_version, 1);
	assert_int_equal(resp.head.nfields, 2);
	assert_int_equal(resp.head.framing, DV_HTTP1_BODY_LENGTH);
	assert_int_equal(resp.head.content_length, 9);

	/* A NULL method is "not HEAD, not CONNECT". */
	msg = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n";
	assert_int_equal(dv_http1_parse_response(msg, strlen(msg), NULL, NULL, 0, &resp),
	                 (int)strlen(msg));
	assert_int_equal(resp.head.framing, DV_HTTP1_BODY_LENGTH);
	/* Methods are case-sensitive: "head" is not HEAD. */
	assert_int_equal(dv_http1_parse_response(msg, strlen(msg), NULL, S("head"), &resp),
	                 (int)strlen(msg));
	assert_int_equal(resp.head.framing, DV_HTTP1_BODY_LENGTH);

	/* 1xx then the final response, back to back. */
	const char *two = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
	rc = dv_http1_parse_response(two, strlen(two), NULL, S("PUT"), &resp);
	assert_int_equal(rc, 25);
	assert_int_equal(resp.status, 100);
	rc = dv_http1_parse_response(two + 25, strlen(two) - 25, NULL, S("PUT"), &resp);
	assert_int_equal(rc, (int)strlen(two) - 25);
	assert_int_equal(resp.status, 201);
}

/* ---- helpers --------------------------------------------------------------- */

static void test_token_eq(void **state)
{
	(void)state;
	assert_true(dv_http1_token_eq(S("Content-Length"), "content-length"));
	assert_true(dv_http1_token_eq(S("CONTENT-LENGTH"), "content-length"));
	assert_false(dv_http1_token_eq(S("Content-Lengt"), "content-length"));
	assert_false(dv_http1_token_eq(S("Content-Lengths"), "content-length"));
	assert_false(dv_http1_token_eq(S("Content_Length"), "content-length"));
	assert_true(dv_http1_token_eq("", 0, ""));
	assert_false(dv_http1_token_eq("a", 1, ""));
	/* A NUL inside the token is not the end of the literal. */
	assert_false(dv_http1_token_eq("te\0x", 4, "te"));
	/* Only ASCII letters fold: 0xC0 must not match 0xE0. */
	assert_false(dv_http1_token_eq("\xc0", 1, "\xe0"));
	/* '@' (0x40) and '`' (0x60) differ by the case bit but are not letters. */
	assert_false(dv_http1_token_eq("@", 1, "`"));
}

static void test_find_field(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	const char *msg = "GET / HTTP/1.1\r\n" H "X-One: 1\r\nx-one: 2\r\nX-Two: 3\r\n\r\n";
	assert_true(parse_req(msg, &req, fields) > 0);
	const struct dv_http1_field *f = dv_http1_find_field(&req.head, "x-one");
	assert_non_null(f);
	assert_true(span_is(f->value, f->value_len, "1"));
	f = dv_http1_find_field(&req.head, "x-two");
	assert_non_null(f);
	assert_true(span_is(f->value, f->value_len, "3"));
	assert_non_null(dv_http1_find_field(&req.head, "host"));
	assert_null(dv_http1_find_field(&req.head, "x-on"));
	assert_null(dv_http1_find_field(&req.head, "x-three"));
}

static void test_is_hop_by_hop(void **state)
{
	(void)state;
	static const char *const hop[] = {
		"Connection", "keep-alive", "Proxy-Connection", "Proxy-Authenticate",
		"PROXY-AUTHORIZATION", "TE", "Trailer", "Transfer-Encoding", "upgrade",
	};
	static const char *const end_to_end[] = {
		"Host", "Content-Length", "Content-Type", "Trailers", "Upgrade-Insecure-Requests",
		"T", "Keep", "Authorization", "X-Forwarded-For", "",
	};
	for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++) {
		if (!dv_http1_is_hop_by_hop(hop[i], strlen(hop[i])))
			fail_msg("%s should be hop-by-hop", hop[i]);
	}
	for (size_t i = 0; i < sizeof end_to_end / sizeof end_to_end[0]; i++) {
		if (dv_http1_is_hop_by_hop(end_to_end[i], strlen(end_to_end[i])))
			fail_msg("%s should not be hop-by-hop", end_to_end[i]);
	}
}

static void test_connection_lists(void **state)
{
	(void)state;
	struct dv_http1_field fields[MAX_FIELDS];
	struct dv_http1_request req;
	const char *msg = "GET / HTTP/1.1\r\n" H "Connection: X-Secret , keep-alive,,\r\n"
	                  "X-Secret: s\r\nconnection: Upgrade\r\n\r\n";
	assert_true(parse_req(msg, &req, fields) > 0);
	assert_true(dv_http1_connection_lists(&req.head, S("x-secret")));
	assert_true(dv_http1_connection_lists(&req.head, S("X-SECRET")));
	assert_true(dv_http1_connection_lists(&req.head, S("keep-alive")));
	assert_true(dv_http1_connection_lists(&req.head, S("upgrade")));
	assert_false(dv_http1_connection_lists(&req.head, S("close")));
	assert_false(dv_http1_connection_lists(&req.head, S("x-secre")));
	assert_false(dv_http1_connection_lists(&req.head, S("keep")));
	assert_false(dv_http1_connection_lists(&req.head, S("")));

	msg = "GET / HTTP/1.1\r\n" H "\r\n";
	assert_true(parse_req(msg, &req, fields) > 0);
	assert_false(dv_http1_connection_lists(&req.head, S("close")));
}

/* ---- chunked ----------------------------------------------------------------- */

#define SPANS 16

struct scan_result {
	int result;
	size_t consumed;    /* total over all calls */
	char data[4096];    /* the chunk data, decoded from the spans */
	size_t data_len;
	const char *error;
};

/* Feeds buf to a fresh scanner in pieces of `step` bytes (0: all at once),
 * with `cap` spans per call, until DONE, ERROR or the input is used up. */
static void scan(const char *buf, size_t len, size_t step, size_t cap, size_t max_trailer,
                 struct scan_result *out)
{
	struct dv_http1_chunked sc;
	dv_http1_chunked_init(&sc);
	if (max_trailer)
		sc.max_trailer_bytes = max_trailer;
	memset(out, 0, sizeof *out);
	size_t off = 0;
	size_t fed_end = 0;
	for (;;) {
		if (off == fed_end) {
			if (fed_end == len)
				break;
			fed_end = step && len - fed_end > step ? fed_end + step : len;
		}
		struct dv_http1_span spans[SPANS];
		size_t nspans = 99, consumed = 99;
		int r = dv_http1_chunked_scan(&sc, buf + off, fed_end - off, &consumed, spans, cap,
		                              &nspans);
		assert_true(consumed <= fed_end - off);
		assert_true(nspans <= cap);
		for (size_t i = 0; i < nspans; i++) {
			assert_true(spans[i].data >= buf + off && spans[i].data + spans[i].len <= buf + off + consumed);
			assert_true(out->data_len + spans[i].len <= sizeof out->data);
			memcpy(out->data + out->data_len, spans[i].data, spans[i].len);
			out->data_len += spans[i].len;
		}
		off += consumed;
		out->consumed = off;
		out->result = r;
		if (r == DV_HTTP1_CHUNKED_ERROR) {
			out->error = sc.error;
			assert_non_null(sc.error);
			return;
		}
		if (r == DV_HTTP1_CHUNKED_DONE)
			return;
		/* MORE: either everything was consumed or the spans were full. */
		assert_true(off == fed_end || nspans == cap);
	}
}

static void test_chunked_whole(void **state)
{
	(void)state;
	const char *body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /next HTTP/1.1\r\n";
	size_t body_len = strlen(body) - strlen("GET /next HTTP/1.1\r\n");
	struct scan_result r;
	scan(body, strlen(body), 0, SPANS, 0, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(r.consumed, body_len);
	assert_int_equal(r.data_len, 11);
	assert_memory_equal(r.data, "hello world", 11);

	/* Without span storage the scanner only frames. */
	struct dv_http1_chunked sc;
	dv_http1_chunked_init(&sc);
	assert_int_equal(sc.max_trailer_bytes, 65536);
	size_t consumed;
	assert_int_equal(dv_http1_chunked_scan(&sc, body, strlen(body), &consumed, NULL, 0, NULL),
	                 DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(consumed, body_len);
	/* DONE is sticky and consumes nothing more. */
	assert_int_equal(dv_http1_chunked_scan(&sc, body + consumed, 5, &consumed, NULL, 0, NULL),
	                 DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(consumed, 0);
}

static void test_chunked_byte_at_a_time(void **state)
{
	(void)state;
	const char *body = "A;ext=val\r\n0123456789\r\n1\r\nx\r\n000\r\nTrailer-A: 1\r\nB:\r\n\r\nNEXT";
	size_t body_len = strlen(body) - 4;
	struct scan_result whole, bytes;
	scan(body, strlen(body), 0, SPANS, 0, &whole);
	scan(body, strlen(body), 1, SPANS, 0, &bytes);
	assert_int_equal(whole.result, DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(bytes.result, DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(whole.consumed, body_len);
	assert_int_equal(bytes.consumed, body_len);
	assert_int_equal(bytes.data_len, 11);
	assert_memory_equal(bytes.data, "0123456789x", 11);
	assert_memory_equal(whole.data, "0123456789x", 11);

	/* Every split into two pieces agrees with the whole. */
	for (size_t step = 2; step < strlen(body); step++) {
		struct scan_result split;
		scan(body, strlen(body), step, SPANS, 0, &split);
		assert_int_equal(split.result, DV_HTTP1_CHUNKED_DONE);
		assert_int_equal(split.consumed, body_len);
		assert_int_equal(split.data_len, 11);
		assert_memory_equal(split.data, "0123456789x", 11);
	}
}

static void test_chunked_extensions(void **state)
{
	(void)state;
	static const char *const good[] = {
		"1;a\r\nx\r\n0\r\n\r\n",
		"1;a=b\r\nx\r\n0\r\n\r\n",
		"1;a=b;c;d=e\r\nx\r\n0\r\n\r\n",
		"1 ;a\r\nx\r\n0\r\n\r\n",
		"1\t; a = b ; c\r\nx\r\n0\r\n\r\n",
		"1;a=\"quoted ;=, \\\"value\\\"\"\r\nx\r\n0\r\n\r\n",
		"1;a=\"\"\r\nx\r\n0\r\n\r\n",
		"1;a=\"x\" ;b\r\nx\r\n0\r\n\r\n",
		"1;a\r\nx\r\n0;last=yes\r\n\r\n",
		"001\r\nx\r\n0000\r\n\r\n",
		"f\r\n0123456789abcde\r\n0\r\n\r\n",
		"F\r\n0123456789ABCDE\r\n0\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		struct scan_result r;
		scan(good[i], strlen(good[i]), 0, SPANS, 0, &r);
		if (r.result != DV_HTTP1_CHUNKED_DONE || r.consumed != strlen(good[i]))
			fail_msg("\"%s\": %d at %zu (%s)", good[i], r.result, r.consumed,
			         r.error ? r.error : "");
		scan(good[i], strlen(good[i]), 1, SPANS, 0, &r);
		assert_int_equal(r.result, DV_HTTP1_CHUNKED_DONE);
	}
}

static void test_chunked_trailers(void **state)
{
	(void)state;
	const char *body = "3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-Empty:\r\nX-Tab:\ta b\r\n\r\nrest";
	struct scan_result r;
	scan(body, strlen(body), 0, SPANS, 0, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(r.consumed, strlen(body) - 4);
	scan(body, strlen(body), 1, SPANS, 0, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(r.consumed, strlen(body) - 4);

	/* The trailer limit counts the trailer lines (not the final CRLF). */
	const char *t = "0\r\nX: 12345678\r\n\r\n"; /* the line is 13 bytes */
	scan(t, strlen(t), 0, SPANS, 13, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_DONE);
	scan(t, strlen(t), 0, SPANS, 12, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_ERROR);
	assert_int_equal(r.consumed, 3 + 12); /* stopped at the byte over the limit */
	scan(t, strlen(t), 1, SPANS, 12, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_ERROR);
	assert_int_equal(r.consumed, 3 + 12);
	scan(t, strlen(t), 0, SPANS, 6, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_ERROR);
	assert_int_equal(r.consumed, 3 + 6);
}

static void test_chunked_spans(void **state)
{
	(void)state;
	const char *body = "3\r\nabc\r\n3\r\ndef\r\n2\r\ngh\r\n0\r\n\r\n";
	struct dv_http1_chunked sc;
	struct dv_http1_span spans[1];
	size_t consumed, n;
	dv_http1_chunked_init(&sc);

	/* One span per call: the scan stops before the second chunk's data. */
	assert_int_equal(dv_http1_chunked_scan(&sc, body, strlen(body), &consumed, spans, 1, &n),
	                 DV_HTTP1_CHUNKED_MORE);
	assert_int_equal(n, 1);
	assert_true(span_is(spans[0].data, spans[0].len, "abc"));
	assert_int_equal(consumed, 11); /* "3\r\nabc\r\n3\r\n" */
	size_t off = consumed;
	assert_int_equal(dv_http1_chunked_scan(&sc, body + off, strlen(body) - off, &consumed, spans,
	                                       1, &n),
	                 DV_HTTP1_CHUNKED_MORE);
	assert_true(span_is(spans[0].data, spans[0].len, "def"));
	off += consumed;
	assert_int_equal(dv_http1_chunked_scan(&sc, body + off, strlen(body) - off, &consumed, spans,
	                                       1, &n),
	                 DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(n, 1);
	assert_true(span_is(spans[0].data, spans[0].len, "gh"));
	assert_int_equal(off + consumed, strlen(body));

	/* A chunk split across calls gives one span per call. */
	dv_http1_chunked_init(&sc);
	struct dv_http1_span many[4];
	assert_int_equal(dv_http1_chunked_scan(&sc, "5\r\nhe", 5, &consumed, many, 4, &n),
	                 DV_HTTP1_CHUNKED_MORE);
	assert_int_equal(consumed, 5);
	assert_int_equal(n, 1);
	assert_true(span_is(many[0].data, many[0].len, "he"));
	assert_int_equal(dv_http1_chunked_scan(&sc, "llo\r\n0\r\n\r\n", 10, &consumed, many, 4, &n),
	                 DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(consumed, 10);
	assert_int_equal(n, 1);
	assert_true(span_is(many[0].data, many[0].len, "llo"));

	/* Zero capacity with an array: no data byte is passed. */
	dv_http1_chunked_init(&sc);
	assert_int_equal(dv_http1_chunked_scan(&sc, "2\r\nab\r\n0\r\n\r\n", 12, &consumed, many, 0, &n),
	                 DV_HTTP1_CHUNKED_MORE);
	assert_int_equal(consumed, 3);
	assert_int_equal(n, 0);
}

static void test_chunked_stops_at_end(void **state)
{
	(void)state;
	/* The bytes after the body must not be looked at: put them where ASan
	 * would catch a read, by ending the buffer exactly at the body's end. */
	const char *body = "4\r\nwiki\r\n0\r\n\r\n";
	size_t len = strlen(body);
	char buf[64];
	char *at = buf + sizeof buf - len;
	memcpy(at, body, len);
	struct dv_http1_chunked sc;
	size_t consumed;
	dv_http1_chunked_init(&sc);
	assert_int_equal(dv_http1_chunked_scan(&sc, at, len, &consumed, NULL, 0, NULL),
	                 DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(consumed, len);

	/* With a following message: DONE exactly before it, and the scanner
	 * ignores bytes after the final LF even when they are garbage. */
	const char *two = "0\r\n\r\n\x01\x02garbage";
	dv_http1_chunked_init(&sc);
	assert_int_equal(dv_http1_chunked_scan(&sc, two, strlen(two), &consumed, NULL, 0, NULL),
	                 DV_HTTP1_CHUNKED_DONE);
	assert_int_equal(consumed, 5);

	/* Empty input: MORE, nothing consumed. */
	dv_http1_chunked_init(&sc);
	assert_int_equal(dv_http1_chunked_scan(&sc, "", 0, &consumed, NULL, 0, NULL),
	                 DV_HTTP1_CHUNKED_MORE);
	assert_int_equal(consumed, 0);
}

static void test_chunked_sizes(void **state)
{
	(void)state;
	struct dv_http1_chunked sc;
	size_t consumed;
	/* 2^62 is the largest size accepted. */
	dv_http1_chunked_init(&sc);
	assert_int_equal(dv_http1_chunked_scan(&sc, S("4000000000000000\r\nabc"), &consumed, NULL, 0,
	                                       NULL),
	                 DV_HTTP1_CHUNKED_MORE);
	assert_int_equal(consumed, 21);
	dv_http1_chunked_init(&sc);
	assert_int_equal(dv_http1_chunked_scan(&sc, S("0004000000000000000\r\n"), &consumed, NULL, 0,
	                                       NULL),
	                 DV_HTTP1_CHUNKED_MORE);
	dv_http1_chunked_init(&sc);
	assert_int_equal(dv_http1_chunked_scan(&sc, S("4000000000000001\r\n"), &consumed, NULL, 0,
	                                       NULL),
	                 DV_HTTP1_CHUNKED_ERROR);
	assert_int_equal(consumed, 15); /* the digit that overflows */
	assert_non_null(sc.error);

	/* A chunk-size line of exactly 4096 bytes is fine, 4097 is not. */
	static char line[5000];
	memcpy(line, "1;", 2);
	memset(line + 2, 'a', 4092);
	memcpy(line + 4094, "\r\nx\r\n0\r\n\r\n", 10);
	struct scan_result r;
	scan(line, 4104, 0, SPANS, 0, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_DONE);
	memset(line + 2, 'a', 4093);
	memcpy(line + 4095, "\r\nx\r\n0\r\n\r\n", 10);
	scan(line, 4105, 0, SPANS, 0, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_ERROR);
	assert_int_equal(r.consumed, 4096);
	scan(line, 4105, 1, SPANS, 0, &r);
	assert_int_equal(r.result, DV_HTTP1_CHUNKED_ERROR);
	assert_int_equal(r.consumed, 4096);
}

static void test_chunked_errors(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		const char *body;
		size_t error_at; /* offset of the byte that is refused */
	} bad[] = {
		{ "empty size", "\r\nabc\r\n0\r\n\r\n", 0 },
		{ "non-hex size", "g\r\n", 0 },
		{ "non-hex after digits", "1g\r\nx\r\n", 1 },
		{ "0x prefix", "0x10\r\n", 1 },
		{ "negative size", "-1\r\n", 0 },
		{ "plus sign", "+1\r\n", 0 },
		{ "space inside size", "1 0\r\n", 2 },
		{ "leading space", " 1\r\n", 0 },
		{ "trailing space", "1 \r\n", 2 },
		{ "overflow", "fffffffffffffffff\r\n", 15 },
		{ "bare LF after size", "1\nx\r\n", 1 },
		{ "bare CR after size", "1\rx\r\n", 2 },
		{ "missing CRLF after data", "1\r\nxy\r\n", 4 },
		{ "LF only after data", "1\r\nx\n0\r\n\r\n", 4 },
		{ "CR without LF after data", "1\r\nx\rX0\r\n\r\n", 5 },
		{ "empty extension name", "1;\r\nx\r\n", 2 },
		{ "extension with '='", "1;=v\r\nx\r\n", 2 },
		{ "extension empty value", "1;a=\r\nx\r\n", 4 },
		{ "extension bad char", "1;a@b\r\n", 3 },
		{ "unterminated quote", "1;a=\"x\r\n", 6 },
		{ "control char in quote", "1;a=\"\x01\"\r\n", 5 },
		{ "whitespace before CRLF after name", "1;a \r\nx\r\n", 4 },
		{ "space inside ext value", "1;a=b c\r\n", 6 },
		{ "junk after quoted value", "1;a=\"b\"c\r\n", 7 },
		{ "trailer obs-fold", "0\r\nA: 1\r\n b\r\n\r\n", 9 },
		{ "trailer whitespace before colon", "0\r\nA : 1\r\n\r\n", 4 },
		{ "trailer without colon", "0\r\nA\r\n\r\n", 4 },
		{ "trailer control char", "0\r\nA: \x01\r\n\r\n", 6 },
		{ "trailer bare LF", "0\r\nA: 1\n\r\n", 7 },
		{ "trailer bare CR", "0\r\nA: 1\rx\r\n", 8 },
		{ "final bare CR", "0\r\n\rx", 4 },
		{ "final bare LF", "0\r\n\n", 3 },
		{ "trailer empty name", "0\r\n: x\r\n\r\n", 3 },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		size_t len = strlen(bad[i].body);
		for (size_t step = 0; step <= 1; step++) {
			struct scan_result r;
			scan(bad[i].body, len, step, SPANS, 0, &r);
			if (r.result != DV_HTTP1_CHUNKED_ERROR || r.consumed != bad[i].error_at)
				fail_msg("%s (step %zu): result %d at %zu, want ERROR at %zu", bad[i].name,
				         step, r.result, r.consumed, bad[i].error_at);
		}
	}

	/* ERROR is sticky. */
	struct dv_http1_chunked sc;
	size_t consumed;
	dv_http1_chunked_init(&sc);
	assert_int_equal(dv_http1_chunked_scan(&sc, S("z"), &consumed, NULL, 0, NULL),
	                 DV_HTTP1_CHUNKED_ERROR);
	assert_int_equal(dv_http1_chunked_scan(&sc, S("0\r\n\r\n"), &consumed, NULL, 0, NULL),
	                 DV_HTTP1_CHUNKED_ERROR);
	assert_int_equal(consumed, 0);
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_corpus_size),
		cmocka_unit_test(test_request_fields),
		cmocka_unit_test(test_leading_crlf_counted),
		cmocka_unit_test(test_upgrade_detection),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_absolute_form_host),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_every_split_point),
		cmocka_unit_test(test_limits_default),
		cmocka_unit_test(test_start_line_limit),
		cmocka_unit_test(test_head_limit),
		cmocka_unit_test(test_field_count_limit),
		cmocka_unit_test(test_response_fields),
		cmocka_unit_test(test_token_eq),
		cmocka_unit_test(test_find_field),
		cmocka_unit_test(test_is_hop_by_hop),
		cmocka_unit_test(test_connection_lists),
		cmocka_unit_test(test_chunked_whole),
		cmocka_unit_test(test_chunked_byte_at_a_time),
		cmocka_unit_test(test_chunked_extensions),
		cmocka_unit_test(test_chunked_trailers),
		cmocka_unit_test(test_chunked_spans),
		cmocka_unit_test(test_chunked_stops_at_end),
		cmocka_unit_test(test_chunked_sizes),
		cmocka_unit_test(test_chunked_errors),
	};
	/* Each corpus message is a test of its own, named after it. */
	static struct CMUnitTest tests[NREQUEST_CASES + NRESPONSE_CASES +
	                               sizeof fixed / sizeof fixed[0]];
	size_t n = 0;
	for (size_t i = 0; i < NREQUEST_CASES; i++)
		tests[n++] = (struct CMUnitTest){ .name = request_cases[i].name,
		                                  .test_func = test_request_case,
		                                  .initial_state = (void *)&request_cases[i] };
	for (size_t i = 0; i < NRESPONSE_CASES; i++)
		tests[n++] = (struct CMUnitTest){ .name = response_cases[i].name,
		                                  .test_func = test_response_case,
		                                  .initial_state = (void *)&response_cases[i] };
	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
		tests[n++] = fixed[i];
	return cmocka_run_group_tests(tests, NULL, NULL);
}

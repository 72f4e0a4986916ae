/* http1: a strict, zero-copy HTTP/1.1 message parser. The contract is in
 * http1.h; this file explains only why things are done the way they are.
 *
 * The head is parsed in one forward pass. Every byte is validated the moment
 * it is seen, so a call returns INCOMPLETE only when the bytes it has are a
 * valid prefix of some head, and a longer buffer can never turn an error found
 * in a shorter one into a success. Limits are enforced by bounding the scan:
 * running out of bytes at a limit is the limit's error, not INCOMPLETE.
 */
#include "http/http1.h"

#include <limits.h>
#include <string.h>

#define DEFAULT_MAX_START_LINE 8192
#define DEFAULT_MAX_HEAD_BYTES 65536
#define DEFAULT_MAX_FIELDS 100

#define CHUNK_SIZE_MAX (UINT64_C(1) << 62)
#define CHUNK_LINE_MAX 4096
#define DEFAULT_MAX_TRAILER_BYTES 65536

/* ---- character classes ---------------------------------------------------
 * One 256-entry table of class bits, computed by the compiler from the RFC
 * grammar below, so the hot loops are a load and a test per byte. */
enum {
	C_TCHAR = 0x01,  /* token character (RFC 9110 5.6.2) */
	C_VALUE = 0x02,  /* field-vchar, SP, HTAB: may appear inside a field value */
	C_TARGET = 0x04, /* visible ASCII: may appear in a request-target */
	C_HOST = 0x08,   /* unreserved / sub-delims except ",": may appear in a host */
	C_HEX = 0x10,
	C_QDTEXT = 0x20, /* may appear unescaped inside a quoted-string */
	C_DIGIT = 0x40,
	C_SCHEME = 0x80, /* may follow the first letter of a URI scheme */
};

#define IS_UPPER(c) ((c) >= 'A' && (c) <= 'Z')
#define IS_LOWER(c) ((c) >= 'a' && (c) <= 'z')
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALNUM(c) (IS_UPPER(c) || IS_LOWER(c) || IS_DIGIT(c))
#define IS_TCHAR(c)                                                                              \
	(IS_ALNUM(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || (c) == '&' ||     \
	 (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' || (c) == '^' ||     \
	 (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define IS_VCHAR(c) ((c) >= 0x21 && (c) <= 0x7e)
#define IS_OBS_TEXT(c) ((c) >= 0x80)
#define IS_VALUE(c) (IS_VCHAR(c) || IS_OBS_TEXT(c) || (c) == ' ' || (c) == '\t')
/* A comma is a legal sub-delim in a reg-name, but Host is a singleton field:
 * a comma there almost always means an intermediary joined two Host lines,
 * and two hops could then route on different halves. */
#define IS_HOST(c)                                                                               \
	(IS_ALNUM(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~' || (c) == '!' ||     \
	 (c) == '$' || (c) == '&' || (c) == '\'' || (c) == '(' || (c) == ')' || (c) == '*' ||     \
	 (c) == '+' || (c) == ';' || (c) == '=')
#define IS_HEX(c) (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))
#define IS_QDTEXT(c)                                                                             \
	((c) == '\t' || (c) == ' ' || (c) == 0x21 || ((c) >= 0x23 && (c) <= 0x5b) ||              \
	 ((c) >= 0x5d && (c) <= 0x7e) || IS_OBS_TEXT(c))
#define IS_SCHEME(c) (IS_ALNUM(c) || (c) == '+' || (c) == '-' || (c) == '.')

#define CLASS(c)                                                                                 \
	((IS_TCHAR(c) ? C_TCHAR : 0) | (IS_VALUE(c) ? C_VALUE : 0) |                              \
	 (IS_VCHAR(c) ? C_TARGET : 0) | (IS_HOST(c) ? C_HOST : 0) | (IS_HEX(c) ? C_HEX : 0) |     \
	 (IS_QDTEXT(c) ? C_QDTEXT : 0) | (IS_DIGIT(c) ? C_DIGIT : 0) |                            \
	 (IS_SCHEME(c) ? C_SCHEME : 0))
#define CLASS4(c) CLASS(c), CLASS((c) + 1), CLASS((c) + 2), CLASS((c) + 3)
#define CLASS16(c) CLASS4(c), CLASS4((c) + 4), CLASS4((c) + 8), CLASS4((c) + 12)
#define CLASS64(c) CLASS16(c), CLASS16((c) + 16), CLASS16((c) + 32), CLASS16((c) + 48)

static const unsigned char char_class[256] = {
	CLASS64(0x00), CLASS64(0x40), CLASS64(0x80), CLASS64(0xc0),
};

static inline bool has_class(char c, unsigned class_bits)
{
	return (char_class[(unsigned char)c] & class_bits) != 0;
}

static inline bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static inline unsigned char ascii_lower(unsigned char c)
{
	return IS_UPPER(c) ? (unsigned char)(c + ('a' - 'A')) : c;
}

static inline unsigned hex_value(char c)
{
	unsigned char u = (unsigned char)c;
	return IS_DIGIT(u) ? (unsigned)(u - '0') : (unsigned)(ascii_lower(u) - 'a' + 10);
}

/* ---- word-at-a-time scanning ---------------------------------------------
 * Field values and targets are most of a head's bytes. Testing eight bytes at
 * once for "anything unusual" and dropping to the table only for the block
 * that has one keeps the common case to a few instructions per eight bytes. */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Nonzero iff some byte of x is below n (n <= 128). */
static inline uint64_t any_byte_below(uint64_t x, unsigned n)
{
	return (x - ONES * n) & ~x & HIGHS;
}

static inline uint64_t any_byte_zero(uint64_t x)
{
	return (x - ONES) & ~x & HIGHS;
}

static inline uint64_t load64(const char *p)
{
	uint64_t x;
	memcpy(&x, p, sizeof x);
	return x;
}

/* Returns the first byte in [p, end) that is not a field-value byte, or end.
 * The fast test flags control bytes (HTAB included, so a value with a tab
 * takes the byte loop for that block only) and DEL. */
static const char *skip_value_bytes(const char *p, const char *end)
{
	for (;;) {
		while (end - p >= 8) {
			uint64_t x = load64(p);
			if (any_byte_below(x, 0x20) | any_byte_zero(x ^ (ONES * 0x7f)))
				break;
			p += 8;
		}
		const char *stop = end - p >= 8 ? p + 8 : end;
		while (p < stop && has_class(*p, C_VALUE))
			p++;
		if (p < stop || p == end)
			return p;
	}
}

/* Returns the first byte in [p, end) that is not visible ASCII, or end. */
static const char *skip_target_bytes(const char *p, const char *end)
{
	for (;;) {
		while (end - p >= 8) {
			uint64_t x = load64(p);
			if (any_byte_below(x, 0x21) | (x & HIGHS) | any_byte_zero(x ^ (ONES * 0x7f)))
				break;
			p += 8;
		}
		const char *stop = end - p >= 8 ? p + 8 : end;
		while (p < stop && has_class(*p, C_TARGET))
			p++;
		if (p < stop || p == end)
			return p;
	}
}

static const char *skip_class(const char *p, const char *end, unsigned class_bits)
{
	while (p < end && has_class(*p, class_bits))
		p++;
	return p;
}

static const char *skip_ows(const char *p, const char *end)
{
	while (p < end && is_ows(*p))
		p++;
	return p;
}

/* ---- public helpers ------------------------------------------------------ */

void dv_http1_limits_default(struct dv_http1_limits *limits)
{
	limits->max_start_line = DEFAULT_MAX_START_LINE;
	limits->max_head_bytes = DEFAULT_MAX_HEAD_BYTES;
	limits->max_fields = DEFAULT_MAX_FIELDS;
}

bool dv_http1_token_eq(const char *s, size_t len, const char *lower_literal)
{
	size_t i = 0;
	for (; i < len; i++) {
		if (lower_literal[i] == '\0' ||
		    ascii_lower((unsigned char)s[i]) != (unsigned char)lower_literal[i])
			return false;
	}
	return lower_literal[i] == '\0';
}

static bool tokens_equal_nocase(const char *a, size_t a_len, const char *b, size_t b_len)
{
	if (a_len != b_len)
		return false;
	for (size_t i = 0; i < a_len; i++) {
		if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
			return false;
	}
	return true;
}

const struct dv_http1_field *dv_http1_find_field(const struct dv_http1_head *head,
                                                 const char *lower_name)
{
	size_t name_len = strlen(lower_name);
	for (size_t i = 0; i < head->nfields; i++) {
		const struct dv_http1_field *f = &head->fields[i];
		if (f->name_len == name_len && dv_http1_token_eq(f->name, f->name_len, lower_name))
			return f;
	}
	return NULL;
}

bool dv_http1_is_hop_by_hop(const char *name, size_t name_len)
{
	/* Dispatch on length first: most forwarded fields fail there. */
	switch (name_len) {
	case 2:
		return dv_http1_token_eq(name, name_len, "te");
	case 7:
		return dv_http1_token_eq(name, name_len, "trailer") ||
		       dv_http1_token_eq(name, name_len, "upgrade");
	case 10:
		return dv_http1_token_eq(name, name_len, "connection") ||
		       dv_http1_token_eq(name, name_len, "keep-alive");
	case 16:
		return dv_http1_token_eq(name, name_len, "proxy-connection");
	case 17:
		return dv_http1_token_eq(name, name_len, "transfer-encoding");
	case 18:
		return dv_http1_token_eq(name, name_len, "proxy-authenticate");
	case 19:
		return dv_http1_token_eq(name, name_len, "proxy-authorization");
	default:
		return false;
	}
}

/* Next element of a comma-separated list (RFC 9110 5.6.1), OWS trimmed.
 * Empty elements are skipped, as recipients must accept them. */
static bool next_list_element(const char **pos, const char *end, const char **elem,
                              size_t *elem_len)
{
	const char *p = *pos;
	while (p < end && (is_ows(*p) || *p == ','))
		p++;
	if (p == end) {
		*pos = p;
		return false;
	}
	const char *start = p;
	while (p < end && *p != ',')
		p++;
	const char *stop = p;
	while (stop > start && is_ows(stop[-1]))
		stop--;
	*elem = start;
	*elem_len = (size_t)(stop - start);
	*pos = p;
	return true;
}

static bool list_contains(const char *value, size_t value_len, const char *name, size_t name_len)
{
	const char *p = value, *end = value + value_len;
	const char *elem;
	size_t elem_len;
	while (next_list_element(&p, end, &elem, &elem_len)) {
		if (tokens_equal_nocase(elem, elem_len, name, name_len))
			return true;
	}
	return false;
}

bool dv_http1_connection_lists(const struct dv_http1_head *head, const char *name, size_t name_len)
{
	for (size_t i = 0; i < head->nfields; i++) {
		const struct dv_http1_field *f = &head->fields[i];
		if (f->name_len == 10 && dv_http1_token_eq(f->name, 10, "connection") &&
		    list_contains(f->value, f->value_len, name, name_len))
			return true;
	}
	return false;
}

/* ---- head parser --------------------------------------------------------- */

struct head_parser {
	struct dv_http1_head *head;
	const char *buf;
	const char *end;   /* scan bound: buf + min(len, max_head_bytes) */
	bool end_is_limit; /* reaching `end` means the head is longer than allowed */
	size_t max_start_line;
	size_t max_fields;
	bool is_request;

	bool have_content_length;
	uint64_t content_length;
	bool have_transfer_encoding;
	bool te_chunked;       /* "chunked" seen */
	bool te_last_chunked;  /* ... and it is the final coding so far */
	bool te_other_coding;  /* a coding other than chunked came before it */
	bool conn_close;
	bool conn_keep_alive;
	bool have_host;
	const char *host;
	size_t host_len;
	bool expect_continue;
};

/* Records an error. Whatever is wrong with a response, the client of a proxy
 * must see a bad gateway, so responses always get 502. */
static int fail(struct head_parser *hp, int status, const char *why)
{
	hp->head->error_status = hp->is_request ? status : 502;
	hp->head->error = why;
	return DV_HTTP1_ERROR;
}

/* The scan reached hp->end without finding the end of the head. */
static int out_of_bytes(struct head_parser *hp)
{
	if (hp->end_is_limit)
		return fail(hp, 431, "header section too large");
	return DV_HTTP1_INCOMPLETE;
}

static void head_parser_init(struct head_parser *hp, struct dv_http1_head *head, const char *buf,
                             size_t len, const struct dv_http1_limits *limits, bool is_request)
{
	memset(hp, 0, sizeof *hp);
	hp->head = head;
	hp->buf = buf;
	hp->is_request = is_request;
	/* The head length is returned as an int. */
	size_t max_head = limits->max_head_bytes < (size_t)INT_MAX ? limits->max_head_bytes
	                                                            : (size_t)INT_MAX;
	hp->end = buf + (len < max_head ? len : max_head);
	hp->end_is_limit = len >= max_head;
	hp->max_start_line = limits->max_start_line;
	hp->max_fields = limits->max_fields < head->fields_cap ? limits->max_fields : head->fields_cap;

	head->minor_version = 0;
	head->nfields = 0;
	head->framing = DV_HTTP1_BODY_NONE;
	head->content_length = 0;
	head->keep_alive = false;
	head->connection_upgrade = false;
	head->upgrade = NULL;
	head->upgrade_len = 0;
	head->error_status = 0;
	head->error = NULL;
}

/* Parses "HTTP/" DIGIT "." DIGIT at *pos (RFC 9112 2.3), bounded by lim.
 * Returns 1 on success (advancing *pos), 0 if lim came first, -1 if malformed. */
static int parse_version(const char **pos, const char *lim, int *major, int *minor)
{
	static const char pattern[] = "HTTP/0.0";
	const char *p = *pos;
	for (size_t i = 0; i < sizeof pattern - 1; i++) {
		if (p + i == lim)
			return 0;
		bool ok = pattern[i] == '0' ? IS_DIGIT((unsigned char)p[i]) : p[i] == pattern[i];
		if (!ok)
			return -1;
	}
	*major = p[5] - '0';
	*minor = p[7] - '0';
	*pos = p + 8;
	return 1;
}

/* Validates host [":" port] as in the Host header (RFC 9110 7.2, RFC 3986
 * 3.2.2): an IP-literal in brackets or a reg-name/IPv4 address. An empty value
 * is valid (a Host header may be empty); need_port demands a non-empty port. */
static bool valid_authority(const char *s, size_t n, bool need_port)
{
	const char *p = s, *end = s + n;
	if (p == end)
		return !need_port;
	if (*p == '[') {
		const char *start = ++p;
		while (p < end && *p != ']') {
			if (!has_class(*p, C_HOST) && *p != ':')
				return false;
			p++;
		}
		if (p == end || p == start)
			return false;
		p++;
	} else {
		const char *start = p;
		while (p < end && *p != ':') {
			if (*p == '%') {
				if (end - p < 3 || !has_class(p[1], C_HEX) || !has_class(p[2], C_HEX))
					return false;
				p += 3;
				continue;
			}
			if (!has_class(*p, C_HOST))
				return false;
			p++;
		}
		if (p == start)
			return false;
	}
	if (p == end)
		return !need_port;
	if (*p != ':')
		return false;
	p++;
	if (need_port && p == end)
		return false;
	return skip_class(p, end, C_DIGIT) == end;
}

/* Content-Length = 1*DIGIT, possibly repeated as a list by an intermediary
 * that combined lines (RFC 9110 8.6): every element must equal every other,
 * across lines too, or the message has two lengths and is refused. */
static int on_content_length(struct head_parser *hp, const char *value, size_t value_len)
{
	const char *p = value, *end = value + value_len;
	for (;;) {
		const char *digits = p;
		uint64_t n = 0;
		while (p < end && IS_DIGIT((unsigned char)*p)) {
			unsigned d = (unsigned)(*p - '0');
			if (n > (UINT64_MAX - d) / 10)
				return fail(hp, 400, "Content-Length overflows");
			n = n * 10 + d;
			p++;
		}
		if (p == digits)
			return fail(hp, 400, "invalid Content-Length");
		if (hp->have_content_length && n != hp->content_length)
			return fail(hp, 400, "conflicting Content-Length values");
		hp->have_content_length = true;
		hp->content_length = n;
		p = skip_ows(p, end);
		if (p == end)
			return 0;
		if (*p != ',')
			return fail(hp, 400, "invalid Content-Length");
		p = skip_ows(p + 1, end);
	}
}

/* Skips a quoted-string starting at the DQUOTE at p; returns the byte after
 * the closing DQUOTE, or NULL if it is malformed. */
static const char *skip_quoted_string(const char *p, const char *end)
{
	p++;
	while (p < end) {
		if (*p == '"')
			return p + 1;
		if (*p == '\\') {
			/* quoted-pair: the escaped byte may be HTAB, SP, VCHAR, obs-text */
			if (end - p < 2 || !has_class(p[1], C_VALUE))
				return NULL;
			p += 2;
			continue;
		}
		if (!has_class(*p, C_QDTEXT))
			return NULL;
		p++;
	}
	return NULL;
}

/* Transfer-Encoding = #transfer-coding, where
 * transfer-coding = token *( OWS ";" OWS token BWS "=" BWS ( token / quoted-string ) ).
 * Codings accumulate across lines in order; the verdict is given at the end
 * of the head (finish_framing), except "chunked" twice, refused at once. */
static int on_transfer_encoding(struct head_parser *hp, const char *value, size_t value_len)
{
	const char *p = value, *end = value + value_len;
	hp->have_transfer_encoding = true;
	for (;;) {
		p = skip_ows(p, end);
		if (p == end)
			return 0;
		if (*p == ',') {
			p++;
			continue;
		}
		const char *name = p;
		p = skip_class(p, end, C_TCHAR);
		if (p == name)
			return fail(hp, 400, "invalid Transfer-Encoding");
		size_t name_len = (size_t)(p - name);
		bool has_params = false;
		for (;;) {
			p = skip_ows(p, end);
			if (p == end || *p != ';')
				break;
			p = skip_ows(p + 1, end);
			const char *param = p;
			p = skip_class(p, end, C_TCHAR);
			if (p == param)
				return fail(hp, 400, "invalid Transfer-Encoding");
			p = skip_ows(p, end);
			if (p == end || *p != '=')
				return fail(hp, 400, "invalid Transfer-Encoding");
			p = skip_ows(p + 1, end);
			if (p < end && *p == '"') {
				p = skip_quoted_string(p, end);
				if (!p)
					return fail(hp, 400, "invalid Transfer-Encoding");
			} else {
				const char *token = p;
				p = skip_class(p, end, C_TCHAR);
				if (p == token)
					return fail(hp, 400, "invalid Transfer-Encoding");
			}
			has_params = true;
		}
		if (p < end && *p != ',')
			return fail(hp, 400, "invalid Transfer-Encoding");

		if (dv_http1_token_eq(name, name_len, "chunked")) {
			if (hp->te_chunked)
				return fail(hp, 400, "chunked applied more than once");
			/* chunked defines no parameters (RFC 9112 7): one is a
			 * sign of a sender we would disagree with on framing. */
			if (has_params)
				return fail(hp, 400, "parameters on chunked");
			hp->te_chunked = true;
			hp->te_last_chunked = true;
		} else {
			if (!hp->te_chunked)
				hp->te_other_coding = true;
			hp->te_last_chunked = false;
		}
	}
}

static int on_host(struct head_parser *hp, const char *value, size_t value_len)
{
	if (hp->have_host)
		return fail(hp, 400, "more than one Host header");
	if (!valid_authority(value, value_len, false))
		return fail(hp, 400, "invalid Host header");
	hp->have_host = true;
	hp->host = value;
	hp->host_len = value_len;
	return 0;
}

static void on_connection(struct head_parser *hp, const char *value, size_t value_len)
{
	const char *p = value, *end = value + value_len;
	const char *elem;
	size_t elem_len;
	while (next_list_element(&p, end, &elem, &elem_len)) {
		if (dv_http1_token_eq(elem, elem_len, "close"))
			hp->conn_close = true;
		else if (dv_http1_token_eq(elem, elem_len, "keep-alive"))
			hp->conn_keep_alive = true;
		else if (dv_http1_token_eq(elem, elem_len, "upgrade"))
			hp->head->connection_upgrade = true;
	}
}

/* Acts on the fields that decide framing, persistence and routing. The name
 * length is compared first, so most fields cost one switch. */
static int on_field(struct head_parser *hp, const struct dv_http1_field *f)
{
	switch (f->name_len) {
	case 4:
		if (hp->is_request && dv_http1_token_eq(f->name, 4, "host"))
			return on_host(hp, f->value, f->value_len);
		break;
	case 6:
		if (hp->is_request && dv_http1_token_eq(f->name, 6, "expect") &&
		    list_contains(f->value, f->value_len, "100-continue", 12))
			hp->expect_continue = true;
		break;
	case 7:
		if (dv_http1_token_eq(f->name, 7, "upgrade") && !hp->head->upgrade) {
			hp->head->upgrade = f->value;
			hp->head->upgrade_len = f->value_len;
		}
		break;
	case 10:
		if (dv_http1_token_eq(f->name, 10, "connection"))
			on_connection(hp, f->value, f->value_len);
		break;
	case 14:
		if (dv_http1_token_eq(f->name, 14, "content-length"))
			return on_content_length(hp, f->value, f->value_len);
		break;
	case 17:
		if (dv_http1_token_eq(f->name, 17, "transfer-encoding"))
			return on_transfer_encoding(hp, f->value, f->value_len);
		break;
	default:
		break;
	}
	return 0;
}

/* Parses field lines from p up to and including the empty line. Returns the
 * head length, INCOMPLETE or ERROR. */
static int parse_fields(struct head_parser *hp, const char *p)
{
	struct dv_http1_head *head = hp->head;
	const char *end = hp->end;
	for (;;) {
		if (p == end)
			return out_of_bytes(hp);
		char c = *p;
		if (c == '\r') {
			if (end - p < 2)
				return out_of_bytes(hp);
			if (p[1] != '\n')
				return fail(hp, 400, "bare CR in header section");
			return (int)(p + 2 - hp->buf);
		}
		if (c == '\n')
			return fail(hp, 400, "bare LF in header section");
		if (is_ows(c))
			return fail(hp, 400, "obsolete line folding or whitespace before a field");
		/* Checked as soon as another field line starts, so a client
		 * cannot make us wait for it to finish. */
		if (head->nfields >= hp->max_fields)
			return fail(hp, 431, "too many header fields");

		const char *name = p;
		p = skip_class(p, end, C_TCHAR);
		if (p == end)
			return out_of_bytes(hp);
		if (*p != ':') {
			if (is_ows(*p))
				return fail(hp, 400, "whitespace between field name and colon");
			if (*p == '\r' || *p == '\n')
				return fail(hp, 400, "field line without a colon");
			return fail(hp, 400, "invalid character in field name");
		}
		if (p == name)
			return fail(hp, 400, "empty field name");
		size_t name_len = (size_t)(p - name);

		p = skip_ows(p + 1, end);
		const char *value = p;
		p = skip_value_bytes(p, end);
		if (p == end)
			return out_of_bytes(hp);
		if (*p != '\r') {
			if (*p == '\n')
				return fail(hp, 400, "bare LF in header section");
			return fail(hp, 400, "control character in field value");
		}
		if (end - p < 2)
			return out_of_bytes(hp);
		if (p[1] != '\n')
			return fail(hp, 400, "bare CR in header section");
		const char *value_end = p;
		while (value_end > value && is_ows(value_end[-1]))
			value_end--;

		struct dv_http1_field *f = &head->fields[head->nfields++];
		f->name = name;
		f->name_len = name_len;
		f->value = value;
		f->value_len = (size_t)(value_end - value);
		int rc = on_field(hp, f);
		if (rc < 0)
			return rc;
		p += 2;
	}
}

/* Checks Content-Length/Transfer-Encoding together (RFC 9112 6.1-6.3). */
static int check_framing_fields(struct head_parser *hp)
{
	if (!hp->have_transfer_encoding)
		return 0;
	if (hp->have_content_length)
		return fail(hp, 400, "both Content-Length and Transfer-Encoding");
	if (hp->head->minor_version == 0)
		return fail(hp, 400, "Transfer-Encoding in HTTP/1.0");
	if (!hp->te_last_chunked)
		return fail(hp, 400, "final transfer coding is not chunked");
	if (hp->te_other_coding)
		return fail(hp, 501, "unsupported transfer coding");
	return 0;
}

static bool persistent(const struct head_parser *hp)
{
	if (hp->conn_close)
		return false;
	return hp->head->minor_version >= 1 || hp->conn_keep_alive;
}

/* Bounds the start line: returns the scan limit for a line starting at
 * `line`, and whether reaching it means the line is too long. */
static const char *start_line_bound(const struct head_parser *hp, const char *line, bool *at_limit)
{
	size_t avail = (size_t)(hp->end - line);
	*at_limit = avail >= hp->max_start_line;
	return *at_limit ? line + hp->max_start_line : hp->end;
}

static int start_line_out_of_bytes(struct head_parser *hp, bool at_limit, int status)
{
	if (at_limit)
		return fail(hp, status, "start line too long");
	return out_of_bytes(hp);
}

/* Checks the request-target's form against the method (RFC 9112 3.2) and
 * finds the authority of an absolute-form target. */
static int check_target(struct head_parser *hp, struct dv_http1_request *req)
{
	const char *t = req->target;
	size_t n = req->target_len;
	bool connect = req->method_len == 7 && memcmp(req->method, "CONNECT", 7) == 0;
	if (connect) {
		if (!valid_authority(t, n, true))
			return fail(hp, 400, "CONNECT needs a host:port target");
		return 0;
	}
	if (t[0] == '/')
		return 0;
	if (t[0] == '*') {
		if (n == 1 && req->method_len == 7 && memcmp(req->method, "OPTIONS", 7) == 0)
			return 0;
		return fail(hp, 400, "invalid request target");
	}
	/* absolute-form: scheme "://" authority [ path-abempty ] [ "?" query ] */
	const char *p = t, *end = t + n;
	if (!IS_UPPER((unsigned char)*p) && !IS_LOWER((unsigned char)*p))
		return fail(hp, 400, "invalid request target");
	p = skip_class(p + 1, end, C_SCHEME);
	if (end - p < 3 || memcmp(p, "://", 3) != 0)
		return fail(hp, 400, "invalid request target");
	const char *authority = p + 3;
	p = authority;
	while (p < end && *p != '/' && *p != '?' && *p != '#')
		p++;
	size_t authority_len = (size_t)(p - authority);
	/* userinfo ("user@host") is refused by valid_authority: RFC 9110 4.2.4
	 * tells recipients to treat it as an error. */
	if (authority_len == 0 || !valid_authority(authority, authority_len, false))
		return fail(hp, 400, "invalid authority in request target");
	req->host = authority;
	req->host_len = authority_len;
	return 0;
}

int dv_http1_parse_request(const char *buf, size_t len, const struct dv_http1_limits *limits,
                           struct dv_http1_request *req)
{
	struct dv_http1_limits defaults;
	if (!limits) {
		dv_http1_limits_default(&defaults);
		limits = &defaults;
	}
	struct head_parser hp;
	head_parser_init(&hp, &req->head, buf, len, limits, true);
	req->method = NULL;
	req->method_len = 0;
	req->target = NULL;
	req->target_len = 0;
	req->host = NULL;
	req->host_len = 0;
	req->expect_continue = false;

	const char *p = buf;
	const char *end = hp.end;
	/* Empty lines before the request line (RFC 9112 2.2): a client may send
	 * a CRLF after a body. They count toward the head limit. */
	while (p < end && *p == '\r') {
		if (end - p < 2)
			return out_of_bytes(&hp);
		if (p[1] != '\n')
			return fail(&hp, 400, "bare CR in header section");
		p += 2;
	}

	bool at_limit;
	const char *lim = start_line_bound(&hp, p, &at_limit);

	/* method SP */
	const char *method = p;
	p = skip_class(p, lim, C_TCHAR);
	if (p == lim)
		return start_line_out_of_bytes(&hp, at_limit, 414);
	if (*p != ' ' || p == method) {
		if (*p == '\n')
			return fail(&hp, 400, "bare LF in header section");
		return fail(&hp, 400, "invalid method");
	}
	req->method = method;
	req->method_len = (size_t)(p - method);
	p++;

	/* request-target SP */
	const char *target = p;
	p = skip_target_bytes(p, lim);
	if (p == lim)
		return start_line_out_of_bytes(&hp, at_limit, 414);
	if (*p != ' ' || p == target)
		return fail(&hp, 400, p == target ? "empty request target"
		                                  : "invalid character in request target");
	req->target = target;
	req->target_len = (size_t)(p - target);
	p++;

	/* HTTP-version CRLF */
	int major, minor;
	int rc = parse_version(&p, lim, &major, &minor);
	if (rc == 0)
		return start_line_out_of_bytes(&hp, at_limit, 414);
	if (rc < 0)
		return fail(&hp, 400, "invalid HTTP version");
	if (p == lim)
		return start_line_out_of_bytes(&hp, at_limit, 414);
	if (*p != '\r')
		return fail(&hp, 400, *p == '\n' ? "bare LF in header section" : "invalid HTTP version");
	if (lim - p < 2)
		return start_line_out_of_bytes(&hp, at_limit, 414);
	if (p[1] != '\n')
		return fail(&hp, 400, "bare CR in header section");
	p += 2;
	if (major != 1 || minor > 1)
		return fail(&hp, 505, "HTTP version not supported");
	req->head.minor_version = minor;

	rc = check_target(&hp, req);
	if (rc < 0)
		return rc;

	int head_len = parse_fields(&hp, p);
	if (head_len < 0)
		return head_len;

	rc = check_framing_fields(&hp);
	if (rc < 0)
		return rc;
	if (minor == 1 && !hp.have_host)
		return fail(&hp, 400, "missing Host header");
	/* An absolute-form target's authority wins over Host (RFC 9112 3.2.2);
	 * check_target has stored it already. */
	if (!req->host) {
		req->host = hp.host;
		req->host_len = hp.host_len;
	}
	req->expect_continue = hp.expect_continue;

	struct dv_http1_head *head = &req->head;
	if (hp.have_transfer_encoding) {
		head->framing = DV_HTTP1_BODY_CHUNKED;
	} else if (hp.have_content_length) {
		head->framing = DV_HTTP1_BODY_LENGTH;
		head->content_length = hp.content_length;
	}
	head->keep_alive = persistent(&hp);
	return head_len;
}

int dv_http1_parse_response(const char *buf, size_t len, const struct dv_http1_limits *limits,
                            const char *request_method, size_t request_method_len,
                            struct dv_http1_response *resp)
{
	struct dv_http1_limits defaults;
	if (!limits) {
		dv_http1_limits_default(&defaults);
		limits = &defaults;
	}
	struct head_parser hp;
	head_parser_init(&hp, &resp->head, buf, len, limits, false);
	resp->status = 0;
	resp->reason = NULL;
	resp->reason_len = 0;

	/* No empty lines are skipped here: RFC 9112 allows them only before a
	 * request line, and bytes before a status line mean the previous
	 * response was framed wrongly. */
	const char *p = buf;
	bool at_limit;
	const char *lim = start_line_bound(&hp, p, &at_limit);

	/* HTTP-version SP status-code [ SP reason-phrase ] CRLF. The SP before
	 * an empty reason is often left out; that is harmless, so accepted. */
	int major, minor;
	int rc = parse_version(&p, lim, &major, &minor);
	if (rc == 0)
		return start_line_out_of_bytes(&hp, at_limit, 502);
	if (rc < 0)
		return fail(&hp, 502, "invalid HTTP version");
	if (p == lim)
		return start_line_out_of_bytes(&hp, at_limit, 502);
	if (*p != ' ')
		return fail(&hp, 502, "invalid status line");
	p++;
	int status = 0;
	for (int i = 0; i < 3; i++, p++) {
		if (p == lim)
			return start_line_out_of_bytes(&hp, at_limit, 502);
		if (!IS_DIGIT((unsigned char)*p) || (i == 0 && *p == '0'))
			return fail(&hp, 502, "invalid status code");
		status = status * 10 + (*p - '0');
	}
	if (p == lim)
		return start_line_out_of_bytes(&hp, at_limit, 502);
	const char *reason = p;
	if (*p == ' ') {
		reason = ++p;
		p = skip_value_bytes(p, lim);
		if (p == lim)
			return start_line_out_of_bytes(&hp, at_limit, 502);
	}
	if (*p != '\r')
		return fail(&hp, 502, "invalid status line");
	if (lim - p < 2)
		return start_line_out_of_bytes(&hp, at_limit, 502);
	if (p[1] != '\n')
		return fail(&hp, 502, "bare CR in header section");
	resp->status = status;
	resp->reason = reason;
	resp->reason_len = (size_t)(p - reason);
	p += 2;
	if (major != 1 || minor > 1)
		return fail(&hp, 502, "HTTP version not supported");
	resp->head.minor_version = minor;

	int head_len = parse_fields(&hp, p);
	if (head_len < 0)
		return head_len;
	rc = check_framing_fields(&hp);
	if (rc < 0)
		return rc;

	struct dv_http1_head *head = &resp->head;
	bool head_request = request_method_len == 4 && memcmp(request_method, "HEAD", 4) == 0;
	bool connect_request = request_method_len == 7 && memcmp(request_method, "CONNECT", 7) == 0;
	/* RFC 9112 6.3, in its order. */
	if (head_request || status < 200 || status == 204 || status == 304 ||
	    (connect_request && status < 300)) {
		head->framing = DV_HTTP1_BODY_NONE;
	} else if (hp.have_transfer_encoding) {
		head->framing = DV_HTTP1_BODY_CHUNKED;
	} else if (hp.have_content_length) {
		head->framing = DV_HTTP1_BODY_LENGTH;
		head->content_length = hp.content_length;
	} else {
		head->framing = DV_HTTP1_BODY_UNTIL_CLOSE;
	}
	head->keep_alive = head->framing != DV_HTTP1_BODY_UNTIL_CLOSE && persistent(&hp);
	return head_len;
}

/* ---- chunked transfer coding ---------------------------------------------
 * chunked-body = *chunk last-chunk trailer-section CRLF
 * chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 * chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
 * One state per position in that grammar; everything before DATA belongs to
 * the chunk-size line and counts toward its length limit. */
enum chunked_state {
	CS_SIZE_START = 0,  /* first hex digit of a chunk size */
	CS_SIZE,            /* more hex digits */
	CS_SIZE_BWS,        /* whitespace after size or ext value: only ";" may follow */
	CS_EXT_NAME_START,  /* after ";" */
	CS_EXT_NAME,
	CS_EXT_NAME_BWS,    /* whitespace after a name: "=" or ";" must follow */
	CS_EXT_VALUE_START, /* after "=" */
	CS_EXT_TOKEN,
	CS_EXT_QUOTED,
	CS_EXT_QUOTED_ESC,
	CS_EXT_VALUE_END,   /* after a closing DQUOTE */
	CS_SIZE_LF,         /* CR of the size line seen */
	CS_DATA,
	CS_DATA_CR,
	CS_DATA_LF,
	CS_TRAILER_START,   /* start of a trailer line or of the final CRLF */
	CS_TRAILER_NAME,
	CS_TRAILER_VALUE,
	CS_TRAILER_LF,
	CS_FINAL_LF,
	CS_DONE,
	CS_ERROR,
};

void dv_http1_chunked_init(struct dv_http1_chunked *scanner)
{
	memset(scanner, 0, sizeof *scanner);
	scanner->state = CS_SIZE_START;
	scanner->max_trailer_bytes = DEFAULT_MAX_TRAILER_BYTES;
	scanner->error = NULL;
}

/* Where a chunk-size line may go after a size digit, an ext value token or a
 * closing quote: ";", whitespace before ";", or the end of the line. */
static int after_size_or_value(char c)
{
	if (c == ';')
		return CS_EXT_NAME_START;
	if (is_ows(c))
		return CS_SIZE_BWS;
	if (c == '\r')
		return CS_SIZE_LF;
	return -1;
}

enum dv_http1_chunked_result dv_http1_chunked_scan(struct dv_http1_chunked *scanner,
                                                   const char *buf, size_t len, size_t *consumed,
                                                   struct dv_http1_span *data_spans,
                                                   size_t data_spans_cap, size_t *ndata_spans)
{
	const char *p = buf, *end = buf + len;
	const char *why = NULL;
	size_t nspans = 0;
	enum dv_http1_chunked_result result = DV_HTTP1_CHUNKED_MORE;

	if (ndata_spans)
		*ndata_spans = 0;
	if (scanner->state == CS_DONE || scanner->state == CS_ERROR) {
		*consumed = 0;
		return scanner->state == CS_DONE ? DV_HTTP1_CHUNKED_DONE : DV_HTTP1_CHUNKED_ERROR;
	}

	while (p < end) {
		int state = scanner->state;
		if (state == CS_DATA) {
			/* Data is skipped in bulk: this is where the bytes are. */
			if (data_spans && nspans == data_spans_cap)
				break;
			size_t avail = (size_t)(end - p);
			size_t take = scanner->remaining < avail ? (size_t)scanner->remaining : avail;
			if (data_spans) {
				data_spans[nspans].data = p;
				data_spans[nspans].len = take;
				nspans++;
			}
			p += take;
			scanner->remaining -= take;
			if (scanner->remaining == 0)
				scanner->state = CS_DATA_CR;
			continue;
		}
		if (state == CS_TRAILER_VALUE) {
			/* Bulk-skip no further than the limit allows, so the byte
			 * that crosses it is reported by the per-byte check below
			 * at the same offset however the input is split. */
			size_t room = scanner->trailer_bytes < scanner->max_trailer_bytes
			                      ? scanner->max_trailer_bytes - scanner->trailer_bytes
			                      : 0;
			const char *lim = (size_t)(end - p) > room ? p + room : end;
			const char *stop = skip_value_bytes(p, lim);
			scanner->trailer_bytes += (size_t)(stop - p);
			p = stop;
			if (p == end)
				break;
		}
		if (state < CS_DATA && ++scanner->line_len > CHUNK_LINE_MAX) {
			why = "chunk-size line too long";
			goto fail;
		}
		if (state >= CS_TRAILER_NAME || (state == CS_TRAILER_START && *p != '\r')) {
			if (state != CS_FINAL_LF &&
			    ++scanner->trailer_bytes > scanner->max_trailer_bytes) {
				why = "trailer section too large";
				goto fail;
			}
		}

		char c = *p;
		int next = -1;
		switch (state) {
		case CS_SIZE_START:
			if (has_class(c, C_HEX)) {
				scanner->remaining = hex_value(c);
				next = CS_SIZE;
			} else {
				why = "invalid chunk size";
			}
			break;
		case CS_SIZE:
			if (has_class(c, C_HEX)) {
				unsigned d = hex_value(c);
				if (scanner->remaining > (CHUNK_SIZE_MAX - d) / 16) {
					why = "chunk size too large";
					break;
				}
				scanner->remaining = scanner->remaining * 16 + d;
				next = CS_SIZE;
			} else {
				next = after_size_or_value(c);
				if (next < 0)
					why = "invalid chunk size";
			}
			break;
		case CS_SIZE_BWS:
			if (is_ows(c))
				next = CS_SIZE_BWS;
			else if (c == ';')
				next = CS_EXT_NAME_START;
			else
				why = "invalid chunk-size line";
			break;
		case CS_EXT_NAME_START:
			if (is_ows(c))
				next = CS_EXT_NAME_START;
			else if (has_class(c, C_TCHAR))
				next = CS_EXT_NAME;
			else
				why = "invalid chunk extension";
			break;
		case CS_EXT_NAME:
			if (has_class(c, C_TCHAR))
				next = CS_EXT_NAME;
			else if (c == '=')
				next = CS_EXT_VALUE_START;
			else if (is_ows(c))
				next = CS_EXT_NAME_BWS;
			else
				next = after_size_or_value(c);
			if (next < 0)
				why = "invalid chunk extension";
			break;
		case CS_EXT_NAME_BWS:
			if (is_ows(c))
				next = CS_EXT_NAME_BWS;
			else if (c == '=')
				next = CS_EXT_VALUE_START;
			else if (c == ';')
				next = CS_EXT_NAME_START;
			else
				why = "invalid chunk extension";
			break;
		case CS_EXT_VALUE_START:
			if (is_ows(c))
				next = CS_EXT_VALUE_START;
			else if (c == '"')
				next = CS_EXT_QUOTED;
			else if (has_class(c, C_TCHAR))
				next = CS_EXT_TOKEN;
			else
				why = "invalid chunk extension";
			break;
		case CS_EXT_TOKEN:
			next = has_class(c, C_TCHAR) ? CS_EXT_TOKEN : after_size_or_value(c);
			if (next < 0)
				why = "invalid chunk extension";
			break;
		case CS_EXT_QUOTED:
			if (c == '"')
				next = CS_EXT_VALUE_END;
			else if (c == '\\')
				next = CS_EXT_QUOTED_ESC;
			else if (has_class(c, C_QDTEXT))
				next = CS_EXT_QUOTED;
			else
				why = "invalid chunk extension";
			break;
		case CS_EXT_QUOTED_ESC:
			if (has_class(c, C_VALUE))
				next = CS_EXT_QUOTED;
			else
				why = "invalid chunk extension";
			break;
		case CS_EXT_VALUE_END:
			next = after_size_or_value(c);
			if (next < 0)
				why = "invalid chunk extension";
			break;
		case CS_SIZE_LF:
			if (c == '\n') {
				scanner->line_len = 0;
				next = scanner->remaining ? CS_DATA : CS_TRAILER_START;
			} else {
				why = "bare CR in chunk-size line";
			}
			break;
		case CS_DATA_CR:
			if (c == '\r')
				next = CS_DATA_LF;
			else
				why = "missing CRLF after chunk data";
			break;
		case CS_DATA_LF:
			if (c == '\n')
				next = CS_SIZE_START;
			else
				why = "missing CRLF after chunk data";
			break;
		case CS_TRAILER_START:
			if (c == '\r')
				next = CS_FINAL_LF;
			else if (has_class(c, C_TCHAR))
				next = CS_TRAILER_NAME;
			else if (is_ows(c))
				why = "obsolete line folding in trailer section";
			else
				why = "invalid trailer field";
			break;
		case CS_TRAILER_NAME:
			if (has_class(c, C_TCHAR))
				next = CS_TRAILER_NAME;
			else if (c == ':')
				next = CS_TRAILER_VALUE;
			else if (is_ows(c))
				why = "whitespace between field name and colon";
			else
				why = "invalid trailer field";
			break;
		case CS_TRAILER_VALUE:
			/* skip_value_bytes stopped here: c is not a value byte */
			if (c == '\r')
				next = CS_TRAILER_LF;
			else if (c == '\n')
				why = "bare LF in trailer section";
			else
				why = "control character in trailer field";
			break;
		case CS_TRAILER_LF:
			if (c == '\n')
				next = CS_TRAILER_START;
			else
				why = "bare CR in trailer section";
			break;
		case CS_FINAL_LF:
			if (c == '\n')
				next = CS_DONE;
			else
				why = "bare CR in trailer section";
			break;
		default:
			why = "chunked scanner in an invalid state";
			break;
		}
		if (next < 0) {
			if (!why)
				why = "invalid chunked body";
			goto fail;
		}
		scanner->state = next;
		p++;
		if (next == CS_DONE) {
			result = DV_HTTP1_CHUNKED_DONE;
			break;
		}
	}
	*consumed = (size_t)(p - buf);
	if (ndata_spans)
		*ndata_spans = nspans;
	return result;

fail:
	scanner->state = CS_ERROR;
	scanner->error = why;
	*consumed = (size_t)(p - buf);
	if (ndata_spans)
		*ndata_spans = nspans;
	return DV_HTTP1_CHUNKED_ERROR;
}

/* libFuzzer target for src/http/http1.c: request and response heads, and the
 * chunked scanner. Besides crashes and sanitizer reports, it aborts on any
 * broken invariant: pointers outside the buffer, a result that changes when
 * the same bytes arrive in a different split, framing inconsistent with the
 * fields, and so on.
 *
 * Input layout: 3 control bytes, then the message.
 *   byte 0, bits 0-1: limits (NULL = default / small / tiny / default with a 4-field array)
 *           bits 2-3: the request method a response answers (GET/HEAD/CONNECT/none)
 *           bits 4-7: chunked trailer limit (0: default, else n * 5 bytes)
 *   bytes 1-2: split point, taken modulo (message length + 1)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                             \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "fuzz_http1: invariant failed at line %d: %s\n", __LINE__, \
			        #cond);                                                          \
			abort();                                                                 \
		}                                                                                \
	} while (0)

#define MAX_INPUT 65536
#define FIELDS_CAP 128

struct config {
	struct dv_http1_limits limits;
	bool null_limits; /* pass NULL (the defaults) instead of &limits */
	size_t fields_cap;
	const char *method;
	size_t method_len;
	size_t max_trailer_bytes;
	size_t split;
};

static bool inside(const char *p, size_t n, const char *buf, size_t len)
{
	return p >= buf && n <= len && p + n <= buf + len;
}

static bool is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static uint64_t leading_number(const char *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n && p[i] >= '0' && p[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(p[i] - '0');
	return v;
}

/* An independent statement of dv_http1_is_hop_by_hop(): lower-case the
 * name into a buffer and compare with the list. */
static bool reference_hop_by_hop(const char *name, size_t len)
{
	static const char *const hop[] = { "connection", "keep-alive", "proxy-connection",
		                           "proxy-authenticate", "proxy-authorization", "te",
		                           "trailer", "transfer-encoding", "upgrade" };
	char lower[32];
	if (len >= sizeof lower)
		return false;
	for (size_t i = 0; i < len; i++)
		lower[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] + 32) : name[i];
	lower[len] = '\0';
	for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++) {
		if (strlen(hop[i]) == len && memcmp(hop[i], lower, len) == 0)
			return true;
	}
	return false;
}

/* Invariants every successfully parsed head satisfies. */
static void check_head(const struct dv_http1_head *head, const char *buf, int head_len,
                       const struct config *cfg)
{
	size_t hl = (size_t)head_len;
	size_t max_fields = cfg->limits.max_fields < cfg->fields_cap ? cfg->limits.max_fields
	                                                              : cfg->fields_cap;
	CHECK(head->error_status == 0 && head->error == NULL);
	CHECK(head->minor_version == 0 || head->minor_version == 1);
	CHECK(head->nfields <= max_fields);
	CHECK(hl <= cfg->limits.max_head_bytes);
	CHECK(hl >= 4 && memcmp(buf + hl - 4, "\r\n\r\n", 4) == 0);
	for (size_t i = 0; i < head->nfields; i++) {
		const struct dv_http1_field *f = &head->fields[i];
		CHECK(f->name_len > 0 && inside(f->name, f->name_len, buf, hl));
		CHECK(inside(f->value, f->value_len, buf, hl));
		CHECK(f->value >= f->name + f->name_len + 1);
		CHECK(f->name[f->name_len] == ':');
		for (size_t j = 0; j < f->name_len; j++)
			CHECK(is_tchar((unsigned char)f->name[j]));
		for (size_t j = 0; j < f->value_len; j++) {
			unsigned char c = (unsigned char)f->value[j];
			CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
		}
		CHECK(dv_http1_is_hop_by_hop(f->name, f->name_len) ==
		      reference_hop_by_hop(f->name, f->name_len));
		if (f->value_len) {
			CHECK(f->value[0] != ' ' && f->value[0] != '\t');
			CHECK(f->value[f->value_len - 1] != ' ' && f->value[f->value_len - 1] != '\t');
		}
	}
	if (head->upgrade)
		CHECK(inside(head->upgrade, head->upgrade_len, buf, hl));
	CHECK(head->framing == DV_HTTP1_BODY_LENGTH || head->content_length == 0);

	/* The helpers must agree with what the parser concluded. */
	bool close = dv_http1_connection_lists(head, "close", 5);
	bool keep_alive = dv_http1_connection_lists(head, "keep-alive", 10);
	bool upgrade = dv_http1_connection_lists(head, "upgrade", 7);
	CHECK(head->connection_upgrade == upgrade);
	if (head->framing != DV_HTTP1_BODY_UNTIL_CLOSE)
		CHECK(head->keep_alive == (!close && (head->minor_version == 1 || keep_alive)));
	else
		CHECK(!head->keep_alive);

	const struct dv_http1_field *cl = dv_http1_find_field(head, "content-length");
	const struct dv_http1_field *te = dv_http1_find_field(head, "transfer-encoding");
	CHECK(!(cl && te));
	if (te)
		CHECK(head->minor_version == 1);
	if (head->framing == DV_HTTP1_BODY_LENGTH)
		CHECK(cl && leading_number(cl->value, cl->value_len) == head->content_length);
	if (head->framing == DV_HTTP1_BODY_CHUNKED)
		CHECK(te != NULL);
	const struct dv_http1_field *up = dv_http1_find_field(head, "upgrade");
	CHECK((up == NULL) == (head->upgrade == NULL));
	if (up)
		CHECK(up->value == head->upgrade && up->value_len == head->upgrade_len);
}

static int parse_request(const char *buf, size_t len, const struct config *cfg,
                         struct dv_http1_request *req, struct dv_http1_field *fields)
{
	req->head.fields = fields;
	req->head.fields_cap = cfg->fields_cap;
	return dv_http1_parse_request(buf, len, cfg->null_limits ? NULL : &cfg->limits, req);
}

static void fuzz_request(const char *buf, size_t len, const struct config *cfg)
{
	static struct dv_http1_field fields[FIELDS_CAP], fields2[FIELDS_CAP];
	struct dv_http1_request req, again;
	int rc = parse_request(buf, len, cfg, &req, fields);
	CHECK(rc == DV_HTTP1_INCOMPLETE || rc == DV_HTTP1_ERROR || rc > 0);

	if (rc > 0) {
		size_t hl = (size_t)rc;
		CHECK(hl <= len);
		check_head(&req.head, buf, rc, cfg);
		CHECK(req.head.framing != DV_HTTP1_BODY_UNTIL_CLOSE);
		CHECK(req.method_len > 0 && inside(req.method, req.method_len, buf, hl));
		CHECK(req.method[req.method_len] == ' ');
		for (size_t i = 0; i < req.method_len; i++)
			CHECK(is_tchar((unsigned char)req.method[i]));
		CHECK(req.target_len > 0 && inside(req.target, req.target_len, buf, hl));
		CHECK(req.target == req.method + req.method_len + 1);
		for (size_t i = 0; i < req.target_len; i++)
			CHECK(req.target[i] > 0x20 && req.target[i] < 0x7f);
		CHECK(req.target_len <= cfg->limits.max_start_line);
		if (req.host)
			CHECK(inside(req.host, req.host_len, buf, hl));
		if (req.head.minor_version == 1)
			CHECK(req.host != NULL);
		if (req.expect_continue)
			CHECK(dv_http1_find_field(&req.head, "expect") != NULL);

		/* The same head alone parses to the same thing... */
		CHECK(parse_request(buf, hl, cfg, &again, fields2) == rc);
		CHECK(again.head.nfields == req.head.nfields && again.head.framing == req.head.framing &&
		      again.head.content_length == req.head.content_length &&
		      again.head.keep_alive == req.head.keep_alive && again.host == req.host &&
		      again.method == req.method && again.target_len == req.target_len);
		/* ...and no shorter prefix is complete or wrong. */
		CHECK(parse_request(buf, hl - 1, cfg, &again, fields2) == DV_HTTP1_INCOMPLETE);
		if (cfg->split < hl)
			CHECK(parse_request(buf, cfg->split, cfg, &again, fields2) == DV_HTTP1_INCOMPLETE);
	} else if (rc == DV_HTTP1_ERROR) {
		int st = req.head.error_status;
		CHECK(st == 400 || st == 414 || st == 431 || st == 501 || st == 505);
		CHECK(req.head.error != NULL);
		/* A prefix is still incomplete or already shows the same error. */
		if (cfg->split < len) {
			int prc = parse_request(buf, cfg->split, cfg, &again, fields2);
			CHECK(prc == DV_HTTP1_INCOMPLETE ||
			      (prc == DV_HTTP1_ERROR && again.head.error_status == st));
		}
	} else {
		CHECK(len < cfg->limits.max_head_bytes);
		if (cfg->split < len)
			CHECK(parse_request(buf, cfg->split, cfg, &again, fields2) == DV_HTTP1_INCOMPLETE);
	}
}

static int parse_response(const char *buf, size_t len, const struct config *cfg,
                          struct dv_http1_response *resp, struct dv_http1_field *fields)
{
	resp->head.fields = fields;
	resp->head.fields_cap = cfg->fields_cap;
	return dv_http1_parse_response(buf, len, cfg->null_limits ? NULL : &cfg->limits, cfg->method,
	                               cfg->method_len, resp);
}

static void fuzz_response(const char *buf, size_t len, const struct config *cfg)
{
	static struct dv_http1_field fields[FIELDS_CAP], fields2[FIELDS_CAP];
	struct dv_http1_response resp, again;
	int rc = parse_response(buf, len, cfg, &resp, fields);
	CHECK(rc == DV_HTTP1_INCOMPLETE || rc == DV_HTTP1_ERROR || rc > 0);

	if (rc > 0) {
		size_t hl = (size_t)rc;
		CHECK(hl <= len);
		check_head(&resp.head, buf, rc, cfg);
		CHECK(resp.status >= 100 && resp.status <= 999);
		CHECK(memcmp(buf, "HTTP/1.", 7) == 0);
		if (resp.reason_len)
			CHECK(inside(resp.reason, resp.reason_len, buf, hl));
		bool head_req = cfg->method && strcmp(cfg->method, "HEAD") == 0;
		bool connect_req = cfg->method && strcmp(cfg->method, "CONNECT") == 0;
		bool no_body = head_req || resp.status < 200 || resp.status == 204 ||
		               resp.status == 304 || (connect_req && resp.status < 300);
		CHECK(no_body == (resp.head.framing == DV_HTTP1_BODY_NONE));

		CHECK(parse_response(buf, hl, cfg, &again, fields2) == rc);
		CHECK(again.status == resp.status && again.head.framing == resp.head.framing &&
		      again.head.nfields == resp.head.nfields);
		CHECK(parse_response(buf, hl - 1, cfg, &again, fields2) == DV_HTTP1_INCOMPLETE);
		if (cfg->split < hl)
			CHECK(parse_response(buf, cfg->split, cfg, &again, fields2) == DV_HTTP1_INCOMPLETE);
	} else if (rc == DV_HTTP1_ERROR) {
		CHECK(resp.head.error_status == 502 && resp.head.error != NULL);
		if (cfg->split < len) {
			int prc = parse_response(buf, cfg->split, cfg, &again, fields2);
			CHECK(prc == DV_HTTP1_INCOMPLETE ||
			      (prc == DV_HTTP1_ERROR && again.head.error_status == 502));
		}
	} else {
		CHECK(len < cfg->limits.max_head_bytes);
		if (cfg->split < len)
			CHECK(parse_response(buf, cfg->split, cfg, &again, fields2) == DV_HTTP1_INCOMPLETE);
	}
}

struct scan_out {
	int result;
	size_t consumed;
	size_t data_len;
};

/* Feeds buf to a fresh scanner: first [0, first_cut), then pieces of `step`
 * bytes (0: the rest at once), with `cap` spans per call (0: no span array).
 * Decoded data goes to `data`. */
static void scan(const char *buf, size_t len, size_t first_cut, size_t step, size_t cap,
                 size_t max_trailer, struct scan_out *out, char *data)
{
	struct dv_http1_chunked sc;
	dv_http1_chunked_init(&sc);
	if (max_trailer)
		sc.max_trailer_bytes = max_trailer;
	struct dv_http1_span spans[8];
	size_t off = 0, fed = 0;
	out->result = DV_HTTP1_CHUNKED_MORE;
	out->consumed = 0;
	out->data_len = 0;
	for (;;) {
		if (off == fed) {
			if (fed == len)
				break;
			if (fed < first_cut)
				fed = first_cut;
			else
				fed = step && len - fed > step ? fed + step : len;
		}
		size_t avail = fed - off, consumed = SIZE_MAX, n = SIZE_MAX;
		int r = dv_http1_chunked_scan(&sc, buf + off, avail, &consumed, cap ? spans : NULL, cap,
		                              &n);
		CHECK(r == DV_HTTP1_CHUNKED_MORE || r == DV_HTTP1_CHUNKED_DONE ||
		      r == DV_HTTP1_CHUNKED_ERROR);
		CHECK(consumed <= avail);
		CHECK(n <= cap);
		if (r == DV_HTTP1_CHUNKED_MORE && consumed < avail)
			CHECK(cap && n == cap);
		for (size_t i = 0; i < n; i++) {
			CHECK(spans[i].len > 0);
			CHECK(spans[i].data >= buf + off &&
			      spans[i].data + spans[i].len <= buf + off + consumed);
			memcpy(data + out->data_len, spans[i].data, spans[i].len);
			out->data_len += spans[i].len;
		}
		off += consumed;
		out->consumed = off;
		out->result = r;
		if (r == DV_HTTP1_CHUNKED_ERROR)
			CHECK(sc.error != NULL);
		if (r != DV_HTTP1_CHUNKED_MORE) {
			/* DONE and ERROR are sticky and consume nothing more. */
			size_t c2 = SIZE_MAX;
			CHECK(dv_http1_chunked_scan(&sc, buf + off, len - off, &c2, NULL, 0, NULL) == r);
			CHECK(c2 == 0);
			break;
		}
	}
	CHECK(out->data_len <= out->consumed);
}

static char data_whole[MAX_INPUT], data_split[MAX_INPUT], data_bytes[MAX_INPUT];

static void fuzz_chunked(const char *buf, size_t len, const struct config *cfg)
{
	struct scan_out whole, split, bytes, framing_only;
	scan(buf, len, 0, 0, 8, cfg->max_trailer_bytes, &whole, data_whole);
	scan(buf, len, cfg->split, 0, 1, cfg->max_trailer_bytes, &split, data_split);
	CHECK(whole.result == split.result && whole.consumed == split.consumed);
	CHECK(whole.data_len == split.data_len && memcmp(data_whole, data_split, whole.data_len) == 0);
	scan(buf, len, 0, 0, 0, cfg->max_trailer_bytes, &framing_only, NULL);
	CHECK(whole.result == framing_only.result && whole.consumed == framing_only.consumed);
	if (whole.result == DV_HTTP1_CHUNKED_MORE)
		CHECK(whole.consumed == len);
	if (whole.result == DV_HTTP1_CHUNKED_DONE)
		CHECK(whole.consumed >= 5 && memcmp(buf + whole.consumed - 2, "\r\n", 2) == 0);
	/* One byte at a time is slow; do it for small inputs only. */
	if (len <= 2048) {
		scan(buf, len, 0, 1, 2, cfg->max_trailer_bytes, &bytes, data_bytes);
		CHECK(whole.result == bytes.result && whole.consumed == bytes.consumed);
		CHECK(whole.data_len == bytes.data_len &&
		      memcmp(data_whole, data_bytes, whole.data_len) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3 || size - 3 > MAX_INPUT)
		return 0;
	const char *msg = (const char *)data + 3;
	size_t len = size - 3;
	struct config cfg;
	memset(&cfg, 0, sizeof cfg);
	dv_http1_limits_default(&cfg.limits);
	cfg.fields_cap = FIELDS_CAP;
	switch (data[0] & 3) {
	case 1:
		cfg.limits = (struct dv_http1_limits){ 64, 256, 8 };
		break;
	case 2:
		cfg.limits = (struct dv_http1_limits){ 16, 48, 2 };
		break;
	case 3:
		cfg.fields_cap = 4;
		break;
	default:
		cfg.null_limits = true;
		break;
	}
	static const char *const methods[] = { "GET", "HEAD", "CONNECT", NULL };
	cfg.method = methods[(data[0] >> 2) & 3];
	cfg.method_len = cfg.method ? strlen(cfg.method) : 0;
	cfg.max_trailer_bytes = (size_t)(data[0] >> 4) * 5;
	cfg.split = (size_t)(data[1] | data[2] << 8) % (len + 1);

	/* The message is copied to a buffer of its exact size, so ASan catches
	 * a read of even one byte past what the parser was given. */
	char *copy = malloc(len ? len : 1);
	CHECK(copy != NULL);
	memcpy(copy, msg, len);
	fuzz_request(copy, len, &cfg);
	fuzz_response(copy, len, &cfg);
	fuzz_chunked(copy, len, &cfg);
	free(copy);
	return 0;
}

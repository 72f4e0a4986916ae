#include "core/strbuf.h"

#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dv_strbuf_init(struct dv_strbuf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void dv_strbuf_dispose(struct dv_strbuf *b)
{
	free(b->data);
	dv_strbuf_init(b);
}

void dv_strbuf_reset(struct dv_strbuf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

static void reserve(struct dv_strbuf *b, size_t more)
{
	if (b->len + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + more + 1)
		cap *= 2;
	b->data = dv_xrealloc(b->data, cap);
	b->cap = cap;
}

void dv_strbuf_append(struct dv_strbuf *b, const void *data, size_t len)
{
	reserve(b, len);
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void dv_strbuf_puts(struct dv_strbuf *b, const char *s)
{
	dv_strbuf_append(b, s, strlen(s));
}

void dv_strbuf_vprintf(struct dv_strbuf *b, const char *fmt, va_list ap)
{
	/* Most strings fit a small stack buffer: format once; else size it. */
	char small[256];
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof small, fmt, ap2);
	va_end(ap2);
	if (n <= 0)
		return;
	if ((size_t)n < sizeof small) {
		dv_strbuf_append(b, small, (size_t)n);
		return;
	}
	reserve(b, (size_t)n);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void dv_strbuf_printf(struct dv_strbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	dv_strbuf_vprintf(b, fmt, ap);
	va_end(ap);
}

char *dv_strbuf_steal(struct dv_strbuf *b)
{
	char *s = b->data ? b->data : dv_xstrdup("");
	dv_strbuf_init(b);
	return s;
}

/* Length of a valid UTF-8 sequence starting at s (max n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	if (s[0] < 0x80)
		return 1;
	size_t len;
	unsigned min;
	unsigned cp;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
		min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
		min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

void dv_json_escape(struct dv_strbuf *b, const char *str, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	dv_strbuf_append(b, "\"", 1);
	size_t i = 0;
	while (i < n) {
		size_t run = i;
		while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\')
			run++;
		if (run > i) {
			dv_strbuf_append(b, s + i, run - i);
			i = run;
			continue;
		}
		unsigned char c = s[i];
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			dv_strbuf_append(b, e, 2);
			i++;
		} else if (c == '\n') {
			dv_strbuf_append(b, "\\n", 2);
			i++;
		} else if (c == '\t') {
			dv_strbuf_append(b, "\\t", 2);
			i++;
		} else if (c == '\r') {
			dv_strbuf_append(b, "\\r", 2);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			dv_strbuf_append(b, e, 6);
			i++;
		} else {
			size_t l = utf8_len(s + i, n - i);
			if (l == 0) {
				dv_strbuf_append(b, "\xef\xbf\xbd", 3); /* U+FFFD */
				i++;
			} else {
				dv_strbuf_append(b, s + i, l);
				i += l;
			}
		}
	}
	dv_strbuf_append(b, "\"", 1);
}

void dv_json_init(struct dv_json *j, struct dv_strbuf *out)
{
	memset(j, 0, sizeof *j);
	j->out = out;
}

static void before_value(struct dv_json *j)
{
	if (j->need_comma[j->depth])
		dv_strbuf_append(j->out, ",", 1);
	j->need_comma[j->depth] = true;
}

static void open_container(struct dv_json *j, char c)
{
	before_value(j);
	dv_strbuf_append(j->out, &c, 1);
	if (j->depth < 31)
		j->depth++;
	j->need_comma[j->depth] = false;
}

static void close_container(struct dv_json *j, char c)
{
	dv_strbuf_append(j->out, &c, 1);
	if (j->depth > 0)
		j->depth--;
}

void dv_json_object_begin(struct dv_json *j) { open_container(j, '{'); }
void dv_json_object_end(struct dv_json *j) { close_container(j, '}'); }
void dv_json_array_begin(struct dv_json *j) { open_container(j, '['); }
void dv_json_array_end(struct dv_json *j) { close_container(j, ']'); }

void dv_json_key(struct dv_json *j, const char *key)
{
	before_value(j);
	dv_json_escape(j->out, key, strlen(key));
	dv_strbuf_append(j->out, ":", 1);
	j->need_comma[j->depth] = false; /* the value follows without a comma */
}

/* After a key, the value must not add a comma but must set it for the next key. */
static void value_prefix(struct dv_json *j)
{
	before_value(j);
}

void dv_json_string(struct dv_json *j, const char *s)
{
	if (!s) {
		dv_json_null(j);
		return;
	}
	dv_json_string_n(j, s, strlen(s));
}

void dv_json_string_n(struct dv_json *j, const char *s, size_t len)
{
	value_prefix(j);
	dv_json_escape(j->out, s, len);
}

void dv_json_int(struct dv_json *j, int64_t v)
{
	value_prefix(j);
	dv_strbuf_printf(j->out, "%lld", (long long)v);
}

void dv_json_uint(struct dv_json *j, uint64_t v)
{
	value_prefix(j);
	dv_strbuf_printf(j->out, "%llu", (unsigned long long)v);
}

void dv_json_double(struct dv_json *j, double v)
{
	value_prefix(j);
	if (v != v || v > 1e300 || v < -1e300)
		dv_strbuf_puts(j->out, "null");
	else
		dv_strbuf_printf(j->out, "%.6g", v);
}

void dv_json_bool(struct dv_json *j, bool v)
{
	value_prefix(j);
	dv_strbuf_puts(j->out, v ? "true" : "false");
}

void dv_json_null(struct dv_json *j)
{
	value_prefix(j);
	dv_strbuf_puts(j->out, "null");
}

void dv_json_raw(struct dv_json *j, const char *json)
{
	value_prefix(j);
	dv_strbuf_puts(j->out, json);
}

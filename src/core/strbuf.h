/* strbuf: a growable byte string, and a JSON writer on top of it.
 * The buffer owns its memory (free with dv_strbuf_dispose). Growth aborts on
 * out-of-memory like every allocation in davit. */
#ifndef DV_CORE_STRBUF_H
#define DV_CORE_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dv_strbuf {
	char *data; /* always NUL-terminated when non-NULL */
	size_t len, cap;
};

void dv_strbuf_init(struct dv_strbuf *b);
void dv_strbuf_dispose(struct dv_strbuf *b);
void dv_strbuf_reset(struct dv_strbuf *b);
void dv_strbuf_append(struct dv_strbuf *b, const void *data, size_t len);
void dv_strbuf_puts(struct dv_strbuf *b, const char *s);
void dv_strbuf_printf(struct dv_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dv_strbuf_vprintf(struct dv_strbuf *b, const char *fmt, va_list ap);
/* Takes the string out (the caller frees it); the buffer is left empty. */
char *dv_strbuf_steal(struct dv_strbuf *b);

/* JSON writing. The writer inserts commas itself: call dv_json_key before
 * each value inside an object. Strings are escaped (control characters,
 * quotes, backslash; invalid UTF-8 bytes become U+FFFD). */
struct dv_json {
	struct dv_strbuf *out;
	int depth;
	bool need_comma[32];
};

void dv_json_init(struct dv_json *j, struct dv_strbuf *out);
void dv_json_object_begin(struct dv_json *j);
void dv_json_object_end(struct dv_json *j);
void dv_json_array_begin(struct dv_json *j);
void dv_json_array_end(struct dv_json *j);
void dv_json_key(struct dv_json *j, const char *key);
void dv_json_string(struct dv_json *j, const char *s); /* NULL writes null */
void dv_json_string_n(struct dv_json *j, const char *s, size_t len);
void dv_json_int(struct dv_json *j, int64_t v);
void dv_json_uint(struct dv_json *j, uint64_t v);
void dv_json_double(struct dv_json *j, double v);
void dv_json_bool(struct dv_json *j, bool v);
void dv_json_null(struct dv_json *j);
/* Writes pre-encoded JSON text as one value. */
void dv_json_raw(struct dv_json *j, const char *json);

/* Appends s as a JSON string literal (with quotes) to b. */
void dv_json_escape(struct dv_strbuf *b, const char *s, size_t len);

#endif

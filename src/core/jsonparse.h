/* jsonparse: a small JSON reader (RFC 8259) into a tree of values.
 * For davit's own data (stored releases, API bodies): strict, depth- and
 * size-limited, strings decoded to UTF-8. The tree owns all its memory and
 * is freed with dv_jv_free(). */
#ifndef DV_CORE_JSONPARSE_H
#define DV_CORE_JSONPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dv_jv_type { DV_JV_NULL, DV_JV_BOOL, DV_JV_NUMBER, DV_JV_STRING, DV_JV_ARRAY, DV_JV_OBJECT };

struct dv_jv {
	enum dv_jv_type type;
	bool boolean;
	double number;
	int64_t integer;  /* the number when it is integral and fits */
	char *string;     /* NUL-terminated (may contain NUL bytes: use len) */
	size_t len;       /* string length, or element count */
	struct dv_jv *items; /* array elements, or object values */
	char **keys;      /* object keys (same order as items) */
};

/* Parses text[0..len). Returns a tree (caller frees) or NULL with *err
 * ("offset N: what is wrong"). Depth is limited to 64. */
struct dv_jv *dv_jv_parse(const char *text, size_t len, char **err);
void dv_jv_free(struct dv_jv *v);

/* Object member by key, or NULL (also when v is not an object or NULL). */
const struct dv_jv *dv_jv_get(const struct dv_jv *v, const char *key);
/* Typed accessors with a fallback for missing or mistyped values. */
const char *dv_jv_str(const struct dv_jv *v, const char *key, const char *fallback);
int64_t dv_jv_int(const struct dv_jv *v, const char *key, int64_t fallback);
bool dv_jv_bool(const struct dv_jv *v, const char *key, bool fallback);

#endif

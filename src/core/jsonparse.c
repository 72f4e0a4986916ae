#include "core/jsonparse.h"

#include "core/alloc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct parser {
	const char *s;
	size_t len, pos;
	char *err;
	int depth;
};

static void fail(struct parser *p, const char *what)
{
	if (!p->err)
		p->err = dv_xasprintf("offset %zu: %s", p->pos, what);
}

static void skip_ws(struct parser *p)
{
	while (p->pos < p->len &&
	       (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
		p->pos++;
}

static bool lit(struct parser *p, const char *word)
{
	size_t n = strlen(word);
	if (p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0) {
		p->pos += n;
		return true;
	}
	return false;
}

static int hex4(struct parser *p, unsigned *out)
{
	if (p->len - p->pos < 4)
		return -1;
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p->s[p->pos++];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static void put_utf8(char *out, size_t *o, unsigned cp)
{
	if (cp < 0x80) {
		out[(*o)++] = (char)cp;
	} else if (cp < 0x800) {
		out[(*o)++] = (char)(0xc0 | (cp >> 6));
		out[(*o)++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		out[(*o)++] = (char)(0xe0 | (cp >> 12));
		out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*o)++] = (char)(0x80 | (cp & 0x3f));
	} else {
		out[(*o)++] = (char)(0xf0 | (cp >> 18));
		out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*o)++] = (char)(0x80 | (cp & 0x3f));
	}
}

/* Parses a string at p->pos (at the opening quote). */
static char *parse_string(struct parser *p, size_t *len_out)
{
	p->pos++; /* opening quote */
	/* The decoded string is never longer than the encoded one. */
	size_t start = p->pos, cap = 0;
	while (start + cap < p->len && p->s[start + cap] != '"') {
		if (p->s[start + cap] == '\\')
			cap++;
		cap++;
	}
	char *out = dv_xmalloc(cap + 4);
	size_t o = 0;
	for (;;) {
		if (p->pos >= p->len) {
			fail(p, "unterminated string");
			goto bad;
		}
		unsigned char c = (unsigned char)p->s[p->pos++];
		if (c == '"')
			break;
		if (c < 0x20) {
			fail(p, "control character in string");
			goto bad;
		}
		if (c != '\\') {
			out[o++] = (char)c;
			continue;
		}
		if (p->pos >= p->len) {
			fail(p, "unterminated escape");
			goto bad;
		}
		char e = p->s[p->pos++];
		switch (e) {
		case '"': out[o++] = '"'; break;
		case '\\': out[o++] = '\\'; break;
		case '/': out[o++] = '/'; break;
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'u': {
			unsigned cp;
			if (hex4(p, &cp) != 0) {
				fail(p, "bad \\u escape");
				goto bad;
			}
			if (cp >= 0xd800 && cp < 0xdc00) {
				unsigned lo;
				if (p->len - p->pos >= 6 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
					p->pos += 2;
					if (hex4(p, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff) {
						fail(p, "bad surrogate pair");
						goto bad;
					}
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else {
					cp = 0xfffd;
				}
			} else if (cp >= 0xdc00 && cp <= 0xdfff) {
				cp = 0xfffd;
			}
			put_utf8(out, &o, cp);
			break;
		}
		default:
			fail(p, "bad escape");
			goto bad;
		}
	}
	out[o] = '\0';
	*len_out = o;
	return out;
bad:
	free(out);
	return NULL;
}

static bool parse_value(struct parser *p, struct dv_jv *v);

static void push(struct dv_jv *v, size_t *cap)
{
	if (v->len == *cap) {
		*cap = *cap ? *cap * 2 : 4;
		v->items = dv_xrealloc(v->items, *cap * sizeof *v->items);
		if (v->type == DV_JV_OBJECT)
			v->keys = dv_xrealloc(v->keys, *cap * sizeof *v->keys);
	}
}

static bool parse_value(struct parser *p, struct dv_jv *v)
{
	memset(v, 0, sizeof *v);
	skip_ws(p);
	if (p->pos >= p->len) {
		fail(p, "unexpected end");
		return false;
	}
	char c = p->s[p->pos];
	if (c == '{' || c == '[') {
		if (++p->depth > 64) {
			fail(p, "nested too deeply");
			return false;
		}
		bool obj = c == '{';
		v->type = obj ? DV_JV_OBJECT : DV_JV_ARRAY;
		p->pos++;
		size_t cap = 0;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
			p->pos++;
			p->depth--;
			return true;
		}
		for (;;) {
			skip_ws(p);
			push(v, &cap);
			if (obj) {
				if (p->pos >= p->len || p->s[p->pos] != '"') {
					fail(p, "expected a key");
					return false;
				}
				size_t kl;
				char *k = parse_string(p, &kl);
				if (!k)
					return false;
				v->keys[v->len] = k;
				skip_ws(p);
				if (p->pos >= p->len || p->s[p->pos] != ':') {
					memset(&v->items[v->len], 0, sizeof v->items[0]);
					v->len++;
					fail(p, "expected ':'");
					return false;
				}
				p->pos++;
			}
			bool ok = parse_value(p, &v->items[v->len]);
			v->len++;
			if (!ok)
				return false;
			skip_ws(p);
			if (p->pos < p->len && p->s[p->pos] == ',') {
				p->pos++;
				continue;
			}
			if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
				p->pos++;
				p->depth--;
				return true;
			}
			fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
			return false;
		}
	}
	if (c == '"') {
		v->type = DV_JV_STRING;
		v->string = parse_string(p, &v->len);
		return v->string != NULL;
	}
	if (lit(p, "true")) {
		v->type = DV_JV_BOOL;
		v->boolean = true;
		return true;
	}
	if (lit(p, "false")) {
		v->type = DV_JV_BOOL;
		return true;
	}
	if (lit(p, "null"))
		return true;
	/* number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
	size_t start = p->pos;
	if (p->pos < p->len && p->s[p->pos] == '-')
		p->pos++;
	size_t digits = p->pos;
	while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
		p->pos++;
	if (p->pos == digits || (p->s[digits] == '0' && p->pos - digits > 1)) {
		p->pos = start;
		fail(p, "unexpected character");
		return false;
	}
	if (p->pos < p->len && p->s[p->pos] == '.') {
		p->pos++;
		size_t f = p->pos;
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
		if (p->pos == f) {
			fail(p, "bad number");
			return false;
		}
	}
	if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
		p->pos++;
		if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
			p->pos++;
		size_t e = p->pos;
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
		if (p->pos == e) {
			fail(p, "bad number");
			return false;
		}
	}
	char buf[64];
	size_t n = p->pos - start;
	if (n >= sizeof buf) {
		fail(p, "number too long");
		return false;
	}
	memcpy(buf, p->s + start, n);
	buf[n] = '\0';
	v->type = DV_JV_NUMBER;
	v->number = strtod(buf, NULL);
	if (v->number == floor(v->number) && fabs(v->number) < 9.2e18) {
		/* Plain integers exactly (beyond 2^53 too); "3e2" through the double. */
		if (strpbrk(buf, ".eE"))
			v->integer = (int64_t)v->number;
		else
			v->integer = strtoll(buf, NULL, 10);
	}
	return true;
}

static void jv_dispose(struct dv_jv *v)
{
	free(v->string);
	for (size_t i = 0; (v->type == DV_JV_ARRAY || v->type == DV_JV_OBJECT) && i < v->len; i++) {
		jv_dispose(&v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
}

struct dv_jv *dv_jv_parse(const char *text, size_t len, char **err)
{
	struct parser p = {.s = text, .len = len};
	struct dv_jv *v = dv_xcalloc(1, sizeof *v);
	bool ok = parse_value(&p, v);
	if (ok) {
		skip_ws(&p);
		if (p.pos != p.len) {
			fail(&p, "trailing characters");
			ok = false;
		}
	}
	if (!ok) {
		jv_dispose(v);
		free(v);
		if (err)
			*err = p.err;
		else
			free(p.err);
		return NULL;
	}
	return v;
}

void dv_jv_free(struct dv_jv *v)
{
	if (!v)
		return;
	jv_dispose(v);
	free(v);
}

const struct dv_jv *dv_jv_get(const struct dv_jv *v, const char *key)
{
	if (!v || v->type != DV_JV_OBJECT)
		return NULL;
	for (size_t i = 0; i < v->len; i++)
		if (strcmp(v->keys[i], key) == 0)
			return &v->items[i];
	return NULL;
}

const char *dv_jv_str(const struct dv_jv *v, const char *key, const char *fallback)
{
	const struct dv_jv *m = dv_jv_get(v, key);
	return m && m->type == DV_JV_STRING ? m->string : fallback;
}

int64_t dv_jv_int(const struct dv_jv *v, const char *key, int64_t fallback)
{
	const struct dv_jv *m = dv_jv_get(v, key);
	return m && m->type == DV_JV_NUMBER ? m->integer : fallback;
}

bool dv_jv_bool(const struct dv_jv *v, const char *key, bool fallback)
{
	const struct dv_jv *m = dv_jv_get(v, key);
	return m && m->type == DV_JV_BOOL ? m->boolean : fallback;
}

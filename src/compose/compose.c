/* compose: loading a compose file into struct dv_compose_project.
 *
 * Three stages:
 *  1. libyaml events -> a small node tree (struct ynode): aliases point at
 *     their anchored node, merge keys (<<) are applied, duplicate keys and
 *     aliases to undefined (or not yet complete) anchors are rejected.
 *  2. the tree -> the model, interpolating each scalar as it is read, so that
 *     an error points at the node it comes from.
 *  3. cross-checks: dependencies, cycles, start order, implicit networks.
 * Every failure goes through fail(), which keeps the first message; functions
 * return 0 or -EINVAL and the load stops at the first failure, freeing the
 * half-built project (every model field starts zeroed, so freeing is safe at
 * any point).
 */
#include "compose/compose.h"
#include "core/alloc.h"
#include "core/strbuf.h"
#include "proxy/edge.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define MAX_FILE_BYTES (16u * 1024 * 1024) /* compose file, .env, env_file */
#define MAX_NODES 1000000                   /* YAML nodes in one file */
#define MAX_PORTS 65536                     /* port entries in a project, ranges expanded */
#define MAX_INTERP_DEPTH 32                 /* ${A:-${B:-...}} nesting */
#define MAX_RULE_ALTS 256                   /* alternatives of one Traefik rule */
#define MAX_RULE_DEPTH 32                   /* nested parentheses in a Traefik rule */
#define MAX_EXPANDED 4000000                /* nodes once aliases and merge keys are expanded */
#define MAX_ANCHORS 10000                   /* anchor definitions in one file */
#define MAX_SERVICES 10000
#define MAX_RESOURCES 10000                 /* top-level networks, and volumes */
#define MAX_DOMAINS 1000                    /* per service */
#define MAX_ENV_ENTRIES 100000              /* per env file */
#define MAX_WARNINGS 1000                   /* kept; the rest are counted */

/* ---- small helpers ------------------------------------------------------ */

/* Growable strings are core/strbuf's; one more helper for single chars. */
static void sbuf_addc(struct dv_strbuf *b, char c)
{
	dv_strbuf_append(b, &c, 1);
}

/* Makes room for element arr[len] of an array whose capacity is the next
 * power of two of len (so no capacity field is needed); zeroes it. */
static void *push(void *arr, size_t len, size_t elem)
{
	if (len == 0 || (len & (len - 1)) == 0)
		arr = dv_xrealloc(arr, (len ? len * 2 : 1) * elem);
	memset((char *)arr + len * elem, 0, elem);
	return arr;
}

/* Takes ownership of s. */
static void strv_push(struct dv_compose_strv *v, char *s)
{
	v->items = push(v->items, v->len, sizeof *v->items);
	v->items[v->len++] = s;
}

static void strv_free(struct dv_compose_strv *v)
{
	for (size_t i = 0; i < v->len; i++)
		free(v->items[i]);
	free(v->items);
	v->items = NULL;
	v->len = 0;
}

static bool strv_contains(const struct dv_compose_strv *v, const char *s)
{
	bool found = false;
	for (size_t i = 0; i < v->len && !found; i++)
		found = strcmp(v->items[i], s) == 0;
	return found;
}

__attribute__((format(printf, 1, 0))) static char *vfmt(const char *fmt, va_list ap)
{
	va_list copy;
	va_copy(copy, ap);
	int n = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (n < 0)
		n = 0;
	char *s = dv_xmalloc((size_t)n + 1);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	return s;
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_name_start(char c)
{
	return is_alpha(c) || c == '_';
}

static bool is_name_char(char c)
{
	return is_name_start(c) || is_digit(c);
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Length of the UTF-8 sequence at p[0..avail), 0 if it is not valid. */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
	unsigned c = p[0], min = 0;
	size_t n = 0;

	if (c < 0x80) {
		n = 1;
	} else if ((c & 0xe0) == 0xc0) {
		n = 2;
		min = 0x80;
		c &= 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		n = 3;
		min = 0x800;
		c &= 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		n = 4;
		min = 0x10000;
		c &= 0x07;
	}
	if (n > avail)
		n = 0;
	for (size_t k = 1; k < n; k++) {
		if ((p[k] & 0xc0) != 0x80)
			n = 0;
		else
			c = (c << 6) | (p[k] & 0x3f);
	}
	if (n > 1 && (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)))
		n = 0;
	return n;
}

/* True if s[0..len) is UTF-8; else *bad (if non-NULL) is the offset of the
 * first invalid byte. */
static bool utf8_valid(const char *s, size_t len, size_t *bad)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n = 1;

	while (i < len && n) {
		n = utf8_seq(p + i, len - i);
		i += n;
	}
	if (n == 0 && bad)
		*bad = i;
	return n != 0;
}

/* ---- diagnostics -------------------------------------------------------- */

struct srcpos {
	const char *file;
	unsigned line;   /* 1-based; 0: the whole file */
	unsigned column; /* 1-based */
};

struct warning {
	char *msg;       /* "FILE:LINE:COLUMN: text" */
	char *file;
	unsigned line, column;
	size_t seq;
};

struct ynode;

/* Per service, beside project->services: where things were written. */
struct svc_aux {
	struct srcpos name_pos;
	struct srcpos *dep_pos;   /* parallel to service->depends_on */
};

struct ctx {
	const char *file;                /* the compose file as given: in messages */
	char *dir;                       /* its absolute directory */
	char *err;                       /* the first error */
	struct warning *warnings;
	size_t n_warnings;
	struct ynode *nodes;             /* every tree node, for freeing */
	size_t n_nodes;
	const char *const *proc_env;     /* borrowed */
	struct dv_compose_kv *vars;      /* interpolation variables, sorted by key */
	size_t n_vars;
	struct dv_compose_project *project;
	struct svc_aux *aux;             /* n_services entries */
	size_t n_ports;                  /* all services, for MAX_PORTS */
	size_t merge_copies;             /* pairs copied by merge keys, for MAX_EXPANDED */
	size_t dropped_warnings;         /* beyond MAX_WARNINGS */
};

static char *pos_prefix(const struct srcpos *pos, const char *msg)
{
	char *s;
	if (pos->line)
		s = dv_xasprintf("%s:%u:%u: %s", pos->file, pos->line, pos->column, msg);
	else
		s = dv_xasprintf("%s: %s", pos->file, msg);
	return s;
}

__attribute__((format(printf, 3, 4))) static int fail_pos(struct ctx *ctx, const struct srcpos *pos,
                                                          const char *fmt, ...)
{
	if (!ctx->err) {
		va_list ap;
		va_start(ap, fmt);
		char *msg = vfmt(fmt, ap);
		va_end(ap);
		ctx->err = pos_prefix(pos, msg);
		free(msg);
	}
	return -EINVAL;
}

__attribute__((format(printf, 3, 4))) static void warn_pos(struct ctx *ctx, const struct srcpos *pos,
                                                           const char *fmt, ...)
{
	va_list ap;
	if (ctx->n_warnings >= MAX_WARNINGS) {
		ctx->dropped_warnings++;
		goto out;
	}
	va_start(ap, fmt);
	char *msg = vfmt(fmt, ap);
	va_end(ap);
	ctx->warnings = push(ctx->warnings, ctx->n_warnings, sizeof *ctx->warnings);
	struct warning *w = &ctx->warnings[ctx->n_warnings];
	w->msg = pos_prefix(pos, msg);
	w->file = dv_xstrdup(pos->file);
	w->line = pos->line;
	w->column = pos->column;
	w->seq = ctx->n_warnings++;
	free(msg);
out:
	return;
}

/* ---- YAML tree ---------------------------------------------------------- */

enum ykind { Y_SCALAR, Y_SEQ, Y_MAP };

struct ypair {
	struct ynode *key;
	struct ynode *value;
};

struct ynode {
	enum ykind kind;
	unsigned line, column;   /* 1-based */
	bool plain;              /* untagged plain scalar: "", ~ and null mean null */
	char *value;             /* scalar bytes, NUL-terminated (may hold NULs) */
	size_t len;
	struct ynode **items;    /* Y_SEQ */
	size_t n_items;
	struct ypair *pairs;     /* Y_MAP, merge keys applied */
	size_t n_pairs;
	size_t weight;           /* nodes in this subtree with aliases expanded (saturating) */
	struct ynode *next;      /* ctx->nodes list */
};

static struct srcpos node_pos(const struct ctx *ctx, const struct ynode *n)
{
	struct srcpos pos = {ctx->file, n->line, n->column};
	return pos;
}

__attribute__((format(printf, 3, 4))) static int fail(struct ctx *ctx, const struct ynode *n,
                                                      const char *fmt, ...)
{
	if (!ctx->err) {
		struct srcpos pos = node_pos(ctx, n);
		va_list ap;
		va_start(ap, fmt);
		char *msg = vfmt(fmt, ap);
		va_end(ap);
		ctx->err = pos_prefix(&pos, msg);
		free(msg);
	}
	return -EINVAL;
}

__attribute__((format(printf, 3, 4))) static void warn(struct ctx *ctx, const struct ynode *n,
                                                       const char *fmt, ...)
{
	struct srcpos pos = node_pos(ctx, n);
	va_list ap;
	va_start(ap, fmt);
	char *msg = vfmt(fmt, ap);
	va_end(ap);
	warn_pos(ctx, &pos, "%s", msg);
	free(msg);
}

static const char *kind_name(const struct ynode *n)
{
	return n->kind == Y_MAP ? "a mapping" : n->kind == Y_SEQ ? "a list" : "a string";
}

static bool is_null(const struct ynode *n)
{
	return n->kind == Y_SCALAR && n->plain &&
	       (n->len == 0 || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
	        strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0);
}

static bool key_is(const struct ynode *key, const char *s)
{
	size_t n = strlen(s);
	return key->kind == Y_SCALAR && key->len == n && memcmp(key->value, s, n) == 0;
}

static const struct ynode *map_get(const struct ynode *map, const char *key)
{
	const struct ynode *value = NULL;
	for (size_t i = 0; map->kind == Y_MAP && i < map->n_pairs && !value; i++)
		if (key_is(map->pairs[i].key, key))
			value = map->pairs[i].value;
	return value;
}

struct yframe {
	struct ynode *node;
	struct ynode *key;       /* a mapping's key waiting for its value */
	char *anchor;            /* registered when the collection ends */
};

struct yanchor {
	char *name;
	struct ynode *node;
};

struct ybuilder {
	struct yframe *stack;
	size_t depth;
	struct yanchor *anchors;
	size_t n_anchors;
	struct ynode *root;
};

static int anchor_add(struct ctx *ctx, struct ybuilder *b, const unsigned char *name, struct ynode *node)
{
	int rc = 0;
	if (b->n_anchors >= MAX_ANCHORS) {
		rc = fail(ctx, node, "more than %d anchors: this is not a plausible compose file", MAX_ANCHORS);
	} else {
		b->anchors = push(b->anchors, b->n_anchors, sizeof *b->anchors);
		b->anchors[b->n_anchors].name = dv_xstrdup((const char *)name);
		b->anchors[b->n_anchors].node = node;
		b->n_anchors++;
	}
	return rc;
}

static size_t add_weight(size_t a, size_t b)
{
	return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static struct ynode *anchor_find(const struct ybuilder *b, const unsigned char *name)
{
	struct ynode *node = NULL;
	/* The latest definition wins (YAML allows redefining an anchor). */
	for (size_t i = b->n_anchors; !node && i-- > 0;)
		if (strcmp(b->anchors[i].name, (const char *)name) == 0)
			node = b->anchors[i].node;
	return node;
}

static int ynode_new(struct ctx *ctx, enum ykind kind, yaml_mark_t mark, struct ynode **out)
{
	int rc = 0;
	*out = NULL;
	if (ctx->n_nodes >= MAX_NODES) {
		struct srcpos pos = {ctx->file, (unsigned)mark.line + 1, (unsigned)mark.column + 1};
		rc = fail_pos(ctx, &pos, "more than %d YAML nodes: this is not a plausible compose file",
		              MAX_NODES);
		goto out;
	}
	struct ynode *n = dv_xcalloc(1, sizeof *n);
	n->kind = kind;
	n->weight = 1;
	n->line = (unsigned)mark.line + 1;
	n->column = (unsigned)mark.column + 1;
	n->next = ctx->nodes;
	ctx->nodes = n;
	ctx->n_nodes++;
	*out = n;
out:
	return rc;
}

static void ytree_free(struct ctx *ctx)
{
	struct ynode *n = ctx->nodes;
	while (n) {
		struct ynode *next = n->next;
		free(n->value);
		free(n->items);
		free(n->pairs);
		free(n);
		n = next;
	}
	ctx->nodes = NULL;
	ctx->n_nodes = 0;
}

struct keyref {
	const struct ynode *key;
	size_t idx;
};

static int keyref_cmp(const void *pa, const void *pb)
{
	const struct keyref *a = pa, *b = pb;
	size_t n = a->key->len < b->key->len ? a->key->len : b->key->len;
	int c = memcmp(a->key->value, b->key->value, n);
	if (c == 0 && a->key->len != b->key->len)
		c = a->key->len < b->key->len ? -1 : 1;
	if (c == 0)
		c = a->idx < b->idx ? -1 : (a->idx > b->idx);
	return c;
}

static bool same_key(const struct ynode *a, const struct ynode *b)
{
	return a->len == b->len && memcmp(a->value, b->value, a->len) == 0;
}

static bool is_merge_key(const struct ynode *key)
{
	return key->plain && key->len == 2 && memcmp(key->value, "<<", 2) == 0;
}

/* Appends the pairs a merge key's value brings (a mapping or a list of them). */
static int merge_sources(struct ctx *ctx, const struct ynode *value, struct ypair **all, size_t *n_all)
{
	int rc = 0;
	const struct ynode *const *sources = (const struct ynode *const *)&value;
	size_t n_sources = 1;

	if (value->kind == Y_SEQ) {
		sources = (const struct ynode *const *)value->items;
		n_sources = value->n_items;
	}
	for (size_t s = 0; s < n_sources; s++)
		if (sources[s]->kind == Y_MAP)
			ctx->merge_copies = add_weight(ctx->merge_copies, sources[s]->n_pairs);
	if (ctx->merge_copies > MAX_EXPANDED)
		rc = fail(ctx, value, "merge keys ('<<') copy more than %d entries in this file: this is not a "
		                      "plausible compose file", MAX_EXPANDED);
	for (size_t s = 0; s < n_sources && rc == 0; s++) {
		const struct ynode *src = sources[s];
		if (src->kind != Y_MAP) {
			rc = fail(ctx, src, "the merge key '<<' needs a mapping (an alias like *defaults) or a "
			                    "list of them, not %s", kind_name(src));
			break;
		}
		for (size_t i = 0; i < src->n_pairs; i++) {
			*all = push(*all, *n_all, sizeof **all);
			(*all)[(*n_all)++] = src->pairs[i];
		}
	}
	return rc;
}

/* A mapping is complete: check its keys, apply merge keys (explicit keys win,
 * then earlier merge sources over later ones). */
static int map_finish(struct ctx *ctx, struct ynode *map)
{
	struct keyref *refs = NULL;
	struct ypair *all = NULL;
	size_t n = map->n_pairs, n_all = 0;
	bool has_merge = false;
	int rc = 0;

	for (size_t i = 0; i < n; i++) {
		const struct ynode *key = map->pairs[i].key;
		if (key->kind != Y_SCALAR) {
			rc = fail(ctx, key, "a mapping key must be a plain string, not %s", kind_name(key));
			goto out;
		}
		if (is_merge_key(key))
			has_merge = true;
	}
	if (n > 1) {
		size_t dup = SIZE_MAX, first = 0, group = 0;
		refs = dv_xmalloc(n * sizeof *refs);
		for (size_t i = 0; i < n; i++) {
			refs[i].key = map->pairs[i].key;
			refs[i].idx = i;
		}
		qsort(refs, n, sizeof *refs, keyref_cmp);
		for (size_t j = 1; j < n; j++) {
			if (!same_key(refs[j - 1].key, refs[j].key)) {
				group = j;
				continue;
			}
			if (refs[j].idx < dup) {
				dup = refs[j].idx;
				first = refs[group].idx;
			}
		}
		if (dup != SIZE_MAX) {
			const struct ynode *d = map->pairs[dup].key, *f = map->pairs[first].key;
			rc = fail(ctx, d, "duplicate key '%s' (first defined at line %u, column %u): remove one of them",
			          d->value, f->line, f->column);
			goto out;
		}
	}
	if (!has_merge)
		goto out;

	for (size_t i = 0; i < n; i++) {
		if (is_merge_key(map->pairs[i].key))
			continue;
		all = push(all, n_all, sizeof *all);
		all[n_all++] = map->pairs[i];
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		if (is_merge_key(map->pairs[i].key))
			rc = merge_sources(ctx, map->pairs[i].value, &all, &n_all);
	if (rc)
		goto out;

	/* Keep the first pair of each key; keep the order otherwise. */
	free(refs);
	refs = dv_xmalloc((n_all ? n_all : 1) * sizeof *refs);
	for (size_t i = 0; i < n_all; i++) {
		refs[i].key = all[i].key;
		refs[i].idx = i;
	}
	qsort(refs, n_all, sizeof *refs, keyref_cmp);
	bool *drop = dv_xcalloc(n_all ? n_all : 1, sizeof *drop);
	for (size_t j = 1; j < n_all; j++)
		if (same_key(refs[j - 1].key, refs[j].key))
			drop[refs[j].idx] = true;
	size_t kept = 0;
	for (size_t i = 0; i < n_all; i++)
		if (!drop[i])
			all[kept++] = all[i];
	free(drop);
	free(map->pairs);
	map->pairs = all;
	map->n_pairs = kept;
	all = NULL;
	map->weight = 1;
	for (size_t i = 0; i < map->n_pairs; i++)
		map->weight = add_weight(map->weight, add_weight(map->pairs[i].key->weight, map->pairs[i].value->weight));
out:
	free(refs);
	free(all);
	return rc;
}

static void attach(struct ybuilder *b, struct ynode *node)
{
	struct yframe *f = b->depth ? &b->stack[b->depth - 1] : NULL;
	if (f)
		f->node->weight = add_weight(f->node->weight, node->weight);
	if (!f) {
		b->root = node;
	} else if (f->node->kind == Y_SEQ) {
		f->node->items = push(f->node->items, f->node->n_items, sizeof *f->node->items);
		f->node->items[f->node->n_items++] = node;
	} else if (!f->key) {
		f->key = node;
	} else {
		f->node->pairs = push(f->node->pairs, f->node->n_pairs, sizeof *f->node->pairs);
		f->node->pairs[f->node->n_pairs].key = f->key;
		f->node->pairs[f->node->n_pairs].value = node;
		f->node->n_pairs++;
		f->key = NULL;
	}
}

static void check_tag(struct ctx *ctx, struct ynode *n, const yaml_char_t *tag)
{
	static const char *const core[] = {"str", "int", "float", "bool", "null", "map", "seq"};
	const char *t = (const char *)tag;
	const char *prefix = "tag:yaml.org,2002:";
	bool known = !t || strcmp(t, "!") == 0;

	if (t)
		n->plain = false;
	if (t && strncmp(t, prefix, strlen(prefix)) == 0)
		for (size_t i = 0; i < sizeof core / sizeof core[0]; i++)
			known = known || strcmp(t + strlen(prefix), core[i]) == 0;
	if (known)
		; /* nothing to say */
	else if (strcmp(t, "!reset") == 0 || strcmp(t, "!override") == 0)
		warn(ctx, n, "tag '%s' is for merging several compose files, which davit does not do (ignored)", t);
	else
		warn(ctx, n, "unknown YAML tag '%s' (ignored)", t);
}

static int yaml_event(struct ctx *ctx, struct ybuilder *b, const yaml_event_t *ev, int *docs, bool *done)
{
	struct ynode *n = NULL;
	struct srcpos pos = {ctx->file, (unsigned)ev->start_mark.line + 1, (unsigned)ev->start_mark.column + 1};
	int rc = 0;

	switch (ev->type) {
	case YAML_STREAM_END_EVENT:
		*done = true;
		break;
	case YAML_DOCUMENT_START_EVENT:
		if (++*docs > 1)
			rc = fail_pos(ctx, &pos, "a second YAML document: a compose file holds one document "
			                         "(remove the '---' or split the file)");
		break;
	case YAML_ALIAS_EVENT:
		n = anchor_find(b, ev->data.alias.anchor);
		if (!n)
			rc = fail_pos(ctx, &pos, "alias '*%s' does not name an anchor defined (and complete) "
			                         "before it: define '&%s' earlier",
			              ev->data.alias.anchor, ev->data.alias.anchor);
		else
			attach(b, n);
		break;
	case YAML_SCALAR_EVENT:
		rc = ynode_new(ctx, Y_SCALAR, ev->start_mark, &n);
		if (rc)
			break;
		n->value = dv_xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
		n->len = ev->data.scalar.length;
		n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		check_tag(ctx, n, ev->data.scalar.tag);
		if (ev->data.scalar.anchor)
			rc = anchor_add(ctx, b, ev->data.scalar.anchor, n);
		if (rc == 0)
			attach(b, n);
		break;
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT: {
		bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
		const yaml_char_t *anchor = seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor;
		rc = ynode_new(ctx, seq ? Y_SEQ : Y_MAP, ev->start_mark, &n);
		if (rc)
			break;
		check_tag(ctx, n, seq ? ev->data.sequence_start.tag : ev->data.mapping_start.tag);
		b->stack = push(b->stack, b->depth, sizeof *b->stack);
		b->stack[b->depth].node = n;
		b->stack[b->depth].anchor = anchor ? dv_xstrdup((const char *)anchor) : NULL;
		b->depth++;
		break;
	}
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT: {
		struct yframe f = b->stack[--b->depth];
		if (f.node->kind == Y_MAP)
			rc = map_finish(ctx, f.node);
		/* aliases cannot make the tree explode ("billion laughs") */
		if (rc == 0 && f.node->weight > MAX_EXPANDED)
			rc = fail(ctx, f.node, "aliases expand this %s to more than %d nodes: this is not a plausible "
			                       "compose file", f.node->kind == Y_MAP ? "mapping" : "list", MAX_EXPANDED);
		if (rc == 0 && f.anchor)
			rc = anchor_add(ctx, b, (const unsigned char *)f.anchor, f.node);
		free(f.anchor);
		if (rc == 0)
			attach(b, f.node);
		break;
	}
	default:
		break;
	}
	return rc;
}

/* libyaml's own error, positioned. */
static int yaml_error(struct ctx *ctx, const yaml_parser_t *parser, const unsigned char *buf, size_t len)
{
	struct srcpos pos = {ctx->file, (unsigned)parser->problem_mark.line + 1,
	                     (unsigned)parser->problem_mark.column + 1};
	const char *problem = parser->problem ? parser->problem : "syntax error";
	size_t at = parser->problem_mark.index;
	struct dv_strbuf msg = {0};
	int rc;

	if (parser->error == YAML_READER_ERROR) {
		/* Only an offset is known: count lines up to it. */
		at = parser->problem_offset;
		pos.line = 1;
		pos.column = 1;
		for (size_t i = 0; i < at && i < len; i++) {
			if (buf[i] == '\n') {
				pos.line++;
				pos.column = 1;
			} else if ((buf[i] & 0xc0) != 0x80) {
				pos.column++;
			}
		}
	}
	dv_strbuf_puts(&msg, "invalid YAML: ");
	dv_strbuf_puts(&msg, problem);
	if (parser->context) {
		char *c = dv_xasprintf(" (%s at line %u, column %u)", parser->context,
		                       (unsigned)parser->context_mark.line + 1,
		                       (unsigned)parser->context_mark.column + 1);
		dv_strbuf_puts(&msg, c);
		free(c);
	}
	if (at < len && buf[at] == '\t')
		dv_strbuf_puts(&msg, "; YAML cannot be indented with tabs: use spaces");
	rc = fail_pos(ctx, &pos, "%s", msg.data);
	free(msg.data);
	return rc;
}

/* Parses buf into a tree (nodes owned by ctx). The root is NULL when the
 * file holds no document. */
static int yaml_build(struct ctx *ctx, const unsigned char *buf, size_t len, struct ynode **root)
{
	yaml_parser_t parser;
	struct ybuilder b = {0};
	int rc = 0, docs = 0;
	bool done = false;

	*root = NULL;
	if (!yaml_parser_initialize(&parser)) {
		fputs("davit: out of memory (libyaml)\n", stderr);
		abort();
	}
	yaml_parser_set_input_string(&parser, buf, len);
	while (!done && rc == 0) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&parser, &ev)) {
			rc = yaml_error(ctx, &parser, buf, len);
			break;
		}
		rc = yaml_event(ctx, &b, &ev, &docs, &done);
		yaml_event_delete(&ev);
	}
	if (rc == 0)
		*root = b.root;
	for (size_t i = 0; i < b.depth; i++)
		free(b.stack[i].anchor);
	free(b.stack);
	for (size_t i = 0; i < b.n_anchors; i++)
		free(b.anchors[i].name);
	free(b.anchors);
	yaml_parser_delete(&parser);
	return rc;
}

/* ---- collected key/value lists ------------------------------------------ */

/* A key/value being collected, with where it was written. */
struct tkv {
	char *key;
	char *value;
	struct srcpos pos;
};

struct tkvs {
	struct tkv *items;
	size_t len;
};

/* Takes ownership of key and value. */
static void tkvs_add(struct tkvs *t, char *key, char *value, const struct srcpos *pos)
{
	t->items = push(t->items, t->len, sizeof *t->items);
	t->items[t->len].key = key;
	t->items[t->len].value = value;
	t->items[t->len].pos = *pos;
	t->len++;
}

static void tkvs_free(struct tkvs *t)
{
	for (size_t i = 0; i < t->len; i++) {
		free(t->items[i].key);
		free(t->items[i].value);
	}
	free(t->items);
	t->items = NULL;
	t->len = 0;
}

/* Moves every item of src to the end of dst. */
static void tkvs_move(struct tkvs *dst, struct tkvs *src)
{
	for (size_t i = 0; i < src->len; i++)
		tkvs_add(dst, src->items[i].key, src->items[i].value, &src->items[i].pos);
	free(src->items);
	src->items = NULL;
	src->len = 0;
}

struct tref {
	const struct tkv *kv;
	size_t idx;
};

static int tref_cmp(const void *pa, const void *pb)
{
	const struct tref *a = pa, *b = pb;
	int c = strcmp(a->kv->key, b->kv->key);
	if (c == 0)
		c = a->idx < b->idx ? -1 : (a->idx > b->idx);
	return c;
}

static struct tref *tkvs_refs(const struct tkvs *t)
{
	struct tref *refs = dv_xmalloc((t->len ? t->len : 1) * sizeof *refs);
	for (size_t i = 0; i < t->len; i++) {
		refs[i].kv = &t->items[i];
		refs[i].idx = i;
	}
	qsort(refs, t->len, sizeof *refs, tref_cmp);
	return refs;
}

/* Fails on the earliest repeated key. */
static int tkvs_check_dups(struct ctx *ctx, const struct tkvs *t, const char *what)
{
	struct tref *refs = tkvs_refs(t);
	size_t dup = SIZE_MAX, first = 0, group = 0;
	int rc = 0;

	for (size_t j = 1; j < t->len; j++) {
		if (strcmp(refs[j - 1].kv->key, refs[j].kv->key) != 0) {
			group = j;
			continue;
		}
		if (refs[j].idx < dup) {
			dup = refs[j].idx;
			first = refs[group].idx;
		}
	}
	if (dup != SIZE_MAX)
		rc = fail_pos(ctx, &t->items[dup].pos, "%s '%s' is set twice (first at line %u, column %u): "
		                                       "remove one of them",
		              what, t->items[dup].key, t->items[first].pos.line, t->items[first].pos.column);
	free(refs);
	return rc;
}

/* Moves t into a sorted array with unique keys (the last item of a key wins)
 * and empties t. */
static void tkvs_to_sorted(struct tkvs *t, struct dv_compose_kv **out, size_t *n_out)
{
	struct tref *refs = tkvs_refs(t);
	struct dv_compose_kv *kv = dv_xcalloc(t->len ? t->len : 1, sizeof *kv);
	size_t n = 0;

	for (size_t j = 0; j < t->len; j++) {
		struct tkv *item = &t->items[refs[j].idx];
		if (j + 1 < t->len && strcmp(item->key, refs[j + 1].kv->key) == 0) {
			free(item->key);
			free(item->value);
			continue;
		}
		kv[n].key = item->key;
		kv[n].value = item->value;
		n++;
	}
	free(refs);
	free(t->items);
	t->items = NULL;
	t->len = 0;
	*out = kv;
	*n_out = n;
}

static void kv_free(struct dv_compose_kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].value);
	}
	free(kv);
}

static int kv_key_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct dv_compose_kv *)elem)->key);
}

static const char *kv_find(const struct dv_compose_kv *kv, size_t n, const char *key)
{
	const struct dv_compose_kv *hit = n ? bsearch(key, kv, n, sizeof *kv, kv_key_cmp) : NULL;
	return hit ? hit->value : NULL;
}

/* ---- interpolation ------------------------------------------------------ */

typedef const char *(*lookup_fn)(void *arg, const char *name);

static const char *lookup_vars(void *arg, const char *name)
{
	const struct ctx *ctx = arg;
	return kv_find(ctx->vars, ctx->n_vars, name);
}

struct interp {
	struct ctx *ctx;
	struct srcpos pos;
	lookup_fn lookup;
	void *arg;
	bool warn_unset;               /* warn when ${VAR} / $VAR is unset */
	struct dv_compose_strv *empty; /* if non-NULL: names of ${VAR} / $VAR that gave "" */
	int depth;
};

static int interp_run(struct interp *ip, const char *s, size_t len, struct dv_strbuf *out);

/* A plain ${NAME} or $NAME. */
static void interp_var(struct interp *ip, const char *name, struct dv_strbuf *out)
{
	const char *value = ip->lookup(ip->arg, name);
	if (!value && ip->warn_unset)
		warn_pos(ip->ctx, &ip->pos, "variable %s is not set: it expands to an empty string "
		                            "(set it, or give a default with ${%s:-default})", name, name);
	if (ip->empty && (!value || !*value) && !strv_contains(ip->empty, name))
		strv_push(ip->empty, dv_xstrdup(name));
	if (value)
		dv_strbuf_puts(out, value);
}

/* *pp points at the '{' of "${". */
static int interp_braced(struct interp *ip, const char **pp, const char *end, struct dv_strbuf *out)
{
	const char *q = *pp + 1, *word;
	char *name = NULL;
	char op = 0;
	bool colon = false;
	int rc = 0;

	if (q >= end || !is_name_start(*q)) {
		rc = fail_pos(ip->ctx, &ip->pos, "invalid interpolation: a variable name must follow '${' "
		                                 "(write $$ for a literal $)");
		goto out;
	}
	while (q < end && is_name_char(*q))
		q++;
	name = dv_xstrndup(*pp + 1, (size_t)(q - (*pp + 1)));
	if (q >= end) {
		rc = fail_pos(ip->ctx, &ip->pos, "unterminated '${%s': add the closing '}'", name);
		goto out;
	}
	if (*q == '}') {
		interp_var(ip, name, out);
		*pp = q + 1;
		goto out;
	}
	if (*q == ':') {
		colon = true;
		q++;
	}
	if (q < end && (*q == '-' || *q == '?' || *q == '+')) {
		op = *q++;
	} else {
		rc = fail_pos(ip->ctx, &ip->pos, "invalid interpolation '${%s%s...': use ${%s}, ${%s:-default}, "
		                                 "${%s-default}, ${%s:?message} or ${%s:+value}",
		              name, colon ? ":" : "", name, name, name, name, name);
		goto out;
	}
	/* The word runs to the matching '}' (it may hold nested ${...}). */
	word = q;
	for (int depth = 0; q < end; q++) {
		if (*q == '$' && q + 1 < end && q[1] == '$') {
			q++;
		} else if (*q == '$' && q + 1 < end && q[1] == '{') {
			depth++;
			q++;
		} else if (*q == '}') {
			if (depth == 0)
				break;
			depth--;
		}
	}
	if (q >= end) {
		rc = fail_pos(ip->ctx, &ip->pos, "unterminated '${%s': add the closing '}'", name);
		goto out;
	}
	*pp = q + 1;

	const char *value = ip->lookup(ip->arg, name);
	bool set = value != NULL, nonempty = set && *value;
	size_t wlen = (size_t)(q - word);
	switch (op) {
	case '-':
		if (colon ? !nonempty : !set)
			rc = interp_run(ip, word, wlen, out);
		else
			dv_strbuf_puts(out, value);
		break;
	case '+':
		if (colon ? nonempty : set)
			rc = interp_run(ip, word, wlen, out);
		break;
	default: /* '?' */
		if (colon ? nonempty : set) {
			dv_strbuf_puts(out, value);
		} else {
			struct dv_strbuf msg = {0};
			rc = interp_run(ip, word, wlen, &msg);
			if (rc == 0)
				rc = fail_pos(ip->ctx, &ip->pos, "required variable %s is %s%s%s (set it in the "
				                                 "environment or in the .env file)",
				              name, set ? "empty" : "not set", msg.len ? ": " : "",
				              msg.len ? msg.data : "");
			free(msg.data);
		}
		break;
	}
out:
	free(name);
	return rc;
}

static int interp_run(struct interp *ip, const char *s, size_t len, struct dv_strbuf *out)
{
	const char *p = s, *end = s + len;
	int rc = 0;

	if (++ip->depth > MAX_INTERP_DEPTH) {
		rc = fail_pos(ip->ctx, &ip->pos, "interpolation nested more than %d levels deep", MAX_INTERP_DEPTH);
		goto out;
	}
	while (p < end && rc == 0) {
		const char *dollar = memchr(p, '$', (size_t)(end - p));
		if (!dollar) {
			dv_strbuf_append(out, p, (size_t)(end - p));
			break;
		}
		dv_strbuf_append(out, p, (size_t)(dollar - p));
		p = dollar + 1;
		if (p < end && *p == '$') {
			sbuf_addc(out, '$');
			p++;
		} else if (p < end && *p == '{') {
			rc = interp_braced(ip, &p, end, out);
		} else if (p < end && is_name_start(*p)) {
			const char *name = p;
			while (p < end && is_name_char(*p))
				p++;
			char *n = dv_xstrndup(name, (size_t)(p - name));
			interp_var(ip, n, out);
			free(n);
		} else {
			rc = fail_pos(ip->ctx, &ip->pos, "invalid interpolation: '$' must be followed by a variable "
			                                 "name or '{' (write $$ for a literal $)");
		}
	}
out:
	ip->depth--;
	return rc;
}

/* Interpolates text[0..len) into *out (the caller frees it). */
static int interp_string(struct ctx *ctx, const struct srcpos *pos, const char *text, size_t len,
                         lookup_fn lookup, void *arg, struct dv_compose_strv *empty, char **out)
{
	struct interp ip = {ctx, *pos, lookup, arg, empty == NULL, empty, 0};
	struct dv_strbuf b = {0};
	size_t bad;
	int rc = 0;

	*out = NULL;
	if (memchr(text, '$', len))
		rc = interp_run(&ip, text, len, &b);
	else
		dv_strbuf_append(&b, text, len);
	if (rc == 0 && b.len && memchr(b.data, '\0', b.len))
		rc = fail_pos(ctx, pos, "a NUL character is not allowed here");
	if (rc == 0 && !utf8_valid(b.data ? b.data : "", b.len, &bad))
		rc = fail_pos(ctx, pos, "the value is not valid UTF-8 after interpolation (byte %zu)", bad + 1);
	if (rc == 0)
		*out = dv_strbuf_steal(&b);
	free(b.data);
	return rc;
}

/* ---- files -------------------------------------------------------------- */

/* Reads a whole regular file (NUL-terminated). Returns 0, or -errno
 * (-EFBIG over MAX_FILE_BYTES, -EISDIR for a directory, -EINVAL for anything
 * but a regular file). */
static int read_file(const char *path, char **buf, size_t *len)
{
	struct stat st;
	char *data = NULL;
	size_t n = 0;
	int fd, rc = 0;

	*buf = NULL;
	*len = 0;
	/* O_NONBLOCK: a FIFO must not hang the load (only regular files are read) */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd == -1) {
		rc = -errno;
		goto out;
	}
	if (fstat(fd, &st) == -1) {
		rc = -errno;
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = -EISDIR;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		goto out;
	}
	if (st.st_size > MAX_FILE_BYTES) {
		rc = -EFBIG;
		goto out;
	}
	size_t cap = (size_t)st.st_size + 1;
	data = dv_xmalloc(cap);
	for (;;) {
		if (n + 1 >= cap) {
			if (cap > MAX_FILE_BYTES) {
				rc = -EFBIG;
				goto out;
			}
			cap *= 2;
			data = dv_xrealloc(data, cap);
		}
		ssize_t got = read(fd, data + n, cap - n - 1);
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			rc = -errno;
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	data[n] = '\0';
	*buf = data;
	*len = n;
	data = NULL;
out:
	if (fd != -1)
		close(fd);
	free(data);
	return rc;
}

static const char *read_error(int rc)
{
	return rc == -EINVAL ? "not a regular file" : strerror(-rc);
}

/* ---- env files ---------------------------------------------------------- */

struct envscope {
	struct ctx *ctx;
	const struct tkvs *so_far;
	bool project;
};

/* In the project's .env the process environment wins over the file's own
 * earlier lines (it wins in the end anyway); in a service env_file the
 * file's earlier lines come first, then the project variables. */
static const char *envscope_lookup(void *arg, const char *name)
{
	const struct envscope *s = arg;
	const char *v = NULL;

	if (s->project)
		v = lookup_vars(s->ctx, name);
	for (size_t i = s->so_far->len; !v && i-- > 0;)
		if (strcmp(s->so_far->items[i].key, name) == 0)
			v = s->so_far->items[i].value;
	if (!v && !s->project)
		v = lookup_vars(s->ctx, name);
	return v;
}

static void count_lines(const char *from, const char *to, unsigned *line, const char **bol)
{
	for (const char *c = from; c < to; c++) {
		if (*c == '\n') {
			(*line)++;
			*bol = c + 1;
		}
	}
}

/* Parses an env file (`file` is its name in messages and must outlive the
 * load): NAME=value lines, '#' comments, an optional "export " prefix,
 * 'single quotes' (literal), "double quotes" (\n \t \r \" \\ \$ escapes,
 * interpolated), unquoted values (interpolated; " #" starts a comment).
 * A line with a NAME alone takes its value from the project variables
 * (service env_files only). Items are appended to out; later lines win. */
static int envfile_parse(struct ctx *ctx, const char *file, const char *buf, size_t len, bool project,
                         struct tkvs *out)
{
	const char *p = buf, *end = buf + len, *bol = buf;
	unsigned line = 1;
	struct envscope scope = {ctx, out, project};
	char *key = NULL;
	size_t bad;
	int rc = 0;

	if (!utf8_valid(buf, len, &bad) || memchr(buf, '\0', len)) {
		if (utf8_valid(buf, len, &bad))
			bad = (size_t)((const char *)memchr(buf, '\0', len) - buf);
		count_lines(buf, buf + bad, &line, &bol);
		struct srcpos pos = {file, line, (unsigned)(buf + bad - bol) + 1};
		rc = fail_pos(ctx, &pos, "not a text file (invalid UTF-8 or a NUL byte here)");
		goto out;
	}
	while (p < end && rc == 0) {
		struct dv_strbuf raw = {0};
		bool interpolate = true, quoted = false;

		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
			p++;
		if (p >= end)
			break;
		if (*p == '\n' || *p == '#') {
			while (p < end && *p != '\n')
				p++;
			if (p < end) {
				p++;
				line++;
				bol = p;
			}
			continue;
		}
		if (end - p > 7 && strncmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
			p += 7;
			while (p < end && (*p == ' ' || *p == '\t'))
				p++;
		}
		struct srcpos pos = {file, line, (unsigned)(p - bol) + 1};
		if (out->len >= MAX_ENV_ENTRIES) {
			rc = fail_pos(ctx, &pos, "more than %d variables: this is not a plausible env file",
			              MAX_ENV_ENTRIES);
			break;
		}
		if (!is_name_start(*p)) {
			rc = fail_pos(ctx, &pos, "expected NAME=value (a name starts with a letter or '_')");
			break;
		}
		const char *k = p;
		while (p < end && (is_name_char(*p) || *p == '.' || *p == '-'))
			p++;
		key = dv_xstrndup(k, (size_t)(p - k));
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p >= end || *p == '\n' || *p == '\r' || *p == '#') {
			const char *v = project ? NULL : lookup_vars(ctx, key);
			if (v) {
				tkvs_add(out, key, dv_xstrdup(v), &pos);
				key = NULL;
			}
			free(key);
			key = NULL;
			while (p < end && *p != '\n')
				p++;
			continue;
		}
		if (*p != '=') {
			pos.column = (unsigned)(p - bol) + 1;
			rc = fail_pos(ctx, &pos, "expected '=' after %s", key);
			break;
		}
		p++;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		pos.column = (unsigned)(p - bol) + 1;
		if (p < end && *p == '\'') {
			const char *close = memchr(p + 1, '\'', (size_t)(end - p - 1));
			if (!close) {
				rc = fail_pos(ctx, &pos, "unterminated single quote: add the closing '");
				break;
			}
			dv_strbuf_append(&raw, p + 1, (size_t)(close - p - 1));
			count_lines(p, close, &line, &bol);
			p = close + 1;
			interpolate = false;
			quoted = true;
		} else if (p < end && *p == '"') {
			const char *q = p + 1;
			while (q < end && *q != '"') {
				if (*q == '\\' && q + 1 < end) {
					switch (q[1]) {
					case 'n': sbuf_addc(&raw, '\n'); break;
					case 't': sbuf_addc(&raw, '\t'); break;
					case 'r': sbuf_addc(&raw, '\r'); break;
					case '"': sbuf_addc(&raw, '"'); break;
					case '\\': sbuf_addc(&raw, '\\'); break;
					case '$': dv_strbuf_puts(&raw, "$$"); break; /* a literal $ after interpolation */
					default: dv_strbuf_append(&raw, q, 2); break;
					}
					q += 2;
				} else {
					if (*q == '$' && q + 1 < end && q[1] == '$') {
						dv_strbuf_puts(&raw, "$$");
						q += 2;
						continue;
					}
					sbuf_addc(&raw, *q++);
				}
			}
			if (q >= end) {
				rc = fail_pos(ctx, &pos, "unterminated double quote: add the closing \"");
				free(raw.data);
				break;
			}
			count_lines(p, q, &line, &bol);
			p = q + 1;
			quoted = true;
		} else {
			const char *v = p;
			while (p < end && *p != '\n') {
				if (*p == '#' && p > v && (p[-1] == ' ' || p[-1] == '\t'))
					break;
				p++;
			}
			const char *ve = p;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
				ve--;
			dv_strbuf_append(&raw, v, (size_t)(ve - v));
			while (p < end && *p != '\n')
				p++;
		}
		if (rc == 0 && quoted) {
			while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
				p++;
			if (p < end && *p == '#') {
				while (p < end && *p != '\n')
					p++;
			} else if (p < end && *p != '\n') {
				struct srcpos at = {file, line, (unsigned)(p - bol) + 1};
				rc = fail_pos(ctx, &at, "unexpected text after the closing quote (put a comment after '#')");
			}
		}
		if (rc == 0) {
			char *value = NULL;
			if (interpolate)
				rc = interp_string(ctx, &pos, raw.data ? raw.data : "", raw.len, envscope_lookup,
				                   &scope, NULL, &value);
			else
				value = dv_strbuf_steal(&raw);
			if (rc == 0) {
				tkvs_add(out, key, value, &pos);
				key = NULL;
			}
		}
		free(raw.data);
		free(key);
		key = NULL;
	}
out:
	free(key);
	return rc;
}

/* Reads an env file. at (may be NULL) is the node naming it, for messages. */
static int envfile_load(struct ctx *ctx, const char *path, const char *file_label, const struct ynode *at,
                        bool project, bool required, struct tkvs *out)
{
	char *buf = NULL;
	size_t len = 0;
	int rc = read_file(path, &buf, &len);

	if (rc == -ENOENT && !required) {
		rc = 0;
		goto out;
	}
	if (rc) {
		struct srcpos pos = {ctx->file, 0, 0};
		if (at)
			pos = node_pos(ctx, at);
		else
			pos.file = file_label;
		if (rc == -ENOENT)
			rc = fail_pos(ctx, &pos, "env file '%s' not found%s%s%s: create it%s", at ? at->value : path,
			              at ? " (" : "", at ? path : "", at ? ")" : "",
			              at ? ", or remove it from env_file (or mark it required: false)" : "");
		else
			rc = fail_pos(ctx, &pos, "cannot read env file '%s': %s", path, read_error(rc));
		rc = -EINVAL;
		goto out;
	}
	rc = envfile_parse(ctx, file_label, buf, len, project, out);
out:
	free(buf);
	return rc;
}

/* ctx->vars = the process variables, then (after the .env file is read)
 * the .env entries the process does not define. */
static void vars_init(struct ctx *ctx)
{
	struct tkvs t = {0};
	struct srcpos none = {"", 0, 0};

	for (const char *const *e = ctx->proc_env; e && *e; e++) {
		const char *eq = strchr(*e, '=');
		if (!eq || eq == *e)
			continue;
		tkvs_add(&t, dv_xstrndup(*e, (size_t)(eq - *e)), dv_xstrdup(eq + 1), &none);
	}
	/* getenv() returns the first of duplicated names: keep the first. */
	for (size_t i = 0; i < t.len / 2; i++) {
		struct tkv tmp = t.items[i];
		t.items[i] = t.items[t.len - 1 - i];
		t.items[t.len - 1 - i] = tmp;
	}
	tkvs_to_sorted(&t, &ctx->vars, &ctx->n_vars);
}

static void vars_add_dotenv(struct ctx *ctx, struct tkvs *dotenv)
{
	struct dv_compose_kv *env, *merged;
	size_t n_env, i = 0, j = 0, n = 0;

	tkvs_to_sorted(dotenv, &env, &n_env);
	merged = dv_xcalloc(ctx->n_vars + n_env + 1, sizeof *merged);
	while (i < ctx->n_vars || j < n_env) {
		int c = i >= ctx->n_vars ? 1 : j >= n_env ? -1 : strcmp(ctx->vars[i].key, env[j].key);
		if (c <= 0) {
			merged[n++] = ctx->vars[i++];
			if (c == 0) {
				free(env[j].key);
				free(env[j].value);
				j++;
			}
		} else {
			merged[n++] = env[j++];
		}
	}
	free(env);
	free(ctx->vars);
	ctx->vars = merged;
	ctx->n_vars = n;
}

/* ---- reading typed values from nodes ------------------------------------ */

/* The interpolated value of a scalar node (the caller frees it). */
static int node_text(struct ctx *ctx, const struct ynode *n, const char *what, char **out)
{
	int rc = 0;
	*out = NULL;
	if (n->kind != Y_SCALAR) {
		rc = fail(ctx, n, "%s must be a single value, not %s", what, kind_name(n));
		goto out;
	}
	struct srcpos pos = node_pos(ctx, n);
	rc = interp_string(ctx, &pos, n->value, n->len, lookup_vars, ctx, NULL, out);
out:
	return rc;
}

/* A non-null scalar. */
static int get_string(struct ctx *ctx, const struct ynode *n, const char *what, char **out)
{
	int rc;
	*out = NULL;
	if (is_null(n))
		rc = fail(ctx, n, "%s has no value", what);
	else
		rc = node_text(ctx, n, what, out);
	return rc;
}

/* Replaces *slot (freeing the old value). */
static int set_string(struct ctx *ctx, const struct ynode *n, const char *what, char **slot)
{
	char *v = NULL;
	int rc = get_string(ctx, n, what, &v);
	if (rc == 0) {
		free(*slot);
		*slot = v;
	}
	return rc;
}

/* A decimal integer from 0 to max, digits only. */
static bool parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	bool ok = *s != '\0';
	for (; ok && *s; s++) {
		unsigned d = (unsigned)(*s - '0');
		ok = is_digit(*s) && d <= max && v <= (max - d) / 10;
		v = v * 10 + d;
	}
	if (ok)
		*out = v;
	return ok;
}

static int get_uint(struct ctx *ctx, const struct ynode *n, const char *what, uint64_t min, uint64_t max,
                    uint64_t *out)
{
	char *s = NULL;
	uint64_t v = 0;
	int rc = get_string(ctx, n, what, &s);
	if (rc == 0 && (!parse_uint(s, max, &v) || v < min)) {
		if (min > 0)
			rc = fail(ctx, n, "%s must be an integer from %llu to %llu, not '%s'", what,
			          (unsigned long long)min, (unsigned long long)max, s);
		else
			rc = fail(ctx, n, "%s must be a non-negative integer (at most %llu), not '%s'", what,
			          (unsigned long long)max, s);
	}
	if (rc == 0)
		*out = v;
	free(s);
	return rc;
}

static int get_unsigned(struct ctx *ctx, const struct ynode *n, const char *what, unsigned min, unsigned max,
                        unsigned *out)
{
	uint64_t v = 0;
	int rc = get_uint(ctx, n, what, min, max, &v);
	if (rc == 0)
		*out = (unsigned)v;
	return rc;
}

static int get_bool(struct ctx *ctx, const struct ynode *n, const char *what, bool *out)
{
	char *s = NULL;
	int rc = get_string(ctx, n, what, &s);
	if (rc == 0) {
		if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
			*out = true;
		else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
			*out = false;
		else
			rc = fail(ctx, n, "%s must be true or false, not '%s'", what, s);
	}
	free(s);
	return rc;
}

static int get_duration(struct ctx *ctx, const struct ynode *n, const char *what, uint64_t *ms)
{
	char *s = NULL;
	int rc = get_string(ctx, n, what, &s);
	if (rc == 0 && dv_compose_parse_duration(s, ms) != 0)
		rc = fail(ctx, n, "bad duration '%s' for %s: write a number with a unit, like 30s, 1m30s or "
		                  "500ms (units h, m, s, ms; whole milliseconds)", s, what);
	free(s);
	return rc;
}

static int get_size(struct ctx *ctx, const struct ynode *n, const char *what, uint64_t *bytes)
{
	char *s = NULL;
	int rc = get_string(ctx, n, what, &s);
	if (rc == 0 && dv_compose_parse_size(s, bytes) != 0)
		rc = fail(ctx, n, "bad size '%s' for %s: write bytes or a number with a unit, like 512M or 1g", s,
		          what);
	free(s);
	return rc;
}

static int want_map(struct ctx *ctx, const struct ynode *n, const char *what)
{
	int rc = 0;
	if (n->kind != Y_MAP)
		rc = fail(ctx, n, "%s must be a mapping (key: value lines), not %s", what, kind_name(n));
	return rc;
}

static int want_seq(struct ctx *ctx, const struct ynode *n, const char *what)
{
	int rc = 0;
	if (n->kind != Y_SEQ)
		rc = fail(ctx, n, "%s must be a list ('- item' lines), not %s", what, kind_name(n));
	return rc;
}

/* A string (one item) or a list of strings. */
static int get_strv(struct ctx *ctx, const struct ynode *n, const char *what, struct dv_compose_strv *out)
{
	int rc = 0;
	if (n->kind == Y_SCALAR) {
		char *s = NULL;
		rc = get_string(ctx, n, what, &s);
		if (rc == 0)
			strv_push(out, s);
	} else if (n->kind == Y_SEQ) {
		for (size_t i = 0; i < n->n_items && rc == 0; i++) {
			char *s = NULL;
			rc = get_string(ctx, n->items[i], what, &s);
			if (rc == 0)
				strv_push(out, s);
		}
	} else {
		rc = fail(ctx, n, "%s must be a string or a list of strings, not a mapping", what);
	}
	return rc;
}

/* A mapping key used as a name: no interpolation (compose does not
 * interpolate keys), no NUL. */
static int key_name(struct ctx *ctx, const struct ynode *key, const char *what, const char **out)
{
	int rc = 0;
	*out = key->value;
	if (key->len == 0 || memchr(key->value, '\0', key->len))
		rc = fail(ctx, key, "%s name must not be empty or hold a NUL character", what);
	return rc;
}

/* Keys compose defines that davit does not implement: warned about as such
 * (not as typos). */
static bool in_list(const char *const *list, const struct ynode *key)
{
	bool found = false;
	for (; *list && !found; list++)
		found = key_is(key, *list);
	return found;
}

static void warn_key(struct ctx *ctx, const struct ynode *key, const char *where,
                     const char *const *known_unsupported)
{
	bool extension = key->len > 2 && memcmp(key->value, "x-", 2) == 0;
	if (extension)
		; /* ignored by definition */
	else if (known_unsupported && in_list(known_unsupported, key))
		warn(ctx, key, "'%s' in %s is not supported by davit (ignored)", key->value, where);
	else
		warn(ctx, key, "unknown key '%s' in %s (ignored; check the spelling)", key->value, where);
}

/* ---- paths -------------------------------------------------------------- */

/* Lexically cleans an absolute path: no "//", ".", "..", trailing "/". */
static char *path_clean(const char *path)
{
	size_t len = strlen(path);
	char *out = dv_xmalloc(len + 2);
	size_t n = 0;
	const char *p = path;

	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *seg = p;
		while (*p && *p != '/')
			p++;
		size_t sl = (size_t)(p - seg);
		if (sl == 1 && seg[0] == '.')
			continue;
		if (sl == 2 && seg[0] == '.' && seg[1] == '.') {
			while (n > 0 && out[n - 1] != '/')
				n--;
			if (n > 0)
				n--;
			continue;
		}
		out[n++] = '/';
		memcpy(out + n, seg, sl);
		n += sl;
	}
	if (n == 0)
		out[n++] = '/';
	out[n] = '\0';
	return out;
}

/* A host path made absolute: "~/x" from $HOME, relative ones from the
 * compose file's directory. */
static char *path_resolve(struct ctx *ctx, const char *path)
{
	char *joined, *clean;
	if (path[0] == '/') {
		joined = dv_xstrdup(path);
	} else if (path[0] == '~' && (path[1] == '/' || path[1] == '\0')) {
		const char *home = lookup_vars(ctx, "HOME");
		joined = dv_xasprintf("%s/%s", home ? home : "/", path + 1);
	} else {
		joined = dv_xasprintf("%s/%s", ctx->dir, path);
	}
	clean = path_clean(joined);
	free(joined);
	return clean;
}

static bool is_url(const char *s)
{
	return strstr(s, "://") != NULL || strncmp(s, "git@", 4) == 0 || strncmp(s, "github.com/", 11) == 0;
}

/* ---- names and domains -------------------------------------------------- */

/* [a-zA-Z0-9][a-zA-Z0-9._-]* */
static bool valid_service_name(const char *s)
{
	bool ok = is_alpha(*s) || is_digit(*s);
	for (; ok && *s; s++)
		ok = is_alpha(*s) || is_digit(*s) || *s == '.' || *s == '_' || *s == '-';
	return ok;
}

/* [a-z0-9][a-z0-9_-]* */
static bool valid_project_name(const char *s)
{
	bool ok = (*s >= 'a' && *s <= 'z') || is_digit(*s);
	for (; ok && *s; s++)
		ok = (*s >= 'a' && *s <= 'z') || is_digit(*s) || *s == '_' || *s == '-';
	return ok;
}

/* Splits "host[/path]" into a lower-case host and a path; NULL on a bad
 * host name (with *why set). */
static bool parse_domain(const char *text, char **host, char **path, const char **why)
{
	const char *slash = strchr(text, '/');
	size_t hl = slash ? (size_t)(slash - text) : strlen(text);
	char *h = dv_xstrndup(text, hl);
	const char *p;
	size_t label = 0;
	bool ok = true;

	*why = NULL;
	for (size_t i = 0; i < hl; i++)
		h[i] = lower(h[i]);
	p = h;
	if (strncmp(p, "*.", 2) == 0)
		p += 2;
	if (hl == 0 || hl > 253) {
		*why = "a host name has 1 to 253 characters";
		ok = false;
	}
	for (; ok && *p; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-') {
				*why = "empty label or label ending with '-'";
				ok = false;
			}
			label = 0;
		} else if ((*p >= 'a' && *p <= 'z') || is_digit(*p) || *p == '-') {
			if (label == 0 && *p == '-') {
				*why = "a label cannot start with '-'";
				ok = false;
			}
			if (++label > 63) {
				*why = "a label has at most 63 characters";
				ok = false;
			}
		} else {
			*why = "a host name holds letters, digits, '-' and '.' (and may start with '*.')";
			ok = false;
		}
	}
	if (ok && label == 0) {
		*why = "a host name cannot end with '.'";
		ok = false;
	}
	if (ok && slash) {
		for (const char *c = slash; *c; c++) {
			if ((unsigned char)*c <= ' ' || *c == '?' || *c == '#') {
				*why = "a path prefix cannot hold spaces, '?' or '#'";
				ok = false;
				break;
			}
		}
	}
	if (ok) {
		*host = h;
		*path = dv_xstrdup(slash ? slash : "/");
		if (slash && strlen(*path) > 1 && (*path)[strlen(*path) - 1] == '/')
			(*path)[strlen(*path) - 1] = '\0';
	} else {
		free(h);
	}
	return ok;
}

/* Takes ownership of env, host, path; drops exact duplicates. */
static int add_domain(struct ctx *ctx, const struct srcpos *pos, struct dv_compose_service *svc, char *env,
                      char *host, char *path)
{
	bool dup = false;
	int rc = 0;
	if (svc->n_domains >= MAX_DOMAINS) {
		rc = fail_pos(ctx, pos, "service '%s' has more than %d domains", svc->name, MAX_DOMAINS);
		dup = true;
	}
	for (size_t i = 0; i < svc->n_domains && !dup; i++) {
		const struct dv_compose_domain *d = &svc->domains[i];
		dup = strcmp(d->host, host) == 0 && strcmp(d->path, path) == 0 &&
		      ((!d->environment && !env) || (d->environment && env && strcmp(d->environment, env) == 0));
	}
	if (dup) {
		free(env);
		free(host);
		free(path);
	} else {
		svc->domains = push(svc->domains, svc->n_domains, sizeof *svc->domains);
		svc->domains[svc->n_domains].environment = env;
		svc->domains[svc->n_domains].host = host;
		svc->domains[svc->n_domains].path = path;
		svc->n_domains++;
	}
	return rc;
}

/* ---- service fields ----------------------------------------------------- */

/* environment / labels / build args: a list of "KEY=value" or a mapping.
 * With from_vars, a KEY without value takes it from the project variables
 * (and is left out when unset); otherwise it gets "". */
static int parse_kv(struct ctx *ctx, const struct ynode *n, const char *what, bool from_vars, struct tkvs *out)
{
	int rc = 0;

	if (is_null(n))
		goto out;
	if (n->kind == Y_SEQ) {
		for (size_t i = 0; i < n->n_items && rc == 0; i++) {
			const struct ynode *item = n->items[i];
			struct srcpos pos = node_pos(ctx, item);
			char *text = NULL;
			rc = get_string(ctx, item, what, &text);
			if (rc)
				break;
			char *eq = strchr(text, '=');
			char *key = dv_xstrndup(text, eq ? (size_t)(eq - text) : strlen(text));
			const char *value = eq ? eq + 1 : (from_vars ? lookup_vars(ctx, key) : "");
			if (!*key) {
				rc = fail(ctx, item, "%s entry '%s' has no name before '='", what, text);
			} else if (value) {
				tkvs_add(out, key, dv_xstrdup(value), &pos);
				key = NULL;
			}
			free(key);
			free(text);
		}
		if (rc == 0)
			rc = tkvs_check_dups(ctx, out, what);
	} else if (n->kind == Y_MAP) {
		for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
			const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
			struct srcpos pos = node_pos(ctx, k);
			const char *name;
			char *value = NULL;
			rc = key_name(ctx, k, what, &name);
			if (rc == 0 && strchr(name, '='))
				rc = fail(ctx, k, "%s name '%s' cannot hold '='", what, name);
			if (rc == 0 && v->kind != Y_SCALAR)
				rc = fail(ctx, v, "the value of %s '%s' must be a single value, not %s", what, name,
				          kind_name(v));
			if (rc)
				break;
			if (is_null(v)) {
				const char *from = from_vars ? lookup_vars(ctx, name) : "";
				if (from)
					value = dv_xstrdup(from);
			} else {
				rc = node_text(ctx, v, what, &value);
			}
			if (rc == 0 && value)
				tkvs_add(out, dv_xstrdup(name), value, &pos);
		}
	} else {
		rc = fail(ctx, n, "%s must be a list of KEY=value or a mapping, not a string", what);
	}
out:
	return rc;
}

/* Splits a command line the way a POSIX shell splits words (quotes and
 * backslashes; no expansion). */
static int shell_split(const char *s, struct dv_compose_strv *out, const char **why)
{
	struct dv_strbuf w = {0};
	bool in_word = false;
	int rc = 0;

	while (*s && rc == 0) {
		char c = *s;
		if (c == ' ' || c == '\t' || c == '\n') {
			if (in_word)
				strv_push(out, dv_strbuf_steal(&w));
			in_word = false;
			s++;
			continue;
		}
		in_word = true;
		if (c == '\'') {
			const char *close = strchr(s + 1, '\'');
			if (!close) {
				*why = "unterminated single quote";
				rc = -EINVAL;
				break;
			}
			dv_strbuf_append(&w, s + 1, (size_t)(close - s - 1));
			if (!w.data)
				dv_strbuf_append(&w, "", 0);
			s = close + 1;
		} else if (c == '"') {
			s++;
			if (!w.data)
				dv_strbuf_append(&w, "", 0);
			while (*s && *s != '"') {
				if (*s == '\\' && s[1] && strchr("\"\\$`\n", s[1])) {
					sbuf_addc(&w, s[1]);
					s += 2;
				} else {
					sbuf_addc(&w, *s++);
				}
			}
			if (!*s) {
				*why = "unterminated double quote";
				rc = -EINVAL;
				break;
			}
			s++;
		} else if (c == '\\' && s[1]) {
			sbuf_addc(&w, s[1]);
			s += 2;
		} else {
			sbuf_addc(&w, c);
			s++;
		}
	}
	if (rc == 0 && in_word)
		strv_push(out, dv_strbuf_steal(&w));
	free(w.data);
	return rc;
}

/* command / entrypoint: a string (split like a shell) or a list. */
static int parse_command(struct ctx *ctx, const struct ynode *n, const char *what, bool *has,
                         struct dv_compose_strv *out)
{
	int rc = 0;
	strv_free(out);
	*has = false;
	if (is_null(n))
		goto out;
	*has = true;
	if (n->kind == Y_SCALAR) {
		char *text = NULL;
		const char *why = NULL;
		rc = node_text(ctx, n, what, &text);
		if (rc == 0 && shell_split(text, out, &why) != 0)
			rc = fail(ctx, n, "%s: %s (or write it as a list)", what, why);
		free(text);
	} else if (n->kind == Y_SEQ) {
		rc = get_strv(ctx, n, what, out);
	} else {
		rc = fail(ctx, n, "%s must be a string or a list, not a mapping", what);
	}
out:
	return rc;
}

static int parse_build(struct ctx *ctx, const struct ynode *n, struct dv_compose_build *b)
{
	static const char *const unsupported[] = {
		"additional_contexts", "cache_from", "cache_to", "dockerfile_inline", "entitlements",
		"extra_hosts", "isolation", "labels", "network", "no_cache", "platforms", "privileged",
		"pull", "secrets", "shm_size", "ssh", "tags", "ulimits", NULL};
	struct tkvs args = {0};
	char *context = NULL;
	int rc = 0;

	free(b->context);
	free(b->dockerfile);
	free(b->target);
	kv_free(b->args, b->n_args);
	memset(b, 0, sizeof *b);
	if (n->kind == Y_SCALAR) {
		rc = get_string(ctx, n, "build", &context);
	} else if (n->kind == Y_MAP) {
		for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
			const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
			if (key_is(k, "context")) {
				free(context);
				rc = get_string(ctx, v, "build.context", &context);
			} else if (key_is(k, "dockerfile")) {
				rc = set_string(ctx, v, "build.dockerfile", &b->dockerfile);
			} else if (key_is(k, "target")) {
				rc = set_string(ctx, v, "build.target", &b->target);
			} else if (key_is(k, "args")) {
				rc = parse_kv(ctx, v, "build argument", true, &args);
			} else {
				warn_key(ctx, k, "build", unsupported);
			}
		}
	} else {
		rc = fail(ctx, n, "build must be a directory or a mapping {context, dockerfile, args}, not a list");
	}
	if (rc == 0) {
		const char *c = context ? context : ".";
		b->context = is_url(c) ? dv_xstrdup(c) : path_resolve(ctx, c);
		tkvs_to_sorted(&args, &b->args, &b->n_args);
	}
	tkvs_free(&args);
	free(context);
	return rc;
}

static int add_port(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc, const char *host_ip,
                    unsigned target, unsigned published, unsigned published_end, const char *protocol,
                    const char *mode)
{
	int rc = 0;
	if (++ctx->n_ports > MAX_PORTS) {
		rc = fail(ctx, n, "more than %d ports in the project: use fewer or smaller port ranges", MAX_PORTS);
	} else {
		svc->ports = push(svc->ports, svc->n_ports, sizeof *svc->ports);
		struct dv_compose_port *p = &svc->ports[svc->n_ports++];
		p->host_ip = host_ip ? dv_xstrdup(host_ip) : NULL;
		p->target = target;
		p->published = published;
		p->published_end = published_end;
		p->protocol = dv_xstrdup(protocol);
		p->mode = dv_xstrdup(mode);
	}
	return rc;
}

/* "N" or "N-M", 1..65535. */
static bool parse_port_range(const char *s, unsigned *lo, unsigned *hi)
{
	const char *dash = strchr(s, '-');
	char *a = dv_xstrndup(s, dash ? (size_t)(dash - s) : strlen(s));
	uint64_t x = 0, y = 0;
	bool ok = parse_uint(a, 65535, &x) && x >= 1;
	if (ok && dash)
		ok = parse_uint(dash + 1, 65535, &y) && y >= x;
	else
		y = x;
	free(a);
	*lo = (unsigned)x;
	*hi = (unsigned)y;
	return ok;
}

static bool valid_protocol(const char *p)
{
	return strcmp(p, "tcp") == 0 || strcmp(p, "udp") == 0 || strcmp(p, "sctp") == 0;
}

static bool valid_ip(const char *ip, bool v6_only)
{
	unsigned char addr[16];
	return (!v6_only && inet_pton(AF_INET, ip, addr) == 1) || inet_pton(AF_INET6, ip, addr) == 1;
}

/* [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL], ports may be ranges. */
static int parse_port_short(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc,
                            const char *spec)
{
	char *work = dv_xstrdup(spec);
	char *rest = work, *host_ip = NULL, *published = NULL, *target;
	const char *protocol = "tcp", *why = NULL;
	unsigned t_lo, t_hi, p_lo = 0, p_hi = 0;
	int rc = 0;

	char *slash = strrchr(work, '/');
	if (slash) {
		*slash = '\0';
		protocol = slash + 1;
		if (!valid_protocol(protocol)) {
			why = "the protocol must be tcp, udp or sctp";
			goto bad;
		}
	}
	if (rest[0] == '[') {
		char *close = strchr(rest, ']');
		if (!close || close[1] != ':') {
			why = "an IPv6 address in brackets must be followed by ':'";
			goto bad;
		}
		*close = '\0';
		host_ip = rest + 1;
		if (!valid_ip(host_ip, true)) {
			why = "bad IPv6 address";
			goto bad;
		}
		rest = close + 2;
		char *colon = strchr(rest, ':');
		if (!colon) {
			why = "after the address come HOST_PORT:CONTAINER_PORT";
			goto bad;
		}
		*colon = '\0';
		published = rest;
		target = colon + 1;
	} else {
		size_t colons = 0;
		for (const char *c = rest; *c; c++)
			colons += *c == ':';
		if (colons > 2) {
			why = "too many ':' (put an IPv6 address in brackets)";
			goto bad;
		}
		target = strrchr(rest, ':');
		if (target) {
			*target++ = '\0';
			char *colon = strrchr(rest, ':');
			if (colon) {
				*colon = '\0';
				host_ip = rest;
				published = colon + 1;
				if (!valid_ip(host_ip, false)) {
					why = "bad host IP address";
					goto bad;
				}
			} else {
				published = rest;
			}
		} else {
			target = rest;
		}
	}
	if (!parse_port_range(target, &t_lo, &t_hi)) {
		why = "the container port must be 1-65535 or a range N-M";
		goto bad;
	}
	if (published && *published && !parse_port_range(published, &p_lo, &p_hi)) {
		why = "the host port must be 1-65535 or a range N-M";
		goto bad;
	}
	if (p_lo == 0) {
		for (unsigned t = t_lo; t <= t_hi && rc == 0; t++)
			rc = add_port(ctx, n, svc, host_ip, t, 0, 0, protocol, "ingress");
	} else if (t_lo == t_hi) {
		rc = add_port(ctx, n, svc, host_ip, t_lo, p_lo, p_hi, protocol, "ingress");
	} else if (p_hi - p_lo == t_hi - t_lo) {
		for (unsigned i = 0; i <= t_hi - t_lo && rc == 0; i++)
			rc = add_port(ctx, n, svc, host_ip, t_lo + i, p_lo + i, p_lo + i, protocol, "ingress");
	} else {
		why = "the host and container port ranges differ in size";
		goto bad;
	}
	goto out;
bad:
	rc = fail(ctx, n, "bad port '%s' (%s): write [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL], "
	                  "like \"8080:80\" or \"127.0.0.1:8080:80/tcp\"", spec, why);
out:
	free(work);
	return rc;
}

static int parse_port_long(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	static const char *const unsupported[] = {"app_protocol", "name", NULL};
	char *host_ip = NULL, *protocol = NULL, *mode = NULL, *published = NULL;
	unsigned target = 0, p_lo = 0, p_hi = 0;
	const struct ynode *target_node = NULL;
	int rc = 0;

	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
		if (key_is(k, "target")) {
			target_node = v;
			rc = get_unsigned(ctx, v, "ports.target", 1, 65535, &target);
		} else if (key_is(k, "published")) {
			rc = set_string(ctx, v, "ports.published", &published);
			if (rc == 0 && !parse_port_range(published, &p_lo, &p_hi))
				rc = fail(ctx, v, "ports.published must be a port from 1 to 65535 or a range N-M, not '%s'",
				          published);
		} else if (key_is(k, "host_ip")) {
			rc = set_string(ctx, v, "ports.host_ip", &host_ip);
			if (rc == 0 && !valid_ip(host_ip, false))
				rc = fail(ctx, v, "ports.host_ip '%s' is not an IP address", host_ip);
		} else if (key_is(k, "protocol")) {
			rc = set_string(ctx, v, "ports.protocol", &protocol);
			if (rc == 0 && !valid_protocol(protocol))
				rc = fail(ctx, v, "ports.protocol must be tcp, udp or sctp, not '%s'", protocol);
		} else if (key_is(k, "mode")) {
			rc = set_string(ctx, v, "ports.mode", &mode);
			if (rc == 0 && strcmp(mode, "host") != 0 && strcmp(mode, "ingress") != 0)
				rc = fail(ctx, v, "ports.mode must be host or ingress, not '%s'", mode);
		} else {
			warn_key(ctx, k, "a port", unsupported);
		}
	}
	if (rc == 0 && !target_node)
		rc = fail(ctx, n, "a port in long form needs 'target:' (the container port)");
	if (rc == 0)
		rc = add_port(ctx, n, svc, host_ip, target, p_lo, p_hi, protocol ? protocol : "tcp",
		              mode ? mode : "ingress");
	free(host_ip);
	free(protocol);
	free(mode);
	free(published);
	return rc;
}

static int parse_ports(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	int rc = 0;
	if (!is_null(n))
		rc = want_seq(ctx, n, "ports");
	for (size_t i = 0; i < n->n_items && rc == 0; i++) {
		const struct ynode *item = n->items[i];
		if (item->kind == Y_MAP) {
			rc = parse_port_long(ctx, item, svc);
		} else {
			char *spec = NULL;
			rc = get_string(ctx, item, "a port", &spec);
			if (rc == 0)
				rc = parse_port_short(ctx, item, svc, spec);
			free(spec);
		}
	}
	return rc;
}

static int parse_expose(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	int rc = 0;
	if (!is_null(n))
		rc = want_seq(ctx, n, "expose");
	for (size_t i = 0; i < n->n_items && rc == 0; i++) {
		char *spec = NULL, *slash;
		const char *protocol = "tcp";
		unsigned lo, hi;
		rc = get_string(ctx, n->items[i], "expose", &spec);
		if (rc)
			break;
		slash = strchr(spec, '/');
		if (slash) {
			*slash = '\0';
			protocol = slash + 1;
		}
		if (!valid_protocol(protocol) || !parse_port_range(spec, &lo, &hi)) {
			if (slash)
				*slash = '/';
			rc = fail(ctx, n->items[i], "bad exposed port '%s': write PORT[-PORT][/PROTOCOL], like 3000 or "
			                            "3000/udp", spec);
		} else if (lo == hi) {
			strv_push(&svc->expose, dv_xasprintf("%u/%s", lo, protocol));
		} else {
			strv_push(&svc->expose, dv_xasprintf("%u-%u/%s", lo, hi, protocol));
		}
		free(spec);
	}
	return rc;
}

static int svc_name_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct dv_compose_service *)elem)->name);
}

static size_t svc_index(const struct dv_compose_project *p, const char *name)
{
	const struct dv_compose_service *s =
		p->n_services ? bsearch(name, p->services, p->n_services, sizeof *p->services, svc_name_cmp) : NULL;
	return s ? (size_t)(s - p->services) : SIZE_MAX;
}

static char *service_list(const struct dv_compose_project *p)
{
	struct dv_strbuf b = {0};
	for (size_t i = 0; i < p->n_services && i < 12; i++) {
		if (i)
			dv_strbuf_puts(&b, ", ");
		dv_strbuf_puts(&b, p->services[i].name);
	}
	if (p->n_services > 12)
		dv_strbuf_puts(&b, ", ...");
	return dv_strbuf_steal(&b);
}

static int add_dependency(struct ctx *ctx, const struct ynode *at, struct dv_compose_service *svc,
                          struct svc_aux *aux, char *name, enum dv_compose_condition cond, bool restart,
                          bool required)
{
	int rc = 0;
	if (svc_index(ctx->project, name) == SIZE_MAX) {
		if (required) {
			char *names = service_list(ctx->project);
			rc = fail(ctx, at, "depends_on names '%s', which is not a service of this project (services: %s)",
			          name, names);
			free(names);
		} else {
			warn(ctx, at, "optional dependency '%s' is not a service of this project (ignored)", name);
		}
		free(name);
		goto out;
	}
	for (size_t i = 0; i < svc->n_depends_on; i++) {
		if (strcmp(svc->depends_on[i].service, name) == 0) {
			rc = fail(ctx, at, "depends_on lists '%s' twice: remove one", name);
			free(name);
			goto out;
		}
	}
	svc->depends_on = push(svc->depends_on, svc->n_depends_on, sizeof *svc->depends_on);
	aux->dep_pos = push(aux->dep_pos, svc->n_depends_on, sizeof *aux->dep_pos);
	aux->dep_pos[svc->n_depends_on] = node_pos(ctx, at);
	struct dv_compose_dependency *d = &svc->depends_on[svc->n_depends_on++];
	d->service = name;
	d->condition = cond;
	d->restart = restart;
	d->required = required;
out:
	return rc;
}

static int parse_depends_on(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc,
                            struct svc_aux *aux)
{
	int rc = 0;

	if (is_null(n))
		goto out;
	if (n->kind == Y_SEQ) {
		for (size_t i = 0; i < n->n_items && rc == 0; i++) {
			char *name = NULL;
			rc = get_string(ctx, n->items[i], "depends_on", &name);
			if (rc == 0)
				rc = add_dependency(ctx, n->items[i], svc, aux, name, DV_COMPOSE_COND_STARTED, false, true);
		}
	} else if (n->kind == Y_MAP) {
		for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
			const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
			enum dv_compose_condition cond = DV_COMPOSE_COND_STARTED;
			bool restart = false, required = true;
			const char *name;
			rc = key_name(ctx, k, "a dependency", &name);
			if (rc == 0 && !is_null(v))
				rc = want_map(ctx, v, "a dependency");
			for (size_t j = 0; rc == 0 && v->kind == Y_MAP && j < v->n_pairs; j++) {
				const struct ynode *dk = v->pairs[j].key, *dv = v->pairs[j].value;
				if (key_is(dk, "condition")) {
					char *c = NULL;
					rc = get_string(ctx, dv, "condition", &c);
					if (rc == 0 && strcmp(c, "service_started") == 0)
						cond = DV_COMPOSE_COND_STARTED;
					else if (rc == 0 && strcmp(c, "service_healthy") == 0)
						cond = DV_COMPOSE_COND_HEALTHY;
					else if (rc == 0 && strcmp(c, "service_completed_successfully") == 0)
						cond = DV_COMPOSE_COND_COMPLETED;
					else if (rc == 0)
						rc = fail(ctx, dv, "unknown depends_on condition '%s': use service_started, "
						                   "service_healthy or service_completed_successfully", c);
					free(c);
				} else if (key_is(dk, "restart")) {
					rc = get_bool(ctx, dv, "restart", &restart);
				} else if (key_is(dk, "required")) {
					rc = get_bool(ctx, dv, "required", &required);
				} else {
					warn_key(ctx, dk, "a dependency", NULL);
				}
			}
			if (rc == 0)
				rc = add_dependency(ctx, k, svc, aux, dv_xstrdup(name), cond, restart, required);
		}
	} else {
		rc = fail(ctx, n, "depends_on must be a list of services or a mapping service: {condition: ...}, "
		                  "not a string");
	}
out:
	return rc;
}

static int parse_healthcheck(struct ctx *ctx, const struct ynode *n, struct dv_compose_healthcheck *hc)
{
	const struct ynode *test = NULL;
	bool disable = false;
	int rc = 0;

	strv_free(&hc->test);
	memset(hc, 0, sizeof *hc);
	if (is_null(n))
		goto out;
	rc = want_map(ctx, n, "healthcheck");
	hc->present = true;
	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
		if (key_is(k, "test")) {
			test = v;
		} else if (key_is(k, "interval")) {
			rc = get_duration(ctx, v, "healthcheck.interval", &hc->interval_ms);
		} else if (key_is(k, "timeout")) {
			rc = get_duration(ctx, v, "healthcheck.timeout", &hc->timeout_ms);
		} else if (key_is(k, "start_period")) {
			rc = get_duration(ctx, v, "healthcheck.start_period", &hc->start_period_ms);
		} else if (key_is(k, "start_interval")) {
			rc = get_duration(ctx, v, "healthcheck.start_interval", &hc->start_interval_ms);
		} else if (key_is(k, "retries")) {
			rc = get_unsigned(ctx, v, "healthcheck.retries", 0, 1000000, &hc->retries);
		} else if (key_is(k, "disable")) {
			rc = get_bool(ctx, v, "healthcheck.disable", &disable);
		} else {
			warn_key(ctx, k, "healthcheck", NULL);
		}
	}
	if (rc || !test || is_null(test))
		goto done;
	if (test->kind == Y_SCALAR) {
		char *s = NULL;
		rc = get_string(ctx, test, "healthcheck.test", &s);
		if (rc == 0 && strcmp(s, "NONE") == 0) {
			hc->disabled = true;
			free(s);
		} else if (rc == 0) {
			hc->shell = true;
			strv_push(&hc->test, s);
		}
	} else if (test->kind == Y_SEQ) {
		struct dv_compose_strv items = {0};
		rc = get_strv(ctx, test, "healthcheck.test", &items);
		if (rc == 0 && items.len == 0) {
			rc = fail(ctx, test, "healthcheck.test is empty: use [\"CMD\", ...], [\"CMD-SHELL\", \"...\"] "
			                     "or [\"NONE\"]");
		} else if (rc == 0 && strcmp(items.items[0], "NONE") == 0) {
			hc->disabled = true;
		} else if (rc == 0 && strcmp(items.items[0], "CMD") == 0 && items.len > 1) {
			for (size_t i = 1; i < items.len; i++) {
				strv_push(&hc->test, items.items[i]);
				items.items[i] = NULL;
			}
		} else if (rc == 0 && strcmp(items.items[0], "CMD-SHELL") == 0 && items.len > 1) {
			struct dv_strbuf b = {0};
			for (size_t i = 1; i < items.len; i++) {
				if (i > 1)
					sbuf_addc(&b, ' ');
				dv_strbuf_puts(&b, items.items[i]);
			}
			hc->shell = true;
			strv_push(&hc->test, dv_strbuf_steal(&b));
		} else if (rc == 0) {
			rc = fail(ctx, test->items[0], "healthcheck.test must start with \"CMD\" or \"CMD-SHELL\" followed by the "
			                     "command, or be [\"NONE\"] (got '%s'%s)",
			          items.items[0], items.len == 1 ? " alone" : "");
		}
		strv_free(&items);
	} else {
		rc = fail(ctx, test, "healthcheck.test must be a string or a list, not a mapping");
	}
done:
	if (rc == 0 && disable) {
		if (hc->test.len)
			rc = fail(ctx, n, "healthcheck has both disable: true and a test: remove one of them");
		hc->disabled = true;
	}
out:
	return rc;
}

static int parse_restart(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	char *s = NULL;
	uint64_t max = 0;
	int rc = get_string(ctx, n, "restart", &s);

	if (rc)
		goto out;
	if (strcmp(s, "no") == 0) {
		svc->restart = DV_COMPOSE_RESTART_NO;
	} else if (strcmp(s, "always") == 0) {
		svc->restart = DV_COMPOSE_RESTART_ALWAYS;
	} else if (strcmp(s, "unless-stopped") == 0) {
		svc->restart = DV_COMPOSE_RESTART_UNLESS_STOPPED;
	} else if (strcmp(s, "on-failure") == 0) {
		svc->restart = DV_COMPOSE_RESTART_ON_FAILURE;
	} else if (strncmp(s, "on-failure:", 11) == 0 && parse_uint(s + 11, 1000000, &max)) {
		svc->restart = DV_COMPOSE_RESTART_ON_FAILURE;
		svc->restart_max = (unsigned)max;
	} else {
		rc = fail(ctx, n, "unknown restart policy '%s': use no, always, on-failure, on-failure:N or "
		                  "unless-stopped", s);
	}
out:
	free(s);
	return rc;
}

/* "0.5", "2", 1.25 -> thousandths of a CPU. */
static int get_cpus(struct ctx *ctx, const struct ynode *n, uint32_t *milli)
{
	char *s = NULL;
	int rc = get_string(ctx, n, "cpus", &s);
	uint64_t whole = 0, frac = 0;
	unsigned digits = 0;
	const char *p = s;
	bool ok = rc == 0;

	while (ok && is_digit(*p) && whole < 1000000)
		whole = whole * 10 + (uint64_t)(*p++ - '0');
	if (ok && *p == '.') {
		p++;
		while (is_digit(*p) && digits < 3) {
			frac = frac * 10 + (uint64_t)(*p++ - '0');
			digits++;
		}
		while (*p == '0')
			p++;
	}
	if (ok && (*p || p == s || (p == s + 1 && *s == '.') || whole >= 1000000))
		ok = false;
	if (rc == 0 && !ok)
		rc = fail(ctx, n, "cpus must be a number of CPUs with at most 3 decimals, like 0.5 or 2, not '%s'", s);
	if (rc == 0) {
		while (digits < 3) {
			frac *= 10;
			digits++;
		}
		*milli = (uint32_t)(whole * 1000 + frac);
	}
	free(s);
	return rc;
}

static int parse_resources_block(struct ctx *ctx, const struct ynode *n, const char *what,
                                 struct dv_compose_resources *r)
{
	static const char *const unsupported[] = {"pids", "devices", "generic_resources", NULL};
	int rc = 0;
	if (!is_null(n))
		rc = want_map(ctx, n, what);
	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
		if (key_is(k, "cpus"))
			rc = get_cpus(ctx, v, &r->cpus_milli);
		else if (key_is(k, "memory"))
			rc = get_size(ctx, v, "memory", &r->memory);
		else
			warn_key(ctx, k, what, unsupported);
	}
	return rc;
}

static int parse_deploy(struct ctx *ctx, const struct ynode *n, struct dv_compose_deploy *d)
{
	static const char *const unsupported[] = {"endpoint_mode", "labels", "mode", "placement",
	                                          "restart_policy", "rollback_config", NULL};
	static const char *const update_unsupported[] = {"max_failure_ratio", NULL};
	int rc = 0;

	if (is_null(n))
		goto out;
	rc = want_map(ctx, n, "deploy");
	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
		if (key_is(k, "replicas")) {
			char *s = NULL;
			uint64_t r = 0;
			rc = get_string(ctx, v, "deploy.replicas", &s);
			if (rc == 0 && (!parse_uint(s, 10000, &r) || r == 0))
				rc = fail(ctx, v, "deploy.replicas must be a positive integer (1 to 10000), not '%s'", s);
			d->replicas = (unsigned)r;
			free(s);
		} else if (key_is(k, "resources")) {
			if (is_null(v))
				continue;
			rc = want_map(ctx, v, "deploy.resources");
			for (size_t j = 0; j < v->n_pairs && rc == 0; j++) {
				const struct ynode *rk = v->pairs[j].key, *rv = v->pairs[j].value;
				if (key_is(rk, "limits"))
					rc = parse_resources_block(ctx, rv, "deploy.resources.limits", &d->limits);
				else if (key_is(rk, "reservations"))
					rc = parse_resources_block(ctx, rv, "deploy.resources.reservations",
					                           &d->reservations);
				else
					warn_key(ctx, rk, "deploy.resources", NULL);
			}
		} else if (key_is(k, "update_config")) {
			if (is_null(v))
				continue;
			rc = want_map(ctx, v, "deploy.update_config");
			for (size_t j = 0; j < v->n_pairs && rc == 0; j++) {
				const struct ynode *uk = v->pairs[j].key, *uv = v->pairs[j].value;
				char *s = NULL;
				if (key_is(uk, "order")) {
					rc = get_string(ctx, uv, "update_config.order", &s);
					if (rc == 0 && strcmp(s, "start-first") == 0)
						d->update_order = DV_COMPOSE_ORDER_START_FIRST;
					else if (rc == 0 && strcmp(s, "stop-first") == 0)
						d->update_order = DV_COMPOSE_ORDER_STOP_FIRST;
					else if (rc == 0)
						rc = fail(ctx, uv, "update_config.order must be start-first or stop-first, "
						                   "not '%s'", s);
				} else if (key_is(uk, "failure_action")) {
					rc = get_string(ctx, uv, "update_config.failure_action", &s);
					if (rc == 0 && strcmp(s, "rollback") == 0)
						d->failure_action = DV_COMPOSE_FAILURE_ROLLBACK;
					else if (rc == 0 && strcmp(s, "pause") == 0)
						d->failure_action = DV_COMPOSE_FAILURE_PAUSE;
					else if (rc == 0 && strcmp(s, "continue") == 0)
						d->failure_action = DV_COMPOSE_FAILURE_CONTINUE;
					else if (rc == 0)
						rc = fail(ctx, uv, "update_config.failure_action must be rollback, pause or "
						                   "continue, not '%s'", s);
				} else if (key_is(uk, "parallelism")) {
					rc = get_unsigned(ctx, uv, "update_config.parallelism", 0, 10000,
					                  &d->update_parallelism);
				} else if (key_is(uk, "delay")) {
					rc = get_duration(ctx, uv, "update_config.delay", &d->update_delay_ms);
				} else if (key_is(uk, "monitor")) {
					rc = get_duration(ctx, uv, "update_config.monitor", &d->update_monitor_ms);
				} else {
					warn_key(ctx, uk, "deploy.update_config", update_unsupported);
				}
				free(s);
			}
		} else {
			warn_key(ctx, k, "deploy", unsupported);
		}
	}
out:
	return rc;
}

/* ---- Traefik labels ----------------------------------------------------- */

/* A rule in disjunctive form: each alternative routes hosts x paths. */
struct rule_alt {
	struct dv_compose_strv hosts;
	struct dv_compose_strv paths;
};

struct rule_alts {
	struct rule_alt *items;
	size_t len;
};

struct rule_parser {
	const char *p;
	const char *why;                     /* syntax error */
	struct dv_compose_strv ignored;      /* matchers davit does not route on */
	bool conflict;                       /* Host() && Host() or Path && Path */
	int depth;                           /* nesting, for MAX_RULE_DEPTH */
};

static void alts_free(struct rule_alts *a)
{
	for (size_t i = 0; i < a->len; i++) {
		strv_free(&a->items[i].hosts);
		strv_free(&a->items[i].paths);
	}
	free(a->items);
	a->items = NULL;
	a->len = 0;
}

static struct rule_alt *alts_add(struct rule_alts *a)
{
	a->items = push(a->items, a->len, sizeof *a->items);
	return &a->items[a->len++];
}

static void strv_copy(struct dv_compose_strv *dst, const struct dv_compose_strv *src)
{
	for (size_t i = 0; i < src->len; i++)
		strv_push(dst, dv_xstrdup(src->items[i]));
}

static void rule_ws(struct rule_parser *rp)
{
	while (*rp->p == ' ' || *rp->p == '\t' || *rp->p == '\n')
		rp->p++;
}

static int rule_or(struct rule_parser *rp, struct rule_alts *out);

static int rule_matcher(struct rule_parser *rp, struct rule_alts *out)
{
	const char *name = rp->p;
	struct dv_compose_strv args = {0};
	int rc = 0;

	while (is_alpha(*rp->p) || is_digit(*rp->p))
		rp->p++;
	size_t nlen = (size_t)(rp->p - name);
	if (nlen == 0) {
		rp->why = "expected a matcher like Host(`example.com`)";
		rc = -EINVAL;
		goto out;
	}
	rule_ws(rp);
	if (*rp->p != '(') {
		rp->why = "expected '(' after the matcher name";
		rc = -EINVAL;
		goto out;
	}
	rp->p++;
	rule_ws(rp);
	while (rc == 0 && *rp->p != ')') {
		char quote = *rp->p;
		if (quote != '`' && quote != '"') {
			rp->why = "matcher arguments are quoted with backquotes, like Host(`example.com`)";
			rc = -EINVAL;
			break;
		}
		const char *close = strchr(rp->p + 1, quote);
		if (!close) {
			rp->why = "unterminated quoted argument";
			rc = -EINVAL;
			break;
		}
		strv_push(&args, dv_xstrndup(rp->p + 1, (size_t)(close - rp->p - 1)));
		rp->p = close + 1;
		rule_ws(rp);
		if (*rp->p == ',') {
			rp->p++;
			rule_ws(rp);
		} else if (*rp->p != ')') {
			rp->why = "expected ',' or ')' after an argument";
			rc = -EINVAL;
		}
	}
	if (rc == 0) {
		rp->p++;
		struct rule_alt *alt = alts_add(out);
		if (nlen == 4 && strncmp(name, "Host", 4) == 0) {
			alt->hosts = args;
			args.items = NULL;
			args.len = 0;
		} else if ((nlen == 10 && strncmp(name, "PathPrefix", 10) == 0) ||
		           (nlen == 4 && strncmp(name, "Path", 4) == 0)) {
			if (nlen == 4 && !strv_contains(&rp->ignored, "Path (used as a prefix)"))
				strv_push(&rp->ignored, dv_xstrdup("Path (used as a prefix)"));
			alt->paths = args;
			args.items = NULL;
			args.len = 0;
		} else {
			char *m = dv_xstrndup(name, nlen);
			if (!strv_contains(&rp->ignored, m))
				strv_push(&rp->ignored, m);
			else
				free(m);
		}
	}
out:
	strv_free(&args);
	return rc;
}

static int rule_unary(struct rule_parser *rp, struct rule_alts *out)
{
	int rc = 0;
	rule_ws(rp);
	if (++rp->depth > MAX_RULE_DEPTH) {
		rp->why = "the rule is nested too deeply";
		rc = -EINVAL;
	} else if (*rp->p == '!') {
		struct rule_alts negated = {0};
		rp->p++;
		rc = rule_unary(rp, &negated);
		alts_free(&negated);
		if (rc == 0) {
			alts_add(out); /* routes on no host or path of its own */
			if (!strv_contains(&rp->ignored, "negations (!)"))
				strv_push(&rp->ignored, dv_xstrdup("negations (!)"));
		}
	} else if (*rp->p == '(') {
		rp->p++;
		rc = rule_or(rp, out);
		rule_ws(rp);
		if (rc == 0 && *rp->p != ')') {
			rp->why = "missing ')'";
			rc = -EINVAL;
		} else if (rc == 0) {
			rp->p++;
		}
	} else {
		rc = rule_matcher(rp, out);
	}
	rp->depth--;
	return rc;
}

static int rule_and(struct rule_parser *rp, struct rule_alts *out)
{
	struct rule_alts acc = {0};
	int rc = rule_unary(rp, &acc);

	for (;;) {
		rule_ws(rp);
		if (rc || strncmp(rp->p, "&&", 2) != 0)
			break;
		rp->p += 2;
		struct rule_alts rhs = {0}, prod = {0};
		rc = rule_unary(rp, &rhs);
		if (rc == 0 && acc.len * rhs.len > MAX_RULE_ALTS) {
			rp->why = "the rule has too many alternatives";
			rc = -EINVAL;
		}
		for (size_t i = 0; rc == 0 && i < acc.len; i++) {
			for (size_t j = 0; j < rhs.len; j++) {
				const struct rule_alt *a = &acc.items[i], *b = &rhs.items[j];
				struct rule_alt *c = alts_add(&prod);
				if ((a->hosts.len && b->hosts.len) || (a->paths.len && b->paths.len))
					rp->conflict = true;
				strv_copy(&c->hosts, a->hosts.len ? &a->hosts : &b->hosts);
				strv_copy(&c->paths, a->paths.len ? &a->paths : &b->paths);
			}
		}
		alts_free(&rhs);
		alts_free(&acc);
		acc = prod;
	}
	for (size_t i = 0; rc == 0 && i < acc.len; i++) {
		struct rule_alt *c = alts_add(out);
		*c = acc.items[i];
	}
	if (rc == 0) {
		free(acc.items);
		acc.items = NULL;
		acc.len = 0;
	}
	alts_free(&acc);
	return rc;
}

static int rule_or(struct rule_parser *rp, struct rule_alts *out)
{
	int rc = rule_and(rp, out);
	for (;;) {
		rule_ws(rp);
		if (rc || strncmp(rp->p, "||", 2) != 0)
			break;
		rp->p += 2;
		rc = rule_and(rp, out);
		if (rc == 0 && out->len > MAX_RULE_ALTS) {
			rp->why = "the rule has too many alternatives";
			rc = -EINVAL;
		}
	}
	return rc;
}

/* A router rule label: Host() (and PathPrefix()) give domains. */
static int traefik_rule(struct ctx *ctx, const struct tkv *label, struct dv_compose_service *svc)
{
	struct rule_parser rp = {label->value, NULL, {0}, false, 0};
	struct rule_alts alts = {0};
	bool hostless = false;
	int rc = rule_or(&rp, &alts);

	rule_ws(&rp);
	if (rc == 0 && *rp.p) {
		rp.why = "unexpected text (combine matchers with && and ||)";
		rc = -EINVAL;
	}
	if (rc) {
		rc = fail_pos(ctx, &label->pos, "bad Traefik rule in label %s at offset %zu: %s",
		              label->key, (size_t)(rp.p - label->value), rp.why);
		goto out;
	}
	for (size_t i = 0; i < alts.len && rc == 0; i++) {
		const struct rule_alt *alt = &alts.items[i];
		if (!alt->hosts.len) {
			hostless = true;
			continue;
		}
		for (size_t h = 0; h < alt->hosts.len && rc == 0; h++) {
			for (size_t p = 0; p < (alt->paths.len ? alt->paths.len : 1) && rc == 0; p++) {
				char *text = alt->paths.len ? dv_xasprintf("%s%s%s", alt->hosts.items[h],
				                                           alt->paths.items[p][0] == '/' ? "" : "/",
				                                           alt->paths.items[p])
				                            : dv_xstrdup(alt->hosts.items[h]);
				char *host, *path;
				const char *why;
				if (parse_domain(text, &host, &path, &why))
					rc = add_domain(ctx, &label->pos, svc, NULL, host, path);
				else
					rc = fail_pos(ctx, &label->pos, "bad host '%s' in Traefik rule %s: %s", text,
					              label->key, why);
				free(text);
			}
		}
	}
	if (rc == 0 && rp.ignored.len) {
		struct dv_strbuf b = {0};
		for (size_t i = 0; i < rp.ignored.len; i++) {
			if (i)
				dv_strbuf_puts(&b, ", ");
			dv_strbuf_puts(&b, rp.ignored.items[i]);
		}
		warn_pos(ctx, &label->pos, "Traefik rule %s: davit routes by Host() and PathPrefix() only; "
		                           "ignored: %s", label->key, b.data);
		free(b.data);
	}
	if (rc == 0 && rp.conflict)
		warn_pos(ctx, &label->pos, "Traefik rule %s combines two Host() or two PathPrefix() with &&; "
		                           "davit keeps the first of each", label->key);
	if (rc == 0 && hostless)
		warn_pos(ctx, &label->pos, "Traefik rule %s has a part without Host(): davit routes by host name, "
		                           "so that part is ignored", label->key);
out:
	alts_free(&alts);
	strv_free(&rp.ignored);
	return rc;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int traefik_middlewares(struct ctx *ctx, const struct tkvs *labels, struct dv_compose_service *svc);

/* Domains and the port from traefik.* labels (labels sorted by key). */
static int traefik_labels(struct ctx *ctx, const struct tkvs *labels, struct dv_compose_service *svc,
                          unsigned *port)
{
	struct tref *refs = tkvs_refs(labels);
	int rc = 0;

	for (size_t i = 0; i < labels->len; i++) {
		const struct tkv *l = refs[i].kv;
		if (strcmp(l->key, "traefik.enable") == 0 && strcmp(l->value, "false") == 0)
			goto out;
	}
	for (size_t i = 0; i < labels->len && rc == 0; i++) {
		const struct tkv *l = refs[i].kv;
		if (has_prefix(l->key, "traefik.http.routers.") && has_suffix(l->key, ".rule") &&
		    strlen(l->key) > strlen("traefik.http.routers.") + strlen(".rule")) {
			rc = traefik_rule(ctx, l, svc);
		} else if (has_prefix(l->key, "traefik.http.services.") &&
		           has_suffix(l->key, ".loadbalancer.server.port")) {
			uint64_t v = 0;
			if (!parse_uint(l->value, 65535, &v) || v == 0)
				rc = fail_pos(ctx, &l->pos, "label %s must be a port from 1 to 65535, not '%s'", l->key,
				              l->value);
			else if (*port && *port != v)
				warn_pos(ctx, &l->pos, "label %s: a second Traefik port (%llu); davit uses %u", l->key,
				         (unsigned long long)v, *port);
			else
				*port = (unsigned)v;
		}
	}
	if (rc == 0)
		rc = traefik_middlewares(ctx, labels, svc);
out:
	free(refs);
	return rc;
}

/* ---- volumes and networks ----------------------------------------------- */

static int res_key_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct dv_compose_resource *)elem)->key);
}

static const struct dv_compose_resource *res_find(const struct dv_compose_resource *r, size_t n,
                                                  const char *key)
{
	return n ? bsearch(key, r, n, sizeof *r, res_key_cmp) : NULL;
}

static bool valid_resource_name(const char *s)
{
	return valid_service_name(s);
}

static struct dv_compose_mount *add_mount(struct dv_compose_service *svc)
{
	svc->volumes = push(svc->volumes, svc->n_volumes, sizeof *svc->volumes);
	return &svc->volumes[svc->n_volumes++];
}

static int check_named_volume(struct ctx *ctx, const struct ynode *at, const char *name)
{
	const struct dv_compose_project *p = ctx->project;
	int rc = 0;
	if (!valid_resource_name(name))
		rc = fail(ctx, at, "'%s' is not a volume name nor a host path (start host paths with '/', './' "
		                   "or '~/')", name);
	else if (!res_find(p->volumes, p->n_volumes, name))
		rc = fail(ctx, at, "volume '%s' is not declared: add it under the top-level 'volumes:' key "
		                   "(or write ./%s for a directory beside the compose file)", name, name);
	return rc;
}

static bool is_host_path(const char *s)
{
	return s[0] == '/' || s[0] == '.' || s[0] == '~';
}

/* SOURCE:TARGET[:MODE] or TARGET. */
static int parse_volume_short(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc,
                              const char *spec)
{
	static const char *const modes[] = {"ro", "rw", "z", "Z", "nocopy", "consistent", "cached", "delegated",
	                                    "shared", "slave", "private", "rshared", "rslave", "rprivate", NULL};
	char *work = dv_xstrdup(spec), *parts[3] = {NULL, NULL, NULL};
	size_t n_parts = 0;
	bool read_only = false;
	int rc = 0;

	for (char *p = work, *next; p && n_parts < 4; p = next) {
		next = strchr(p, ':');
		if (next)
			*next++ = '\0';
		if (n_parts == 3) {
			n_parts++;
			break;
		}
		parts[n_parts++] = p;
	}
	if (n_parts > 3 || (n_parts >= 2 && (!*parts[0] || !*parts[1]))) {
		rc = fail(ctx, n, "bad volume '%s': write SOURCE:TARGET[:ro], like data:/var/lib/data or "
		                  "./config:/etc/app:ro", spec);
		goto out;
	}
	if (n_parts == 3) {
		char *opt = parts[2];
		for (char *p = opt, *next; p && rc == 0; p = next) {
			next = strchr(p, ',');
			if (next)
				*next++ = '\0';
			bool known = false;
			for (size_t i = 0; modes[i]; i++)
				known = known || strcmp(p, modes[i]) == 0;
			if (!known)
				rc = fail(ctx, n, "bad volume mode '%s' in '%s': use ro or rw (optionally with z, Z, nocopy)",
				          p, spec);
			if (strcmp(p, "ro") == 0)
				read_only = true;
		}
		if (rc)
			goto out;
	}
	const char *target = n_parts == 1 ? parts[0] : parts[1];
	if (target[0] != '/') {
		rc = fail(ctx, n, "bad volume '%s': the target '%s' must be an absolute path in the container", spec,
		          target);
		goto out;
	}
	if (n_parts > 1 && !is_host_path(parts[0]))
		rc = check_named_volume(ctx, n, parts[0]);
	if (rc)
		goto out;
	struct dv_compose_mount *m = add_mount(svc);
	m->target = path_clean(target);
	m->read_only = read_only;
	if (n_parts == 1) {
		m->type = DV_COMPOSE_MOUNT_VOLUME;
	} else if (is_host_path(parts[0])) {
		m->type = DV_COMPOSE_MOUNT_BIND;
		m->source = path_resolve(ctx, parts[0]);
		m->create_host_path = true;
	} else {
		m->type = DV_COMPOSE_MOUNT_VOLUME;
		m->source = dv_xstrdup(parts[0]);
	}
out:
	free(work);
	return rc;
}

static int parse_volume_long(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	static const char *const unsupported[] = {"consistency", "image", NULL};
	char *type = NULL, *source = NULL, *target = NULL;
	bool read_only = false, create = true;
	uint64_t tmpfs_size = 0;
	int rc = 0;

	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
		if (key_is(k, "type")) {
			rc = set_string(ctx, v, "volumes.type", &type);
			if (rc == 0 && strcmp(type, "volume") != 0 && strcmp(type, "bind") != 0 &&
			    strcmp(type, "tmpfs") != 0)
				rc = fail(ctx, v, "volume type '%s' is not supported: use volume, bind or tmpfs", type);
		} else if (key_is(k, "source")) {
			rc = set_string(ctx, v, "volumes.source", &source);
		} else if (key_is(k, "target")) {
			rc = set_string(ctx, v, "volumes.target", &target);
		} else if (key_is(k, "read_only")) {
			rc = get_bool(ctx, v, "volumes.read_only", &read_only);
		} else if (key_is(k, "bind") && !is_null(v)) {
			rc = want_map(ctx, v, "volumes.bind");
			for (size_t j = 0; j < v->n_pairs && rc == 0; j++) {
				if (key_is(v->pairs[j].key, "create_host_path"))
					rc = get_bool(ctx, v->pairs[j].value, "bind.create_host_path", &create);
				else
					warn_key(ctx, v->pairs[j].key, "volumes.bind",
					         (const char *const[]){"propagation", "selinux", "recursive", NULL});
			}
		} else if (key_is(k, "tmpfs") && !is_null(v)) {
			rc = want_map(ctx, v, "volumes.tmpfs");
			for (size_t j = 0; j < v->n_pairs && rc == 0; j++) {
				if (key_is(v->pairs[j].key, "size"))
					rc = get_size(ctx, v->pairs[j].value, "tmpfs.size", &tmpfs_size);
				else
					warn_key(ctx, v->pairs[j].key, "volumes.tmpfs", (const char *const[]){"mode", NULL});
			}
		} else if (key_is(k, "volume") && !is_null(v)) {
			rc = want_map(ctx, v, "volumes.volume");
			for (size_t j = 0; j < v->n_pairs && rc == 0; j++)
				warn_key(ctx, v->pairs[j].key, "volumes.volume",
				         (const char *const[]){"nocopy", "subpath", NULL});
		} else if (!key_is(k, "bind") && !key_is(k, "tmpfs") && !key_is(k, "volume")) {
			warn_key(ctx, k, "a volume", unsupported);
		}
	}
	if (rc)
		goto out;
	if (!type)
		type = dv_xstrdup(source && is_host_path(source) ? "bind" : "volume");
	if (!target || target[0] != '/') {
		rc = fail(ctx, n, "a volume in long form needs 'target:', an absolute path in the container");
	} else if (strcmp(type, "bind") == 0 && !source) {
		rc = fail(ctx, n, "a bind mount needs 'source:', a host path");
	} else if (strcmp(type, "tmpfs") == 0 && source) {
		rc = fail(ctx, n, "a tmpfs mount has no 'source:'");
	} else if (strcmp(type, "volume") == 0 && source) {
		rc = check_named_volume(ctx, n, source);
	}
	if (rc)
		goto out;
	struct dv_compose_mount *m = add_mount(svc);
	m->target = path_clean(target);
	m->read_only = read_only;
	if (strcmp(type, "bind") == 0) {
		m->type = DV_COMPOSE_MOUNT_BIND;
		m->source = path_resolve(ctx, source);
		m->create_host_path = create;
	} else if (strcmp(type, "tmpfs") == 0) {
		m->type = DV_COMPOSE_MOUNT_TMPFS;
		m->tmpfs_size = tmpfs_size;
	} else {
		m->type = DV_COMPOSE_MOUNT_VOLUME;
		m->source = source ? dv_xstrdup(source) : NULL;
	}
out:
	free(type);
	free(source);
	free(target);
	return rc;
}

static int parse_service_volumes(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	int rc = 0;
	if (!is_null(n))
		rc = want_seq(ctx, n, "volumes");
	for (size_t i = 0; i < n->n_items && rc == 0; i++) {
		const struct ynode *item = n->items[i];
		if (item->kind == Y_MAP) {
			rc = parse_volume_long(ctx, item, svc);
		} else {
			char *spec = NULL;
			rc = get_string(ctx, item, "a volume", &spec);
			if (rc == 0)
				rc = parse_volume_short(ctx, item, svc, spec);
			free(spec);
		}
	}
	return rc;
}

static int add_service_network(struct ctx *ctx, const struct ynode *at, struct dv_compose_service *svc,
                               const char *name, struct dv_compose_strv *aliases)
{
	const struct dv_compose_project *p = ctx->project;
	int rc = 0;
	if (strcmp(name, "default") != 0 && !res_find(p->networks, p->n_networks, name)) {
		rc = fail(ctx, at, "network '%s' is not declared: add it under the top-level 'networks:' key", name);
	} else {
		for (size_t i = 0; i < svc->n_networks; i++)
			if (strcmp(svc->networks[i].name, name) == 0)
				rc = fail(ctx, at, "network '%s' is listed twice", name);
	}
	if (rc == 0) {
		svc->networks = push(svc->networks, svc->n_networks, sizeof *svc->networks);
		svc->networks[svc->n_networks].name = dv_xstrdup(name);
		svc->networks[svc->n_networks].aliases = *aliases;
		svc->n_networks++;
		aliases->items = NULL;
		aliases->len = 0;
	}
	strv_free(aliases);
	return rc;
}

static int parse_service_networks(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	static const char *const unsupported[] = {"driver_opts", "gw_priority", "interface_name",
	                                          "ipv4_address", "ipv6_address", "link_local_ips",
	                                          "mac_address", "priority", NULL};
	int rc = 0;

	if (is_null(n))
		goto out;
	if (n->kind == Y_SEQ) {
		for (size_t i = 0; i < n->n_items && rc == 0; i++) {
			char *name = NULL;
			struct dv_compose_strv none = {0};
			rc = get_string(ctx, n->items[i], "a network", &name);
			if (rc == 0)
				rc = add_service_network(ctx, n->items[i], svc, name, &none);
			free(name);
		}
	} else if (n->kind == Y_MAP) {
		for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
			const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
			struct dv_compose_strv aliases = {0};
			const char *name;
			rc = key_name(ctx, k, "a network", &name);
			if (rc == 0 && !is_null(v))
				rc = want_map(ctx, v, "a service network");
			for (size_t j = 0; rc == 0 && v->kind == Y_MAP && j < v->n_pairs; j++) {
				if (key_is(v->pairs[j].key, "aliases"))
					rc = get_strv(ctx, v->pairs[j].value, "aliases", &aliases);
				else
					warn_key(ctx, v->pairs[j].key, "a service network", unsupported);
			}
			if (rc == 0)
				rc = add_service_network(ctx, k, svc, name, &aliases);
			strv_free(&aliases);
		}
	} else {
		rc = fail(ctx, n, "networks must be a list of names or a mapping, not a string");
	}
out:
	return rc;
}

/* ---- x-davit ------------------------------------------------------------ */

static int davit_domain(struct ctx *ctx, const struct ynode *n, const char *env, struct dv_compose_service *svc)
{
	char *text = NULL, *host, *path;
	const char *why;
	int rc = get_string(ctx, n, "a domain", &text);

	if (rc == 0 && !parse_domain(text, &host, &path, &why))
		rc = fail(ctx, n, "bad domain '%s': %s", text, why);
	else if (rc == 0) {
		struct srcpos pos = node_pos(ctx, n);
		rc = add_domain(ctx, &pos, svc, env ? dv_xstrdup(env) : NULL, host, path);
	}
	free(text);
	return rc;
}

static int davit_domain_list(struct ctx *ctx, const struct ynode *n, const char *env,
                             struct dv_compose_service *svc)
{
	int rc = 0;
	if (n->kind == Y_SCALAR && !is_null(n))
		rc = davit_domain(ctx, n, env, svc);
	else if (n->kind == Y_MAP)
		rc = fail(ctx, n, "x-davit.domains%s%s must be a list of host names", env ? "." : "", env ? env : "");
	for (size_t i = 0; n->kind == Y_SEQ && i < n->n_items && rc == 0; i++)
		rc = davit_domain(ctx, n->items[i], env, svc);
	return rc;
}

static int davit_domains(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	struct keyref *refs = NULL;
	int rc = 0;

	if (n->kind != Y_MAP) {
		rc = davit_domain_list(ctx, n, NULL, svc);
		goto out;
	}
	/* {production: [...], staging: [...]}: by environment name, whatever the file's order */
	refs = dv_xmalloc((n->n_pairs ? n->n_pairs : 1) * sizeof *refs);
	for (size_t i = 0; i < n->n_pairs; i++) {
		refs[i].key = n->pairs[i].key;
		refs[i].idx = i;
	}
	qsort(refs, n->n_pairs, sizeof *refs, keyref_cmp);
	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ypair *pair = &n->pairs[refs[i].idx];
		const char *env;
		rc = key_name(ctx, pair->key, "an environment", &env);
		if (rc == 0)
			rc = davit_domain_list(ctx, pair->value, env, svc);
	}
out:
	free(refs);
	return rc;
}

static int davit_health(struct ctx *ctx, const struct ynode *n, struct dv_compose_davit_health *h)
{
	const struct ynode *path_node = NULL, *cmd_node = NULL;
	int rc = 0;

	h->present = true;
	if (n->kind == Y_SCALAR) {
		path_node = n;
	} else if (n->kind == Y_MAP) {
		for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
			const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
			if (key_is(k, "path"))
				path_node = v;
			else if (key_is(k, "cmd"))
				cmd_node = v;
			else if (key_is(k, "interval"))
				rc = get_duration(ctx, v, "x-davit.health.interval", &h->interval_ms);
			else if (key_is(k, "timeout"))
				rc = get_duration(ctx, v, "x-davit.health.timeout", &h->timeout_ms);
			else if (key_is(k, "start_period"))
				rc = get_duration(ctx, v, "x-davit.health.start_period", &h->start_period_ms);
			else if (key_is(k, "retries"))
				rc = get_unsigned(ctx, v, "x-davit.health.retries", 0, 1000000, &h->retries);
			else
				warn_key(ctx, k, "x-davit.health", NULL);
		}
		if (rc == 0 && !!path_node == !!cmd_node)
			rc = fail(ctx, n, "x-davit.health needs exactly one of 'path:' (an HTTP path) or 'cmd:' "
			                  "(a shell command)");
	} else {
		rc = fail(ctx, n, "x-davit.health must be a path like /health or a mapping {path|cmd, interval, "
		                  "timeout, retries, start_period}, not a list");
	}
	if (rc == 0 && path_node) {
		rc = get_string(ctx, path_node, "x-davit.health path", &h->path);
		if (rc == 0 && (h->path[0] != '/' || strpbrk(h->path, " \t\r\n")))
			rc = fail(ctx, path_node, "x-davit.health path '%s' must start with '/' and hold no spaces "
			                          "(for a command use {cmd: ...})", h->path);
	}
	if (rc == 0 && cmd_node)
		rc = get_string(ctx, cmd_node, "x-davit.health.cmd", &h->cmd);
	return rc;
}

/* x-davit.run: interpolated like everything else, but a variable that
 * expands to nothing is almost always a $PORT meant for the shell. */
static int davit_run(struct ctx *ctx, const struct ynode *n, char **run)
{
	struct dv_compose_strv empty = {0};
	int rc = 0;

	free(*run);
	*run = NULL;
	if (n->kind != Y_SCALAR || is_null(n)) {
		rc = fail(ctx, n, "x-davit.run must be a command line (a string)%s",
		          n->kind == Y_SEQ ? "; join the list into one string" : "");
		goto out;
	}
	struct srcpos pos = node_pos(ctx, n);
	rc = interp_string(ctx, &pos, n->value, n->len, lookup_vars, ctx, &empty, run);
	for (size_t i = 0; i < empty.len && rc == 0; i++) {
		const char *v = empty.items[i];
		warn(ctx, n, "x-davit.run: variable %s is %s, so $%s expands to nothing when the file is "
		             "loaded; write $$%s to let the shell expand it when the service starts",
		     v, lookup_vars(ctx, v) ? "empty" : "not set", v, v);
	}
	if (rc == 0 && (*run)[strspn(*run, " \t\r\n")] == '\0')
		rc = fail(ctx, n, "x-davit.run is empty: give the command that starts the service");
out:
	strv_free(&empty);
	return rc;
}

/* ---- x-davit edge keys ---------------------------------------------------- */
/* Edge policies (proxy/edge.h): every key becomes KEY=VALUE options, each
 * checked by the proxy's own parser so that errors point at the YAML node. */

static int edge_put(struct ctx *ctx, const struct ynode *at, const struct srcpos *pos, char **opts,
                    const char *key, const char *value)
{
	char *err = NULL;
	if (dv_edge_option_check(key, value, &err) != 0) {
		int rc = at ? fail(ctx, at, "x-davit edge setting: %s", err) : fail_pos(ctx, pos, "%s", err);
		free(err);
		return rc;
	}
	dv_edge_options_add(opts, key, value);
	return 0;
}

static int edge_scalar(struct ctx *ctx, const struct ynode *v, const char *what, const char *key, char **opts)
{
	char *s = NULL;
	int rc = get_string(ctx, v, what, &s);
	if (rc == 0) {
		char *err = NULL;
		if (dv_edge_option_check(key, s, &err) != 0) {
			rc = fail(ctx, v, "x-davit %s: %s", what, err);
			free(err);
		} else {
			dv_edge_options_add(opts, key, s);
		}
	}
	free(s);
	return rc;
}

static int edge_list(struct ctx *ctx, const struct ynode *v, const char *what, const char *key, char **opts)
{
	struct dv_compose_strv items = {0};
	int rc = get_strv(ctx, v, what, &items);
	for (size_t i = 0; i < items.len && rc == 0; i++)
		rc = edge_put(ctx, v->kind == Y_SEQ ? v->items[i] : v, NULL, opts, key, items.items[i]);
	strv_free(&items);
	return rc;
}

/* Returns 1 if k is not an edge key, else 0 or -1 (error reported). */
static int davit_edge_key(struct ctx *ctx, const struct ynode *k, const struct ynode *v, char **opts)
{
	static const char *const simple[][2] = {
		{"csp", "csp"}, {"hsts", "hsts"}, {"compress", "compress"}, {"max_body", "maxbody"},
		{"spa", "spa"}, {"index", "index"}, {"realm", "realm"},
	};
	for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
		if (key_is(k, simple[i][0]))
			return edge_scalar(ctx, v, k->value, simple[i][1], opts) ? -1 : 0;
	if (key_is(k, "basic_auth"))
		return edge_list(ctx, v, "x-davit.basic_auth", "auth", opts) ? -1 : 0;
	if (key_is(k, "allow") || key_is(k, "deny"))
		return edge_list(ctx, v, k->value, k->value, opts) ? -1 : 0;
	if (key_is(k, "headers")) {
		if (v->kind != Y_MAP)
			return edge_scalar(ctx, v, "x-davit.headers", "headers", opts) ? -1 : 0;
		static const char *const hkeys[][2] = {
			{"preset", "headers"}, {"csp", "csp"}, {"frame", "frame"}, {"hsts", "hsts"},
			{"hsts_subdomains", "hsts_subdomains"}, {"hsts_preload", "hsts_preload"}, {"referrer", "referrer"},
			{"permissions", "permissions"}, {"nosniff", "nosniff"}, {"xss", "xss"},
		};
		for (size_t i = 0; i < v->n_pairs; i++) {
			const struct ynode *hk = v->pairs[i].key, *hv = v->pairs[i].value;
			int rc = 1;
			for (size_t j = 0; j < sizeof hkeys / sizeof hkeys[0] && rc == 1; j++)
				if (key_is(hk, hkeys[j][0]))
					rc = edge_scalar(ctx, hv, hkeys[j][0], hkeys[j][1], opts);
			if (rc == 1 && key_is(hk, "set")) {
				rc = want_map(ctx, hv, "x-davit.headers.set");
				for (size_t m = 0; rc == 0 && m < hv->n_pairs; m++) {
					char *val = NULL;
					rc = is_null(hv->pairs[m].value) ? 0 : get_string(ctx, hv->pairs[m].value, "a header value", &val);
					if (rc == 0) {
						char *spec = dv_xasprintf("%s:%s", hv->pairs[m].key->value, val ? val : "");
						rc = edge_put(ctx, hv->pairs[m].key, NULL, opts, "header", spec);
						free(spec);
					}
					free(val);
				}
			} else if (rc == 1) {
				warn_key(ctx, hk, "x-davit.headers", NULL);
				rc = 0;
			}
			if (rc)
				return -1;
		}
		return 0;
	}
	if (key_is(k, "rate_limit")) {
		if (v->kind != Y_MAP)
			return edge_scalar(ctx, v, "x-davit.rate_limit", "ratelimit", opts) ? -1 : 0;
		for (size_t i = 0; i < v->n_pairs; i++) {
			const struct ynode *rk = v->pairs[i].key, *rv = v->pairs[i].value;
			int rc = 0;
			if (key_is(rk, "rate"))
				rc = edge_scalar(ctx, rv, "x-davit.rate_limit.rate", "ratelimit", opts);
			else if (key_is(rk, "burst"))
				rc = edge_scalar(ctx, rv, "x-davit.rate_limit.burst", "burst", opts);
			else
				warn_key(ctx, rk, "x-davit.rate_limit", NULL);
			if (rc)
				return -1;
		}
		return 0;
	}
	if (key_is(k, "ban")) {
		if (v->kind != Y_MAP)
			return edge_scalar(ctx, v, "x-davit.ban", "ban", opts) ? -1 : 0;
		char *after = NULL, *within = NULL, *dur = NULL;
		int rc = 0;
		for (size_t i = 0; i < v->n_pairs && rc == 0; i++) {
			const struct ynode *bk = v->pairs[i].key, *bv = v->pairs[i].value;
			if (key_is(bk, "after"))
				rc = set_string(ctx, bv, "x-davit.ban.after", &after);
			else if (key_is(bk, "within"))
				rc = set_string(ctx, bv, "x-davit.ban.within", &within);
			else if (key_is(bk, "for"))
				rc = set_string(ctx, bv, "x-davit.ban.for", &dur);
			else
				warn_key(ctx, bk, "x-davit.ban", NULL);
		}
		if (rc == 0) {
			char *spec = dv_xasprintf("%s/%s/%s", after ? after : "5", within ? within : "1m", dur ? dur : "10m");
			rc = edge_put(ctx, v, NULL, opts, "ban", spec);
			free(spec);
		}
		free(after);
		free(within);
		free(dur);
		return rc ? -1 : 0;
	}
	return 1;
}

static int davit_per_domain(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	int rc = want_map(ctx, n, "x-davit.per_domain");
	struct tkvs out = {0};
	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *hk = n->pairs[i].key, *hv = n->pairs[i].value;
		char *opts = NULL;
		rc = want_map(ctx, hv, "x-davit.per_domain entry");
		for (size_t j = 0; rc == 0 && j < hv->n_pairs; j++) {
			int r = davit_edge_key(ctx, hv->pairs[j].key, hv->pairs[j].value, &opts);
			if (r == 1)
				warn_key(ctx, hv->pairs[j].key, "x-davit.per_domain", NULL);
			rc = r < 0 ? -1 : 0;
		}
		if (rc == 0) {
			struct srcpos pos = node_pos(ctx, hk);
			char *host = dv_xstrdup(hk->value);
			for (char *c = host; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			tkvs_add(&out, host, opts ? opts : dv_xstrdup(""), &pos);
		} else {
			free(opts);
		}
	}
	if (rc == 0) {
		kv_free(svc->edge_domains, svc->n_edge_domains);
		tkvs_to_sorted(&out, &svc->edge_domains, &svc->n_edge_domains);
	}
	tkvs_free(&out);
	return rc;
}

/* Traefik middlewares defined in the service's labels and used by one of its
 * routers (traefik.http.routers.R.middlewares): the ones davit can do. */
static int traefik_middlewares(struct ctx *ctx, const struct tkvs *labels, struct dv_compose_service *svc)
{
	const char *mw_prefix = "traefik.http.middlewares.";
	size_t mpl = strlen(mw_prefix);
	struct dv_compose_strv used = {0};
	int rc = 0;
	for (size_t i = 0; i < labels->len; i++) {
		const struct tkv *l = &labels->items[i];
		if (!has_prefix(l->key, "traefik.http.routers.") || !has_suffix(l->key, ".middlewares"))
			continue;
		char *copy = dv_xstrdup(l->value), *save = NULL;
		for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
			char *at = strchr(t, '@');
			if (at)
				*at = '\0';
			strv_push(&used, dv_xstrdup(t));
		}
		free(copy);
	}
	char *opts = NULL; /* x-davit (already in svc->edge) is appended last: it wins */
	char *period = NULL, *average = NULL;
	const struct tkv *rate_label = NULL;
	for (size_t i = 0; i < labels->len && rc == 0; i++) {
		const struct tkv *l = &labels->items[i];
		if (strncmp(l->key, mw_prefix, mpl) != 0)
			continue;
		const char *name = l->key + mpl, *dot = strchr(name, '.');
		if (!dot)
			continue;
		bool is_used = false;
		for (size_t u = 0; u < used.len && !is_used; u++)
			is_used = strlen(used.items[u]) == (size_t)(dot - name) && !strncmp(used.items[u], name, (size_t)(dot - name));
		if (!is_used) {
			warn_pos(ctx, &l->pos, "label %s: middleware '%.*s' is not used by any router of this service (ignored)",
			         l->key, (int)(dot - name), name);
			continue;
		}
		const char *opt = dot + 1;
		char lower[256];
		size_t ol = strlen(opt) < sizeof lower - 1 ? strlen(opt) : sizeof lower - 1;
		for (size_t c = 0; c < ol; c++)
			lower[c] = (char)tolower((unsigned char)opt[c]);
		lower[ol] = '\0';
		const char *v = l->value;
		bool yes = !strcmp(v, "true") || !strcmp(v, "True");
		if (has_prefix(lower, "headers.customresponseheaders.")) {
			char *spec = dv_xasprintf("%s:%s", opt + strlen("headers.customresponseheaders."), v);
			rc = edge_put(ctx, NULL, &l->pos, &opts, "header", spec);
			free(spec);
		} else if (!strcmp(lower, "headers.stsseconds")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "hsts", strcmp(v, "0") ? v : "off");
		} else if (!strcmp(lower, "headers.stsincludesubdomains")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "hsts_subdomains", yes ? "on" : "off");
		} else if (!strcmp(lower, "headers.stspreload")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "hsts_preload", yes ? "on" : "off");
		} else if (!strcmp(lower, "headers.framedeny")) {
			if (yes)
				rc = edge_put(ctx, NULL, &l->pos, &opts, "frame", "deny");
		} else if (!strcmp(lower, "headers.customframeoptionsvalue")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "frame", v);
		} else if (!strcmp(lower, "headers.contenttypenosniff")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "nosniff", yes ? "on" : "off");
		} else if (!strcmp(lower, "headers.browserxssfilter")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "xss", yes ? "on" : "off");
		} else if (!strcmp(lower, "headers.contentsecuritypolicy")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "csp", v);
		} else if (!strcmp(lower, "headers.referrerpolicy")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "referrer", v);
		} else if (!strcmp(lower, "headers.permissionspolicy")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "permissions", v);
		} else if (!strcmp(lower, "ratelimit.average")) {
			average = dv_xstrdup(v);
			rate_label = l;
		} else if (!strcmp(lower, "ratelimit.period")) {
			period = dv_xstrdup(v);
		} else if (!strcmp(lower, "ratelimit.burst")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "burst", v);
		} else if (!strcmp(lower, "basicauth.users")) {
			char *copy = dv_xstrdup(v), *save = NULL;
			for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save))
				rc = edge_put(ctx, NULL, &l->pos, &opts, "auth", t);
			free(copy);
		} else if (!strcmp(lower, "basicauth.realm")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "realm", v);
		} else if (!strcmp(lower, "ipwhitelist.sourcerange") || !strcmp(lower, "ipallowlist.sourcerange")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "allow", v);
		} else if (!strcmp(lower, "buffering.maxrequestbodybytes")) {
			rc = edge_put(ctx, NULL, &l->pos, &opts, "maxbody", v);
		} else if (!strcmp(lower, "compress") || has_prefix(lower, "compress.")) {
			if (strcmp(v, "false") != 0)
				rc = edge_put(ctx, NULL, &l->pos, &opts, "compress", "on");
		} else {
			warn_pos(ctx, &l->pos, "label %s: this Traefik middleware option is not supported by davit (ignored)",
			         l->key);
		}
	}
	for (size_t u = 0; u < used.len && rc == 0; u++) {
		bool defined = false;
		size_t ul = strlen(used.items[u]);
		for (size_t i = 0; i < labels->len && !defined; i++) {
			const char *k = labels->items[i].key;
			defined = strncmp(k, mw_prefix, mpl) == 0 && strncmp(k + mpl, used.items[u], ul) == 0 && k[mpl + ul] == '.';
		}
		for (size_t i = 0; i < labels->len && !defined; i++) {
			const struct tkv *l = &labels->items[i];
			if (has_prefix(l->key, "traefik.http.routers.") && has_suffix(l->key, ".middlewares") &&
			    strstr(l->value, used.items[u])) {
				warn_pos(ctx, &l->pos, "label %s: middleware '%s' is not defined in this service's labels "
				         "(davit reads middlewares from the service that uses them; ignored)", l->key, used.items[u]);
				break;
			}
		}
	}
	if (rc == 0 && average) {
		/* Traefik: average requests per period (default 1s); burst defaults to 1. */
		char *spec = dv_xasprintf("%s/%s", average, period ? period : "1s");
		rc = edge_put(ctx, NULL, &rate_label->pos, &opts, "ratelimit", spec);
		free(spec);
		if (rc == 0 && !strstr(opts, "burst="))
			dv_edge_options_add(&opts, "burst", "1");
	}
	free(average);
	free(period);
	if (opts && svc->edge) {
		char *joined = dv_xasprintf("%s %s", opts, svc->edge);
		free(opts);
		free(svc->edge);
		svc->edge = joined;
	} else if (opts) {
		svc->edge = opts;
	}
	strv_free(&used);
	return rc;
}

struct svc_nodes {
	const struct ynode *image, *build, *run, *static_dir, *working_dir;
};

/* x-davit.tls: {cert: FILE, key: FILE}, a user-supplied certificate (PEM
 * chain and key; paths relative to the project) for the service's domains. */
static int davit_tls(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc)
{
	int rc = want_map(ctx, n, "x-davit.tls");
	char *cert = NULL, *key = NULL;
	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
		if (key_is(k, "cert") || key_is(k, "key")) {
			char **dst = key_is(k, "cert") ? &cert : &key;
			free(*dst);
			*dst = NULL;
			rc = get_string(ctx, v, key_is(k, "cert") ? "x-davit.tls.cert" : "x-davit.tls.key", dst);
		} else {
			warn_key(ctx, k, "x-davit.tls", NULL);
		}
	}
	if (rc == 0 && (!cert || !key))
		rc = fail(ctx, n, "x-davit.tls needs both cert: (PEM certificate chain) and key: (PEM private key)");
	if (rc == 0) {
		free(svc->tls_cert);
		free(svc->tls_key);
		svc->tls_cert = path_resolve(ctx, cert);
		svc->tls_key = path_resolve(ctx, key);
	}
	free(cert);
	free(key);
	return rc;
}

static int parse_davit(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc,
                       struct svc_nodes *at, unsigned *port)
{
	int rc = 0;
	if (!is_null(n))
		rc = want_map(ctx, n, "x-davit");
	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
		if (key_is(k, "run")) {
			at->run = v;
			rc = davit_run(ctx, v, &svc->run);
		} else if (key_is(k, "port")) {
			rc = get_unsigned(ctx, v, "x-davit.port", 1, 65535, port);
		} else if (key_is(k, "domains")) {
			rc = davit_domains(ctx, v, svc);
		} else if (key_is(k, "health")) {
			rc = davit_health(ctx, v, &svc->health);
		} else if (key_is(k, "tls")) {
			rc = davit_tls(ctx, v, svc);
		} else if (key_is(k, "static")) {
			char *dir = NULL;
			at->static_dir = v;
			rc = get_string(ctx, v, "x-davit.static", &dir);
			if (rc == 0) {
				free(svc->static_dir);
				svc->static_dir = path_resolve(ctx, dir);
			}
			free(dir);
		} else if (key_is(k, "per_domain")) {
			rc = davit_per_domain(ctx, v, svc);
		} else if (key_is(k, "alerts")) {
			/* read by obs (src/obs/config.c) with file:line errors */
		} else {
			int r = davit_edge_key(ctx, k, v, &svc->edge);
			if (r == 1)
				warn_key(ctx, k, "x-davit", NULL);
			rc = r < 0 ? -1 : 0;
		}
	}
	return rc;
}

/* ---- services ----------------------------------------------------------- */

static const char *const service_unsupported[] = {
	"annotations", "attach", "blkio_config", "cap_add", "cap_drop", "cgroup", "cgroup_parent", "configs",
	"container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period",
	"cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec", "develop", "device_cgroup_rules",
	"devices", "dns", "dns_opt", "dns_search", "domainname", "external_links", "extends", "extra_hosts",
	"gpus", "group_add", "hostname", "init", "ipc", "isolation", "links", "logging", "mac_address",
	"mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit", "network_mode", "oom_kill_disable",
	"oom_score_adj", "pid", "platform", "post_start", "pre_stop", "privileged", "profiles",
	"provider", "pull_policy", "read_only", "runtime", "scale", "secrets", "security_opt", "shm_size",
	"stdin_open", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits",
	"use_api_socket", "userns_mode", "uts", "volumes_from", NULL};

static int parse_env_files(struct ctx *ctx, const struct ynode *n, struct dv_compose_service *svc,
                           struct tkvs *out)
{
	const struct ynode *const *items = (const struct ynode *const *)&n;
	size_t n_items = 1;
	int rc = 0;

	if (is_null(n))
		goto out;
	if (n->kind == Y_SEQ) {
		items = (const struct ynode *const *)n->items;
		n_items = n->n_items;
	}
	for (size_t i = 0; i < n_items && rc == 0; i++) {
		const struct ynode *item = items[i], *path_node = item;
		bool required = true;
		char *path = NULL;
		if (item->kind == Y_MAP) {
			path_node = map_get(item, "path");
			if (!path_node) {
				rc = fail(ctx, item, "an env_file entry in long form needs 'path:'");
				break;
			}
			const struct ynode *req = map_get(item, "required");
			if (req)
				rc = get_bool(ctx, req, "env_file.required", &required);
			for (size_t j = 0; j < item->n_pairs && rc == 0; j++)
				if (!key_is(item->pairs[j].key, "path") && !key_is(item->pairs[j].key, "required"))
					warn_key(ctx, item->pairs[j].key, "env_file", (const char *const[]){"format", NULL});
		}
		if (rc == 0)
			rc = get_string(ctx, path_node, "env_file", &path);
		if (rc == 0) {
			char *abs = path_resolve(ctx, path);
			strv_push(&svc->env_files, abs);
			rc = envfile_load(ctx, abs, abs, path_node, false, required, out);
		}
		free(path);
	}
out:
	return rc;
}

/* Sorts depends_on by name, keeping the positions beside them. */
static void dep_pos_sort(struct dv_compose_service *svc, struct svc_aux *aux)
{
	/* insertion sort: depends_on lists are short, and this keeps positions aligned */
	for (size_t i = 1; i < svc->n_depends_on; i++) {
		struct dv_compose_dependency d = svc->depends_on[i];
		struct srcpos pos = aux->dep_pos[i];
		size_t j = i;
		while (j > 0 && strcmp(svc->depends_on[j - 1].service, d.service) > 0) {
			svc->depends_on[j] = svc->depends_on[j - 1];
			aux->dep_pos[j] = aux->dep_pos[j - 1];
			j--;
		}
		svc->depends_on[j] = d;
		aux->dep_pos[j] = pos;
	}
}

static int service_network_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dv_compose_service_network *)a)->name,
	              ((const struct dv_compose_service_network *)b)->name);
}

/* What runs the service, and the fields that depend on it. */
static int service_finish(struct ctx *ctx, const struct ynode *key, struct dv_compose_service *svc,
                          const struct svc_nodes *at)
{
	bool container = svc->image || svc->build.context;
	int rc = 0;

	if (svc->run && svc->static_dir) {
		rc = fail(ctx, at->run, "x-davit.run and x-davit.static exclude each other: a service either runs "
		                        "a command or serves a directory");
	} else if ((svc->run || svc->static_dir) && container) {
		rc = fail(ctx, svc->run ? at->run : at->static_dir,
		          "x-davit.%s makes '%s' a native service, but it also has %s (a container): keep one of them",
		          svc->run ? "run" : "static", svc->name, svc->image ? "an image" : "a build");
	} else if (!svc->run && !svc->static_dir && !container) {
		rc = fail(ctx, key, "service '%s' has nothing to run: give it an image, a build, or x-davit.run "
		                    "(a command) or x-davit.static (a directory)", svc->name);
	}
	if (rc)
		goto out;
	svc->kind = svc->run ? DV_COMPOSE_KIND_NATIVE
	          : svc->static_dir ? DV_COMPOSE_KIND_STATIC : DV_COMPOSE_KIND_CONTAINER;
	if (svc->kind == DV_COMPOSE_KIND_CONTAINER) {
		if (svc->working_dir && svc->working_dir[0] != '/')
			rc = fail(ctx, at->working_dir, "working_dir '%s' must be an absolute path in the container",
			          svc->working_dir);
	} else {
		char *dir = path_resolve(ctx, svc->working_dir ? svc->working_dir : ".");
		free(svc->working_dir);
		svc->working_dir = dir;
	}
	if (rc == 0 && svc->n_networks == 0) {
		svc->networks = push(svc->networks, 0, sizeof *svc->networks);
		svc->networks[0].name = dv_xstrdup("default");
		svc->n_networks = 1;
	}
	if (svc->n_networks > 1)
		qsort(svc->networks, svc->n_networks, sizeof *svc->networks, service_network_cmp);
out:
	return rc;
}

static int parse_service(struct ctx *ctx, const struct ynode *key, const struct ynode *value, size_t idx)
{
	struct dv_compose_service *svc = &ctx->project->services[idx];
	struct svc_aux *aux = &ctx->aux[idx];
	struct tkvs env = {0}, from_files = {0}, labels = {0};
	struct svc_nodes at = {0};
	unsigned davit_port = 0, traefik_port = 0;
	char *where = dv_xasprintf("service '%s'", svc->name);
	int rc = 0;

	svc->deploy.replicas = 1;
	if (is_null(value)) {
		rc = fail(ctx, key, "service '%s' is empty: give it an image, a build, or x-davit.run", svc->name);
		goto out;
	}
	if (value->kind != Y_MAP) {
		rc = fail(ctx, value, "service '%s' must be a mapping (image:, ports:, ...), not %s", svc->name,
		          kind_name(value));
		goto out;
	}
	for (size_t i = 0; i < value->n_pairs && rc == 0; i++) {
		const struct ynode *k = value->pairs[i].key, *v = value->pairs[i].value;
		if (key_is(k, "image")) {
			at.image = v;
			rc = set_string(ctx, v, "image", &svc->image);
		} else if (key_is(k, "build")) {
			at.build = v;
			rc = parse_build(ctx, v, &svc->build);
		} else if (key_is(k, "command")) {
			rc = parse_command(ctx, v, "command", &svc->has_command, &svc->command);
		} else if (key_is(k, "entrypoint")) {
			rc = parse_command(ctx, v, "entrypoint", &svc->has_entrypoint, &svc->entrypoint);
		} else if (key_is(k, "working_dir")) {
			at.working_dir = v;
			rc = set_string(ctx, v, "working_dir", &svc->working_dir);
		} else if (key_is(k, "environment")) {
			rc = parse_kv(ctx, v, "environment variable", true, &env);
		} else if (key_is(k, "env_file")) {
			rc = parse_env_files(ctx, v, svc, &from_files);
		} else if (key_is(k, "ports")) {
			rc = parse_ports(ctx, v, svc);
		} else if (key_is(k, "expose")) {
			rc = parse_expose(ctx, v, svc);
		} else if (key_is(k, "depends_on")) {
			rc = parse_depends_on(ctx, v, svc, aux);
		} else if (key_is(k, "healthcheck")) {
			rc = parse_healthcheck(ctx, v, &svc->healthcheck);
		} else if (key_is(k, "restart")) {
			rc = parse_restart(ctx, v, svc);
		} else if (key_is(k, "deploy")) {
			rc = parse_deploy(ctx, v, &svc->deploy);
		} else if (key_is(k, "labels")) {
			rc = parse_kv(ctx, v, "label", false, &labels);
		} else if (key_is(k, "volumes")) {
			rc = parse_service_volumes(ctx, v, svc);
		} else if (key_is(k, "networks")) {
			rc = parse_service_networks(ctx, v, svc);
		} else if (key_is(k, "x-davit")) {
			rc = parse_davit(ctx, v, svc, &at, &davit_port);
		} else if (key_is(k, "user")) {
			rc = set_string(ctx, v, "user", &svc->user);
		} else if (key_is(k, "stop_signal")) {
			rc = set_string(ctx, v, "stop_signal", &svc->stop_signal);
		} else if (key_is(k, "stop_grace_period")) {
			rc = get_duration(ctx, v, "stop_grace_period", &svc->stop_grace_ms);
		} else if (key_is(k, "pids_limit")) {
			rc = get_unsigned(ctx, v, "pids_limit", 1, 4194304, &svc->pids_limit);
		} else {
			warn_key(ctx, k, where, service_unsupported);
		}
	}
	if (rc)
		goto out;
	rc = traefik_labels(ctx, &labels, svc, &traefik_port);
	if (rc)
		goto out;
	svc->port = davit_port ? davit_port : traefik_port;
	tkvs_to_sorted(&labels, &svc->labels, &svc->n_labels);
	tkvs_move(&from_files, &env); /* environment: wins over env_file */
	tkvs_to_sorted(&from_files, &svc->environment, &svc->n_environment);
	dep_pos_sort(svc, aux);
	rc = service_finish(ctx, key, svc, &at);
out:
	tkvs_free(&env);
	tkvs_free(&from_files);
	tkvs_free(&labels);
	free(where);
	return rc;
}

/* ---- top level ---------------------------------------------------------- */

static int resource_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dv_compose_resource *)a)->key, ((const struct dv_compose_resource *)b)->key);
}

static int parse_resources(struct ctx *ctx, const struct ynode *n, bool network,
                           struct dv_compose_resource **out, size_t *n_out)
{
	static const char *const net_unsupported[] = {"attachable", "driver_opts", "enable_ipv4", "enable_ipv6",
	                                              "ipam", "labels", NULL};
	static const char *const vol_unsupported[] = {"driver_opts", "labels", NULL};
	const char *what = network ? "networks" : "volumes";
	int rc = 0;

	if (is_null(n))
		goto out;
	rc = want_map(ctx, n, what);
	if (rc == 0 && n->n_pairs > MAX_RESOURCES)
		rc = fail(ctx, n, "more than %d %s: this is not a plausible compose file", MAX_RESOURCES, what);
	for (size_t i = 0; i < n->n_pairs && rc == 0; i++) {
		const struct ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
		const char *key;
		char *name = NULL;
		rc = key_name(ctx, k, network ? "a network" : "a volume", &key);
		if (rc == 0 && !valid_resource_name(key))
			rc = fail(ctx, k, "'%s' is not a valid %s name: use letters, digits, '.', '_' and '-'", key,
			          network ? "network" : "volume");
		if (rc)
			break;
		*out = push(*out, *n_out, sizeof **out);
		struct dv_compose_resource *r = &(*out)[(*n_out)++];
		r->key = dv_xstrdup(key);
		if (!is_null(v))
			rc = want_map(ctx, v, network ? "a network" : "a volume");
		for (size_t j = 0; rc == 0 && v->kind == Y_MAP && j < v->n_pairs; j++) {
			const struct ynode *rk = v->pairs[j].key, *rv = v->pairs[j].value;
			if (key_is(rk, "driver")) {
				rc = set_string(ctx, rv, "driver", &r->driver);
			} else if (key_is(rk, "name")) {
				rc = set_string(ctx, rv, "name", &name);
			} else if (key_is(rk, "external") && rv->kind == Y_MAP) {
				const struct ynode *en = map_get(rv, "name");
				warn(ctx, rk, "external: {name: ...} is deprecated: write external: true and name: ...");
				r->external = true;
				if (en)
					rc = set_string(ctx, en, "external.name", &name);
			} else if (key_is(rk, "external")) {
				rc = get_bool(ctx, rv, "external", &r->external);
			} else if (key_is(rk, "internal") && network) {
				rc = get_bool(ctx, rv, "internal", &r->internal);
			} else {
				warn_key(ctx, rk, network ? "a network" : "a volume", network ? net_unsupported : vol_unsupported);
			}
		}
		if (rc == 0)
			r->name = name ? name : r->external ? dv_xstrdup(key)
			                                    : dv_xasprintf("%s_%s", ctx->project->name, key);
		else
			free(name);
	}
	if (rc == 0 && *n_out > 1)
		qsort(*out, *n_out, sizeof **out, resource_cmp);
out:
	return rc;
}

static char *sanitize_project_name(const char *dir)
{
	const char *base = strrchr(dir, '/');
	struct dv_strbuf b = {0};
	base = base ? base + 1 : dir;
	for (const char *c = base; *c; c++) {
		char l = lower(*c);
		if ((l >= 'a' && l <= 'z') || is_digit(l) || ((l == '_' || l == '-') && b.len > 0))
			sbuf_addc(&b, l);
	}
	return dv_strbuf_steal(&b);
}

static int project_name(struct ctx *ctx, const struct ynode *name_node, const struct dv_compose_options *opts)
{
	struct dv_compose_project *p = ctx->project;
	struct srcpos file = {ctx->file, 0, 0};
	int rc = 0;

	if (opts && opts->project_name) {
		p->name = dv_xstrdup(opts->project_name);
		if (!valid_project_name(p->name))
			rc = fail_pos(ctx, &file, "project name '%s' (given by the caller) is invalid: use lower-case "
			                          "letters, digits, '-' and '_', starting with a letter or digit", p->name);
	} else if (name_node) {
		rc = get_string(ctx, name_node, "name", &p->name);
		if (rc == 0 && !valid_project_name(p->name))
			rc = fail(ctx, name_node, "project name '%s' is invalid: use lower-case letters, digits, '-' and "
			                          "'_', starting with a letter or digit", p->name);
	} else {
		p->name = sanitize_project_name(ctx->dir);
		if (!*p->name)
			rc = fail_pos(ctx, &file, "cannot derive a project name from the directory '%s': add a "
			                          "top-level 'name:' key", ctx->dir);
	}
	return rc;
}

/* depends_on must be acyclic; the message names the cycle "a -> b -> a". */
static int check_cycles(struct ctx *ctx)
{
	const struct dv_compose_project *p = ctx->project;
	size_t n = p->n_services, depth = 0;
	unsigned char *color = dv_xcalloc(n ? n : 1, 1); /* 0 new, 1 on the path, 2 done */
	size_t *node = dv_xmalloc((n ? n : 1) * sizeof *node);
	size_t *edge = dv_xmalloc((n ? n : 1) * sizeof *edge);
	int rc = 0;

	for (size_t s = 0; s < n && rc == 0; s++) {
		if (color[s])
			continue;
		color[s] = 1;
		node[0] = s;
		edge[0] = 0;
		depth = 1;
		while (depth && rc == 0) {
			size_t v = node[depth - 1];
			const struct dv_compose_service *sv = &p->services[v];
			if (edge[depth - 1] >= sv->n_depends_on) {
				color[v] = 2;
				depth--;
				continue;
			}
			size_t w = svc_index(p, sv->depends_on[edge[depth - 1]++].service);
			if (color[w] == 0) {
				color[w] = 1;
				node[depth] = w;
				edge[depth] = 0;
				depth++;
			} else if (color[w] == 1) {
				size_t k = 0, len, start = 0;
				while (node[k] != w)
					k++;
				len = depth - k;
				for (size_t i = 1; i < len; i++)
					if (node[k + i] < node[k + start])
						start = i;
				struct dv_strbuf msg = {0};
				for (size_t i = 0; i <= len; i++) {
					if (i)
						dv_strbuf_puts(&msg, " -> ");
					dv_strbuf_puts(&msg, p->services[node[k + (start + i) % len]].name);
				}
				size_t from = node[k + start], to = node[k + (start + 1) % len];
				const struct dv_compose_service *fs = &p->services[from];
				struct srcpos pos = ctx->aux[from].name_pos;
				for (size_t j = 0; j < fs->n_depends_on; j++)
					if (strcmp(fs->depends_on[j].service, p->services[to].name) == 0)
						pos = ctx->aux[from].dep_pos[j];
				rc = fail_pos(ctx, &pos, "depends_on cycle: %s (a service cannot wait for itself; remove one "
				                         "of these dependencies)", msg.data);
				free(msg.data);
			}
		}
	}
	free(color);
	free(node);
	free(edge);
	return rc;
}

static void heap_push(size_t *heap, size_t *len, size_t v)
{
	size_t i = (*len)++;
	heap[i] = v;
	while (i > 0 && heap[(i - 1) / 2] > heap[i]) {
		size_t parent = (i - 1) / 2, tmp = heap[parent];
		heap[parent] = heap[i];
		heap[i] = tmp;
		i = parent;
	}
}

static size_t heap_pop(size_t *heap, size_t *len)
{
	size_t top = heap[0], i = 0;
	heap[0] = heap[--*len];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < *len && heap[l] < heap[m])
			m = l;
		if (r < *len && heap[r] < heap[m])
			m = r;
		if (m == i)
			break;
		size_t tmp = heap[m];
		heap[m] = heap[i];
		heap[i] = tmp;
		i = m;
	}
	return top;
}

/* Kahn's algorithm; among ready services the smallest name first (services
 * are sorted by name, so by index). The graph is acyclic here. */
static void start_order(struct dv_compose_project *p)
{
	size_t n = p->n_services, m = 0, heap_len = 0, out = 0;
	size_t *indeg = dv_xcalloc(n + 1, sizeof *indeg);
	size_t *first = dv_xcalloc(n + 1, sizeof *first);
	size_t *heap = dv_xmalloc((n + 1) * sizeof *heap);
	size_t *dependents, *fill;

	for (size_t i = 0; i < n; i++)
		m += p->services[i].n_depends_on;
	dependents = dv_xmalloc((m + 1) * sizeof *dependents);
	fill = dv_xcalloc(n + 1, sizeof *fill);
	for (size_t i = 0; i < n; i++) {
		indeg[i] = p->services[i].n_depends_on;
		for (size_t j = 0; j < p->services[i].n_depends_on; j++)
			first[svc_index(p, p->services[i].depends_on[j].service) + 1]++;
	}
	for (size_t i = 0; i < n; i++)
		first[i + 1] += first[i];
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < p->services[i].n_depends_on; j++) {
			size_t d = svc_index(p, p->services[i].depends_on[j].service);
			dependents[first[d] + fill[d]++] = i;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (indeg[i] == 0)
			heap_push(heap, &heap_len, i);
	p->start_order = dv_xmalloc((n + 1) * sizeof *p->start_order);
	while (heap_len) {
		size_t v = heap_pop(heap, &heap_len);
		p->start_order[out++] = v;
		for (size_t k = first[v]; k < first[v + 1]; k++)
			if (--indeg[dependents[k]] == 0)
				heap_push(heap, &heap_len, dependents[k]);
	}
	free(indeg);
	free(first);
	free(heap);
	free(dependents);
	free(fill);
}

/* The implicit "default" network, when a service uses it. */
static void default_network(struct dv_compose_project *p)
{
	bool used = false;
	for (size_t i = 0; i < p->n_services && !used; i++)
		for (size_t j = 0; j < p->services[i].n_networks && !used; j++)
			used = strcmp(p->services[i].networks[j].name, "default") == 0;
	if (used && !res_find(p->networks, p->n_networks, "default")) {
		p->networks = push(p->networks, p->n_networks, sizeof *p->networks);
		struct dv_compose_resource *r = &p->networks[p->n_networks++];
		r->key = dv_xstrdup("default");
		r->name = dv_xasprintf("%s_default", p->name);
		qsort(p->networks, p->n_networks, sizeof *p->networks, resource_cmp);
	}
}

static int parse_services(struct ctx *ctx, const struct ynode *services)
{
	struct dv_compose_project *p = ctx->project;
	struct keyref *refs = NULL;
	size_t *rank = NULL, n;
	int rc = 0;

	if (services->kind == Y_MAP && services->n_pairs == 0) {
		rc = fail(ctx, services, "'services' is empty: add at least one service");
		goto out;
	}
	rc = want_map(ctx, services, "services");
	if (rc)
		goto out;
	n = services->n_pairs;
	if (n > MAX_SERVICES) {
		rc = fail(ctx, services, "more than %d services: this is not a plausible compose file", MAX_SERVICES);
		goto out;
	}
	refs = dv_xmalloc(n * sizeof *refs);
	rank = dv_xmalloc(n * sizeof *rank);
	for (size_t i = 0; i < n; i++) {
		const char *name;
		refs[i].key = services->pairs[i].key;
		refs[i].idx = i;
		rc = key_name(ctx, refs[i].key, "a service", &name);
		if (rc == 0 && !valid_service_name(name))
			rc = fail(ctx, refs[i].key, "'%s' is not a valid service name: use letters, digits, '.', '_' and "
			                            "'-', starting with a letter or digit", name);
		if (rc)
			goto out;
	}
	qsort(refs, n, sizeof *refs, keyref_cmp);
	p->services = dv_xcalloc(n, sizeof *p->services);
	ctx->aux = dv_xcalloc(n, sizeof *ctx->aux);
	p->n_services = n;
	for (size_t i = 0; i < n; i++) {
		rank[refs[i].idx] = i;
		p->services[i].name = dv_xstrdup(refs[i].key->value);
		ctx->aux[i].name_pos = node_pos(ctx, refs[i].key);
	}
	/* In file order, so that the first error is the first in the file. */
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = parse_service(ctx, services->pairs[i].key, services->pairs[i].value, rank[i]);
	if (rc == 0)
		rc = check_cycles(ctx);
	if (rc == 0) {
		start_order(p);
		default_network(p);
	}
out:
	free(refs);
	free(rank);
	return rc;
}

static int parse_project(struct ctx *ctx, const struct ynode *root, const struct dv_compose_options *opts)
{
	static const char *const unsupported[] = {"configs", "secrets", "include", "models", NULL};
	const struct ynode *services = NULL, *networks = NULL, *volumes = NULL, *name = NULL;
	struct srcpos start = {ctx->file, 1, 1};
	int rc = 0;

	if (!root || root->kind != Y_MAP) {
		if (root)
			rc = fail(ctx, root, "a compose file must be a mapping with a 'services:' key, not %s",
			          is_null(root) ? "an empty document" : kind_name(root));
		else
			rc = fail_pos(ctx, &start, "the file is empty: a compose file needs a 'services:' key");
		goto out;
	}
	for (size_t i = 0; i < root->n_pairs; i++) {
		const struct ynode *k = root->pairs[i].key, *v = root->pairs[i].value;
		if (key_is(k, "services"))
			services = v;
		else if (key_is(k, "networks"))
			networks = v;
		else if (key_is(k, "volumes"))
			volumes = v;
		else if (key_is(k, "name"))
			name = v;
		else if (key_is(k, "version"))
			warn(ctx, k, "'version' is obsolete in the Compose specification (ignored; you can remove it)");
		else
			warn_key(ctx, k, "the top level", unsupported);
	}
	rc = project_name(ctx, name, opts);
	if (rc == 0 && networks)
		rc = parse_resources(ctx, networks, true, &ctx->project->networks, &ctx->project->n_networks);
	if (rc == 0 && volumes)
		rc = parse_resources(ctx, volumes, false, &ctx->project->volumes, &ctx->project->n_volumes);
	if (rc)
		goto out;
	if (!services || is_null(services)) {
		rc = fail_pos(ctx, &start, "no 'services:' key: a compose file lists its services under 'services:'");
		goto out;
	}
	rc = parse_services(ctx, services);
out:
	return rc;
}

/* ---- load / free -------------------------------------------------------- */

static void service_dispose(struct dv_compose_service *s)
{
	free(s->name);
	free(s->image);
	free(s->build.context);
	free(s->build.dockerfile);
	free(s->build.target);
	kv_free(s->build.args, s->build.n_args);
	strv_free(&s->command);
	strv_free(&s->entrypoint);
	free(s->working_dir);
	free(s->user);
	free(s->stop_signal);
	strv_free(&s->env_files);
	kv_free(s->environment, s->n_environment);
	for (size_t i = 0; i < s->n_ports; i++) {
		free(s->ports[i].host_ip);
		free(s->ports[i].protocol);
		free(s->ports[i].mode);
	}
	free(s->ports);
	strv_free(&s->expose);
	for (size_t i = 0; i < s->n_depends_on; i++)
		free(s->depends_on[i].service);
	free(s->depends_on);
	strv_free(&s->healthcheck.test);
	kv_free(s->labels, s->n_labels);
	free(s->edge);
	kv_free(s->edge_domains, s->n_edge_domains);
	for (size_t i = 0; i < s->n_volumes; i++) {
		free(s->volumes[i].source);
		free(s->volumes[i].target);
	}
	free(s->volumes);
	for (size_t i = 0; i < s->n_networks; i++) {
		free(s->networks[i].name);
		strv_free(&s->networks[i].aliases);
	}
	free(s->networks);
	free(s->run);
	free(s->static_dir);
	free(s->tls_cert);
	free(s->tls_key);
	for (size_t i = 0; i < s->n_domains; i++) {
		free(s->domains[i].environment);
		free(s->domains[i].host);
		free(s->domains[i].path);
	}
	free(s->domains);
	free(s->health.path);
	free(s->health.cmd);
}

static void resources_free(struct dv_compose_resource *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(r[i].key);
		free(r[i].name);
		free(r[i].driver);
	}
	free(r);
}

void dv_compose_project_free(struct dv_compose_project *project)
{
	if (!project)
		goto out;
	free(project->name);
	free(project->file);
	free(project->dir);
	for (size_t i = 0; i < project->n_services; i++)
		service_dispose(&project->services[i]);
	free(project->services);
	free(project->start_order);
	resources_free(project->networks, project->n_networks);
	resources_free(project->volumes, project->n_volumes);
	for (size_t i = 0; i < project->n_warnings; i++)
		free(project->warnings[i]);
	free(project->warnings);
	free(project);
out:
	return;
}

static int warning_cmp(const void *pa, const void *pb)
{
	const struct warning *a = pa, *b = pb;
	int c = strcmp(a->file, b->file);
	if (c == 0)
		c = a->line < b->line ? -1 : (a->line > b->line);
	if (c == 0)
		c = a->column < b->column ? -1 : (a->column > b->column);
	if (c == 0)
		c = a->seq < b->seq ? -1 : (a->seq > b->seq);
	return c;
}

/* The directory part of path, made absolute (the caller frees it). */
static char *abs_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? dv_xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : dv_xstrdup(".");
	char *abs = realpath(dir, NULL);
	free(dir);
	return abs;
}

/* Everything after the compose text and its directory are known: the .env
 * file, the tree, the model. env_label names the default .env in messages. */
static int load_text(struct ctx *ctx, const char *text, size_t len, const char *env_label,
                     const struct dv_compose_options *opts)
{
	struct tkvs dotenv = {0};
	struct ynode *root = NULL;
	char *env_path = NULL;
	int rc = 0;

	ctx->project->file = dv_xstrdup(ctx->file);
	ctx->project->dir = dv_xstrdup(ctx->dir);
	vars_init(ctx);
	if (opts && opts->env_file) {
		if (*opts->env_file) {
			env_path = dv_xstrdup(opts->env_file);
			env_label = opts->env_file;
		}
	} else {
		env_path = dv_xasprintf("%s/.env", ctx->dir);
	}
	if (env_path) {
		rc = envfile_load(ctx, env_path, env_label, NULL, true, opts && opts->env_file, &dotenv);
		if (rc)
			goto out;
		vars_add_dotenv(ctx, &dotenv);
	}
	rc = yaml_build(ctx, (const unsigned char *)text, len, &root);
	if (rc == 0)
		rc = parse_project(ctx, root, opts);
	if (rc)
		goto out;
	if (ctx->n_warnings > 1)
		qsort(ctx->warnings, ctx->n_warnings, sizeof *ctx->warnings, warning_cmp);
	if (ctx->dropped_warnings) {
		struct srcpos file = {ctx->file, 0, 0};
		size_t dropped = ctx->dropped_warnings;
		ctx->n_warnings--; /* make room for the note, after the sorted ones */
		free(ctx->warnings[ctx->n_warnings].msg);
		free(ctx->warnings[ctx->n_warnings].file);
		warn_pos(ctx, &file, "%zu more warnings not shown", dropped + 1);
	}
	ctx->project->warnings = dv_xcalloc(ctx->n_warnings + 1, sizeof *ctx->project->warnings);
	for (size_t i = 0; i < ctx->n_warnings; i++) {
		ctx->project->warnings[i] = ctx->warnings[i].msg;
		ctx->warnings[i].msg = NULL;
	}
	ctx->project->n_warnings = ctx->n_warnings;
out:
	tkvs_free(&dotenv);
	free(env_path);
	return rc;
}

/* Hands the project (rc == 0) or the error (rc != 0) to the caller and frees
 * the rest. */
static int load_finish(struct ctx *ctx, int rc, struct dv_compose_project **out, char **err)
{
	if (rc && !ctx->err)
		ctx->err = dv_xasprintf("%s: cannot load (error %d)", ctx->file, rc);
	if (err && rc) {
		*err = ctx->err;
		ctx->err = NULL;
	}
	free(ctx->err);
	for (size_t i = 0; ctx->aux && i < ctx->project->n_services; i++)
		free(ctx->aux[i].dep_pos);
	free(ctx->aux);
	if (rc == 0)
		*out = ctx->project;
	else
		dv_compose_project_free(ctx->project);
	for (size_t i = 0; i < ctx->n_warnings; i++) {
		free(ctx->warnings[i].msg);
		free(ctx->warnings[i].file);
	}
	free(ctx->warnings);
	kv_free(ctx->vars, ctx->n_vars);
	ytree_free(ctx);
	free(ctx->dir);
	return rc;
}

static void load_start(struct ctx *ctx, const char *name, const struct dv_compose_options *opts,
                       struct dv_compose_project **out, char **err)
{
	memset(ctx, 0, sizeof *ctx);
	*out = NULL;
	if (err)
		*err = NULL;
	ctx->file = name;
	ctx->proc_env = opts && opts->environ ? opts->environ : (const char *const *)environ;
	ctx->project = dv_xcalloc(1, sizeof *ctx->project);
}

int dv_compose_load(const char *path, const struct dv_compose_options *opts, struct dv_compose_project **out,
                    char **err)
{
	struct ctx ctx;
	struct srcpos file = {path, 0, 0};
	char *buf = NULL, *env_label = NULL;
	const char *slash = strrchr(path, '/');
	size_t len = 0;
	int rc;

	load_start(&ctx, path, opts, out, err);
	rc = read_file(path, &buf, &len);
	if (rc) {
		fail_pos(&ctx, &file, "cannot read the compose file: %s", read_error(rc));
		goto out;
	}
	ctx.dir = abs_dir(path);
	if (!ctx.dir) {
		rc = -errno;
		fail_pos(&ctx, &file, "cannot resolve the compose file's directory: %s", strerror(-rc));
		goto out;
	}
	env_label = slash ? dv_xasprintf("%.*s/.env", (int)(slash - path), path) : dv_xstrdup(".env");
	rc = load_text(&ctx, buf, len, env_label, opts);
out:
	free(buf);
	free(env_label);
	return load_finish(&ctx, rc, out, err);
}

int dv_compose_load_buffer(const char *name, const char *text, size_t len, const char *dir,
                           const struct dv_compose_options *opts, struct dv_compose_project **out, char **err)
{
	struct ctx ctx;
	struct srcpos file = {name, 0, 0};
	char *env_label = NULL;
	int rc = 0;

	load_start(&ctx, name, opts, out, err);
	if (len > MAX_FILE_BYTES) {
		rc = -EFBIG;
		fail_pos(&ctx, &file, "the compose file is larger than %u bytes", MAX_FILE_BYTES);
		goto out;
	}
	ctx.dir = realpath(dir, NULL);
	if (!ctx.dir) {
		rc = -errno;
		fail_pos(&ctx, &file, "cannot resolve the project directory '%s': %s", dir, strerror(-rc));
		goto out;
	}
	env_label = dv_xasprintf("%s/.env", dir);
	rc = load_text(&ctx, text, len, env_label, opts);
out:
	free(env_label);
	return load_finish(&ctx, rc, out, err);
}

/* ---- lookups ------------------------------------------------------------ */

const struct dv_compose_service *dv_compose_project_service(const struct dv_compose_project *project,
                                                            const char *name)
{
	size_t i = svc_index(project, name);
	return i == SIZE_MAX ? NULL : &project->services[i];
}

const struct dv_compose_resource *dv_compose_project_network(const struct dv_compose_project *project,
                                                             const char *key)
{
	return res_find(project->networks, project->n_networks, key);
}

const struct dv_compose_resource *dv_compose_project_volume(const struct dv_compose_project *project,
                                                            const char *key)
{
	return res_find(project->volumes, project->n_volumes, key);
}

const char *dv_compose_service_env(const struct dv_compose_service *service, const char *name)
{
	return kv_find(service->environment, service->n_environment, name);
}

const char *dv_compose_service_label(const struct dv_compose_service *service, const char *key)
{
	return kv_find(service->labels, service->n_labels, key);
}

bool dv_compose_service_depends_on(const struct dv_compose_service *service, const char *name)
{
	bool found = false;
	for (size_t i = 0; i < service->n_depends_on && !found; i++)
		found = strcmp(service->depends_on[i].service, name) == 0;
	return found;
}

bool dv_compose_domain_applies(const struct dv_compose_domain *domain, const char *environment)
{
	return !domain->environment || (environment && strcmp(domain->environment, environment) == 0);
}

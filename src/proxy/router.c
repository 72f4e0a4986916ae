#include "proxy/router.h"

#include "metrics/metrics.h"

#include "core/alloc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HOST 255

/* ---- pools ---- */

struct dv_upstream_pool *dv_upstream_pool_new(const char *name, enum dv_balance balance)
{
	struct dv_upstream_pool *pool = dv_xcalloc(1, sizeof *pool);
	atomic_init(&pool->refs, 1);
	pool->name = dv_xstrdup(name);
	pool->balance = balance;
	/* Route specs are "HOST[/PATH]=ADDRS": count by the route, not its replicas. */
	char slot[256];
	snprintf(slot, sizeof slot, "%.*s", (int)strcspn(name, "="), name);
	pool->metrics_slot = dv_metrics_slot(slot);
	return pool;
}

void dv_upstream_pool_add(struct dv_upstream_pool *pool, const struct dv_sockaddr *addr)
{
	pool->backends = dv_xrealloc(pool->backends, (pool->nbackends + 1) * sizeof *pool->backends);
	struct dv_backend *b = &pool->backends[pool->nbackends++];
	memset(b, 0, sizeof *b);
	b->addr = *addr;
	dv_sockaddr_format(addr, b->label, sizeof b->label);
	atomic_init(&b->healthy, true);
}

void dv_upstream_pool_ref(struct dv_upstream_pool *pool)
{
	atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
}

void dv_upstream_pool_unref(struct dv_upstream_pool *pool)
{
	if (!pool)
		return;
	if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(pool->backends);
	free(pool->name);
	free(pool);
}

bool dv_upstream_pool_same_backends(const struct dv_upstream_pool *a, const struct dv_upstream_pool *b)
{
	if (a->nbackends != b->nbackends || a->balance != b->balance)
		return false;
	for (size_t i = 0; i < a->nbackends; i++) {
		bool found = false;
		for (size_t j = 0; j < b->nbackends && !found; j++)
			found = dv_sockaddr_equal(&a->backends[i].addr, &b->backends[j].addr);
		if (!found)
			return false;
	}
	return true;
}

void dv_upstream_pool_drain(struct dv_upstream_pool *pool, uint64_t deadline_ms)
{
	atomic_store(&pool->drain_deadline, deadline_ms);
	atomic_store(&pool->draining, true);
}

static bool backend_usable(struct dv_backend *b, uint64_t now_ms)
{
	return atomic_load_explicit(&b->healthy, memory_order_relaxed) &&
	       atomic_load_explicit(&b->ejected_until, memory_order_relaxed) <= now_ms;
}

uint64_t dv_upstream_pool_bit(const struct dv_upstream_pool *pool, const struct dv_backend *backend)
{
	return 1ull << ((size_t)(backend - pool->backends) % 64);
}

struct dv_backend *dv_upstream_pool_pick(struct dv_upstream_pool *pool, uint64_t now_ms, uint64_t tried)
{
	size_t n = pool->nbackends;
	if (n == 0)
		return NULL;
	unsigned start = atomic_fetch_add_explicit(&pool->rr_next, 1, memory_order_relaxed);
	struct dv_backend *best = NULL;
	int best_load = 0;
	/* Two passes: usable backends first; if none, any healthy one that is
	 * merely ejected (better to try than to fail without trying). */
	for (int pass = 0; pass < 2 && !best; pass++) {
		for (size_t k = 0; k < n; k++) {
			struct dv_backend *b = &pool->backends[(start + k) % n];
			if (tried & dv_upstream_pool_bit(pool, b))
				continue;
			if (pass == 0 ? !backend_usable(b, now_ms) : !atomic_load(&b->healthy))
				continue;
			if (pool->balance == DV_BALANCE_ROUND_ROBIN)
				return b;
			int load = atomic_load_explicit(&b->inflight, memory_order_relaxed);
			if (!best || load < best_load) {
				best = b;
				best_load = load;
			}
		}
	}
	return best;
}

void dv_backend_connect_failed(struct dv_backend *b, uint64_t now_ms, int eject_after,
                               uint64_t eject_for_ms)
{
	int fails = atomic_fetch_add(&b->connect_failures, 1) + 1;
	if (eject_after > 0 && fails >= eject_after)
		atomic_store(&b->ejected_until, now_ms + eject_for_ms);
}

void dv_backend_connect_succeeded(struct dv_backend *b)
{
	if (atomic_load_explicit(&b->connect_failures, memory_order_relaxed) != 0)
		atomic_store(&b->connect_failures, 0);
	if (atomic_load_explicit(&b->ejected_until, memory_order_relaxed) != 0)
		atomic_store(&b->ejected_until, 0);
}

/* ---- table ---- */

struct path_route {
	char *prefix; /* owned, starts with '/', no trailing '/' except for "/" itself */
	size_t prefix_len;
	struct dv_upstream_pool *pool; /* one reference held; NULL for a static route */
	struct dv_edge_policy *policy; /* one reference held, or NULL */
};

enum host_kind { HOST_EXACT, HOST_WILDCARD, HOST_ANY };

struct host_entry {
	char *pattern; /* owned, lower-case: "a.b.c", ".b.c" for "*.b.c", "" for "*" */
	size_t pattern_len;
	enum host_kind kind;
	struct path_route *paths; /* sorted by prefix_len, longest first */
	size_t npaths;
};

struct dv_route_table {
	struct host_entry *hosts; /* all entries */
	size_t nhosts;
	/* exact hosts: open-addressing hash of indexes into hosts[] (+1; 0 = empty) */
	size_t *exact_slots;
	size_t exact_cap;
	/* wildcard entries (indexes), longest suffix first; then the "*" entry */
	size_t *wildcards;
	size_t nwildcards;
	long any_index; /* -1 if no "*" route */
	size_t nroutes;
	char *edge_defaults; /* owned, or NULL */
};

struct dv_route_table *dv_route_table_new(void)
{
	struct dv_route_table *t = dv_xcalloc(1, sizeof *t);
	t->any_index = -1;
	return t;
}

void dv_route_table_free(struct dv_route_table *table)
{
	if (!table)
		return;
	for (size_t i = 0; i < table->nhosts; i++) {
		struct host_entry *h = &table->hosts[i];
		for (size_t j = 0; j < h->npaths; j++) {
			free(h->paths[j].prefix);
			dv_upstream_pool_unref(h->paths[j].pool);
			dv_edge_policy_unref(h->paths[j].policy);
		}
		free(h->paths);
		free(h->pattern);
	}
	free(table->hosts);
	free(table->exact_slots);
	free(table->wildcards);
	free(table->edge_defaults);
	free(table);
}

void dv_route_table_set_edge_defaults(struct dv_route_table *table, const char *options)
{
	free(table->edge_defaults);
	table->edge_defaults = options && *options ? dv_xstrdup(options) : NULL;
}

size_t dv_route_table_count(const struct dv_route_table *table)
{
	return table->nroutes;
}

static uint64_t hash_host(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void exact_rehash(struct dv_route_table *t)
{
	size_t cap = t->exact_cap ? t->exact_cap * 2 : 16;
	size_t *slots = dv_xcalloc(cap, sizeof *slots);
	for (size_t i = 0; i < t->nhosts; i++) {
		if (t->hosts[i].kind != HOST_EXACT)
			continue;
		size_t s = hash_host(t->hosts[i].pattern, t->hosts[i].pattern_len) & (cap - 1);
		while (slots[s])
			s = (s + 1) & (cap - 1);
		slots[s] = i + 1;
	}
	free(t->exact_slots);
	t->exact_slots = slots;
	t->exact_cap = cap;
}

static long exact_find(const struct dv_route_table *t, const char *host, size_t len)
{
	if (!t->exact_cap)
		return -1;
	size_t s = hash_host(host, len) & (t->exact_cap - 1);
	while (t->exact_slots[s]) {
		const struct host_entry *h = &t->hosts[t->exact_slots[s] - 1];
		if (h->pattern_len == len && memcmp(h->pattern, host, len) == 0)
			return (long)(t->exact_slots[s] - 1);
		s = (s + 1) & (t->exact_cap - 1);
	}
	return -1;
}

static bool valid_host_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

/* Normalises a host pattern into buf (lower-case, wildcard as ".suffix"). */
static int parse_host_pattern(const char *host, char *buf, size_t *len, enum host_kind *kind, char **err)
{
	size_t n = strlen(host);
	if (n == 1 && host[0] == '*') {
		*kind = HOST_ANY;
		*len = 0;
		buf[0] = '\0';
		return 0;
	}
	const char *name = host;
	*kind = HOST_EXACT;
	if (n > 2 && host[0] == '*' && host[1] == '.') {
		*kind = HOST_WILDCARD;
		name = host + 1; /* keep the leading dot */
		n--;
	}
	if (n == 0 || n > MAX_HOST) {
		*err = dv_xasprintf("bad host '%s' (expected a name, *.domain or *)", host);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (!valid_host_char(name[i])) {
			*err = dv_xasprintf("bad host '%s': character '%c' is not allowed (expected a name, *.domain or *)",
			                    host, name[i]);
			return -1;
		}
		buf[i] = (char)tolower((unsigned char)name[i]);
	}
	buf[n] = '\0';
	*len = n;
	return 0;
}

int dv_route_table_add(struct dv_route_table *table, const char *host, const char *path,
                       struct dv_upstream_pool *pool, char **err)
{
	return dv_route_table_add_policy(table, host, path, pool, NULL, err);
}

int dv_route_table_add_policy(struct dv_route_table *table, const char *host, const char *path,
                              struct dv_upstream_pool *pool, struct dv_edge_policy *policy, char **err)
{
	char pattern[MAX_HOST + 2];
	size_t plen;
	enum host_kind kind;
	if (!pool && !(policy && policy->static_root)) {
		*err = dv_xasprintf("route %s%s has neither replicas nor a static directory", host, path ? path : "");
		return -1;
	}
	if (parse_host_pattern(host, pattern, &plen, &kind, err) != 0)
		return -1;
	if (!path || !*path)
		path = "/";
	if (path[0] != '/') {
		*err = dv_xasprintf("bad path '%s' (must start with /)", path);
		return -1;
	}
	for (const char *p = path; *p; p++) {
		if ((unsigned char)*p <= ' ' || *p == '?' || *p == '#' || (unsigned char)*p >= 0x7f) {
			*err = dv_xasprintf("bad path '%s' (no spaces, '?' or '#')", path);
			return -1;
		}
	}
	size_t path_len = strlen(path);
	while (path_len > 1 && path[path_len - 1] == '/')
		path_len--; /* "/api/" matches like "/api" */

	struct host_entry *h = NULL;
	for (size_t i = 0; i < table->nhosts; i++) {
		if (table->hosts[i].kind == kind && table->hosts[i].pattern_len == plen &&
		    memcmp(table->hosts[i].pattern, pattern, plen) == 0) {
			h = &table->hosts[i];
			break;
		}
	}
	if (!h) {
		table->hosts = dv_xrealloc(table->hosts, (table->nhosts + 1) * sizeof *table->hosts);
		h = &table->hosts[table->nhosts++];
		memset(h, 0, sizeof *h);
		h->pattern = dv_xstrndup(pattern, plen);
		h->pattern_len = plen;
		h->kind = kind;
		size_t idx = table->nhosts - 1;
		if (kind == HOST_EXACT) {
			if ((table->nhosts + 1) * 2 > table->exact_cap)
				exact_rehash(table);
			else {
				size_t s = hash_host(pattern, plen) & (table->exact_cap - 1);
				while (table->exact_slots[s])
					s = (s + 1) & (table->exact_cap - 1);
				table->exact_slots[s] = idx + 1;
			}
		} else if (kind == HOST_WILDCARD) {
			table->wildcards = dv_xrealloc(table->wildcards, (table->nwildcards + 1) * sizeof(size_t));
			size_t k = table->nwildcards++;
			while (k > 0 && table->hosts[table->wildcards[k - 1]].pattern_len < plen) {
				table->wildcards[k] = table->wildcards[k - 1];
				k--;
			}
			table->wildcards[k] = idx;
		} else {
			table->any_index = (long)idx;
		}
	}
	for (size_t j = 0; j < h->npaths; j++) {
		if (h->paths[j].prefix_len == path_len && memcmp(h->paths[j].prefix, path, path_len) == 0) {
			*err = dv_xasprintf("duplicate route %s%.*s", host, (int)path_len, path);
			return -1;
		}
	}
	h->paths = dv_xrealloc(h->paths, (h->npaths + 1) * sizeof *h->paths);
	size_t k = h->npaths++;
	while (k > 0 && h->paths[k - 1].prefix_len < path_len) {
		h->paths[k] = h->paths[k - 1];
		k--;
	}
	h->paths[k].prefix = dv_xstrndup(path, path_len);
	h->paths[k].prefix_len = path_len;
	h->paths[k].pool = pool;
	h->paths[k].policy = policy;
	if (pool)
		dv_upstream_pool_ref(pool);
	if (policy)
		dv_edge_policy_ref(policy);
	table->nroutes++;
	return 0;
}

struct find_pool {
	struct dv_upstream_pool *want;
	struct dv_upstream_pool *found;
};

static void find_same_pool(struct dv_upstream_pool *pool, void *arg)
{
	struct find_pool *f = arg;
	if (!f->found && dv_upstream_pool_same_backends(pool, f->want))
		f->found = pool;
}

/* Splits "ADDRS [KEY=VALUE...]": options start at the first blank-preceded
 * word holding '=' (addresses never do). Returns the options or NULL. */
static char *split_options(char *addrs)
{
	for (char *c = addrs; *c; c++) {
		if (*c != ' ' && *c != '\t')
			continue;
		char *w = c;
		while (*w == ' ' || *w == '\t')
			w++;
		size_t wl = strcspn(w, " \t,");
		if (memchr(w, '=', wl)) {
			*c = '\0';
			return w;
		}
	}
	return NULL;
}

int dv_route_table_add_spec(struct dv_route_table *table, const char *spec, enum dv_balance balance,
                            char **err)
{
	int rc = -1;
	struct dv_upstream_pool *pool = NULL;
	struct dv_edge_policy *policy = NULL;
	char *opts = NULL;
	char *copy = dv_xstrdup(spec);
	char *eq = strchr(copy, '=');
	if (!eq || eq == copy) {
		*err = dv_xasprintf("bad route '%s' (expected HOST[/PATH]=ADDR:PORT[,ADDR:PORT...])", spec);
		goto out;
	}
	*eq = '\0';
	char *hostpart = copy, *addrs = eq + 1;
	char *route_opts = split_options(addrs);
	/* trim spaces around both sides */
	while (*hostpart == ' ' || *hostpart == '\t')
		hostpart++;
	for (char *e = eq - 1; e >= hostpart && (*e == ' ' || *e == '\t'); e--)
		*e = '\0';
	while (*addrs == ' ' || *addrs == '\t')
		addrs++;
	char *path = strchr(hostpart, '/');
	char pathbuf[4096];
	if (path) {
		snprintf(pathbuf, sizeof pathbuf, "%s", path);
		*path = '\0';
		path = pathbuf;
	}
	if (!*hostpart) {
		*err = dv_xasprintf("bad route '%s': no host (use * for any host)", spec);
		goto out;
	}
	bool is_static = strncmp(addrs, "static:", 7) == 0;
	if (table->edge_defaults)
		opts = dv_xstrdup(table->edge_defaults);
	if (is_static) {
		size_t l = strlen(addrs);
		while (l > 0 && (addrs[l - 1] == ' ' || addrs[l - 1] == '\t' || addrs[l - 1] == '\r'))
			addrs[--l] = '\0';
		dv_edge_options_add(&opts, "static", addrs + 7);
	}
	if (route_opts) {
		char *joined = dv_xasprintf("%s%s%s", opts ? opts : "", opts ? " " : "", route_opts);
		free(opts);
		opts = joined;
	}
	if (opts) {
		char name[4400], *perr = NULL;
		snprintf(name, sizeof name, "%s%s", hostpart, path ? path : "");
		policy = dv_edge_policy_parse(opts, name, &perr);
		if (!policy) {
			*err = dv_xasprintf("route '%s': %s", spec, perr);
			free(perr);
			goto out;
		}
	}
	if (!is_static) {
		pool = dv_upstream_pool_new(spec, balance);
		char *save = NULL;
		for (char *a = strtok_r(addrs, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
			while (*a == ' ' || *a == '\t')
				a++;
			size_t al = strlen(a);
			while (al > 0 && (a[al - 1] == ' ' || a[al - 1] == '\t' || a[al - 1] == '\r'))
				a[--al] = '\0';
			if (!*a)
				continue;
			struct dv_sockaddr sa;
			char *aerr = NULL;
			if (dv_sockaddr_parse(a, false, &sa, &aerr) != 0) {
				*err = dv_xasprintf("bad replica address '%s' in route '%s': %s", a, spec, aerr);
				free(aerr);
				goto out;
			}
			dv_upstream_pool_add(pool, &sa);
		}
		if (pool->nbackends == 0) {
			*err = dv_xasprintf("route '%s' has no replica (expected HOST[/PATH]=ADDR:PORT[,ADDR:PORT...])",
			                    spec);
			goto out;
		}
	}
	/* Share one pool between routes to the same replicas, so that least-conn
	 * counts and ejections are per replica set, not per route. */
	struct dv_upstream_pool *use = NULL;
	if (pool) {
		struct find_pool f = {.want = pool};
		dv_route_table_each_pool(table, find_same_pool, &f);
		use = f.found ? f.found : pool;
	}
	if (dv_route_table_add_policy(table, hostpart, path, use, policy, err) != 0)
		goto out;
	rc = 0;
out:
	dv_upstream_pool_unref(pool);
	dv_edge_policy_unref(policy);
	free(opts);
	free(copy);
	return rc;
}

int dv_route_table_load_file(struct dv_route_table *table, const char *path, enum dv_balance balance,
                             char **err)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		*err = dv_xasprintf("%s: cannot open routes file: %s", path, strerror(errno));
		return -1;
	}
	int rc = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	unsigned lineno = 0;
	while ((n = getline(&line, &cap, f)) != -1) {
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		size_t l = strlen(s);
		while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == '\r' || s[l - 1] == ' ' || s[l - 1] == '\t'))
			s[--l] = '\0';
		if (!*s)
			continue;
		char *lerr = NULL;
		if (dv_route_table_add_spec(table, s, balance, &lerr) != 0) {
			*err = dv_xasprintf("%s:%u: %s", path, lineno, lerr);
			free(lerr);
			rc = -1;
			break;
		}
	}
	free(line);
	fclose(f);
	return rc;
}

void dv_route_table_each_pool(const struct dv_route_table *table,
                              void (*fn)(struct dv_upstream_pool *pool, void *arg), void *arg)
{
	/* Visit each pool once even if several routes share it. */
	for (size_t i = 0; i < table->nhosts; i++) {
		for (size_t j = 0; j < table->hosts[i].npaths; j++) {
			struct dv_upstream_pool *p = table->hosts[i].paths[j].pool;
			bool seen = !p; /* static routes have no pool */
			for (size_t a = 0; a <= i && !seen; a++) {
				size_t lim = a == i ? j : table->hosts[a].npaths;
				for (size_t b = 0; b < lim && !seen; b++)
					seen = table->hosts[a].paths[b].pool == p;
			}
			if (!seen)
				fn(p, arg);
		}
	}
}

static const struct path_route *match_paths(const struct host_entry *h, const char *path, size_t path_len)
{
	for (size_t j = 0; j < h->npaths; j++) {
		const struct path_route *r = &h->paths[j];
		if (r->prefix_len == 1)
			return r; /* "/" matches everything */
		if (path_len < r->prefix_len || memcmp(path, r->prefix, r->prefix_len) != 0)
			continue;
		/* segment boundary: "/api" matches "/api", "/api/x", not "/apis" */
		if (path_len == r->prefix_len || path[r->prefix_len] == '/')
			return r;
	}
	return NULL;
}

static const struct path_route *route_find(const struct dv_route_table *table, const char *host,
                                           size_t host_len, const char *path, size_t path_len)
{
	char name[MAX_HOST + 1];
	size_t n = 0;
	/* Strip ":port" (an IPv6 literal keeps its brackets). */
	if (host_len > 0 && host[0] == '[') {
		const char *close = memchr(host, ']', host_len);
		if (close)
			host_len = (size_t)(close - host) + 1;
	} else {
		const char *colon = memchr(host, ':', host_len);
		if (colon)
			host_len = (size_t)(colon - host);
	}
	while (host_len > 0 && host[host_len - 1] == '.')
		host_len--; /* "example.com." is "example.com" */
	if (host_len > MAX_HOST)
		host_len = 0; /* cannot match any name: only "*" */
	for (; n < host_len; n++)
		name[n] = (char)tolower((unsigned char)host[n]);
	size_t qpos = 0;
	while (qpos < path_len && path[qpos] != '?' && path[qpos] != '#')
		qpos++;
	path_len = qpos;

	const struct path_route *r;
	long idx = exact_find(table, name, n);
	if (idx >= 0 && (r = match_paths(&table->hosts[idx], path, path_len)))
		return r;
	for (size_t w = 0; w < table->nwildcards; w++) {
		const struct host_entry *h = &table->hosts[table->wildcards[w]];
		if (n > h->pattern_len && memcmp(name + n - h->pattern_len, h->pattern, h->pattern_len) == 0 &&
		    (r = match_paths(h, path, path_len)))
			return r;
	}
	if (table->any_index >= 0)
		return match_paths(&table->hosts[table->any_index], path, path_len);
	return NULL;
}

struct dv_upstream_pool *dv_route_table_match(const struct dv_route_table *table, const char *host,
                                              size_t host_len, const char *path, size_t path_len)
{
	const struct path_route *r = route_find(table, host, host_len, path, path_len);
	return r ? r->pool : NULL;
}

bool dv_route_table_lookup(const struct dv_route_table *table, const char *host, size_t host_len,
                           const char *path, size_t path_len, struct dv_upstream_pool **pool,
                           struct dv_edge_policy **policy)
{
	const struct path_route *r = route_find(table, host, host_len, path, path_len);
	if (!r)
		return false;
	*pool = r->pool;
	*policy = r->policy;
	return true;
}

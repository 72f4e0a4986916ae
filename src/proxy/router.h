/* router: upstream pools and the routing table of the proxy.
 *
 * A route table maps (host pattern, path prefix) to an upstream pool. Tables
 * are immutable once published to the proxy (dv_proxy_set_routes); a new
 * table replaces the old one atomically. Pools are reference counted: the
 * tables that route to them and the requests in flight on them hold
 * references, so a pool that a new table no longer uses stays alive, draining,
 * until its last request ends.
 *
 * Backends carry shared, atomically updated state (in-flight count for
 * least-connections, consecutive connect failures, ejection deadline, health)
 * that proxy worker threads read and update without locks. */
#ifndef DV_PROXY_ROUTER_H
#define DV_PROXY_ROUTER_H

#include "core/util.h"
#include "proxy/edge.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dv_balance { DV_BALANCE_ROUND_ROBIN = 0, DV_BALANCE_LEAST_CONN };

struct dv_backend {
	struct dv_sockaddr addr;
	char label[64];                 /* "127.0.0.1:3000": for logs and the access log */
	atomic_int inflight;            /* requests being served now (all workers) */
	atomic_int connect_failures;    /* consecutive; reset by a successful connect */
	atomic_uint_fast64_t ejected_until; /* monotonic ms; 0 = not ejected */
	atomic_bool healthy;            /* set by health checks; true when created */
};

struct dv_upstream_pool {
	atomic_int refs;
	char *name;                     /* owned; for logs ("app.example.com/api") */
	enum dv_balance balance;
	atomic_uint rr_next;
	atomic_bool draining;
	atomic_uint_fast64_t drain_deadline; /* monotonic ms, when draining */
	atomic_int inflight;            /* requests in flight on this pool */
	size_t nbackends;
	struct dv_backend *backends;    /* owned array */
	unsigned metrics_slot;          /* dv_metrics_slot() of the name up to any '=' */
};

/* Creates a pool with one reference (the caller's). `name` is copied. */
struct dv_upstream_pool *dv_upstream_pool_new(const char *name, enum dv_balance balance);
/* Adds a replica (before the pool is published). */
void dv_upstream_pool_add(struct dv_upstream_pool *pool, const struct dv_sockaddr *addr);
void dv_upstream_pool_ref(struct dv_upstream_pool *pool);
/* Drops a reference; frees the pool with the last one. */
void dv_upstream_pool_unref(struct dv_upstream_pool *pool);
/* True if both pools have the same replicas (same addresses, any order). */
bool dv_upstream_pool_same_backends(const struct dv_upstream_pool *a, const struct dv_upstream_pool *b);
/* Marks the pool draining: no table routes to it any more; its in-flight
 * requests may run until `deadline_ms` (monotonic ms), then are cut. */
void dv_upstream_pool_drain(struct dv_upstream_pool *pool, uint64_t deadline_ms);

/* Picks a backend for a new request, skipping ejected and unhealthy ones
 * while any other is usable, and those whose bit (index % 64) is set in
 * `tried` (replicas this request already failed on). Returns NULL if no
 * backend is left to try. */
struct dv_backend *dv_upstream_pool_pick(struct dv_upstream_pool *pool, uint64_t now_ms, uint64_t tried);
/* The bit of a backend in a `tried` mask. */
uint64_t dv_upstream_pool_bit(const struct dv_upstream_pool *pool, const struct dv_backend *backend);

/* Outcome of a connect attempt; updates ejection state. */
void dv_backend_connect_failed(struct dv_backend *b, uint64_t now_ms, int eject_after,
                               uint64_t eject_for_ms);
void dv_backend_connect_succeeded(struct dv_backend *b);

struct dv_route_table;

struct dv_route_table *dv_route_table_new(void);
/* Frees the table and drops its pool references. */
void dv_route_table_free(struct dv_route_table *table);

/* Adds a route. host: "app.example.com", "*.example.com" or "*"; path: a
 * prefix starting with "/" (NULL = "/"). The table takes a new reference on
 * the pool. Returns 0, or -1 with *err (caller frees) for a bad pattern or a
 * duplicate route. */
int dv_route_table_add(struct dv_route_table *table, const char *host, const char *path,
                       struct dv_upstream_pool *pool, char **err);

/* Like dv_route_table_add, with an edge policy (NULL = none: the plain
 * proxy path). The table takes a reference on the policy. pool may be NULL
 * when the policy serves a static directory. */
int dv_route_table_add_policy(struct dv_route_table *table, const char *host, const char *path,
                              struct dv_upstream_pool *pool, struct dv_edge_policy *policy, char **err);

/* Edge options (docs/proxy.md) that every route added by add_spec/load_file
 * from now on starts from; NULL or "" = none (routes without options of
 * their own then get no policy). Copied. */
void dv_route_table_set_edge_defaults(struct dv_route_table *table, const char *options);

/* Parses one route spec "HOST[/PATH]=ADDR:PORT[,ADDR:PORT...] [KEY=VALUE...]"
 * (or "HOST[/PATH]=static:/DIR [KEY=VALUE...]") and adds it; the KEY=VALUE
 * options are edge options (docs/proxy.md).
 * Pools with identical replica sets within one table are shared. Addresses
 * may be names (resolved now, blocking). Returns 0 or -1 with *err. */
int dv_route_table_add_spec(struct dv_route_table *table, const char *spec, enum dv_balance balance,
                            char **err);

/* Loads a routes file (one spec per line, '#' comments). Errors are
 * "FILE:LINE: message". Returns 0 or -1 with *err; nothing is added on error
 * only if the table was empty before (callers load into a fresh table). */
int dv_route_table_load_file(struct dv_route_table *table, const char *path, enum dv_balance balance,
                             char **err);

/* Finds the pool for a request. host: the Host header value (a ":port"
 * suffix is ignored; matching is case-insensitive); path: the request
 * target's path (query ignored). Returns a borrowed pointer (valid while the
 * table is) or NULL for "no route". */
struct dv_upstream_pool *dv_route_table_match(const struct dv_route_table *table, const char *host,
                                              size_t host_len, const char *path, size_t path_len);

/* Finds the route of a request (as dv_route_table_match). Returns false for
 * "no route"; else sets *pool (NULL for a static route) and *policy (NULL
 * for a route without one), both borrowed. */
bool dv_route_table_lookup(const struct dv_route_table *table, const char *host, size_t host_len,
                           const char *path, size_t path_len, struct dv_upstream_pool **pool,
                           struct dv_edge_policy **policy);

/* For each pool the table routes to (each once): calls fn. */
void dv_route_table_each_pool(const struct dv_route_table *table,
                              void (*fn)(struct dv_upstream_pool *pool, void *arg), void *arg);

/* Number of routes. */
size_t dv_route_table_count(const struct dv_route_table *table);

#endif

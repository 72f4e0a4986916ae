/* proxy: the HTTP/1.1 reverse proxy engine (davit's data plane).
 *
 * N worker threads, each with its own epoll loop and its own SO_REUSEPORT
 * listening socket per address. Workers read the current route table without
 * locks on the request path; dv_proxy_set_routes() swaps in a new table
 * atomically and marks pools the new table no longer uses as draining.
 *
 * Lifecycle: dv_proxy_new() -> dv_proxy_start() -> (set_routes ...) ->
 * dv_proxy_shutdown() -> dv_proxy_wait() -> dv_proxy_free(). */
#ifndef DV_PROXY_PROXY_H
#define DV_PROXY_PROXY_H

#include "core/util.h"
#include "proxy/router.h"
#include "proxy/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dv_proxy_config {
	struct dv_sockaddr *listen;      /* borrowed array of addresses to listen on */
	size_t nlisten;
	unsigned workers;                /* 0 = number of CPUs */

	uint64_t connect_timeout_ms;     /* upstream connect */
	uint64_t response_timeout_ms;    /* request sent -> response head */
	uint64_t upstream_idle_timeout_ms; /* idle upstream keep-alive connections */
	uint64_t read_timeout_ms;        /* silence while a body streams */
	uint64_t tunnel_timeout_ms;      /* silence on an upgraded connection */
	uint64_t header_timeout_ms;      /* client request head */
	uint64_t keepalive_timeout_ms;   /* idle client connection */
	uint64_t drain_timeout_ms;       /* in-flight on a removed route */
	uint64_t shutdown_timeout_ms;    /* graceful shutdown */

	size_t max_request_line;
	size_t max_header_bytes;
	size_t max_headers;

	struct dv_cidr *trusted;         /* borrowed array: peers whose X-Forwarded-* we keep */
	size_t ntrusted;

	int eject_after;                 /* consecutive connect failures (0 = never eject) */
	uint64_t eject_for_ms;

	const char *access_log_path;     /* NULL = off, "-" = stdout */
	bool metrics;                    /* per-worker request counters (metrics/metrics.h); default on */

	/* TLS (docs/proxy.md "TLS"): HTTPS listeners terminate TLS with the
	 * certificates published to `tls`. With `tls` set, plain-HTTP listeners
	 * also answer ACME HTTP-01 challenges from it and, if https_redirect,
	 * send 301 to https:// for hosts that have a certificate. */
	struct dv_sockaddr *tls_listen;  /* borrowed array (copied by dv_proxy_new) */
	size_t ntls_listen;
	struct dv_tls *tls;              /* borrowed; must outlive the proxy; NULL = no TLS */
	bool https_redirect;
};

/* Fills the defaults documented in docs/proxy.md (no listeners). */
void dv_proxy_config_default(struct dv_proxy_config *config);

struct dv_proxy;

/* Creates the proxy and binds its listening sockets (so that bind errors are
 * reported here, before any thread runs). The config is copied, the arrays it
 * points to too. Returns NULL with *err (caller frees) on failure. */
struct dv_proxy *dv_proxy_new(const struct dv_proxy_config *config, char **err);

/* Replaces the route table; takes ownership of `table`. Pools of the old table
 * that the new one does not route to (compared by replica set) start draining
 * with the configured drain timeout. Safe from any thread. Returns the new
 * table's generation (see dv_proxy_routes_applied). */
unsigned dv_proxy_set_routes(struct dv_proxy *proxy, struct dv_route_table *table);

/* True once every worker uses the table of generation `gen` (or a newer one):
 * from then on no new request starts on a pool that table dropped, so a
 * pool's in-flight count can only go down. Workers pick a new table up at
 * their next loop iteration (they are woken for it). */
bool dv_proxy_routes_applied(struct dv_proxy *proxy, unsigned gen);

/* Starts the worker threads. Returns 0 or -1 with *err. */
int dv_proxy_start(struct dv_proxy *proxy, char **err);

/* Begins shutdown. graceful: stop accepting, let in-flight requests finish
 * (bounded by shutdown_timeout_ms), close idle connections; otherwise close
 * everything now. Safe from any thread, may be called again (e.g. graceful
 * then immediate). */
void dv_proxy_shutdown(struct dv_proxy *proxy, bool graceful);

/* True while any worker thread is still running. */
bool dv_proxy_running(struct dv_proxy *proxy);

/* Waits for all workers to exit. */
void dv_proxy_wait(struct dv_proxy *proxy);

void dv_proxy_free(struct dv_proxy *proxy);

#endif

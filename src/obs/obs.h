/* obs: observability of the daemon, wired on the control loop.
 *
 * Every interval (10 s) it merges the proxy's per-worker counters, reads
 * the engine's replicas (health, restarts, CPU, RSS) and the host (/proc),
 * writes the history (metrics/history.h), evaluates the alert rules
 * (metrics/alerts.h) and hands transitions to the notifiers (notify/).
 * Each second it reads new events from the store: deploys, rollbacks and
 * backups are counted and notified, certificate expiry events set gauges.
 * It serves `/metrics` (Prometheus text format) on its own small listener
 * on the control loop, never on the proxy's workers, and the control API
 * endpoints of `davit top`, `davit metrics`, `davit alerts` and `davit event`.
 *
 * Alert rules and notifiers come from the daemon's flags and from the
 * `x-davit:` blocks of deployed compose files (obs/config.c); the compose
 * text is kept in the metrics database so they survive restarts. */
#ifndef DV_OBS_OBS_H
#define DV_OBS_OBS_H

#include "api/server.h"
#include "core/loop.h"
#include "notify/notify.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dv_engine;
struct dv_store;

struct dv_obs_config {
	struct dv_loop *loop;          /* control loop (borrowed) */
	struct dv_engine *engine;      /* borrowed */
	struct dv_store *store;        /* borrowed */
	const char *state_dir;         /* metrics.db lives here; default disk path */
	const char *metrics_listen;    /* "ADDR:PORT" for /metrics; NULL or "off": none */
	const char *metrics_token;     /* bearer token required on /metrics; NULL: none */
	uint64_t interval_ms;          /* collection interval (10 s; at least 1 s) */
	uint64_t alert_for_ms;         /* != 0: replaces the default rules' durations (tests) */
	const char *host_root;         /* NULL: "/" (see metrics/host.h) */
	const char *disk_path;         /* NULL: state_dir */
	const struct dv_notifier_config *notifiers; /* from daemon flags (copied) */
	size_t nnotifiers;
	struct dv_notify_options notify; /* timeouts and retries (zeroed: defaults) */
	int64_t logs_max_age_s;        /* replica log files older than this go (0: 7 days; < 0: never) */
	uint64_t logs_max_bytes;       /* and the oldest while all of them pass this (0: 1 GiB) */
};

struct dv_obs;

/* Opens the history, binds the /metrics listener, starts the timers.
 * Returns NULL with *err. */
struct dv_obs *dv_obs_new(const struct dv_obs_config *config, char **err);
/* Stops timers and the listener; queued notifications get a moment to go out. */
void dv_obs_free(struct dv_obs *obs);

/* The control API endpoints obs serves (/v1/top, /v1/metrics, /v1/alerts,
 * /v1/events). Returns false when the path is not one of them. */
bool dv_obs_handle_api(struct dv_obs *obs, struct dv_api_request *req);

/* Reads the alert rules and notifiers of the compose file at `path` (its
 * x-davit blocks) before a deploy. environ: the client's variables for
 * ${VAR} in URLs (NULL: the daemon's). Returns 0 (kept; applied now), or -1
 * with *err "FILE:LINE: ..." and nothing changed. */
int dv_obs_load_compose(struct dv_obs *obs, const char *path, const char *const *environ, char **err);

/* For `davit proxy` (no daemon): serves the proxy's per-route counters
 * (label "route") on /metrics from a thread of its own. token: NULL or the
 * bearer token required. Returns NULL with *err if it cannot listen. */
struct dv_obs_route_metrics;
struct dv_obs_route_metrics *dv_obs_route_metrics_start(const char *listen, const char *token, char **err);
void dv_obs_route_metrics_stop(struct dv_obs_route_metrics *m);

#endif

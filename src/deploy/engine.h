/* deploy/engine: davit's control plane core. It keeps every app (a compose
 * project) running as supervised replicas, health-checked, published to the
 * proxy by domain, and carries out deploys and rollbacks as persisted state
 * machines.
 *
 * Runs entirely on the control loop's thread: every operation either
 * completes at once or reports later through a callback; nothing blocks.
 *
 * A deploy (per app, one at a time):
 *   plan: diff the new release against the serving one, per service;
 *   for each changed service in dependency order: start the new replicas
 *   beside the old ones, wait until they are healthy (health timeout), switch
 *   the proxy to them (one atomic route table swap), and let the old replicas
 *   drain (no new requests; in-flight ones finish);
 *   when every service is switched: stop the old replicas, mark the release
 *   current. If a new replica never becomes healthy, or the deploy's hard
 *   deadline passes: stop the new replicas, switch the already switched
 *   services back to their old replicas (still running), mark the deploy
 *   failed with the health result and the last log lines.
 * Each step is written to the store before it is acted on; after a daemon
 * crash, dv_engine_recover() rolls an interrupted deploy back. */
#ifndef DV_DEPLOY_ENGINE_H
#define DV_DEPLOY_ENGINE_H

#include "core/loop.h"
#include "core/strbuf.h"
#include "proxy/proxy.h"

#include <stdbool.h>
#include <stdint.h>

struct dv_engine;
struct dv_store;

/* A domain the services route, for the certificate manager. */
struct dv_engine_domain {
	const char *host;
	const char *tls_cert, *tls_key; /* user-supplied (x-davit.tls), or NULL: ACME */
};

struct dv_engine_config {
	struct dv_loop *loop;        /* the control loop (borrowed) */
	struct dv_proxy *proxy;      /* routes are published here (borrowed) */
	struct dv_store *store;      /* borrowed */
	const char *state_dir;       /* logs go to <state_dir>/logs */
	const char *http_url;        /* how users reach the proxy, e.g. "http://127.0.0.1:8080" */
	const char *environment;     /* "production" */
	uint64_t health_timeout_ms;  /* a new replica must be healthy within this (60 s) */
	uint64_t drain_timeout_ms;   /* old replicas' in-flight requests (30 s) */
	uint64_t deploy_timeout_ms;  /* hard deadline of a whole deploy (15 min) */
	uint16_t port_base;          /* replica ports are allocated from here (20000) */
	/* Containers (image:/build: services): by default the proxy reaches a
	 * replica at its address on the app network; with docker_loopback, at
	 * the app port published on 127.0.0.1:<its replica port>. */
	bool docker_loopback;
	unsigned keep_images;        /* images of this many newest releases are kept per service (5) */
	/* After each route publication: every host name the services' domains
	 * name (deduplicated, without paths) with the service's x-davit.tls
	 * files (or NULL), for certificates. May be NULL. */
	void (*domains_changed)(void *arg, const struct dv_engine_domain *domains, size_t n);
	void *domains_arg;
};

/* Called when an asynchronous operation ends. ok: it succeeded. text: a
 * human report (multi-line); json: the same as a JSON object. Both borrowed
 * for the duration of the call. */
typedef void (*dv_engine_done_cb)(void *arg, bool ok, const char *text, const char *json);

struct dv_engine *dv_engine_new(const struct dv_engine_config *config, char **err);
/* Stops every replica (SIGTERM, then SIGKILL after their stop timeout) and
 * frees the engine once they are gone; done runs when finished. */
void dv_engine_shutdown(struct dv_engine *engine, void (*done)(void *arg), void *arg);
void dv_engine_free(struct dv_engine *engine);

/* After the daemon starts: kills replicas a previous daemon left behind,
 * rolls back a deploy it left unfinished, and starts the current release of
 * every app again. Returns 0 or -1 with *err. */
int dv_engine_recover(struct dv_engine *engine, char **err);

/* Deploys the compose file at `path` (absolute), interpolated with the
 * client's environment `environ` (NULL-terminated "K=V" list; NULL = the
 * daemon's). Returns 0 when the deploy started (done reports its end), or -1
 * with *err for a file that does not load (nothing changed) or an app that is
 * already deploying. */
int dv_engine_deploy_file(struct dv_engine *engine, const char *path, const char *const *environ,
                          dv_engine_done_cb done, void *arg, char **err);

/* Deploys an earlier release again (release 0: the one before the current).
 * As dv_engine_deploy_file. */
int dv_engine_rollback(struct dv_engine *engine, const char *app, int64_t release, dv_engine_done_cb done,
                       void *arg, char **err);

/* restart | stop | start one service of an app. restart replaces its replicas
 * one at a time without dropping requests. Returns 0 (done reports the end)
 * or -1 with *err. */
int dv_engine_service_action(struct dv_engine *engine, const char *app, const char *service,
                             const char *action, dv_engine_done_cb done, void *arg, char **err);

/* Stops every replica of an app and removes its routes (releases are kept). */
int dv_engine_down(struct dv_engine *engine, const char *app, dv_engine_done_cb done, void *arg, char **err);

/* The docker driver (created on first use): for `davit down --volumes` and
 * the like. NULL with *err if it cannot be created. */
struct dv_runtime *dv_engine_docker(struct dv_engine *engine, char **err);

/* The app's name: `app`, or the only app when app is NULL/empty. Borrowed
 * (valid until the app goes). NULL with *err (unknown, none, several). */
const char *dv_engine_app_name(struct dv_engine *engine, const char *app, char **err);
/* True if the app's serving release has container services (image/build). */
bool dv_engine_app_has_containers(struct dv_engine *engine, const char *app);

/* Reports (synchronous): appended to out as text or JSON. app NULL: all apps
 * (ps) or the only app (releases). Returns 0 or -1 with *err (unknown app). */
int dv_engine_ps(struct dv_engine *engine, const char *app, bool json, struct dv_strbuf *out, char **err);
int dv_engine_releases(struct dv_engine *engine, const char *app, bool json, struct dv_strbuf *out, char **err);

/* Logs: the last `tail` lines of a service's replicas (service NULL: every
 * service), then, if follow, every new line through `line` until the returned
 * subscription is cancelled. Returns a subscription (follow) or NULL; *rc is
 * 0, or -1 with *err for an unknown app or service (tail 0 without follow
 * only checks that). json: one JSON object per line. */
struct dv_engine_log_sub;
struct dv_engine_log_sub *dv_engine_logs(struct dv_engine *engine, const char *app, const char *service,
                                         unsigned tail, bool follow, bool json,
                                         void (*line)(void *arg, const char *text, size_t len), void *arg,
                                         char **err, int *rc);
void dv_engine_logs_cancel(struct dv_engine *engine, struct dv_engine_log_sub *sub);

#endif

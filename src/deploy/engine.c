/* The control plane engine: apps, services, replicas, deploys (engine.h).
 *
 * Ownership: the engine owns apps; an app owns its services; a service owns
 * its replicas in three lists: `active` (the serving version; routed while
 * healthy), `pending` (a deploy's new version, not routed yet) and `retired`
 * (a replaced version: unrouted, draining, stopped when the deploy ends).
 * A replica owns its runtime handle and health check; a replica that is
 * stopping stays in its list, marked `leaving`, until its exit callback runs.
 */
#include "deploy/engine.h"

#include "compose/compose.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/util.h"
#include "deploy/container.h"
#include "deploy/plan.h"
#include "health/health.h"
#include "proxy/router.h"
#include "runtime/mux.h"
#include "runtime/process.h"
#include "runtime/runtime.h"
#include "store/store.h"

#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PROBE_FAST_MS 150      /* while waiting for a new replica: probe this often */
#define DRAIN_POLL_MS 50
#define LOG_TAIL_ON_FAILURE 15

struct app;
struct service;

enum replica_state { R_STARTING, R_HEALTHY, R_UNHEALTHY, R_STOPPING, R_EXITED, R_BACKOFF };

struct replica {
	struct service *svc;
	struct replica *next;
	unsigned index;
	int64_t release;
	uint16_t port;
	struct dv_replica *rt;
	struct dv_health_check *hc;
	enum replica_state state;
	bool leaving;         /* being stopped on purpose: do not restart */
	bool crashed_once;    /* exited on its own at least once */
	bool port_retried;    /* got a new port once after its port was taken */
	unsigned restarts;
	int64_t started_at;   /* unix ms */
	struct dv_timer restart_timer;
	struct dv_restart_state restart_state;
	char last_health[256];
	int last_exit;
	bool has_exit;
	char *adopt_id;       /* a running container to attach to at the next spawn (recovery) */
	bool docker_unhealthy;/* its Docker HEALTHCHECK fails: not routed, whatever our probe says */
};

struct service {
	struct app *app;
	char *name;
	struct dv_plan_service *plan; /* owned by the app's plan (current or deploy's) */
	struct replica *active, *pending, *retired;
	bool stopped_by_user;
	bool force_replace;   /* the next deploy replaces it even if unchanged (restart) */
	/* Pools published for the active replicas since they became active (one
	 * reference each): requests in flight on any of them are counted there,
	 * so a switch waits on all of them before stopping the old replicas. */
	struct dv_upstream_pool **pools;
	size_t npools;
};

struct deploy;

struct app {
	struct dv_engine *engine;
	struct app *next;
	char *name;
	struct dv_plan *plan;   /* the serving release's plan */
	int64_t release;        /* serving release (0: none) */
	struct service **services;
	size_t nservices;
	struct deploy *deploy;  /* the running deploy, or NULL */
	struct dv_upstream_pool **draining; /* pools replaced by a switch, until drained */
	size_t ndraining;
	unsigned drain_gen;     /* route table generation that dropped them */
};

enum deploy_phase { D_START_NEXT, D_STOP_OLD, D_WAIT_HEALTHY, D_DRAIN, D_DONE };

struct deploy {
	struct app *app;
	int64_t id;
	int64_t release, previous;
	struct dv_plan *plan;        /* the new release's plan (moves to the app on success) */
	size_t next;                 /* next index in plan->services to consider */
	struct service *current;     /* the service being replaced now */
	struct service **switched;   /* services switched so far (for rollback) */
	size_t nswitched;
	struct service **added;      /* services the new release adds */
	size_t nadded;
	enum deploy_phase phase;
	struct dv_timer health_timer, deadline_timer, drain_timer;
	uint64_t drain_deadline;
	dv_engine_done_cb done;
	void *done_arg;
	struct dv_strbuf report;     /* human lines */
	char *failure;
	bool rollback_of_release;    /* a rollback command (for the report) */
	uint64_t last_healthy_ns;    /* when the current service's last new replica passed */
	unsigned changed;
	struct service **stopped_first; /* stop-first services whose old replicas this deploy stopped */
	size_t nstopped_first;
	struct dv_timer stop_old_timer;  /* D_STOP_OLD: polls until they are gone */
};

struct dv_engine {
	struct dv_engine_config config;
	struct dv_runtime *rt;
	struct app *apps;
	uint16_t next_port;
	bool shutting_down;
	struct dv_timer probe_timer; /* fast probes of starting replicas */
	void (*shutdown_done)(void *);
	void *shutdown_arg;
	struct dv_timer shutdown_check;
	struct dv_engine_log_sub *log_subs; /* `davit logs -f` streams, to attach new replicas */
	/* Replicas to stop once every proxy worker uses the route table that no
	 * longer sends them traffic (see stop_after_routes). */
	struct deferred_stop {
		struct replica *replica;
		unsigned gen;
	} *deferred;
	size_t ndeferred;
	struct dv_timer deferred_timer;
	/* Running containers found at recovery (adopt_recovered): taken by the
	 * replicas of the serving releases, the rest removed. */
	struct dv_replica_ref *found;
	size_t nfound;
	bool *found_taken;
};

static unsigned publish_routes(struct dv_engine *e);
static void log_subs_attach(struct dv_engine *e, struct replica *r);
static void deploy_step(struct deploy *d);
static void deploy_fail(struct deploy *d, const char *why);
static void replica_stop(struct replica *r);
static void shutdown_check(struct dv_loop *loop, struct dv_timer *t);
static void prune_images(struct app *a);

/* ------------------------------------------------------------------ helpers */

static int64_t unix_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t loop_now(struct dv_engine *e)
{
	return dv_loop_update_now(e->config.loop);
}

static char *sha256_hex(const char *data, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	char *hex = dv_xmalloc(mdlen * 2 + 1);
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return hex;
}

static bool port_free(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return false;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0;
	close(fd);
	return ok;
}

static bool port_taken_by_us(struct dv_engine *e, uint16_t port)
{
	for (struct app *a = e->apps; a; a = a->next)
		for (size_t i = 0; i < a->nservices; i++) {
			struct replica *lists[3] = {a->services[i]->active, a->services[i]->pending, a->services[i]->retired};
			for (int l = 0; l < 3; l++)
				for (struct replica *r = lists[l]; r; r = r->next)
					if (r->port == port)
						return true;
		}
	return false;
}

/* The first port of the kernel's ephemeral range: outgoing connections take
 * their local ports from there, so replica ports stay below it. */
static uint16_t ephemeral_low(void)
{
	unsigned lo = 32768, hi = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fscanf(f, "%u %u", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	return lo > 1024 && lo <= 65535 ? (uint16_t)lo : 32768;
}

static uint16_t allocate_port(struct dv_engine *e)
{
	uint16_t lo = e->config.port_base, hi = ephemeral_low();
	if (hi <= lo + 100)
		hi = 60000; /* an odd ephemeral range: use the ports above the base */
	unsigned span = (unsigned)(hi - lo);
	for (unsigned tries = 0; tries < span; tries++) {
		if (e->next_port < lo || e->next_port >= hi)
			e->next_port = lo;
		uint16_t p = e->next_port++;
		if (!port_taken_by_us(e, p) && port_free(p))
			return p;
	}
	return 0;
}

static struct app *app_find(struct dv_engine *e, const char *name)
{
	for (struct app *a = e->apps; a; a = a->next)
		if (strcmp(a->name, name) == 0)
			return a;
	return NULL;
}

/* The app a command means: by name, or the only one. */
static struct app *app_pick(struct dv_engine *e, const char *name, char **err)
{
	if (name && *name) {
		struct app *a = app_find(e, name);
		if (!a)
			*err = dv_xasprintf("no app named '%s' (see 'davit ps')", name);
		return a;
	}
	if (!e->apps) {
		*err = dv_xstrdup("nothing is deployed yet (deploy with 'davit up' or 'davit deploy')");
		return NULL;
	}
	if (e->apps->next) {
		*err = dv_xstrdup("several apps are deployed: say which one with --app NAME");
		return NULL;
	}
	return e->apps;
}

static struct service *service_find(struct app *a, const char *name)
{
	for (size_t i = 0; i < a->nservices; i++)
		if (strcmp(a->services[i]->name, name) == 0)
			return a->services[i];
	return NULL;
}

static struct service *service_add(struct app *a, const char *name, struct dv_plan_service *plan)
{
	struct service *s = dv_xcalloc(1, sizeof *s);
	s->app = a;
	s->name = dv_xstrdup(name);
	s->plan = plan;
	a->services = dv_xrealloc(a->services, (a->nservices + 1) * sizeof *a->services);
	a->services[a->nservices++] = s;
	return s;
}

static struct app *app_get_or_create(struct dv_engine *e, const char *name)
{
	struct app *a = app_find(e, name);
	if (a)
		return a;
	a = dv_xcalloc(1, sizeof *a);
	a->engine = e;
	a->name = dv_xstrdup(name);
	a->next = e->apps;
	e->apps = a;
	return a;
}

static const char *replica_state_name(const struct replica *r)
{
	switch (r->state) {
	case R_STARTING: return "starting";
	case R_HEALTHY: return "healthy";
	case R_UNHEALTHY: return "unhealthy";
	case R_STOPPING: return "stopping";
	case R_EXITED: return "exited";
	case R_BACKOFF: return "restarting";
	}
	return "?";
}

static void record_replica(struct replica *r)
{
	struct dv_engine *e = r->svc->app->engine;
	struct dv_store_replica rec = {
		.app = r->svc->app->name,
		.env = (char *)e->config.environment,
		.service = r->svc->name,
		.release = r->release,
		.index = r->index,
		.port = r->port,
		.started_at = r->started_at,
		.restarts = r->restarts,
	};
	if (r->rt) {
		struct dv_replica_info info;
		char *err = NULL;
		/* A container's pid is not ours to kill at recovery: not recorded. */
		if (!dv_mux_is_container(r->rt) && dv_runtime_inspect(e->rt, r->rt, &info, &err) == 0) {
			rec.pid = info.pid;
			rec.proc_start = info.start_ticks;
		}
		free(err);
	}
	switch (r->state) {
	case R_STARTING: rec.state = DV_STORE_REPLICA_STARTING; break;
	case R_HEALTHY: rec.state = DV_STORE_REPLICA_HEALTHY; break;
	case R_UNHEALTHY: rec.state = DV_STORE_REPLICA_UNHEALTHY; break;
	case R_STOPPING: rec.state = DV_STORE_REPLICA_STOPPING; break;
	case R_EXITED: rec.state = DV_STORE_REPLICA_STOPPED; break;
	case R_BACKOFF: rec.state = DV_STORE_REPLICA_CRASHED; break;
	}
	char *err = NULL;
	if (dv_store_replica_upsert(e->config.store, &rec, &err) != 0)
		dv_log_warn("engine", "recording replica %s/%s#%u: %s", r->svc->app->name, r->svc->name, r->index, err);
	free(err);
}

static void forget_replica(struct replica *r)
{
	struct dv_engine *e = r->svc->app->engine;
	char *err = NULL;
	dv_store_replica_delete(e->config.store, r->svc->app->name, e->config.environment, r->svc->name, r->release,
	                        r->index, NULL, &err);
	free(err);
}

static void event(struct dv_engine *e, const char *app, const char *kind, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void event(struct dv_engine *e, const char *app, const char *kind, const char *fmt, ...)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	va_list ap;
	va_start(ap, fmt);
	dv_strbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	dv_log_info("engine", "%s %s: %s", app ? app : "-", kind, b.data ? b.data : "");
	char *err = NULL;
	dv_store_event_add(e->config.store, app, kind, b.data ? b.data : "", NULL, NULL, &err);
	free(err);
	dv_strbuf_dispose(&b);
}

/* ------------------------------------------------------------------ replicas */

static void replica_list_remove(struct replica **list, struct replica *r)
{
	for (struct replica **p = list; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			r->next = NULL;
			return;
		}
}

static bool in_list(struct replica *list, struct replica *r)
{
	for (; list; list = list->next)
		if (list == r)
			return true;
	return false;
}

static void replica_free(struct replica *r)
{
	struct dv_engine *e = r->svc->app->engine;
	for (size_t i = 0; i < e->ndeferred;) {
		if (e->deferred[i].replica == r)
			e->deferred[i] = e->deferred[--e->ndeferred];
		else
			i++;
	}
	dv_timer_cancel(e->config.loop, &r->restart_timer);
	if (r->hc)
		dv_health_stop(r->hc);
	if (r->rt) {
		char *err = NULL;
		dv_runtime_remove(e->rt, r->rt, &err);
		free(err);
	}
	free(r->adopt_id);
	free(r);
}

static void replica_exited(struct dv_replica *handle, int status, void *arg);
static void health_changed(struct dv_health_check *check, enum dv_health_state state, const char *result, void *arg);
static int replica_spawn(struct replica *r, char **err);

static void restart_due(struct dv_loop *loop, struct dv_timer *t)
{
	struct replica *r = dv_container_of(t, struct replica, restart_timer);
	char *err = NULL;
	if (r->leaving || r->svc->stopped_by_user)
		return;
	if (r->port && !port_free(r->port)) {
		/* Someone took its port while it was down: move it. */
		struct dv_engine *e = r->svc->app->engine;
		r->port = 0;
		r->port = allocate_port(e);
	}
	if (replica_spawn(r, &err) != 0) {
		snprintf(r->last_health, sizeof r->last_health, "restart failed: %s", err);
		event(r->svc->app->engine, r->svc->app->name, "replica.restart_failed", "%s#%u: %s", r->svc->name,
		      r->index, err);
		free(err);
		/* try again later */
		r->state = R_BACKOFF;
		dv_timer_set(loop, &r->restart_timer, dv_loop_update_now(loop) + 5000);
	}
}

static void build_env(struct replica *r, char ***out)
{
	const struct dv_plan_service *p = r->svc->plan;
	size_t n = 0, cap = 16;
	char **env = dv_xmalloc(cap * sizeof *env);
#define ADD(s)                                                                                                \
	do {                                                                                                      \
		if (n + 2 > cap) {                                                                                    \
			cap *= 2;                                                                                         \
			env = dv_xrealloc(env, cap * sizeof *env);                                                        \
		}                                                                                                     \
		env[n++] = (s);                                                                                       \
	} while (0)
	/* PATH, HOME and the locale come from the daemon, unless the file sets them. */
	static const char *const inherit[] = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"};
	for (size_t i = 0; i < sizeof inherit / sizeof inherit[0]; i++) {
		const char *v = getenv(inherit[i]);
		bool overridden = false;
		size_t l = strlen(inherit[i]);
		for (char **e = p->env; e && *e; e++)
			if (strncmp(*e, inherit[i], l) == 0 && (*e)[l] == '=')
				overridden = true;
		if (v && !overridden)
			ADD(dv_xasprintf("%s=%s", inherit[i], v));
	}
	for (char **e = p->env; e && *e; e++)
		if (strncmp(*e, "PORT=", 5) != 0)
			ADD(dv_xstrdup(*e));
	if (r->port)
		ADD(dv_xasprintf("PORT=%u", r->port));
	ADD(dv_xasprintf("DAVIT_APP=%s", r->svc->app->name));
	ADD(dv_xasprintf("DAVIT_SERVICE=%s", r->svc->name));
	ADD(dv_xasprintf("DAVIT_REPLICA=%u", r->index));
	ADD(dv_xasprintf("DAVIT_RELEASE=%lld", (long long)r->release));
#undef ADD
	env[n] = NULL;
	*out = env;
}

static void free_env(char **env)
{
	for (char **e = env; e && *e; e++)
		free(*e);
	free(env);
}

/* Replicas that are starting are probed often, so that they receive traffic
 * (or a deploy switches to them) moments after they can serve, not a health
 * interval later. Runs while any replica is starting. */
static void fast_probe(struct dv_loop *loop, struct dv_timer *t)
{
	struct dv_engine *e = dv_container_of(t, struct dv_engine, probe_timer);
	bool any = false;
	for (struct app *a = e->apps; a; a = a->next)
		for (size_t i = 0; i < a->nservices; i++) {
			struct service *s = a->services[i];
			struct replica *lists[2] = {s->active, s->pending};
			for (int l = 0; l < 2; l++)
				for (struct replica *r = lists[l]; r; r = r->next)
					if (r->hc && !r->leaving &&
					    (r->state == R_STARTING || (l == 1 && r->state == R_UNHEALTHY))) {
						dv_health_check_now(r->hc);
						any = true;
					}
		}
	if (any)
		dv_timer_set(loop, t, dv_loop_update_now(loop) + PROBE_FAST_MS);
}

/* Where the proxy and the health checks reach a replica: the driver's
 * address for it (a container on its network), else 127.0.0.1:port. */
static void replica_address(struct replica *r, struct dv_sockaddr *sa)
{
	struct dv_engine *e = r->svc->app->engine;
	memset(sa, 0, sizeof *sa);
	unsigned len = 0;
	if (r->rt && dv_runtime_address(e->rt, r->rt, &sa->addr, &len) == 0) {
		sa->len = len;
		return;
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)&sa->addr;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(r->port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa->len = sizeof *sin;
}

static void start_health(struct replica *r)
{
	struct dv_engine *e = r->svc->app->engine;
	const struct dv_plan_service *p = r->svc->plan;
	if (r->hc) {
		dv_health_stop(r->hc);
		r->hc = NULL;
	}
	if (p->health == DV_PLAN_HEALTH_NONE) {
		/* Nothing to probe: running counts as healthy. */
		r->state = R_HEALTHY;
		snprintf(r->last_health, sizeof r->last_health, "running (no health check)");
		return;
	}
	struct dv_health_spec spec;
	memset(&spec, 0, sizeof spec);
	replica_address(r, &spec.target);
	char **env = NULL;
	switch (p->health) {
	case DV_PLAN_HEALTH_HTTP:
		spec.kind = DV_HEALTH_HTTP;
		spec.http_path = p->health_path;
		break;
	case DV_PLAN_HEALTH_TCP:
		spec.kind = DV_HEALTH_TCP;
		break;
	case DV_PLAN_HEALTH_COMMAND:
		spec.kind = DV_HEALTH_COMMAND;
		spec.command = p->health_cmd;
		build_env(r, &env);
		spec.command_env = (const char *const *)env;
		spec.command_cwd = p->workdir;
		break;
	case DV_PLAN_HEALTH_NONE:
		break;
	}
	spec.interval_ms = p->health_interval_ms;
	spec.timeout_ms = p->health_timeout_ms;
	spec.retries = p->health_retries;
	spec.start_period_ms = p->health_start_period_ms;
	r->hc = dv_health_start(e->config.loop, &spec, health_changed, r);
	free_env(env);
	if (r->hc && !dv_timer_armed(&e->probe_timer))
		dv_timer_set(e->config.loop, &e->probe_timer, loop_now(e) + PROBE_FAST_MS);
}

/* A replica's runtime handle exists: it is starting. */
static void replica_started(struct replica *r, const char *what)
{
	r->state = R_STARTING;
	r->started_at = unix_ms();
	r->has_exit = false;
	snprintf(r->last_health, sizeof r->last_health, "%s", what);
	record_replica(r);
	log_subs_attach(r->svc->app->engine, r);
}

/* A container replica runs once its image is there and its start gates
 * passed (docker.h): only then is it probed. */
static void image_line(struct dv_replica *rep, const struct dv_log_line *line, void *arg)
{
	struct dv_strbuf *b = arg;
	if (line && line->len > 13 && (strncmp(line->text, "build: built ", 13) == 0 || strncmp(line->text, "pull: ", 6) == 0))
		dv_strbuf_printf(b, "%.*s; ", (int)line->len, line->text);
}

static void replica_running(struct dv_replica *handle, void *arg)
{
	struct replica *r = arg;
	if (r->leaving || r->state != R_STARTING)
		return;
	/* The deploy report says what happened to the image (built, pulled). */
	struct deploy *d = r->svc->app->deploy;
	if (d && r->index == 0 && in_list(r->svc->pending, r)) {
		struct dv_strbuf b;
		dv_strbuf_init(&b);
		dv_runtime_logs_tail(r->svc->app->engine->rt, r->rt, 200, image_line, &b);
		if (b.len > 2)
			dv_strbuf_printf(&d->report, "  %-12s %.*s\n", r->svc->name, (int)(b.len - 2), b.data);
		dv_strbuf_dispose(&b);
	}
	if (r->svc->plan->health == DV_PLAN_HEALTH_NONE) {
		health_changed(NULL, DV_HEALTH_HEALTHY, "running (no health check)", r);
		return;
	}
	start_health(r);
	record_replica(r);
}

/* Docker's own health check of a running container: routed only while
 * both it and davit's probe pass. */
static void replica_docker_health(struct dv_replica *handle, bool healthy, void *arg)
{
	struct replica *r = arg;
	struct service *s = r->svc;
	if (r->leaving || r->docker_unhealthy == !healthy)
		return;
	r->docker_unhealthy = !healthy;
	enum replica_state before = r->state;
	if (!healthy && r->state == R_HEALTHY) {
		r->state = R_UNHEALTHY;
		snprintf(r->last_health, sizeof r->last_health, "the container's Docker health check fails");
	} else if (healthy && r->state == R_UNHEALTHY &&
	           (!r->hc || dv_health_state(r->hc) == DV_HEALTH_HEALTHY)) {
		r->state = R_HEALTHY;
		snprintf(r->last_health, sizeof r->last_health, "the container's Docker health check passes again");
	}
	if (before == r->state)
		return;
	record_replica(r);
	if (in_list(s->active, r))
		publish_routes(s->app->engine);
	if (r->state == R_UNHEALTHY && in_list(s->active, r))
		event(s->app->engine, s->app->name, "replica.unhealthy", "%s#%u: %s", s->name, r->index, r->last_health);
}

static int container_spawn(struct replica *r, char **err)
{
	struct dv_engine *e = r->svc->app->engine;
	const struct dv_plan_service *p = r->svc->plan;
	struct dv_engine_cspec cs;
	dv_engine_cspec_build(&cs, p, r->svc->app->name, r->release, r->index, r->port, e->config.docker_loopback,
	                      e->config.health_timeout_ms, r->adopt_id);
	char release[32], name[48];
	snprintf(release, sizeof release, "%lld", (long long)r->release);
	snprintf(name, sizeof name, "r%lld-%u", (long long)r->release, r->index);
	char *log_dir = dv_xasprintf("%s/logs/%s", e->config.state_dir, r->svc->app->name);
	struct dv_replica_spec spec = {
		.app = r->svc->app->name,
		.service = r->svc->name,
		.release = release,
		.index = r->index,
		.name = name,
		.env = cs.env,
		.stop_timeout_ms = p->container->stop_timeout_ms ? p->container->stop_timeout_ms : 10000,
		.memory_limit = p->memory_limit,
		.cpu_limit = p->cpu_limit,
		.container = &cs.spec,
		.on_running = replica_running,
		.on_health = replica_docker_health,
		.log_dir = log_dir,
	};
	int rc = dv_runtime_start(e->rt, &spec, replica_exited, r, &r->rt, err);
	dv_engine_cspec_dispose(&cs);
	free(log_dir);
	free(r->adopt_id);
	r->adopt_id = NULL;
	if (rc != 0) {
		r->rt = NULL;
		return -1;
	}
	replica_started(r, "starting (container)");
	return 0;
}

static int replica_spawn(struct replica *r, char **err)
{
	struct dv_engine *e = r->svc->app->engine;
	const struct dv_plan_service *p = r->svc->plan;
	if (p->unsupported) {
		*err = dv_xstrdup(p->unsupported);
		return -1;
	}
	if (r->rt) {
		char *rerr = NULL;
		dv_runtime_remove(e->rt, r->rt, &rerr);
		free(rerr);
		r->rt = NULL;
	}
	if (p->container)
		return container_spawn(r, err);
	char **env;
	build_env(r, &env);
	/* A simple command line ("node server.js") is exec'd by the shell, so the
	 * replica's pid is the app itself: signals reach it directly and `davit
	 * ps` shows its pid. Lists, pipes and redirections keep the shell. */
	char *command = strpbrk(p->run, ";&|<>(){}`\n") ? dv_xstrdup(p->run) : dv_xasprintf("exec %s", p->run);
	char release[32], name[48];
	snprintf(release, sizeof release, "%lld", (long long)r->release);
	snprintf(name, sizeof name, "r%lld-%u", (long long)r->release, r->index);
	char *log_dir = dv_xasprintf("%s/logs/%s", e->config.state_dir, r->svc->app->name);
	struct dv_replica_spec spec = {
		.app = r->svc->app->name,
		.service = r->svc->name,
		.release = release,
		.index = r->index,
		.name = name,
		.command = command,
		.env = env,
		.workdir = p->workdir,
		.stop_timeout_ms = 10000,
		.memory_limit = p->memory_limit,
		.cpu_limit = p->cpu_limit,
		.log_dir = log_dir,
	};
	int rc = dv_runtime_start(e->rt, &spec, replica_exited, r, &r->rt, err);
	free(command);
	free(log_dir);
	free_env(env);
	if (rc != 0) {
		r->rt = NULL;
		return -1;
	}
	replica_started(r, "starting");
	start_health(r);
	return 0;
}

static struct replica *replica_new(struct service *s, unsigned index, int64_t release, char **err)
{
	struct dv_engine *e = s->app->engine;
	struct replica *r = dv_xcalloc(1, sizeof *r);
	r->svc = s;
	r->index = index;
	r->release = release;
	r->restart_timer.cb = restart_due;
	if (s->plan->port) {
		r->port = allocate_port(e);
		if (!r->port) {
			*err = dv_xstrdup("no free port left for a new replica");
			free(r);
			return NULL;
		}
	}
	return r;
}

/* Asks a replica to stop; it leaves its list when its exit callback runs. */
static void replica_stop(struct replica *r)
{
	struct dv_engine *e = r->svc->app->engine;
	r->leaving = true;
	dv_timer_cancel(e->config.loop, &r->restart_timer);
	if (r->hc) {
		dv_health_stop(r->hc);
		r->hc = NULL;
	}
	if (r->rt && r->state != R_EXITED && r->state != R_BACKOFF) {
		r->state = R_STOPPING;
		char *err = NULL;
		if (dv_runtime_stop(e->rt, r->rt, &err) != 0) {
			dv_log_warn("engine", "stopping %s#%u: %s", r->svc->name, r->index, err);
			free(err);
		}
	} else {
		/* Not running: remove it now. */
		struct service *s = r->svc;
		forget_replica(r);
		replica_list_remove(&s->active, r);
		replica_list_remove(&s->pending, r);
		replica_list_remove(&s->retired, r);
		replica_free(r);
		if (e->shutting_down)
			shutdown_check(e->config.loop, &e->shutdown_check);
	}
}

static void deferred_poll(struct dv_loop *loop, struct dv_timer *t)
{
	struct dv_engine *e = dv_container_of(t, struct dv_engine, deferred_timer);
	for (size_t i = 0; i < e->ndeferred;) {
		if (!e->shutting_down && !dv_proxy_routes_applied(e->config.proxy, e->deferred[i].gen)) {
			i++;
			continue;
		}
		struct replica *r = e->deferred[i].replica;
		e->deferred[i] = e->deferred[--e->ndeferred];
		replica_stop(r); /* may free r */
	}
	if (e->ndeferred)
		dv_timer_set(loop, t, dv_loop_update_now(loop) + 5);
}

/* Stops a replica once the route table of generation `gen` (which sends it
 * nothing) is in use by every proxy worker: stopping it earlier could cut a
 * request that a worker still routed to it with the previous table. */
static void stop_after_routes(struct dv_engine *e, struct replica *r, unsigned gen)
{
	r->leaving = true;
	e->deferred = dv_xrealloc(e->deferred, (e->ndeferred + 1) * sizeof *e->deferred);
	e->deferred[e->ndeferred].replica = r;
	e->deferred[e->ndeferred].gen = gen;
	e->ndeferred++;
	dv_timer_set(e->config.loop, &e->deferred_timer, loop_now(e) + 1);
}

static void append_log_tail_line(struct dv_replica *rep, const struct dv_log_line *line, void *arg)
{
	struct dv_strbuf *b = arg;
	if (!line)
		return;
	dv_strbuf_puts(b, "    | ");
	dv_strbuf_append(b, line->text, line->len);
	dv_strbuf_puts(b, "\n");
}

/* The last lines a replica printed, indented (for failure reports). */
static void replica_log_tail(struct replica *r, struct dv_strbuf *b, size_t lines)
{
	if (!r->rt)
		return;
	dv_runtime_logs_tail(r->svc->app->engine->rt, r->rt, lines, append_log_tail_line, b);
}

static void replica_exited(struct dv_replica *handle, int status, void *arg)
{
	struct replica *r = arg;
	struct service *s = r->svc;
	struct app *a = s->app;
	struct dv_engine *e = a->engine;
	r->last_exit = status;
	r->has_exit = true;
	if (r->hc) {
		dv_health_stop(r->hc);
		r->hc = NULL;
	}
	bool was_routed = r->state == R_HEALTHY && in_list(s->active, r);
	if (r->leaving) {
		forget_replica(r);
		replica_list_remove(&s->active, r);
		replica_list_remove(&s->pending, r);
		replica_list_remove(&s->retired, r);
		replica_free(r);
		if (e->shutting_down)
			shutdown_check(e->config.loop, &e->shutdown_check);
		return;
	}
	char how[96];
	if (status != DV_REPLICA_STATUS_UNKNOWN && WIFEXITED(status))
		snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
	else if (status != DV_REPLICA_STATUS_UNKNOWN && WIFSIGNALED(status))
		snprintf(how, sizeof how, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(how, sizeof how, "exited");
	snprintf(r->last_health, sizeof r->last_health, "%s", how);
	r->state = R_EXITED;
	r->crashed_once = true;
	event(e, a->name, "replica.exited", "%s#%u (release %lld) %s", s->name, r->index, (long long)r->release, how);

	/* A new replica that died at once because its port was taken between
	 * our check and its listen (another program, another daemon) gets a new
	 * port once instead of failing the deploy. */
	if (a->deploy && a->deploy->current == s && in_list(s->pending, r) && r->port && !r->port_retried &&
	    unix_ms() - r->started_at < 5000 && !port_free(r->port)) {
		uint16_t old_port = r->port;
		r->port = 0;
		r->port = allocate_port(e);
		r->port_retried = true;
		char *serr = NULL;
		if (r->port && replica_spawn(r, &serr) == 0) {
			dv_log_warn("engine", "%s/%s#%u: port %u was taken by another process; started again on port %u",
			            a->name, s->name, r->index, old_port, r->port);
			return;
		}
		free(serr);
	}
	/* A new replica that dies while its deploy waits for it fails the deploy. */
	if (a->deploy && a->deploy->current == s && in_list(s->pending, r)) {
		struct dv_strbuf why;
		dv_strbuf_init(&why);
		dv_strbuf_printf(&why, "service %s: new replica %u %s before becoming healthy; its last output:\n", s->name,
		                 r->index, how);
		replica_log_tail(r, &why, LOG_TAIL_ON_FAILURE);
		deploy_fail(a->deploy, why.data);
		dv_strbuf_dispose(&why);
		return;
	}
	if (was_routed)
		publish_routes(e);
	if (in_list(s->retired, r) || !s->plan) {
		/* A replaced replica that died while draining: nothing to restart. */
		forget_replica(r);
		replica_list_remove(&s->retired, r);
		replica_list_remove(&s->active, r);
		replica_free(r);
		return;
	}
	const struct dv_plan_service *p = s->plan;
	bool failed = status == DV_REPLICA_STATUS_UNKNOWN || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
	bool restart = !s->stopped_by_user && !e->shutting_down &&
	               (p->restart == DV_PLAN_RESTART_ALWAYS || (p->restart == DV_PLAN_RESTART_ON_FAILURE && failed));
	if (p->restart == DV_PLAN_RESTART_ON_FAILURE && p->restart_max && r->restarts >= p->restart_max)
		restart = false;
	if (!restart) {
		record_replica(r);
		return;
	}
	struct dv_restart_policy policy;
	memset(&policy, 0, sizeof policy);
	uint64_t now = loop_now(e);
	bool crashloop = false;
	uint64_t delay = dv_restart_note_exit(&policy, &r->restart_state, now, (uint64_t)(unix_ms() - r->started_at),
	                                      &crashloop);
	if (crashloop) {
		snprintf(r->last_health, sizeof r->last_health, "crash loop (%s); next restart in %llu ms", how,
		         (unsigned long long)delay);
		event(e, a->name, "replica.crashloop", "%s#%u keeps exiting (%s)", s->name, r->index, how);
	}
	r->restarts++;
	r->state = R_BACKOFF;
	record_replica(r);
	dv_timer_set(e->config.loop, &r->restart_timer, now + delay);
}

static void health_changed(struct dv_health_check *check, enum dv_health_state state, const char *result, void *arg)
{
	struct replica *r = arg;
	struct service *s = r->svc;
	struct app *a = s->app;
	snprintf(r->last_health, sizeof r->last_health, "%s", result ? result : "");
	enum replica_state before = r->state;
	if (state == DV_HEALTH_HEALTHY && r->docker_unhealthy)
		r->state = R_UNHEALTHY; /* Docker's own check still fails */
	else if (state == DV_HEALTH_HEALTHY)
		r->state = R_HEALTHY;
	else if (state == DV_HEALTH_UNHEALTHY)
		r->state = R_UNHEALTHY;
	else
		return;
	if (before == r->state)
		return;
	record_replica(r);
	if (in_list(s->active, r))
		publish_routes(a->engine); /* routed set changed */
	if (r->state == R_UNHEALTHY && in_list(s->active, r))
		event(a->engine, a->name, "replica.unhealthy", "%s#%u: %s", s->name, r->index, r->last_health);
	if (a->deploy && a->deploy->current == s && a->deploy->phase == D_WAIT_HEALTHY) {
		if (r->state == R_HEALTHY)
			a->deploy->last_healthy_ns = dv_now_ns();
		deploy_step(a->deploy);
	}
}

/* ------------------------------------------------------------------ routes */

/* The edge policy of one route of a service (proxy/edge.h): the defaults,
 * the service's x-davit edge options, then its per_domain ones for `host`.
 * Keyed by app, service and route, so rate limits and bans survive table
 * rebuilds. NULL (logged) if it cannot be built. */
static struct dv_edge_policy *route_policy(struct service *s, const char *host, const char *route)
{
	const struct dv_plan_service *p = s->plan;
	char *opts = NULL;
	if (p->static_dir)
		dv_edge_options_add(&opts, "static", p->static_dir);
	char *joined = dv_xasprintf("%s %s", opts ? opts : "", p->edge ? p->edge : "");
	free(opts);
	opts = joined;
	for (char **d = p->edge_domains; d && d[0] && d[1]; d += 2) {
		if (strcasecmp(d[0], host) == 0) {
			joined = dv_xasprintf("%s %s", opts, d[1]);
			free(opts);
			opts = joined;
		}
	}
	char name[600], *err = NULL;
	snprintf(name, sizeof name, "%s/%s %s", s->app->name, s->name, route);
	struct dv_edge_policy *policy = dv_edge_policy_parse(opts, name, &err);
	if (!policy) {
		dv_log_warn("engine", "route %s: %s", name, err);
		free(err);
	}
	free(opts);
	return policy;
}

/* A static service: routes to its directory, served by the proxy. */
static void add_static_routes(struct dv_route_table *t, struct service *s)
{
	const struct dv_plan_service *p = s->plan;
	char local[300];
	snprintf(local, sizeof local, "%s.%s.localhost", s->name, s->app->name);
	for (char **d = p->domains; ; d++) {
		const char *route = d && *d ? *d : local;
		char host[256];
		const char *slash = strchr(route, '/');
		size_t hl = slash ? (size_t)(slash - route) : strlen(route);
		if (hl < sizeof host) {
			memcpy(host, route, hl);
			host[hl] = '\0';
			struct dv_edge_policy *policy = route_policy(s, host, route);
			char *err = NULL;
			if (policy && dv_route_table_add_policy(t, host, slash ? slash : "/", NULL, policy, &err) != 0) {
				dv_log_warn("engine", "route %s for %s/%s: %s", route, s->app->name, s->name, err);
				free(err);
			}
			dv_edge_policy_unref(policy);
		}
		if (route == local)
			break;
	}
}

static void add_service_routes(struct dv_route_table *t, struct service *s)
{
	const struct dv_plan_service *p = s->plan;
	if (p && p->static_dir && !s->stopped_by_user) {
		add_static_routes(t, s);
		return;
	}
	if (!p || !p->port || s->stopped_by_user)
		return;
	char name[256];
	snprintf(name, sizeof name, "%s/%s", s->app->name, s->name);
	struct dv_upstream_pool *pool = dv_upstream_pool_new(name, DV_BALANCE_LEAST_CONN);
	for (struct replica *r = s->active; r; r = r->next) {
		if (r->state != R_HEALTHY || r->leaving)
			continue;
		struct dv_sockaddr sa;
		replica_address(r, &sa);
		dv_upstream_pool_add(pool, &sa);
	}
	char *err = NULL;
	bool any = false;
	for (char **d = p->domains; d && *d; d++) {
		char host[256];
		const char *slash = strchr(*d, '/');
		size_t hl = slash ? (size_t)(slash - *d) : strlen(*d);
		if (hl >= sizeof host)
			continue;
		memcpy(host, *d, hl);
		host[hl] = '\0';
		struct dv_edge_policy *policy = route_policy(s, host, *d);
		if (dv_route_table_add_policy(t, host, slash ? slash : "/", pool, policy, &err) != 0) {
			dv_log_warn("engine", "route %s for %s: %s", *d, name, err);
			dv_free(&err);
		}
		dv_edge_policy_unref(policy);
		any = true;
	}
	/* Every service with a port is also reachable as SERVICE.APP.localhost. */
	char local[300];
	snprintf(local, sizeof local, "%s.%s.localhost", s->name, s->app->name);
	struct dv_edge_policy *local_policy = route_policy(s, local, local);
	if (dv_route_table_add_policy(t, local, "/", pool, local_policy, &err) != 0)
		dv_free(&err);
	dv_edge_policy_unref(local_policy);
	(void)any;
	/* Keep a reference (see struct service); forget older pools that have
	 * nothing in flight: no new request can start on them. */
	size_t k = 0;
	for (size_t i = 0; i < s->npools; i++) {
		if (atomic_load(&s->pools[i]->inflight) == 0)
			dv_upstream_pool_unref(s->pools[i]);
		else
			s->pools[k++] = s->pools[i];
	}
	s->pools = dv_xrealloc(s->pools, (k + 1) * sizeof *s->pools);
	s->pools[k++] = pool; /* our reference from dv_upstream_pool_new */
	s->npools = k;
}

static void service_free(struct service *s)
{
	for (size_t i = 0; i < s->npools; i++)
		dv_upstream_pool_unref(s->pools[i]);
	free(s->pools);
	free(s->name);
	free(s);
}

/* Tells the certificate manager which host names the services use. */
static void report_domains(struct dv_engine *e)
{
	struct dv_engine_domain *hosts = NULL;
	size_t n = 0;
	for (struct app *a = e->apps; a; a = a->next)
		for (size_t i = 0; i < a->nservices; i++) {
			const struct dv_plan_service *p = a->services[i]->plan;
			for (char **d = p ? p->domains : NULL; d && *d; d++) {
				const char *slash = strchr(*d, '/');
				char *h = slash ? dv_xstrndup(*d, (size_t)(slash - *d)) : dv_xstrdup(*d);
				bool dup = false;
				for (size_t k = 0; k < n && !dup; k++)
					dup = strcmp(hosts[k].host, h) == 0;
				if (dup) {
					free(h);
					continue;
				}
				hosts = dv_xrealloc(hosts, (n + 1) * sizeof *hosts);
				hosts[n++] = (struct dv_engine_domain){h, p->tls_cert, p->tls_key};
			}
		}
	e->config.domains_changed(e->config.domains_arg, hosts, n);
	for (size_t k = 0; k < n; k++)
		free((char *)hosts[k].host);
	free(hosts);
}

static unsigned publish_routes(struct dv_engine *e)
{
	struct dv_route_table *t = dv_route_table_new();
	for (struct app *a = e->apps; a; a = a->next)
		for (size_t i = 0; i < a->nservices; i++)
			add_service_routes(t, a->services[i]);
	if (e->config.domains_changed)
		report_domains(e);
	return dv_proxy_set_routes(e->config.proxy, t);
}

/* ------------------------------------------------------------------ deploys */

static void deploy_free(struct deploy *d)
{
	struct dv_loop *loop = d->app->engine->config.loop;
	dv_timer_cancel(loop, &d->health_timer);
	dv_timer_cancel(loop, &d->deadline_timer);
	dv_timer_cancel(loop, &d->drain_timer);
	dv_timer_cancel(loop, &d->stop_old_timer);
	free(d->stopped_first);
	dv_plan_free(d->plan);
	free(d->switched);
	free(d->added);
	dv_strbuf_dispose(&d->report);
	free(d->failure);
	free(d);
}

static void store_step(struct deploy *d, const char *service, enum dv_store_step_state state, const char *msg)
{
	char *err = NULL;
	if (dv_store_step_append(d->app->engine->config.store, d->id, service, state, msg, NULL, &err) != 0)
		dv_log_warn("engine", "recording a deploy step: %s", err);
	free(err);
}

static void store_transition(struct deploy *d, enum dv_store_deploy_state to, const char *error)
{
	char *err = NULL;
	if (dv_store_deployment_transition(d->app->engine->config.store, d->id, to, error, 0, NULL, &err) != 0)
		dv_log_warn("engine", "recording deploy %lld state: %s", (long long)d->id, err);
	free(err);
}

static void write_urls(struct app *a, struct dv_strbuf *b, const char *http_url)
{
	/* http_url is http://ADDR:PORT; print http://DOMAIN:PORT/ for each route. */
	const char *port = strrchr(http_url, ':');
	bool default_port = port && strcmp(port, ":80") == 0;
	for (size_t i = 0; i < a->plan->n; i++) {
		const struct dv_plan_service *p = &a->plan->services[i];
		if (!p->port && !p->static_dir)
			continue;
		dv_strbuf_printf(b, "  %-12s", p->name);
		bool first = true;
		for (char **d = p->domains; d && *d; d++) {
			dv_strbuf_printf(b, "%shttp://%s%s/", first ? " " : ", ", *d, default_port ? "" : port);
			first = false;
		}
		if (first)
			dv_strbuf_printf(b, " http://%s.%s.localhost%s/", p->name, a->name, default_port ? "" : port);
		dv_strbuf_puts(b, "\n");
	}
}

static void deploy_finish(struct deploy *d, bool ok)
{
	struct app *a = d->app;
	struct dv_engine *e = a->engine;
	struct dv_strbuf text, json;
	dv_strbuf_init(&text);
	dv_strbuf_init(&json);
	if (ok) {
		dv_strbuf_printf(&text, "%s release %lld of %s: %s", d->rollback_of_release ? "rolled back to" : "deployed",
		                 (long long)d->release, a->name,
		                 d->changed ? "" : "nothing changed, ");
		dv_strbuf_printf(&text, "%u service%s replaced\n", d->changed, d->changed == 1 ? "" : "s");
		dv_strbuf_append(&text, d->report.data ? d->report.data : "", d->report.len);
		dv_strbuf_puts(&text, "URLs (through the davit proxy):\n");
		write_urls(a, &text, e->config.http_url);
	} else {
		if (a->release)
			dv_strbuf_printf(&text, "deploy of release %lld of %s FAILED and was rolled back; release %lld still serves.\n",
			                 (long long)d->release, a->name, (long long)a->release);
		else
			dv_strbuf_printf(&text, "deploy of release %lld of %s FAILED; nothing of it runs (it is the app's first release).\n",
			                 (long long)d->release, a->name);
		dv_strbuf_append(&text, d->report.data ? d->report.data : "", d->report.len);
		dv_strbuf_printf(&text, "why: %s\n", d->failure ? d->failure : "unknown");
	}
	struct dv_json j;
	dv_json_init(&j, &json);
	dv_json_object_begin(&j);
	dv_json_key(&j, "ok");
	dv_json_bool(&j, ok);
	dv_json_key(&j, "app");
	dv_json_string(&j, a->name);
	dv_json_key(&j, "deployment");
	dv_json_int(&j, d->id);
	dv_json_key(&j, "release");
	dv_json_int(&j, d->release);
	dv_json_key(&j, "serving_release");
	dv_json_int(&j, a->release);
	dv_json_key(&j, "services_replaced");
	dv_json_uint(&j, d->changed);
	dv_json_key(&j, "error");
	dv_json_string(&j, ok ? NULL : d->failure);
	dv_json_key(&j, "report");
	dv_json_string(&j, text.data);
	dv_json_object_end(&j);
	dv_strbuf_puts(&json, "\n");
	a->deploy = NULL;
	if (d->done)
		d->done(d->done_arg, ok, text.data, json.data);
	dv_strbuf_dispose(&text);
	dv_strbuf_dispose(&json);
	deploy_free(d);
}

/* Stops every retired replica (after the drain) and completes the deploy. */
static void drain_poll(struct dv_loop *loop, struct dv_timer *t)
{
	struct deploy *d = dv_container_of(t, struct deploy, drain_timer);
	struct app *a = d->app;
	uint64_t now = dv_loop_update_now(loop);
	/* Until every proxy worker uses the new table, a request may still start
	 * on an old pool: only then does "nothing in flight" mean drained. */
	bool busy = a->drain_gen && !dv_proxy_routes_applied(a->engine->config.proxy, a->drain_gen);
	for (size_t i = 0; i < a->ndraining; i++)
		if (atomic_load(&a->draining[i]->inflight) > 0)
			busy = true;
	if (busy && now < d->drain_deadline) {
		dv_timer_set(loop, t, now + DRAIN_POLL_MS);
		return;
	}
	for (size_t i = 0; i < a->ndraining; i++)
		dv_upstream_pool_unref(a->draining[i]);
	free(a->draining);
	a->draining = NULL;
	a->ndraining = 0;
	for (size_t i = 0; i < a->nservices; i++) {
		struct service *s = a->services[i];
		struct replica *next;
		for (struct replica *r = s->retired; r; r = next) {
			next = r->next;
			if (!r->leaving)
				replica_stop(r);
		}
	}
	/* Services the new release no longer has: gone with their replicas. */
	for (size_t i = 0; i < a->nservices;) {
		struct service *s = a->services[i];
		if (!dv_plan_service(d->plan, s->name)) {
			struct replica *next;
			for (struct replica *r = s->active; r; r = next) {
				next = r->next;
				replica_list_remove(&s->active, r);
				r->next = s->retired;
				s->retired = r;
				if (!r->leaving)
					replica_stop(r);
			}
			if (!s->retired && !s->pending) {
				service_free(s);
				a->services[i] = a->services[--a->nservices];
				continue;
			}
			s->plan = NULL; /* its plan goes with the old release */
		}
		i++;
	}
	/* The new plan becomes the app's: re-point every service's plan. */
	dv_plan_free(a->plan);
	a->plan = d->plan;
	d->plan = NULL;
	for (size_t i = 0; i < a->nservices; i++) {
		const struct dv_plan_service *p = dv_plan_service(a->plan, a->services[i]->name);
		a->services[i]->plan = (struct dv_plan_service *)p;
	}
	a->release = d->release;
	store_transition(d, DV_STORE_DEPLOY_SUCCEEDED, NULL);
	event(a->engine, a->name, "deploy.succeeded", "release %lld (%u services replaced)", (long long)d->release,
	      d->changed);
	prune_images(a);
	publish_routes(a->engine);
	deploy_finish(d, true);
}

/* Images of releases beyond the newest keep_images go (the serving and
 * previous releases' never), so that disks do not fill. */
static void prune_images(struct app *a)
{
	struct dv_runtime *d = dv_mux_docker_if_any(a->engine->rt);
	bool any = false;
	for (size_t i = 0; a->plan && i < a->plan->n; i++)
		if (a->plan->services[i].container)
			any = true;
	if (!d || !any)
		return;
	/* Kept: the serving and previous releases, and every release a replica
	 * still runs (an unchanged service keeps its older release's image). */
	size_t n = 0, cap = 8;
	char **in_use = dv_xcalloc(cap, sizeof *in_use);
	in_use[n++] = dv_xasprintf("%lld", (long long)a->release);
	in_use[n++] = dv_xasprintf("%lld", (long long)(a->deploy ? a->deploy->previous : 0));
	for (size_t i = 0; i < a->nservices; i++)
		for (struct replica *r = a->services[i]->active; r; r = r->next) {
			if (n + 2 > cap)
				in_use = dv_xrealloc(in_use, (cap *= 2) * sizeof *in_use);
			in_use[n++] = dv_xasprintf("%lld", (long long)r->release);
		}
	in_use[n] = NULL;
	dv_docker_prune_images(d, a->name, a->engine->config.keep_images ? a->engine->config.keep_images : 5, in_use, NULL,
	                       NULL);
	for (size_t i = 0; i < n; i++)
		free(in_use[i]);
	free(in_use);
}

/* Moves a service's pending replicas into service: they become active, the
 * old active ones retire (still running, no longer routed). */
static void switch_service(struct deploy *d, struct service *s)
{
	struct app *a = d->app;
	store_step(d, s->name, DV_STORE_STEP_SWITCHING, NULL);
	struct replica *old = s->active;
	s->active = s->pending;
	s->pending = NULL;
	/* The pools that routed to the old replicas drain from now on. */
	a->draining = dv_xrealloc(a->draining, (a->ndraining + s->npools + 1) * sizeof *a->draining);
	for (size_t i = 0; i < s->npools; i++)
		a->draining[a->ndraining++] = s->pools[i];
	s->npools = 0;
	while (old) {
		struct replica *r = old;
		old = old->next;
		r->next = s->retired;
		s->retired = r;
	}
	a->drain_gen = publish_routes(a->engine);
	/* How long the switch took after the last new replica passed its
	 * health check (bench/controlplane.sh reads this line). */
	double switch_ms = d->last_healthy_ns ? (double)(dv_now_ns() - d->last_healthy_ns) / 1e6 : 0;
	dv_log_info("engine", "%s/%s: traffic switched %.3f ms after the health check passed", a->name, s->name,
	            switch_ms);
	store_step(d, s->name, DV_STORE_STEP_DRAINING, NULL);
	d->switched = dv_xrealloc(d->switched, (d->nswitched + 1) * sizeof *d->switched);
	d->switched[d->nswitched++] = s;
	d->changed++;
	dv_strbuf_printf(&d->report, "  %-12s switched to release %lld (%u replica%s healthy)\n", s->name,
	                 (long long)d->release, s->plan->replicas, s->plan->replicas == 1 ? "" : "s");
}

static void deploy_health_timeout(struct dv_loop *loop, struct dv_timer *t)
{
	struct deploy *d = dv_container_of(t, struct deploy, health_timer);
	struct service *s = d->current;
	/* A container still being built or pulled is not late yet: its own
	 * start gates are bounded, the deploy's deadline bounds the rest. */
	for (struct replica *r = s->pending; r; r = r->next)
		if (s->plan->container && r->state == R_STARTING && !r->hc && r->rt) {
			dv_timer_set(loop, t, dv_loop_update_now(loop) + d->app->engine->config.health_timeout_ms);
			return;
		}
	struct dv_strbuf why;
	dv_strbuf_init(&why);
	dv_strbuf_printf(&why, "service %s: new replicas did not become healthy within %llu ms", s->name,
	                 (unsigned long long)d->app->engine->config.health_timeout_ms);
	for (struct replica *r = s->pending; r; r = r->next) {
		if (r->state == R_HEALTHY)
			continue;
		dv_strbuf_printf(&why, "\n  replica %u: %s; its last output:\n", r->index, r->last_health);
		replica_log_tail(r, &why, LOG_TAIL_ON_FAILURE);
		if (r->port && strstr(r->last_health, "refused"))
			dv_strbuf_printf(&why, "  hint: nothing listens on 127.0.0.1:%u: the app must listen on the port davit "
			                       "gives it in $PORT (write $$PORT in the compose file)\n",
			                 r->port);
		break;
	}
	deploy_fail(d, why.data);
	dv_strbuf_dispose(&why);
}

static void deploy_deadline(struct dv_loop *loop, struct dv_timer *t)
{
	struct deploy *d = dv_container_of(t, struct deploy, deadline_timer);
	deploy_fail(d, "the deploy took longer than its hard deadline");
}

/* Starts the new version of service `s` (plan p) beside the old one. */
static int start_new_replicas(struct deploy *d, struct service *s, char **err)
{
	for (unsigned i = 0; i < s->plan->replicas; i++) {
		struct replica *r = replica_new(s, i, d->release, err);
		if (!r)
			return -1;
		r->next = s->pending;
		s->pending = r;
		if (replica_spawn(r, err) != 0)
			return -1;
	}
	return 0;
}

static void stop_old_poll(struct dv_loop *loop, struct dv_timer *t);

/* A stop-first service (containers with volumes or fixed host ports): its
 * old replicas leave the route table and stop; the new ones start once
 * they are gone (stop_old_poll). A failure starts the old release again. */
static void stop_first_begin(struct deploy *d, struct service *s)
{
	struct dv_engine *e = d->app->engine;
	dv_strbuf_printf(&d->report, "  %-12s stop-first: %s; its old replicas stopped before the new ones started\n",
	                 s->name, s->plan->container->stop_first_why);
	d->stopped_first = dv_xrealloc(d->stopped_first, (d->nstopped_first + 1) * sizeof *d->stopped_first);
	d->stopped_first[d->nstopped_first++] = s;
	struct replica *old = s->active;
	s->active = NULL;
	while (old) {
		struct replica *r = old;
		old = old->next;
		r->next = s->retired;
		s->retired = r;
	}
	unsigned gen = publish_routes(e);
	for (struct replica *r = s->retired; r; r = r->next)
		if (!r->leaving)
			stop_after_routes(e, r, gen);
	d->current = s;
	d->phase = D_STOP_OLD;
	dv_timer_set(e->config.loop, &d->stop_old_timer, loop_now(e) + DRAIN_POLL_MS);
}

static void stop_old_poll(struct dv_loop *loop, struct dv_timer *t)
{
	struct deploy *d = dv_container_of(t, struct deploy, stop_old_timer);
	struct service *s = d->current;
	if (d->phase != D_STOP_OLD)
		return;
	if (s->retired) {
		dv_timer_set(loop, t, dv_loop_update_now(loop) + DRAIN_POLL_MS);
		return;
	}
	char *err = NULL;
	if (start_new_replicas(d, s, &err) != 0) {
		char *why = dv_xasprintf("service %s: cannot start: %s", s->name, err);
		free(err);
		deploy_fail(d, why);
		free(why);
		return;
	}
	store_step(d, s->name, DV_STORE_STEP_WAITING_HEALTHY, NULL);
	d->phase = D_WAIT_HEALTHY;
	dv_timer_set(loop, &d->health_timer, dv_loop_update_now(loop) + d->app->engine->config.health_timeout_ms);
	deploy_step(d);
}

/* Advances the deploy as far as it can go now. */
static void deploy_step(struct deploy *d)
{
	struct app *a = d->app;
	struct dv_engine *e = a->engine;
	struct dv_loop *loop = e->config.loop;
	for (;;) {
		if (d->phase == D_WAIT_HEALTHY) {
			struct service *s = d->current;
			bool all = s->pending != NULL || s->plan->static_dir; /* static: nothing to start */
			for (struct replica *r = s->pending; r; r = r->next)
				if (r->state != R_HEALTHY)
					all = false;
			if (!all)
				return;
			dv_timer_cancel(loop, &d->health_timer);
					/* Keep the replaced pool so we can wait for its in-flight requests. */
			switch_service(d, s);
			d->current = NULL;
			d->phase = D_START_NEXT;
			continue;
		}
		if (d->phase != D_START_NEXT)
			return;
		/* Next service whose definition changed (or that is new). */
		while (d->next < d->plan->n) {
			struct dv_plan_service *p = &d->plan->services[d->next++];
			struct service *s = service_find(a, p->name);
			bool changed = !s || !s->plan || strcmp(s->plan->json, p->json) != 0 || !s->active ||
			               s->stopped_by_user || s->force_replace;
			if (!changed)
				continue;
			if (!s) {
				s = service_add(a, p->name, p);
				d->added = dv_xrealloc(d->added, (d->nadded + 1) * sizeof *d->added);
				d->added[d->nadded++] = s;
			}
			/* The service runs the new plan from now on (restarts of the
			 * old replicas use the old one: they keep their pointer). */
			s->plan = p;
			s->stopped_by_user = false;
			s->force_replace = false;
			store_step(d, s->name, DV_STORE_STEP_STARTING, NULL);
			if (p->container && p->container->stop_first && s->active) {
				stop_first_begin(d, s);
				return;
			}
			char *err = NULL;
			if (start_new_replicas(d, s, &err) != 0) {
				char *why = dv_xasprintf("service %s: cannot start: %s", s->name, err);
				free(err);
				d->current = s;
				deploy_fail(d, why);
				free(why);
				return;
			}
			store_step(d, s->name, DV_STORE_STEP_WAITING_HEALTHY, NULL);
			d->current = s;
			d->phase = D_WAIT_HEALTHY;
			uint64_t now = dv_loop_update_now(loop);
			dv_timer_set(loop, &d->health_timer, now + e->config.health_timeout_ms);
			break;
		}
		if (d->phase == D_WAIT_HEALTHY)
			continue; /* the new replicas may already be healthy (no check) */
		/* Every service is switched: drain the old replicas, then stop them. */
		d->phase = D_DRAIN;
		dv_timer_cancel(loop, &d->deadline_timer);
		d->drain_deadline = dv_loop_update_now(loop) + e->config.drain_timeout_ms;
		drain_poll(loop, &d->drain_timer);
		return;
	}
}

static void deploy_fail(struct deploy *d, const char *why)
{
	struct app *a = d->app;
	struct dv_engine *e = a->engine;
	if (d->phase == D_DONE)
		return;
	d->phase = D_DONE;
	free(d->failure);
	d->failure = dv_xstrdup(why);
	store_transition(d, DV_STORE_DEPLOY_ROLLING_BACK, why);
	event(e, a->name, "deploy.failed", "release %lld: %s", (long long)d->release, why);
	/* Stop every new replica that is not serving yet. */
	for (size_t i = 0; i < a->nservices; i++) {
		struct service *s = a->services[i];
		struct replica *next;
		for (struct replica *r = s->pending; r; r = next) {
			next = r->next;
			if (!r->leaving)
				replica_stop(r);
		}
	}
	/* Switch already switched services back to their old replicas; the
	 * newer ones stop once the proxy uses the table below. */
	for (size_t k = 0; k < d->nswitched; k++) {
		struct service *s = d->switched[k];
		struct replica *newer = s->active;
		s->active = s->retired;
		s->retired = NULL;
		for (struct replica *r = newer, *next; r; r = next) {
			next = r->next;
			r->next = s->retired;
			s->retired = r;
			r->leaving = true; /* stopped below, after the publish */
		}
		dv_strbuf_printf(&d->report, "  %-12s switched back to release %lld\n", s->name, (long long)a->release);
	}
	/* Services back on their old plan. */
	for (size_t i = 0; i < a->nservices; i++) {
		struct service *s = a->services[i];
		const struct dv_plan_service *old = dv_plan_service(a->plan, s->name);
		if (old)
			s->plan = (struct dv_plan_service *)old;
	}
	/* Stop-first services without replicas now: their old release again. */
	for (size_t k = 0; k < d->nstopped_first; k++) {
		struct service *s = d->stopped_first[k];
		if (s->active || !s->plan || !dv_plan_service(a->plan, s->name))
			continue;
		for (unsigned i = 0; i < s->plan->replicas; i++) {
			char *rerr = NULL;
			struct replica *r = replica_new(s, i, a->release, &rerr);
			if (!r) {
				free(rerr);
				continue;
			}
			r->next = s->active;
			s->active = r;
			if (replica_spawn(r, &rerr) != 0) {
				dv_log_error("engine", "%s/%s#%u: %s", a->name, s->name, i, rerr);
				free(rerr);
				r->state = R_BACKOFF;
				dv_timer_set(e->config.loop, &r->restart_timer, loop_now(e) + 2000);
			}
		}
		dv_strbuf_printf(&d->report, "  %-12s started release %lld again (stop-first)\n", s->name, (long long)a->release);
	}
	/* Services this deploy added: their replicas are stopping; drop them
	 * from routing by giving them no plan port (they disappear once gone). */
	for (size_t k = 0; k < d->nadded; k++) {
		struct service *s = d->added[k];
		s->stopped_by_user = true;
	}
	unsigned gen = publish_routes(e);
	for (size_t k = 0; k < d->nswitched; k++)
		for (struct replica *r = d->switched[k]->retired; r; r = r->next)
			if (r->state != R_STOPPING)
				stop_after_routes(e, r, gen);
	for (size_t i = 0; i < a->ndraining; i++)
		dv_upstream_pool_unref(a->draining[i]);
	free(a->draining);
	a->draining = NULL;
	a->ndraining = 0;
	store_transition(d, DV_STORE_DEPLOY_ROLLED_BACK, NULL);
	/* The added services' plans live in d->plan, which is freed now. */
	for (size_t k = 0; k < d->nadded; k++) {
		struct service *s = d->added[k];
		s->plan = NULL;
	}
	/* Remove added services whose replicas are all gone already. */
	for (size_t i = 0; i < a->nservices;) {
		struct service *s = a->services[i];
		if (!s->plan && !s->active && !s->pending && !s->retired) {
			service_free(s);
			a->services[i] = a->services[--a->nservices];
			continue;
		}
		i++;
	}
	deploy_finish(d, false);
}

/* Starts a deploy of release `release` (already stored) of app `name`. */
static int deploy_start(struct dv_engine *e, const char *app_name, int64_t release, bool is_rollback,
                        const char *warnings, dv_engine_done_cb done, void *arg, char **err)
{
	struct dv_store_release *rel = NULL;
	struct dv_store_deployment *dep = NULL;
	struct dv_plan *plan = NULL;
	int rc = -1;
	if (dv_store_release_get(e->config.store, app_name, e->config.environment, release, &rel, err) != 0)
		goto out;
	plan = dv_plan_from_json(rel->compose_json, strlen(rel->compose_json), e->config.environment, err);
	if (!plan)
		goto out;
	for (size_t i = 0; i < plan->n; i++) {
		if (plan->services[i].unsupported) {
			*err = dv_xstrdup(plan->services[i].unsupported);
			goto out;
		}
	}
	struct app *a = app_get_or_create(e, app_name);
	if (a->deploy) {
		*err = dv_xasprintf("a deploy of %s is already running (deployment %lld); wait for it to finish", app_name,
		                    (long long)a->deploy->id);
		goto out;
	}
	int64_t deadline = unix_ms() + (int64_t)e->config.deploy_timeout_ms;
	if (dv_store_deployment_create(e->config.store, app_name, e->config.environment, release, deadline, &dep, err) != 0)
		goto out;
	struct deploy *d = dv_xcalloc(1, sizeof *d);
	d->app = a;
	d->id = dep->id;
	d->release = release;
	d->previous = dep->previous_release;
	d->plan = plan;
	plan = NULL;
	d->done = done;
	d->done_arg = arg;
	d->rollback_of_release = is_rollback;
	d->health_timer.cb = deploy_health_timeout;
	d->deadline_timer.cb = deploy_deadline;
	d->drain_timer.cb = drain_poll;
	d->stop_old_timer.cb = stop_old_poll;
	dv_strbuf_init(&d->report);
	if (warnings && *warnings)
		dv_strbuf_puts(&d->report, warnings);
	a->deploy = d;
	char *terr = NULL;
	if (dv_store_deployment_transition(e->config.store, d->id, DV_STORE_DEPLOY_RUNNING, NULL, deadline, NULL, &terr) != 0) {
		dv_log_warn("engine", "deploy %lld: %s", (long long)d->id, terr);
		free(terr);
	}
	event(e, app_name, "deploy.started", "release %lld (deployment %lld)", (long long)release, (long long)d->id);
	if (is_rollback) /* counted and notified by obs */
		event(e, app_name, "rollback.started", "back to release %lld", (long long)release);
	dv_timer_set(e->config.loop, &d->deadline_timer, loop_now(e) + e->config.deploy_timeout_ms);
	d->phase = D_START_NEXT;
	deploy_step(d);
	rc = 0;
out:
	dv_store_release_free(rel);
	dv_store_deployment_free(dep);
	dv_plan_free(plan);
	return rc;
}

/* ------------------------------------------------------------------ public API */

struct dv_engine *dv_engine_new(const struct dv_engine_config *config, char **err)
{
	struct dv_engine *e = dv_xcalloc(1, sizeof *e);
	e->config = *config;
	if (!e->config.port_base)
		e->config.port_base = 20000;
	/* Start at a point that depends on the pid, so that several daemons on
	 * one machine (tests, a staging daemon) rarely pick the same port at the
	 * same moment (each port is checked free, but only just before use). */
	e->next_port = (uint16_t)(e->config.port_base + (unsigned)getpid() * 37u % 10000u);
	struct dv_runtime *process = dv_process_new(config->loop, NULL, err);
	if (!process) {
		free(e);
		return NULL;
	}
	struct dv_docker_options dopts = {.state_dir = config->state_dir};
	e->rt = dv_mux_new(config->loop, process, &dopts);
	e->shutdown_check.cb = shutdown_check;
	e->probe_timer.cb = fast_probe;
	e->deferred_timer.cb = deferred_poll;
	return e;
}

static bool any_replica_left(struct dv_engine *e)
{
	for (struct app *a = e->apps; a; a = a->next)
		for (size_t i = 0; i < a->nservices; i++)
			if (a->services[i]->active || a->services[i]->pending || a->services[i]->retired)
				return true;
	return false;
}

static void shutdown_check(struct dv_loop *loop, struct dv_timer *t)
{
	struct dv_engine *e = dv_container_of(t, struct dv_engine, shutdown_check);
	if (!e->shutting_down || any_replica_left(e) || !e->shutdown_done)
		return;
	void (*done)(void *) = e->shutdown_done;
	e->shutdown_done = NULL;
	done(e->shutdown_arg);
}

void dv_engine_shutdown(struct dv_engine *e, void (*done)(void *), void *arg)
{
	e->shutting_down = true;
	e->shutdown_done = done;
	e->shutdown_arg = arg;
	for (struct app *a = e->apps; a; a = a->next) {
		if (a->deploy)
			deploy_fail(a->deploy, "the daemon is shutting down");
		for (size_t i = 0; i < a->nservices; i++) {
			struct service *s = a->services[i];
			struct replica *lists[3] = {s->active, s->pending, s->retired};
			for (int l = 0; l < 3; l++) {
				struct replica *next;
				for (struct replica *r = lists[l]; r; r = next) {
					next = r->next;
					if (!r->leaving)
						replica_stop(r);
				}
			}
		}
	}
	/* Deferred stops happen now (the proxy is stopping too). */
	if (e->ndeferred)
		deferred_poll(e->config.loop, &e->deferred_timer);
	/* Replicas are stopped but their rows stay: on the next start they are
	 * started again from the current release (a shutdown is not a 'down'). */
	dv_timer_set(e->config.loop, &e->shutdown_check, loop_now(e) + 1);
}

void dv_engine_free(struct dv_engine *e)
{
	if (!e)
		return;
	struct app *next;
	for (struct app *a = e->apps; a; a = next) {
		next = a->next;
		if (a->deploy) {
			a->deploy->done = NULL;
			deploy_free(a->deploy);
		}
		for (size_t i = 0; i < a->nservices; i++) {
			struct service *s = a->services[i];
			struct replica *lists[3] = {s->active, s->pending, s->retired};
			for (int l = 0; l < 3; l++) {
				struct replica *rn;
				for (struct replica *r = lists[l]; r; r = rn) {
					rn = r->next;
					replica_free(r);
				}
			}
			service_free(s);
		}
		for (size_t i = 0; i < a->ndraining; i++)
			dv_upstream_pool_unref(a->draining[i]);
		free(a->draining);
		free(a->services);
		dv_plan_free(a->plan);
		free(a->name);
		free(a);
	}
	dv_timer_cancel(e->config.loop, &e->shutdown_check);
	dv_timer_cancel(e->config.loop, &e->probe_timer);
	dv_timer_cancel(e->config.loop, &e->deferred_timer);
	free(e->deferred);
	if (e->rt)
		dv_runtime_destroy(e->rt);
	free(e);
}

/* True if the app's newest "app.down" event is newer than its newest deploy:
 * 'davit down' must survive a daemon restart. */
static bool app_was_downed(struct dv_engine *e, const char *name)
{
	int64_t ids[2] = {0, 0};
	const char *kinds[2] = {"app.down", "deploy.started"};
	for (int k = 0; k < 2; k++) {
		struct dv_store_event_filter f = {.app = name, .kind = kinds[k], .limit = 1};
		struct dv_store_event *ev = NULL;
		size_t n = 0;
		char *err = NULL;
		if (dv_store_event_list(e->config.store, &f, &ev, &n, &err) == 0 && n > 0)
			ids[k] = ev[0].id;
		free(err);
		dv_store_event_array_free(ev, n);
	}
	return ids[0] > ids[1];
}

/* The id of the newest event of `kind` for `app` whose message starts with
 * "SERVICE " (service NULL: any message); 0 if none. */
static int64_t newest_event(struct dv_engine *e, const char *app, const char *kind, const char *service)
{
	struct dv_store_event_filter f = {.app = app, .kind = kind, .limit = service ? 500 : 1};
	struct dv_store_event *ev = NULL;
	size_t n = 0;
	char *err = NULL;
	int64_t id = 0;
	if (dv_store_event_list(e->config.store, &f, &ev, &n, &err) == 0) {
		size_t sl = service ? strlen(service) : 0;
		for (size_t i = 0; i < n && !id; i++)
			if (!service || (strncmp(ev[i].message, service, sl) == 0 && ev[i].message[sl] == ' '))
				id = ev[i].id;
	}
	free(err);
	dv_store_event_array_free(ev, n);
	return id;
}

/* True if 'davit stop SERVICE' is the last word about the service: a stopped
 * service stays stopped across a daemon restart until a start or a deploy. */
static bool service_was_stopped(struct dv_engine *e, const char *app, const char *service)
{
	int64_t stopped = newest_event(e, app, "service.stopped", service);
	return stopped && stopped > newest_event(e, app, "deploy.started", NULL);
}

/* A running container of replica `index` of that release, if recovery found
 * one: its id (caller frees), and it counts as taken. */
static char *adoptable_take(struct dv_engine *e, const char *app, const struct dv_plan_service *p, unsigned index,
                            unsigned *port, int64_t *release)
{
	const char *service = p->name;
	char *hash = dv_engine_spec_hash(p);
	for (size_t i = 0; i < e->nfound; i++) {
		const struct dv_replica_ref *f = &e->found[i];
		/* The same definition (any release that did not change it), the same slot. */
		if (e->found_taken[i] || !f->app || !f->service || !f->release || !f->id || !f->spec_hash ||
		    strcmp(f->app, app) != 0 || strcmp(f->service, service) != 0 || strcmp(f->spec_hash, hash) != 0 ||
		    f->index != index)
			continue;
		/* Loopback mode routes to the published port: one without it
		 * (started in address mode) is replaced instead. */
		if (e->config.docker_loopback && p->port && !f->loopback_port)
			continue;
		free(hash);
		*port = f->loopback_port;
		*release = strtoll(f->release, NULL, 10);
		e->found_taken[i] = true;
		dv_log_info("engine", "%s/%s#%u: adopting its running container %.12s (not restarted)", app, service, index,
		            f->id);
		return dv_xstrdup(f->id);
	}
	free(hash);
	return NULL;
}

/* Recovery: lists davit's running containers (a blocking call, once, before
 * the daemon serves) when some app's serving release has containers. */
static void adoptable_find(struct dv_engine *e, const struct dv_store_app *apps, size_t napps)
{
	bool any = false;
	for (size_t i = 0; i < napps && !any; i++) {
		struct dv_store_release *rel = NULL;
		char *err = NULL;
		if (dv_store_release_current(e->config.store, apps[i].name, e->config.environment, &rel, &err) == 0 && rel &&
		    strstr(rel->compose_json, "\"kind\":\"container\""))
			any = true;
		dv_store_release_free(rel);
		free(err);
	}
	if (!any)
		return;
	char *err = NULL;
	struct dv_runtime *d = dv_mux_docker(e->rt, &err);
	if (!d || dv_runtime_list(d, NULL, 0, &e->found, &e->nfound, &err) != 0) {
		dv_log_warn("engine", "cannot list running containers to adopt them: %s", err ? err : "?");
		free(err);
		return;
	}
	e->found_taken = dv_xcalloc(e->nfound + 1, sizeof *e->found_taken);
}

/* What recovery did not adopt goes: a container of an older or unfinished
 * release, or of an app that is down. */
static void adoptable_finish(struct dv_engine *e)
{
	struct dv_runtime *d = dv_mux_docker_if_any(e->rt);
	for (size_t i = 0; d && i < e->nfound; i++)
		if (!e->found_taken[i] && e->found[i].id)
			dv_docker_remove_container(d, e->found[i].id);
	dv_replica_refs_free(e->found, e->nfound);
	free(e->found_taken);
	e->found = NULL;
	e->found_taken = NULL;
	e->nfound = 0;
}

/* Starts the serving release of an app (daemon start). */
static int app_start_current(struct dv_engine *e, const char *name, char **err)
{
	struct dv_store_release *rel = NULL;
	int rc = -1;
	if (dv_store_release_current(e->config.store, name, e->config.environment, &rel, err) != 0)
		goto out;
	if (!rel) {
		rc = 0;
		goto out;
	}
	struct dv_plan *plan = dv_plan_from_json(rel->compose_json, strlen(rel->compose_json), e->config.environment, err);
	if (!plan)
		goto out;
	struct app *a = app_get_or_create(e, name);
	a->plan = plan;
	a->release = rel->id;
	bool down = app_was_downed(e, name);
	for (size_t i = 0; i < plan->n; i++) {
		struct service *s = service_add(a, plan->services[i].name, &plan->services[i]);
		s->stopped_by_user = down || service_was_stopped(e, name, s->name);
		for (unsigned k = 0; k < s->plan->replicas && !s->stopped_by_user; k++) {
			char *rerr = NULL;
			struct replica *r = replica_new(s, k, a->release, &rerr);
			if (!r) {
				dv_log_error("engine", "%s/%s: %s", name, s->name, rerr);
				free(rerr);
				continue;
			}
			r->next = s->active;
			s->active = r;
			if (s->plan->container) {
				unsigned port = 0;
				int64_t adopted_release = 0;
				r->adopt_id = adoptable_take(e, name, s->plan, k, &port, &adopted_release);
				if (r->adopt_id && e->config.docker_loopback && s->plan->port)
					r->port = (uint16_t)port; /* where it is published already */
				if (r->adopt_id)
					r->release = adopted_release; /* the release that started it (an unchanged service's) */
			}
			if (replica_spawn(r, &rerr) != 0) {
				dv_log_error("engine", "%s/%s#%u: %s", name, s->name, k, rerr);
				free(rerr);
				r->state = R_BACKOFF;
				dv_timer_set(e->config.loop, &r->restart_timer, loop_now(e) + 2000);
			}
		}
	}
	event(e, name, "app.started", "release %lld started after a daemon start", (long long)a->release);
	rc = 0;
out:
	dv_store_release_free(rel);
	return rc;
}

int dv_engine_recover(struct dv_engine *e, char **err)
{
	int rc = -1;
	struct dv_store_replica *reps = NULL;
	size_t nreps = 0;
	struct dv_store_deployment *deps = NULL;
	size_t ndeps = 0;
	struct dv_store_app *apps = NULL;
	size_t napps = 0;
	/* 1. Replicas a previous daemon left behind: kill what still runs. */
	if (dv_store_replica_list(e->config.store, NULL, &reps, &nreps, err) != 0)
		goto out;
	for (size_t i = 0; i < nreps; i++) {
		if (reps[i].pid > 0) {
			char *kerr = NULL;
			uint64_t ticks;
			int pid = (int)reps[i].pid;
			if (dv_process_reap_stale(pid, reps[i].proc_start, &kerr) > 0) {
				dv_log_info("engine", "stopped leftover replica %s/%s#%lld (pid %lld)", reps[i].app, reps[i].service,
				            (long long)reps[i].index, (long long)reps[i].pid);
			} else if ((dv_process_start_ticks(pid, &ticks) != 0 || ticks == reps[i].proc_start) &&
			           kill(-pid, SIGKILL) == 0) {
				/* The group leader (the shell) died with the old daemon (it may
				 * linger as a zombie if init does not reap), but its children
				 * live on in its process group. A pid is never reused while a
				 * group of that id exists, so the group is ours. */
				dv_log_info("engine", "stopped the leftover process group %d of %s/%s#%lld", pid, reps[i].app,
				            reps[i].service, (long long)reps[i].index);
			}
			free(kerr);
		}
		char *derr = NULL;
		dv_store_replica_delete(e->config.store, reps[i].app, reps[i].env, reps[i].service, reps[i].release,
		                        reps[i].index, NULL, &derr);
		free(derr);
	}
	/* 2. A deploy that was interrupted is rolled back: the previous release
	 * serves again (it is what the current pointer still names). */
	if (dv_store_deployment_list_unfinished(e->config.store, &deps, &ndeps, err) != 0)
		goto out;
	for (size_t i = 0; i < ndeps; i++) {
		char *terr = NULL;
		enum dv_store_deploy_state to =
			deps[i].state == DV_STORE_DEPLOY_PLANNED ? DV_STORE_DEPLOY_FAILED : DV_STORE_DEPLOY_ROLLED_BACK;
		if (deps[i].state == DV_STORE_DEPLOY_RUNNING)
			dv_store_deployment_transition(e->config.store, deps[i].id, DV_STORE_DEPLOY_ROLLING_BACK,
			                               "interrupted by a daemon restart", 0, NULL, &terr);
		free(terr);
		terr = NULL;
		dv_store_deployment_transition(e->config.store, deps[i].id, to, "interrupted by a daemon restart", 0, NULL,
		                               &terr);
		free(terr);
		event(e, deps[i].app, "deploy.interrupted", "deployment %lld of release %lld was interrupted by a daemon "
		      "restart and rolled back", (long long)deps[i].id, (long long)deps[i].release);
	}
	/* 3. Every app's serving release runs again (running containers of it
	 * are adopted). */
	if (dv_store_app_list(e->config.store, &apps, &napps, err) != 0)
		goto out;
	adoptable_find(e, apps, napps);
	for (size_t i = 0; i < napps; i++) {
		char *aerr = NULL;
		if (app_start_current(e, apps[i].name, &aerr) != 0) {
			dv_log_error("engine", "starting %s: %s", apps[i].name, aerr);
			free(aerr);
		}
	}
	adoptable_finish(e);
	publish_routes(e);
	rc = 0;
out:
	dv_store_replica_array_free(reps, nreps);
	dv_store_deployment_array_free(deps, ndeps);
	dv_store_app_array_free(apps, napps);
	return rc;
}

/* Where service `name` is defined in a compose file: the line and column of
 * its key under `services:` (a text scan; the loaded model keeps no positions).
 * Returns 0, or -1 if not found. */
static int find_service_key(const char *path, const char *name, unsigned *line_out, unsigned *col_out)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	bool in_services = false;
	int rc = -1;
	size_t nlen = strlen(name);
	while (getline(&line, &cap, f) != -1) {
		lineno++;
		if (strncmp(line, "services:", 9) == 0) {
			in_services = true;
			continue;
		}
		if (!in_services)
			continue;
		if (line[0] != ' ' && line[0] != '\t' && line[0] != '#' && line[0] != '\n' && line[0] != '\r')
			in_services = false; /* another top-level key */
		size_t ind = strspn(line, " \t");
		const char *k = line + ind;
		if (ind > 0 && (strncmp(k, name, nlen) == 0 && k[nlen] == ':')) {
			*line_out = lineno;
			*col_out = (unsigned)ind + 1;
			rc = 0;
			break;
		}
		if (ind > 0 && (k[0] == '"' || k[0] == '\'') && strncmp(k + 1, name, nlen) == 0 && k[nlen + 1] == k[0]) {
			*line_out = lineno;
			*col_out = (unsigned)ind + 1;
			rc = 0;
			break;
		}
	}
	free(line);
	fclose(f);
	return rc;
}

/* A plan with containers needs a reachable engine: say so now, in one
 * sentence, rather than as a replica that failed to start. */
static int engine_check_docker(struct dv_engine *e, const struct dv_plan *plan, char **err)
{
	for (size_t i = 0; i < plan->n; i++) {
		if (!plan->services[i].container)
			continue;
		struct dv_runtime *d = dv_mux_docker(e->rt, err);
		return d ? dv_docker_check(d, err) : -1;
	}
	return 0;
}

const char *dv_engine_app_name(struct dv_engine *e, const char *app, char **err)
{
	struct app *a = app_pick(e, app, err);
	return a ? a->name : NULL;
}

bool dv_engine_app_has_containers(struct dv_engine *e, const char *name)
{
	struct app *a = app_find(e, name);
	for (size_t i = 0; a && a->plan && i < a->plan->n; i++)
		if (a->plan->services[i].container)
			return true;
	return false;
}

struct dv_runtime *dv_engine_docker(struct dv_engine *e, char **err)
{
	return dv_mux_docker(e->rt, err);
}

int dv_engine_deploy_file(struct dv_engine *e, const char *path, const char *const *env_list,
                          dv_engine_done_cb done, void *arg, char **err)
{
	int rc = -1;
	struct dv_compose_project *project = NULL;
	char *json = NULL, *hash = NULL;
	struct dv_store_release *rel = NULL;
	struct dv_compose_options opts = {.environ = env_list};
	if (e->shutting_down) {
		*err = dv_xstrdup("the daemon is shutting down");
		goto out;
	}
	if (dv_compose_load(path, &opts, &project, err) != 0)
		goto out;
	struct app *existing = app_find(e, project->name);
	if (existing && existing->deploy) {
		*err = dv_xasprintf("a deploy of %s is already running (deployment %lld); wait for it to finish",
		                    project->name, (long long)existing->deploy->id);
		goto out;
	}
	size_t len;
	json = dv_compose_project_to_json(project, &len);
	{
		/* Build contexts are part of the release (a changed context is a
		 * changed service). */
		size_t dlen;
		char *bad = NULL;
		char *with = dv_plan_add_build_digests(json, len, &dlen, &bad, err);
		if (!with) {
			unsigned line = 0, col = 0;
			if (bad && find_service_key(path, bad, &line, &col) == 0) {
				char *e2 = dv_xasprintf("%s:%u:%u: %s", path, line, col, *err);
				free(*err);
				*err = e2;
			}
			free(bad);
			goto out;
		}
		free(json);
		json = with;
		len = dlen;
	}
	/* Check that it is something we can run before storing it. */
	struct dv_plan *plan = dv_plan_from_json(json, len, e->config.environment, err);
	if (!plan)
		goto out;
	if (engine_check_docker(e, plan, err) != 0) {
		dv_plan_free(plan);
		goto out;
	}
	for (size_t i = 0; i < plan->n; i++) {
		if (plan->services[i].unsupported) {
			unsigned line = 0, col = 0;
			if (find_service_key(path, plan->services[i].name, &line, &col) == 0)
				*err = dv_xasprintf("%s:%u:%u: %s", path, line, col, plan->services[i].unsupported);
			else
				*err = dv_xasprintf("%s: %s", path, plan->services[i].unsupported);
			dv_plan_free(plan);
			goto out;
		}
	}
	dv_plan_free(plan);
	for (size_t i = 0; i < project->n_warnings; i++)
		dv_log_warn("compose", "%s", project->warnings[i]);
	hash = sha256_hex(json, len);
	if (dv_store_app_ensure(e->config.store, project->name, NULL, err) != 0)
		goto out;
	struct dv_store_release_spec spec = {.hash = hash, .compose_json = json, .source = path};
	if (dv_store_release_create(e->config.store, project->name, e->config.environment, &spec, &rel, NULL, err) != 0)
		goto out;
	struct dv_strbuf warn;
	dv_strbuf_init(&warn);
	for (size_t i = 0; i < project->n_warnings; i++)
		dv_strbuf_printf(&warn, "warning: %s\n", project->warnings[i]);
	rc = deploy_start(e, project->name, rel->id, false, warn.data, done, arg, err);
	dv_strbuf_dispose(&warn);
out:
	dv_compose_project_free(project);
	dv_store_release_free(rel);
	free(json);
	free(hash);
	return rc;
}

int dv_engine_rollback(struct dv_engine *e, const char *app_name, int64_t release, dv_engine_done_cb done, void *arg,
                       char **err)
{
	struct app *a = app_pick(e, app_name, err);
	if (!a)
		return -1;
	if (release == 0) {
		/* The release that served before the current one. */
		struct dv_store_deployment *deps = NULL;
		size_t n = 0;
		if (dv_store_deployment_list(e->config.store, a->name, e->config.environment, 50, &deps, &n, err) != 0)
			return -1;
		for (size_t i = 0; i < n && !release; i++)
			if (deps[i].state == DV_STORE_DEPLOY_SUCCEEDED && deps[i].release == a->release &&
			    deps[i].previous_release && deps[i].previous_release != a->release)
				release = deps[i].previous_release;
		dv_store_deployment_array_free(deps, n);
		if (!release) {
			*err = dv_xasprintf("%s has no earlier release to roll back to (see 'davit releases')", a->name);
			return -1;
		}
	}
	return deploy_start(e, a->name, release, true, NULL, done, arg, err);
}

struct restart_op {
	struct service *svc;
	dv_engine_done_cb done;
	void *arg;
};

int dv_engine_service_action(struct dv_engine *e, const char *app_name, const char *service, const char *action,
                             dv_engine_done_cb done, void *arg, char **err)
{
	struct app *a = app_pick(e, app_name, err);
	if (!a)
		return -1;
	struct service *s = service_find(a, service);
	if (!s || !s->plan) {
		*err = dv_xasprintf("%s has no service '%s' (see 'davit ps')", a->name, service);
		return -1;
	}
	if (a->deploy) {
		*err = dv_xasprintf("a deploy of %s is running; try again when it ends", a->name);
		return -1;
	}
	char text[256], json[256];
	if (strcmp(action, "stop") == 0) {
		s->stopped_by_user = true;
		unsigned gen = publish_routes(e); /* the service leaves the table first */
		for (struct replica *r = s->active; r; r = r->next)
			if (!r->leaving)
				stop_after_routes(e, r, gen);
		event(e, a->name, "service.stopped", "%s stopped by the user", s->name);
		snprintf(text, sizeof text, "%s: stopping\n", s->name);
	} else if (strcmp(action, "start") == 0 || strcmp(action, "restart") == 0) {
		/* start/restart: a deploy of the current release in which this
		 * service counts as changed, so it is replaced with zero downtime. */
		s->stopped_by_user = false;
		if (strcmp(action, "start") == 0 && s->active) {
			snprintf(text, sizeof text, "%s is already running\n", s->name);
		} else {
			s->force_replace = true;
			if (deploy_start(e, a->name, a->release, false, NULL, done, arg, err) != 0) {
				s->force_replace = false;
				return -1;
			}
			return 0; /* done reports the end */
		}
	} else {
		*err = dv_xasprintf("unknown action '%s' (restart, stop or start)", action);
		return -1;
	}
	snprintf(json, sizeof json, "{\"ok\":true,\"service\":\"%s\",\"action\":\"%s\"}\n", s->name, action);
	done(arg, true, text, json);
	return 0;
}

int dv_engine_down(struct dv_engine *e, const char *app_name, dv_engine_done_cb done, void *arg, char **err)
{
	struct app *a = app_pick(e, app_name, err);
	if (!a)
		return -1;
	if (a->deploy) {
		*err = dv_xasprintf("a deploy of %s is running; try again when it ends", a->name);
		return -1;
	}
	unsigned n = 0;
	for (size_t i = 0; i < a->nservices; i++)
		a->services[i]->stopped_by_user = true;
	unsigned gen = publish_routes(e); /* routes go first, then the replicas */
	for (size_t i = 0; i < a->nservices; i++)
		for (struct replica *r = a->services[i]->active; r; r = r->next)
			if (!r->leaving) {
				stop_after_routes(e, r, gen);
				n++;
			}
	event(e, a->name, "app.down", "every service stopped by the user");
	char text[256], json[256];
	snprintf(text, sizeof text, "%s: %u replica%s stopping; releases are kept ('davit deploy' or 'davit rollback' brings it back)\n",
	         a->name, n, n == 1 ? "" : "s");
	snprintf(json, sizeof json, "{\"ok\":true,\"app\":\"%s\",\"replicas_stopped\":%u}\n", a->name, n);
	done(arg, true, text, json);
	return 0;
}

/* ------------------------------------------------------------------ reports */

static void format_duration(char *buf, size_t size, uint64_t ms)
{
	uint64_t s = ms / 1000;
	if (s < 60)
		snprintf(buf, size, "%llus", (unsigned long long)s);
	else if (s < 3600)
		snprintf(buf, size, "%llum%02llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
	else
		snprintf(buf, size, "%lluh%02llum", (unsigned long long)(s / 3600), (unsigned long long)(s / 60 % 60));
}

int dv_engine_ps(struct dv_engine *e, const char *app_name, bool json, struct dv_strbuf *out, char **err)
{
	struct dv_json j;
	dv_json_init(&j, out);
	if (app_name && *app_name && !app_find(e, app_name)) {
		*err = dv_xasprintf("no app named '%s'", app_name);
		return -1;
	}
	if (json) {
		dv_json_object_begin(&j);
		dv_json_key(&j, "apps");
		dv_json_array_begin(&j);
	} else {
		dv_strbuf_printf(out, "%-10s %-12s %-4s %-8s %-11s %-6s %-8s %-9s %-8s %s\n", "APP", "SERVICE", "#", "RELEASE",
		                 "STATE", "PORT", "PID", "UPTIME", "RESTARTS", "HEALTH");
	}
	int64_t now = unix_ms();
	for (struct app *a = e->apps; a; a = a->next) {
		if (app_name && *app_name && strcmp(a->name, app_name) != 0)
			continue;
		if (json) {
			dv_json_object_begin(&j);
			dv_json_key(&j, "name");
			dv_json_string(&j, a->name);
			dv_json_key(&j, "release");
			dv_json_int(&j, a->release);
			dv_json_key(&j, "deploying");
			dv_json_bool(&j, a->deploy != NULL);
			dv_json_key(&j, "services");
			dv_json_array_begin(&j);
		}
		/* In start order, as the plan lists them. */
		for (size_t k = 0; k < a->nservices; k++) {
			struct service *s = NULL;
			if (a->plan && k < a->plan->n)
				s = service_find(a, a->plan->services[k].name);
			if (!s)
				s = a->services[k];
			if (!s->plan && !s->active && !s->pending && !s->retired)
				continue; /* added by a deploy that failed: gone */
			if (json) {
				dv_json_object_begin(&j);
				dv_json_key(&j, "name");
				dv_json_string(&j, s->name);
				dv_json_key(&j, "stopped");
				dv_json_bool(&j, s->stopped_by_user);
				if (s->plan && s->plan->static_dir) {
					dv_json_key(&j, "static");
					dv_json_string(&j, s->plan->static_dir);
				}
				dv_json_key(&j, "replicas");
				dv_json_array_begin(&j);
			}
			struct replica *lists[3] = {s->active, s->pending, s->retired};
			const char *roles[3] = {"active", "new", "old"};
			bool any = false;
			for (int l = 0; l < 3; l++) {
				for (struct replica *r = lists[l]; r; r = r->next) {
					any = true;
					struct dv_replica_info info;
					memset(&info, 0, sizeof info);
					char *ierr = NULL;
					if (r->rt)
						dv_runtime_inspect(e->rt, r->rt, &info, &ierr);
					free(ierr);
					uint64_t up = r->state == R_EXITED || r->state == R_BACKOFF || !r->started_at
					                  ? 0
					                  : (uint64_t)(now - r->started_at);
					if (json) {
						dv_json_object_begin(&j);
						dv_json_key(&j, "index");
						dv_json_uint(&j, r->index);
						dv_json_key(&j, "role");
						dv_json_string(&j, roles[l]);
						dv_json_key(&j, "release");
						dv_json_int(&j, r->release);
						dv_json_key(&j, "state");
						dv_json_string(&j, replica_state_name(r));
						dv_json_key(&j, "port");
						dv_json_uint(&j, r->port);
						dv_json_key(&j, "pid");
						dv_json_int(&j, info.pid);
						if (r->rt && dv_mux_container_id(r->rt)) {
							dv_json_key(&j, "container");
							dv_json_string(&j, dv_mux_container_id(r->rt));
						}
						dv_json_key(&j, "uptime_ms");
						dv_json_uint(&j, up);
						dv_json_key(&j, "restarts");
						dv_json_uint(&j, r->restarts);
						dv_json_key(&j, "rss_bytes");
						dv_json_uint(&j, info.rss_bytes);
						dv_json_key(&j, "cpu_ms");
						dv_json_uint(&j, info.cpu_time_ms);
						dv_json_key(&j, "health");
						dv_json_string(&j, r->last_health);
						dv_json_object_end(&j);
					} else {
						char upbuf[32], rel[24];
						format_duration(upbuf, sizeof upbuf, up);
						snprintf(rel, sizeof rel, "%lld%s", (long long)r->release,
						         l == 1 ? "(new)" : l == 2 ? "(old)" : "");
						dv_strbuf_printf(out, "%-10s %-12s %-4u %-8s %-11s %-6u %-8d %-9s %-8u %s\n", a->name, s->name,
						                 r->index, rel, replica_state_name(r), r->port, info.pid, up ? upbuf : "-",
						                 r->restarts, r->last_health);
					}
				}
			}
			bool serving_static = s->plan && s->plan->static_dir && !s->stopped_by_user;
			if (!any && !json)
				dv_strbuf_printf(out, "%-10s %-12s %-4s %-8lld %-11s%s%s\n", a->name, s->name, "-", (long long)a->release,
				                 serving_static ? "static" : "stopped", serving_static ? " served by the proxy from " : "",
				                 serving_static ? s->plan->static_dir : "");
			if (json) {
				dv_json_array_end(&j);
				dv_json_object_end(&j);
			}
		}
		if (json) {
			dv_json_array_end(&j);
			dv_json_object_end(&j);
		}
	}
	if (json) {
		dv_json_array_end(&j);
		dv_json_object_end(&j);
		dv_strbuf_puts(out, "\n");
	} else if (!e->apps) {
		dv_strbuf_puts(out, "(nothing deployed yet: 'davit up -f compose.yml')\n");
	}
	return 0;
}

int dv_engine_releases(struct dv_engine *e, const char *app_name, bool json, struct dv_strbuf *out, char **err)
{
	struct app *a = app_pick(e, app_name, err);
	if (!a)
		return -1;
	struct dv_store_release *rels = NULL;
	size_t n = 0;
	if (dv_store_release_list(e->config.store, a->name, e->config.environment, 100, &rels, &n, err) != 0)
		return -1;
	struct dv_json j;
	dv_json_init(&j, out);
	if (json) {
		dv_json_object_begin(&j);
		dv_json_key(&j, "app");
		dv_json_string(&j, a->name);
		dv_json_key(&j, "current");
		dv_json_int(&j, a->release);
		dv_json_key(&j, "releases");
		dv_json_array_begin(&j);
	} else {
		dv_strbuf_printf(out, "%-3s %-8s %-24s %-14s %s\n", "", "RELEASE", "CREATED", "HASH", "SOURCE");
	}
	for (size_t i = 0; i < n; i++) {
		char when[32];
		time_t t = (time_t)(rels[i].created_at / 1000);
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
		if (json) {
			dv_json_object_begin(&j);
			dv_json_key(&j, "release");
			dv_json_int(&j, rels[i].id);
			dv_json_key(&j, "current");
			dv_json_bool(&j, rels[i].id == a->release);
			dv_json_key(&j, "created_at");
			dv_json_string(&j, when);
			dv_json_key(&j, "hash");
			dv_json_string(&j, rels[i].hash);
			dv_json_key(&j, "source");
			dv_json_string(&j, rels[i].source);
			dv_json_object_end(&j);
		} else {
			dv_strbuf_printf(out, "%-3s %-8lld %-24s %-14.12s %s\n", rels[i].id == a->release ? "*" : "",
			                 (long long)rels[i].id, when, rels[i].hash, rels[i].source ? rels[i].source : "");
		}
	}
	if (json) {
		dv_json_array_end(&j);
		dv_json_object_end(&j);
		dv_strbuf_puts(out, "\n");
	}
	dv_store_release_array_free(rels, n);
	return 0;
}

/* ------------------------------------------------------------------ logs */

struct tail_ctx;

struct log_follow_entry {
	struct replica *replica;
	struct dv_log_follow *follow;
	struct tail_ctx *ctx; /* owned: the follow callback's argument */
};

struct dv_engine_log_sub {
	struct dv_engine_log_sub *next; /* in the engine's list (follow only) */
	char *app, *service;            /* what it follows (service NULL: all) */
	void (*line)(void *arg, const char *text, size_t len);
	void *arg;
	bool json;
	struct log_follow_entry *entries;
	size_t n;
};

struct tail_ctx {
	struct dv_engine_log_sub *sub;
	struct replica *replica;
};

static void emit_line(void (*line)(void *, const char *, size_t), void *arg, bool json, struct replica *r,
                      const struct dv_log_line *l)
{
	char stamp[40];
	time_t t = (time_t)(l->time_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + n, sizeof stamp - n, ".%03dZ", (int)(l->time_ms % 1000));
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	const char *stream = l->stream == DV_LOG_STREAM_STDERR ? "stderr" : "stdout";
	if (json) {
		/* One JSON object per line (JSON Lines), for scripts. */
		struct dv_json j;
		dv_json_init(&j, &b);
		dv_json_object_begin(&j);
		dv_json_key(&j, "time");
		dv_json_string(&j, stamp);
		dv_json_key(&j, "app");
		dv_json_string(&j, r->svc->app->name);
		dv_json_key(&j, "service");
		dv_json_string(&j, r->svc->name);
		dv_json_key(&j, "replica");
		dv_json_uint(&j, r->index);
		dv_json_key(&j, "release");
		dv_json_int(&j, r->release);
		dv_json_key(&j, "stream");
		dv_json_string(&j, stream);
		dv_json_key(&j, "line");
		dv_json_string_n(&j, l->text, l->len);
		dv_json_object_end(&j);
	} else {
		dv_strbuf_printf(&b, "%s %s#%u %s | ", stamp, r->svc->name, r->index, stream + 3);
		dv_strbuf_append(&b, l->text, l->len);
	}
	dv_strbuf_puts(&b, "\n");
	line(arg, b.data, b.len);
	dv_strbuf_dispose(&b);
}

static void tail_cb(struct dv_replica *rep, const struct dv_log_line *l, void *arg)
{
	struct tail_ctx *c = arg;
	if (l)
		emit_line(c->sub->line, c->sub->arg, c->sub->json, c->replica, l);
}

static void follow_cb(struct dv_replica *rep, const struct dv_log_line *l, void *arg)
{
	struct tail_ctx *c = arg;
	if (l) {
		emit_line(c->sub->line, c->sub->arg, c->sub->json, c->replica, l);
		return;
	}
	/* output ended: the runtime's subscription is gone */
	for (size_t i = 0; i < c->sub->n; i++)
		if (c->sub->entries[i].ctx == c)
			c->sub->entries[i].follow = NULL;
}

static void sub_follow(struct dv_engine *e, struct dv_engine_log_sub *sub, struct replica *r)
{
	sub->entries = dv_xrealloc(sub->entries, (sub->n + 1) * sizeof *sub->entries);
	struct tail_ctx *c = dv_xmalloc(sizeof *c);
	c->sub = sub;
	c->replica = r;
	sub->entries[sub->n].replica = r;
	sub->entries[sub->n].ctx = c;
	sub->entries[sub->n].follow = NULL;
	sub->n++;
	/* Set after the entry exists: the callback may run at once. */
	sub->entries[sub->n - 1].follow = dv_runtime_logs_follow(e->rt, r->rt, follow_cb, c);
}

/* A replica that starts (a deploy, a restart) joins the running follows. */
static void log_subs_attach(struct dv_engine *e, struct replica *r)
{
	for (struct dv_engine_log_sub *sub = e->log_subs; sub; sub = sub->next)
		if (r->rt && strcmp(sub->app, r->svc->app->name) == 0 &&
		    (!sub->service || strcmp(sub->service, r->svc->name) == 0))
			sub_follow(e, sub, r);
}

struct dv_engine_log_sub *dv_engine_logs(struct dv_engine *e, const char *app_name, const char *service, unsigned tail,
                                         bool follow, bool json, void (*line)(void *, const char *, size_t), void *arg,
                                         char **err, int *rc)
{
	*rc = -1;
	struct app *a = app_pick(e, app_name, err);
	if (!a)
		return NULL;
	if (service && !service_find(a, service)) {
		*err = dv_xasprintf("%s has no service '%s' (see 'davit ps')", a->name, service);
		return NULL;
	}
	struct dv_engine_log_sub *sub = dv_xcalloc(1, sizeof *sub);
	sub->line = line;
	sub->arg = arg;
	sub->json = json;
	if (tail == 0 && !follow) {
		/* a check only (the API validates before it starts streaming) */
		free(sub);
		*rc = 0;
		return NULL;
	}
	for (size_t i = 0; i < a->nservices; i++) {
		struct service *s = a->services[i];
		if (service && strcmp(s->name, service) != 0)
			continue;
		struct replica *lists[3] = {s->active, s->pending, s->retired};
		for (int l = 0; l < 3; l++)
			for (struct replica *r = lists[l]; r; r = r->next) {
				if (!r->rt)
					continue;
				struct tail_ctx c = {sub, r};
				dv_runtime_logs_tail(e->rt, r->rt, tail, tail_cb, &c);
			}
	}
	*rc = 0;
	if (!follow) {
		free(sub);
		return NULL;
	}
	/* Follow: the replicas running now, and (log_subs_attach) those that
	 * start later. */
	sub->app = dv_xstrdup(a->name);
	sub->service = service ? dv_xstrdup(service) : NULL;
	for (size_t i = 0; i < a->nservices; i++) {
		struct service *s = a->services[i];
		if (service && strcmp(s->name, service) != 0)
			continue;
		struct replica *lists[2] = {s->active, s->pending};
		for (int l = 0; l < 2; l++)
			for (struct replica *r = lists[l]; r; r = r->next)
				if (r->rt && !r->leaving)
					sub_follow(e, sub, r);
	}
	sub->next = e->log_subs;
	e->log_subs = sub;
	return sub;
}

void dv_engine_logs_cancel(struct dv_engine *e, struct dv_engine_log_sub *sub)
{
	if (!sub)
		return;
	for (struct dv_engine_log_sub **p = &e->log_subs; *p; p = &(*p)->next)
		if (*p == sub) {
			*p = sub->next;
			break;
		}
	for (size_t i = 0; i < sub->n; i++) {
		if (sub->entries[i].follow)
			dv_runtime_logs_unfollow(e->rt, sub->entries[i].follow);
		free(sub->entries[i].ctx);
	}
	free(sub->app);
	free(sub->service);
	free(sub->entries);
	free(sub);
}

/* deploy/plan: what the engine runs, read from a release's canonical compose
 * JSON (dv_compose_project_to_json). One code path serves a fresh deploy, a
 * rollback and a recovery after a crash: all three start from stored JSON, so
 * a rollback restores a release exactly. */
#ifndef DV_DEPLOY_PLAN_H
#define DV_DEPLOY_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dv_plan_health { DV_PLAN_HEALTH_NONE, DV_PLAN_HEALTH_HTTP, DV_PLAN_HEALTH_TCP, DV_PLAN_HEALTH_COMMAND };
enum dv_plan_restart { DV_PLAN_RESTART_ALWAYS, DV_PLAN_RESTART_NO, DV_PLAN_RESTART_ON_FAILURE };

struct dv_plan_service {
	char *name;
	char *json;            /* the service's canonical JSON: equal JSON = unchanged service */
	char *unsupported;     /* why davit cannot run it yet (container, static), or NULL */
	char *run;             /* shell command line */
	char *workdir;
	char **env;            /* "K=V", NULL-terminated (without PORT; the engine adds it) */
	unsigned port;         /* 0: no port (a worker) */
	unsigned replicas;
	enum dv_plan_health health;
	char *health_path;     /* HTTP */
	char *health_cmd;      /* COMMAND */
	uint64_t health_interval_ms, health_timeout_ms, health_start_period_ms;
	unsigned health_retries;
	char **domains;        /* "host" or "host/path", NULL-terminated */
	char *tls_cert, *tls_key; /* x-davit.tls: the certificate for its domains, or NULL */
	char **depends_on;     /* service names, NULL-terminated */
	enum dv_plan_restart restart;
	unsigned restart_max;
	uint64_t memory_limit;
	double cpu_limit;
	char *static_dir;      /* a static service: the directory the proxy serves (no replicas) */
	char *edge;            /* edge options (proxy/edge.h), or NULL */
	char **edge_domains;   /* "HOST OPTIONS" pairs as HOST, OPTIONS, ..., NULL-terminated */
};

struct dv_plan {
	char *app;
	struct dv_plan_service *services; /* in start order (dependencies first) */
	size_t n;
};

/* Builds a plan from canonical project JSON for `environment` (domains of
 * other environments are left out). Returns NULL with *err. */
struct dv_plan *dv_plan_from_json(const char *json, size_t len, const char *environment, char **err);
void dv_plan_free(struct dv_plan *plan);
const struct dv_plan_service *dv_plan_service(const struct dv_plan *plan, const char *name);

#endif

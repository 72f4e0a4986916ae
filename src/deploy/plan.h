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

/* What a container service (image:/build:) needs beyond the fields shared
 * with native ones (plan_container.c). Paths are absolute; names of networks
 * and volumes are the real Docker names. */
struct dv_plan_network {
	char *name;
	bool internal;
	char **aliases;        /* NULL-terminated: the service name, then the compose aliases */
};

struct dv_plan_mount {
	int type;              /* enum dv_container_mount_type (runtime.h) */
	char *source, *target;
	bool read_only, create_host_path;
	uint64_t tmpfs_size;
};

struct dv_plan_port {
	char *host_ip, *protocol;
	unsigned host_port, target;
};

struct dv_plan_container {
	char *image;           /* compose image: (pulled when missing), or NULL */
	char *build_context, *dockerfile, *build_target;
	char **build_args;     /* "K=V", NULL-terminated */
	char *build_digest;    /* SHA-256 of the context when the release was made (or NULL) */
	bool has_entrypoint, has_command;
	char **entrypoint, **command; /* NULL-terminated */
	char *user;
	char *working_dir;
	char *stop_signal;     /* NULL: the image's */
	uint64_t stop_timeout_ms; /* stop_grace_period; 0: 10 s */
	int64_t pids_limit;
	unsigned app_port;     /* the app's port in the container (0: none) */
	bool internal_only;    /* on internal networks only: never routed or published */
	struct dv_plan_network *networks; /* the first is the primary network */
	size_t n_networks;
	struct dv_plan_mount *mounts;
	size_t n_mounts;
	struct dv_plan_port *ports;
	size_t n_ports;
	bool health_set, health_disabled; /* a compose healthcheck for Docker to run */
	char **health_test;
	uint64_t health_interval_ms, health_timeout_ms, health_start_period_ms;
	unsigned health_retries;
	bool stop_first;       /* stop the old replicas before starting new ones */
	char *stop_first_why;  /* "it has volumes", "it publishes host ports" */
};

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
	struct dv_plan_container *container; /* image/build services; NULL for native ones */
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

/* plan_container.c: fills s->container for a container service from its
 * JSON `j` and the project JSON `root` (networks, volumes, build digests).
 * Returns 0, or -1 with *err. */
struct dv_jv;
int dv_plan_container_parse(struct dv_plan_service *s, const struct dv_jv *root, const struct dv_jv *j, char **err);
void dv_plan_container_free(struct dv_plan_container *c);

/* Adds the build contexts' digests to a release's project JSON (so that a
 * changed context is a changed service): returns new JSON (caller frees)
 * with a member "x_build_digests": {service: sha256}, or NULL with *err
 * when a context cannot be read. `json` has no build service: a copy. */
char *dv_plan_add_build_digests(const char *json, size_t len, size_t *out_len, char **bad_service, char **err);
const struct dv_plan_service *dv_plan_service(const struct dv_plan *plan, const char *name);

#endif

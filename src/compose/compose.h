/* compose: the Compose-spec file loader.
 *
 * dv_compose_load() turns a compose file (plus the `.env` file beside it) into
 * a resolved, validated model: every scalar interpolated, every relative path
 * made absolute, short and long syntaxes folded into one representation,
 * depends_on checked (unknown services, cycles) and a start order computed.
 * The model is immutable once returned: the deploy engine diffs it, the store
 * persists its canonical JSON (dv_compose_project_to_json), and nothing in
 * davit changes it afterwards.
 *
 * Errors are reported as "FILE:LINE:COLUMN: what is wrong (what to do)",
 * pointing at the offending YAML node; the first error aborts the load.
 * Anything the loader does not understand but can ignore (unknown keys,
 * compose features davit does not implement, unset variables) becomes a
 * warning in the same form, collected in the project.
 *
 * What is read (compose keys davit gives a meaning to):
 *   top level: name, services, networks, volumes; x-* keys are extensions
 *     (ignored; handy as YAML anchors); anchors, aliases and merge keys (<<).
 *   services.*: image, build, command, entrypoint, working_dir, environment,
 *     env_file, ports, expose, depends_on, healthcheck, restart,
 *     deploy.{replicas, resources.{limits,reservations}, update_config},
 *     labels (Traefik Host()/PathPrefix() router rules become domains, the
 *     loadbalancer.server.port label becomes the port), volumes, networks,
 *     user, stop_grace_period, stop_signal, pids_limit,
 *     and x-davit {run, port, domains, health, static, tls {cert, key}}; edge keys of x-davit
 *     (headers, csp, hsts, rate_limit, compress, max_body, basic_auth, allow,
 *     deny, ban, spa, index, per_domain) and Traefik middleware labels
 *     (headers, ratelimit, basicauth, ipwhitelist/ipallowlist, buffering,
 *     compress) become `edge` (docs/proxy.md has the mapping).
 * Interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message},
 * ${VAR?message}, ${VAR:+alt}, ${VAR+alt}, $VAR and $$ (a literal $), nested
 * in defaults. Variables come from the process environment, which wins over
 * the project's .env file. Values are interpolated, mapping keys are not.
 * A literal $ (e.g. $PORT meant for the shell in x-davit.run) is written $$;
 * a run command that interpolates an unset or empty variable is warned about.
 *
 * Hard limits (an error beyond them): 16 MiB per file; 1,000,000 YAML nodes
 * and 4,000,000 once aliases and merge keys are expanded; 10,000 anchors,
 * services, networks, volumes; 65,536 ports (ranges expanded); 1,000 domains
 * per service; 100,000 entries per env file. At most 1,000 warnings are kept
 * (the last one then says how many more there were).
 */
#ifndef DV_COMPOSE_COMPOSE_H
#define DV_COMPOSE_COMPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A list of strings (owned by the struct that embeds it). */
struct dv_compose_strv {
	char **items;
	size_t len;
};

/* A name/value pair; arrays of them are sorted by key with unique keys. */
struct dv_compose_kv {
	char *key;
	char *value;
};

/* How a service runs. */
enum dv_compose_kind {
	DV_COMPOSE_KIND_CONTAINER = 0, /* image and/or build: a container */
	DV_COMPOSE_KIND_NATIVE,        /* x-davit.run: a native process (shell command line) */
	DV_COMPOSE_KIND_STATIC,        /* x-davit.static: a directory served by the proxy */
};

struct dv_compose_build {
	char *context;     /* absolute directory, or a URL (git, https) kept as written */
	char *dockerfile;  /* NULL: the builder's default ("Dockerfile") */
	char *target;      /* NULL: last stage */
	struct dv_compose_kv *args; /* sorted by key */
	size_t n_args;
};

enum dv_compose_condition {
	DV_COMPOSE_COND_STARTED = 0,          /* service_started (the default) */
	DV_COMPOSE_COND_HEALTHY,              /* service_healthy */
	DV_COMPOSE_COND_COMPLETED,            /* service_completed_successfully */
};

struct dv_compose_dependency {
	char *service;     /* name of a service of the same project */
	enum dv_compose_condition condition;
	bool restart;      /* restart this service when the dependency restarts */
	bool required;     /* false: an optional dependency (map form, required: false) */
};

struct dv_compose_healthcheck {
	bool present;      /* a healthcheck: key was given */
	bool disabled;     /* test: NONE / ["NONE"], or disable: true */
	bool shell;        /* test[0] is a shell command line (CMD-SHELL or a plain string);
	                    * false: test is an argv (CMD) */
	struct dv_compose_strv test; /* empty: keep the image's own HEALTHCHECK test */
	/* 0 means "not set" (the runtime's default applies) for all of these. */
	uint64_t interval_ms;
	uint64_t timeout_ms;
	uint64_t start_period_ms;
	uint64_t start_interval_ms;
	unsigned retries;
};

enum dv_compose_restart {
	DV_COMPOSE_RESTART_UNSET = 0,  /* no restart: key; the engine decides */
	DV_COMPOSE_RESTART_NO,
	DV_COMPOSE_RESTART_ALWAYS,
	DV_COMPOSE_RESTART_ON_FAILURE, /* restart_max (0 = no limit) */
	DV_COMPOSE_RESTART_UNLESS_STOPPED,
};

enum dv_compose_update_order {
	DV_COMPOSE_ORDER_UNSET = 0,
	DV_COMPOSE_ORDER_START_FIRST,  /* start the new replica before stopping the old one */
	DV_COMPOSE_ORDER_STOP_FIRST,
};

enum dv_compose_failure_action {
	DV_COMPOSE_FAILURE_UNSET = 0,
	DV_COMPOSE_FAILURE_ROLLBACK,
	DV_COMPOSE_FAILURE_PAUSE,
	DV_COMPOSE_FAILURE_CONTINUE,
};

struct dv_compose_resources {
	uint32_t cpus_milli;   /* thousandths of a CPU ("0.5" -> 500); 0: not set */
	uint64_t memory;       /* bytes; 0: not set */
};

struct dv_compose_deploy {
	unsigned replicas;     /* >= 1 (1 when not set) */
	struct dv_compose_resources limits;
	struct dv_compose_resources reservations;
	enum dv_compose_update_order update_order;
	enum dv_compose_failure_action failure_action;
	unsigned update_parallelism;  /* 0: not set */
	uint64_t update_delay_ms;     /* 0: not set */
	uint64_t update_monitor_ms;   /* 0: not set */
};

/* One published or exposed container port. Port ranges of the short syntax
 * ("8000-8002:8000-8002") are expanded into one entry per port. */
struct dv_compose_port {
	char *host_ip;         /* NULL: all interfaces; IPv6 without brackets */
	unsigned target;       /* container port, 1..65535 */
	unsigned published;    /* host port; 0: not published on the host (ephemeral) */
	unsigned published_end;/* == published, or the end of a host port range for one target */
	char *protocol;        /* "tcp", "udp" or "sctp" */
	char *mode;            /* "ingress" (default) or "host" */
};

enum dv_compose_mount_type {
	DV_COMPOSE_MOUNT_VOLUME = 0,   /* a named volume (source = key in project volumes) or,
	                                * with source NULL, an anonymous one */
	DV_COMPOSE_MOUNT_BIND,         /* source = absolute host path */
	DV_COMPOSE_MOUNT_TMPFS,        /* source NULL */
};

struct dv_compose_mount {
	enum dv_compose_mount_type type;
	char *source;
	char *target;          /* absolute path in the container */
	bool read_only;
	bool create_host_path; /* bind: create the host directory if missing (default true) */
	uint64_t tmpfs_size;   /* tmpfs: bytes, 0 = unlimited */
};

struct dv_compose_service_network {
	char *name;            /* key in the project's networks ("default" included) */
	struct dv_compose_strv aliases;
};

/* A host name (and optional path prefix) the proxy routes to a service. */
struct dv_compose_domain {
	char *environment;     /* NULL: every environment; else "production", "staging"... */
	char *host;            /* lower case; may start with "*." */
	char *path;            /* path prefix, "/" when none */
};

/* x-davit.health: an HTTP path or a command probed by davit. */
struct dv_compose_davit_health {
	bool present;
	char *path;            /* "/api/v1/health", or NULL */
	char *cmd;             /* a shell command line, or NULL (exactly one of path/cmd) */
	uint64_t interval_ms;  /* 0: not set */
	uint64_t timeout_ms;
	uint64_t start_period_ms;
	unsigned retries;
};

struct dv_compose_service {
	char *name;
	enum dv_compose_kind kind;
	char *image;                   /* NULL if none */
	struct dv_compose_build build; /* build.context == NULL: no build */
	bool has_command;              /* command given (possibly an empty list) */
	struct dv_compose_strv command;    /* argv; a string form is split like a shell would */
	bool has_entrypoint;
	struct dv_compose_strv entrypoint;
	char *working_dir;             /* container path, or for native services an absolute
	                                * host directory (default: the project directory) */
	struct dv_compose_strv env_files;  /* absolute paths, in order (already merged below) */
	struct dv_compose_kv *environment; /* env_file values overridden by environment:; sorted */
	size_t n_environment;
	struct dv_compose_port *ports;
	size_t n_ports;
	struct dv_compose_strv expose;     /* "3000/tcp" or "3000-3005/udp", in order */
	struct dv_compose_dependency *depends_on; /* sorted by service name */
	size_t n_depends_on;
	struct dv_compose_healthcheck healthcheck;
	enum dv_compose_restart restart;
	unsigned restart_max;          /* on-failure:N */
	struct dv_compose_deploy deploy;
	struct dv_compose_kv *labels;  /* sorted by key */
	size_t n_labels;
	struct dv_compose_mount *volumes;  /* in order */
	size_t n_volumes;
	struct dv_compose_service_network *networks; /* sorted by name; ["default"] if none given */
	size_t n_networks;
	char *user;                    /* container user ("1000", "app:app"), or NULL */
	uint64_t stop_grace_ms;        /* stop_grace_period; 0: not set */
	char *stop_signal;             /* "SIGQUIT"..., or NULL */
	unsigned pids_limit;           /* 0: not set */

	/* x-davit */
	char *run;                     /* native shell command line, or NULL */
	unsigned port;                 /* x-davit.port, else Traefik's
	                                * loadbalancer.server.port label, else 0 */
	char *static_dir;              /* absolute directory, or NULL */
	struct dv_compose_domain *domains; /* x-davit.domains (map form sorted by environment),
	                                    * then Traefik router rules; no duplicates */
	size_t n_domains;
	struct dv_compose_davit_health health;
	char *tls_cert, *tls_key;      /* x-davit.tls {cert, key}: absolute PEM paths, or NULL
	                                * (the certificate for this service's domains) */
	/* Edge policy of the service's routes, in the options syntax of
	 * proxy/edge.h (docs/proxy.md), from x-davit edge keys and Traefik
	 * middleware labels; NULL: the defaults. */
	char *edge;
	struct dv_compose_kv *edge_domains; /* x-davit.per_domain: host -> options added for that
	                                     * host's routes; sorted by host */
	size_t n_edge_domains;
};

/* A top-level network or volume. */
struct dv_compose_resource {
	char *key;             /* the name used in the compose file */
	char *name;            /* the real name: name:, else the key for external ones,
	                        * else "<project>_<key>" */
	char *driver;          /* NULL: default */
	bool external;
	bool internal;         /* networks only */
};

struct dv_compose_project {
	char *name;            /* [a-z0-9][a-z0-9_-]* */
	char *file;            /* the compose file's path, as given to dv_compose_load */
	char *dir;             /* absolute directory of the compose file */
	struct dv_compose_service *services; /* sorted by name */
	size_t n_services;
	size_t *start_order;   /* n_services indices into services: dependencies first,
	                        * ties broken by name */
	struct dv_compose_resource *networks; /* sorted by key; includes "default" when used */
	size_t n_networks;
	struct dv_compose_resource *volumes;  /* sorted by key */
	size_t n_volumes;
	char **warnings;       /* "FILE:LINE:COLUMN: ..." each; by file then position */
	size_t n_warnings;
};

struct dv_compose_options {
	/* "NAME=value" strings, NULL-terminated: the variables that win over .env.
	 * NULL: the process environment (environ). */
	const char *const *environ;
	/* The project's env file. NULL: ".env" beside the compose file (skipped
	 * when missing); "": none. A path given here must exist. */
	const char *env_file;
	/* Overrides name: and the directory name when non-NULL. */
	const char *project_name;
};

/* Loads the compose file at `path`. `opts` may be NULL (all defaults).
 * On success returns 0 and sets *out to a project the caller owns (free it
 * with dv_compose_project_free). On failure returns a negative errno value
 * (-ENOENT, -EACCES... when the compose file cannot be read; -EFBIG over
 * 16 MiB; -EINVAL for anything invalid in it, its .env or its env_files),
 * sets *out to NULL and, when err is non-NULL, *err to a message the caller
 * frees: "FILE:LINE:COLUMN: what is wrong (what to do)". Out of memory
 * aborts. Reads files only; never runs anything. */
int dv_compose_load(const char *path, const struct dv_compose_options *opts,
                    struct dv_compose_project **out, char **err);

/* The same for compose text already in memory (a file uploaded through the
 * API, a fuzz input): `name` is what messages call it, `dir` the project
 * directory (relative paths, the default .env and the default project name
 * are taken from it; it must exist). text[0..len) need not be NUL-terminated.
 * Returns as dv_compose_load (-EFBIG over 16 MiB; -ENOENT... when dir cannot
 * be resolved). */
int dv_compose_load_buffer(const char *name, const char *text, size_t len, const char *dir,
                           const struct dv_compose_options *opts, struct dv_compose_project **out,
                           char **err);

/* Frees the project and everything it owns. NULL is fine. */
void dv_compose_project_free(struct dv_compose_project *project);

/* Lookups (NULL when absent). The results are borrowed from the project. */
const struct dv_compose_service *dv_compose_project_service(const struct dv_compose_project *project,
                                                            const char *name);
const struct dv_compose_resource *dv_compose_project_network(const struct dv_compose_project *project,
                                                             const char *key);
const struct dv_compose_resource *dv_compose_project_volume(const struct dv_compose_project *project,
                                                            const char *key);
const char *dv_compose_service_env(const struct dv_compose_service *service, const char *name);
const char *dv_compose_service_label(const struct dv_compose_service *service, const char *key);
/* True if `service` depends on the service named `name` (directly). */
bool dv_compose_service_depends_on(const struct dv_compose_service *service, const char *name);
/* True if `domain` applies to the environment `environment` (a domain without
 * environment applies to all; a NULL environment matches only those). */
bool dv_compose_domain_applies(const struct dv_compose_domain *domain, const char *environment);

/* Canonical JSON (UTF-8, no insignificant whitespace, object keys sorted,
 * integers only, every field present with null for "not set"): identical
 * for two compose files that resolve to the same model, whatever their key
 * order, formatting, anchors or short/long syntax. This is what a release
 * stores and what its content hash is computed over. The returned string is
 * the caller's to free; *len (if non-NULL) gets its length. */
char *dv_compose_service_to_json(const struct dv_compose_service *service, size_t *len);
/* The whole project: name, networks, services (by name), start_order (names),
 * volumes. Excludes the file path and the warnings. */
char *dv_compose_project_to_json(const struct dv_compose_project *project, size_t *len);

/* Compose value syntaxes, exported for the CLI and the API.
 * A duration is a sequence of decimal numbers with units ("1m30s", "1.5s",
 * "500ms"; units h, m, s, ms, us, ns), or "0"; it must be a whole number of
 * milliseconds. A size is bytes, or a number with a unit b, k, m, g, t
 * (powers of 1024; case-insensitive; optional "i"/"b": "512M", "1g", "2GiB",
 * "1.5g"). Both return 0, or -EINVAL (-ERANGE on overflow). */
int dv_compose_parse_duration(const char *text, uint64_t *ms);
int dv_compose_parse_size(const char *text, uint64_t *bytes);

#endif

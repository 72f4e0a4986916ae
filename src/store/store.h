/* store: davit's persistent state (the SQLite database `davit.db`).
 *
 * This module is the only one that includes sqlite3.h. It keeps what davit
 * needs to come back after a crash or `kill -9`:
 *   apps and their environments ("production", "staging", ...);
 *   releases: immutable (resolved compose JSON, env JSON, content hash),
 *     numbered per app/environment ("release 7"), never renumbered;
 *   the current pointer: which release serves each app/environment;
 *   deployments: a persisted state machine with its per-service steps;
 *   replicas: what the supervisor runs (pid + process start time, port, ...);
 *   events: an append-only log, pruned by age and count.
 *
 * Conventions
 * - Functions return 0 on success or a negative errno value; when `err` is
 *   not NULL, a failure also stores a readable message in *err (the caller
 *   frees it; an *err that is already set is kept). The codes used:
 *   -ENOENT   unknown app, environment, release, deployment;
 *   -EEXIST   the thing to create exists already;
 *   -EINVAL   a bad argument (name, JSON, state transition, ...);
 *   -EBUSY    the database is locked for longer than the busy timeout, or a
 *             deployment of that app/environment is already in progress;
 *   -EFBIG    a value above the documented caps;
 *   -ENOTSUP  the database was written by a newer davit;
 *   -EACCES, -EROFS, -ENOSPC, -EISDIR, -ENOTDIR: what the names say;
 *   -EIO      any other database failure (corruption, I/O error).
 *   Nothing is changed in the database when a function fails: every
 *   function that writes runs in one transaction.
 * - Timestamps are int64 milliseconds since the Unix epoch (UTC), taken from
 *   the store's clock (the real-time clock unless dv_store_set_clock() was
 *   used); 0 means "not set".
 * - Strings are UTF-8. Names (apps, environments) are [a-z0-9][a-z0-9_-]*,
 *   services [A-Za-z0-9][A-Za-z0-9._-]* (as the compose loader accepts them),
 *   at most DV_STORE_NAME_MAX bytes. Free text (messages, errors, notes) is
 *   stored with invalid UTF-8 replaced by U+FFFD and cut at
 *   DV_STORE_TEXT_MAX bytes, so that recording a failure never fails because
 *   of what a child process printed.
 * - Input pointers are borrowed. Every struct returned is owned by the
 *   caller, with all its strings, and freed with the matching *_free()
 *   function (each accepts NULL).
 *
 * Threads: a struct dv_store is one SQLite connection and must be used by one
 * thread at a time (it is opened with SQLITE_OPEN_NOMUTEX). Open one store
 * per thread that needs the database (e.g. one per job-pool thread): the
 * database is in WAL mode, so readers never block the writer, and writers
 * wait for each other up to the busy timeout (5 s), then fail with -EBUSY.
 * Several processes may open the same file in the same way.
 *
 * Durability: synchronous=FULL, so a function that returned 0 has written to
 * disk; a deploy engine can write a transition and then act on it.
 */
#ifndef DV_STORE_STORE_H
#define DV_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DV_STORE_NAME_MAX 128             /* app, environment, service, event kind names */
#define DV_STORE_TEXT_MAX (64 * 1024)     /* free text: longer text is cut */
#define DV_STORE_JSON_MAX (16 * 1024 * 1024) /* compose/env/event JSON: longer is refused */
#define DV_STORE_DEFAULT_ENV "production"

struct dv_store;

/* ---- opening -------------------------------------------------------------- */

/* Opens the database at `path`, creating it if it does not exist (the
 * directory must exist), and brings its schema up to date (migrations are
 * numbered; PRAGMA user_version records the last one applied; each runs in
 * its own transaction, so a failed migration leaves the previous version).
 * On success *out is a store the caller closes with dv_store_close().
 * On failure *out is NULL and the return value says why; in particular
 * -ENOTSUP for a database written by a newer davit (which is not touched),
 * -EINVAL for a file that is not a davit database, -EACCES/-EROFS when the
 * file or its directory is not writable (WAL needs to create files beside
 * the database), -ENOENT when the directory does not exist. */
int dv_store_open(const char *path, struct dv_store **out, char **err);

/* Closes the store (NULL is fine). Every struct returned by it stays valid. */
void dv_store_close(struct dv_store *store);

/* The schema version this binary writes (the number of migrations). */
int dv_store_schema_version(void);

/* The migrations, in order: migration i (0-based) brings the schema from
 * version i to version i + 1. Defined in migrations.c. */
extern const char *const dv_store_migrations[];
extern const size_t dv_store_migrations_len;

/* Replaces the clock that stamps rows (ms since the epoch); NULL restores the
 * real-time clock. For tests and tools that replay history. */
void dv_store_set_clock(struct dv_store *store, int64_t (*now_ms)(void *arg), void *arg);
/* The store clock's current time (ms since the epoch). */
int64_t dv_store_now_ms(struct dv_store *store);

/* ---- apps and environments ------------------------------------------------ */

struct dv_store_app {
	char *name;
	int64_t created_at;
};

struct dv_store_env {
	char *app;
	char *name;
	int64_t created_at;
	int64_t current_release; /* the release serving it; 0: none yet */
	int64_t last_release;    /* the highest release id ever created; 0: none */
};

/* Creates an app and its "production" environment. -EEXIST if it exists,
 * -EINVAL for a bad name. */
int dv_store_app_create(struct dv_store *store, const char *name, char **err);
/* Creates the app (with "production") unless it exists. *created (optional)
 * says which happened. */
int dv_store_app_ensure(struct dv_store *store, const char *name, bool *created, char **err);
/* Looks an app up; *out (optional) is set to a new struct on success.
 * -ENOENT if there is no such app. */
int dv_store_app_get(struct dv_store *store, const char *name, struct dv_store_app **out, char **err);
/* All apps by name. On success *apps (NULL when *n is 0) is freed with
 * dv_store_app_array_free(); on failure *apps is NULL and *n 0. */
int dv_store_app_list(struct dv_store *store, struct dv_store_app **apps, size_t *n, char **err);
/* Deletes an app with its environments, releases, deployments and steps
 * (its events stay). Refused with -EBUSY while a deployment is unfinished or
 * replicas are recorded (stop them first); -ENOENT if unknown. */
int dv_store_app_delete(struct dv_store *store, const char *name, char **err);
void dv_store_app_free(struct dv_store_app *app);
void dv_store_app_array_free(struct dv_store_app *apps, size_t n);

/* Creates an environment of an existing app. -ENOENT for an unknown app,
 * -EEXIST if it exists, -EINVAL for a bad name. */
int dv_store_env_create(struct dv_store *store, const char *app, const char *env, char **err);
/* Looks an environment up; *out (optional) is a new struct on success. */
int dv_store_env_get(struct dv_store *store, const char *app, const char *env, struct dv_store_env **out,
                     char **err);
/* The environments of an app by name (freed with dv_store_env_array_free).
 * -ENOENT for an unknown app. */
int dv_store_env_list(struct dv_store *store, const char *app, struct dv_store_env **envs, size_t *n, char **err);
/* Deletes an environment with its releases and deployments, with the same
 * refusals as dv_store_app_delete(). */
int dv_store_env_delete(struct dv_store *store, const char *app, const char *env, char **err);
void dv_store_env_free(struct dv_store_env *env);
void dv_store_env_array_free(struct dv_store_env *envs, size_t n);

/* ---- releases -------------------------------------------------------------- */

struct dv_store_release {
	char *app;
	char *env;
	int64_t id;          /* "release 7": increasing per app/environment, never reused */
	char *hash;          /* content hash (lower-case hex, computed by the caller) */
	char *compose_json;  /* the resolved compose as canonical JSON; NULL in lists */
	char *env_json;      /* the environment as JSON; NULL in lists */
	char *source;        /* a note: where it came from ("cli", "webhook abc123", ...) */
	int64_t created_at;
};

/* What a new release holds (all borrowed). */
struct dv_store_release_spec {
	const char *hash;         /* required: lower-case hex, 8..128 digits */
	const char *compose_json; /* required: valid JSON, at most DV_STORE_JSON_MAX bytes */
	const char *env_json;     /* NULL: "{}"; else valid JSON */
	const char *source;       /* NULL: "" (free text) */
};

/* Creates a release of app/env, or, when a release of the same app/env has
 * the same hash, returns that one instead (the content is not compared:
 * equal hashes mean equal releases). *out (optional) is the release (new
 * struct, with content); *created (optional) says whether it is new.
 * -ENOENT for an unknown app/env, -EINVAL for a bad hash or invalid JSON,
 * -EFBIG for JSON above DV_STORE_JSON_MAX. */
int dv_store_release_create(struct dv_store *store, const char *app, const char *env,
                            const struct dv_store_release_spec *spec, struct dv_store_release **out,
                            bool *created, char **err);
/* Release `id` of app/env, with content. -ENOENT if there is none. */
int dv_store_release_get(struct dv_store *store, const char *app, const char *env, int64_t id,
                         struct dv_store_release **out, char **err);
/* The release serving app/env, with content; *out is NULL (and 0 is
 * returned) when nothing has been deployed yet. -ENOENT for an unknown
 * app/env. */
int dv_store_release_current(struct dv_store *store, const char *app, const char *env,
                             struct dv_store_release **out, char **err);
/* Releases of app/env, newest first, at most `limit` (0: all), without
 * content (compose_json/env_json NULL). Freed with
 * dv_store_release_array_free(). */
int dv_store_release_list(struct dv_store *store, const char *app, const char *env, size_t limit,
                          struct dv_store_release **releases, size_t *n, char **err);
void dv_store_release_free(struct dv_store_release *release);
void dv_store_release_array_free(struct dv_store_release *releases, size_t n);

/* ---- deployments ----------------------------------------------------------- */

/* planned -> running -> succeeded
 *                    -> failed
 *                    -> rolling_back -> rolled_back | failed
 * planned -> failed (abandoned before it started).
 * succeeded, failed and rolled_back are final. */
enum dv_store_deploy_state {
	DV_STORE_DEPLOY_PLANNED = 0,
	DV_STORE_DEPLOY_RUNNING,
	DV_STORE_DEPLOY_SUCCEEDED,
	DV_STORE_DEPLOY_FAILED,
	DV_STORE_DEPLOY_ROLLING_BACK,
	DV_STORE_DEPLOY_ROLLED_BACK,
};

/* The states of one service's step within a deployment. */
enum dv_store_step_state {
	DV_STORE_STEP_STARTING = 0,
	DV_STORE_STEP_WAITING_HEALTHY,
	DV_STORE_STEP_SWITCHING,
	DV_STORE_STEP_DRAINING,
	DV_STORE_STEP_STOPPING_OLD,
	DV_STORE_STEP_DONE,
	DV_STORE_STEP_FAILED,
};

struct dv_store_deployment {
	int64_t id;               /* global, increasing */
	char *app;
	char *env;
	int64_t release;          /* the target release id */
	int64_t previous_release; /* the release serving when it was created; 0: none */
	enum dv_store_deploy_state state;
	int64_t created_at;
	int64_t started_at;       /* set when it enters running; 0 before */
	int64_t finished_at;      /* set when it reaches a final state; 0 before */
	int64_t deadline;         /* when the current phase must be over; 0: none */
	char *error;              /* why it failed or rolls back; NULL: no error */
};

struct dv_store_step {
	int64_t deployment;
	int64_t seq;              /* 1, 2, ... in the order the steps were appended */
	char *service;
	enum dv_store_step_state state;
	int64_t at;
	char *message;            /* NULL: none */
};

/* Names as stored ("planned", "waiting_healthy", ...); "?" for a bad value. */
const char *dv_store_deploy_state_name(enum dv_store_deploy_state state);
const char *dv_store_step_state_name(enum dv_store_step_state state);
/* Parses a name back; -EINVAL if it is not one. */
int dv_store_deploy_state_parse(const char *name, enum dv_store_deploy_state *out);
int dv_store_step_state_parse(const char *name, enum dv_store_step_state *out);
/* True for succeeded, failed and rolled_back. */
bool dv_store_deploy_state_final(enum dv_store_deploy_state state);
/* True if the state machine allows from -> to. */
bool dv_store_deploy_transition_allowed(enum dv_store_deploy_state from, enum dv_store_deploy_state to);

/* Plans a deployment of release `release` of app/env: state planned,
 * previous_release = the release serving now. Deploying the release that
 * serves already is allowed (a restart). `deadline` (0: none) is stored as
 * is. *out (optional) is the new deployment. -ENOENT for an unknown
 * app/env/release; -EBUSY if another deployment of app/env is unfinished
 * (at most one is, enforced by the schema). */
int dv_store_deployment_create(struct dv_store *store, const char *app, const char *env, int64_t release,
                               int64_t deadline, struct dv_store_deployment **out, char **err);

/* Moves deployment `id` to state `to`, in one transaction, before the caller
 * acts on it. `error` (NULL: keep the current one) is recorded as the
 * deployment's error; `deadline` replaces the deadline (0: none; final
 * states always clear it). Entering running sets started_at; a final state
 * sets finished_at. On succeeded the current pointer of app/env moves to the
 * target release; on rolled_back back to previous_release (or to nothing, if
 * none served before); failed leaves it alone. *out (optional) is the
 * deployment as written. -ENOENT for an unknown id; -EINVAL if the state
 * machine does not allow the transition (nothing is written). */
int dv_store_deployment_transition(struct dv_store *store, int64_t id, enum dv_store_deploy_state to,
                                   const char *error, int64_t deadline, struct dv_store_deployment **out,
                                   char **err);
/* Replaces the deadline of an unfinished deployment (0: none). -ENOENT for
 * an unknown id, -EINVAL for a finished one. */
int dv_store_deployment_set_deadline(struct dv_store *store, int64_t id, int64_t deadline, char **err);
/* Deployment `id`. -ENOENT if unknown. */
int dv_store_deployment_get(struct dv_store *store, int64_t id, struct dv_store_deployment **out, char **err);
/* The unfinished deployment (planned, running or rolling_back) of app/env,
 * for recovery after a crash; *out is NULL (and 0 returned) when there is
 * none. -ENOENT for an unknown app/env. */
int dv_store_deployment_find_unfinished(struct dv_store *store, const char *app, const char *env,
                                        struct dv_store_deployment **out, char **err);
/* Every unfinished deployment (all apps), oldest first: what a restarted
 * daemon must finish or roll back. */
int dv_store_deployment_list_unfinished(struct dv_store *store, struct dv_store_deployment **deployments,
                                        size_t *n, char **err);
/* Deployments of `app` (env NULL: every environment), newest first, at most
 * `limit` (0: all). -ENOENT for an unknown app/env. */
int dv_store_deployment_list(struct dv_store *store, const char *app, const char *env, size_t limit,
                             struct dv_store_deployment **deployments, size_t *n, char **err);
void dv_store_deployment_free(struct dv_store_deployment *deployment);
void dv_store_deployment_array_free(struct dv_store_deployment *deployments, size_t n);

/* Appends a step (service, state, message: NULL for none) to an unfinished
 * deployment; *seq (optional) is its number. -ENOENT for an unknown
 * deployment, -EINVAL for a finished one or a bad service name. */
int dv_store_step_append(struct dv_store *store, int64_t deployment, const char *service,
                         enum dv_store_step_state state, const char *message, int64_t *seq, char **err);
/* The steps of a deployment in order (freed with dv_store_step_array_free).
 * An unknown deployment has no steps (0 returned, *n 0). */
int dv_store_step_list(struct dv_store *store, int64_t deployment, struct dv_store_step **steps, size_t *n,
                       char **err);
void dv_store_step_array_free(struct dv_store_step *steps, size_t n);

/* ---- replicas ----------------------------------------------------------------- */

enum dv_store_replica_state {
	DV_STORE_REPLICA_STARTING = 0, /* spawned, not yet known healthy */
	DV_STORE_REPLICA_HEALTHY,      /* passing its health check; may receive traffic */
	DV_STORE_REPLICA_UNHEALTHY,    /* running but failing its health check */
	DV_STORE_REPLICA_DRAINING,     /* out of the route table, finishing requests */
	DV_STORE_REPLICA_STOPPING,     /* signalled to stop */
	DV_STORE_REPLICA_STOPPED,      /* exited on purpose */
	DV_STORE_REPLICA_CRASHED,      /* exited unexpectedly; waiting to be restarted */
};

/* One replica of a service of a release. Identified by (app, env, service,
 * release, index): during a deploy the old and the new release's replicas of
 * a service coexist. As input of dv_store_replica_upsert() its strings are
 * borrowed; as output they belong to the array. */
struct dv_store_replica {
	char *app;
	char *env;
	char *service;
	int64_t release;
	int64_t index;        /* 0, 1, ... within the service */
	int64_t pid;          /* 0: no process */
	uint64_t proc_start;  /* field 22 of /proc/PID/stat (start time in clock ticks since boot),
	                         to tell a reused pid from ours; 0: unknown */
	int port;             /* 0: none */
	enum dv_store_replica_state state;
	int64_t started_at;   /* 0: not started */
	int64_t restarts;
	int64_t updated_at;   /* output only: when the row was last written */
};

const char *dv_store_replica_state_name(enum dv_store_replica_state state);
int dv_store_replica_state_parse(const char *name, enum dv_store_replica_state *out);

/* Inserts or replaces the replica identified by (app, env, service, release,
 * index). -ENOENT for an unknown app/env/release, -EINVAL for a bad service
 * name, port or state. */
int dv_store_replica_upsert(struct dv_store *store, const struct dv_store_replica *replica, char **err);
/* Deletes one replica; deleting one that is not recorded is not an error
 * (*deleted, optional, says whether a row went). -ENOENT only for an unknown
 * app/env. */
int dv_store_replica_delete(struct dv_store *store, const char *app, const char *env, const char *service,
                            int64_t release, int64_t index, bool *deleted, char **err);
/* Replicas of `app` (NULL: of every app), ordered by app, env, service,
 * release, index (freed with dv_store_replica_array_free). An unknown app
 * has none. */
int dv_store_replica_list(struct dv_store *store, const char *app, struct dv_store_replica **replicas, size_t *n,
                          char **err);
void dv_store_replica_array_free(struct dv_store_replica *replicas, size_t n);

/* ---- events -------------------------------------------------------------------- */

struct dv_store_event {
	int64_t id;       /* increasing */
	int64_t at;
	char *app;        /* NULL: not about one app */
	char *kind;       /* "deploy.started", "replica.crashed", ... */
	char *message;
	char *data;       /* JSON text; NULL: none */
};

/* Which events dv_store_event_list() returns. Zeroed = the newest 100. */
struct dv_store_event_filter {
	const char *app;  /* NULL: every app (and app-less events) */
	const char *kind; /* NULL: every kind */
	int64_t since;    /* only events with at >= since */
	int64_t after_id; /* only events with id > after_id (for following) */
	size_t limit;     /* 0: 100; capped at 10000 */
};

/* Appends an event stamped now. app may be NULL (events are not tied to app
 * rows: they outlive a deleted app); kind is a name ([a-z0-9._-]);
 * data_json is NULL or valid JSON. *id (optional) is its id. -EINVAL for a
 * bad kind, app name or JSON. */
int dv_store_event_add(struct dv_store *store, const char *app, const char *kind, const char *message,
                       const char *data_json, int64_t *id, char **err);
/* Events matching `filter` (NULL: zeroed), newest first (freed with
 * dv_store_event_array_free). */
int dv_store_event_list(struct dv_store *store, const struct dv_store_event_filter *filter,
                        struct dv_store_event **events, size_t *n, char **err);
/* Deletes events older than `before` (at < before; 0: no age limit), then
 * all but the newest `keep` (0: no count limit). *deleted (optional) is the
 * number of events deleted. */
int dv_store_event_prune(struct dv_store *store, int64_t before, size_t keep, size_t *deleted, char **err);
void dv_store_event_array_free(struct dv_store_event *events, size_t n);

#endif

/* runtime: the driver interface through which the supervisor runs replicas.
 *
 * A driver instance (`struct dv_runtime`) runs replicas of services: native
 * processes (process.h, the default) or, later, containers (docker). The
 * supervisor talks to every driver through the same table of functions
 * (`struct dv_runtime_driver`, as Redis' connection types do), using the
 * dv_runtime_*() wrappers below.
 *
 * Threading: a driver instance belongs to one dv_loop (the control loop) and
 * is used from that loop's thread only. No function here blocks the loop for
 * longer than a system call on procfs/cgroupfs or a fork+exec.
 *
 * Lifetime of a replica: start() returns a handle in state RUNNING (or
 * STARTING for drivers that start asynchronously). Exactly one exit
 * notification follows, through the `on_exit` callback given to start(), once
 * the replica is gone (by itself, by stop(), or killed) and its output has
 * been collected. After that the handle stays valid (inspect, logs tail) until
 * remove() frees it. The callback may call remove() on its replica.
 *
 * The second half of this header holds the restart-policy helpers (pure
 * functions, restart.c) used by the supervisor. */
#ifndef DV_RUNTIME_RUNTIME_H
#define DV_RUNTIME_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dv_runtime;
struct dv_runtime_driver;
struct dv_replica;    /* opaque, owned by its driver */
struct dv_log_follow; /* opaque log subscription */

enum dv_replica_state {
	DV_REPLICA_STARTING = 0, /* asked to start, not yet running (asynchronous drivers) */
	DV_REPLICA_RUNNING,
	DV_REPLICA_STOPPING,     /* stop signal sent, waiting for the exit (or the kill) */
	DV_REPLICA_EXITED,       /* gone; the exit callback has run */
};

/* Status given to the exit callback when it is not known (a replica that
 * this daemon did not start, or that something else reaped). */
#define DV_REPLICA_STATUS_UNKNOWN (-1)

/* Longest line kept; longer lines are cut there (the rest of it is dropped). */
#define DV_REPLICA_LINE_MAX (16 * 1024)

/* A container replica (docker driver, docker.h): what the process fields of
 * dv_replica_spec do not say. Borrowed for the duration of start() only. */
struct dv_container_network {
	const char *name;         /* Docker network name (created if missing, labelled davit.app) */
	bool internal;            /* created with Internal: no route out, nothing published */
	char *const *aliases;     /* DNS names on it (NULL-terminated; the service name first) */
};

enum dv_container_mount_type { DV_MOUNT_VOLUME = 0, DV_MOUNT_BIND, DV_MOUNT_TMPFS };

struct dv_container_mount {
	enum dv_container_mount_type type;
	const char *source;       /* volume name (created if missing, labelled) or absolute host path */
	const char *target;
	bool read_only;
	bool create_host_path;    /* bind: mkdir -p the source if missing */
	uint64_t tmpfs_size;
};

struct dv_container_port {    /* a port the compose file publishes */
	const char *host_ip;      /* NULL: all interfaces */
	unsigned host_port;       /* 0: an ephemeral one */
	unsigned target;
	const char *protocol;     /* "tcp" (NULL), "udp" */
};

struct dv_container_spec {
	const char *image;        /* the tag the container runs (davit/<app>-<service>:<release>) */
	const char *pull;         /* image reference pulled (and tagged as `image`) when `image` is missing */
	const char *build_context;/* directory built (as `image`) when `image` is missing; NULL: none */
	const char *build_digest; /* SHA-256 of the context's tar when the release was made: a rebuild of a
	                           * pruned release's image from a context that changed since is refused */
	const char *dockerfile, *build_target;
	char *const *build_args;  /* "K=V", NULL-terminated */
	bool has_entrypoint, has_command;
	char *const *entrypoint;  /* argv (NULL-terminated; empty list = reset) */
	char *const *command;
	const char *user;
	const char *stop_signal;  /* "SIGQUIT", NULL: the image's (SIGTERM) */
	const char *working_dir;  /* container path, NULL: the image's */
	int64_t pids_limit;       /* 0: none */
	unsigned app_port;        /* the app's port in the container (0: none) */
	uint16_t loopback_port;   /* publish app_port on 127.0.0.1:loopback_port (0: not) */
	bool wait_port;           /* RUNNING only once app_port accepts on the container address */
	const struct dv_container_network *networks; /* the first is the primary (upstream address) */
	size_t n_networks;
	const struct dv_container_mount *mounts;
	size_t n_mounts;
	const struct dv_container_port *ports;
	size_t n_ports;
	/* Docker HEALTHCHECK override; health_set false: the image's own applies. */
	bool health_set, health_disabled;
	char *const *health_test; /* ["CMD-SHELL", "..."] or ["CMD", argv...] */
	uint64_t health_interval_ms, health_timeout_ms, health_start_period_ms;
	unsigned health_retries;
	uint64_t health_wait_ms;  /* how long a Docker health check may take to pass (0: 60 s) */
	const char *adopt_id;     /* attach to this running container instead of creating one */
	const char *spec_hash;    /* label davit.spec: what the container runs (recovery adopts only a match) */
};

/* Called once when a replica that start() returned as STARTING runs (its
 * container started and passed the start gates). Not called if it exits first. */
typedef void (*dv_replica_running_cb)(struct dv_replica *replica, void *arg);

/* A running container's Docker health check changed (docker driver): healthy
 * or not. The caller combines it with its own probes. */
typedef void (*dv_replica_health_cb)(struct dv_replica *replica, bool healthy, void *arg);

/* What to run. Everything is borrowed for the duration of start() only. */
struct dv_replica_spec {
	const char *app;          /* compose project name (required; no '/') */
	const char *service;      /* service name (required; no '/') */
	const char *release;      /* release id, NULL if none */
	unsigned index;           /* replica index within the service */
	const char *name;         /* replica name for its log file and cgroup; NULL: "<release>-<index>",
	                           * or "<index>" without a release */

	/* Either a shell command line, run as /bin/sh -c command ... */
	const char *command;
	/* ... or an argv (NULL-terminated; argv[0] is looked up in the PATH of `env`,
	 * else /usr/local/bin:/usr/bin:/bin) when command is NULL. */
	char *const *argv;
	/* The child's whole environment (NULL-terminated "KEY=VALUE"; NULL = empty).
	 * The driver adds nothing: the caller sets PORT, PATH, HOME... */
	char *const *env;
	const char *workdir;      /* NULL: the daemon's working directory */

	int stop_signal;          /* 0: SIGTERM */
	uint64_t stop_timeout_ms; /* grace before SIGKILL; 0: 10 s */

	uint64_t memory_limit;    /* bytes; 0: none */
	double cpu_limit;         /* CPUs (0.5 = half a CPU); 0: none */

	const struct dv_container_spec *container; /* non-NULL: a container (docker driver) */
	dv_replica_running_cb on_running; /* asynchronous drivers: see above (NULL: not told) */
	dv_replica_health_cb on_health;   /* Docker health changes after RUNNING (NULL: not told) */

	const char *log_dir;      /* logs go to <log_dir>/<service>/<name>.log; NULL: memory only */
	uint64_t log_max_bytes;   /* rotate past this size; 0: 10 MiB */
	unsigned log_max_files;   /* files kept including the current one; 0: 3 */
};

/* The exit notification: `status` is a wait status (test it with WIFEXITED,
 * WEXITSTATUS, WIFSIGNALED, WTERMSIG) or DV_REPLICA_STATUS_UNKNOWN. */
typedef void (*dv_replica_exit_cb)(struct dv_replica *replica, int status, void *arg);

enum dv_log_stream { DV_LOG_STREAM_STDOUT = 1, DV_LOG_STREAM_STDERR = 2 };

/* One line of a replica's output (without its newline). Borrowed: valid
 * during the callback only. */
struct dv_log_line {
	uint64_t seq;             /* 1, 2, 3... per replica */
	int64_t time_ms;          /* when it was read (Unix time, ms) */
	enum dv_log_stream stream;
	bool truncated;           /* the line was longer than DV_REPLICA_LINE_MAX */
	const char *text;
	size_t len;
};

/* Receives log lines; `line` is NULL once, when the replica's output has
 * ended (after which the subscription is gone: do not unfollow it). */
typedef void (*dv_log_line_cb)(struct dv_replica *replica, const struct dv_log_line *line, void *arg);

struct dv_replica_info {
	enum dv_replica_state state;
	int pid;                  /* process (group leader) id, kept after the exit; 0 if none */
	uint64_t start_ticks;     /* /proc/<pid>/stat field 22: persist it with the pid */
	int64_t started_at_ms;    /* Unix time, ms */
	uint64_t uptime_ms;       /* until now, or until the exit */
	bool has_exit_status;
	int exit_status;          /* a wait status (see dv_replica_exit_cb) */
	unsigned processes;       /* processes in the group (running only) */
	uint64_t rss_bytes;       /* resident memory summed over the group */
	uint64_t cpu_time_ms;     /* user + system CPU time summed over the group */
	bool limits_applied;      /* memory/CPU limits are enforced (cgroup) */
};

/* What a caller persists about a replica to find it again after a restart. */
struct dv_replica_ref {
	char *app, *service, *release, *name; /* may be NULL */
	unsigned index;
	int pid;                  /* process driver: pid and its start ticks */
	uint64_t start_ticks;
	char *id;                 /* container id (docker driver); NULL otherwise */
	unsigned loopback_port;   /* docker: the host port published on 127.0.0.1 (0: none) */
	char *spec_hash;          /* docker: its davit.spec label; NULL otherwise */
};

struct dv_runtime_driver {
	const char *name; /* "process", "docker" */
	int (*start)(struct dv_runtime *rt, const struct dv_replica_spec *spec, dv_replica_exit_cb on_exit,
	             void *arg, struct dv_replica **out, char **err);
	int (*stop)(struct dv_runtime *rt, struct dv_replica *replica, char **err);
	int (*inspect)(struct dv_runtime *rt, struct dv_replica *replica, struct dv_replica_info *info, char **err);
	size_t (*logs_tail)(struct dv_runtime *rt, struct dv_replica *replica, size_t max_lines, dv_log_line_cb cb,
	                    void *arg);
	struct dv_log_follow *(*logs_follow)(struct dv_runtime *rt, struct dv_replica *replica, dv_log_line_cb cb,
	                                     void *arg);
	void (*logs_unfollow)(struct dv_runtime *rt, struct dv_log_follow *follow);
	int (*list)(struct dv_runtime *rt, const struct dv_replica_ref *known, size_t n_known,
	            struct dv_replica_ref **found, size_t *n_found, char **err);
	int (*remove)(struct dv_runtime *rt, struct dv_replica *replica, char **err);
	void (*destroy)(struct dv_runtime *rt);
	/* Optional (NULL: 127.0.0.1 and the replica's own port): where the proxy
	 * and health checks reach the replica. Returns 0, or -1 if not known yet. */
	int (*address)(struct dv_runtime *rt, struct dv_replica *replica, void *sockaddr_storage, unsigned *len);
};

/* Every driver instance starts with this (drivers embed it first). */
struct dv_runtime {
	const struct dv_runtime_driver *driver;
};

/* Starts a replica. On success returns 0 and *out (owned by the driver until
 * remove()); `on_exit(arg)` will be called exactly once, from the loop, never
 * from within start(). On failure returns -1 with *err (caller frees) saying
 * what could not be started and why (command not found, missing directory...);
 * no callback follows. */
static inline int dv_runtime_start(struct dv_runtime *rt, const struct dv_replica_spec *spec,
                                   dv_replica_exit_cb on_exit, void *arg, struct dv_replica **out, char **err)
{
	return rt->driver->start(rt, spec, on_exit, arg, out, err);
}

/* Asks a replica to stop: its stop signal to the whole process group, then
 * SIGKILL after the stop timeout. Returns at once; the exit callback reports
 * the end. Stopping a replica that is stopping or gone is a no-op (0). */
static inline int dv_runtime_stop(struct dv_runtime *rt, struct dv_replica *replica, char **err)
{
	return rt->driver->stop(rt, replica, err);
}

/* Fills *info. Returns 0, or -1 with *err. */
static inline int dv_runtime_inspect(struct dv_runtime *rt, struct dv_replica *replica, struct dv_replica_info *info,
                                     char **err)
{
	return rt->driver->inspect(rt, replica, info, err);
}

/* Calls cb for the last `max_lines` lines kept in memory (oldest first;
 * 0 = all kept) and returns how many it passed. The line pointer is never
 * NULL here. */
static inline size_t dv_runtime_logs_tail(struct dv_runtime *rt, struct dv_replica *replica, size_t max_lines,
                                          dv_log_line_cb cb, void *arg)
{
	return rt->driver->logs_tail(rt, replica, max_lines, cb, arg);
}

/* Subscribes cb to every new line (lines after the current tail), until
 * unfollow, or until the output ends (cb gets NULL then, and the
 * subscription is freed). Returns NULL if the output has already ended. The
 * callback may unfollow any subscription, including its own. */
static inline struct dv_log_follow *dv_runtime_logs_follow(struct dv_runtime *rt, struct dv_replica *replica,
                                                           dv_log_line_cb cb, void *arg)
{
	return rt->driver->logs_follow(rt, replica, cb, arg);
}

static inline void dv_runtime_logs_unfollow(struct dv_runtime *rt, struct dv_log_follow *follow)
{
	rt->driver->logs_unfollow(rt, follow);
}

/* Re-discovery after a daemon restart: returns in *found (an array the caller
 * frees with dv_replica_refs_free) the replicas still alive. The process
 * driver checks each of `known` (pid + start ticks, as persisted); the docker
 * driver lists containers by their labels and ignores `known`. */
static inline int dv_runtime_list(struct dv_runtime *rt, const struct dv_replica_ref *known, size_t n_known,
                                  struct dv_replica_ref **found, size_t *n_found, char **err)
{
	return rt->driver->list(rt, known, n_known, found, n_found, err);
}

/* Frees an exited replica's handle (its log files stay); the handle must not
 * be used afterwards (the memory itself goes at the end of the loop
 * iteration). Returns -1 with *err if the replica has not exited yet (stop it
 * first). */
static inline int dv_runtime_remove(struct dv_runtime *rt, struct dv_replica *replica, char **err)
{
	return rt->driver->remove(rt, replica, err);
}

/* Frees the driver instance. Replicas still running are killed (SIGKILL to
 * their groups) and reaped; no exit callbacks are called. */
static inline void dv_runtime_destroy(struct dv_runtime *rt)
{
	if (rt)
		rt->driver->destroy(rt);
}

/* The replica's upstream address (struct sockaddr_storage) if its driver
 * has its own (a container's address on its network): 0, or -1 when the
 * caller's default (loopback and the replica's port) applies. */
static inline int dv_runtime_address(struct dv_runtime *rt, struct dv_replica *replica, void *ss, unsigned *len)
{
	return rt->driver->address ? rt->driver->address(rt, replica, ss, len) : -1;
}

/* Frees an array of refs and their strings. */
void dv_replica_refs_free(struct dv_replica_ref *refs, size_t n);

/* Describes a wait status: "exited with code 3", "killed by signal 9
 * (SIGKILL)", "status unknown". Returns buf. */
char *dv_runtime_status_format(int status, char *buf, size_t size);

/* Formats a Unix time in ms as RFC 3339 UTC with milliseconds
 * ("2024-05-01T12:34:56.789Z", 24 characters) into buf (>= 32 bytes). */
char *dv_runtime_format_time(int64_t unix_ms, char *buf, size_t size);

/* ---- restart policy (restart.c): pure functions for the supervisor ---- */

struct dv_restart_policy {
	uint64_t backoff_initial_ms; /* first delay; 0: 1 s */
	uint64_t backoff_max_ms;     /* cap; 0: 60 s */
	uint64_t reset_after_ms;     /* a run this long resets the backoff; 0: 30 s */
	unsigned crashloop_exits;    /* this many exits ... ; 0: 5 */
	uint64_t crashloop_window_ms;/* ... within this window is a crash loop; 0: 60 s */
};

#define DV_RESTART_TRACKED_EXITS 32

/* Per-replica-slot restart state; zero-initialise it. */
struct dv_restart_state {
	unsigned failures;           /* consecutive short runs */
	uint64_t exits[DV_RESTART_TRACKED_EXITS]; /* recent exit times (ms), ring */
	size_t n_exits, next;
};

/* The delay before restart number `failures` + 1 after `failures` short runs in a
 * row: initial * 2^failures, capped. Pure. */
uint64_t dv_restart_backoff_ms(const struct dv_restart_policy *policy, unsigned failures);

/* True if `n` exits at the given times (any order) contain crashloop_exits
 * within crashloop_window_ms ending at `now_ms`. Pure. */
bool dv_restart_is_crashloop(const struct dv_restart_policy *policy, const uint64_t *exit_times_ms, size_t n,
                             uint64_t now_ms);

/* Records an exit at `now_ms` after a run of `ran_ms`: resets the failure count
 * if the run was long enough, returns the delay to wait before restarting and
 * sets *crashloop when the recent exits form a crash loop. */
uint64_t dv_restart_note_exit(const struct dv_restart_policy *policy, struct dv_restart_state *state,
                              uint64_t now_ms, uint64_t ran_ms, bool *crashloop);

#endif

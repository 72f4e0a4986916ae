/* health: periodic health checks of service replicas.
 *
 * A check probes one replica on the caller's loop, never blocking it: HTTP
 * (GET a path, 2xx/3xx or an expected status is healthy), TCP (a connect
 * succeeds) or COMMAND (`/bin/sh -c` exits 0). Each probe has a timeout;
 * `retries` consecutive failures make the replica UNHEALTHY, one success
 * makes it HEALTHY. Failures during `start_period` do not count, and a
 * success ends the start period early (as Docker's HEALTHCHECK does).
 *
 *     STARTING --success--> HEALTHY <--success / retries failures--> UNHEALTHY
 *     STARTING --retries failures (after start_period)--> UNHEALTHY
 *
 * The owner (the supervisor) learns of state changes through a callback; the
 * text of the last probe result ("HTTP 503 from 127.0.0.1:3001/health after
 * 12 ms", "connect to 127.0.0.1:3001: Connection refused", "timed out after
 * 5000 ms ...", "command exited 1: <first line of its output>") is kept for
 * `davit ps` and deploy failure messages.
 *
 * Everything runs on the loop's thread; nothing here is thread-safe. Command
 * probes are started with posix_spawn in their own process group and waited
 * for through a pidfd, so other children's exit statuses are never taken
 * (this module never calls waitpid(-1)). */
#ifndef DV_HEALTH_HEALTH_H
#define DV_HEALTH_HEALTH_H

#include "core/loop.h"
#include "core/util.h"

#include <stdbool.h>
#include <stdint.h>

enum dv_health_kind {
	DV_HEALTH_HTTP = 1, /* GET http_path from target */
	DV_HEALTH_TCP,      /* connect to target */
	DV_HEALTH_COMMAND   /* /bin/sh -c command, exit 0 = healthy */
};

enum dv_health_state {
	DV_HEALTH_STARTING = 0, /* no verdict yet */
	DV_HEALTH_HEALTHY,
	DV_HEALTH_UNHEALTHY
};

/* Defaults for the members left zero. */
#define DV_HEALTH_DEFAULT_INTERVAL_MS 10000u
#define DV_HEALTH_DEFAULT_TIMEOUT_MS 5000u
#define DV_HEALTH_DEFAULT_RETRIES 3u
/* A response head larger than this is a failure. */
#define DV_HEALTH_MAX_RESPONSE_HEAD 16384u
/* Bytes of a command's output kept (the rest is read and dropped). */
#define DV_HEALTH_MAX_COMMAND_OUTPUT 4096u
/* Longest http_path / http_host accepted. */
#define DV_HEALTH_MAX_PATH 2048u
#define DV_HEALTH_MAX_HOST 255u
/* Longest interval, timeout or start period accepted (7 days). */
#define DV_HEALTH_MAX_DURATION_MS (7ull * 24 * 3600 * 1000)

/* What to check and how often. Strings and arrays are borrowed:
 * dv_health_start() copies them. */
struct dv_health_spec {
	enum dv_health_kind kind;

	/* HTTP and TCP: the replica's address. */
	struct dv_sockaddr target;

	/* HTTP */
	const char *http_path;   /* origin-form, must start with "/"; NULL = "/" */
	const char *http_host;   /* Host header; NULL = the target ("127.0.0.1:3001") */
	int http_expect_status;  /* exact status wanted; 0 = any 2xx or 3xx */

	/* COMMAND */
	const char *command;              /* run as /bin/sh -c command */
	const char *const *command_env;   /* NULL-terminated "NAME=value" list: the whole
	                                   * environment of the command; NULL = davit's own */
	const char *command_cwd;          /* working directory; NULL = davit's own */

	uint64_t interval_ms;     /* from the end of one probe to the start of the next; 0 = 10 s */
	uint64_t timeout_ms;      /* per probe; 0 = 5 s */
	unsigned retries;         /* consecutive failures before UNHEALTHY; 0 = 3 */
	uint64_t start_period_ms; /* failures during it do not count; 0 = none */
};

struct dv_health_check;

/* Called on the loop's thread when the state changes (never for a probe that
 * leaves it as it was). last_result is the text of the probe that caused the
 * change, valid during the call. The callback may call dv_health_stop() on
 * this or any other check, and dv_health_check_now(). */
typedef void (*dv_health_change_cb)(struct dv_health_check *check, enum dv_health_state state,
                                    const char *last_result, void *arg);

/* Checks a spec without starting anything. Returns 0, or -1 with *err (a
 * message saying what is wrong; the caller frees it; err may be NULL). */
int dv_health_spec_validate(const struct dv_health_spec *spec, char **err);

/* Starts checking. The first probe runs right away (on the next timer pass of
 * the loop, never inside this call), then `interval` after each probe ends.
 * The spec is copied. on_change is required; arg is passed back to it.
 * Returns the check (the caller stops it with dv_health_stop()), or NULL if
 * the spec is invalid (dv_health_spec_validate() says why). */
struct dv_health_check *dv_health_start(struct dv_loop *loop, const struct dv_health_spec *spec,
                                        dv_health_change_cb on_change, void *arg);

/* Stops the check: no callback runs after this returns. A probe in flight is
 * abandoned at once (its socket closed, a command's process group killed with
 * SIGKILL). Memory is released at once when no probe ran in the current loop
 * iteration; otherwise by the loop later in this iteration (after a killed
 * command has been reaped), so the loop must run again before it is freed.
 * Safe to call from any callback on the loop's thread. NULL is ignored. */
void dv_health_stop(struct dv_health_check *check);

/* Asks for a probe now instead of at the next interval (a deploy wants the
 * first verdict fast, a restart wants a fresh one). If a probe is in flight,
 * another one starts as soon as it ends. Never probes inside this call. */
void dv_health_check_now(struct dv_health_check *check);

enum dv_health_state dv_health_state(const struct dv_health_check *check);
/* Text of the last probe result ("" before the first one); valid until the
 * next result is applied or the check is stopped. */
const char *dv_health_last_result(const struct dv_health_check *check);
/* Consecutive failures counted so far (failures in the start period are not). */
unsigned dv_health_failures(const struct dv_health_check *check);

/* "starting", "healthy", "unhealthy". */
const char *dv_health_state_name(enum dv_health_state state);

#endif

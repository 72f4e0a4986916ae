/* daemon: wiring of the platform process (`davit daemon`): state directory,
 * store, proxy workers, control loop, control API, engine. */
#ifndef DV_DAEMON_DAEMON_H
#define DV_DAEMON_DAEMON_H

#include <stddef.h>
#include <stdint.h>

struct dv_daemon_options {
	const char *state_dir;  /* created if missing */
	const char *http;       /* proxy listen address "ADDR:PORT" */
	unsigned workers;       /* proxy workers, 0 = number of CPUs */
	uint64_t health_timeout_ms;  /* 0: 60 s */
	uint64_t drain_timeout_ms;   /* 0: 30 s */
	uint64_t deploy_timeout_ms;  /* 0: 15 min */
	const char *metrics_listen;  /* /metrics listener; NULL: the default (a warning if it is taken); "off" */
	const char *metrics_token;   /* bearer token for /metrics; NULL: none */
	const char *const *notify;   /* "TYPE=URL" notifier specs (daemon flags) */
	size_t nnotify;
	uint64_t logs_max_age_ms;    /* replica log retention (0: 7 days) */
	uint64_t logs_max_bytes;     /* (0: 1 GiB) */
};

/* Runs until SIGTERM/SIGINT or POST /v1/shutdown; returns the exit status.
 * Errors before the daemon is up are printed to stderr (exit status 1). */
int dv_daemon_run(const struct dv_daemon_options *options);

#endif

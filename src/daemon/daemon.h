/* daemon: wiring of the platform process (`davit daemon`): state directory,
 * store, proxy workers, control loop, control API, engine. */
#ifndef DV_DAEMON_DAEMON_H
#define DV_DAEMON_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

struct dv_daemon_options {
	const char *state_dir;  /* created if missing */
	const char *http;       /* proxy listen address "ADDR:PORT" */
	unsigned workers;       /* proxy workers, 0 = number of CPUs */
	uint64_t health_timeout_ms;  /* 0: 60 s */
	uint64_t drain_timeout_ms;   /* 0: 30 s */
	uint64_t deploy_timeout_ms;  /* 0: 15 min */
	bool docker_loopback;        /* --docker-upstream loopback (see dv_engine_config) */
	unsigned keep_images;        /* --keep-images N; 0: 5 */
};

/* Runs until SIGTERM/SIGINT or POST /v1/shutdown; returns the exit status.
 * Errors before the daemon is up are printed to stderr (exit status 1). */
int dv_daemon_run(const struct dv_daemon_options *options);

#endif

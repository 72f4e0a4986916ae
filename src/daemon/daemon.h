/* daemon: wiring of the platform process (`davit daemon`): state directory,
 * store, proxy workers, control loop, control API, engine. */
#ifndef DV_DAEMON_DAEMON_H
#define DV_DAEMON_DAEMON_H

struct dv_daemon_options {
	const char *state_dir;  /* created if missing */
	const char *http;       /* proxy listen address "ADDR:PORT" */
	unsigned workers;       /* proxy workers, 0 = number of CPUs */
};

/* Runs until SIGTERM/SIGINT or POST /v1/shutdown; returns the exit status.
 * Errors before the daemon is up are printed to stderr (exit status 1). */
int dv_daemon_run(const struct dv_daemon_options *options);

#endif

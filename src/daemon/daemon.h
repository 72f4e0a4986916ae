/* daemon: wiring of the platform process (`davit daemon`): state directory,
 * store, proxy workers, control loop, control API, engine. */
#ifndef DV_DAEMON_DAEMON_H
#define DV_DAEMON_DAEMON_H

#include <stdbool.h>
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
	bool docker_loopback;        /* --docker-upstream loopback (see dv_engine_config) */
	unsigned keep_images;        /* --keep-images N; 0: 5 */

	/* HTTPS (docs/ARCHITECTURE.md "Certificates") */
	const char *https;           /* HTTPS listener "ADDR:PORT", NULL = none */
	int acme;                    /* 1 on, 0 off, -1 auto: on when the HTTP listener is on port 80
	                              * (a CA can only validate there) or a directory was given */
	const char *acme_directory;  /* NULL: Let's Encrypt production */
	const char *acme_ca_bundle;  /* PEM file trusted for the CA's HTTPS, NULL: system */
	const char *acme_email;      /* account contact, NULL: none */
	const char *acme_challenge;  /* "http-01" (NULL) or "tls-alpn-01" */
	uint64_t acme_renew_before_s; /* 0: 30 days */
	uint64_t acme_retry_base_ms; /* 0: 60 s */
	const char **certs;          /* user certificates "HOST=CERT,KEY" */
	size_t ncerts;
};

/* Runs until SIGTERM/SIGINT or POST /v1/shutdown; returns the exit status.
 * Errors before the daemon is up are printed to stderr (exit status 1). */
int dv_daemon_run(const struct dv_daemon_options *options);

#endif

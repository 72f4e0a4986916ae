/* `davit daemon`: run the platform in the foreground. */
#include "cli/cli.h"

#include "acme/acme.h"
#include "core/util.h"
#include "daemon/daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
	"usage: davit daemon [--state-dir DIR] [--http ADDR:PORT] [--workers N]\n"
	"\n"
	"Run the davit platform in the foreground (what the systemd unit runs): the\n"
	"reverse proxy on --http, the control API on DIR/run/davit.sock, supervision of\n"
	"every deployed app. SIGTERM stops it gracefully (replicas get SIGTERM too).\n"
	"\n"
	"  --state-dir DIR    state directory (default ./.davit or $DAVIT_STATE_DIR)\n"
	"  --http ADDR:PORT   proxy listener (default 0.0.0.0:80 as root, 127.0.0.1:8080 otherwise)\n"
	"  --workers N        proxy worker threads (default: number of CPUs)\n"
	"  --health-timeout DUR   a new replica must pass its health check within this (default 60s)\n"
	"  --drain-timeout DUR    in-flight requests of replaced replicas may take this long (default 30s)\n"
	"  --deploy-timeout DUR   hard deadline of a whole deploy (default 15m)\n"
	"  --docker-upstream MODE how the proxy reaches containers: 'address' (default: the container's\n"
	"                         address on its app network) or 'loopback' (each replica's app port is\n"
	"                         published on 127.0.0.1:<free port> and routed and probed there)\n"
	"  --keep-images N        keep the images of the newest N releases per service (default 5)\n"
	"  --metrics-listen ADDR:PORT|off  Prometheus /metrics (default 127.0.0.1:9180; if taken: off)\n"
	"  --metrics-token TOKEN  require 'Authorization: Bearer TOKEN' on /metrics (or $DAVIT_METRICS_TOKEN)\n"
	"  --logs-max-age DUR     replica log files older than this are removed (default 7d = 168h)\n"
	"  --logs-max-size BYTES  and the oldest while all of them take more (default 1073741824)\n"
	"  --notify TYPE=URL      send alerts and deploy results (repeatable): webhook=URL, slack=URL,\n"
	"                         discord=URL, email=smtp://HOST:PORT?from=ADDR&to=ADDR[,ADDR]\n"
	"\n"
	"Environment: DAVIT_METRICS_INTERVAL (10s) collection interval; DAVIT_ALERT_FOR replaces every\n"
	"default alert rule's duration; DAVIT_HOST_ROOT reads /proc there; DAVIT_DISK_PATH is the file\n"
	"system disk_low watches (the state directory); DAVIT_NOTIFY_TIMEOUT (10s), DAVIT_NOTIFY_RETRIES (3),\n"
	"DAVIT_NOTIFY_BACKOFF (1s, doubling) for notifications.\n"
	"\n"
	"HTTPS and certificates (see 'davit certs'):\n"
	"  --https ADDR:PORT|off  HTTPS listener (default 0.0.0.0:443 as root, 127.0.0.1:8443 otherwise;\n"
	"                         with --http given: its address on 443 if --http is on port 80, else off)\n"
	"  --cert HOST=CERT,KEY   serve this PEM certificate chain and key for HOST (repeatable)\n"
	"  --acme-directory URL   ACME directory (default Let's Encrypt; 'staging' = its staging CA)\n"
	"  --acme-ca-bundle FILE  CA certificates to trust for the ACME server's HTTPS (e.g. pebble's)\n"
	"  --acme-email ADDR      account contact for expiry notices\n"
	"  --acme-challenge http-01|tls-alpn-01   how the CA validates (default http-01 on the HTTP\n"
	"                         listener; tls-alpn-01 answers on the HTTPS listener, for when port\n"
	"                         80 is closed)\n"
	"  --acme-renew-before DUR  renew this long before expiry (default 30 days; a third of the\n"
	"                         lifetime for shorter certificates)\n"
	"  --acme-retry DUR       first retry delay after a failure, doubling up to 6h (default 1m)\n"
	"  --acme / --no-acme     force the ACME client on / off (default: on when HTTP is on port 80\n"
	"                         or --acme-directory is given)\n";

/* 0.0.0.0:443 as root, 127.0.0.1:8443 otherwise (like dv_cli_default_http). */
static const char *default_https(const char *http, bool http_given)
{
	if (!http_given)
		return geteuid() == 0 ? "0.0.0.0:443" : "127.0.0.1:8443";
	static char buf[300];
	const char *colon = strrchr(http, ':');
	if (!colon || strcmp(colon, ":80") != 0)
		return NULL;
	snprintf(buf, sizeof buf, "%.*s:443", (int)(colon - http), http);
	return buf;
}

int dv_cli_daemon(int argc, char **argv)
{
	struct dv_daemon_options o = {.state_dir = dv_cli_default_state_dir(), .http = dv_cli_default_http(), .acme = -1};
	bool http_given = false, https_given = false;
	static const char *certs[64];
	const char *notify[32];
	o.notify = notify;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(usage_text, stdout);
			return 0;
		} else if (strcmp(a, "--state-dir") == 0 && i + 1 < argc) {
			o.state_dir = argv[++i];
		} else if (strcmp(a, "--logs-max-age") == 0 && i + 1 < argc) {
			const char *v = argv[++i];
			size_t vl = strlen(v);
			uint64_t days;
			char num[32];
			snprintf(num, sizeof num, "%.*s", vl ? (int)vl - 1 : 0, v);
			if (vl > 1 && v[vl - 1] == 'd' && dv_parse_uint(num, 36500, &days) == 0 && days > 0) {
				o.logs_max_age_ms = days * 86400000ull; /* "7d" */
			} else if (dv_parse_duration_ms(v, &o.logs_max_age_ms) != 0 || o.logs_max_age_ms == 0) {
				fprintf(stderr, "davit daemon: --logs-max-age takes a duration like 7d, 168h or 30m\n");
				return 2;
			}
		} else if (strcmp(a, "--logs-max-size") == 0 && i + 1 < argc) {
			if (dv_parse_uint(argv[++i], UINT64_MAX, &o.logs_max_bytes) != 0 || o.logs_max_bytes == 0) {
				fprintf(stderr, "davit daemon: --logs-max-size takes a number of bytes\n");
				return 2;
			}
		} else if (strcmp(a, "--metrics-listen") == 0 && i + 1 < argc) {
			o.metrics_listen = argv[++i];
		} else if (strcmp(a, "--metrics-token") == 0 && i + 1 < argc) {
			o.metrics_token = argv[++i];
		} else if (strcmp(a, "--notify") == 0 && i + 1 < argc) {
			if (o.nnotify == DV_ARRAY_LEN(notify)) {
				fprintf(stderr, "davit daemon: at most %zu --notify\n", DV_ARRAY_LEN(notify));
				return 2;
			}
			notify[o.nnotify++] = argv[++i];
		} else if (strcmp(a, "--http") == 0 && i + 1 < argc) {
			o.http = argv[++i];
			http_given = true;
		} else if (strcmp(a, "--https") == 0 && i + 1 < argc) {
			o.https = strcmp(argv[++i], "off") == 0 ? NULL : argv[i];
			https_given = true;
		} else if (strcmp(a, "--cert") == 0 && i + 1 < argc) {
			const char *v = argv[++i], *eq = strchr(v, '=');
			if (!eq || eq == v || !strchr(eq, ',') || o.ncerts == DV_ARRAY_LEN(certs)) {
				fprintf(stderr, "davit daemon: --cert takes HOST=CERT.pem,KEY.pem (at most 64)\n");
				return 2;
			}
			certs[o.ncerts++] = v;
		} else if (strcmp(a, "--acme-directory") == 0 && i + 1 < argc) {
			o.acme_directory = argv[++i];
			if (strcmp(o.acme_directory, "staging") == 0)
				o.acme_directory = DV_ACME_LETSENCRYPT_STAGING;
		} else if (strcmp(a, "--acme-ca-bundle") == 0 && i + 1 < argc) {
			o.acme_ca_bundle = argv[++i];
		} else if (strcmp(a, "--acme-email") == 0 && i + 1 < argc) {
			o.acme_email = argv[++i];
		} else if (strcmp(a, "--acme-challenge") == 0 && i + 1 < argc) {
			o.acme_challenge = argv[++i];
			if (strcmp(o.acme_challenge, "http-01") != 0 && strcmp(o.acme_challenge, "tls-alpn-01") != 0) {
				fprintf(stderr, "davit daemon: --acme-challenge takes http-01 or tls-alpn-01\n");
				return 2;
			}
		} else if (strcmp(a, "--acme") == 0) {
			o.acme = 1;
		} else if (strcmp(a, "--no-acme") == 0) {
			o.acme = 0;
		} else if ((strcmp(a, "--acme-renew-before") == 0 || strcmp(a, "--acme-retry") == 0) && i + 1 < argc) {
			uint64_t ms;
			if (dv_parse_duration_ms(argv[++i], &ms) != 0 || ms == 0) {
				fprintf(stderr, "davit daemon: %s takes a duration like 30s, 12h\n", a);
				return 2;
			}
			if (strcmp(a, "--acme-retry") == 0)
				o.acme_retry_base_ms = ms;
			else
				o.acme_renew_before_s = ms / 1000 ? ms / 1000 : 1;
		} else if (strcmp(a, "--workers") == 0 && i + 1 < argc) {
			uint64_t n;
			if (dv_parse_uint(argv[++i], 1024, &n) != 0 || n == 0) {
				fprintf(stderr, "davit daemon: --workers takes a number from 1 to 1024\n");
				return 2;
			}
			o.workers = (unsigned)n;
		} else if ((strcmp(a, "--health-timeout") == 0 || strcmp(a, "--drain-timeout") == 0 ||
		            strcmp(a, "--deploy-timeout") == 0) && i + 1 < argc) {
			uint64_t ms;
			if (dv_parse_duration_ms(argv[++i], &ms) != 0 || ms == 0) {
				fprintf(stderr, "davit daemon: %s takes a duration like 500ms, 30s or 2m\n", a);
				return 2;
			}
			if (strcmp(a, "--health-timeout") == 0)
				o.health_timeout_ms = ms;
			else if (strcmp(a, "--drain-timeout") == 0)
				o.drain_timeout_ms = ms;
			else
				o.deploy_timeout_ms = ms;
		} else if (strcmp(a, "--docker-upstream") == 0 && i + 1 < argc) {
			const char *m = argv[++i];
			if (strcmp(m, "loopback") != 0 && strcmp(m, "address") != 0) {
				fprintf(stderr, "davit daemon: --docker-upstream is 'address' or 'loopback'\n");
				return 2;
			}
			o.docker_loopback = strcmp(m, "loopback") == 0;
		} else if (strcmp(a, "--keep-images") == 0 && i + 1 < argc) {
			uint64_t n;
			if (dv_parse_uint(argv[++i], 1000, &n) != 0 || n == 0) {
				fprintf(stderr, "davit daemon: --keep-images takes a number from 1 to 1000\n");
				return 2;
			}
			o.keep_images = (unsigned)n;
		} else {
			fprintf(stderr, "davit daemon: unknown option or missing value '%s' (see --help)\n", a);
			return 2;
		}
	}
	if (!https_given)
		o.https = default_https(o.http, http_given);
	o.certs = certs;
	return dv_daemon_run(&o);
}

/* The observability commands: top, metrics, alerts, event. Thin clients of
 * the daemon's /v1/top, /v1/metrics, /v1/alerts and /v1/events. */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/strbuf.h"
#include "core/util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COMMON_OPTS                                                                                           \
	"  --app NAME        the app (compose project) when the daemon runs several\n"                         \
	"  --state-dir DIR   the daemon's state directory (default ./.davit or $DAVIT_STATE_DIR)\n"             \
	"  --json            JSON output\n"

/* Takes the options named in `names` (each with a value, or a flag when its
 * name ends in '!') out of argv into vals[], then parses the common ones.
 * Returns as dv_cli_parse_common, with -1 for help printed. */
int dv_cli_parse_extra(int argc, char **argv, const char *const *names, const char **vals, struct dv_cli_common *c,
                       const char *usage, int npos, bool dash_f_is_follow, const char *cmd)
{
	char **rest = dv_xcalloc((size_t)argc + 1, sizeof *rest);
	int n = 0;
	rest[n++] = argv[0];
	for (int i = 1; i < argc; i++) {
		bool taken = false;
		for (int k = 0; names[k]; k++) {
			size_t len = strlen(names[k]);
			bool flag = names[k][len - 1] == '!';
			if (flag ? strncmp(argv[i], names[k], len - 1) == 0 && argv[i][len - 1] == '\0'
			         : strcmp(argv[i], names[k]) == 0) {
				if (flag) {
					vals[k] = "1";
				} else if (i + 1 < argc) {
					vals[k] = argv[++i];
				} else {
					fprintf(stderr, "davit %s: %s needs a value (see --help)\n", cmd, names[k]);
					free(rest);
					return 2;
				}
				taken = true;
				break;
			}
		}
		if (!taken)
			rest[n++] = argv[i];
	}
	int rc = dv_cli_parse_common(n, rest, c, usage, npos, dash_f_is_follow);
	free(rest);
	return rc == 1 ? -1 : rc;
}

static int parse(int argc, char **argv, const char *const *names, const char **vals, struct dv_cli_common *c,
                 const char *usage, int npos, const char *cmd)
{
	return dv_cli_parse_extra(argc, argv, names, vals, c, usage, npos, false, cmd);
}

static volatile sig_atomic_t stop_requested;

static void on_sigint(int sig)
{
	stop_requested = 1;
}

int dv_cli_top(int argc, char **argv)
{
	static const char usage[] =
		"usage: davit top [--once] [--interval DUR] [--app NAME] [--json]\n\n"
		"Live per-service requests/s, p95 latency, error rate (5xx), CPU and memory, with the\n"
		"host's CPU, memory, disk and the number of alerts firing. Refreshes until Ctrl-C;\n"
		"the numbers are the daemon's last collection interval (10 s by default).\n\n"
		"  --once            print one screen and exit (--json implies it)\n"
		"  --interval DUR    refresh period (default 2s)\n" COMMON_OPTS;
	static const char *const names[] = {"--once!", "--interval", NULL};
	const char *vals[2] = {NULL, NULL};
	struct dv_cli_common c;
	int rc = parse(argc, argv, names, vals, &c, usage, 0, "top");
	if (rc)
		return rc < 0 ? 0 : rc;
	uint64_t every = 2000;
	if (vals[1] && (dv_parse_duration_ms(vals[1], &every) != 0 || every == 0)) {
		fprintf(stderr, "davit top: --interval takes a duration like 1s or 500ms\n");
		return 2;
	}
	char *t = dv_cli_target(&c, "/v1/top", NULL);
	if (vals[0] || c.json) {
		rc = dv_cli_call(&c, "GET", t, NULL);
		free(t);
		return rc;
	}
	signal(SIGINT, on_sigint);
	bool tty = isatty(STDOUT_FILENO);
	while (!stop_requested) {
		struct dv_cli_response resp;
		memset(&resp, 0, sizeof resp);
		dv_strbuf_init(&resp.body);
		char *err = NULL;
		if (dv_cli_request(c.state_dir, "GET", t, NULL, &resp, &err) != 0) {
			fprintf(stderr, "davit top: %s\n", err);
			free(err);
			rc = 1;
			break;
		}
		char now[32];
		time_t tt = time(NULL);
		struct tm tm;
		gmtime_r(&tt, &tm);
		strftime(now, sizeof now, "%H:%M:%S", &tm);
		if (tty)
			fputs("\033[H\033[2J", stdout);
		printf("davit top - %s UTC (Ctrl-C to quit)\n", now);
		fwrite(resp.body.data ? resp.body.data : "", 1, resp.body.len, stdout);
		if (!tty)
			fputs("\n", stdout);
		fflush(stdout);
		bool failed = resp.status < 200 || resp.status > 299;
		dv_strbuf_dispose(&resp.body);
		if (failed) {
			rc = 1;
			break;
		}
		struct timespec ts = {(time_t)(every / 1000), (long)(every % 1000) * 1000000L};
		nanosleep(&ts, NULL); /* a signal ends it early */
	}
	free(t);
	return rc;
}

int dv_cli_metrics(int argc, char **argv)
{
	static const char usage[] =
		"usage: davit metrics SERVICE|host [--since DUR] [--until DUR] [--resolution 10s|1m] [--app NAME] [--json]\n\n"
		"The history davit keeps of a service (requests/s, errors, p50/p95 latency, CPU, memory,\n"
		"availability) or of the host (CPU, memory, disk free, network): one point per 10 s for\n"
		"24 h, one per minute for 7 days.\n\n"
		"  --since DUR       from this long ago (default 1h), or unix seconds\n"
		"  --until DUR       up to this long ago (default now), or unix seconds\n"
		"  --resolution R    10s or 1m (default: 10s while the last 24 h are asked for)\n" COMMON_OPTS;
	static const char *const names[] = {"--since", "--until", "--resolution", NULL};
	const char *vals[3] = {NULL, NULL, NULL};
	struct dv_cli_common c;
	int rc = parse(argc, argv, names, vals, &c, usage, 1, "metrics");
	if (rc)
		return rc < 0 ? 0 : rc;
	if (c.npositional != 1) {
		fprintf(stderr, "davit metrics: which service? (davit metrics SERVICE, or 'host'; see davit ps)\n");
		return 2;
	}
	struct dv_strbuf extra;
	dv_strbuf_init(&extra);
	dv_strbuf_puts(&extra, "&service=");
	dv_cli_url_encode(&extra, c.positional[0]);
	const char *keys[] = {"since", "until", "resolution"};
	for (int i = 0; i < 3; i++) {
		if (vals[i]) {
			dv_strbuf_printf(&extra, "&%s=", keys[i]);
			dv_cli_url_encode(&extra, vals[i]);
		}
	}
	char *t = dv_cli_target(&c, "/v1/metrics", extra.data);
	rc = dv_cli_call(&c, "GET", t, NULL);
	free(t);
	dv_strbuf_dispose(&extra);
	return rc;
}

int dv_cli_alerts(int argc, char **argv)
{
	static const char usage[] =
		"usage: davit alerts [--json]\n\n"
		"Alerts firing, pending (condition true, waiting for its duration) and resolved in the\n"
		"last hour. Default rules: cpu_high (> 80% for 5m), memory_high (> 90% for 3m),\n"
		"disk_low (< 10% free), service_down (2m), error_rate_high (> 1% 5xx for 5m),\n"
		"latency_high (p95 > 2s for 5m), certificate_expiring (< 14 days), backup_failed.\n"
		"Change them under x-davit: alerts: in the compose file (see README).\n\n" COMMON_OPTS;
	static const char *const names[] = {NULL};
	struct dv_cli_common c;
	int rc = parse(argc, argv, names, NULL, &c, usage, 0, "alerts");
	if (rc)
		return rc < 0 ? 0 : rc;
	char *t = dv_cli_target(&c, "/v1/alerts", NULL);
	rc = dv_cli_call(&c, "GET", t, NULL);
	free(t);
	return rc;
}

int dv_cli_event(int argc, char **argv)
{
	static const char usage[] =
		"usage: davit event KIND [MESSAGE] [--data JSON] [--app NAME]\n\n"
		"Records an event, for scripts davit does not run itself: 'backup.failed' and\n"
		"'backup.succeeded' drive the backup_failed alert; 'certificate.expiry' with\n"
		"--data '{\"domain\":\"example.com\",\"not_after\":UNIX_SECONDS}' feeds the certificate\n"
		"alert and the davit_certificate_expiry_timestamp_seconds metric.\n\n"
		"  --data JSON       details (a JSON object)\n" COMMON_OPTS;
	static const char *const names[] = {"--data", NULL};
	const char *vals[1] = {NULL};
	struct dv_cli_common c;
	int rc = parse(argc, argv, names, vals, &c, usage, 2, "event");
	if (rc)
		return rc < 0 ? 0 : rc;
	if (c.npositional < 1) {
		fprintf(stderr, "davit event: which kind? e.g. davit event backup.failed 'disk full'\n");
		return 2;
	}
	struct dv_strbuf extra;
	dv_strbuf_init(&extra);
	dv_strbuf_puts(&extra, "&kind=");
	dv_cli_url_encode(&extra, c.positional[0]);
	if (c.npositional > 1) {
		dv_strbuf_puts(&extra, "&message=");
		dv_cli_url_encode(&extra, c.positional[1]);
	}
	char *t = dv_cli_target(&c, "/v1/events", extra.data);
	rc = dv_cli_call(&c, "POST", t, vals[0]);
	free(t);
	dv_strbuf_dispose(&extra);
	return rc;
}

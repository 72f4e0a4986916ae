/* The commands that ask the daemon and print its answer: ps, releases, logs,
 * rollback, restart|stop|start, down. Each is a thin client of one API call. */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/strbuf.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse(int argc, char **argv, struct dv_cli_common *c, const char *usage, int npos, bool follow)
{
	int rc = dv_cli_parse_common(argc, argv, c, usage, npos, follow);
	return rc == 1 ? -1 : rc; /* -1: help printed, exit 0 */
}

#define COMMON_OPTS                                                                                           \
	"  --app NAME        the app (compose project) when the daemon runs several\n"                         \
	"  --state-dir DIR   the daemon's state directory (default ./.davit or $DAVIT_STATE_DIR)\n"             \
	"  --json            JSON output\n"

int dv_cli_ps(int argc, char **argv)
{
	static const char usage[] = "usage: davit ps [--app NAME] [--json]\n\n"
	                            "Services and their replicas: state, health, release, port, pid, uptime, restarts.\n\n" COMMON_OPTS;
	struct dv_cli_common c;
	int rc = parse(argc, argv, &c, usage, 0, false);
	if (rc)
		return rc < 0 ? 0 : rc;
	char *t = dv_cli_target(&c, "/v1/ps", NULL);
	rc = dv_cli_call(&c, "GET", t, NULL);
	free(t);
	return rc;
}

int dv_cli_releases(int argc, char **argv)
{
	static const char usage[] = "usage: davit releases [--app NAME] [--json]\n\n"
	                            "The app's releases, newest first; the current one is marked.\n\n" COMMON_OPTS;
	struct dv_cli_common c;
	int rc = parse(argc, argv, &c, usage, 0, false);
	if (rc)
		return rc < 0 ? 0 : rc;
	char *t = dv_cli_target(&c, "/v1/releases", NULL);
	rc = dv_cli_call(&c, "GET", t, NULL);
	free(t);
	return rc;
}

int dv_cli_logs(int argc, char **argv)
{
	static const char usage[] = "usage: davit logs [-f] [--tail N] [--app NAME] [filters] [SERVICE]\n"
	                            "       davit logs --daemon [-f] [filters] [--component NAME]\n\n"
	                            "Logs of a service's replicas (all services without SERVICE), each line with its\n"
	                            "time, replica and stream; with --daemon, davit's own log (JSON lines in\n"
	                            "<state>/logs/davit.log: time, level, component, message, fields).\n\n"
	                            "  -f, --follow      keep printing new lines\n"
	                            "  --tail N          lines of history first (default 100; all kept with filters)\n"
	                            "  --level L         debug|info|warn|error and above (a line's own JSON level, else\n"
	                            "                    a level word near its start, else info)\n"
	                            "  --grep TEXT       lines containing TEXT (case-insensitive)\n"
	                            "  --since T, --until T  a duration ago (30m, 2h, 7d), unix seconds or ISO time; read from\n"
	                            "                    the log files, so replaced replicas are included\n"
	                            "  --output FILE     write there instead of stdout (with --json: an export)\n" COMMON_OPTS;
	if (dv_cli_logs_extended(argc, argv))
		return dv_cli_logs_ext(argc, argv);
	struct dv_cli_common c;
	int rc = parse(argc, argv, &c, usage, 1, true);
	if (rc)
		return rc < 0 ? 0 : rc;
	struct dv_strbuf extra;
	dv_strbuf_init(&extra);
	if (c.npositional) {
		dv_strbuf_puts(&extra, "&service=");
		dv_cli_url_encode(&extra, c.positional[0]);
	}
	if (c.tail) {
		uint64_t n;
		if (dv_parse_uint(c.tail, 100000, &n) != 0) {
			fprintf(stderr, "davit logs: --tail takes a number of lines\n");
			dv_strbuf_dispose(&extra);
			return 2;
		}
		dv_strbuf_printf(&extra, "&tail=%llu", (unsigned long long)n);
	}
	if (c.follow)
		dv_strbuf_puts(&extra, "&follow=1");
	char *t = dv_cli_target(&c, "/v1/logs", extra.data);
	rc = dv_cli_call(&c, "GET", t, NULL);
	free(t);
	dv_strbuf_dispose(&extra);
	return rc;
}

int dv_cli_rollback(int argc, char **argv)
{
	static const char usage[] = "usage: davit rollback [RELEASE] [--app NAME] [--json]\n\n"
	                            "Deploy an earlier release again, exactly as it was (default: the release before\n"
	                            "the current one). Zero-downtime, like any deploy. 'davit releases' lists them.\n\n" COMMON_OPTS;
	struct dv_cli_common c;
	int rc = parse(argc, argv, &c, usage, 1, false);
	if (rc)
		return rc < 0 ? 0 : rc;
	struct dv_strbuf extra;
	dv_strbuf_init(&extra);
	if (c.npositional) {
		uint64_t n;
		if (dv_parse_uint(c.positional[0], INT64_MAX, &n) != 0 || n == 0) {
			fprintf(stderr, "davit rollback: RELEASE is a release number (see 'davit releases')\n");
			dv_strbuf_dispose(&extra);
			return 2;
		}
		dv_strbuf_printf(&extra, "&release=%llu", (unsigned long long)n);
	}
	char *t = dv_cli_target(&c, "/v1/rollback", extra.data);
	rc = dv_cli_call(&c, "POST", t, NULL);
	free(t);
	dv_strbuf_dispose(&extra);
	return rc;
}

int dv_cli_service(int argc, char **argv)
{
	char usage[512];
	snprintf(usage, sizeof usage,
	         "usage: davit %s SERVICE [--app NAME] [--json]\n\n%s\n\n" COMMON_OPTS, argv[0],
	         strcmp(argv[0], "restart") == 0 ? "Replace the service's replicas one at a time, without dropping requests."
	         : strcmp(argv[0], "stop") == 0  ? "Stop the service's replicas (they stay stopped until 'davit start')."
	                                         : "Start a stopped service again.");
	struct dv_cli_common c;
	int rc = parse(argc, argv, &c, usage, 1, false);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (c.npositional != 1) {
		fprintf(stderr, "davit %s: which service? (see 'davit ps')\n", argv[0]);
		return 2;
	}
	struct dv_strbuf extra;
	dv_strbuf_init(&extra);
	dv_strbuf_puts(&extra, "&service=");
	dv_cli_url_encode(&extra, c.positional[0]);
	dv_strbuf_printf(&extra, "&action=%s", argv[0]);
	char *t = dv_cli_target(&c, "/v1/service", extra.data);
	rc = dv_cli_call(&c, "POST", t, NULL);
	free(t);
	dv_strbuf_dispose(&extra);
	return rc;
}

int dv_cli_down(int argc, char **argv)
{
	static const char usage[] = "usage: davit down [--app NAME] [--json] [--volumes [--yes]]\n\n"
	                            "Stop every service of the app and remove its routes. Releases and data are kept;\n"
	                            "'davit deploy' or 'davit rollback' brings it back.\n\n"
	                            "  --volumes         also DELETE the app's named volumes (their data is gone); asks first\n"
	                            "  --yes, -y         do not ask (scripts)\n" COMMON_OPTS;
	struct dv_cli_common c;
	int rc = parse(argc, argv, &c, usage, 0, false);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (c.volumes)
		return dv_cli_down_volumes(&c);
	char *t = dv_cli_target(&c, "/v1/down", NULL);
	rc = dv_cli_call(&c, "POST", t, NULL);
	free(t);
	return rc;
}

/* `davit daemon`: run the platform in the foreground. */
#include "cli/cli.h"

#include "core/util.h"
#include "daemon/daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	"  --keep-images N        keep the images of the newest N releases per service (default 5)\n";

int dv_cli_daemon(int argc, char **argv)
{
	struct dv_daemon_options o = {.state_dir = dv_cli_default_state_dir(), .http = dv_cli_default_http()};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(usage_text, stdout);
			return 0;
		} else if (strcmp(a, "--state-dir") == 0 && i + 1 < argc) {
			o.state_dir = argv[++i];
		} else if (strcmp(a, "--http") == 0 && i + 1 < argc) {
			o.http = argv[++i];
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
	return dv_daemon_run(&o);
}

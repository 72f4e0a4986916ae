/* `davit up`: start the daemon if it is not running, then deploy. */
#include "cli/cli.h"

#include "core/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
	"usage: davit up [-f FILE] [--state-dir DIR] [--http ADDR:PORT] [--https ADDR:PORT|off] [--json]\n"
	"\n"
	"Start the davit daemon for this state directory if it is not running (in the\n"
	"background, log in DIR/run/daemon.log), then deploy the compose file and print\n"
	"each service's URL.\n"
	"\n"
	"  -f, --file FILE    compose file (default: compose.yml, docker-compose.yml... here)\n"
	"  --state-dir DIR    state directory (default ./.davit or $DAVIT_STATE_DIR)\n"
	"  --http ADDR:PORT   where the proxy listens if the daemon is started now\n"
	"  --https ADDR:PORT|off  its HTTPS listener (default: the --http address on 443 when that\n"
	"                     is port 80, else off; see 'davit daemon --help')\n"
	"                     (default 0.0.0.0:80 as root, 127.0.0.1:8080 otherwise)\n"
	"  --json             print the result as JSON\n";

const char *dv_cli_default_http(void)
{
	return geteuid() == 0 ? "0.0.0.0:80" : "127.0.0.1:8080";
}

/* Starts `davit daemon` detached; waits until its socket answers. */
static int start_daemon(const struct dv_cli_common *c)
{
	char *run_dir = dv_xasprintf("%s/run", c->state_dir);
	char *log_path = dv_xasprintf("%s/daemon.log", run_dir);
	int rc = 1;
	if ((mkdir(c->state_dir, 0700) == -1 && errno != EEXIST) || (mkdir(run_dir, 0700) == -1 && errno != EEXIST)) {
		fprintf(stderr, "davit up: cannot create %s: %s\n", run_dir, strerror(errno));
		goto out;
	}
	pid_t pid = fork();
	if (pid == -1) {
		fprintf(stderr, "davit up: fork: %s\n", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		setsid();
		int null = open("/dev/null", O_RDONLY);
		int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (null >= 0)
			dup2(null, 0);
		if (log >= 0) {
			dup2(log, 1);
			dup2(log, 2);
		}
		const char *http = c->http ? c->http : dv_cli_default_http();
		if (c->https)
			execl("/proc/self/exe", "davit", "daemon", "--state-dir", c->state_dir, "--http", http, "--https",
			      c->https, (char *)NULL);
		else
			execl("/proc/self/exe", "davit", "daemon", "--state-dir", c->state_dir, "--http", http, (char *)NULL);
		_exit(127);
	}
	/* Wait (bounded) for the control socket; a daemon that exits early
	 * failed: show its log. */
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int fd = dv_cli_connect(c->state_dir);
		if (fd >= 0) {
			close(fd);
			rc = 0;
			break;
		}
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			fprintf(stderr, "davit up: the daemon exited at start; its log (%s) says:\n", log_path);
			FILE *f = fopen(log_path, "r");
			if (f) {
				char line[1024];
				while (fgets(line, sizeof line, f))
					fputs(line, stderr);
				fclose(f);
			}
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec > 15) {
			fprintf(stderr, "davit up: the daemon did not answer within 15 s (log: %s)\n", log_path);
			break;
		}
		poll(NULL, 0, 20);
	}
out:
	free(run_dir);
	free(log_path);
	return rc;
}

int dv_cli_up(int argc, char **argv)
{
	struct dv_cli_common c;
	int rc = dv_cli_parse_common(argc, argv, &c, usage_text, 0, false);
	if (rc)
		return rc == 1 ? 0 : rc;
	if (!dv_cli_find_compose_file(c.file)) {
		fprintf(stderr, "davit up: no compose file here (compose.yml, docker-compose.yml...): give one with -f FILE\n");
		return 2;
	}
	int fd = dv_cli_connect(c.state_dir);
	if (fd >= 0) {
		close(fd);
	} else {
		if (!c.json)
			fprintf(stderr, "davit up: starting the daemon (state in %s)\n", c.state_dir);
		if (start_daemon(&c) != 0)
			return 1;
	}
	return dv_cli_deploy_file(&c);
}

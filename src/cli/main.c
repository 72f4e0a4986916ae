/* davit: entry point; dispatches to one command per file. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{"up", dv_cli_up, "start the daemon if needed and deploy the compose file"},
	{"deploy", dv_cli_deploy, "deploy a compose file (only changed services, zero downtime)"},
	{"ps", dv_cli_ps, "services, replicas, health, release, uptime, restarts"},
	{"logs", dv_cli_logs, "logs of a service (-f to follow)"},
	{"releases", dv_cli_releases, "list the app's releases"},
	{"rollback", dv_cli_rollback, "deploy an earlier release again"},
	{"restart", dv_cli_service, "replace a service's replicas without downtime"},
	{"stop", dv_cli_service, "stop a service"},
	{"start", dv_cli_service, "start a stopped service"},
	{"down", dv_cli_down, "stop every service of the app"},
	{"top", dv_cli_top, "live requests/s, p95, errors, CPU, memory per service"},
	{"metrics", dv_cli_metrics, "history of a service or the host (--since 1h)"},
	{"alerts", dv_cli_alerts, "alerts firing, pending and recently resolved"},
	{"event", dv_cli_event, "record an event (backup.failed, certificate.expiry...)"},
	{"registry", dv_cli_registry, "registry login HOST | logout HOST: credentials for image pulls"},
	{"certs", dv_cli_certs, "certificates: domains, issuer, expiry, status, last error"},
	{"daemon", dv_cli_daemon, "run the platform in the foreground"},
	{"proxy", dv_cli_proxy, "run the reverse proxy alone, routes from flags or a file"},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: davit COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "  %-10s %s\n", "version", "print the version");
	fprintf(out, "\n'davit COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("davit %s\n", DV_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(cmd, commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "davit: unknown command '%s'\n\n", cmd);
	usage(stderr);
	return 2;
}

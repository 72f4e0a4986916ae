/* cli: the davit command line. One file per command; main.c dispatches.
 * Commands other than `proxy` and `daemon` are thin clients of the control
 * API that the daemon serves on <state dir>/run/davit.sock. */
#ifndef DV_CLI_CLI_H
#define DV_CLI_CLI_H

#include "core/strbuf.h"

#include <stdbool.h>
#include <stddef.h>

#define DV_VERSION "0.1.0"

/* Each command gets argv with argv[0] = the command name; returns the exit
 * status (0 ok, 1 failure, 2 usage error). */
int dv_cli_proxy(int argc, char **argv);
int dv_cli_daemon(int argc, char **argv);
int dv_cli_up(int argc, char **argv);
int dv_cli_deploy(int argc, char **argv);
int dv_cli_ps(int argc, char **argv);
int dv_cli_logs(int argc, char **argv);
int dv_cli_releases(int argc, char **argv);
int dv_cli_rollback(int argc, char **argv);
int dv_cli_service(int argc, char **argv); /* restart | stop | start */
int dv_cli_down(int argc, char **argv);
int dv_cli_top(int argc, char **argv);     /* obs.c */
int dv_cli_metrics(int argc, char **argv);
int dv_cli_alerts(int argc, char **argv);
int dv_cli_event(int argc, char **argv);
struct dv_cli_common;
/* dv_cli_parse_common plus command-specific options: each of `names` takes
 * a value (stored in vals[i]) or, ending in '!', is a flag ("1"). Returns as
 * dv_cli_parse_common, but -1 when help was printed. */
int dv_cli_parse_extra(int argc, char **argv, const char *const *names, const char **vals, struct dv_cli_common *c,
                       const char *usage, int npos, bool dash_f_is_follow, const char *cmd);
/* logs_ext.c: `davit logs` with filters (query.c hands over when one is given). */
bool dv_cli_logs_extended(int argc, char **argv);
int dv_cli_logs_ext(int argc, char **argv);
int dv_cli_registry(int argc, char **argv); /* registry login | logout (docker_cmd.c) */
int dv_cli_certs(int argc, char **argv);

/* ---- options shared by the commands that talk to the daemon (common.c) ---- */

struct dv_cli_common {
	const char *state_dir; /* --state-dir, else $DAVIT_STATE_DIR, else ./.davit */
	const char *app;       /* --app */
	const char *file;      /* -f / --file */
	const char *http;      /* --http */
	const char *https;     /* --https (davit up: passed to a daemon it starts) */
	const char *tail;      /* --tail */
	bool json, follow, volumes, yes;
	const char *positional[4];
	int npositional;
};

const char *dv_cli_default_state_dir(void);
/* Parses the shared options; returns 0, 1 after printing usage (--help), or 2
 * for a usage error (message printed). dash_f_is_follow: -f means --follow
 * (logs) instead of --file. */
int dv_cli_parse_common(int argc, char **argv, struct dv_cli_common *c, const char *usage, int max_positional,
                        bool dash_f_is_follow);
/* Sends a request and streams the answer to stdout; returns the exit status
 * (0 for a 2xx answer). */
int dv_cli_call(const struct dv_cli_common *c, const char *method, const char *target, const char *body);
/* "PATH?format=text|json[&app=..]EXTRA" (caller frees). */
char *dv_cli_target(const struct dv_cli_common *c, const char *path, const char *extra);
void dv_cli_url_encode(struct dv_strbuf *b, const char *s);
/* The compose file to use: `given`, else the first of compose.yml,
 * compose.yaml, docker-compose.yml, docker-compose.yaml here; NULL if none. */
const char *dv_cli_find_compose_file(const char *given);
/* Deploys c->file (or the default) through the daemon; returns the exit status. */
int dv_cli_deploy_file(const struct dv_cli_common *c);
/* `davit down --volumes`: asks (unless --yes), stops the app, deletes its
 * volumes (docker_cmd.c). Returns the exit status. */
int dv_cli_down_volumes(const struct dv_cli_common *c);
/* 0.0.0.0:80 as root, 127.0.0.1:8080 otherwise. */
const char *dv_cli_default_http(void);

/* Absolute, resolved path of an existing file (caller frees), or NULL. */
char *dv_cli_abs_path(const char *path);

/* ---- control API client (client.c) ---- */

struct dv_cli_response {
	int status;
	/* Body bytes go to on_data if set (streamed as they arrive), else into
	 * `body` (caller disposes). */
	void (*on_data)(const char *data, size_t len, void *arg);
	void *arg;
	struct dv_strbuf body;
};

/* Connects to the daemon's socket; -1 with errno if it is not reachable. */
int dv_cli_connect(const char *state_dir);
/* Sends one request (body may be NULL) and reads the whole response.
 * Returns 0 (resp->status set) or -1 with *err (caller frees). */
int dv_cli_request(const char *state_dir, const char *method, const char *target, const char *body,
                   struct dv_cli_response *resp, char **err);

#endif

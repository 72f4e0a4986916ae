/* Container commands: `davit down --volumes` (with its confirmation) and
 * `davit registry login|logout HOST`. */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static int call_quiet(const struct dv_cli_common *c, const char *method, const char *target, const char *body,
                      struct dv_strbuf *out)
{
	struct dv_cli_response resp;
	memset(&resp, 0, sizeof resp);
	dv_strbuf_init(&resp.body);
	char *err = NULL;
	if (dv_cli_request(c->state_dir, method, target, body, &resp, &err) != 0) {
		fprintf(stderr, "davit: %s\n", err);
		free(err);
		dv_strbuf_dispose(&resp.body);
		return -1;
	}
	*out = resp.body;
	return resp.status >= 200 && resp.status < 300 ? 0 : -1;
}

int dv_cli_down_volumes(const struct dv_cli_common *c)
{
	struct dv_cli_common q = *c;
	q.json = false;
	char *t = dv_cli_target(&q, "/v1/volumes", NULL);
	struct dv_strbuf vols;
	dv_strbuf_init(&vols);
	int rc = call_quiet(&q, "GET", t, NULL, &vols);
	free(t);
	if (rc != 0) {
		fprintf(stderr, "davit down: cannot list the volumes: %s", vols.data ? vols.data : "\n");
		dv_strbuf_dispose(&vols);
		return 1;
	}
	bool any = vols.len > 0;
	if (any && !c->yes) {
		if (!isatty(STDIN_FILENO)) {
			fprintf(stderr, "davit down --volumes would delete these volumes and their data:\n%s"
			                "stdin is not a terminal: nothing was done; add --yes to delete them from a script\n",
			        vols.data);
			dv_strbuf_dispose(&vols);
			return 1;
		}
		fprintf(stderr, "This stops the app and DELETES these volumes with all their data:\n%s"
		                "Type 'yes' to delete them: ", vols.data);
		fflush(stderr);
		char line[64] = "";
		if (!fgets(line, sizeof line, stdin) || strncmp(line, "yes", 3) != 0 || (line[3] != '\n' && line[3])) {
			fprintf(stderr, "davit down: not confirmed; nothing was done\n");
			dv_strbuf_dispose(&vols);
			return 1;
		}
	}
	dv_strbuf_dispose(&vols);
	t = dv_cli_target(c, "/v1/down", NULL);
	rc = dv_cli_call(c, "POST", t, NULL);
	free(t);
	if (rc != 0)
		return rc;
	if (!any) {
		printf("no volumes to delete\n");
		return 0;
	}
	t = dv_cli_target(&q, "/v1/volumes/delete", NULL);
	rc = dv_cli_call(&q, "POST", t, NULL);
	free(t);
	return rc;
}

/* Reads a line from the terminal without echo (or from a pipe). Caller frees. */
static char *read_secret(const char *prompt)
{
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
	if (tty) {
		fprintf(stderr, "%s", prompt);
		fflush(stderr);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, stdin);
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fprintf(stderr, "\n");
	}
	if (n < 0) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	return line;
}

int dv_cli_registry(int argc, char **argv)
{
	static const char usage[] =
		"usage: davit registry login HOST [--username USER]   (the password comes from stdin or a prompt)\n"
		"       davit registry logout HOST\n\n"
		"Stores credentials for pulling images from a private registry (HOST or HOST:PORT, as in\n"
		"the image names: registry.example.com/team/api:1). They are kept encrypted in the state\n"
		"directory (libsodium secretbox; the key file registry.key is mode 0600) and sent to the\n"
		"Docker engine as X-Registry-Auth when an image from HOST is pulled.\n\n"
		"  --username USER   the user (else asked on the terminal)\n"
		"  --state-dir DIR   the daemon's state directory (default ./.davit or $DAVIT_STATE_DIR)\n";
	const char *user = NULL;
	char **rest = dv_xcalloc((size_t)argc + 1, sizeof *rest);
	int nrest = 0;
	rest[nrest++] = argv[0];
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--username") == 0 && i + 1 < argc)
			user = argv[++i];
		else if (strncmp(argv[i], "--username=", 11) == 0)
			user = argv[i] + 11;
		else
			rest[nrest++] = argv[i];
	}
	struct dv_cli_common c;
	int rc = dv_cli_parse_common(nrest, rest, &c, usage, 2, false);
	free(rest);
	if (rc)
		return rc == 1 ? 0 : rc;
	if (c.npositional != 2 || (strcmp(c.positional[0], "login") != 0 && strcmp(c.positional[0], "logout") != 0)) {
		fputs(usage, stderr);
		return 2;
	}
	const char *host = c.positional[1];
	struct dv_strbuf target;
	dv_strbuf_init(&target);
	dv_strbuf_printf(&target, "/v1/registry/%s?host=", c.positional[0]);
	dv_cli_url_encode(&target, host);
	if (strcmp(c.positional[0], "logout") == 0) {
		rc = dv_cli_call(&c, "POST", target.data, NULL);
		dv_strbuf_dispose(&target);
		return rc;
	}
	char *u = user ? dv_xstrdup(user) : NULL;
	if (!u) {
		if (!isatty(STDIN_FILENO)) {
			fprintf(stderr, "davit registry login: give --username when the password comes from stdin\n");
			dv_strbuf_dispose(&target);
			return 2;
		}
		fprintf(stderr, "Username for %s: ", host);
		fflush(stderr);
		char *line = NULL;
		size_t cap = 0;
		ssize_t n = getline(&line, &cap, stdin);
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		u = line;
	}
	char *prompt = dv_xasprintf("Password for %s@%s: ", u ? u : "", host);
	char *pass = read_secret(prompt);
	free(prompt);
	if (!u || !*u || !pass || !*pass) {
		fprintf(stderr, "davit registry login: a user name and a password are needed\n");
		free(u);
		free(pass);
		dv_strbuf_dispose(&target);
		return 2;
	}
	char *body = dv_xasprintf("%s\n%s", u, pass);
	rc = dv_cli_call(&c, "POST", target.data, body);
	memset(body, 0, strlen(body));
	memset(pass, 0, strlen(pass));
	free(body);
	free(pass);
	free(u);
	dv_strbuf_dispose(&target);
	return rc;
}

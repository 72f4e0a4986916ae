/* Options and plumbing shared by the commands that talk to the daemon. */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/strbuf.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *dv_cli_default_state_dir(void)
{
	const char *env = getenv("DAVIT_STATE_DIR");
	return env && *env ? env : ".davit";
}

/* Takes the value of option `name` at argv[*i] ("--name VALUE" or
 * "--name=VALUE"); returns it or NULL if argv[*i] is not that option. */
static const char *option_value(int argc, char **argv, int *i, const char *name)
{
	const char *a = argv[*i];
	size_t n = strlen(name);
	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] == '\0' && *i + 1 < argc)
		return argv[++*i];
	return NULL;
}

int dv_cli_parse_common(int argc, char **argv, struct dv_cli_common *c, const char *usage, int max_positional,
                        bool dash_f_is_follow)
{
	memset(c, 0, sizeof *c);
	c->state_dir = dv_cli_default_state_dir();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v;
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(usage, stdout);
			return 1;
		} else if (strcmp(a, "--json") == 0) {
			c->json = true;
		} else if (dash_f_is_follow && (strcmp(a, "-f") == 0 || strcmp(a, "--follow") == 0)) {
			c->follow = true;
		} else if (strcmp(a, "--volumes") == 0) {
			c->volumes = true;
		} else if (strcmp(a, "--yes") == 0 || strcmp(a, "-y") == 0) {
			c->yes = true;
		} else if ((v = option_value(argc, argv, &i, "--state-dir"))) {
			c->state_dir = v;
		} else if ((v = option_value(argc, argv, &i, "--app"))) {
			c->app = v;
		} else if ((v = option_value(argc, argv, &i, "--http"))) {
			c->http = v;
		} else if ((v = option_value(argc, argv, &i, "--https"))) {
			c->https = v;
		} else if ((v = option_value(argc, argv, &i, "--tail"))) {
			c->tail = v;
		} else if ((v = option_value(argc, argv, &i, "--file")) ||
		           (!dash_f_is_follow && (v = option_value(argc, argv, &i, "-f")))) {
			c->file = v;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "davit %s: unknown option or missing value: '%s' (see 'davit %s --help')\n", argv[0],
			        a, argv[0]);
			return 2;
		} else if (c->npositional < max_positional) {
			c->positional[c->npositional++] = a;
		} else {
			fprintf(stderr, "davit %s: unexpected argument '%s' (see 'davit %s --help')\n", argv[0], a, argv[0]);
			return 2;
		}
	}
	return 0;
}

static void to_stdout(const char *data, size_t len, void *arg)
{
	fwrite(data, 1, len, stdout);
	fflush(stdout);
}

int dv_cli_call(const struct dv_cli_common *c, const char *method, const char *target, const char *body)
{
	struct dv_cli_response resp;
	memset(&resp, 0, sizeof resp);
	dv_strbuf_init(&resp.body);
	resp.on_data = to_stdout;
	char *err = NULL;
	if (dv_cli_request(c->state_dir, method, target, body, &resp, &err) != 0) {
		fprintf(stderr, "davit: %s\n", err);
		free(err);
		return 1;
	}
	return resp.status >= 200 && resp.status < 300 ? 0 : 1;
}

char *dv_cli_target(const struct dv_cli_common *c, const char *path, const char *extra)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_strbuf_puts(&b, path);
	dv_strbuf_puts(&b, c->json ? "?format=json" : "?format=text");
	if (c->app) {
		dv_strbuf_puts(&b, "&app=");
		dv_cli_url_encode(&b, c->app);
	}
	if (extra)
		dv_strbuf_puts(&b, extra);
	return dv_strbuf_steal(&b);
}

void dv_cli_url_encode(struct dv_strbuf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		    ch == '_' || ch == '.' || ch == '/' || ch == '~') {
			dv_strbuf_append(b, s, 1);
		} else {
			char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
			dv_strbuf_append(b, e, 3);
		}
	}
}

char *dv_cli_abs_path(const char *path)
{
	char buf[PATH_MAX];
	if (realpath(path, buf))
		return dv_xstrdup(buf);
	return NULL;
}

/* `davit deploy`: deploy a compose file through the running daemon. */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static const char usage_text[] =
	"usage: davit deploy [-f FILE] [--state-dir DIR] [--json]\n"
	"\n"
	"Deploy (or redeploy) a compose file: only services whose definition changed are\n"
	"replaced, one at a time in dependency order, each new replica started beside the\n"
	"old ones and switched to only once healthy. A version that never becomes healthy\n"
	"is rolled back automatically and the deploy fails with the reason.\n"
	"\n"
	"  -f, --file FILE   compose file (default: compose.yml, compose.yaml,\n"
	"                    docker-compose.yml or docker-compose.yaml here)\n"
	"  --state-dir DIR   the daemon's state directory (default ./.davit or $DAVIT_STATE_DIR)\n"
	"  --json            print the result as JSON\n";

const char *dv_cli_find_compose_file(const char *given)
{
	if (given)
		return given;
	static const char *const names[] = {"compose.yml", "compose.yaml", "docker-compose.yml", "docker-compose.yaml"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (access(names[i], R_OK) == 0)
			return names[i];
	return NULL;
}

int dv_cli_deploy_file(const struct dv_cli_common *c)
{
	const char *file = dv_cli_find_compose_file(c->file);
	if (!file) {
		fprintf(stderr, "davit: no compose file here (compose.yml, docker-compose.yml...): give one with -f FILE\n");
		return 2;
	}
	char *abs = dv_cli_abs_path(file);
	if (!abs) {
		fprintf(stderr, "davit: cannot read %s: no such file\n", file);
		return 1;
	}
	struct dv_strbuf extra, env;
	dv_strbuf_init(&extra);
	dv_strbuf_init(&env);
	dv_strbuf_puts(&extra, "&file=");
	dv_cli_url_encode(&extra, abs);
	/* The compose file is interpolated with this shell's variables, as
	 * docker compose does; they are used for the load, not stored. */
	for (char **e = environ; e && *e; e++) {
		if (strchr(*e, '\n'))
			continue;
		dv_strbuf_puts(&env, *e);
		dv_strbuf_puts(&env, "\n");
	}
	char *target = dv_cli_target(c, "/v1/deploy", extra.data);
	int rc = dv_cli_call(c, "POST", target, env.data ? env.data : "");
	free(target);
	free(abs);
	dv_strbuf_dispose(&extra);
	dv_strbuf_dispose(&env);
	return rc;
}

int dv_cli_deploy(int argc, char **argv)
{
	struct dv_cli_common c;
	int rc = dv_cli_parse_common(argc, argv, &c, usage_text, 0, false);
	if (rc)
		return rc == 1 ? 0 : rc;
	return dv_cli_deploy_file(&c);
}

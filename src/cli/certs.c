/* `davit certs`: the daemon's certificates (a thin client of GET /v1/certs). */
#include "cli/cli.h"

#include <stdlib.h>

int dv_cli_certs(int argc, char **argv)
{
	static const char usage[] =
		"usage: davit certs [--json] [--state-dir DIR]\n\n"
		"Every domain the services use, with its certificate: issuer, expiry (not after), status\n"
		"(valid, pending, renewing, failed, expired, user, acme-off) and the last error of a failed\n"
		"request or renewal (it is retried with backoff; the daemon's log has each attempt).\n\n"
		"  --state-dir DIR   the daemon's state directory (default ./.davit or $DAVIT_STATE_DIR)\n"
		"  --json            JSON output\n";
	struct dv_cli_common c;
	int rc = dv_cli_parse_common(argc, argv, &c, usage, 0, false);
	if (rc)
		return rc == 1 ? 0 : rc;
	char *t = dv_cli_target(&c, "/v1/certs", NULL);
	rc = dv_cli_call(&c, "GET", t, NULL);
	free(t);
	return rc;
}

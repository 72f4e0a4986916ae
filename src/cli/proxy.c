/* `davit proxy`: the standalone reverse proxy (docs/proxy.md). */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/util.h"
#include "obs/obs.h"
#include "proxy/proxy.h"
#include "proxy/router.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static const char usage_text[] =
	"usage: davit proxy [OPTIONS] (--route SPEC ... | --routes FILE)\n"
	"\n"
	"Run davit's reverse proxy on its own. SPEC is HOST[/PATH]=ADDR:PORT[,ADDR:PORT...];\n"
	"HOST may be a name, *.domain or *. A --routes file has one SPEC per line\n"
	"('#' comments) and is re-read on SIGHUP without dropping connections.\n"
	"\n"
	"options:\n"
	"  --listen ADDR:PORT           accept clients here (repeatable; default 127.0.0.1:8080)\n"
	"  --route SPEC                 add a route (repeatable)\n"
	"  --routes FILE                read routes from FILE (reloaded on SIGHUP)\n"
	"  --workers N                  worker threads (default: number of CPUs)\n"
	"  --balance round-robin|least-conn   replica choice (default round-robin)\n"
	"  --connect-timeout DUR        upstream connect (default 5s)\n"
	"  --response-timeout DUR       request sent -> response head (default 60s)\n"
	"  --upstream-idle-timeout DUR  idle upstream keep-alive connections (default 60s)\n"
	"  --read-timeout DUR           silence while a body streams (default 60s)\n"
	"  --tunnel-timeout DUR         silence on a WebSocket/upgraded connection (default 1h)\n"
	"  --header-timeout DUR         time to send a request head (default 10s)\n"
	"  --keepalive-timeout DUR      idle client connection (default 75s)\n"
	"  --drain-timeout DUR          in-flight requests on a removed route (default 30s)\n"
	"  --shutdown-timeout DUR       graceful stop on SIGTERM/SIGINT (default 30s)\n"
	"  --max-request-line BYTES     (default 8192; longer: 414)\n"
	"  --max-header-bytes BYTES     (default 65536; larger: 431)\n"
	"  --max-headers N              (default 100; more: 431)\n"
	"  --trusted-proxy CIDR         keep X-Forwarded-* from these peers (repeatable)\n"
	"  --eject-after N              connect failures that eject a replica (default 3; 0 = never)\n"
	"  --eject-for DUR              ejection time (default 10s)\n"
	"  --access-log PATH|-|off      JSON lines access log (default - = stdout)\n"
	"  --tls-listen ADDR:PORT       accept HTTPS clients here (repeatable; needs --cert or --certs)\n"
	"  --cert [HOST=]CERT,KEY       a PEM certificate chain and key; names from the certificate\n"
	"                               unless HOST is given (repeatable; first = default)\n"
	"  --certs DIR                  every DIR/NAME/fullchain.pem + privkey.pem\n"
	"  --ticket-key-rotate DUR      TLS session ticket key lifetime (default 1h; 3 kept)\n"
	"  --no-https-redirect          do not send 301 to https:// for hosts with a certificate\n"
	"  --log-level debug|info|warn|error   diagnostics on stderr (default info)\n"
	"  --edge 'KEY=VALUE ...'       edge options every route starts from (headers, ratelimit,\n"
	"                               compress, maxbody, auth, allow, deny, ban...: docs/proxy.md);\n"
	"                               a route may add its own after its replicas:\n"
	"                               'app.test=127.0.0.1:3000 ratelimit=100/1m', and\n"
	"                               'site.test=static:/srv/www spa=on' serves a directory\n"
	"  --no-metrics                 do not count requests (per-worker counters; on by default)\n"
	"  --metrics-listen ADDR:PORT   serve the per-route counters on /metrics (Prometheus text)\n"
	"  --metrics-token TOKEN        require 'Authorization: Bearer TOKEN' there\n"
	"  -h, --help                   this text\n"
	"\n"
	"DUR: 250ms, 5s, 2m, 1h or plain seconds. Signals: SIGHUP reloads --routes\n"
	"and the certificates (without dropping connections),\n"
	"SIGTERM/SIGINT stop gracefully (a second one stops at once).\n";

enum {
	OPT_LISTEN = 256, OPT_ROUTE, OPT_ROUTES, OPT_WORKERS, OPT_BALANCE, OPT_CONNECT_TIMEOUT,
	OPT_RESPONSE_TIMEOUT, OPT_UPSTREAM_IDLE_TIMEOUT, OPT_READ_TIMEOUT, OPT_TUNNEL_TIMEOUT,
	OPT_HEADER_TIMEOUT, OPT_KEEPALIVE_TIMEOUT, OPT_DRAIN_TIMEOUT, OPT_SHUTDOWN_TIMEOUT,
	OPT_MAX_REQUEST_LINE, OPT_MAX_HEADER_BYTES, OPT_MAX_HEADERS, OPT_TRUSTED_PROXY, OPT_EJECT_AFTER,
	OPT_EJECT_FOR, OPT_ACCESS_LOG, OPT_LOG_LEVEL, OPT_TLS_LISTEN, OPT_CERT, OPT_CERTS, OPT_TICKET_ROTATE,
	OPT_NO_REDIRECT, OPT_EDGE, OPT_NO_METRICS, OPT_METRICS_LISTEN, OPT_METRICS_TOKEN,
};

static const struct option long_options[] = {
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"route", required_argument, NULL, OPT_ROUTE},
	{"routes", required_argument, NULL, OPT_ROUTES},
	{"workers", required_argument, NULL, OPT_WORKERS},
	{"balance", required_argument, NULL, OPT_BALANCE},
	{"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
	{"response-timeout", required_argument, NULL, OPT_RESPONSE_TIMEOUT},
	{"upstream-idle-timeout", required_argument, NULL, OPT_UPSTREAM_IDLE_TIMEOUT},
	{"read-timeout", required_argument, NULL, OPT_READ_TIMEOUT},
	{"tunnel-timeout", required_argument, NULL, OPT_TUNNEL_TIMEOUT},
	{"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
	{"keepalive-timeout", required_argument, NULL, OPT_KEEPALIVE_TIMEOUT},
	{"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
	{"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
	{"max-request-line", required_argument, NULL, OPT_MAX_REQUEST_LINE},
	{"max-header-bytes", required_argument, NULL, OPT_MAX_HEADER_BYTES},
	{"max-headers", required_argument, NULL, OPT_MAX_HEADERS},
	{"trusted-proxy", required_argument, NULL, OPT_TRUSTED_PROXY},
	{"eject-after", required_argument, NULL, OPT_EJECT_AFTER},
	{"eject-for", required_argument, NULL, OPT_EJECT_FOR},
	{"access-log", required_argument, NULL, OPT_ACCESS_LOG},
	{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	{"tls-listen", required_argument, NULL, OPT_TLS_LISTEN},
	{"cert", required_argument, NULL, OPT_CERT},
	{"certs", required_argument, NULL, OPT_CERTS},
	{"ticket-key-rotate", required_argument, NULL, OPT_TICKET_ROTATE},
	{"no-https-redirect", no_argument, NULL, OPT_NO_REDIRECT},
	{"edge", required_argument, NULL, OPT_EDGE},
	{"no-metrics", no_argument, NULL, OPT_NO_METRICS},
	{"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
	{"metrics-token", required_argument, NULL, OPT_METRICS_TOKEN},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct proxy_args {
	struct dv_proxy_config config;
	struct dv_sockaddr listen[16];
	struct dv_cidr trusted[64];
	char **routes;
	size_t nroutes;
	const char *routes_file;
	enum dv_balance balance;
	const char *metrics_listen, *metrics_token; /* obs/obs.h route metrics */
	struct dv_sockaddr tls_listen[16];
	char **certs; /* "[HOST=]CERT,KEY" */
	size_t ncerts;
	const char *certs_dir;
	uint64_t ticket_rotate_ms;
	const char *edge;      /* --edge: options every route starts from, or NULL */
};

static int bad_value(const char *opt, const char *value, const char *expected)
{
	fprintf(stderr, "davit proxy: bad value '%s' for --%s (expected %s)\n", value, opt, expected);
	return 2;
}

static int parse_args(int argc, char **argv, struct proxy_args *a)
{
	dv_proxy_config_default(&a->config);
	a->config.listen = a->listen;
	a->config.trusted = a->trusted;
	a->config.tls_listen = a->tls_listen;
	a->config.https_redirect = true;
	int opt, idx;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", long_options, &idx)) != -1) {
		const char *name = opt >= 256 ? long_options[opt - 256].name : "";
		uint64_t *duration = NULL, v;
		switch (opt) {
		case 'h':
			fputs(usage_text, stdout);
			return 1;
		case OPT_LISTEN: {
			if (a->config.nlisten == DV_ARRAY_LEN(a->listen))
				return bad_value(name, optarg, "at most 16 listeners");
			char *err = NULL;
			if (dv_sockaddr_parse(optarg, false, &a->listen[a->config.nlisten], &err) != 0) {
				fprintf(stderr, "davit proxy: --listen: %s\n", err);
				free(err);
				return 2;
			}
			a->config.nlisten++;
			break;
		}
		case OPT_TLS_LISTEN: {
			if (a->config.ntls_listen == DV_ARRAY_LEN(a->tls_listen))
				return bad_value(name, optarg, "at most 16 listeners");
			char *err = NULL;
			if (dv_sockaddr_parse(optarg, false, &a->tls_listen[a->config.ntls_listen], &err) != 0) {
				fprintf(stderr, "davit proxy: --tls-listen: %s\n", err);
				free(err);
				return 2;
			}
			a->config.ntls_listen++;
			break;
		}
		case OPT_CERT:
			if (!strchr(optarg, ','))
				return bad_value(name, optarg, "[HOST=]CERT.pem,KEY.pem");
			a->certs = dv_xrealloc(a->certs, (a->ncerts + 1) * sizeof *a->certs);
			a->certs[a->ncerts++] = optarg;
			break;
		case OPT_CERTS:
			a->certs_dir = optarg;
			break;
		case OPT_TICKET_ROTATE: duration = &a->ticket_rotate_ms; break;
		case OPT_NO_REDIRECT:
			a->config.https_redirect = false;
			break;
		case OPT_ROUTE:
			a->routes = dv_xrealloc(a->routes, (a->nroutes + 1) * sizeof *a->routes);
			a->routes[a->nroutes++] = optarg;
			break;
		case OPT_ROUTES:
			a->routes_file = optarg;
			break;
		case OPT_WORKERS:
			if (dv_parse_uint(optarg, 1024, &v) != 0 || v == 0)
				return bad_value(name, optarg, "a number from 1 to 1024");
			a->config.workers = (unsigned)v;
			break;
		case OPT_BALANCE:
			if (strcmp(optarg, "round-robin") == 0)
				a->balance = DV_BALANCE_ROUND_ROBIN;
			else if (strcmp(optarg, "least-conn") == 0)
				a->balance = DV_BALANCE_LEAST_CONN;
			else
				return bad_value(name, optarg, "round-robin or least-conn");
			break;
		case OPT_CONNECT_TIMEOUT: duration = &a->config.connect_timeout_ms; break;
		case OPT_RESPONSE_TIMEOUT: duration = &a->config.response_timeout_ms; break;
		case OPT_UPSTREAM_IDLE_TIMEOUT: duration = &a->config.upstream_idle_timeout_ms; break;
		case OPT_READ_TIMEOUT: duration = &a->config.read_timeout_ms; break;
		case OPT_TUNNEL_TIMEOUT: duration = &a->config.tunnel_timeout_ms; break;
		case OPT_HEADER_TIMEOUT: duration = &a->config.header_timeout_ms; break;
		case OPT_KEEPALIVE_TIMEOUT: duration = &a->config.keepalive_timeout_ms; break;
		case OPT_DRAIN_TIMEOUT: duration = &a->config.drain_timeout_ms; break;
		case OPT_SHUTDOWN_TIMEOUT: duration = &a->config.shutdown_timeout_ms; break;
		case OPT_EJECT_FOR: duration = &a->config.eject_for_ms; break;
		case OPT_MAX_REQUEST_LINE:
			if (dv_parse_uint(optarg, 1 << 20, &v) != 0 || v < 64)
				return bad_value(name, optarg, "a byte count from 64 to 1048576");
			a->config.max_request_line = v;
			break;
		case OPT_MAX_HEADER_BYTES:
			if (dv_parse_uint(optarg, 1 << 20, &v) != 0 || v < 256)
				return bad_value(name, optarg, "a byte count from 256 to 1048576");
			a->config.max_header_bytes = v;
			break;
		case OPT_MAX_HEADERS:
			if (dv_parse_uint(optarg, 1000, &v) != 0 || v == 0)
				return bad_value(name, optarg, "a number from 1 to 1000");
			a->config.max_headers = v;
			break;
		case OPT_TRUSTED_PROXY:
			if (a->config.ntrusted == DV_ARRAY_LEN(a->trusted))
				return bad_value(name, optarg, "at most 64 networks");
			if (dv_cidr_parse(optarg, &a->trusted[a->config.ntrusted]) != 0)
				return bad_value(name, optarg, "an address or CIDR like 10.0.0.0/8 or ::1");
			a->config.ntrusted++;
			break;
		case OPT_EJECT_AFTER:
			if (dv_parse_uint(optarg, 1000, &v) != 0)
				return bad_value(name, optarg, "a number (0 = never eject)");
			a->config.eject_after = (int)v;
			break;
		case OPT_NO_METRICS:
			a->config.metrics = false;
			break;
		case OPT_METRICS_LISTEN:
			a->metrics_listen = optarg;
			break;
		case OPT_METRICS_TOKEN:
			a->metrics_token = optarg;
			break;
		case OPT_ACCESS_LOG:
			a->config.access_log_path = strcmp(optarg, "off") == 0 ? NULL : optarg;
			break;
		case OPT_LOG_LEVEL:
			if (strcmp(optarg, "debug") == 0)
				dv_log_set_level(DV_LOG_DEBUG);
			else if (strcmp(optarg, "info") == 0)
				dv_log_set_level(DV_LOG_INFO);
			else if (strcmp(optarg, "warn") == 0)
				dv_log_set_level(DV_LOG_WARN);
			else if (strcmp(optarg, "error") == 0)
				dv_log_set_level(DV_LOG_ERROR);
			else
				return bad_value(name, optarg, "debug, info, warn or error");
			break;
		case OPT_EDGE:
			a->edge = optarg;
			break;
		default:
			fprintf(stderr, "davit proxy: see 'davit proxy --help'\n");
			return 2;
		}
		if (duration && dv_parse_duration_ms(optarg, duration) != 0)
			return bad_value(name, optarg, "a duration like 250ms, 5s, 2m");
	}
	if (optind < argc) {
		fprintf(stderr, "davit proxy: unexpected argument '%s' (see 'davit proxy --help')\n", argv[optind]);
		return 2;
	}
	if (a->nroutes == 0 && !a->routes_file) {
		fprintf(stderr, "davit proxy: no routes: give --route HOST=ADDR:PORT or --routes FILE (see --help)\n");
		return 2;
	}
	if (a->config.ntls_listen && !a->ncerts && !a->certs_dir) {
		fprintf(stderr, "davit proxy: --tls-listen needs certificates: give --cert CERT,KEY or --certs DIR\n");
		return 2;
	}
	if (a->config.nlisten == 0 && a->config.ntls_listen == 0) {
		char *err = NULL;
		if (dv_sockaddr_parse("127.0.0.1:8080", true, &a->listen[0], &err) != 0) {
			free(err);
			return 2;
		}
		a->config.nlisten = 1;
	}
	return 0;
}

/* Builds a table from --route flags and the --routes file. NULL + message on error. */
static struct dv_route_table *load_routes(const struct proxy_args *a, char **err)
{
	struct dv_route_table *t = dv_route_table_new();
	dv_route_table_set_edge_defaults(t, a->edge);
	for (size_t i = 0; i < a->nroutes; i++) {
		char *rerr = NULL;
		if (dv_route_table_add_spec(t, a->routes[i], a->balance, &rerr) != 0) {
			*err = dv_xasprintf("--route: %s", rerr);
			free(rerr);
			dv_route_table_free(t);
			return NULL;
		}
	}
	if (a->routes_file && dv_route_table_load_file(t, a->routes_file, a->balance, err) != 0) {
		dv_route_table_free(t);
		return NULL;
	}
	return t;
}

/* Builds the certificate set from --cert and --certs (NULL + message on error). */
static struct dv_tls_certset *load_certs(const struct proxy_args *a, struct dv_tls *tls, char **err)
{
	struct dv_tls_certset *set = dv_tls_certset_new();
	for (size_t i = 0; i < a->ncerts; i++) {
		char *spec = dv_xstrdup(a->certs[i]);
		char *files = spec, *host = NULL;
		char *eq = strchr(spec, '=');
		if (eq) {
			*eq = '\0';
			host = spec;
			files = eq + 1;
		}
		char *comma = strchr(files, ',');
		int rc = -1;
		if (!comma) {
			*err = dv_xasprintf("--cert %s: expected [HOST=]CERT,KEY", a->certs[i]);
		} else {
			*comma = '\0';
			rc = dv_tls_certset_add_files(tls, set, host, files, comma + 1, err);
		}
		free(spec);
		if (rc != 0) {
			dv_tls_certset_unref(set);
			return NULL;
		}
	}
	if (a->certs_dir && dv_tls_certset_add_dir(tls, set, a->certs_dir, err) < 0) {
		dv_tls_certset_unref(set);
		return NULL;
	}
	return set;
}

int dv_cli_proxy(int argc, char **argv)
{
	int rc = 1;
	struct proxy_args a;
	memset(&a, 0, sizeof a);
	struct dv_proxy *proxy = NULL;
	struct dv_tls *tls = NULL;
	char *err = NULL;
	int sfd = -1;
	struct dv_obs_route_metrics *route_metrics = NULL;
	int prc = parse_args(argc, argv, &a);
	if (prc != 0) {
		rc = prc == 1 ? 0 : prc;
		goto out;
	}
	if (a.ncerts || a.certs_dir) {
		tls = dv_tls_new(a.ticket_rotate_ms, &err);
		struct dv_tls_certset *set = tls ? load_certs(&a, tls, &err) : NULL;
		if (!set) {
			fprintf(stderr, "davit proxy: %s\n", err);
			goto out;
		}
		fprintf(stderr, "davit proxy: %zu certificates loaded\n", dv_tls_certset_count(set));
		dv_tls_publish(tls, set);
		a.config.tls = tls;
	}
	struct dv_route_table *table = load_routes(&a, &err);
	if (!table) {
		fprintf(stderr, "davit proxy: %s\n", err);
		goto out;
	}
	/* Signals are taken through a signalfd in this thread only: block them
	 * before the workers start so that the workers inherit the mask. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd == -1) {
		fprintf(stderr, "davit proxy: signalfd: %s\n", strerror(errno));
		dv_route_table_free(table);
		goto out;
	}
	proxy = dv_proxy_new(&a.config, &err);
	if (!proxy) {
		fprintf(stderr, "davit proxy: %s\n", err);
		dv_route_table_free(table);
		goto out;
	}
	size_t nroutes = dv_route_table_count(table);
	dv_proxy_set_routes(proxy, table);
	/* Before the workers accept: once the proxy answers, /metrics does too. */
	if (a.metrics_listen) {
		if (!a.config.metrics) {
			fprintf(stderr, "davit proxy: --metrics-listen and --no-metrics exclude each other\n");
			goto out;
		}
		route_metrics = dv_obs_route_metrics_start(a.metrics_listen, a.metrics_token, &err);
		if (!route_metrics) {
			fprintf(stderr, "davit proxy: --metrics-listen: %s\n", err);
			goto out;
		}
		fprintf(stderr, "davit proxy: metrics on http://%s/metrics\n", a.metrics_listen);
	}
	if (dv_proxy_start(proxy, &err) != 0) {
		fprintf(stderr, "davit proxy: %s\n", err);
		goto out;
	}
	unsigned workers = a.config.workers ? a.config.workers : dv_cpu_count();
	for (size_t i = 0; i < a.config.nlisten; i++) {
		char label[80];
		fprintf(stderr, "davit proxy: listening on %s (%u workers)\n",
		        dv_sockaddr_format(&a.listen[i], label, sizeof label), workers);
	}
	for (size_t i = 0; i < a.config.ntls_listen; i++) {
		char label[80];
		fprintf(stderr, "davit proxy: listening on %s (TLS, %u workers)\n",
		        dv_sockaddr_format(&a.tls_listen[i], label, sizeof label), workers);
	}
	fprintf(stderr, "davit proxy: %zu routes loaded\n", nroutes);
	int stops = 0;
	for (;;) {
		struct signalfd_siginfo si;
		ssize_t n = read(sfd, &si, sizeof si);
		if (n != sizeof si) {
			if (n == -1 && errno == EINTR)
				continue;
			break;
		}
		if (si.ssi_signo == SIGHUP && tls) {
			free(err);
			err = NULL;
			struct dv_tls_certset *set = load_certs(&a, tls, &err);
			if (!set) {
				dv_log_error("proxy", "certificate reload failed, keeping the current ones: %s", err);
			} else {
				size_t count = dv_tls_certset_count(set);
				dv_tls_publish(tls, set);
				dv_log_info("proxy", "certificates reloaded (%zu certificates)", count);
			}
		}
		if (si.ssi_signo == SIGHUP) {
			if (!a.routes_file) {
				dv_log_info("proxy", "SIGHUP: no --routes file to reload");
				continue;
			}
			free(err);
			err = NULL;
			struct dv_route_table *t = load_routes(&a, &err);
			if (!t) {
				dv_log_error("proxy", "reload failed, keeping the current routes: %s", err);
				continue;
			}
			size_t count = dv_route_table_count(t);
			dv_proxy_set_routes(proxy, t);
			dv_log_info("proxy", "routes reloaded from %s (%zu routes)", a.routes_file, count);
			continue;
		}
		stops++;
		dv_log_info("proxy", "%s: %s", strsignal((int)si.ssi_signo),
		            stops == 1 ? "stopping gracefully (again to stop at once)" : "stopping now");
		dv_proxy_shutdown(proxy, stops == 1);
		if (stops > 1)
			break;
		/* Graceful: wait for the workers, still listening for a second
		 * signal that turns the wait into an immediate stop. */
		struct pollfd pfd = {.fd = sfd, .events = POLLIN};
		while (dv_proxy_running(proxy)) {
			if (poll(&pfd, 1, 50) == 1) {
				if (read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo != SIGHUP) {
					dv_log_info("proxy", "%s: stopping now", strsignal((int)si.ssi_signo));
					dv_proxy_shutdown(proxy, false);
				}
			}
		}
		break;
	}
	dv_proxy_wait(proxy);
	rc = 0;
out:
	dv_obs_route_metrics_stop(route_metrics);
	dv_proxy_free(proxy);
	dv_tls_free(tls);
	if (sfd != -1)
		close(sfd);
	free(a.routes);
	free(a.certs);
	free(err);
	return rc;
}

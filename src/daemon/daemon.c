#include "daemon/daemon.h"
#include "daemon/obs_setup.h"
#include "daemon/docker_api.h"

#include "api/server.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/strbuf.h"
#include "core/util.h"
#include "daemon/certs.h"
#include "deploy/engine.h"
#include "obs/obs.h"
#include "proxy/proxy.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

struct daemon {
	struct dv_loop *loop;
	struct dv_proxy *proxy;
	struct dv_store *store;
	struct dv_engine *engine;
	struct dv_api_server *api;
	struct dv_obs *obs;
	struct dv_daemon_certs *certs;
	struct dv_io signal_io;
	const char *state_dir;
	bool stopping;
	int exit_status;
};

static int make_dir(const char *path, mode_t mode, char **err)
{
	if (mkdir(path, mode) == -1 && errno != EEXIST) {
		*err = dv_xasprintf("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- API routing ---- */

struct pending {
	struct dv_api_request *req;
	bool text;
};

static void pending_closed(struct dv_api_request *req, void *arg)
{
	struct pending *p = arg;
	p->req = NULL; /* the client left; the operation goes on */
}

static struct pending *pending_new(struct dv_api_request *req)
{
	struct pending *p = dv_xcalloc(1, sizeof *p);
	p->req = req;
	char *format = dv_api_query(req, "format");
	p->text = format && strcmp(format, "text") == 0;
	free(format);
	dv_api_on_close(req, pending_closed, p);
	return p;
}

static void operation_done(void *arg, bool ok, const char *text, const char *json)
{
	struct pending *p = arg;
	if (p->req) {
		dv_api_on_close(p->req, NULL, NULL);
		if (p->text)
			dv_api_respond(p->req, ok ? 200 : 422, "text/plain; charset=utf-8", text, strlen(text));
		else
			dv_api_respond(p->req, ok ? 200 : 422, "application/json", json, strlen(json));
	}
	free(p);
}

/* Splits the request body ("K=V" lines: the client's environment) into a
 * NULL-terminated array; the strings point into `copy` (caller frees both). */
static char **environ_from_body(struct dv_api_request *req, char **copy)
{
	size_t len;
	const char *body = dv_api_body(req, &len);
	*copy = dv_xstrndup(body, len);
	size_t n = 0, cap = 16;
	char **env = dv_xmalloc(cap * sizeof *env);
	for (char *line = *copy; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (strchr(line, '=')) {
			if (n + 2 > cap) {
				cap *= 2;
				env = dv_xrealloc(env, cap * sizeof *env);
			}
			env[n++] = line;
		}
		line = nl ? nl + 1 : NULL;
	}
	env[n] = NULL;
	return env;
}

static void start_async(struct dv_api_request *req, int rc, char *err, struct pending *p)
{
	if (rc != 0) {
		dv_api_on_close(req, NULL, NULL);
		free(p);
		dv_api_respond_error(req, 422, err ? err : "failed");
	}
	free(err);
}

struct log_stream {
	struct dv_api_request *req;     /* NULL once the client is gone */
	struct dv_engine *engine;
	struct dv_engine_log_sub *sub;
	bool following;                 /* handed over to the on_close callback */
};

static void log_line(void *arg, const char *text, size_t len)
{
	struct log_stream *ls = arg;
	if (ls->req)
		dv_api_stream_write(ls->req, text, len);
}

/* The client went away. While the request handler still runs (the tail is
 * being written) it frees the stream itself; once following, we do. */
static void log_stream_closed(struct dv_api_request *req, void *arg)
{
	struct log_stream *ls = arg;
	ls->req = NULL;
	if (!ls->following)
		return;
	dv_engine_logs_cancel(ls->engine, ls->sub);
	free(ls);
}

static void handle_api(struct dv_api_request *req, void *arg)
{
	struct daemon *d = arg;
	const char *method = dv_api_method(req), *path = dv_api_path(req);
	bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
	char *app = dv_api_query(req, "app");
	char *err = NULL;
	char *format = dv_api_query(req, "format");
	bool json = !(format && strcmp(format, "text") == 0);
	free(format);

	if (d->obs && dv_obs_handle_api(d->obs, req)) {
		/* top, metrics, alerts, events: answered by obs */
	} else if (get && strcmp(path, "/v1/ping") == 0) {
		char body[128];
		int n = snprintf(body, sizeof body, "{\"ok\":true,\"pid\":%d}\n", (int)getpid());
		dv_api_respond(req, 200, "application/json", body, (size_t)n);
	} else if (post && strcmp(path, "/v1/deploy") == 0) {
		char *file = dv_api_query(req, "file");
		if (!file || file[0] != '/') {
			dv_api_respond_error(req, 400, "deploy needs ?file=ABSOLUTE_PATH of a compose file");
		} else {
			char *copy;
			char **env = environ_from_body(req, &copy);
			if (d->obs && dv_obs_load_compose(d->obs, file, (const char *const *)env, &err) != 0) {
				dv_api_respond_error(req, 422, err); /* x-davit alerts/notifications: nothing deployed */
				dv_free(&err);
			} else {
				struct pending *p = pending_new(req);
				int rc = dv_engine_deploy_file(d->engine, file, (const char *const *)env, operation_done, p, &err);
				start_async(req, rc, err, p);
			}
			free(env);
			free(copy);
		}
		free(file);
	} else if (post && strcmp(path, "/v1/rollback") == 0) {
		char *rel = dv_api_query(req, "release");
		uint64_t release = 0;
		if (rel && *rel && dv_parse_uint(rel, INT64_MAX, &release) != 0) {
			dv_api_respond_error(req, 400, "release must be a release number (see 'davit releases')");
		} else {
			struct pending *p = pending_new(req);
			int rc = dv_engine_rollback(d->engine, app, (int64_t)release, operation_done, p, &err);
			start_async(req, rc, err, p);
		}
		free(rel);
	} else if (post && strcmp(path, "/v1/service") == 0) {
		char *service = dv_api_query(req, "service"), *action = dv_api_query(req, "action");
		struct pending *p = pending_new(req);
		int rc = dv_engine_service_action(d->engine, app, service ? service : "", action ? action : "",
		                                  operation_done, p, &err);
		start_async(req, rc, err, p);
		free(service);
		free(action);
	} else if (post && strcmp(path, "/v1/down") == 0) {
		struct pending *p = pending_new(req);
		int rc = dv_engine_down(d->engine, app, operation_done, p, &err);
		start_async(req, rc, err, p);
	} else if (get && (strcmp(path, "/v1/ps") == 0 || strcmp(path, "/v1/releases") == 0)) {
		struct dv_strbuf out;
		dv_strbuf_init(&out);
		int rc = strcmp(path, "/v1/ps") == 0 ? dv_engine_ps(d->engine, app, json, &out, &err)
		                                     : dv_engine_releases(d->engine, app, json, &out, &err);
		if (rc != 0)
			dv_api_respond_error(req, 404, err);
		else
			dv_api_respond(req, 200, json ? "application/json" : "text/plain; charset=utf-8", out.data ? out.data : "",
			               out.len);
		dv_strbuf_dispose(&out);
		free(err);
	} else if (get && strcmp(path, "/v1/logs") == 0) {
		char *service = dv_api_query(req, "service"), *tail = dv_api_query(req, "tail");
		uint64_t n = 100;
		if (tail && *tail && dv_parse_uint(tail, 100000, &n) != 0)
			n = 100;
		bool follow = dv_api_query_flag(req, "follow");
		int rc = 0;
		/* Check the app and service before answering 200 and streaming. */
		dv_engine_logs(d->engine, app, service && *service ? service : NULL, 0, false, json, log_line, NULL, &err, &rc);
		if (rc != 0) {
			dv_api_respond_error(req, 404, err);
		} else {
			struct log_stream *ls = dv_xcalloc(1, sizeof *ls);
			ls->req = req;
			ls->engine = d->engine;
			dv_api_on_close(req, log_stream_closed, ls);
			dv_api_stream_begin(req, 200, json ? "application/x-ndjson" : "text/plain; charset=utf-8");
			if (ls->req)
				ls->sub = dv_engine_logs(d->engine, app, service && *service ? service : NULL, (unsigned)n,
				                         follow, json, log_line, ls, &err, &rc);
			if (ls->req && follow && ls->sub) {
				ls->following = true; /* log_stream_closed cancels and frees */
			} else {
				dv_engine_logs_cancel(d->engine, ls->sub);
				if (ls->req) {
					dv_api_on_close(req, NULL, NULL);
					dv_api_stream_end(req);
				}
				free(ls);
			}
		}
		free(err);
		free(service);
		free(tail);
	} else if (strncmp(path, "/v1/volumes", 11) == 0 || strncmp(path, "/v1/registry/", 13) == 0) {
		dv_daemon_docker_api(req, d->engine, d->state_dir, app);
	} else if (get && strcmp(path, "/v1/certs") == 0) {
		struct dv_strbuf out;
		dv_strbuf_init(&out);
		dv_daemon_certs_report(d->certs, json, &out);
		dv_api_respond(req, 200, json ? "application/json" : "text/plain; charset=utf-8", out.data, out.len);
		dv_strbuf_dispose(&out);
	} else if (post && strcmp(path, "/v1/shutdown") == 0) {
		dv_api_respond(req, 200, "application/json", "{\"ok\":true}\n", 12);
		raise(SIGTERM);
	} else {
		dv_api_respond_error(req, 404, "no such API endpoint");
	}
	free(app);
}

/* ---- signals and shutdown ---- */

static void engine_stopped(void *arg)
{
	struct daemon *d = arg;
	dv_loop_stop(d->loop);
}

static void begin_shutdown(struct daemon *d)
{
	if (d->stopping)
		return;
	d->stopping = true;
	dv_log_info("daemon", "stopping: replicas get SIGTERM, the proxy finishes in-flight requests");
	dv_proxy_shutdown(d->proxy, true);
	dv_engine_shutdown(d->engine, engine_stopped, d);
}

static void signal_event(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct daemon *d = dv_container_of(io, struct daemon, signal_io);
	struct signalfd_siginfo si;
	while (read(io->fd, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			if (d->stopping) {
				dv_log_warn("daemon", "second stop signal: exiting now");
				dv_loop_stop(loop);
			}
			begin_shutdown(d);
		}
	}
}

int dv_daemon_run(const struct dv_daemon_options *o)
{
	int status = 1;
	char *err = NULL;
	struct daemon d;
	memset(&d, 0, sizeof d);
	d.signal_io.fd = -1;
	d.state_dir = o->state_dir;
	int pid_fd = -1;
	char *run_dir = dv_xasprintf("%s/run", o->state_dir);
	char *log_dir = dv_xasprintf("%s/logs", o->state_dir);
	char *pid_path = dv_xasprintf("%s/davit.pid", run_dir);
	char *sock_path = dv_xasprintf("%s/davit.sock", run_dir);
	char *db_path = dv_xasprintf("%s/davit.db", o->state_dir);
	char *http_url = NULL;

	if (make_dir(o->state_dir, 0700, &err) || make_dir(run_dir, 0700, &err) || make_dir(log_dir, 0700, &err))
		goto out;
	{
		char *json_log = dv_xasprintf("%s/davit.log", log_dir); /* JSON lines: davit logs --daemon */
		if (dv_log_open_file(json_log, 0) != 0)
			dv_log_warn("daemon", "cannot write %s: %s", json_log, strerror(errno));
		free(json_log);
	}
	/* One daemon per state directory: the pid file is locked while we run. */
	pid_fd = open(pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (pid_fd == -1 || flock(pid_fd, LOCK_EX | LOCK_NB) == -1) {
		err = dv_xasprintf("another davit daemon is running with state directory %s (pid file %s)",
		                   o->state_dir, pid_path);
		goto out;
	}
	if (ftruncate(pid_fd, 0) == 0) {
		char pid[32];
		int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
		if (write(pid_fd, pid, (size_t)n) != n)
			dv_log_warn("daemon", "cannot write %s", pid_path);
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (dv_store_open(db_path, &d.store, &err) != 0)
		goto out;

	struct dv_proxy_config pc;
	dv_proxy_config_default(&pc);
	struct dv_sockaddr listen_addr;
	if (dv_sockaddr_parse(o->http, false, &listen_addr, &err) != 0)
		goto out;
	pc.listen = &listen_addr;
	pc.nlisten = 1;
	struct dv_sockaddr https_addr;
	if (o->https) {
		if (dv_sockaddr_parse(o->https, false, &https_addr, &err) != 0)
			goto out;
		pc.tls_listen = &https_addr;
		pc.ntls_listen = 1;
	}
	d.loop = dv_loop_new(&err);
	if (!d.loop)
		goto out;
	bool on_80 = ntohs(((struct sockaddr_in *)&listen_addr.addr)->sin_port) == 80;
	bool acme = o->https && (o->acme == 1 || (o->acme < 0 && (on_80 || o->acme_directory)));
	d.certs = dv_daemon_certs_new(d.loop, o, acme, &err);
	if (!d.certs)
		goto out;
	pc.tls = dv_daemon_certs_tls(d.certs);
	pc.https_redirect = o->https != NULL;
	pc.workers = o->workers;
	if (o->drain_timeout_ms)
		pc.drain_timeout_ms = o->drain_timeout_ms;
	char *access_log = dv_xasprintf("%s/access.log", log_dir);
	pc.access_log_path = access_log;
	d.proxy = dv_proxy_new(&pc, &err);
	free(access_log);
	if (!d.proxy)
		goto out;
	dv_proxy_set_routes(d.proxy, dv_route_table_new());
	if (dv_proxy_start(d.proxy, &err) != 0)
		goto out;

	d.signal_io.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	d.signal_io.cb = signal_event;
	dv_loop_add(d.loop, &d.signal_io, EPOLLIN);

	char label[80];
	http_url = dv_xasprintf("http://%s", dv_sockaddr_format(&listen_addr, label, sizeof label));
	struct dv_engine_config ec = {
		.loop = d.loop,
		.proxy = d.proxy,
		.store = d.store,
		.state_dir = o->state_dir,
		.http_url = http_url,
		.environment = "production",
		.health_timeout_ms = o->health_timeout_ms ? o->health_timeout_ms : 60000,
		.drain_timeout_ms = o->drain_timeout_ms ? o->drain_timeout_ms : 30000,
		.deploy_timeout_ms = o->deploy_timeout_ms ? o->deploy_timeout_ms : 15 * 60000,
		.port_base = 20000,
		.docker_loopback = o->docker_loopback,
		.keep_images = o->keep_images,
		.domains_changed = dv_daemon_certs_domains,
		.domains_arg = d.certs,
	};
	d.engine = dv_engine_new(&ec, &err);
	if (!d.engine)
		goto out;
	if (dv_engine_recover(d.engine, &err) != 0)
		goto out;
	d.obs = dv_daemon_obs_start(o, d.loop, d.engine, d.store, &err);
	if (!d.obs)
		goto out;
	d.api = dv_api_server_new(d.loop, sock_path, handle_api, &d, &err);
	if (!d.api)
		goto out;
	dv_log_info("daemon", "ready: proxy on %s%s%s, control socket %s, state in %s", http_url,
	            o->https ? " and https://" : "", o->https ? o->https : "", sock_path, o->state_dir);
	if (o->https)
		dv_log_info("daemon", "certificates: %s", acme ? "ACME on" : "ACME off (--no-acme, or HTTP not on port 80: give --acme-directory to use a CA anyway)");
	dv_loop_run(d.loop, NULL, NULL);
	status = 0;
out:
	if (err) {
		fprintf(stderr, "davit daemon: %s\n", err);
		free(err);
	}
	dv_api_server_free(d.api);
	dv_obs_free(d.obs);
	if (d.proxy) {
		dv_proxy_shutdown(d.proxy, false);
		dv_proxy_wait(d.proxy);
	}
	dv_engine_free(d.engine);
	dv_proxy_free(d.proxy);
	dv_daemon_certs_free(d.certs);
	dv_store_close(d.store);
	if (d.signal_io.fd != -1)
		close(d.signal_io.fd);
	dv_loop_free(d.loop);
	if (pid_fd != -1) {
		if (status == 0)
			unlink(pid_path);
		close(pid_fd);
	}
	dv_log_close_file();
	free(run_dir);
	free(log_dir);
	free(pid_path);
	free(sock_path);
	free(db_path);
	free(http_url);
	return status;
}

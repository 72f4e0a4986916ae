/* obs/route_metrics: /metrics for `davit proxy` on its own thread (see obs.h). */
#include "obs/obs.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/util.h"
#include "metrics/metrics.h"
#include "obs/http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct dv_obs_route_metrics {
	struct dv_loop *loop;
	struct dv_obs_http *http;
	char *token;
	pthread_t thread;
	atomic_bool stop;
};

static void handle(void *arg, const char *method, const char *path, const char *auth, int *status,
                   const char **ctype, struct dv_strbuf *body)
{
	struct dv_obs_route_metrics *m = arg;
	if (strcmp(path, "/metrics") != 0) {
		*status = 404;
		dv_strbuf_puts(body, "davit serves /metrics here\n");
		return;
	}
	if (m->token && !dv_obs_http_bearer_ok(m->token, auth)) {
		*status = 401;
		dv_strbuf_puts(body, "this /metrics needs 'Authorization: Bearer TOKEN'\n");
		return;
	}
	struct dv_metrics_snapshot s;
	dv_metrics_snapshot_take(&s);
	dv_metrics_prom_requests(body, &s, "route");
	dv_metrics_snapshot_free(&s);
	dv_metrics_prom_gauges(body);
	*status = 200;
	*ctype = "text/plain; version=0.0.4; charset=utf-8";
}

static void wake(struct dv_loop *loop, void *arg)
{
	struct dv_obs_route_metrics *m = arg;
	if (atomic_load(&m->stop))
		dv_loop_stop(loop);
}

static void *run(void *arg)
{
	struct dv_obs_route_metrics *m = arg;
	dv_loop_run(m->loop, NULL, NULL);
	return NULL;
}

struct dv_obs_route_metrics *dv_obs_route_metrics_start(const char *listen, const char *token, char **err)
{
	struct dv_sockaddr sa;
	if (dv_sockaddr_parse(listen, false, &sa, err) != 0)
		return NULL;
	struct dv_obs_route_metrics *m = dv_xcalloc(1, sizeof *m);
	m->token = token && *token ? dv_xstrdup(token) : NULL;
	m->loop = dv_loop_new(err);
	if (!m->loop || dv_loop_set_wake(m->loop, wake, m) != 0) {
		if (m->loop && !*err)
			*err = dv_xasprintf("eventfd failed");
		goto fail;
	}
	m->http = dv_obs_http_new(m->loop, &sa, handle, m, err);
	if (!m->http)
		goto fail;
	if (pthread_create(&m->thread, NULL, run, m) != 0) {
		*err = dv_xasprintf("cannot start the metrics thread");
		goto fail;
	}
	return m;
fail:
	dv_obs_http_free(m->http);
	dv_loop_free(m->loop);
	free(m->token);
	free(m);
	return NULL;
}

void dv_obs_route_metrics_stop(struct dv_obs_route_metrics *m)
{
	if (!m)
		return;
	atomic_store(&m->stop, true);
	dv_loop_wake(m->loop);
	pthread_join(m->thread, NULL);
	dv_obs_http_free(m->http);
	dv_loop_free(m->loop);
	free(m->token);
	free(m);
}

/* daemon/obs_setup: see obs_setup.h. */
#include "daemon/obs_setup.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

static uint64_t env_duration(const char *name, uint64_t fallback)
{
	const char *v = getenv(name);
	uint64_t ms;
	if (!v || !*v)
		return fallback;
	if (dv_parse_duration_ms(v, &ms) != 0) {
		dv_log_warn("daemon", "%s='%s' is not a duration (like 500ms, 10s, 2m): ignored", name, v);
		return fallback;
	}
	return ms;
}

struct dv_obs *dv_daemon_obs_start(const struct dv_daemon_options *o, struct dv_loop *loop, struct dv_engine *engine,
                                   struct dv_store *store, char **err)
{
	struct dv_notifier_config *nt = dv_xcalloc(o->nnotify + 1, sizeof *nt);
	for (size_t i = 0; i < o->nnotify; i++) {
		if (dv_notify_parse_spec(o->notify[i], &nt[i], err) != 0) {
			char *e = dv_xasprintf("--notify: %s", *err);
			free(*err);
			*err = e;
			free(nt);
			return NULL;
		}
	}
	const char *retries = getenv("DAVIT_NOTIFY_RETRIES");
	uint64_t nretries = 3;
	if (retries && *retries && dv_parse_uint(retries, 100, &nretries) != 0)
		nretries = 3;
	const char *token = o->metrics_token ? o->metrics_token : getenv("DAVIT_METRICS_TOKEN");
	struct dv_obs_config c = {
		.loop = loop,
		.engine = engine,
		.store = store,
		.state_dir = o->state_dir,
		.metrics_listen = o->metrics_listen ? o->metrics_listen : DV_DAEMON_METRICS_DEFAULT,
		.metrics_token = token,
		.interval_ms = env_duration("DAVIT_METRICS_INTERVAL", 10000),
		.alert_for_ms = env_duration("DAVIT_ALERT_FOR", 0),
		.host_root = getenv("DAVIT_HOST_ROOT"),
		.disk_path = getenv("DAVIT_DISK_PATH"),
		.notifiers = nt,
		.nnotifiers = o->nnotify,
		.notify = {.timeout_ms = env_duration("DAVIT_NOTIFY_TIMEOUT", 10000),
		           .retries = (unsigned)nretries,
		           .backoff_ms = env_duration("DAVIT_NOTIFY_BACKOFF", 1000)},
		.logs_max_age_s = o->logs_max_age_ms ? (int64_t)(o->logs_max_age_ms / 1000) : 0,
		.logs_max_bytes = o->logs_max_bytes,
	};
	struct dv_obs *obs = dv_obs_new(&c, err);
	if (!obs && !o->metrics_listen) {
		/* The default port is taken (another daemon, another exporter): run
		 * without /metrics rather than not at all. */
		dv_log_warn("daemon", "%s; /metrics is off (choose a port with --metrics-listen)", *err);
		dv_free(err);
		c.metrics_listen = NULL;
		obs = dv_obs_new(&c, err);
	}
	if (obs && c.metrics_listen && strcmp(c.metrics_listen, "off") != 0)
		dv_log_info("daemon", "metrics on http://%s/metrics%s", c.metrics_listen, token ? " (bearer token)" : "");
	free(nt);
	return obs;
}

/* obs: collection tick, /metrics, alerts, notifications, CLI endpoints (see obs.h). */
#include "obs/obs.h"

#include "core/alloc.h"
#include "core/jsonparse.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "compose/compose.h"
#include "core/util.h"
#include "deploy/engine.h"
#include "metrics/alerts.h"
#include "metrics/history.h"
#include "metrics/host.h"
#include "metrics/metrics.h"
#include "obs/config.h"
#include "obs/http.h"
#include "obs/logs.h"
#include "store/store.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RULES 256
#define EVENTS_POLL_MS 1000

struct svc {
	char name[160];           /* "app/service" */
	bool stopped, seen;
	unsigned replicas, healthy;
	uint64_t restarts, rss, cpu_ms;
	bool have_cpu;
	/* computed at the last tick */
	double rps, p50, p95, p99, err_pct, cpu_pct, up;
	uint64_t requests, errors, bytes_in, bytes_out;
	uint64_t hist[DV_METRICS_BUCKETS];
};

struct rep {
	char svc[160];
	unsigned index;
	char role[8], state[16];
	uint64_t restarts, rss, cpu_ms;
};

struct app_counts {
	char app[128];
	uint64_t deploys_ok, deploys_failed, rollbacks_manual, rollbacks_auto;
	bool backup_failed, backup_known;
};

struct file_cfg {
	char *key;                /* compose file path */
	char *app;
	char *text;
	const char *const *env;   /* only while loading */
};

struct dv_obs {
	struct dv_obs_config cfg;
	char *state_dir, *token, *disk_path, *host_root;
	struct dv_notifier_config *flag_notifiers;
	size_t nflag_notifiers;
	struct dv_history *hist;
	struct dv_alerts *alerts;
	struct dv_notify *notify;
	struct dv_obs_http *http;
	struct dv_host_stats host;
	struct dv_host_sample last_host;
	uint64_t net_rx_prev, net_tx_prev;
	struct dv_metrics_snapshot prev;
	bool have_prev;
	uint64_t prev_ms;
	int64_t last_tick_wall;
	struct svc *svcs;
	size_t nsvcs;
	struct rep *reps;            /* every replica at the last tick */
	size_t nreps;
	struct app_counts *apps;
	size_t napps;
	struct file_cfg *files;
	size_t nfiles;
	struct dv_timer tick, events;
	int64_t last_event_id;
	unsigned ticks;
	uint64_t alerts_fired, alerts_resolved;
};

/* ---- small helpers ---- */

static struct app_counts *app_counts(struct dv_obs *o, const char *app)
{
	for (size_t i = 0; i < o->napps; i++)
		if (strcmp(o->apps[i].app, app) == 0)
			return &o->apps[i];
	o->apps = dv_xrealloc(o->apps, (o->napps + 1) * sizeof *o->apps);
	struct app_counts *a = &o->apps[o->napps++];
	memset(a, 0, sizeof *a);
	snprintf(a->app, sizeof a->app, "%s", app);
	return a;
}

static struct svc *svc_get(struct dv_obs *o, const char *name)
{
	for (size_t i = 0; i < o->nsvcs; i++)
		if (strcmp(o->svcs[i].name, name) == 0)
			return &o->svcs[i];
	o->svcs = dv_xrealloc(o->svcs, (o->nsvcs + 1) * sizeof *o->svcs);
	struct svc *s = &o->svcs[o->nsvcs++];
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", name);
	return s;
}

static const struct dv_metrics_totals *snap_slot(const struct dv_metrics_snapshot *s, const char *name)
{
	for (size_t i = 1; i < s->nslots; i++)
		if (strcmp(s->names[i], name) == 0)
			return &s->slots[i];
	return NULL;
}

/* ---- rules and notifiers ---- */

static void apply_config(struct dv_obs *o)
{
	struct dv_alert_rule defaults[16];
	size_t n = dv_alerts_default_rules(defaults, 16, o->cfg.alert_for_ms);
	struct dv_alert_rule *rules = dv_xcalloc(MAX_RULES, sizeof *rules);
	memcpy(rules, defaults, n * sizeof *rules);
	size_t nrules = n;
	struct dv_notifier_config *nt = dv_xcalloc(o->nflag_notifiers + 1, sizeof *nt);
	if (o->nflag_notifiers)
		memcpy(nt, o->flag_notifiers, o->nflag_notifiers * sizeof *nt);
	size_t nnt = o->nflag_notifiers;
	for (size_t i = 0; i < o->nfiles; i++) {
		struct dv_obs_file_config fc;
		char *err = NULL;
		if (dv_obs_config_parse(o->files[i].key, o->files[i].text, strlen(o->files[i].text), o->files[i].app,
		                        o->files[i].env, rules, nrules, &fc, &err) != 0) {
			dv_log_warn("obs", "%s", err);
			free(err);
			continue;
		}
		nrules = fc.nrules < MAX_RULES ? fc.nrules : MAX_RULES;
		memcpy(rules, fc.rules, nrules * sizeof *rules);
		nt = dv_xrealloc(nt, (nnt + fc.nnotifiers + 1) * sizeof *nt);
		if (fc.nnotifiers)
			memcpy(nt + nnt, fc.notifiers, fc.nnotifiers * sizeof *nt);
		nnt += fc.nnotifiers;
		dv_obs_config_dispose(&fc);
	}
	dv_alerts_set_rules(o->alerts, rules, nrules);
	dv_notify_configure(o->notify, nt, nnt);
	free(rules);
	free(nt);
}

static void load_stored(const char *key, const char *value, void *arg)
{
	struct dv_obs *o = arg;
	if (strcmp(key, "alerts:firing") == 0) {
		struct dv_jv *j = dv_jv_parse(value, strlen(value), NULL);
		for (size_t i = 0; j && j->type == DV_JV_ARRAY && i < j->len; i++)
			dv_alerts_restore(o->alerts, dv_jv_str(&j->items[i], "rule", ""), dv_jv_str(&j->items[i], "subject", ""),
			                  dv_jv_int(&j->items[i], "fired_at", 0), dv_now_ms());
		dv_jv_free(j);
		return;
	}
	const char *nl = strchr(value, '\n');
	if (strncmp(key, "compose:", 8) != 0 || !nl)
		return;
	o->files = dv_xrealloc(o->files, (o->nfiles + 1) * sizeof *o->files);
	struct file_cfg *f = &o->files[o->nfiles++];
	memset(f, 0, sizeof *f);
	f->key = dv_xstrdup(key + 8);
	f->app = dv_xstrndup(value, (size_t)(nl - value)); /* stored as "APP\nTEXT" */
	f->text = dv_xstrdup(nl + 1);
}

int dv_obs_load_compose(struct dv_obs *o, const char *path, const char *const *environ, char **err)
{
	struct dv_compose_options copts = {.environ = environ};
	struct dv_compose_project *project = NULL;
	if (dv_compose_load(path, &copts, &project, NULL) != 0)
		return 0; /* the engine reports what is wrong with the file */
	char *app = dv_xstrdup(project->name);
	dv_compose_project_free(project);
	FILE *f = fopen(path, "re");
	if (!f) {
		free(app);
		return 0;
	}
	struct dv_strbuf text;
	dv_strbuf_init(&text);
	char buf[8192];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		dv_strbuf_append(&text, buf, n);
	fclose(f);
	/* Validate against the rules as they are now. */
	struct dv_alert_rule defaults[16];
	size_t nd = dv_alerts_default_rules(defaults, 16, o->cfg.alert_for_ms);
	struct dv_obs_file_config fc;
	if (dv_obs_config_parse(path, text.data ? text.data : "", text.len, app, environ, defaults, nd, &fc, err) != 0) {
		free(app);
		dv_strbuf_dispose(&text);
		return -1;
	}
	dv_obs_config_dispose(&fc);
	/* Keep it (one entry per app: the newest file wins). Notifier URLs
	 * were interpolated with the client's environment: store the result of
	 * the first parse is not possible in YAML, so keep the environment
	 * dependent values resolved by re-parsing with this environment now. */
	size_t i = 0;
	while (i < o->nfiles && strcmp(o->files[i].app, app) != 0)
		i++;
	if (i == o->nfiles) {
		o->files = dv_xrealloc(o->files, (o->nfiles + 1) * sizeof *o->files);
		memset(&o->files[o->nfiles++], 0, sizeof *o->files);
	} else {
		char *old = dv_xasprintf("compose:%s", o->files[i].key);
		dv_history_config_put(o->hist, old, "");
		free(old);
		free(o->files[i].key);
		free(o->files[i].app);
		free(o->files[i].text);
	}
	o->files[i].key = dv_xstrdup(path);
	o->files[i].app = app;
	o->files[i].text = dv_strbuf_steal(&text);
	char *key = dv_xasprintf("compose:%s", path);
	char *val = dv_xasprintf("%s\n%s", app, o->files[i].text);
	dv_history_config_put(o->hist, key, val);
	free(key);
	free(val);
	o->files[i].env = environ;
	apply_config(o);
	o->files[i].env = NULL;
	return 0;
}

/* ---- notifications ---- */

static void notify_alert(struct dv_obs *o, const struct dv_alert_transition *t)
{
	char title[400], text[600], fields[1200];
	snprintf(title, sizeof title, "%s %s: %s", t->firing ? "FIRING" : "RESOLVED", t->rule, t->subject);
	snprintf(text, sizeof text, "%s\n%s = %.4g (threshold %s %.4g)", t->summary, t->metric, t->value,
	         t->below ? "<" : ">", t->threshold);
	struct dv_strbuf f;
	dv_strbuf_init(&f);
	struct dv_json j;
	dv_json_init(&j, &f);
	dv_json_object_begin(&j);
	dv_json_key(&j, "rule");
	dv_json_string(&j, t->rule);
	dv_json_key(&j, "subject");
	dv_json_string(&j, t->subject);
	dv_json_key(&j, "metric");
	dv_json_string(&j, t->metric);
	dv_json_key(&j, "state");
	dv_json_string(&j, t->firing ? "firing" : "resolved");
	dv_json_key(&j, "value");
	dv_json_double(&j, t->value);
	dv_json_key(&j, "threshold");
	dv_json_double(&j, t->threshold);
	dv_json_object_end(&j);
	snprintf(fields, sizeof fields, "%s", f.data);
	struct dv_notify_message m = {
		.event = t->firing ? "alert.firing" : "alert.resolved",
		.severity = dv_alert_severity_name(t->severity),
		.title = title,
		.text = text,
		.fields_json = fields,
		.is_alert = true,
	};
	dv_notify_send(o->notify, &m);
	char *err = NULL;
	const char *slash = strchr(t->subject, '/');
	char app[128] = "";
	if (slash && (size_t)(slash - t->subject) < sizeof app)
		snprintf(app, sizeof app, "%.*s", (int)(slash - t->subject), t->subject);
	dv_store_event_add(o->cfg.store, app[0] ? app : NULL, t->firing ? "alert.firing" : "alert.resolved", title,
	                   f.data, NULL, &err);
	free(err);
	dv_log_fields(t->firing ? DV_LOG_WARN : DV_LOG_INFO, "obs", f.data, "alert %s", title);
	dv_strbuf_dispose(&f);
}

static void notify_event(struct dv_obs *o, const struct dv_store_event *ev, const char *what, const char *severity)
{
	char title[400], fields[800];
	snprintf(title, sizeof title, "%s: %s", ev->app ? ev->app : "davit", what);
	struct dv_strbuf f;
	dv_strbuf_init(&f);
	struct dv_json j;
	dv_json_init(&j, &f);
	dv_json_object_begin(&j);
	dv_json_key(&j, "app");
	dv_json_string(&j, ev->app);
	dv_json_key(&j, "kind");
	dv_json_string(&j, ev->kind);
	dv_json_key(&j, "event_id");
	dv_json_int(&j, ev->id);
	dv_json_object_end(&j);
	snprintf(fields, sizeof fields, "%s", f.data);
	dv_strbuf_dispose(&f);
	struct dv_notify_message m = {
		.event = ev->kind, .severity = severity, .title = title, .text = ev->message, .fields_json = fields,
	};
	dv_notify_send(o->notify, &m);
}

/* ---- events (deploys, rollbacks, backups, certificates) ---- */

static void handle_event(struct dv_obs *o, const struct dv_store_event *ev)
{
	const char *app = ev->app ? ev->app : "";
	if (strcmp(ev->kind, "deploy.succeeded") == 0) {
		app_counts(o, app)->deploys_ok++;
		notify_event(o, ev, "deploy succeeded", "info");
	} else if (strcmp(ev->kind, "deploy.failed") == 0) {
		struct app_counts *a = app_counts(o, app);
		a->deploys_failed++;
		a->rollbacks_auto++; /* a failed deploy switches back to the serving release */
		notify_event(o, ev, "deploy FAILED (the serving release keeps running)", "critical");
	} else if (strcmp(ev->kind, "rollback.started") == 0) {
		app_counts(o, app)->rollbacks_manual++;
		notify_event(o, ev, "rollback", "warning");
	} else if (strcmp(ev->kind, "backup.failed") == 0) {
		struct app_counts *a = app_counts(o, app);
		a->backup_failed = a->backup_known = true;
	} else if (strcmp(ev->kind, "backup.succeeded") == 0) {
		struct app_counts *a = app_counts(o, app);
		a->backup_failed = false;
		a->backup_known = true;
	} else if (strcmp(ev->kind, "certificate.expiry") == 0 && ev->data) {
		struct dv_jv *d = dv_jv_parse(ev->data, strlen(ev->data), NULL);
		const char *domain = dv_jv_str(d, "domain", NULL);
		int64_t not_after = dv_jv_int(d, "not_after", 0);
		if (domain && not_after)
			dv_metrics_cert_expiry_set(domain, not_after);
		dv_jv_free(d);
	}
}

static void poll_events(struct dv_obs *o)
{
	struct dv_store_event_filter f = {.after_id = o->last_event_id, .limit = 1000};
	struct dv_store_event *ev = NULL;
	size_t n = 0;
	char *err = NULL;
	if (dv_store_event_list(o->cfg.store, &f, &ev, &n, &err) != 0) {
		free(err);
		return;
	}
	for (size_t i = n; i-- > 0;) { /* newest first: replay oldest first */
		if (ev[i].id > o->last_event_id)
			o->last_event_id = ev[i].id;
		handle_event(o, &ev[i]);
	}
	dv_store_event_array_free(ev, n);
}

static int by_id(const void *a, const void *b)
{
	const struct dv_store_event *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* At start: the newest certificate expiry per domain and backup result per
 * app are state, not news: take them from the events kept in the store. */
static void replay_state_events(struct dv_obs *o)
{
	static const char *const kinds[] = {"certificate.expiry", "backup.failed", "backup.succeeded"};
	struct dv_store_event *all = NULL;
	size_t nall = 0;
	for (size_t k = 0; k < DV_ARRAY_LEN(kinds); k++) {
		struct dv_store_event_filter f = {.kind = kinds[k], .limit = 1000};
		struct dv_store_event *ev = NULL;
		size_t n = 0;
		char *err = NULL;
		if (dv_store_event_list(o->cfg.store, &f, &ev, &n, &err) != 0) {
			free(err);
			continue;
		}
		all = dv_xrealloc(all, (nall + n + 1) * sizeof *all);
		if (n)
			memcpy(all + nall, ev, n * sizeof *ev);
		nall += n;
		free(ev); /* the strings moved to `all` */
	}
	if (nall)
		qsort(all, nall, sizeof *all, by_id); /* oldest first: the newest wins */
	for (size_t i = 0; i < nall; i++)
		handle_event(o, &all[i]);
	dv_store_event_array_free(all, nall);
}

static void events_timer(struct dv_loop *loop, struct dv_timer *t)
{
	struct dv_obs *o = dv_container_of(t, struct dv_obs, events);
	poll_events(o);
	dv_timer_set(loop, t, dv_loop_now(loop) + EVENTS_POLL_MS);
}

/* ---- the tick ---- */

/* Reads the engine's replicas into o->svcs (seen = still deployed). */
static void read_replicas(struct dv_obs *o, double dt)
{
	for (size_t i = 0; i < o->nsvcs; i++)
		o->svcs[i].seen = false;
	o->nreps = 0;
	struct dv_strbuf out;
	dv_strbuf_init(&out);
	char *err = NULL;
	if (dv_engine_ps(o->cfg.engine, NULL, true, &out, &err) != 0) {
		free(err);
		dv_strbuf_dispose(&out);
		return;
	}
	struct dv_jv *root = dv_jv_parse(out.data ? out.data : "", out.len, NULL);
	dv_strbuf_dispose(&out);
	const struct dv_jv *apps = dv_jv_get(root, "apps");
	for (size_t a = 0; apps && apps->type == DV_JV_ARRAY && a < apps->len; a++) {
		const struct dv_jv *app = &apps->items[a];
		const struct dv_jv *svcs = dv_jv_get(app, "services");
		for (size_t s = 0; svcs && svcs->type == DV_JV_ARRAY && s < svcs->len; s++) {
			const struct dv_jv *sv = &svcs->items[s];
			char name[160];
			snprintf(name, sizeof name, "%s/%s", dv_jv_str(app, "name", "?"), dv_jv_str(sv, "name", "?"));
			struct svc *st = svc_get(o, name);
			st->seen = true;
			st->stopped = dv_jv_bool(sv, "stopped", false);
			st->replicas = st->healthy = 0;
			st->restarts = st->rss = 0;
			uint64_t cpu = 0;
			const struct dv_jv *reps = dv_jv_get(sv, "replicas");
			for (size_t r = 0; reps && reps->type == DV_JV_ARRAY && r < reps->len; r++) {
				const struct dv_jv *rp = &reps->items[r];
				o->reps = dv_xrealloc(o->reps, (o->nreps + 1) * sizeof *o->reps);
				struct rep *rr = &o->reps[o->nreps++];
				memset(rr, 0, sizeof *rr);
				snprintf(rr->svc, sizeof rr->svc, "%s", name);
				rr->index = (unsigned)dv_jv_int(rp, "index", 0);
				snprintf(rr->role, sizeof rr->role, "%s", dv_jv_str(rp, "role", "?"));
				snprintf(rr->state, sizeof rr->state, "%s", dv_jv_str(rp, "state", "?"));
				rr->restarts = (uint64_t)dv_jv_int(rp, "restarts", 0);
				rr->rss = (uint64_t)dv_jv_int(rp, "rss_bytes", 0);
				rr->cpu_ms = (uint64_t)dv_jv_int(rp, "cpu_ms", 0);
				if (strcmp(dv_jv_str(rp, "role", ""), "old") == 0)
					continue; /* draining: not the service any more */
				st->replicas++;
				if (strcmp(dv_jv_str(rp, "state", ""), "healthy") == 0 &&
				    strcmp(dv_jv_str(rp, "role", ""), "active") == 0)
					st->healthy++;
				st->restarts += (uint64_t)dv_jv_int(rp, "restarts", 0);
				st->rss += (uint64_t)dv_jv_int(rp, "rss_bytes", 0);
				cpu += (uint64_t)dv_jv_int(rp, "cpu_ms", 0);
			}
			/* CPU time of replicas that restarted starts again at 0: clamp. */
			st->cpu_pct = st->have_cpu && dt > 0 && cpu >= st->cpu_ms ? (double)(cpu - st->cpu_ms) / 10.0 / dt : 0;
			st->cpu_ms = cpu;
			st->have_cpu = true;
			st->up = st->healthy > 0 ? 1 : 0;
		}
	}
	dv_jv_free(root);
	/* Forget services that are gone. */
	size_t k = 0;
	for (size_t i = 0; i < o->nsvcs; i++)
		if (o->svcs[i].seen)
			o->svcs[k++] = o->svcs[i];
	o->nsvcs = k;
}

static void observe_cert(const char *name, const char *labels, double value, void *arg)
{
	struct dv_obs *o = arg;
	const char *q = strchr(labels, '"');
	const char *e = q ? strchr(q + 1, '"') : NULL;
	char domain[160];
	snprintf(domain, sizeof domain, "%.*s", e ? (int)(e - q - 1) : 0, e ? q + 1 : "");
	double days = (value - (double)time(NULL)) / 86400.0;
	dv_alerts_observe(o->alerts, "cert.days_left", domain, days);
}

static void tick(struct dv_obs *o)
{
	uint64_t now_ms = dv_now_ms();
	int64_t wall = (int64_t)time(NULL);
	if (wall <= o->last_tick_wall)
		wall = o->last_tick_wall + 1; /* history points are keyed by second */
	double dt = o->have_prev ? (double)(now_ms - o->prev_ms) / 1000.0 : (double)o->cfg.interval_ms / 1000.0;
	if (dt <= 0)
		dt = 0.001;
	struct dv_metrics_snapshot snap;
	dv_metrics_snapshot_take(&snap);
	read_replicas(o, dt);
	dv_host_stats_read(&o->host, &o->last_host);

	for (size_t i = 0; i < o->nsvcs; i++) {
		struct svc *s = &o->svcs[i];
		struct dv_metrics_totals d, zero;
		memset(&d, 0, sizeof d);
		memset(&zero, 0, sizeof zero);
		const struct dv_metrics_totals *now = snap_slot(&snap, s->name);
		const struct dv_metrics_totals *before = o->have_prev ? snap_slot(&o->prev, s->name) : NULL;
		if (now)
			dv_metrics_totals_sub(&d, now, before ? before : &zero); /* counters start at 0 */
		s->requests = dv_metrics_totals_requests(&d);
		s->errors = d.requests[4];
		s->bytes_in = d.bytes_in;
		s->bytes_out = d.bytes_out;
		memcpy(s->hist, d.hist, sizeof s->hist);
		s->rps = (double)s->requests / dt;
		s->err_pct = s->requests ? 100.0 * (double)s->errors / (double)s->requests : 0;
		s->p50 = dv_metrics_quantile(d.hist, 0.50);
		s->p95 = dv_metrics_quantile(d.hist, 0.95);
		s->p99 = dv_metrics_quantile(d.hist, 0.99);
	}

	/* History: one transaction per tick. */
	dv_history_begin(o->hist);
	for (size_t i = 0; i < o->nsvcs; i++) {
		const struct svc *s = &o->svcs[i];
		struct dv_series_point p = {
			.ts = wall, .seconds = dt, .requests = s->requests, .errors = s->errors, .bytes_in = s->bytes_in,
			.bytes_out = s->bytes_out, .p50 = s->p50, .p95 = s->p95, .p99 = s->p99, .cpu_pct = s->cpu_pct,
			.mem_bytes = s->rss, .up = s->up,
		};
		memcpy(p.hist, s->hist, sizeof p.hist);
		dv_history_add(o->hist, s->name, &p);
	}
	const struct dv_host_sample *h = &o->last_host;
	struct dv_series_point hp = {
		.ts = wall, .seconds = dt, .cpu_pct = h->cpu_pct, .mem_bytes = h->mem_total - h->mem_available,
		.up = h->disk_free_pct,
	};
	if (h->has_net) {
		hp.bytes_in = o->net_rx_prev && h->net_rx_bytes >= o->net_rx_prev ? h->net_rx_bytes - o->net_rx_prev : 0;
		hp.bytes_out = o->net_tx_prev && h->net_tx_bytes >= o->net_tx_prev ? h->net_tx_bytes - o->net_tx_prev : 0;
		o->net_rx_prev = h->net_rx_bytes;
		o->net_tx_prev = h->net_tx_bytes;
	}
	dv_history_add(o->hist, "host", &hp);
	dv_history_commit(o->hist);
	if (++o->ticks % DV_HISTORY_ROLLUP == 0) {
		dv_history_prune(o->hist, wall);
		if (o->cfg.logs_max_age_s >= 0) {
			char *dir = dv_xasprintf("%s/logs", o->state_dir);
			struct dv_obs_logs_result lr;
			dv_obs_prune_logs(dir, wall, o->cfg.logs_max_age_s, o->cfg.logs_max_bytes, &lr);
			free(dir);
		}
	}

	/* Alerts. */
	dv_alerts_begin(o->alerts, now_ms, wall);
	if (h->has_cpu)
		dv_alerts_observe(o->alerts, "host.cpu_percent", "host", h->cpu_pct);
	if (h->has_mem)
		dv_alerts_observe(o->alerts, "host.memory_used_percent", "host", h->mem_used_pct);
	if (h->has_disk)
		dv_alerts_observe(o->alerts, "host.disk_free_percent", "host", h->disk_free_pct);
	if (h->has_load)
		dv_alerts_observe(o->alerts, "host.load1", "host", h->load1);
	for (size_t i = 0; i < o->nsvcs; i++) {
		const struct svc *s = &o->svcs[i];
		if (s->stopped)
			continue; /* stopped by the user: not down, not observed */
		dv_alerts_observe(o->alerts, "service.down", s->name, s->healthy == 0 ? 1 : 0);
		dv_alerts_observe(o->alerts, "service.requests_per_second", s->name, s->rps);
		dv_alerts_observe(o->alerts, "service.error_rate_percent", s->name, s->err_pct);
		dv_alerts_observe(o->alerts, "service.p50_seconds", s->name, s->p50);
		dv_alerts_observe(o->alerts, "service.p95_seconds", s->name, s->p95);
		dv_alerts_observe(o->alerts, "service.p99_seconds", s->name, s->p99);
		dv_alerts_observe(o->alerts, "service.cpu_percent", s->name, s->cpu_pct);
		dv_alerts_observe(o->alerts, "service.memory_bytes", s->name, (double)s->rss);
		dv_alerts_observe(o->alerts, "service.restarts", s->name, (double)s->restarts);
	}
	dv_metrics_gauge_each("davit_certificate_expiry_timestamp_seconds", observe_cert, o);
	for (size_t i = 0; i < o->napps; i++)
		if (o->apps[i].backup_known)
			dv_alerts_observe(o->alerts, "backup.failed", o->apps[i].app[0] ? o->apps[i].app : "davit",
			                  o->apps[i].backup_failed ? 1 : 0);
	dv_alerts_end(o->alerts);
	size_t nt = 0;
	struct dv_alert_transition *tr = dv_alerts_take(o->alerts, &nt);
	for (size_t i = 0; i < nt; i++) {
		if (tr[i].firing)
			o->alerts_fired++;
		else
			o->alerts_resolved++;
		notify_alert(o, &tr[i]);
	}
	free(tr);
	if (nt) {
		/* Firing alerts survive a restart: no second notification for them. */
		struct dv_strbuf fj;
		dv_strbuf_init(&fj);
		dv_alerts_firing_json(o->alerts, &fj);
		dv_history_config_put(o->hist, "alerts:firing", fj.data);
		dv_strbuf_dispose(&fj);
	}

	if (o->have_prev)
		dv_metrics_snapshot_free(&o->prev);
	o->prev = snap;
	o->have_prev = true;
	o->prev_ms = now_ms;
	o->last_tick_wall = wall;
}

static void tick_timer(struct dv_loop *loop, struct dv_timer *t)
{
	struct dv_obs *o = dv_container_of(t, struct dv_obs, tick);
	poll_events(o); /* deploy events before the numbers of the same moment */
	tick(o);
	dv_timer_set(loop, t, dv_loop_now(loop) + o->cfg.interval_ms);
}

/* ---- /metrics ---- */

static void label_pair(struct dv_strbuf *l, const char *name)
{
	const char *slash = strchr(name, '/');
	dv_strbuf_puts(l, "app=\"");
	if (slash) {
		struct dv_strbuf tmp;
		dv_strbuf_init(&tmp);
		dv_strbuf_append(&tmp, name, (size_t)(slash - name));
		dv_metrics_prom_label_value(l, tmp.data);
		dv_strbuf_dispose(&tmp);
	}
	dv_strbuf_puts(l, "\",service=\"");
	dv_metrics_prom_label_value(l, slash ? slash + 1 : name);
	dv_strbuf_puts(l, "\"");
}

static void prom_services(struct dv_obs *o, struct dv_strbuf *out)
{
	struct dv_strbuf l;
	dv_strbuf_init(&l);
	struct {
		const char *name, *type, *help;
	} fam[] = {
		{"davit_service_up", "gauge", "1 while the service has a healthy replica."},
		{"davit_service_replicas", "gauge", "Replicas of the serving release."},
		{"davit_service_replicas_healthy", "gauge", "Healthy replicas receiving traffic."},
		{"davit_service_restarts_total", "counter", "Restarts of the current replicas."},
		{"davit_service_cpu_seconds_total", "counter", "CPU time of the current replicas."},
		{"davit_service_memory_rss_bytes", "gauge", "Resident memory of the replicas."},
	};
	for (size_t f = 0; f < DV_ARRAY_LEN(fam); f++) {
		dv_metrics_prom_family(out, fam[f].name, fam[f].type, fam[f].help);
		for (size_t i = 0; i < o->nsvcs; i++) {
			const struct svc *s = &o->svcs[i];
			double v = f == 0 ? s->up : f == 1 ? s->replicas : f == 2 ? s->healthy : f == 3 ? (double)s->restarts
			         : f == 4 ? (double)s->cpu_ms / 1000.0 : (double)s->rss;
			dv_strbuf_reset(&l);
			label_pair(&l, s->name);
			dv_metrics_prom_sample(out, fam[f].name, l.data, v);
		}
	}
	dv_strbuf_dispose(&l);
}

static void prom_replicas(struct dv_obs *o, struct dv_strbuf *out)
{
	static const char *const states[] = {"starting", "healthy", "unhealthy", "restarting", "stopping", "exited"};
	struct dv_strbuf l;
	dv_strbuf_init(&l);
	struct {
		const char *name, *type, *help;
	} fam[] = {
		{"davit_replica_state", "gauge", "1 for the replica's current state (healthy receives traffic)."},
		{"davit_replica_restarts_total", "counter", "Restarts of the replica."},
		{"davit_replica_cpu_seconds_total", "counter", "CPU time of the replica's processes."},
		{"davit_replica_memory_rss_bytes", "gauge", "Resident memory of the replica's processes."},
	};
	for (size_t f = 0; f < DV_ARRAY_LEN(fam); f++) {
		dv_metrics_prom_family(out, fam[f].name, fam[f].type, fam[f].help);
		for (size_t i = 0; i < o->nreps; i++) {
			const struct rep *r = &o->reps[i];
			dv_strbuf_reset(&l);
			label_pair(&l, r->svc);
			dv_strbuf_printf(&l, ",replica=\"%u\",role=\"%s\"", r->index, r->role);
			if (f == 0) {
				size_t base = l.len;
				for (size_t k = 0; k < DV_ARRAY_LEN(states); k++) {
					l.len = base;
					l.data[base] = '\0';
					dv_strbuf_printf(&l, ",state=\"%s\"", states[k]);
					dv_metrics_prom_sample(out, fam[f].name, l.data, strcmp(r->state, states[k]) == 0);
				}
				continue;
			}
			double v = f == 1 ? (double)r->restarts : f == 2 ? (double)r->cpu_ms / 1000.0 : (double)r->rss;
			dv_metrics_prom_sample(out, fam[f].name, l.data, v);
		}
	}
	dv_strbuf_dispose(&l);
}

static void prom_host(struct dv_obs *o, struct dv_strbuf *out)
{
	const struct dv_host_sample *h = &o->last_host;
	if (h->has_cpu) {
		dv_metrics_prom_family(out, "davit_host_cpu_usage_percent", "gauge", "Busy share of all CPUs.");
		dv_metrics_prom_sample(out, "davit_host_cpu_usage_percent", NULL, h->cpu_pct);
	}
	if (h->has_mem) {
		dv_metrics_prom_family(out, "davit_host_memory_total_bytes", "gauge", "MemTotal.");
		dv_metrics_prom_sample(out, "davit_host_memory_total_bytes", NULL, (double)h->mem_total);
		dv_metrics_prom_family(out, "davit_host_memory_available_bytes", "gauge", "MemAvailable.");
		dv_metrics_prom_sample(out, "davit_host_memory_available_bytes", NULL, (double)h->mem_available);
	}
	if (h->has_disk) {
		dv_metrics_prom_family(out, "davit_host_disk_total_bytes", "gauge", "Size of the state directory's file system.");
		dv_metrics_prom_sample(out, "davit_host_disk_total_bytes", NULL, (double)h->disk_total);
		dv_metrics_prom_family(out, "davit_host_disk_available_bytes", "gauge", "Space available to davit there.");
		dv_metrics_prom_sample(out, "davit_host_disk_available_bytes", NULL, (double)h->disk_available);
	}
	if (h->has_load) {
		dv_metrics_prom_family(out, "davit_host_load", "gauge", "Load average.");
		dv_metrics_prom_sample(out, "davit_host_load", "window=\"1m\"", h->load1);
		dv_metrics_prom_sample(out, "davit_host_load", "window=\"5m\"", h->load5);
		dv_metrics_prom_sample(out, "davit_host_load", "window=\"15m\"", h->load15);
	}
	if (h->has_net) {
		dv_metrics_prom_family(out, "davit_host_network_receive_bytes_total", "counter", "All interfaces but lo.");
		dv_metrics_prom_sample(out, "davit_host_network_receive_bytes_total", NULL, (double)h->net_rx_bytes);
		dv_metrics_prom_family(out, "davit_host_network_transmit_bytes_total", "counter", "All interfaces but lo.");
		dv_metrics_prom_sample(out, "davit_host_network_transmit_bytes_total", NULL, (double)h->net_tx_bytes);
	}
}

static void prom_apps(struct dv_obs *o, struct dv_strbuf *out)
{
	struct dv_strbuf l;
	dv_strbuf_init(&l);
	dv_metrics_prom_family(out, "davit_deploys_total", "counter", "Deploys that ended, by result.");
	for (size_t i = 0; i < o->napps; i++) {
		for (int r = 0; r < 2; r++) {
			dv_strbuf_reset(&l);
			dv_strbuf_puts(&l, "app=\"");
			dv_metrics_prom_label_value(&l, o->apps[i].app);
			dv_strbuf_printf(&l, "\",result=\"%s\"", r ? "failed" : "succeeded");
			dv_metrics_prom_sample(out, "davit_deploys_total", l.data,
			                       (double)(r ? o->apps[i].deploys_failed : o->apps[i].deploys_ok));
		}
	}
	dv_metrics_prom_family(out, "davit_rollbacks_total", "counter",
	                       "Rollbacks: manual (davit rollback) or automatic (a failed deploy switched back).");
	for (size_t i = 0; i < o->napps; i++) {
		for (int r = 0; r < 2; r++) {
			dv_strbuf_reset(&l);
			dv_strbuf_puts(&l, "app=\"");
			dv_metrics_prom_label_value(&l, o->apps[i].app);
			dv_strbuf_printf(&l, "\",kind=\"%s\"", r ? "automatic" : "manual");
			dv_metrics_prom_sample(out, "davit_rollbacks_total", l.data,
			                       (double)(r ? o->apps[i].rollbacks_auto : o->apps[i].rollbacks_manual));
		}
	}
	dv_strbuf_dispose(&l);
	dv_metrics_prom_family(out, "davit_alerts_firing", "gauge", "Alerts firing now.");
	dv_metrics_prom_sample(out, "davit_alerts_firing", NULL, (double)dv_alerts_firing(o->alerts));
	dv_metrics_prom_family(out, "davit_alert_transitions_total", "counter", "Alerts that fired or resolved.");
	dv_metrics_prom_sample(out, "davit_alert_transitions_total", "state=\"firing\"", (double)o->alerts_fired);
	dv_metrics_prom_sample(out, "davit_alert_transitions_total", "state=\"resolved\"", (double)o->alerts_resolved);
	struct dv_notify_stats ns;
	dv_notify_stats(o->notify, &ns);
	dv_metrics_prom_family(out, "davit_notifications_total", "counter", "Notification deliveries, by result.");
	dv_metrics_prom_sample(out, "davit_notifications_total", "result=\"sent\"", (double)ns.sent);
	dv_metrics_prom_sample(out, "davit_notifications_total", "result=\"failed\"", (double)ns.failed);
	dv_metrics_prom_sample(out, "davit_notifications_total", "result=\"dropped\"", (double)ns.dropped);
}

static void metrics_http(void *arg, const char *method, const char *path, const char *auth, int *status,
                         const char **ctype, struct dv_strbuf *body)
{
	struct dv_obs *o = arg;
	if (strcmp(path, "/metrics") != 0) {
		*status = 404;
		dv_strbuf_puts(body, "davit serves /metrics here\n");
		return;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		*status = 405;
		dv_strbuf_puts(body, "GET /metrics\n");
		return;
	}
	if (o->token && !dv_obs_http_bearer_ok(o->token, auth)) {
		*status = 401;
		dv_strbuf_puts(body, "this /metrics needs 'Authorization: Bearer TOKEN' (davit daemon --metrics-token)\n");
		return;
	}
	struct dv_metrics_snapshot snap;
	dv_metrics_snapshot_take(&snap);
	dv_metrics_prom_requests(body, &snap, "service");
	dv_metrics_snapshot_free(&snap);
	prom_services(o, body);
	prom_replicas(o, body);
	prom_host(o, body);
	prom_apps(o, body);
	dv_metrics_prom_gauges(body);
	*status = 200;
	*ctype = "text/plain; version=0.0.4; charset=utf-8";
}

/* ---- control API ---- */

static void respond_buf(struct dv_api_request *req, bool json, struct dv_strbuf *b)
{
	dv_api_respond(req, 200, json ? "application/json" : "text/plain; charset=utf-8", b->data ? b->data : "", b->len);
}

static void fmt_bytes(char *buf, size_t size, double v)
{
	const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, u ? "%.1f%s" : "%.0f%s", v, units[u]);
}

static void api_top(struct dv_obs *o, struct dv_api_request *req, bool json, const char *app)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	const struct dv_host_sample *h = &o->last_host;
	struct dv_json j;
	dv_json_init(&j, &b);
	if (json) {
		dv_json_object_begin(&j);
		dv_json_key(&j, "at");
		dv_json_int(&j, o->last_tick_wall);
		dv_json_key(&j, "interval_s");
		dv_json_double(&j, (double)o->cfg.interval_ms / 1000.0);
		dv_json_key(&j, "host");
		dv_json_object_begin(&j);
		dv_json_key(&j, "cpu_percent");
		dv_json_double(&j, h->cpu_pct);
		dv_json_key(&j, "memory_used_percent");
		dv_json_double(&j, h->mem_used_pct);
		dv_json_key(&j, "disk_free_percent");
		dv_json_double(&j, h->disk_free_pct);
		dv_json_key(&j, "load1");
		dv_json_double(&j, h->load1);
		dv_json_object_end(&j);
		dv_json_key(&j, "alerts_firing");
		dv_json_uint(&j, dv_alerts_firing(o->alerts));
		dv_json_key(&j, "services");
		dv_json_array_begin(&j);
	} else {
		dv_strbuf_printf(&b, "host: cpu %.1f%%  memory %.1f%%  disk free %.1f%%  load %.2f  alerts firing %zu\n\n",
		                 h->cpu_pct, h->mem_used_pct, h->disk_free_pct, h->load1, dv_alerts_firing(o->alerts));
		dv_strbuf_printf(&b, "%-28s %9s %9s %8s %7s %10s %8s\n", "SERVICE", "REQ/S", "P95", "ERRORS", "CPU", "MEMORY",
		                 "HEALTHY");
	}
	size_t alen = app ? strlen(app) : 0;
	for (size_t i = 0; i < o->nsvcs; i++) {
		const struct svc *s = &o->svcs[i];
		if (app && *app && (strncmp(s->name, app, alen) != 0 || s->name[alen] != '/'))
			continue;
		if (json) {
			dv_json_object_begin(&j);
			dv_json_key(&j, "service");
			dv_json_string(&j, s->name);
			dv_json_key(&j, "requests_per_second");
			dv_json_double(&j, s->rps);
			dv_json_key(&j, "p50_ms");
			dv_json_double(&j, s->p50 * 1000);
			dv_json_key(&j, "p95_ms");
			dv_json_double(&j, s->p95 * 1000);
			dv_json_key(&j, "p99_ms");
			dv_json_double(&j, s->p99 * 1000);
			dv_json_key(&j, "error_rate_percent");
			dv_json_double(&j, s->err_pct);
			dv_json_key(&j, "cpu_percent");
			dv_json_double(&j, s->cpu_pct);
			dv_json_key(&j, "memory_bytes");
			dv_json_uint(&j, s->rss);
			dv_json_key(&j, "replicas");
			dv_json_uint(&j, s->replicas);
			dv_json_key(&j, "healthy");
			dv_json_uint(&j, s->healthy);
			dv_json_key(&j, "stopped");
			dv_json_bool(&j, s->stopped);
			dv_json_object_end(&j);
		} else {
			char p95[32], mem[32], hl[32];
			snprintf(p95, sizeof p95, s->requests ? "%.1fms" : "-", s->p95 * 1000);
			fmt_bytes(mem, sizeof mem, (double)s->rss);
			snprintf(hl, sizeof hl, s->stopped ? "stopped" : "%u/%u", s->healthy, s->replicas);
			dv_strbuf_printf(&b, "%-28s %9.1f %9s %7.2f%% %6.1f%% %10s %8s\n", s->name, s->rps, p95, s->err_pct,
			                 s->cpu_pct, mem, hl);
		}
	}
	if (json) {
		dv_json_array_end(&j);
		dv_json_object_end(&j);
		dv_strbuf_puts(&b, "\n");
	}
	else if (!o->nsvcs)
		dv_strbuf_puts(&b, "(no services deployed)\n");
	respond_buf(req, json, &b);
	dv_strbuf_dispose(&b);
}

static int resolve_series(struct dv_obs *o, const char *app, const char *service, char *out, size_t size, char **err)
{
	if (strcmp(service, "host") == 0 || strchr(service, '/')) {
		snprintf(out, size, "%s", service);
		return 0;
	}
	char **names = NULL;
	size_t n = 0, found = 0;
	dv_history_series(o->hist, &names, &n);
	struct dv_strbuf cands;
	dv_strbuf_init(&cands);
	for (size_t i = 0; i < n; i++) {
		const char *slash = strchr(names[i], '/');
		bool app_ok = !app || !*app || (slash && strncmp(names[i], app, (size_t)(slash - names[i])) == 0 &&
		                                strlen(app) == (size_t)(slash - names[i]));
		if (slash && strcmp(slash + 1, service) == 0 && app_ok) {
			if (!found++)
				snprintf(out, size, "%s", names[i]);
			dv_strbuf_printf(&cands, "%s%s", cands.len ? ", " : "", names[i]);
		}
		free(names[i]);
	}
	free(names);
	int rc = 0;
	if (found == 0) {
		*err = dv_xasprintf("no metrics recorded for service '%s' (see 'davit ps'; 'host' for the machine)", service);
		rc = -1;
	} else if (found > 1) {
		*err = dv_xasprintf("service '%s' is in several apps (%s): give --app or APP/SERVICE", service, cands.data);
		rc = -1;
	}
	dv_strbuf_dispose(&cands);
	return rc;
}

static int parse_time_param(const char *v, int64_t now, int64_t *out)
{
	if (!v || !*v)
		return 1;
	uint64_t ms;
	/* Absolute unix seconds (10 digits), else a duration ago. */
	if (strlen(v) >= 9 && dv_parse_uint(v, INT64_MAX, &ms) == 0) {
		*out = (int64_t)ms;
		return 0;
	}
	if (dv_parse_duration_ms(v, &ms) != 0)
		return -1;
	*out = now - (int64_t)(ms / 1000);
	return 0;
}

static void api_metrics(struct dv_obs *o, struct dv_api_request *req, bool json, const char *app)
{
	char *service = dv_api_query(req, "service"), *since_s = dv_api_query(req, "since"),
	     *until_s = dv_api_query(req, "until"), *res = dv_api_query(req, "resolution");
	int64_t now = (int64_t)time(NULL), since = now - 3600, until = now;
	char series[200], *err = NULL;
	int tier = 0;
	if (res && strcmp(res, "10s") == 0)
		tier = 1;
	else if (res && strcmp(res, "1m") == 0)
		tier = 2;
	if (!service || !*service) {
		dv_api_respond_error(req, 400, "metrics needs a service (or 'host')");
	} else if (parse_time_param(since_s, now, &since) < 0 || parse_time_param(until_s, now, &until) < 0) {
		dv_api_respond_error(req, 400, "--since/--until take a duration ago (30m, 2h, 7d as 168h) or unix seconds");
	} else if (res && *res && tier == 0) {
		dv_api_respond_error(req, 400, "--resolution is 10s or 1m");
	} else if (resolve_series(o, app, service, series, sizeof series, &err) != 0) {
		dv_api_respond_error(req, 404, err);
	} else {
		struct dv_series_point *pts = NULL;
		size_t n = 0;
		int used = 0;
		if (dv_history_query(o->hist, series, since, until, tier, &pts, &n, &used, &err) != 0) {
			dv_api_respond_error(req, 500, err);
		} else {
			bool host = strcmp(series, "host") == 0;
			struct dv_strbuf b;
			dv_strbuf_init(&b);
			struct dv_json j;
			dv_json_init(&j, &b);
			uint64_t treq = 0, terr = 0;
			double worst95 = 0, secs = 0;
			for (size_t i = 0; i < n; i++) {
				treq += pts[i].requests;
				terr += pts[i].errors;
				secs += pts[i].seconds;
				if (pts[i].p95 > worst95)
					worst95 = pts[i].p95;
			}
			if (json) {
				dv_json_object_begin(&j);
				dv_json_key(&j, "series");
				dv_json_string(&j, series);
				dv_json_key(&j, "resolution_s");
				dv_json_double(&j, (double)o->cfg.interval_ms / 1000.0 * (used == 2 ? DV_HISTORY_ROLLUP : 1));
				dv_json_key(&j, "since");
				dv_json_int(&j, since);
				dv_json_key(&j, "until");
				dv_json_int(&j, until);
				dv_json_key(&j, "requests");
				dv_json_uint(&j, treq);
				dv_json_key(&j, "errors");
				dv_json_uint(&j, terr);
				dv_json_key(&j, "points");
				dv_json_array_begin(&j);
				for (size_t i = 0; i < n; i++) {
					const struct dv_series_point *p = &pts[i];
					dv_json_object_begin(&j);
					dv_json_key(&j, "ts");
					dv_json_int(&j, p->ts);
					dv_json_key(&j, "seconds");
					dv_json_double(&j, p->seconds);
					if (!host) {
						dv_json_key(&j, "requests");
						dv_json_uint(&j, p->requests);
						dv_json_key(&j, "errors");
						dv_json_uint(&j, p->errors);
						dv_json_key(&j, "p50_ms");
						dv_json_double(&j, p->p50 * 1000);
						dv_json_key(&j, "p95_ms");
						dv_json_double(&j, p->p95 * 1000);
						dv_json_key(&j, "p99_ms");
						dv_json_double(&j, p->p99 * 1000);
						dv_json_key(&j, "up");
						dv_json_double(&j, p->up);
					} else {
						dv_json_key(&j, "disk_free_percent");
						dv_json_double(&j, p->up);
					}
					dv_json_key(&j, "bytes_in");
					dv_json_uint(&j, p->bytes_in);
					dv_json_key(&j, "bytes_out");
					dv_json_uint(&j, p->bytes_out);
					dv_json_key(&j, "cpu_percent");
					dv_json_double(&j, p->cpu_pct);
					dv_json_key(&j, "memory_bytes");
					dv_json_uint(&j, p->mem_bytes);
					dv_json_object_end(&j);
				}
				dv_json_array_end(&j);
				dv_json_object_end(&j);
				dv_strbuf_puts(&b, "\n");
			} else {
				dv_strbuf_printf(&b, "%s: %zu points at %gs resolution; %llu requests (%.1f/s), %llu errors, worst p95 "
				                     "%.1fms\n",
				                 series, n, (double)o->cfg.interval_ms / 1000.0 * (used == 2 ? DV_HISTORY_ROLLUP : 1),
				                 (unsigned long long)treq, secs > 0 ? (double)treq / secs : 0,
				                 (unsigned long long)terr, worst95 * 1000);
				if (host)
					dv_strbuf_printf(&b, "%-20s %7s %10s %10s %10s\n", "TIME (UTC)", "CPU", "MEMORY", "DISK FREE",
					                 "NET IN");
				else
					dv_strbuf_printf(&b, "%-20s %9s %8s %9s %9s %7s %10s %4s\n", "TIME (UTC)", "REQ/S", "ERRORS",
					                 "P50", "P95", "CPU", "MEMORY", "UP");
				for (size_t i = 0; i < n; i++) {
					const struct dv_series_point *p = &pts[i];
					char ts[32], mem[32];
					time_t t = (time_t)p->ts;
					struct tm tm;
					gmtime_r(&t, &tm);
					strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
					fmt_bytes(mem, sizeof mem, (double)p->mem_bytes);
					if (host) {
						char net[32];
						fmt_bytes(net, sizeof net, (double)p->bytes_in);
						dv_strbuf_printf(&b, "%-20s %6.1f%% %10s %9.1f%% %10s\n", ts, p->cpu_pct, mem, p->up, net);
					} else {
						dv_strbuf_printf(&b, "%-20s %9.1f %8llu %7.1fms %7.1fms %6.1f%% %10s %4.0f%%\n", ts,
						                 p->seconds > 0 ? (double)p->requests / p->seconds : 0,
						                 (unsigned long long)p->errors, p->p50 * 1000, p->p95 * 1000, p->cpu_pct, mem,
						                 p->up * 100);
					}
				}
			}
			respond_buf(req, json, &b);
			dv_strbuf_dispose(&b);
		}
		free(pts);
	}
	free(err);
	free(service);
	free(since_s);
	free(until_s);
	free(res);
}

static void api_event(struct dv_obs *o, struct dv_api_request *req, bool json, const char *app)
{
	char *kind = dv_api_query(req, "kind"), *message = dv_api_query(req, "message");
	size_t len = 0;
	const char *body = dv_api_body(req, &len);
	char *data = len ? dv_xstrndup(body, len) : NULL;
	char *err = NULL;
	int64_t id = 0;
	if (!kind || !*kind) {
		dv_api_respond_error(req, 400, "event needs a kind, e.g. backup.failed");
	} else if (dv_store_event_add(o->cfg.store, app && *app ? app : NULL, kind, message ? message : "", data, &id,
	                              &err) != 0) {
		dv_api_respond_error(req, 400, err ? err : "bad event");
	} else {
		poll_events(o); /* count it now, not at the next poll */
		char out[300];
		int n = json ? snprintf(out, sizeof out, "{\"id\":%lld}\n", (long long)id)
		             : snprintf(out, sizeof out, "recorded event %lld (%s)\n", (long long)id, kind);
		dv_api_respond(req, 200, json ? "application/json" : "text/plain; charset=utf-8", out, (size_t)n);
	}
	free(err);
	free(data);
	free(kind);
	free(message);
}

bool dv_obs_handle_api(struct dv_obs *o, struct dv_api_request *req)
{
	const char *method = dv_api_method(req), *path = dv_api_path(req);
	bool get = strcmp(method, "GET") == 0;
	if (strcmp(path, "/v1/top") != 0 && strcmp(path, "/v1/metrics") != 0 && strcmp(path, "/v1/alerts") != 0 &&
	    strcmp(path, "/v1/events") != 0)
		return false;
	char *format = dv_api_query(req, "format"), *app = dv_api_query(req, "app");
	bool json = !(format && strcmp(format, "text") == 0);
	if (get && strcmp(path, "/v1/top") == 0) {
		api_top(o, req, json, app);
	} else if (get && strcmp(path, "/v1/metrics") == 0) {
		api_metrics(o, req, json, app);
	} else if (get && strcmp(path, "/v1/alerts") == 0) {
		struct dv_strbuf b;
		dv_strbuf_init(&b);
		dv_alerts_report(o->alerts, json, 3600, &b);
		respond_buf(req, json, &b);
		dv_strbuf_dispose(&b);
	} else if (strcmp(method, "POST") == 0 && strcmp(path, "/v1/events") == 0) {
		api_event(o, req, json, app);
	} else {
		dv_api_respond_error(req, 405, "method not allowed");
	}
	free(format);
	free(app);
	return true;
}

/* ---- lifecycle ---- */

struct dv_obs *dv_obs_new(const struct dv_obs_config *cfg, char **err)
{
	struct dv_obs *o = dv_xcalloc(1, sizeof *o);
	o->cfg = *cfg;
	o->state_dir = dv_xstrdup(cfg->state_dir);
	o->cfg.state_dir = o->state_dir;
	o->token = cfg->metrics_token && *cfg->metrics_token ? dv_xstrdup(cfg->metrics_token) : NULL;
	o->cfg.metrics_token = o->token;
	o->disk_path = dv_xstrdup(cfg->disk_path && *cfg->disk_path ? cfg->disk_path : cfg->state_dir);
	o->host_root = dv_xstrdup(cfg->host_root ? cfg->host_root : "");
	if (o->cfg.logs_max_age_s == 0)
		o->cfg.logs_max_age_s = 7 * 86400;
	if (o->cfg.logs_max_bytes == 0)
		o->cfg.logs_max_bytes = 1ull << 30;
	if (o->cfg.interval_ms < 1000)
		o->cfg.interval_ms = o->cfg.interval_ms ? 1000 : 10000;
	o->flag_notifiers = dv_xcalloc(cfg->nnotifiers + 1, sizeof *o->flag_notifiers);
	if (cfg->nnotifiers)
		memcpy(o->flag_notifiers, cfg->notifiers, cfg->nnotifiers * sizeof *o->flag_notifiers);
	o->nflag_notifiers = cfg->nnotifiers;
	o->cfg.notifiers = NULL;
	dv_host_stats_init(&o->host, o->host_root, o->disk_path);
	dv_host_stats_read(&o->host, &o->last_host); /* primes the CPU rate */
	char *db = dv_xasprintf("%s/metrics.db", cfg->state_dir);
	int rc = dv_history_open(db, o->cfg.interval_ms, &o->hist, err);
	free(db);
	if (rc != 0) {
		dv_obs_free(o);
		return NULL;
	}
	o->alerts = dv_alerts_new();
	o->notify = dv_notify_new(&cfg->notify);
	dv_history_config_each(o->hist, load_stored, o);
	apply_config(o);
	replay_state_events(o);
	/* Count only what happens from now on. */
	struct dv_store_event_filter f = {.limit = 1};
	struct dv_store_event *ev = NULL;
	size_t n = 0;
	char *e2 = NULL;
	if (dv_store_event_list(cfg->store, &f, &ev, &n, &e2) == 0 && n)
		o->last_event_id = ev[0].id;
	dv_store_event_array_free(ev, n);
	free(e2);
	if (cfg->metrics_listen && *cfg->metrics_listen && strcmp(cfg->metrics_listen, "off") != 0) {
		struct dv_sockaddr sa;
		if (dv_sockaddr_parse(cfg->metrics_listen, false, &sa, err) != 0) {
			dv_obs_free(o);
			return NULL;
		}
		o->http = dv_obs_http_new(cfg->loop, &sa, metrics_http, o, err);
		if (!o->http) {
			dv_obs_free(o);
			return NULL;
		}
	}
	o->tick.cb = tick_timer;
	o->events.cb = events_timer;
	dv_timer_set(cfg->loop, &o->tick, dv_loop_now(cfg->loop) + o->cfg.interval_ms);
	dv_timer_set(cfg->loop, &o->events, dv_loop_now(cfg->loop) + EVENTS_POLL_MS);
	return o;
}

void dv_obs_free(struct dv_obs *o)
{
	if (!o)
		return;
	if (o->cfg.loop) {
		dv_timer_cancel(o->cfg.loop, &o->tick);
		dv_timer_cancel(o->cfg.loop, &o->events);
	}
	if (o->cfg.store && o->notify)
		poll_events(o); /* the last deploy's notification */
	dv_obs_http_free(o->http);
	dv_notify_free(o->notify, 3000);
	dv_alerts_free(o->alerts);
	dv_history_close(o->hist);
	if (o->have_prev)
		dv_metrics_snapshot_free(&o->prev);
	for (size_t i = 0; i < o->nfiles; i++) {
		free(o->files[i].key);
		free(o->files[i].app);
		free(o->files[i].text);
	}
	free(o->files);
	free(o->svcs);
	free(o->reps);
	free(o->apps);
	free(o->flag_notifiers);
	free(o->state_dir);
	free(o->token);
	free(o->disk_path);
	free(o->host_root);
	free(o);
}

/* metrics/alerts: rules and the alert state machine (see alerts.h). */
#include "metrics/alerts.h"

#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct alert {
	char rule[64], subject[160];
	enum dv_alert_state state;
	double value;
	uint64_t since_ms;       /* condition true since (pending/firing) */
	uint64_t clear_since_ms; /* firing: clear since (0: not clear) */
	int64_t fired_at, resolved_at, pending_at;
	bool seen;               /* observed in this round */
	unsigned missed;         /* rounds in a row without an observation */
	uint64_t last_seen_ms;
};

struct dv_alerts {
	struct dv_alert_rule *rules;
	size_t nrules;
	struct alert *alerts;
	size_t nalerts, cap;
	struct dv_alert_transition *out;
	size_t nout, outcap;
	uint64_t now_ms;
	int64_t wall;
};

struct dv_alerts *dv_alerts_new(void)
{
	return dv_xcalloc(1, sizeof(struct dv_alerts));
}

void dv_alerts_free(struct dv_alerts *a)
{
	if (!a)
		return;
	free(a->rules);
	free(a->alerts);
	free(a->out);
	free(a);
}

static const char *const severity_names[] = {"info", "warning", "critical"};

const char *dv_alert_severity_name(enum dv_alert_severity s)
{
	return s <= DV_ALERT_CRITICAL ? severity_names[s] : "?";
}

int dv_alert_severity_parse(const char *text, enum dv_alert_severity *out)
{
	for (int i = 0; i < 3; i++) {
		if (strcmp(text, severity_names[i]) == 0) {
			*out = (enum dv_alert_severity)i;
			return 0;
		}
	}
	return -1;
}

static void rule(struct dv_alert_rule *r, const char *name, const char *metric, bool below, double threshold,
                 double hysteresis, uint64_t for_ms, enum dv_alert_severity sev, const char *summary)
{
	memset(r, 0, sizeof *r);
	snprintf(r->name, sizeof r->name, "%s", name);
	snprintf(r->metric, sizeof r->metric, "%s", metric);
	snprintf(r->summary, sizeof r->summary, "%s", summary);
	r->below = below;
	r->threshold = threshold;
	r->hysteresis = hysteresis;
	r->for_ms = for_ms;
	r->resolve_ms = for_ms < 60000 ? for_ms : 60000;
	r->severity = sev;
	r->enabled = true;
}

size_t dv_alerts_default_rules(struct dv_alert_rule *rules, size_t cap, uint64_t for_override_ms)
{
	struct dv_alert_rule d[8];
	size_t n = 0;
	rule(&d[n++], "cpu_high", "host.cpu_percent", false, 80, 5, 5 * 60000, DV_ALERT_WARNING,
	     "host CPU above 80% for 5 minutes");
	rule(&d[n++], "memory_high", "host.memory_used_percent", false, 90, 2, 3 * 60000, DV_ALERT_CRITICAL,
	     "host memory above 90% for 3 minutes");
	rule(&d[n++], "disk_low", "host.disk_free_percent", true, 10, 1, 0, DV_ALERT_CRITICAL,
	     "less than 10% disk space free");
	rule(&d[n++], "service_down", "service.down", false, 0.5, 0, 2 * 60000, DV_ALERT_CRITICAL,
	     "no healthy replica for 2 minutes");
	rule(&d[n++], "error_rate_high", "service.error_rate_percent", false, 1, 0.5, 5 * 60000, DV_ALERT_WARNING,
	     "more than 1% of requests failed (5xx) for 5 minutes");
	rule(&d[n++], "latency_high", "service.p95_seconds", false, 2, 0.2, 5 * 60000, DV_ALERT_WARNING,
	     "p95 latency above 2 s for 5 minutes");
	rule(&d[n++], "certificate_expiring", "cert.days_left", true, 14, 0, 0, DV_ALERT_WARNING,
	     "certificate expires in less than 14 days");
	rule(&d[n++], "backup_failed", "backup.failed", false, 0.5, 0, 0, DV_ALERT_CRITICAL,
	     "the last backup failed");
	if (for_override_ms) {
		for (size_t i = 0; i < n; i++) {
			if (d[i].for_ms)
				d[i].for_ms = for_override_ms;
			d[i].resolve_ms = for_override_ms;
		}
	}
	size_t k = n < cap ? n : cap;
	memcpy(rules, d, k * sizeof *rules);
	return k;
}

static const struct dv_alert_rule *find_rule(const struct dv_alerts *a, const char *name)
{
	for (size_t i = 0; i < a->nrules; i++)
		if (strcmp(a->rules[i].name, name) == 0)
			return &a->rules[i];
	return NULL;
}

static void emit(struct dv_alerts *a, const struct dv_alert_rule *r, const struct alert *al, bool firing)
{
	if (a->nout == a->outcap) {
		a->outcap = a->outcap ? a->outcap * 2 : 8;
		a->out = dv_xrealloc(a->out, a->outcap * sizeof *a->out);
	}
	struct dv_alert_transition *t = &a->out[a->nout++];
	memset(t, 0, sizeof *t);
	snprintf(t->rule, sizeof t->rule, "%s", al->rule);
	snprintf(t->subject, sizeof t->subject, "%s", al->subject);
	snprintf(t->metric, sizeof t->metric, "%s", r ? r->metric : "");
	snprintf(t->summary, sizeof t->summary, "%s", r ? r->summary : "rule removed");
	t->severity = r ? r->severity : DV_ALERT_INFO;
	t->firing = firing;
	t->value = al->value;
	t->threshold = r ? r->threshold : 0;
	t->below = r ? r->below : false;
	t->at = a->wall ? a->wall : (int64_t)time(NULL);
}

static void resolve(struct dv_alerts *a, const struct dv_alert_rule *r, struct alert *al)
{
	if (al->state == DV_ALERT_FIRING) {
		al->state = DV_ALERT_RESOLVED;
		al->resolved_at = a->wall;
		emit(a, r, al, false);
	} else if (al->state == DV_ALERT_PENDING) {
		al->state = DV_ALERT_INACTIVE;
	}
	al->clear_since_ms = 0;
}

void dv_alerts_set_rules(struct dv_alerts *a, const struct dv_alert_rule *rules, size_t n)
{
	struct dv_alert_rule *old = a->rules;
	size_t nold = a->nrules;
	a->rules = dv_xcalloc(n ? n : 1, sizeof *a->rules);
	if (n)
		memcpy(a->rules, rules, n * sizeof *rules);
	a->nrules = n;
	for (size_t i = 0; i < a->nalerts; i++) {
		struct alert *al = &a->alerts[i];
		const struct dv_alert_rule *r = find_rule(a, al->rule);
		if (!r || !r->enabled) {
			const struct dv_alert_rule *o = NULL;
			for (size_t k = 0; k < nold; k++)
				if (strcmp(old[k].name, al->rule) == 0)
					o = &old[k];
			resolve(a, o, al);
		}
	}
	free(old);
}

static struct alert *get_alert(struct dv_alerts *a, const char *rule_name, const char *subject, bool create)
{
	for (size_t i = 0; i < a->nalerts; i++)
		if (strcmp(a->alerts[i].rule, rule_name) == 0 && strcmp(a->alerts[i].subject, subject) == 0)
			return &a->alerts[i];
	if (!create)
		return NULL;
	if (a->nalerts == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 16;
		a->alerts = dv_xrealloc(a->alerts, a->cap * sizeof *a->alerts);
	}
	struct alert *al = &a->alerts[a->nalerts++];
	memset(al, 0, sizeof *al);
	snprintf(al->rule, sizeof al->rule, "%s", rule_name);
	snprintf(al->subject, sizeof al->subject, "%s", subject);
	return al;
}

void dv_alerts_begin(struct dv_alerts *a, uint64_t now_ms, int64_t wall)
{
	a->now_ms = now_ms;
	a->wall = wall;
	for (size_t i = 0; i < a->nalerts; i++)
		a->alerts[i].seen = false;
}

static void step(struct dv_alerts *a, const struct dv_alert_rule *r, struct alert *al, double value)
{
	bool cond = r->below ? value < r->threshold : value > r->threshold;
	bool clear = r->below ? value > r->threshold + r->hysteresis : value < r->threshold - r->hysteresis;
	if (r->hysteresis == 0)
		clear = !cond;
	al->value = value;
	al->seen = true;
	al->missed = 0;
	al->last_seen_ms = a->now_ms;
	switch (al->state) {
	case DV_ALERT_INACTIVE:
	case DV_ALERT_RESOLVED:
		if (!cond)
			break;
		al->state = DV_ALERT_PENDING;
		al->since_ms = a->now_ms;
		al->pending_at = a->wall;
		/* fall through: a rule without a for-duration fires at once */
		/* FALLTHROUGH */
	case DV_ALERT_PENDING:
		if (!cond) {
			al->state = DV_ALERT_INACTIVE;
		} else if (a->now_ms - al->since_ms >= r->for_ms) {
			al->state = DV_ALERT_FIRING;
			al->fired_at = a->wall;
			al->resolved_at = 0;
			al->clear_since_ms = 0;
			emit(a, r, al, true);
		}
		break;
	case DV_ALERT_FIRING:
		if (!clear) {
			al->clear_since_ms = 0;
		} else {
			if (!al->clear_since_ms)
				al->clear_since_ms = a->now_ms ? a->now_ms : 1;
			if (a->now_ms - al->clear_since_ms >= r->resolve_ms)
				resolve(a, r, al);
		}
		break;
	}
}

/* True if a per-subject copy of rule `name` covers `subject`. */
static bool overridden(const struct dv_alerts *a, const char *name, const char *subject)
{
	for (size_t i = 0; i < a->nrules; i++)
		if (strcmp(a->rules[i].base, name) == 0 && strcmp(a->rules[i].match, subject) == 0)
			return true;
	return false;
}

void dv_alerts_observe(struct dv_alerts *a, const char *metric, const char *subject, double value)
{
	for (size_t i = 0; i < a->nrules; i++) {
		const struct dv_alert_rule *r = &a->rules[i];
		if (!r->enabled || strcmp(r->metric, metric) != 0)
			continue;
		if (r->match[0] && strcmp(r->match, subject) != 0)
			continue;
		if (!r->match[0] && overridden(a, r->name, subject))
			continue;
		struct alert *al = get_alert(a, r->name, subject, true);
		step(a, r, al, value);
	}
}

void dv_alerts_end(struct dv_alerts *a)
{
	size_t k = 0;
	for (size_t i = 0; i < a->nalerts; i++) {
		struct alert *al = &a->alerts[i];
		if (!al->seen && (al->state == DV_ALERT_FIRING || al->state == DV_ALERT_PENDING)) {
			/* A subject missing from one round is not gone: a /proc read can
			 * fail, or a short tick see no CPU time pass. It is gone once it
			 * missed two rounds in a row and as long as its rule needs to
			 * fire or resolve (a removed rule resolves at once). */
			const struct dv_alert_rule *r = find_rule(a, al->rule);
			uint64_t grace = r ? (r->for_ms > r->resolve_ms ? r->for_ms : r->resolve_ms) : 0;
			al->missed++;
			if (!r || (al->missed >= 2 && a->now_ms - al->last_seen_ms >= grace))
				resolve(a, r, al);
		}
		if (al->state == DV_ALERT_INACTIVE && !al->fired_at)
			continue; /* never fired: forget it */
		a->alerts[k++] = *al;
	}
	a->nalerts = k;
}

struct dv_alert_transition *dv_alerts_take(struct dv_alerts *a, size_t *n)
{
	struct dv_alert_transition *t = a->out;
	*n = a->nout;
	a->out = NULL;
	a->nout = a->outcap = 0;
	return t;
}

size_t dv_alerts_firing(const struct dv_alerts *a)
{
	size_t n = 0;
	for (size_t i = 0; i < a->nalerts; i++)
		n += a->alerts[i].state == DV_ALERT_FIRING;
	return n;
}

static const char *state_name(enum dv_alert_state s)
{
	switch (s) {
	case DV_ALERT_PENDING: return "pending";
	case DV_ALERT_FIRING: return "firing";
	case DV_ALERT_RESOLVED: return "resolved";
	default: return "inactive";
	}
}

static void fmt_time(int64_t t, char *buf, size_t size)
{
	if (!t) {
		snprintf(buf, size, "-");
		return;
	}
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void dv_alerts_report(struct dv_alerts *a, bool json, int64_t keep_resolved_s, struct dv_strbuf *out)
{
	struct dv_json j;
	dv_json_init(&j, out);
	if (json) {
		dv_json_object_begin(&j);
		dv_json_key(&j, "alerts");
		dv_json_array_begin(&j);
	} else {
		dv_strbuf_printf(out, "%-9s %-9s %-22s %-28s %-12s %-21s %s\n", "STATE", "SEVERITY", "RULE", "SUBJECT",
		                 "VALUE", "SINCE", "SUMMARY");
	}
	int64_t now = a->wall ? a->wall : (int64_t)time(NULL);
	size_t shown = 0;
	/* Firing first, then pending, then recently resolved. */
	static const enum dv_alert_state order[] = {DV_ALERT_FIRING, DV_ALERT_PENDING, DV_ALERT_RESOLVED};
	for (int o = 0; o < 3; o++) {
		for (size_t i = 0; i < a->nalerts; i++) {
			const struct alert *al = &a->alerts[i];
			if (al->state != order[o])
				continue;
			if (al->state == DV_ALERT_RESOLVED && now - al->resolved_at > keep_resolved_s)
				continue;
			const struct dv_alert_rule *r = find_rule(a, al->rule);
			int64_t since = al->state == DV_ALERT_FIRING ? al->fired_at
			                : al->state == DV_ALERT_PENDING ? al->pending_at : al->resolved_at;
			shown++;
			if (json) {
				dv_json_object_begin(&j);
				dv_json_key(&j, "rule");
				dv_json_string(&j, al->rule);
				dv_json_key(&j, "subject");
				dv_json_string(&j, al->subject);
				dv_json_key(&j, "state");
				dv_json_string(&j, state_name(al->state));
				dv_json_key(&j, "severity");
				dv_json_string(&j, r ? dv_alert_severity_name(r->severity) : "info");
				dv_json_key(&j, "metric");
				dv_json_string(&j, r ? r->metric : "");
				dv_json_key(&j, "value");
				dv_json_double(&j, al->value);
				dv_json_key(&j, "threshold");
				dv_json_double(&j, r ? r->threshold : 0);
				dv_json_key(&j, "fired_at");
				dv_json_int(&j, al->fired_at);
				dv_json_key(&j, "resolved_at");
				dv_json_int(&j, al->resolved_at);
				dv_json_key(&j, "summary");
				dv_json_string(&j, r ? r->summary : "");
				dv_json_object_end(&j);
			} else {
				char ts[32], val[32];
				fmt_time(since, ts, sizeof ts);
				snprintf(val, sizeof val, "%.4g", al->value);
				dv_strbuf_printf(out, "%-9s %-9s %-22s %-28s %-12s %-21s %s\n", state_name(al->state),
				                 r ? dv_alert_severity_name(r->severity) : "info", al->rule, al->subject, val, ts,
				                 r ? r->summary : "");
			}
		}
	}
	if (json) {
		dv_json_array_end(&j);
		dv_json_object_end(&j);
		dv_strbuf_puts(out, "\n");
	} else if (!shown) {
		dv_strbuf_puts(out, "no alerts (every rule is quiet)\n");
	}
}

void dv_alerts_firing_json(const struct dv_alerts *a, struct dv_strbuf *out)
{
	struct dv_json j;
	dv_json_init(&j, out);
	dv_json_array_begin(&j);
	for (size_t i = 0; i < a->nalerts; i++) {
		const struct alert *al = &a->alerts[i];
		if (al->state != DV_ALERT_FIRING)
			continue;
		dv_json_object_begin(&j);
		dv_json_key(&j, "rule");
		dv_json_string(&j, al->rule);
		dv_json_key(&j, "subject");
		dv_json_string(&j, al->subject);
		dv_json_key(&j, "fired_at");
		dv_json_int(&j, al->fired_at);
		dv_json_object_end(&j);
	}
	dv_json_array_end(&j);
}

void dv_alerts_restore(struct dv_alerts *a, const char *rule, const char *subject, int64_t fired_at, uint64_t now_ms)
{
	struct alert *al = get_alert(a, rule, subject, true);
	al->state = DV_ALERT_FIRING;
	al->fired_at = al->pending_at = fired_at;
	al->since_ms = now_ms;
	al->clear_since_ms = 0;
	al->seen = true;
	al->missed = 0;
	al->last_seen_ms = now_ms;
}

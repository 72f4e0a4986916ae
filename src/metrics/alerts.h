/* metrics/alerts: alert rules and their state machine (pure logic: the
 * caller feeds observations and delivers the transitions).
 *
 * A rule watches one metric ("host.cpu_percent", "service.p95_seconds", ...)
 * for every subject it is observed for ("host", "app/service", a domain),
 * or one subject when `match` is set. Per (rule, subject) there is one
 * alert, so a condition that stays true fires once (de-duplication):
 *
 *   inactive --cond--> pending --cond held `for_ms`--> FIRING (notify)
 *   pending --not cond--> inactive (nothing is sent)
 *   firing --clear (past the threshold by `hysteresis`) held `resolve_ms`--> RESOLVED (notify)
 *
 * The for-duration and the hysteresis band keep a value hovering around
 * the threshold from flapping. A subject that is no longer observed at all
 * (a service removed) resolves at once. */
#ifndef DV_METRICS_ALERTS_H
#define DV_METRICS_ALERTS_H

#include "core/strbuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dv_alert_severity { DV_ALERT_INFO = 0, DV_ALERT_WARNING, DV_ALERT_CRITICAL };
enum dv_alert_state { DV_ALERT_INACTIVE = 0, DV_ALERT_PENDING, DV_ALERT_FIRING, DV_ALERT_RESOLVED };

struct dv_alert_rule {
	char name[64];          /* unique; "cpu_high" */
	char metric[64];
	char match[160];        /* "" every subject; else exactly this one */
	char base[64];          /* a per-subject override of rule `base`: that rule skips `match` */
	bool below;             /* fires when value < threshold (else >) */
	double threshold;
	double hysteresis;      /* absolute margin needed to resolve */
	uint64_t for_ms, resolve_ms;
	enum dv_alert_severity severity;
	bool enabled;
	char summary[160];      /* what it means, for people */
};

struct dv_alert_transition {
	char rule[64], subject[160], metric[64], summary[160];
	enum dv_alert_severity severity;
	bool firing;            /* false: resolved */
	double value, threshold;
	bool below;
	int64_t at;             /* unix seconds */
};

struct dv_alerts;

struct dv_alerts *dv_alerts_new(void);
void dv_alerts_free(struct dv_alerts *a);

/* The default rules (the seeds' alerting): fills up to cap rules, returns
 * how many. for_override_ms != 0 replaces every for/resolve duration. */
size_t dv_alerts_default_rules(struct dv_alert_rule *rules, size_t cap, uint64_t for_override_ms);

/* Replaces the rule set (copied). Alerts of rules that keep their name keep
 * their state; alerts of rules that are gone or disabled resolve. */
void dv_alerts_set_rules(struct dv_alerts *a, const struct dv_alert_rule *rules, size_t n);

/* One evaluation round: begin, observe every (metric, subject, value), end.
 * now_ms is monotonic, wall the unix time stamped on transitions. */
void dv_alerts_begin(struct dv_alerts *a, uint64_t now_ms, int64_t wall);
void dv_alerts_observe(struct dv_alerts *a, const char *metric, const char *subject, double value);
void dv_alerts_end(struct dv_alerts *a);

/* Transitions since the last call (caller frees the array); *n their count. */
struct dv_alert_transition *dv_alerts_take(struct dv_alerts *a, size_t *n);

const char *dv_alert_severity_name(enum dv_alert_severity s);
int dv_alert_severity_parse(const char *text, enum dv_alert_severity *out);

/* The alerts that are pending, firing, or resolved within `keep_resolved_s`,
 * as JSON ({"alerts":[...]}) or a text table. */
void dv_alerts_report(struct dv_alerts *a, bool json, int64_t keep_resolved_s, struct dv_strbuf *out);
/* Firing alerts as JSON [{"rule","subject","fired_at"}...] (to keep across a
 * restart), and restoring them: a restored alert is firing without a new
 * transition; it resolves normally (or at once if its rule is gone). */
void dv_alerts_firing_json(const struct dv_alerts *a, struct dv_strbuf *out);
void dv_alerts_restore(struct dv_alerts *a, const char *rule, const char *subject, int64_t fired_at,
                       uint64_t now_ms);

/* Number of alerts firing now. */
size_t dv_alerts_firing(const struct dv_alerts *a);

#endif

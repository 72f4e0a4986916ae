/* obs/config: the x-davit blocks obs reads from a compose file:
 *
 *   x-davit:
 *     alerts:
 *       cpu_high: {threshold: 70, for: 10m}      # override a default rule
 *       disk_low: false                           # switch one off
 *       slow_api: {metric: service.p95_seconds, above: 0.5, for: 1m, severity: critical}
 *     notifications:
 *       - {type: slack, url: "${SLACK_URL}"}
 *       - {type: email, url: "smtp://mail:25", from: davit@example.com, to: [ops@example.com]}
 *   services:
 *     api:
 *       x-davit:
 *         alerts: {latency_high: {threshold: 0.8}}  # this service only
 *
 * Errors name the file and line. Internal to obs. */
#ifndef DV_OBS_CONFIG_H
#define DV_OBS_CONFIG_H

#include "metrics/alerts.h"
#include "notify/notify.h"

#include <stddef.h>

struct dv_obs_file_config {
	struct dv_alert_rule *rules;      /* the whole rule set: `base` with this file's changes */
	size_t nrules;
	struct dv_notifier_config *notifiers;
	size_t nnotifiers;
};

/* Parses text (named `name` in messages) of the app `app`, applying its
 * alert settings to a copy of base[0..nbase). Returns 0, or -1 with *err. */
int dv_obs_config_parse(const char *name, const char *text, size_t len, const char *app, const char *const *environ,
                        const struct dv_alert_rule *base, size_t nbase, struct dv_obs_file_config *out, char **err);
void dv_obs_config_dispose(struct dv_obs_file_config *c);

#endif

/* obs/config: x-davit alerts and notifications (see config.h). */
#include "obs/config.h"

#include "core/alloc.h"
#include "core/strbuf.h"
#include "core/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

extern char **environ;

struct pctx {
	const char *name;
	yaml_document_t *doc;
	const char *app;
	const char *const *env;
	struct dv_obs_file_config *out;
	char **err;
};

static int fail(struct pctx *c, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct pctx *c, const yaml_node_t *n, const char *fmt, ...)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_strbuf_printf(&b, "%s:%zu: ", c->name, n ? n->start_mark.line + 1 : 1);
	va_list ap;
	va_start(ap, fmt);
	dv_strbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	*c->err = dv_strbuf_steal(&b);
	return -1;
}

static yaml_node_t *node(struct pctx *c, int id)
{
	return yaml_document_get_node(c->doc, id);
}

static const char *scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* Member of a mapping by key, or NULL. */
static yaml_node_t *member(struct pctx *c, const yaml_node_t *map, const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		const char *k = scalar(node(c, p->key));
		if (k && strcmp(k, key) == 0)
			return node(c, p->value);
	}
	return NULL;
}

static const char *env_get(struct pctx *c, const char *name, size_t len)
{
	const char *const *env = c->env ? c->env : (const char *const *)environ;
	for (; env && *env; env++)
		if (strncmp(*env, name, len) == 0 && (*env)[len] == '=')
			return *env + len + 1;
	return NULL;
}

/* ${VAR}, ${VAR:-default} and $$ (compose interpolation, enough for URLs). */
static int interpolate(struct pctx *c, const yaml_node_t *n, const char *in, char *out, size_t size)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	for (const char *p = in; *p; p++) {
		if (p[0] == '$' && p[1] == '$') {
			dv_strbuf_puts(&b, "$");
			p++;
		} else if (p[0] == '$' && p[1] == '{') {
			const char *end = strchr(p, '}');
			if (!end) {
				dv_strbuf_dispose(&b);
				return fail(c, n, "unterminated ${ in '%s'", in);
			}
			const char *name = p + 2;
			const char *dflt = strstr(name, ":-");
			size_t nlen = dflt && dflt < end ? (size_t)(dflt - name) : (size_t)(end - name);
			const char *v = env_get(c, name, nlen);
			if ((!v || !*v) && dflt && dflt < end)
				dv_strbuf_append(&b, dflt + 2, (size_t)(end - dflt - 2));
			else if (v)
				dv_strbuf_puts(&b, v);
			p = end;
		} else {
			dv_strbuf_append(&b, p, 1);
		}
	}
	snprintf(out, size, "%s", b.data ? b.data : "");
	dv_strbuf_dispose(&b);
	return 0;
}

static int get_double(struct pctx *c, const yaml_node_t *n, const char *what, double *out)
{
	const char *s = scalar(n);
	char *end = NULL;
	double v = s ? strtod(s, &end) : 0;
	if (!s || end == s || *end) {
		/* "80%" reads as 80 */
		if (s && end && end != s && strcmp(end, "%") == 0) {
			*out = v;
			return 0;
		}
		return fail(c, n, "%s must be a number", what);
	}
	*out = v;
	return 0;
}

static int get_duration(struct pctx *c, const yaml_node_t *n, const char *what, uint64_t *out)
{
	const char *s = scalar(n);
	if (!s || dv_parse_duration_ms(s, out) != 0)
		return fail(c, n, "%s must be a duration like 30s, 5m or 1h", what);
	return 0;
}

static bool is_false(const char *s)
{
	return s && (strcmp(s, "false") == 0 || strcmp(s, "off") == 0 || strcmp(s, "no") == 0);
}

static struct dv_alert_rule *find(struct dv_obs_file_config *o, const char *name)
{
	for (size_t i = 0; i < o->nrules; i++)
		if (strcmp(o->rules[i].name, name) == 0)
			return &o->rules[i];
	return NULL;
}

static struct dv_alert_rule *add_rule(struct dv_obs_file_config *o)
{
	o->rules = dv_xrealloc(o->rules, (o->nrules + 1) * sizeof *o->rules);
	struct dv_alert_rule *r = &o->rules[o->nrules++];
	memset(r, 0, sizeof *r);
	return r;
}

static const char *const metrics_known[] = {
	"host.cpu_percent", "host.memory_used_percent", "host.disk_free_percent", "host.load1",
	"service.requests_per_second", "service.error_rate_percent", "service.p50_seconds", "service.p95_seconds",
	"service.p99_seconds", "service.cpu_percent", "service.memory_bytes", "service.down", "service.restarts",
	"cert.days_left", "backup.failed", NULL,
};

/* One entry of an alerts: mapping. subject: "" for top-level, else
 * "app/service" (the rule is copied for that service only). */
static int parse_rule(struct pctx *c, const char *name, const yaml_node_t *v, const char *subject)
{
	struct dv_obs_file_config *o = c->out;
	if (strlen(name) >= 40 || !*name)
		return fail(c, v, "alert rule name '%s' must be 1 to 39 characters", name);
	struct dv_alert_rule *base = find(o, name);
	struct dv_alert_rule tmp;
	if (base) {
		tmp = *base;
	} else {
		memset(&tmp, 0, sizeof tmp);
		snprintf(tmp.name, sizeof tmp.name, "%s", name);
		tmp.severity = DV_ALERT_WARNING;
		tmp.enabled = true;
	}
	if (v->type == YAML_SCALAR_NODE) {
		const char *s = scalar(v);
		if (is_false(s))
			tmp.enabled = false;
		else if (s && (strcmp(s, "true") == 0 || strcmp(s, "on") == 0))
			tmp.enabled = true;
		else
			return fail(c, v, "alert '%s' must be a mapping (threshold, for, severity...) or false", name);
	} else if (v->type != YAML_MAPPING_NODE) {
		return fail(c, v, "alert '%s' must be a mapping (threshold, for, severity...) or false", name);
	} else {
		bool have_dir = false;
		for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
			yaml_node_t *kn = node(c, p->key), *vn = node(c, p->value);
			const char *k = scalar(kn);
			if (!k)
				return fail(c, kn, "alert keys are names");
			int rc = 0;
			if (strcmp(k, "metric") == 0) {
				const char *m = scalar(vn);
				bool ok = false;
				for (const char *const *km = metrics_known; m && *km; km++)
					ok |= strcmp(*km, m) == 0;
				if (!ok)
					return fail(c, vn, "unknown metric '%s' for alert '%s' (known: host.cpu_percent, "
					                   "host.memory_used_percent, host.disk_free_percent, host.load1, "
					                   "service.requests_per_second, service.error_rate_percent, "
					                   "service.p50_seconds, service.p95_seconds, service.p99_seconds, "
					                   "service.cpu_percent, service.memory_bytes, service.down, "
					                   "service.restarts, cert.days_left, backup.failed)",
					            m ? m : "", name);
				snprintf(tmp.metric, sizeof tmp.metric, "%s", m);
			} else if (strcmp(k, "above") == 0 || strcmp(k, "below") == 0) {
				rc = get_double(c, vn, k, &tmp.threshold);
				tmp.below = k[0] == 'b';
				have_dir = true;
			} else if (strcmp(k, "threshold") == 0) {
				rc = get_double(c, vn, "threshold", &tmp.threshold);
				have_dir = have_dir || base;
			} else if (strcmp(k, "hysteresis") == 0) {
				rc = get_double(c, vn, "hysteresis", &tmp.hysteresis);
			} else if (strcmp(k, "for") == 0) {
				rc = get_duration(c, vn, "for", &tmp.for_ms);
			} else if (strcmp(k, "resolve_after") == 0) {
				rc = get_duration(c, vn, "resolve_after", &tmp.resolve_ms);
			} else if (strcmp(k, "severity") == 0) {
				const char *s = scalar(vn);
				if (!s || dv_alert_severity_parse(s, &tmp.severity) != 0)
					return fail(c, vn, "severity must be critical, warning or info");
			} else if (strcmp(k, "summary") == 0) {
				snprintf(tmp.summary, sizeof tmp.summary, "%s", scalar(vn) ? scalar(vn) : "");
			} else if (strcmp(k, "enabled") == 0) {
				tmp.enabled = !is_false(scalar(vn));
			} else {
				return fail(c, kn, "unknown key '%s' in alert '%s' (metric, above, below, threshold, for, "
				                   "resolve_after, hysteresis, severity, summary, enabled)", k, name);
			}
			if (rc)
				return rc;
		}
		/* A moved threshold keeps the rule's hysteresis in proportion
		 * (latency_high: 0.2 s around 2 s becomes 0.02 s around 0.2 s). */
		if (base && !member(c, v, "hysteresis") && base->threshold != 0 && tmp.threshold != base->threshold)
			tmp.hysteresis = base->hysteresis * fabs(tmp.threshold / base->threshold);
		if (!base && (!tmp.metric[0] || !have_dir))
			return fail(c, v, "new alert '%s' needs metric: and above: or below: (or name a default rule: "
			                  "cpu_high, memory_high, disk_low, service_down, error_rate_high, latency_high, "
			                  "certificate_expiring, backup_failed)", name);
	}
	if (!tmp.summary[0])
		snprintf(tmp.summary, sizeof tmp.summary, "%s %s %g", tmp.metric, tmp.below ? "below" : "above",
		         tmp.threshold);
	if (subject[0]) {
		if (strncmp(tmp.metric, "service.", 8) != 0)
			return fail(c, v, "alert '%s' under a service must watch a service.* metric", name);
		struct dv_alert_rule *r = add_rule(o);
		*r = tmp;
		snprintf(r->base, sizeof r->base, "%s", name);
		snprintf(r->match, sizeof r->match, "%s", subject);
		snprintf(r->name, sizeof r->name, "%s@%s", name, subject);
	} else if (base) {
		*find(o, name) = tmp;
	} else {
		*add_rule(o) = tmp;
	}
	return 0;
}

static int parse_alerts(struct pctx *c, const yaml_node_t *n, const char *subject)
{
	if (n->type != YAML_MAPPING_NODE)
		return fail(c, n, "x-davit.alerts must be a mapping of rule names to settings");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		const char *k = scalar(node(c, p->key));
		if (!k)
			return fail(c, node(c, p->key), "alert names are strings");
		if (parse_rule(c, k, node(c, p->value), subject) != 0)
			return -1;
	}
	return 0;
}

static int parse_notifier(struct pctx *c, const yaml_node_t *n)
{
	if (n->type != YAML_MAPPING_NODE)
		return fail(c, n, "each notification is a mapping {type, url, ...}");
	struct dv_notifier_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.alerts = cfg.deploys = true;
	const yaml_node_t *type = member(c, n, "type"), *url = member(c, n, "url");
	if (!scalar(type) || dv_notify_kind_parse(scalar(type), &cfg.kind) != 0)
		return fail(c, type ? type : n, "notification type must be webhook, slack, discord or email");
	if (!scalar(url))
		return fail(c, n, "notification needs url:");
	if (interpolate(c, url, scalar(url), cfg.url, sizeof cfg.url) != 0)
		return -1;
	bool email = cfg.kind == DV_NOTIFY_EMAIL;
	if (email ? strncmp(cfg.url, "smtp://", 7) != 0 && strncmp(cfg.url, "smtps://", 8) != 0
	          : strncmp(cfg.url, "http://", 7) != 0 && strncmp(cfg.url, "https://", 8) != 0)
		return fail(c, url, "%s url '%s' must start with %s", scalar(type), cfg.url,
		            email ? "smtp:// or smtps://" : "http:// or https://");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *kn = node(c, p->key), *vn = node(c, p->value);
		const char *k = scalar(kn);
		if (!k)
			return fail(c, kn, "notification keys are names");
		if (strcmp(k, "type") == 0 || strcmp(k, "url") == 0) {
			continue;
		} else if (email && strcmp(k, "from") == 0 && scalar(vn)) {
			if (interpolate(c, vn, scalar(vn), cfg.from, sizeof cfg.from) != 0)
				return -1;
		} else if (email && strcmp(k, "to") == 0) {
			if (scalar(vn)) {
				if (interpolate(c, vn, scalar(vn), cfg.to, sizeof cfg.to) != 0)
					return -1;
			} else if (vn->type == YAML_SEQUENCE_NODE) {
				struct dv_strbuf b;
				dv_strbuf_init(&b);
				for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top; it++) {
					const char *s = scalar(node(c, *it));
					if (!s) {
						dv_strbuf_dispose(&b);
						return fail(c, vn, "to: is a list of e-mail addresses");
					}
					dv_strbuf_printf(&b, "%s%s", b.len ? "," : "", s);
				}
				snprintf(cfg.to, sizeof cfg.to, "%s", b.data ? b.data : "");
				dv_strbuf_dispose(&b);
			} else {
				return fail(c, vn, "to: is an address or a list of addresses");
			}
		} else if (strcmp(k, "events") == 0) {
			if (vn->type != YAML_SEQUENCE_NODE)
				return fail(c, vn, "events: is a list of alerts and/or deploys");
			cfg.alerts = cfg.deploys = false;
			for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top; it++) {
				const char *s = scalar(node(c, *it));
				if (s && strcmp(s, "alerts") == 0)
					cfg.alerts = true;
				else if (s && strcmp(s, "deploys") == 0)
					cfg.deploys = true;
				else
					return fail(c, node(c, *it), "events: entries are 'alerts' or 'deploys'");
			}
		} else {
			return fail(c, kn, "unknown key '%s' in a %s notification (type, url%s, events)", k, scalar(type),
			            email ? ", from, to" : "");
		}
	}
	if (email && (!cfg.from[0] || !cfg.to[0]))
		return fail(c, n, "an email notification needs from: and to:");
	struct dv_obs_file_config *o = c->out;
	o->notifiers = dv_xrealloc(o->notifiers, (o->nnotifiers + 1) * sizeof *o->notifiers);
	o->notifiers[o->nnotifiers++] = cfg;
	return 0;
}

static int parse_block(struct pctx *c, const yaml_node_t *x, const char *subject)
{
	if (!x)
		return 0;
	if (x->type != YAML_MAPPING_NODE)
		return 0; /* the compose loader reports a malformed x-davit */
	const yaml_node_t *alerts = member(c, x, "alerts");
	if (alerts && parse_alerts(c, alerts, subject) != 0)
		return -1;
	const yaml_node_t *nt = member(c, x, "notifications");
	if (nt) {
		if (subject[0])
			return fail(c, nt, "notifications: belong in the top-level x-davit block, not in a service");
		if (nt->type != YAML_SEQUENCE_NODE)
			return fail(c, nt, "x-davit.notifications must be a list");
		for (yaml_node_item_t *it = nt->data.sequence.items.start; it < nt->data.sequence.items.top; it++)
			if (parse_notifier(c, node(c, *it)) != 0)
				return -1;
	}
	return 0;
}

int dv_obs_config_parse(const char *name, const char *text, size_t len, const char *app, const char *const *env,
                        const struct dv_alert_rule *base, size_t nbase, struct dv_obs_file_config *out, char **err)
{
	memset(out, 0, sizeof *out);
	out->rules = dv_xcalloc(nbase ? nbase : 1, sizeof *out->rules);
	if (nbase)
		memcpy(out->rules, base, nbase * sizeof *base);
	out->nrules = nbase;
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		yaml_parser_delete(&parser);
		return 0; /* not YAML: the compose loader says where */
	}
	struct pctx c = {.name = name, .doc = &doc, .app = app, .env = env, .out = out, .err = err};
	int rc = 0;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root && root->type == YAML_MAPPING_NODE) {
		rc = parse_block(&c, member(&c, root, "x-davit"), "");
		yaml_node_t *services = member(&c, root, "services");
		if (!rc && services && services->type == YAML_MAPPING_NODE) {
			for (yaml_node_pair_t *p = services->data.mapping.pairs.start; !rc && p < services->data.mapping.pairs.top;
			     p++) {
				const char *svc = scalar(node(&c, p->key));
				char subject[160];
				snprintf(subject, sizeof subject, "%s/%s", app, svc ? svc : "");
				rc = parse_block(&c, member(&c, node(&c, p->value), "x-davit"), subject);
			}
		}
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (rc)
		dv_obs_config_dispose(out);
	return rc;
}

void dv_obs_config_dispose(struct dv_obs_file_config *c)
{
	free(c->rules);
	free(c->notifiers);
	memset(c, 0, sizeof *c);
}

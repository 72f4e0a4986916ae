/* json: the canonical JSON form of a loaded compose project.
 *
 * Deterministic by construction: object keys are written in sorted order
 * (the field order below is alphabetical, and the model's maps are sorted
 * arrays), only integers are written, and every field is always present
 * (null when not set). A release stores this text and hashes it.
 */
#include "compose/compose.h"
#include "core/alloc.h"
#include "core/strbuf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The output buffer is core/strbuf's. */
static void j_raw(struct dv_strbuf *b, const char *s, size_t n)
{
	dv_strbuf_append(b, s, n);
}

static void j_lit(struct dv_strbuf *b, const char *s)
{
	j_raw(b, s, strlen(s));
}

/* A comma unless this is the first member of an object or array. */
static void j_sep(struct dv_strbuf *b)
{
	if (b->len && b->data[b->len - 1] != '{' && b->data[b->len - 1] != '[' && b->data[b->len - 1] != ':')
		j_raw(b, ",", 1);
}

/* Length of the valid UTF-8 sequence at s (0 if invalid). */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
	unsigned c = s[0], cp = 0, min = 0;
	size_t n = 0;

	if (c < 0x80) {
		n = 1;
	} else if ((c & 0xe0) == 0xc0) {
		n = 2;
		cp = c & 0x1f;
		min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		n = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		n = 4;
		cp = c & 0x07;
		min = 0x10000;
	}
	if (n > avail)
		n = 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			n = 0;
		else
			cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (n > 1 && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)))
		n = 0;
	return n;
}

/* A JSON string; bytes that are not UTF-8 (only possible from the process
 * environment or file system) are written as \u00XX. */
static void j_str(struct dv_strbuf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t left = s ? strlen(s) : 0;

	if (!s) {
		j_lit(b, "null");
		goto out;
	}
	j_raw(b, "\"", 1);
	while (left) {
		char esc[8];
		size_t n = utf8_len(p, left);
		if (n == 1 && *p == '"') {
			j_raw(b, "\\\"", 2);
		} else if (n == 1 && *p == '\\') {
			j_raw(b, "\\\\", 2);
		} else if (n == 1 && *p == '\n') {
			j_raw(b, "\\n", 2);
		} else if (n == 1 && *p == '\r') {
			j_raw(b, "\\r", 2);
		} else if (n == 1 && *p == '\t') {
			j_raw(b, "\\t", 2);
		} else if (n == 0 || *p < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", (unsigned)*p);
			j_lit(b, esc);
			n = 1;
		} else {
			j_raw(b, (const char *)p, n);
		}
		p += n;
		left -= n;
	}
	j_raw(b, "\"", 1);
out:
	return;
}

static void j_key(struct dv_strbuf *b, const char *key)
{
	j_sep(b);
	j_str(b, key);
	j_raw(b, ":", 1);
}

static void j_kstr(struct dv_strbuf *b, const char *key, const char *value)
{
	j_key(b, key);
	j_str(b, value);
}

static void j_kuint(struct dv_strbuf *b, const char *key, uint64_t value)
{
	char num[32];
	j_key(b, key);
	snprintf(num, sizeof num, "%" PRIu64, value);
	j_lit(b, num);
}

/* 0 means "not set": null. */
static void j_kuint_or_null(struct dv_strbuf *b, const char *key, uint64_t value)
{
	if (value)
		j_kuint(b, key, value);
	else
		j_kstr(b, key, NULL);
}

static void j_kbool(struct dv_strbuf *b, const char *key, bool value)
{
	j_key(b, key);
	j_lit(b, value ? "true" : "false");
}

static void j_strv(struct dv_strbuf *b, const struct dv_compose_strv *v)
{
	j_raw(b, "[", 1);
	for (size_t i = 0; i < v->len; i++) {
		j_sep(b);
		j_str(b, v->items[i]);
	}
	j_raw(b, "]", 1);
}

static void j_kstrv(struct dv_strbuf *b, const char *key, const struct dv_compose_strv *v, bool present)
{
	j_key(b, key);
	if (present)
		j_strv(b, v);
	else
		j_lit(b, "null");
}

static void j_kkv(struct dv_strbuf *b, const char *key, const struct dv_compose_kv *kv, size_t n)
{
	j_key(b, key);
	j_raw(b, "{", 1);
	for (size_t i = 0; i < n; i++)
		j_kstr(b, kv[i].key, kv[i].value);
	j_raw(b, "}", 1);
}

static void j_resources(struct dv_strbuf *b, const char *key, const struct dv_compose_resources *r)
{
	j_key(b, key);
	j_raw(b, "{", 1);
	j_kuint_or_null(b, "cpus_milli", r->cpus_milli);
	j_kuint_or_null(b, "memory", r->memory);
	j_raw(b, "}", 1);
}

/* Names of the enums, indexed by value. */
static const char *const condition_names[] = {
	[DV_COMPOSE_COND_STARTED] = "service_started",
	[DV_COMPOSE_COND_HEALTHY] = "service_healthy",
	[DV_COMPOSE_COND_COMPLETED] = "service_completed_successfully",
};
static const char *const restart_names[] = {
	[DV_COMPOSE_RESTART_UNSET] = NULL,
	[DV_COMPOSE_RESTART_NO] = "no",
	[DV_COMPOSE_RESTART_ALWAYS] = "always",
	[DV_COMPOSE_RESTART_ON_FAILURE] = "on-failure",
	[DV_COMPOSE_RESTART_UNLESS_STOPPED] = "unless-stopped",
};
static const char *const kind_names[] = {
	[DV_COMPOSE_KIND_CONTAINER] = "container",
	[DV_COMPOSE_KIND_NATIVE] = "native",
	[DV_COMPOSE_KIND_STATIC] = "static",
};
static const char *const mount_type_names[] = {
	[DV_COMPOSE_MOUNT_VOLUME] = "volume",
	[DV_COMPOSE_MOUNT_BIND] = "bind",
	[DV_COMPOSE_MOUNT_TMPFS] = "tmpfs",
};
static const char *const order_names[] = {
	[DV_COMPOSE_ORDER_UNSET] = NULL,
	[DV_COMPOSE_ORDER_START_FIRST] = "start-first",
	[DV_COMPOSE_ORDER_STOP_FIRST] = "stop-first",
};
static const char *const failure_action_names[] = {
	[DV_COMPOSE_FAILURE_UNSET] = NULL,
	[DV_COMPOSE_FAILURE_ROLLBACK] = "rollback",
	[DV_COMPOSE_FAILURE_PAUSE] = "pause",
	[DV_COMPOSE_FAILURE_CONTINUE] = "continue",
};

static void j_service(struct dv_strbuf *b, const struct dv_compose_service *s)
{
	j_raw(b, "{", 1);

	j_key(b, "build");
	if (s->build.context) {
		j_raw(b, "{", 1);
		j_kkv(b, "args", s->build.args, s->build.n_args);
		j_kstr(b, "context", s->build.context);
		j_kstr(b, "dockerfile", s->build.dockerfile);
		j_kstr(b, "target", s->build.target);
		j_raw(b, "}", 1);
	} else {
		j_lit(b, "null");
	}

	j_kstrv(b, "command", &s->command, s->has_command);

	j_key(b, "depends_on");
	j_raw(b, "[", 1);
	for (size_t i = 0; i < s->n_depends_on; i++) {
		const struct dv_compose_dependency *d = &s->depends_on[i];
		j_sep(b);
		j_raw(b, "{", 1);
		j_kstr(b, "condition", condition_names[d->condition]);
		j_kbool(b, "required", d->required);
		j_kbool(b, "restart", d->restart);
		j_kstr(b, "service", d->service);
		j_raw(b, "}", 1);
	}
	j_raw(b, "]", 1);

	j_key(b, "deploy");
	j_raw(b, "{", 1);
	j_kstr(b, "failure_action", failure_action_names[s->deploy.failure_action]);
	j_resources(b, "limits", &s->deploy.limits);
	j_kuint(b, "replicas", s->deploy.replicas);
	j_resources(b, "reservations", &s->deploy.reservations);
	j_kuint_or_null(b, "update_delay_ms", s->deploy.update_delay_ms);
	j_kuint_or_null(b, "update_monitor_ms", s->deploy.update_monitor_ms);
	j_kstr(b, "update_order", order_names[s->deploy.update_order]);
	j_kuint_or_null(b, "update_parallelism", s->deploy.update_parallelism);
	j_raw(b, "}", 1);

	j_key(b, "domains");
	j_raw(b, "[", 1);
	for (size_t i = 0; i < s->n_domains; i++) {
		j_sep(b);
		j_raw(b, "{", 1);
		j_kstr(b, "environment", s->domains[i].environment);
		j_kstr(b, "host", s->domains[i].host);
		j_kstr(b, "path", s->domains[i].path);
		j_raw(b, "}", 1);
	}
	j_raw(b, "]", 1);

	/* Only when set, so that releases without edge keys hash as before. */
	if (s->edge)
		j_kstr(b, "edge", s->edge);
	if (s->n_edge_domains)
		j_kkv(b, "edge_domains", s->edge_domains, s->n_edge_domains);
	j_kstrv(b, "entrypoint", &s->entrypoint, s->has_entrypoint);
	j_kstrv(b, "env_files", &s->env_files, true);
	j_kkv(b, "environment", s->environment, s->n_environment);
	j_kstrv(b, "expose", &s->expose, true);

	j_key(b, "health");
	if (s->health.present) {
		j_raw(b, "{", 1);
		j_kstr(b, "cmd", s->health.cmd);
		j_kuint_or_null(b, "interval_ms", s->health.interval_ms);
		j_kstr(b, "path", s->health.path);
		j_kuint_or_null(b, "retries", s->health.retries);
		j_kuint_or_null(b, "start_period_ms", s->health.start_period_ms);
		j_kuint_or_null(b, "timeout_ms", s->health.timeout_ms);
		j_raw(b, "}", 1);
	} else {
		j_lit(b, "null");
	}

	j_key(b, "healthcheck");
	if (s->healthcheck.present) {
		const struct dv_compose_healthcheck *h = &s->healthcheck;
		j_raw(b, "{", 1);
		j_kbool(b, "disabled", h->disabled);
		j_kuint_or_null(b, "interval_ms", h->interval_ms);
		j_kuint_or_null(b, "retries", h->retries);
		j_kbool(b, "shell", h->shell);
		j_kuint_or_null(b, "start_interval_ms", h->start_interval_ms);
		j_kuint_or_null(b, "start_period_ms", h->start_period_ms);
		j_kstrv(b, "test", &h->test, true);
		j_kuint_or_null(b, "timeout_ms", h->timeout_ms);
		j_raw(b, "}", 1);
	} else {
		j_lit(b, "null");
	}

	j_kstr(b, "image", s->image);
	j_kstr(b, "kind", kind_names[s->kind]);
	j_kkv(b, "labels", s->labels, s->n_labels);
	j_kstr(b, "name", s->name);

	j_key(b, "networks");
	j_raw(b, "{", 1);
	for (size_t i = 0; i < s->n_networks; i++) {
		j_key(b, s->networks[i].name);
		j_raw(b, "{", 1);
		j_kstrv(b, "aliases", &s->networks[i].aliases, true);
		j_raw(b, "}", 1);
	}
	j_raw(b, "}", 1);

	j_kuint_or_null(b, "port", s->port);

	j_key(b, "ports");
	j_raw(b, "[", 1);
	for (size_t i = 0; i < s->n_ports; i++) {
		const struct dv_compose_port *p = &s->ports[i];
		j_sep(b);
		j_raw(b, "{", 1);
		j_kstr(b, "host_ip", p->host_ip);
		j_kstr(b, "mode", p->mode);
		j_kstr(b, "protocol", p->protocol);
		j_kuint_or_null(b, "published", p->published);
		j_kuint_or_null(b, "published_end", p->published_end);
		j_kuint(b, "target", p->target);
		j_raw(b, "}", 1);
	}
	j_raw(b, "]", 1);

	j_key(b, "restart");
	if (s->restart != DV_COMPOSE_RESTART_UNSET) {
		j_raw(b, "{", 1);
		j_kuint_or_null(b, "max_retries", s->restart_max);
		j_kstr(b, "policy", restart_names[s->restart]);
		j_raw(b, "}", 1);
	} else {
		j_lit(b, "null");
	}

	j_kstr(b, "run", s->run);
	j_kstr(b, "static", s->static_dir);
	if (s->tls_cert) { /* only when set: releases without it keep their canonical JSON */
		j_key(b, "tls");
		j_raw(b, "{", 1);
		j_kstr(b, "cert", s->tls_cert);
		j_kstr(b, "key", s->tls_key);
		j_raw(b, "}", 1);
	}

	j_key(b, "volumes");
	j_raw(b, "[", 1);
	for (size_t i = 0; i < s->n_volumes; i++) {
		const struct dv_compose_mount *m = &s->volumes[i];
		j_sep(b);
		j_raw(b, "{", 1);
		j_kbool(b, "create_host_path", m->create_host_path);
		j_kbool(b, "read_only", m->read_only);
		j_kstr(b, "source", m->source);
		j_kstr(b, "target", m->target);
		j_kuint_or_null(b, "tmpfs_size", m->tmpfs_size);
		j_kstr(b, "type", mount_type_names[m->type]);
		j_raw(b, "}", 1);
	}
	j_raw(b, "]", 1);

	j_kstr(b, "working_dir", s->working_dir);
	/* Container process settings, written only when set (so that the
	 * releases of files without them keep their hashes). */
	if (s->pids_limit)
		j_kuint(b, "x_pids_limit", s->pids_limit);
	if (s->stop_grace_ms)
		j_kuint(b, "x_stop_grace_ms", s->stop_grace_ms);
	if (s->stop_signal)
		j_kstr(b, "x_stop_signal", s->stop_signal);
	if (s->user)
		j_kstr(b, "x_user", s->user);
	j_raw(b, "}", 1);
}

static void j_resource_map(struct dv_strbuf *b, const char *key, const struct dv_compose_resource *r, size_t n,
                           bool network)
{
	j_key(b, key);
	j_raw(b, "{", 1);
	for (size_t i = 0; i < n; i++) {
		j_key(b, r[i].key);
		j_raw(b, "{", 1);
		j_kstr(b, "driver", r[i].driver);
		j_kbool(b, "external", r[i].external);
		if (network)
			j_kbool(b, "internal", r[i].internal);
		j_kstr(b, "name", r[i].name);
		j_raw(b, "}", 1);
	}
	j_raw(b, "}", 1);
}

static char *j_finish(struct dv_strbuf *b, size_t *len)
{
	if (len)
		*len = b->len;
	return b->data;
}

char *dv_compose_service_to_json(const struct dv_compose_service *service, size_t *len)
{
	struct dv_strbuf b = {0};
	j_service(&b, service);
	return j_finish(&b, len);
}

char *dv_compose_project_to_json(const struct dv_compose_project *project, size_t *len)
{
	struct dv_strbuf b = {0};

	j_raw(&b, "{", 1);
	j_kstr(&b, "name", project->name);
	j_resource_map(&b, "networks", project->networks, project->n_networks, true);
	j_key(&b, "services");
	j_raw(&b, "{", 1);
	for (size_t i = 0; i < project->n_services; i++) {
		j_key(&b, project->services[i].name);
		j_service(&b, &project->services[i]);
	}
	j_raw(&b, "}", 1);
	j_key(&b, "start_order");
	j_raw(&b, "[", 1);
	for (size_t i = 0; i < project->n_services; i++) {
		j_sep(&b);
		j_str(&b, project->services[project->start_order[i]].name);
	}
	j_raw(&b, "]", 1);
	j_resource_map(&b, "volumes", project->volumes, project->n_volumes, false);
	j_raw(&b, "}", 1);
	return j_finish(&b, len);
}

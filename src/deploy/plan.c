#include "deploy/plan.h"

#include "core/alloc.h"
#include "core/jsonparse.h"
#include "core/strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char **strv_push(char **v, size_t *n, char *s)
{
	v = dv_xrealloc(v, (*n + 2) * sizeof *v);
	v[(*n)++] = s;
	v[*n] = NULL;
	return v;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* Re-serialises a parsed value as compact JSON (used as the service's
 * identity for diffs: the canonical JSON is already sorted). */
static void jv_write(struct dv_strbuf *b, const struct dv_jv *v)
{
	switch (v->type) {
	case DV_JV_NULL: dv_strbuf_puts(b, "null"); break;
	case DV_JV_BOOL: dv_strbuf_puts(b, v->boolean ? "true" : "false"); break;
	case DV_JV_NUMBER:
		if ((double)v->integer == v->number)
			dv_strbuf_printf(b, "%lld", (long long)v->integer);
		else
			dv_strbuf_printf(b, "%.17g", v->number);
		break;
	case DV_JV_STRING: dv_json_escape(b, v->string, v->len); break;
	case DV_JV_ARRAY:
	case DV_JV_OBJECT:
		dv_strbuf_puts(b, v->type == DV_JV_ARRAY ? "[" : "{");
		for (size_t i = 0; i < v->len; i++) {
			if (i)
				dv_strbuf_puts(b, ",");
			if (v->type == DV_JV_OBJECT) {
				dv_json_escape(b, v->keys[i], strlen(v->keys[i]));
				dv_strbuf_puts(b, ":");
			}
			jv_write(b, &v->items[i]);
		}
		dv_strbuf_puts(b, v->type == DV_JV_ARRAY ? "]" : "}");
		break;
	}
}

static char *dup_or_null(const char *s)
{
	return s ? dv_xstrdup(s) : NULL;
}

static int service_from_json(struct dv_plan_service *s, const char *name, const struct dv_jv *j,
                             const char *environment, char **err)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	jv_write(&b, j);
	s->name = dv_xstrdup(name);
	s->json = dv_strbuf_steal(&b);
	const char *kind = dv_jv_str(j, "kind", "");
	bool is_static = strcmp(kind, "static") == 0 && dv_jv_str(j, "static", NULL);
	if (strcmp(kind, "native") != 0 && strcmp(kind, "container") != 0 && !is_static) {
		s->unsupported = dv_xasprintf("service '%s' is of a kind this davit cannot run ('%s'): give it x-davit.run "
		                              "(a command), x-davit.static (a directory), or an image/build",
		                              name, kind);
	}
	s->run = dup_or_null(dv_jv_str(j, "run", NULL));
	s->workdir = dup_or_null(dv_jv_str(j, "working_dir", NULL));
	size_t n = 0;
	s->env = dv_xcalloc(1, sizeof *s->env);
	const struct dv_jv *env = dv_jv_get(j, "environment");
	for (size_t i = 0; env && env->type == DV_JV_OBJECT && i < env->len; i++) {
		const struct dv_jv *v = &env->items[i];
		if (v->type == DV_JV_STRING)
			s->env = strv_push(s->env, &n, dv_xasprintf("%s=%s", env->keys[i], v->string));
		else if (v->type == DV_JV_NULL)
			continue; /* declared without a value: not set */
	}
	int64_t port = dv_jv_int(j, "port", 0);
	s->port = port > 0 && port < 65536 ? (unsigned)port : 0;
	const struct dv_jv *deploy = dv_jv_get(j, "deploy");
	int64_t replicas = dv_jv_int(deploy, "replicas", 1);
	s->replicas = replicas > 0 && replicas <= 64 ? (unsigned)replicas : 1;
	const struct dv_jv *limits = dv_jv_get(deploy, "limits");
	int64_t mem = dv_jv_int(limits, "memory", 0);
	s->memory_limit = mem > 0 ? (uint64_t)mem : 0;
	int64_t cpus = dv_jv_int(limits, "cpus_milli", 0);
	s->cpu_limit = cpus > 0 ? (double)cpus / 1000.0 : 0;

	/* Health: x-davit.health wins; then a compose healthcheck (a command,
	 * since native services have no image HEALTHCHECK); then TCP on the port. */
	const struct dv_jv *h = dv_jv_get(j, "health");
	const struct dv_jv *hc = dv_jv_get(j, "healthcheck");
	if (h && h->type == DV_JV_OBJECT && (dv_jv_str(h, "path", NULL) || dv_jv_str(h, "cmd", NULL))) {
		s->health_path = dup_or_null(dv_jv_str(h, "path", NULL));
		s->health_cmd = dup_or_null(dv_jv_str(h, "cmd", NULL));
		s->health = s->health_path ? DV_PLAN_HEALTH_HTTP : DV_PLAN_HEALTH_COMMAND;
		s->health_interval_ms = (uint64_t)dv_jv_int(h, "interval_ms", 0);
		s->health_timeout_ms = (uint64_t)dv_jv_int(h, "timeout_ms", 0);
		s->health_start_period_ms = (uint64_t)dv_jv_int(h, "start_period_ms", 0);
		s->health_retries = (unsigned)dv_jv_int(h, "retries", 0);
	} else if (hc && hc->type == DV_JV_OBJECT && !dv_jv_bool(hc, "disabled", false)) {
		const struct dv_jv *test = dv_jv_get(hc, "test");
		if (test && test->type == DV_JV_ARRAY && test->len > 0) {
			struct dv_strbuf cmd;
			dv_strbuf_init(&cmd);
			bool shell = dv_jv_bool(hc, "shell", true);
			for (size_t i = 0; i < test->len; i++) {
				if (test->items[i].type != DV_JV_STRING)
					continue;
				if (i)
					dv_strbuf_puts(&cmd, " ");
				if (shell) {
					dv_strbuf_puts(&cmd, test->items[i].string);
				} else {
					/* argv form: quote each word for /bin/sh */
					dv_strbuf_puts(&cmd, "'");
					for (const char *c = test->items[i].string; *c; c++) {
						if (*c == '\'')
							dv_strbuf_puts(&cmd, "'\\''");
						else
							dv_strbuf_append(&cmd, c, 1);
					}
					dv_strbuf_puts(&cmd, "'");
				}
			}
			s->health_cmd = dv_strbuf_steal(&cmd);
			s->health = DV_PLAN_HEALTH_COMMAND;
			s->health_interval_ms = (uint64_t)dv_jv_int(hc, "interval_ms", 0);
			s->health_timeout_ms = (uint64_t)dv_jv_int(hc, "timeout_ms", 0);
			s->health_start_period_ms = (uint64_t)dv_jv_int(hc, "start_period_ms", 0);
			s->health_retries = (unsigned)dv_jv_int(hc, "retries", 0);
		}
	}
	if (s->health == DV_PLAN_HEALTH_NONE && s->port)
		s->health = DV_PLAN_HEALTH_TCP;

	n = 0;
	s->domains = dv_xcalloc(1, sizeof *s->domains);
	const struct dv_jv *domains = dv_jv_get(j, "domains");
	for (size_t i = 0; domains && domains->type == DV_JV_ARRAY && i < domains->len; i++) {
		const struct dv_jv *d = &domains->items[i];
		const char *env_name = dv_jv_str(d, "environment", NULL);
		if (env_name && strcmp(env_name, environment) != 0)
			continue;
		const char *host = dv_jv_str(d, "host", NULL), *path = dv_jv_str(d, "path", "/");
		if (!host)
			continue;
		s->domains = strv_push(s->domains, &n,
		                       strcmp(path, "/") == 0 ? dv_xstrdup(host) : dv_xasprintf("%s%s", host, path));
	}
	const struct dv_jv *tls = dv_jv_get(j, "tls");
	if (tls && dv_jv_str(tls, "cert", NULL) && dv_jv_str(tls, "key", NULL)) {
		s->tls_cert = dv_xstrdup(dv_jv_str(tls, "cert", NULL));
		s->tls_key = dv_xstrdup(dv_jv_str(tls, "key", NULL));
	}
	n = 0;
	s->depends_on = dv_xcalloc(1, sizeof *s->depends_on);
	const struct dv_jv *deps = dv_jv_get(j, "depends_on");
	for (size_t i = 0; deps && deps->type == DV_JV_ARRAY && i < deps->len; i++) {
		const char *dep = dv_jv_str(&deps->items[i], "service", NULL);
		if (dep)
			s->depends_on = strv_push(s->depends_on, &n, dv_xstrdup(dep));
	}
	const struct dv_jv *restart = dv_jv_get(j, "restart");
	const char *policy = dv_jv_str(restart, "policy", "unset");
	if (strcmp(policy, "no") == 0)
		s->restart = DV_PLAN_RESTART_NO;
	else if (strcmp(policy, "on-failure") == 0)
		s->restart = DV_PLAN_RESTART_ON_FAILURE;
	else
		s->restart = DV_PLAN_RESTART_ALWAYS; /* always, unless-stopped, or unset: a platform supervises */
	int64_t rmax = dv_jv_int(restart, "max_retries", 0);
	s->restart_max = rmax > 0 ? (unsigned)rmax : 0;
	s->edge = dup_or_null(dv_jv_str(j, "edge", NULL));
	n = 0;
	s->edge_domains = dv_xcalloc(1, sizeof *s->edge_domains);
	const struct dv_jv *ed = dv_jv_get(j, "edge_domains");
	for (size_t i = 0; ed && ed->type == DV_JV_OBJECT && i < ed->len; i++) {
		if (ed->items[i].type != DV_JV_STRING)
			continue;
		s->edge_domains = strv_push(s->edge_domains, &n, dv_xstrdup(ed->keys[i]));
		s->edge_domains = strv_push(s->edge_domains, &n, dv_xstrdup(ed->items[i].string));
	}
	if (is_static) {
		/* Served by the proxy itself: no process, no replicas. */
		s->static_dir = dv_xstrdup(dv_jv_str(j, "static", ""));
		struct stat st;
		int serr = stat(s->static_dir, &st) != 0 ? errno : 0;
		if (serr || !S_ISDIR(st.st_mode))
			s->unsupported = dv_xasprintf("service '%s': x-davit.static %s: %s (give the directory the proxy serves)",
			                              name, s->static_dir, serr ? strerror(serr) : "not a directory");
		s->replicas = 0;
		s->port = 0;
		s->health = DV_PLAN_HEALTH_NONE;
		return 0;
	}
	if (!s->unsupported && strcmp(kind, "container") != 0 && (!s->run || !*s->run)) {
		*err = dv_xasprintf("service '%s' has no x-davit.run command", name);
		return -1;
	}
	return 0;
}

static void service_dispose(struct dv_plan_service *s)
{
	free(s->name);
	free(s->json);
	free(s->unsupported);
	free(s->run);
	free(s->workdir);
	strv_free(s->env);
	free(s->health_path);
	free(s->health_cmd);
	strv_free(s->domains);
	free(s->tls_cert);
	free(s->tls_key);
	free(s->static_dir);
	free(s->edge);
	strv_free(s->edge_domains);
	strv_free(s->depends_on);
	dv_plan_container_free(s->container);
}

struct dv_plan *dv_plan_from_json(const char *json, size_t len, const char *environment, char **err)
{
	struct dv_jv *root = dv_jv_parse(json, len, err);
	if (!root)
		return NULL;
	struct dv_plan *plan = dv_xcalloc(1, sizeof *plan);
	const struct dv_jv *services = dv_jv_get(root, "services");
	const struct dv_jv *order = dv_jv_get(root, "start_order");
	const char *name = dv_jv_str(root, "name", NULL);
	if (!name || !services || services->type != DV_JV_OBJECT || !order || order->type != DV_JV_ARRAY) {
		*err = dv_xasprintf("release JSON lacks name, services or start_order");
		goto fail;
	}
	plan->app = dv_xstrdup(name);
	plan->services = dv_xcalloc(order->len ? order->len : 1, sizeof *plan->services);
	for (size_t i = 0; i < order->len; i++) {
		const char *sname = order->items[i].type == DV_JV_STRING ? order->items[i].string : NULL;
		const struct dv_jv *sj = sname ? dv_jv_get(services, sname) : NULL;
		if (!sj) {
			*err = dv_xasprintf("release JSON: start_order names an unknown service");
			goto fail;
		}
		plan->n++;
		if (service_from_json(&plan->services[plan->n - 1], sname, sj, environment, err) != 0)
			goto fail;
		if (strcmp(dv_jv_str(sj, "kind", ""), "container") == 0 &&
		    dv_plan_container_parse(&plan->services[plan->n - 1], root, sj, err) != 0)
			goto fail;
	}
	dv_jv_free(root);
	return plan;
fail:
	dv_jv_free(root);
	dv_plan_free(plan);
	return NULL;
}

void dv_plan_free(struct dv_plan *plan)
{
	if (!plan)
		return;
	for (size_t i = 0; i < plan->n; i++)
		service_dispose(&plan->services[i]);
	free(plan->services);
	free(plan->app);
	free(plan);
}

const struct dv_plan_service *dv_plan_service(const struct dv_plan *plan, const char *name)
{
	for (size_t i = 0; plan && i < plan->n; i++)
		if (strcmp(plan->services[i].name, name) == 0)
			return &plan->services[i];
	return NULL;
}

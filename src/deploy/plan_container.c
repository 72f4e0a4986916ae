/* The container part of a plan (image:/build: services). See plan.h. */
#include "deploy/plan.h"

#include "core/alloc.h"
#include "core/jsonparse.h"
#include "core/strbuf.h"
#include "runtime/docker_api.h"
#include "runtime/runtime.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTEXT_DIGEST_MAX (512ull << 20)

static char **strv_from_json(const struct dv_jv *a)
{
	size_t n = 0;
	char **v = dv_xcalloc((a && a->type == DV_JV_ARRAY ? a->len : 0) + 1, sizeof *v);
	for (size_t i = 0; a && a->type == DV_JV_ARRAY && i < a->len; i++)
		if (a->items[i].type == DV_JV_STRING)
			v[n++] = dv_xstrdup(a->items[i].string);
	return v;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static char *dup_or_null(const char *s)
{
	return s ? dv_xstrdup(s) : NULL;
}

void dv_plan_container_free(struct dv_plan_container *c)
{
	if (!c)
		return;
	free(c->image);
	free(c->build_context);
	free(c->dockerfile);
	free(c->build_target);
	strv_free(c->build_args);
	free(c->build_digest);
	strv_free(c->entrypoint);
	strv_free(c->command);
	free(c->user);
	free(c->stop_signal);
	free(c->working_dir);
	for (size_t i = 0; i < c->n_networks; i++) {
		free(c->networks[i].name);
		strv_free(c->networks[i].aliases);
	}
	free(c->networks);
	for (size_t i = 0; i < c->n_mounts; i++) {
		free(c->mounts[i].source);
		free(c->mounts[i].target);
	}
	free(c->mounts);
	for (size_t i = 0; i < c->n_ports; i++) {
		free(c->ports[i].host_ip);
		free(c->ports[i].protocol);
	}
	free(c->ports);
	strv_free(c->health_test);
	free(c->stop_first_why);
	free(c);
}

int dv_plan_container_parse(struct dv_plan_service *s, const struct dv_jv *root, const struct dv_jv *j, char **err)
{
	struct dv_plan_container *c = dv_xcalloc(1, sizeof *c);
	s->container = c;
	const char *app = dv_jv_str(root, "name", "app");
	c->image = dup_or_null(dv_jv_str(j, "image", NULL));
	const struct dv_jv *build = dv_jv_get(j, "build");
	if (build && build->type == DV_JV_OBJECT) {
		const char *ctx = dv_jv_str(build, "context", NULL);
		if (ctx && ctx[0] != '/') {
			*err = dv_xasprintf("service '%s': build context %s is not a local directory (davit builds from a "
			                    "directory on this machine)", s->name, ctx);
			return -1;
		}
		c->build_context = dup_or_null(ctx);
		c->dockerfile = dup_or_null(dv_jv_str(build, "dockerfile", NULL));
		c->build_target = dup_or_null(dv_jv_str(build, "target", NULL));
		const struct dv_jv *args = dv_jv_get(build, "args");
		size_t n = 0;
		c->build_args = dv_xcalloc((args && args->type == DV_JV_OBJECT ? args->len : 0) + 1, sizeof *c->build_args);
		for (size_t i = 0; args && args->type == DV_JV_OBJECT && i < args->len; i++)
			if (args->items[i].type == DV_JV_STRING)
				c->build_args[n++] = dv_xasprintf("%s=%s", args->keys[i], args->items[i].string);
		c->build_digest = dup_or_null(dv_jv_str(dv_jv_get(root, "x_build_digests"), s->name, NULL));
	}
	const struct dv_jv *ep = dv_jv_get(j, "entrypoint"), *cmd = dv_jv_get(j, "command");
	c->has_entrypoint = ep && ep->type == DV_JV_ARRAY;
	c->entrypoint = strv_from_json(ep);
	c->has_command = cmd && cmd->type == DV_JV_ARRAY;
	c->command = strv_from_json(cmd);
	c->user = dup_or_null(dv_jv_str(j, "x_user", NULL));
	c->stop_signal = dup_or_null(dv_jv_str(j, "x_stop_signal", NULL));
	c->stop_timeout_ms = (uint64_t)dv_jv_int(j, "x_stop_grace_ms", 0);
	c->pids_limit = dv_jv_int(j, "x_pids_limit", 0);
	c->working_dir = dup_or_null(dv_jv_str(j, "working_dir", NULL));

	/* Networks: the compose ones by their real names; the primary is the
	 * first that is not internal (the proxy must reach it). */
	const struct dv_jv *nets = dv_jv_get(j, "networks"), *pnets = dv_jv_get(root, "networks");
	size_t nn = nets && nets->type == DV_JV_OBJECT ? nets->len : 0;
	c->networks = dv_xcalloc(nn + 1, sizeof *c->networks);
	bool any_open = false;
	for (size_t i = 0; i < nn; i++) {
		const struct dv_jv *def = dv_jv_get(pnets, nets->keys[i]);
		struct dv_plan_network *n = &c->networks[c->n_networks++];
		const char *real = dv_jv_str(def, "name", NULL);
		n->name = real ? dv_xstrdup(real) : dv_xasprintf("%s_%s", app, nets->keys[i]);
		n->internal = dv_jv_bool(def, "internal", false);
		const struct dv_jv *al = dv_jv_get(&nets->items[i], "aliases");
		size_t na = al && al->type == DV_JV_ARRAY ? al->len : 0;
		n->aliases = dv_xcalloc(na + 2, sizeof *n->aliases);
		n->aliases[0] = dv_xstrdup(s->name);
		for (size_t k = 0, m = 1; k < na; k++)
			if (al->items[k].type == DV_JV_STRING)
				n->aliases[m++] = dv_xstrdup(al->items[k].string);
		if (!n->internal)
			any_open = true;
	}
	if (c->n_networks == 0) {
		c->networks[0].name = dv_xasprintf("%s_default", app);
		c->networks[0].aliases = dv_xcalloc(2, sizeof(char *));
		c->networks[0].aliases[0] = dv_xstrdup(s->name);
		c->n_networks = 1;
		any_open = true;
	}
	for (size_t i = 1; i < c->n_networks && c->networks[0].internal; i++) {
		if (!c->networks[i].internal) {
			struct dv_plan_network t = c->networks[0];
			c->networks[0] = c->networks[i];
			c->networks[i] = t;
		}
	}
	c->internal_only = !any_open;

	/* Mounts: named volumes by their real names. */
	const struct dv_jv *vols = dv_jv_get(j, "volumes"), *pvols = dv_jv_get(root, "volumes");
	size_t nv = vols && vols->type == DV_JV_ARRAY ? vols->len : 0;
	c->mounts = dv_xcalloc(nv + 1, sizeof *c->mounts);
	bool has_data = false;
	for (size_t i = 0; i < nv; i++) {
		const struct dv_jv *v = &vols->items[i];
		const char *type = dv_jv_str(v, "type", "volume"), *src = dv_jv_str(v, "source", NULL);
		struct dv_plan_mount *m = &c->mounts[c->n_mounts++];
		m->type = strcmp(type, "bind") == 0 ? DV_MOUNT_BIND : strcmp(type, "tmpfs") == 0 ? DV_MOUNT_TMPFS : DV_MOUNT_VOLUME;
		m->target = dup_or_null(dv_jv_str(v, "target", "/data"));
		m->read_only = dv_jv_bool(v, "read_only", false);
		m->create_host_path = dv_jv_bool(v, "create_host_path", true);
		m->tmpfs_size = (uint64_t)dv_jv_int(v, "tmpfs_size", 0);
		if (m->type == DV_MOUNT_VOLUME && src) {
			const char *real = dv_jv_str(dv_jv_get(pvols, src), "name", NULL);
			m->source = real ? dv_xstrdup(real) : dv_xasprintf("%s_%s", app, src);
		} else {
			m->source = dup_or_null(src);
		}
		if (m->type != DV_MOUNT_TMPFS && !m->read_only)
			has_data = true;
	}

	const struct dv_jv *ports = dv_jv_get(j, "ports");
	size_t np = ports && ports->type == DV_JV_ARRAY ? ports->len : 0;
	c->ports = dv_xcalloc(np + 1, sizeof *c->ports);
	bool publishes = false;
	for (size_t i = 0; i < np; i++) {
		const struct dv_jv *p = &ports->items[i];
		struct dv_plan_port *o = &c->ports[c->n_ports++];
		o->host_ip = dup_or_null(dv_jv_str(p, "host_ip", NULL));
		o->protocol = dup_or_null(dv_jv_str(p, "protocol", "tcp"));
		o->host_port = (unsigned)dv_jv_int(p, "published", 0);
		o->target = (unsigned)dv_jv_int(p, "target", 0);
		if (o->host_port)
			publishes = true;
	}

	/* The app's port: x-davit.port / the Traefik label, else the first
	 * published or exposed port. */
	c->app_port = s->port;
	if (!c->app_port && c->n_ports)
		c->app_port = c->ports[0].target;
	const struct dv_jv *expose = dv_jv_get(j, "expose");
	if (!c->app_port && expose && expose->type == DV_JV_ARRAY && expose->len && expose->items[0].type == DV_JV_STRING)
		c->app_port = (unsigned)strtoul(expose->items[0].string, NULL, 10);
	if (c->app_port > 65535)
		c->app_port = 0;
	s->port = c->internal_only ? 0 : c->app_port;

	/* Health: a compose healthcheck runs inside the container (Docker's
	 * HEALTHCHECK), not on the host; davit probes the port (or
	 * x-davit.health's path) on top of it. */
	const struct dv_jv *hc = dv_jv_get(j, "healthcheck");
	if (hc && hc->type == DV_JV_OBJECT) {
		const struct dv_jv *test = dv_jv_get(hc, "test");
		bool disabled = dv_jv_bool(hc, "disabled", false);
		if (disabled || (test && test->type == DV_JV_ARRAY && test->len)) {
			c->health_set = true;
			c->health_disabled = disabled;
			size_t n = test && test->type == DV_JV_ARRAY ? test->len : 0;
			c->health_test = dv_xcalloc(n + 2, sizeof *c->health_test);
			if (n) {
				bool shell = dv_jv_bool(hc, "shell", true);
				c->health_test[0] = dv_xstrdup(shell ? "CMD-SHELL" : "CMD");
				if (shell) {
					struct dv_strbuf b;
					dv_strbuf_init(&b);
					for (size_t i = 0; i < n; i++) {
						if (test->items[i].type != DV_JV_STRING)
							continue;
						if (b.len)
							dv_strbuf_puts(&b, " ");
						dv_strbuf_puts(&b, test->items[i].string);
					}
					c->health_test[1] = dv_strbuf_steal(&b);
					if (!c->health_test[1])
						c->health_test[1] = dv_xstrdup("");
				} else {
					for (size_t i = 0, k = 1; i < n; i++)
						if (test->items[i].type == DV_JV_STRING)
							c->health_test[k++] = dv_xstrdup(test->items[i].string);
				}
			}
			c->health_interval_ms = (uint64_t)dv_jv_int(hc, "interval_ms", 0);
			c->health_timeout_ms = (uint64_t)dv_jv_int(hc, "timeout_ms", 0);
			c->health_start_period_ms = (uint64_t)dv_jv_int(hc, "start_period_ms", 0);
			c->health_retries = (unsigned)dv_jv_int(hc, "retries", 0);
		}
	}
	if (s->health == DV_PLAN_HEALTH_COMMAND && !(dv_jv_get(j, "health") && dv_jv_str(dv_jv_get(j, "health"), "cmd", NULL))) {
		free(s->health_cmd);
		s->health_cmd = NULL;
		s->health = DV_PLAN_HEALTH_NONE;
	}
	if (s->health == DV_PLAN_HEALTH_NONE && s->port)
		s->health = DV_PLAN_HEALTH_TCP;
	if (!s->port && s->health != DV_PLAN_HEALTH_COMMAND)
		s->health = DV_PLAN_HEALTH_NONE;

	/* Stateful services are replaced stop-first (two writers on one volume,
	 * or two binds of one host port, cannot work), unless the file asks for
	 * start-first for a volume. */
	const char *order = dv_jv_str(dv_jv_get(j, "deploy"), "update_order", NULL);
	if (publishes) {
		c->stop_first = true;
		c->stop_first_why = dv_xstrdup("it publishes fixed host ports");
	} else if (has_data && !(order && strcmp(order, "start-first") == 0)) {
		c->stop_first = true;
		c->stop_first_why = dv_xstrdup("it has volumes (set deploy.update_config.order: start-first to override)");
	} else if (order && strcmp(order, "stop-first") == 0) {
		c->stop_first = true;
		c->stop_first_why = dv_xstrdup("deploy.update_config.order says so");
	}

	if (c->build_digest) {
		char *json = dv_xasprintf("%s#build:%s", s->json, c->build_digest);
		free(s->json);
		s->json = json;
	}
	if (!c->image && !c->build_context) {
		*err = dv_xasprintf("service '%s' has neither an image nor a build", s->name);
		return -1;
	}
	return 0;
}

char *dv_plan_add_build_digests(const char *json, size_t len, size_t *out_len, char **bad_service, char **err)
{
	struct dv_jv *root = dv_jv_parse(json, len, err);
	if (!root)
		return NULL;
	const struct dv_jv *services = dv_jv_get(root, "services");
	struct dv_strbuf digests;
	dv_strbuf_init(&digests);
	char *out = NULL;
	for (size_t i = 0; services && services->type == DV_JV_OBJECT && i < services->len; i++) {
		const struct dv_jv *b = dv_jv_get(&services->items[i], "build");
		const char *ctx = dv_jv_str(b, "context", NULL);
		if (!ctx || ctx[0] != '/')
			continue;
		struct dv_strbuf tar;
		dv_strbuf_init(&tar);
		char *terr = NULL;
		if (dv_tar_directory(ctx, CONTEXT_DIGEST_MAX, false, &tar, &terr) != 0) {
			*err = dv_xasprintf("service '%s': %s (build.context must be a directory with a Dockerfile)",
			                    services->keys[i], terr);
			free(terr);
			*bad_service = dv_xstrdup(services->keys[i]);
			dv_strbuf_dispose(&tar);
			goto out;
		}
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen = 0;
		EVP_Digest(tar.data, tar.len, md, &mdlen, EVP_sha256(), NULL);
		dv_strbuf_dispose(&tar);
		dv_strbuf_puts(&digests, digests.len ? "," : "");
		dv_json_escape(&digests, services->keys[i], strlen(services->keys[i]));
		dv_strbuf_puts(&digests, ":\"");
		for (unsigned k = 0; k < mdlen; k++)
			dv_strbuf_printf(&digests, "%02x", md[k]);
		dv_strbuf_puts(&digests, "\"");
	}
	if (!digests.len || len < 2 || json[len - 1] != '}') {
		out = dv_xstrndup(json, len);
		*out_len = len;
		goto out;
	}
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_strbuf_append(&b, json, len - 1);
	dv_strbuf_printf(&b, ",\"x_build_digests\":{%s}}", digests.data);
	*out_len = b.len;
	out = dv_strbuf_steal(&b);
out:
	dv_strbuf_dispose(&digests);
	dv_jv_free(root);
	return out;
}

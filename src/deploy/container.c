/* Container specs for the engine. See container.h. */
#include "deploy/container.h"

#include "core/alloc.h"
#include "runtime/docker_api.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dv_engine_cspec_build(struct dv_engine_cspec *cs, const struct dv_plan_service *p, const char *app,
                           int64_t release, unsigned index, uint16_t host_port, bool loopback, uint64_t health_wait_ms,
                           const char *adopt_id)
{
	const struct dv_plan_container *c = p->container;
	memset(cs, 0, sizeof *cs);
	char rel[32];
	snprintf(rel, sizeof rel, "%lld", (long long)release);
	cs->image_tag = dv_docker_image_tag(app, p->name, rel);
	/* The environment is the file's only (the image brings PATH and the
	 * rest), plus PORT (the app's port inside) and DAVIT_*. */
	size_t n = 0;
	while (p->env && p->env[n])
		n++;
	cs->env = dv_xcalloc(n + 6, sizeof *cs->env);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(p->env[i], "PORT=", 5) != 0 || !c->app_port)
			cs->env[k++] = dv_xstrdup(p->env[i]);
	if (c->app_port)
		cs->env[k++] = dv_xasprintf("PORT=%u", c->app_port);
	cs->env[k++] = dv_xasprintf("DAVIT_APP=%s", app);
	cs->env[k++] = dv_xasprintf("DAVIT_SERVICE=%s", p->name);
	cs->env[k++] = dv_xasprintf("DAVIT_REPLICA=%u", index);
	cs->env[k++] = dv_xasprintf("DAVIT_RELEASE=%lld", (long long)release);

	struct dv_container_spec *s = &cs->spec;
	s->image = cs->image_tag;
	s->pull = c->build_context ? NULL : c->image;
	s->build_context = c->build_context;
	s->build_digest = c->build_digest;
	s->dockerfile = c->dockerfile;
	s->build_target = c->build_target;
	s->build_args = c->build_args;
	s->has_entrypoint = c->has_entrypoint;
	s->entrypoint = c->entrypoint;
	s->has_command = c->has_command;
	s->command = c->command;
	s->user = c->user;
	s->stop_signal = c->stop_signal;
	s->pids_limit = c->pids_limit;
	s->working_dir = c->working_dir;
	s->app_port = c->app_port;
	s->loopback_port = loopback && p->port && !c->internal_only ? host_port : 0;
	s->wait_port = p->port != 0;
	cs->nets = dv_xcalloc(c->n_networks + 1, sizeof *cs->nets);
	for (size_t i = 0; i < c->n_networks; i++) {
		cs->nets[i].name = c->networks[i].name;
		cs->nets[i].internal = c->networks[i].internal;
		cs->nets[i].aliases = c->networks[i].aliases;
	}
	s->networks = cs->nets;
	s->n_networks = c->n_networks;
	cs->mounts = dv_xcalloc(c->n_mounts + 1, sizeof *cs->mounts);
	for (size_t i = 0; i < c->n_mounts; i++) {
		cs->mounts[i].type = (enum dv_container_mount_type)c->mounts[i].type;
		cs->mounts[i].source = c->mounts[i].source;
		cs->mounts[i].target = c->mounts[i].target;
		cs->mounts[i].read_only = c->mounts[i].read_only;
		cs->mounts[i].create_host_path = c->mounts[i].create_host_path;
		cs->mounts[i].tmpfs_size = c->mounts[i].tmpfs_size;
	}
	s->mounts = cs->mounts;
	s->n_mounts = c->n_mounts;
	cs->ports = dv_xcalloc(c->n_ports + 1, sizeof *cs->ports);
	for (size_t i = 0; i < c->n_ports; i++) {
		cs->ports[i].host_ip = c->ports[i].host_ip;
		cs->ports[i].host_port = c->ports[i].host_port;
		cs->ports[i].target = c->ports[i].target;
		cs->ports[i].protocol = c->ports[i].protocol;
	}
	s->ports = cs->ports;
	s->n_ports = c->n_ports;
	s->health_set = c->health_set;
	s->health_disabled = c->health_disabled;
	s->health_test = c->health_test;
	s->health_interval_ms = c->health_interval_ms;
	s->health_timeout_ms = c->health_timeout_ms;
	s->health_start_period_ms = c->health_start_period_ms;
	s->health_retries = c->health_retries;
	s->health_wait_ms = health_wait_ms;
	s->adopt_id = adopt_id;
	cs->spec_hash = dv_engine_spec_hash(p);
	s->spec_hash = cs->spec_hash;
}

char *dv_engine_spec_hash(const struct dv_plan_service *p)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_Digest(p->json, strlen(p->json), md, &n, EVP_sha256(), NULL);
	char *hex = dv_xmalloc(2 * n + 1);
	for (unsigned i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return hex;
}

void dv_engine_cspec_dispose(struct dv_engine_cspec *cs)
{
	for (size_t i = 0; cs->env && cs->env[i]; i++)
		free(cs->env[i]);
	free(cs->env);
	free(cs->image_tag);
	free(cs->spec_hash);
	free(cs->nets);
	free(cs->mounts);
	free(cs->ports);
	memset(cs, 0, sizeof *cs);
}

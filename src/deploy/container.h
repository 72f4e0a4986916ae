/* deploy/container: the engine's side of container replicas: turns a plan
 * service into the docker driver's spec (internal to the deploy module). */
#ifndef DV_DEPLOY_CONTAINER_H
#define DV_DEPLOY_CONTAINER_H

#include "deploy/plan.h"
#include "runtime/runtime.h"

#include <stdbool.h>
#include <stdint.h>

/* A container spec and the memory behind it. */
struct dv_engine_cspec {
	struct dv_container_spec spec;
	char **env;
	char *image_tag;
	struct dv_container_network *nets;
	struct dv_container_mount *mounts;
	struct dv_container_port *ports;
	char *spec_hash;
};

/* Fills cs for replica `index` of release `release` of service p of `app`.
 * host_port: the engine's port for the replica (published on 127.0.0.1 when
 * loopback is true). adopt_id: attach to this running container. */
void dv_engine_cspec_build(struct dv_engine_cspec *cs, const struct dv_plan_service *p, const char *app,
                           int64_t release, unsigned index, uint16_t host_port, bool loopback, uint64_t health_wait_ms,
                           const char *adopt_id);

/* The davit.spec label of a service's containers: SHA-256 of its plan JSON
 * (equal for every release that did not change the service). Caller frees. */
char *dv_engine_spec_hash(const struct dv_plan_service *p);
void dv_engine_cspec_dispose(struct dv_engine_cspec *cs);

#endif

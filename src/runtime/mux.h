/* mux: one runtime for the engine over the process and docker drivers.
 *
 * A replica whose spec has a container part runs on the docker driver, any
 * other on the process driver; the handle remembers which. The docker driver
 * is created on first use (no threads, no engine contact for native-only
 * apps). Callbacks get the mux's handle. */
#ifndef DV_RUNTIME_MUX_H
#define DV_RUNTIME_MUX_H

#include "runtime/docker.h"
#include "runtime/runtime.h"

struct dv_loop;

/* Takes ownership of `process` (destroyed with the mux). The docker options
 * are copied. Never fails. */
struct dv_runtime *dv_mux_new(struct dv_loop *loop, struct dv_runtime *process, const struct dv_docker_options *docker);

/* The docker driver, created now if needed (NULL with *err if it cannot
 * be); for dv_docker_* calls. */
struct dv_runtime *dv_mux_docker(struct dv_runtime *mux, char **err);

/* The docker driver if it exists already (NULL otherwise). */
struct dv_runtime *dv_mux_docker_if_any(struct dv_runtime *mux);

/* True if the replica runs on the docker driver; its container id or NULL. */
bool dv_mux_is_container(const struct dv_replica *replica);
const char *dv_mux_container_id(const struct dv_replica *replica);

#endif

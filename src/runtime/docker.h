/* docker: the container runtime driver (Docker Engine API over libcurl).
 *
 * Talks to the engine named by DOCKER_HOST (unix:///path or tcp://host:port;
 * default unix:///var/run/docker.sock). The API version is negotiated from
 * GET /version on first use (docker_api.h). The daemon never starts or
 * configures dockerd: an engine that does not answer is reported in one
 * sentence saying what to do.
 *
 * Threads: every Engine API call blocks, so none runs on the control loop.
 * A few job threads take jobs from a queue (start, stop, wait + remove,
 * image pruning, volume listing/removal); one stream thread follows every
 * container's log stream with a curl multi handle. Both report back to the
 * loop through one eventfd (a message queue under a mutex); every callback
 * (exit, running, log followers, done) runs on the loop thread. The only
 * blocking calls on the loop are list() (the daemon's start, before it
 * serves) and dv_docker_check() for a tcp:// engine (a cached answer).
 *
 * A replica's life: start() returns it STARTING and queues the start job:
 * make sure the image exists (tag davit/<app>-<service>:<release>: built
 * from the context as a tar stream, or pulled with the stored registry
 * credentials and tagged, the output going to the replica's log as
 * "build:"/"pull:" lines), the networks and named volumes exist (labelled
 * davit.app), bind directories exist; create the container (labels
 * davit.app/service/release/replica, Init, limits...), connect its other
 * networks, start it, follow its logs, then wait for its start gates (the
 * image's or compose's Docker HEALTHCHECK healthy, the app port accepting)
 * and report RUNNING (on_running). When the log stream ends the container
 * has stopped: a job waits for its exit code, removes the container (never
 * its volumes) and the exit callback runs. stop() is `docker stop` with the
 * spec's timeout (SIGTERM through the container's init, then SIGKILL).
 * destroy() leaves running containers alone (the next daemon adopts them). */
#ifndef DV_RUNTIME_DOCKER_H
#define DV_RUNTIME_DOCKER_H

#include "runtime/runtime.h"

#include <stdbool.h>
#include <stddef.h>

struct dv_loop;

struct dv_docker_options {
	const char *host;        /* NULL: $DOCKER_HOST, else unix:///var/run/docker.sock */
	const char *state_dir;   /* registry credentials (registry.h); NULL: none */
	size_t ring_lines;       /* log lines kept in memory per replica; 0: 1000 */
	unsigned threads;        /* job threads; 0: 8 */
};

/* Creates the driver (no engine call yet). NULL with *err if a thread or the
 * eventfd cannot be created, or DOCKER_HOST is not unix:// or tcp://. */
struct dv_runtime *dv_docker_new(struct dv_loop *loop, const struct dv_docker_options *options, char **err);

/* Whether the engine can be reached, without blocking: a unix socket is
 * connected to (a local connect either works or fails at once); for tcp://
 * the outcome of the last call is reported. 0, or -1 with *err: one
 * sentence with what to do. */
int dv_docker_check(struct dv_runtime *rt, char **err);

/* The engine's address as used ("unix:///var/run/docker.sock"). Borrowed. */
const char *dv_docker_host(const struct dv_runtime *rt);

/* The replica's container id (NULL until created). Borrowed. */
const char *dv_docker_container_id(const struct dv_replica *replica);

/* Completion of an asynchronous call: rc 0 or -1; text is a report (lines)
 * or the error. Runs on the loop. */
typedef void (*dv_docker_done_cb)(void *arg, int rc, const char *text);

/* Removes the app's images davit/<app>-*:<release> older than the newest
 * `keep` releases, except those in `in_use` (release ids as strings,
 * NULL-terminated). done may be NULL. */
void dv_docker_prune_images(struct dv_runtime *rt, const char *app, unsigned keep, char *const *in_use,
                            dv_docker_done_cb done, void *arg);

/* The named volumes davit created for `app` (label davit.app): with
 * remove false, their names one per line; with remove true, deletes them
 * (and the app's networks) and reports what it deleted. */
void dv_docker_app_volumes(struct dv_runtime *rt, const char *app, bool remove, dv_docker_done_cb done, void *arg);

/* Checks credentials with the registry through the engine (POST /auth) and
 * stores them (registry.h) only if the registry accepts them. done's text
 * says what happened. */
void dv_docker_login(struct dv_runtime *rt, const char *host, const char *user, const char *password,
                     dv_docker_done_cb done, void *arg);

/* Stops and removes a container by id (a leftover recovery did not adopt). */
void dv_docker_remove_container(struct dv_runtime *rt, const char *id);

#endif

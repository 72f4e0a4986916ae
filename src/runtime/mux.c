/* The runtime multiplexer. See mux.h. */
#include "runtime/mux.h"

#include "core/alloc.h"
#include "core/loop.h"

#include <stdlib.h>
#include <string.h>

/* The drivers' own handles are opaque here: kept as void pointers. */
struct dv_replica {
	struct dv_runtime *drv;
	void *inner;
	dv_replica_exit_cb on_exit;
	dv_replica_running_cb on_running;
	dv_replica_health_cb on_health;
	void *arg;
};

struct mux {
	struct dv_runtime base;
	struct dv_loop *loop;
	struct dv_runtime *process, *docker;
	struct dv_docker_options options;
	char *host, *state_dir;
};

static struct mux *M(struct dv_runtime *rt)
{
	return (struct mux *)rt;
}

static void exit_tramp(struct dv_replica *inner, int status, void *arg)
{
	struct dv_replica *r = arg;
	if (r->on_exit)
		r->on_exit(r, status, r->arg);
}

static void running_tramp(struct dv_replica *inner, void *arg)
{
	struct dv_replica *r = arg;
	if (r->on_running)
		r->on_running(r, r->arg);
}

static void health_tramp(struct dv_replica *inner, bool healthy, void *arg)
{
	struct dv_replica *r = arg;
	if (r->on_health)
		r->on_health(r, healthy, r->arg);
}

struct dv_runtime *dv_mux_docker(struct dv_runtime *rt, char **err)
{
	struct mux *m = M(rt);
	if (!m->docker)
		m->docker = dv_docker_new(m->loop, &m->options, err);
	return m->docker;
}

struct dv_runtime *dv_mux_docker_if_any(struct dv_runtime *rt)
{
	return M(rt)->docker;
}

static int mx_start(struct dv_runtime *rt, const struct dv_replica_spec *spec, dv_replica_exit_cb on_exit, void *arg,
                    struct dv_replica **out, char **err)
{
	struct dv_runtime *drv = spec->container ? dv_mux_docker(rt, err) : M(rt)->process;
	if (!drv)
		return -1;
	struct dv_replica *r = dv_xcalloc(1, sizeof *r);
	r->drv = drv;
	r->on_exit = on_exit;
	r->on_running = spec->on_running;
	r->on_health = spec->on_health;
	r->arg = arg;
	struct dv_replica_spec s = *spec;
	s.on_running = spec->on_running ? running_tramp : NULL;
	s.on_health = spec->on_health ? health_tramp : NULL;
	struct dv_replica *inner = NULL;
	if (dv_runtime_start(drv, &s, exit_tramp, r, &inner, err) != 0) {
		free(r);
		return -1;
	}
	r->inner = inner;
	*out = r;
	return 0;
}

#define IN(r) ((struct dv_replica *)(r)->inner)

static int mx_stop(struct dv_runtime *rt, struct dv_replica *r, char **err)
{
	return dv_runtime_stop(r->drv, IN(r), err);
}

static int mx_inspect(struct dv_runtime *rt, struct dv_replica *r, struct dv_replica_info *info, char **err)
{
	return dv_runtime_inspect(r->drv, IN(r), info, err);
}

static size_t mx_logs_tail(struct dv_runtime *rt, struct dv_replica *r, size_t max_lines, dv_log_line_cb cb, void *arg)
{
	return dv_runtime_logs_tail(r->drv, IN(r), max_lines, cb, arg);
}

static struct dv_log_follow *mx_logs_follow(struct dv_runtime *rt, struct dv_replica *r, dv_log_line_cb cb, void *arg)
{
	return dv_runtime_logs_follow(r->drv, IN(r), cb, arg);
}

static void mx_logs_unfollow(struct dv_runtime *rt, struct dv_log_follow *follow)
{
	/* Both drivers unfollow through the shared replica log. */
	dv_runtime_logs_unfollow(M(rt)->process, follow);
}

static int mx_list(struct dv_runtime *rt, const struct dv_replica_ref *known, size_t n_known,
                   struct dv_replica_ref **found, size_t *n_found, char **err)
{
	return dv_runtime_list(M(rt)->process, known, n_known, found, n_found, err);
}

static int mx_remove(struct dv_runtime *rt, struct dv_replica *r, char **err)
{
	if (dv_runtime_remove(r->drv, IN(r), err) != 0)
		return -1;
	free(r); /* the driver defers its own memory; ours is not looked at again */
	return 0;
}

static int mx_address(struct dv_runtime *rt, struct dv_replica *r, void *ss, unsigned *len)
{
	return dv_runtime_address(r->drv, IN(r), ss, len);
}

static void mx_destroy(struct dv_runtime *rt)
{
	struct mux *m = M(rt);
	dv_runtime_destroy(m->docker);
	dv_runtime_destroy(m->process);
	free(m->host);
	free(m->state_dir);
	free(m);
}

static const struct dv_runtime_driver mux_driver = {
	.name = "mux",
	.start = mx_start,
	.stop = mx_stop,
	.inspect = mx_inspect,
	.logs_tail = mx_logs_tail,
	.logs_follow = mx_logs_follow,
	.logs_unfollow = mx_logs_unfollow,
	.list = mx_list,
	.remove = mx_remove,
	.destroy = mx_destroy,
	.address = mx_address,
};

struct dv_runtime *dv_mux_new(struct dv_loop *loop, struct dv_runtime *process, const struct dv_docker_options *docker)
{
	struct mux *m = dv_xcalloc(1, sizeof *m);
	m->base.driver = &mux_driver;
	m->loop = loop;
	m->process = process;
	if (docker) {
		m->options = *docker;
		m->host = docker->host ? dv_xstrdup(docker->host) : NULL;
		m->state_dir = docker->state_dir ? dv_xstrdup(docker->state_dir) : NULL;
		m->options.host = m->host;
		m->options.state_dir = m->state_dir;
	}
	return &m->base;
}

bool dv_mux_is_container(const struct dv_replica *r)
{
	return strcmp(r->drv->driver->name, "docker") == 0;
}

const char *dv_mux_container_id(const struct dv_replica *r)
{
	return dv_mux_is_container(r) ? dv_docker_container_id(IN(r)) : NULL;
}

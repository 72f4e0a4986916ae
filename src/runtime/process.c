/* The native process driver. See process.h. */
#include "runtime/process.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/util.h"
#include "runtime/cgroup.h"
#include "runtime/replica_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define DEFAULT_STOP_TIMEOUT_MS 10000u
#define DEFAULT_OUTPUT_GRACE_MS 1000u
#define POLL_INTERVAL_MS 1000u
#define CGROUP_RETRY_MS 200u
#define CGROUP_RETRIES 50
#define READ_BUDGET (1024 * 1024) /* bytes read per pipe event before yielding */

struct proc_runtime;

struct proc_pipe {
	struct dv_io io; /* fd -1 once closed */
	struct dv_replica *replica;
	enum dv_log_stream stream;
};

struct dv_replica {
	struct proc_runtime *rt;
	struct dv_replica *prev, *next;
	char *app, *service, *release, *name;
	unsigned index;
	enum dv_replica_state state;
	pid_t pid;                  /* also the process group id (setsid) */
	uint64_t start_ticks;
	int64_t started_at_ms;
	uint64_t started_mono, ended_mono;
	int stop_signal;
	uint64_t stop_timeout_ms;
	struct dv_io pidfd;         /* fd -1: none (or closed) */
	bool reaped;
	int status;
	struct proc_pipe out, err;
	struct dv_timer stop_timer, grace_timer;
	dv_replica_exit_cb on_exit;
	void *arg;
	struct dv_replica_log log;
	struct dv_cgroup cgroup;
};

/* A replica cgroup whose directory could not be removed yet (processes still dying). */
struct cgroup_cleanup {
	struct dv_cgroup cgroup;
	int attempts;
	struct cgroup_cleanup *next;
};

struct proc_runtime {
	struct dv_runtime base; /* first: the driver table */
	struct dv_loop *loop;
	char *cgroup_name, *cgroup_root;
	bool no_cgroups;
	size_t ring_lines;
	uint64_t output_grace_ms;
	bool use_pidfd;
	struct dv_io sigchld;   /* signalfd, fd -1 if unused */
	sigset_t old_mask;
	bool mask_changed;
	struct dv_timer poll_timer;
	bool cgroups_ready;
	struct dv_cgroup_root cgroups;
	struct dv_replica *replicas;
	struct cgroup_cleanup *cleanups;
	struct dv_timer cleanup_timer;
	/* Removed replicas, freed after the current batch of events: an event of the
	 * same epoll batch may still point into them. Linked through `next`. */
	struct dv_replica *removed;
	struct dv_timer free_timer;
};

/* What the child reports through the status pipe when it cannot exec. */
enum child_stage { STAGE_SETUP = 1, STAGE_CGROUP, STAGE_STDIO, STAGE_CHDIR, STAGE_EXEC };
struct child_report {
	int stage;
	int error;
};

/* Everything the child needs, prepared before fork (the child allocates nothing). */
struct child_args {
	pid_t parent;
	const char *exe;
	char *const *argv;
	char *const *envp;
	const char *workdir;
	int stdin_fd, stdout_fd, stderr_fd, status_fd;
	const struct dv_cgroup *cgroup;
};

static const struct dv_runtime_driver process_driver;

static int64_t realtime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sys_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	errno = ENOSYS;
	return -1;
#endif
}

/* ---- /proc ---- */

struct proc_stat {
	char state;
	pid_t pgrp;
	uint64_t utime, stime, start_ticks, rss_pages;
};

static int read_proc_stat(pid_t pid, struct proc_stat *st)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -1;
	ssize_t n;
	do
		n = read(fd, buf, sizeof buf - 1);
	while (n == -1 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* The command name (field 2) may hold spaces and parentheses: skip to the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	p++;
	memset(st, 0, sizeof *st);
	for (int field = 3; field <= 24; field++) {
		while (*p == ' ')
			p++;
		if (!*p)
			return -1;
		char *end = p;
		if (field == 3) {
			st->state = *p;
			end = p + 1;
		} else {
			unsigned long long v = strtoull(p, &end, 10);
			if (end == p) {
				long long sv = strtoll(p, &end, 10); /* signed fields (tty, priority...) */
				if (end == p)
					return -1;
				v = (unsigned long long)sv;
			}
			switch (field) {
			case 5: st->pgrp = (pid_t)v; break;
			case 14: st->utime = v; break;
			case 15: st->stime = v; break;
			case 22: st->start_ticks = v; break;
			case 24: st->rss_pages = v; break;
			default: break;
			}
		}
		p = end;
	}
	return 0;
}

int dv_process_start_ticks(int pid, uint64_t *start_ticks)
{
	struct proc_stat st;
	if (pid <= 0 || read_proc_stat(pid, &st) == -1)
		return -1;
	*start_ticks = st.start_ticks;
	return 0;
}

/* Sums CPU time and RSS over the live members of process group `pgrp`. */
static void group_usage(pid_t pgrp, struct dv_replica_info *info)
{
	DIR *dir = opendir("/proc");
	if (!dir)
		return;
	uint64_t ticks = 0, pages = 0;
	unsigned count = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		struct proc_stat st;
		if (read_proc_stat((pid_t)pid, &st) == -1 || st.pgrp != pgrp || st.state == 'Z')
			continue;
		ticks += st.utime + st.stime;
		pages += st.rss_pages;
		count++;
	}
	closedir(dir);
	long hz = sysconf(_SC_CLK_TCK);
	long page = sysconf(_SC_PAGESIZE);
	info->processes = count;
	info->cpu_time_ms = hz > 0 ? ticks * 1000 / (uint64_t)hz : 0;
	info->rss_bytes = pages * (uint64_t)(page > 0 ? page : 4096);
}

int dv_process_reap_stale(int pid, uint64_t start_ticks, char **err)
{
	struct proc_stat st;
	if (pid <= 1 || read_proc_stat(pid, &st) == -1 || st.start_ticks != start_ticks || st.state == 'Z')
		return 0;
	/* Our replicas lead their own group; anything else is killed alone. */
	pid_t target = st.pgrp == pid ? -pid : pid;
	if (kill(target, SIGKILL) == -1) {
		if (errno == ESRCH)
			return 0;
		if (err)
			*err = dv_xasprintf("cannot kill the leftover process %d: %s", pid, strerror(errno));
		return -1;
	}
	return 1;
}

/* ---- the child ---- */

static _Noreturn void child_fail(int fd, int stage, int error)
{
	struct child_report report = {.stage = stage, .error = error};
	ssize_t w = write(fd, &report, sizeof report);
	(void)w;
	_exit(127);
}

/* Runs in the child between fork and exec: async-signal-safe calls only
 * (the daemon has other threads, whose locks may be held). */
static _Noreturn void child_exec(const struct child_args *a)
{
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL); /* EINVAL for the libc-reserved ones is fine */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	if (setsid() == -1)
		child_fail(a->status_fd, STAGE_SETUP, errno);
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1)
		child_fail(a->status_fd, STAGE_SETUP, errno);
	/* The parent may have died before prctl: then nobody would send the signal. */
	if (getppid() != a->parent)
		_exit(127);
	if (a->cgroup) {
		int e = dv_cgroup_join_self(a->cgroup);
		if (e)
			child_fail(a->status_fd, STAGE_CGROUP, e);
	}
	/* All three are >= 3 (see lift_fd), so dup2 never clobbers one with another. */
	if (dup2(a->stdin_fd, 0) == -1 || dup2(a->stdout_fd, 1) == -1 || dup2(a->stderr_fd, 2) == -1)
		child_fail(a->status_fd, STAGE_STDIO, errno);
	if (a->workdir && chdir(a->workdir) == -1)
		child_fail(a->status_fd, STAGE_CHDIR, errno);
	/* Davit opens everything close-on-exec; this catches what a library did not. */
	if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == -1) {
		struct rlimit rl;
		int max = 65536;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536)
			max = (int)rl.rlim_cur;
		for (int fd = 3; fd < max; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	execve(a->exe, a->argv, a->envp);
	child_fail(a->status_fd, STAGE_EXEC, errno);
}

/* ---- helpers for start ---- */

/* Moves fd to >= 3 (close-on-exec) so that the child's dup2 onto 0-2 is safe. */
static int lift_fd(int *fd)
{
	if (*fd >= 3)
		return 0;
	int nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
	if (nfd == -1)
		return -1;
	close(*fd);
	*fd = nfd;
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd != -1)
		close(*fd);
	*fd = -1;
}

static int check_name(const char *value, const char *what, char **err)
{
	if (!value || !*value || strchr(value, '/') || strcmp(value, ".") == 0 || strcmp(value, "..") == 0 ||
	    strlen(value) > 200) {
		if (err)
			*err = dv_xasprintf("invalid replica %s '%s' (must be non-empty, without '/', at most 200 bytes)",
			                    what, value ? value : "(null)");
		return -1;
	}
	return 0;
}

/* Finds argv[0] in the PATH of the child's environment, as execvp would, so that
 * "command not found" is a clear error of start(). New string, or NULL + *err. */
static char *resolve_command(const char *file, char *const *env, char **err)
{
	if (strchr(file, '/'))
		return dv_xstrdup(file); /* exec reports a missing or unusable file */
	const char *path = NULL;
	for (char *const *e = env; e && *e; e++)
		if (strncmp(*e, "PATH=", 5) == 0)
			path = *e + 5;
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path;;) {
		size_t n = strcspn(p, ":");
		char *candidate = n ? dv_xasprintf("%.*s/%s", (int)n, p, file) : dv_xasprintf("./%s", file);
		struct stat st;
		if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode) && access(candidate, X_OK) == 0)
			return candidate;
		free(candidate);
		if (!p[n])
			break;
		p += n + 1;
	}
	if (err)
		*err = dv_xasprintf("command not found: '%s' is not in PATH=%s", file, path);
	return NULL;
}

static const char *stage_text(int stage)
{
	switch (stage) {
	case STAGE_SETUP: return "setting up the process";
	case STAGE_CGROUP: return "joining its cgroup";
	case STAGE_STDIO: return "redirecting stdin/stdout/stderr";
	case STAGE_CHDIR: return "changing to the working directory";
	default: return "executing";
	}
}

/* ---- exit handling ---- */

static void update_poll_timer(struct proc_runtime *rt);
static void reap_all(struct proc_runtime *rt);

static void close_pipe(struct proc_runtime *rt, struct proc_pipe *p)
{
	if (p->io.fd == -1)
		return;
	dv_replica_log_feed_end(&p->replica->log, p->stream);
	dv_loop_del(rt->loop, &p->io);
	close_fd(&p->io.fd);
}

/* Reads what the pipe holds. Returns 1 if it should be read again later (budget
 * spent, re-armed), 0 otherwise; closes it at EOF or on error. */
static int drain_pipe(struct proc_runtime *rt, struct proc_pipe *p)
{
	char buf[64 * 1024];
	size_t total = 0;
	while (p->io.fd != -1) {
		ssize_t n = read(p->io.fd, buf, sizeof buf);
		if (n > 0) {
			dv_replica_log_feed(&p->replica->log, p->stream, buf, (size_t)n);
			total += (size_t)n;
			if (total >= READ_BUDGET) {
				/* Let the loop breathe; MOD re-reports the fd if still readable. */
				if (dv_loop_mod(rt->loop, &p->io, EPOLLIN) == 0)
					return 1;
			}
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		close_pipe(rt, p); /* EOF, or an error we cannot recover from */
	}
	return 0;
}

static void cleanup_timer_cb(struct dv_loop *loop, struct dv_timer *timer)
{
	struct proc_runtime *rt = dv_container_of(timer, struct proc_runtime, cleanup_timer);
	struct cgroup_cleanup **pp = &rt->cleanups;
	while (*pp) {
		struct cgroup_cleanup *c = *pp;
		dv_cgroup_kill(&c->cgroup);
		if (dv_cgroup_remove(&c->cgroup) == 0 || ++c->attempts >= CGROUP_RETRIES) {
			if (c->attempts >= CGROUP_RETRIES)
				dv_log_warn("runtime", "could not remove the cgroup %s (still busy)",
				            c->cgroup.dirs[0] ? c->cgroup.dirs[0] : c->cgroup.dirs[1]);
			*pp = c->next;
			dv_cgroup_dispose(&c->cgroup);
			free(c);
			continue;
		}
		pp = &c->next;
	}
	if (rt->cleanups)
		dv_timer_set(loop, &rt->cleanup_timer, dv_loop_now(loop) + CGROUP_RETRY_MS);
}

static void release_cgroup(struct proc_runtime *rt, struct dv_replica *r)
{
	dv_cgroup_close_fds(&r->cgroup);
	if (r->cgroup.n == 0 || dv_cgroup_remove(&r->cgroup) == 0) {
		dv_cgroup_dispose(&r->cgroup);
		return;
	}
	struct cgroup_cleanup *c = dv_xcalloc(1, sizeof *c);
	c->cgroup = r->cgroup;
	memset(&r->cgroup, 0, sizeof r->cgroup);
	for (size_t i = 0; i < DV_CGROUP_DIRS; i++)
		r->cgroup.procs_fds[i] = -1;
	c->next = rt->cleanups;
	rt->cleanups = c;
	if (!dv_timer_armed(&rt->cleanup_timer))
		dv_timer_set(rt->loop, &rt->cleanup_timer, dv_loop_update_now(rt->loop) + CGROUP_RETRY_MS);
}

/* The end: output collected, resources released, callback last (it may free r). */
static void finish(struct dv_replica *r)
{
	struct proc_runtime *rt = r->rt;
	dv_timer_cancel(rt->loop, &r->grace_timer);
	dv_timer_cancel(rt->loop, &r->stop_timer);
	close_pipe(rt, &r->out);
	close_pipe(rt, &r->err);
	dv_replica_log_end(&r->log);
	release_cgroup(rt, r);
	r->state = DV_REPLICA_EXITED;
	if (r->on_exit)
		r->on_exit(r, r->status, r->arg);
}

static void grace_timer_cb(struct dv_loop *loop, struct dv_timer *timer)
{
	struct dv_replica *r = dv_container_of(timer, struct dv_replica, grace_timer);
	dv_log_warn("runtime", "%s/%s/%s exited but its output did not end within %" PRIu64
	            " ms (a process that left its group still holds it); closing it",
	            r->app, r->service, r->name, r->rt->output_grace_ms);
	finish(r);
}

/* The main process is gone: kill what is left of the group, collect the output. */
static void reaped(struct dv_replica *r, int status)
{
	struct proc_runtime *rt = r->rt;
	r->reaped = true;
	r->status = status;
	r->ended_mono = dv_loop_update_now(rt->loop);
	if (r->pidfd.fd != -1) {
		dv_loop_del(rt->loop, &r->pidfd);
		close_fd(&r->pidfd.fd);
	}
	dv_timer_cancel(rt->loop, &r->stop_timer);
	/* As a container's processes die with its init: no strays holding ports or pipes. */
	kill(-r->pid, SIGKILL);
	dv_cgroup_kill(&r->cgroup);
	drain_pipe(rt, &r->out);
	drain_pipe(rt, &r->err);
	if (r->out.io.fd == -1 && r->err.io.fd == -1)
		finish(r);
	else
		dv_timer_set(rt->loop, &r->grace_timer, dv_loop_now(rt->loop) + rt->output_grace_ms);
}

/* Returns true if r was reaped (and possibly freed by its callback). */
static bool try_reap(struct dv_replica *r)
{
	if (r->reaped)
		return false;
	int status = 0;
	pid_t w;
	do
		w = waitpid(r->pid, &status, WNOHANG);
	while (w == -1 && errno == EINTR);
	if (w == 0)
		return false;
	if (w == -1) /* ECHILD: reaped by someone else; the status is lost */
		status = DV_REPLICA_STATUS_UNKNOWN;
	reaped(r, status);
	return true;
}

static void reap_all(struct proc_runtime *rt)
{
	/* Callbacks may remove replicas: start over after each reap. */
again:
	for (struct dv_replica *r = rt->replicas; r; r = r->next)
		if (!r->reaped && try_reap(r))
			goto again;
}

static void pidfd_cb(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dv_replica *r = dv_container_of(io, struct dv_replica, pidfd);
	try_reap(r);
}

static void sigchld_cb(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct proc_runtime *rt = dv_container_of(io, struct proc_runtime, sigchld);
	struct signalfd_siginfo info[16];
	while (read(io->fd, info, sizeof info) > 0)
		;
	reap_all(rt);
}

static bool needs_polling(const struct proc_runtime *rt)
{
	for (const struct dv_replica *r = rt->replicas; r; r = r->next)
		if (!r->reaped && r->pidfd.fd == -1)
			return true;
	return false;
}

static void poll_timer_cb(struct dv_loop *loop, struct dv_timer *timer)
{
	struct proc_runtime *rt = dv_container_of(timer, struct proc_runtime, poll_timer);
	reap_all(rt);
	update_poll_timer(rt);
}

static void update_poll_timer(struct proc_runtime *rt)
{
	if (needs_polling(rt)) {
		if (!dv_timer_armed(&rt->poll_timer))
			dv_timer_set(rt->loop, &rt->poll_timer, dv_loop_update_now(rt->loop) + POLL_INTERVAL_MS);
	} else {
		dv_timer_cancel(rt->loop, &rt->poll_timer);
	}
}

static void pipe_cb(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct proc_pipe *p = dv_container_of(io, struct proc_pipe, io);
	struct dv_replica *r = p->replica;
	drain_pipe(r->rt, p);
	if (r->reaped && r->state != DV_REPLICA_EXITED && r->out.io.fd == -1 && r->err.io.fd == -1)
		finish(r);
}

static void stop_timer_cb(struct dv_loop *loop, struct dv_timer *timer)
{
	struct dv_replica *r = dv_container_of(timer, struct dv_replica, stop_timer);
	if (r->reaped)
		return;
	dv_log_info("runtime", "%s/%s/%s did not stop within %" PRIu64 " ms; killing it", r->app, r->service,
	            r->name, r->stop_timeout_ms);
	kill(-r->pid, SIGKILL);
	dv_cgroup_kill(&r->cgroup);
}

/* ---- the driver functions ---- */

static void ensure_cgroups(struct proc_runtime *rt)
{
	if (rt->cgroups_ready)
		return;
	dv_cgroup_root_init(&rt->cgroups, rt->cgroup_root, "/proc/self/cgroup", rt->cgroup_name);
	rt->cgroups_ready = true;
}

static void replica_free(struct dv_replica *r)
{
	dv_replica_log_dispose(&r->log);
	dv_cgroup_dispose(&r->cgroup);
	free(r->app);
	free(r->service);
	free(r->release);
	free(r->name);
	free(r);
}

static int proc_start(struct dv_runtime *base, const struct dv_replica_spec *spec, dv_replica_exit_cb on_exit,
                      void *arg, struct dv_replica **out, char **err)
{
	struct proc_runtime *rt = (struct proc_runtime *)base;
	struct dv_replica *r = NULL;
	char *name = NULL, *exe = NULL, *leaf = NULL, *cg_err = NULL;
	int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, status_pipe[2] = {-1, -1}, devnull = -1;
	bool forked = false;
	int rc = -1;
	char *shell_argv[4] = {"/bin/sh", "-c", NULL, NULL};
	char *empty_env[] = {NULL};
	char *const *argv;

	if (check_name(spec->app, "app", err) == -1 || check_name(spec->service, "service", err) == -1)
		goto out;
	if (spec->name)
		name = dv_xstrdup(spec->name);
	else if (spec->release)
		name = dv_xasprintf("%s-%u", spec->release, spec->index);
	else
		name = dv_xasprintf("%u", spec->index);
	if (check_name(name, "name", err) == -1)
		goto out;
	if (spec->command) {
		shell_argv[2] = (char *)spec->command;
		argv = shell_argv;
		exe = dv_xstrdup("/bin/sh");
	} else if (spec->argv && spec->argv[0]) {
		argv = spec->argv;
		if (!(exe = resolve_command(argv[0], spec->env, err)))
			goto out;
	} else {
		if (err)
			*err = dv_xasprintf("%s/%s: nothing to run (no command and no argv)", spec->app, spec->service);
		goto out;
	}

	r = dv_xcalloc(1, sizeof *r);
	r->rt = rt;
	r->app = dv_xstrdup(spec->app);
	r->service = dv_xstrdup(spec->service);
	r->release = spec->release ? dv_xstrdup(spec->release) : NULL;
	r->name = name;
	name = NULL;
	r->index = spec->index;
	r->stop_signal = spec->stop_signal > 0 ? spec->stop_signal : SIGTERM;
	r->stop_timeout_ms = spec->stop_timeout_ms ? spec->stop_timeout_ms : DEFAULT_STOP_TIMEOUT_MS;
	r->pidfd.fd = -1;
	r->pidfd.cb = pidfd_cb;
	r->out = (struct proc_pipe){.io = {.fd = -1, .cb = pipe_cb}, .replica = r, .stream = DV_LOG_STREAM_STDOUT};
	r->err = (struct proc_pipe){.io = {.fd = -1, .cb = pipe_cb}, .replica = r, .stream = DV_LOG_STREAM_STDERR};
	r->stop_timer.cb = stop_timer_cb;
	r->grace_timer.cb = grace_timer_cb;
	r->on_exit = on_exit;
	r->arg = arg;
	for (size_t i = 0; i < DV_CGROUP_DIRS; i++)
		r->cgroup.procs_fds[i] = -1;

	if (dv_replica_log_init(&r->log, r, spec->log_dir, spec->service, r->name, spec->log_max_bytes,
	                        spec->log_max_files, rt->ring_lines, err) == -1)
		goto out;

	if (spec->memory_limit || spec->cpu_limit > 0) {
		if (rt->no_cgroups) {
			dv_log_warn("runtime", "%s/%s/%s: cgroups are disabled; running without memory/CPU limits",
			            r->app, r->service, r->name);
		} else {
			ensure_cgroups(rt);
			leaf = dv_xasprintf("%s.%s.%s", r->app, r->service, r->name);
			if (dv_cgroup_create(&rt->cgroups, leaf, spec->memory_limit, spec->cpu_limit, &r->cgroup,
			                     &cg_err) == -1)
				dv_log_warn("runtime", "%s/%s/%s: running without memory/CPU limits: %s", r->app,
				            r->service, r->name, cg_err);
		}
	}

	if (pipe2(out_pipe, O_CLOEXEC) == -1 || pipe2(err_pipe, O_CLOEXEC) == -1 ||
	    pipe2(status_pipe, O_CLOEXEC) == -1 || (devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) == -1 ||
	    lift_fd(&out_pipe[1]) == -1 || lift_fd(&err_pipe[1]) == -1 || lift_fd(&devnull) == -1) {
		if (err)
			*err = dv_xasprintf("cannot start %s/%s/%s: creating pipes: %s", r->app, r->service, r->name,
			                    strerror(errno));
		goto out;
	}

	struct child_args args = {
		.parent = getpid(),
		.exe = exe,
		.argv = argv,
		.envp = spec->env ? spec->env : empty_env,
		.workdir = spec->workdir,
		.stdin_fd = devnull,
		.stdout_fd = out_pipe[1],
		.stderr_fd = err_pipe[1],
		.status_fd = status_pipe[1],
		.cgroup = r->cgroup.n ? &r->cgroup : NULL,
	};
	pid_t pid = fork();
	if (pid == -1) {
		if (err)
			*err = dv_xasprintf("cannot start %s/%s/%s: fork: %s", r->app, r->service, r->name,
			                    strerror(errno));
		goto out;
	}
	if (pid == 0)
		child_exec(&args);
	forked = true;
	r->pid = pid;
	close_fd(&out_pipe[1]);
	close_fd(&err_pipe[1]);
	close_fd(&status_pipe[1]);
	close_fd(&devnull);
	dv_cgroup_close_fds(&r->cgroup);

	/* Wait for the exec (EOF: the pipe closed on exec) or the child's report. */
	struct child_report report;
	size_t got = 0;
	while (got < sizeof report) {
		ssize_t n = read(status_pipe[0], (char *)&report + got, sizeof report - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got > 0) {
		if (err) {
			if (got == sizeof report && report.stage == STAGE_CHDIR)
				*err = dv_xasprintf("cannot start %s/%s/%s: working directory %s: %s", r->app, r->service,
				                    r->name, spec->workdir, strerror(report.error));
			else if (got == sizeof report)
				*err = dv_xasprintf("cannot start %s/%s/%s: %s %s: %s", r->app, r->service, r->name,
				                    stage_text(report.stage), exe, strerror(report.error));
			else
				*err = dv_xasprintf("cannot start %s/%s/%s: the child failed before exec", r->app,
				                    r->service, r->name);
		}
		goto out;
	}

	r->started_at_ms = realtime_ms();
	r->started_mono = dv_loop_update_now(rt->loop);
	if (dv_process_start_ticks(pid, &r->start_ticks) == -1)
		r->start_ticks = 0;
	if (rt->use_pidfd) {
		r->pidfd.fd = sys_pidfd_open(pid);
		if (r->pidfd.fd != -1 && dv_loop_add(rt->loop, &r->pidfd, EPOLLIN) == -1)
			close_fd(&r->pidfd.fd);
	}
	r->out.io.fd = out_pipe[0];
	r->err.io.fd = err_pipe[0];
	out_pipe[0] = err_pipe[0] = -1;
	struct proc_pipe *pipes[2] = {&r->out, &r->err};
	for (int i = 0; i < 2; i++) {
		int flags = fcntl(pipes[i]->io.fd, F_GETFL);
		fcntl(pipes[i]->io.fd, F_SETFL, flags | O_NONBLOCK);
		if (dv_loop_add(rt->loop, &pipes[i]->io, EPOLLIN) == -1) {
			/* Cannot happen short of a kernel out of memory: lose the output, not the replica. */
			dv_log_error("runtime", "%s/%s/%s: cannot watch its output: %s", r->app, r->service, r->name,
			             strerror(errno));
			close_fd(&pipes[i]->io.fd);
		}
	}
	r->state = DV_REPLICA_RUNNING;
	r->next = rt->replicas;
	if (rt->replicas)
		rt->replicas->prev = r;
	rt->replicas = r;
	update_poll_timer(rt);
	*out = r;
	r = NULL;
	rc = 0;
out:
	if (r) {
		if (forked) {
			int status;
			kill(-r->pid, SIGKILL);
			while (waitpid(r->pid, &status, 0) == -1 && errno == EINTR)
				;
		}
		dv_cgroup_close_fds(&r->cgroup);
		dv_cgroup_remove(&r->cgroup);
		replica_free(r); /* disposes the log if it was set up */
	}
	close_fd(&out_pipe[0]);
	close_fd(&out_pipe[1]);
	close_fd(&err_pipe[0]);
	close_fd(&err_pipe[1]);
	close_fd(&status_pipe[0]);
	close_fd(&status_pipe[1]);
	close_fd(&devnull);
	free(name);
	free(exe);
	free(leaf);
	free(cg_err);
	return rc;
}

static int proc_stop(struct dv_runtime *base, struct dv_replica *r, char **err)
{
	struct proc_runtime *rt = (struct proc_runtime *)base;
	if (r->reaped || r->state == DV_REPLICA_EXITED || r->state == DV_REPLICA_STOPPING)
		return 0;
	if (kill(-r->pid, r->stop_signal) == -1 && errno != ESRCH) {
		if (err)
			*err = dv_xasprintf("cannot signal %s/%s/%s (pid %d): %s", r->app, r->service, r->name,
			                    (int)r->pid, strerror(errno));
		return -1;
	}
	r->state = DV_REPLICA_STOPPING;
	dv_timer_set(rt->loop, &r->stop_timer, dv_loop_update_now(rt->loop) + r->stop_timeout_ms);
	return 0;
}

static int proc_inspect(struct dv_runtime *base, struct dv_replica *r, struct dv_replica_info *info, char **err)
{
	struct proc_runtime *rt = (struct proc_runtime *)base;
	memset(info, 0, sizeof *info);
	info->state = r->state;
	info->pid = r->pid;
	info->start_ticks = r->start_ticks;
	info->started_at_ms = r->started_at_ms;
	uint64_t end = r->reaped ? r->ended_mono : dv_loop_update_now(rt->loop);
	info->uptime_ms = end > r->started_mono ? end - r->started_mono : 0;
	info->limits_applied = r->cgroup.n > 0;
	if (r->reaped) {
		info->has_exit_status = r->status != DV_REPLICA_STATUS_UNKNOWN;
		info->exit_status = r->status;
	} else {
		group_usage(r->pid, info);
	}
	return 0;
}

static size_t proc_logs_tail(struct dv_runtime *base, struct dv_replica *r, size_t max_lines, dv_log_line_cb cb,
                             void *arg)
{
	return dv_replica_log_tail(&r->log, max_lines, cb, arg);
}

static struct dv_log_follow *proc_logs_follow(struct dv_runtime *base, struct dv_replica *r, dv_log_line_cb cb,
                                              void *arg)
{
	return dv_replica_log_follow(&r->log, cb, arg);
}

static void proc_logs_unfollow(struct dv_runtime *base, struct dv_log_follow *follow)
{
	dv_replica_log_unfollow(follow);
}

static char *dup_or_null(const char *s)
{
	return s ? dv_xstrdup(s) : NULL;
}

static int proc_list(struct dv_runtime *base, const struct dv_replica_ref *known, size_t n_known,
                     struct dv_replica_ref **found, size_t *n_found, char **err)
{
	struct dv_replica_ref *list = n_known ? dv_xcalloc(n_known, sizeof *list) : NULL;
	size_t n = 0;
	for (size_t i = 0; i < n_known; i++) {
		struct proc_stat st;
		if (known[i].pid <= 1 || read_proc_stat(known[i].pid, &st) == -1 ||
		    st.start_ticks != known[i].start_ticks || st.state == 'Z')
			continue;
		struct dv_replica_ref *ref = &list[n++];
		ref->app = dup_or_null(known[i].app);
		ref->service = dup_or_null(known[i].service);
		ref->release = dup_or_null(known[i].release);
		ref->name = dup_or_null(known[i].name);
		ref->id = dup_or_null(known[i].id);
		ref->index = known[i].index;
		ref->pid = known[i].pid;
		ref->start_ticks = known[i].start_ticks;
	}
	*found = list;
	*n_found = n;
	return 0;
}

static void unlink_replica(struct proc_runtime *rt, struct dv_replica *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else if (rt->replicas == r)
		rt->replicas = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
}

static void free_removed(struct proc_runtime *rt)
{
	while (rt->removed) {
		struct dv_replica *r = rt->removed;
		rt->removed = r->next;
		replica_free(r);
	}
}

static void free_timer_cb(struct dv_loop *loop, struct dv_timer *timer)
{
	free_removed(dv_container_of(timer, struct proc_runtime, free_timer));
}

static int proc_remove(struct dv_runtime *base, struct dv_replica *r, char **err)
{
	struct proc_runtime *rt = (struct proc_runtime *)base;
	if (r->state != DV_REPLICA_EXITED) {
		if (err)
			*err = dv_xasprintf("%s/%s/%s is still running (pid %d): stop it and wait for its exit first",
			                    r->app, r->service, r->name, (int)r->pid);
		return -1;
	}
	unlink_replica(rt, r);
	/* Its fds are closed, but events already returned by this epoll_wait may
	 * still name its dv_io: free it once the batch is over (timers run after it). */
	r->next = rt->removed;
	rt->removed = r;
	if (!dv_timer_armed(&rt->free_timer))
		dv_timer_set(rt->loop, &rt->free_timer, dv_loop_now(rt->loop));
	return 0;
}

static void proc_destroy(struct dv_runtime *base)
{
	struct proc_runtime *rt = (struct proc_runtime *)base;
	while (rt->replicas) {
		struct dv_replica *r = rt->replicas;
		unlink_replica(rt, r);
		if (!r->reaped) {
			int status;
			kill(-r->pid, SIGKILL);
			dv_cgroup_kill(&r->cgroup);
			/* Blocks for as long as a SIGKILLed process takes to go: shutdown only. */
			while (waitpid(r->pid, &status, 0) == -1 && errno == EINTR)
				;
		}
		if (r->pidfd.fd != -1) {
			dv_loop_del(rt->loop, &r->pidfd);
			close_fd(&r->pidfd.fd);
		}
		dv_timer_cancel(rt->loop, &r->stop_timer);
		dv_timer_cancel(rt->loop, &r->grace_timer);
		close_pipe(rt, &r->out);
		close_pipe(rt, &r->err);
		dv_cgroup_close_fds(&r->cgroup);
		dv_cgroup_remove(&r->cgroup);
		replica_free(r);
	}
	while (rt->cleanups) {
		struct cgroup_cleanup *c = rt->cleanups;
		rt->cleanups = c->next;
		dv_cgroup_remove(&c->cgroup);
		dv_cgroup_dispose(&c->cgroup);
		free(c);
	}
	free_removed(rt);
	dv_timer_cancel(rt->loop, &rt->free_timer);
	dv_timer_cancel(rt->loop, &rt->cleanup_timer);
	dv_timer_cancel(rt->loop, &rt->poll_timer);
	if (rt->sigchld.fd != -1) {
		dv_loop_del(rt->loop, &rt->sigchld);
		close_fd(&rt->sigchld.fd);
	}
	if (rt->mask_changed)
		pthread_sigmask(SIG_SETMASK, &rt->old_mask, NULL);
	if (rt->cgroups_ready)
		dv_cgroup_root_dispose(&rt->cgroups);
	free(rt->cgroup_name);
	free(rt->cgroup_root);
	free(rt);
}

static const struct dv_runtime_driver process_driver = {
	.name = "process",
	.start = proc_start,
	.stop = proc_stop,
	.inspect = proc_inspect,
	.logs_tail = proc_logs_tail,
	.logs_follow = proc_logs_follow,
	.logs_unfollow = proc_logs_unfollow,
	.list = proc_list,
	.remove = proc_remove,
	.destroy = proc_destroy,
};

struct dv_runtime *dv_process_new(struct dv_loop *loop, const struct dv_process_options *options, char **err)
{
	struct dv_process_options defaults = {0};
	const struct dv_process_options *o = options ? options : &defaults;
	struct proc_runtime *rt = dv_xcalloc(1, sizeof *rt);
	rt->base.driver = &process_driver;
	rt->loop = loop;
	rt->cgroup_name = dv_xstrdup(o->cgroup_name ? o->cgroup_name : "davit");
	rt->cgroup_root = dv_xstrdup(o->cgroup_root ? o->cgroup_root : "/sys/fs/cgroup");
	rt->no_cgroups = o->no_cgroups;
	rt->ring_lines = o->ring_lines;
	rt->output_grace_ms = o->output_grace_ms ? o->output_grace_ms : DEFAULT_OUTPUT_GRACE_MS;
	rt->sigchld.fd = -1;
	rt->sigchld.cb = sigchld_cb;
	rt->poll_timer.cb = poll_timer_cb;
	rt->cleanup_timer.cb = cleanup_timer_cb;
	rt->free_timer.cb = free_timer_cb;

	if (!o->use_sigchld) {
		int probe = sys_pidfd_open(getpid());
		if (probe != -1) {
			close(probe);
			rt->use_pidfd = true;
		}
	}
	if (!rt->use_pidfd) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGCHLD);
		if (pthread_sigmask(SIG_BLOCK, &set, &rt->old_mask) == 0)
			rt->mask_changed = true;
		rt->sigchld.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
		if (rt->sigchld.fd == -1 || dv_loop_add(loop, &rt->sigchld, EPOLLIN) == -1) {
			if (err)
				*err = dv_xasprintf("process driver: cannot watch SIGCHLD: %s", strerror(errno));
			proc_destroy(&rt->base);
			return NULL;
		}
	}
	return &rt->base;
}

int dv_process_pid(const struct dv_replica *replica)
{
	return replica->reaped ? 0 : (int)replica->pid;
}

const char *dv_process_cgroup_dir(const struct dv_replica *replica, const char *controller)
{
	return dv_cgroup_dir(&replica->cgroup, controller);
}

const char *dv_process_cgroup_mode(const struct dv_runtime *base, const char **reason)
{
	struct proc_runtime *rt = (struct proc_runtime *)(void *)base;
	if (!rt->no_cgroups)
		ensure_cgroups(rt);
	if (reason)
		*reason = rt->no_cgroups ? "disabled by the options" : rt->cgroups.reason;
	if (rt->no_cgroups)
		return "none";
	switch (rt->cgroups.mode) {
	case DV_CGROUP_V1: return "v1";
	case DV_CGROUP_V2: return "v2";
	default: return "none";
	}
}

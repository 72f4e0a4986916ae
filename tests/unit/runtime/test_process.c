/* Unit tests for src/runtime: the process driver with real processes (output,
 * exit status, env/cwd, exec failures, stop with SIGKILL escalation, process
 * groups, log rotation and long lines, cgroup limits, re-discovery,
 * PDEATHSIG), the restart helpers, and the cgroup v2 code path on a fake
 * tree.
 *
 * Every wait drives the dv_loop with a deadline (no sleeps). The test process
 * makes itself a child subreaper so that orphaned grandchildren are reparented
 * to it and their death can be observed with waitpid(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/loop.h"
#include "core/util.h"
#include "runtime/cgroup.h"
#include "runtime/process.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *test_env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "FOO=bar baz", NULL};

/* ---- fixture and helpers ---- */

struct fixture {
	struct dv_loop *loop;
	struct dv_runtime *rt;
	char dir[64];
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(flag == FTW_DP) ? rmdir(path) : unlink(path);
	return 0;
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
	struct fixture *f = dv_xcalloc(1, sizeof *f);
	char *err = NULL;
	snprintf(f->dir, sizeof f->dir, "/tmp/davit-rt-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->loop = dv_loop_new(&err);
	if (!f->loop)
		return -1;
	struct dv_process_options opts = {.no_cgroups = true};
	f->rt = dv_process_new(f->loop, &opts, &err);
	if (!f->rt)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	dv_runtime_destroy(f->rt);
	dv_loop_free(f->loop);
	rm_tree(f->dir);
	free(f);
	return 0;
}

struct waiter {
	bool (*pred)(void *arg);
	void *arg;
	bool timed_out;
	struct dv_timer deadline, tick;
};

static void wait_check(struct dv_loop *loop, void *arg)
{
	struct waiter *w = arg;
	if (w->pred(w->arg))
		dv_loop_stop(loop);
}

static void wait_deadline(struct dv_loop *loop, struct dv_timer *timer)
{
	struct waiter *w = dv_container_of(timer, struct waiter, deadline);
	w->timed_out = true;
	dv_loop_stop(loop);
}

/* Re-checks the predicate every 10 ms for conditions the loop does not see. */
static void wait_tick(struct dv_loop *loop, struct dv_timer *timer)
{
	dv_timer_set(loop, timer, dv_loop_now(loop) + 10);
}

/* Runs the loop until pred(arg) holds; false if `ms` passed first. */
static bool run_until(struct dv_loop *loop, bool (*pred)(void *), void *arg, uint64_t ms)
{
	struct waiter w = {.pred = pred, .arg = arg};
	w.deadline.cb = wait_deadline;
	w.tick.cb = wait_tick;
	uint64_t now = dv_loop_update_now(loop);
	dv_timer_set(loop, &w.deadline, now + ms);
	dv_timer_set(loop, &w.tick, now + 10);
	dv_loop_run(loop, wait_check, &w);
	dv_timer_cancel(loop, &w.deadline);
	dv_timer_cancel(loop, &w.tick);
	return !w.timed_out || pred(arg);
}

struct exit_rec {
	int calls;
	int status;
	uint64_t at_ms;
	struct dv_replica *replica;
};

static void on_exit_cb(struct dv_replica *replica, int status, void *arg)
{
	struct exit_rec *rec = arg;
	rec->calls++;
	rec->status = status;
	rec->at_ms = dv_now_ms();
	rec->replica = replica;
}

static bool exited(void *arg)
{
	return ((struct exit_rec *)arg)->calls > 0;
}

static bool never(void *arg)
{
	return false;
}

struct lines {
	char *text[4096];
	enum dv_log_stream stream[4096];
	bool truncated[4096];
	uint64_t seq[4096];
	size_t n;
	bool ended;
};

static void collect(struct dv_replica *replica, const struct dv_log_line *line, void *arg)
{
	struct lines *l = arg;
	if (!line) {
		l->ended = true;
		return;
	}
	if (l->n == DV_ARRAY_LEN(l->text))
		return;
	l->text[l->n] = dv_xstrndup(line->text, line->len);
	l->stream[l->n] = line->stream;
	l->truncated[l->n] = line->truncated;
	l->seq[l->n] = line->seq;
	l->n++;
}

static void lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->text[i]);
	l->n = 0;
	l->ended = false;
}

static int find_line(const struct lines *l, const char *text)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->text[i], text) == 0)
			return (int)i;
	return -1;
}

static struct lines *tail(struct fixture *f, struct dv_replica *r, struct lines *l)
{
	lines_free(l);
	dv_runtime_logs_tail(f->rt, r, 0, collect, l);
	return l;
}

static char *read_file(const char *path)
{
	FILE *fp = fopen(path, "re");
	if (!fp)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = dv_xmalloc(cap);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
		len += n;
		if (cap - len - 1 == 0) {
			cap *= 2;
			buf = dv_xrealloc(buf, cap);
		}
	}
	fclose(fp);
	buf[len] = '\0';
	return buf;
}

static bool matches(const char *text, const char *pattern)
{
	regex_t re;
	assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE | REG_NOSUB), 0);
	bool ok = regexec(&re, text, 0, NULL, 0) == 0;
	regfree(&re);
	return ok;
}

static struct dv_replica *start_shell(struct fixture *f, const char *command, struct exit_rec *rec)
{
	struct dv_replica_spec spec = {
		.app = "shop", .service = "web", .index = 0, .command = command, .env = test_env,
		.log_dir = f->dir, .stop_timeout_ms = 5000,
	};
	struct dv_replica *r = NULL;
	char *err = NULL;
	if (dv_runtime_start(f->rt, &spec, on_exit_cb, rec, &r, &err) != 0)
		fail_msg("start: %s", err);
	return r;
}

static void remove_replica(struct fixture *f, struct dv_replica *r)
{
	char *err = NULL;
	if (dv_runtime_remove(f->rt, r, &err) != 0)
		fail_msg("remove: %s", err);
}

/* ---- tests ---- */

static void test_output_and_exit_status(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	struct dv_replica *r = start_shell(f, "echo hello; echo err >&2; exit 3", &rec);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	assert_int_equal(rec.calls, 1);
	assert_ptr_equal(rec.replica, r);
	assert_true(WIFEXITED(rec.status));
	assert_int_equal(WEXITSTATUS(rec.status), 3);

	/* Both lines are in the ring with their stream, before the exit was reported. */
	static struct lines l;
	tail(f, r, &l);
	assert_int_equal(l.n, 2);
	int out = find_line(&l, "hello"), err = find_line(&l, "err");
	assert_true(out >= 0 && err >= 0);
	assert_int_equal(l.stream[out], DV_LOG_STREAM_STDOUT);
	assert_int_equal(l.stream[err], DV_LOG_STREAM_STDERR);
	lines_free(&l);

	char path[128];
	snprintf(path, sizeof path, "%s/web/0.log", f->dir);
	char *text = read_file(path);
	assert_non_null(text);
	const char *ts = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z ";
	char pattern[256];
	snprintf(pattern, sizeof pattern, "%sstdout hello$", ts);
	assert_true(matches(text, pattern));
	snprintf(pattern, sizeof pattern, "%sstderr err$", ts);
	assert_true(matches(text, pattern));
	free(text);

	struct dv_replica_info info;
	assert_int_equal(dv_runtime_inspect(f->rt, r, &info, NULL), 0);
	assert_int_equal(info.state, DV_REPLICA_EXITED);
	assert_true(info.has_exit_status);
	assert_int_equal(WEXITSTATUS(info.exit_status), 3);
	assert_int_equal(dv_process_pid(r), 0);
	/* Following an ended log gives nothing to follow. */
	assert_null(dv_runtime_logs_follow(f->rt, r, collect, &l));
	remove_replica(f, r);
}

static void test_env_and_workdir(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	char workdir[128];
	snprintf(workdir, sizeof workdir, "%s/work dir", f->dir);
	assert_int_equal(mkdir(workdir, 0755), 0);
	struct dv_replica_spec spec = {
		.app = "shop", .service = "api", .release = "r1", .index = 2,
		.command = "echo \"$FOO\"; pwd; echo \"home=${HOME-unset}\"; ls /proc/self/fd | wc -l",
		.env = test_env, .workdir = workdir, .log_dir = f->dir,
	};
	struct dv_replica *r = NULL;
	char *err = NULL;
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), 0);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	assert_int_equal(WEXITSTATUS(rec.status), 0);
	static struct lines l;
	tail(f, r, &l);
	assert_int_equal(l.n, 4);
	assert_string_equal(l.text[0], "bar baz");
	assert_string_equal(l.text[1], workdir);
	assert_string_equal(l.text[2], "home=unset"); /* nothing added to the environment */
	/* ls sees 0, 1, 2 and its own directory fd: nothing of the daemon leaked. */
	assert_string_equal(l.text[3], "4");
	lines_free(&l);
	char path[160];
	snprintf(path, sizeof path, "%s/api/r1-2.log", f->dir);
	assert_int_equal(access(path, F_OK), 0);
	remove_replica(f, r);
}

static void test_exec_failures(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	struct dv_replica *r = NULL;
	char *err = NULL;
	char *missing[] = {"/nonexistent/davit-binary", NULL};
	struct dv_replica_spec spec = {.app = "shop", .service = "web", .argv = missing, .env = test_env};
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), -1);
	assert_non_null(strstr(err, "/nonexistent/davit-binary"));
	assert_non_null(strstr(err, "No such file or directory"));
	dv_free(&err);

	char *unknown[] = {"davit-no-such-command", NULL};
	spec.argv = unknown;
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), -1);
	assert_non_null(strstr(err, "command not found"));
	assert_non_null(strstr(err, "davit-no-such-command"));
	dv_free(&err);

	char plain[128];
	snprintf(plain, sizeof plain, "%s/not-executable", f->dir);
	int fd = open(plain, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);
	char *not_exec[] = {plain, NULL};
	spec.argv = not_exec;
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), -1);
	assert_non_null(strstr(err, "Permission denied"));
	dv_free(&err);

	char *ok[] = {"true", NULL};
	spec.argv = ok;
	spec.workdir = "/nonexistent-davit-dir";
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), -1);
	assert_non_null(strstr(err, "working directory /nonexistent-davit-dir"));
	assert_non_null(strstr(err, "No such file or directory"));
	dv_free(&err);

	spec.workdir = NULL;
	spec.service = "a/b";
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), -1);
	assert_non_null(strstr(err, "invalid replica service"));
	dv_free(&err);

	spec.service = "web";
	spec.argv = NULL;
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), -1);
	assert_non_null(strstr(err, "nothing to run"));
	dv_free(&err);

	/* No exit callback for a start that failed. */
	run_until(f->loop, never, NULL, 50);
	assert_int_equal(rec.calls, 0);

	/* Through the shell, a missing command is the shell's exit 127 and its message. */
	r = start_shell(f, "davit-no-such-command", &rec);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	assert_int_equal(WEXITSTATUS(rec.status), 127);
	static struct lines l;
	tail(f, r, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.stream[0], DV_LOG_STREAM_STDERR);
	assert_non_null(strstr(l.text[0], "not found"));
	lines_free(&l);
	remove_replica(f, r);
}

static bool has_lines(void *arg)
{
	return ((struct lines *)arg)->n > 0;
}

static void test_stop_escalates_to_sigkill(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	static struct lines l;
	struct dv_replica_spec spec = {
		.app = "shop", .service = "web", .command = "trap '' TERM; echo ready; sleep 100",
		.env = test_env, .stop_timeout_ms = 300,
	};
	struct dv_replica *r = NULL;
	char *err = NULL;
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), 0);
	struct dv_log_follow *follow = dv_runtime_logs_follow(f->rt, r, collect, &l);
	assert_non_null(follow);
	assert_true(run_until(f->loop, has_lines, &l, 5000)); /* the trap is set */
	assert_string_equal(l.text[0], "ready");
	dv_runtime_logs_unfollow(f->rt, follow);

	uint64_t t0 = dv_now_ms();
	assert_int_equal(dv_runtime_stop(f->rt, r, &err), 0);
	struct dv_replica_info info;
	dv_runtime_inspect(f->rt, r, &info, NULL);
	assert_int_equal(info.state, DV_REPLICA_STOPPING);
	assert_int_equal(dv_runtime_stop(f->rt, r, &err), 0); /* again: no-op */
	assert_int_equal(dv_runtime_remove(f->rt, r, &err), -1); /* not gone yet */
	assert_non_null(strstr(err, "still running"));
	dv_free(&err);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	assert_true(rec.at_ms - t0 >= 290);
	assert_true(WIFSIGNALED(rec.status));
	assert_int_equal(WTERMSIG(rec.status), SIGKILL);
	char buf[64];
	assert_string_equal(dv_runtime_status_format(rec.status, buf, sizeof buf), "killed by signal 9 (SIGKILL)");
	lines_free(&l);
	remove_replica(f, r);
}

struct reap_wait {
	pid_t pid;
	int status;
	bool done;
};

static bool reaped_pid(void *arg)
{
	struct reap_wait *w = arg;
	if (!w->done && waitpid(w->pid, &w->status, WNOHANG) == w->pid)
		w->done = true;
	return w->done;
}

static void test_stop_kills_process_group(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	static struct lines l;
	struct dv_replica *r = start_shell(f, "sleep 100 & echo $!; wait", &rec);
	struct dv_log_follow *follow = dv_runtime_logs_follow(f->rt, r, collect, &l);
	assert_true(run_until(f->loop, has_lines, &l, 5000));
	dv_runtime_logs_unfollow(f->rt, follow);
	char *end;
	long grandchild = strtol(l.text[0], &end, 10);
	assert_true(grandchild > 1 && *end == '\0');
	assert_int_equal(kill((pid_t)grandchild, 0), 0);

	struct dv_replica_info info;
	dv_runtime_inspect(f->rt, r, &info, NULL);
	assert_int_equal(info.processes, 2);

	assert_int_equal(dv_runtime_stop(f->rt, r, NULL), 0);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	assert_true(WIFSIGNALED(rec.status));
	assert_int_equal(WTERMSIG(rec.status), SIGTERM);
	/* The orphaned grandchild was reparented to us (subreaper): it died of the signal. */
	struct reap_wait w = {.pid = (pid_t)grandchild};
	assert_true(run_until(f->loop, reaped_pid, &w, 5000));
	assert_true(WIFSIGNALED(w.status));
	assert_true(kill((pid_t)grandchild, 0) == -1 && errno == ESRCH);
	lines_free(&l);
	remove_replica(f, r);
}

static void test_log_rotation_and_ring(void **state)
{
	struct fixture *f = *state;
	char *err = NULL;
	struct dv_process_options opts = {.no_cgroups = true, .ring_lines = 50};
	struct dv_runtime *rt = dv_process_new(f->loop, &opts, &err);
	assert_non_null(rt);
	struct exit_rec rec = {0};
	struct dv_replica_spec spec = {
		.app = "shop", .service = "rot", .name = "x",
		.command = "i=0; while [ $i -lt 200 ]; do echo line-$i-abcdefghijklmnopqrstuvwxyz; i=$((i+1)); done",
		.env = test_env, .log_dir = f->dir, .log_max_bytes = 1000, .log_max_files = 3,
	};
	struct dv_replica *r = NULL;
	assert_int_equal(dv_runtime_start(rt, &spec, on_exit_cb, &rec, &r, &err), 0);
	assert_true(run_until(f->loop, exited, &rec, 5000));

	char path[160];
	for (int i = 0; i < 4; i++) {
		if (i == 0)
			snprintf(path, sizeof path, "%s/rot/x.log", f->dir);
		else
			snprintf(path, sizeof path, "%s/rot/x.log.%d", f->dir, i);
		struct stat st;
		if (i == 3) {
			assert_int_equal(stat(path, &st), -1); /* only 3 files kept */
			continue;
		}
		assert_int_equal(stat(path, &st), 0);
		assert_true(st.st_size > 0 && st.st_size <= 1000);
	}
	snprintf(path, sizeof path, "%s/rot/x.log", f->dir);
	char *text = read_file(path);
	assert_true(matches(text, "stdout line-199-abcdefghijklmnopqrstuvwxyz$"));
	free(text);
	snprintf(path, sizeof path, "%s/rot/x.log.2", f->dir);
	text = read_file(path);
	assert_false(matches(text, "line-199-"));
	free(text);

	/* The ring keeps the last 50 lines. */
	static struct lines l;
	dv_runtime_logs_tail(rt, r, 0, collect, &l);
	assert_int_equal(l.n, 50);
	assert_string_equal(l.text[0], "line-150-abcdefghijklmnopqrstuvwxyz");
	assert_string_equal(l.text[49], "line-199-abcdefghijklmnopqrstuvwxyz");
	assert_int_equal(l.seq[49], 200);
	lines_free(&l);
	assert_int_equal(dv_runtime_logs_tail(rt, r, 5, collect, &l), 5);
	assert_string_equal(l.text[0], "line-195-abcdefghijklmnopqrstuvwxyz");
	lines_free(&l);
	assert_int_equal(dv_runtime_remove(rt, r, &err), 0);
	dv_runtime_destroy(rt);
}

static void test_long_lines(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	struct dv_replica *r = start_shell(f,
		"head -c 40000 /dev/zero | tr '\\0' a; echo; "
		"head -c 16384 /dev/zero | tr '\\0' b; echo; "
		"echo after; printf no-newline", &rec);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	static struct lines l;
	tail(f, r, &l);
	assert_int_equal(l.n, 4);
	assert_int_equal(strlen(l.text[0]), DV_REPLICA_LINE_MAX);
	assert_true(l.truncated[0]);
	assert_int_equal(strspn(l.text[0], "a"), DV_REPLICA_LINE_MAX);
	assert_int_equal(strlen(l.text[1]), DV_REPLICA_LINE_MAX); /* exactly at the limit: whole */
	assert_false(l.truncated[1]);
	assert_string_equal(l.text[2], "after");
	assert_string_equal(l.text[3], "no-newline");
	lines_free(&l);

	char path[128];
	snprintf(path, sizeof path, "%s/web/0.log", f->dir);
	char *text = read_file(path);
	char *nl = strchr(text, '\n');
	assert_non_null(nl);
	assert_int_equal((size_t)(nl - text), 24 + 8 + DV_REPLICA_LINE_MAX); /* stamp, " stdout ", text */
	assert_true(matches(text, "stdout no-newline$"));
	free(text);
	remove_replica(f, r);
}

struct follow_ctx {
	struct dv_runtime *rt;
	struct dv_log_follow *self;
	struct lines lines;
};

static void follow_once(struct dv_replica *replica, const struct dv_log_line *line, void *arg)
{
	struct follow_ctx *c = arg;
	collect(replica, line, &c->lines);
	dv_runtime_logs_unfollow(c->rt, c->self); /* from within its own callback */
}

static void test_follow(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	static struct lines l;
	static struct follow_ctx once;
	struct dv_replica *r = start_shell(f, "echo one; echo two >&2; echo three", &rec);
	struct dv_log_follow *all = dv_runtime_logs_follow(f->rt, r, collect, &l);
	assert_non_null(all);
	once.rt = f->rt;
	once.self = dv_runtime_logs_follow(f->rt, r, follow_once, &once);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	assert_int_equal(l.n, 3);
	assert_true(l.ended); /* the NULL line came; the subscription is gone */
	assert_true(find_line(&l, "one") >= 0 && find_line(&l, "two") >= 0 && find_line(&l, "three") >= 0);
	assert_int_equal(once.lines.n, 1);
	assert_false(once.lines.ended);
	lines_free(&l);
	lines_free(&once.lines);
	remove_replica(f, r);
}

struct rss_wait {
	struct dv_runtime *rt;
	struct dv_replica *replica;
};

static bool has_rss(void *arg)
{
	struct rss_wait *w = arg;
	struct dv_replica_info info;
	return dv_runtime_inspect(w->rt, w->replica, &info, NULL) == 0 && info.rss_bytes > 0;
}

struct restarter {
	struct fixture *f;
	int exits;
	int last_status;
	char *err;
};

static void restart_on_exit(struct dv_replica *replica, int status, void *arg);

static int start_restarted(struct restarter *s)
{
	struct dv_replica_spec spec = {.app = "shop", .service = "again", .index = (unsigned)s->exits,
	                               .command = "echo out; echo err >&2; exit 1", .env = test_env,
	                               .log_dir = s->f->dir};
	struct dv_replica *r;
	return dv_runtime_start(s->f->rt, &spec, restart_on_exit, s, &r, &s->err);
}

/* The supervisor's pattern: remove the replica from its own exit callback and start anew. */
static void restart_on_exit(struct dv_replica *replica, int status, void *arg)
{
	struct restarter *s = arg;
	s->exits++;
	s->last_status = status;
	if (dv_runtime_remove(s->f->rt, replica, &s->err) != 0)
		return;
	if (s->exits < 5)
		start_restarted(s);
}

static bool five_exits(void *arg)
{
	return ((struct restarter *)arg)->exits >= 5 || ((struct restarter *)arg)->err;
}

static void test_remove_and_restart_from_exit_callback(void **state)
{
	struct restarter s = {.f = *state};
	assert_int_equal(start_restarted(&s), 0);
	assert_true(run_until(s.f->loop, five_exits, &s, 10000));
	assert_null(s.err);
	assert_int_equal(s.exits, 5);
	assert_int_equal(WEXITSTATUS(s.last_status), 1);
}

static void test_inspect_list_reap_stale(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	char *err = NULL;
	char *argv[] = {"sleep", "100", NULL};
	struct dv_replica_spec spec = {.app = "shop", .service = "worker", .argv = argv, .env = test_env};
	struct dv_replica *r = NULL;
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), 0);
	struct dv_replica_info info;
	/* Right after exec the process may not have touched a page yet. */
	struct rss_wait rw = {.rt = f->rt, .replica = r};
	assert_true(run_until(f->loop, has_rss, &rw, 5000));
	assert_int_equal(dv_runtime_inspect(f->rt, r, &info, &err), 0);
	assert_int_equal(info.state, DV_REPLICA_RUNNING);
	assert_true(info.pid > 1);
	assert_int_equal(dv_process_pid(r), info.pid);
	assert_int_equal(info.processes, 1);
	assert_true(info.rss_bytes > 0);
	assert_false(info.limits_applied);
	assert_false(info.has_exit_status);
	assert_true(info.started_at_ms > 1600000000000);
	uint64_t ticks;
	assert_int_equal(dv_process_start_ticks(info.pid, &ticks), 0);
	assert_int_equal(ticks, info.start_ticks);
	assert_true(getpgid(info.pid) == info.pid);
	assert_true(getsid(info.pid) == info.pid);

	struct dv_replica_ref known[3] = {
		{.service = "worker", .pid = info.pid, .start_ticks = info.start_ticks},
		{.service = "reused", .pid = info.pid, .start_ticks = info.start_ticks + 1},
		{.service = "gone", .pid = 0x3ffffff, .start_ticks = 1},
	};
	struct dv_replica_ref *found = NULL;
	size_t n_found = 99;
	assert_int_equal(dv_runtime_list(f->rt, known, 3, &found, &n_found, &err), 0);
	assert_int_equal(n_found, 1);
	assert_string_equal(found[0].service, "worker");
	assert_int_equal(found[0].pid, info.pid);
	dv_replica_refs_free(found, n_found);

	/* A pid whose start time does not match is someone else's: left alone. */
	assert_int_equal(dv_process_reap_stale(info.pid, info.start_ticks + 1, &err), 0);
	assert_int_equal(dv_process_reap_stale(0x3ffffff, 1, &err), 0);
	assert_int_equal(dv_process_reap_stale(info.pid, info.start_ticks, &err), 1);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	assert_true(WIFSIGNALED(rec.status));
	assert_int_equal(WTERMSIG(rec.status), SIGKILL);
	assert_int_equal(dv_runtime_inspect(f->rt, r, &info, &err), 0);
	assert_int_equal(info.state, DV_REPLICA_EXITED);
	assert_true(info.has_exit_status);
	assert_int_equal(dv_runtime_stop(f->rt, r, &err), 0); /* stopping a gone replica: no-op */
	remove_replica(f, r);
}

static void test_sigchld_fallback(void **state)
{
	struct fixture *f = *state;
	char *err = NULL;
	struct dv_process_options opts = {.no_cgroups = true, .use_sigchld = true};
	struct dv_runtime *rt = dv_process_new(f->loop, &opts, &err);
	assert_non_null(rt);
	struct exit_rec recs[3] = {{0}};
	struct dv_replica *rs[3];
	const char *commands[3] = {"exit 3", "echo out; exit 0", "kill -USR1 $$"};
	for (int i = 0; i < 3; i++) {
		struct dv_replica_spec spec = {.app = "shop", .service = "fb", .index = (unsigned)i,
		                               .command = commands[i], .env = test_env};
		assert_int_equal(dv_runtime_start(rt, &spec, on_exit_cb, &recs[i], &rs[i], &err), 0);
	}
	for (int i = 0; i < 3; i++)
		assert_true(run_until(f->loop, exited, &recs[i], 5000));
	assert_int_equal(WEXITSTATUS(recs[0].status), 3);
	assert_int_equal(WEXITSTATUS(recs[1].status), 0);
	assert_true(WIFSIGNALED(recs[2].status));
	assert_int_equal(WTERMSIG(recs[2].status), SIGUSR1);
	static struct lines l;
	dv_runtime_logs_tail(rt, rs[1], 0, collect, &l);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.text[0], "out");
	lines_free(&l);
	for (int i = 0; i < 3; i++)
		assert_int_equal(dv_runtime_remove(rt, rs[i], &err), 0);
	dv_runtime_destroy(rt);
}

static bool path_gone(void *arg)
{
	return access((const char *)arg, F_OK) == -1;
}

static void test_cgroup_v1_limits(void **state)
{
	struct fixture *f = *state;
	char *err = NULL;
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
		print_message("skipped: this machine has cgroup v2 (the v1 test needs /sys/fs/cgroup/memory)\n");
		skip();
	}
	if (access("/sys/fs/cgroup/memory", W_OK) == -1) {
		print_message("skipped: /sys/fs/cgroup/memory is not writable (%s)\n", strerror(errno));
		skip();
	}
	char name[64];
	snprintf(name, sizeof name, "davit-test-%d", (int)getpid());
	struct dv_process_options opts = {.cgroup_name = name};
	struct dv_runtime *rt = dv_process_new(f->loop, &opts, &err);
	assert_non_null(rt);
	const char *reason = NULL;
	const char *mode = dv_process_cgroup_mode(rt, &reason);
	if (strcmp(mode, "v1") != 0) {
		print_message("skipped: cgroup v1 not usable: %s\n", reason ? reason : "?");
		dv_runtime_destroy(rt);
		skip();
	}
	struct exit_rec rec = {0};
	char *argv[] = {"sleep", "100", NULL};
	struct dv_replica_spec spec = {.app = "shop", .service = "lim", .argv = argv, .env = test_env,
	                               .memory_limit = 64 << 20, .cpu_limit = 0.5};
	struct dv_replica *r = NULL;
	assert_int_equal(dv_runtime_start(rt, &spec, on_exit_cb, &rec, &r, &err), 0);
	const char *mem_dir = dv_process_cgroup_dir(r, "memory");
	const char *cpu_dir = dv_process_cgroup_dir(r, "cpu");
	assert_non_null(mem_dir);
	assert_non_null(cpu_dir);
	char *mem_dir_copy = dv_xstrdup(mem_dir), *cpu_dir_copy = dv_xstrdup(cpu_dir);
	assert_non_null(strstr(mem_dir, name));
	char path[512];
	snprintf(path, sizeof path, "%s/memory.limit_in_bytes", mem_dir);
	char *text = read_file(path);
	assert_non_null(text);
	assert_string_equal(text, "67108864\n");
	free(text);
	snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", cpu_dir);
	text = read_file(path);
	assert_string_equal(text, "50000\n");
	free(text);
	snprintf(path, sizeof path, "%s/cpu.cfs_period_us", cpu_dir);
	text = read_file(path);
	assert_string_equal(text, "100000\n");
	free(text);

	/* The child joined before exec: its own /proc/<pid>/cgroup says so. */
	struct dv_replica_info info;
	dv_runtime_inspect(rt, r, &info, NULL);
	assert_true(info.limits_applied);
	snprintf(path, sizeof path, "/proc/%d/cgroup", info.pid);
	text = read_file(path);
	char expect[128];
	snprintf(expect, sizeof expect, "/%s/shop.lim.0\n", name);
	assert_non_null(strstr(text, expect));
	free(text);
	snprintf(path, sizeof path, "%s/cgroup.procs", mem_dir);
	text = read_file(path);
	char pid_line[32];
	snprintf(pid_line, sizeof pid_line, "%d\n", info.pid);
	assert_string_equal(text, pid_line);
	free(text);

	assert_int_equal(dv_runtime_stop(rt, r, &err), 0);
	assert_true(run_until(f->loop, exited, &rec, 5000));
	assert_int_equal(WTERMSIG(rec.status), SIGTERM);
	/* The replica cgroups are removed after the exit. */
	assert_true(run_until(f->loop, path_gone, mem_dir_copy, 5000));
	assert_true(run_until(f->loop, path_gone, cpu_dir_copy, 5000));
	assert_int_equal(dv_runtime_remove(rt, r, &err), 0);
	dv_runtime_destroy(rt);
	/* ... and the driver's subtree with the driver. */
	*strrchr(mem_dir_copy, '/') = '\0';
	*strrchr(cpu_dir_copy, '/') = '\0';
	assert_true(path_gone(mem_dir_copy));
	assert_true(path_gone(cpu_dir_copy));
	free(mem_dir_copy);
	free(cpu_dir_copy);
}

static void test_limits_without_cgroups(void **state)
{
	struct fixture *f = *state;
	struct exit_rec rec = {0};
	char *err = NULL;
	struct dv_replica_spec spec = {.app = "shop", .service = "nolim", .command = "exit 0", .env = test_env,
	                               .memory_limit = 64 << 20};
	struct dv_replica *r = NULL;
	/* The fixture's driver has cgroups disabled: a warning, and it runs anyway. */
	assert_int_equal(dv_runtime_start(f->rt, &spec, on_exit_cb, &rec, &r, &err), 0);
	assert_null(dv_process_cgroup_dir(r, "memory"));
	assert_true(run_until(f->loop, exited, &rec, 5000));
	remove_replica(f, r);
}

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "we");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* The v2 code path against a fake tree of regular files (this machine is v1). */
static void test_cgroup_v2_paths(void **state)
{
	struct fixture *f = *state;
	char root[128], path[256], self[160];
	snprintf(root, sizeof root, "%s/cg", f->dir);
	snprintf(self, sizeof self, "%s/self-cgroup", f->dir);
	mkdir(root, 0755);
	snprintf(path, sizeof path, "%s/svc", root);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/svc/cgroup.controllers", root);
	write_text(path, "cpuset cpu io memory pids\n");
	snprintf(path, sizeof path, "%s/svc/cgroup.subtree_control", root);
	write_text(path, "");
	snprintf(path, sizeof path, "%s/svc/dv", root);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/svc/dv/cgroup.subtree_control", root);
	write_text(path, "");
	snprintf(path, sizeof path, "%s/svc/dv/a.s.0", root);
	mkdir(path, 0755);
	const char *files[] = {"memory.max", "cpu.max", "cgroup.procs"};
	for (size_t i = 0; i < DV_ARRAY_LEN(files); i++) {
		snprintf(path, sizeof path, "%s/svc/dv/a.s.0/%s", root, files[i]);
		write_text(path, "");
	}
	snprintf(path, sizeof path, "%s/cgroup.controllers", root);
	write_text(path, "cpuset cpu io memory pids\n");
	write_text(self, "0::/svc\n");

	struct dv_cgroup_root cgroot;
	dv_cgroup_root_init(&cgroot, root, self, "dv");
	assert_int_equal(cgroot.mode, DV_CGROUP_V2);
	snprintf(path, sizeof path, "%s/svc/dv", root);
	assert_string_equal(cgroot.memory_base, path);
	assert_string_equal(cgroot.cpu_base, path);
	assert_null(cgroot.reason);
	snprintf(path, sizeof path, "%s/svc/cgroup.subtree_control", root);
	char *text = read_file(path);
	assert_non_null(strstr(text, "+")); /* controllers enabled in our own cgroup */
	free(text);

	struct dv_cgroup cg;
	char *err = NULL;
	assert_int_equal(dv_cgroup_create(&cgroot, "a.s.0", 128 << 20, 1.5, &cg, &err), 0);
	snprintf(path, sizeof path, "%s/svc/dv/a.s.0", root);
	assert_string_equal(dv_cgroup_dir(&cg, "memory"), path);
	assert_string_equal(dv_cgroup_dir(&cg, "cpu"), path);
	snprintf(path, sizeof path, "%s/svc/dv/a.s.0/memory.max", root);
	text = read_file(path);
	assert_string_equal(text, "134217728");
	free(text);
	snprintf(path, sizeof path, "%s/svc/dv/a.s.0/cpu.max", root);
	text = read_file(path);
	assert_string_equal(text, "150000 100000");
	free(text);
	dv_cgroup_dispose(&cg);
	dv_cgroup_root_dispose(&cgroot);

	/* No controllers file under our cgroup: unusable, with a reason. */
	write_text(self, "0::/elsewhere\n");
	dv_cgroup_root_init(&cgroot, root, self, "dv");
	assert_int_equal(cgroot.mode, DV_CGROUP_NONE);
	assert_non_null(cgroot.reason);
	assert_int_equal(dv_cgroup_create(&cgroot, "x", 1 << 20, 0, &cg, &err), -1);
	assert_non_null(strstr(err, "not usable"));
	dv_free(&err);
	assert_int_equal(dv_cgroup_create(&cgroot, "x", 0, 0, &cg, &err), 0); /* nothing asked */
	assert_int_equal(cg.n, 0);
	dv_cgroup_root_dispose(&cgroot);
}

/* The helper process: starts a replica through the driver, reports its pid, waits to be killed. */
static _Noreturn void pdeathsig_helper(int report_fd)
{
	char *err = NULL;
	struct dv_loop *loop = dv_loop_new(&err);
	struct dv_process_options opts = {.no_cgroups = true};
	struct dv_runtime *rt = loop ? dv_process_new(loop, &opts, &err) : NULL;
	char *argv[] = {"sleep", "100", NULL};
	struct dv_replica_spec spec = {.app = "shop", .service = "orphan", .argv = argv, .env = test_env};
	struct dv_replica *r = NULL;
	int pid = -1;
	if (rt && dv_runtime_start(rt, &spec, NULL, NULL, &r, &err) == 0)
		pid = dv_process_pid(r);
	ssize_t w = write(report_fd, &pid, sizeof pid);
	(void)w;
	for (;;)
		pause();
}

static void test_pdeathsig(void **state)
{
	int fds[2];
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid_t helper = fork();
	assert_true(helper != -1);
	if (helper == 0) {
		close(fds[0]);
		pdeathsig_helper(fds[1]);
	}
	close(fds[1]);
	int pid = -1;
	assert_int_equal(read(fds[0], &pid, sizeof pid), (ssize_t)sizeof pid);
	close(fds[0]);
	assert_true(pid > 1);
	assert_int_equal(kill(pid, 0), 0);
	/* kill -9 of the "daemon": the replica gets SIGTERM from the kernel. */
	assert_int_equal(kill(helper, SIGKILL), 0);
	int status;
	assert_int_equal(waitpid(helper, &status, 0), helper);
	struct fixture *f = *state;
	struct reap_wait w = {.pid = pid};
	assert_true(run_until(f->loop, reaped_pid, &w, 5000));
	assert_true(WIFSIGNALED(w.status));
	assert_int_equal(WTERMSIG(w.status), SIGTERM);
}

static void test_restart_policy(void **state)
{
	const uint64_t expect[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
	for (unsigned i = 0; i < DV_ARRAY_LEN(expect); i++)
		assert_int_equal(dv_restart_backoff_ms(NULL, i), expect[i]);
	assert_int_equal(dv_restart_backoff_ms(NULL, 1000000), 60000);
	struct dv_restart_policy custom = {.backoff_initial_ms = 100, .backoff_max_ms = 500};
	assert_int_equal(dv_restart_backoff_ms(&custom, 2), 400);
	assert_int_equal(dv_restart_backoff_ms(&custom, 3), 500);

	struct dv_restart_state st = {0};
	bool loop = true;
	uint64_t now = 1000000;
	assert_int_equal(dv_restart_note_exit(NULL, &st, now, 500, &loop), 1000);
	assert_false(loop);
	assert_int_equal(dv_restart_note_exit(NULL, &st, now += 2000, 500, &loop), 2000);
	assert_int_equal(dv_restart_note_exit(NULL, &st, now += 3000, 500, &loop), 4000);
	assert_false(loop);
	/* A run of 30 s resets the backoff. */
	assert_int_equal(dv_restart_note_exit(NULL, &st, now += 35000, 30000, &loop), 1000);
	assert_false(loop);
	/* 5 exits within 60 s: a crash loop. */
	assert_int_equal(dv_restart_note_exit(NULL, &st, now += 1000, 500, &loop), 2000);
	assert_true(loop);

	uint64_t times[] = {0, 10000, 20000, 30000, 40000};
	assert_true(dv_restart_is_crashloop(NULL, times, 5, 40000));
	assert_false(dv_restart_is_crashloop(NULL, times, 4, 40000));
	assert_false(dv_restart_is_crashloop(NULL, times, 5, 65000)); /* the first fell out */
	uint64_t spread[] = {0, 20000, 40000, 60000, 80000, 100000};
	assert_false(dv_restart_is_crashloop(NULL, spread, 6, 100000));
	struct dv_restart_policy strict = {.crashloop_exits = 3, .crashloop_window_ms = 50000};
	assert_true(dv_restart_is_crashloop(&strict, spread, 6, 100000));
}

static void test_formats(void **state)
{
	char buf[64];
	assert_string_equal(dv_runtime_format_time(0, buf, sizeof buf), "1970-01-01T00:00:00.000Z");
	assert_string_equal(dv_runtime_format_time(1714566896789, buf, sizeof buf), "2024-05-01T12:34:56.789Z");
	assert_string_equal(dv_runtime_status_format(3 << 8, buf, sizeof buf), "exited with code 3");
	assert_string_equal(dv_runtime_status_format(SIGTERM, buf, sizeof buf), "killed by signal 15 (SIGTERM)");
	assert_string_equal(dv_runtime_status_format(DV_REPLICA_STATUS_UNKNOWN, buf, sizeof buf), "status unknown");
}

int main(void)
{
	/* Orphans of our replicas come to us, so that their death can be checked. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_output_and_exit_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_and_workdir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exec_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_escalates_to_sigkill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_kills_process_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_rotation_and_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_follow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_and_restart_from_exit_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inspect_list_reap_stale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigchld_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cgroup_v1_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_without_cgroups, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cgroup_v2_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pdeathsig, setup, teardown),
		cmocka_unit_test(test_restart_policy),
		cmocka_unit_test(test_formats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

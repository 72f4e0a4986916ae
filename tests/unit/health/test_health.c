/* Unit tests for src/health: HTTP, TCP and command probes against real
 * servers and real processes started here, the retries / start period state
 * machine, dv_health_check_now() and stopping in flight.
 *
 * The HTTP/TCP server is a thread with a blocking accept loop whose behaviour
 * (status, silence, garbage...) the loop thread switches through atomics.
 * Nothing sleeps to synchronise: each test runs the loop until the expected
 * state changes arrive or a deadline timer stops it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/loop.h"
#include "core/util.h"
#include "health/health.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- a small HTTP server on a thread ---------------------------------------- */

enum server_mode {
	M_STATUS,  /* answer with `status` */
	M_SILENT,  /* read the request, never answer */
	M_CLOSE,   /* read the request, close */
	M_GARBAGE, /* answer with something that is not HTTP */
	M_HUGE,    /* a response head larger than 16 KiB */
	M_INTERIM  /* 103 Early Hints, then 200 */
};

struct server {
	int listen_fd;
	int port;
	int stop_pipe[2];
	pthread_t thread;
	atomic_int mode;
	atomic_int status;
	atomic_int requests;    /* complete request heads received */
	atomic_int connections; /* accepted */
	pthread_mutex_t lock;
	char last_request[2048];
	int held[64]; /* silent connections, closed at stop */
	int nheld;
};

static bool read_head(int fd, char *buf, size_t size)
{
	size_t len = 0;
	while (len + 1 < size) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 2000) <= 0)
			return false;
		ssize_t n = read(fd, buf + len, size - 1 - len);
		if (n <= 0)
			return false;
		len += (size_t)n;
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			return true;
	}
	return false;
}

static void send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		data += n;
		len -= (size_t)n;
	}
}

static void serve(struct server *srv, int fd)
{
	char req[2048];
	if (!read_head(fd, req, sizeof req)) {
		close(fd); /* a TCP probe: connected and left */
		return;
	}
	pthread_mutex_lock(&srv->lock);
	memcpy(srv->last_request, req, sizeof req);
	pthread_mutex_unlock(&srv->lock);
	atomic_fetch_add(&srv->requests, 1);

	char resp[512];
	int len;
	switch (atomic_load(&srv->mode)) {
	case M_STATUS:
		len = snprintf(resp, sizeof resp,
		               "HTTP/1.1 %d Test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
		               atomic_load(&srv->status));
		send_all(fd, resp, (size_t)len);
		break;
	case M_SILENT:
		if (srv->nheld < (int)DV_ARRAY_LEN(srv->held)) {
			srv->held[srv->nheld++] = fd;
			return;
		}
		break;
	case M_CLOSE:
		break;
	case M_GARBAGE:
		send_all(fd, "SSH-2.0-OpenSSH\r\n\r\n", 19);
		break;
	case M_HUGE: {
		send_all(fd, "HTTP/1.1 200 OK\r\n", 17);
		char line[1002];
		memset(line, 'a', sizeof line);
		memcpy(line, "X-Big: ", 7);
		line[1000] = '\r';
		line[1001] = '\n';
		for (int i = 0; i < 20; i++)
			send_all(fd, line, sizeof line);
		send_all(fd, "\r\n", 2);
		break;
	}
	case M_INTERIM: {
		const char *r = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
		                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
		send_all(fd, r, strlen(r));
		break;
	}
	}
	close(fd);
}

static void *server_main(void *arg)
{
	struct server *srv = arg;
	for (;;) {
		struct pollfd pfds[2] = {{.fd = srv->listen_fd, .events = POLLIN},
		                         {.fd = srv->stop_pipe[0], .events = POLLIN}};
		if (poll(pfds, 2, -1) == -1 && errno != EINTR)
			break;
		if (pfds[1].revents)
			break;
		if (pfds[0].revents & POLLIN) {
			int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd == -1)
				continue;
			atomic_fetch_add(&srv->connections, 1);
			serve(srv, fd);
		}
	}
	return NULL;
}

static int listen_any(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(listen(fd, 64), 0);
	socklen_t len = sizeof sin;
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

static struct server *server_start(enum server_mode mode, int status)
{
	struct server *srv = dv_xcalloc(1, sizeof *srv);
	srv->listen_fd = listen_any(&srv->port);
	assert_int_equal(pipe2(srv->stop_pipe, O_CLOEXEC), 0);
	atomic_store(&srv->mode, (int)mode);
	atomic_store(&srv->status, status);
	pthread_mutex_init(&srv->lock, NULL);
	assert_int_equal(pthread_create(&srv->thread, NULL, server_main, srv), 0);
	return srv;
}

static void server_stop(struct server *srv)
{
	assert_int_equal(write(srv->stop_pipe[1], "x", 1), 1);
	pthread_join(srv->thread, NULL);
	for (int i = 0; i < srv->nheld; i++)
		close(srv->held[i]);
	close(srv->listen_fd);
	close(srv->stop_pipe[0]);
	close(srv->stop_pipe[1]);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}

static void server_set(struct server *srv, enum server_mode mode, int status)
{
	atomic_store(&srv->status, status);
	atomic_store(&srv->mode, (int)mode);
}

/* A port on which nothing listens (bound, then closed). */
static int closed_port(void)
{
	int port;
	int fd = listen_any(&port);
	close(fd);
	return port;
}

static struct dv_sockaddr loopback(int port)
{
	struct dv_sockaddr sa = {0};
	struct sockaddr_in *sin = (struct sockaddr_in *)&sa.addr;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin->sin_port = htons((uint16_t)port);
	sa.len = sizeof *sin;
	return sa;
}

/* ---- recording state changes -------------------------------------------------- */

struct change {
	enum dv_health_state state;
	char result[512];
	uint64_t at;       /* ms since the test started the check */
	int requests;      /* server requests seen at that moment */
	unsigned failures; /* dv_health_failures() then */
};

struct rec {
	struct dv_loop *loop;
	struct server *srv;
	uint64_t t0;
	int n;
	struct change changes[16];
	int stop_after; /* stop the loop once this many changes arrived */
	/* Optional: runs after change number n (1-based) was recorded. */
	void (*hook)(struct rec *rec, struct dv_health_check *check, int n);
	void *user;
};

static void on_change(struct dv_health_check *check, enum dv_health_state state,
                      const char *last_result, void *arg)
{
	struct rec *rec = arg;
	assert_true(rec->n < (int)DV_ARRAY_LEN(rec->changes));
	struct change *c = &rec->changes[rec->n++];
	c->state = state;
	snprintf(c->result, sizeof c->result, "%s", last_result);
	c->at = dv_now_ms() - rec->t0;
	c->requests = rec->srv ? atomic_load(&rec->srv->requests) : 0;
	c->failures = dv_health_failures(check);
	assert_int_equal(dv_health_state(check), state);
	assert_string_equal(dv_health_last_result(check), last_result);
	if (rec->hook)
		rec->hook(rec, check, rec->n);
	if (rec->stop_after && rec->n >= rec->stop_after)
		dv_loop_stop(rec->loop);
}

static void deadline_fired(struct dv_loop *loop, struct dv_timer *timer)
{
	dv_loop_stop(loop);
}

/* Runs the loop until something stops it, or for at most `ms`. */
static void run_loop(struct dv_loop *loop, uint64_t ms)
{
	struct dv_timer deadline = {.cb = deadline_fired};
	dv_timer_set(loop, &deadline, dv_loop_update_now(loop) + ms);
	dv_loop_run(loop, NULL, NULL);
	dv_timer_cancel(loop, &deadline);
}

static struct dv_loop *new_loop(void)
{
	char *err = NULL;
	struct dv_loop *loop = dv_loop_new(&err);
	assert_non_null(loop);
	return loop;
}

static struct dv_health_check *start(struct rec *rec, const struct dv_health_spec *spec)
{
	rec->t0 = dv_now_ms();
	struct dv_health_check *check = dv_health_start(rec->loop, spec, on_change, rec);
	assert_non_null(check);
	assert_int_equal(dv_health_state(check), DV_HEALTH_STARTING);
	assert_string_equal(dv_health_last_result(check), "");
	return check;
}

/* Stops the check and lets the loop release what it deferred. */
static void finish(struct dv_loop *loop, struct dv_health_check *check)
{
	dv_health_stop(check);
	run_loop(loop, 100);
	dv_loop_free(loop);
}

static struct dv_health_spec http_spec(int port, const char *path)
{
	struct dv_health_spec spec = {
		.kind = DV_HEALTH_HTTP,
		.target = loopback(port),
		.http_path = path,
		.interval_ms = 50,
		.timeout_ms = 1000,
	};
	return spec;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- HTTP -------------------------------------------------------------------- */

static void test_http_200_healthy(void **state)
{
	struct server *srv = server_start(M_STATUS, 200);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
	struct dv_health_spec spec = http_spec(srv->port, "/api/v1/health");
	struct dv_health_check *check = start(&rec, &spec);

	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	char want[128];
	snprintf(want, sizeof want, "HTTP 200 from 127.0.0.1:%d/api/v1/health after ", srv->port);
	if (!starts_with(rec.changes[0].result, want))
		fail_msg("result \"%s\"", rec.changes[0].result);
	assert_non_null(strstr(rec.changes[0].result, " ms"));

	pthread_mutex_lock(&srv->lock);
	char host[64];
	snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", srv->port);
	assert_true(starts_with(srv->last_request, "GET /api/v1/health HTTP/1.1\r\n"));
	assert_non_null(strstr(srv->last_request, host));
	assert_non_null(strstr(srv->last_request, "\r\nConnection: close\r\n"));
	assert_non_null(strstr(srv->last_request, "\r\nUser-Agent: davit-health\r\n"));
	pthread_mutex_unlock(&srv->lock);

	finish(rec.loop, check);
	server_stop(srv);
}

static void test_http_host_and_3xx(void **state)
{
	struct server *srv = server_start(M_STATUS, 302);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
	struct dv_health_spec spec = http_spec(srv->port, NULL);
	spec.http_host = "app.example.com";
	struct dv_health_check *check = start(&rec, &spec);

	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	assert_true(starts_with(rec.changes[0].result, "HTTP 302 from "));
	pthread_mutex_lock(&srv->lock);
	assert_true(starts_with(srv->last_request, "GET / HTTP/1.1\r\n"));
	assert_non_null(strstr(srv->last_request, "\r\nHost: app.example.com\r\n"));
	pthread_mutex_unlock(&srv->lock);
	finish(rec.loop, check);
	server_stop(srv);
}

static void test_http_expect_status(void **state)
{
	struct server *srv = server_start(M_STATUS, 200);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
	struct dv_health_spec spec = http_spec(srv->port, "/");
	spec.http_expect_status = 204;
	spec.retries = 1;
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_UNHEALTHY);
	assert_true(starts_with(rec.changes[0].result, "HTTP 200 from "));
	finish(rec.loop, check);
	server_stop(srv);
}

static void test_http_503_unhealthy_after_retries(void **state)
{
	struct server *srv = server_start(M_STATUS, 503);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
	struct dv_health_spec spec = http_spec(srv->port, "/health");
	spec.retries = 3;
	struct dv_health_check *check = start(&rec, &spec);

	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_UNHEALTHY);
	/* Exactly the third failure flipped it: not the first or second. */
	assert_int_equal(rec.changes[0].requests, 3);
	assert_int_equal(rec.changes[0].failures, 3);
	/* Three probes 50 ms apart: at least two intervals. */
	assert_true(rec.changes[0].at >= 100);
	char want[128];
	snprintf(want, sizeof want, "HTTP 503 from 127.0.0.1:%d/health after ", srv->port);
	if (!starts_with(rec.changes[0].result, want))
		fail_msg("result \"%s\"", rec.changes[0].result);
	finish(rec.loop, check);
	server_stop(srv);
}

/* 200 -> HEALTHY; then 503 -> UNHEALTHY after `retries`; then 200 -> HEALTHY. */
static void recovery_hook(struct rec *rec, struct dv_health_check *check, int n)
{
	if (n == 1)
		server_set(rec->srv, M_STATUS, 503);
	else if (n == 2)
		server_set(rec->srv, M_STATUS, 200);
}

static void test_http_recovery(void **state)
{
	struct server *srv = server_start(M_STATUS, 200);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 3, .hook = recovery_hook};
	struct dv_health_spec spec = http_spec(srv->port, "/health");
	spec.retries = 2;
	struct dv_health_check *check = start(&rec, &spec);

	run_loop(rec.loop, 5000);
	assert_int_equal(rec.n, 3);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	assert_int_equal(rec.changes[1].state, DV_HEALTH_UNHEALTHY);
	assert_int_equal(rec.changes[1].requests - rec.changes[0].requests, 2);
	assert_true(starts_with(rec.changes[1].result, "HTTP 503 "));
	assert_int_equal(rec.changes[2].state, DV_HEALTH_HEALTHY);
	assert_int_equal(rec.changes[2].requests - rec.changes[1].requests, 1);
	assert_int_equal(rec.changes[2].failures, 0);
	assert_true(starts_with(rec.changes[2].result, "HTTP 200 "));
	finish(rec.loop, check);
	server_stop(srv);
}

static void test_http_timeout(void **state)
{
	struct server *srv = server_start(M_SILENT, 0);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
	struct dv_health_spec spec = http_spec(srv->port, "/slow");
	spec.timeout_ms = 150;
	spec.retries = 1;
	struct dv_health_check *check = start(&rec, &spec);

	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_UNHEALTHY);
	char want[160];
	snprintf(want, sizeof want,
	         "timed out after 150 ms waiting for the response from 127.0.0.1:%d/slow", srv->port);
	assert_string_equal(rec.changes[0].result, want);
	assert_true(rec.changes[0].at >= 150);
	finish(rec.loop, check);
	server_stop(srv);
}

static void test_http_connection_refused(void **state)
{
	int port = closed_port();
	struct rec rec = {.loop = new_loop(), .stop_after = 1};
	struct dv_health_spec spec = http_spec(port, "/");
	spec.retries = 1;
	struct dv_health_check *check = start(&rec, &spec);

	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_UNHEALTHY);
	char want[128];
	snprintf(want, sizeof want, "connect to 127.0.0.1:%d: Connection refused", port);
	assert_string_equal(rec.changes[0].result, want);
	finish(rec.loop, check);
}

struct bad_case {
	enum server_mode mode;
	const char *prefix;
};

static void test_http_bad_responses(void **state)
{
	struct bad_case cases[] = {
		{M_CLOSE, "closed the connection without a response"},
		{M_GARBAGE, "invalid HTTP response from "},
		{M_HUGE, "larger than 16384 bytes"},
	};
	for (size_t i = 0; i < DV_ARRAY_LEN(cases); i++) {
		struct server *srv = server_start(cases[i].mode, 0);
		struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
		struct dv_health_spec spec = http_spec(srv->port, "/");
		spec.retries = 1;
		struct dv_health_check *check = start(&rec, &spec);
		run_loop(rec.loop, 3000);
		assert_int_equal(rec.n, 1);
		assert_int_equal(rec.changes[0].state, DV_HEALTH_UNHEALTHY);
		if (!strstr(rec.changes[0].result, cases[i].prefix))
			fail_msg("case %zu: result \"%s\"", i, rec.changes[0].result);
		finish(rec.loop, check);
		server_stop(srv);
	}
}

static void test_http_interim_response(void **state)
{
	struct server *srv = server_start(M_INTERIM, 0);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
	struct dv_health_spec spec = http_spec(srv->port, "/");
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	assert_true(starts_with(rec.changes[0].result, "HTTP 200 from "));
	finish(rec.loop, check);
	server_stop(srv);
}

/* ---- TCP --------------------------------------------------------------------- */

static void test_tcp(void **state)
{
	struct server *srv = server_start(M_STATUS, 200);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
	struct dv_health_spec spec = {.kind = DV_HEALTH_TCP, .target = loopback(srv->port),
	                              .interval_ms = 50};
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	char want[64];
	snprintf(want, sizeof want, "connected to 127.0.0.1:%d after ", srv->port);
	assert_true(starts_with(rec.changes[0].result, want));
	finish(rec.loop, check);
	server_stop(srv);

	int port = closed_port();
	struct rec rec2 = {.loop = new_loop(), .stop_after = 1};
	spec.target = loopback(port);
	spec.retries = 2;
	check = start(&rec2, &spec);
	run_loop(rec2.loop, 3000);
	assert_int_equal(rec2.n, 1);
	assert_int_equal(rec2.changes[0].state, DV_HEALTH_UNHEALTHY);
	assert_int_equal(rec2.changes[0].failures, 2);
	snprintf(want, sizeof want, "connect to 127.0.0.1:%d: Connection refused", port);
	assert_string_equal(rec2.changes[0].result, want);
	finish(rec2.loop, check);
}

/* ---- COMMAND ----------------------------------------------------------------- */

static struct dv_health_spec command_spec(const char *command)
{
	struct dv_health_spec spec = {
		.kind = DV_HEALTH_COMMAND,
		.command = command,
		.interval_ms = 50,
		.timeout_ms = 2000,
		.retries = 1,
	};
	return spec;
}

static void test_command_ok(void **state)
{
	struct rec rec = {.loop = new_loop(), .stop_after = 1};
	struct dv_health_spec spec = command_spec("true");
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	assert_string_equal(rec.changes[0].result, "command exited 0");
	finish(rec.loop, check);
}

static void test_command_fails_with_output(void **state)
{
	struct {
		const char *command;
		const char *result;
	} cases[] = {
		{"echo; echo '  db down  '; echo second line; exit 1", "command exited 1: db down"},
		{"echo 'oops on stderr' >&2; exit 2", "command exited 2: oops on stderr"},
		{"exit 3", "command exited 3"},
		{"printf 'tab\\there\\033[31m\\n'; exit 4", "command exited 4: tab\there?[31m"},
		{"kill -TERM $$", "command killed by SIGTERM"},
	};
	for (size_t i = 0; i < DV_ARRAY_LEN(cases); i++) {
		struct rec rec = {.loop = new_loop(), .stop_after = 1};
		struct dv_health_spec spec = command_spec(cases[i].command);
		struct dv_health_check *check = start(&rec, &spec);
		run_loop(rec.loop, 3000);
		assert_int_equal(rec.n, 1);
		assert_int_equal(rec.changes[0].state, DV_HEALTH_UNHEALTHY);
		assert_string_equal(rec.changes[0].result, cases[i].result);
		finish(rec.loop, check);
	}
}

static void test_command_env_cwd_and_big_output(void **state)
{
	const char *env[] = {"FOO=bar", "PATH=/usr/bin:/bin", NULL};
	struct rec rec = {.loop = new_loop(), .stop_after = 1};
	/* 200 KB of output must not block the child (the pipe is drained). */
	struct dv_health_spec spec = command_spec(
		"head -c 200000 /dev/zero | tr '\\0' x; test \"$FOO\" = bar && test \"$(pwd)\" = /tmp "
		"&& test -z \"$HOME\"");
	spec.command_env = env;
	spec.command_cwd = "/tmp";
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	assert_true(starts_with(rec.changes[0].result, "command exited 0: xxxx"));
	assert_true(strlen(rec.changes[0].result) < 250);
	finish(rec.loop, check);

	struct rec rec2 = {.loop = new_loop(), .stop_after = 1};
	spec = command_spec("true");
	spec.command_cwd = "/nonexistent/dir";
	check = start(&rec2, &spec);
	run_loop(rec2.loop, 3000);
	assert_int_equal(rec2.n, 1);
	assert_int_equal(rec2.changes[0].state, DV_HEALTH_UNHEALTHY);
	if (!strstr(rec2.changes[0].result, "cannot run the command: No such file or directory"))
		fail_msg("result \"%s\"", rec2.changes[0].result);
	finish(rec2.loop, check);
}

static pid_t read_pid(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	long pid = 0;
	assert_int_equal(fscanf(f, "%ld", &pid), 1);
	fclose(f);
	unlink(path);
	assert_true(pid > 1);
	return (pid_t)pid;
}

/* Waits (on a pidfd, up to 2 s) for a process to be gone. */
static bool process_ends(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd == -1)
		return errno == ESRCH;
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int r = poll(&pfd, 1, 2000);
	close(fd);
	return r == 1;
}

static void test_command_timeout_kills_group(void **state)
{
	char sh_file[64], bg_file[64], command[256];
	snprintf(sh_file, sizeof sh_file, "/tmp/davit-health-sh.%d", (int)getpid());
	snprintf(bg_file, sizeof bg_file, "/tmp/davit-health-bg.%d", (int)getpid());
	/* A background grandchild in the same process group, and the shell
	 * itself waiting: both must die. */
	snprintf(command, sizeof command, "sleep 30 & echo $! > %s; echo $$ > %s; wait", bg_file,
	         sh_file);
	struct rec rec = {.loop = new_loop(), .stop_after = 1};
	struct dv_health_spec spec = command_spec(command);
	spec.timeout_ms = 200;
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_UNHEALTHY);
	assert_string_equal(rec.changes[0].result, "timed out after 200 ms; command killed");
	assert_true(rec.changes[0].at >= 200);
	pid_t sh = read_pid(sh_file), bg = read_pid(bg_file);
	/* The shell was reaped by the check itself. */
	assert_int_equal(kill(sh, 0), -1);
	assert_int_equal(errno, ESRCH);
	assert_true(process_ends(bg));
	finish(rec.loop, check);
}

/* ---- state machine ----------------------------------------------------------- */

static void test_start_period_ignores_failures(void **state)
{
	struct server *srv = server_start(M_STATUS, 503);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 1};
	struct dv_health_spec spec = http_spec(srv->port, "/");
	spec.retries = 2;
	spec.start_period_ms = 400;
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_UNHEALTHY);
	assert_true(rec.changes[0].at >= 400);
	/* Probes every ~50 ms during 400 ms did not count. */
	assert_true(rec.changes[0].requests >= 2 + 3);
	assert_int_equal(rec.changes[0].failures, 2);
	finish(rec.loop, check);
	server_stop(srv);
}

static void start_period_hook(struct rec *rec, struct dv_health_check *check, int n)
{
	if (n == 1)
		server_set(rec->srv, M_STATUS, 500);
}

static void test_start_period_ended_by_success(void **state)
{
	struct server *srv = server_start(M_STATUS, 200);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 2, .hook = start_period_hook};
	struct dv_health_spec spec = http_spec(srv->port, "/");
	spec.retries = 2;
	spec.start_period_ms = 60000;
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 2);
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	/* Still inside the start period, but it ended with the success. */
	assert_int_equal(rec.changes[1].state, DV_HEALTH_UNHEALTHY);
	assert_int_equal(rec.changes[1].requests - rec.changes[0].requests, 2);
	finish(rec.loop, check);
	server_stop(srv);
}

static void check_now_hook(struct rec *rec, struct dv_health_check *check, int n)
{
	if (n == 1) {
		server_set(rec->srv, M_STATUS, 503);
		dv_health_check_now(check);
	}
}

static void test_check_now(void **state)
{
	struct server *srv = server_start(M_STATUS, 200);
	struct rec rec = {.loop = new_loop(), .srv = srv, .stop_after = 2, .hook = check_now_hook};
	struct dv_health_spec spec = http_spec(srv->port, "/");
	spec.interval_ms = 0; /* the default: 10 s */
	spec.retries = 1;
	struct dv_health_check *check = start(&rec, &spec);
	run_loop(rec.loop, 3000);
	assert_int_equal(rec.n, 2);
	/* The first probe ran at once, not after 10 s... */
	assert_int_equal(rec.changes[0].state, DV_HEALTH_HEALTHY);
	assert_true(rec.changes[0].at < 1000);
	/* ...and check_now gave another without waiting for the interval. */
	assert_int_equal(rec.changes[1].state, DV_HEALTH_UNHEALTHY);
	assert_true(rec.changes[1].at < 2000);
	assert_int_equal(atomic_load(&srv->requests), 2);
	finish(rec.loop, check);
	server_stop(srv);
}

static void test_defaults_and_validation(void **state)
{
	char *err = NULL;
	struct dv_health_spec spec = {.kind = DV_HEALTH_HTTP};
	assert_int_equal(dv_health_spec_validate(&spec, &err), -1);
	assert_non_null(strstr(err, "no target address"));
	dv_free(&err);

	struct dv_loop *loop = new_loop();
	assert_null(dv_health_start(loop, &spec, on_change, NULL));

	spec = http_spec(80, "no-slash");
	assert_int_equal(dv_health_spec_validate(&spec, &err), -1);
	assert_non_null(strstr(err, "must start with \"/\""));
	dv_free(&err);
	spec.http_path = "/a b";
	assert_int_equal(dv_health_spec_validate(&spec, &err), -1);
	dv_free(&err);
	spec.http_path = "/ok?x=1";
	spec.http_host = "bad host";
	assert_int_equal(dv_health_spec_validate(&spec, &err), -1);
	dv_free(&err);
	spec.http_host = "app.example.com:8080";
	assert_int_equal(dv_health_spec_validate(&spec, &err), 0);
	spec.http_expect_status = 42;
	assert_int_equal(dv_health_spec_validate(&spec, NULL), -1);

	spec = command_spec("");
	assert_int_equal(dv_health_spec_validate(&spec, &err), -1);
	assert_non_null(strstr(err, "command is empty"));
	dv_free(&err);
	const char *env[] = {"NOEQUALS", NULL};
	spec = command_spec("true");
	spec.command_env = env;
	assert_int_equal(dv_health_spec_validate(&spec, &err), -1);
	assert_non_null(strstr(err, "NOEQUALS"));
	dv_free(&err);

	spec = command_spec("true");
	spec.timeout_ms = DV_HEALTH_MAX_DURATION_MS + 1;
	assert_int_equal(dv_health_spec_validate(&spec, &err), -1);
	assert_non_null(strstr(err, "timeout of"));
	dv_free(&err);

	spec.kind = (enum dv_health_kind)99;
	assert_int_equal(dv_health_spec_validate(&spec, NULL), -1);

	assert_string_equal(dv_health_state_name(DV_HEALTH_STARTING), "starting");
	assert_string_equal(dv_health_state_name(DV_HEALTH_HEALTHY), "healthy");
	assert_string_equal(dv_health_state_name(DV_HEALTH_UNHEALTHY), "unhealthy");
	dv_loop_free(loop);
}

/* ---- stopping ---------------------------------------------------------------- */

struct stopper {
	struct dv_timer timer;
	struct dv_health_check *check;
};

static void stop_fired(struct dv_loop *loop, struct dv_timer *timer)
{
	struct stopper *s = dv_container_of(timer, struct stopper, timer);
	dv_health_stop(s->check);
	s->check = NULL;
}

static void test_stop_in_flight_http(void **state)
{
	struct server *srv = server_start(M_SILENT, 0);
	struct rec rec = {.loop = new_loop(), .srv = srv};
	struct dv_health_spec spec = http_spec(srv->port, "/");
	spec.timeout_ms = 5000;
	struct dv_health_check *check = start(&rec, &spec);
	struct stopper stopper = {.timer = {.cb = stop_fired}, .check = check};
	dv_timer_set(rec.loop, &stopper.timer, dv_loop_now(rec.loop) + 100);
	run_loop(rec.loop, 300);
	assert_null(stopper.check);
	assert_int_equal(rec.n, 0);
	assert_int_equal(atomic_load(&srv->connections), 1);
	dv_loop_free(rec.loop); /* ASan: nothing of the check may be left */
	server_stop(srv);
}

static void test_stop_in_flight_command(void **state)
{
	char pid_file[64], command[128];
	snprintf(pid_file, sizeof pid_file, "/tmp/davit-health-stop.%d", (int)getpid());
	snprintf(command, sizeof command, "echo $$ > %s; exec sleep 30", pid_file);
	struct rec rec = {.loop = new_loop()};
	struct dv_health_spec spec = command_spec(command);
	spec.timeout_ms = 10000;
	struct dv_health_check *check = start(&rec, &spec);
	struct stopper stopper = {.timer = {.cb = stop_fired}, .check = check};
	dv_timer_set(rec.loop, &stopper.timer, dv_loop_now(rec.loop) + 150);
	run_loop(rec.loop, 400);
	assert_null(stopper.check);
	assert_int_equal(rec.n, 0);
	pid_t pid = read_pid(pid_file);
	/* Killed and reaped by the check. */
	assert_int_equal(kill(pid, 0), -1);
	assert_int_equal(errno, ESRCH);
	dv_loop_free(rec.loop);
}

static void stop_in_callback_hook(struct rec *rec, struct dv_health_check *check, int n)
{
	dv_health_stop(check);
}

static void test_stop_from_callback_and_idle(void **state)
{
	struct server *srv = server_start(M_STATUS, 200);
	struct rec rec = {.loop = new_loop(), .srv = srv, .hook = stop_in_callback_hook};
	struct dv_health_spec spec = http_spec(srv->port, "/");
	start(&rec, &spec);
	run_loop(rec.loop, 500);
	assert_int_equal(rec.n, 1); /* stopped: no more probes, no more changes */
	assert_int_equal(atomic_load(&srv->requests), 1);
	dv_loop_free(rec.loop);

	/* Stopped while idle (never probed): freed at once. */
	struct rec rec2 = {.loop = new_loop(), .srv = srv};
	struct dv_health_check *check = start(&rec2, &spec);
	dv_health_stop(check);
	dv_health_stop(NULL);
	dv_loop_free(rec2.loop);
	server_stop(srv);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http_200_healthy),
		cmocka_unit_test(test_http_host_and_3xx),
		cmocka_unit_test(test_http_expect_status),
		cmocka_unit_test(test_http_503_unhealthy_after_retries),
		cmocka_unit_test(test_http_recovery),
		cmocka_unit_test(test_http_timeout),
		cmocka_unit_test(test_http_connection_refused),
		cmocka_unit_test(test_http_bad_responses),
		cmocka_unit_test(test_http_interim_response),
		cmocka_unit_test(test_tcp),
		cmocka_unit_test(test_command_ok),
		cmocka_unit_test(test_command_fails_with_output),
		cmocka_unit_test(test_command_env_cwd_and_big_output),
		cmocka_unit_test(test_command_timeout_kills_group),
		cmocka_unit_test(test_start_period_ignores_failures),
		cmocka_unit_test(test_start_period_ended_by_success),
		cmocka_unit_test(test_check_now),
		cmocka_unit_test(test_defaults_and_validation),
		cmocka_unit_test(test_stop_in_flight_http),
		cmocka_unit_test(test_stop_in_flight_command),
		cmocka_unit_test(test_stop_from_callback_and_idle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

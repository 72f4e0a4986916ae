/* health: HTTP, TCP and command probes on the loop, and the state machine
 * that turns their results into STARTING / HEALTHY / UNHEALTHY.
 *
 * One timer per check drives everything; `phase` says what it means:
 *   IDLE     the next probe is due at the timer;
 *   PROBING  a probe is in flight; the timer is its deadline;
 *   REAPING  a command was killed (timeout); waiting for its exit;
 *   REPORT   a result is ready; the timer fires at once to apply it;
 *   DEAD     stopped; the timer frees the check (once a child is reaped).
 * Results are applied, and the owner's callback called, only from the timer:
 * timers run after every I/O event of a loop iteration, so the callback may
 * stop checks (this one or others) without an event of the same epoll batch
 * reaching freed memory. For the same reason a check stopped in an iteration
 * in which it had a descriptor registered is freed by its timer, not at once. */
#include "health/health.h"

#include "core/alloc.h"
#include "http/http1.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Without a pidfd (kernel < 5.3) a command's exit is polled this often. */
#define REAP_POLL_MS 10u
/* Longest output line quoted in a result. */
#define MAX_OUTPUT_LINE 200u
#define RESULT_SIZE 512u

enum phase { PH_IDLE, PH_PROBING, PH_REAPING, PH_REPORT, PH_DEAD };

struct dv_health_check {
	struct dv_loop *loop;
	dv_health_change_cb on_change;
	void *arg;

	/* The spec, copied. */
	enum dv_health_kind kind;
	struct dv_sockaddr target;
	char target_text[64];  /* "127.0.0.1:3001" */
	char *http_path;       /* owned */
	int expect_status;
	char *request;         /* owned: the whole HTTP request */
	size_t request_len;
	char *command;         /* owned */
	char **env;            /* owned, NULL-terminated; NULL = environ */
	char *cwd;             /* owned or NULL */
	uint64_t interval_ms, timeout_ms, start_period_ms;
	unsigned retries;

	/* State. */
	enum dv_health_state state;
	unsigned failures;
	bool start_period_over;
	uint64_t started_at;     /* loop ms */
	bool again;              /* dv_health_check_now() during a probe */
	char last_result[RESULT_SIZE];

	/* The probe in flight. */
	enum phase phase;
	struct dv_timer timer;
	uint64_t deadline;       /* loop ms */
	uint64_t probe_start_ms; /* dv_now_ms(), for "after N ms" */
	uint64_t io_closed_at;   /* loop ms when a descriptor was last closed */
	bool result_ok;
	char result[RESULT_SIZE];

	struct dv_io sock;       /* HTTP/TCP: the connection (fd -1 when none) */
	bool connected;
	size_t request_off;
	char *buf;               /* owned: response head / command output */
	size_t buf_len;
	bool output_truncated;

	struct dv_io out_pipe;   /* COMMAND: read end of stdout+stderr */
	struct dv_io pidfd;      /* COMMAND: readable when the child exits */
	pid_t pid;               /* 0 = no child to reap */
	bool pid_polled;         /* no pidfd: poll with waitpid(pid, WNOHANG) */
};

static void timer_fired(struct dv_loop *loop, struct dv_timer *timer);
static void sock_ready(struct dv_loop *loop, struct dv_io *io, uint32_t events);
static void pipe_ready(struct dv_loop *loop, struct dv_io *io, uint32_t events);
static void pidfd_ready(struct dv_loop *loop, struct dv_io *io, uint32_t events);

/* ---- spec ---------------------------------------------------------------- */

static void set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(char **err, const char *fmt, ...)
{
	if (!err)
		return;
	va_list ap;
	va_start(ap, fmt);
	char tmp[512];
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	*err = dv_xstrdup(tmp);
}

static bool path_ok(const char *path)
{
	if (path[0] != '/')
		return false;
	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f || *p == '#')
			return false;
	return true;
}

static bool host_ok(const char *host)
{
	if (!*host)
		return false;
	for (const unsigned char *p = (const unsigned char *)host; *p; p++) {
		if (*p <= 0x20 || *p >= 0x7f || strchr("/?#@\"<>\\{}|^`", *p))
			return false;
	}
	return true;
}

int dv_health_spec_validate(const struct dv_health_spec *spec, char **err)
{
	int rc = -1;
	switch (spec->kind) {
	case DV_HEALTH_HTTP:
	case DV_HEALTH_TCP: {
		int family = spec->target.addr.ss_family;
		if (spec->target.len == 0 || (family != AF_INET && family != AF_INET6)) {
			set_err(err, "health check: no target address (an IPv4 or IPv6 address and port)");
			goto out;
		}
		break;
	}
	case DV_HEALTH_COMMAND:
		if (!spec->command || !*spec->command) {
			set_err(err, "health check: the command is empty");
			goto out;
		}
		if (spec->command_cwd && !*spec->command_cwd) {
			set_err(err, "health check: the command's working directory is empty");
			goto out;
		}
		for (size_t i = 0; spec->command_env && spec->command_env[i]; i++) {
			const char *eq = strchr(spec->command_env[i], '=');
			if (!eq || eq == spec->command_env[i]) {
				set_err(err, "health check: environment entry \"%.100s\" is not NAME=value",
				        spec->command_env[i]);
				goto out;
			}
		}
		break;
	default:
		set_err(err, "health check: unknown kind %d (HTTP, TCP or COMMAND)", (int)spec->kind);
		goto out;
	}
	struct {
		const char *name;
		uint64_t ms;
	} durations[] = {{"interval", spec->interval_ms},
	                 {"timeout", spec->timeout_ms},
	                 {"start_period", spec->start_period_ms}};
	for (size_t i = 0; i < DV_ARRAY_LEN(durations); i++) {
		if (durations[i].ms > DV_HEALTH_MAX_DURATION_MS) {
			set_err(err, "health check: %s of %llu ms is longer than 7 days", durations[i].name,
			        (unsigned long long)durations[i].ms);
			goto out;
		}
	}
	if (spec->kind == DV_HEALTH_HTTP) {
		if (spec->http_path &&
		    (strlen(spec->http_path) > DV_HEALTH_MAX_PATH || !path_ok(spec->http_path))) {
			set_err(err,
			        "health check: HTTP path \"%.100s\" must start with \"/\" and contain only "
			        "visible ASCII characters (no spaces, no \"#\"), at most %u bytes",
			        spec->http_path, DV_HEALTH_MAX_PATH);
			goto out;
		}
		if (spec->http_host &&
		    (strlen(spec->http_host) > DV_HEALTH_MAX_HOST || !host_ok(spec->http_host))) {
			set_err(err, "health check: Host \"%.100s\" is not a valid host name[:port]",
			        spec->http_host);
			goto out;
		}
		if (spec->http_expect_status != 0 &&
		    (spec->http_expect_status < 100 || spec->http_expect_status > 999)) {
			set_err(err, "health check: expected status %d is not between 100 and 999",
			        spec->http_expect_status);
			goto out;
		}
	}
	rc = 0;
out:
	return rc;
}

const char *dv_health_state_name(enum dv_health_state state)
{
	switch (state) {
	case DV_HEALTH_STARTING:
		return "starting";
	case DV_HEALTH_HEALTHY:
		return "healthy";
	case DV_HEALTH_UNHEALTHY:
		return "unhealthy";
	}
	return "unknown";
}

/* ---- descriptors and results ---------------------------------------------- */

static void io_close(struct dv_health_check *check, struct dv_io *io)
{
	if (io->fd < 0)
		return;
	dv_loop_del(check->loop, io);
	close(io->fd);
	io->fd = -1;
	check->io_closed_at = dv_loop_now(check->loop);
}

static bool io_open(const struct dv_health_check *check)
{
	return check->sock.fd >= 0 || check->out_pipe.fd >= 0 || check->pidfd.fd >= 0;
}

/* Closes the connection and the output pipe and frees the probe's buffer.
 * A child still to be reaped (and its pidfd) is left alone. */
static void release_probe(struct dv_health_check *check)
{
	io_close(check, &check->sock);
	io_close(check, &check->out_pipe);
	dv_free(&check->buf);
	check->buf_len = 0;
}

static void set_result(struct dv_health_check *check, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_result(struct dv_health_check *check, bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(check->result, sizeof check->result, fmt, ap);
	va_end(ap);
	check->result_ok = ok;
}

/* The probe is over (check->result is set): release it and let the timer
 * apply the result after the current batch of events. */
static void probe_finished(struct dv_health_check *check)
{
	release_probe(check);
	check->phase = PH_REPORT;
	dv_timer_set(check->loop, &check->timer, dv_loop_now(check->loop));
}

#define probe_done(check, ok, ...)                   \
	do {                                         \
		set_result((check), (ok), __VA_ARGS__); \
		probe_finished(check);               \
	} while (0)

static unsigned long long elapsed_ms(const struct dv_health_check *check)
{
	return (unsigned long long)(dv_now_ms() - check->probe_start_ms);
}

/* ---- HTTP and TCP ---------------------------------------------------------- */

static void start_connect(struct dv_health_check *check)
{
	int fd = socket(check->target.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		probe_done(check, false, "socket: %s", strerror(errno));
		return;
	}
	if (connect(fd, (const struct sockaddr *)&check->target.addr, check->target.len) == -1 &&
	    errno != EINPROGRESS) {
		int saved = errno;
		close(fd);
		probe_done(check, false, "connect to %s: %s", check->target_text, strerror(saved));
		return;
	}
	/* Connected or in progress: either way the first edge (EPOLLOUT, or
	 * EPOLLERR on failure) arrives from the loop, never from inside here. */
	check->sock.fd = fd;
	check->connected = false;
	check->request_off = 0;
	if (dv_loop_add(check->loop, &check->sock, EPOLLIN | EPOLLOUT) == -1) {
		int saved = errno;
		close(fd);
		check->sock.fd = -1;
		probe_done(check, false, "epoll_ctl: %s", strerror(saved));
	}
}

/* Reads what has arrived of the response head; finishes the probe when the
 * head is complete, malformed, too large, or the connection ends. */
static void http_read(struct dv_health_check *check)
{
	if (!check->buf)
		check->buf = dv_xmalloc(DV_HEALTH_MAX_RESPONSE_HEAD);
	for (;;) {
		if (check->buf_len == DV_HEALTH_MAX_RESPONSE_HEAD) {
			probe_done(check, false, "response head from %s%s larger than %u bytes",
			           check->target_text, check->http_path, DV_HEALTH_MAX_RESPONSE_HEAD);
			return;
		}
		ssize_t n = recv(check->sock.fd, check->buf + check->buf_len,
		                 DV_HEALTH_MAX_RESPONSE_HEAD - check->buf_len, 0);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			probe_done(check, false, "reading from %s: %s", check->target_text, strerror(errno));
			return;
		}
		if (n == 0) {
			if (check->buf_len == 0)
				probe_done(check, false, "%s closed the connection without a response",
				           check->target_text);
			else
				probe_done(check, false, "%s closed the connection in the response head "
				           "(after %zu bytes)", check->target_text, check->buf_len);
			return;
		}
		check->buf_len += (size_t)n;
		for (;;) {
			struct dv_http1_field fields[100];
			struct dv_http1_response resp = {.head = {.fields = fields,
			                                          .fields_cap = DV_ARRAY_LEN(fields)}};
			int len = dv_http1_parse_response(check->buf, check->buf_len, NULL, "GET", 3, &resp);
			if (len == DV_HTTP1_INCOMPLETE)
				break;
			if (len == DV_HTTP1_ERROR) {
				probe_done(check, false, "invalid HTTP response from %s%s: %s",
				           check->target_text, check->http_path,
				           resp.head.error ? resp.head.error : "malformed");
				return;
			}
			if (resp.status >= 100 && resp.status < 200 && resp.status != 101) {
				/* An interim response (100, 103): the final one follows. */
				memmove(check->buf, check->buf + len, check->buf_len - (size_t)len);
				check->buf_len -= (size_t)len;
				continue;
			}
			bool ok = check->expect_status ? resp.status == check->expect_status
			                               : resp.status >= 200 && resp.status < 400;
			probe_done(check, ok, "HTTP %d from %s%s after %llu ms", resp.status,
			           check->target_text, check->http_path, elapsed_ms(check));
			return;
		}
	}
}

static void sock_ready(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dv_health_check *check = dv_container_of(io, struct dv_health_check, sock);
	/* An event of this batch for a connection already closed. */
	if (io->fd < 0 || check->phase != PH_PROBING)
		return;
	if (!check->connected) {
		int soerr = 0;
		socklen_t len = sizeof soerr;
		if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
			soerr = errno;
		if (soerr) {
			probe_done(check, false, "connect to %s: %s", check->target_text, strerror(soerr));
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		check->connected = true;
		if (check->kind == DV_HEALTH_TCP) {
			probe_done(check, true, "connected to %s after %llu ms", check->target_text,
			           elapsed_ms(check));
			return;
		}
	}
	while (check->request_off < check->request_len) {
		ssize_t n = send(io->fd, check->request + check->request_off,
		                 check->request_len - check->request_off, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return; /* the next EPOLLOUT edge continues */
			/* The server may have answered (503) and closed before
			 * reading the request: its answer is the better result. */
			int saved = errno;
			http_read(check);
			if (check->phase == PH_PROBING)
				probe_done(check, false, "sending to %s: %s", check->target_text,
				           strerror(saved));
			return;
		}
		check->request_off += (size_t)n;
	}
	http_read(check);
}

/* ---- COMMAND ----------------------------------------------------------------- */

/* Reads the child's output until EAGAIN, keeping the first
 * DV_HEALTH_MAX_COMMAND_OUTPUT bytes; closes the pipe at EOF. */
static void drain_output(struct dv_health_check *check)
{
	if (check->out_pipe.fd < 0)
		return;
	if (!check->buf)
		check->buf = dv_xmalloc(DV_HEALTH_MAX_COMMAND_OUTPUT);
	for (;;) {
		char scratch[4096];
		char *dst = scratch;
		size_t room = sizeof scratch;
		if (check->buf_len < DV_HEALTH_MAX_COMMAND_OUTPUT) {
			dst = check->buf + check->buf_len;
			room = DV_HEALTH_MAX_COMMAND_OUTPUT - check->buf_len;
		}
		ssize_t n = read(check->out_pipe.fd, dst, room);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				io_close(check, &check->out_pipe);
			return;
		}
		if (n == 0) {
			io_close(check, &check->out_pipe);
			return;
		}
		if (dst == scratch)
			check->output_truncated = true;
		else
			check->buf_len += (size_t)n;
	}
}

static void pipe_ready(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dv_health_check *check = dv_container_of(io, struct dv_health_check, out_pipe);
	if (io->fd < 0)
		return;
	drain_output(check);
}

/* Copies the first non-empty line of the output into out (at most
 * MAX_OUTPUT_LINE bytes, cut on a UTF-8 boundary, control characters
 * replaced by '?'). */
static void first_line(const struct dv_health_check *check, char *out, size_t size)
{
	const char *p = check->buf ? check->buf : "";
	const char *end = p + check->buf_len;
	while (p < end && (*p == '\n' || *p == '\r' || *p == ' ' || *p == '\t'))
		p++;
	const char *eol = memchr(p, '\n', (size_t)(end - p));
	if (!eol)
		eol = end;
	while (eol > p && (eol[-1] == '\r' || eol[-1] == ' ' || eol[-1] == '\t'))
		eol--;
	size_t len = (size_t)(eol - p);
	if (len > MAX_OUTPUT_LINE) {
		len = MAX_OUTPUT_LINE;
		while (len > 0 && ((unsigned char)p[len] & 0xc0) == 0x80)
			len--;
	}
	if (len >= size)
		len = size - 1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		out[i] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
	}
	out[len] = '\0';
}

/* The child has been reaped with `status` (-1 = unknown): finish the probe. */
static void command_ended(struct dv_health_check *check, int status)
{
	char line[MAX_OUTPUT_LINE + 1];
	drain_output(check);
	first_line(check, line, sizeof line);
	const char *sep = line[0] ? ": " : "";
	if (status == -1)
		probe_done(check, false, "command ended with an unknown status (reaped elsewhere?)");
	else if (WIFEXITED(status))
		probe_done(check, WEXITSTATUS(status) == 0, "command exited %d%s%s",
		           WEXITSTATUS(status), sep, line);
	else if (WIFSIGNALED(status)) {
		const char *name = sigabbrev_np(WTERMSIG(status));
		if (name)
			probe_done(check, false, "command killed by SIG%s%s%s", name, sep, line);
		else
			probe_done(check, false, "command killed by signal %d%s%s", WTERMSIG(status), sep,
			           line);
	} else
		probe_done(check, false, "command ended with status 0x%x", (unsigned)status);
}

/* Reaps the child if it has exited. Returns true when there is no child left
 * (*status is its wait status, -1 if unknown). */
static bool try_reap(struct dv_health_check *check, int *status)
{
	*status = -1;
	if (check->pid == 0)
		return true;
	pid_t r;
	do
		r = waitpid(check->pid, status, WNOHANG);
	while (r == -1 && errno == EINTR);
	if (r == 0)
		return false;
	if (r == -1)
		*status = -1; /* ECHILD: SIGCHLD ignored, or reaped by someone else */
	check->pid = 0;
	io_close(check, &check->pidfd);
	return true;
}

static void free_check(struct dv_health_check *check)
{
	dv_timer_cancel(check->loop, &check->timer);
	free(check->http_path);
	free(check->request);
	free(check->command);
	for (size_t i = 0; check->env && check->env[i]; i++)
		free(check->env[i]);
	free(check->env);
	free(check->cwd);
	free(check->buf);
	free(check);
}

/* The child of a stopped check or of a timed-out probe is gone. */
static void reaped_after_kill(struct dv_health_check *check)
{
	if (check->phase == PH_DEAD) {
		dv_timer_set(check->loop, &check->timer, dv_loop_now(check->loop));
		return;
	}
	/* REAPING: check->result already says why it was killed. */
	probe_finished(check);
}

static void pidfd_ready(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dv_health_check *check = dv_container_of(io, struct dv_health_check, pidfd);
	int status;
	if (io->fd < 0 || !try_reap(check, &status))
		return;
	if (check->phase == PH_PROBING)
		command_ended(check, status);
	else
		reaped_after_kill(check);
}

static void kill_child(struct dv_health_check *check)
{
	/* Not reaped yet, so the process group id cannot have been reused. */
	if (check->pid > 0) {
		kill(-check->pid, SIGKILL);
		kill(check->pid, SIGKILL);
	}
}

/* Kills the command and waits for it before reporting (result already set). */
static void abort_command(struct dv_health_check *check)
{
	kill_child(check);
	io_close(check, &check->out_pipe);
	check->phase = PH_REAPING;
	if (check->pid_polled)
		dv_timer_set(check->loop, &check->timer, dv_loop_now(check->loop) + REAP_POLL_MS);
	else
		dv_timer_cancel(check->loop, &check->timer);
}

static void start_command(struct dv_health_check *check)
{
	int fds[2] = {-1, -1};
	posix_spawn_file_actions_t actions;
	posix_spawnattr_t attr;
	bool have_actions = false, have_attr = false;
	int rc = 0;

	if (pipe2(fds, O_CLOEXEC) == -1) {
		probe_done(check, false, "pipe: %s", strerror(errno));
		return;
	}
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) == -1) {
		rc = errno;
		set_result(check, false, "fcntl: %s", strerror(rc));
		goto fail;
	}
	if ((rc = posix_spawn_file_actions_init(&actions)) != 0) {
		set_result(check, false, "posix_spawn: %s", strerror(rc));
		goto fail;
	}
	have_actions = true;
	if ((rc = posix_spawnattr_init(&attr)) != 0) {
		set_result(check, false, "posix_spawn: %s", strerror(rc));
		goto fail;
	}
	have_attr = true;
	if (check->cwd)
		rc = posix_spawn_file_actions_addchdir_np(&actions, check->cwd);
	if (rc == 0)
		rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
	/* Its own process group (killed as a whole on timeout), and a clean
	 * signal state: the daemon blocks signals for its signalfd. */
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	if (rc == 0)
		rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
		                                         POSIX_SPAWN_SETSIGDEF);
	if (rc == 0)
		rc = posix_spawnattr_setpgroup(&attr, 0);
	if (rc == 0)
		rc = posix_spawnattr_setsigmask(&attr, &none);
	if (rc == 0)
		rc = posix_spawnattr_setsigdefault(&attr, &all);
	if (rc != 0) {
		set_result(check, false, "posix_spawn: %s", strerror(rc));
		goto fail;
	}
	char *argv[] = {"sh", "-c", check->command, NULL};
	pid_t pid;
	rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, check->env ? check->env : environ);
	if (rc != 0) {
		if (check->cwd)
			set_result(check, false, "cannot run the command: %s (/bin/sh in %s)", strerror(rc),
			           check->cwd);
		else
			set_result(check, false, "cannot run the command: %s (/bin/sh)", strerror(rc));
		goto fail;
	}
	posix_spawn_file_actions_destroy(&actions);
	posix_spawnattr_destroy(&attr);
	close(fds[1]);
	check->pid = pid;
	check->buf_len = 0;
	check->output_truncated = false;

	check->out_pipe.fd = fds[0];
	if (dv_loop_add(check->loop, &check->out_pipe, EPOLLIN) == -1) {
		rc = errno;
		set_result(check, false, "epoll_ctl: %s", strerror(rc));
		abort_command(check);
		return;
	}
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	check->pid_polled = false;
	if (pfd != -1) {
		check->pidfd.fd = pfd;
		if (dv_loop_add(check->loop, &check->pidfd, EPOLLIN) == -1) {
			close(pfd);
			check->pidfd.fd = -1;
			check->pid_polled = true;
		}
	} else {
		check->pid_polled = true;
	}
	if (check->pid_polled) {
		uint64_t poll_at = dv_loop_now(check->loop) + REAP_POLL_MS;
		dv_timer_set(check->loop, &check->timer, poll_at < check->deadline ? poll_at : check->deadline);
	}
	return;

fail:
	if (have_actions)
		posix_spawn_file_actions_destroy(&actions);
	if (have_attr)
		posix_spawnattr_destroy(&attr);
	close(fds[0]);
	close(fds[1]);
	probe_finished(check);
}

/* ---- the state machine ----------------------------------------------------- */

static void start_probe(struct dv_health_check *check)
{
	check->again = false;
	check->phase = PH_PROBING;
	check->probe_start_ms = dv_now_ms();
	check->deadline = dv_loop_now(check->loop) + check->timeout_ms;
	dv_timer_set(check->loop, &check->timer, check->deadline);
	if (check->kind == DV_HEALTH_COMMAND)
		start_command(check);
	else
		start_connect(check);
}

static void probe_timed_out(struct dv_health_check *check)
{
	unsigned long long ms = (unsigned long long)check->timeout_ms;
	switch (check->kind) {
	case DV_HEALTH_TCP:
		probe_done(check, false, "timed out after %llu ms connecting to %s", ms,
		           check->target_text);
		break;
	case DV_HEALTH_HTTP:
		if (!check->connected)
			probe_done(check, false, "timed out after %llu ms connecting to %s", ms,
			           check->target_text);
		else
			probe_done(check, false, "timed out after %llu ms waiting for the response from %s%s",
			           ms, check->target_text, check->http_path);
		break;
	case DV_HEALTH_COMMAND:
		set_result(check, false, "timed out after %llu ms; command killed", ms);
		abort_command(check);
		break;
	}
}

/* Applies check->result, schedules the next probe, and tells the owner if
 * the state changed (last, since the owner may stop the check). */
static void report(struct dv_health_check *check)
{
	struct dv_loop *loop = check->loop;
	uint64_t now = dv_loop_now(loop);
	enum dv_health_state old = check->state, state = old;

	memcpy(check->last_result, check->result, sizeof check->last_result);
	if (check->result_ok) {
		check->failures = 0;
		check->start_period_over = true;
		state = DV_HEALTH_HEALTHY;
	} else {
		bool in_start_period = !check->start_period_over &&
		                       now - check->started_at < check->start_period_ms;
		if (!in_start_period && check->failures < UINT_MAX)
			check->failures++;
		if (check->failures >= check->retries)
			state = DV_HEALTH_UNHEALTHY;
	}
	check->state = state;
	check->phase = PH_IDLE;
	dv_timer_set(loop, &check->timer, check->again ? now : now + check->interval_ms);
	if (state != old)
		check->on_change(check, state, check->last_result, check->arg);
}

static void timer_fired(struct dv_loop *loop, struct dv_timer *timer)
{
	struct dv_health_check *check = dv_container_of(timer, struct dv_health_check, timer);
	int status;
	switch (check->phase) {
	case PH_IDLE:
		start_probe(check);
		break;
	case PH_PROBING:
		if (check->pid_polled && try_reap(check, &status)) {
			command_ended(check, status);
		} else if (dv_loop_now(loop) >= check->deadline) {
			probe_timed_out(check);
		} else {
			uint64_t poll_at = dv_loop_now(loop) + REAP_POLL_MS;
			dv_timer_set(loop, timer, poll_at < check->deadline ? poll_at : check->deadline);
		}
		break;
	case PH_REAPING:
		if (try_reap(check, &status))
			reaped_after_kill(check);
		else
			dv_timer_set(loop, timer, dv_loop_now(loop) + REAP_POLL_MS);
		break;
	case PH_REPORT:
		report(check);
		break;
	case PH_DEAD:
		if (try_reap(check, &status))
			free_check(check);
		else
			dv_timer_set(loop, timer, dv_loop_now(loop) + REAP_POLL_MS);
		break;
	}
}

/* ---- public ------------------------------------------------------------------ */

struct dv_health_check *dv_health_start(struct dv_loop *loop, const struct dv_health_spec *spec,
                                        dv_health_change_cb on_change, void *arg)
{
	if (!on_change || dv_health_spec_validate(spec, NULL) != 0)
		return NULL;
	struct dv_health_check *check = dv_xcalloc(1, sizeof *check);
	check->loop = loop;
	check->on_change = on_change;
	check->arg = arg;
	check->kind = spec->kind;
	check->interval_ms = spec->interval_ms ? spec->interval_ms : DV_HEALTH_DEFAULT_INTERVAL_MS;
	check->timeout_ms = spec->timeout_ms ? spec->timeout_ms : DV_HEALTH_DEFAULT_TIMEOUT_MS;
	check->retries = spec->retries ? spec->retries : DV_HEALTH_DEFAULT_RETRIES;
	check->start_period_ms = spec->start_period_ms;
	check->sock.fd = check->out_pipe.fd = check->pidfd.fd = -1;
	check->sock.cb = sock_ready;
	check->out_pipe.cb = pipe_ready;
	check->pidfd.cb = pidfd_ready;
	check->timer.cb = timer_fired;

	if (spec->kind == DV_HEALTH_COMMAND) {
		check->command = dv_xstrdup(spec->command);
		check->cwd = spec->command_cwd ? dv_xstrdup(spec->command_cwd) : NULL;
		if (spec->command_env) {
			size_t n = 0;
			while (spec->command_env[n])
				n++;
			check->env = dv_xcalloc(n + 1, sizeof *check->env);
			for (size_t i = 0; i < n; i++)
				check->env[i] = dv_xstrdup(spec->command_env[i]);
		}
	} else {
		check->target = spec->target;
		dv_sockaddr_format(&check->target, check->target_text, sizeof check->target_text);
	}
	if (spec->kind == DV_HEALTH_HTTP) {
		check->http_path = dv_xstrdup(spec->http_path ? spec->http_path : "/");
		check->expect_status = spec->http_expect_status;
		check->request = dv_xasprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
		                              "User-Agent: davit-health\r\nAccept: */*\r\n\r\n",
		                              check->http_path,
		                              spec->http_host ? spec->http_host : check->target_text);
		check->request_len = strlen(check->request);
	}

	check->state = DV_HEALTH_STARTING;
	check->started_at = dv_loop_update_now(loop);
	check->phase = PH_IDLE;
	dv_timer_set(loop, &check->timer, check->started_at);
	return check;
}

void dv_health_stop(struct dv_health_check *check)
{
	if (!check)
		return;
	int status;
	kill_child(check);
	release_probe(check);
	check->phase = PH_DEAD;
	if (!try_reap(check, &status)) {
		/* Killed but not gone yet: the pidfd event (or polling) reaps it,
		 * then the timer frees. */
		if (check->pid_polled)
			dv_timer_set(check->loop, &check->timer, dv_loop_now(check->loop) + REAP_POLL_MS);
		else
			dv_timer_cancel(check->loop, &check->timer);
		return;
	}
	if (!io_open(check) && check->io_closed_at < dv_loop_now(check->loop)) {
		free_check(check);
		return;
	}
	/* A descriptor was closed in this iteration: an event of the current
	 * epoll batch may still point into this check. */
	dv_timer_set(check->loop, &check->timer, dv_loop_now(check->loop));
}

void dv_health_check_now(struct dv_health_check *check)
{
	if (check->phase == PH_IDLE)
		dv_timer_set(check->loop, &check->timer, dv_loop_now(check->loop));
	else if (check->phase != PH_DEAD)
		check->again = true;
}

enum dv_health_state dv_health_state(const struct dv_health_check *check)
{
	return check->state;
}

const char *dv_health_last_result(const struct dv_health_check *check)
{
	return check->last_result;
}

unsigned dv_health_failures(const struct dv_health_check *check)
{
	return check->failures;
}

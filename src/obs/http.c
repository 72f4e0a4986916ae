/* obs/http: see http.h. */
#include "obs/http.h"

#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX 8192
#define CONN_TIMEOUT_MS 10000

struct conn {
	struct dv_obs_http *srv;
	struct dv_io io;
	struct dv_timer timer;
	char head[HEAD_MAX + 1];
	size_t hlen;
	struct dv_strbuf out;
	size_t sent;
	bool responding;
	struct conn *next, *prev;
};

struct dv_obs_http {
	struct dv_loop *loop;
	struct dv_io listen;
	dv_obs_http_handler handler;
	void *arg;
	struct conn *conns;
};

static void conn_close(struct conn *c)
{
	struct dv_obs_http *s = c->srv;
	dv_timer_cancel(s->loop, &c->timer);
	dv_loop_del(s->loop, &c->io);
	close(c->io.fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	dv_strbuf_dispose(&c->out);
	free(c);
}

static void conn_timeout(struct dv_loop *loop, struct dv_timer *t)
{
	conn_close(dv_container_of(t, struct conn, timer));
}

/* Writes what is left; closes when done or on error. */
static void conn_flush(struct conn *c)
{
	while (c->sent < c->out.len) {
		ssize_t n = send(c->io.fd, c->out.data + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
		if (n > 0) {
			c->sent += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return; /* EPOLLOUT will call again */
		break;
	}
	conn_close(c);
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	default: return "Error";
	}
}

static void conn_respond(struct conn *c)
{
	c->head[c->hlen] = '\0';
	char method[16] = "", path[1024] = "";
	const char *auth = NULL;
	int status = 400;
	const char *ctype = "text/plain; charset=utf-8";
	struct dv_strbuf body;
	dv_strbuf_init(&body);
	char *eol = strstr(c->head, "\r\n");
	if (eol && sscanf(c->head, "%15s %1023s HTTP/1.", method, path) == 2) {
		for (char *line = eol + 2; *line && strncmp(line, "\r\n", 2) != 0;) {
			char *end = strstr(line, "\r\n");
			if (!end)
				break;
			*end = '\0';
			if (strncasecmp(line, "Authorization:", 14) == 0) {
				auth = line + 14;
				while (*auth == ' ' || *auth == '\t')
					auth++;
			}
			line = end + 2;
		}
		char *q = strchr(path, '?');
		if (q)
			*q = '\0';
		c->srv->handler(c->srv->arg, method, path, auth, &status, &ctype, &body);
	} else {
		dv_strbuf_puts(&body, "malformed request\n");
	}
	bool head_only = strcmp(method, "HEAD") == 0;
	dv_strbuf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n",
	                 status, reason(status), ctype, body.len);
	if (status == 401)
		dv_strbuf_puts(&c->out, "WWW-Authenticate: Bearer realm=\"davit metrics\"\r\n");
	dv_strbuf_puts(&c->out, "\r\n");
	if (!head_only && body.len)
		dv_strbuf_append(&c->out, body.data, body.len);
	dv_strbuf_dispose(&body);
	c->responding = true;
	conn_flush(c);
}

static void conn_event(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct conn *c = dv_container_of(io, struct conn, io);
	if (c->responding) {
		conn_flush(c);
		return;
	}
	for (;;) {
		if (c->hlen == HEAD_MAX) {
			conn_close(c); /* a head this big is not a scrape */
			return;
		}
		ssize_t n = recv(io->fd, c->head + c->hlen, HEAD_MAX - c->hlen, 0);
		if (n > 0) {
			c->hlen += (size_t)n;
			c->head[c->hlen] = '\0';
			if (strstr(c->head, "\r\n\r\n")) {
				conn_respond(c);
				return;
			}
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		conn_close(c);
		return;
	}
}

static void accept_event(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dv_obs_http *s = dv_container_of(io, struct dv_obs_http, listen);
	for (;;) {
		int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		struct conn *c = dv_xcalloc(1, sizeof *c);
		c->srv = s;
		c->io.fd = fd;
		c->io.cb = conn_event;
		c->timer.cb = conn_timeout;
		dv_strbuf_init(&c->out);
		if (dv_loop_add(loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) == -1) {
			close(fd);
			free(c);
			continue;
		}
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		dv_timer_set(loop, &c->timer, dv_loop_now(loop) + CONN_TIMEOUT_MS);
		conn_event(loop, &c->io, EPOLLIN);
	}
}

struct dv_obs_http *dv_obs_http_new(struct dv_loop *loop, const struct dv_sockaddr *addr, dv_obs_http_handler h,
                                    void *arg, char **err)
{
	int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		*err = dv_xasprintf("socket: %s", strerror(errno));
		return NULL;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	char label[80];
	if (bind(fd, (const struct sockaddr *)&addr->addr, addr->len) == -1 || listen(fd, 64) == -1) {
		*err = dv_xasprintf("cannot listen on %s for /metrics: %s", dv_sockaddr_format(addr, label, sizeof label),
		                    strerror(errno));
		close(fd);
		return NULL;
	}
	struct dv_obs_http *s = dv_xcalloc(1, sizeof *s);
	s->loop = loop;
	s->handler = h;
	s->arg = arg;
	s->listen.fd = fd;
	s->listen.cb = accept_event;
	if (dv_loop_add(loop, &s->listen, EPOLLIN) == -1) {
		*err = dv_xasprintf("epoll: %s", strerror(errno));
		close(fd);
		free(s);
		return NULL;
	}
	return s;
}

void dv_obs_http_free(struct dv_obs_http *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_close(s->conns);
	dv_loop_del(s->loop, &s->listen);
	close(s->listen.fd);
	free(s);
}

bool dv_obs_http_bearer_ok(const char *want, const char *auth)
{
	if (!auth || strncmp(auth, "Bearer ", 7) != 0)
		return false;
	const char *got = auth + 7;
	size_t wl = strlen(want), gl = strlen(got);
	unsigned char diff = (unsigned char)(wl != gl);
	for (size_t i = 0; i < wl; i++)
		diff |= (unsigned char)(want[i] ^ (i < gl ? got[i] : 0));
	return diff == 0;
}

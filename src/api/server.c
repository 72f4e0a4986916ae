#include "api/server.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/util.h"
#include "http/http1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_REQUEST (1024 * 1024)

struct dv_api_request {
	struct dv_api_server *server;
	struct dv_io io;
	struct dv_api_request *next, *prev;
	struct dv_strbuf in, out;
	size_t out_sent;
	bool have_request, responded, streaming, finished, closed, writable, text;
	char *method, *path, *query;
	size_t body_off, body_len;
	void (*on_close)(struct dv_api_request *, void *);
	void *on_close_arg;
};

struct dv_api_server {
	struct dv_loop *loop;
	struct dv_io listen_io;
	char *path;
	dv_api_handler handler;
	void *arg;
	struct dv_api_request *conns;
};

static void conn_free(struct dv_api_request *r, bool notify)
{
	if (r->closed)
		return;
	r->closed = true;
	if (notify && r->on_close && !r->finished)
		r->on_close(r, r->on_close_arg);
	dv_loop_del(r->server->loop, &r->io);
	close(r->io.fd);
	if (r->prev)
		r->prev->next = r->next;
	else
		r->server->conns = r->next;
	if (r->next)
		r->next->prev = r->prev;
	dv_strbuf_dispose(&r->in);
	dv_strbuf_dispose(&r->out);
	free(r->method);
	free(r->path);
	free(r->query);
	free(r);
}

/* Writes what is pending; closes the connection when the response is done. */
static void conn_flush(struct dv_api_request *r)
{
	while (r->out_sent < r->out.len) {
		ssize_t n = send(r->io.fd, r->out.data + r->out_sent, r->out.len - r->out_sent, MSG_NOSIGNAL);
		if (n > 0) {
			r->out_sent += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			r->writable = false;
			return;
		}
		conn_free(r, true);
		return;
	}
	dv_strbuf_reset(&r->out);
	r->out_sent = 0;
	if (r->finished)
		conn_free(r, false);
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 422: return "Unprocessable Content";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Status";
	}
}

static char *url_decode(const char *s, size_t len)
{
	char *out = dv_xmalloc(len + 1);
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '%' && i + 2 < len) {
			char hex[3] = {s[i + 1], s[i + 2], 0};
			char *end;
			long v = strtol(hex, &end, 16);
			if (*end == '\0') {
				out[o++] = (char)v;
				i += 2;
				continue;
			}
		}
		out[o++] = s[i] == '+' ? ' ' : s[i];
	}
	out[o] = '\0';
	return out;
}

static void handle_request(struct dv_api_request *r, const struct dv_http1_request *h, size_t head_len)
{
	r->method = dv_xstrndup(h->method, h->method_len);
	const char *q = memchr(h->target, '?', h->target_len);
	size_t plen = q ? (size_t)(q - h->target) : h->target_len;
	r->path = url_decode(h->target, plen);
	r->query = q ? dv_xstrndup(q + 1, h->target_len - plen - 1) : dv_xstrdup("");
	r->body_off = head_len;
	r->body_len = h->head.framing == DV_HTTP1_BODY_LENGTH ? h->head.content_length : 0;
	char *fmt = dv_api_query(r, "format");
	r->text = fmt && strcmp(fmt, "text") == 0;
	free(fmt);
	r->have_request = true;
	r->server->handler(r, r->server->arg);
}

static void conn_event(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dv_api_request *r = dv_container_of(io, struct dv_api_request, io);
	if (r->closed)
		return;
	if (events & EPOLLOUT)
		r->writable = true;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		char buf[16384];
		for (;;) {
			ssize_t n = read(io->fd, buf, sizeof buf);
			if (n > 0) {
				if (!r->have_request) {
					dv_strbuf_append(&r->in, buf, (size_t)n);
					if (r->in.len > MAX_REQUEST) {
						r->finished = true; /* too big: drop */
						conn_free(r, false);
						return;
					}
				}
				continue;
			}
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			/* EOF or error: a client that left before the response ends. */
			if (!r->have_request || !r->finished) {
				conn_free(r, r->have_request);
				return;
			}
			break;
		}
		if (!r->have_request && r->in.len > 0) {
			struct dv_http1_field fields[64];
			struct dv_http1_request h;
			memset(&h, 0, sizeof h);
			h.head.fields = fields;
			h.head.fields_cap = 64;
			int n = dv_http1_parse_request(r->in.data, r->in.len, NULL, &h);
			if (n == DV_HTTP1_ERROR) {
				r->have_request = true;
				r->method = dv_xstrdup("?");
				r->path = dv_xstrdup("?");
				r->query = dv_xstrdup("");
				dv_api_respond_error(r, h.head.error_status, h.head.error ? h.head.error : "bad request");
				return;
			}
			if (n > 0) {
				uint64_t need = (uint64_t)n;
				if (h.head.framing == DV_HTTP1_BODY_LENGTH)
					need += h.head.content_length;
				if (h.head.framing == DV_HTTP1_BODY_CHUNKED || need > MAX_REQUEST) {
					r->have_request = true;
					r->method = dv_xstrdup("?");
					r->path = dv_xstrdup("?");
					r->query = dv_xstrdup("");
					dv_api_respond_error(r, 413, "request body not accepted (use Content-Length, at most 1 MiB)");
					return;
				}
				if (r->in.len >= need) {
					/* The handler may answer (and free r) at once. */
					handle_request(r, &h, (size_t)n);
					return;
				}
			}
		}
	}
	if (!r->closed && r->writable && r->out.len > r->out_sent)
		conn_flush(r);
}

static void listen_event(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dv_api_server *s = dv_container_of(io, struct dv_api_server, listen_io);
	for (;;) {
		int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		struct dv_api_request *r = dv_xcalloc(1, sizeof *r);
		r->server = s;
		r->io.fd = fd;
		r->io.cb = conn_event;
		r->writable = true;
		if (dv_loop_add(loop, &r->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) == -1) {
			close(fd);
			free(r);
			continue;
		}
		r->next = s->conns;
		if (s->conns)
			s->conns->prev = r;
		s->conns = r;
	}
}

struct dv_api_server *dv_api_server_new(struct dv_loop *loop, const char *socket_path, dv_api_handler handler,
                                        void *arg, char **err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(socket_path) >= sizeof sun.sun_path) {
		*err = dv_xasprintf("control socket path too long: %s (use a shorter --state-dir)", socket_path);
		return NULL;
	}
	memcpy(sun.sun_path, socket_path, strlen(socket_path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		*err = dv_xasprintf("socket: %s", strerror(errno));
		return NULL;
	}
	unlink(socket_path);
	mode_t old = umask(077);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
	umask(old);
	if (rc == -1 || listen(fd, 128) == -1) {
		*err = dv_xasprintf("cannot listen on %s: %s", socket_path, strerror(errno));
		close(fd);
		return NULL;
	}
	struct dv_api_server *s = dv_xcalloc(1, sizeof *s);
	s->loop = loop;
	s->listen_io.fd = fd;
	s->listen_io.cb = listen_event;
	s->path = dv_xstrdup(socket_path);
	s->handler = handler;
	s->arg = arg;
	if (dv_loop_add(loop, &s->listen_io, EPOLLIN) == -1) {
		*err = dv_xasprintf("epoll: %s", strerror(errno));
		close(fd);
		free(s->path);
		free(s);
		return NULL;
	}
	return s;
}

void dv_api_server_free(struct dv_api_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_free(s->conns, true);
	dv_loop_del(s->loop, &s->listen_io);
	close(s->listen_io.fd);
	unlink(s->path);
	free(s->path);
	free(s);
}

const char *dv_api_method(const struct dv_api_request *r) { return r->method; }
const char *dv_api_path(const struct dv_api_request *r) { return r->path; }

const char *dv_api_body(const struct dv_api_request *r, size_t *len)
{
	*len = r->body_len;
	return r->in.data ? r->in.data + r->body_off : "";
}

char *dv_api_query(const struct dv_api_request *r, const char *name)
{
	size_t nlen = strlen(name);
	const char *p = r->query;
	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len >= nlen && strncmp(p, name, nlen) == 0 && (len == nlen || p[nlen] == '=')) {
			if (len == nlen)
				return dv_xstrdup("");
			return url_decode(p + nlen + 1, len - nlen - 1);
		}
		p = amp ? amp + 1 : NULL;
	}
	return NULL;
}

bool dv_api_query_flag(const struct dv_api_request *r, const char *name)
{
	char *v = dv_api_query(r, name);
	bool on = v && (!*v || strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0);
	free(v);
	return on;
}

void dv_api_respond(struct dv_api_request *r, int status, const char *content_type, const char *body, size_t len)
{
	dv_strbuf_printf(&r->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
	                 status, reason(status), content_type, len);
	dv_strbuf_append(&r->out, body, len);
	r->responded = true;
	r->finished = true;
	conn_flush(r);
}

void dv_api_respond_error(struct dv_api_request *r, int status, const char *message)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	if (r->text) {
		dv_strbuf_printf(&b, "%s\n", message);
		dv_api_respond(r, status, "text/plain; charset=utf-8", b.data, b.len);
	} else {
		dv_strbuf_puts(&b, "{\"error\":");
		dv_json_escape(&b, message, strlen(message));
		dv_strbuf_puts(&b, "}\n");
		dv_api_respond(r, status, "application/json", b.data, b.len);
	}
	dv_strbuf_dispose(&b);
}

void dv_api_stream_begin(struct dv_api_request *r, int status, const char *content_type)
{
	dv_strbuf_printf(&r->out,
	                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
	                 status, reason(status), content_type);
	r->responded = true;
	r->streaming = true;
	conn_flush(r);
}

void dv_api_stream_write(struct dv_api_request *r, const char *data, size_t len)
{
	if (!len || r->closed)
		return;
	/* A client that does not read (a paused `logs -f`) must not grow our
	 * memory without bound: past 8 MiB pending, drop it. */
	if (r->out.len - r->out_sent > 8u * 1024 * 1024) {
		conn_free(r, true);
		return;
	}
	dv_strbuf_printf(&r->out, "%zx\r\n", len);
	dv_strbuf_append(&r->out, data, len);
	dv_strbuf_append(&r->out, "\r\n", 2);
	if (r->writable)
		conn_flush(r);
}

void dv_api_stream_end(struct dv_api_request *r)
{
	dv_strbuf_append(&r->out, "0\r\n\r\n", 5);
	r->finished = true;
	conn_flush(r);
}

void dv_api_on_close(struct dv_api_request *r, void (*cb)(struct dv_api_request *, void *), void *arg)
{
	r->on_close = cb;
	r->on_close_arg = arg;
}

/* The proxy engine: workers, client sessions, upstream connections.
 *
 * One session per client connection. A session serves its requests one at a
 * time (pipelined requests wait in its input buffer). For each request it
 * borrows one upstream connection (from the worker's idle pool for that
 * replica, or a new one) and streams both ways with bounded buffers.
 *
 * All sockets are edge-triggered; every event just records readiness and
 * calls session_pump(), the single place that moves bytes and changes state.
 * A short read or write means "drained" / "full" (as nginx assumes), which
 * saves the EAGAIN syscall on the hot path.
 *
 * Memory: sessions and upstream connections are freed at the end of the loop
 * iteration (deferred), so that an event later in the same epoll batch never
 * touches freed memory. Buffers come from a per-worker cache and are given
 * back whenever a connection goes idle, so an idle keep-alive connection costs
 * only its session struct.
 */
#include "proxy/proxy.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/strbuf.h"
#include "http/http1.h"
#include "metrics/metrics.h"
#include "proxy/compress.h"
#include "proxy/ratelimit.h"
#include "proxy/static.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (32 * 1024)    /* default buffer; heads may grow one up to the head limit */
#define BUF_CACHE_MAX 128       /* buffers kept per worker for reuse */
#define MAX_IDLE_PER_BACKEND 256
#define LINGER_MS 2000
#define ACCESS_LOG_FLUSH_AT (48 * 1024)
#define MAX_FIELDS_CAP 1024

/* ------------------------------------------------------------------ types */

struct buf {
	char *data;
	uint32_t cap, start, end;
};

enum session_state {
	S_IDLE,       /* waiting for (the rest of) a request head */
	S_CONNECTING, /* request routed; upstream connect in progress */
	S_EXCHANGE,   /* request/response streaming (or tunnel) */
	S_RESPOND,    /* writing a response of our own (error page), then idle or close */
	S_LINGER,     /* output done and shut down; discarding input until EOF */
};

struct body {
	enum dv_http1_framing framing;
	bool scanned_all;   /* every byte of the body has been received and scanned */
	bool eof;           /* source reached EOF */
	uint64_t left;      /* LENGTH: bytes not yet scanned */
	size_t ready;       /* scanned bytes at the start of the source buffer, not yet written */
	struct dv_http1_chunked chunked;
};

/* Per-request state of edge policies (the session keeps the allocation for
 * its next requests). Plain routes never touch it. */
struct edge_state {
	struct dv_sockaddr client;     /* the client address limits and bans apply to */
	const char *reason;            /* why we refused (access log "edge"), static, or NULL */
	bool no_strike;                /* refused because banned: does not count again */
	char extra[320];               /* fields for our own error page (Retry-After, WWW-Authenticate...) */
	enum dv_edge_encoding accept;  /* what the client takes for this request */
	bool vary;                     /* add Vary: Accept-Encoding */
	/* compression of the response */
	struct dv_compressor *comp;    /* owned while compressing */
	struct dv_unchunk unchunk;     /* de-chunks a chunked upstream body */
	struct buf zout;               /* framed compressed output not yet sent */
	bool flushed, stream_done, comp_done;
	/* request body limit (chunked) */
	struct dv_unchunk body;
	uint64_t body_pos, body_data;  /* body bytes decoded so far (absolute), data bytes among them */
	/* the last Authorization value that passed, so that a keep-alive client
	 * costs one password hash per connection, not per request */
	struct dv_edge_policy *auth_policy; /* one reference held (so its address is not reused) */
	uint32_t auth_len;
	char auth_ok[256];
	/* a static file being sent */
	int file_fd;                   /* owned, -1 */
	off_t file_off;
	uint64_t file_left;
};

struct worker;

struct upconn {
	struct worker *w;
	struct dv_io io;
	struct dv_timer timer; /* idle timeout while pooled */
	struct session *s;     /* the session using it, NULL while idle */
	struct dv_sockaddr addr;
	struct buf in;
	bool readable, writable, connected, closed, rdhup;
	struct upconn *idle_next, *idle_prev;
	struct idle_bucket *bucket; /* non-NULL while in an idle list */
	struct upconn *free_next;
};

struct idle_bucket {
	struct dv_sockaddr addr;
	struct upconn *head;
	size_t count;
};

struct session {
	struct worker *w;
	struct dv_io io;
	struct dv_timer timer;
	struct session *next, *prev; /* worker's list of sessions */
	struct session *free_next;
	struct session *runq_next;   /* in the worker's run queue (in_runq) */
	bool in_runq;
	struct dv_sockaddr peer;
	struct buf in, out;
	enum session_state state;
	bool readable, writable, closed, trusted_peer, rdhup;
	bool tls, tls_done;   /* a TLS connection (ssl set); its handshake finished */
	struct ssl_st *ssl;
	bool keep_alive;      /* keep the client connection after this response */
	bool close_after;     /* S_RESPOND: close when written */

	/* the request being served */
	struct upconn *up;
	struct dv_upstream_pool *pool; /* one reference while set */
	struct dv_backend *backend;    /* inflight counted while set and !backend_done */
	bool backend_done;             /* its response was read: no longer counted in flight */
	uint64_t tried;                /* backends tried (bit mask) */
	struct buf req_head;           /* request head rewritten for the upstream */
	uint32_t req_head_sent;
	struct body req, resp;
	bool http10, is_head, idempotent, upgrade_requested, tunnel, wants_json;
	bool resp_head_done, resp_head_sent, up_reused, up_shut, client_shut, resp_keepalive;
	bool req_write_failed, connect_timed_out;
	int status;
	uint64_t head_start_ms, req_done_ms, last_client_ms, last_up_ms, connect_start_ms;
	uint64_t start_ns, bytes_in, bytes_out;
	char request_id[204]; /* ours (32 hex) or the client's (<= 200 chars) */
	char *log_method, *log_host, *log_path; /* owned, when the access log is on */
	/* Edge policy of the current request; NULL on the plain path. */
	struct dv_edge_policy *policy; /* one reference while set */
	struct edge_state *edge;       /* owned; allocated by the first request with a policy */
};

struct listener {
	struct dv_io io;
	struct worker *w;
	bool tls;                      /* accepts TLS (set by the TLS transport) */
};

struct published_table {
	struct dv_route_table *table;
	atomic_int refs;
};

struct worker {
	struct dv_proxy *proxy;
	unsigned id;
	pthread_t thread;
	struct dv_loop *loop;
	struct listener *listeners;
	size_t nlisteners;
	struct published_table *table;
	unsigned table_gen;
	struct dv_tls_certset *certs; /* snapshot of the published certificates (TLS only) */
	unsigned certs_gen;
	atomic_uint applied_gen;     /* table_gen, published for dv_proxy_routes_applied */
	struct session *sessions;
	size_t nsessions;
	struct idle_bucket *idle;
	size_t nidle, idle_cap;
	char *buf_cache[BUF_CACHE_MAX];
	size_t nbuf_cache;
	struct session *free_sessions;
	struct upconn *free_upconns;
	struct session *runq;        /* sessions whose pump was cut short */
	struct dv_timer housekeeping;
	bool stopping, hard_stop;
	uint64_t stop_deadline;
	uint64_t rid_prefix, rid_counter;
	char *log_buf;
	size_t log_len;
	time_t log_sec;
	char log_time[32];
	struct dv_http1_field fields[MAX_FIELDS_CAP];
	struct dv_metrics_shard *metrics; /* this worker's counters (NULL: metrics off) */
};

struct dv_proxy {
	struct dv_proxy_config config;
	struct worker *workers;
	unsigned nworkers;
	pthread_mutex_t table_lock;
	struct published_table *current;
	atomic_uint table_gen;
	atomic_int stop_mode; /* 0 running, 1 graceful, 2 immediate */
	atomic_int running;   /* workers not yet exited */
	int access_log_fd;    /* -1 = off */
	struct dv_http1_limits limits;
	bool started;
};

static void session_pump(struct session *s);
static void session_close(struct session *s);
static void session_arm_timer(struct session *s);
static void upconn_close(struct upconn *u);
/* The edge hooks stay out of line: the plain path keeps its code layout. */
#define EDGE_HOOK __attribute__((noinline))
static const char *edge_error_fields(struct session *s);
static const char *edge_log_reason(const struct session *s);
EDGE_HOOK static bool edge_request(struct session *s, const struct dv_http1_request *r, const char *path, size_t path_len,
                         struct dv_edge_policy *policy, int n);
EDGE_HOOK static void edge_request_end(struct session *s);
static void edge_session_free(struct session *s);
EDGE_HOOK static void edge_response_start(struct session *s, const struct dv_http1_response *r);
EDGE_HOOK static bool edge_response_field(struct session *s, const struct dv_http1_field *f, unsigned *seen);
EDGE_HOOK static void edge_response_fields(struct session *s, unsigned seen);
EDGE_HOOK static bool edge_body_too_large(struct session *s);
EDGE_HOOK static int edge_pump_compressed(struct session *s, struct upconn *u);
static bool edge_compressed_sent(const struct session *s);
EDGE_HOOK static int edge_pump_file(struct session *s);

/* ------------------------------------------------------------------ buffers */

static void buf_alloc(struct worker *w, struct buf *b)
{
	if (b->data)
		return;
	b->data = w->nbuf_cache ? w->buf_cache[--w->nbuf_cache] : dv_xmalloc(BUF_SIZE);
	b->cap = BUF_SIZE;
	b->start = b->end = 0;
}

static void buf_release(struct worker *w, struct buf *b)
{
	if (!b->data)
		return;
	if (b->cap == BUF_SIZE && w->nbuf_cache < BUF_CACHE_MAX)
		w->buf_cache[w->nbuf_cache++] = b->data;
	else
		free(b->data);
	b->data = NULL;
	b->cap = b->start = b->end = 0;
}

static inline size_t buf_len(const struct buf *b)
{
	return b->end - b->start;
}

/* Makes room for `want` more bytes at the end (compacting, or growing up to
 * `max_cap`). Returns the free space at the end afterwards. */
static size_t buf_make_room(struct buf *b, size_t want, size_t max_cap)
{
	if (b->cap - b->end >= want)
		return b->cap - b->end;
	if (b->start > 0) {
		memmove(b->data, b->data + b->start, buf_len(b));
		b->end -= b->start;
		b->start = 0;
	}
	if (b->cap - b->end < want && b->cap < max_cap) {
		size_t ncap = b->cap * 2;
		while (ncap - b->end < want && ncap < max_cap)
			ncap *= 2;
		if (ncap > max_cap)
			ncap = max_cap;
		b->data = dv_xrealloc(b->data, ncap);
		b->cap = (uint32_t)ncap;
	}
	return b->cap - b->end;
}

static void buf_append(struct buf *b, const void *data, size_t len)
{
	if (b->cap - b->end < len)
		buf_make_room(b, len, b->end + len + BUF_SIZE);
	memcpy(b->data + b->end, data, len);
	b->end += (uint32_t)len;
}

static void buf_appends(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

/* ------------------------------------------------------------------ config */

void dv_proxy_config_default(struct dv_proxy_config *c)
{
	memset(c, 0, sizeof *c);
	c->connect_timeout_ms = 5000;
	c->response_timeout_ms = 60000;
	c->upstream_idle_timeout_ms = 60000;
	c->read_timeout_ms = 60000;
	c->tunnel_timeout_ms = 3600000;
	c->header_timeout_ms = 10000;
	c->keepalive_timeout_ms = 75000;
	c->drain_timeout_ms = 30000;
	c->shutdown_timeout_ms = 30000;
	c->max_request_line = 8192;
	c->max_header_bytes = 65536;
	c->max_headers = 100;
	c->eject_after = 3;
	c->eject_for_ms = 10000;
	c->access_log_path = "-";
	c->metrics = true;
}

/* ------------------------------------------------------------------ access log */

static void json_escape_append(char *dst, size_t cap, size_t *len, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	for (; s && *s && *len + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			dst[(*len)++] = '\\';
			dst[(*len)++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			dst[(*len)++] = '\\';
			dst[(*len)++] = 'u';
			dst[(*len)++] = '0';
			dst[(*len)++] = '0';
			dst[(*len)++] = hex[c >> 4];
			dst[(*len)++] = hex[c & 15];
		} else {
			dst[(*len)++] = (char)c;
		}
	}
}

static void access_log_flush(struct worker *w)
{
	if (w->log_len == 0)
		return;
	size_t off = 0;
	while (off < w->log_len) {
		ssize_t n = write(w->proxy->access_log_fd, w->log_buf + off, w->log_len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* a full disk must not stop the proxy: drop the lines */
		off += (size_t)n;
	}
	w->log_len = 0;
}

static void access_log_write(struct session *s)
{
	struct worker *w = s->w;
	if (w->proxy->access_log_fd < 0 || !s->log_method)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != w->log_sec) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		strftime(w->log_time, sizeof w->log_time, "%Y-%m-%dT%H:%M:%S", &tm);
		w->log_sec = ts.tv_sec;
	}
	char line[8192 + 1024];
	size_t n = 0;
	int k = snprintf(line, sizeof line, "{\"time\":\"%s.%03ldZ\",\"host\":\"", w->log_time,
	                 ts.tv_nsec / 1000000);
	n = (size_t)k;
	json_escape_append(line, sizeof line - 512, &n, s->log_host);
	n += (size_t)snprintf(line + n, sizeof line - n, "\",\"method\":\"");
	json_escape_append(line, sizeof line - 512, &n, s->log_method);
	n += (size_t)snprintf(line + n, sizeof line - n, "\",\"path\":\"");
	json_escape_append(line, sizeof line - 400, &n, s->log_path);
	double ms = (double)(dv_now_ns() - s->start_ns) / 1e6;
	k = snprintf(line + n, sizeof line - n,
	             "\",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_ms\":%.3f,"
	             "\"upstream\":%s%s%s,\"request_id\":\"%s\"%s%s%s}\n",
	             s->status, (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out, ms,
	             s->backend ? "\"" : "", s->backend ? s->backend->label : "null", s->backend ? "\"" : "",
	             s->request_id, edge_log_reason(s) ? ",\"edge\":\"" : "",
	             edge_log_reason(s) ? edge_log_reason(s) : "", edge_log_reason(s) ? "\"" : "");
	if (k > 0 && (size_t)k < sizeof line - n)
		n += (size_t)k;
	if (w->log_len + n > ACCESS_LOG_FLUSH_AT * 2)
		access_log_flush(w);
	memcpy(w->log_buf + w->log_len, line, n);
	w->log_len += n;
	if (w->log_len >= ACCESS_LOG_FLUSH_AT)
		access_log_flush(w);
}

/* ------------------------------------------------------------------ request ids */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void make_request_id(struct worker *w, char *out)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t a = w->rid_prefix, b = mix64(w->rid_prefix ^ ++w->rid_counter);
	for (int i = 15; i >= 0; i--, a >>= 4)
		out[i] = hex[a & 15];
	for (int i = 31; i >= 16; i--, b >>= 4)
		out[i] = hex[b & 15];
	out[32] = '\0';
}

static bool valid_request_id(const char *v, size_t len)
{
	if (len == 0 || len > 200)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = v[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* ------------------------------------------------------------------ error pages */

static const char *status_reason(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 416: return "Range Not Satisfiable";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

/* Queues an error response on the client connection. keep: keep the
 * connection afterwards (only if the request was fully consumed). */
static void session_respond_error(struct session *s, int status, const char *message, bool keep, bool json)
{
	char body[512];
	int blen;
	if (json)
		blen = snprintf(body, sizeof body, "{\"error\":{\"status\":%d,\"message\":\"%s\"}}\n", status, message);
	else
		blen = snprintf(body, sizeof body,
		                "<!doctype html><title>%d %s</title><h1>%d %s</h1><p>%s</p>\n", status,
		                status_reason(status), status, status_reason(status), message);
	if (blen < 0)
		blen = 0;
	if ((size_t)blen >= sizeof body)
		blen = sizeof body - 1;
	if (s->w->stopping)
		keep = false;
	char head[1024];
	int hlen = snprintf(head, sizeof head,
	                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
	                    "Cache-Control: no-store\r\nX-Request-Id: %s\r\nConnection: %s\r\n%s\r\n",
	                    status, status_reason(status), json ? "application/json" : "text/html; charset=utf-8",
	                    blen, s->request_id[0] ? s->request_id : "-", keep ? "keep-alive" : "close",
	                    edge_error_fields(s));
	buf_alloc(s->w, &s->out);
	buf_append(&s->out, head, (size_t)hlen);
	if (!s->is_head)
		buf_append(&s->out, body, (size_t)blen);
	s->status = status;
	s->keep_alive = keep;
	s->close_after = !keep;
	s->state = S_RESPOND;
}

/* ------------------------------------------------------------------ worker helpers */

static void worker_sync_table(struct worker *w)
{
	struct dv_proxy *p = w->proxy;
	if (p->config.tls)
		dv_tls_sync(p->config.tls, &w->certs, &w->certs_gen);
	unsigned gen = atomic_load_explicit(&p->table_gen, memory_order_acquire);
	if (gen == w->table_gen && w->table)
		return;
	pthread_mutex_lock(&p->table_lock);
	struct published_table *t = p->current;
	if (t)
		atomic_fetch_add(&t->refs, 1);
	w->table_gen = atomic_load(&p->table_gen);
	pthread_mutex_unlock(&p->table_lock);
	atomic_store_explicit(&w->applied_gen, w->table_gen, memory_order_release);
	struct published_table *old = w->table;
	w->table = t;
	if (old && atomic_fetch_sub(&old->refs, 1) == 1) {
		dv_route_table_free(old->table);
		free(old);
	}
	/* Sessions on pools that just started draining need their deadline. */
	for (struct session *s = w->sessions; s; s = s->next)
		if (s->pool && atomic_load(&s->pool->draining))
			session_arm_timer(s);
}

static struct idle_bucket *idle_bucket_find(struct worker *w, const struct dv_sockaddr *addr, bool create)
{
	for (size_t i = 0; i < w->nidle; i++)
		if (dv_sockaddr_equal(&w->idle[i].addr, addr))
			return &w->idle[i];
	if (!create)
		return NULL;
	if (w->nidle == w->idle_cap) {
		/* Buckets are referenced by pointer from pooled upconns: re-point them. */
		size_t ncap = w->idle_cap ? w->idle_cap * 2 : 16;
		struct idle_bucket *nb = dv_xcalloc(ncap, sizeof *nb);
		if (w->nidle)
			memcpy(nb, w->idle, w->nidle * sizeof *nb);
		for (size_t i = 0; i < w->nidle; i++)
			for (struct upconn *u = nb[i].head; u; u = u->idle_next)
				u->bucket = &nb[i];
		free(w->idle);
		w->idle = nb;
		w->idle_cap = ncap;
	}
	struct idle_bucket *b = &w->idle[w->nidle++];
	memset(b, 0, sizeof *b);
	b->addr = *addr;
	return b;
}

static void idle_remove(struct upconn *u)
{
	struct idle_bucket *b = u->bucket;
	if (!b)
		return;
	if (u->idle_prev)
		u->idle_prev->idle_next = u->idle_next;
	else
		b->head = u->idle_next;
	if (u->idle_next)
		u->idle_next->idle_prev = u->idle_prev;
	u->idle_next = u->idle_prev = NULL;
	u->bucket = NULL;
	b->count--;
	dv_timer_cancel(u->w->loop, &u->timer);
}

/* ------------------------------------------------------------------ upstream connections */

static void upconn_close(struct upconn *u)
{
	if (u->closed)
		return;
	struct worker *w = u->w;
	idle_remove(u);
	dv_timer_cancel(w->loop, &u->timer);
	dv_loop_del(w->loop, &u->io);
	close(u->io.fd);
	u->io.fd = -1;
	u->closed = true;
	u->s = NULL;
	buf_release(w, &u->in);
	u->free_next = w->free_upconns;
	w->free_upconns = u;
}

static void upconn_idle_expired(struct dv_loop *loop, struct dv_timer *t)
{
	upconn_close(dv_container_of(t, struct upconn, timer));
}

static void upconn_event(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct upconn *u = dv_container_of(io, struct upconn, io);
	if (u->closed)
		return;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		u->readable = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		u->rdhup = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		u->writable = true;
	if (u->s) {
		session_pump(u->s);
	} else if (u->readable) {
		/* An idle upstream connection that became readable was closed by
		 * the server (or sent something unsolicited): drop it. */
		upconn_close(u);
	}
}

/* Returns an idle connection to `addr`, or NULL. */
static struct upconn *upconn_take_idle(struct worker *w, const struct dv_sockaddr *addr)
{
	struct idle_bucket *b = idle_bucket_find(w, addr, false);
	if (!b || !b->head)
		return NULL;
	struct upconn *u = b->head;
	idle_remove(u);
	return u;
}

static void upconn_put_idle(struct upconn *u)
{
	struct worker *w = u->w;
	u->s = NULL;
	buf_release(w, &u->in);
	if (w->stopping) {
		upconn_close(u);
		return;
	}
	struct idle_bucket *b = idle_bucket_find(w, &u->addr, true);
	if (b->count >= MAX_IDLE_PER_BACKEND) {
		upconn_close(u);
		return;
	}
	u->idle_prev = NULL;
	u->idle_next = b->head;
	if (b->head)
		b->head->idle_prev = u;
	b->head = u;
	b->count++;
	u->bucket = b;
	dv_timer_set(w->loop, &u->timer, dv_loop_now(w->loop) + w->proxy->config.upstream_idle_timeout_ms);
}

/* Starts a non-blocking connect. Returns the connection, or NULL with errno
 * (a failure to even start, e.g. EMFILE). */
static struct upconn *upconn_connect(struct worker *w, const struct dv_sockaddr *addr)
{
	int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return NULL;
	int one = 1;
	if (addr->addr.ss_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	int rc = connect(fd, (const struct sockaddr *)&addr->addr, addr->len);
	if (rc == -1 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	struct upconn *u = dv_xcalloc(1, sizeof *u);
	u->w = w;
	u->io.fd = fd;
	u->io.cb = upconn_event;
	u->timer.cb = upconn_idle_expired;
	u->addr = *addr;
	u->connected = rc == 0;
	if (dv_loop_add(w->loop, &u->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) == -1) {
		int e = errno;
		close(fd);
		free(u);
		errno = e;
		return NULL;
	}
	return u;
}

/* ------------------------------------------------------------------ body framing */

static void body_init(struct body *b, enum dv_http1_framing framing, uint64_t length)
{
	memset(b, 0, sizeof *b);
	b->framing = framing;
	b->left = length;
	if (framing == DV_HTTP1_BODY_CHUNKED)
		dv_http1_chunked_init(&b->chunked);
	if (framing == DV_HTTP1_BODY_NONE || (framing == DV_HTTP1_BODY_LENGTH && length == 0))
		b->scanned_all = true;
}

/* Scans newly received bytes of src (after the ready ones). Returns 0, or -1
 * if the body is malformed (bad chunked framing). */
static int body_scan(struct body *b, const struct buf *src)
{
	if (b->scanned_all)
		return 0;
	size_t avail = buf_len(src) - b->ready;
	if (avail == 0)
		return 0;
	switch (b->framing) {
	case DV_HTTP1_BODY_LENGTH: {
		size_t take = avail < b->left ? avail : (size_t)b->left;
		b->ready += take;
		b->left -= take;
		if (b->left == 0)
			b->scanned_all = true;
		break;
	}
	case DV_HTTP1_BODY_CHUNKED: {
		size_t consumed = 0;
		enum dv_http1_chunked_result r = dv_http1_chunked_scan(
			&b->chunked, src->data + src->start + b->ready, avail, &consumed, NULL, 0, NULL);
		if (r == DV_HTTP1_CHUNKED_ERROR)
			return -1;
		b->ready += consumed;
		if (r == DV_HTTP1_CHUNKED_DONE)
			b->scanned_all = true;
		break;
	}
	case DV_HTTP1_BODY_UNTIL_CLOSE:
		b->ready += avail;
		break;
	case DV_HTTP1_BODY_NONE:
		b->scanned_all = true;
		break;
	}
	return 0;
}

static inline bool body_finished(const struct body *b)
{
	return b->scanned_all && b->ready == 0;
}

/* ------------------------------------------------------------------ I/O primitives */

/* Reads from fd into b. Returns bytes read (> 0), 0 on EOF, -1 on error,
 * -2 if nothing to read now (or no room). Clears *readable when drained,
 * unless the peer's FIN is known to be pending (eof_pending, from EPOLLRDHUP):
 * data and FIN often arrive in one edge, and no later edge announces the EOF. */
static ssize_t read_into(int fd, struct buf *b, size_t max_cap, bool *readable, bool eof_pending)
{
	size_t room = buf_make_room(b, 4096, max_cap);
	if (room == 0)
		return -2;
	ssize_t n;
	do
		n = read(fd, b->data + b->end, room);
	while (n == -1 && errno == EINTR);
	if (n > 0) {
		b->end += (uint32_t)n;
		if ((size_t)n < room && !eof_pending)
			*readable = false;
		return n;
	}
	if (n == 0)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		*readable = false;
		return -2;
	}
	return -1;
}

/* Writes up to two pieces. Returns bytes written (>= 0), or -1 on error.
 * Clears *writable when the socket is full. */
static ssize_t write_two(int fd, const char *a, size_t alen, const char *b, size_t blen, bool *writable)
{
	struct iovec iov[2];
	int n = 0;
	if (alen)
		iov[n++] = (struct iovec){(void *)a, alen};
	if (blen)
		iov[n++] = (struct iovec){(void *)b, blen};
	if (n == 0)
		return 0;
	ssize_t w;
	do
		w = writev(fd, iov, n);
	while (w == -1 && errno == EINTR);
	if (w == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			*writable = false;
			return 0;
		}
		return -1;
	}
	if ((size_t)w < alen + blen)
		*writable = false;
	return w;
}

/* Client I/O: a TLS session goes through OpenSSL (tls.c), a plain one
 * straight to the socket; one flag test keeps plain HTTP's path as it was. */
static ssize_t client_read(struct session *s, struct buf *b, size_t max_cap)
{
	if (!s->tls)
		return read_into(s->io.fd, b, max_cap, &s->readable, s->rdhup);
	size_t room = buf_make_room(b, 4096, max_cap);
	if (room == 0)
		return -2;
	ssize_t n = dv_tls_read(s->ssl, b->data + b->end, room, &s->readable);
	if (n > 0)
		b->end += (uint32_t)n;
	return n;
}

static ssize_t client_write(struct session *s, const char *a, size_t alen, const char *b, size_t blen)
{
	if (!s->tls)
		return write_two(s->io.fd, a, alen, b, blen, &s->writable);
	return dv_tls_write2(s->ssl, a, alen, b, blen, &s->writable);
}

static void client_shutdown(struct session *s)
{
	if (s->tls)
		dv_tls_close_notify(s->ssl);
	shutdown(s->io.fd, SHUT_WR);
}

/* ------------------------------------------------------------------ sessions */

static size_t head_buffer_cap(const struct dv_proxy *p)
{
	return p->limits.max_head_bytes + p->limits.max_start_line + 1024;
}

static void session_free_log(struct session *s)
{
	dv_free(&s->log_method);
	dv_free(&s->log_host);
	dv_free(&s->log_path);
}

/* Ends the current request: logs it, gives back the replica and pool. The
 * upstream connection must already be detached (pooled or closed). */
static void request_end(struct session *s)
{
	if (s->status == 0 && s->log_method)
		s->status = 499; /* client went away before any response */
	access_log_write(s);
	if (s->w->metrics) {
		unsigned slot = s->pool ? s->pool->metrics_slot : 0;
		bool own_error = !s->resp_head_done && s->status >= 502 && s->status <= 504;
		/* no status yet: the client went away first (499, as the access log says) */
		dv_metrics_request(s->w->metrics, slot, s->status ? s->status : 499, dv_now_ns() - s->start_ns, s->bytes_in,
		                   s->bytes_out, own_error);
		if (s->pool)
			dv_metrics_active(s->w->metrics, slot, -1);
	}
	if (s->policy)
		edge_request_end(s);
	if (s->backend) {
		if (!s->backend_done)
			atomic_fetch_sub_explicit(&s->backend->inflight, 1, memory_order_relaxed);
		s->backend = NULL;
	}
	s->backend_done = false;
	if (s->pool) {
		atomic_fetch_sub_explicit(&s->pool->inflight, 1, memory_order_relaxed);
		dv_upstream_pool_unref(s->pool);
		s->pool = NULL;
	}
	buf_release(s->w, &s->req_head);
	session_free_log(s);
	s->req_head_sent = 0;
	s->tried = 0;
	s->status = 0;
	s->resp_head_done = s->resp_head_sent = s->up_reused = s->up_shut = s->tunnel = false;
	s->client_shut = s->resp_keepalive = s->req_write_failed = s->connect_timed_out = false;
	s->bytes_in = s->bytes_out = 0;
	s->request_id[0] = '\0';
}

static void session_detach_upstream(struct session *s, bool reusable)
{
	struct upconn *u = s->up;
	if (!u)
		return;
	s->up = NULL;
	if (reusable && buf_len(&u->in) == 0 && !u->readable)
		upconn_put_idle(u);
	else
		upconn_close(u);
}

static void session_close(struct session *s)
{
	if (s->closed)
		return;
	struct worker *w = s->w;
	session_detach_upstream(s, false);
	if (s->pool || s->log_method || s->policy)
		request_end(s);
	dv_timer_cancel(w->loop, &s->timer);
	dv_loop_del(w->loop, &s->io);
	if (s->ssl) {
		dv_tls_conn_free(s->ssl);
		s->ssl = NULL;
	}
	close(s->io.fd);
	s->io.fd = -1;
	s->closed = true;
	buf_release(w, &s->in);
	buf_release(w, &s->out);
	buf_release(w, &s->req_head);
	edge_session_free(s);
	if (s->prev)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->nsessions--;
	if (w->metrics)
		dv_metrics_connections(w->metrics, w->nsessions, false);
	s->free_next = w->free_sessions;
	w->free_sessions = s;
}

/* Closes after the output is sent, reading and discarding what the client
 * still sends so that the kernel does not reset the connection (and destroy
 * our response) because of unread input. */
static void session_linger(struct session *s)
{
	client_shutdown(s);
	s->state = S_LINGER;
	buf_release(s->w, &s->out);
	session_arm_timer(s);
}

static uint64_t min_deadline(uint64_t a, uint64_t b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	return a < b ? a : b;
}

static uint64_t session_deadline(const struct session *s)
{
	const struct dv_proxy_config *c = &s->w->proxy->config;
	uint64_t d = 0;
	switch (s->state) {
	case S_IDLE:
		if (buf_len(&s->in) > 0 || s->head_start_ms)
			d = s->head_start_ms + c->header_timeout_ms;
		else
			d = s->last_client_ms + c->keepalive_timeout_ms;
		break;
	case S_CONNECTING:
		d = s->connect_start_ms + c->connect_timeout_ms;
		break;
	case S_EXCHANGE:
		if (s->tunnel) {
			uint64_t last = s->last_client_ms > s->last_up_ms ? s->last_client_ms : s->last_up_ms;
			d = last + c->tunnel_timeout_ms;
			break;
		}
		if (!body_finished(&s->req))
			d = min_deadline(d, s->last_client_ms + c->read_timeout_ms);
		if (!s->resp_head_done && s->req_done_ms)
			d = min_deadline(d, s->req_done_ms + c->response_timeout_ms);
		if (s->resp_head_done)
			d = min_deadline(d, s->last_up_ms + c->read_timeout_ms);
		break;
	case S_RESPOND:
		d = s->last_client_ms + c->read_timeout_ms;
		break;
	case S_LINGER:
		d = s->last_client_ms + LINGER_MS;
		break;
	}
	if (s->pool && atomic_load_explicit(&s->pool->draining, memory_order_relaxed))
		d = min_deadline(d, atomic_load(&s->pool->drain_deadline));
	if (s->w->stopping && s->w->stop_deadline)
		d = min_deadline(d, s->w->stop_deadline);
	return d;
}

static void session_arm_timer(struct session *s)
{
	if (s->closed)
		return;
	uint64_t d = session_deadline(s);
	if (d)
		dv_timer_set(s->w->loop, &s->timer, d);
}

/* A failure before any response byte reached the client: log the request
 * with `status` and answer with an error page (keeping the connection only if
 * the request body was consumed). After the response head was sent there is
 * nothing to say any more: the connection is closed, truncating the response. */
static void session_fail(struct session *s, int status, const char *message)
{
	if (s->resp_head_sent) {
		session_close(s);
		return;
	}
	bool keep = s->keep_alive && body_finished(&s->req) && !s->tunnel;
	session_detach_upstream(s, false);
	/* The request is logged (and its pool released) once the page is sent. */
	session_respond_error(s, status, message, keep, s->wants_json);
}

/* ------------------------------------------------------------------ request start */

static bool method_is(const struct dv_http1_request *r, const char *m)
{
	size_t n = strlen(m);
	return r->method_len == n && memcmp(r->method, m, n) == 0;
}

static void append_field(struct buf *b, const char *name, size_t nlen, const char *value, size_t vlen)
{
	buf_append(b, name, nlen);
	buf_append(b, ": ", 2);
	buf_append(b, value, vlen);
	buf_append(b, "\r\n", 2);
}

static bool field_is(const struct dv_http1_field *f, const char *lower)
{
	return dv_http1_token_eq(f->name, f->name_len, lower);
}

/* Extracts the path of the request target (origin-form as is; absolute-form
 * without scheme and authority). */
static void target_path(const struct dv_http1_request *r, const char **path, size_t *len)
{
	const char *t = r->target;
	size_t n = r->target_len;
	if (n > 0 && t[0] != '/' && t[0] != '*') {
		const char *scheme_end = memchr(t, ':', n);
		if (scheme_end && (size_t)(scheme_end - t) + 3 <= n && scheme_end[1] == '/' && scheme_end[2] == '/') {
			const char *auth = scheme_end + 3;
			const char *slash = memchr(auth, '/', n - (size_t)(auth - t));
			if (slash) {
				*path = slash;
				*len = n - (size_t)(slash - t);
			} else {
				*path = "/";
				*len = 1;
			}
			return;
		}
	}
	*path = t;
	*len = n;
}

/* Writes the request head for the upstream into s->req_head. */
static void build_upstream_head(struct session *s, const struct dv_http1_request *r, const char *path,
                                size_t path_len)
{
	struct buf *b = &s->req_head;
	const struct dv_http1_head *h = &r->head;
	size_t estimate = 256 + r->method_len + path_len + r->host_len * 2 + 128;
	for (size_t i = 0; i < h->nfields; i++)
		estimate += h->fields[i].name_len + h->fields[i].value_len + 4;
	b->data = dv_xmalloc(estimate + 64);
	b->cap = (uint32_t)(estimate + 64);
	b->start = b->end = 0;

	buf_append(b, r->method, r->method_len);
	buf_append(b, " ", 1);
	buf_append(b, path, path_len);
	buf_appends(b, s->http10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");

	const struct dv_http1_field *xff_first = NULL;
	bool have_proto = false, have_fhost = false;
	/* Most requests have no Connection header: skip the per-field scan then. */
	bool has_connection = dv_http1_find_field(h, "connection") != NULL;
	for (size_t i = 0; i < h->nfields; i++) {
		const struct dv_http1_field *f = &h->fields[i];
		if (dv_http1_is_hop_by_hop(f->name, f->name_len) ||
		    (has_connection && dv_http1_connection_lists(h, f->name, f->name_len)) || field_is(f, "expect") ||
		    field_is(f, "x-request-id"))
			continue;
		if (field_is(f, "x-forwarded-for")) {
			if (s->trusted_peer && !xff_first)
				xff_first = f;
			continue; /* re-emitted below, joined */
		}
		if (field_is(f, "x-forwarded-proto")) {
			if (s->trusted_peer && !have_proto) {
				have_proto = true;
				append_field(b, f->name, f->name_len, f->value, f->value_len);
			}
			continue;
		}
		if (field_is(f, "x-forwarded-host")) {
			if (s->trusted_peer && !have_fhost) {
				have_fhost = true;
				append_field(b, f->name, f->name_len, f->value, f->value_len);
			}
			continue;
		}
		append_field(b, f->name, f->name_len, f->value, f->value_len);
	}
	char ip[64];
	dv_sockaddr_format_ip(&s->peer, ip, sizeof ip);
	buf_appends(b, "X-Forwarded-For: ");
	if (xff_first) {
		for (size_t i = 0; i < h->nfields; i++) {
			const struct dv_http1_field *f = &h->fields[i];
			if (field_is(f, "x-forwarded-for") && f->value_len) {
				buf_append(b, f->value, f->value_len);
				buf_append(b, ", ", 2);
			}
		}
	}
	buf_appends(b, ip);
	buf_appends(b, "\r\n");
	if (!have_proto)
		buf_appends(b, s->tls ? "X-Forwarded-Proto: https\r\n" : "X-Forwarded-Proto: http\r\n");
	if (!have_fhost && r->host)
		append_field(b, "X-Forwarded-Host", 16, r->host, r->host_len);
	append_field(b, "X-Request-Id", 12, s->request_id, strlen(s->request_id));
	if (h->framing == DV_HTTP1_BODY_CHUNKED)
		buf_appends(b, "Transfer-Encoding: chunked\r\n");
	if (s->upgrade_requested) {
		buf_appends(b, "Connection: upgrade\r\n");
		append_field(b, "Upgrade", 7, h->upgrade, h->upgrade_len);
	} else if (s->http10) {
		buf_appends(b, "Connection: keep-alive\r\n");
	}
	buf_appends(b, "\r\n");
}

static bool accept_wants_json(const struct dv_http1_head *h)
{
	for (size_t i = 0; i < h->nfields; i++) {
		const struct dv_http1_field *f = &h->fields[i];
		if (!field_is(f, "accept"))
			continue;
		const char *needle = "application/json";
		size_t nl = strlen(needle);
		for (size_t k = 0; k + nl <= f->value_len; k++)
			if (strncasecmp(f->value + k, needle, nl) == 0)
				return true;
	}
	return false;
}

static void session_connect(struct session *s);

/* Plain-HTTP requests while TLS is on: ACME challenges and redirects to
 * https (dv_tls_http_answer). Returns true if answered (the request of `n`
 * head bytes is consumed). */
static bool session_tls_hooks(struct session *s, const struct dv_http1_request *r, const char *path,
                              size_t path_len, int n)
{
	struct dv_proxy *p = s->w->proxy;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&p->config.tls_listen[0].addr;
	unsigned tls_port = p->config.ntls_listen && p->config.https_redirect ? ntohs(sin->sin_port) : 0;
	struct dv_strbuf head, body;
	dv_strbuf_init(&head);
	dv_strbuf_init(&body);
	dv_tls_sync(p->config.tls, &s->w->certs, &s->w->certs_gen);
	int status = dv_tls_http_answer(p->config.tls, s->w->certs, r->host, r->host ? r->host_len : 0, path, path_len,
	                                tls_port, &head, &body);
	if (status) {
		s->in.start += (uint32_t)n;
		bool keep = s->keep_alive && body_finished(&s->req) && !s->w->stopping;
		buf_alloc(s->w, &s->out);
		buf_append(&s->out, head.data, head.len);
		char tail[320];
		int tlen = snprintf(tail, sizeof tail, "Content-Length: %zu\r\nCache-Control: no-store\r\nX-Request-Id: %s\r\n"
		                    "Connection: %s\r\n\r\n", body.len, s->request_id, keep ? "keep-alive" : "close");
		buf_append(&s->out, tail, (size_t)tlen);
		if (!s->is_head && body.len)
			buf_append(&s->out, body.data, body.len);
		s->status = status;
		s->keep_alive = keep;
		s->close_after = !keep;
		s->state = S_RESPOND;
	}
	dv_strbuf_dispose(&head);
	dv_strbuf_dispose(&body);
	return status != 0;
}

/* Parses and starts the request at the head of s->in. Returns true if the
 * state changed (request started, error queued or more input needed is
 * false). */
static bool session_try_request(struct session *s)
{
	struct worker *w = s->w;
	struct dv_proxy *p = w->proxy;
	struct dv_http1_request r;
	memset(&r, 0, sizeof r);
	r.head.fields = w->fields;
	r.head.fields_cap = p->limits.max_fields < MAX_FIELDS_CAP ? p->limits.max_fields + 1 : MAX_FIELDS_CAP;
	int n = dv_http1_parse_request(s->in.data + s->in.start, buf_len(&s->in), &p->limits, &r);
	if (n == DV_HTTP1_INCOMPLETE)
		return false;
	uint64_t now = dv_loop_now(w->loop);
	s->start_ns = dv_now_ns();
	s->tried = 0;
	if (!s->head_start_ms)
		s->head_start_ms = now;
	make_request_id(w, s->request_id);
	if (n == DV_HTTP1_ERROR) {
		/* The stream cannot be trusted past a malformed head: answer, close. */
		s->keep_alive = false;
		s->wants_json = false;
		s->is_head = false;
		if (p->access_log_fd >= 0) {
			s->log_method = dv_xstrdup("-");
			s->log_host = dv_xstrdup("");
			s->log_path = dv_xstrdup("");
		}
		s->bytes_in = 0;
		session_respond_error(s, r.head.error_status, r.head.error ? r.head.error : "malformed request",
		                      false, false);
		s->in.start = s->in.end; /* discard: we will not read it */
		return true;
	}
	const struct dv_http1_head *h = &r.head;
	s->http10 = h->minor_version == 0;
	s->is_head = method_is(&r, "HEAD");
	s->idempotent = s->is_head || method_is(&r, "GET") || method_is(&r, "OPTIONS") ||
	                method_is(&r, "TRACE");
	s->keep_alive = h->keep_alive && !w->stopping;
	s->upgrade_requested = h->connection_upgrade && h->upgrade != NULL;
	s->wants_json = accept_wants_json(h);
	s->bytes_in = 0; /* body bytes only, counted as they are forwarded */

	const struct dv_http1_field *rid = dv_http1_find_field(h, "x-request-id");
	if (rid && valid_request_id(rid->value, rid->value_len)) {
		memcpy(s->request_id, rid->value, rid->value_len);
		s->request_id[rid->value_len] = '\0';
	}
	const char *path;
	size_t path_len;
	target_path(&r, &path, &path_len);
	if (p->access_log_fd >= 0) {
		s->log_method = dv_xstrndup(r.method, r.method_len);
		s->log_host = r.host ? dv_xstrndup(r.host, r.host_len) : dv_xstrdup("");
		s->log_path = dv_xstrndup(path, path_len < 4096 ? path_len : 4096);
	}
	body_init(&s->req, h->framing, h->content_length);
	body_init(&s->resp, DV_HTTP1_BODY_NONE, 0);
	s->resp.scanned_all = false;

	if (method_is(&r, "CONNECT")) {
		s->in.start += (uint32_t)n;
		s->keep_alive = false;
		session_fail(s, 405, "CONNECT is not supported by this reverse proxy");
		return true;
	}
	if (p->config.tls && !s->tls && session_tls_hooks(s, &r, path, path_len, n))
		return true;
	struct dv_upstream_pool *pool = NULL;
	struct dv_edge_policy *policy = NULL;
	if (w->table)
		dv_route_table_lookup(w->table->table, r.host ? r.host : "", r.host ? r.host_len : 0, path, path_len,
		                      &pool, &policy);
	if (policy && edge_request(s, &r, path, path_len, policy, n))
		return true;
	if (!pool) {
		s->in.start += (uint32_t)n;
		if (!body_finished(&s->req))
			s->keep_alive = false; /* we will not read the body */
		session_fail(s, 404, "no route for this host and path");
		return true;
	}
	dv_upstream_pool_ref(pool);
	atomic_fetch_add_explicit(&pool->inflight, 1, memory_order_relaxed);
	s->pool = pool;
	if (w->metrics)
		dv_metrics_active(w->metrics, pool->metrics_slot, 1);

	build_upstream_head(s, &r, path, path_len);
	s->in.start += (uint32_t)n;
	s->req_head_sent = 0;
	s->req_done_ms = 0;
	s->last_client_ms = now;
	if (r.expect_continue && !s->http10 && !body_finished(&s->req)) {
		buf_alloc(w, &s->out);
		buf_appends(&s->out, "HTTP/1.1 100 Continue\r\n\r\n");
	}
	session_connect(s);
	return true;
}

/* ------------------------------------------------------------------ connecting */

static void session_attach(struct session *s, struct upconn *u, bool reused)
{
	u->s = s;
	s->up = u;
	s->up_reused = reused;
	s->connect_start_ms = dv_loop_now(s->w->loop);
	s->state = u->connected ? S_EXCHANGE : S_CONNECTING;
}

/* Connects to backend b (a new connection, or an idle one if allow_idle).
 * Returns false if the connect could not even start. */
static bool session_connect_backend(struct session *s, struct dv_backend *b, bool allow_idle)
{
	struct worker *w = s->w;
	if (allow_idle) {
		struct upconn *u = upconn_take_idle(w, &b->addr);
		if (u) {
			session_attach(s, u, true);
			return true;
		}
	}
	struct upconn *u = upconn_connect(w, &b->addr);
	if (!u)
		return false;
	session_attach(s, u, false);
	return true;
}

static void session_set_backend(struct session *s, struct dv_backend *b)
{
	if (s->backend && !s->backend_done)
		atomic_fetch_sub_explicit(&s->backend->inflight, 1, memory_order_relaxed);
	s->backend_done = false;
	s->backend = b;
	if (b)
		atomic_fetch_add_explicit(&b->inflight, 1, memory_order_relaxed);
}

/* Picks a replica not tried yet and connects; on no replica left, answers
 * 502/503/504. */
static void session_connect(struct session *s)
{
	struct worker *w = s->w;
	const struct dv_proxy_config *c = &w->proxy->config;
	uint64_t now = dv_loop_now(w->loop);
	for (;;) {
		struct dv_backend *b = dv_upstream_pool_pick(s->pool, now, s->tried);
		if (!b) {
			if (!s->tried)
				session_fail(s, 503, "no healthy replica for this route");
			else if (s->connect_timed_out)
				session_fail(s, 504, "connecting to the upstream timed out");
			else
				session_fail(s, 502, "no replica of this route could be reached");
			return;
		}
		s->tried |= dv_upstream_pool_bit(s->pool, b);
		session_set_backend(s, b);
		if (session_connect_backend(s, b, true))
			return;
		dv_log_debug("proxy", "connect to %s failed: %s", b->label, strerror(errno));
		dv_backend_connect_failed(b, now, c->eject_after, c->eject_for_ms);
	}
}

/* The connect attempt on s->up failed (refused, timed out): try another. */
static void session_connect_failed(struct session *s, bool timed_out)
{
	const struct dv_proxy_config *c = &s->w->proxy->config;
	if (s->backend)
		dv_backend_connect_failed(s->backend, dv_loop_now(s->w->loop), c->eject_after, c->eject_for_ms);
	if (timed_out)
		s->connect_timed_out = true;
	session_detach_upstream(s, false);
	s->state = S_CONNECTING;
	session_connect(s);
}

/* The upstream connection broke before a response head arrived. An
 * idempotent request without a body is safe to send again (RFC 9110 9.2.2):
 * on a new connection to the same replica when a reused keep-alive
 * connection was closed under us (the stale-connection race), else on
 * another replica (a replica that died mid-request). Anything else: 502. */
static void session_upstream_broke(struct session *s)
{
	bool retryable = s->up && !s->resp_head_done && s->idempotent && s->req.framing == DV_HTTP1_BODY_NONE &&
	                 !s->tunnel;
	bool stale = retryable && s->up_reused && buf_len(&s->up->in) == 0;
	session_detach_upstream(s, false);
	if (stale && s->backend) {
		s->req_head_sent = 0;
		s->up_reused = false;
		if (session_connect_backend(s, s->backend, false))
			return;
	}
	if (retryable) {
		s->req_head_sent = 0;
		s->req_done_ms = 0;
		dv_log_debug("proxy", "%s closed the connection mid-request; retrying on another replica",
		             s->backend ? s->backend->label : "?");
		s->state = S_CONNECTING;
		session_connect(s);
		return;
	}
	session_fail(s, 502, "the upstream closed the connection without a response");
}

static bool pump_connecting(struct session *s)
{
	struct upconn *u = s->up;
	if (!u->writable && !u->readable)
		return false;
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(u->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err) {
		dv_log_debug("proxy", "connect to %s failed: %s", s->backend ? s->backend->label : "?",
		             strerror(err));
		session_connect_failed(s, false);
		return true;
	}
	if (!u->writable)
		return false;
	u->connected = true;
	if (s->backend)
		dv_backend_connect_succeeded(s->backend);
	s->state = S_EXCHANGE;
	return true;
}

/* ------------------------------------------------------------------ response head */

/* Writes the client's response head for a parsed upstream response. */
static void build_client_head(struct session *s, const struct dv_http1_response *r)
{
	struct buf *b = &s->out;
	const struct dv_http1_head *h = &r->head;
	buf_alloc(s->w, b);
	char line[64];
	int n = snprintf(line, sizeof line, "HTTP/1.1 %d ", r->status);
	buf_append(b, line, (size_t)n);
	buf_append(b, r->reason, r->reason_len);
	buf_append(b, "\r\n", 2);
	bool have_rid = false;
	unsigned edge_seen = 0;
	bool has_connection = dv_http1_find_field(h, "connection") != NULL;
	for (size_t i = 0; i < h->nfields; i++) {
		const struct dv_http1_field *f = &h->fields[i];
		if (dv_http1_is_hop_by_hop(f->name, f->name_len) ||
		    (has_connection && dv_http1_connection_lists(h, f->name, f->name_len)))
			continue;
		if (s->policy && edge_response_field(s, f, &edge_seen))
			continue;
		if (field_is(f, "x-request-id"))
			have_rid = true;
		append_field(b, f->name, f->name_len, f->value, f->value_len);
	}
	if (s->policy)
		edge_response_fields(s, edge_seen);
	if (!have_rid)
		append_field(b, "X-Request-Id", 12, s->request_id, strlen(s->request_id));
	if (r->status == 101) {
		buf_appends(b, "Connection: upgrade\r\n");
		if (h->upgrade)
			append_field(b, "Upgrade", 7, h->upgrade, h->upgrade_len);
	} else {
		if (h->framing == DV_HTTP1_BODY_CHUNKED || (s->edge && s->edge->comp))
			buf_appends(b, "Transfer-Encoding: chunked\r\n");
		if (!s->keep_alive)
			buf_appends(b, "Connection: close\r\n");
		else if (s->http10)
			buf_appends(b, "Connection: keep-alive\r\n");
	}
	buf_append(b, "\r\n", 2);
}

/* Returns 1 if a head was handled, 0 if more bytes are needed, -1 if the
 * session failed (already handled). */
static int session_parse_response(struct session *s)
{
	struct worker *w = s->w;
	struct upconn *u = s->up;
	struct dv_http1_response r;
	memset(&r, 0, sizeof r);
	r.head.fields = w->fields;
	r.head.fields_cap = MAX_FIELDS_CAP;
	const char *method = s->is_head ? "HEAD" : "GET";
	int n = dv_http1_parse_response(u->in.data + u->in.start, buf_len(&u->in), &w->proxy->limits, method,
	                                strlen(method), &r);
	if (n == DV_HTTP1_INCOMPLETE) {
		if (buf_len(&u->in) >= head_buffer_cap(w->proxy))
			goto bad;
		return 0;
	}
	if (n == DV_HTTP1_ERROR)
		goto bad;
	if (r.status >= 100 && r.status < 200 && r.status != 101) {
		/* Interim responses: we answered 100-continue ourselves; drop them. */
		u->in.start += (uint32_t)n;
		return 1;
	}
	if (r.status == 101 && !s->upgrade_requested)
		goto bad;
	if (s->http10 && r.head.framing == DV_HTTP1_BODY_CHUNKED)
		goto bad;
	s->status = r.status;
	s->resp_keepalive = r.head.keep_alive;
	if (r.head.framing == DV_HTTP1_BODY_UNTIL_CLOSE || w->stopping)
		s->keep_alive = false;
	if (r.status == 101) {
		s->tunnel = true;
		s->keep_alive = false;
	}
	if (s->policy)
		edge_response_start(s, &r);
	build_client_head(s, &r);
	u->in.start += (uint32_t)n;
	s->resp_head_done = true;
	if (s->tunnel) {
		/* From now on both directions are raw byte streams until close.
		 * Client bytes already buffered after the request belong to it. */
		body_init(&s->req, DV_HTTP1_BODY_UNTIL_CLOSE, 0);
		body_init(&s->resp, DV_HTTP1_BODY_UNTIL_CLOSE, 0);
	} else {
		body_init(&s->resp, r.head.framing, r.head.content_length);
	}
	return 1;
bad:
	dv_log_warn("proxy", "invalid response from %s: %s", s->backend ? s->backend->label : "?",
	            r.head.error ? r.head.error : "unexpected status");
	session_fail(s, 502, "the upstream sent an invalid response");
	return -1;
}

/* ------------------------------------------------------------------ exchange */

static void session_exchange_complete(struct session *s)
{
	struct worker *w = s->w;
	bool req_all = body_finished(&s->req) && s->req_head_sent == buf_len(&s->req_head) &&
	               !s->req_write_failed;
	bool up_reusable = req_all && s->resp_keepalive && s->resp.framing != DV_HTTP1_BODY_UNTIL_CLOSE &&
	                   !s->tunnel;
	session_detach_upstream(s, up_reusable);
	request_end(s);
	if (!s->keep_alive || !req_all) {
		if (!req_all || buf_len(&s->in) > 0)
			session_linger(s);
		else
			session_close(s);
		return;
	}
	s->state = S_IDLE;
	s->head_start_ms = 0;
	s->last_client_ms = dv_loop_now(w->loop);
	if (buf_len(&s->in) == 0)
		buf_release(w, &s->in);
	if (buf_len(&s->out) == 0)
		buf_release(w, &s->out);
}

static bool pump_exchange(struct session *s)
{
	struct worker *w = s->w;
	struct upconn *u = s->up;
	uint64_t now = dv_loop_now(w->loop);
	bool progress = false;

	/* Client bytes that arrived with the head (or before) may be body. */
	if (!s->req.scanned_all && body_scan(&s->req, &s->in) != 0) {
		s->keep_alive = false;
		session_fail(s, 400, "invalid chunked request body");
		return true;
	}
	if (s->policy && s->policy->max_body && edge_body_too_large(s)) {
		s->keep_alive = false;
		session_fail(s, 413, "the request body is larger than this route allows");
		return true;
	}

	/* client -> upstream */
	if (u && u->writable && !s->req_write_failed) {
		size_t alen = buf_len(&s->req_head) - s->req_head_sent;
		size_t blen = s->req.ready;
		if (alen + blen > 0) {
			ssize_t n = write_two(u->io.fd, s->req_head.data + s->req_head_sent, alen,
			                      s->in.data + s->in.start, blen, &u->writable);
			if (n < 0) {
				/* The upstream may still have answered (say, 413 early):
				 * stop sending, read what it said. */
				s->req_write_failed = true;
				u->readable = true;
				progress = true;
			} else if (n > 0) {
				size_t h = (size_t)n < alen ? (size_t)n : alen;
				s->req_head_sent += (uint32_t)h;
				size_t body = (size_t)n - h;
				s->in.start += (uint32_t)body;
				s->req.ready -= body;
				s->bytes_in += body;
				if (s->in.start == s->in.end)
					s->in.start = s->in.end = 0;
				progress = true;
			}
		}
		if (!s->req_done_ms && s->req_head_sent == buf_len(&s->req_head) && body_finished(&s->req))
			s->req_done_ms = now;
	}
	if (s->tunnel && u && body_finished(&s->req) && s->req.eof && !s->up_shut) {
		shutdown(u->io.fd, SHUT_WR);
		s->up_shut = true;
	}

	/* client body in */
	if (!s->req.scanned_all && s->readable) {
		buf_alloc(w, &s->in);
		ssize_t n = client_read(s, &s->in, s->in.cap);
		if (n > 0) {
			s->last_client_ms = now;
			progress = true;
			if (body_scan(&s->req, &s->in) != 0) {
				s->keep_alive = false;
				session_fail(s, 400, "invalid chunked request body");
				return true;
			}
		} else if (n == 0 || n == -1) {
			if (s->req.framing == DV_HTTP1_BODY_UNTIL_CLOSE && n == 0) {
				s->req.scanned_all = true;
				s->req.eof = true;
				progress = true;
			} else {
				session_close(s); /* client gave up mid-request */
				return false;
			}
		}
	}

	if (s->policy && s->policy->max_body && edge_body_too_large(s)) {
		s->keep_alive = false;
		session_fail(s, 413, "the request body is larger than this route allows");
		return true;
	}

	/* upstream in */
	if (u && !s->resp.scanned_all && u->readable) {
		buf_alloc(w, &u->in);
		size_t cap = s->resp_head_done ? u->in.cap : head_buffer_cap(w->proxy);
		ssize_t n = read_into(u->io.fd, &u->in, cap, &u->readable, u->rdhup);
		if (n > 0) {
			s->last_up_ms = now;
			progress = true;
		} else if (n == 0 || n == -1) {
			if (!s->resp_head_done) {
				session_upstream_broke(s);
				return true;
			}
			if (s->resp.framing == DV_HTTP1_BODY_UNTIL_CLOSE) {
				s->resp.scanned_all = true;
				s->resp.eof = true;
				progress = true;
			} else {
				session_close(s); /* truncated response: the client must see it */
				return false;
			}
		}
	}
	u = s->up;
	if (!u)
		return progress;

	/* response head */
	while (!s->resp_head_done && buf_len(&u->in) > 0) {
		int r = session_parse_response(s);
		if (r < 0)
			return true;
		if (r == 0)
			break;
		progress = true;
	}
	if (s->resp_head_done && !s->resp.scanned_all && body_scan(&s->resp, &u->in) != 0) {
		dv_log_warn("proxy", "invalid chunked body from %s", s->backend ? s->backend->label : "?");
		session_close(s);
		return false;
	}
	/* The replica is done with this request once its whole response is
	 * read: least-conn must see that before the client (who may send the
	 * next request at once, to another worker) gets the last byte. */
	if (s->resp.scanned_all && s->resp_head_done && !s->tunnel && s->backend && !s->backend_done) {
		atomic_fetch_sub_explicit(&s->backend->inflight, 1, memory_order_relaxed);
		s->backend_done = true;
	}

	/* -> client */
	if (s->edge && s->edge->comp && s->resp_head_done) {
		int r = edge_pump_compressed(s, u);
		if (r < 0)
			return false;
		progress = progress || r > 0;
	} else if (s->writable) {
		size_t alen = buf_len(&s->out);
		size_t blen = s->resp_head_done ? s->resp.ready : 0;
		if (alen + blen > 0) {
			ssize_t n = client_write(s, s->out.data + s->out.start, alen, u->in.data + u->in.start, blen);
			if (n < 0) {
				session_close(s);
				return false;
			}
			if (n > 0) {
				size_t h = (size_t)n < alen ? (size_t)n : alen;
				s->out.start += (uint32_t)h;
				if (s->out.start == s->out.end)
					s->out.start = s->out.end = 0;
				size_t body = (size_t)n - h;
				u->in.start += (uint32_t)body;
				s->resp.ready -= body;
				if (u->in.start == u->in.end)
					u->in.start = u->in.end = 0;
				s->bytes_out += (uint64_t)n;
				if (s->resp_head_done)
					s->resp_head_sent = true;
				progress = true;
			}
		}
	}
	if (s->tunnel && body_finished(&s->resp) && s->resp.eof && !s->client_shut && buf_len(&s->out) == 0) {
		client_shutdown(s);
		s->client_shut = true;
	}

	if (s->resp_head_done && body_finished(&s->resp) && buf_len(&s->out) == 0 &&
	    (!s->edge || !s->edge->comp || edge_compressed_sent(s))) {
		if (s->tunnel) {
			if (body_finished(&s->req) && s->req.eof) {
				session_close(s);
				return false;
			}
			return progress;
		}
		session_exchange_complete(s);
		return true;
	}
	return progress;
}

/* ------------------------------------------------------------------ other states */

static bool pump_idle(struct session *s)
{
	struct worker *w = s->w;
	if (buf_len(&s->in) > 0 && session_try_request(s))
		return true;
	if (!s->readable)
		return false;
	buf_alloc(w, &s->in);
	ssize_t n = client_read(s, &s->in, head_buffer_cap(w->proxy));
	if (n > 0) {
		uint64_t now = dv_loop_now(w->loop);
		if (!s->head_start_ms)
			s->head_start_ms = now;
		s->last_client_ms = now;
		return true;
	}
	if (n == -2) {
		if (buf_len(&s->in) == 0)
			buf_release(w, &s->in);
		return false;
	}
	session_close(s); /* EOF or error between requests: a normal end */
	return false;
}

static bool pump_respond(struct session *s)
{
	struct worker *w = s->w;
	if (buf_len(&s->out) > 0) {
		if (!s->writable)
			return false;
		ssize_t n = client_write(s, s->out.data + s->out.start, buf_len(&s->out), NULL, 0);
		if (n < 0) {
			session_close(s);
			return false;
		}
		s->out.start += (uint32_t)n;
		s->bytes_out += (uint64_t)n;
		if (buf_len(&s->out) > 0)
			return n > 0;
	}
	if (s->edge && s->edge->file_fd >= 0) {
		int r = edge_pump_file(s);
		if (r != 1)
			return r == 2;
	}
	buf_release(w, &s->out);
	if (s->pool || s->log_method || s->policy)
		request_end(s);
	if (s->close_after) {
		session_linger(s);
		return true;
	}
	s->state = S_IDLE;
	s->head_start_ms = 0;
	s->last_client_ms = dv_loop_now(w->loop);
	return true;
}

static bool pump_linger(struct session *s)
{
	char scratch[4096];
	while (s->readable) {
		ssize_t n = read(s->io.fd, scratch, sizeof scratch);
		if (n > 0) {
			if ((size_t)n < sizeof scratch && !s->rdhup)
				s->readable = false;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			s->readable = false;
			break;
		}
		session_close(s); /* EOF or error: the client has our response */
		return false;
	}
	return false;
}

/* A TLS session's handshake, before its first request (within the header
 * timeout, which runs from accept). */
static bool pump_tls_handshake(struct session *s)
{
	if (!s->readable && !s->writable)
		return false;
	/* Certificates published since the last loop iteration count already
	 * (publishing does not wake the workers). One atomic load. */
	dv_tls_sync(s->w->proxy->config.tls, &s->w->certs, &s->w->certs_gen);
	int r = dv_tls_handshake(s->ssl, s->w->certs, &s->readable, &s->writable);
	if (r < 0) {
		session_close(s);
		return false;
	}
	if (r == 0)
		return false;
	if (dv_tls_conn_is_acme(s->ssl)) { /* a CA validated TLS-ALPN-01: no HTTP follows */
		s->tls_done = true;
		session_linger(s);
		return true;
	}
	s->tls_done = true;
	s->readable = true; /* the first request may already be decrypted in OpenSSL's buffer */
	return true;
}

/* Moves bytes and state as far as possible. A session that keeps making
 * progress (a fast stream in both directions) is cut after PUMP_BUDGET rounds
 * so that the worker's other connections get their turn; it goes on the run
 * queue and continues before the next wait, since with edge-triggered sockets
 * no new event would come for data that is already there. */
#define PUMP_BUDGET 32
static void session_pump(struct session *s)
{
	bool progress = false;
	for (int round = 0; !s->closed && round < PUMP_BUDGET; round++) {
		progress = false;
		if (s->tls && !s->tls_done) {
			progress = pump_tls_handshake(s);
			if (!progress)
				break;
			continue;
		}
		switch (s->state) {
		case S_IDLE: progress = pump_idle(s); break;
		case S_CONNECTING: progress = pump_connecting(s); break;
		case S_EXCHANGE: progress = pump_exchange(s); break;
		case S_RESPOND: progress = pump_respond(s); break;
		case S_LINGER: progress = pump_linger(s); break;
		}
		if (!progress)
			break;
	}
	if (s->closed)
		return;
	if (progress && !s->in_runq) {
		s->in_runq = true;
		s->runq_next = s->w->runq;
		s->w->runq = s;
		dv_loop_no_wait(s->w->loop);
	}
	session_arm_timer(s);
}

static void session_timeout(struct dv_loop *loop, struct dv_timer *t)
{
	struct session *s = dv_container_of(t, struct session, timer);
	uint64_t now = dv_loop_now(loop);
	uint64_t d = session_deadline(s);
	if (d > now) {
		dv_timer_set(loop, &s->timer, d);
		return;
	}
	bool drained = s->pool && atomic_load(&s->pool->draining) && atomic_load(&s->pool->drain_deadline) <= now;
	switch (s->state) {
	case S_IDLE:
		if (buf_len(&s->in) > 0 && !s->w->stopping) {
			s->keep_alive = false;
			session_respond_error(s, 408, "the request head took too long", false, false);
			s->in.start = s->in.end;
		} else {
			session_close(s);
		}
		break;
	case S_CONNECTING:
		if (drained || s->w->stopping)
			session_fail(s, 504, drained ? "the route was removed and its drain deadline passed"
			                             : "the proxy is shutting down");
		else
			session_connect_failed(s, true);
		break;
	case S_EXCHANGE:
		if (s->tunnel || s->resp_head_sent) {
			session_close(s);
		} else if (drained) {
			s->keep_alive = false;
			session_fail(s, 504, "the route was removed and its drain deadline passed");
		} else if (!body_finished(&s->req) && now >= s->last_client_ms + s->w->proxy->config.read_timeout_ms) {
			s->keep_alive = false;
			session_fail(s, 408, "the request body took too long");
		} else {
			s->keep_alive = false;
			session_fail(s, 504, "the upstream did not answer in time");
		}
		break;
	case S_RESPOND:
	case S_LINGER:
		session_close(s);
		break;
	}
	if (!s->closed)
		session_pump(s);
}

static void session_event(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct session *s = dv_container_of(io, struct session, io);
	if (s->closed)
		return;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->readable = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->rdhup = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		s->writable = true;
	session_pump(s);
}

/* ------------------------------------------------------------------ edge policies */
/* Hooks of the per-route edge policies (proxy/edge.h). Every caller checks
 * s->policy (or s->edge) first, so a route without a policy never gets here. */

static const char *edge_error_fields(struct session *s)
{
	if (!s->edge || !s->edge->extra[0])
		return "";
	return s->edge->extra; /* cleared by edge_request_end */
}

static const char *edge_log_reason(const struct session *s)
{
	return s->edge ? s->edge->reason : NULL;
}

static void edge_session_free(struct session *s)
{
	struct edge_state *e = s->edge;
	if (s->policy) {
		dv_edge_policy_unref(s->policy);
		s->policy = NULL;
	}
	if (!e)
		return;
	if (e->file_fd >= 0)
		close(e->file_fd);
	dv_edge_policy_unref(e->auth_policy);
	dv_compressor_free(e->comp);
	buf_release(s->w, &e->zout);
	free(e);
	s->edge = NULL;
}

/* Counts a 401/403/429 towards a ban. Called when the status is decided,
 * before the client can see the response (and send its next request to
 * another worker). */
static void edge_strike(struct session *s, int status)
{
	struct edge_state *e = s->edge;
	struct dv_edge_policy *p = s->policy;
	if (p->ban_after && !e->no_strike && (status == 401 || status == 403 || status == 429)) {
		uint64_t now = dv_loop_now(s->w->loop);
		if (dv_iptable_strike(dv_iptable_global(), &e->client, p->key, now, p->ban_after, p->ban_window_ms,
		                      p->ban_for_ms)) {
			char ip[64];
			dv_sockaddr_format_ip(&e->client, ip, sizeof ip);
			dv_log_warn("proxy", "banned %s on %s for %llu s: %u responses 401/403/429 within %llu s", ip,
			            p->name, (unsigned long long)(p->ban_for_ms / 1000), p->ban_after,
			            (unsigned long long)(p->ban_window_ms / 1000));
		}
	}
}

static void edge_request_end(struct session *s)
{
	struct edge_state *e = s->edge;
	struct dv_edge_policy *p = s->policy;
	if (e->file_fd >= 0) {
		close(e->file_fd);
		e->file_fd = -1;
	}
	if (e->comp) {
		dv_compressor_free(e->comp);
		e->comp = NULL;
	}
	buf_release(s->w, &e->zout);
	e->reason = NULL;
	e->extra[0] = '\0';
	e->no_strike = e->vary = e->flushed = e->stream_done = e->comp_done = false;
	dv_edge_policy_unref(p);
	s->policy = NULL;
}

/* Refuses the request (its head is n bytes) with our own error page. */
static bool edge_refuse(struct session *s, int n, int status, const char *reason, const char *message)
{
	s->edge->reason = reason;
	edge_strike(s, status);
	s->in.start += (uint32_t)n;
	if (!body_finished(&s->req))
		s->keep_alive = false; /* we will not read the body */
	session_fail(s, status, message);
	return true;
}

static void edge_append(void *arg, const void *data, size_t len)
{
	buf_append(arg, data, len);
}

static bool edge_serve_static(struct session *s, const struct dv_http1_request *r, const char *path,
                              size_t path_len, int n)
{
	struct dv_edge_policy *p = s->policy;
	const struct dv_http1_head *h = &r->head;
	struct dv_static_request q = {
		.head = s->is_head, .method = r->method, .method_len = r->method_len,
		.target = path, .target_len = path_len,
	};
	const struct dv_http1_field *f;
#define EDGE_HDR(name, var)                                                                                        \
	if ((f = dv_http1_find_field(h, name))) {                                                                  \
		q.var = f->value;                                                                                  \
		q.var##_len = f->value_len;                                                                        \
	}
	EDGE_HDR("if-none-match", if_none_match)
	EDGE_HDR("if-modified-since", if_modified_since)
	EDGE_HDR("range", range)
	EDGE_HDR("if-range", if_range)
	EDGE_HDR("accept-encoding", accept_encoding)
#undef EDGE_HDR
	struct dv_static_response resp;
	dv_static_serve(p, &q, &resp);
	if (resp.status >= 400) {
		size_t k = resp.fields_len < sizeof s->edge->extra - 1 ? resp.fields_len : 0;
		memcpy(s->edge->extra, resp.fields, k);
		s->edge->extra[k] = '\0';
		return edge_refuse(s, n, resp.status, resp.status == 400 ? "bad_path" : NULL, resp.message);
	}
	s->in.start += (uint32_t)n;
	if (!body_finished(&s->req))
		s->keep_alive = false;
	if (s->w->stopping)
		s->keep_alive = false;
	struct buf *b = &s->out;
	buf_alloc(s->w, b);
	const char *reason = resp.status == 200 ? "OK" : resp.status == 206 ? "Partial Content"
	                   : resp.status == 301 ? "Moved Permanently" : "Not Modified";
	char line[64];
	int k = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", resp.status, reason);
	buf_append(b, line, (size_t)k);
	buf_append(b, resp.fields, resp.fields_len);
	append_field(b, "X-Request-Id", 12, s->request_id, strlen(s->request_id));
	dv_edge_add_fields(p, s->tls, 0, edge_append, b);
	buf_appends(b, !s->keep_alive ? "Connection: close\r\n" : s->http10 ? "Connection: keep-alive\r\n" : "");
	buf_append(b, "\r\n", 2);
	s->status = resp.status;
	s->edge->file_fd = resp.fd;
	s->edge->file_off = resp.offset;
	s->edge->file_left = resp.length;
	s->close_after = !s->keep_alive;
	s->state = S_RESPOND;
	return true;
}

/* Applies the route's policy to a new request. Returns true if the request
 * was answered here (refused, or a static file), false to proxy it. */
static bool edge_request(struct session *s, const struct dv_http1_request *r, const char *path, size_t path_len,
                         struct dv_edge_policy *p, int n)
{
	struct worker *w = s->w;
	const struct dv_proxy_config *c = &w->proxy->config;
	if (!s->edge) {
		s->edge = dv_xcalloc(1, sizeof *s->edge);
		s->edge->file_fd = -1;
	}
	struct edge_state *e = s->edge;
	dv_edge_policy_ref(p);
	s->policy = p;
	const struct dv_http1_head *h = &r->head;
	/* One pass over the request fields for everything the policy reads. */
	const struct dv_http1_field *xff = NULL, *authz = NULL, *range = NULL, *ae = NULL, *f;
	for (size_t i = 0; i < h->nfields; i++) {
		f = &h->fields[i];
		switch (f->name_len) {
		case 5: if (field_is(f, "range")) range = f; break;
		case 13: if (field_is(f, "authorization") && !authz) authz = f; break;
		case 15: if (field_is(f, "x-forwarded-for")) xff = f; else if (field_is(f, "accept-encoding") && !ae) ae = f; break;
		}
	}
	f = s->trusted_peer ? xff : NULL;
	dv_edge_client_ip(&s->peer, s->trusted_peer, f ? f->value : NULL, f ? f->value_len : 0, c->trusted,
	                  c->ntrusted, &e->client);
	uint64_t now = dv_loop_now(w->loop);
	if (p->ban_after && dv_iptable_banned_until(dv_iptable_global(), &e->client, p->key, now)) {
		e->no_strike = true;
		return edge_refuse(s, n, 403, "banned", "this address is banned for a while after too many refused requests");
	}
	if ((p->nallow || p->ndeny) && !dv_edge_ip_allowed(p, &e->client))
		return edge_refuse(s, n, 403, "ip_denied", "this address may not use this site");
	uint64_t retry_ms = 0;
	if (p->rate_per_ms > 0 &&
	    !dv_iptable_take(dv_iptable_global(), &e->client, p->key, now, p->rate_per_ms, p->burst, &retry_ms)) {
		snprintf(e->extra, sizeof e->extra, "Retry-After: %llu\r\n", (unsigned long long)((retry_ms + 999) / 1000));
		return edge_refuse(s, n, 429, "rate_limited", "too many requests from this address; retry later");
	}
	if (p->nusers) {
		f = authz;
		bool ok = f && e->auth_policy == p && e->auth_len == f->value_len &&
		          memcmp(e->auth_ok, f->value, f->value_len) == 0;
		if (!ok && f && dv_edge_auth_ok(p, f->value, f->value_len)) {
			ok = true;
			if (f->value_len <= sizeof e->auth_ok) {
				dv_edge_policy_unref(e->auth_policy);
				dv_edge_policy_ref(p);
				e->auth_policy = p;
				e->auth_len = (uint32_t)f->value_len;
				memcpy(e->auth_ok, f->value, f->value_len);
			}
		}
		if (!ok) {
			snprintf(e->extra, sizeof e->extra, "WWW-Authenticate: Basic realm=\"%s\", charset=\"UTF-8\"\r\n",
			         p->realm);
			return edge_refuse(s, n, 401, f ? "auth_failed" : "auth_required", "this site needs a user name and password");
		}
	}
	if (p->max_body && h->framing == DV_HTTP1_BODY_LENGTH && h->content_length > p->max_body)
		return edge_refuse(s, n, 413, "body_too_large", "the request body is larger than this route allows");
	if (h->framing == DV_HTTP1_BODY_CHUNKED) {
		dv_unchunk_init(&e->body);
		e->body_pos = e->body_data = 0;
	}
	e->accept = DV_EDGE_ENC_IDENTITY;
	e->vary = p->gzip || p->br; /* the answer depends on Accept-Encoding for compressible types */
	if (e->vary && !s->http10 && !s->is_head && !range && ae)
		e->accept = dv_edge_negotiate(ae->value, ae->value_len, p->gzip, p->br);
	if (p->static_root)
		return edge_serve_static(s, r, path, path_len, n);
	return false;
}

/* Counts the data bytes of a chunked request body as they are scanned. */
static bool edge_body_too_large(struct session *s)
{
	struct edge_state *e = s->edge;
	if (s->req.framing != DV_HTTP1_BODY_CHUNKED || !e)
		return false;
	uint64_t end = s->bytes_in + s->req.ready; /* absolute end of the scanned bytes */
	/* Called after every scan and before the bytes are written upstream, so
	 * body_pos never lags behind what was sent. */
	if (e->body_pos < s->bytes_in)
		e->body_pos = s->bytes_in;
	while (e->body_pos < end) {
		const char *at = s->in.data + s->in.start + (e->body_pos - s->bytes_in);
		size_t len = (size_t)(end - e->body_pos), data;
		size_t skip = dv_unchunk_skip(&e->body, at, len, &data);
		dv_unchunk_took(&e->body, data);
		e->body_pos += skip + data;
		e->body_data += data;
		if (skip == 0 && data == 0)
			break;
	}
	return e->body_data > s->policy->max_body;
}

static bool head_has_token(const struct dv_http1_field *f, const char *lower)
{
	size_t n = strlen(lower);
	for (size_t k = 0; k + n <= f->value_len; k++)
		if (strncasecmp(f->value + k, lower, n) == 0)
			return true;
	return false;
}

/* Decides whether to compress a proxied response (before its head is built). */
static void edge_response_start(struct session *s, const struct dv_http1_response *r)
{
	struct edge_state *e = s->edge;
	const struct dv_http1_head *h = &r->head;
	edge_strike(s, r->status);
	if (!e->vary)
		return; /* compression is off on this route */
	const struct dv_http1_field *ct = NULL, *cc = NULL, *f;
	bool encoded = false;
	for (size_t i = 0; i < h->nfields; i++) {
		f = &h->fields[i];
		switch (f->name_len) {
		case 12: if (field_is(f, "content-type")) ct = f; break;
		case 13: if (field_is(f, "content-range")) encoded = true; else if (field_is(f, "cache-control")) cc = f; break;
		case 16: if (field_is(f, "content-encoding")) encoded = true; break;
		}
	}
	bool compressible = ct && dv_edge_compressible_type(ct->value, ct->value_len);
	e->vary = compressible;
	if (e->accept == DV_EDGE_ENC_IDENTITY || !compressible || encoded || s->tunnel || r->status < 200 ||
	    r->status > 203)
		return;
	if (h->framing == DV_HTTP1_BODY_NONE ||
	    (h->framing == DV_HTTP1_BODY_LENGTH && h->content_length < s->policy->compress_min))
		return;
	if (cc && head_has_token(cc, "no-transform"))
		return;
	e->comp = dv_compressor_new(e->accept);
	if (!e->comp)
		return;
	dv_unchunk_init(&e->unchunk);
	e->flushed = e->stream_done = e->comp_done = false;
	buf_alloc(s->w, &e->zout);
}

static bool edge_response_field(struct session *s, const struct dv_http1_field *f, unsigned *seen)
{
	struct edge_state *e = s->edge;
	if (dv_edge_drop_field(s->policy, f->name, f->name_len, seen))
		return true;
	if (e->vary && f->name_len == 4 && field_is(f, "vary") && head_has_token(f, "accept-encoding"))
		e->vary = false; /* the upstream says it already */
	if (!e->comp)
		return false;
	if ((f->name_len == 14 && field_is(f, "content-length")) || (f->name_len == 13 && field_is(f, "accept-ranges")))
		return true;
	if (f->name_len == 4 && field_is(f, "etag") && f->value_len > 0 && f->value[0] == '"') {
		/* The bytes differ from the upstream's: the validator becomes weak. */
		buf_appends(&s->out, "ETag: W/");
		buf_append(&s->out, f->value, f->value_len);
		buf_appends(&s->out, "\r\n");
		return true;
	}
	return false;
}

static void edge_response_fields(struct session *s, unsigned seen)
{
	struct edge_state *e = s->edge;
	dv_edge_add_fields(s->policy, s->tls, seen, edge_append, &s->out);
	if (e->comp)
		buf_appends(&s->out, e->accept == DV_EDGE_ENC_BR ? "Content-Encoding: br\r\n" : "Content-Encoding: gzip\r\n");
	if (e->vary)
		buf_appends(&s->out, "Vary: Accept-Encoding\r\n");
}

static bool edge_compressed_sent(const struct session *s)
{
	return s->edge->comp_done && buf_len(&s->edge->zout) == 0;
}

#define CHUNK_HEAD 10 /* "%08x\r\n" */

/* Fills e->zout with the next chunk of compressed output. */
static int edge_compress_more(struct session *s, struct upconn *u)
{
	struct edge_state *e = s->edge;
	struct buf *z = &e->zout;
	z->start = z->end = 0;
	char *dst = z->data + CHUNK_HEAD;
	size_t cap = z->cap - CHUNK_HEAD - 2 - 5, total = 0;
	bool chunked = s->resp.framing == DV_HTTP1_BODY_CHUNKED;
	while (total < cap && !e->stream_done) {
		const char *in = u->in.data + u->in.start;
		size_t data = s->resp.ready;
		if (chunked) {
			size_t skip = dv_unchunk_skip(&e->unchunk, in, s->resp.ready, &data);
			u->in.start += (uint32_t)skip;
			s->resp.ready -= skip;
			in += skip;
		}
		enum dv_compress_op op = DV_COMPRESS_PROCESS;
		if (data == 0) {
			if (body_finished(&s->resp))
				op = DV_COMPRESS_FINISH;
			else if (!e->flushed && !u->readable)
				op = DV_COMPRESS_FLUSH; /* the upstream paused: let the client see what we have */
			else
				break;
		}
		size_t used, made;
		int rc = dv_compressor_run(e->comp, op, in, data, &used, dst + total, cap - total, &made);
		if (rc < 0)
			return -1;
		u->in.start += (uint32_t)used;
		s->resp.ready -= used;
		if (chunked)
			dv_unchunk_took(&e->unchunk, used);
		total += made;
		if (used)
			e->flushed = false;
		if (rc == 1)
			e->stream_done = true;
		else if (op == DV_COMPRESS_FLUSH && total < cap)
			e->flushed = true;
		if (!used && !made && op == DV_COMPRESS_PROCESS)
			break;
	}
	if (u->in.start == u->in.end)
		u->in.start = u->in.end = 0;
	if (total) {
		char head[32];
		snprintf(head, sizeof head, "%08zx\r\n", total);
		memcpy(z->data, head, CHUNK_HEAD);
		z->end = (uint32_t)(CHUNK_HEAD + total);
		memcpy(z->data + z->end, "\r\n", 2);
		z->end += 2;
	}
	if (e->stream_done && !e->comp_done) {
		memcpy(z->data + z->end, "0\r\n\r\n", 5);
		z->end += 5;
		e->comp_done = true;
	}
	return 0;
}

/* Sends the response head and compressed chunks. Returns 1 on progress, 0
 * when blocked, -1 if the session was closed. */
static int edge_pump_compressed(struct session *s, struct upconn *u)
{
	struct edge_state *e = s->edge;
	bool progress = false;
	for (int round = 0; round < 64; round++) {
		size_t alen = buf_len(&s->out), blen = buf_len(&e->zout);
		if (alen + blen > 0) {
			if (!s->writable)
				break;
			ssize_t n = client_write(s, s->out.data + s->out.start, alen, e->zout.data + e->zout.start, blen);
			if (n < 0) {
				session_close(s);
				return -1;
			}
			size_t hd = (size_t)n < alen ? (size_t)n : alen;
			s->out.start += (uint32_t)hd;
			if (s->out.start == s->out.end)
				s->out.start = s->out.end = 0;
			e->zout.start += (uint32_t)((size_t)n - hd);
			s->bytes_out += (uint64_t)n;
			if (n > 0) {
				progress = true;
				s->resp_head_sent = true;
			}
			if (buf_len(&s->out) + buf_len(&e->zout) > 0)
				break;
		}
		if (e->comp_done)
			break;
		uint32_t before = u->in.start;
		if (edge_compress_more(s, u) != 0) {
			dv_log_warn("proxy", "compression failed; closing the response");
			session_close(s);
			return -1;
		}
		if (buf_len(&e->zout) == 0)
			break;
		progress = progress || u->in.start != before || buf_len(&e->zout) > 0;
	}
	return progress ? 1 : 0;
}

/* Sends the static file after its head. Returns 1 when the file is all
 * sent, 2 on progress (call again), 0 when blocked, -1 if closed. */
static int edge_pump_file(struct session *s)
{
	struct edge_state *e = s->edge;
	if (e->file_left == 0) {
		close(e->file_fd);
		e->file_fd = -1;
		return 1;
	}
	if (!s->writable)
		return 0;
	size_t want = e->file_left > (1u << 20) ? (1u << 20) : (size_t)e->file_left;
	ssize_t n;
	if (!s->tls) {
		do
			n = sendfile(s->io.fd, e->file_fd, &e->file_off, want);
		while (n == -1 && errno == EINTR);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			s->writable = false;
			return 0;
		}
		if (n <= 0) {
			session_close(s); /* client gone, or the file shrank under us */
			return -1;
		}
		if ((size_t)n < want)
			s->writable = false;
		s->bytes_out += (uint64_t)n;
	} else {
		/* Transports that cannot sendfile (TLS): read into the output
		 * buffer; pump_respond writes it through the normal path. */
		buf_alloc(s->w, &s->out);
		if (buf_len(&s->out) == 0)
			s->out.start = s->out.end = 0;
		size_t room = s->out.cap - s->out.end;
		if (room == 0)
			return 2; /* the output buffer is still being written */
		if (want > room)
			want = room;
		do
			n = pread(e->file_fd, s->out.data + s->out.end, want, e->file_off);
		while (n == -1 && errno == EINTR);
		if (n <= 0) {
			session_close(s);
			return -1;
		}
		s->out.end += (uint32_t)n;
		e->file_off += n;
	}
	e->file_left -= (uint64_t)n;
	s->last_client_ms = dv_loop_now(s->w->loop); /* progress: the read timeout restarts */
	return 2;
}

/* ------------------------------------------------------------------ accept */

static void listener_event(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct listener *l = dv_container_of(io, struct listener, io);
	struct worker *w = l->w;
	for (int i = 0; i < 256 && !w->stopping; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		int fd = accept4(io->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				dv_log_warn("proxy", "accept: %s", strerror(errno));
			/* EMFILE and friends: the edge is lost, so retry from the
			 * housekeeping timer rather than spinning here. */
			return;
		}
		int one = 1;
		if (ss.ss_family != AF_UNIX)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct session *s = dv_xcalloc(1, sizeof *s);
		s->w = w;
		s->io.fd = fd;
		s->io.cb = session_event;
		s->timer.cb = session_timeout;
		memcpy(&s->peer.addr, &ss, len);
		s->peer.len = len;
		for (size_t k = 0; k < w->proxy->config.ntrusted; k++)
			if (dv_cidr_contains(&w->proxy->config.trusted[k], &s->peer))
				s->trusted_peer = true;
		s->state = S_IDLE;
		s->last_client_ms = dv_loop_now(loop);
		s->head_start_ms = s->last_client_ms; /* a new connection owes us a head */
		s->writable = true;
		s->readable = true; /* data often arrives with the connection: try at once */
		if (l->tls) {
			s->tls = true;
			dv_tls_sync(w->proxy->config.tls, &w->certs, &w->certs_gen);
			s->ssl = dv_tls_conn_new(w->proxy->config.tls, w->certs, fd);
			if (!s->ssl) {
				dv_log_warn("proxy", "TLS: cannot create a connection (out of memory?)");
				close(fd);
				free(s);
				continue;
			}
		}
		if (dv_loop_add(loop, &s->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) == -1) {
			dv_log_warn("proxy", "epoll_ctl: %s", strerror(errno));
			if (s->ssl)
				dv_tls_conn_free(s->ssl);
			close(fd);
			free(s);
			continue;
		}
		s->next = w->sessions;
		if (w->sessions)
			w->sessions->prev = s;
		w->sessions = s;
		w->nsessions++;
		if (w->metrics)
			dv_metrics_connections(w->metrics, w->nsessions, true);
		session_pump(s);
	}
}

/* ------------------------------------------------------------------ workers */

static void worker_free_deferred(struct worker *w)
{
	while (w->free_sessions) {
		struct session *s = w->free_sessions;
		w->free_sessions = s->free_next;
		free(s);
	}
	while (w->free_upconns) {
		struct upconn *u = w->free_upconns;
		w->free_upconns = u->free_next;
		free(u);
	}
}

static void worker_close_idle_upstreams(struct worker *w)
{
	for (size_t i = 0; i < w->nidle; i++)
		while (w->idle[i].head)
			upconn_close(w->idle[i].head);
}

static void worker_check_stop(struct worker *w)
{
	int mode = atomic_load(&w->proxy->stop_mode);
	uint64_t now = dv_loop_now(w->loop);
	if (mode >= 1 && !w->stopping) {
		w->stopping = true;
		w->stop_deadline = now + w->proxy->config.shutdown_timeout_ms;
		for (size_t i = 0; i < w->nlisteners; i++) {
			dv_loop_del(w->loop, &w->listeners[i].io);
			close(w->listeners[i].io.fd);
			w->listeners[i].io.fd = -1;
		}
		worker_close_idle_upstreams(w);
		struct session *next;
		for (struct session *s = w->sessions; s; s = next) {
			next = s->next;
			if (s->state == S_IDLE && buf_len(&s->in) == 0)
				session_close(s);
			else {
				s->keep_alive = false;
				session_arm_timer(s);
			}
		}
	}
	if (mode == 2 || (w->stopping && now >= w->stop_deadline)) {
		while (w->sessions)
			session_close(w->sessions);
	}
	if (w->stopping && w->nsessions == 0)
		dv_loop_stop(w->loop);
}

static void worker_run_queue(struct worker *w)
{
	struct session *q = w->runq;
	w->runq = NULL;
	while (q) {
		struct session *s = q;
		q = q->runq_next;
		s->in_runq = false;
		s->runq_next = NULL;
		if (!s->closed)
			session_pump(s); /* may queue it again */
	}
}

static void worker_before_wait(struct dv_loop *loop, void *arg)
{
	struct worker *w = arg;
	worker_run_queue(w);
	worker_free_deferred(w);
	worker_sync_table(w);
	if (atomic_load_explicit(&w->proxy->stop_mode, memory_order_relaxed) || w->stopping)
		worker_check_stop(w);
}

static void worker_wake(struct dv_loop *loop, void *arg)
{
	/* Table changes and stop requests are picked up in before_wait. */
}

static void worker_housekeeping(struct dv_loop *loop, struct dv_timer *t)
{
	struct worker *w = dv_container_of(t, struct worker, housekeeping);
	if (w->proxy->access_log_fd >= 0)
		access_log_flush(w);
	/* Re-arm listeners in case an accept error (EMFILE) lost an edge. */
	for (size_t i = 0; i < w->nlisteners; i++)
		if (w->listeners[i].io.fd >= 0)
			listener_event(loop, &w->listeners[i].io, EPOLLIN);
	dv_timer_set(loop, t, dv_loop_now(loop) + 1000);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	worker_sync_table(w);
	w->housekeeping.cb = worker_housekeeping;
	dv_timer_set(w->loop, &w->housekeeping, dv_loop_now(w->loop) + 1000);
	dv_loop_run(w->loop, worker_before_wait, w);
	while (w->sessions)
		session_close(w->sessions);
	worker_close_idle_upstreams(w);
	worker_free_deferred(w);
	dv_timer_cancel(w->loop, &w->housekeeping);
	if (w->proxy->access_log_fd >= 0)
		access_log_flush(w);
	atomic_fetch_sub(&w->proxy->running, 1);
	return NULL;
}

/* ------------------------------------------------------------------ public API */

static int open_listener(const struct dv_sockaddr *addr, char **err)
{
	char label[80];
	dv_sockaddr_format(addr, label, sizeof label);
	int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		*err = dv_xasprintf("cannot listen on %s: socket: %s", label, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (addr->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (const struct sockaddr *)&addr->addr, addr->len) == -1 || listen(fd, 4096) == -1) {
		int e = errno;
		*err = dv_xasprintf("cannot listen on %s: %s%s", label, strerror(e),
		                    e == EADDRINUSE ? " (is another server using this port?)"
		                    : e == EACCES   ? " (ports below 1024 need root)"
		                                    : "");
		close(fd);
		return -1;
	}
	return fd;
}

struct dv_proxy *dv_proxy_new(const struct dv_proxy_config *config, char **err)
{
	struct dv_proxy *p = dv_xcalloc(1, sizeof *p);
	p->config = *config;
	p->config.listen = dv_xcalloc(config->nlisten ? config->nlisten : 1, sizeof *config->listen);
	if (config->nlisten)
		memcpy(p->config.listen, config->listen, config->nlisten * sizeof *config->listen);
	p->config.trusted = dv_xcalloc(config->ntrusted ? config->ntrusted : 1, sizeof *config->trusted);
	if (config->ntrusted)
		memcpy(p->config.trusted, config->trusted, config->ntrusted * sizeof *config->trusted);
	p->config.access_log_path = NULL;
	p->config.tls_listen = dv_xcalloc(config->ntls_listen ? config->ntls_listen : 1, sizeof *config->tls_listen);
	if (config->ntls_listen)
		memcpy(p->config.tls_listen, config->tls_listen, config->ntls_listen * sizeof *config->tls_listen);
	pthread_mutex_init(&p->table_lock, NULL);
	p->access_log_fd = -1;
	if (config->ntls_listen && !config->tls) {
		*err = dv_xstrdup("TLS listeners need certificates (internal: no TLS state given)");
		goto fail;
	}
	dv_http1_limits_default(&p->limits);
	p->limits.max_start_line = config->max_request_line;
	p->limits.max_head_bytes = config->max_header_bytes;
	p->limits.max_fields = config->max_headers;
	if (p->limits.max_fields >= MAX_FIELDS_CAP)
		p->limits.max_fields = MAX_FIELDS_CAP - 1;

	if (config->access_log_path) {
		if (strcmp(config->access_log_path, "-") == 0) {
			p->access_log_fd = dup(STDOUT_FILENO);
		} else {
			p->access_log_fd = open(config->access_log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		}
		if (p->access_log_fd == -1) {
			*err = dv_xasprintf("cannot open access log %s: %s", config->access_log_path, strerror(errno));
			goto fail;
		}
	}

	p->nworkers = config->workers ? config->workers : dv_cpu_count();
	p->workers = dv_xcalloc(p->nworkers, sizeof *p->workers);
	for (unsigned i = 0; i < p->nworkers; i++) {
		struct worker *w = &p->workers[i];
		w->proxy = p;
		w->id = i;
		w->loop = dv_loop_new(err);
		if (!w->loop)
			goto fail;
		if (dv_loop_set_wake(w->loop, worker_wake, w) != 0) {
			*err = dv_xasprintf("eventfd: %s", strerror(errno));
			goto fail;
		}
		if (getrandom(&w->rid_prefix, sizeof w->rid_prefix, 0) != sizeof w->rid_prefix)
			w->rid_prefix = dv_now_ns() ^ ((uint64_t)i << 56);
		w->log_buf = dv_xmalloc(ACCESS_LOG_FLUSH_AT * 2 + 16384);
		if (config->metrics)
			w->metrics = dv_metrics_shard_new();
		size_t nl = config->nlisten + config->ntls_listen;
		w->listeners = dv_xcalloc(nl ? nl : 1, sizeof *w->listeners);
		for (size_t k = 0; k < nl; k++) {
			struct listener *l = &w->listeners[k];
			l->w = w;
			l->io.cb = listener_event;
			l->tls = k >= config->nlisten;
			l->io.fd = open_listener(l->tls ? &config->tls_listen[k - config->nlisten] : &config->listen[k], err);
			if (l->io.fd == -1)
				goto fail;
			w->nlisteners++;
			if (dv_loop_add(w->loop, &l->io, EPOLLIN) == -1) {
				*err = dv_xasprintf("epoll_ctl: %s", strerror(errno));
				goto fail;
			}
		}
	}
	return p;
fail:
	dv_proxy_free(p);
	return NULL;
}

struct drain_ctx {
	struct dv_route_table *new_table;
	uint64_t deadline;
};

static void pool_is_kept(struct dv_upstream_pool *pool, void *arg)
{
	struct find { struct dv_upstream_pool *old; bool kept; } *f = arg;
	if (!f->kept && dv_upstream_pool_same_backends(pool, f->old))
		f->kept = true;
}

static void drain_if_removed(struct dv_upstream_pool *pool, void *arg)
{
	struct drain_ctx *ctx = arg;
	struct find { struct dv_upstream_pool *old; bool kept; } f = {pool, false};
	dv_route_table_each_pool(ctx->new_table, pool_is_kept, &f);
	if (!f.kept)
		dv_upstream_pool_drain(pool, ctx->deadline);
}

bool dv_proxy_routes_applied(struct dv_proxy *p, unsigned gen)
{
	for (unsigned i = 0; i < p->nworkers; i++) {
		if (!p->workers[i].loop)
			continue;
		unsigned applied = atomic_load_explicit(&p->workers[i].applied_gen, memory_order_acquire);
		if ((int)(applied - gen) < 0)
			return false;
	}
	return true;
}

unsigned dv_proxy_set_routes(struct dv_proxy *p, struct dv_route_table *table)
{
	struct published_table *t = dv_xcalloc(1, sizeof *t);
	t->table = table;
	atomic_init(&t->refs, 1);
	pthread_mutex_lock(&p->table_lock);
	struct published_table *old = p->current;
	p->current = t;
	unsigned gen = atomic_fetch_add_explicit(&p->table_gen, 1, memory_order_release) + 1;
	pthread_mutex_unlock(&p->table_lock);
	if (old) {
		struct drain_ctx ctx = {table, dv_now_ms() + p->config.drain_timeout_ms};
		dv_route_table_each_pool(old->table, drain_if_removed, &ctx);
		if (atomic_fetch_sub(&old->refs, 1) == 1) {
			dv_route_table_free(old->table);
			free(old);
		}
	}
	for (unsigned i = 0; i < p->nworkers; i++)
		if (p->workers[i].loop)
			dv_loop_wake(p->workers[i].loop);
	return gen;
}

bool dv_proxy_running(struct dv_proxy *p)
{
	return atomic_load(&p->running) > 0;
}

int dv_proxy_start(struct dv_proxy *p, char **err)
{
	for (unsigned i = 0; i < p->nworkers; i++) {
		atomic_fetch_add(&p->running, 1);
		int rc = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
		if (rc != 0) {
			atomic_fetch_sub(&p->running, 1);
			*err = dv_xasprintf("cannot start worker thread: %s", strerror(rc));
			dv_proxy_shutdown(p, false);
			for (unsigned k = 0; k < i; k++)
				pthread_join(p->workers[k].thread, NULL);
			p->nworkers = i;
			return -1;
		}
	}
	p->started = true;
	return 0;
}

void dv_proxy_shutdown(struct dv_proxy *p, bool graceful)
{
	int want = graceful ? 1 : 2;
	int cur = atomic_load(&p->stop_mode);
	while (cur < want && !atomic_compare_exchange_weak(&p->stop_mode, &cur, want))
		;
	for (unsigned i = 0; i < p->nworkers; i++)
		if (p->workers[i].loop)
			dv_loop_wake(p->workers[i].loop);
}

void dv_proxy_wait(struct dv_proxy *p)
{
	if (!p->started)
		return;
	for (unsigned i = 0; i < p->nworkers; i++)
		pthread_join(p->workers[i].thread, NULL);
	p->started = false;
}

void dv_proxy_free(struct dv_proxy *p)
{
	if (!p)
		return;
	for (unsigned i = 0; p->workers && i < p->nworkers; i++) {
		struct worker *w = &p->workers[i];
		for (size_t k = 0; k < w->nlisteners; k++)
			if (w->listeners[k].io.fd >= 0)
				close(w->listeners[k].io.fd);
		free(w->listeners);
		for (size_t k = 0; k < w->nbuf_cache; k++)
			free(w->buf_cache[k]);
		free(w->idle);
		free(w->log_buf);
		dv_metrics_shard_free(w->metrics);
		dv_tls_certset_unref(w->certs);
		if (w->table && atomic_fetch_sub(&w->table->refs, 1) == 1) {
			dv_route_table_free(w->table->table);
			free(w->table);
		}
		dv_loop_free(w->loop);
	}
	free(p->workers);
	if (p->current) {
		if (atomic_fetch_sub(&p->current->refs, 1) == 1) {
			dv_route_table_free(p->current->table);
			free(p->current);
		}
	}
	if (p->access_log_fd >= 0)
		close(p->access_log_fd);
	pthread_mutex_destroy(&p->table_lock);
	free(p->config.listen);
	free(p->config.tls_listen);
	free(p->config.trusted);
	free(p);
}

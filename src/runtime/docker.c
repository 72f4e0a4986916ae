/* The Docker runtime driver. See docker.h. */
#include "runtime/docker.h"

#include "core/alloc.h"
#include "core/jsonparse.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/strbuf.h"
#include "core/util.h"
#include "runtime/docker_api.h"
#include "runtime/registry.h"
#include "runtime/replica_log.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_HOST "unix:///var/run/docker.sock"
#define DEFAULT_THREADS 8 /* start gates can hold one for a while (a Docker health interval) */
#define DEFAULT_HEALTH_WAIT_MS 60000u
#define CONTEXT_MAX (512ull << 20)
#define GATE_POLL_MS 100

struct dk_runtime;

/* ---- messages from the threads to the loop ---- */

enum msg_type { M_LOG, M_LOG_END, M_RUNNING, M_LOGS_DONE, M_EXITED, M_DONE, M_HEALTH };

struct msg {
	struct msg *next;
	enum msg_type type;
	struct dv_replica *r;
	int stream;
	char *data;
	size_t len;
	int status;
	dv_docker_done_cb done;
	void *arg;
	int rc;
};

/* ---- jobs for the job threads ---- */

enum job_type { J_START, J_STOP, J_WAIT, J_PRUNE, J_VOLUMES, J_REMOVE, J_LOGIN };

struct start_net {
	char *name;
	bool internal;
	char **aliases;
};

struct job {
	struct job *next;
	enum job_type type;
	struct dv_replica *r;
	/* J_START */
	char *create_json, *image, *pull, *build_ctx, *build_digest, *dockerfile, *target, *adopt_id;
	char **build_args;
	struct start_net *nets;
	size_t n_nets;
	char **volumes, **bind_dirs;
	unsigned app_port;
	uint16_t loopback_port;
	bool wait_port;
	uint64_t health_wait_ms;
	/* J_PRUNE / J_VOLUMES */
	char *app;
	unsigned keep;
	char **in_use;
	bool remove;
	char *user, *password; /* J_LOGIN (app holds the host) */
	dv_docker_done_cb done;
	void *arg;
};

/* ---- log streams (the stream thread) ---- */

struct stream {
	struct stream *next;
	struct dv_replica *r;      /* NULL: the events stream */
	struct dv_strbuf lines;    /* events: an unfinished JSON line */
	struct dk_runtime *url_rt; /* events: the runtime */
	CURL *easy;
	struct dv_docker_demux demux;
	char *url;
};

struct dv_replica {
	struct dk_runtime *rt;
	struct dv_replica *prev, *next;
	char *app, *service, *release, *name, *cname;
	unsigned index;
	enum dv_replica_state state; /* loop thread only */
	dv_replica_exit_cb on_exit;
	dv_replica_running_cb on_running;
	dv_replica_health_cb on_health;
	void *arg;
	struct dv_replica_log log;
	int64_t started_at_ms;
	uint64_t started_mono, ended_mono;
	int status;
	bool has_status;
	uint64_t stop_timeout_ms;
	/* shared with the job threads, under rt->lock */
	char *id;
	bool created, started, stop_requested, gone;
	bool start_done;        /* the start job is over: nothing more comes from it */
	int pid;
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

struct dk_runtime {
	struct dv_runtime base;
	struct dv_loop *loop;
	char *host;            /* as given */
	char *socket_path;     /* unix: the socket; NULL for tcp */
	char *base_url;        /* "http://localhost" or "http://HOST:PORT" */
	char *state_dir;
	char *owner;           /* label davit.owner: the absolute state directory */
	size_t ring_lines;
	pthread_mutex_t lock;  /* the job queue, the message queue, replicas' shared fields, api */
	pthread_cond_t cond;
	pthread_cond_t start_done_cond; /* a start job finished (r->start_done) */
	struct job *jobs, **jobs_tail;
	struct msg *msgs, **msgs_tail;
	bool quit;
	pthread_t *threads;
	unsigned n_threads;
	pthread_mutex_t image_lock; /* one image build/pull at a time: replicas of one release share it */
	char api[16];          /* negotiated version, "" until known */
	char *last_error;      /* the last connection failure (tcp check) */
	struct dv_io event;    /* eventfd: messages are waiting */
	/* stream thread */
	pthread_t stream_thread;
	bool stream_started;
	CURLM *multi;
	struct stream *new_streams; /* under lock */
	bool events_on;             /* the events stream runs or is queued (under lock) */
	struct stream *streams;     /* stream thread only */
	struct dv_replica *replicas;
	struct dv_replica *removed;
	struct dv_timer free_timer;
};

static const struct dv_runtime_driver docker_driver;

static int64_t realtime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static char **strv_dup(char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	char **out = dv_xcalloc(n + 1, sizeof *out);
	for (size_t i = 0; i < n; i++)
		out[i] = dv_xstrdup(v[i]);
	return out;
}

static char *dup_or_null(const char *s)
{
	return s ? dv_xstrdup(s) : NULL;
}

/* ---- posting to the loop (any thread) ---- */

static void post(struct dk_runtime *rt, struct msg *m)
{
	pthread_mutex_lock(&rt->lock);
	m->next = NULL;
	*rt->msgs_tail = m;
	rt->msgs_tail = &m->next;
	pthread_mutex_unlock(&rt->lock);
	uint64_t one = 1;
	ssize_t w = write(rt->event.fd, &one, sizeof one);
	(void)w;
}

static void post_simple(struct dk_runtime *rt, enum msg_type type, struct dv_replica *r, int status)
{
	struct msg *m = dv_xcalloc(1, sizeof *m);
	m->type = type;
	m->r = r;
	m->status = status;
	post(rt, m);
}

static void post_log(struct dk_runtime *rt, struct dv_replica *r, int stream, const char *data, size_t len)
{
	struct msg *m = dv_xcalloc(1, sizeof *m);
	m->type = M_LOG;
	m->r = r;
	m->stream = stream;
	m->data = dv_xmalloc(len + 1);
	memcpy(m->data, data, len);
	m->len = len;
	post(rt, m);
}

/* A line of davit's own about the replica (build output, errors) into its log. */
static void post_line(struct dk_runtime *rt, struct dv_replica *r, int stream, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void post_line(struct dk_runtime *rt, struct dv_replica *r, int stream, const char *fmt, ...)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	va_list ap;
	va_start(ap, fmt);
	dv_strbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	dv_strbuf_puts(&b, "\n");
	post_log(rt, r, stream, b.data, b.len);
	dv_strbuf_dispose(&b);
}

/* ---- HTTP to the engine (job threads, and list() on the loop) ---- */

struct resp {
	long status;
	struct dv_strbuf body;
	/* streaming: called with each chunk instead of buffering */
	void (*chunk)(const char *data, size_t len, void *arg);
	void *chunk_arg;
	const char *upload;
	size_t upload_len, upload_off;
};

static size_t write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	struct resp *r = arg;
	size_t n = size * nmemb;
	if (r->chunk)
		r->chunk(data, n, r->chunk_arg);
	else if (r->body.len + n < (64u << 20))
		dv_strbuf_append(&r->body, data, n);
	return n;
}

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct resp *r = arg;
	size_t n = size * nmemb, left = r->upload_len - r->upload_off;
	if (n > left)
		n = left;
	memcpy(buf, r->upload + r->upload_off, n);
	r->upload_off += n;
	return n;
}

static char *unreachable(struct dk_runtime *rt, const char *why)
{
	return dv_xasprintf("cannot reach the Docker engine at %s (%s): start dockerd (or the docker service), or set "
	                    "DOCKER_HOST to a running engine, then deploy again",
	                    rt->host, why);
}

static void note_error(struct dk_runtime *rt, const char *e)
{
	pthread_mutex_lock(&rt->lock);
	free(rt->last_error);
	rt->last_error = e ? dv_xstrdup(e) : NULL;
	pthread_mutex_unlock(&rt->lock);
}

/* One request. `path` starts with '/' and is used as is when `versioned` is
 * false (GET /version), else prefixed by /v<api>. Returns 0 when the engine
 * answered (any status: see resp->status), -1 with *err when it could not
 * be reached or the transfer broke. */
static int http_raw(struct dk_runtime *rt, CURL *c, const char *method, const char *path, bool versioned,
                    const char *ctype, const char *body, size_t body_len, const char *auth, long timeout_s,
                    struct resp *resp, char **err)
{
	char *url = versioned ? dv_xasprintf("%s/v%s%s", rt->base_url, rt->api, path)
	                      : dv_xasprintf("%s%s", rt->base_url, path);
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	if (rt->socket_path)
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, rt->socket_path);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	struct curl_slist *h = NULL;
	if (ctype) {
		char *line = dv_xasprintf("Content-Type: %s", ctype);
		h = curl_slist_append(h, line);
		free(line);
	}
	if (auth) {
		char *line = dv_xasprintf("X-Registry-Auth: %s", auth);
		h = curl_slist_append(h, line);
		sodium_memzero(line, strlen(line));
		free(line);
	}
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
		resp->upload = body ? body : "";
		resp->upload_len = body ? body_len : 0;
		resp->upload_off = 0;
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(c, CURLOPT_READDATA, resp);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)resp->upload_len);
	}
	CURLcode cc = curl_easy_perform(c);
	curl_slist_free_all(h);
	free(url);
	if (cc != CURLE_OK) {
		if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
		    (cc == CURLE_OPERATION_TIMEDOUT && resp->body.len == 0 && !resp->chunk)) {
			*err = unreachable(rt, curl_easy_strerror(cc));
			note_error(rt, *err);
		} else {
			*err = dv_xasprintf("Docker engine at %s: %s %s: %s", rt->host, method, path, curl_easy_strerror(cc));
		}
		return -1;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	note_error(rt, NULL);
	return 0;
}

/* Negotiates the API version once. */
static int ensure_api(struct dk_runtime *rt, CURL *c, char **err)
{
	pthread_mutex_lock(&rt->lock);
	bool known = rt->api[0] != '\0';
	pthread_mutex_unlock(&rt->lock);
	if (known)
		return 0;
	struct resp r = {0};
	int rc = http_raw(rt, c, "GET", "/version", false, NULL, NULL, 0, NULL, 10, &r, err);
	if (rc == 0 && r.status != 200) {
		*err = dv_xasprintf("the Docker engine at %s answered GET /version with HTTP %ld: is it a Docker engine?",
		                    rt->host, r.status);
		rc = -1;
	}
	if (rc == 0) {
		struct dv_jv *v = dv_jv_parse(r.body.data ? r.body.data : "", r.body.len, err);
		if (!v) {
			char *e = *err;
			*err = dv_xasprintf("the Docker engine's /version is not JSON: %s", e);
			free(e);
			rc = -1;
		} else {
			char api[16];
			rc = dv_docker_negotiate(dv_jv_str(v, "ApiVersion", NULL), dv_jv_str(v, "MinAPIVersion", NULL), api,
			                         sizeof api, err);
			if (rc == 0) {
				pthread_mutex_lock(&rt->lock);
				memcpy(rt->api, api, sizeof api);
				pthread_mutex_unlock(&rt->lock);
				dv_log_info("docker", "engine %s %s at %s, using API %s", dv_jv_str(v, "Version", "?"),
				            dv_jv_str(v, "ApiVersion", "?"), rt->host, api);
			}
			dv_jv_free(v);
		}
	}
	dv_strbuf_dispose(&r.body);
	return rc;
}

/* A versioned request; the engine's error message (its JSON "message") is
 * put into *err for statuses >= 400 not in `ok_status` (e.g. 304, 404). */
static int api_call(struct dk_runtime *rt, CURL *c, const char *method, const char *path, const char *json,
                    long timeout_s, struct resp *r, long ok_status, char **err)
{
	if (ensure_api(rt, c, err) != 0)
		return -1;
	if (http_raw(rt, c, method, path, true, json ? "application/json" : NULL, json, json ? strlen(json) : 0, NULL,
	             timeout_s, r, err) != 0)
		return -1;
	if (r->status >= 400 && r->status != ok_status) {
		struct dv_jv *v = dv_jv_parse(r->body.data ? r->body.data : "", r->body.len, NULL);
		const char *m = v ? dv_jv_str(v, "message", NULL) : NULL;
		*err = dv_xasprintf("Docker: %s %s: %s (HTTP %ld)", method, path, m ? m : (r->body.data ? r->body.data : ""),
		                    r->status);
		dv_jv_free(v);
		return -1;
	}
	return 0;
}

static void resp_reset(struct resp *r)
{
	dv_strbuf_dispose(&r->body);
	memset(r, 0, sizeof *r);
}

static char *esc(CURL *c, const char *s)
{
	char *e = curl_easy_escape(c, s, 0);
	char *out = dv_xstrdup(e ? e : "");
	curl_free(e);
	return out;
}

/* ---- images ---- */

struct progress {
	struct dk_runtime *rt;
	struct dv_replica *r;
	const char *what;      /* "build" or "pull" */
	struct dv_strbuf lines;
	char *error;
	char last_status[256];
};

static void progress_line(const char *line, size_t len, void *arg)
{
	struct progress *p = arg;
	struct dv_jv *v = dv_jv_parse(line, len, NULL);
	if (!v)
		return;
	const char *e = dv_jv_str(v, "error", NULL);
	if (!e && !dv_jv_get(v, "stream") && !dv_jv_get(v, "status"))
		e = dv_jv_str(v, "message", NULL); /* an API error instead of a stream */
	const char *s = dv_jv_str(v, "stream", NULL);
	const char *st = dv_jv_str(v, "status", NULL);
	if (e) {
		free(p->error);
		p->error = dv_xstrdup(e);
		post_line(p->rt, p->r, DV_LOG_STREAM_STDERR, "%s: error: %s", p->what, e);
	} else if (s) {
		/* Build output comes in pieces that end with \n (or not) */
		size_t l = strlen(s);
		while (l && (s[l - 1] == '\n' || s[l - 1] == '\r'))
			l--;
		if (l)
			post_line(p->rt, p->r, DV_LOG_STREAM_STDOUT, "%s: %.*s", p->what, (int)l, s);
	} else if (st) {
		/* Pull progress: one line per layer state, not per byte count. */
		const char *id = dv_jv_str(v, "id", "");
		char key[256];
		snprintf(key, sizeof key, "%s %s", id, st);
		if (strcmp(key, p->last_status) != 0) {
			snprintf(p->last_status, sizeof p->last_status, "%s", key);
			post_line(p->rt, p->r, DV_LOG_STREAM_STDOUT, "%s: %s%s%s", p->what, *id ? id : "", *id ? ": " : "", st);
		}
	}
	dv_jv_free(v);
}

static void progress_chunk(const char *data, size_t len, void *arg)
{
	struct progress *p = arg;
	dv_docker_json_lines(&p->lines, data, len, progress_line, p);
}

static bool image_exists(struct dk_runtime *rt, CURL *c, const char *image, char **err)
{
	struct resp r = {0};
	char *e = esc(c, image);
	char *path = dv_xasprintf("/images/%s/json", e);
	free(e);
	int rc = api_call(rt, c, "GET", path, NULL, 30, &r, 404, err);
	bool exists = rc == 0 && r.status == 200;
	free(path);
	resp_reset(&r);
	return exists;
}

static int tag_image(struct dk_runtime *rt, CURL *c, const char *source, const char *tag, char **err)
{
	const char *colon = strrchr(tag, ':');
	char *repo = dv_xstrndup(tag, (size_t)(colon - tag));
	char *s = esc(c, source), *re = esc(c, repo), *t = esc(c, colon + 1);
	char *path = dv_xasprintf("/images/%s/tag?repo=%s&tag=%s", s, re, t);
	struct resp r = {0};
	int rc = api_call(rt, c, "POST", path, NULL, 30, &r, 0, err);
	resp_reset(&r);
	free(path);
	free(s);
	free(re);
	free(t);
	free(repo);
	return rc;
}

static int build_image(struct dk_runtime *rt, CURL *c, struct job *j, char **err)
{
	struct dv_replica *r = j->r;
	struct dv_strbuf tar;
	dv_strbuf_init(&tar);
	uint64_t t0 = realtime_ms();
	post_line(rt, r, DV_LOG_STREAM_STDOUT, "build: sending the context %s", j->build_ctx);
	if (j->build_digest) {
		/* The release was made from a context with this digest (names,
		 * modes, contents): an image rebuilt from another would not be it. */
		if (dv_tar_directory(j->build_ctx, CONTEXT_MAX, false, &tar, err) != 0) {
			dv_strbuf_dispose(&tar);
			return -1;
		}
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int n = 0;
		char hex[2 * EVP_MAX_MD_SIZE + 1];
		EVP_Digest(tar.data, tar.len, md, &n, EVP_sha256(), NULL);
		dv_strbuf_reset(&tar);
		for (unsigned i = 0; i < n; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		if (strcmp(hex, j->build_digest) != 0) {
			*err = dv_xasprintf("the image %s of this release is gone (pruned?) and %s has changed since the "
			                    "release was made, so it cannot be rebuilt as it was: deploy the current files "
			                    "instead (and keep more images with davit daemon --keep-images N)",
			                    j->image, j->build_ctx);
			dv_strbuf_dispose(&tar);
			return -1;
		}
	}
	if (dv_tar_directory(j->build_ctx, CONTEXT_MAX, true, &tar, err) != 0) {
		dv_strbuf_dispose(&tar);
		return -1;
	}
	struct dv_strbuf q;
	dv_strbuf_init(&q);
	char *t = esc(c, j->image);
	dv_strbuf_printf(&q, "/build?t=%s&rm=1&forcerm=1", t);
	free(t);
	if (j->dockerfile) {
		char *d = esc(c, j->dockerfile);
		dv_strbuf_printf(&q, "&dockerfile=%s", d);
		free(d);
	}
	if (j->target) {
		char *d = esc(c, j->target);
		dv_strbuf_printf(&q, "&target=%s", d);
		free(d);
	}
	struct dv_strbuf js;
	struct dv_json w;
	dv_strbuf_init(&js);
	dv_json_init(&w, &js);
	dv_json_object_begin(&w);
	for (char **a = j->build_args; a && *a; a++) {
		char *eq = strchr(*a, '=');
		if (!eq)
			continue;
		char *k = dv_xstrndup(*a, (size_t)(eq - *a));
		dv_json_key(&w, k);
		dv_json_string(&w, eq + 1);
		free(k);
	}
	dv_json_object_end(&w);
	char *ba = esc(c, js.data);
	dv_strbuf_printf(&q, "&buildargs=%s", ba);
	free(ba);
	dv_strbuf_reset(&js);
	dv_json_init(&w, &js);
	dv_json_object_begin(&w);
	dv_json_key(&w, "davit.app");
	dv_json_string(&w, r->app);
	dv_json_key(&w, "davit.service");
	dv_json_string(&w, r->service);
	dv_json_object_end(&w);
	char *lb = esc(c, js.data);
	dv_strbuf_printf(&q, "&labels=%s", lb);
	free(lb);
	dv_strbuf_dispose(&js);

	struct progress p = {.rt = rt, .r = r, .what = "build"};
	struct resp resp = {.chunk = progress_chunk, .chunk_arg = &p};
	int rc = ensure_api(rt, c, err);
	if (rc == 0)
		rc = http_raw(rt, c, "POST", q.data, true, "application/x-tar", tar.data, tar.len, NULL, 3600, &resp, err);
	dv_strbuf_dispose(&tar);
	dv_strbuf_dispose(&q);
	if (p.lines.len)
		progress_line(p.lines.data, p.lines.len, &p);
	if (rc == 0 && (resp.status != 200 || p.error)) {
		*err = dv_xasprintf("building %s from %s failed: %s", j->image, j->build_ctx,
		                    p.error ? p.error : "the engine refused the build");
		rc = -1;
	}
	if (rc == 0)
		post_line(rt, r, DV_LOG_STREAM_STDOUT, "build: built %s in %.1f s", j->image,
		          (double)(realtime_ms() - (int64_t)t0) / 1000.0);
	free(p.error);
	dv_strbuf_dispose(&p.lines);
	return rc;
}

static int pull_image(struct dk_runtime *rt, CURL *c, struct job *j, char **err)
{
	struct dv_replica *r = j->r;
	char *host = dv_docker_image_registry(j->pull);
	char *user = NULL, *pass = NULL, *auth = NULL;
	if (rt->state_dir) {
		char *lerr = NULL;
		int found = dv_registry_load(rt->state_dir, host, &user, &pass, &lerr);
		if (found < 0) {
			*err = lerr;
			free(host);
			return -1;
		}
		if (found > 0)
			auth = dv_docker_auth_header(user, pass, host);
	}
	/* fromImage=name:tag (a digest reference works as is) */
	char *ref = esc(c, j->pull);
	char *path = dv_xasprintf("/images/create?fromImage=%s", ref);
	free(ref);
	if (!strchr(strrchr(j->pull, '/') ? strrchr(j->pull, '/') : j->pull, ':') && !strchr(j->pull, '@')) {
		char *p2 = dv_xasprintf("%s&tag=latest", path);
		free(path);
		path = p2;
	}
	post_line(rt, r, DV_LOG_STREAM_STDOUT, "pull: %s%s", j->pull, auth ? " (with the stored credentials)" : "");
	struct progress p = {.rt = rt, .r = r, .what = "pull"};
	struct resp resp = {.chunk = progress_chunk, .chunk_arg = &p};
	int rc = ensure_api(rt, c, err);
	if (rc == 0)
		rc = http_raw(rt, c, "POST", path, true, NULL, NULL, 0, auth, 3600, &resp, err);
	if (p.lines.len)
		progress_line(p.lines.data, p.lines.len, &p);
	if (rc == 0 && (resp.status != 200 || p.error)) {
		const char *why = p.error ? p.error : "the engine refused the pull";
		bool denied = strstr(why, "unauthorized") || strstr(why, "authentication") || strstr(why, "denied") ||
		              strstr(why, "credentials") || resp.status == 401 || resp.status == 403;
		*err = dv_xasprintf("pulling %s failed: %s%s%s%s", j->pull, why,
		                    denied && !auth ? " (no credentials stored: run `davit registry login " : "",
		                    denied && !auth ? host : "", denied && !auth ? "`)" : "");
		rc = -1;
	}
	if (rc == 0)
		rc = tag_image(rt, c, j->pull, j->image, err);
	if (pass)
		sodium_memzero(pass, strlen(pass));
	if (auth)
		sodium_memzero(auth, strlen(auth));
	free(user);
	free(pass);
	free(auth);
	free(host);
	free(path);
	free(p.error);
	dv_strbuf_dispose(&p.lines);
	return rc;
}

static int ensure_image(struct dk_runtime *rt, CURL *c, struct job *j, char **err)
{
	pthread_mutex_lock(&rt->image_lock);
	int rc = 0;
	char *ierr = NULL;
	if (image_exists(rt, c, j->image, &ierr))
		goto out;
	if (ierr) {
		*err = ierr;
		rc = -1;
		goto out;
	}
	if (j->build_ctx) {
		rc = build_image(rt, c, j, err);
	} else if (j->pull) {
		/* pull_policy "missing": a local image of that name is used as is */
		if (image_exists(rt, c, j->pull, &ierr)) {
			rc = tag_image(rt, c, j->pull, j->image, err);
		} else if (ierr) {
			*err = ierr;
			rc = -1;
		} else {
			rc = pull_image(rt, c, j, err);
		}
	} else {
		*err = dv_xasprintf("image %s is gone and this release has neither an image to pull nor a build", j->image);
		rc = -1;
	}
out:
	pthread_mutex_unlock(&rt->image_lock);
	return rc;
}

/* ---- networks, volumes ---- */

static int ensure_network(struct dk_runtime *rt, CURL *c, const char *app, const struct start_net *n, char **err)
{
	struct resp r = {0};
	char *e = esc(c, n->name);
	char *path = dv_xasprintf("/networks/%s", e);
	free(e);
	int rc = api_call(rt, c, "GET", path, NULL, 30, &r, 404, err);
	free(path);
	if (rc == 0 && r.status == 200) {
		resp_reset(&r);
		return 0;
	}
	resp_reset(&r);
	if (rc != 0)
		return -1;
	struct dv_strbuf b;
	struct dv_json w;
	dv_strbuf_init(&b);
	dv_json_init(&w, &b);
	dv_json_object_begin(&w);
	dv_json_key(&w, "Name");
	dv_json_string(&w, n->name);
	dv_json_key(&w, "Driver");
	dv_json_string(&w, "bridge");
	dv_json_key(&w, "CheckDuplicate");
	dv_json_bool(&w, true);
	dv_json_key(&w, "Internal");
	dv_json_bool(&w, n->internal);
	dv_json_key(&w, "Labels");
	dv_json_object_begin(&w);
	dv_json_key(&w, "davit.app");
	dv_json_string(&w, app);
	dv_json_object_end(&w);
	dv_json_object_end(&w);
	rc = api_call(rt, c, "POST", "/networks/create", b.data, 30, &r, 409, err);
	dv_strbuf_dispose(&b);
	resp_reset(&r);
	return rc; /* 409: created by another replica meanwhile */
}

static int ensure_volume(struct dk_runtime *rt, CURL *c, const char *app, const char *name, char **err)
{
	struct dv_strbuf b;
	struct dv_json w;
	dv_strbuf_init(&b);
	dv_json_init(&w, &b);
	dv_json_object_begin(&w);
	dv_json_key(&w, "Name");
	dv_json_string(&w, name);
	dv_json_key(&w, "Labels");
	dv_json_object_begin(&w);
	dv_json_key(&w, "davit.app");
	dv_json_string(&w, app);
	dv_json_object_end(&w);
	dv_json_object_end(&w);
	struct resp r = {0};
	/* Creating an existing volume returns it unchanged: the data stays. */
	int rc = api_call(rt, c, "POST", "/volumes/create", b.data, 30, &r, 0, err);
	dv_strbuf_dispose(&b);
	resp_reset(&r);
	return rc;
}

static int mkdir_p(const char *path, char **err)
{
	char *p = dv_xstrdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST) {
			*err = dv_xasprintf("cannot create the bind mount directory %s: %s", p, strerror(errno));
			free(p);
			return -1;
		}
		*s = '/';
	}
	int rc = 0;
	if (mkdir(p, 0755) != 0 && errno != EEXIST) {
		*err = dv_xasprintf("cannot create the bind mount directory %s: %s", p, strerror(errno));
		rc = -1;
	}
	free(p);
	return rc;
}

/* ---- containers ---- */

static int remove_container(struct dk_runtime *rt, CURL *c, const char *id_or_name, char **err)
{
	char *e = esc(c, id_or_name);
	char *path = dv_xasprintf("/containers/%s?force=1&v=0", e);
	free(e);
	struct resp r = {0};
	int rc = api_call(rt, c, "DELETE", path, NULL, 60, &r, 404, err);
	resp_reset(&r);
	free(path);
	return rc;
}

/* State.Running, State.Health.Status ("" if none), the IP on `net`, State.Pid. */
static int inspect_container(struct dk_runtime *rt, CURL *c, const char *id, const char *net, bool *running,
                             char *health, size_t hsize, char *ip, size_t ipsize, int *pid, char **err)
{
	char *path = dv_xasprintf("/containers/%s/json", id);
	struct resp r = {0};
	int rc = api_call(rt, c, "GET", path, NULL, 30, &r, 0, err);
	free(path);
	if (rc == 0) {
		struct dv_jv *v = dv_jv_parse(r.body.data ? r.body.data : "", r.body.len, err);
		if (!v) {
			rc = -1;
		} else {
			const struct dv_jv *st = dv_jv_get(v, "State");
			*running = dv_jv_bool(st, "Running", false);
			if (pid)
				*pid = (int)dv_jv_int(st, "Pid", 0);
			snprintf(health, hsize, "%s", dv_jv_str(dv_jv_get(st, "Health"), "Status", ""));
			const struct dv_jv *nets = dv_jv_get(dv_jv_get(v, "NetworkSettings"), "Networks");
			const char *addr = net ? dv_jv_str(dv_jv_get(nets, net), "IPAddress", "") : "";
			snprintf(ip, ipsize, "%s", addr);
			dv_jv_free(v);
		}
	}
	resp_reset(&r);
	return rc;
}

static bool port_accepts(const struct sockaddr_storage *ss, socklen_t len)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		return false;
	bool ok = false;
	if (connect(fd, (const struct sockaddr *)ss, len) == 0) {
		ok = true;
	} else if (errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		if (poll(&p, 1, 500) == 1) {
			int e = 0;
			socklen_t l = sizeof e;
			ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) == 0 && e == 0;
		}
	}
	close(fd);
	return ok;
}

/* Through the port published on loopback: Docker's userland proxy accepts
 * every connection and closes it at once while nothing listens inside, so
 * "accepted and still open after a moment" means the app listens (and a
 * refused connect, where the engine publishes with NAT, means it does not). */
static bool loopback_port_ready(uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return false;
	bool ok = false;
	if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0) {
		struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
		int n = poll(&p, 1, 150);
		if (n == 0) {
			ok = true; /* still open, nothing said: a server waiting for a request */
		} else if (n == 1) {
			char b;
			ok = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1; /* a greeting (redis, smtp...) */
		}
	}
	close(fd);
	return ok;
}

static bool stop_asked(struct dk_runtime *rt, struct dv_replica *r)
{
	pthread_mutex_lock(&rt->lock);
	bool s = r->stop_requested;
	pthread_mutex_unlock(&rt->lock);
	return s;
}

static void stream_add(struct dk_runtime *rt, struct dv_replica *r, const char *id, int64_t since);
static void events_ensure(struct dk_runtime *rt);

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* docker stop with the replica's timeout (SIGTERM through the container's
 * init, SIGKILL after it); errors are logged (the exit is seen anyway). */
static void stop_container(struct dk_runtime *rt, CURL *c, struct dv_replica *r, const char *id)
{
	char *path = dv_xasprintf("/containers/%s/stop?t=%" PRIu64, id, (r->stop_timeout_ms + 999) / 1000);
	struct resp resp = {0};
	char *err = NULL;
	if (api_call(rt, c, "POST", path, NULL, (long)(r->stop_timeout_ms / 1000 + 30), &resp, 304, &err) != 0 &&
	    resp.status != 404)
		dv_log_warn("docker", "stopping %s: %s", r->cname, err);
	free(err);
	free(path);
	resp_reset(&resp);
}

static void job_start(struct dk_runtime *rt, CURL *c, struct job *j)
{
	struct dv_replica *r = j->r;
	char *err = NULL;
	struct resp resp = {0};
	char *id = NULL;
	bool exited = false;
	const char *primary = j->n_nets ? j->nets[0].name : NULL;

	if (j->adopt_id) {
		id = dv_xstrdup(j->adopt_id);
		pthread_mutex_lock(&rt->lock);
		r->id = dv_xstrdup(id);
		r->created = r->started = true;
		pthread_mutex_unlock(&rt->lock);
		stream_add(rt, r, id, realtime_ms() / 1000);
		events_ensure(rt);
		goto gates;
	}
	if (stop_asked(rt, r))
		goto aborted;
	if (ensure_image(rt, c, j, &err) != 0)
		goto failed;
	for (size_t i = 0; i < j->n_nets; i++)
		if (ensure_network(rt, c, r->app, &j->nets[i], &err) != 0)
			goto failed;
	for (char **v = j->volumes; v && *v; v++)
		if (ensure_volume(rt, c, r->app, *v, &err) != 0)
			goto failed;
	for (char **d = j->bind_dirs; d && *d; d++)
		if (mkdir_p(*d, &err) != 0)
			goto failed;
	if (stop_asked(rt, r))
		goto aborted;
	char *name = esc(c, r->cname);
	char *path = dv_xasprintf("/containers/create?name=%s", name);
	free(name);
	for (int attempt = 0; attempt < 3; attempt++) {
		resp_reset(&resp);
		if (api_call(rt, c, "POST", path, j->create_json, 60, &resp, 409, &err) != 0) {
			/* 404: the image went between our check and the create (a prune
			 * of another deploy): make sure of it once more. */
			if (resp.status == 404 && attempt == 0) {
				free(err);
				err = NULL;
				if (ensure_image(rt, c, j, &err) == 0)
					continue;
			}
			free(path);
			goto failed;
		}
		if (resp.status != 409)
			break;
		/* A leftover of an earlier daemon with this name: it is not serving
		 * (recovery adopted what it keeps), so it goes. */
		dv_log_info("docker", "removing the leftover container %s", r->cname);
		if (remove_container(rt, c, r->cname, &err) != 0) {
			free(path);
			goto failed;
		}
	}
	free(path);
	if (resp.status == 409) {
		err = dv_xasprintf("a container named %s exists and cannot be removed", r->cname);
		goto failed;
	}
	{
		struct dv_jv *v = dv_jv_parse(resp.body.data ? resp.body.data : "", resp.body.len, &err);
		if (!v)
			goto failed;
		id = dv_xstrdup(dv_jv_str(v, "Id", ""));
		dv_jv_free(v);
	}
	pthread_mutex_lock(&rt->lock);
	r->id = dv_xstrdup(id);
	r->created = true;
	pthread_mutex_unlock(&rt->lock);
	/* Other networks: connect before the start, so DNS works from the first moment. */
	for (size_t i = 1; i < j->n_nets; i++) {
		struct dv_strbuf b;
		struct dv_json w;
		dv_strbuf_init(&b);
		dv_json_init(&w, &b);
		dv_json_object_begin(&w);
		dv_json_key(&w, "Container");
		dv_json_string(&w, id);
		dv_json_key(&w, "EndpointConfig");
		dv_json_object_begin(&w);
		dv_json_key(&w, "Aliases");
		dv_json_array_begin(&w);
		for (char **a = j->nets[i].aliases; a && *a; a++)
			dv_json_string(&w, *a);
		dv_json_array_end(&w);
		dv_json_object_end(&w);
		dv_json_object_end(&w);
		char *ne = esc(c, j->nets[i].name);
		char *cp = dv_xasprintf("/networks/%s/connect", ne);
		free(ne);
		resp_reset(&resp);
		int rc = api_call(rt, c, "POST", cp, b.data, 30, &resp, 0, &err);
		free(cp);
		dv_strbuf_dispose(&b);
		if (rc != 0)
			goto failed_created;
	}
	if (stop_asked(rt, r))
		goto aborted;
	{
		char *sp = dv_xasprintf("/containers/%s/start", id);
		resp_reset(&resp);
		int rc = api_call(rt, c, "POST", sp, NULL, 60, &resp, 0, &err);
		free(sp);
		if (rc != 0)
			goto failed_created;
	}
	pthread_mutex_lock(&rt->lock);
	r->started = true;
	bool stop_now = r->stop_requested;
	pthread_mutex_unlock(&rt->lock);
	/* From now on the end is seen through the log stream. */
	stream_add(rt, r, id, 0);
	events_ensure(rt);
	if (stop_now) {
		stop_container(rt, c, r, id);
		goto out;
	}
gates:;
	/* Start gates: Docker's health check healthy, the app port accepting. */
	uint64_t waited = 0, limit = j->health_wait_ms ? j->health_wait_ms : DEFAULT_HEALTH_WAIT_MS;
	bool reported_unhealthy = false;
	for (;;) {
		bool running = false;
		char health[32], ip[64];
		int pid = 0;
		if (inspect_container(rt, c, id, primary, &running, health, sizeof health, ip, sizeof ip, &pid, &err) != 0)
			goto out_err_line; /* the log stream ends it if it is gone */
		if (!running || stop_asked(rt, r))
			goto out; /* the exit is reported through the stream's end */
		struct sockaddr_storage ss;
		socklen_t sl = 0;
		memset(&ss, 0, sizeof ss);
		if (*ip) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
			if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
				sin->sin_family = AF_INET;
				sin->sin_port = htons((uint16_t)j->app_port);
				sl = sizeof *sin;
			} else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
				sin6->sin6_family = AF_INET6;
				sin6->sin6_port = htons((uint16_t)j->app_port);
				sl = sizeof *sin6;
			}
		}
		pthread_mutex_lock(&rt->lock);
		r->pid = pid;
		if (sl && j->app_port && !j->loopback_port) { /* loopback mode: the engine uses 127.0.0.1 */
			r->addr = ss;
			r->addr_len = sl;
		}
		pthread_mutex_unlock(&rt->lock);
		bool health_ok = !*health || strcmp(health, "healthy") == 0;
		bool port_ok = !j->wait_port || !j->app_port ||
		               (j->loopback_port ? loopback_port_ready(j->loopback_port) : sl && port_accepts(&ss, sl));
		if (health_ok && port_ok)
			break;
		if (strcmp(health, "unhealthy") == 0 && !reported_unhealthy) {
			post_line(rt, r, DV_LOG_STREAM_STDERR, "davit: the container's Docker health check reports unhealthy");
			reported_unhealthy = true;
		}
		if (waited >= limit) {
			post_line(rt, r, DV_LOG_STREAM_STDERR,
			          "davit: %s within %" PRIu64 " s; stopping the container",
			          !health_ok ? "the container's Docker health check did not pass"
			                     : "nothing accepted connections on the app port",
			          limit / 1000);
			stop_container(rt, c, r, id);
			goto out;
		}
		sleep_ms(GATE_POLL_MS);
		waited += GATE_POLL_MS;
	}
	post_simple(rt, M_RUNNING, r, 0);
	goto out;

out_err_line:
	post_line(rt, r, DV_LOG_STREAM_STDERR, "davit: %s", err);
	goto out;
failed_created:
	{
		char *rerr = NULL;
		remove_container(rt, c, id, &rerr);
		free(rerr);
	}
failed:
	post_line(rt, r, DV_LOG_STREAM_STDERR, "davit: cannot start the container: %s", err);
	dv_log_warn("docker", "%s/%s/%s: %s", r->app, r->service, r->name, err);
	post_simple(rt, M_LOG_END, r, 0);
	exited = true;
	goto out;
aborted:
	if (id) {
		char *rerr = NULL;
		remove_container(rt, c, id, &rerr);
		free(rerr);
	}
	post_simple(rt, M_LOG_END, r, 0);
	exited = true;
out:
	pthread_mutex_lock(&rt->lock);
	r->start_done = true;
	pthread_cond_broadcast(&rt->start_done_cond);
	pthread_mutex_unlock(&rt->lock);
	/* Last: once the loop has the exit, r may be freed. */
	if (exited)
		post_simple(rt, M_EXITED, r, DV_REPLICA_STATUS_UNKNOWN);
	free(err);
	free(id);
	resp_reset(&resp);
}

static void job_stop(struct dk_runtime *rt, CURL *c, struct job *j)
{
	struct dv_replica *r = j->r;
	pthread_mutex_lock(&rt->lock);
	r->stop_requested = true;
	bool started = r->started;
	char *id = r->id ? dv_xstrdup(r->id) : NULL;
	pthread_mutex_unlock(&rt->lock);
	if (!started || !id) { /* the start job sees the flag */
		free(id);
		return;
	}
	stop_container(rt, c, r, id);
	free(id);
}

/* The log stream ended: the container stopped. Its exit code, then away with it. */
static void job_wait(struct dk_runtime *rt, CURL *c, struct job *j)
{
	struct dv_replica *r = j->r;
	pthread_mutex_lock(&rt->lock);
	/* The start job may still be at its gates: the exit must be the last
	 * message about the replica, so wait for it to notice and finish. */
	while (!r->start_done)
		pthread_cond_wait(&rt->start_done_cond, &rt->lock);
	char *id = r->id ? dv_xstrdup(r->id) : NULL;
	pthread_mutex_unlock(&rt->lock);
	int status = DV_REPLICA_STATUS_UNKNOWN;
	if (id) {
		char *path = dv_xasprintf("/containers/%s/wait?condition=not-running", id);
		struct resp resp = {0};
		char *err = NULL;
		if (api_call(rt, c, "POST", path, NULL, 120, &resp, 404, &err) == 0 && resp.status == 200) {
			struct dv_jv *v = dv_jv_parse(resp.body.data ? resp.body.data : "", resp.body.len, NULL);
			if (v) {
				int64_t code = dv_jv_int(v, "StatusCode", -1);
				if (code >= 0 && code < 256)
					status = (int)(code << 8); /* a wait status: exited with code */
				dv_jv_free(v);
			}
		} else if (err) {
			dv_log_warn("docker", "waiting for %s: %s", r->cname, err);
		}
		free(err);
		free(path);
		resp_reset(&resp);
		err = NULL;
		if (remove_container(rt, c, id, &err) != 0)
			dv_log_warn("docker", "removing %s: %s", r->cname, err);
		free(err);
	}
	free(id);
	post_simple(rt, M_EXITED, r, status);
}

static char *label_filter(CURL *c, const char *label)
{
	char *json = dv_xasprintf("{\"label\":[\"%s\"]}", label);
	char *e = esc(c, json);
	free(json);
	return e;
}

static long release_of_tag(const char *tag)
{
	const char *colon = strrchr(tag, ':');
	char *end;
	long v = colon ? strtol(colon + 1, &end, 10) : -1;
	return colon && *end == '\0' ? v : -1;
}

static void job_prune(struct dk_runtime *rt, CURL *c, struct job *j, struct dv_strbuf *report, int *rc_out)
{
	char *err = NULL;
	struct resp resp = {0};
	char *ref = dv_xasprintf("{\"reference\":[\"davit/%s-*\"]}", j->app);
	char *e = esc(c, ref);
	free(ref);
	char *path = dv_xasprintf("/images/json?filters=%s", e);
	free(e);
	int rc = api_call(rt, c, "GET", path, NULL, 60, &resp, 0, &err);
	free(path);
	struct dv_jv *v = rc == 0 ? dv_jv_parse(resp.body.data ? resp.body.data : "", resp.body.len, &err) : NULL;
	if (!v) {
		dv_strbuf_printf(report, "%s", err ? err : "cannot list images");
		*rc_out = -1;
		free(err);
		resp_reset(&resp);
		return;
	}
	/* Tags per repository, newest release first. */
	struct tagrel {
		char *tag;
		long rel;
	} *tags = NULL;
	size_t n = 0;
	for (size_t i = 0; v->type == DV_JV_ARRAY && i < v->len; i++) {
		const struct dv_jv *rt_ = dv_jv_get(&v->items[i], "RepoTags");
		for (size_t k = 0; rt_ && rt_->type == DV_JV_ARRAY && k < rt_->len; k++) {
			if (rt_->items[k].type != DV_JV_STRING || release_of_tag(rt_->items[k].string) < 0)
				continue;
			tags = dv_xrealloc(tags, (n + 1) * sizeof *tags);
			tags[n].tag = dv_xstrdup(rt_->items[k].string);
			tags[n].rel = release_of_tag(tags[n].tag);
			n++;
		}
	}
	dv_jv_free(v);
	for (size_t i = 0; i < n; i++) {
		size_t repo_len = (size_t)(strrchr(tags[i].tag, ':') - tags[i].tag);
		unsigned newer = 0;
		for (size_t k = 0; k < n; k++)
			if (k != i && strncmp(tags[k].tag, tags[i].tag, repo_len + 1) == 0 && tags[k].rel > tags[i].rel)
				newer++;
		bool used = false;
		for (char **u = j->in_use; u && *u; u++)
			if (strtol(*u, NULL, 10) == tags[i].rel)
				used = true;
		if (newer < j->keep || used)
			continue;
		char *te = esc(c, tags[i].tag);
		char *dp = dv_xasprintf("/images/%s", te);
		free(te);
		resp_reset(&resp);
		char *derr = NULL;
		if (api_call(rt, c, "DELETE", dp, NULL, 120, &resp, 0, &derr) == 0)
			dv_strbuf_printf(report, "removed image %s\n", tags[i].tag);
		else
			dv_log_info("docker", "keeping %s: %s", tags[i].tag, derr);
		free(derr);
		free(dp);
	}
	for (size_t i = 0; i < n; i++)
		free(tags[i].tag);
	free(tags);
	resp_reset(&resp);
	*rc_out = 0;
}

static void job_volumes(struct dk_runtime *rt, CURL *c, struct job *j, struct dv_strbuf *report, int *rc_out)
{
	char *err = NULL;
	struct resp resp = {0};
	char *lab = dv_xasprintf("davit.app=%s", j->app);
	char *f = label_filter(c, lab);
	free(lab);
	char *path;
	if (j->remove) {
		/* `down` returns while containers stop: wait (bounded) until the
		 * app has none left, else the volumes are still in use. */
		path = dv_xasprintf("/containers/json?all=1&filters=%s", f);
		for (int i = 0; i < 600; i++) {
			resp_reset(&resp);
			char *cerr = NULL;
			bool empty = api_call(rt, c, "GET", path, NULL, 30, &resp, 0, &cerr) == 0 && resp.body.data &&
			             strcmp(resp.body.data, "[]\n") == 0;
			free(cerr);
			if (empty)
				break;
			sleep_ms(100);
		}
		free(path);
		resp_reset(&resp);
	}
	path = dv_xasprintf("/volumes?filters=%s", f);
	int rc = api_call(rt, c, "GET", path, NULL, 60, &resp, 0, &err);
	free(path);
	struct dv_jv *v = rc == 0 ? dv_jv_parse(resp.body.data ? resp.body.data : "", resp.body.len, &err) : NULL;
	*rc_out = v ? 0 : -1;
	if (!v)
		dv_strbuf_puts(report, err ? err : "cannot list volumes");
	const struct dv_jv *vols = dv_jv_get(v, "Volumes");
	for (size_t i = 0; vols && vols->type == DV_JV_ARRAY && i < vols->len; i++) {
		const char *name = dv_jv_str(&vols->items[i], "Name", NULL);
		if (!name)
			continue;
		if (!j->remove) {
			dv_strbuf_printf(report, "%s\n", name);
			continue;
		}
		char *ne = esc(c, name);
		char *dp = dv_xasprintf("/volumes/%s", ne);
		free(ne);
		resp_reset(&resp);
		char *derr = NULL;
		if (api_call(rt, c, "DELETE", dp, NULL, 120, &resp, 404, &derr) == 0) {
			dv_strbuf_printf(report, "deleted volume %s\n", name);
		} else {
			dv_strbuf_printf(report, "could not delete volume %s: %s\n", name, derr);
			*rc_out = -1;
		}
		free(derr);
		free(dp);
	}
	dv_jv_free(v);
	if (j->remove && *rc_out == 0) {
		/* The app's networks go too (they hold no data). */
		path = dv_xasprintf("/networks?filters=%s", f);
		resp_reset(&resp);
		char *nerr = NULL;
		if (api_call(rt, c, "GET", path, NULL, 60, &resp, 0, &nerr) == 0) {
			struct dv_jv *nets = dv_jv_parse(resp.body.data ? resp.body.data : "", resp.body.len, NULL);
			for (size_t i = 0; nets && nets->type == DV_JV_ARRAY && i < nets->len; i++) {
				const char *id = dv_jv_str(&nets->items[i], "Id", NULL);
				if (!id)
					continue;
				char *dp = dv_xasprintf("/networks/%s", id);
				struct resp r2 = {0};
				char *derr = NULL;
				api_call(rt, c, "DELETE", dp, NULL, 60, &r2, 404, &derr);
				free(derr);
				resp_reset(&r2);
				free(dp);
			}
			dv_jv_free(nets);
		}
		free(nerr);
		free(path);
	}
	free(f);
	free(err);
	resp_reset(&resp);
}

static void job_login(struct dk_runtime *rt, CURL *c, struct job *j, struct dv_strbuf *report, int *rc_out)
{
	struct dv_strbuf b;
	struct dv_json w;
	dv_strbuf_init(&b);
	dv_json_init(&w, &b);
	dv_json_object_begin(&w);
	dv_json_key(&w, "username");
	dv_json_string(&w, j->user);
	dv_json_key(&w, "password");
	dv_json_string(&w, j->password);
	dv_json_key(&w, "serveraddress");
	dv_json_string(&w, j->app);
	dv_json_object_end(&w);
	struct resp resp = {0};
	char *err = NULL;
	*rc_out = -1;
	if (api_call(rt, c, "POST", "/auth", b.data, 60, &resp, 0, &err) != 0) {
		dv_strbuf_printf(report, "%s: the registry refused the credentials or cannot be reached: %s", j->app, err);
	} else if (!rt->state_dir) {
		dv_strbuf_puts(report, "no state directory to store credentials in");
	} else if (dv_registry_save(rt->state_dir, j->app, j->user, j->password, &err) != 0) {
		dv_strbuf_puts(report, err);
	} else {
		dv_strbuf_printf(report, "login to %s succeeded; credentials stored (encrypted); pulls from %s use them\n",
		                 j->app, j->app);
		*rc_out = 0;
	}
	sodium_memzero(b.data, b.len);
	dv_strbuf_dispose(&b);
	resp_reset(&resp);
	free(err);
}

static void job_free(struct job *j)
{
	free(j->create_json);
	free(j->image);
	free(j->pull);
	free(j->build_ctx);
	free(j->build_digest);
	free(j->dockerfile);
	free(j->target);
	free(j->adopt_id);
	strv_free(j->build_args);
	for (size_t i = 0; i < j->n_nets; i++) {
		free(j->nets[i].name);
		strv_free(j->nets[i].aliases);
	}
	free(j->nets);
	strv_free(j->volumes);
	strv_free(j->bind_dirs);
	free(j->app);
	strv_free(j->in_use);
	free(j->user);
	if (j->password)
		sodium_memzero(j->password, strlen(j->password));
	free(j->password);
	free(j);
}

static void *job_thread(void *arg)
{
	struct dk_runtime *rt = arg;
	CURL *c = curl_easy_init();
	for (;;) {
		pthread_mutex_lock(&rt->lock);
		while (!rt->jobs && !rt->quit)
			pthread_cond_wait(&rt->cond, &rt->lock);
		if (rt->quit) {
			pthread_mutex_unlock(&rt->lock);
			break;
		}
		struct job *j = rt->jobs;
		rt->jobs = j->next;
		if (!rt->jobs)
			rt->jobs_tail = &rt->jobs;
		pthread_mutex_unlock(&rt->lock);
		if (!c) {
			c = curl_easy_init();
			if (!c)
				abort(); /* out of memory */
		}
		struct dv_strbuf report;
		dv_strbuf_init(&report);
		int rc = 0;
		switch (j->type) {
		case J_START: job_start(rt, c, j); break;
		case J_STOP: job_stop(rt, c, j); break;
		case J_WAIT: job_wait(rt, c, j); break;
		case J_PRUNE:
			/* Not while an image is built: a build may be using the layers
			 * the prune deletes ("unknown parent image ID"). */
			pthread_mutex_lock(&rt->image_lock);
			job_prune(rt, c, j, &report, &rc);
			pthread_mutex_unlock(&rt->image_lock);
			break;
		case J_VOLUMES: job_volumes(rt, c, j, &report, &rc); break;
		case J_LOGIN: job_login(rt, c, j, &report, &rc); break;
		case J_REMOVE: {
			char *err = NULL;
			if (remove_container(rt, c, j->app, &err) != 0)
				dv_log_warn("docker", "removing the leftover container %.12s: %s", j->app, err);
			else
				dv_log_info("docker", "removed the leftover container %.12s", j->app);
			free(err);
			break;
		}
		}
		if (j->done) {
			struct msg *m = dv_xcalloc(1, sizeof *m);
			m->type = M_DONE;
			m->done = j->done;
			m->arg = j->arg;
			m->rc = rc;
			m->data = dv_strbuf_steal(&report);
			if (!m->data)
				m->data = dv_xstrdup("");
			post(rt, m);
		}
		dv_strbuf_dispose(&report);
		job_free(j);
	}
	if (c)
		curl_easy_cleanup(c);
	return NULL;
}

static void queue_job(struct dk_runtime *rt, struct job *j)
{
	pthread_mutex_lock(&rt->lock);
	j->next = NULL;
	*rt->jobs_tail = j;
	rt->jobs_tail = &j->next;
	pthread_cond_signal(&rt->cond);
	pthread_mutex_unlock(&rt->lock);
}

/* ---- the stream thread ---- */

static void demux_out(int stream, const char *data, size_t len, void *arg)
{
	struct stream *s = arg;
	post_log(s->r->rt, s->r, stream == 2 ? DV_LOG_STREAM_STDERR : DV_LOG_STREAM_STDOUT, data, len);
}

static size_t stream_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct stream *s = arg;
	dv_docker_demux_feed(&s->demux, data, size * nmemb, demux_out, s);
	return size * nmemb;
}

/* Docker health changes of our containers come as events: one JSON object
 * per line, {"status": "health_status: unhealthy", "id": ...}. */
static void event_line(const char *line, size_t len, void *arg)
{
	struct dk_runtime *rt = arg;
	struct dv_jv *v = dv_jv_parse(line, len, NULL);
	const char *status = v ? dv_jv_str(v, "status", "") : "";
	const char *id = v ? dv_jv_str(v, "id", NULL) : NULL;
	if (id && strncmp(status, "health_status: ", 15) == 0) {
		struct msg *m = dv_xcalloc(1, sizeof *m);
		m->type = M_HEALTH;
		m->data = dv_xstrdup(id);
		m->status = strcmp(status + 15, "healthy") == 0;
		post(rt, m);
	}
	dv_jv_free(v);
}

static size_t events_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct stream *s = arg;
	dv_docker_json_lines(&s->lines, data, size * nmemb, event_line, s->url_rt);
	return size * nmemb;
}

/* Follows health events once the API version is known (first start job). */
static void events_ensure(struct dk_runtime *rt)
{
	pthread_mutex_lock(&rt->lock);
	if (rt->events_on || !rt->api[0]) {
		pthread_mutex_unlock(&rt->lock);
		return;
	}
	rt->events_on = true;
	struct stream *s = dv_xcalloc(1, sizeof *s);
	s->url_rt = rt;
	char *json = rt->owner ? dv_xasprintf("{\"type\":[\"container\"],\"event\":[\"health_status\"],"
	                                      "\"label\":[\"davit.owner=%s\"]}", rt->owner)
	                       : dv_xstrdup("{\"type\":[\"container\"],\"event\":[\"health_status\"],"
	                                    "\"label\":[\"davit.app\"]}");
	char *e = curl_easy_escape(NULL, json, 0);
	s->url = dv_xasprintf("%s/v%s/events?filters=%s", rt->base_url, rt->api, e ? e : "");
	curl_free(e);
	free(json);
	s->next = rt->new_streams;
	rt->new_streams = s;
	pthread_mutex_unlock(&rt->lock);
	curl_multi_wakeup(rt->multi);
}

static void stream_add(struct dk_runtime *rt, struct dv_replica *r, const char *id, int64_t since)
{
	struct stream *s = dv_xcalloc(1, sizeof *s);
	s->r = r;
	pthread_mutex_lock(&rt->lock);
	s->url = dv_xasprintf("%s/v%s/containers/%s/logs?follow=1&stdout=1&stderr=1&since=%lld", rt->base_url, rt->api,
	                      id, (long long)since);
	s->next = rt->new_streams;
	rt->new_streams = s;
	pthread_mutex_unlock(&rt->lock);
	curl_multi_wakeup(rt->multi);
}

static void *stream_thread(void *arg)
{
	struct dk_runtime *rt = arg;
	for (;;) {
		pthread_mutex_lock(&rt->lock);
		bool quit = rt->quit;
		struct stream *add = rt->new_streams;
		rt->new_streams = NULL;
		pthread_mutex_unlock(&rt->lock);
		if (quit)
			break;
		while (add) {
			struct stream *s = add;
			add = add->next;
			s->easy = curl_easy_init();
			if (!s->easy)
				abort();
			curl_easy_setopt(s->easy, CURLOPT_URL, s->url);
			if (rt->socket_path)
				curl_easy_setopt(s->easy, CURLOPT_UNIX_SOCKET_PATH, rt->socket_path);
			curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
			curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, s->r ? stream_write : events_write);
			curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
			curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
			curl_easy_setopt(s->easy, CURLOPT_FORBID_REUSE, 1L);
			curl_multi_add_handle(rt->multi, s->easy);
			s->next = rt->streams;
			rt->streams = s;
		}
		int running = 0;
		curl_multi_perform(rt->multi, &running);
		CURLMsg *m;
		int left;
		while ((m = curl_multi_info_read(rt->multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			struct stream *s = NULL;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			curl_multi_remove_handle(rt->multi, s->easy);
			curl_easy_cleanup(s->easy);
			for (struct stream **pp = &rt->streams; *pp; pp = &(*pp)->next)
				if (*pp == s) {
					*pp = s->next;
					break;
				}
			if (s->r) {
				post_simple(rt, M_LOG_END, s->r, 0);
				post_simple(rt, M_LOGS_DONE, s->r, 0);
			} else {
				pthread_mutex_lock(&rt->lock);
				rt->events_on = false; /* the engine went away: the next start follows again */
				pthread_mutex_unlock(&rt->lock);
			}
			dv_strbuf_dispose(&s->lines);
			free(s->url);
			free(s);
		}
		curl_multi_poll(rt->multi, NULL, 0, 1000, NULL);
	}
	while (rt->streams) {
		struct stream *s = rt->streams;
		rt->streams = s->next;
		curl_multi_remove_handle(rt->multi, s->easy);
		curl_easy_cleanup(s->easy);
		dv_strbuf_dispose(&s->lines);
		free(s->url);
		free(s);
	}
	return NULL;
}

/* ---- the loop side ---- */

static void finish(struct dv_replica *r, int status)
{
	if (r->state == DV_REPLICA_EXITED)
		return;
	r->status = status;
	r->has_status = status != DV_REPLICA_STATUS_UNKNOWN;
	r->ended_mono = dv_loop_update_now(r->rt->loop);
	dv_replica_log_end(&r->log);
	r->state = DV_REPLICA_EXITED;
	pthread_mutex_lock(&r->rt->lock);
	r->gone = true;
	pthread_mutex_unlock(&r->rt->lock);
	if (r->on_exit)
		r->on_exit(r, status, r->arg);
}

static void handle_msg(struct dk_runtime *rt, struct msg *m)
{
	struct dv_replica *r = m->r;
	switch (m->type) {
	case M_LOG:
		if (r->state != DV_REPLICA_EXITED) {
			dv_replica_log_feed(&r->log, (enum dv_log_stream)m->stream, m->data, m->len);
			dv_replica_log_flush(&r->log);
		}
		break;
	case M_LOG_END:
		dv_replica_log_feed_end(&r->log, DV_LOG_STREAM_STDOUT);
		dv_replica_log_feed_end(&r->log, DV_LOG_STREAM_STDERR);
		break;
	case M_RUNNING:
		if (r->state == DV_REPLICA_STARTING) {
			r->state = DV_REPLICA_RUNNING;
			if (r->on_running)
				r->on_running(r, r->arg);
		}
		break;
	case M_LOGS_DONE: {
		struct job *j = dv_xcalloc(1, sizeof *j);
		j->type = J_WAIT;
		j->r = r;
		queue_job(rt, j);
		break;
	}
	case M_EXITED: finish(r, m->status); break;
	case M_DONE: m->done(m->arg, m->rc, m->data); break;
	case M_HEALTH:
		for (struct dv_replica *x = rt->replicas; x; x = x->next) {
			pthread_mutex_lock(&rt->lock);
			bool match = x->id && strcmp(x->id, m->data) == 0;
			pthread_mutex_unlock(&rt->lock);
			if (match && x->state == DV_REPLICA_RUNNING && x->on_health) {
				x->on_health(x, m->status != 0, x->arg);
				break;
			}
		}
		break;
	}
}

static void event_cb(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dk_runtime *rt = dv_container_of(io, struct dk_runtime, event);
	uint64_t v;
	while (read(io->fd, &v, sizeof v) == sizeof v)
		;
	pthread_mutex_lock(&rt->lock);
	struct msg *list = rt->msgs;
	rt->msgs = NULL;
	rt->msgs_tail = &rt->msgs;
	pthread_mutex_unlock(&rt->lock);
	while (list) {
		struct msg *m = list;
		list = m->next;
		handle_msg(rt, m);
		free(m->data);
		free(m);
	}
}

/* ---- the driver ---- */

static void replica_free(struct dv_replica *r)
{
	dv_replica_log_dispose(&r->log);
	free(r->app);
	free(r->service);
	free(r->release);
	free(r->name);
	free(r->cname);
	free(r->id);
	free(r);
}

static int dk_start(struct dv_runtime *base, const struct dv_replica_spec *spec, dv_replica_exit_cb on_exit, void *arg,
                    struct dv_replica **out, char **err)
{
	struct dk_runtime *rt = (struct dk_runtime *)base;
	const struct dv_container_spec *c = spec->container;
	if (!c || !c->image || !spec->app || !spec->service) {
		*err = dv_xstrdup("docker driver: a container replica needs an app, a service and an image");
		return -1;
	}
	struct dv_replica *r = dv_xcalloc(1, sizeof *r);
	r->rt = rt;
	r->app = dv_xstrdup(spec->app);
	r->service = dv_xstrdup(spec->service);
	r->release = dup_or_null(spec->release);
	r->name = spec->name ? dv_xstrdup(spec->name)
	                     : dv_xasprintf("%s-%u", spec->release ? spec->release : "r", spec->index);
	/* A start-first restart runs two containers of one replica name at once:
	 * the container name gets the start time too. */
	char *unique = dv_xasprintf("%s-%llx", r->name, (unsigned long long)realtime_ms());
	r->cname = dv_docker_container_name(r->app, r->service, unique);
	free(unique);
	r->index = spec->index;
	r->on_exit = on_exit;
	r->on_running = spec->on_running;
	r->on_health = spec->on_health;
	r->arg = arg;
	r->stop_timeout_ms = spec->stop_timeout_ms ? spec->stop_timeout_ms : 10000;
	r->state = DV_REPLICA_STARTING;
	if (dv_replica_log_init(&r->log, r, spec->log_dir, spec->service, r->name, spec->log_max_bytes,
	                        spec->log_max_files, rt->ring_lines, err) == -1) {
		replica_free(r);
		return -1;
	}
	struct job *j = dv_xcalloc(1, sizeof *j);
	j->type = J_START;
	j->r = r;
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_docker_create_json(spec, rt->owner, &b);
	j->create_json = dv_strbuf_steal(&b);
	j->image = dv_xstrdup(c->image);
	j->pull = dup_or_null(c->pull);
	j->build_ctx = dup_or_null(c->build_context);
	j->build_digest = dup_or_null(c->build_digest);
	j->dockerfile = dup_or_null(c->dockerfile);
	j->target = dup_or_null(c->build_target);
	j->adopt_id = dup_or_null(c->adopt_id);
	j->build_args = strv_dup(c->build_args);
	j->nets = dv_xcalloc(c->n_networks + 1, sizeof *j->nets);
	for (size_t i = 0; i < c->n_networks; i++) {
		j->nets[i].name = dv_xstrdup(c->networks[i].name);
		j->nets[i].internal = c->networks[i].internal;
		j->nets[i].aliases = strv_dup(c->networks[i].aliases);
	}
	j->n_nets = c->n_networks;
	size_t nv = 0, nb = 0;
	j->volumes = dv_xcalloc(c->n_mounts + 1, sizeof *j->volumes);
	j->bind_dirs = dv_xcalloc(c->n_mounts + 1, sizeof *j->bind_dirs);
	for (size_t i = 0; i < c->n_mounts; i++) {
		const struct dv_container_mount *m = &c->mounts[i];
		if (m->type == DV_MOUNT_VOLUME && m->source)
			j->volumes[nv++] = dv_xstrdup(m->source);
		else if (m->type == DV_MOUNT_BIND && m->source && m->create_host_path)
			j->bind_dirs[nb++] = dv_xstrdup(m->source);
	}
	j->app_port = c->app_port;
	j->loopback_port = c->loopback_port;
	j->wait_port = c->wait_port;
	j->health_wait_ms = c->health_wait_ms;
	r->started_at_ms = realtime_ms();
	r->started_mono = dv_loop_update_now(rt->loop);
	r->next = rt->replicas;
	if (rt->replicas)
		rt->replicas->prev = r;
	rt->replicas = r;
	queue_job(rt, j);
	*out = r;
	return 0;
}

static int dk_stop(struct dv_runtime *base, struct dv_replica *r, char **err)
{
	struct dk_runtime *rt = (struct dk_runtime *)base;
	if (r->state == DV_REPLICA_EXITED || r->state == DV_REPLICA_STOPPING)
		return 0;
	r->state = DV_REPLICA_STOPPING;
	pthread_mutex_lock(&rt->lock);
	r->stop_requested = true;
	pthread_mutex_unlock(&rt->lock);
	struct job *j = dv_xcalloc(1, sizeof *j);
	j->type = J_STOP;
	j->r = r;
	queue_job(rt, j);
	return 0;
}

/* A number from a cgroup file: the whole file, or the value after `key ` on its line. */
static bool read_cg(const char *path, const char *key, uint64_t *out)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return false;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	const char *p = buf;
	if (key) {
		size_t kl = strlen(key);
		for (p = buf; p && !(strncmp(p, key, kl) == 0 && p[kl] == ' '); p = strchr(p, '\n'), p = p ? p + 1 : NULL)
			;
		if (!p)
			return false;
		p += kl + 1;
	}
	char *end;
	unsigned long long v = strtoull(p, &end, 10);
	if (end == p)
		return false;
	*out = v;
	return true;
}

/* Memory, CPU time and processes of a running container from its cgroup
 * (cgroupfs files: cheap reads, allowed on the loop): v1 docker/<id>, v2
 * system.slice/docker-<id>.scope or docker/<id>. */
static void container_usage(const char *id, struct dv_replica_info *info)
{
	char path[512];
	uint64_t v;
	snprintf(path, sizeof path, "/sys/fs/cgroup/memory/docker/%s/memory.stat", id);
	if (read_cg(path, "total_rss", &v)) {
		info->rss_bytes = v;
		snprintf(path, sizeof path, "/sys/fs/cgroup/cpuacct/docker/%s/cpuacct.usage", id);
		if (read_cg(path, NULL, &v))
			info->cpu_time_ms = v / 1000000;
		snprintf(path, sizeof path, "/sys/fs/cgroup/pids/docker/%s/pids.current", id);
		if (read_cg(path, NULL, &v))
			info->processes = (unsigned)v;
		return;
	}
	for (int i = 0; i < 2; i++) {
		char dir[400];
		if (i == 0)
			snprintf(dir, sizeof dir, "/sys/fs/cgroup/system.slice/docker-%s.scope", id);
		else
			snprintf(dir, sizeof dir, "/sys/fs/cgroup/docker/%s", id);
		snprintf(path, sizeof path, "%s/memory.current", dir);
		if (!read_cg(path, NULL, &v))
			continue;
		info->rss_bytes = v;
		snprintf(path, sizeof path, "%s/cpu.stat", dir);
		if (read_cg(path, "usage_usec", &v))
			info->cpu_time_ms = v / 1000;
		snprintf(path, sizeof path, "%s/pids.current", dir);
		if (read_cg(path, NULL, &v))
			info->processes = (unsigned)v;
		return;
	}
}

static int dk_inspect(struct dv_runtime *base, struct dv_replica *r, struct dv_replica_info *info, char **err)
{
	struct dk_runtime *rt = (struct dk_runtime *)base;
	memset(info, 0, sizeof *info);
	info->state = r->state;
	pthread_mutex_lock(&rt->lock);
	info->pid = r->pid;
	char *id = r->started && r->id ? dv_xstrdup(r->id) : NULL;
	pthread_mutex_unlock(&rt->lock);
	if (id && r->state != DV_REPLICA_EXITED)
		container_usage(id, info);
	free(id);
	info->started_at_ms = r->started_at_ms;
	uint64_t end = r->state == DV_REPLICA_EXITED ? r->ended_mono : dv_loop_update_now(rt->loop);
	info->uptime_ms = end > r->started_mono ? end - r->started_mono : 0;
	info->has_exit_status = r->has_status;
	info->exit_status = r->status;
	info->limits_applied = true; /* the engine enforces them */
	return 0;
}

static size_t dk_logs_tail(struct dv_runtime *base, struct dv_replica *r, size_t max_lines, dv_log_line_cb cb, void *arg)
{
	return dv_replica_log_tail(&r->log, max_lines, cb, arg);
}

static struct dv_log_follow *dk_logs_follow(struct dv_runtime *base, struct dv_replica *r, dv_log_line_cb cb, void *arg)
{
	return dv_replica_log_follow(&r->log, cb, arg);
}

static void dk_logs_unfollow(struct dv_runtime *base, struct dv_log_follow *follow)
{
	dv_replica_log_unfollow(follow);
}

/* Synchronous (the daemon's start): running containers labelled davit.app. */
static int dk_list(struct dv_runtime *base, const struct dv_replica_ref *known, size_t n_known,
                   struct dv_replica_ref **found, size_t *n_found, char **err)
{
	struct dk_runtime *rt = (struct dk_runtime *)base;
	*found = NULL;
	*n_found = 0;
	CURL *c = curl_easy_init();
	if (!c) {
		*err = dv_xstrdup("curl_easy_init failed");
		return -1;
	}
	char *lab = rt->owner ? dv_xasprintf("davit.owner=%s", rt->owner) : dv_xstrdup("davit.app");
	char *f = label_filter(c, lab);
	free(lab);
	char *path = dv_xasprintf("/containers/json?filters=%s", f);
	free(f);
	struct resp resp = {0};
	int rc = api_call(rt, c, "GET", path, NULL, 15, &resp, 0, err);
	free(path);
	struct dv_jv *v = rc == 0 ? dv_jv_parse(resp.body.data ? resp.body.data : "", resp.body.len, err) : NULL;
	if (!v)
		rc = -1;
	for (size_t i = 0; v && v->type == DV_JV_ARRAY && i < v->len; i++) {
		const struct dv_jv *labels = dv_jv_get(&v->items[i], "Labels");
		const char *state = dv_jv_str(&v->items[i], "State", "");
		if (strcmp(state, "running") != 0)
			continue;
		*found = dv_xrealloc(*found, (*n_found + 1) * sizeof **found);
		struct dv_replica_ref *ref = &(*found)[(*n_found)++];
		memset(ref, 0, sizeof *ref);
		ref->id = dv_xstrdup(dv_jv_str(&v->items[i], "Id", ""));
		ref->app = dup_or_null(dv_jv_str(labels, "davit.app", NULL));
		ref->service = dup_or_null(dv_jv_str(labels, "davit.service", NULL));
		ref->release = dup_or_null(dv_jv_str(labels, "davit.release", NULL));
		ref->name = dup_or_null(dv_jv_str(labels, "davit.name", NULL));
		ref->spec_hash = dup_or_null(dv_jv_str(labels, "davit.spec", NULL));
		ref->index = (unsigned)strtoul(dv_jv_str(labels, "davit.replica", "0"), NULL, 10);
		const struct dv_jv *ports = dv_jv_get(&v->items[i], "Ports");
		for (size_t k = 0; ports && ports->type == DV_JV_ARRAY && k < ports->len; k++)
			if (strcmp(dv_jv_str(&ports->items[k], "IP", ""), "127.0.0.1") == 0)
				ref->loopback_port = (unsigned)dv_jv_int(&ports->items[k], "PublicPort", 0);
	}
	dv_jv_free(v);
	resp_reset(&resp);
	curl_easy_cleanup(c);
	return rc;
}

static void free_removed(struct dk_runtime *rt)
{
	while (rt->removed) {
		struct dv_replica *r = rt->removed;
		rt->removed = r->next;
		replica_free(r);
	}
}

static void free_timer_cb(struct dv_loop *loop, struct dv_timer *timer)
{
	free_removed(dv_container_of(timer, struct dk_runtime, free_timer));
}

static int dk_remove(struct dv_runtime *base, struct dv_replica *r, char **err)
{
	struct dk_runtime *rt = (struct dk_runtime *)base;
	if (r->state != DV_REPLICA_EXITED) {
		*err = dv_xasprintf("container %s is still running: stop it and wait for its exit first", r->cname);
		return -1;
	}
	if (r->prev)
		r->prev->next = r->next;
	else if (rt->replicas == r)
		rt->replicas = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = NULL;
	/* Every message about a replica comes before its M_EXITED (the wait job
	 * waits for the start job), so nothing refers to it any more; the memory
	 * goes after this loop iteration (callers up the stack may still look). */
	r->next = rt->removed;
	rt->removed = r;
	if (!dv_timer_armed(&rt->free_timer))
		dv_timer_set(rt->loop, &rt->free_timer, dv_loop_now(rt->loop));
	return 0;
}

static int dk_address(struct dv_runtime *base, struct dv_replica *r, void *ss, unsigned *len)
{
	struct dk_runtime *rt = (struct dk_runtime *)base;
	pthread_mutex_lock(&rt->lock);
	int rc = -1;
	if (r->addr_len) {
		memcpy(ss, &r->addr, r->addr_len);
		*len = r->addr_len;
		rc = 0;
	}
	pthread_mutex_unlock(&rt->lock);
	return rc;
}

static void dk_destroy(struct dv_runtime *base)
{
	struct dk_runtime *rt = (struct dk_runtime *)base;
	pthread_mutex_lock(&rt->lock);
	rt->quit = true;
	pthread_cond_broadcast(&rt->cond);
	pthread_mutex_unlock(&rt->lock);
	if (rt->multi)
		curl_multi_wakeup(rt->multi);
	for (unsigned i = 0; i < rt->n_threads; i++)
		pthread_join(rt->threads[i], NULL);
	if (rt->stream_started)
		pthread_join(rt->stream_thread, NULL);
	while (rt->jobs) {
		struct job *j = rt->jobs;
		rt->jobs = j->next;
		job_free(j);
	}
	while (rt->msgs) {
		struct msg *m = rt->msgs;
		rt->msgs = m->next;
		free(m->data);
		free(m);
	}
	while (rt->new_streams) {
		struct stream *s = rt->new_streams;
		rt->new_streams = s->next;
		free(s->url);
		free(s);
	}
	while (rt->replicas) {
		struct dv_replica *r = rt->replicas;
		rt->replicas = r->next;
		replica_free(r);
	}
	free_removed(rt);
	dv_timer_cancel(rt->loop, &rt->free_timer);
	if (rt->event.fd != -1) {
		dv_loop_del(rt->loop, &rt->event);
		close(rt->event.fd);
	}
	if (rt->multi)
		curl_multi_cleanup(rt->multi);
	pthread_mutex_destroy(&rt->lock);
	pthread_mutex_destroy(&rt->image_lock);
	pthread_cond_destroy(&rt->cond);
	pthread_cond_destroy(&rt->start_done_cond);
	free(rt->threads);
	free(rt->host);
	free(rt->socket_path);
	free(rt->base_url);
	free(rt->state_dir);
	free(rt->owner);
	free(rt->last_error);
	free(rt);
}

static const struct dv_runtime_driver docker_driver = {
	.name = "docker",
	.start = dk_start,
	.stop = dk_stop,
	.inspect = dk_inspect,
	.logs_tail = dk_logs_tail,
	.logs_follow = dk_logs_follow,
	.logs_unfollow = dk_logs_unfollow,
	.list = dk_list,
	.remove = dk_remove,
	.destroy = dk_destroy,
	.address = dk_address,
};

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct dv_runtime *dv_docker_new(struct dv_loop *loop, const struct dv_docker_options *options, char **err)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct dv_docker_options defaults = {0};
	const struct dv_docker_options *o = options ? options : &defaults;
	const char *host = o->host ? o->host : getenv("DOCKER_HOST");
	if (!host || !*host)
		host = DEFAULT_HOST;
	char *socket_path = NULL, *base_url = NULL;
	if (strncmp(host, "unix://", 7) == 0 && host[7] == '/') {
		socket_path = dv_xstrdup(host + 7);
		base_url = dv_xstrdup("http://localhost");
	} else if (strncmp(host, "tcp://", 6) == 0 && host[6]) {
		const char *hp = host + 6;
		size_t n = strcspn(hp, "/");
		base_url = dv_xasprintf("http://%.*s", (int)n, hp);
	} else {
		*err = dv_xasprintf("DOCKER_HOST=%s: davit speaks to the Docker engine over unix:///PATH or tcp://HOST:PORT "
		                    "(TLS is not supported)", host);
		return NULL;
	}
	pthread_once(&once, curl_init_once);
	struct dk_runtime *rt = dv_xcalloc(1, sizeof *rt);
	rt->base.driver = &docker_driver;
	rt->loop = loop;
	rt->host = dv_xstrdup(host);
	rt->socket_path = socket_path;
	rt->base_url = base_url;
	rt->state_dir = dup_or_null(o->state_dir);
	if (o->state_dir) {
		char *abs = realpath(o->state_dir, NULL);
		rt->owner = abs ? abs : dv_xstrdup(o->state_dir);
	}
	rt->ring_lines = o->ring_lines;
	rt->jobs_tail = &rt->jobs;
	rt->msgs_tail = &rt->msgs;
	rt->free_timer.cb = free_timer_cb;
	pthread_mutex_init(&rt->lock, NULL);
	pthread_mutex_init(&rt->image_lock, NULL);
	pthread_cond_init(&rt->cond, NULL);
	pthread_cond_init(&rt->start_done_cond, NULL);
	rt->event.cb = event_cb;
	rt->event.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (rt->event.fd == -1 || dv_loop_add(loop, &rt->event, EPOLLIN) == -1) {
		*err = dv_xasprintf("docker driver: eventfd: %s", strerror(errno));
		dk_destroy(&rt->base);
		return NULL;
	}
	rt->multi = curl_multi_init();
	if (!rt->multi) {
		*err = dv_xstrdup("docker driver: curl_multi_init failed");
		dk_destroy(&rt->base);
		return NULL;
	}
	unsigned n = o->threads ? o->threads : DEFAULT_THREADS;
	rt->threads = dv_xcalloc(n, sizeof *rt->threads);
	for (unsigned i = 0; i < n; i++) {
		if (pthread_create(&rt->threads[i], NULL, job_thread, rt) != 0) {
			*err = dv_xstrdup("docker driver: cannot create a job thread");
			dk_destroy(&rt->base);
			return NULL;
		}
		rt->n_threads++;
	}
	if (pthread_create(&rt->stream_thread, NULL, stream_thread, rt) != 0) {
		*err = dv_xstrdup("docker driver: cannot create the log stream thread");
		dk_destroy(&rt->base);
		return NULL;
	}
	rt->stream_started = true;
	return &rt->base;
}

int dv_docker_check(struct dv_runtime *base, char **err)
{
	struct dk_runtime *rt = (struct dk_runtime *)base;
	if (!rt->socket_path) {
		pthread_mutex_lock(&rt->lock);
		int rc = rt->last_error ? -1 : 0;
		if (rc)
			*err = dv_xstrdup(rt->last_error);
		pthread_mutex_unlock(&rt->lock);
		return rc;
	}
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(rt->socket_path) >= sizeof sun.sun_path) {
		*err = dv_xasprintf("the Docker socket path %s is too long", rt->socket_path);
		return -1;
	}
	memcpy(sun.sun_path, rt->socket_path, strlen(rt->socket_path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		*err = dv_xasprintf("socket: %s", strerror(errno));
		return -1;
	}
	int rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
	int e = errno;
	close(fd);
	if (rc != 0) {
		*err = unreachable(rt, strerror(e));
		return -1;
	}
	return 0;
}

const char *dv_docker_host(const struct dv_runtime *base)
{
	return ((const struct dk_runtime *)(const void *)base)->host;
}

const char *dv_docker_container_id(const struct dv_replica *r)
{
	return r->id;
}

void dv_docker_prune_images(struct dv_runtime *base, const char *app, unsigned keep, char *const *in_use,
                            dv_docker_done_cb done, void *arg)
{
	struct job *j = dv_xcalloc(1, sizeof *j);
	j->type = J_PRUNE;
	j->app = dv_xstrdup(app);
	j->keep = keep ? keep : 5;
	j->in_use = strv_dup(in_use);
	j->done = done;
	j->arg = arg;
	queue_job((struct dk_runtime *)base, j);
}

void dv_docker_app_volumes(struct dv_runtime *base, const char *app, bool remove, dv_docker_done_cb done, void *arg)
{
	struct job *j = dv_xcalloc(1, sizeof *j);
	j->type = J_VOLUMES;
	j->app = dv_xstrdup(app);
	j->remove = remove;
	j->done = done;
	j->arg = arg;
	queue_job((struct dk_runtime *)base, j);
}

void dv_docker_remove_container(struct dv_runtime *base, const char *id)
{
	struct job *j = dv_xcalloc(1, sizeof *j);
	j->type = J_REMOVE;
	j->app = dv_xstrdup(id); /* the id travels in the app field */
	queue_job((struct dk_runtime *)base, j);
}

void dv_docker_login(struct dv_runtime *base, const char *host, const char *user, const char *password,
                     dv_docker_done_cb done, void *arg)
{
	struct job *j = dv_xcalloc(1, sizeof *j);
	j->type = J_LOGIN;
	j->app = dv_xstrdup(host);
	j->user = dv_xstrdup(user);
	j->password = dv_xstrdup(password);
	j->done = done;
	j->arg = arg;
	queue_job((struct dk_runtime *)base, j);
}

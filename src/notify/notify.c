/* notify: one thread and one bounded queue per notifier (see notify.h). */
#include "notify/notify.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/strbuf.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct msg {
	char *event, *severity, *title, *text, *fields;
	int64_t at;
	struct msg *next;
};

/* A notifier worker. It is owned by its thread once started: the thread
 * frees it when told to stop and its queue is empty (or the deadline
 * passed), so a notifier stuck in a slow delivery never holds anyone up. */
struct worker {
	struct dv_notify *owner;
	struct dv_notifier_config cfg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct msg *head, *tail;
	size_t queued;
	bool stop;
	uint64_t stop_deadline_ms; /* give up on the queue after this (0: none) */
};

struct dv_notify {
	struct dv_notify_options opt;
	pthread_mutex_t lock;      /* workers list and the shared counters */
	pthread_cond_t idle;       /* signalled when a worker exits */
	struct worker **workers;
	size_t nworkers;
	unsigned running;          /* worker threads alive */
	struct dv_notify_stats stats;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *dv_notify_kind_name(enum dv_notify_kind k)
{
	static const char *const names[] = {"webhook", "slack", "discord", "email"};
	return k <= DV_NOTIFY_EMAIL ? names[k] : "?";
}

int dv_notify_kind_parse(const char *text, enum dv_notify_kind *out)
{
	for (int k = 0; k <= DV_NOTIFY_EMAIL; k++) {
		if (strcmp(text, dv_notify_kind_name((enum dv_notify_kind)k)) == 0) {
			*out = (enum dv_notify_kind)k;
			return 0;
		}
	}
	return -1;
}

static void msg_free(struct msg *m)
{
	free(m->event);
	free(m->severity);
	free(m->title);
	free(m->text);
	free(m->fields);
	free(m);
}

/* ---- delivery ---- */

static void json_str(struct dv_strbuf *b, const char *key, const char *v, bool comma)
{
	dv_strbuf_printf(b, "%s\"%s\":", comma ? "," : "", key);
	dv_json_escape(b, v ? v : "", v ? strlen(v) : 0); /* adds the quotes */
}

static void build_body(const struct worker *w, const struct msg *m, struct dv_strbuf *b)
{
	struct dv_strbuf t;
	dv_strbuf_init(&t);
	switch (w->cfg.kind) {
	case DV_NOTIFY_SLACK:
		dv_strbuf_printf(&t, "*[%s] %s*\n%s", m->severity, m->title, m->text);
		dv_strbuf_puts(b, "{");
		json_str(b, "text", t.data, false);
		dv_strbuf_puts(b, "}");
		break;
	case DV_NOTIFY_DISCORD:
		dv_strbuf_printf(&t, "**[%s] %s**\n%s", m->severity, m->title, m->text);
		if (t.len > 1900)
			t.len = 1900; /* Discord refuses content over 2000 characters */
		t.data[t.len] = '\0';
		dv_strbuf_puts(b, "{");
		json_str(b, "content", t.data, false);
		dv_strbuf_puts(b, "}");
		break;
	default:
		dv_strbuf_puts(b, "{");
		json_str(b, "source", "davit", false);
		json_str(b, "event", m->event, true);
		json_str(b, "severity", m->severity, true);
		json_str(b, "title", m->title, true);
		json_str(b, "text", m->text, true);
		dv_strbuf_printf(b, ",\"time\":%lld,\"fields\":%s}", (long long)m->at, m->fields ? m->fields : "{}");
		break;
	}
	dv_strbuf_dispose(&t);
}

struct upload {
	const char *data;
	size_t len, off;
};

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct upload *u = arg;
	size_t room = size * nmemb, left = u->len - u->off;
	size_t n = left < room ? left : room;
	memcpy(buf, u->data + u->off, n);
	u->off += n;
	return n;
}

static size_t discard_cb(char *buf, size_t size, size_t nmemb, void *arg)
{
	return size * nmemb;
}

static void build_email(const struct worker *w, const struct msg *m, struct dv_strbuf *b)
{
	char date[64];
	time_t t = (time_t)m->at;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	dv_strbuf_printf(b, "Date: %s\r\nFrom: %s\r\nTo: %s\r\nSubject: [davit %s] %s\r\n", date, w->cfg.from,
	                 w->cfg.to, m->severity, m->title);
	dv_strbuf_puts(b, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
	/* Body lines: CRLF, and a leading dot doubled (RFC 5321 4.5.2). */
	for (const char *p = m->text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len && p[len - 1] == '\r')
			len--;
		if (*p == '.')
			dv_strbuf_puts(b, ".");
		dv_strbuf_append(b, p, len);
		dv_strbuf_puts(b, "\r\n");
		p = nl ? nl + 1 : p + strlen(p);
	}
	dv_strbuf_printf(b, "\r\n-- \r\nevent %s, sent by davit\r\n", m->event);
}

/* One attempt. Returns 0 on success, -1 with a reason in why. */
static int deliver(struct worker *w, const struct msg *m, char *why, size_t whylen)
{
	CURL *c = curl_easy_init();
	if (!c) {
		snprintf(why, whylen, "curl_easy_init failed");
		return -1;
	}
	struct dv_strbuf body;
	dv_strbuf_init(&body);
	struct curl_slist *hdrs = NULL, *rcpt = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c, CURLOPT_URL, w->cfg.url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)w->owner->opt.timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)w->owner->opt.timeout_ms);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_cb);
	struct upload up = {0};
	if (w->cfg.kind == DV_NOTIFY_EMAIL) {
		build_email(w, m, &body);
		up.data = body.data;
		up.len = body.len;
		curl_easy_setopt(c, CURLOPT_MAIL_FROM, w->cfg.from);
		char to[sizeof w->cfg.to];
		snprintf(to, sizeof to, "%s", w->cfg.to);
		char *save = NULL;
		for (char *r = strtok_r(to, ", ", &save); r; r = strtok_r(NULL, ", ", &save))
			rcpt = curl_slist_append(rcpt, r);
		curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(c, CURLOPT_READDATA, &up);
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_INFILESIZE, (long)up.len);
		curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY); /* STARTTLS when offered */
	} else {
		build_body(w, m, &body);
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		hdrs = curl_slist_append(hdrs, "User-Agent: davit");
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body.len);
		curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	}
	CURLcode rc = curl_easy_perform(c);
	int ret = 0;
	if (rc != CURLE_OK) {
		snprintf(why, whylen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
		ret = -1;
	} else if (w->cfg.kind != DV_NOTIFY_EMAIL) {
		long status = 0;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		if (status < 200 || status > 299) {
			snprintf(why, whylen, "HTTP status %ld", status);
			ret = -1;
		}
	}
	curl_slist_free_all(hdrs);
	curl_slist_free_all(rcpt);
	curl_easy_cleanup(c);
	dv_strbuf_dispose(&body);
	return ret;
}

/* Sleeps ms unless told to stop with a passed deadline. */
static void backoff_wait(struct worker *w, uint64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->lock);
	while (!w->stop) {
		if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&w->lock);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct dv_notify *n = w->owner;
	for (;;) {
		pthread_mutex_lock(&w->lock);
		while (!w->head && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		bool give_up = w->stop && (!w->head || (w->stop_deadline_ms && mono_ms() >= w->stop_deadline_ms));
		if (give_up) {
			pthread_mutex_unlock(&w->lock);
			break;
		}
		struct msg *m = w->head;
		w->head = m->next;
		if (!w->head)
			w->tail = NULL;
		w->queued--;
		pthread_mutex_unlock(&w->lock);

		uint64_t delay = n->opt.backoff_ms;
		char why[256] = "";
		bool ok = false;
		for (unsigned attempt = 0; attempt <= n->opt.retries; attempt++) {
			if (attempt) {
				pthread_mutex_lock(&n->lock);
				n->stats.retried++;
				pthread_mutex_unlock(&n->lock);
				backoff_wait(w, delay);
				delay *= 2;
				if (w->stop && w->stop_deadline_ms && mono_ms() >= w->stop_deadline_ms)
					break;
			}
			if (deliver(w, m, why, sizeof why) == 0) {
				ok = true;
				break;
			}
		}
		pthread_mutex_lock(&n->lock);
		if (ok)
			n->stats.sent++;
		else
			n->stats.failed++;
		pthread_mutex_unlock(&n->lock);
		if (ok)
			dv_log_debug("notify", "%s: sent %s", dv_notify_kind_name(w->cfg.kind), m->event);
		else
			dv_log_warn("notify", "%s %s: %s not delivered: %s", dv_notify_kind_name(w->cfg.kind), w->cfg.url,
			            m->event, why);
		msg_free(m);
	}
	for (struct msg *m = w->head, *next; m; m = next) {
		next = m->next;
		msg_free(m);
	}
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
	pthread_mutex_lock(&n->lock);
	n->running--;
	pthread_cond_broadcast(&n->idle);
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

/* libcurl's global state, once, before any notifier thread exists. */
static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct dv_notify *dv_notify_new(const struct dv_notify_options *opts)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, global_init);
	struct dv_notify *n = dv_xcalloc(1, sizeof *n);
	n->opt.timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : 10000;
	n->opt.retries = opts ? opts->retries : 3;
	n->opt.backoff_ms = opts && opts->backoff_ms ? opts->backoff_ms : 1000;
	n->opt.queue_cap = opts && opts->queue_cap ? opts->queue_cap : 256;
	pthread_mutex_init(&n->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->idle, &ca);
	pthread_condattr_destroy(&ca);
	return n;
}

static void stop_worker(struct worker *w, uint64_t deadline_ms)
{
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	w->stop_deadline_ms = deadline_ms;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void dv_notify_configure(struct dv_notify *n, const struct dv_notifier_config *configs, size_t count)
{
	pthread_mutex_lock(&n->lock);
	struct worker **old = n->workers;
	size_t nold = n->nworkers;
	n->workers = dv_xcalloc(count ? count : 1, sizeof *n->workers);
	n->nworkers = 0;
	for (size_t i = 0; i < count; i++) {
		struct worker *w = dv_xcalloc(1, sizeof *w);
		w->owner = n;
		w->cfg = configs[i];
		pthread_mutex_init(&w->lock, NULL);
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&w->cond, &ca);
		pthread_condattr_destroy(&ca);
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, worker_main, w) != 0) {
			dv_log_error("notify", "cannot start a thread for %s", configs[i].url);
			pthread_mutex_destroy(&w->lock);
			pthread_cond_destroy(&w->cond);
			free(w);
		} else {
			n->workers[n->nworkers++] = w;
			n->running++;
		}
		pthread_attr_destroy(&attr);
	}
	pthread_mutex_unlock(&n->lock);
	/* Old workers deliver what they have (bounded by their timeouts and
	 * retries) and exit on their own. */
	for (size_t i = 0; i < nold; i++)
		stop_worker(old[i], 0);
	free(old);
}

static char *dup_or_empty(const char *s)
{
	return dv_xstrdup(s ? s : "");
}

void dv_notify_send(struct dv_notify *n, const struct dv_notify_message *m)
{
	pthread_mutex_lock(&n->lock);
	for (size_t i = 0; i < n->nworkers; i++) {
		struct worker *w = n->workers[i];
		if (m->is_alert ? !w->cfg.alerts : !w->cfg.deploys)
			continue;
		struct msg *c = dv_xcalloc(1, sizeof *c);
		c->event = dup_or_empty(m->event);
		c->severity = dup_or_empty(m->severity);
		c->title = dup_or_empty(m->title);
		c->text = dup_or_empty(m->text);
		c->fields = m->fields_json ? dv_xstrdup(m->fields_json) : NULL;
		c->at = (int64_t)time(NULL);
		pthread_mutex_lock(&w->lock);
		if (w->queued >= n->opt.queue_cap) {
			struct msg *drop = w->head; /* the oldest goes: news matters more */
			w->head = drop->next;
			if (!w->head)
				w->tail = NULL;
			w->queued--;
			msg_free(drop);
			n->stats.dropped++;
		}
		if (w->tail)
			w->tail->next = c;
		else
			w->head = c;
		w->tail = c;
		w->queued++;
		pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->lock);
	}
	pthread_mutex_unlock(&n->lock);
}

void dv_notify_stats(struct dv_notify *n, struct dv_notify_stats *out)
{
	pthread_mutex_lock(&n->lock);
	*out = n->stats;
	pthread_mutex_unlock(&n->lock);
}

void dv_notify_free(struct dv_notify *n, uint64_t wait_ms)
{
	if (!n)
		return;
	uint64_t deadline = mono_ms() + wait_ms;
	pthread_mutex_lock(&n->lock);
	for (size_t i = 0; i < n->nworkers; i++)
		stop_worker(n->workers[i], deadline);
	free(n->workers);
	n->workers = NULL;
	n->nworkers = 0;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(wait_ms / 1000) + 1;
	while (n->running > 0) {
		if (pthread_cond_timedwait(&n->idle, &n->lock, &ts) == ETIMEDOUT)
			break;
	}
	bool all_done = n->running == 0;
	pthread_mutex_unlock(&n->lock);
	if (!all_done) {
		/* A worker is stuck in a delivery (bounded by its timeout): it
		 * still points at n, so n stays allocated until the process ends. */
		dv_log_warn("notify", "a notification is still being delivered at exit");
		return;
	}
	pthread_mutex_destroy(&n->lock);
	pthread_cond_destroy(&n->idle);
	free(n);
}

/* ---- "TYPE=URL" specs ---- */

static void query_param(const char *query, const char *name, char *out, size_t size)
{
	out[0] = '\0';
	size_t nl = strlen(name);
	for (const char *p = query; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			snprintf(out, size, "%.*s", (int)(len - nl - 1), p + nl + 1);
			return;
		}
		p = amp ? amp + 1 : NULL;
	}
}

int dv_notify_parse_spec(const char *spec, struct dv_notifier_config *out, char **err)
{
	memset(out, 0, sizeof *out);
	out->alerts = out->deploys = true;
	const char *eq = strchr(spec, '=');
	char kind[32];
	if (!eq || (size_t)(eq - spec) >= sizeof kind) {
		*err = dv_xasprintf("notifier '%s' must be TYPE=URL (TYPE: webhook, slack, discord or email)", spec);
		return -1;
	}
	snprintf(kind, sizeof kind, "%.*s", (int)(eq - spec), spec);
	if (dv_notify_kind_parse(kind, &out->kind) != 0) {
		*err = dv_xasprintf("unknown notifier type '%s' (webhook, slack, discord or email)", kind);
		return -1;
	}
	const char *url = eq + 1;
	if (out->kind == DV_NOTIFY_EMAIL) {
		if (strncmp(url, "smtp://", 7) != 0 && strncmp(url, "smtps://", 8) != 0) {
			*err = dv_xasprintf("e-mail notifier '%s': the URL must start with smtp:// or smtps://", url);
			return -1;
		}
		const char *q = strchr(url, '?');
		snprintf(out->url, sizeof out->url, "%.*s", (int)(q ? (size_t)(q - url) : strlen(url)), url);
		if (q) {
			query_param(q + 1, "from", out->from, sizeof out->from);
			query_param(q + 1, "to", out->to, sizeof out->to);
		}
		if (!out->from[0] || !out->to[0]) {
			*err = dv_xasprintf("e-mail notifier '%s' needs ?from=ADDRESS&to=ADDRESS[,ADDRESS]", url);
			return -1;
		}
	} else {
		if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
			*err = dv_xasprintf("%s notifier '%s': the URL must start with http:// or https://", kind, url);
			return -1;
		}
		snprintf(out->url, sizeof out->url, "%s", url);
	}
	return 0;
}

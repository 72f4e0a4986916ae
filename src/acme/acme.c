/* The certificate manager (see acme.h): state per domain on the control
 * loop, one worker thread for the CA exchanges, results back via eventfd.
 *
 * Threads: everything in struct dv_acme except `lock`-protected queue and
 * results (and `ca`, which only the worker touches) belongs to the control
 * loop. */
#include "acme/acme.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/util.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RECHECK_MS (3600 * 1000) /* re-evaluate at least hourly (clock changes, long sleeps) */

struct domain {
	char *name;
	bool wanted;                  /* in the services' domains now */
	bool has_cert;                /* an ACME certificate is on disk */
	struct dv_acme_cert_info info;
	char *user_cert, *user_key;   /* a user-supplied certificate wins */
	bool in_flight;
	unsigned failures;            /* consecutive */
	int64_t next_attempt_ms;      /* wall clock; after a failure */
	char *last_error;
	int64_t last_error_ms;
};

struct result {
	char *domain;
	char *error; /* NULL: success */
};

struct dv_acme {
	struct dv_acme_config config; /* strings owned (copied) */
	char *certs_dir;
	struct domain *domains;
	size_t ndomains;
	struct evp_pkey_st *account_key;
	struct dv_io io; /* eventfd: results are ready */
	struct dv_timer timer;

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	char **queue; /* domains to obtain */
	size_t nqueue;
	struct result *results;
	size_t nresults;
	struct dv_acme_ca ca; /* worker thread only */
};

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *domain_dir(const struct dv_acme *a, const char *name)
{
	return dv_xasprintf("%s/%s", a->certs_dir, name);
}

static struct domain *domain_find(struct dv_acme *a, const char *name, bool create)
{
	for (size_t i = 0; i < a->ndomains; i++)
		if (strcmp(a->domains[i].name, name) == 0)
			return &a->domains[i];
	if (!create)
		return NULL;
	a->domains = dv_xrealloc(a->domains, (a->ndomains + 1) * sizeof *a->domains);
	struct domain *d = &a->domains[a->ndomains++];
	memset(d, 0, sizeof *d);
	d->name = dv_xstrdup(name);
	return d;
}

/* Reads the certificate on disk for d (if any). */
static void domain_load(struct dv_acme *a, struct domain *d)
{
	char *dir = domain_dir(a, d->name);
	char *cert = dv_xasprintf("%s/fullchain.pem", dir);
	char *key = dv_xasprintf("%s/privkey.pem", dir);
	char *err = NULL;
	struct stat st;
	d->has_cert = false;
	if (stat(cert, &st) == 0 && stat(key, &st) == 0) {
		if (dv_acme_cert_info_file(cert, &d->info, &err) == 0)
			d->has_cert = true;
		else
			dv_log_warn("acme", "ignoring %s: %s", cert, err);
	}
	free(err);
	free(dir);
	free(cert);
	free(key);
}

/* ------------------------------------------------------------------ worker thread */

static void thread_publish(void *arg, const char *token, const char *keyauth)
{
	struct dv_acme *a = arg;
	a->config.publish_challenge(a->config.arg, token, keyauth);
}

static void thread_publish_alpn(void *arg, const char *domain, const char *keyauth)
{
	struct dv_acme *a = arg;
	a->config.publish_alpn(a->config.arg, domain, keyauth);
}

static bool thread_sleep(void *arg, uint64_t ms)
{
	struct dv_acme *a = arg;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&a->lock);
	while (!a->stop && pthread_cond_timedwait(&a->cond, &a->lock, &ts) == 0)
		;
	bool go_on = !a->stop;
	pthread_mutex_unlock(&a->lock);
	return go_on;
}

/* Obtains and stores one certificate. The key is written before the chain:
 * fullchain.pem's rename is what makes the new pair visible, and both are
 * replaced atomically one after the other (a reload between the two renames
 * fails its key check and keeps the previous set). */
static char *obtain_and_store(struct dv_acme *a, const char *name)
{
	char *chain = NULL, *err = NULL;
	struct evp_pkey_st *key = NULL;
	if (dv_acme_obtain(&a->ca, name, &chain, &key, &err) != 0)
		return err ? err : dv_xstrdup("failed");
	char *dir = domain_dir(a, name);
	char *kpath = dv_xasprintf("%s/privkey.pem", dir), *cpath = dv_xasprintf("%s/fullchain.pem", dir);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		err = dv_xasprintf("%s: %s", dir, strerror(errno));
	else if (chmod(dir, 0700) != 0)
		err = dv_xasprintf("%s: %s", dir, strerror(errno));
	if (!err && dv_acme_key_save(key, kpath, &err) == 0)
		dv_acme_write_file(cpath, chain, strlen(chain), 0644, &err);
	dv_acme_key_free(key);
	free(chain);
	free(dir);
	free(kpath);
	free(cpath);
	return err;
}

static void *thread_main(void *arg)
{
	struct dv_acme *a = arg;
	for (;;) {
		pthread_mutex_lock(&a->lock);
		while (!a->stop && a->nqueue == 0)
			pthread_cond_wait(&a->cond, &a->lock);
		if (a->stop) {
			pthread_mutex_unlock(&a->lock);
			break;
		}
		char *name = a->queue[0];
		memmove(a->queue, a->queue + 1, (a->nqueue - 1) * sizeof *a->queue);
		a->nqueue--;
		pthread_mutex_unlock(&a->lock);

		dv_log_info("acme", "requesting a certificate for %s from %s", name, a->config.directory_url);
		char *err = obtain_and_store(a, name);

		pthread_mutex_lock(&a->lock);
		a->results = dv_xrealloc(a->results, (a->nresults + 1) * sizeof *a->results);
		a->results[a->nresults++] = (struct result){name, err};
		pthread_mutex_unlock(&a->lock);
		uint64_t one = 1;
		if (write(a->io.fd, &one, sizeof one) != sizeof one)
			dv_log_warn("acme", "eventfd: %s", strerror(errno));
	}
	return NULL;
}

/* ------------------------------------------------------------------ control loop */

static void schedule(struct dv_acme *a);

static void timer_fired(struct dv_loop *loop, struct dv_timer *t)
{
	schedule(dv_container_of(t, struct dv_acme, timer));
}

static void results_ready(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct dv_acme *a = dv_container_of(io, struct dv_acme, io);
	uint64_t n;
	while (read(io->fd, &n, sizeof n) == sizeof n)
		;
	pthread_mutex_lock(&a->lock);
	struct result *res = a->results;
	size_t nres = a->nresults;
	a->results = NULL;
	a->nresults = 0;
	pthread_mutex_unlock(&a->lock);
	bool changed = false;
	for (size_t i = 0; i < nres; i++) {
		struct domain *d = domain_find(a, res[i].domain, true);
		d->in_flight = false;
		if (!res[i].error) {
			d->failures = 0;
			dv_free(&d->last_error);
			domain_load(a, d);
			char when[32] = "?";
			time_t na = (time_t)d->info.not_after;
			struct tm tm;
			if (gmtime_r(&na, &tm))
				strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
			dv_log_info("acme", "certificate for %s issued by %s, valid until %s", d->name, d->info.issuer, when);
			changed = true;
		} else {
			d->failures++;
			uint32_t rnd = 0;
			if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
				rnd = (uint32_t)dv_now_ns();
			uint64_t delay = dv_acme_retry_delay_ms(d->failures, a->config.retry_base_ms, a->config.retry_max_ms, rnd);
			d->next_attempt_ms = wall_ms() + (int64_t)delay;
			free(d->last_error);
			d->last_error = res[i].error;
			res[i].error = NULL;
			d->last_error_ms = wall_ms();
			dv_log_warn("acme", "certificate for %s failed (attempt %u): %s; retrying in %llus", d->name,
			            d->failures, d->last_error, (unsigned long long)(delay / 1000));
		}
		free(res[i].domain);
		free(res[i].error);
	}
	free(res);
	if (changed && a->config.certs_changed)
		a->config.certs_changed(a->config.arg);
	schedule(a);
}

/* Queues every due domain and arms the timer for the next one. */
static void schedule(struct dv_acme *a)
{
	if (!a->config.enabled)
		return;
	int64_t now = wall_ms(), next = now + RECHECK_MS;
	for (size_t i = 0; i < a->ndomains; i++) {
		struct domain *d = &a->domains[i];
		if (!d->wanted || d->user_cert || d->in_flight)
			continue;
		int64_t due = 0;
		if (d->has_cert)
			due = dv_acme_renew_at(d->info.not_before, d->info.not_after, (int64_t)a->config.renew_before_s) * 1000;
		if (d->failures && d->next_attempt_ms > due)
			due = d->next_attempt_ms;
		if (due > now) {
			if (due < next)
				next = due;
			continue;
		}
		d->in_flight = true;
		pthread_mutex_lock(&a->lock);
		a->queue = dv_xrealloc(a->queue, (a->nqueue + 1) * sizeof *a->queue);
		a->queue[a->nqueue++] = dv_xstrdup(d->name);
		pthread_cond_broadcast(&a->cond);
		pthread_mutex_unlock(&a->lock);
	}
	struct dv_loop *loop = a->config.loop;
	dv_timer_set(loop, &a->timer, dv_loop_now(loop) + (uint64_t)(next - now) + 10);
}

static int ensure_dir(const char *path, char **err)
{
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		*err = dv_xasprintf("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	if (chmod(path, 0700) != 0) {
		*err = dv_xasprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct dv_acme *dv_acme_new(const struct dv_acme_config *config, char **err)
{
	static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
	pthread_once(&curl_once, curl_init_once);
	struct dv_acme *a = dv_xcalloc(1, sizeof *a);
	a->config = *config;
	a->config.state_dir = dv_xstrdup(config->state_dir);
	a->config.directory_url = dv_xstrdup(config->directory_url ? config->directory_url : DV_ACME_LETSENCRYPT);
	a->config.ca_bundle = config->ca_bundle ? dv_xstrdup(config->ca_bundle) : NULL;
	a->config.email = config->email ? dv_xstrdup(config->email) : NULL;
	a->config.challenge_type = config->challenge_type ? dv_xstrdup(config->challenge_type) : NULL;
	if (!a->config.renew_before_s)
		a->config.renew_before_s = 30 * 86400;
	if (!a->config.retry_base_ms)
		a->config.retry_base_ms = 60 * 1000;
	if (!a->config.retry_max_ms)
		a->config.retry_max_ms = 6 * 3600 * 1000;
	a->certs_dir = dv_xasprintf("%s/certs", config->state_dir);
	a->io.fd = -1;
	a->timer.cb = timer_fired;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	if (a->config.challenge_type && strcmp(a->config.challenge_type, "http-01") != 0 &&
	    (strcmp(a->config.challenge_type, "tls-alpn-01") != 0 || !config->publish_alpn)) {
		*err = dv_xasprintf("unknown ACME challenge type '%s' (http-01 or tls-alpn-01)", config->challenge_type);
		goto fail;
	}
	if (ensure_dir(a->certs_dir, err) != 0)
		goto fail;
	/* Certificates already on disk are served at once (after a restart). */
	DIR *dir = opendir(a->certs_dir);
	for (struct dirent *e; dir && (e = readdir(dir));) {
		if (e->d_name[0] == '.' || e->d_type == DT_REG)
			continue;
		struct domain *d = domain_find(a, e->d_name, true);
		domain_load(a, d);
		if (!d->has_cert) {
			free(d->name);
			a->ndomains--;
		}
	}
	if (dir)
		closedir(dir);
	if (!a->config.enabled)
		return a;
	char *kpath = dv_xasprintf("%s/account.key", a->certs_dir);
	struct stat st;
	if (stat(kpath, &st) == 0) {
		a->account_key = dv_acme_key_load(kpath, err);
	} else {
		a->account_key = dv_acme_key_new();
		if (!a->account_key)
			*err = dv_xstrdup("cannot generate the ACME account key");
		else if (dv_acme_key_save(a->account_key, kpath, err) != 0) {
			dv_acme_key_free(a->account_key);
			a->account_key = NULL;
		}
	}
	free(kpath);
	if (!a->account_key)
		goto fail;
	a->ca = (struct dv_acme_ca){
		.directory_url = a->config.directory_url,
		.ca_bundle = a->config.ca_bundle,
		.email = a->config.email,
		.account_key = a->account_key,
		.publish_challenge = thread_publish,
		.challenge_type = a->config.challenge_type,
		.publish_alpn = a->config.publish_alpn ? thread_publish_alpn : NULL,
		.sleep = thread_sleep,
		.arg = a,
	};
	a->io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	a->io.cb = results_ready;
	if (a->io.fd == -1 || dv_loop_add(config->loop, &a->io, EPOLLIN) != 0) {
		*err = dv_xasprintf("eventfd: %s", strerror(errno));
		goto fail;
	}
	int rc = pthread_create(&a->thread, NULL, thread_main, a);
	if (rc != 0) {
		*err = dv_xasprintf("cannot start the ACME thread: %s", strerror(rc));
		goto fail;
	}
	a->thread_started = true;
	return a;
fail:
	dv_acme_free(a);
	return NULL;
}

void dv_acme_free(struct dv_acme *a)
{
	if (!a)
		return;
	if (a->thread_started) {
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		pthread_cond_broadcast(&a->cond);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
	}
	dv_timer_cancel(a->config.loop, &a->timer);
	if (a->io.fd != -1) {
		dv_loop_del(a->config.loop, &a->io);
		close(a->io.fd);
	}
	for (size_t i = 0; i < a->nqueue; i++)
		free(a->queue[i]);
	free(a->queue);
	for (size_t i = 0; i < a->nresults; i++) {
		free(a->results[i].domain);
		free(a->results[i].error);
	}
	free(a->results);
	for (size_t i = 0; i < a->ndomains; i++) {
		free(a->domains[i].name);
		free(a->domains[i].user_cert);
		free(a->domains[i].user_key);
		free(a->domains[i].last_error);
	}
	free(a->domains);
	dv_acme_ca_dispose(&a->ca);
	dv_acme_key_free(a->account_key);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	free((char *)a->config.state_dir);
	free((char *)a->config.directory_url);
	free((char *)a->config.ca_bundle);
	free((char *)a->config.email);
	free((char *)a->config.challenge_type);
	free(a->certs_dir);
	free(a);
}

bool dv_acme_set_domains(struct dv_acme *a, const char *const *domains, size_t n)
{
	bool *before = dv_xcalloc(a->ndomains + 1, sizeof *before);
	size_t nbefore = a->ndomains;
	for (size_t i = 0; i < a->ndomains; i++) {
		before[i] = a->domains[i].wanted;
		a->domains[i].wanted = false;
	}
	for (size_t i = 0; i < n; i++) {
		if (!dv_acme_domain_eligible(domains[i]))
			continue;
		char lower[256];
		size_t len = strlen(domains[i]);
		if (len >= sizeof lower)
			continue;
		for (size_t k = 0; k <= len; k++)
			lower[k] = (char)((domains[i][k] >= 'A' && domains[i][k] <= 'Z') ? domains[i][k] + 32 : domains[i][k]);
		domain_find(a, lower, true)->wanted = true;
	}
	bool changed = a->ndomains != nbefore;
	for (size_t i = 0; i < nbefore && !changed; i++)
		changed = before[i] != a->domains[i].wanted;
	free(before);
	schedule(a);
	return changed;
}

void dv_acme_set_user_cert(struct dv_acme *a, const char *domain, const char *cert, const char *key)
{
	struct domain *d = domain_find(a, domain, true);
	dv_free(&d->user_cert);
	dv_free(&d->user_key);
	if (cert) {
		d->user_cert = dv_xstrdup(cert);
		d->user_key = dv_xstrdup(key);
		char *err = NULL;
		if (dv_acme_cert_info_file(cert, &d->info, &err) != 0) {
			free(d->last_error);
			d->last_error = err;
			d->last_error_ms = wall_ms();
		} else {
			dv_free(&d->last_error);
		}
	} else {
		domain_load(a, d);
	}
}

void dv_acme_each_cert(struct dv_acme *a, void (*fn)(void *arg, const char *domain, const char *cert, const char *key),
                       void *arg)
{
	for (size_t i = 0; i < a->ndomains; i++) {
		struct domain *d = &a->domains[i];
		if (d->user_cert) {
			fn(arg, d->name, d->user_cert, d->user_key);
		} else if (d->has_cert && d->wanted) {
			char *dir = domain_dir(a, d->name);
			char *cert = dv_xasprintf("%s/fullchain.pem", dir), *key = dv_xasprintf("%s/privkey.pem", dir);
			fn(arg, d->name, cert, key);
			free(dir);
			free(cert);
			free(key);
		}
	}
}

static void iso_time(char *buf, size_t size, int64_t unix_s)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	if (!unix_s || !gmtime_r(&t, &tm))
		snprintf(buf, size, "-");
	else
		strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *domain_status(const struct dv_acme *a, const struct domain *d, int64_t now_s)
{
	bool have = d->user_cert || d->has_cert;
	if (d->user_cert)
		return d->last_error ? "failed" : now_s > d->info.not_after ? "expired" : "user";
	if (d->in_flight)
		return d->has_cert ? "renewing" : "pending";
	if (d->failures && d->last_error)
		return "failed";
	if (have && now_s > d->info.not_after)
		return "expired";
	if (have)
		return "valid";
	return a->config.enabled ? "pending" : "acme-off";
}

void dv_acme_report(struct dv_acme *a, bool json, struct dv_strbuf *out)
{
	int64_t now_s = wall_ms() / 1000;
	struct dv_json j;
	if (json) {
		dv_json_init(&j, out);
		dv_json_object_begin(&j);
		dv_json_key(&j, "acme");
		dv_json_object_begin(&j);
		dv_json_key(&j, "enabled");
		dv_json_bool(&j, a->config.enabled);
		dv_json_key(&j, "directory");
		dv_json_string(&j, a->config.directory_url);
		dv_json_object_end(&j);
		dv_json_key(&j, "certificates");
		dv_json_array_begin(&j);
	} else {
		dv_strbuf_printf(out, "%-32s %-28s %-21s %-9s %s\n", "DOMAIN", "ISSUER", "NOT AFTER", "STATUS", "LAST ERROR");
	}
	size_t shown = 0;
	for (size_t i = 0; i < a->ndomains; i++) {
		const struct domain *d = &a->domains[i];
		if (!d->wanted && !d->user_cert)
			continue;
		shown++;
		bool have = d->user_cert || d->has_cert;
		char na[32], next[32];
		iso_time(na, sizeof na, have ? d->info.not_after : 0);
		iso_time(next, sizeof next, d->failures ? d->next_attempt_ms / 1000 : 0);
		const char *status = domain_status(a, d, now_s);
		if (json) {
			dv_json_object_begin(&j);
			dv_json_key(&j, "domain");
			dv_json_string(&j, d->name);
			dv_json_key(&j, "source");
			dv_json_string(&j, d->user_cert ? "user" : "acme");
			dv_json_key(&j, "status");
			dv_json_string(&j, status);
			dv_json_key(&j, "issuer");
			dv_json_string(&j, have ? d->info.issuer : NULL);
			dv_json_key(&j, "serial");
			dv_json_string(&j, have ? d->info.serial : NULL);
			dv_json_key(&j, "not_before");
			if (have)
				dv_json_int(&j, d->info.not_before);
			else
				dv_json_null(&j);
			dv_json_key(&j, "not_after");
			if (have)
				dv_json_string(&j, na);
			else
				dv_json_null(&j);
			dv_json_key(&j, "not_after_unix");
			if (have)
				dv_json_int(&j, d->info.not_after);
			else
				dv_json_null(&j);
			dv_json_key(&j, "failures");
			dv_json_uint(&j, d->failures);
			dv_json_key(&j, "last_error");
			dv_json_string(&j, d->last_error);
			dv_json_key(&j, "next_attempt");
			dv_json_string(&j, d->failures ? next : NULL);
			dv_json_object_end(&j);
		} else {
			dv_strbuf_printf(out, "%-32s %-28.28s %-21s %-9s %s\n", d->name, have ? d->info.issuer : "-", na, status,
			                 d->last_error ? d->last_error : "-");
		}
	}
	if (json) {
		dv_json_array_end(&j);
		dv_json_object_end(&j);
		dv_strbuf_puts(out, "\n");
	} else if (!shown) {
		dv_strbuf_puts(out, "(no domains: give services x-davit.domains)\n");
	}
}

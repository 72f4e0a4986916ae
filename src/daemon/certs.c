/* The daemon's certificates (see certs.h). */
#include "daemon/certs.h"

#include "acme/acme.h"
#include "core/alloc.h"
#include "core/log.h"
#include "deploy/engine.h"
#include "metrics/metrics.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct user_cert {
	char *host, *cert, *key;
	int64_t mtime; /* of both files (x-davit.tls): replaced files are loaded again */
};

static int64_t files_mtime(const char *a, const char *b)
{
	struct stat sa, sb;
	if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
		return -1;
	return (int64_t)sa.st_mtim.tv_sec * 1000000000 + sa.st_mtim.tv_nsec + (int64_t)sb.st_mtim.tv_sec * 1000000000 +
	       sb.st_mtim.tv_nsec;
}

struct dv_daemon_certs {
	struct dv_tls *tls;
	struct dv_acme *acme;
	struct user_cert *flags;   /* --cert HOST=CERT,KEY */
	size_t nflags;
	struct user_cert *compose; /* x-davit.tls of the services, as last reported */
	size_t ncompose;
};

static void user_certs_free(struct user_cert *u, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(u[i].host);
		free(u[i].cert);
		free(u[i].key);
	}
	free(u);
}

static const struct user_cert *user_find(const struct user_cert *u, size_t n, const char *host)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(u[i].host, host) == 0)
			return &u[i];
	return NULL;
}

static void publish_challenge(void *arg, const char *token, const char *keyauth)
{
	struct dv_daemon_certs *c = arg;
	dv_tls_set_challenge(c->tls, token, keyauth);
}

static void publish_alpn(void *arg, const char *domain, const char *keyauth)
{
	struct dv_daemon_certs *c = arg;
	char *err = NULL;
	if (dv_tls_set_alpn_challenge(c->tls, domain, keyauth, &err) != 0) {
		dv_log_error("certs", "TLS-ALPN-01 for %s: %s", domain, err);
		free(err);
	} else {
		dv_log_info("certs", "TLS-ALPN-01 challenge for %s %s", domain, keyauth ? "published" : "withdrawn");
	}
}

struct build {
	struct dv_daemon_certs *c;
	struct dv_tls_certset *set;
};

static void add_cert(void *arg, const char *domain, const char *cert, const char *key)
{
	struct build *b = arg;
	char *err = NULL;
	if (dv_tls_certset_add_files(b->c->tls, b->set, domain, cert, key, &err) != 0) {
		dv_log_error("certs", "not serving %s: %s", domain ? domain : cert, err);
		free(err);
		return;
	}
	/* obs: davit_certificate_expiry_timestamp_seconds and the certificate_expiring rule */
	struct dv_acme_cert_info info;
	if (domain && dv_acme_cert_info_file(cert, &info, &err) == 0)
		dv_metrics_cert_expiry_set(domain, info.not_after);
	free(err);
}

/* Rebuilds the set from what the manager has and swaps it in: open
 * connections keep the certificate they were handshaken with. */
static void republish(void *arg)
{
	struct dv_daemon_certs *c = arg;
	struct build b = {c, dv_tls_certset_new()};
	dv_metrics_gauge_clear("davit_certificate_expiry_timestamp_seconds"); /* departed domains go */
	dv_acme_each_cert(c->acme, add_cert, &b);
	dv_log_info("certs", "serving %zu certificates", dv_tls_certset_count(b.set));
	dv_tls_publish(c->tls, b.set);
}

struct dv_daemon_certs *dv_daemon_certs_new(struct dv_loop *loop, const struct dv_daemon_options *o, bool acme,
                                            char **err)
{
	struct dv_daemon_certs *c = dv_xcalloc(1, sizeof *c);
	c->tls = dv_tls_new(0, err);
	if (!c->tls)
		goto fail;
	struct dv_acme_config ac = {
		.loop = loop,
		.state_dir = o->state_dir,
		.directory_url = o->acme_directory,
		.ca_bundle = o->acme_ca_bundle,
		.email = o->acme_email,
		.renew_before_s = o->acme_renew_before_s,
		.retry_base_ms = o->acme_retry_base_ms,
		.enabled = acme,
		.publish_challenge = publish_challenge,
		.challenge_type = o->acme_challenge,
		.publish_alpn = publish_alpn,
		.certs_changed = republish,
		.arg = c,
	};
	c->acme = dv_acme_new(&ac, err);
	if (!c->acme)
		goto fail;
	for (size_t i = 0; i < o->ncerts; i++) {
		/* "HOST=CERT,KEY", checked by the CLI */
		char *spec = dv_xstrdup(o->certs[i]);
		char *eq = strchr(spec, '='), *comma = eq ? strchr(eq, ',') : NULL;
		if (!comma) {
			*err = dv_xasprintf("--cert %s: expected HOST=CERT,KEY", o->certs[i]);
			free(spec);
			goto fail;
		}
		*eq = *comma = '\0';
		dv_acme_set_user_cert(c->acme, spec, eq + 1, comma + 1);
		c->flags = dv_xrealloc(c->flags, (c->nflags + 1) * sizeof *c->flags);
		c->flags[c->nflags++] = (struct user_cert){dv_xstrdup(spec), dv_xstrdup(eq + 1), dv_xstrdup(comma + 1), 0};
		free(spec);
	}
	republish(c);
	return c;
fail:
	dv_daemon_certs_free(c);
	return NULL;
}

void dv_daemon_certs_free(struct dv_daemon_certs *c)
{
	if (!c)
		return;
	dv_acme_free(c->acme);
	dv_tls_free(c->tls);
	user_certs_free(c->flags, c->nflags);
	user_certs_free(c->compose, c->ncompose);
	free(c);
}

struct dv_tls *dv_daemon_certs_tls(struct dv_daemon_certs *c)
{
	return c->tls;
}

void dv_daemon_certs_domains(void *arg, const struct dv_engine_domain *domains, size_t n)
{
	struct dv_daemon_certs *c = arg;
	const char **hosts = dv_xcalloc(n + 1, sizeof *hosts);
	struct user_cert *now = dv_xcalloc(n + 1, sizeof *now);
	size_t nnow = 0;
	bool changed = false;
	for (size_t i = 0; i < n; i++) {
		hosts[i] = domains[i].host;
		if (!domains[i].tls_cert)
			continue;
		const struct user_cert *old = user_find(c->compose, c->ncompose, domains[i].host);
		int64_t mtime = files_mtime(domains[i].tls_cert, domains[i].tls_key);
		if (!old || strcmp(old->cert, domains[i].tls_cert) != 0 || strcmp(old->key, domains[i].tls_key) != 0 ||
		    old->mtime != mtime) {
			dv_acme_set_user_cert(c->acme, domains[i].host, domains[i].tls_cert, domains[i].tls_key);
			changed = true;
		}
		now[nnow++] = (struct user_cert){dv_xstrdup(domains[i].host), dv_xstrdup(domains[i].tls_cert),
		                                 dv_xstrdup(domains[i].tls_key), mtime};
	}
	/* x-davit.tls removed: back to the --cert flag for that host, else ACME */
	for (size_t i = 0; i < c->ncompose; i++) {
		if (user_find(now, nnow, c->compose[i].host))
			continue;
		const struct user_cert *f = user_find(c->flags, c->nflags, c->compose[i].host);
		dv_acme_set_user_cert(c->acme, c->compose[i].host, f ? f->cert : NULL, f ? f->key : NULL);
		changed = true;
	}
	user_certs_free(c->compose, c->ncompose);
	c->compose = now;
	c->ncompose = nnow;
	if (dv_acme_set_domains(c->acme, hosts, n))
		changed = true;
	free(hosts);
	if (changed)
		republish(c); /* certificates on disk for new domains are served; departed ones are not */
}

void dv_daemon_certs_report(struct dv_daemon_certs *c, bool json, struct dv_strbuf *out)
{
	dv_acme_report(c->acme, json, out);
}

/* The ACME exchange (RFC 8555) over libcurl, blocking: it runs on the
 * manager's own thread, never on the control loop. */
#include "acme/acme.h"

#include "core/alloc.h"
#include "core/jsonparse.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/util.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define POLL_LIMIT 90     /* polls of an authorization or order (about 90 s at 1 s) */
#define NONCE_RETRIES 5   /* badNonce is retried with the fresh nonce (RFC 8555 6.5) */

struct response {
	long status;
	struct dv_strbuf body;
	char *location, *nonce, *retry_after;
};

static void response_dispose(struct response *r)
{
	dv_strbuf_dispose(&r->body);
	free(r->location);
	free(r->nonce);
	free(r->retry_after);
	memset(r, 0, sizeof *r);
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct response *r = arg;
	if (r->body.len + size * n > 4 * 1024 * 1024)
		return 0; /* no ACME answer is this large */
	dv_strbuf_append(&r->body, data, size * n);
	return size * n;
}

static char *header_value(const char *line, size_t len, const char *name)
{
	size_t nl = strlen(name);
	if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return NULL;
	const char *v = line + nl + 1, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	return dv_xstrndup(v, (size_t)(end - v));
}

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
	struct response *r = arg;
	size_t len = size * n;
	char *v;
	if ((v = header_value(line, len, "location"))) {
		free(r->location);
		r->location = v;
	} else if ((v = header_value(line, len, "replay-nonce"))) {
		free(r->nonce);
		r->nonce = v;
	} else if ((v = header_value(line, len, "retry-after"))) {
		free(r->retry_after);
		r->retry_after = v;
	}
	return len;
}

/* libcurl calls this about once a second during a transfer: a stopping
 * manager aborts it (ca->sleep(arg, 0) answers "go on?" without waiting). */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct dv_acme_ca *ca = arg;
	return ca->sleep(ca->arg, 0) ? 0 : 1;
}

/* One HTTP request. method "GET", "HEAD" or "POST" (body as JOSE JSON). */
static int http(struct dv_acme_ca *ca, const char *method, const char *url, const char *body, struct response *r,
                char **err)
{
	memset(r, 0, sizeof *r);
	dv_strbuf_init(&r->body);
	CURL *curl = curl_easy_init();
	if (!curl) {
		*err = dv_xstrdup("cannot initialise libcurl");
		return -1;
	}
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *headers = NULL;
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "davit-acme/0.1");
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, ca);
	if (ca->ca_bundle)
		curl_easy_setopt(curl, CURLOPT_CAINFO, ca->ca_bundle);
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "POST") == 0) {
		headers = curl_slist_append(headers, "Content-Type: application/jose+json");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	}
	CURLcode rc = curl_easy_perform(curl);
	if (rc == CURLE_OK)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
	else
		*err = dv_xasprintf("%s %s: %s", method, url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	if (rc != CURLE_OK) {
		response_dispose(r);
		return -1;
	}
	return 0;
}

static struct dv_jv *parse_json(const struct response *r, const char *what, char **err)
{
	char *perr = NULL;
	struct dv_jv *j = dv_jv_parse(r->body.data ? r->body.data : "", r->body.len, &perr);
	if (!j || j->type != DV_JV_OBJECT) {
		*err = dv_xasprintf("%s: the CA sent no JSON object (%s)", what, perr ? perr : "not an object");
		dv_jv_free(j);
		j = NULL;
	}
	free(perr);
	return j;
}

/* "what: HTTP 403 urn:...:unauthorized: detail" from a problem document. */
static char *problem(const struct response *r, const char *what)
{
	char *perr = NULL;
	struct dv_jv *j = dv_jv_parse(r->body.data ? r->body.data : "", r->body.len, &perr);
	free(perr);
	char *msg = dv_xasprintf("%s: HTTP %ld %s: %s", what, r->status, dv_jv_str(j, "type", "(no problem type)"),
	                         dv_jv_str(j, "detail", r->body.data && r->body.len < 300 ? r->body.data : ""));
	dv_jv_free(j);
	return msg;
}

static bool is_bad_nonce(const struct response *r)
{
	return r->status == 400 && r->body.data && strstr(r->body.data, "urn:ietf:params:acme:error:badNonce");
}

static int directory(struct dv_acme_ca *ca, char **err)
{
	if (ca->new_order_url)
		return 0;
	struct response r;
	if (http(ca, "GET", ca->directory_url, NULL, &r, err) != 0)
		return -1;
	int rc = -1;
	struct dv_jv *j = NULL;
	if (r.status != 200) {
		*err = problem(&r, "directory");
	} else if ((j = parse_json(&r, "directory", err))) {
		const char *nn = dv_jv_str(j, "newNonce", NULL), *na = dv_jv_str(j, "newAccount", NULL),
		           *no = dv_jv_str(j, "newOrder", NULL);
		if (!nn || !na || !no) {
			*err = dv_xasprintf("directory %s lacks newNonce/newAccount/newOrder", ca->directory_url);
		} else {
			ca->new_nonce_url = dv_xstrdup(nn);
			ca->new_account_url = dv_xstrdup(na);
			ca->new_order_url = dv_xstrdup(no);
			rc = 0;
		}
	}
	dv_jv_free(j);
	response_dispose(&r);
	return rc;
}

static int fresh_nonce(struct dv_acme_ca *ca, char **err)
{
	if (ca->nonce)
		return 0;
	struct response r;
	if (http(ca, "HEAD", ca->new_nonce_url, NULL, &r, err) != 0)
		return -1;
	if (!r.nonce) {
		*err = dv_xasprintf("newNonce: HTTP %ld without a Replay-Nonce", r.status);
		response_dispose(&r);
		return -1;
	}
	ca->nonce = r.nonce;
	r.nonce = NULL;
	response_dispose(&r);
	return 0;
}

/* A signed POST (payload "" = POST-as-GET). use_jwk: newAccount (no kid yet). */
static int post(struct dv_acme_ca *ca, const char *url, const char *payload, bool use_jwk, struct response *r,
                char **err)
{
	for (int attempt = 0;; attempt++) {
		if (fresh_nonce(ca, err) != 0)
			return -1;
		char *jws = dv_acme_jws(ca->account_key, use_jwk ? NULL : ca->kid, ca->nonce, url, payload);
		dv_free(&ca->nonce); /* each nonce is used once */
		if (!jws) {
			*err = dv_xstrdup("cannot sign the request (JWS ES256)");
			return -1;
		}
		int rc = http(ca, "POST", url, jws, r, err);
		free(jws);
		if (rc != 0)
			return -1;
		if (r->nonce) {
			ca->nonce = r->nonce;
			r->nonce = NULL;
		}
		if (!is_bad_nonce(r) || attempt + 1 >= NONCE_RETRIES)
			return 0;
		response_dispose(r);
	}
}

static int account(struct dv_acme_ca *ca, char **err)
{
	if (ca->kid)
		return 0;
	struct dv_strbuf p;
	dv_strbuf_init(&p);
	dv_strbuf_puts(&p, "{\"termsOfServiceAgreed\":true");
	if (ca->email && *ca->email) {
		char *mailto = dv_xasprintf("mailto:%s", ca->email);
		dv_strbuf_puts(&p, ",\"contact\":[");
		dv_json_escape(&p, mailto, strlen(mailto));
		dv_strbuf_puts(&p, "]");
		free(mailto);
	}
	dv_strbuf_puts(&p, "}");
	struct response r;
	int rc = post(ca, ca->new_account_url, p.data, true, &r, err);
	dv_strbuf_dispose(&p);
	if (rc != 0)
		return -1;
	rc = -1;
	if (r.status != 200 && r.status != 201)
		*err = problem(&r, "newAccount");
	else if (!r.location)
		*err = dv_xstrdup("newAccount: the CA sent no account URL (Location)");
	else {
		ca->kid = r.location;
		r.location = NULL;
		rc = 0;
	}
	response_dispose(&r);
	return rc;
}

static uint64_t retry_after_ms(const struct response *r)
{
	uint64_t s;
	if (r->retry_after && dv_parse_uint(r->retry_after, 60, &s) == 0 && s > 0)
		return s * 1000;
	return 1000;
}

/* POST-as-GET `url` until its "status" is one of `done` (returns the object)
 * or "invalid" (error). */
static struct dv_jv *poll_status(struct dv_acme_ca *ca, const char *url, const char *what, const char *done,
                                 char **err)
{
	for (int i = 0; i < POLL_LIMIT; i++) {
		struct response r;
		if (post(ca, url, "", false, &r, err) != 0)
			return NULL;
		if (r.status != 200) {
			*err = problem(&r, what);
			response_dispose(&r);
			return NULL;
		}
		struct dv_jv *j = parse_json(&r, what, err);
		uint64_t wait = retry_after_ms(&r);
		response_dispose(&r);
		if (!j)
			return NULL;
		const char *st = dv_jv_str(j, "status", "");
		if (strcmp(st, done) == 0)
			return j;
		if (strcmp(st, "invalid") == 0) {
			/* The challenge's error says why validation failed. */
			const char *detail = NULL;
			const struct dv_jv *chs = dv_jv_get(j, "challenges");
			for (size_t k = 0; chs && chs->type == DV_JV_ARRAY && k < chs->len; k++) {
				const struct dv_jv *e = dv_jv_get(&chs->items[k], "error");
				if (e)
					detail = dv_jv_str(e, "detail", NULL);
			}
			const struct dv_jv *e = dv_jv_get(j, "error");
			if (!detail && e)
				detail = dv_jv_str(e, "detail", NULL);
			*err = dv_xasprintf("%s is invalid: %s", what, detail ? detail : "(no detail from the CA)");
			dv_jv_free(j);
			return NULL;
		}
		dv_jv_free(j);
		if (!ca->sleep(ca->arg, wait)) {
			*err = dv_xasprintf("%s: stopped", what);
			return NULL;
		}
	}
	*err = dv_xasprintf("%s did not become %s in time", what, done);
	return NULL;
}

static int authorize(struct dv_acme_ca *ca, const char *authz_url, char **err)
{
	struct response r;
	if (post(ca, authz_url, "", false, &r, err) != 0)
		return -1;
	if (r.status != 200) {
		*err = problem(&r, "authorization");
		response_dispose(&r);
		return -1;
	}
	struct dv_jv *j = parse_json(&r, "authorization", err);
	response_dispose(&r);
	if (!j)
		return -1;
	int rc = -1;
	if (strcmp(dv_jv_str(j, "status", ""), "valid") == 0) {
		dv_jv_free(j);
		return 0; /* reused from an earlier order */
	}
	const char *token = NULL, *ch_url = NULL;
	const char *type = ca->challenge_type ? ca->challenge_type : "http-01";
	bool alpn = strcmp(type, "tls-alpn-01") == 0;
	const char *domain = dv_jv_str(dv_jv_get(j, "identifier"), "value", NULL);
	const struct dv_jv *chs = dv_jv_get(j, "challenges");
	for (size_t i = 0; chs && chs->type == DV_JV_ARRAY && i < chs->len; i++) {
		if (strcmp(dv_jv_str(&chs->items[i], "type", ""), type) == 0) {
			token = dv_jv_str(&chs->items[i], "token", NULL);
			ch_url = dv_jv_str(&chs->items[i], "url", NULL);
		}
	}
	if (!token || !ch_url || (alpn && !domain)) {
		*err = dv_xasprintf("the CA offered no %s challenge", type);
		dv_jv_free(j);
		return -1;
	}
	char *dom = domain ? dv_xstrdup(domain) : NULL;
	char *thumb = dv_acme_thumbprint(ca->account_key);
	char *keyauth = dv_xasprintf("%s.%s", token, thumb ? thumb : "");
	char *tok = dv_xstrdup(token), *url = dv_xstrdup(ch_url);
	dv_jv_free(j);
	free(thumb);
	if (alpn)
		ca->publish_alpn(ca->arg, dom, keyauth);
	else
		ca->publish_challenge(ca->arg, tok, keyauth);
	/* Tell the CA we are ready; then it fetches http://DOMAIN/.well-known/acme-challenge/TOKEN
	 * (or connects to DOMAIN:443 with ALPN acme-tls/1). */
	if (post(ca, url, "{}", false, &r, err) == 0) {
		if (r.status != 200)
			*err = problem(&r, "challenge");
		else
			rc = 0;
		response_dispose(&r);
	}
	if (rc == 0) {
		struct dv_jv *done = poll_status(ca, authz_url, "authorization", "valid", err);
		rc = done ? 0 : -1;
		dv_jv_free(done);
	}
	if (alpn)
		ca->publish_alpn(ca->arg, dom, NULL);
	else
		ca->publish_challenge(ca->arg, tok, NULL);
	free(dom);
	free(tok);
	free(url);
	free(keyauth);
	return rc;
}

int dv_acme_obtain(struct dv_acme_ca *ca, const char *domain, char **chain_pem, struct evp_pkey_st **cert_key,
                   char **err)
{
	*chain_pem = NULL;
	*cert_key = NULL;
	if (directory(ca, err) != 0 || account(ca, err) != 0)
		return -1;
	struct dv_strbuf p;
	dv_strbuf_init(&p);
	dv_strbuf_puts(&p, "{\"identifiers\":[{\"type\":\"dns\",\"value\":");
	dv_json_escape(&p, domain, strlen(domain));
	dv_strbuf_puts(&p, "}]}");
	struct response r;
	int rc = post(ca, ca->new_order_url, p.data, false, &r, err);
	dv_strbuf_dispose(&p);
	if (rc != 0)
		return -1;
	if (r.status == 400 && r.body.data && strstr(r.body.data, "accountDoesNotExist")) {
		dv_free(&ca->kid); /* the CA forgot us (pebble restarts): register again next time */
	}
	if (r.status != 201) {
		*err = problem(&r, "newOrder");
		response_dispose(&r);
		return -1;
	}
	char *order_url = r.location ? dv_xstrdup(r.location) : NULL;
	struct dv_jv *order = parse_json(&r, "order", err);
	response_dispose(&r);
	struct dv_jv *final = NULL;
	struct evp_pkey_st *key = NULL;
	char *csr = NULL;
	rc = -1;
	if (!order || !order_url) {
		if (!*err)
			*err = dv_xstrdup("newOrder: the CA sent no order URL (Location)");
		goto out;
	}
	const struct dv_jv *authzs = dv_jv_get(order, "authorizations");
	for (size_t i = 0; authzs && authzs->type == DV_JV_ARRAY && i < authzs->len; i++) {
		if (authzs->items[i].type == DV_JV_STRING && authorize(ca, authzs->items[i].string, err) != 0)
			goto out;
	}
	const char *finalize = dv_jv_str(order, "finalize", NULL);
	if (!finalize) {
		*err = dv_xstrdup("order: no finalize URL");
		goto out;
	}
	key = dv_acme_key_new();
	if (!key) {
		*err = dv_xstrdup("cannot generate a P-256 key");
		goto out;
	}
	const char *names[] = {domain};
	csr = dv_acme_csr(key, names, 1, err);
	if (!csr)
		goto out;
	char *payload = dv_xasprintf("{\"csr\":\"%s\"}", csr);
	rc = post(ca, finalize, payload, false, &r, err);
	free(payload);
	if (rc != 0)
		goto out;
	rc = -1;
	if (r.status != 200) {
		*err = problem(&r, "finalize");
		response_dispose(&r);
		goto out;
	}
	response_dispose(&r);
	final = poll_status(ca, order_url, "order", "valid", err);
	const char *cert_url = final ? dv_jv_str(final, "certificate", NULL) : NULL;
	if (!final)
		goto out;
	if (!cert_url) {
		*err = dv_xstrdup("order is valid but has no certificate URL");
		goto out;
	}
	if (post(ca, cert_url, "", false, &r, err) != 0)
		goto out;
	if (r.status != 200 || !r.body.data || !strstr(r.body.data, "-----BEGIN CERTIFICATE-----")) {
		*err = problem(&r, "certificate download");
		response_dispose(&r);
		goto out;
	}
	*chain_pem = dv_strbuf_steal(&r.body);
	response_dispose(&r);
	*cert_key = key;
	key = NULL;
	rc = 0;
out:
	dv_acme_key_free(key);
	free(csr);
	free(order_url);
	dv_jv_free(order);
	dv_jv_free(final);
	return rc;
}

void dv_acme_ca_dispose(struct dv_acme_ca *ca)
{
	dv_free(&ca->new_nonce_url);
	dv_free(&ca->new_account_url);
	dv_free(&ca->new_order_url);
	dv_free(&ca->kid);
	dv_free(&ca->nonce);
}

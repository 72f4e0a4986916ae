/* Unit tests for the proxy's TLS certificate sets and challenge map
 * (src/proxy/tls.c): names from certificates, exact and wildcard lookups,
 * load errors, directory layout, ACME tokens. Certificates are made here
 * with OpenSSL (self-signed P-256). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/tls.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/davit-tls-unit-XXXXXX";

/* Writes DIR/NAME/{fullchain,privkey}.pem: a self-signed certificate with
 * subjectAltName DNS entries `sans` (comma-separated), or only a CN. */
static void make_cert(const char *name, const char *cn, const char *sans)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	mkdir(path, 0700);
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_ASC, (const unsigned char *)cn,
	                           -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	if (sans) {
		X509V3_CTX ctx;
		X509V3_set_ctx_nodb(&ctx);
		X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, sans);
		assert_non_null(e);
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	X509_set_pubkey(x, k);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	snprintf(path, sizeof path, "%s/%s/fullchain.pem", dir, name);
	FILE *f = fopen(path, "w");
	PEM_write_X509(f, x);
	fclose(f);
	snprintf(path, sizeof path, "%s/%s/privkey.pem", dir, name);
	f = fopen(path, "w");
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	make_cert("a", "a.test", "DNS:a.test,DNS:alias.test");
	make_cert("wild", "wild", "DNS:*.wild.test");
	make_cert("cn-only", "cn.test", NULL);
	return 0;
}

static int teardown(void **state)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static bool has(const struct dv_tls_certset *s, const char *host)
{
	return dv_tls_certset_has_host(s, host, strlen(host));
}

static void test_names_and_lookup(void **state)
{
	char *err = NULL;
	struct dv_tls *tls = dv_tls_new(0, &err);
	assert_non_null(tls);
	struct dv_tls_certset *set = dv_tls_certset_new();
	assert_int_equal(dv_tls_certset_add_dir(tls, set, dir, &err), 3);
	assert_int_equal(dv_tls_certset_count(set), 3);
	dv_tls_publish(tls, set); /* sorts the names */
	struct dv_tls_certset *snap = NULL;
	unsigned gen = 0;
	dv_tls_sync(tls, &snap, &gen);
	assert_ptr_equal(snap, set);
	assert_true(has(snap, "a.test"));
	assert_true(has(snap, "alias.test"));
	assert_true(has(snap, "A.Test"));
	assert_true(has(snap, "a.test:8443")); /* a Host header's port is ignored */
	assert_true(has(snap, "a.test."));     /* so is a trailing dot */
	assert_true(has(snap, "x.wild.test"));
	assert_false(has(snap, "wild.test"));   /* a wildcard does not cover its own domain */
	assert_false(has(snap, "y.x.wild.test")); /* nor two labels */
	assert_true(has(snap, "cn.test"));      /* no SAN: the common name */
	assert_false(has(snap, "cn-only"));
	assert_false(has(snap, "b.test"));
	assert_false(has(snap, ""));
	/* a new set replaces it; the worker's snapshot stays valid until it syncs */
	struct dv_tls_certset *next = dv_tls_certset_new();
	char cert[600], key[600];
	snprintf(cert, sizeof cert, "%s/a/fullchain.pem", dir);
	snprintf(key, sizeof key, "%s/a/privkey.pem", dir);
	assert_int_equal(dv_tls_certset_add_files(tls, next, "only.test", cert, key, &err), 0);
	dv_tls_publish(tls, next);
	assert_true(has(snap, "a.test"));
	dv_tls_sync(tls, &snap, &gen);
	assert_ptr_equal(snap, next);
	assert_true(has(snap, "only.test")); /* an explicit host replaces the certificate's names */
	assert_false(has(snap, "a.test"));
	dv_tls_certset_unref(snap);
	dv_tls_free(tls);
}

static void test_load_errors(void **state)
{
	char *err = NULL;
	struct dv_tls *tls = dv_tls_new(0, &err);
	struct dv_tls_certset *set = dv_tls_certset_new();
	char cert[600], key[600], missing[600];
	snprintf(cert, sizeof cert, "%s/a/fullchain.pem", dir);
	snprintf(key, sizeof key, "%s/wild/privkey.pem", dir);
	snprintf(missing, sizeof missing, "%s/nope.pem", dir);
	assert_int_equal(dv_tls_certset_add_files(tls, set, NULL, missing, key, &err), -1);
	assert_non_null(strstr(err, "nope.pem: cannot load the certificate chain"));
	free(err);
	err = NULL;
	assert_int_equal(dv_tls_certset_add_files(tls, set, NULL, cert, key, &err), -1);
	assert_non_null(strstr(err, "does not match"));
	free(err);
	err = NULL;
	assert_int_equal(dv_tls_certset_add_files(tls, set, NULL, cert, missing, &err), -1);
	assert_non_null(strstr(err, "cannot load the private key"));
	free(err);
	err = NULL;
	assert_int_equal(dv_tls_certset_count(set), 0);
	assert_int_equal(dv_tls_certset_add_dir(tls, set, "/nonexistent/davit-certs", &err), 0);
	dv_tls_certset_unref(set);
	dv_tls_free(tls);
}

static void test_challenges(void **state)
{
	char *err = NULL;
	struct dv_tls *tls = dv_tls_new(0, &err);
	assert_null(dv_tls_challenge(tls, "tok", 3));
	dv_tls_set_challenge(tls, "tok", "tok.thumb");
	dv_tls_set_challenge(tls, "other", "other.thumb");
	char *ka = dv_tls_challenge(tls, "tok", 3);
	assert_string_equal(ka, "tok.thumb");
	free(ka);
	assert_null(dv_tls_challenge(tls, "to", 2)); /* exact token only */
	dv_tls_set_challenge(tls, "tok", "tok.new");
	ka = dv_tls_challenge(tls, "tok", 3);
	assert_string_equal(ka, "tok.new");
	free(ka);
	dv_tls_set_challenge(tls, "tok", NULL);
	assert_null(dv_tls_challenge(tls, "tok", 3));
	ka = dv_tls_challenge(tls, "other", 5);
	assert_string_equal(ka, "other.thumb");
	free(ka);
	dv_tls_free(tls); /* frees the remaining token */
}

static int answer(struct dv_tls *tls, const struct dv_tls_certset *set, const char *host, const char *path,
                  unsigned port, struct dv_strbuf *head, struct dv_strbuf *body)
{
	dv_strbuf_reset(head);
	dv_strbuf_reset(body);
	return dv_tls_http_answer(tls, set, host, host ? strlen(host) : 0, path, strlen(path), port, head, body);
}

static void test_http_answers(void **state)
{
	char *err = NULL;
	struct dv_tls *tls = dv_tls_new(0, &err);
	struct dv_tls_certset *set = dv_tls_certset_new();
	assert_int_equal(dv_tls_certset_add_dir(tls, set, dir, &err), 3);
	dv_tls_publish(tls, set);
	struct dv_strbuf h, b;
	dv_strbuf_init(&h);
	dv_strbuf_init(&b);
	/* redirects: same path and query, Host's port dropped, :443 implied */
	assert_int_equal(answer(tls, set, "a.test:80", "/x/y?q=1", 8443, &h, &b), 301);
	assert_non_null(strstr(h.data, "HTTP/1.1 301 Moved Permanently\r\n"));
	assert_non_null(strstr(h.data, "\r\nLocation: https://a.test:8443/x/y?q=1\r\n"));
	assert_int_equal(answer(tls, set, "z.wild.test", "/", 443, &h, &b), 301);
	assert_non_null(strstr(h.data, "\r\nLocation: https://z.wild.test/\r\n"));
	assert_int_equal(answer(tls, set, "nocert.test", "/", 443, &h, &b), 0); /* no certificate: proxied */
	assert_int_equal(answer(tls, set, NULL, "/", 443, &h, &b), 0);
	assert_int_equal(answer(tls, set, "a.test", "/", 0, &h, &b), 0); /* redirect off */
	/* challenges: answered with the key authorization on any host, never redirected */
	dv_tls_set_challenge(tls, "tok-1", "tok-1.thumb");
	assert_int_equal(answer(tls, set, "a.test", "/.well-known/acme-challenge/tok-1", 443, &h, &b), 200);
	assert_string_equal(b.data, "tok-1.thumb");
	assert_non_null(strstr(h.data, "HTTP/1.1 200 OK\r\n"));
	assert_int_equal(answer(tls, set, "other.test", "/.well-known/acme-challenge/tok-1?x", 0, &h, &b), 200);
	assert_int_equal(answer(tls, set, "a.test", "/.well-known/acme-challenge/nope", 443, &h, &b), 0);
	assert_int_equal(answer(tls, set, "a.test", "/.well-known/acme-challenge/", 443, &h, &b), 0);
	assert_int_equal(answer(tls, set, "a.test", "/.well-known/acme-challengeX", 443, &h, &b), 301);
	dv_strbuf_dispose(&h);
	dv_strbuf_dispose(&b);
	dv_tls_free(tls);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_and_lookup),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_challenges),
		cmocka_unit_test(test_http_answers),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

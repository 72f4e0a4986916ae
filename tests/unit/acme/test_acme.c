/* Unit tests for the ACME client's pure parts (src/acme/jws.c): base64url,
 * keys, JWK thumbprint, JWS ES256, CSR, certificate facts, scheduling. The
 * expected JWK and thumbprint of the fixed key were computed independently
 * (openssl ec -text and Python's hashlib). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "acme/acme.h"
#include "core/jsonparse.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char fixed_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghOZjoWWAhJUChKNh\n"
	"ZW8C5SLq828vSyBV/X11M74+8EuhRANCAARLw872/vgc0vW3Eop1lmOzlo61toiF\n"
	"BvJ3iJKJlNH1w3MOkGovA1WBOZivJQiZwQHVA36EXt1uif9piOqMhYYL\n"
	"-----END PRIVATE KEY-----\n";
static const char fixed_jwk[] = "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"S8PO9v74HNL1txKKdZZjs5aOtbaIhQbyd4iSiZTR9cM\","
                                "\"y\":\"cw6Qai8DVYE5mK8lCJnBAdUDfoRe3W6J_2mI6oyFhgs\"}";
static const char fixed_thumbprint[] = "MgpkpvBPnZPkV_Cr1wXfwt1ybg_q-zEjM8OrsZQ5-Mo";

static EVP_PKEY *fixed_key(void)
{
	BIO *b = BIO_new_mem_buf(fixed_key_pem, -1);
	EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	assert_non_null(k);
	return k;
}

static void check_b64(const void *data, size_t len, const char *want)
{
	char *got = dv_acme_b64url(data, len);
	assert_string_equal(got, want);
	unsigned char back[64];
	assert_int_equal(dv_acme_b64url_decode(got, strlen(got), back), (long)len);
	assert_memory_equal(back, data, len);
	free(got);
}

static void test_b64url(void **state)
{
	check_b64("", 0, "");
	check_b64("f", 1, "Zg");
	check_b64("fo", 2, "Zm8");
	check_b64("foo", 3, "Zm9v");
	check_b64("foobar", 6, "Zm9vYmFy");
	const unsigned char url_chars[] = {0xfb, 0xff, 0xbf};
	check_b64(url_chars, sizeof url_chars, "-_-_"); /* '+' and '/' never appear */
	unsigned char out[16];
	assert_int_equal(dv_acme_b64url_decode("Zg==", 4, out), 1); /* padding is tolerated */
	assert_int_equal(dv_acme_b64url_decode("Z", 1, out), -1);   /* impossible length */
	assert_int_equal(dv_acme_b64url_decode("Zm9*", 4, out), -1); /* not base64 */
	assert_int_equal(dv_acme_b64url_decode("Zh", 2, out), -1);   /* non-zero trailing bits */
}

static void test_jwk_and_thumbprint(void **state)
{
	EVP_PKEY *k = fixed_key();
	char *jwk = dv_acme_jwk(k), *tp = dv_acme_thumbprint(k);
	assert_string_equal(jwk, fixed_jwk);
	assert_string_equal(tp, fixed_thumbprint);
	free(jwk);
	free(tp);
	EVP_PKEY_free(k);
}

/* Decodes a base64url member of a JSON object into a NUL-terminated buffer. */
static long member_b64(const struct dv_jv *j, const char *key, unsigned char *out)
{
	const char *v = dv_jv_str(j, key, NULL);
	assert_non_null(v);
	long n = dv_acme_b64url_decode(v, strlen(v), out);
	assert_true(n >= 0);
	out[n] = '\0';
	return n;
}

static void verify_jws(EVP_PKEY *k, const char *jws, const char *kid, const char *payload)
{
	char *err = NULL;
	struct dv_jv *j = dv_jv_parse(jws, strlen(jws), &err);
	assert_non_null(j);
	unsigned char hdr[1024], body[1024], sig[128];
	member_b64(j, "protected", hdr);
	member_b64(j, "payload", body);
	assert_string_equal((char *)body, payload);
	struct dv_jv *h = dv_jv_parse((char *)hdr, strlen((char *)hdr), &err);
	assert_non_null(h);
	assert_string_equal(dv_jv_str(h, "alg", ""), "ES256");
	assert_string_equal(dv_jv_str(h, "nonce", ""), "n0nce");
	assert_string_equal(dv_jv_str(h, "url", ""), "https://ca.test/acct");
	if (kid) {
		assert_string_equal(dv_jv_str(h, "kid", ""), kid);
		assert_null(dv_jv_get(h, "jwk"));
	} else {
		assert_null(dv_jv_get(h, "kid"));
		assert_string_equal(dv_jv_str(dv_jv_get(h, "jwk"), "x", ""), "S8PO9v74HNL1txKKdZZjs5aOtbaIhQbyd4iSiZTR9cM");
	}
	/* The signature is raw r||s: rebuild DER and verify over "protected.payload". */
	assert_int_equal(member_b64(j, "signature", sig), 64);
	ECDSA_SIG *es = ECDSA_SIG_new();
	ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
	unsigned char *der = NULL;
	int derlen = i2d_ECDSA_SIG(es, &der);
	char input[2048];
	snprintf(input, sizeof input, "%s.%s", dv_jv_str(j, "protected", ""), dv_jv_str(j, "payload", ""));
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k), 1);
	assert_int_equal(EVP_DigestVerify(md, der, (size_t)derlen, (unsigned char *)input, strlen(input)), 1);
	/* ...and a changed payload does not verify. */
	input[strlen(input) - 1] ^= 1;
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k), 1);
	assert_int_not_equal(EVP_DigestVerify(md, der, (size_t)derlen, (unsigned char *)input, strlen(input)), 1);
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	dv_jv_free(h);
	dv_jv_free(j);
}

static void test_jws_es256(void **state)
{
	EVP_PKEY *k = fixed_key();
	char *a = dv_acme_jws(k, NULL, "n0nce", "https://ca.test/acct", "{\"termsOfServiceAgreed\":true}");
	verify_jws(k, a, NULL, "{\"termsOfServiceAgreed\":true}");
	char *b = dv_acme_jws(k, "https://ca.test/acct/1", "n0nce", "https://ca.test/acct", "");
	verify_jws(k, b, "https://ca.test/acct/1", ""); /* POST-as-GET: empty payload */
	free(a);
	free(b);
	EVP_PKEY_free(k);
}

static void test_ecdsa_der_to_raw(void **state)
{
	/* SEQUENCE { INTEGER 0x01, INTEGER 0x00 0x80 (a leading zero keeps it positive) } */
	const unsigned char der[] = {0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80};
	unsigned char raw[64];
	assert_int_equal(dv_acme_ecdsa_der_to_raw(der, sizeof der, raw), 0);
	for (int i = 0; i < 31; i++) {
		assert_int_equal(raw[i], 0);
		assert_int_equal(raw[32 + i], 0);
	}
	assert_int_equal(raw[31], 1);
	assert_int_equal(raw[63], 0x80);
	const unsigned char trailing[] = {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0xff};
	assert_int_equal(dv_acme_ecdsa_der_to_raw(trailing, sizeof trailing, raw), -1);
	const unsigned char garbage[] = {0x31, 0x00};
	assert_int_equal(dv_acme_ecdsa_der_to_raw(garbage, sizeof garbage, raw), -1);
	/* a 33-byte component does not fit P-256 */
	unsigned char big[2 + 2 + 34 + 3] = {0x30, 2 + 34 + 3, 0x02, 34, 0x00};
	memset(big + 5, 0xff, 33);
	big[38] = 0x02;
	big[39] = 0x01;
	big[40] = 0x01;
	assert_int_equal(dv_acme_ecdsa_der_to_raw(big, sizeof big, raw), -1);
}

static X509_REQ *decode_csr(const char *b64)
{
	unsigned char der[4096];
	long n = dv_acme_b64url_decode(b64, strlen(b64), der);
	assert_true(n > 0);
	const unsigned char *p = der;
	X509_REQ *req = d2i_X509_REQ(NULL, &p, n);
	assert_non_null(req);
	return req;
}

static void test_csr(void **state)
{
	EVP_PKEY *k = fixed_key();
	const char *names[] = {"app.example.com", "www.example.com"};
	char *err = NULL;
	char *csr = dv_acme_csr(k, names, 2, &err);
	assert_non_null(csr);
	X509_REQ *req = decode_csr(csr);
	assert_int_equal(X509_REQ_verify(req, k), 1);
	char cn[128];
	X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn, sizeof cn);
	assert_string_equal(cn, "app.example.com");
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	GENERAL_NAMES *sans = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
	assert_non_null(sans);
	assert_int_equal(sk_GENERAL_NAME_num(sans), 2);
	for (int i = 0; i < 2; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		assert_int_equal(g->type, GEN_DNS);
		assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.dNSName), names[i]);
	}
	GENERAL_NAMES_free(sans);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	free(csr);
	assert_null(dv_acme_csr(k, names, 0, &err));
	assert_non_null(err);
	free(err);
	EVP_PKEY_free(k);
}

static void test_key_save_load(void **state)
{
	char dir[] = "/tmp/davit-acme-unit-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof path, "%s/k.pem", dir);
	EVP_PKEY *k = dv_acme_key_new();
	assert_non_null(k);
	char *err = NULL;
	assert_int_equal(dv_acme_key_save(k, path, &err), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	EVP_PKEY *back = dv_acme_key_load(path, &err);
	assert_non_null(back);
	char *a = dv_acme_jwk(k), *b = dv_acme_jwk(back);
	assert_string_equal(a, b);
	free(a);
	free(b);
	EVP_PKEY_free(back);
	/* a file that is not a key */
	FILE *f = fopen(path, "w");
	fputs("hello\n", f);
	fclose(f);
	assert_null(dv_acme_key_load(path, &err));
	assert_non_null(strstr(err, "not a PEM private key"));
	free(err);
	err = NULL;
	unlink(path);
	assert_null(dv_acme_key_load(path, &err));
	free(err);
	rmdir(dir);
	EVP_PKEY_free(k);
}

static void test_cert_info(void **state)
{
	EVP_PKEY *k = fixed_key();
	X509 *x = X509_new();
	ASN1_INTEGER_set(X509_get_serialNumber(x), 0x1234);
	ASN1_TIME_set(X509_getm_notBefore(x), 1700000000);
	ASN1_TIME_set(X509_getm_notAfter(x), 1700000000 + 90 * 86400);
	X509_NAME_add_entry_by_NID(X509_get_issuer_name(x), NID_commonName, MBSTRING_ASC,
	                           (const unsigned char *)"Unit Test CA", -1, -1, 0);
	X509_set_pubkey(x, k);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	char path[] = "/tmp/davit-acme-cert-XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	PEM_write_X509(f, x);
	fclose(f);
	struct dv_acme_cert_info info;
	char *err = NULL;
	assert_int_equal(dv_acme_cert_info_file(path, &info, &err), 0);
	assert_int_equal(info.not_before, 1700000000);
	assert_int_equal(info.not_after, 1700000000 + 90 * 86400);
	assert_string_equal(info.issuer, "Unit Test CA");
	assert_string_equal(info.serial, "1234");
	unlink(path);
	assert_int_equal(dv_acme_cert_info_file(path, &info, &err), -1);
	free(err);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void test_renew_at(void **state)
{
	const int64_t day = 86400, t0 = 1700000000;
	/* 90 days (Let's Encrypt): 30 days before expiry */
	assert_int_equal(dv_acme_renew_at(t0, t0 + 90 * day, 30 * day), t0 + 60 * day);
	/* exactly 3x the window: still the window */
	assert_int_equal(dv_acme_renew_at(t0, t0 + 90 * day, 30 * day), t0 + 90 * day - 30 * day);
	/* 60 days: a third of the lifetime, 20 days before */
	assert_int_equal(dv_acme_renew_at(t0, t0 + 60 * day, 30 * day), t0 + 40 * day);
	/* a 6-day (short-lived) certificate: 2 days before */
	assert_int_equal(dv_acme_renew_at(t0, t0 + 6 * day, 30 * day), t0 + 4 * day);
	/* a 30-second test certificate: after 20 s */
	assert_int_equal(dv_acme_renew_at(t0, t0 + 30, 30 * day), t0 + 20);
	/* nonsense validity (not_after before not_before): due at once */
	assert_int_equal(dv_acme_renew_at(t0, t0 - 10, 30 * day), t0 - 10);
}

static void test_retry_delay(void **state)
{
	const uint64_t base = 60000, max = 6 * 3600 * 1000ull;
	assert_int_equal(dv_acme_retry_delay_ms(1, base, max, 0), 30000);
	assert_int_equal(dv_acme_retry_delay_ms(1, base, max, UINT32_MAX), 60000);
	assert_int_equal(dv_acme_retry_delay_ms(2, base, max, 0), 60000);
	assert_int_equal(dv_acme_retry_delay_ms(3, base, max, UINT32_MAX), 240000);
	uint64_t mid = dv_acme_retry_delay_ms(3, base, max, UINT32_MAX / 2);
	assert_true(mid > 120000 && mid < 240000); /* jitter spreads retries */
	/* capped */
	assert_int_equal(dv_acme_retry_delay_ms(30, base, max, UINT32_MAX), max);
	assert_int_equal(dv_acme_retry_delay_ms(30, base, max, 0), max / 2);
	/* never decreasing with the attempt for the same random */
	uint64_t prev = 0;
	for (unsigned a = 1; a < 40; a++) {
		uint64_t d = dv_acme_retry_delay_ms(a, base, max, 12345678);
		assert_true(d >= prev);
		prev = d;
	}
}

static void test_domain_eligible(void **state)
{
	assert_true(dv_acme_domain_eligible("app.example.com"));
	assert_true(dv_acme_domain_eligible("Foo.Example.com"));
	assert_true(dv_acme_domain_eligible("a-b.test"));
	assert_false(dv_acme_domain_eligible("localhost"));
	assert_false(dv_acme_domain_eligible("web.app.localhost"));
	assert_false(dv_acme_domain_eligible("x.LOCALHOST"));
	assert_false(dv_acme_domain_eligible("127.0.0.1"));
	assert_false(dv_acme_domain_eligible("1.2.3.4.5"));
	assert_false(dv_acme_domain_eligible("::1"));
	assert_false(dv_acme_domain_eligible("*.example.com"));
	assert_false(dv_acme_domain_eligible("example"));
	assert_false(dv_acme_domain_eligible(".example.com"));
	assert_false(dv_acme_domain_eligible("example.com."));
	assert_false(dv_acme_domain_eligible("app.example.com:8443"));
	assert_false(dv_acme_domain_eligible(""));
	assert_false(dv_acme_domain_eligible(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64url),
		cmocka_unit_test(test_jwk_and_thumbprint),
		cmocka_unit_test(test_jws_es256),
		cmocka_unit_test(test_ecdsa_der_to_raw),
		cmocka_unit_test(test_csr),
		cmocka_unit_test(test_key_save_load),
		cmocka_unit_test(test_cert_info),
		cmocka_unit_test(test_renew_at),
		cmocka_unit_test(test_retry_delay),
		cmocka_unit_test(test_domain_eligible),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

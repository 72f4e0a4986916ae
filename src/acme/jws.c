/* The pure building blocks of the ACME client: base64url, keys, JWK and its
 * thumbprint, JWS ES256, CSR, certificate facts, renewal scheduling. No
 * network and no global state: each function is unit-tested on its own. */
#include "acme/acme.h"

#include "core/alloc.h"
#include "core/strbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *ossl_err(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_get_error();
	if (!e)
		return "unknown OpenSSL error";
	ERR_error_string_n(e, buf, sizeof buf);
	return buf;
}

/* ------------------------------------------------------------------ base64url */

char *dv_acme_b64url(const void *data, size_t len)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = data;
	char *out = dv_xmalloc(len / 3 * 4 + 5);
	size_t o = 0, i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
	}
	out[o] = '\0';
	return out;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-' || c == '+')
		return 62;
	if (c == '_' || c == '/')
		return 63;
	return -1;
}

long dv_acme_b64url_decode(const char *text, size_t len, unsigned char *out)
{
	while (len && text[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -1;
	long o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value(text[i]);
		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits && (acc & ((1u << bits) - 1)))
		return -1; /* non-canonical trailing bits */
	return o;
}

/* ------------------------------------------------------------------ keys */

struct evp_pkey_st *dv_acme_key_new(void)
{
	return EVP_EC_gen("P-256");
}

void dv_acme_key_free(struct evp_pkey_st *key)
{
	EVP_PKEY_free(key);
}

int dv_acme_key_save(struct evp_pkey_st *key, const char *path, char **err)
{
	BIO *bio = BIO_new(BIO_s_mem());
	if (!bio || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1) {
		BIO_free(bio);
		*err = dv_xasprintf("%s: cannot encode the key: %s", path, ossl_err());
		return -1;
	}
	char *pem;
	long len = BIO_get_mem_data(bio, &pem);
	int rc = dv_acme_write_file(path, pem, (size_t)len, 0600, err);
	OPENSSL_cleanse(pem, (size_t)len);
	BIO_free(bio);
	return rc;
}

int dv_acme_write_file(const char *path, const void *data, size_t len, unsigned mode, char **err)
{
	char *tmp = dv_xasprintf("%s.tmp", path);
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
	int rc = -1;
	if (fd == -1) {
		*err = dv_xasprintf("%s: %s", tmp, strerror(errno));
	} else {
		if (write(fd, data, len) != (ssize_t)len || fsync(fd) != 0)
			*err = dv_xasprintf("%s: write failed: %s", tmp, strerror(errno));
		else if (rename(tmp, path) != 0)
			*err = dv_xasprintf("%s: %s", path, strerror(errno));
		else
			rc = 0;
		close(fd);
		if (rc != 0)
			unlink(tmp);
	}
	free(tmp);
	return rc;
}

struct evp_pkey_st *dv_acme_key_load(const char *path, char **err)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		*err = dv_xasprintf("%s: %s", path, strerror(errno));
		return NULL;
	}
	EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!key)
		*err = dv_xasprintf("%s: not a PEM private key: %s", path, ossl_err());
	return key;
}

/* ------------------------------------------------------------------ JWK, JWS */

static char *coord_b64(EVP_PKEY *key, const char *param)
{
	BIGNUM *bn = NULL;
	if (EVP_PKEY_get_bn_param(key, param, &bn) != 1)
		return NULL;
	unsigned char raw[32];
	int ok = BN_bn2binpad(bn, raw, sizeof raw);
	BN_free(bn);
	return ok == 32 ? dv_acme_b64url(raw, sizeof raw) : NULL;
}

char *dv_acme_jwk(struct evp_pkey_st *key)
{
	char *x = coord_b64(key, OSSL_PKEY_PARAM_EC_PUB_X), *y = coord_b64(key, OSSL_PKEY_PARAM_EC_PUB_Y);
	char *jwk = NULL;
	if (x && y)
		jwk = dv_xasprintf("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	free(x);
	free(y);
	return jwk;
}

char *dv_acme_thumbprint(struct evp_pkey_st *key)
{
	char *jwk = dv_acme_jwk(key);
	if (!jwk)
		return NULL;
	unsigned char md[32];
	unsigned int mdlen = 0;
	int ok = EVP_Digest(jwk, strlen(jwk), md, &mdlen, EVP_sha256(), NULL);
	free(jwk);
	return ok == 1 ? dv_acme_b64url(md, mdlen) : NULL;
}

int dv_acme_ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char out[64])
{
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
	if (!sig)
		return -1;
	int rc = -1;
	if (p == der + len) {
		const BIGNUM *r, *s;
		ECDSA_SIG_get0(sig, &r, &s);
		if (BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32)
			rc = 0;
	}
	ECDSA_SIG_free(sig);
	return rc;
}

static char *sign_es256(EVP_PKEY *key, const char *input)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char der[128];
	size_t derlen = sizeof der;
	char *out = NULL;
	if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	    EVP_DigestSign(md, der, &derlen, (const unsigned char *)input, strlen(input)) == 1) {
		unsigned char raw[64];
		if (dv_acme_ecdsa_der_to_raw(der, derlen, raw) == 0)
			out = dv_acme_b64url(raw, sizeof raw);
	}
	EVP_MD_CTX_free(md);
	return out;
}

char *dv_acme_jws(struct evp_pkey_st *key, const char *kid, const char *nonce, const char *url, const char *payload)
{
	struct dv_strbuf h;
	dv_strbuf_init(&h);
	dv_strbuf_puts(&h, "{\"alg\":\"ES256\",");
	if (kid) {
		dv_strbuf_puts(&h, "\"kid\":");
		dv_json_escape(&h, kid, strlen(kid));
	} else {
		char *jwk = dv_acme_jwk(key);
		if (!jwk) {
			dv_strbuf_dispose(&h);
			return NULL;
		}
		dv_strbuf_printf(&h, "\"jwk\":%s", jwk);
		free(jwk);
	}
	dv_strbuf_puts(&h, ",\"nonce\":");
	dv_json_escape(&h, nonce, strlen(nonce));
	dv_strbuf_puts(&h, ",\"url\":");
	dv_json_escape(&h, url, strlen(url));
	dv_strbuf_puts(&h, "}");
	char *p64 = dv_acme_b64url(h.data, h.len);
	char *b64 = dv_acme_b64url(payload, strlen(payload));
	char *input = dv_xasprintf("%s.%s", p64, b64);
	char *sig = sign_es256(key, input);
	char *jws = NULL;
	if (sig)
		jws = dv_xasprintf("{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", p64, b64, sig);
	dv_strbuf_dispose(&h);
	free(p64);
	free(b64);
	free(input);
	free(sig);
	return jws;
}

/* ------------------------------------------------------------------ CSR */

char *dv_acme_csr(struct evp_pkey_st *key, const char *const *names, size_t n, char **err)
{
	if (n == 0) {
		*err = dv_xstrdup("a CSR needs at least one name");
		return NULL;
	}
	char *out = NULL;
	X509_REQ *req = X509_REQ_new();
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *ext = NULL;
	unsigned char *der = NULL;
	if (!req || !gens || !exts)
		goto fail;
	X509_REQ_set_version(req, 0);
	X509_NAME *subject = X509_REQ_get_subject_name(req);
	if (strlen(names[0]) <= 64 && /* CN is limited to 64 characters */
	    X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_ASC, (const unsigned char *)names[0], -1, -1,
	                               0) != 1)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
		if (!g || !ia5 || ASN1_STRING_set(ia5, names[i], (int)strlen(names[i])) != 1) {
			GENERAL_NAME_free(g);
			ASN1_IA5STRING_free(ia5);
			goto fail;
		}
		GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
		sk_GENERAL_NAME_push(gens, g);
	}
	ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
	if (!ext || !sk_X509_EXTENSION_push(exts, ext))
		goto fail;
	ext = NULL; /* owned by exts */
	if (X509_REQ_add_extensions(req, exts) != 1 || X509_REQ_set_pubkey(req, key) != 1 ||
	    X509_REQ_sign(req, key, EVP_sha256()) <= 0)
		goto fail;
	int len = i2d_X509_REQ(req, &der);
	if (len <= 0)
		goto fail;
	out = dv_acme_b64url(der, (size_t)len);
	goto done;
fail:
	*err = dv_xasprintf("cannot build the CSR: %s", ossl_err());
done:
	OPENSSL_free(der);
	X509_EXTENSION_free(ext);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	X509_REQ_free(req);
	return out;
}

/* ------------------------------------------------------------------ certificates */

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

int dv_acme_cert_info_file(const char *path, struct dv_acme_cert_info *info, char **err)
{
	memset(info, 0, sizeof *info);
	FILE *f = fopen(path, "re");
	if (!f) {
		*err = dv_xasprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x) {
		*err = dv_xasprintf("%s: not a PEM certificate: %s", path, ossl_err());
		return -1;
	}
	info->not_before = asn1_time_unix(X509_get0_notBefore(x));
	info->not_after = asn1_time_unix(X509_get0_notAfter(x));
	const X509_NAME *issuer = X509_get_issuer_name(x);
	if (X509_NAME_get_text_by_NID((X509_NAME *)issuer, NID_commonName, info->issuer, sizeof info->issuer) <= 0)
		X509_NAME_oneline(issuer, info->issuer, sizeof info->issuer);
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	if (hex)
		snprintf(info->serial, sizeof info->serial, "%s", hex);
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	return 0;
}

/* ------------------------------------------------------------------ scheduling */

int64_t dv_acme_renew_at(int64_t not_before, int64_t not_after, int64_t renew_before)
{
	int64_t life = not_after - not_before;
	if (life < 0)
		life = 0;
	int64_t before = renew_before;
	if (life < 3 * renew_before)
		before = life / 3;
	return not_after - before;
}

uint64_t dv_acme_retry_delay_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms, uint32_t random)
{
	uint64_t d = base_ms;
	for (unsigned i = 1; i < attempt && d < max_ms; i++)
		d *= 2;
	if (d > max_ms)
		d = max_ms;
	uint64_t half = d / 2;
	return half + (uint64_t)((double)(d - half) * ((double)random / (double)UINT32_MAX));
}

bool dv_acme_domain_eligible(const char *d)
{
	size_t len = d ? strlen(d) : 0;
	if (len == 0 || len > 253 || !strchr(d, '.') || d[0] == '.' || d[len - 1] == '.')
		return false;
	for (const char *c = d; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
		      *c == '.'))
			return false; /* wildcards ('*'), IPv6 literals, ports */
	static const char local[] = ".localhost";
	if (len >= sizeof local - 1 && strcasecmp(d + len - (sizeof local - 1), local) == 0)
		return false;
	unsigned char buf[16];
	if (inet_pton(AF_INET, d, buf) == 1)
		return false;
	/* The last label of a DNS name is never all digits (rules out 1.2.3.4.5 too). */
	const char *last = strrchr(d, '.') + 1;
	bool digits = true;
	for (const char *c = last; *c; c++)
		if (*c < '0' || *c > '9')
			digits = false;
	return !digits;
}

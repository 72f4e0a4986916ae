/* TLS termination (see tls.h). Everything OpenSSL-specific of the proxy is
 * here; proxy.c only calls the dv_tls_* functions where a session reads,
 * writes, shuts down or starts. */
#include "proxy/tls.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* Mozilla "intermediate" TLS 1.2 suites; TLS 1.3 suites are OpenSSL's defaults. */
#define TLS12_CIPHERS                                                                                           \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"            \
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define GROUPS "X25519:P-256:P-384"
#define WRITE_COALESCE 16384 /* a head and a small body go out as one record */

struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	uint64_t created_ms;
	bool set;
};

struct challenge {
	char *token, *keyauth;
};

struct alpn_challenge {
	char *domain;
	SSL_CTX *ctx; /* self-signed, with the acmeIdentifier extension */
};

struct cert_name {
	char *name;   /* lower case; "*.example.com" for wildcards */
	SSL_CTX *ctx; /* borrowed from the set's ctxs */
};

struct dv_tls_certset {
	atomic_int refs;
	SSL_CTX **ctxs; /* one reference each */
	size_t nctx;
	struct cert_name *names; /* sorted by name once published */
	size_t nnames;
	bool sorted;
};

struct dv_tls {
	SSL_CTX *base; /* every connection starts here; SNI switches to a certificate's ctx */
	uint64_t rotate_ms;
	pthread_mutex_t lock; /* current, tickets, challenges */
	struct dv_tls_certset *current;
	atomic_uint gen;
	struct ticket_key keys[DV_TLS_TICKET_KEYS]; /* [0] encrypts; all decrypt */
	struct challenge *challenges;
	size_t nchallenges;
	struct alpn_challenge *alpn; /* TLS-ALPN-01 certificates by domain */
	size_t nalpn;
	atomic_size_t alpn_count;    /* nalpn, read without the lock on every handshake */
};

static int set_index = -1;
static int acme_index = -1; /* set on a connection switched to a TLS-ALPN-01 certificate */
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void make_index(void)
{
	set_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	acme_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static const char *ssl_error_text(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_get_error();
	if (!e)
		return "unknown error";
	ERR_error_string_n(e, buf, sizeof buf);
	return buf;
}

/* ------------------------------------------------------------------ callbacks */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
	/* Only HTTP/1.1 for now: this is where "h2" would be preferred. */
	for (unsigned i = 0; i < inlen;) {
		unsigned n = in[i];
		if (i + 1 + n > inlen)
			break;
		if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)n;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without ALPN */
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cert_name *)a)->name, ((const struct cert_name *)b)->name);
}

static SSL_CTX *set_find(const struct dv_tls_certset *set, const char *host, size_t len)
{
	if (!set || set->nnames == 0 || len == 0 || len > 253)
		return NULL;
	char key[260];
	for (size_t i = 0; i < len; i++)
		key[i] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] + 32 : host[i]);
	key[len] = '\0';
	if (len && key[len - 1] == '.')
		key[--len] = '\0';
	struct cert_name probe = {key, NULL};
	const struct cert_name *hit = bsearch(&probe, set->names, set->nnames, sizeof probe, name_cmp);
	if (hit)
		return hit->ctx;
	const char *dot = strchr(key, '.');
	if (!dot || !strchr(dot + 1, '.'))
		return NULL; /* "*.com" style wildcards are never matched */
	char wild[262];
	snprintf(wild, sizeof wild, "*%s", dot);
	probe.name = wild;
	hit = bsearch(&probe, set->names, set->nnames, sizeof probe, name_cmp);
	return hit ? hit->ctx : NULL;
}

/* TLS-ALPN-01 (RFC 8737): a ClientHello that offers only-or-also
 * "acme-tls/1" for a domain with a published challenge gets that domain's
 * challenge certificate. This runs before SNI and ALPN processing; with no
 * challenge published it costs one atomic load. */
static bool alpn_offers(const unsigned char *p, size_t len, const char *proto)
{
	size_t plen = strlen(proto);
	if (len < 2)
		return false;
	size_t list = (size_t)p[0] << 8 | p[1];
	p += 2;
	len -= 2;
	if (list > len)
		return false;
	for (size_t i = 0; i < list;) {
		size_t n = p[i];
		if (i + 1 + n > list)
			return false;
		if (n == plen && memcmp(p + i + 1, proto, n) == 0)
			return true;
		i += 1 + n;
	}
	return false;
}

/* The host_name of a server_name extension, copied into out (lower case). */
static bool sni_name(const unsigned char *p, size_t len, char *out, size_t cap)
{
	if (len < 5)
		return false;
	size_t list = (size_t)p[0] << 8 | p[1];
	if (list + 2 > len || p[2] != 0 /* host_name */)
		return false;
	size_t n = (size_t)p[3] << 8 | p[4];
	if (n == 0 || n + 5 > len || n >= cap)
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)((p[5 + i] >= 'A' && p[5 + i] <= 'Z') ? p[5 + i] + 32 : p[5 + i]);
	out[n] = '\0';
	return true;
}

static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	struct dv_tls *tls = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	if (!tls || atomic_load_explicit(&tls->alpn_count, memory_order_relaxed) == 0)
		return SSL_CLIENT_HELLO_SUCCESS;
	const unsigned char *alpn, *sni;
	size_t alen, slen;
	char name[256];
	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &alpn, &alen) ||
	    !alpn_offers(alpn, alen, "acme-tls/1") ||
	    !SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &sni, &slen) || !sni_name(sni, slen, name, sizeof name))
		return SSL_CLIENT_HELLO_SUCCESS;
	pthread_mutex_lock(&tls->lock);
	for (size_t i = 0; i < tls->nalpn; i++) {
		if (strcmp(tls->alpn[i].domain, name) == 0) {
			SSL_set_SSL_CTX(ssl, tls->alpn[i].ctx);
			SSL_set_ex_data(ssl, acme_index, tls);
			break;
		}
	}
	pthread_mutex_unlock(&tls->lock);
	return SSL_CLIENT_HELLO_SUCCESS;
}

static int alpn_select_acme(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                            unsigned int inlen, void *arg)
{
	for (unsigned i = 0; i < inlen;) {
		unsigned n = in[i];
		if (i + 1 + n > inlen)
			break;
		if (n == 10 && memcmp(in + i + 1, "acme-tls/1", 10) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)n;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	if (SSL_get_ex_data(ssl, acme_index))
		return SSL_TLSEXT_ERR_OK; /* a TLS-ALPN-01 validation keeps its certificate */
	const struct dv_tls_certset *set = SSL_get_ex_data(ssl, set_index);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	SSL_CTX *ctx = name ? set_find(set, name, strlen(name)) : NULL;
	if (!ctx && set && set->nctx)
		ctx = set->ctxs[0]; /* the default certificate */
	if (!ctx) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	/* Connections start on the default certificate's context: switching
	 * (which copies the certificate state) only for other names. */
	if (ctx != SSL_get_SSL_CTX(ssl))
		SSL_set_SSL_CTX(ssl, ctx);
	return SSL_TLSEXT_ERR_OK;
}

static void ticket_key_new(struct ticket_key *k, uint64_t now)
{
	if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
	    RAND_bytes(k->hmac, sizeof k->hmac) != 1) {
		k->set = false;
		return;
	}
	k->created_ms = now;
	k->set = true;
}

/* Called with tls->lock held: starts a new encryption key when the current
 * one is older than the rotation interval; older keys still decrypt. */
static void ticket_rotate(struct dv_tls *tls)
{
	uint64_t now = dv_now_ms();
	if (tls->keys[0].set && now - tls->keys[0].created_ms < tls->rotate_ms)
		return;
	memmove(&tls->keys[1], &tls->keys[0], sizeof tls->keys[0] * (DV_TLS_TICKET_KEYS - 1));
	ticket_key_new(&tls->keys[0], now);
	/* Rotation is lazy (on the next handshake): keys whose decryption life
	 * (DV_TLS_TICKET_KEYS intervals) is over go now, however long it was. */
	for (int i = 1; i < DV_TLS_TICKET_KEYS; i++)
		if (tls->keys[i].set && now - tls->keys[i].created_ms >= tls->rotate_ms * DV_TLS_TICKET_KEYS) {
			OPENSSL_cleanse(&tls->keys[i], sizeof tls->keys[i]);
			tls->keys[i].set = false;
		}
}

static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
	struct dv_tls *tls = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	if (!tls)
		return -1;
	struct ticket_key k;
	int rc = 0;
	pthread_mutex_lock(&tls->lock);
	ticket_rotate(tls);
	if (enc) {
		k = tls->keys[0];
		rc = k.set ? 1 : -1;
	} else {
		for (int i = 0; i < DV_TLS_TICKET_KEYS; i++) {
			if (tls->keys[i].set && memcmp(tls->keys[i].name, key_name, 16) == 0) {
				k = tls->keys[i];
				rc = i == 0 ? 1 : 2; /* 2: accept, and issue a ticket under the current key */
				break;
			}
		}
	}
	pthread_mutex_unlock(&tls->lock);
	if (rc <= 0)
		return rc; /* decrypt: unknown or expired key, a full handshake follows */
	if (enc) {
		memcpy(key_name, k.name, 16);
		if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1)
			return -1;
		if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
			return -1;
	} else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1) {
		return -1;
	}
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	OPENSSL_cleanse(&k, sizeof k);
	return rc;
}

/* ------------------------------------------------------------------ contexts */

static SSL_CTX *ctx_new(struct dv_tls *tls, char **err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		*err = dv_xasprintf("TLS: %s", ssl_error_text());
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
	                             SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 || SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, GROUPS) != 1) {
		*err = dv_xasprintf("TLS: %s", ssl_error_text());
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Stateless tickets only: nothing is cached per worker or shared. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_timeout(ctx, (long)(tls->rotate_ms * DV_TLS_TICKET_KEYS / 1000));
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_app_data(ctx, tls);
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
	return ctx;
}

struct dv_tls *dv_tls_new(uint64_t ticket_rotate_ms, char **err)
{
	pthread_once(&index_once, make_index);
	if (set_index < 0) {
		*err = dv_xstrdup("TLS: cannot allocate an OpenSSL ex_data index");
		return NULL;
	}
	struct dv_tls *tls = dv_xcalloc(1, sizeof *tls);
	tls->rotate_ms = ticket_rotate_ms ? ticket_rotate_ms : 3600 * 1000;
	pthread_mutex_init(&tls->lock, NULL);
	tls->base = ctx_new(tls, err);
	if (!tls->base) {
		dv_tls_free(tls);
		return NULL;
	}
	tls->current = dv_tls_certset_new();
	return tls;
}

void dv_tls_free(struct dv_tls *tls)
{
	if (!tls)
		return;
	SSL_CTX_free(tls->base);
	dv_tls_certset_unref(tls->current);
	for (size_t i = 0; i < tls->nchallenges; i++) {
		free(tls->challenges[i].token);
		free(tls->challenges[i].keyauth);
	}
	free(tls->challenges);
	for (size_t i = 0; i < tls->nalpn; i++) {
		free(tls->alpn[i].domain);
		SSL_CTX_free(tls->alpn[i].ctx);
	}
	free(tls->alpn);
	OPENSSL_cleanse(tls->keys, sizeof tls->keys);
	pthread_mutex_destroy(&tls->lock);
	free(tls);
}

/* ------------------------------------------------------------------ certificate sets */

struct dv_tls_certset *dv_tls_certset_new(void)
{
	struct dv_tls_certset *set = dv_xcalloc(1, sizeof *set);
	atomic_init(&set->refs, 1);
	return set;
}

void dv_tls_certset_unref(struct dv_tls_certset *set)
{
	if (!set || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (size_t i = 0; i < set->nctx; i++)
		SSL_CTX_free(set->ctxs[i]);
	for (size_t i = 0; i < set->nnames; i++)
		free(set->names[i].name);
	free(set->ctxs);
	free(set->names);
	free(set);
}

size_t dv_tls_certset_count(const struct dv_tls_certset *set)
{
	return set ? set->nctx : 0;
}

static void set_add_name(struct dv_tls_certset *set, const char *name, size_t len, SSL_CTX *ctx)
{
	if (len == 0 || len > 253)
		return;
	char *n = dv_xstrndup(name, len);
	for (char *c = n; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c + 32);
	for (size_t i = 0; i < set->nnames; i++)
		if (strcmp(set->names[i].name, n) == 0) {
			free(n); /* the first certificate for a name wins */
			return;
		}
	set->names = dv_xrealloc(set->names, (set->nnames + 1) * sizeof *set->names);
	set->names[set->nnames++] = (struct cert_name){n, ctx};
	set->sorted = false;
}

static void set_add_cert_names(struct dv_tls_certset *set, X509 *x, SSL_CTX *ctx)
{
	bool any = false;
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS)
			continue;
		set_add_name(set, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
		             (size_t)ASN1_STRING_length(g->d.dNSName), ctx);
		any = true;
	}
	GENERAL_NAMES_free(sans);
	if (any)
		return;
	char cn[256];
	int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
	if (n > 0)
		set_add_name(set, cn, (size_t)n, ctx);
}

int dv_tls_certset_add_files(struct dv_tls *tls, struct dv_tls_certset *set, const char *host,
                             const char *cert_file, const char *key_file, char **err)
{
	char *cerr = NULL;
	SSL_CTX *ctx = ctx_new(tls, &cerr);
	if (!ctx) {
		*err = cerr;
		return -1;
	}
	ERR_clear_error();
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		*err = dv_xasprintf("%s: cannot load the certificate chain: %s", cert_file, ssl_error_text());
		goto fail;
	}
	FILE *kf = fopen(key_file, "re");
	EVP_PKEY *key = kf ? PEM_read_PrivateKey(kf, NULL, NULL, NULL) : NULL;
	if (kf)
		fclose(kf);
	if (!key) {
		*err = dv_xasprintf("%s: cannot load the private key: %s", key_file, kf ? ssl_error_text() : strerror(errno));
		goto fail;
	}
	if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1) {
		*err = dv_xasprintf("%s: the private key does not match the certificate %s", key_file, cert_file);
		EVP_PKEY_free(key);
		goto fail;
	}
	int used = SSL_CTX_use_PrivateKey(ctx, key);
	EVP_PKEY_free(key);
	if (used != 1) {
		*err = dv_xasprintf("%s: cannot use the private key: %s", key_file, ssl_error_text());
		goto fail;
	}
	set->ctxs = dv_xrealloc(set->ctxs, (set->nctx + 1) * sizeof *set->ctxs);
	set->ctxs[set->nctx++] = ctx;
	if (host)
		set_add_name(set, host, strlen(host), ctx);
	else
		set_add_cert_names(set, SSL_CTX_get0_certificate(ctx), ctx);
	return 0;
fail:
	SSL_CTX_free(ctx);
	return -1;
}

static int dirent_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int dv_tls_certset_add_dir(struct dv_tls *tls, struct dv_tls_certset *set, const char *dir, char **err)
{
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		*err = dv_xasprintf("%s: %s", dir, strerror(errno));
		return -1;
	}
	char **names = NULL;
	size_t n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		names = dv_xrealloc(names, (n + 1) * sizeof *names);
		names[n++] = dv_xstrdup(e->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof *names, dirent_cmp); /* a stable default certificate */
	int added = 0;
	for (size_t i = 0; i < n; i++) {
		char *cert = dv_xasprintf("%s/%s/fullchain.pem", dir, names[i]);
		char *key = dv_xasprintf("%s/%s/privkey.pem", dir, names[i]);
		struct stat st;
		if (stat(cert, &st) == 0 && stat(key, &st) == 0) {
			if (dv_tls_certset_add_files(tls, set, NULL, cert, key, err) != 0)
				added = -1;
			else
				added++;
		}
		free(cert);
		free(key);
		if (added < 0)
			break;
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return added;
}

static void set_sort(struct dv_tls_certset *set)
{
	if (!set->sorted && set->nnames > 1)
		qsort(set->names, set->nnames, sizeof *set->names, name_cmp);
	set->sorted = true;
}

bool dv_tls_certset_has_host(const struct dv_tls_certset *set, const char *host, size_t len)
{
	const char *colon = memchr(host, ':', len);
	if (colon && host[0] != '[')
		len = (size_t)(colon - host);
	return set_find(set, host, len) != NULL;
}

void dv_tls_publish(struct dv_tls *tls, struct dv_tls_certset *set)
{
	set_sort(set);
	pthread_mutex_lock(&tls->lock);
	struct dv_tls_certset *old = tls->current;
	tls->current = set;
	atomic_fetch_add_explicit(&tls->gen, 1, memory_order_release);
	pthread_mutex_unlock(&tls->lock);
	dv_tls_certset_unref(old);
}

void dv_tls_sync(struct dv_tls *tls, struct dv_tls_certset **set, unsigned *gen)
{
	unsigned g = atomic_load_explicit(&tls->gen, memory_order_acquire);
	if (*set && g == *gen)
		return;
	pthread_mutex_lock(&tls->lock);
	struct dv_tls_certset *cur = tls->current;
	atomic_fetch_add(&cur->refs, 1);
	*gen = atomic_load(&tls->gen);
	pthread_mutex_unlock(&tls->lock);
	dv_tls_certset_unref(*set);
	*set = cur;
}

/* ------------------------------------------------------------------ challenges */

void dv_tls_set_challenge(struct dv_tls *tls, const char *token, const char *keyauth)
{
	pthread_mutex_lock(&tls->lock);
	for (size_t i = 0; i < tls->nchallenges; i++) {
		if (strcmp(tls->challenges[i].token, token) != 0)
			continue;
		free(tls->challenges[i].keyauth);
		if (keyauth) {
			tls->challenges[i].keyauth = dv_xstrdup(keyauth);
		} else {
			free(tls->challenges[i].token);
			tls->challenges[i] = tls->challenges[--tls->nchallenges];
		}
		pthread_mutex_unlock(&tls->lock);
		return;
	}
	if (keyauth) {
		tls->challenges = dv_xrealloc(tls->challenges, (tls->nchallenges + 1) * sizeof *tls->challenges);
		tls->challenges[tls->nchallenges++] = (struct challenge){dv_xstrdup(token), dv_xstrdup(keyauth)};
	}
	pthread_mutex_unlock(&tls->lock);
}

char *dv_tls_challenge(struct dv_tls *tls, const char *token, size_t len)
{
	char *out = NULL;
	pthread_mutex_lock(&tls->lock);
	for (size_t i = 0; i < tls->nchallenges; i++) {
		const char *t = tls->challenges[i].token;
		if (strlen(t) == len && memcmp(t, token, len) == 0) {
			out = dv_xstrdup(tls->challenges[i].keyauth);
			break;
		}
	}
	pthread_mutex_unlock(&tls->lock);
	return out;
}

/* The challenge certificate: self-signed for `domain`, with the critical
 * id-pe-acmeIdentifier extension holding SHA-256(key authorization). */
static SSL_CTX *alpn_ctx_new(struct dv_tls *tls, const char *domain, const char *keyauth, char **err)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	ASN1_OCTET_STRING *digest = ASN1_OCTET_STRING_new(), *wrapped = ASN1_OCTET_STRING_new();
	ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
	X509_EXTENSION *ext = NULL;
	unsigned char *der = NULL;
	SSL_CTX *ctx = NULL;
	unsigned char md[32];
	unsigned int mdlen = 0;
	char *cerr = NULL;
	if (!key || !x || !gens || !g || !ia5 || !digest || !wrapped || !oid ||
	    EVP_Digest(keyauth, strlen(keyauth), md, &mdlen, EVP_sha256(), NULL) != 1)
		goto out;
	X509_set_version(x, X509_VERSION_3); /* extensions need v3 (Go's parser, for one, ignores them otherwise) */
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(dv_now_ns() & 0x7fffffff));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400);
	X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_ASC, (const unsigned char *)domain,
	                           -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, key);
	if (ASN1_STRING_set(ia5, domain, (int)strlen(domain)) != 1)
		goto out;
	GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
	ia5 = NULL;
	sk_GENERAL_NAME_push(gens, g);
	g = NULL;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0) != 1)
		goto out;
	ASN1_OCTET_STRING_set(digest, md, (int)mdlen);
	int dlen = i2d_ASN1_OCTET_STRING(digest, &der);
	if (dlen <= 0 || ASN1_OCTET_STRING_set(wrapped, der, dlen) != 1)
		goto out;
	ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, wrapped);
	if (!ext || X509_add_ext(x, ext, -1) != 1 || X509_sign(x, key, EVP_sha256()) <= 0)
		goto out;
	ctx = ctx_new(tls, &cerr);
	if (ctx && (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)) {
		SSL_CTX_free(ctx);
		ctx = NULL;
	}
	if (ctx)
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select_acme, NULL);
out:
	if (!ctx)
		*err = cerr ? cerr : dv_xasprintf("TLS-ALPN-01 certificate for %s: %s", domain, ssl_error_text());
	else
		free(cerr);
	OPENSSL_free(der);
	X509_EXTENSION_free(ext);
	ASN1_OBJECT_free(oid);
	ASN1_OCTET_STRING_free(digest);
	ASN1_OCTET_STRING_free(wrapped);
	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(g);
	GENERAL_NAMES_free(gens);
	X509_free(x);
	EVP_PKEY_free(key);
	return ctx;
}

int dv_tls_set_alpn_challenge(struct dv_tls *tls, const char *domain, const char *keyauth, char **err)
{
	SSL_CTX *ctx = NULL;
	if (keyauth && !(ctx = alpn_ctx_new(tls, domain, keyauth, err)))
		return -1;
	pthread_mutex_lock(&tls->lock);
	size_t i = 0;
	while (i < tls->nalpn && strcasecmp(tls->alpn[i].domain, domain) != 0)
		i++;
	if (i < tls->nalpn) { /* replace or remove */
		SSL_CTX_free(tls->alpn[i].ctx);
		if (ctx) {
			tls->alpn[i].ctx = ctx;
		} else {
			free(tls->alpn[i].domain);
			tls->alpn[i] = tls->alpn[--tls->nalpn];
		}
	} else if (ctx) {
		tls->alpn = dv_xrealloc(tls->alpn, (tls->nalpn + 1) * sizeof *tls->alpn);
		char *d = dv_xstrdup(domain);
		for (char *c = d; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c + 32);
		tls->alpn[tls->nalpn++] = (struct alpn_challenge){d, ctx};
	}
	atomic_store(&tls->alpn_count, tls->nalpn);
	pthread_mutex_unlock(&tls->lock);
	return 0;
}

bool dv_tls_conn_is_acme(const struct ssl_st *ssl)
{
	return SSL_get_ex_data(ssl, acme_index) != NULL;
}

int dv_tls_http_answer(struct dv_tls *tls, const struct dv_tls_certset *set, const char *host, size_t host_len,
                       const char *path, size_t path_len, unsigned tls_port, struct dv_strbuf *head,
                       struct dv_strbuf *body)
{
	static const char prefix[] = "/.well-known/acme-challenge/";
	const size_t plen = sizeof prefix - 1;
	if (path_len >= plen && memcmp(path, prefix, plen) == 0) { /* never redirected */
		const char *tok = path + plen;
		size_t tlen = path_len - plen;
		const char *q = memchr(tok, '?', tlen);
		if (q)
			tlen = (size_t)(q - tok);
		char *ka = tlen ? dv_tls_challenge(tls, tok, tlen) : NULL;
		if (!ka)
			return 0;
		dv_strbuf_puts(body, ka);
		free(ka);
		dv_strbuf_puts(head, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n");
		return 200;
	}
	/* Hosts are at most 253 characters; a path this long is the route's business. */
	if (!tls_port || !host || host_len >= 256 || path_len >= 4096 || !dv_tls_certset_has_host(set, host, host_len))
		return 0;
	const char *colon = memchr(host, ':', host_len);
	if (colon && host[0] != '[')
		host_len = (size_t)(colon - host);
	char port[16] = "";
	if (tls_port != 443)
		snprintf(port, sizeof port, ":%u", tls_port);
	dv_strbuf_printf(head, "HTTP/1.1 301 Moved Permanently\r\nLocation: https://%.*s%s%.*s\r\n"
	                 "Content-Type: text/html; charset=utf-8\r\n", (int)host_len, host, port, (int)path_len, path);
	dv_strbuf_printf(body, "<!doctype html><title>301 Moved Permanently</title><a href=\"https://%.*s%s%.*s\">"
	                 "moved to HTTPS</a>\n", (int)host_len, host, port, (int)path_len, path);
	return 301;
}

/* ------------------------------------------------------------------ connections */

struct ssl_st *dv_tls_conn_new(struct dv_tls *tls, const struct dv_tls_certset *set, int fd)
{
	SSL *ssl = SSL_new(set && set->nctx ? set->ctxs[0] : tls->base);
	if (!ssl)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

void dv_tls_conn_free(struct ssl_st *ssl)
{
	SSL_free(ssl);
}

int dv_tls_handshake(struct ssl_st *ssl, const struct dv_tls_certset *set, bool *readable, bool *writable)
{
	SSL_set_ex_data(ssl, set_index, (void *)set);
	ERR_clear_error();
	int r = SSL_do_handshake(ssl);
	SSL_set_ex_data(ssl, set_index, NULL); /* the snapshot may be replaced before the next call */
	if (r == 1)
		return 1;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
		*readable = false;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		*writable = false;
		return 0;
	default:
		dv_log_debug("tls", "handshake failed: %s", ssl_error_text());
		ERR_clear_error();
		return -1;
	}
}

ssize_t dv_tls_read(struct ssl_st *ssl, char *buf, size_t room, bool *readable)
{
	size_t total = 0;
	while (total < room) {
		size_t got = 0;
		ERR_clear_error();
		int r = SSL_read_ex(ssl, buf + total, room - total, &got);
		if (r == 1) {
			total += got;
			continue;
		}
		int e = SSL_get_error(ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			*readable = false;
			break;
		}
		ERR_clear_error();
		if (total)
			return (ssize_t)total; /* the EOF or error shows on the next call */
		return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	}
	return total ? (ssize_t)total : -2;
}

/* Writes a then b as one byte stream, in chunks of at most one record. A
 * chunk that straddles a and b is copied into a scratch buffer so that a
 * head and a small body leave in one record. After WANT_WRITE, OpenSSL
 * needs the retry to offer at least the bytes of the pending record: the
 * next call starts at the same offset of a stream that only grew, so its
 * first chunk is never shorter. */
ssize_t dv_tls_write2(struct ssl_st *ssl, const char *a, size_t alen, const char *b, size_t blen, bool *writable)
{
	static __thread char scratch[WRITE_COALESCE];
	size_t total = alen + blen, done = 0;
	while (done < total) {
		size_t len = total - done < WRITE_COALESCE ? total - done : WRITE_COALESCE;
		const char *p;
		if (done + len <= alen) {
			p = a + done;
		} else if (done >= alen) {
			p = b + (done - alen);
		} else {
			size_t fa = alen - done;
			memcpy(scratch, a + done, fa);
			memcpy(scratch + fa, b, len - fa);
			p = scratch;
		}
		size_t n = 0;
		ERR_clear_error();
		int r = SSL_write_ex(ssl, p, len, &n);
		if (r == 1) {
			done += n;
			continue;
		}
		int e = SSL_get_error(ssl, r);
		if (e == SSL_ERROR_WANT_WRITE) {
			*writable = false;
			break;
		}
		if (e == SSL_ERROR_WANT_READ)
			break; /* retried on the next event (writable stays set: no stall) */
		ERR_clear_error();
		return done ? (ssize_t)done : -1;
	}
	return (ssize_t)done;
}

void dv_tls_close_notify(struct ssl_st *ssl)
{
	if (!SSL_is_init_finished(ssl))
		return;
	ERR_clear_error();
	SSL_shutdown(ssl);
	ERR_clear_error();
}

const char *dv_tls_conn_version(const struct ssl_st *ssl)
{
	return SSL_get_version(ssl);
}

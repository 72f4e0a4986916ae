/* acme: automatic certificates from an ACME (RFC 8555) certificate authority.
 *
 * The manager (dv_acme_*) keeps one certificate per domain under
 * <state_dir>/certs/<domain>/ (fullchain.pem, privkey.pem mode 0600; the
 * directory 0700; the account key in certs/account.key 0600). On the control
 * loop it decides what is due (missing, or within the renewal window); a
 * single background thread talks to the CA with libcurl (account, order,
 * HTTP-01 challenges, CSR, finalize, download) and reports back through an
 * eventfd, so the control loop never blocks on the network. Challenge
 * tokens are handed to `publish_challenge` (called from that thread; the
 * proxy answers them on its plain-HTTP listener).
 *
 * Renewal: a certificate is renewed `renew_before` before it expires (30
 * days), or a third of its lifetime before for certificates shorter than
 * three times that. Failures are retried with exponential backoff (1 min
 * doubling up to 6 h) and jitter; the last error is kept for `davit certs`
 * and logged.
 *
 * The pure pieces (base64url, JWK, JWS ES256, CSR, scheduling) are exported
 * for the unit tests. */
#ifndef DV_ACME_ACME_H
#define DV_ACME_ACME_H

#include "core/loop.h"
#include "core/strbuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DV_ACME_LETSENCRYPT "https://acme-v02.api.letsencrypt.org/directory"
#define DV_ACME_LETSENCRYPT_STAGING "https://acme-staging-v02.api.letsencrypt.org/directory"

struct evp_pkey_st; /* OpenSSL's EVP_PKEY */

/* ---- pure helpers (jws.c) ---- */

/* base64url without padding (RFC 7515 appendix C). Caller frees. */
char *dv_acme_b64url(const void *data, size_t len);
/* Decodes base64url (padding optional). Returns the length, or -1. out must
 * hold len*3/4+3 bytes. */
long dv_acme_b64url_decode(const char *text, size_t len, unsigned char *out);

/* A new ECDSA P-256 key, or NULL. */
struct evp_pkey_st *dv_acme_key_new(void);
void dv_acme_key_free(struct evp_pkey_st *key);
/* PEM private key to `path`, created with mode 0600 (replaced atomically). */
int dv_acme_key_save(struct evp_pkey_st *key, const char *path, char **err);
struct evp_pkey_st *dv_acme_key_load(const char *path, char **err);
/* Replaces `path` atomically with data (a temporary file created with
 * `mode`, fsynced, renamed). Returns 0 or -1 with *err. */
int dv_acme_write_file(const char *path, const void *data, size_t len, unsigned mode, char **err);

/* The key's JWK with members in lexicographic order (RFC 7638), caller frees. */
char *dv_acme_jwk(struct evp_pkey_st *key);
/* base64url(SHA-256(JWK)): the account key thumbprint. Caller frees. */
char *dv_acme_thumbprint(struct evp_pkey_st *key);
/* An ECDSA signature in DER -> the 64-byte r||s form JWS ES256 uses.
 * Returns 0 or -1 (malformed, or a component longer than 32 bytes). */
int dv_acme_ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char out[64]);
/* A flattened JWS (RFC 8555 6.2) signed with ES256: protected header
 * {"alg":"ES256", "jwk" (kid NULL) or "kid", "nonce", "url"}, payload
 * as given ("" for POST-as-GET). Caller frees; NULL if signing failed. */
char *dv_acme_jws(struct evp_pkey_st *key, const char *kid, const char *nonce, const char *url,
                  const char *payload);
/* A PKCS#10 CSR (DER, base64url) for names[0..n) (subjectAltName DNS; CN =
 * names[0]) signed by key. Caller frees; NULL with *err. */
char *dv_acme_csr(struct evp_pkey_st *key, const char *const *names, size_t n, char **err);

/* When to renew a certificate valid [not_before, not_after] (Unix seconds):
 * renew_before seconds before expiry, or a third of the lifetime before it
 * when the certificate lives less than three times renew_before. */
int64_t dv_acme_renew_at(int64_t not_before, int64_t not_after, int64_t renew_before);
/* Delay before retry number `attempt` (1 = first retry) in ms: base doubled
 * per attempt up to max, then "equal jitter": half of it fixed, the other
 * half scaled by random/UINT32_MAX. */
uint64_t dv_acme_retry_delay_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms, uint32_t random);
/* True if davit should ask a CA for `domain`: a DNS name (not an IP
 * address), not *.localhost / localhost, not a wildcard (HTTP-01 cannot
 * validate those), at least one dot. */
bool dv_acme_domain_eligible(const char *domain);

/* Parsed facts of a PEM certificate file (the leaf). */
struct dv_acme_cert_info {
	int64_t not_before, not_after; /* Unix seconds */
	char issuer[256];              /* the issuer's common name (or full name) */
	char serial[80];               /* hex */
};
int dv_acme_cert_info_file(const char *path, struct dv_acme_cert_info *info, char **err);

/* ---- one exchange with the CA (client.c; blocking: the manager's thread) ---- */

struct dv_acme_ca {
	const char *directory_url;     /* borrowed */
	const char *ca_bundle;         /* borrowed; NULL: system trust store */
	const char *email;             /* borrowed; NULL: no contact */
	struct evp_pkey_st *account_key; /* borrowed */
	/* Publishes / withdraws (keyauth NULL) an HTTP-01 token. */
	void (*publish_challenge)(void *arg, const char *token, const char *keyauth);
	/* "tls-alpn-01": validate with TLS-ALPN-01 (RFC 8737) instead, through
	 * publish_alpn (domain, keyauth or NULL to withdraw). NULL: http-01. */
	const char *challenge_type;
	void (*publish_alpn)(void *arg, const char *domain, const char *keyauth);
	/* Waits ms between polls (0: not at all); returns false when the
	 * exchange must stop (also polled during transfers). */
	bool (*sleep)(void *arg, uint64_t ms);
	void *arg;
	/* Cached across exchanges (owned, freed by dv_acme_ca_dispose). */
	char *new_nonce_url, *new_account_url, *new_order_url, *kid, *nonce;
};

/* Gets a certificate for `domain`: directory, account (created or found
 * once), order, HTTP-01 challenge, CSR with a new P-256 key, finalize,
 * download. Returns 0 with *chain_pem (leaf first; caller frees) and
 * *cert_key (caller frees), or -1 with *err saying which step failed and the
 * CA's problem detail. */
int dv_acme_obtain(struct dv_acme_ca *ca, const char *domain, char **chain_pem, struct evp_pkey_st **cert_key,
                   char **err);
void dv_acme_ca_dispose(struct dv_acme_ca *ca);

/* ---- the manager (acme.c) ---- */

struct dv_acme_config {
	struct dv_loop *loop;          /* the control loop (borrowed) */
	const char *state_dir;         /* certificates under <state_dir>/certs */
	const char *directory_url;     /* NULL: Let's Encrypt production */
	const char *ca_bundle;         /* NULL: the system's; a PEM file to trust the CA's HTTPS (pebble) */
	const char *email;             /* account contact, or NULL */
	uint64_t renew_before_s;       /* 0: 30 days */
	uint64_t retry_base_ms;        /* 0: 60 s */
	uint64_t retry_max_ms;         /* 0: 6 h */
	bool enabled;                  /* false: only user certificates, no CA is contacted */
	const char *challenge_type;    /* NULL / "http-01", or "tls-alpn-01" (needs publish_alpn) */
	void (*publish_alpn)(void *arg, const char *domain, const char *keyauth);
	/* A challenge token is published (keyauth non-NULL) or withdrawn. Called
	 * on the ACME thread; must be thread-safe. */
	void (*publish_challenge)(void *arg, const char *token, const char *keyauth);
	/* Certificates on disk changed (issued, renewed). Called on the control loop. */
	void (*certs_changed)(void *arg);
	void *arg;
};

struct dv_acme;

struct dv_acme *dv_acme_new(const struct dv_acme_config *config, char **err);
/* Stops the thread (an exchange in progress is abandoned at its next step). */
void dv_acme_free(struct dv_acme *acme);

/* The domains that should have certificates (control loop). Domains that
 * are not eligible are ignored; ones no longer listed are kept on disk but
 * neither served nor renewed. */
bool dv_acme_set_domains(struct dv_acme *acme, const char *const *domains, size_t n);
/* (returns true if the set of wanted domains changed) */

/* A certificate the user supplies (x-davit tls.cert/tls.key) for `domain`:
 * served instead of an ACME one; never renewed. Replaces earlier ones for the
 * domain; cert NULL removes it. */
void dv_acme_set_user_cert(struct dv_acme *acme, const char *domain, const char *cert_file, const char *key_file);

/* Calls fn for every certificate to serve: (domain or NULL for "names from
 * the certificate", cert file, key file). */
void dv_acme_each_cert(struct dv_acme *acme, void (*fn)(void *arg, const char *domain, const char *cert,
                                                        const char *key), void *arg);

/* `davit certs`: every domain with issuer, not_after, status (valid,
 * renewing, pending, failed, user, expired), last error, next attempt. */
void dv_acme_report(struct dv_acme *acme, bool json, struct dv_strbuf *out);

#endif

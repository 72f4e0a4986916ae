/* proxy/tls: TLS termination for the proxy's client connections (OpenSSL).
 *
 * TLS 1.2 and 1.3 only, Mozilla "intermediate" ciphers for 1.2 (ECDHE with
 * AES-GCM or ChaCha20-Poly1305), X25519/P-256/P-384. ALPN offers http/1.1
 * (the selection callback is where h2 would go). Resumption uses stateless
 * session tickets only (no server-side session cache shared between
 * workers); the ticket keys rotate every `ticket_rotate_ms`, and a ticket is
 * accepted while its key is one of the last DV_TLS_TICKET_KEYS keys.
 *
 * Certificates come as an immutable set (struct dv_tls_certset) mapping host
 * names (exact and "*.domain") to an SSL_CTX. dv_tls_publish() swaps in a new
 * set atomically, like the route table: workers pick it up between loop
 * iterations (dv_tls_sync); connections already established keep using the
 * SSL_CTX they were handshaken with (OpenSSL reference-counts it), so a swap
 * drops nothing.
 *
 * HTTP-01 challenges: the ACME client publishes token -> key authorization
 * pairs here; the proxy answers /.well-known/acme-challenge/TOKEN on its
 * plain-HTTP listeners from this map (dv_tls_challenge). */
#ifndef DV_PROXY_TLS_H
#define DV_PROXY_TLS_H

#include "core/strbuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DV_TLS_TICKET_KEYS 3

struct ssl_st; /* OpenSSL's SSL, kept opaque here */
struct dv_tls;
struct dv_tls_certset;

/* Creates the shared TLS state. ticket_rotate_ms 0: one hour. NULL with *err. */
struct dv_tls *dv_tls_new(uint64_t ticket_rotate_ms, char **err);
void dv_tls_free(struct dv_tls *tls);

/* ---- certificate sets (built on any thread, then published) ---- */

struct dv_tls_certset *dv_tls_certset_new(void);
void dv_tls_certset_unref(struct dv_tls_certset *set);

/* Adds a certificate chain (PEM, leaf first) and its private key (PEM).
 * `host` NULL: the names come from the certificate (subjectAltName DNS
 * entries, else the common name); otherwise the certificate serves exactly
 * `host`. The first certificate added is the default for clients that send
 * no (or an unknown) server name. Returns 0 or -1 with *err ("FILE: why"). */
int dv_tls_certset_add_files(struct dv_tls *tls, struct dv_tls_certset *set, const char *host,
                             const char *cert_file, const char *key_file, char **err);

/* Adds every DIR/NAME/fullchain.pem + DIR/NAME/privkey.pem (the layout the
 * ACME client writes). A missing DIR is an empty set. Returns the number of
 * certificates added, or -1 with *err on the first bad one. */
int dv_tls_certset_add_dir(struct dv_tls *tls, struct dv_tls_certset *set, const char *dir, char **err);

size_t dv_tls_certset_count(const struct dv_tls_certset *set);

/* True if the set has a certificate for host[0..len) (exact, or a wildcard
 * one label up). Lock-free on a worker's snapshot. */
bool dv_tls_certset_has_host(const struct dv_tls_certset *set, const char *host, size_t len);

/* Replaces the published set; takes ownership of `set`. Safe from any thread. */
void dv_tls_publish(struct dv_tls *tls, struct dv_tls_certset *set);

/* Worker side: if a newer set was published than the one in *set / *gen,
 * replaces *set (dropping its reference) with a referenced snapshot. Cheap
 * when nothing changed (one atomic load). */
void dv_tls_sync(struct dv_tls *tls, struct dv_tls_certset **set, unsigned *gen);

/* ---- ACME HTTP-01 challenges ---- */

/* Publishes (key_authorization non-NULL) or withdraws a token. Thread-safe. */
void dv_tls_set_challenge(struct dv_tls *tls, const char *token, const char *key_authorization);
/* The key authorization for token[0..len), or NULL (caller frees). */
char *dv_tls_challenge(struct dv_tls *tls, const char *token, size_t len);

/* TLS-ALPN-01 (RFC 8737): publishes (keyauth non-NULL) or withdraws the
 * challenge certificate for `domain`; a ClientHello for that name offering
 * ALPN "acme-tls/1" gets it (and nothing else happens on that connection).
 * Thread-safe. Returns 0 or -1 with *err. */
int dv_tls_set_alpn_challenge(struct dv_tls *tls, const char *domain, const char *keyauth, char **err);
/* True for a connection that was a TLS-ALPN-01 validation (close it after the handshake). */
bool dv_tls_conn_is_acme(const struct ssl_st *ssl);

/* A plain-HTTP request for host[0..host_len) (a Host header, maybe with a
 * port; may be NULL) and path (with query): if it is an ACME HTTP-01
 * challenge with a published token, returns 200 and the key authorization
 * as body; else, if tls_port is non-zero and `set` has a certificate for the
 * host, returns 301 to https://HOST[:tls_port]/path (port left out when 443).
 * `head` gets the status line and the fields specific to the answer (the
 * caller adds Content-Length and the rest). Returns 0 when the request is
 * not answered here (unknown tokens go to the routes). */
int dv_tls_http_answer(struct dv_tls *tls, const struct dv_tls_certset *set, const char *host, size_t host_len,
                       const char *path, size_t path_len, unsigned tls_port, struct dv_strbuf *head,
                       struct dv_strbuf *body);

/* ---- connections (on a worker thread) ---- */

/* A server-side TLS connection on the non-blocking socket fd, starting on
 * the default certificate of `set` (the worker's snapshot; SNI switches only
 * when the client names another one). NULL on failure (out of memory). */
struct ssl_st *dv_tls_conn_new(struct dv_tls *tls, const struct dv_tls_certset *set, int fd);
void dv_tls_conn_free(struct ssl_st *ssl);

/* Advances the handshake; `set` is the worker's current snapshot (used for
 * SNI during this call only). Returns 1 when done, 0 when it waits for the
 * socket (clears *readable or *writable, whichever it waits for), -1 when the
 * handshake failed (the connection should be closed). */
int dv_tls_handshake(struct ssl_st *ssl, const struct dv_tls_certset *set, bool *readable, bool *writable);

/* Reads decrypted bytes into buf[0..room) until the socket is drained or
 * the buffer is full. Returns bytes (> 0), 0 on EOF (close_notify or TCP
 * EOF), -1 on error, -2 if nothing now. Clears *readable when drained. */
ssize_t dv_tls_read(struct ssl_st *ssl, char *buf, size_t room, bool *readable);

/* Writes a then b (either may be empty) as few records as possible. Returns
 * bytes taken (>= 0) or -1 on error; clears *writable when the socket is full. */
ssize_t dv_tls_write2(struct ssl_st *ssl, const char *a, size_t alen, const char *b, size_t blen, bool *writable);

/* Sends close_notify (best effort, never blocks). */
void dv_tls_close_notify(struct ssl_st *ssl);

/* The negotiated protocol ("TLSv1.3") and ALPN ("http/1.1" or ""), for logs. */
const char *dv_tls_conn_version(const struct ssl_st *ssl);

#endif

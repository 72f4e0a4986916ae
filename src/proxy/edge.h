/* edge: per-route edge policies of the proxy (security headers, rate limits,
 * compression, static files, body limits, basic auth, IP lists, bans).
 *
 * A policy is parsed from an options string ("ratelimit=100/1m compress=on
 * static=/srv/www spa=on ...", the syntax of docs/proxy.md, shared by `davit
 * proxy --edge`, routes files and the daemon's x-davit keys), is immutable
 * once built, and is reference counted: route tables hold references, so a
 * policy lives as long as any published table (and any request) uses it.
 *
 * A route without a policy never calls into this module: the proxy's hot
 * path is unchanged for it. Only rate limits and bans keep state shared by
 * all workers (the bounded IP table of ratelimit.h). */
#ifndef DV_PROXY_EDGE_H
#define DV_PROXY_EDGE_H

#include "core/util.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dv_edge_encoding { DV_EDGE_ENC_IDENTITY = 0, DV_EDGE_ENC_GZIP = 1, DV_EDGE_ENC_BR = 2 };

struct dv_edge_user {
	char *name;
	char *hash; /* "{SHA}...", "$apr1$...", "$5$...", "$6$..." or a plain password */
};

struct dv_edge_header {
	char *name;  /* as written */
	size_t name_len;
	char *value; /* "" removes the upstream's field of that name */
};

enum {
	DV_EDGE_F_FRAME = 0, DV_EDGE_F_NOSNIFF, DV_EDGE_F_REFERRER, DV_EDGE_F_PERMISSIONS, DV_EDGE_F_CSP,
	DV_EDGE_F_XSS, DV_EDGE_F_HSTS /* over TLS only */
};

struct dv_edge_policy {
	atomic_int refs;
	uint64_t key;              /* stable identity of the route (rate-limit and ban state) */
	char *name;                /* for logs */

	/* response headers */
	bool preset;               /* X-Frame-Options, X-Content-Type-Options, Referrer-Policy,
	                            * Permissions-Policy (unless the upstream set them) */
	char *frame;               /* X-Frame-Options value, NULL = none */
	bool xss;                  /* X-XSS-Protection: 1; mode=block */
	char *csp;                 /* Content-Security-Policy or NULL */
	int64_t hsts;              /* max-age seconds over TLS; 0 = off */
	bool hsts_subdomains, hsts_preload;
	struct dv_edge_header *headers; /* set/override/remove, in order */
	size_t nheaders;
	/* Preformatted fields ("Name: value\r\n", owned; NULL = not sent), one per
	 * DV_EDGE_F_* bit: sent unless the upstream sent its own. */
	char *fixed[7];
	size_t fixed_len[7];
	unsigned char mode[7];     /* while parsing: 0 preset default, 1 asked for, 2 off */
	char *block;               /* the custom (header=) fields, preformatted, owned */
	size_t block_len;

	/* rate limit: token bucket per client IP */
	double rate_per_ms;        /* tokens per ms; 0 = off */
	double burst;

	/* compression of proxied responses */
	bool gzip, br;
	uint64_t compress_min;     /* bytes (when Content-Length is known) */

	/* static files */
	char *static_root;         /* absolute directory or NULL */
	int root_fd;               /* O_PATH|O_DIRECTORY fd of static_root, -1 */
	bool spa;                  /* try_files $uri /index.html */
	char *index;               /* index file name ("index.html") */

	/* limits and protection */
	uint64_t max_body;         /* bytes; 0 = unlimited */
	struct dv_edge_user *users;
	size_t nusers;
	char *realm;
	struct dv_cidr *allow, *deny;
	size_t nallow, ndeny;
	unsigned ban_after;        /* 401/403/429 responses within ban_window_ms; 0 = off */
	uint64_t ban_window_ms, ban_for_ms;
};

/* Parses an options string (space separated KEY=VALUE, values may be
 * "double quoted" with \" and \\ escapes; later keys override earlier ones,
 * repeatable keys accumulate). `name` names the route in logs; `key` is its
 * stable identity. Returns a policy with one reference, or NULL with *err
 * (caller frees) naming the bad option. */
struct dv_edge_policy *dv_edge_policy_parse(const char *options, const char *name, char **err);
void dv_edge_policy_ref(struct dv_edge_policy *p);
void dv_edge_policy_unref(struct dv_edge_policy *p);

/* Checks one KEY=VALUE pair alone (for config loaders that report errors per
 * line). Returns 0 or -1 with *err. */
int dv_edge_option_check(const char *key, const char *value, char **err);

/* Appends KEY=VALUE to a growing options string, quoting the value when it
 * needs it. *opts is owned by the caller (realloc'd). */
void dv_edge_options_add(char **opts, const char *key, const char *value);

/* ---- request-time helpers (no allocation) ---- */

/* The client address: the peer, or when the peer is trusted the rightmost
 * X-Forwarded-For entry that is not itself trusted. xff may be NULL. */
void dv_edge_client_ip(const struct dv_sockaddr *peer, bool peer_trusted, const char *xff, size_t xff_len,
                       const struct dv_cidr *trusted, size_t ntrusted, struct dv_sockaddr *out);

/* Checks "Authorization: Basic ..." against the policy's users. */
bool dv_edge_auth_ok(const struct dv_edge_policy *p, const char *authz, size_t len);

/* Verifies one password against one stored hash ({SHA}, $apr1$, $5$, $6$ or
 * plain). Constant-time comparison of the final digests. */
bool dv_edge_password_ok(const char *hash, const char *password, size_t password_len);

/* True if the address passes the allow/deny lists (deny wins; an allow list
 * admits only its networks). */
bool dv_edge_ip_allowed(const struct dv_edge_policy *p, const struct dv_sockaddr *ip);

/* Picks the response encoding from Accept-Encoding (q-values honoured; br
 * preferred over gzip at equal q). Only encodings enabled in the policy. */
enum dv_edge_encoding dv_edge_negotiate(const char *accept_encoding, size_t len, bool gzip, bool br);

/* True for media types worth compressing (text/ *, JSON, JavaScript, XML,
 * SVG, wasm, fonts that are not compressed already...); false for images,
 * video, archives and text/event-stream. */
bool dv_edge_compressible_type(const char *content_type, size_t len);

/* Response header filtering for a proxied response: returns true if the
 * upstream's field must be dropped (the policy overrides it) and sets bits in
 * *seen for preset headers the upstream already sent. */
bool dv_edge_drop_field(const struct dv_edge_policy *p, const char *name, size_t len, unsigned *seen);

/* Appends the policy's response fields (the preset ones not in `seen`,
 * custom ones, HSTS when tls) with `append(arg, data, len)`. */
void dv_edge_add_fields(const struct dv_edge_policy *p, bool tls, unsigned seen,
                        void (*append)(void *arg, const void *data, size_t len), void *arg);

#endif

/* daemon/certs: the daemon's HTTPS side (internal to the daemon module):
 * the proxy's TLS state, the ACME manager, user-supplied certificates, and
 * the glue that republishes the certificate set whenever one changes. */
#ifndef DV_DAEMON_CERTS_H
#define DV_DAEMON_CERTS_H

#include "core/loop.h"
#include "core/strbuf.h"
#include "daemon/daemon.h"
#include "deploy/engine.h"
#include "proxy/tls.h"

#include <stdbool.h>
#include <stddef.h>

struct dv_daemon_certs;

/* acme: ask the CA for certificates (else only user certificates are served). */
struct dv_daemon_certs *dv_daemon_certs_new(struct dv_loop *loop, const struct dv_daemon_options *o, bool acme,
                                            char **err);
void dv_daemon_certs_free(struct dv_daemon_certs *c);
struct dv_tls *dv_daemon_certs_tls(struct dv_daemon_certs *c);
/* The engine's domains_changed hook. */
void dv_daemon_certs_domains(void *arg, const struct dv_engine_domain *domains, size_t n);
/* GET /v1/certs. */
void dv_daemon_certs_report(struct dv_daemon_certs *c, bool json, struct dv_strbuf *out);

#endif

/* obs/http: a tiny HTTP/1.1 listener on the control loop for GET /metrics
 * (one request per connection, bounded head, 10 s deadline). Internal to obs. */
#ifndef DV_OBS_HTTP_H
#define DV_OBS_HTTP_H

#include "core/loop.h"
#include "core/strbuf.h"
#include "core/util.h"

#include <stdbool.h>

/* Answers one request: fills status, content type and body. auth: the
 * Authorization header value or NULL. */
typedef void (*dv_obs_http_handler)(void *arg, const char *method, const char *path, const char *auth, int *status,
                                    const char **content_type, struct dv_strbuf *body);

struct dv_obs_http;

struct dv_obs_http *dv_obs_http_new(struct dv_loop *loop, const struct dv_sockaddr *addr, dv_obs_http_handler h,
                                    void *arg, char **err);
void dv_obs_http_free(struct dv_obs_http *s);

/* True if auth is "Bearer <want>" (compared in constant time). */
bool dv_obs_http_bearer_ok(const char *want, const char *auth);

#endif

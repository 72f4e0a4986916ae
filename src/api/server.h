/* api/server: davit's control API transport: HTTP/1.1 on a unix socket,
 * served from the control loop (never blocking it).
 *
 * One request per connection (the CLI makes one call per command). A handler
 * receives each request and answers it at once or later (a deploy answers
 * when it ends), or streams a chunked response (`davit logs -f`). The request
 * object lives until the response is finished or the client goes away. */
#ifndef DV_API_SERVER_H
#define DV_API_SERVER_H

#include "core/loop.h"

#include <stdbool.h>
#include <stddef.h>

struct dv_api_server;
struct dv_api_request;

typedef void (*dv_api_handler)(struct dv_api_request *req, void *arg);

/* Listens on socket_path (an existing stale socket file is replaced; mode
 * 0600: only the owner may control davit). Returns NULL with *err. */
struct dv_api_server *dv_api_server_new(struct dv_loop *loop, const char *socket_path, dv_api_handler handler,
                                        void *arg, char **err);
/* Closes the listener and every connection (pending requests are dropped:
 * their on_close callbacks run). */
void dv_api_server_free(struct dv_api_server *server);

/* Request accessors (borrowed strings, valid until the response ends). */
const char *dv_api_method(const struct dv_api_request *req);
const char *dv_api_path(const struct dv_api_request *req);   /* without the query */
const char *dv_api_body(const struct dv_api_request *req, size_t *len);
/* A query parameter, percent-decoded; NULL if absent. The caller frees it. */
char *dv_api_query(const struct dv_api_request *req, const char *name);
/* True if the query has name=1|true|yes, or name with no value. */
bool dv_api_query_flag(const struct dv_api_request *req, const char *name);

/* Sends a complete response and ends the request (req is invalid after). */
void dv_api_respond(struct dv_api_request *req, int status, const char *content_type, const char *body,
                    size_t len);
/* Sends {"error": message} (or the text message when the client asked for
 * text with ?format=text) with the status. */
void dv_api_respond_error(struct dv_api_request *req, int status, const char *message);

/* Streaming: begin a chunked response, write pieces, end it. A write to a
 * client that went away is dropped (on_close will run). */
void dv_api_stream_begin(struct dv_api_request *req, int status, const char *content_type);
void dv_api_stream_write(struct dv_api_request *req, const char *data, size_t len);
void dv_api_stream_end(struct dv_api_request *req);

/* Called once if the client disconnects before the response ended; req is
 * freed right after the callback. */
void dv_api_on_close(struct dv_api_request *req, void (*cb)(struct dv_api_request *req, void *arg), void *arg);

#endif

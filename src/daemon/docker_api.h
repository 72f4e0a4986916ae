/* daemon/docker_api: the control API's container endpoints (internal to the
 * daemon module):
 *   GET  /v1/volumes?app=A            the app's named volumes, one per line
 *   POST /v1/volumes/delete?app=A     deletes them (after `davit down`; the CLI asks first)
 *   POST /v1/registry/login?host=H    body "user\npassword": stores them encrypted
 *   POST /v1/registry/logout?host=H   forgets them */
#ifndef DV_DAEMON_DOCKER_API_H
#define DV_DAEMON_DOCKER_API_H

struct dv_api_request;
struct dv_engine;

/* Answers the request (now or later). `app` is the ?app= value (may be NULL). */
void dv_daemon_docker_api(struct dv_api_request *req, struct dv_engine *engine, const char *state_dir, const char *app);

#endif

/* The control API's container endpoints. See docker_api.h. */
#include "daemon/docker_api.h"

#include "api/server.h"
#include "core/alloc.h"
#include "deploy/engine.h"
#include "runtime/docker.h"
#include "runtime/registry.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct vol_call {
	struct dv_api_request *req; /* NULL once the client left */
};

static void vol_closed(struct dv_api_request *req, void *arg)
{
	struct vol_call *v = arg;
	v->req = NULL;
}

static void vol_done(void *arg, int rc, const char *text)
{
	struct vol_call *v = arg;
	if (v->req) {
		dv_api_on_close(v->req, NULL, NULL);
		if (rc == 0)
			dv_api_respond(v->req, 200, "text/plain; charset=utf-8", text, strlen(text));
		else
			dv_api_respond_error(v->req, 502, text);
	}
	free(v);
}

void dv_daemon_docker_api(struct dv_api_request *req, struct dv_engine *engine, const char *state_dir, const char *app)
{
	const char *method = dv_api_method(req), *path = dv_api_path(req);
	bool post = strcmp(method, "POST") == 0;
	char *err = NULL;
	if (strcmp(path, "/v1/volumes") == 0 || (post && strcmp(path, "/v1/volumes/delete") == 0)) {
		const char *name = dv_engine_app_name(engine, app, &err);
		if (name && !dv_engine_app_has_containers(engine, name)) {
			/* A native-only app has no volumes (and needs no engine). */
			dv_api_respond(req, 200, "text/plain; charset=utf-8", "", 0);
			return;
		}
		struct dv_runtime *d = name ? dv_engine_docker(engine, &err) : NULL;
		if (!d) {
			dv_api_respond_error(req, name ? 502 : 404, err);
			free(err);
			return;
		}
		struct vol_call *v = dv_xcalloc(1, sizeof *v);
		v->req = req;
		dv_api_on_close(req, vol_closed, v);
		dv_docker_app_volumes(d, name, strcmp(path, "/v1/volumes/delete") == 0, vol_done, v);
	} else if (post && (strcmp(path, "/v1/registry/login") == 0 || strcmp(path, "/v1/registry/logout") == 0)) {
		char *host = dv_api_query(req, "host");
		if (!host || !dv_registry_host_valid(host)) {
			dv_api_respond_error(req, 400, "give the registry as ?host=HOST[:PORT] (like registry.example.com)");
		} else if (strcmp(path, "/v1/registry/logout") == 0) {
			int rc = dv_registry_forget(state_dir, host, &err);
			if (rc < 0)
				dv_api_respond_error(req, 500, err);
			else {
				const char *msg = rc ? "credentials removed\n" : "no credentials were stored\n";
				dv_api_respond(req, 200, "text/plain; charset=utf-8", msg, strlen(msg));
			}
		} else {
			size_t len;
			const char *body = dv_api_body(req, &len);
			char *copy = dv_xstrndup(body, len);
			char *nl = strchr(copy, '\n');
			if (!nl || nl == copy) {
				dv_api_respond_error(req, 400, "the body is \"USER\\nPASSWORD\"");
			} else {
				/* The registry checks them (through the engine) before they are stored. */
				*nl = '\0';
				struct dv_runtime *d = dv_engine_docker(engine, &err);
				if (!d) {
					dv_api_respond_error(req, 502, err);
				} else {
					struct vol_call *v = dv_xcalloc(1, sizeof *v);
					v->req = req;
					dv_api_on_close(req, vol_closed, v);
					dv_docker_login(d, host, copy, nl + 1, vol_done, v);
				}
			}
			sodium_memzero(copy, len);
			free(copy);
		}
		free(host);
	} else {
		dv_api_respond_error(req, 404, "no such API endpoint");
	}
	free(err);
}

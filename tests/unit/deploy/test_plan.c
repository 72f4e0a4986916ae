/* Unit tests for deploy/plan: what the engine runs, read back from a
 * release's canonical compose JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "compose/compose.h"
#include "deploy/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct dv_plan *plan_of_text(const char *yaml, const char *env, char **json_out)
{
	struct dv_compose_project *p = NULL;
	char *err = NULL;
	static const char *const environ_none[] = {NULL};
	struct dv_compose_options opts = {.environ = environ_none, .env_file = "", .project_name = "t"};
	if (dv_compose_load_buffer("t.yml", yaml, strlen(yaml), "/tmp", &opts, &p, &err) != 0)
		fail_msg("compose: %s", err);
	size_t len;
	char *json = dv_compose_project_to_json(p, &len);
	dv_compose_project_free(p);
	struct dv_plan *plan = dv_plan_from_json(json, len, env, &err);
	if (!plan)
		fail_msg("plan: %s", err);
	if (json_out)
		*json_out = json;
	else
		free(json);
	return plan;
}

static bool has(char **v, const char *s)
{
	for (; v && *v; v++)
		if (strcmp(*v, s) == 0)
			return true;
	return false;
}

static void test_penpal_example(void **state)
{
	struct dv_compose_project *p = NULL;
	char *err = NULL;
	static const char *const environ_none[] = {NULL};
	struct dv_compose_options opts = {.environ = environ_none};
	if (dv_compose_load("examples/penpal/compose.yml", &opts, &p, &err) != 0)
		fail_msg("%s", err);
	size_t len;
	char *json = dv_compose_project_to_json(p, &len);
	dv_compose_project_free(p);
	struct dv_plan *plan = dv_plan_from_json(json, len, "production", &err);
	assert_non_null(plan);
	assert_string_equal(plan->app, "penpal");
	assert_int_equal(plan->n, 7);
	assert_string_equal(plan->services[0].name, "db");          /* dependencies first */
	assert_string_equal(plan->services[6].name, "frontend");    /* frontend last */
	const struct dv_plan_service *auth = dv_plan_service(plan, "auth");
	assert_non_null(auth);
	assert_null(auth->unsupported);
	assert_string_equal(auth->run, "node service.js");
	assert_int_equal(auth->port, 3002);
	assert_int_equal(auth->replicas, 2);
	assert_int_equal(auth->health, DV_PLAN_HEALTH_HTTP);
	assert_string_equal(auth->health_path, "/api/v1/health");
	assert_int_equal(auth->health_interval_ms, 2000);
	assert_int_equal(auth->health_retries, 3);
	assert_true(has(auth->domains, "auth.penpal.localhost"));
	assert_true(has(auth->depends_on, "db"));
	assert_true(has(auth->env, "SERVICE=auth"));
	assert_true(has(auth->env, "APP_VERSION=1"));
	assert_int_equal(auth->restart, DV_PLAN_RESTART_ALWAYS);
	assert_non_null(strstr(auth->workdir, "examples/penpal"));
	dv_plan_free(plan);
	free(json);
}

static void test_health_defaults_and_commands(void **state)
{
	struct dv_plan *plan = plan_of_text("services:\n"
	                                    "  tcp: {x-davit: {run: srv, port: 80}}\n"
	                                    "  worker: {x-davit: {run: work}}\n"
	                                    "  shell:\n"
	                                    "    x-davit: {run: srv}\n"
	                                    "    healthcheck: {test: [\"CMD-SHELL\", \"curl -f localhost\"], retries: 5}\n"
	                                    "  argv:\n"
	                                    "    x-davit: {run: srv}\n"
	                                    "    healthcheck: {test: [\"CMD\", \"check\", \"it's\"]}\n"
	                                    "  none:\n"
	                                    "    x-davit: {run: srv, port: 81}\n"
	                                    "    healthcheck: {disable: true}\n",
	                                    "production", NULL);
	assert_int_equal(dv_plan_service(plan, "tcp")->health, DV_PLAN_HEALTH_TCP);
	assert_int_equal(dv_plan_service(plan, "worker")->health, DV_PLAN_HEALTH_NONE);
	const struct dv_plan_service *sh = dv_plan_service(plan, "shell");
	assert_int_equal(sh->health, DV_PLAN_HEALTH_COMMAND);
	assert_string_equal(sh->health_cmd, "curl -f localhost");
	assert_int_equal(sh->health_retries, 5);
	const struct dv_plan_service *argv = dv_plan_service(plan, "argv");
	assert_string_equal(argv->health_cmd, "'check' 'it'\\''s'"); /* quoted for /bin/sh */
	/* a disabled healthcheck with a port falls back to TCP */
	assert_int_equal(dv_plan_service(plan, "none")->health, DV_PLAN_HEALTH_TCP);
	dv_plan_free(plan);
}

static void test_domains_per_environment_restart_and_limits(void **state)
{
	const char *yaml = "services:\n"
	                   "  web:\n"
	                   "    restart: on-failure:4\n"
	                   "    deploy: {resources: {limits: {memory: 256M, cpus: '0.5'}}}\n"
	                   "    x-davit:\n"
	                   "      run: srv\n"
	                   "      port: 8000\n"
	                   "      domains: {production: [a.example.com, b.example.com/api], staging: [s.example.com]}\n";
	struct dv_plan *prod = plan_of_text(yaml, "production", NULL);
	const struct dv_plan_service *w = dv_plan_service(prod, "web");
	assert_true(has(w->domains, "a.example.com"));
	assert_true(has(w->domains, "b.example.com/api"));
	assert_false(has(w->domains, "s.example.com"));
	assert_int_equal(w->restart, DV_PLAN_RESTART_ON_FAILURE);
	assert_int_equal(w->restart_max, 4);
	assert_int_equal(w->memory_limit, 256u * 1024 * 1024);
	assert_true(w->cpu_limit > 0.49 && w->cpu_limit < 0.51);
	dv_plan_free(prod);
	struct dv_plan *staging = plan_of_text(yaml, "staging", NULL);
	w = dv_plan_service(staging, "web");
	assert_true(has(w->domains, "s.example.com"));
	assert_false(has(w->domains, "a.example.com"));
	dv_plan_free(staging);
}

static char *plan_json_with_digests(const char *dir, size_t *len)
{
	char yaml[512];
	snprintf(yaml, sizeof yaml, "services:\n  web: {build: %s}\n  db: {image: postgres:16}\n", dir);
	struct dv_compose_project *p = NULL;
	char *err = NULL;
	static const char *const environ_none[] = {NULL};
	struct dv_compose_options opts = {.environ = environ_none, .env_file = "", .project_name = "t"};
	if (dv_compose_load_buffer("t.yml", yaml, strlen(yaml), "/tmp", &opts, &p, &err) != 0)
		fail_msg("compose: %s", err);
	size_t n;
	char *json = dv_compose_project_to_json(p, &n);
	dv_compose_project_free(p);
	char *bad = NULL;
	char *with = dv_plan_add_build_digests(json, n, len, &bad, &err);
	if (!with)
		fail_msg("digests: %s", err);
	free(json);
	return with;
}

static void test_a_changed_build_context_is_a_changed_service(void **state)
{
	char dir[] = "/tmp/davit-ctx-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128];
	snprintf(path, sizeof path, "%s/Dockerfile", dir);
	FILE *f = fopen(path, "w");
	fputs("FROM x\n", f);
	fclose(f);
	size_t l1, l2;
	char *j1 = plan_json_with_digests(dir, &l1);
	assert_non_null(strstr(j1, "\"x_build_digests\":{\"web\":\""));
	char *err = NULL;
	struct dv_plan *p1 = dv_plan_from_json(j1, l1, "production", &err);
	assert_non_null(p1);
	assert_non_null(dv_plan_service(p1, "web")->container->build_digest);
	assert_null(dv_plan_service(p1, "db")->container->build_digest);
	f = fopen(path, "w");
	fputs("FROM y\n", f);
	fclose(f);
	char *j2 = plan_json_with_digests(dir, &l2);
	struct dv_plan *p2 = dv_plan_from_json(j2, l2, "production", &err);
	assert_non_null(p2);
	/* web changed (its context did), db did not */
	assert_string_not_equal(dv_plan_service(p1, "web")->json, dv_plan_service(p2, "web")->json);
	assert_string_equal(dv_plan_service(p1, "db")->json, dv_plan_service(p2, "db")->json);
	dv_plan_free(p1);
	dv_plan_free(p2);
	free(j1);
	free(j2);
	/* a missing context names the service */
	unlink(path);
	rmdir(dir);
	char yaml[256];
	snprintf(yaml, sizeof yaml, "{\"name\":\"t\",\"services\":{\"web\":{\"build\":{\"context\":\"%s\"}}}}", dir);
	char *bad = NULL;
	size_t n;
	assert_null(dv_plan_add_build_digests(yaml, strlen(yaml), &n, &bad, &err));
	assert_string_equal(bad, "web");
	assert_non_null(strstr(err, "service 'web'"));
	free(bad);
	free(err);
}

static void test_container_services_get_a_container_plan(void **state)
{
	struct dv_plan *plan = plan_of_text(
		"services:\n"
		"  db:\n"
		"    image: postgres:16\n"
		"    volumes: [data:/var/lib/postgresql/data]\n"
		"    networks: [back]\n"
		"    expose: [\"5432\"]\n"
		"    healthcheck: {test: [\"CMD-SHELL\", \"pg_isready\"], interval: 2s}\n"
		"  api:\n"
		"    image: api:1\n"
		"    networks: [default, back]\n"
		"    labels: {traefik.http.services.api.loadbalancer.server.port: \"8000\"}\n"
		"  web: {x-davit: {run: srv}}\n"
		"networks: {back: {internal: true}}\n"
		"volumes: {data: {}}\n",
		"production", NULL);
	const struct dv_plan_service *db = dv_plan_service(plan, "db"), *api = dv_plan_service(plan, "api");
	assert_null(db->unsupported);
	assert_non_null(db->container);
	assert_null(dv_plan_service(plan, "web")->container);
	/* internal only: never routed, but the app port is known */
	assert_true(db->container->internal_only);
	assert_int_equal(db->port, 0);
	assert_int_equal(db->container->app_port, 5432);
	assert_string_equal(db->container->networks[0].name, "t_back");
	assert_string_equal(db->container->networks[0].aliases[0], "db");
	assert_string_equal(db->container->mounts[0].source, "t_data");
	/* the compose healthcheck runs in the container (Docker), not on the host */
	assert_int_equal(db->health, DV_PLAN_HEALTH_NONE);
	assert_true(db->container->health_set);
	assert_string_equal(db->container->health_test[0], "CMD-SHELL");
	assert_string_equal(db->container->health_test[1], "pg_isready");
	assert_int_equal(db->container->health_interval_ms, 2000);
	assert_true(db->container->stop_first);
	assert_non_null(strstr(db->container->stop_first_why, "volumes"));
	/* api: routed on its open network (primary), start-first */
	assert_false(api->container->internal_only);
	assert_int_equal(api->port, 8000);
	assert_string_equal(api->container->networks[0].name, "t_default");
	assert_false(api->container->stop_first);
	assert_int_equal(api->health, DV_PLAN_HEALTH_TCP);
	dv_plan_free(plan);
}

static void test_service_identity_is_its_json(void **state)
{
	/* same service, written differently: same identity; a change: different */
	struct dv_plan *a = plan_of_text("services:\n  w: {environment: [A=1, B=2], x-davit: {run: s}}\n", "production", NULL);
	struct dv_plan *b = plan_of_text("services:\n  w:\n    x-davit:\n      run: s\n    environment: {B: '2', A: '1'}\n",
	                                 "production", NULL);
	struct dv_plan *c = plan_of_text("services:\n  w: {environment: [A=1, B=3], x-davit: {run: s}}\n", "production", NULL);
	assert_string_equal(a->services[0].json, b->services[0].json);
	assert_string_not_equal(a->services[0].json, c->services[0].json);
	dv_plan_free(a);
	dv_plan_free(b);
	dv_plan_free(c);
}

static void test_bad_json_is_an_error(void **state)
{
	char *err = NULL;
	assert_null(dv_plan_from_json("{}", 2, "production", &err));
	assert_non_null(err);
	free(err);
	err = NULL;
	assert_null(dv_plan_from_json("{\"name\":", 8, "production", &err));
	assert_non_null(err);
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_penpal_example),
		cmocka_unit_test(test_health_defaults_and_commands),
		cmocka_unit_test(test_domains_per_environment_restart_and_limits),
		cmocka_unit_test(test_container_services_get_a_container_plan),
		cmocka_unit_test(test_a_changed_build_context_is_a_changed_service),
		cmocka_unit_test(test_service_identity_is_its_json),
		cmocka_unit_test(test_bad_json_is_an_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

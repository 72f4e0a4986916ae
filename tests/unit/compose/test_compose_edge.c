/* Unit tests for the edge keys of x-davit and the Traefik middleware labels
 * (src/compose/compose.c): what options string they become, that x-davit
 * wins over labels, per_domain, and errors/warnings with positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "compose/compose.h"
#include "proxy/edge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const no_env[] = {NULL};

static struct dv_compose_project *load(const char *text, char **err)
{
	struct dv_compose_options opts = {.environ = no_env, .env_file = ""};
	struct dv_compose_project *p = NULL;
	*err = NULL;
	if (dv_compose_load_buffer("edge.yml", text, strlen(text), "/tmp", &opts, &p, err) != 0)
		return NULL;
	return p;
}

static const struct dv_compose_service *svc(const struct dv_compose_project *p, const char *name)
{
	for (size_t i = 0; i < p->n_services; i++)
		if (strcmp(p->services[i].name, name) == 0)
			return &p->services[i];
	fail_msg("no service %s", name);
	return NULL;
}

static bool has_warning(const struct dv_compose_project *p, const char *needle)
{
	for (size_t i = 0; i < p->n_warnings; i++)
		if (strstr(p->warnings[i], needle))
			return true;
	return false;
}

static void test_davit_keys_and_labels(void **state)
{
	static const char text[] =
		"name: e\n"
		"services:\n"
		"  api:\n"
		"    labels:\n"
		"      traefik.http.routers.api.rule: Host(`api.test`)\n"
		"      traefik.http.routers.api.middlewares: sec@docker,lim,missing\n"
		"      traefik.http.middlewares.sec.headers.customresponseheaders.X-A: one\n"
		"      traefik.http.middlewares.sec.headers.stsSeconds: \"600\"\n"
		"      traefik.http.middlewares.sec.headers.frameDeny: \"true\"\n"
		"      traefik.http.middlewares.sec.headers.contentTypeNosniff: \"true\"\n"
		"      traefik.http.middlewares.sec.headers.browserXssFilter: \"true\"\n"
		"      traefik.http.middlewares.sec.headers.unknownOption: \"x\"\n"
		"      traefik.http.middlewares.lim.ratelimit.average: \"50\"\n"
		"      traefik.http.middlewares.lim.ratelimit.period: 1m\n"
		"      traefik.http.middlewares.unused.compress: \"true\"\n"
		"    x-davit:\n"
		"      run: ./api\n"
		"      port: 3000\n"
		"      hsts: 1y\n"
		"      max_body: 1MiB\n"
		"      headers: {csp: \"default-src 'self'\", set: {X-B: two, Server: }}\n"
		"      ban: {after: 3, within: 1m, for: 5m}\n"
		"      per_domain:\n"
		"        Admin.Test: {basic_auth: [\"root:{SHA}x\"], allow: [10.0.0.0/8]}\n";
	char *err = NULL;
	struct dv_compose_project *p = load(text, &err);
	if (!p)
		fail_msg("load failed: %s", err);
	const struct dv_compose_service *s = svc(p, "api");
	assert_non_null(s->edge);
	/* The options parse, labels first, x-davit last (it wins). */
	struct dv_edge_policy *pol = dv_edge_policy_parse(s->edge, "t", &err);
	if (!pol)
		fail_msg("'%s': %s", s->edge, err);
	assert_int_equal(pol->hsts, 31536000); /* x-davit hsts over the label's 600 */
	assert_string_equal(pol->fixed[DV_EDGE_F_FRAME], "X-Frame-Options: DENY\r\n");
	assert_true(pol->xss);
	assert_true(pol->rate_per_ms > 0.00083 && pol->rate_per_ms < 0.00084); /* 50/min */
	assert_true(pol->burst == 1);                                         /* Traefik's default */
	assert_int_equal(pol->max_body, 1024 * 1024);
	assert_string_equal(pol->csp, "default-src 'self'");
	assert_int_equal(pol->ban_after, 3);
	assert_int_equal(pol->ban_for_ms, 300000);
	assert_non_null(strstr(pol->block, "X-A: one\r\n"));
	assert_non_null(strstr(pol->block, "X-B: two\r\n"));
	assert_int_equal(pol->nheaders, 3); /* Server: with no value removes the upstream's */
	dv_edge_policy_unref(pol);
	assert_int_equal(s->n_edge_domains, 1);
	assert_string_equal(s->edge_domains[0].key, "admin.test");
	pol = dv_edge_policy_parse(s->edge_domains[0].value, "t", &err);
	assert_non_null(pol);
	assert_int_equal(pol->nusers, 1);
	assert_int_equal(pol->nallow, 1);
	dv_edge_policy_unref(pol);
	assert_true(has_warning(p, "unknownOption"));
	assert_true(has_warning(p, "middleware 'unused' is not used"));
	assert_true(has_warning(p, "middleware 'missing' is not defined"));
	/* The options go into the canonical JSON (what a release stores). */
	size_t len;
	char *json = dv_compose_project_to_json(p, &len);
	assert_non_null(strstr(json, "\"edge\":"));
	assert_non_null(strstr(json, "\"edge_domains\":{\"admin.test\":"));
	free(json);
	dv_compose_project_free(p);

	/* A service without edge keys has none, and its JSON has no "edge". */
	p = load("name: e\nservices:\n  a:\n    x-davit: {run: ./a, port: 1}\n", &err);
	assert_non_null(p);
	assert_null(svc(p, "a")->edge);
	json = dv_compose_project_to_json(p, &len);
	assert_null(strstr(json, "\"edge"));
	free(json);
	dv_compose_project_free(p);
}

static void test_errors_have_positions(void **state)
{
	struct {
		const char *text, *want;
	} cases[] = {
		{"services:\n  a:\n    x-davit:\n      run: ./a\n      rate_limit: fast\n", "edge.yml:5:19: "},
		{"services:\n  a:\n    x-davit:\n      run: ./a\n      headers: {frame: maybe}\n", "edge.yml:5:24: "},
		{"services:\n  a:\n    x-davit:\n      run: ./a\n      allow: [1.2.3.4/40]\n", "edge.yml:5:15: "},
		{"services:\n  a:\n    x-davit:\n      run: ./a\n      per_domain: {b.test: {max_body: x}}\n",
		 "edge.yml:5:39: "},
		{"services:\n  a:\n    labels:\n      traefik.http.routers.r.middlewares: m\n"
		 "      traefik.http.middlewares.m.ratelimit.burst: lots\n    x-davit: {run: ./a}\n",
		 "edge.yml:5:"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *err = NULL;
		struct dv_compose_project *p = load(cases[i].text, &err);
		if (p)
			fail_msg("case %zu loaded", i);
		if (!err || strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("case %zu: want prefix '%s', got '%s'", i, cases[i].want, err ? err : "(none)");
		free(err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_davit_keys_and_labels),
		cmocka_unit_test(test_errors_have_positions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for obs/config: x-davit alerts and notifications. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "obs/config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct dv_alert_rule *rule(const struct dv_obs_file_config *c, const char *name)
{
	for (size_t i = 0; i < c->nrules; i++)
		if (strcmp(c->rules[i].name, name) == 0)
			return &c->rules[i];
	return NULL;
}

static int parse(const char *text, struct dv_obs_file_config *out, char **err)
{
	static const char *const env[] = {"HOOK=https://hooks.example.com/x", NULL};
	struct dv_alert_rule base[16];
	size_t n = dv_alerts_default_rules(base, 16, 0);
	return dv_obs_config_parse("compose.yml", text, strlen(text), "shop", env, base, n, out, err);
}

static void test_overrides_new_rules_and_notifiers(void **state)
{
	const char *text = "name: shop\n"
	                   "x-davit:\n"
	                   "  alerts:\n"
	                   "    cpu_high: {threshold: 70, for: 10m, severity: critical}\n"
	                   "    disk_low: false\n"
	                   "    slow_api: {metric: service.p99_seconds, above: 0.5, for: 30s}\n"
	                   "  notifications:\n"
	                   "    - {type: slack, url: \"${HOOK}\", events: [alerts]}\n"
	                   "    - {type: email, url: smtp://127.0.0.1:25, from: a@x.org, to: [b@x.org, c@x.org]}\n"
	                   "services:\n"
	                   "  api:\n"
	                   "    x-davit:\n"
	                   "      alerts:\n"
	                   "        latency_high: {threshold: 0.8}\n";
	struct dv_obs_file_config c;
	char *err = NULL;
	assert_int_equal(parse(text, &c, &err), 0);
	const struct dv_alert_rule *r = rule(&c, "cpu_high");
	assert_non_null(r);
	assert_true(r->threshold == 70 && r->for_ms == 600000 && r->severity == DV_ALERT_CRITICAL);
	assert_false(rule(&c, "disk_low")->enabled);
	r = rule(&c, "slow_api");
	assert_non_null(r);
	assert_string_equal(r->metric, "service.p99_seconds");
	assert_false(r->below);
	assert_true(r->threshold == 0.5 && r->for_ms == 30000 && r->severity == DV_ALERT_WARNING);
	r = rule(&c, "latency_high@shop/api");
	assert_non_null(r);
	assert_string_equal(r->match, "shop/api");
	assert_string_equal(r->base, "latency_high");
	assert_true(r->threshold == 0.8);
	assert_true(fabs(r->hysteresis - 0.08) < 1e-9); /* scaled with the threshold */
	assert_true(rule(&c, "latency_high")->threshold == 2); /* others keep the default */
	assert_int_equal(c.nnotifiers, 2);
	assert_int_equal(c.notifiers[0].kind, DV_NOTIFY_SLACK);
	assert_string_equal(c.notifiers[0].url, "https://hooks.example.com/x");
	assert_true(c.notifiers[0].alerts && !c.notifiers[0].deploys);
	assert_int_equal(c.notifiers[1].kind, DV_NOTIFY_EMAIL);
	assert_string_equal(c.notifiers[1].to, "b@x.org,c@x.org");
	assert_string_equal(c.notifiers[1].from, "a@x.org");
	dv_obs_config_dispose(&c);
}

static void test_errors_name_the_line(void **state)
{
	struct {
		const char *text, *msg;
	} cases[] = {
		{"x-davit:\n  alerts:\n    cpu_high: {threshold: lots}\n", "compose.yml:3: threshold must be a number"},
		{"x-davit:\n  alerts:\n    cpu_high:\n      for: soon\n", "compose.yml:4: for must be a duration"},
		{"x-davit:\n  alerts:\n    mine: {above: 3}\n", "compose.yml:3: new alert 'mine' needs metric:"},
		{"x-davit:\n  alerts:\n    cpu_high: {colour: red}\n", "compose.yml:3: unknown key 'colour'"},
		{"x-davit:\n  notifications:\n    - {type: webhook, url: ftp://x}\n", "must start with http:// or https://"},
		{"x-davit:\n  notifications: {type: webhook}\n", "compose.yml:2: x-davit.notifications must be a list"},
		{"services:\n  a:\n    x-davit:\n      alerts:\n        cpu_high: {threshold: 1}\n",
		 "compose.yml:5: alert 'cpu_high' under a service must watch a service.* metric"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct dv_obs_file_config c;
		char *err = NULL;
		assert_int_equal(parse(cases[i].text, &c, &err), -1);
		assert_non_null(err);
		if (!strstr(err, cases[i].msg))
			fail_msg("case %zu: got '%s', want '%s'", i, err, cases[i].msg);
		free(err);
	}
	/* Not YAML at all: left to the compose loader (no error here). */
	struct dv_obs_file_config c;
	char *err = NULL;
	assert_int_equal(parse("a: [\n", &c, &err), 0);
	dv_obs_config_dispose(&c);
}

static void test_notify_spec_flags(void **state)
{
	struct dv_notifier_config n;
	char *err = NULL;
	assert_int_equal(dv_notify_parse_spec("discord=https://discord.example/api/webhooks/1", &n, &err), 0);
	assert_int_equal(n.kind, DV_NOTIFY_DISCORD);
	assert_int_equal(dv_notify_parse_spec("email=smtp://mail:2525?from=d@x.org&to=a@x.org,b@x.org", &n, &err), 0);
	assert_string_equal(n.url, "smtp://mail:2525");
	assert_string_equal(n.from, "d@x.org");
	assert_string_equal(n.to, "a@x.org,b@x.org");
	assert_int_equal(dv_notify_parse_spec("email=smtp://mail:2525", &n, &err), -1);
	assert_non_null(strstr(err, "needs ?from="));
	free(err);
	assert_int_equal(dv_notify_parse_spec("pager=http://x", &n, &err), -1);
	assert_non_null(strstr(err, "unknown notifier type 'pager'"));
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_overrides_new_rules_and_notifiers),
		cmocka_unit_test(test_errors_name_the_line),
		cmocka_unit_test(test_notify_spec_flags),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for metrics/alerts: the rule state machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics/alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct dv_alert_rule cpu_rule(uint64_t for_ms, uint64_t resolve_ms, double hyst)
{
	struct dv_alert_rule r;
	memset(&r, 0, sizeof r);
	snprintf(r.name, sizeof r.name, "cpu");
	snprintf(r.metric, sizeof r.metric, "host.cpu_percent");
	r.threshold = 80;
	r.hysteresis = hyst;
	r.for_ms = for_ms;
	r.resolve_ms = resolve_ms;
	r.severity = DV_ALERT_WARNING;
	r.enabled = true;
	return r;
}

/* One round at time t (ms) with the given value; returns transitions. */
static size_t round_(struct dv_alerts *a, uint64_t t, double v, struct dv_alert_transition **tr)
{
	dv_alerts_begin(a, t, (int64_t)(1700000000 + t / 1000));
	dv_alerts_observe(a, "host.cpu_percent", "host", v);
	dv_alerts_end(a);
	size_t n;
	*tr = dv_alerts_take(a, &n);
	return n;
}

static void test_fires_after_for_and_resolves_after_clear(void **state)
{
	struct dv_alerts *a = dv_alerts_new();
	struct dv_alert_rule r = cpu_rule(5000, 2000, 5);
	dv_alerts_set_rules(a, &r, 1);
	struct dv_alert_transition *tr;
	assert_int_equal(round_(a, 1000, 90, &tr), 0); /* pending */
	free(tr);
	assert_int_equal(round_(a, 4000, 95, &tr), 0); /* still pending: 3 s < 5 s */
	free(tr);
	assert_int_equal(dv_alerts_firing(a), 0);
	assert_int_equal(round_(a, 6000, 91, &tr), 1); /* 5 s held: fires */
	assert_true(tr[0].firing);
	assert_string_equal(tr[0].rule, "cpu");
	assert_string_equal(tr[0].subject, "host");
	assert_true(tr[0].value == 91);
	assert_int_equal(tr[0].severity, DV_ALERT_WARNING);
	free(tr);
	assert_int_equal(dv_alerts_firing(a), 1);
	/* De-duplicated: staying above fires nothing more. */
	for (uint64_t t = 7000; t < 20000; t += 1000) {
		assert_int_equal(round_(a, t, 99, &tr), 0);
		free(tr);
	}
	assert_int_equal(round_(a, 20000, 50, &tr), 0); /* clear starts */
	free(tr);
	assert_int_equal(round_(a, 22000, 50, &tr), 1); /* clear for 2 s: resolved */
	assert_false(tr[0].firing);
	free(tr);
	assert_int_equal(dv_alerts_firing(a), 0);
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_alerts_report(a, true, 3600, &b);
	assert_non_null(strstr(b.data, "\"state\":\"resolved\""));
	dv_strbuf_dispose(&b);
	dv_alerts_free(a);
}

static void test_pending_that_clears_sends_nothing(void **state)
{
	struct dv_alerts *a = dv_alerts_new();
	struct dv_alert_rule r = cpu_rule(5000, 1000, 5);
	dv_alerts_set_rules(a, &r, 1);
	struct dv_alert_transition *tr;
	for (uint64_t t = 0; t < 60000; t += 1000) {
		/* spikes shorter than the for-duration */
		assert_int_equal(round_(a, t, (t / 1000) % 4 == 0 ? 50 : 90, &tr), 0);
		free(tr);
	}
	assert_int_equal(dv_alerts_firing(a), 0);
	dv_alerts_free(a);
}

static void test_hysteresis_prevents_flapping(void **state)
{
	struct dv_alerts *a = dv_alerts_new();
	struct dv_alert_rule r = cpu_rule(0, 0, 5); /* fire and resolve at once, but 5 points of band */
	dv_alerts_set_rules(a, &r, 1);
	struct dv_alert_transition *tr;
	assert_int_equal(round_(a, 0, 81, &tr), 1);
	free(tr);
	size_t total = 0;
	for (uint64_t t = 1000; t < 30000; t += 1000) {
		total += round_(a, t, (t / 1000) % 2 ? 78 : 82, &tr); /* hovering around 80 */
		free(tr);
	}
	assert_int_equal(total, 0);
	assert_int_equal(round_(a, 31000, 74, &tr), 1); /* below 75: resolved */
	assert_false(tr[0].firing);
	free(tr);
	/* Without hysteresis the same hovering flaps: that is what the band is for. */
	struct dv_alerts *b = dv_alerts_new();
	struct dv_alert_rule r2 = cpu_rule(0, 0, 0);
	dv_alerts_set_rules(b, &r2, 1);
	total = 0;
	for (uint64_t t = 0; t < 10000; t += 1000) {
		total += round_(b, t, (t / 1000) % 2 ? 78 : 82, &tr);
		free(tr);
	}
	assert_int_equal(total, 10);
	dv_alerts_free(b);
	dv_alerts_free(a);
}

static void test_below_rules_subjects_and_overrides(void **state)
{
	struct dv_alert_rule rules[3];
	size_t n = dv_alerts_default_rules(rules, 3, 1000);
	assert_int_equal(n, 3);
	assert_string_equal(rules[2].name, "disk_low");
	assert_true(rules[2].below);
	struct dv_alert_rule all[16];
	n = dv_alerts_default_rules(all, 16, 0);
	assert_int_equal(n, 8);
	assert_int_equal(all[0].for_ms, 5 * 60000); /* cpu_high: 5 min */
	assert_int_equal(all[1].for_ms, 3 * 60000); /* memory_high: 3 min */
	assert_int_equal(all[3].for_ms, 2 * 60000); /* service_down: 2 min */

	struct dv_alerts *a = dv_alerts_new();
	struct dv_alert_rule p95[2];
	memset(p95, 0, sizeof p95);
	snprintf(p95[0].name, sizeof p95[0].name, "latency_high");
	snprintf(p95[0].metric, sizeof p95[0].metric, "service.p95_seconds");
	p95[0].threshold = 2;
	p95[0].enabled = true;
	p95[1] = p95[0];
	snprintf(p95[1].name, sizeof p95[1].name, "latency_high@shop/api");
	snprintf(p95[1].base, sizeof p95[1].base, "latency_high");
	snprintf(p95[1].match, sizeof p95[1].match, "shop/api");
	p95[1].threshold = 0.5;
	dv_alerts_set_rules(a, p95, 2);
	dv_alerts_begin(a, 0, 1);
	dv_alerts_observe(a, "service.p95_seconds", "shop/api", 1.0);  /* over its own 0.5 */
	dv_alerts_observe(a, "service.p95_seconds", "shop/web", 1.0);  /* under the general 2 */
	dv_alerts_observe(a, "service.p95_seconds", "shop/slow", 3.0); /* over 2 */
	dv_alerts_end(a);
	size_t nt;
	struct dv_alert_transition *tr = dv_alerts_take(a, &nt);
	assert_int_equal(nt, 2);
	bool api = false, slow = false;
	for (size_t i = 0; i < nt; i++) {
		api |= strcmp(tr[i].rule, "latency_high@shop/api") == 0 && strcmp(tr[i].subject, "shop/api") == 0;
		slow |= strcmp(tr[i].rule, "latency_high") == 0 && strcmp(tr[i].subject, "shop/slow") == 0;
		assert_false(strcmp(tr[i].rule, "latency_high") == 0 && strcmp(tr[i].subject, "shop/api") == 0);
	}
	assert_true(api && slow);
	free(tr);
	/* A subject missing from one round still fires (a failed read is not
	 * a recovery); one missing from two rounds in a row is gone and
	 * resolves; a disabled rule resolves. */
	dv_alerts_begin(a, 1000, 2);
	dv_alerts_observe(a, "service.p95_seconds", "shop/api", 1.0);
	dv_alerts_end(a);
	tr = dv_alerts_take(a, &nt);
	assert_int_equal(nt, 0);
	free(tr);
	dv_alerts_begin(a, 2000, 3);
	dv_alerts_observe(a, "service.p95_seconds", "shop/api", 1.0);
	dv_alerts_end(a);
	tr = dv_alerts_take(a, &nt);
	assert_int_equal(nt, 1);
	assert_string_equal(tr[0].subject, "shop/slow");
	assert_false(tr[0].firing);
	free(tr);
	p95[1].enabled = false;
	dv_alerts_set_rules(a, p95, 2);
	tr = dv_alerts_take(a, &nt);
	assert_int_equal(nt, 1);
	assert_string_equal(tr[0].rule, "latency_high@shop/api");
	assert_false(tr[0].firing);
	free(tr);
	dv_alerts_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fires_after_for_and_resolves_after_clear),
		cmocka_unit_test(test_pending_that_clears_sends_nothing),
		cmocka_unit_test(test_hysteresis_prevents_flapping),
		cmocka_unit_test(test_below_rules_subjects_and_overrides),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

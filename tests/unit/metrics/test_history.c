/* Unit tests for metrics/history: rollups (downsampling), tiers, retention. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics/history.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_rollup_sums_merges_and_weights(void **state)
{
	struct dv_series_point p[6];
	memset(p, 0, sizeof p);
	for (int i = 0; i < 6; i++) {
		p[i].ts = 1000 + 10 * i;
		p[i].seconds = 10;
		p[i].requests = 100;
		p[i].errors = i == 5 ? 6 : 0;
		p[i].bytes_out = 1000;
		p[i].cpu_pct = i < 3 ? 10 : 40;   /* time-weighted: 25 */
		p[i].mem_bytes = 1000 * (uint64_t)(i + 1); /* peak: 6000 */
		p[i].up = i == 0 ? 0 : 1;          /* 5/6 of the time */
		/* 95 fast (1 ms) and 5 slow (1 s) requests per point */
		p[i].hist[dv_metrics_bucket(1000)] = 95;
		p[i].hist[dv_metrics_bucket(1000000)] = 5;
	}
	struct dv_series_point r;
	dv_series_rollup(p, 6, &r);
	assert_int_equal(r.ts, 1050);
	assert_true(r.seconds == 60);
	assert_int_equal(r.requests, 600);
	assert_int_equal(r.errors, 6);
	assert_int_equal(r.bytes_out, 6000);
	assert_true(fabs(r.cpu_pct - 25) < 1e-9);
	assert_int_equal(r.mem_bytes, 6000);
	assert_true(fabs(r.up - 5.0 / 6) < 1e-9);
	/* Quantiles come from the merged histogram, not averaged: p50 fast, p99 slow. */
	assert_true(r.p50 > 0.0009 && r.p50 < 0.00125);
	assert_true(r.p99 > 0.9 && r.p99 < 1.25);
	assert_int_equal(r.hist[dv_metrics_bucket(1000000)], 30);
}

static char dbpath[256];

static void each(const char *k, const char *v, void *arg)
{
	assert_string_equal(k, "compose:/x");
	assert_string_equal(v, "app\ntext");
	(*(int *)arg)++;
}

static void test_tiers_query_and_prune(void **state)
{
	snprintf(dbpath, sizeof dbpath, "/tmp/davit-unit-history-%d.db", (int)getpid());
	unlink(dbpath);
	struct dv_history *h;
	char *err = NULL;
	assert_int_equal(dv_history_open(dbpath, 10000, &h, &err), 0);
	int64_t t0 = 1700000000;
	dv_history_begin(h);
	for (int i = 0; i < 13; i++) {
		struct dv_series_point p;
		memset(&p, 0, sizeof p);
		p.ts = t0 + 10 * i;
		p.seconds = 10;
		p.requests = (uint64_t)i;
		p.hist[dv_metrics_bucket(2000)] = (uint64_t)i;
		assert_int_equal(dv_history_add(h, "shop/api", &p), 0);
		p.requests = 1;
		assert_int_equal(dv_history_add(h, "host", &p), 0);
	}
	dv_history_commit(h);
	struct dv_series_point *pts;
	size_t n;
	int tier;
	assert_int_equal(dv_history_query(h, "shop/api", t0, t0 + 1000, 1, &pts, &n, &tier, &err), 0);
	assert_int_equal(n, 13);
	assert_int_equal(tier, 1);
	assert_int_equal(pts[12].requests, 12);
	assert_true(pts[3].p95 == 0); /* p95 comes from the caller's point; not computed here */
	free(pts);
	/* 13 points: two tier-2 points of 6 each (the 13th waits for five more). */
	assert_int_equal(dv_history_query(h, "shop/api", t0, t0 + 1000, 2, &pts, &n, &tier, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(pts[0].requests, 0 + 1 + 2 + 3 + 4 + 5);
	assert_int_equal(pts[1].requests, 6 + 7 + 8 + 9 + 10 + 11);
	assert_true(pts[0].seconds == 60);
	assert_true(pts[1].p95 > 0.0018 && pts[1].p95 < 0.0026);
	free(pts);
	/* Auto: tier 1 while it covers the range. */
	assert_int_equal(dv_history_query(h, "shop/api", t0, t0 + 1000, 0, &pts, &n, &tier, &err), 0);
	assert_int_equal(tier, 1);
	free(pts);
	char **names;
	assert_int_equal(dv_history_series(h, &names, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "host");
	assert_string_equal(names[1], "shop/api");
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	/* Retention: 8640 ticks in tier 1, 10080 rollups in tier 2. */
	dv_history_prune(h, t0 + 10 * 8640 + 35);
	assert_int_equal(dv_history_query(h, "shop/api", 0, INT64_MAX, 1, &pts, &n, &tier, &err), 0);
	assert_int_equal(n, 9); /* the first four are older than 24 h now */
	free(pts);
	assert_int_equal(dv_history_query(h, "shop/api", 0, INT64_MAX, 2, &pts, &n, &tier, &err), 0);
	assert_int_equal(n, 2);
	free(pts);
	dv_history_prune(h, t0 + 10 * 6 * 10080 + 200); /* newest rollup: t0 + 110 */
	assert_int_equal(dv_history_query(h, "shop/api", 0, INT64_MAX, 2, &pts, &n, &tier, &err), 0);
	assert_int_equal(n, 0);
	free(pts);
	/* Settings survive a reopen. */
	assert_int_equal(dv_history_config_put(h, "compose:/x", "app\ntext"), 0);
	dv_history_close(h);
	assert_int_equal(dv_history_open(dbpath, 10000, &h, &err), 0);
	int seen = 0;
	dv_history_config_each(h, each, &seen);
	assert_int_equal(seen, 1);
	dv_history_close(h);
	unlink(dbpath);
	char wal[300];
	snprintf(wal, sizeof wal, "%s-wal", dbpath);
	unlink(wal);
	snprintf(wal, sizeof wal, "%s-shm", dbpath);
	unlink(wal);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rollup_sums_merges_and_weights),
		cmocka_unit_test(test_tiers_query_and_prune),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

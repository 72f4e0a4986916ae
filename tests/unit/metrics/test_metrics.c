/* Unit tests for metrics: buckets, quantiles, shard merging, Prometheus text, gauges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "metrics/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_buckets_are_log_spaced_and_contiguous(void **state)
{
	assert_int_equal(dv_metrics_bucket(0), 0);
	assert_int_equal(dv_metrics_bucket(63), 0);
	assert_int_equal(dv_metrics_bucket(64), 1);
	assert_int_equal(dv_metrics_bucket_upper_us(0), 64);
	/* Every value lands in the bucket whose bounds hold it. */
	for (uint64_t us = 1; us < (1ull << 27); us = us * 9 / 8 + 1) {
		unsigned b = dv_metrics_bucket(us);
		assert_true(b < DV_METRICS_BUCKETS);
		uint64_t lo = b ? dv_metrics_bucket_upper_us(b - 1) : 0;
		uint64_t hi = dv_metrics_bucket_upper_us(b);
		assert_true(us >= lo);
		assert_true(us < hi);
	}
	/* Four buckets per power of two: each at most 25% wide. */
	for (unsigned b = 2; b < DV_METRICS_BUCKETS - 1; b++) {
		double lo = (double)dv_metrics_bucket_upper_us(b - 1), hi = (double)dv_metrics_bucket_upper_us(b);
		assert_true(hi > lo);
		assert_true((hi - lo) / lo <= 0.25 + 1e-9);
	}
	assert_int_equal(dv_metrics_bucket(1ull << 26), DV_METRICS_BUCKETS - 1);
	assert_true(dv_metrics_bucket_upper_us(DV_METRICS_BUCKETS - 1) == UINT64_MAX);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void test_quantiles_close_to_exact(void **state)
{
	/* A skewed distribution: mostly ~2 ms, a tail up to 3 s. */
	enum { N = 20000 };
	static uint64_t v[N];
	uint64_t hist[DV_METRICS_BUCKETS] = {0};
	uint64_t seed = 42;
	for (int i = 0; i < N; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		double u = (double)(seed >> 11) / 9007199254740992.0;
		v[i] = (uint64_t)(1500 + 1000 * u);
		if (i % 20 == 0)
			v[i] = (uint64_t)(100000 + 2900000 * u); /* 5% slow */
		hist[dv_metrics_bucket(v[i])]++;
	}
	qsort(v, N, sizeof v[0], cmp_u64);
	const double qs[] = {0.5, 0.9, 0.95, 0.99};
	for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
		double exact = (double)v[(size_t)(qs[k] * N) - 1] / 1e6;
		double est = dv_metrics_quantile(hist, qs[k]);
		assert_true(fabs(est - exact) / exact < 0.25);
	}
	uint64_t empty[DV_METRICS_BUCKETS] = {0};
	assert_true(dv_metrics_quantile(empty, 0.95) == 0);
	/* All in one bucket: the estimate stays inside it. */
	uint64_t one[DV_METRICS_BUCKETS] = {0};
	one[dv_metrics_bucket(2000)] = 10;
	double q = dv_metrics_quantile(one, 0.99);
	assert_true(q >= 0.0018 && q <= 0.0021);
}

struct worker_arg {
	struct dv_metrics_shard *sh;
	unsigned slot;
	int n;
};

static void *writer(void *p)
{
	struct worker_arg *a = p;
	for (int i = 0; i < a->n; i++) {
		dv_metrics_active(a->sh, a->slot, 1);
		dv_metrics_request(a->sh, a->slot, i % 10 == 0 ? 503 : 200, 1500000, 10, 100, i % 10 == 0);
		dv_metrics_active(a->sh, a->slot, -1);
	}
	return NULL;
}

static const struct dv_metrics_totals *find(const struct dv_metrics_snapshot *s, const char *name)
{
	for (size_t i = 0; i < s->nslots; i++)
		if (strcmp(s->names[i], name) == 0)
			return &s->slots[i];
	return NULL;
}

static void test_shards_merge_without_losing_counts(void **state)
{
	unsigned slot = dv_metrics_slot("app/merge");
	assert_true(slot > 0);
	assert_int_equal(dv_metrics_slot("app/merge"), slot); /* same name, same slot */
	struct worker_arg a[3];
	pthread_t t[3];
	for (int i = 0; i < 3; i++) {
		a[i] = (struct worker_arg){dv_metrics_shard_new(), slot, 10000};
		pthread_create(&t[i], NULL, writer, &a[i]);
	}
	/* Readers may run while writers write. */
	for (int k = 0; k < 50; k++) {
		struct dv_metrics_snapshot s;
		dv_metrics_snapshot_take(&s);
		const struct dv_metrics_totals *m = find(&s, "app/merge");
		assert_non_null(m);
		assert_true(dv_metrics_totals_requests(m) <= 30000);
		dv_metrics_snapshot_free(&s);
	}
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	struct dv_metrics_snapshot s;
	dv_metrics_snapshot_take(&s);
	const struct dv_metrics_totals *m = find(&s, "app/merge");
	assert_int_equal(m->requests[1], 27000);
	assert_int_equal(m->requests[4], 3000);
	assert_int_equal(m->upstream_errors, 3000);
	assert_int_equal(m->bytes_in, 300000);
	assert_int_equal(m->bytes_out, 3000000);
	assert_int_equal(m->active, 0);
	assert_int_equal(m->hist[dv_metrics_bucket(1500)], 30000);
	dv_metrics_snapshot_free(&s);
	/* A freed shard's counts stay in the totals (counters never go back). */
	dv_metrics_shard_free(a[0].sh);
	dv_metrics_snapshot_take(&s);
	m = find(&s, "app/merge");
	assert_int_equal(dv_metrics_totals_requests(m), 30000);
	dv_metrics_snapshot_free(&s);
	dv_metrics_shard_free(a[1].sh);
	dv_metrics_shard_free(a[2].sh);
}

static void test_totals_sub_gives_deltas(void **state)
{
	struct dv_metrics_totals a = {0}, b = {0}, d;
	a.requests[1] = 10;
	a.hist[3] = 7;
	b.requests[1] = 25;
	b.hist[3] = 9;
	b.bytes_out = 100;
	dv_metrics_totals_sub(&d, &b, &a);
	assert_int_equal(d.requests[1], 15);
	assert_int_equal(d.hist[3], 2);
	assert_int_equal(d.bytes_out, 100);
	dv_metrics_totals_sub(&d, &a, &b); /* never wraps */
	assert_int_equal(d.requests[1], 0);
}

static void test_prometheus_text(void **state)
{
	struct dv_metrics_shard *sh = dv_metrics_shard_new();
	unsigned slot = dv_metrics_slot("shop/api\"x");
	dv_metrics_request(sh, slot, 200, 3000000, 0, 50, false);   /* 3 ms */
	dv_metrics_request(sh, slot, 404, 100000, 0, 10, false);    /* 0.1 ms */
	dv_metrics_request(sh, slot, 0, 2500000000ull, 0, 0, false); /* 2.5 s, no status */
	struct dv_metrics_snapshot s;
	dv_metrics_snapshot_take(&s);
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_metrics_prom_requests(&b, &s, "service");
	const char *t = b.data;
	assert_non_null(strstr(t, "# TYPE davit_http_requests_total counter\n"));
	assert_non_null(strstr(t, "davit_http_requests_total{app=\"shop\",service=\"api\\\"x\",code=\"2xx\"} 1\n"));
	assert_non_null(strstr(t, "davit_http_requests_total{app=\"shop\",service=\"api\\\"x\",code=\"4xx\"} 1\n"));
	assert_non_null(strstr(t, "davit_http_requests_total{app=\"shop\",service=\"api\\\"x\",code=\"other\"} 1\n"));
	assert_non_null(strstr(t, "# TYPE davit_http_request_duration_seconds histogram\n"));
	/* Cumulative buckets: <= 0.000128 s holds the 0.1 ms request, <= 0.004096 s two, +Inf all. */
	assert_non_null(strstr(t, "_bucket{app=\"shop\",service=\"api\\\"x\",le=\"0.000128\"} 1\n"));
	assert_non_null(strstr(t, "_bucket{app=\"shop\",service=\"api\\\"x\",le=\"0.004096\"} 2\n"));
	assert_non_null(strstr(t, "_bucket{app=\"shop\",service=\"api\\\"x\",le=\"2.09715\"} 2\n"));
	assert_non_null(strstr(t, "_bucket{app=\"shop\",service=\"api\\\"x\",le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(t, "davit_http_request_duration_seconds_count{app=\"shop\",service=\"api\\\"x\"} 3\n"));
	assert_non_null(strstr(t, "davit_http_request_duration_seconds_sum{app=\"shop\",service=\"api\\\"x\"} 2.5031\n"));
	assert_non_null(strstr(t, "davit_http_response_body_bytes_total{app=\"shop\",service=\"api\\\"x\"} 60\n"));
	/* Every line is a comment or "name{labels} value". */
	for (const char *line = t; *line;) {
		const char *nl = strchr(line, '\n');
		assert_non_null(nl);
		if (*line != '#') {
			const char *sp = memchr(line, ' ', (size_t)(nl - line));
			assert_non_null(sp);
			char *end;
			strtod(sp + 1, &end);
			assert_true(end == nl || strncmp(sp + 1, "+Inf", 4) == 0);
		}
		line = nl + 1;
	}
	dv_strbuf_dispose(&b);
	dv_metrics_snapshot_free(&s);
	/* A route label for `davit proxy`: one label, no app split. */
	dv_metrics_slot("a.example.com/api");
	dv_metrics_request(sh, dv_metrics_slot("a.example.com/api"), 200, 1000, 0, 0, false);
	dv_metrics_snapshot_take(&s);
	dv_strbuf_init(&b);
	dv_metrics_prom_requests(&b, &s, "route");
	assert_non_null(strstr(b.data, "davit_http_requests_total{route=\"a.example.com/api\",code=\"2xx\"} 1\n"));
	dv_strbuf_dispose(&b);
	dv_metrics_snapshot_free(&s);
	dv_metrics_shard_free(sh);
}

static void test_gauges_and_cert_hook(void **state)
{
	dv_metrics_cert_expiry_set("example.com", 1900000000);
	dv_metrics_cert_expiry_set("b.example.com", 1800000000);
	dv_metrics_cert_expiry_set("example.com", 1950000000); /* replaces */
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_metrics_prom_gauges(&b);
	assert_non_null(strstr(b.data, "# TYPE davit_certificate_expiry_timestamp_seconds gauge\n"));
	assert_non_null(strstr(b.data, "davit_certificate_expiry_timestamp_seconds{domain=\"example.com\"} 1950000000\n"));
	assert_non_null(strstr(b.data, "davit_certificate_expiry_timestamp_seconds{domain=\"b.example.com\"} 1800000000\n"));
	/* One TYPE line per family. */
	assert_null(strstr(strstr(b.data, "# TYPE") + 1, "# TYPE davit_certificate"));
	dv_strbuf_dispose(&b);
	dv_metrics_gauge_remove("davit_certificate_expiry_timestamp_seconds", "domain=\"b.example.com\"");
	dv_strbuf_init(&b);
	dv_metrics_prom_gauges(&b);
	assert_null(strstr(b.data, "b.example.com"));
	dv_strbuf_dispose(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets_are_log_spaced_and_contiguous),
		cmocka_unit_test(test_quantiles_close_to_exact),
		cmocka_unit_test(test_shards_merge_without_losing_counts),
		cmocka_unit_test(test_totals_sub_gives_deltas),
		cmocka_unit_test(test_prometheus_text),
		cmocka_unit_test(test_gauges_and_cert_hook),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

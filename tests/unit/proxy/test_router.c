/* Unit tests for the route table and upstream pools (src/proxy/router.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct dv_route_table *table_of(const char *const *specs, size_t n)
{
	struct dv_route_table *t = dv_route_table_new();
	for (size_t i = 0; i < n; i++) {
		char *err = NULL;
		int rc = dv_route_table_add_spec(t, specs[i], DV_BALANCE_ROUND_ROBIN, &err);
		if (rc != 0)
			fail_msg("spec '%s': %s", specs[i], err);
	}
	return t;
}

/* Returns the label of the first backend of the matched pool, or "none". */
static const char *route(const struct dv_route_table *t, const char *host, const char *path)
{
	struct dv_upstream_pool *p = dv_route_table_match(t, host, strlen(host), path, strlen(path));
	return p ? p->backends[0].label : "none";
}

static void test_exact_wildcard_any(void **state)
{
	const char *specs[] = {
		"app.example.com=127.0.0.1:1001",
		"*.example.com=127.0.0.1:1002",
		"*.deep.example.com=127.0.0.1:1003",
		"*=127.0.0.1:1004",
	};
	struct dv_route_table *t = table_of(specs, 4);
	assert_string_equal(route(t, "app.example.com", "/"), "127.0.0.1:1001");
	assert_string_equal(route(t, "APP.Example.COM", "/x"), "127.0.0.1:1001");
	assert_string_equal(route(t, "app.example.com:8080", "/"), "127.0.0.1:1001");
	assert_string_equal(route(t, "app.example.com.", "/"), "127.0.0.1:1001");
	assert_string_equal(route(t, "other.example.com", "/"), "127.0.0.1:1002");
	assert_string_equal(route(t, "a.b.example.com", "/"), "127.0.0.1:1002");
	assert_string_equal(route(t, "x.deep.example.com", "/"), "127.0.0.1:1003");
	/* the wildcard does not match the bare domain */
	assert_string_equal(route(t, "example.com", "/"), "127.0.0.1:1004");
	assert_string_equal(route(t, "unknown.org", "/"), "127.0.0.1:1004");
	assert_string_equal(route(t, "", "/"), "127.0.0.1:1004");
	assert_int_equal(dv_route_table_count(t), 4);
	dv_route_table_free(t);
}

static void test_no_match_without_fallback(void **state)
{
	const char *specs[] = {"app.example.com=127.0.0.1:1001"};
	struct dv_route_table *t = table_of(specs, 1);
	assert_string_equal(route(t, "nope.example.com", "/"), "none");
	assert_string_equal(route(t, "", "/"), "none");
	dv_route_table_free(t);
}

static void test_longest_prefix_on_segments(void **state)
{
	const char *specs[] = {
		"app.example.com=127.0.0.1:2001",
		"app.example.com/api=127.0.0.1:2002",
		"app.example.com/api/v2/=127.0.0.1:2003",
	};
	struct dv_route_table *t = table_of(specs, 3);
	assert_string_equal(route(t, "app.example.com", "/"), "127.0.0.1:2001");
	assert_string_equal(route(t, "app.example.com", "/api"), "127.0.0.1:2002");
	assert_string_equal(route(t, "app.example.com", "/api/"), "127.0.0.1:2002");
	assert_string_equal(route(t, "app.example.com", "/api?x=1"), "127.0.0.1:2002");
	assert_string_equal(route(t, "app.example.com", "/apis"), "127.0.0.1:2001");
	assert_string_equal(route(t, "app.example.com", "/api/v2"), "127.0.0.1:2003");
	assert_string_equal(route(t, "app.example.com", "/api/v2/users"), "127.0.0.1:2003");
	assert_string_equal(route(t, "app.example.com", "/api/v22"), "127.0.0.1:2002");
	dv_route_table_free(t);
}

static void test_path_only_host_falls_through(void **state)
{
	/* An exact host with only /api routes: other paths fall to the wildcard. */
	const char *specs[] = {"app.example.com/api=127.0.0.1:3001", "*.example.com=127.0.0.1:3002"};
	struct dv_route_table *t = table_of(specs, 2);
	assert_string_equal(route(t, "app.example.com", "/api/x"), "127.0.0.1:3001");
	assert_string_equal(route(t, "app.example.com", "/web"), "127.0.0.1:3002");
	dv_route_table_free(t);
}

static void test_bad_specs(void **state)
{
	const char *bad[] = {
		"app.example.com",                    /* no = */
		"=127.0.0.1:80",                      /* no host */
		"app.example.com=",                   /* no replica */
		"app.example.com=127.0.0.1",          /* no port */
		"app.example.com=127.0.0.1:0",        /* port 0 */
		"app.example.com=127.0.0.1:70000",    /* port too big */
		"app exa.com=127.0.0.1:80",           /* space in host */
		"app.example.com/a b=127.0.0.1:80",   /* space in path */
		"a$b.com=127.0.0.1:80",               /* bad char */
		"app.example.com=::1:80",             /* v6 without brackets */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct dv_route_table *t = dv_route_table_new();
		char *err = NULL;
		int rc = dv_route_table_add_spec(t, bad[i], DV_BALANCE_ROUND_ROBIN, &err);
		if (rc == 0)
			fail_msg("spec '%s' was accepted", bad[i]);
		assert_non_null(err);
		assert_true(strlen(err) > 10);
		free(err);
		dv_route_table_free(t);
	}
}

static void test_duplicate_route_rejected(void **state)
{
	struct dv_route_table *t = dv_route_table_new();
	char *err = NULL;
	assert_int_equal(dv_route_table_add_spec(t, "a.com/x=127.0.0.1:1", DV_BALANCE_ROUND_ROBIN, &err), 0);
	assert_int_equal(dv_route_table_add_spec(t, "A.com/x/=127.0.0.1:2", DV_BALANCE_ROUND_ROBIN, &err), -1);
	assert_non_null(strstr(err, "duplicate"));
	free(err);
	dv_route_table_free(t);
}

static void test_ipv6_and_names(void **state)
{
	const char *specs[] = {"v6.test=[::1]:4001", "name.test=localhost:4002"};
	struct dv_route_table *t = table_of(specs, 2);
	assert_string_equal(route(t, "v6.test", "/"), "[::1]:4001");
	const char *l = route(t, "name.test", "/");
	assert_true(strcmp(l, "127.0.0.1:4002") == 0 || strcmp(l, "[::1]:4002") == 0);
	dv_route_table_free(t);
}

static void test_load_file_with_line_numbers(void **state)
{
	char path[] = "/tmp/dv_routes_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "# comment\n\napp.test=127.0.0.1:5001  # trailing comment\n"
	                   "  api.test/v1 = 127.0.0.1:5002, 127.0.0.1:5003\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	struct dv_route_table *t = dv_route_table_new();
	char *err = NULL;
	assert_int_equal(dv_route_table_load_file(t, path, DV_BALANCE_ROUND_ROBIN, &err), 0);
	assert_int_equal(dv_route_table_count(t), 2);
	struct dv_upstream_pool *p = dv_route_table_match(t, "api.test", 8, "/v1/x", 5);
	assert_non_null(p);
	assert_int_equal(p->nbackends, 2);
	dv_route_table_free(t);

	FILE *f = fopen(path, "w");
	fputs("ok.test=127.0.0.1:1\n# c\nbad.test=127.0.0.1\n", f);
	fclose(f);
	t = dv_route_table_new();
	assert_int_equal(dv_route_table_load_file(t, path, DV_BALANCE_ROUND_ROBIN, &err), -1);
	char want[64];
	snprintf(want, sizeof want, "%s:3:", path);
	assert_true(strncmp(err, want, strlen(want)) == 0);
	free(err);
	dv_route_table_free(t);
	unlink(path);

	t = dv_route_table_new();
	assert_int_equal(dv_route_table_load_file(t, "/nonexistent/routes", DV_BALANCE_ROUND_ROBIN, &err), -1);
	assert_non_null(strstr(err, "cannot open"));
	free(err);
	dv_route_table_free(t);
}

static void test_round_robin_and_ejection(void **state)
{
	const char *specs[] = {"rr.test=127.0.0.1:6001,127.0.0.1:6002,127.0.0.1:6003"};
	struct dv_route_table *t = table_of(specs, 1);
	struct dv_upstream_pool *p = dv_route_table_match(t, "rr.test", 7, "/", 1);
	int counts[3] = {0};
	for (int i = 0; i < 300; i++) {
		struct dv_backend *b = dv_upstream_pool_pick(p, 1000, 0);
		counts[b - p->backends]++;
	}
	assert_int_equal(counts[0], 100);
	assert_int_equal(counts[1], 100);
	assert_int_equal(counts[2], 100);

	/* three failures eject backend 1 for 10 s */
	struct dv_backend *b1 = &p->backends[1];
	for (int i = 0; i < 3; i++)
		dv_backend_connect_failed(b1, 1000, 3, 10000);
	for (int i = 0; i < 30; i++)
		assert_ptr_not_equal(dv_upstream_pool_pick(p, 2000, 0), b1);
	/* after the ejection ends it is picked again */
	int seen = 0;
	for (int i = 0; i < 30; i++)
		seen += dv_upstream_pool_pick(p, 11001, 0) == b1;
	assert_int_equal(seen, 10);
	dv_backend_connect_succeeded(b1);
	assert_int_equal(atomic_load(&b1->connect_failures), 0);

	/* tried mask: a request never gets the same replica twice */
	uint64_t tried = 0;
	for (int i = 0; i < 3; i++) {
		struct dv_backend *b = dv_upstream_pool_pick(p, 20000, tried);
		assert_non_null(b);
		assert_false(tried & dv_upstream_pool_bit(p, b));
		tried |= dv_upstream_pool_bit(p, b);
	}
	assert_null(dv_upstream_pool_pick(p, 20000, tried));

	/* all ejected: still try one rather than fail without trying */
	for (size_t k = 0; k < 3; k++)
		for (int i = 0; i < 3; i++)
			dv_backend_connect_failed(&p->backends[k], 30000, 3, 10000);
	assert_non_null(dv_upstream_pool_pick(p, 30001, 0));
	/* unhealthy ones are never picked */
	for (size_t k = 0; k < 3; k++)
		atomic_store(&p->backends[k].healthy, false);
	assert_null(dv_upstream_pool_pick(p, 30001, 0));
	dv_route_table_free(t);
}

static void test_least_conn(void **state)
{
	struct dv_route_table *t = dv_route_table_new();
	char *err = NULL;
	assert_int_equal(dv_route_table_add_spec(t, "lc.test=127.0.0.1:7001,127.0.0.1:7002", DV_BALANCE_LEAST_CONN, &err), 0);
	struct dv_upstream_pool *p = dv_route_table_match(t, "lc.test", 7, "/", 1);
	atomic_store(&p->backends[0].inflight, 5);
	for (int i = 0; i < 10; i++)
		assert_ptr_equal(dv_upstream_pool_pick(p, 0, 0), &p->backends[1]);
	atomic_store(&p->backends[1].inflight, 9);
	assert_ptr_equal(dv_upstream_pool_pick(p, 0, 0), &p->backends[0]);
	dv_route_table_free(t);
}

static void test_pool_sharing_and_refs(void **state)
{
	const char *specs[] = {"a.test=127.0.0.1:8001,127.0.0.1:8002", "b.test=127.0.0.1:8002,127.0.0.1:8001",
	                       "c.test=127.0.0.1:8003"};
	struct dv_route_table *t = table_of(specs, 3);
	struct dv_upstream_pool *a = dv_route_table_match(t, "a.test", 6, "/", 1);
	struct dv_upstream_pool *b = dv_route_table_match(t, "b.test", 6, "/", 1);
	struct dv_upstream_pool *c = dv_route_table_match(t, "c.test", 6, "/", 1);
	assert_ptr_equal(a, b); /* same replica set: one pool */
	assert_true(dv_upstream_pool_same_backends(a, b));
	assert_false(dv_upstream_pool_same_backends(a, c));
	/* a request's reference keeps a pool alive after its table is freed */
	dv_upstream_pool_ref(c);
	dv_route_table_free(t);
	assert_int_equal(atomic_load(&c->refs), 1);
	dv_upstream_pool_drain(c, 1234);
	assert_true(atomic_load(&c->draining));
	assert_int_equal(atomic_load(&c->drain_deadline), 1234);
	dv_upstream_pool_unref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact_wildcard_any),
		cmocka_unit_test(test_no_match_without_fallback),
		cmocka_unit_test(test_longest_prefix_on_segments),
		cmocka_unit_test(test_path_only_host_falls_through),
		cmocka_unit_test(test_bad_specs),
		cmocka_unit_test(test_duplicate_route_rejected),
		cmocka_unit_test(test_ipv6_and_names),
		cmocka_unit_test(test_load_file_with_line_numbers),
		cmocka_unit_test(test_round_robin_and_ejection),
		cmocka_unit_test(test_least_conn),
		cmocka_unit_test(test_pool_sharing_and_refs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for src/core: durations, numbers, addresses, CIDRs, the event
 * loop's timers and wake-ups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/loop.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_durations(void **state)
{
	struct { const char *text; uint64_t ms; } ok[] = {
		{"250ms", 250}, {"5s", 5000}, {"2m", 120000}, {"1h", 3600000}, {"1m30s", 90000},
		{"7", 7000}, {"0", 0}, {"1d", 86400000}, {"1h2m3s4ms", 3723004},
	};
	for (size_t i = 0; i < DV_ARRAY_LEN(ok); i++) {
		uint64_t ms = 12345;
		assert_int_equal(dv_parse_duration_ms(ok[i].text, &ms), 0);
		assert_int_equal(ms, ok[i].ms);
	}
	const char *bad[] = {"", "s", "5x", "-1s", "1.5s", "5 s", "ms", "99999999999999999999999h"};
	for (size_t i = 0; i < DV_ARRAY_LEN(bad); i++) {
		uint64_t ms;
		if (dv_parse_duration_ms(bad[i], &ms) == 0)
			fail_msg("'%s' was accepted as %llu ms", bad[i], (unsigned long long)ms);
	}
}

static void test_uint(void **state)
{
	uint64_t v;
	assert_int_equal(dv_parse_uint("65535", 65535, &v), 0);
	assert_int_equal(v, 65535);
	assert_int_equal(dv_parse_uint("65536", 65535, &v), -1);
	assert_int_equal(dv_parse_uint("18446744073709551615", UINT64_MAX, &v), 0);
	assert_int_equal(dv_parse_uint("18446744073709551616", UINT64_MAX, &v), -1);
	assert_int_equal(dv_parse_uint("", 10, &v), -1);
	assert_int_equal(dv_parse_uint("+1", 10, &v), -1);
	assert_int_equal(dv_parse_uint("1 ", 10, &v), -1);
}

static void test_sockaddr(void **state)
{
	struct dv_sockaddr a, b;
	char *err = NULL;
	char buf[80];
	assert_int_equal(dv_sockaddr_parse("127.0.0.1:8080", true, &a, &err), 0);
	assert_string_equal(dv_sockaddr_format(&a, buf, sizeof buf), "127.0.0.1:8080");
	assert_int_equal(dv_sockaddr_parse("[::1]:443", true, &b, &err), 0);
	assert_string_equal(dv_sockaddr_format(&b, buf, sizeof buf), "[::1]:443");
	assert_string_equal(dv_sockaddr_format_ip(&b, buf, sizeof buf), "::1");
	assert_false(dv_sockaddr_equal(&a, &b));
	struct dv_sockaddr c;
	assert_int_equal(dv_sockaddr_parse("127.0.0.1:8080", true, &c, &err), 0);
	assert_true(dv_sockaddr_equal(&a, &c));
	const char *bad[] = {"127.0.0.1", ":80", "127.0.0.1:", "127.0.0.1:0", "1.2.3.4:65536",
	                     "::1:80", "[::1:80", "[::1]80", "localhost:80"};
	for (size_t i = 0; i < DV_ARRAY_LEN(bad); i++) {
		err = NULL;
		if (dv_sockaddr_parse(bad[i], true, &c, &err) == 0)
			fail_msg("'%s' was accepted", bad[i]);
		assert_non_null(err);
		free(err);
	}
	/* names resolve when allowed */
	assert_int_equal(dv_sockaddr_parse("localhost:80", false, &c, &err), 0);
}

static void test_cidr(void **state)
{
	struct dv_cidr net;
	struct dv_sockaddr sa;
	char *err = NULL;
	assert_int_equal(dv_cidr_parse("10.0.0.0/8", &net), 0);
	assert_int_equal(dv_sockaddr_parse("10.1.2.3:1", true, &sa, &err), 0);
	assert_true(dv_cidr_contains(&net, &sa));
	assert_int_equal(dv_sockaddr_parse("11.1.2.3:1", true, &sa, &err), 0);
	assert_false(dv_cidr_contains(&net, &sa));
	assert_int_equal(dv_cidr_parse("127.0.0.1", &net), 0);
	assert_int_equal(net.prefix, 32);
	assert_int_equal(dv_sockaddr_parse("127.0.0.1:1", true, &sa, &err), 0);
	assert_true(dv_cidr_contains(&net, &sa));
	/* IPv4-mapped IPv6 peers match IPv4 networks */
	assert_int_equal(dv_sockaddr_parse("[::ffff:127.0.0.1]:1", true, &sa, &err), 0);
	assert_true(dv_cidr_contains(&net, &sa));
	assert_int_equal(dv_cidr_parse("fd00::/8", &net), 0);
	assert_int_equal(dv_sockaddr_parse("[fd12::1]:1", true, &sa, &err), 0);
	assert_true(dv_cidr_contains(&net, &sa));
	assert_int_equal(dv_cidr_parse("172.16.0.0/12", &net), 0);
	assert_int_equal(dv_sockaddr_parse("172.31.255.255:1", true, &sa, &err), 0);
	assert_true(dv_cidr_contains(&net, &sa));
	assert_int_equal(dv_sockaddr_parse("172.32.0.0:1", true, &sa, &err), 0);
	assert_false(dv_cidr_contains(&net, &sa));
	assert_int_equal(dv_cidr_parse("1.2.3.4/33", &net), -1);
	assert_int_equal(dv_cidr_parse("nope", &net), -1);
	assert_int_equal(dv_cidr_parse("/8", &net), -1);
}

/* ---- loop ---- */

struct fired {
	struct dv_timer timer;
	int order;
	int *counter;
};

static void on_fire(struct dv_loop *loop, struct dv_timer *t)
{
	struct fired *f = dv_container_of(t, struct fired, timer);
	f->order = ++*f->counter;
}

static void stop_loop(struct dv_loop *loop, struct dv_timer *t)
{
	dv_loop_stop(loop);
}

static void test_timers_order_and_lazy_rekey(void **state)
{
	char *err = NULL;
	struct dv_loop *loop = dv_loop_new(&err);
	assert_non_null(loop);
	uint64_t now = dv_loop_update_now(loop);
	int counter = 0;
	struct fired f[5];
	memset(f, 0, sizeof f);
	for (int i = 0; i < 5; i++) {
		f[i].timer.cb = on_fire;
		f[i].counter = &counter;
	}
	dv_timer_set(loop, &f[0].timer, now + 40);
	dv_timer_set(loop, &f[1].timer, now + 10);
	dv_timer_set(loop, &f[2].timer, now + 30);
	dv_timer_set(loop, &f[3].timer, now + 20);
	dv_timer_set(loop, &f[4].timer, now + 5);
	/* push f[1] later than all (lazy path), pull f[0] earlier (sift-up path) */
	dv_timer_set(loop, &f[1].timer, now + 60);
	dv_timer_set(loop, &f[0].timer, now + 1);
	/* cancel f[2] */
	dv_timer_cancel(loop, &f[2].timer);
	assert_false(dv_timer_armed(&f[2].timer));
	struct dv_timer stop = {.cb = stop_loop};
	dv_timer_set(loop, &stop, now + 80);
	assert_int_equal(dv_loop_run(loop, NULL, NULL), 0);
	assert_true(dv_loop_now(loop) >= now + 60);
	assert_int_equal(f[0].order, 1);
	assert_int_equal(f[4].order, 2);
	assert_int_equal(f[3].order, 3);
	assert_int_equal(f[1].order, 4);
	assert_int_equal(f[2].order, 0);
	dv_loop_free(loop);
}

static void test_many_timers_heap(void **state)
{
	char *err = NULL;
	struct dv_loop *loop = dv_loop_new(&err);
	enum { N = 2000 };
	struct fired *f = calloc(N, sizeof *f);
	int counter = 0;
	uint64_t now = dv_loop_update_now(loop);
	srand(42);
	for (int i = 0; i < N; i++) {
		f[i].timer.cb = on_fire;
		f[i].counter = &counter;
		dv_timer_set(loop, &f[i].timer, now + 1 + (uint64_t)(rand() % 30));
	}
	for (int i = 0; i < N; i += 3)
		dv_timer_cancel(loop, &f[i].timer);
	struct dv_timer stop = {.cb = stop_loop};
	dv_timer_set(loop, &stop, now + 50);
	dv_loop_run(loop, NULL, NULL);
	int fired = 0;
	for (int i = 0; i < N; i++) {
		if (i % 3 == 0)
			assert_int_equal(f[i].order, 0);
		else {
			assert_true(f[i].order > 0);
			fired++;
		}
	}
	assert_int_equal(fired, counter);
	free(f);
	dv_loop_free(loop);
}

struct io_test {
	struct dv_io io;
	char got[16];
	size_t len;
};

static void on_readable(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct io_test *t = dv_container_of(io, struct io_test, io);
	ssize_t n;
	while ((n = read(io->fd, t->got + t->len, sizeof t->got - 1 - t->len)) > 0)
		t->len += (size_t)n;
	if (t->len >= 5)
		dv_loop_stop(loop);
}

static void test_io_edge_triggered(void **state)
{
	char *err = NULL;
	struct dv_loop *loop = dv_loop_new(&err);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	struct io_test t = {.io = {.fd = sv[0], .cb = on_readable}};
	assert_int_equal(dv_loop_add(loop, &t.io, EPOLLIN), 0);
	assert_int_equal(write(sv[1], "hello", 5), 5);
	dv_loop_run(loop, NULL, NULL);
	assert_int_equal(t.len, 5);
	assert_memory_equal(t.got, "hello", 5);
	dv_loop_del(loop, &t.io);
	close(sv[0]);
	close(sv[1]);
	dv_loop_free(loop);
}

static int wakes;

static void on_wake(struct dv_loop *loop, void *arg)
{
	wakes++;
	dv_loop_stop(loop);
}

static void *waker(void *arg)
{
	dv_loop_wake(arg);
	return NULL;
}

static void test_cross_thread_wake(void **state)
{
	char *err = NULL;
	struct dv_loop *loop = dv_loop_new(&err);
	assert_int_equal(dv_loop_set_wake(loop, on_wake, NULL), 0);
	pthread_t th;
	pthread_create(&th, NULL, waker, loop);
	dv_loop_run(loop, NULL, NULL);
	pthread_join(th, NULL);
	assert_int_equal(wakes, 1);
	dv_loop_free(loop);
}

static void test_alloc_helpers(void **state)
{
	char *s = dv_xasprintf("%s-%d", "a", 7);
	assert_string_equal(s, "a-7");
	dv_free(&s);
	assert_null(s);
	char *d = dv_xstrndup("hello", 3);
	assert_string_equal(d, "hel");
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_uint),
		cmocka_unit_test(test_sockaddr),
		cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_timers_order_and_lazy_rekey),
		cmocka_unit_test(test_many_timers_heap),
		cmocka_unit_test(test_io_edge_triggered),
		cmocka_unit_test(test_cross_thread_wake),
		cmocka_unit_test(test_alloc_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

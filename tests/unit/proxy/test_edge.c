/* Unit tests for edge policies: options parsing, token buckets, IP table
 * eviction, path normalisation, ETags and ranges, Accept-Encoding
 * negotiation, password hashes, compression round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/compress.h"
#include "proxy/edge.h"
#include "proxy/ratelimit.h"
#include "proxy/router.h"
#include "proxy/static.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static struct dv_sockaddr ip4(const char *text)
{
	struct dv_sockaddr sa;
	memset(&sa, 0, sizeof sa);
	struct sockaddr_in *in = (struct sockaddr_in *)&sa.addr;
	in->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, text, &in->sin_addr), 1);
	sa.len = sizeof *in;
	return sa;
}

static struct dv_sockaddr ip_n(uint32_t n)
{
	struct dv_sockaddr sa;
	memset(&sa, 0, sizeof sa);
	struct sockaddr_in *in = (struct sockaddr_in *)&sa.addr;
	in->sin_family = AF_INET;
	in->sin_addr.s_addr = htonl(n);
	sa.len = sizeof *in;
	return sa;
}

/* ---- options ---- */

static void test_parse_defaults_and_options(void **state)
{
	char *err = NULL;
	struct dv_edge_policy *p = dv_edge_policy_parse("", "r", &err);
	assert_non_null(p);
	assert_true(p->preset);
	assert_int_equal(p->max_body, 10 * 1024 * 1024);
	assert_true(p->gzip && p->br);
	assert_int_equal(p->hsts, 31536000);
	assert_true(p->rate_per_ms == 0);
	assert_non_null(p->fixed[DV_EDGE_F_NOSNIFF]);
	dv_edge_policy_unref(p);

	p = dv_edge_policy_parse("ratelimit=100/1m burst=20 maxbody=1MiB compress=gzip csp=\"default-src 'self'\" "
	                         "allow=10.0.0.0/8,::1 ban=5/1m/10m header=X-A:b hsts=off headers=off frame=deny",
	                         "r", &err);
	assert_non_null(p);
	assert_true(p->rate_per_ms > 0.00166 && p->rate_per_ms < 0.00167);
	assert_true(p->burst == 20);
	assert_int_equal(p->max_body, 1024 * 1024);
	assert_true(p->gzip && !p->br);
	assert_string_equal(p->csp, "default-src 'self'");
	assert_int_equal(p->nallow, 2);
	assert_int_equal(p->ban_after, 5);
	assert_int_equal(p->ban_window_ms, 60000);
	assert_int_equal(p->ban_for_ms, 600000);
	assert_string_equal(p->block, "X-A: b\r\n");
	assert_null(p->fixed[DV_EDGE_F_HSTS]);
	assert_null(p->fixed[DV_EDGE_F_NOSNIFF]); /* preset off */
	assert_string_equal(p->fixed[DV_EDGE_F_FRAME], "X-Frame-Options: DENY\r\n");
	dv_edge_policy_unref(p);

	const char *bad[] = {"ratelimit=0/1m", "maxbody=big", "bogus=1", "allow=300.1.1.1", "ban=5/1m",
	                     "header=Bad Name:x", "csp=\"unterminated", "static=relative/dir", "auth=nohash",
	                     "auth=u:$2y$10$abc", "hsts=soon", "noequals"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err = NULL;
		p = dv_edge_policy_parse(bad[i], "r", &err);
		if (p)
			fail_msg("'%s' was accepted", bad[i]);
		assert_non_null(err);
		free(err);
	}
	assert_int_equal(dv_edge_option_check("maxbody", "2k", &err), 0);
	assert_int_equal(dv_edge_option_check("spa", "maybe", &err), -1);
	free(err);

	char *opts = NULL;
	dv_edge_options_add(&opts, "csp", "default-src 'self' \"x\"");
	dv_edge_options_add(&opts, "spa", "on");
	p = dv_edge_policy_parse(opts, "r", &err);
	assert_non_null(p);
	assert_string_equal(p->csp, "default-src 'self' \"x\"");
	assert_true(p->spa);
	dv_edge_policy_unref(p);
	free(opts);
}

static void test_route_spec_options(void **state)
{
	struct dv_route_table *t = dv_route_table_new();
	char *err = NULL;
	assert_int_equal(dv_route_table_add_spec(t, "a.test=127.0.0.1:1, 127.0.0.1:2 ratelimit=5/s", 0, &err), 0);
	assert_int_equal(dv_route_table_add_spec(t, "b.test=127.0.0.1:1", 0, &err), 0);
	assert_int_equal(dv_route_table_add_spec(t, "s.test=static:/tmp spa=on", 0, &err), 0);
	struct dv_upstream_pool *pool;
	struct dv_edge_policy *policy;
	assert_true(dv_route_table_lookup(t, "a.test", 6, "/", 1, &pool, &policy));
	assert_int_equal(pool->nbackends, 2);
	assert_non_null(policy);
	assert_true(policy->rate_per_ms > 0);
	assert_true(dv_route_table_lookup(t, "b.test", 6, "/", 1, &pool, &policy));
	assert_null(policy); /* no options: the plain path */
	assert_true(dv_route_table_lookup(t, "s.test", 6, "/x", 2, &pool, &policy));
	assert_null(pool);
	assert_non_null(policy);
	assert_true(policy->spa && policy->root_fd >= 0);
	assert_false(dv_route_table_lookup(t, "c.test", 6, "/", 1, &pool, &policy));
	assert_int_equal(dv_route_table_add_spec(t, "d.test=127.0.0.1:1 ratelimit=x", 0, &err), -1);
	assert_non_null(strstr(err, "ratelimit=x"));
	free(err);
	dv_route_table_set_edge_defaults(t, "headers=on");
	assert_int_equal(dv_route_table_add_spec(t, "e.test=127.0.0.1:1", 0, &err), 0);
	assert_true(dv_route_table_lookup(t, "e.test", 6, "/", 1, &pool, &policy));
	assert_non_null(policy);
	dv_route_table_free(t);
}

/* ---- token bucket and IP table ---- */

static void test_token_bucket(void **state)
{
	struct dv_iptable *t = dv_iptable_new(64);
	struct dv_sockaddr a = ip4("10.0.0.1"), b = ip4("10.0.0.2");
	double rate = 2.0 / 1000.0; /* 2 per second */
	uint64_t retry = 0;
	for (int i = 0; i < 3; i++)
		assert_true(dv_iptable_take(t, &a, 7, 1000, rate, 3, &retry));
	assert_false(dv_iptable_take(t, &a, 7, 1000, rate, 3, &retry));
	assert_true(retry >= 499 && retry <= 501);
	assert_true(dv_iptable_take(t, &b, 7, 1000, rate, 3, &retry));  /* another client */
	assert_true(dv_iptable_take(t, &a, 8, 1000, rate, 3, &retry));  /* another route */
	assert_false(dv_iptable_take(t, &a, 7, 1400, rate, 3, &retry)); /* 0.8 token */
	assert_true(dv_iptable_take(t, &a, 7, 1500, rate, 3, &retry));  /* 1.0 */
	assert_true(dv_iptable_take(t, &a, 7, 10000, rate, 3, &retry)); /* refills up to the burst only */
	assert_true(dv_iptable_take(t, &a, 7, 10000, rate, 3, &retry));
	assert_true(dv_iptable_take(t, &a, 7, 10000, rate, 3, &retry));
	assert_false(dv_iptable_take(t, &a, 7, 10000, rate, 3, &retry));
	dv_iptable_free(t);
}

static void test_iptable_bounded_eviction_keeps_bans(void **state)
{
	struct dv_iptable *t = dv_iptable_new(1024);
	assert_int_equal(dv_iptable_capacity(t), 1024);
	struct dv_sockaddr victim = ip4("192.0.2.7");
	/* Ban one client. */
	assert_false(dv_iptable_strike(t, &victim, 1, 100, 2, 10000, 60000));
	assert_true(dv_iptable_strike(t, &victim, 1, 200, 2, 10000, 60000));
	assert_int_equal(dv_iptable_banned_until(t, &victim, 1, 300), 60200);
	/* A million distinct addresses: memory stays at the capacity. */
	for (uint32_t i = 0; i < 1000000; i++) {
		struct dv_sockaddr sa = ip_n(0x0a000000u + i);
		dv_iptable_take(t, &sa, 1, 1000 + i / 1000, 0.001, 5, NULL);
	}
	assert_int_equal(dv_iptable_used(t), 1024);
	/* The banned client survived the flood (bans are evicted last). */
	assert_int_equal(dv_iptable_banned_until(t, &victim, 1, 5000), 60200);
	/* ...and the ban expires. */
	assert_int_equal(dv_iptable_banned_until(t, &victim, 1, 60200), 0);
	/* Strikes outside the window start over. */
	struct dv_sockaddr c = ip4("198.51.100.1");
	assert_false(dv_iptable_strike(t, &c, 2, 0, 2, 1000, 5000));
	assert_false(dv_iptable_strike(t, &c, 2, 5000, 2, 1000, 5000));
	assert_true(dv_iptable_strike(t, &c, 2, 5500, 2, 1000, 5000));
	dv_iptable_free(t);
}

static void test_client_ip_and_lists(void **state)
{
	struct dv_cidr trusted[2];
	assert_int_equal(dv_cidr_parse("127.0.0.1/32", &trusted[0]), 0);
	assert_int_equal(dv_cidr_parse("10.0.0.0/8", &trusted[1]), 0);
	struct dv_sockaddr peer = ip4("127.0.0.1"), out;
	char buf[64];
	const char *xff = "6.6.6.6, 203.0.113.9, 10.1.2.3";
	dv_edge_client_ip(&peer, true, xff, strlen(xff), trusted, 2, &out);
	assert_string_equal(dv_sockaddr_format_ip(&out, buf, sizeof buf), "203.0.113.9");
	dv_edge_client_ip(&peer, false, xff, strlen(xff), trusted, 2, &out);
	assert_string_equal(dv_sockaddr_format_ip(&out, buf, sizeof buf), "127.0.0.1");
	const char *garbage = "nonsense";
	dv_edge_client_ip(&peer, true, garbage, strlen(garbage), trusted, 2, &out);
	assert_string_equal(dv_sockaddr_format_ip(&out, buf, sizeof buf), "127.0.0.1");
	const char *v6 = "2001:db8::1";
	dv_edge_client_ip(&peer, true, v6, strlen(v6), trusted, 2, &out);
	assert_string_equal(dv_sockaddr_format_ip(&out, buf, sizeof buf), "2001:db8::1");

	char *err = NULL;
	struct dv_edge_policy *p = dv_edge_policy_parse("allow=10.0.0.0/8 deny=10.9.0.0/16", "r", &err);
	struct dv_sockaddr a = ip4("10.1.1.1"), b = ip4("10.9.1.1"), c = ip4("8.8.8.8");
	assert_true(dv_edge_ip_allowed(p, &a));
	assert_false(dv_edge_ip_allowed(p, &b));
	assert_false(dv_edge_ip_allowed(p, &c));
	dv_edge_policy_unref(p);
}

/* ---- static ---- */

static void test_normalize(void **state)
{
	char out[256];
	bool dir;
	struct {
		const char *in, *want; /* want NULL: refused */
	} cases[] = {
		{"/", ""}, {"/index.html", "index.html"}, {"/a//b/", "a/b"}, {"/a/b?x=../..", "a/b"},
		{"/caf%C3%A9.txt", "caf\xc3\xa9.txt"}, {"/a%20b", "a b"}, {"/.well-known/x", ".well-known/x"},
		{"/../etc/passwd", NULL}, {"/a/../b", NULL}, {"/a/./b", NULL}, {"/%2e%2e/x", NULL}, {"/%2E/x", NULL},
		{"/a%2fb", NULL}, {"/a%5cb", NULL}, {"/a\\b", NULL}, {"/a%00b", NULL}, {"/.git/config", NULL},
		{"/a/.env", NULL}, {"/%zz", NULL}, {"/%4", NULL}, {"relative", NULL}, {"/..", NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int rc = dv_static_normalize(cases[i].in, strlen(cases[i].in), out, sizeof out, &dir);
		if (!cases[i].want) {
			if (rc != -1)
				fail_msg("'%s' was accepted as '%s'", cases[i].in, out);
		} else {
			if (rc != 0)
				fail_msg("'%s' was refused", cases[i].in);
			assert_string_equal(out, cases[i].want);
		}
	}
	/* An embedded NUL in the raw bytes is refused too. */
	assert_int_equal(dv_static_normalize("/a\0b", 4, out, sizeof out, &dir), -1);
	assert_int_equal(dv_static_normalize("/docs/", 6, out, sizeof out, &dir), 0);
	assert_true(dir);
	/* Too long for the buffer: refused, not truncated. */
	assert_int_equal(dv_static_normalize("/aaaaaaaaaaaaaaaaaaaa", 21, out, 8, &dir), -1);
}

static void test_etag_range_hashed(void **state)
{
	char etag[64];
	dv_static_etag(1234, 0xabcdef, NULL, etag, sizeof etag);
	assert_string_equal(etag, "\"4d2-abcdef\"");
	dv_static_etag(1234, 0xabcdef, "-br", etag, sizeof etag);
	assert_string_equal(etag, "\"4d2-abcdef-br\"");
	const char *e = "\"4d2-abcdef\"";
	assert_true(dv_static_etag_match(e, strlen(e), e));
	const char *list = "\"x\", W/\"4d2-abcdef\"";
	assert_true(dv_static_etag_match(list, strlen(list), e));
	assert_true(dv_static_etag_match("*", 1, e));
	assert_false(dv_static_etag_match("\"4d2\"", 5, e));

	uint64_t s, n;
	assert_int_equal(dv_static_parse_range("bytes=0-9", 9, 100, &s, &n), 1);
	assert_true(s == 0 && n == 9);
	assert_int_equal(dv_static_parse_range("bytes=90-", 9, 100, &s, &n), 1);
	assert_true(s == 90 && n == 99);
	assert_int_equal(dv_static_parse_range("bytes=-10", 9, 100, &s, &n), 1);
	assert_true(s == 90 && n == 99);
	assert_int_equal(dv_static_parse_range("bytes=-1000", 11, 100, &s, &n), 1);
	assert_true(s == 0 && n == 99);
	assert_int_equal(dv_static_parse_range("bytes=50-5000", 13, 100, &s, &n), 1);
	assert_true(s == 50 && n == 99);
	assert_int_equal(dv_static_parse_range("bytes=100-", 10, 100, &s, &n), -1);
	assert_int_equal(dv_static_parse_range("bytes=-0", 8, 100, &s, &n), -1);
	assert_int_equal(dv_static_parse_range("bytes=5-1", 9, 100, &s, &n), 0);
	assert_int_equal(dv_static_parse_range("bytes=0-1,3-4", 13, 100, &s, &n), 0);
	assert_int_equal(dv_static_parse_range("items=0-1", 9, 100, &s, &n), 0);
	assert_int_equal(dv_static_parse_range("bytes=x-1", 9, 100, &s, &n), 0);

	assert_true(dv_static_hashed_name("assets/app.3f9a1c2b.js"));
	assert_true(dv_static_hashed_name("index-BdX3kq7_.js"));
	assert_true(dv_static_hashed_name("main.abc123def456.css"));
	assert_false(dv_static_hashed_name("index.html"));
	assert_false(dv_static_hashed_name("app.js"));
	assert_false(dv_static_hashed_name("jquery-3.7.1.min.js"));
	assert_false(dv_static_hashed_name("favicon.ico"));
	assert_false(dv_static_hashed_name("longname_without_digits.js"));
}

/* ---- negotiation and types ---- */

static void test_negotiation(void **state)
{
	struct {
		const char *ae;
		enum dv_edge_encoding want;
	} cases[] = {
		{"gzip", DV_EDGE_ENC_GZIP}, {"br", DV_EDGE_ENC_BR}, {"gzip, deflate, br", DV_EDGE_ENC_BR},
		{"br;q=0.5, gzip;q=0.8", DV_EDGE_ENC_GZIP}, {"br;q=0, gzip", DV_EDGE_ENC_GZIP},
		{"gzip;q=0", DV_EDGE_ENC_IDENTITY}, {"identity", DV_EDGE_ENC_IDENTITY}, {"*", DV_EDGE_ENC_BR},
		{"*;q=0", DV_EDGE_ENC_IDENTITY}, {"GZIP", DV_EDGE_ENC_GZIP}, {"x-gzip", DV_EDGE_ENC_GZIP},
		{"", DV_EDGE_ENC_IDENTITY}, {"gzip;q=1.0, br;q=0.999", DV_EDGE_ENC_GZIP}, {"deflate", DV_EDGE_ENC_IDENTITY},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		enum dv_edge_encoding got = dv_edge_negotiate(cases[i].ae, strlen(cases[i].ae), true, true);
		if (got != cases[i].want)
			fail_msg("'%s': got %d, want %d", cases[i].ae, got, cases[i].want);
	}
	assert_int_equal(dv_edge_negotiate("br", 2, true, false), DV_EDGE_ENC_IDENTITY);
	assert_int_equal(dv_edge_negotiate("gzip, br", 8, true, false), DV_EDGE_ENC_GZIP);

	const char *yes[] = {"text/html; charset=utf-8", "application/json", "image/svg+xml", "application/ld+json",
	                     "text/css", "application/javascript"};
	const char *no[] = {"text/event-stream", "image/png", "application/zip", "video/mp4", "application/octet-stream",
	                    "font/woff2", ""};
	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
		assert_true(dv_edge_compressible_type(yes[i], strlen(yes[i])));
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
		if (dv_edge_compressible_type(no[i], strlen(no[i])))
			fail_msg("'%s' would be compressed", no[i]);
}

/* ---- passwords (vectors from `openssl passwd`) ---- */

static void test_passwords(void **state)
{
	struct {
		const char *hash;
	} good[] = {
		{"$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1"},
		{"$5$saltsalt$i1q2ZQzc.tl/BQ6CHiENAcVDvEY6nJ1OWlWXKh94b1."},
		{"$apr1$abcdefgh$M2T3erDstkD7SsE2QQnfH0"},
		{"$1$abcdefgh$7.vq19w/w3Vm.hk1FOA7Q/"},
		{"{SHA}/vNB+F2HQ559kaLUZbmHHvZrXpg="},
		{"s3cret"},
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		if (!dv_edge_password_ok(good[i].hash, "s3cret", 6))
			fail_msg("'%s' did not verify", good[i].hash);
		if (dv_edge_password_ok(good[i].hash, "s3creT", 6))
			fail_msg("'%s' verified a wrong password", good[i].hash);
		if (dv_edge_password_ok(good[i].hash, "s3cret!", 7))
			fail_msg("'%s' verified a longer password", good[i].hash);
	}
	/* rounds= (glibc test vector of the sha-crypt specification) */
	assert_true(dv_edge_password_ok("$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
	                                "Hello world!", 12));
	assert_true(dv_edge_password_ok("$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/"
	                                "UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
	                                "Hello world!", 12));
	/* A 100-byte password (longer than a digest) exercises the P sequence. */
	char longpw[101];
	memset(longpw, 'x', 100);
	longpw[100] = '\0';
	assert_true(dv_edge_password_ok("$6$longsalt$WmkbvfXE10UwkO1OCsVMaekfajp33K4qmUMgXoLWkDQR.vHHhsyjQcRZO1Rm/gGCy01nKlRwVID28zlEBZ8Xq/", longpw, 100));
	assert_true(dv_edge_password_ok("$5$longsalt$K7xvKU8IZ/SsJUsgQGH8qhnODKxR6Xr9KkXZS14lTi5", longpw, 100));
	assert_true(dv_edge_password_ok("$apr1$longsalt$uzTfwHY4eLTHOIoOOewP3/", longpw, 100));
	assert_false(dv_edge_password_ok("$6$longsalt$WmkbvfXE10UwkO1OCsVMaekfajp33K4qmUMgXoLWkDQR.vHHhsyjQcRZO1Rm/gGCy01nKlRwVID28zlEBZ8Xq/", longpw, 99));
	assert_false(dv_edge_password_ok("$6$x$bogus", "s3cret", 6));
	assert_false(dv_edge_password_ok("$9$x$y", "s3cret", 6));

	char *err = NULL;
	struct dv_edge_policy *p = dv_edge_policy_parse("auth=alice:{SHA}/vNB+F2HQ559kaLUZbmHHvZrXpg= auth=bob:pw", "r", &err);
	assert_non_null(p);
	const char *ok1 = "Basic YWxpY2U6czNjcmV0";  /* alice:s3cret */
	const char *ok2 = "basic Ym9iOnB3";          /* bob:pw */
	const char *bad1 = "Basic YWxpY2U6d3Jvbmc="; /* alice:wrong */
	const char *bad2 = "Basic Ym9iOnM zY3JldA=="; /* not base64 */
	const char *bad3 = "Bearer abc";
	assert_true(dv_edge_auth_ok(p, ok1, strlen(ok1)));
	assert_true(dv_edge_auth_ok(p, ok2, strlen(ok2)));
	assert_false(dv_edge_auth_ok(p, bad1, strlen(bad1)));
	assert_false(dv_edge_auth_ok(p, bad2, strlen(bad2)));
	assert_false(dv_edge_auth_ok(p, bad3, strlen(bad3)));
	dv_edge_policy_unref(p);
}

/* ---- compression ---- */

static void test_gzip_stream_and_unchunk(void **state)
{
	static char in[200000], out[300000], back[200000];
	for (size_t i = 0; i < sizeof in; i++)
		in[i] = "davit edge compress "[i % 20];
	struct dv_compressor *c = dv_compressor_new(DV_EDGE_ENC_GZIP);
	assert_non_null(c);
	size_t off = 0, produced_total = 0;
	int rc = 0;
	/* Feed in small pieces with small output windows, as the proxy does. */
	while (rc != 1) {
		size_t piece = sizeof in - off < 3000 ? sizeof in - off : 3000;
		size_t used, made;
		enum dv_compress_op op = off == sizeof in ? DV_COMPRESS_FINISH : DV_COMPRESS_PROCESS;
		rc = dv_compressor_run(c, op, in + off, piece, &used, out + produced_total, 512, &made);
		assert_true(rc >= 0);
		off += used;
		produced_total += made;
	}
	dv_compressor_free(c);
	z_stream z;
	memset(&z, 0, sizeof z);
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = (Bytef *)out;
	z.avail_in = (uInt)produced_total;
	z.next_out = (Bytef *)back;
	z.avail_out = sizeof back;
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z.total_out, sizeof in);
	inflateEnd(&z);
	assert_memory_equal(in, back, sizeof in);

	/* Chunked framing, fed one byte at a time. */
	const char *wire = "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n";
	struct dv_unchunk u;
	dv_unchunk_init(&u);
	char data[32];
	size_t nd = 0;
	for (size_t i = 0; i < strlen(wire);) {
		size_t avail;
		size_t skip = dv_unchunk_skip(&u, wire + i, 1, &avail);
		i += skip;
		if (avail) {
			data[nd++] = wire[i];
			dv_unchunk_took(&u, 1);
			i++;
		} else if (!skip) {
			break;
		}
	}
	data[nd] = '\0';
	assert_string_equal(data, "hello world");
	assert_true(u.done);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_defaults_and_options),
		cmocka_unit_test(test_route_spec_options),
		cmocka_unit_test(test_token_bucket),
		cmocka_unit_test(test_iptable_bounded_eviction_keeps_bans),
		cmocka_unit_test(test_client_ip_and_lists),
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_etag_range_hashed),
		cmocka_unit_test(test_negotiation),
		cmocka_unit_test(test_passwords),
		cmocka_unit_test(test_gzip_stream_and_unchunk),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* libFuzzer target for the edge-policy parsers that see client bytes: static
 * path normalisation, Range, If-None-Match, Accept-Encoding, Authorization
 * and the chunked decoder used by compression; plus the options parser.
 * Besides crashes and sanitizer reports it aborts on broken invariants: a
 * normalised path that could leave the root, a range outside the file.
 *
 * Input: byte 0 picks the parser, the rest is its input. */
// fuzz-sources: src/proxy/edge.c src/proxy/auth.c src/proxy/static.c src/proxy/compress.c src/core/*.c src/http/*.c
// fuzz-libs: -lcrypto -lz -lbrotlienc -lpthread -lm
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/compress.h"
#include "proxy/edge.h"
#include "proxy/static.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                        \
		if (!(cond)) {                                                                      \
			fprintf(stderr, "fuzz_edge: invariant failed at line %d: %s\n", __LINE__, #cond); \
			abort();                                                                    \
		}                                                                                   \
	} while (0)

static void check_path(const char *in, size_t n)
{
	char out[512];
	bool dir;
	if (dv_static_normalize(in, n, out, sizeof out, &dir) != 0)
		return;
	size_t len = strlen(out);
	CHECK(len < sizeof out);
	CHECK(len == 0 || out[0] != '/');
	CHECK(len == 0 || out[len - 1] != '/');
	CHECK(strstr(out, "//") == NULL);
	CHECK(strchr(out, '\\') == NULL);
	/* No "." or ".." segment, no hidden one but .well-known. */
	const char *seg = out;
	while (*seg) {
		const char *end = strchr(seg, '/');
		size_t sl = end ? (size_t)(end - seg) : strlen(seg);
		CHECK(sl > 0);
		if (seg[0] == '.')
			CHECK(sl == 11 && memcmp(seg, ".well-known", 11) == 0);
		seg += sl + (end ? 1 : 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *in = (const char *)data + 1;
	size_t n = size - 1;
	char *text = malloc(n + 1);
	memcpy(text, in, n);
	text[n] = '\0';
	switch (data[0] % 6) {
	case 0:
		check_path(in, n);
		break;
	case 1: {
		uint64_t fsize = n ? (uint64_t)(unsigned char)in[0] * 977 : 0, s = 0, e = 0;
		int r = dv_static_parse_range(in, n, fsize, &s, &e);
		if (r == 1)
			CHECK(s <= e && e < fsize);
		char etag[64];
		dv_static_etag(fsize, 42, NULL, etag, sizeof etag);
		(void)dv_static_etag_match(in, n, etag);
		break;
	}
	case 2: {
		enum dv_edge_encoding enc = dv_edge_negotiate(in, n, true, true);
		CHECK(enc == DV_EDGE_ENC_IDENTITY || enc == DV_EDGE_ENC_GZIP || enc == DV_EDGE_ENC_BR);
		CHECK(dv_edge_negotiate(in, n, false, false) == DV_EDGE_ENC_IDENTITY);
		(void)dv_edge_compressible_type(in, n);
		break;
	}
	case 3: {
		char *err = NULL;
		struct dv_edge_policy *p = dv_edge_policy_parse(text, "fuzz", &err);
		CHECK((p == NULL) != (err == NULL));
		if (p) {
			for (int i = 0; i < 7; i++)
				if (p->fixed[i])
					CHECK(strpbrk(p->fixed[i], "\n") == p->fixed[i] + strlen(p->fixed[i]) - 1);
			CHECK(!p->block_len || p->block[p->block_len - 1] == '\n');
		}
		dv_edge_policy_unref(p);
		free(err);
		break;
	}
	case 4: {
		static struct dv_edge_policy *p;
		if (!p) {
			char *err = NULL;
			p = dv_edge_policy_parse("auth=a:{SHA}/vNB+F2HQ559kaLUZbmHHvZrXpg= auth=b:$apr1$x$y auth=c:plain", "f", &err);
			CHECK(p != NULL);
		}
		(void)dv_edge_auth_ok(p, in, n);
		break;
	}
	case 5: {
		struct dv_unchunk u;
		dv_unchunk_init(&u);
		size_t i = 0, total = 0;
		while (i < n && !u.done) {
			size_t avail;
			size_t skip = dv_unchunk_skip(&u, in + i, n - i, &avail);
			CHECK(skip <= n - i && avail <= n - i - skip);
			i += skip;
			size_t take = avail > 3 ? avail / 2 + 1 : avail;
			dv_unchunk_took(&u, take);
			i += take;
			total += take;
			if (!skip && !take)
				break;
		}
		CHECK(total <= n);
		break;
	}
	}
	free(text);
	return 0;
}

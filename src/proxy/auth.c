/* Basic auth for edge policies: password hashes checked with OpenSSL's
 * digests. Supported: sha512-crypt ($6$) and sha256-crypt ($5$) as made by
 * `openssl passwd -6/-5` and mkpasswd, Apache MD5 ($apr1$, `htpasswd -m`,
 * `openssl passwd -apr1`) and md5-crypt ($1$), {SHA} (htpasswd -s), and
 * plain text. bcrypt ($2y$, `htpasswd -B`) is not in OpenSSL: refused when
 * the policy is parsed (edge.c). */
#include "proxy/edge.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char b64t[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static char *b64_24(char *out, unsigned b2, unsigned b1, unsigned b0, int n)
{
	unsigned w = (b2 << 16) | (b1 << 8) | b0;
	while (n-- > 0) {
		*out++ = b64t[w & 0x3f];
		w >>= 6;
	}
	return out;
}

struct md {
	EVP_MD_CTX *c;
	const EVP_MD *md;
};

static void md_begin(struct md *m)
{
	EVP_DigestInit_ex(m->c, m->md, NULL);
}

static void md_add(struct md *m, const void *d, size_t n)
{
	EVP_DigestUpdate(m->c, d, n);
}

static void md_end(struct md *m, unsigned char *out)
{
	EVP_DigestFinal_ex(m->c, out, NULL);
}

/* md5-crypt / apr1: the hash part (22 chars) into out. */
static bool md5crypt(const char *magic, const char *salt, size_t slen, const char *pw, size_t plen, char *out)
{
	struct md m = {EVP_MD_CTX_new(), EVP_md5()};
	struct md m2 = {EVP_MD_CTX_new(), EVP_md5()};
	if (!m.c || !m2.c) {
		EVP_MD_CTX_free(m.c);
		EVP_MD_CTX_free(m2.c);
		return false;
	}
	unsigned char fin[16];
	size_t mlen = strlen(magic);
	md_begin(&m2);
	md_add(&m2, pw, plen);
	md_add(&m2, salt, slen);
	md_add(&m2, pw, plen);
	md_end(&m2, fin);
	md_begin(&m);
	md_add(&m, pw, plen);
	md_add(&m, magic, mlen);
	md_add(&m, salt, slen);
	for (size_t pl = plen; pl > 0; pl -= pl > 16 ? 16 : pl)
		md_add(&m, fin, pl > 16 ? 16 : pl);
	memset(fin, 0, sizeof fin);
	for (size_t i = plen; i; i >>= 1)
		md_add(&m, (i & 1) ? (const void *)fin : (const void *)pw, 1);
	md_end(&m, fin);
	for (int i = 0; i < 1000; i++) {
		md_begin(&m2);
		if (i & 1)
			md_add(&m2, pw, plen);
		else
			md_add(&m2, fin, 16);
		if (i % 3)
			md_add(&m2, salt, slen);
		if (i % 7)
			md_add(&m2, pw, plen);
		if (i & 1)
			md_add(&m2, fin, 16);
		else
			md_add(&m2, pw, plen);
		md_end(&m2, fin);
	}
	char *o = out;
	o = b64_24(o, fin[0], fin[6], fin[12], 4);
	o = b64_24(o, fin[1], fin[7], fin[13], 4);
	o = b64_24(o, fin[2], fin[8], fin[14], 4);
	o = b64_24(o, fin[3], fin[9], fin[15], 4);
	o = b64_24(o, fin[4], fin[10], fin[5], 4);
	o = b64_24(o, 0, 0, fin[11], 2);
	*o = '\0';
	EVP_MD_CTX_free(m.c);
	EVP_MD_CTX_free(m2.c);
	return true;
}

/* sha256-crypt / sha512-crypt (Drepper's specification): the hash part. */
static bool shacrypt(bool is512, const char *salt, size_t slen, unsigned long rounds, const char *pw, size_t plen,
                     char *out)
{
	size_t hl = is512 ? 64 : 32;
	struct md m = {EVP_MD_CTX_new(), is512 ? EVP_sha512() : EVP_sha256()};
	struct md a = {EVP_MD_CTX_new(), m.md};
	unsigned char A[64], B[64], DP[64], DS[64];
	unsigned char *P = malloc(plen + 1), *S = malloc(slen + 1);
	bool ok = m.c && a.c && P && S;
	if (!ok)
		goto out;
	md_begin(&m);
	md_add(&m, pw, plen);
	md_add(&m, salt, slen);
	md_add(&m, pw, plen);
	md_end(&m, B);
	md_begin(&a);
	md_add(&a, pw, plen);
	md_add(&a, salt, slen);
	size_t cnt;
	for (cnt = plen; cnt > hl; cnt -= hl)
		md_add(&a, B, hl);
	md_add(&a, B, cnt);
	for (cnt = plen; cnt > 0; cnt >>= 1)
		if (cnt & 1)
			md_add(&a, B, hl);
		else
			md_add(&a, pw, plen);
	md_end(&a, A);
	md_begin(&m);
	for (size_t i = 0; i < plen; i++)
		md_add(&m, pw, plen);
	md_end(&m, DP);
	for (cnt = 0; cnt + hl <= plen; cnt += hl)
		memcpy(P + cnt, DP, hl);
	memcpy(P + cnt, DP, plen - cnt);
	md_begin(&m);
	for (size_t i = 0; i < 16u + A[0]; i++)
		md_add(&m, salt, slen);
	md_end(&m, DS);
	memcpy(S, DS, slen); /* slen <= 16 < hl */
	for (unsigned long r = 0; r < rounds; r++) {
		md_begin(&m);
		if (r & 1)
			md_add(&m, P, plen);
		else
			md_add(&m, A, hl);
		if (r % 3)
			md_add(&m, S, slen);
		if (r % 7)
			md_add(&m, P, plen);
		if (r & 1)
			md_add(&m, A, hl);
		else
			md_add(&m, P, plen);
		md_end(&m, A);
	}
	char *o = out;
	if (is512) {
		static const unsigned char ord[21][3] = {
			{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26}, {6, 27, 48},
			{28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13},
			{56, 14, 35}, {15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19}, {62, 20, 41},
		};
		for (int i = 0; i < 21; i++)
			o = b64_24(o, A[ord[i][0]], A[ord[i][1]], A[ord[i][2]], 4);
		o = b64_24(o, 0, 0, A[63], 2);
	} else {
		static const unsigned char ord[10][3] = {
			{0, 10, 20}, {21, 1, 11}, {12, 22, 2}, {3, 13, 23}, {24, 4, 14},
			{15, 25, 5}, {6, 16, 26}, {27, 7, 17}, {18, 28, 8}, {9, 19, 29},
		};
		for (int i = 0; i < 10; i++)
			o = b64_24(o, A[ord[i][0]], A[ord[i][1]], A[ord[i][2]], 4);
		o = b64_24(o, 0, A[31], A[30], 3);
	}
	*o = '\0';
out:
	EVP_MD_CTX_free(m.c);
	EVP_MD_CTX_free(a.c);
	if (P)
		OPENSSL_cleanse(P, plen);
	free(P);
	free(S);
	OPENSSL_cleanse(A, sizeof A);
	return ok;
}

static bool same(const char *a, const char *b)
{
	size_t n = strlen(a);
	return n == strlen(b) && CRYPTO_memcmp(a, b, n) == 0;
}

bool dv_edge_password_ok(const char *hash, const char *pw, size_t plen)
{
	char out[128];
	if (!strncmp(hash, "{SHA}", 5)) {
		unsigned char d[20];
		unsigned int dl = 0;
		if (!EVP_Digest(pw, plen, d, &dl, EVP_sha1(), NULL))
			return false;
		unsigned char enc[64];
		EVP_EncodeBlock(enc, d, 20);
		return same((const char *)enc, hash + 5);
	}
	bool apr = !strncmp(hash, "$apr1$", 6), md5 = !strncmp(hash, "$1$", 3);
	if (apr || md5) {
		const char *salt = hash + (apr ? 6 : 3);
		const char *end = strchr(salt, '$');
		if (!end)
			return false;
		size_t slen = (size_t)(end - salt);
		if (slen > 8)
			slen = 8;
		if (!md5crypt(apr ? "$apr1$" : "$1$", salt, slen, pw, plen, out))
			return false;
		return same(out, end + 1);
	}
	if (!strncmp(hash, "$5$", 3) || !strncmp(hash, "$6$", 3)) {
		bool is512 = hash[1] == '6';
		const char *salt = hash + 3;
		unsigned long rounds = 5000;
		if (!strncmp(salt, "rounds=", 7)) {
			char *e;
			rounds = strtoul(salt + 7, &e, 10);
			if (*e != '$')
				return false;
			if (rounds < 1000)
				rounds = 1000;
			if (rounds > 999999999)
				rounds = 999999999;
			salt = e + 1;
		}
		const char *end = strchr(salt, '$');
		if (!end)
			return false;
		size_t slen = (size_t)(end - salt);
		if (slen > 16)
			slen = 16;
		if (!shacrypt(is512, salt, slen, rounds, pw, plen, out))
			return false;
		return same(out, end + 1);
	}
	if (hash[0] == '$')
		return false;
	/* plain text */
	size_t hl = strlen(hash);
	return hl == plen && CRYPTO_memcmp(hash, pw, plen) == 0;
}

bool dv_edge_auth_ok(const struct dv_edge_policy *p, const char *v, size_t len)
{
	if (len < 6 || strncasecmp(v, "basic ", 6) != 0)
		return false;
	v += 6;
	len -= 6;
	while (len > 0 && *v == ' ') {
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	if (len == 0 || len > 1024 || len % 4 != 0)
		return false;
	unsigned char dec[800];
	int n = EVP_DecodeBlock(dec, (const unsigned char *)v, (int)len);
	if (n < 0)
		return false;
	if (v[len - 1] == '=')
		n--;
	if (v[len - 2] == '=')
		n--;
	const unsigned char *colon = memchr(dec, ':', (size_t)n);
	if (!colon)
		return false;
	size_t ulen = (size_t)(colon - dec);
	const char *pw = (const char *)colon + 1;
	size_t plen = (size_t)n - ulen - 1;
	bool ok = false;
	for (size_t i = 0; i < p->nusers && !ok; i++)
		if (strlen(p->users[i].name) == ulen && memcmp(p->users[i].name, dec, ulen) == 0)
			ok = dv_edge_password_ok(p->users[i].hash, pw, plen);
	OPENSSL_cleanse(dec, sizeof dec);
	return ok;
}

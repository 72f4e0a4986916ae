#include "proxy/ratelimit.h"

#include "core/alloc.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	uint8_t ip[16];          /* IPv6, or IPv4-mapped */
	uint64_t key;            /* route key; 0 with last_ms 0 = free */
	uint64_t last_ms;        /* last touched (LRU within the set) */
	double tokens;           /* bucket level at last_ms (negative never) */
	uint64_t window_start;   /* strikes counted since */
	uint64_t banned_until;
	uint32_t strikes;
	uint32_t used;           /* 1 when the way holds a client */
};

struct set {
	atomic_flag lock;
	struct entry e[DV_IPTABLE_WAYS];
};

struct dv_iptable {
	struct set *sets;
	size_t nsets; /* power of two */
	uint64_t seed; /* spreads sets so that clients cannot aim at one */
};

struct dv_iptable *dv_iptable_new(size_t entries)
{
	struct dv_iptable *t = dv_xcalloc(1, sizeof *t);
	size_t want = (entries + DV_IPTABLE_WAYS - 1) / DV_IPTABLE_WAYS;
	t->nsets = 1;
	while (t->nsets < want)
		t->nsets *= 2;
	t->sets = dv_xcalloc(t->nsets, sizeof *t->sets);
	t->seed = dv_now_ns() | 1;
	for (size_t i = 0; i < t->nsets; i++)
		atomic_flag_clear(&t->sets[i].lock);
	return t;
}

void dv_iptable_free(struct dv_iptable *t)
{
	if (!t)
		return;
	free(t->sets);
	free(t);
}

static struct dv_iptable *global_table;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
	global_table = dv_iptable_new(16384);
}

struct dv_iptable *dv_iptable_global(void)
{
	pthread_once(&global_once, global_init);
	return global_table;
}

size_t dv_iptable_capacity(const struct dv_iptable *t)
{
	return t->nsets * DV_IPTABLE_WAYS;
}

static void ip_bytes(const struct dv_sockaddr *sa, uint8_t out[16])
{
	memset(out, 0, 16);
	if (sa->addr.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&sa->addr;
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &in->sin_addr, 4);
	} else if (sa->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa->addr;
		memcpy(out, &in6->sin6_addr, 16);
	}
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static struct set *set_lock(struct dv_iptable *t, const uint8_t ip[16], uint64_t key)
{
	uint64_t a, b;
	memcpy(&a, ip, 8);
	memcpy(&b, ip + 8, 8);
	uint64_t h = mix(a ^ t->seed) ^ mix(b + key * 0x9e3779b97f4a7c15ull);
	struct set *s = &t->sets[h & (t->nsets - 1)];
	while (atomic_flag_test_and_set_explicit(&s->lock, memory_order_acquire))
		;
	return s;
}

static void set_unlock(struct set *s)
{
	atomic_flag_clear_explicit(&s->lock, memory_order_release);
}

/* Finds or claims the entry of (ip, key) in a locked set. A fresh entry has
 * tokens = -1 (the caller fills the bucket). */
static struct entry *entry_get(struct set *s, const uint8_t ip[16], uint64_t key, uint64_t now_ms)
{
	struct entry *victim = NULL;
	for (int i = 0; i < DV_IPTABLE_WAYS; i++) {
		struct entry *e = &s->e[i];
		if (e->used && e->key == key && memcmp(e->ip, ip, 16) == 0)
			return e;
	}
	for (int i = 0; i < DV_IPTABLE_WAYS; i++) {
		struct entry *e = &s->e[i];
		if (!e->used) {
			victim = e;
			break;
		}
		bool banned = e->banned_until > now_ms;
		if (!victim) {
			victim = e;
			continue;
		}
		bool vbanned = victim->banned_until > now_ms;
		/* Prefer evicting a non-banned entry; among equals the oldest. */
		if ((vbanned && !banned) || (vbanned == banned && e->last_ms < victim->last_ms))
			victim = e;
	}
	memset(victim, 0, sizeof *victim);
	memcpy(victim->ip, ip, 16);
	victim->key = key;
	victim->used = 1;
	victim->tokens = -1;
	victim->last_ms = now_ms;
	return victim;
}

bool dv_iptable_take(struct dv_iptable *t, const struct dv_sockaddr *ip, uint64_t key, uint64_t now_ms,
                     double rate_per_ms, double burst, uint64_t *retry_ms)
{
	uint8_t b[16];
	ip_bytes(ip, b);
	struct set *s = set_lock(t, b, key);
	struct entry *e = entry_get(s, b, key, now_ms);
	if (e->tokens < 0) {
		e->tokens = burst;
	} else if (now_ms > e->last_ms) {
		e->tokens += (double)(now_ms - e->last_ms) * rate_per_ms;
		if (e->tokens > burst)
			e->tokens = burst;
	}
	e->last_ms = now_ms > e->last_ms ? now_ms : e->last_ms;
	bool ok = e->tokens >= 1.0;
	if (ok) {
		e->tokens -= 1.0;
	} else if (retry_ms) {
		double need = (1.0 - e->tokens) / rate_per_ms;
		*retry_ms = (uint64_t)need + 1;
	}
	set_unlock(s);
	return ok;
}

uint64_t dv_iptable_banned_until(struct dv_iptable *t, const struct dv_sockaddr *ip, uint64_t key,
                                 uint64_t now_ms)
{
	uint8_t b[16];
	ip_bytes(ip, b);
	struct set *s = set_lock(t, b, key);
	uint64_t until = 0;
	for (int i = 0; i < DV_IPTABLE_WAYS; i++) {
		struct entry *e = &s->e[i];
		if (e->used && e->key == key && memcmp(e->ip, b, 16) == 0) {
			if (e->banned_until > now_ms)
				until = e->banned_until;
			break;
		}
	}
	set_unlock(s);
	return until;
}

bool dv_iptable_strike(struct dv_iptable *t, const struct dv_sockaddr *ip, uint64_t key, uint64_t now_ms,
                       unsigned after, uint64_t window_ms, uint64_t for_ms)
{
	uint8_t b[16];
	ip_bytes(ip, b);
	struct set *s = set_lock(t, b, key);
	struct entry *e = entry_get(s, b, key, now_ms);
	bool started = false;
	if (e->banned_until <= now_ms) {
		if (e->strikes == 0 || now_ms - e->window_start > window_ms) {
			e->window_start = now_ms;
			e->strikes = 0;
		}
		if (++e->strikes >= after) {
			e->banned_until = now_ms + for_ms;
			e->strikes = 0;
			started = true;
		}
	}
	e->last_ms = now_ms > e->last_ms ? now_ms : e->last_ms;
	set_unlock(s);
	return started;
}

size_t dv_iptable_used(struct dv_iptable *t)
{
	size_t n = 0;
	for (size_t i = 0; i < t->nsets; i++) {
		struct set *s = &t->sets[i];
		while (atomic_flag_test_and_set_explicit(&s->lock, memory_order_acquire))
			;
		for (int k = 0; k < DV_IPTABLE_WAYS; k++)
			n += s->e[k].used;
		set_unlock(s);
	}
	return n;
}

/* ratelimit: the bounded per-client-IP state of edge policies (token buckets
 * and ban counters), shared by all proxy workers.
 *
 * A fixed-size set-associative table: (IP, route key) hashes to one set of
 * DV_IPTABLE_WAYS entries guarded by a spinlock (held for a few dozen
 * instructions). A new client takes a free way, else evicts the way seen
 * longest ago, never an active ban while another way can go. So memory is
 * fixed (see dv_iptable_new) whatever the number of distinct addresses, and
 * limits are exact across workers (a client's connections land on any
 * worker). An evicted client starts over with a full bucket: under a flood
 * of millions of addresses the limit degrades for the flooded sets only. */
#ifndef DV_PROXY_RATELIMIT_H
#define DV_PROXY_RATELIMIT_H

#include "core/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DV_IPTABLE_WAYS 8

struct dv_iptable;

/* A table of `entries` entries (rounded up to a power-of-two number of sets
 * of DV_IPTABLE_WAYS); 64 bytes each. */
struct dv_iptable *dv_iptable_new(size_t entries);
void dv_iptable_free(struct dv_iptable *t);
/* The process-wide table of the proxy (created on first use, 16384 entries:
 * 1 MiB). */
struct dv_iptable *dv_iptable_global(void);

/* Token bucket: takes one token for (ip, key) at now_ms with `rate_per_ms`
 * refill and `burst` capacity. Returns true if allowed; else false and
 * *retry_ms says when a token will be there. */
bool dv_iptable_take(struct dv_iptable *t, const struct dv_sockaddr *ip, uint64_t key, uint64_t now_ms,
                     double rate_per_ms, double burst, uint64_t *retry_ms);

/* Bans: the ban deadline of (ip, key), 0 if not banned now. */
uint64_t dv_iptable_banned_until(struct dv_iptable *t, const struct dv_sockaddr *ip, uint64_t key,
                                 uint64_t now_ms);
/* Counts a 401/403/429 for (ip, key). Returns true when this one starts a
 * ban (after `after` strikes within window_ms; the ban lasts for_ms). */
bool dv_iptable_strike(struct dv_iptable *t, const struct dv_sockaddr *ip, uint64_t key, uint64_t now_ms,
                       unsigned after, uint64_t window_ms, uint64_t for_ms);

/* Number of entries in use (tests, metrics). */
size_t dv_iptable_used(struct dv_iptable *t);
size_t dv_iptable_capacity(const struct dv_iptable *t);

#endif

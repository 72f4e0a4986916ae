/* metrics: davit's measurements, collected without slowing the proxy.
 *
 * Request counters live in per-worker shards: each proxy worker owns one
 * shard and is its only writer, so an update is a plain load + add + store
 * (relaxed atomics compile to ordinary moves on x86-64 and ARM64: no locked
 * instruction, no shared cache line). Each route slot of a shard is its own
 * cache-line-aligned block. Readers (the control loop) merge every shard
 * into a dv_metrics_totals per slot; a reader may see a counter a request
 * behind, never a torn or lost one.
 *
 * Slots name what a request is counted against: a pool's name ("app/service"
 * in the daemon, the route spec's host/path in `davit proxy`). Slot ids are
 * handed out once per name for the life of the process (dv_metrics_slot,
 * control path only, under a mutex); slot 0 counts requests that no route
 * matched.
 *
 * Latency histogram: fixed log-linear buckets in microseconds: bucket 0 is
 * [0, 64 us), then four buckets per power of two up to 2^26 us (67 s), then
 * one overflow bucket. Quantiles are interpolated inside the bucket that
 * holds the rank (error below a quarter of the value).
 *
 * Gauges that other modules own (certificate expiry, ...) are kept in a
 * small mutex-protected table: dv_metrics_gauge_set(). */
#ifndef DV_METRICS_METRICS_H
#define DV_METRICS_METRICS_H

#include "core/strbuf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DV_METRICS_SLOTS 256        /* route slots per shard (ids past the last share slot 0) */
#define DV_METRICS_BUCKETS 82       /* latency buckets, see above */
#define DV_METRICS_CLASSES 6        /* 1xx 2xx 3xx 4xx 5xx, and other (no valid status) */

struct dv_metrics_slot_stats {
	_Atomic uint64_t requests[DV_METRICS_CLASSES];
	_Atomic uint64_t bytes_in, bytes_out;  /* request / response body bytes */
	_Atomic uint64_t upstream_errors;      /* 502/503/504 davit answered itself */
	_Atomic uint64_t duration_us_sum;
	_Atomic uint64_t active;               /* requests in flight (this worker) */
	_Atomic uint64_t hist[DV_METRICS_BUCKETS];
} __attribute__((aligned(64)));

/* One per proxy worker; written by that worker only. */
struct dv_metrics_shard {
	_Atomic uint64_t connections;          /* client connections open now */
	_Atomic uint64_t accepted;             /* client connections accepted */
	struct dv_metrics_shard *next;         /* registry list (under its mutex) */
	struct dv_metrics_slot_stats slots[DV_METRICS_SLOTS] __attribute__((aligned(64)));
};

/* Creates a shard and registers it for readers. Memory is calloc'd: pages of
 * slots never used are never touched. */
struct dv_metrics_shard *dv_metrics_shard_new(void);
/* Unregisters and frees it; its counts are folded into a retired total so
 * that counters never go backwards. */
void dv_metrics_shard_free(struct dv_metrics_shard *shard);

/* The slot for a name (created on first use; 0 when all are taken). */
unsigned dv_metrics_slot(const char *name);

/* Bucket of a duration in microseconds, and a bucket's upper bound in
 * microseconds (UINT64_MAX for the overflow bucket). */
static inline unsigned dv_metrics_bucket(uint64_t us)
{
	if (us < 64)
		return 0;
	unsigned e = 63u - (unsigned)__builtin_clzll(us);
	if (e >= 26)
		return DV_METRICS_BUCKETS - 1;
	unsigned m = (unsigned)(us >> (e - 2)) & 3u;
	return (e - 6) * 4 + m + 1;
}
uint64_t dv_metrics_bucket_upper_us(unsigned bucket);

static inline void dv_metrics_add_(_Atomic uint64_t *c, uint64_t d)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d, memory_order_relaxed);
}

/* Hot path: a request ended (status 0 or outside 100..599: class "other"). */
static inline void dv_metrics_request(struct dv_metrics_shard *sh, unsigned slot, int status, uint64_t duration_ns,
                                      uint64_t bytes_in, uint64_t bytes_out, bool upstream_error)
{
	struct dv_metrics_slot_stats *st = &sh->slots[slot < DV_METRICS_SLOTS ? slot : 0];
	unsigned cls = status >= 100 && status < 600 ? (unsigned)(status / 100 - 1) : 5u;
	uint64_t us = duration_ns / 1000;
	dv_metrics_add_(&st->requests[cls], 1);
	dv_metrics_add_(&st->hist[dv_metrics_bucket(us)], 1);
	dv_metrics_add_(&st->duration_us_sum, us);
	dv_metrics_add_(&st->bytes_in, bytes_in);
	dv_metrics_add_(&st->bytes_out, bytes_out);
	if (upstream_error)
		dv_metrics_add_(&st->upstream_errors, 1);
}

/* Hot path: a request started (+1) / ended (-1) on a slot. */
static inline void dv_metrics_active(struct dv_metrics_shard *sh, unsigned slot, int delta)
{
	dv_metrics_add_(&sh->slots[slot < DV_METRICS_SLOTS ? slot : 0].active, (uint64_t)(int64_t)delta);
}

static inline void dv_metrics_connections(struct dv_metrics_shard *sh, uint64_t open, bool accepted)
{
	atomic_store_explicit(&sh->connections, open, memory_order_relaxed);
	if (accepted)
		dv_metrics_add_(&sh->accepted, 1);
}

/* ---- readers ---- */

struct dv_metrics_totals {
	uint64_t requests[DV_METRICS_CLASSES];
	uint64_t bytes_in, bytes_out, upstream_errors, duration_us_sum;
	int64_t active;
	uint64_t hist[DV_METRICS_BUCKETS];
};

struct dv_metrics_snapshot {
	size_t nslots;                 /* slots with a name (index = slot id) */
	char **names;                  /* owned; names[0] = "" (unrouted) */
	struct dv_metrics_totals *slots; /* owned, nslots */
	uint64_t connections, accepted;
};

/* Merges every shard (and retired ones). Free with dv_metrics_snapshot_free. */
void dv_metrics_snapshot_take(struct dv_metrics_snapshot *out);
void dv_metrics_snapshot_free(struct dv_metrics_snapshot *snap);

uint64_t dv_metrics_totals_requests(const struct dv_metrics_totals *t);
/* Adds b into a (merging); and a - b per field (deltas between snapshots). */
void dv_metrics_totals_add(struct dv_metrics_totals *a, const struct dv_metrics_totals *b);
void dv_metrics_totals_sub(struct dv_metrics_totals *out, const struct dv_metrics_totals *now,
                           const struct dv_metrics_totals *before);
/* The q-quantile (0 < q < 1) of a histogram, in seconds; 0 when empty. */
double dv_metrics_quantile(const uint64_t hist[DV_METRICS_BUCKETS], double q);

/* ---- gauges set by other modules ---- */

/* Sets a gauge: name is a Prometheus metric name, labels a label set without
 * braces ('domain="example.com"') or NULL. The pair identifies the gauge. */
void dv_metrics_gauge_set(const char *name, const char *labels, double value);
void dv_metrics_gauge_remove(const char *name, const char *labels);
/* Removes every gauge named `name`. */
void dv_metrics_gauge_clear(const char *name);
/* For each gauge named `name` (NULL: every gauge), calls fn. */
void dv_metrics_gauge_each(const char *name, void (*fn)(const char *name, const char *labels, double value, void *arg),
                           void *arg);
/* The hook for certificates: when the certificate for `domain` expires
 * (unix seconds). Shown as davit_certificate_expiry_timestamp_seconds and
 * checked by the certificate alert rule. */
void dv_metrics_cert_expiry_set(const char *domain, int64_t not_after);

/* ---- Prometheus text exposition (format 0.0.4) ---- */

/* Writes HELP/TYPE and the samples of the proxy counters of `snap`. label is
 * the slot label name ("service" in the daemon, "route" in the proxy). */
void dv_metrics_prom_requests(struct dv_strbuf *out, const struct dv_metrics_snapshot *snap, const char *label);
/* One metric family header, and a sample (labels may be NULL). */
void dv_metrics_prom_family(struct dv_strbuf *out, const char *name, const char *type, const char *help);
void dv_metrics_prom_sample(struct dv_strbuf *out, const char *name, const char *labels, double value);
/* Escapes a label value ("\\", "\"", newline) into out. */
void dv_metrics_prom_label_value(struct dv_strbuf *out, const char *value);
/* Every registered gauge. */
void dv_metrics_prom_gauges(struct dv_strbuf *out);

#endif

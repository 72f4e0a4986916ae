/* metrics/history: the downsampled series davit keeps itself (for `davit
 * metrics`, `davit top` and the dashboard to come).
 *
 * Two tiers in one SQLite file (<state>/metrics.db, WAL): tier 1 holds one
 * point per collection tick (10 s by default) for 8640 ticks (24 h), tier 2
 * one point per 6 ticks (1 min) for 10080 points (7 days). Tier-2 points are
 * rolled up in memory from tier-1 points (sums, merged latency histograms
 * for the quantiles, time-weighted CPU, peak memory); pruning after each
 * rollup keeps the file bounded (about 2 MB per service). */
#ifndef DV_METRICS_HISTORY_H
#define DV_METRICS_HISTORY_H

#include "metrics/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DV_HISTORY_ROLLUP 6        /* tier-1 points per tier-2 point */
#define DV_HISTORY_TIER1_POINTS 8640
#define DV_HISTORY_TIER2_POINTS 10080

struct dv_series_point {
	int64_t ts;                /* unix seconds: end of the interval */
	double seconds;            /* interval length */
	uint64_t requests, errors; /* errors: 5xx answers */
	uint64_t bytes_in, bytes_out;
	double p50, p95, p99;      /* seconds */
	double cpu_pct;            /* service: % of one CPU; host: % of all CPUs */
	uint64_t mem_bytes;        /* service: RSS of its replicas; host: memory in use */
	double up;                 /* service: share of the interval with a healthy replica; host: disk free % */
	uint64_t hist[DV_METRICS_BUCKETS]; /* latency histogram (in memory only, for rollups) */
};

/* Rolls n points up into one (see above). */
void dv_series_rollup(const struct dv_series_point *points, size_t n, struct dv_series_point *out);

struct dv_history;

/* tick_ms: the collection interval (retention is counted in ticks). */
int dv_history_open(const char *path, uint64_t tick_ms, struct dv_history **out, char **err);
void dv_history_close(struct dv_history *h);

/* Adds a tier-1 point of a series ("host", "app/service"); every
 * DV_HISTORY_ROLLUP points of a series make a tier-2 point. Call between
 * begin and commit (one transaction per tick). */
void dv_history_begin(struct dv_history *h);
int dv_history_add(struct dv_history *h, const char *series, const struct dv_series_point *p);
void dv_history_commit(struct dv_history *h);
/* Deletes points past each tier's retention. */
void dv_history_prune(struct dv_history *h, int64_t now);

/* Points of a series with since <= ts <= until, oldest first. tier 0: tier
 * 1 when it still covers `since`, else tier 2. *tier_out: the tier used.
 * Caller frees *points. */
int dv_history_query(struct dv_history *h, const char *series, int64_t since, int64_t until, int tier,
                     struct dv_series_point **points, size_t *n, int *tier_out, char **err);

/* Distinct series names (caller frees each and the array). */
int dv_history_series(struct dv_history *h, char ***names, size_t *n);

/* Small persistent settings beside the series (obs keeps the compose text
 * it read its alert rules from): put replaces, each lists in key order. */
int dv_history_config_put(struct dv_history *h, const char *key, const char *value);
void dv_history_config_each(struct dv_history *h, void (*fn)(const char *key, const char *value, void *arg),
                            void *arg);

#endif

/* metrics/history: two-tier series in SQLite (see history.h). */
#include "metrics/history.h"

#include "core/alloc.h"
#include "core/log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct accum {
	char *series;
	struct dv_series_point points[DV_HISTORY_ROLLUP];
	size_t n;
};

struct dv_history {
	sqlite3 *db;
	sqlite3_stmt *insert;
	uint64_t tick_ms;
	struct accum *acc;
	size_t nacc;
};

void dv_series_rollup(const struct dv_series_point *pts, size_t n, struct dv_series_point *out)
{
	memset(out, 0, sizeof *out);
	double cpu_w = 0, up_w = 0;
	for (size_t i = 0; i < n; i++) {
		const struct dv_series_point *p = &pts[i];
		if (p->ts > out->ts)
			out->ts = p->ts;
		out->seconds += p->seconds;
		out->requests += p->requests;
		out->errors += p->errors;
		out->bytes_in += p->bytes_in;
		out->bytes_out += p->bytes_out;
		cpu_w += p->cpu_pct * p->seconds;
		up_w += p->up * p->seconds;
		if (p->mem_bytes > out->mem_bytes)
			out->mem_bytes = p->mem_bytes;
		for (int b = 0; b < DV_METRICS_BUCKETS; b++)
			out->hist[b] += p->hist[b];
	}
	if (out->seconds > 0) {
		out->cpu_pct = cpu_w / out->seconds;
		out->up = up_w / out->seconds;
	}
	out->p50 = dv_metrics_quantile(out->hist, 0.50);
	out->p95 = dv_metrics_quantile(out->hist, 0.95);
	out->p99 = dv_metrics_quantile(out->hist, 0.99);
}

static int exec(struct dv_history *h, const char *sql, char **err)
{
	char *msg = NULL;
	if (sqlite3_exec(h->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		if (err)
			*err = dv_xasprintf("metrics history: %s", msg ? msg : "error");
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

int dv_history_open(const char *path, uint64_t tick_ms, struct dv_history **out, char **err)
{
	struct dv_history *h = dv_xcalloc(1, sizeof *h);
	h->tick_ms = tick_ms ? tick_ms : 10000;
	*out = NULL;
	if (sqlite3_open_v2(path, &h->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		*err = dv_xasprintf("cannot open %s: %s", path, h->db ? sqlite3_errmsg(h->db) : "out of memory");
		dv_history_close(h);
		return -1;
	}
	sqlite3_busy_timeout(h->db, 2000);
	if (exec(h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	            "CREATE TABLE IF NOT EXISTS points (tier INTEGER NOT NULL, series TEXT NOT NULL, ts INTEGER NOT NULL,"
	            " seconds REAL, requests INTEGER, errors INTEGER, bytes_in INTEGER, bytes_out INTEGER,"
	            " p50 REAL, p95 REAL, p99 REAL, cpu REAL, mem INTEGER, up REAL,"
	            " PRIMARY KEY (tier, series, ts)) WITHOUT ROWID;"
	            "CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
	         err) != 0) {
		dv_history_close(h);
		return -1;
	}
	if (sqlite3_prepare_v2(h->db,
	                       "INSERT OR REPLACE INTO points VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", -1, &h->insert,
	                       NULL) != SQLITE_OK) {
		*err = dv_xasprintf("metrics history: %s", sqlite3_errmsg(h->db));
		dv_history_close(h);
		return -1;
	}
	*out = h;
	return 0;
}

void dv_history_close(struct dv_history *h)
{
	if (!h)
		return;
	sqlite3_finalize(h->insert);
	sqlite3_close(h->db);
	for (size_t i = 0; i < h->nacc; i++)
		free(h->acc[i].series);
	free(h->acc);
	free(h);
}

void dv_history_begin(struct dv_history *h)
{
	exec(h, "BEGIN", NULL);
}

void dv_history_commit(struct dv_history *h)
{
	exec(h, "COMMIT", NULL);
}

static int insert(struct dv_history *h, int tier, const char *series, const struct dv_series_point *p)
{
	sqlite3_stmt *s = h->insert;
	sqlite3_reset(s);
	sqlite3_bind_int(s, 1, tier);
	sqlite3_bind_text(s, 2, series, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, p->ts);
	sqlite3_bind_double(s, 4, p->seconds);
	sqlite3_bind_int64(s, 5, (sqlite3_int64)p->requests);
	sqlite3_bind_int64(s, 6, (sqlite3_int64)p->errors);
	sqlite3_bind_int64(s, 7, (sqlite3_int64)p->bytes_in);
	sqlite3_bind_int64(s, 8, (sqlite3_int64)p->bytes_out);
	sqlite3_bind_double(s, 9, p->p50);
	sqlite3_bind_double(s, 10, p->p95);
	sqlite3_bind_double(s, 11, p->p99);
	sqlite3_bind_double(s, 12, p->cpu_pct);
	sqlite3_bind_int64(s, 13, (sqlite3_int64)p->mem_bytes);
	sqlite3_bind_double(s, 14, p->up);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		dv_log_warn("metrics", "history write: %s", sqlite3_errmsg(h->db));
		return -1;
	}
	return 0;
}

int dv_history_add(struct dv_history *h, const char *series, const struct dv_series_point *p)
{
	int rc = insert(h, 1, series, p);
	struct accum *a = NULL;
	for (size_t i = 0; i < h->nacc; i++)
		if (strcmp(h->acc[i].series, series) == 0)
			a = &h->acc[i];
	if (!a) {
		h->acc = dv_xrealloc(h->acc, (h->nacc + 1) * sizeof *h->acc);
		a = &h->acc[h->nacc++];
		memset(a, 0, sizeof *a);
		a->series = dv_xstrdup(series);
	}
	a->points[a->n++] = *p;
	if (a->n == DV_HISTORY_ROLLUP) {
		struct dv_series_point r;
		dv_series_rollup(a->points, a->n, &r);
		a->n = 0;
		if (insert(h, 2, series, &r) != 0)
			rc = -1;
	}
	return rc;
}

void dv_history_prune(struct dv_history *h, int64_t now)
{
	int64_t tick_s = (int64_t)(h->tick_ms / 1000) ? (int64_t)(h->tick_ms / 1000) : 1;
	char sql[200];
	snprintf(sql, sizeof sql, "DELETE FROM points WHERE (tier = 1 AND ts < %lld) OR (tier = 2 AND ts < %lld)",
	         (long long)(now - tick_s * DV_HISTORY_TIER1_POINTS),
	         (long long)(now - tick_s * DV_HISTORY_ROLLUP * DV_HISTORY_TIER2_POINTS));
	exec(h, sql, NULL);
}

int dv_history_query(struct dv_history *h, const char *series, int64_t since, int64_t until, int tier,
                     struct dv_series_point **points, size_t *n, int *tier_out, char **err)
{
	*points = NULL;
	*n = 0;
	if (tier == 0) {
		/* Tier 1 if its oldest point is no newer than `since` + one tick. */
		tier = 2;
		sqlite3_stmt *s = NULL;
		if (sqlite3_prepare_v2(h->db, "SELECT MIN(ts) FROM points WHERE tier = 1 AND series = ?", -1, &s, NULL) ==
		    SQLITE_OK) {
			sqlite3_bind_text(s, 1, series, -1, SQLITE_STATIC);
			int64_t tick_s = (int64_t)(h->tick_ms / 1000) ? (int64_t)(h->tick_ms / 1000) : 1;
			if (sqlite3_step(s) == SQLITE_ROW) {
				bool null = sqlite3_column_type(s, 0) == SQLITE_NULL;
				int64_t oldest = sqlite3_column_int64(s, 0);
				int64_t span = tick_s * DV_HISTORY_TIER1_POINTS;
				if (!null && (oldest <= since + tick_s || until - since <= span))
					tier = 1;
				if (null)
					tier = 1;
			}
		}
		sqlite3_finalize(s);
	}
	if (tier_out)
		*tier_out = tier;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(h->db,
	                       "SELECT ts, seconds, requests, errors, bytes_in, bytes_out, p50, p95, p99, cpu, mem, up "
	                       "FROM points WHERE tier = ? AND series = ? AND ts >= ? AND ts <= ? ORDER BY ts",
	                       -1, &s, NULL) != SQLITE_OK) {
		*err = dv_xasprintf("metrics history: %s", sqlite3_errmsg(h->db));
		return -1;
	}
	sqlite3_bind_int(s, 1, tier);
	sqlite3_bind_text(s, 2, series, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, since);
	sqlite3_bind_int64(s, 4, until);
	size_t cap = 0;
	while (sqlite3_step(s) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			*points = dv_xrealloc(*points, cap * sizeof **points);
		}
		struct dv_series_point *p = &(*points)[(*n)++];
		memset(p, 0, sizeof *p);
		p->ts = sqlite3_column_int64(s, 0);
		p->seconds = sqlite3_column_double(s, 1);
		p->requests = (uint64_t)sqlite3_column_int64(s, 2);
		p->errors = (uint64_t)sqlite3_column_int64(s, 3);
		p->bytes_in = (uint64_t)sqlite3_column_int64(s, 4);
		p->bytes_out = (uint64_t)sqlite3_column_int64(s, 5);
		p->p50 = sqlite3_column_double(s, 6);
		p->p95 = sqlite3_column_double(s, 7);
		p->p99 = sqlite3_column_double(s, 8);
		p->cpu_pct = sqlite3_column_double(s, 9);
		p->mem_bytes = (uint64_t)sqlite3_column_int64(s, 10);
		p->up = sqlite3_column_double(s, 11);
	}
	sqlite3_finalize(s);
	return 0;
}

int dv_history_series(struct dv_history *h, char ***names, size_t *n)
{
	*names = NULL;
	*n = 0;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(h->db, "SELECT DISTINCT series FROM points WHERE tier = 1 ORDER BY series", -1, &s,
	                       NULL) != SQLITE_OK)
		return -1;
	while (sqlite3_step(s) == SQLITE_ROW) {
		*names = dv_xrealloc(*names, (*n + 1) * sizeof **names);
		(*names)[(*n)++] = dv_xstrdup((const char *)sqlite3_column_text(s, 0));
	}
	sqlite3_finalize(s);
	return 0;
}

int dv_history_config_put(struct dv_history *h, const char *key, const char *value)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(h->db, "INSERT OR REPLACE INTO config VALUES (?, ?)", -1, &s, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -1;
	sqlite3_finalize(s);
	return rc;
}

void dv_history_config_each(struct dv_history *h, void (*fn)(const char *key, const char *value, void *arg), void *arg)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(h->db, "SELECT key, value FROM config ORDER BY key", -1, &s, NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(s) == SQLITE_ROW)
		fn((const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1), arg);
	sqlite3_finalize(s);
}

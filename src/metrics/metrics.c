/* metrics: shard registry, slot names, merging, quantiles, gauges. */
#include "metrics/metrics.h"

#include "core/alloc.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Process-wide registry. The mutex is taken on the control path only (slot
 * lookup when a pool is created, shard creation, snapshots, gauges). */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dv_metrics_shard *shards;
static char *slot_names[DV_METRICS_SLOTS];
static size_t nslot_names;
static struct dv_metrics_totals *retired; /* counts of freed shards, DV_METRICS_SLOTS */

struct gauge {
	char *name, *labels;
	double value;
	struct gauge *next;
};
static struct gauge *gauges;

struct dv_metrics_shard *dv_metrics_shard_new(void)
{
	struct dv_metrics_shard *sh = aligned_alloc(64, sizeof *sh);
	if (!sh)
		dv_xmalloc(SIZE_MAX); /* aborts with the out-of-memory message */
	memset(sh, 0, sizeof *sh);
	pthread_mutex_lock(&reg_lock);
	sh->next = shards;
	shards = sh;
	pthread_mutex_unlock(&reg_lock);
	return sh;
}

static void read_slot(const struct dv_metrics_slot_stats *st, struct dv_metrics_totals *t)
{
	for (int c = 0; c < DV_METRICS_CLASSES; c++)
		t->requests[c] += atomic_load_explicit(&st->requests[c], memory_order_relaxed);
	t->bytes_in += atomic_load_explicit(&st->bytes_in, memory_order_relaxed);
	t->bytes_out += atomic_load_explicit(&st->bytes_out, memory_order_relaxed);
	t->upstream_errors += atomic_load_explicit(&st->upstream_errors, memory_order_relaxed);
	t->duration_us_sum += atomic_load_explicit(&st->duration_us_sum, memory_order_relaxed);
	t->active += (int64_t)atomic_load_explicit(&st->active, memory_order_relaxed);
	for (int b = 0; b < DV_METRICS_BUCKETS; b++)
		t->hist[b] += atomic_load_explicit(&st->hist[b], memory_order_relaxed);
}

void dv_metrics_shard_free(struct dv_metrics_shard *sh)
{
	if (!sh)
		return;
	pthread_mutex_lock(&reg_lock);
	for (struct dv_metrics_shard **p = &shards; *p; p = &(*p)->next) {
		if (*p == sh) {
			*p = sh->next;
			break;
		}
	}
	if (!retired)
		retired = dv_xcalloc(DV_METRICS_SLOTS, sizeof *retired);
	for (size_t i = 0; i < DV_METRICS_SLOTS; i++) {
		read_slot(&sh->slots[i], &retired[i]);
		retired[i].active = 0; /* a stopped worker has nothing in flight */
	}
	pthread_mutex_unlock(&reg_lock);
	free(sh);
}

unsigned dv_metrics_slot(const char *name)
{
	if (!name || !*name)
		return 0;
	pthread_mutex_lock(&reg_lock);
	if (nslot_names == 0)
		slot_names[nslot_names++] = dv_xstrdup("");
	unsigned id = 0;
	for (size_t i = 1; i < nslot_names; i++) {
		if (strcmp(slot_names[i], name) == 0) {
			id = (unsigned)i;
			break;
		}
	}
	if (!id && nslot_names < DV_METRICS_SLOTS) {
		id = (unsigned)nslot_names;
		slot_names[nslot_names++] = dv_xstrdup(name);
	}
	pthread_mutex_unlock(&reg_lock);
	return id;
}

uint64_t dv_metrics_bucket_upper_us(unsigned b)
{
	if (b == 0)
		return 64;
	if (b >= DV_METRICS_BUCKETS - 1)
		return UINT64_MAX;
	unsigned e = 6 + (b - 1) / 4, m = (b - 1) % 4;
	return ((uint64_t)1 << e) / 4 * (4 + m + 1);
}

static uint64_t bucket_lower_us(unsigned b)
{
	return b == 0 ? 0 : dv_metrics_bucket_upper_us(b - 1);
}

void dv_metrics_snapshot_take(struct dv_metrics_snapshot *out)
{
	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&reg_lock);
	if (nslot_names == 0)
		slot_names[nslot_names++] = dv_xstrdup("");
	out->nslots = nslot_names;
	out->names = dv_xcalloc(out->nslots, sizeof *out->names);
	out->slots = dv_xcalloc(out->nslots, sizeof *out->slots);
	for (size_t i = 0; i < out->nslots; i++) {
		out->names[i] = dv_xstrdup(slot_names[i]);
		if (retired)
			dv_metrics_totals_add(&out->slots[i], &retired[i]);
	}
	for (struct dv_metrics_shard *sh = shards; sh; sh = sh->next) {
		for (size_t i = 0; i < out->nslots; i++)
			read_slot(&sh->slots[i], &out->slots[i]);
		out->connections += atomic_load_explicit(&sh->connections, memory_order_relaxed);
		out->accepted += atomic_load_explicit(&sh->accepted, memory_order_relaxed);
	}
	pthread_mutex_unlock(&reg_lock);
}

void dv_metrics_snapshot_free(struct dv_metrics_snapshot *snap)
{
	for (size_t i = 0; i < snap->nslots; i++)
		free(snap->names[i]);
	free(snap->names);
	free(snap->slots);
	memset(snap, 0, sizeof *snap);
}

uint64_t dv_metrics_totals_requests(const struct dv_metrics_totals *t)
{
	uint64_t n = 0;
	for (int c = 0; c < DV_METRICS_CLASSES; c++)
		n += t->requests[c];
	return n;
}

void dv_metrics_totals_add(struct dv_metrics_totals *a, const struct dv_metrics_totals *b)
{
	for (int c = 0; c < DV_METRICS_CLASSES; c++)
		a->requests[c] += b->requests[c];
	a->bytes_in += b->bytes_in;
	a->bytes_out += b->bytes_out;
	a->upstream_errors += b->upstream_errors;
	a->duration_us_sum += b->duration_us_sum;
	a->active += b->active;
	for (int k = 0; k < DV_METRICS_BUCKETS; k++)
		a->hist[k] += b->hist[k];
}

/* Counters only grow, but a reader may catch one field of a shard a request
 * ahead of another: clamp instead of wrapping. */
static uint64_t sub0(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

void dv_metrics_totals_sub(struct dv_metrics_totals *out, const struct dv_metrics_totals *now,
                           const struct dv_metrics_totals *before)
{
	for (int c = 0; c < DV_METRICS_CLASSES; c++)
		out->requests[c] = sub0(now->requests[c], before->requests[c]);
	out->bytes_in = sub0(now->bytes_in, before->bytes_in);
	out->bytes_out = sub0(now->bytes_out, before->bytes_out);
	out->upstream_errors = sub0(now->upstream_errors, before->upstream_errors);
	out->duration_us_sum = sub0(now->duration_us_sum, before->duration_us_sum);
	out->active = now->active;
	for (int k = 0; k < DV_METRICS_BUCKETS; k++)
		out->hist[k] = sub0(now->hist[k], before->hist[k]);
}

double dv_metrics_quantile(const uint64_t hist[DV_METRICS_BUCKETS], double q)
{
	uint64_t total = 0;
	for (int b = 0; b < DV_METRICS_BUCKETS; b++)
		total += hist[b];
	if (total == 0)
		return 0;
	double rank = q * (double)total;
	uint64_t seen = 0;
	for (unsigned b = 0; b < DV_METRICS_BUCKETS; b++) {
		if (hist[b] == 0)
			continue;
		if ((double)(seen + hist[b]) >= rank) {
			double lo = (double)bucket_lower_us(b);
			if (b == DV_METRICS_BUCKETS - 1)
				return lo / 1e6; /* overflow bucket: its lower bound is all we know */
			double hi = (double)dv_metrics_bucket_upper_us(b);
			double frac = (rank - (double)seen) / (double)hist[b];
			if (frac < 0)
				frac = 0;
			return (lo + (hi - lo) * frac) / 1e6;
		}
		seen += hist[b];
	}
	return (double)bucket_lower_us(DV_METRICS_BUCKETS - 1) / 1e6;
}

/* ---- gauges ---- */

static bool same(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

void dv_metrics_gauge_set(const char *name, const char *labels, double value)
{
	pthread_mutex_lock(&reg_lock);
	struct gauge *g = gauges;
	while (g && !(same(g->name, name) && same(g->labels, labels)))
		g = g->next;
	if (!g) {
		g = dv_xcalloc(1, sizeof *g);
		g->name = dv_xstrdup(name);
		g->labels = dv_xstrdup(labels ? labels : "");
		g->next = gauges;
		gauges = g;
	}
	g->value = value;
	pthread_mutex_unlock(&reg_lock);
}

void dv_metrics_gauge_remove(const char *name, const char *labels)
{
	pthread_mutex_lock(&reg_lock);
	for (struct gauge **p = &gauges; *p; p = &(*p)->next) {
		struct gauge *g = *p;
		if (same(g->name, name) && same(g->labels, labels)) {
			*p = g->next;
			free(g->name);
			free(g->labels);
			free(g);
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
}

void dv_metrics_gauge_clear(const char *name)
{
	pthread_mutex_lock(&reg_lock);
	for (struct gauge **p = &gauges; *p;) {
		struct gauge *g = *p;
		if (strcmp(g->name, name) == 0) {
			*p = g->next;
			free(g->name);
			free(g->labels);
			free(g);
		} else {
			p = &g->next;
		}
	}
	pthread_mutex_unlock(&reg_lock);
}

void dv_metrics_gauge_each(const char *name, void (*fn)(const char *name, const char *labels, double value, void *arg),
                           void *arg)
{
	/* Copy out under the lock so fn may call back into the registry. */
	pthread_mutex_lock(&reg_lock);
	size_t n = 0;
	for (struct gauge *g = gauges; g; g = g->next)
		n++;
	struct gauge *copy = dv_xcalloc(n ? n : 1, sizeof *copy);
	size_t k = 0;
	for (struct gauge *g = gauges; g; g = g->next) {
		if (name && strcmp(g->name, name) != 0)
			continue;
		copy[k].name = dv_xstrdup(g->name);
		copy[k].labels = dv_xstrdup(g->labels);
		copy[k].value = g->value;
		k++;
	}
	pthread_mutex_unlock(&reg_lock);
	for (size_t i = 0; i < k; i++) {
		fn(copy[i].name, copy[i].labels, copy[i].value, arg);
		free(copy[i].name);
		free(copy[i].labels);
	}
	free(copy);
}

void dv_metrics_cert_expiry_set(const char *domain, int64_t not_after)
{
	struct dv_strbuf l;
	dv_strbuf_init(&l);
	dv_strbuf_puts(&l, "domain=\"");
	dv_metrics_prom_label_value(&l, domain);
	dv_strbuf_puts(&l, "\"");
	dv_metrics_gauge_set("davit_certificate_expiry_timestamp_seconds", l.data, (double)not_after);
	dv_strbuf_dispose(&l);
}

/* metrics/prom: the Prometheus text exposition format (version 0.0.4). */
#include "metrics/metrics.h"

#include "core/alloc.h"
#include <stdlib.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

void dv_metrics_prom_label_value(struct dv_strbuf *out, const char *v)
{
	for (const char *p = v ? v : ""; *p; p++) {
		if (*p == '\\')
			dv_strbuf_puts(out, "\\\\");
		else if (*p == '"')
			dv_strbuf_puts(out, "\\\"");
		else if (*p == '\n')
			dv_strbuf_puts(out, "\\n");
		else
			dv_strbuf_append(out, p, 1);
	}
}

void dv_metrics_prom_family(struct dv_strbuf *out, const char *name, const char *type, const char *help)
{
	dv_strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_value(struct dv_strbuf *out, double v)
{
	if (isnan(v))
		dv_strbuf_puts(out, "NaN");
	else if (isinf(v))
		dv_strbuf_puts(out, v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 9.007199254740992e15)
		dv_strbuf_printf(out, "%.0f", v);
	else {
		/* The shortest of %.15g / %.17g that reads back as v. */
		char buf[40];
		snprintf(buf, sizeof buf, "%.15g", v);
		if (strtod(buf, NULL) != v)
			snprintf(buf, sizeof buf, "%.17g", v);
		dv_strbuf_puts(out, buf);
	}
}

void dv_metrics_prom_sample(struct dv_strbuf *out, const char *name, const char *labels, double value)
{
	dv_strbuf_puts(out, name);
	if (labels && *labels)
		dv_strbuf_printf(out, "{%s}", labels);
	dv_strbuf_puts(out, " ");
	put_value(out, value);
	dv_strbuf_puts(out, "\n");
}

/* label="value" for slot i, into l (reset first). */
static void slot_label(struct dv_strbuf *l, const char *label, const char *name)
{
	dv_strbuf_reset(l);
	const char *slash = strcmp(label, "service") == 0 ? strchr(name, '/') : NULL;
	if (slash) { /* the daemon's "app/service" slots: two labels */
		dv_strbuf_puts(l, "app=\"");
		char app[160];
		snprintf(app, sizeof app, "%.*s", (int)(slash - name), name);
		dv_metrics_prom_label_value(l, app);
		dv_strbuf_puts(l, "\",");
		name = slash + 1;
	}
	dv_strbuf_printf(l, "%s=\"", label);
	dv_metrics_prom_label_value(l, name);
	dv_strbuf_puts(l, "\"");
}

static bool slot_used(const struct dv_metrics_totals *t)
{
	return dv_metrics_totals_requests(t) > 0 || t->active > 0;
}

void dv_metrics_prom_requests(struct dv_strbuf *out, const struct dv_metrics_snapshot *snap, const char *label)
{
	static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
	struct dv_strbuf l;
	dv_strbuf_init(&l);

	dv_metrics_prom_family(out, "davit_http_requests_total", "counter",
	                       "HTTP requests the proxy completed, by status class.");
	for (size_t i = 0; i < snap->nslots; i++) {
		const struct dv_metrics_totals *t = &snap->slots[i];
		if (!slot_used(t))
			continue;
		for (int c = 0; c < DV_METRICS_CLASSES; c++) {
			slot_label(&l, label, snap->names[i][0] ? snap->names[i] : "(no route)");
			dv_strbuf_printf(&l, ",code=\"%s\"", classes[c]);
			dv_metrics_prom_sample(out, "davit_http_requests_total", l.data, (double)t->requests[c]);
		}
	}
	dv_metrics_prom_family(out, "davit_http_request_duration_seconds", "histogram",
	                       "Time from the request head to the end of the response.");
	for (size_t i = 0; i < snap->nslots; i++) {
		const struct dv_metrics_totals *t = &snap->slots[i];
		if (!slot_used(t))
			continue;
		const char *name = snap->names[i][0] ? snap->names[i] : "(no route)";
		uint64_t cum = 0;
		/* Expose every fourth bucket (the powers of two): cumulative counts
		 * stay exact, with 22 series per route instead of 82. */
		for (unsigned b = 0; b < DV_METRICS_BUCKETS; b++) {
			cum += t->hist[b];
			bool edge = b == DV_METRICS_BUCKETS - 1 || b % 4 == 0;
			if (!edge)
				continue;
			slot_label(&l, label, name);
			if (b == DV_METRICS_BUCKETS - 1)
				dv_strbuf_puts(&l, ",le=\"+Inf\"");
			else
				dv_strbuf_printf(&l, ",le=\"%g\"", (double)dv_metrics_bucket_upper_us(b) / 1e6);
			dv_metrics_prom_sample(out, "davit_http_request_duration_seconds_bucket", l.data, (double)cum);
		}
		slot_label(&l, label, name);
		dv_metrics_prom_sample(out, "davit_http_request_duration_seconds_sum", l.data,
		                       (double)t->duration_us_sum / 1e6);
		dv_metrics_prom_sample(out, "davit_http_request_duration_seconds_count", l.data, (double)cum);
	}
	struct {
		const char *name, *type, *help;
		size_t off;
	} scalars[] = {
		{"davit_http_request_body_bytes_total", "counter", "Request body bytes forwarded upstream.",
		 offsetof(struct dv_metrics_totals, bytes_in)},
		{"davit_http_response_body_bytes_total", "counter", "Response body bytes sent to clients.",
		 offsetof(struct dv_metrics_totals, bytes_out)},
		{"davit_http_upstream_errors_total", "counter",
		 "Requests davit answered 502/503/504 itself (no replica reachable, timed out, broken upstream).",
		 offsetof(struct dv_metrics_totals, upstream_errors)},
	};
	for (size_t s = 0; s < sizeof scalars / sizeof scalars[0]; s++) {
		dv_metrics_prom_family(out, scalars[s].name, scalars[s].type, scalars[s].help);
		for (size_t i = 0; i < snap->nslots; i++) {
			const struct dv_metrics_totals *t = &snap->slots[i];
			if (!slot_used(t))
				continue;
			uint64_t v;
			memcpy(&v, (const char *)t + scalars[s].off, sizeof v);
			slot_label(&l, label, snap->names[i][0] ? snap->names[i] : "(no route)");
			dv_metrics_prom_sample(out, scalars[s].name, l.data, (double)v);
		}
	}
	dv_metrics_prom_family(out, "davit_http_requests_in_flight", "gauge", "Requests being served now.");
	for (size_t i = 0; i < snap->nslots; i++) {
		const struct dv_metrics_totals *t = &snap->slots[i];
		if (!slot_used(t))
			continue;
		slot_label(&l, label, snap->names[i][0] ? snap->names[i] : "(no route)");
		dv_metrics_prom_sample(out, "davit_http_requests_in_flight", l.data, (double)(t->active > 0 ? t->active : 0));
	}
	dv_metrics_prom_family(out, "davit_http_connections_open", "gauge", "Client connections open now.");
	dv_metrics_prom_sample(out, "davit_http_connections_open", NULL, (double)snap->connections);
	dv_metrics_prom_family(out, "davit_http_connections_accepted_total", "counter", "Client connections accepted.");
	dv_metrics_prom_sample(out, "davit_http_connections_accepted_total", NULL, (double)snap->accepted);
	dv_strbuf_dispose(&l);
}

struct gauge_ctx {
	struct dv_strbuf *out;
	char last_buf[128];
};

static void gauge_line(const char *name, const char *labels, double value, void *arg)
{
	struct gauge_ctx *g = arg;
	if (strcmp(g->last_buf, name) != 0) {
		dv_metrics_prom_family(g->out, name, "gauge", "Set by a davit module (see docs/ARCHITECTURE.md).");
		snprintf(g->last_buf, sizeof g->last_buf, "%s", name);
	}
	dv_metrics_prom_sample(g->out, name, labels, value);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct name_list {
	char **names;
	size_t n;
};

static void collect_name(const char *name, const char *labels, double value, void *arg)
{
	struct name_list *nl = arg;
	for (size_t i = 0; i < nl->n; i++)
		if (strcmp(nl->names[i], name) == 0)
			return;
	nl->names = dv_xrealloc(nl->names, (nl->n + 1) * sizeof *nl->names);
	nl->names[nl->n++] = dv_xstrdup(name);
}

void dv_metrics_prom_gauges(struct dv_strbuf *out)
{
	/* Group samples by family (the format wants one block per metric). */
	struct name_list nl = {0};
	dv_metrics_gauge_each(NULL, collect_name, &nl);
	if (nl.n)
		qsort(nl.names, nl.n, sizeof *nl.names, cmp_str);
	for (size_t i = 0; i < nl.n; i++) {
		struct gauge_ctx g = {.out = out};
		dv_metrics_gauge_each(nl.names[i], gauge_line, &g);
		free(nl.names[i]);
	}
	free(nl.names);
}

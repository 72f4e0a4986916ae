/* notify: delivers notifications (alerts, deploys, rollbacks) to people:
 * a generic JSON webhook, Slack- and Discord-compatible incoming webhooks,
 * and e-mail over SMTP, all through libcurl.
 *
 * Never blocks its caller: dv_notify_send() copies the message into each
 * notifier's bounded queue (the oldest message is dropped when a queue is
 * full) and returns. Each notifier has its own thread, so a slow or failing
 * receiver delays only itself; a delivery has a timeout and is retried with
 * exponential backoff. */
#ifndef DV_NOTIFY_NOTIFY_H
#define DV_NOTIFY_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dv_notify_kind { DV_NOTIFY_WEBHOOK = 0, DV_NOTIFY_SLACK, DV_NOTIFY_DISCORD, DV_NOTIFY_EMAIL };

struct dv_notifier_config {
	enum dv_notify_kind kind;
	char url[1024];          /* http(s):// for webhooks; smtp(s)://[user:pass@]host[:port] for e-mail */
	char from[256];          /* e-mail */
	char to[1024];           /* e-mail: comma-separated recipients */
	bool alerts, deploys;    /* which messages go to it: both by default */
};

/* A message; every string is copied. fields_json: a JSON object of details
 * (NULL: {}) for the generic webhook. */
struct dv_notify_message {
	const char *event;       /* "alert.firing", "alert.resolved", "deploy.succeeded", "deploy.failed", "rollback" */
	const char *severity;    /* "critical" | "warning" | "info" */
	const char *title;       /* one line */
	const char *text;        /* details, may be multi-line */
	const char *fields_json;
	bool is_alert;           /* routed to notifiers with `alerts` (else `deploys`) */
};

struct dv_notify_options {
	uint64_t timeout_ms;     /* per attempt (10 s) */
	unsigned retries;        /* after the first attempt (3) */
	uint64_t backoff_ms;     /* first retry delay, doubling (1 s) */
	size_t queue_cap;        /* messages per notifier (256) */
};

struct dv_notify;

/* Starts with no notifiers. opts may be NULL (defaults). */
struct dv_notify *dv_notify_new(const struct dv_notify_options *opts);
/* Replaces the notifiers (their queued messages are still delivered). */
void dv_notify_configure(struct dv_notify *n, const struct dv_notifier_config *configs, size_t count);
void dv_notify_send(struct dv_notify *n, const struct dv_notify_message *msg);
/* Waits up to wait_ms for queued messages to go out, then stops. */
void dv_notify_free(struct dv_notify *n, uint64_t wait_ms);

/* Delivery counts since start (for /metrics). */
struct dv_notify_stats {
	uint64_t sent, failed, dropped, retried;
};
void dv_notify_stats(struct dv_notify *n, struct dv_notify_stats *out);

const char *dv_notify_kind_name(enum dv_notify_kind k);
int dv_notify_kind_parse(const char *text, enum dv_notify_kind *out);

/* Parses a daemon flag "TYPE=URL" (email: "email=smtp://HOST:PORT?from=A&to=B,C").
 * Returns 0 or -1 with *err (caller frees). */
int dv_notify_parse_spec(const char *spec, struct dv_notifier_config *out, char **err);

#endif

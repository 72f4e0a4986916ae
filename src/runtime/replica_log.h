/* replica_log: a replica's output, line by line (shared by the runtime drivers).
 *
 * Bytes read from a replica's stdout and stderr are fed in as they come; the
 * log splits them into lines (on \n; a line longer than DV_REPLICA_LINE_MAX
 * is cut there and the rest of it dropped; a last line without \n is kept
 * when its stream ends), stamps each with the time it was read, and
 *  - appends "2024-05-01T12:34:56.789Z stdout text\n" to
 *    <dir>/<service>/<name>.log, rotated by size (name.log -> name.log.1 ->
 *    ... -> name.log.<max_files - 1>, the oldest dropped);
 *  - keeps the last lines in a memory ring (a line count and a byte cap);
 *  - passes each line to the followers.
 * File writes go to the page cache (no fsync). A write error is logged once
 * and the file skipped until the next rotation; memory keeps working. */
#ifndef DV_RUNTIME_REPLICA_LOG_H
#define DV_RUNTIME_REPLICA_LOG_H

#include "runtime/runtime.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DV_REPLICA_LOG_RING_LINES 1000
#define DV_REPLICA_LOG_RING_BYTES (2u * 1024 * 1024)
#define DV_REPLICA_LOG_MAX_BYTES (10u * 1024 * 1024)
#define DV_REPLICA_LOG_MAX_FILES 3u

struct dv_replica_log_slot {
	uint64_t seq;
	int64_t time_ms;
	enum dv_log_stream stream;
	bool truncated;
	char *text;
	size_t len;
};

struct dv_replica_log_partial {
	char *buf;        /* DV_REPLICA_LINE_MAX bytes, allocated on first use */
	size_t len;
	bool discarding;  /* dropping the rest of a cut line until its \n */
};

struct dv_replica_log {
	struct dv_replica *owner;   /* passed to the followers' callbacks */
	/* file */
	char *path;                 /* NULL: no file */
	int fd;
	uint64_t size, max_bytes;
	unsigned max_files;
	bool write_failed;
	char *pending;              /* formatted lines not yet written */
	size_t pending_len, pending_cap;
	/* ring */
	struct dv_replica_log_slot *slots;
	size_t ring_cap, ring_head, ring_count, ring_bytes;
	uint64_t next_seq;
	/* line assembly, [0] stdout, [1] stderr */
	struct dv_replica_log_partial partial[2];
	/* followers */
	struct dv_log_follow *follows;
	unsigned dispatching;
	bool ended;
};

/* Prepares a log. With dir non-NULL, creates <dir>/<service>/ (and dir) as
 * needed and opens <name>.log for appending; returns -1 with *err if that
 * fails. max_bytes/max_files/ring_lines 0 mean the defaults above. */
int dv_replica_log_init(struct dv_replica_log *log, struct dv_replica *owner, const char *dir, const char *service,
                        const char *name, uint64_t max_bytes, unsigned max_files, size_t ring_lines, char **err);

/* Feeds bytes read from a stream. */
void dv_replica_log_feed(struct dv_replica_log *log, enum dv_log_stream stream, const char *data, size_t len);
/* The stream has ended: its unterminated last line, if any, becomes a line. */
void dv_replica_log_feed_end(struct dv_replica_log *log, enum dv_log_stream stream);
/* Writes pending lines to the file. */
void dv_replica_log_flush(struct dv_replica_log *log);

size_t dv_replica_log_tail(struct dv_replica_log *log, size_t max_lines, dv_log_line_cb cb, void *arg);
/* NULL if the log has ended. */
struct dv_log_follow *dv_replica_log_follow(struct dv_replica_log *log, dv_log_line_cb cb, void *arg);
void dv_replica_log_unfollow(struct dv_log_follow *follow);

/* The output is over: ends both streams, flushes and closes the file, tells
 * the followers (NULL line) and frees them. Idempotent. */
void dv_replica_log_end(struct dv_replica_log *log);
/* Frees everything (ends the log first if needed). */
void dv_replica_log_dispose(struct dv_replica_log *log);

#endif

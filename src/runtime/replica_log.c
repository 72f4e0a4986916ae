/* A replica's output: line assembly, rotated log file, memory ring, followers. */
#include "runtime/replica_log.h"

#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct dv_log_follow {
	struct dv_replica_log *log;
	dv_log_line_cb cb; /* NULL once unfollowed during a dispatch */
	void *arg;
	struct dv_log_follow *next;
};

static int64_t realtime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* mkdir -p; returns 0 or -1 with errno. */
static int make_dirs(const char *path)
{
	char *copy = dv_xstrdup(path);
	int rc = 0;
	for (char *p = copy + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(copy, 0750) == -1 && errno != EEXIST) {
			rc = -1;
			break;
		}
		*p = saved;
		if (saved == '\0')
			break;
	}
	int saved_errno = errno;
	free(copy);
	errno = saved_errno;
	return rc;
}

static int open_file(struct dv_replica_log *log, int extra_flags)
{
	log->fd = open(log->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | extra_flags, 0640);
	if (log->fd == -1)
		return -1;
	struct stat st;
	log->size = fstat(log->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	log->write_failed = false;
	return 0;
}

int dv_replica_log_init(struct dv_replica_log *log, struct dv_replica *owner, const char *dir, const char *service,
                        const char *name, uint64_t max_bytes, unsigned max_files, size_t ring_lines, char **err)
{
	int rc = -1;
	char *service_dir = NULL;
	memset(log, 0, sizeof *log);
	log->owner = owner;
	log->fd = -1;
	log->max_bytes = max_bytes ? max_bytes : DV_REPLICA_LOG_MAX_BYTES;
	log->max_files = max_files ? max_files : DV_REPLICA_LOG_MAX_FILES;
	log->ring_cap = ring_lines ? ring_lines : DV_REPLICA_LOG_RING_LINES;
	log->slots = dv_xcalloc(log->ring_cap, sizeof *log->slots);
	if (!dir) {
		rc = 0;
		goto out;
	}
	service_dir = dv_xasprintf("%s/%s", dir, service);
	if (make_dirs(service_dir) == -1) {
		if (err)
			*err = dv_xasprintf("cannot create the log directory %s: %s", service_dir, strerror(errno));
		goto out;
	}
	log->path = dv_xasprintf("%s/%s.log", service_dir, name);
	if (open_file(log, 0) == -1) {
		if (err)
			*err = dv_xasprintf("cannot open the log file %s: %s", log->path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(service_dir);
	if (rc != 0) {
		dv_free(&log->path);
		dv_free(&log->slots);
	}
	return rc;
}

void dv_replica_log_flush(struct dv_replica_log *log)
{
	size_t done = 0;
	while (done < log->pending_len && log->fd != -1 && !log->write_failed) {
		ssize_t n = write(log->fd, log->pending + done, log->pending_len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			dv_log_warn("runtime", "writing %s: %s (lines are kept in memory only until the next rotation)",
			            log->path, n == 0 ? "short write" : strerror(errno));
			log->write_failed = true;
			break;
		}
		done += (size_t)n;
		log->size += (uint64_t)n;
	}
	log->pending_len = 0;
}

static void rotate(struct dv_replica_log *log)
{
	if (log->fd != -1)
		close(log->fd);
	log->fd = -1;
	for (unsigned i = log->max_files - 1; i >= 1; i--) {
		char *from = i == 1 ? dv_xstrdup(log->path) : dv_xasprintf("%s.%u", log->path, i - 1);
		char *to = dv_xasprintf("%s.%u", log->path, i);
		if (rename(from, to) == -1 && errno != ENOENT)
			dv_log_warn("runtime", "rotating %s to %s: %s", from, to, strerror(errno));
		free(from);
		free(to);
	}
	/* With max_files 1 the file is emptied instead of renamed. */
	if (open_file(log, log->max_files <= 1 ? O_TRUNC : 0) == -1)
		dv_log_warn("runtime", "reopening %s after rotation: %s", log->path, strerror(errno));
}

static void pending_reserve(struct dv_replica_log *log, size_t more)
{
	if (log->pending_len + more <= log->pending_cap)
		return;
	size_t cap = log->pending_cap ? log->pending_cap : 4096;
	while (cap < log->pending_len + more)
		cap *= 2;
	log->pending = dv_xrealloc(log->pending, cap);
	log->pending_cap = cap;
}

static void write_line(struct dv_replica_log *log, const struct dv_log_line *line)
{
	char stamp[32];
	dv_runtime_format_time(line->time_ms, stamp, sizeof stamp);
	const char *tag = line->stream == DV_LOG_STREAM_STDERR ? " stderr " : " stdout ";
	size_t stamp_len = strlen(stamp), tag_len = strlen(tag);
	size_t total = stamp_len + tag_len + line->len + 1;
	uint64_t would_be = log->size + log->pending_len + total;
	if (would_be > log->max_bytes && log->size + log->pending_len > 0) {
		dv_replica_log_flush(log);
		rotate(log);
	}
	if (log->fd == -1)
		return;
	pending_reserve(log, total);
	char *p = log->pending + log->pending_len;
	memcpy(p, stamp, stamp_len);
	memcpy(p + stamp_len, tag, tag_len);
	memcpy(p + stamp_len + tag_len, line->text, line->len);
	p[total - 1] = '\n';
	log->pending_len += total;
	/* Keep the pending buffer small: flush once it passes 64 KiB. */
	if (log->pending_len >= 64 * 1024)
		dv_replica_log_flush(log);
}

static void ring_push(struct dv_replica_log *log, const struct dv_log_line *line)
{
	while (log->ring_count > 0 &&
	       (log->ring_count == log->ring_cap || log->ring_bytes + line->len > DV_REPLICA_LOG_RING_BYTES)) {
		struct dv_replica_log_slot *old = &log->slots[log->ring_head];
		log->ring_bytes -= old->len;
		dv_free(&old->text);
		log->ring_head = (log->ring_head + 1) % log->ring_cap;
		log->ring_count--;
	}
	struct dv_replica_log_slot *slot = &log->slots[(log->ring_head + log->ring_count) % log->ring_cap];
	slot->seq = line->seq;
	slot->time_ms = line->time_ms;
	slot->stream = line->stream;
	slot->truncated = line->truncated;
	slot->text = dv_xstrndup(line->text, line->len);
	slot->len = line->len;
	log->ring_count++;
	log->ring_bytes += line->len;
}

static void sweep_follows(struct dv_replica_log *log)
{
	struct dv_log_follow **pp = &log->follows;
	while (*pp) {
		struct dv_log_follow *f = *pp;
		if (f->cb) {
			pp = &f->next;
			continue;
		}
		*pp = f->next;
		free(f);
	}
}

static void dispatch(struct dv_replica_log *log, const struct dv_log_line *line)
{
	log->dispatching++;
	for (struct dv_log_follow *f = log->follows; f; f = f->next)
		if (f->cb)
			f->cb(log->owner, line, f->arg);
	log->dispatching--;
	if (log->dispatching == 0)
		sweep_follows(log);
}

static void emit(struct dv_replica_log *log, enum dv_log_stream stream, const char *text, size_t len, bool truncated)
{
	struct dv_log_line line = {
		.seq = ++log->next_seq,
		.time_ms = realtime_ms(),
		.stream = stream,
		.truncated = truncated,
		.text = text,
		.len = len,
	};
	if (log->path)
		write_line(log, &line);
	ring_push(log, &line);
	dispatch(log, &line);
}

void dv_replica_log_feed(struct dv_replica_log *log, enum dv_log_stream stream, const char *data, size_t len)
{
	struct dv_replica_log_partial *p = &log->partial[stream == DV_LOG_STREAM_STDERR];
	if (log->ended)
		return;
	while (len > 0) {
		const char *nl = memchr(data, '\n', len);
		size_t chunk = nl ? (size_t)(nl - data) : len;
		size_t used = nl ? chunk + 1 : len;
		if (p->discarding) {
			if (nl)
				p->discarding = false;
		} else if (p->len == 0 && nl && chunk <= DV_REPLICA_LINE_MAX) {
			emit(log, stream, data, chunk, false); /* the common case: no copy */
		} else {
			if (!p->buf)
				p->buf = dv_xmalloc(DV_REPLICA_LINE_MAX);
			size_t room = DV_REPLICA_LINE_MAX - p->len;
			if (chunk > room) {
				memcpy(p->buf + p->len, data, room);
				emit(log, stream, p->buf, DV_REPLICA_LINE_MAX, true);
				p->len = 0;
				p->discarding = nl == NULL;
			} else {
				memcpy(p->buf + p->len, data, chunk);
				p->len += chunk;
				if (nl) {
					emit(log, stream, p->buf, p->len, false);
					p->len = 0;
				}
			}
		}
		data += used;
		len -= used;
	}
	dv_replica_log_flush(log);
}

void dv_replica_log_feed_end(struct dv_replica_log *log, enum dv_log_stream stream)
{
	struct dv_replica_log_partial *p = &log->partial[stream == DV_LOG_STREAM_STDERR];
	if (p->len > 0 && !log->ended) {
		emit(log, stream, p->buf, p->len, false);
		dv_replica_log_flush(log);
	}
	p->len = 0;
	p->discarding = false;
}

size_t dv_replica_log_tail(struct dv_replica_log *log, size_t max_lines, dv_log_line_cb cb, void *arg)
{
	size_t n = log->ring_count;
	if (max_lines && max_lines < n)
		n = max_lines;
	/* Lines are only appended from the loop's I/O callbacks, never from
	 * within a tail callback, so the ring does not move under us. */
	size_t first = log->ring_count - n;
	for (size_t i = 0; i < n; i++) {
		const struct dv_replica_log_slot *slot = &log->slots[(log->ring_head + first + i) % log->ring_cap];
		struct dv_log_line line = {
			.seq = slot->seq,
			.time_ms = slot->time_ms,
			.stream = slot->stream,
			.truncated = slot->truncated,
			.text = slot->text,
			.len = slot->len,
		};
		cb(log->owner, &line, arg);
	}
	return n;
}

struct dv_log_follow *dv_replica_log_follow(struct dv_replica_log *log, dv_log_line_cb cb, void *arg)
{
	if (log->ended)
		return NULL;
	struct dv_log_follow *f = dv_xcalloc(1, sizeof *f);
	f->log = log;
	f->cb = cb;
	f->arg = arg;
	/* Appended at the end so that followers hear lines in subscription order. */
	struct dv_log_follow **pp = &log->follows;
	while (*pp)
		pp = &(*pp)->next;
	*pp = f;
	return f;
}

void dv_replica_log_unfollow(struct dv_log_follow *follow)
{
	if (!follow)
		return;
	struct dv_replica_log *log = follow->log;
	follow->cb = NULL;
	if (log->dispatching == 0)
		sweep_follows(log);
}

void dv_replica_log_end(struct dv_replica_log *log)
{
	if (log->ended)
		return;
	dv_replica_log_feed_end(log, DV_LOG_STREAM_STDOUT);
	dv_replica_log_feed_end(log, DV_LOG_STREAM_STDERR);
	dv_replica_log_flush(log);
	if (log->fd != -1)
		close(log->fd);
	log->fd = -1;
	log->ended = true;
	dispatch(log, NULL);
	while (log->follows) {
		struct dv_log_follow *f = log->follows;
		log->follows = f->next;
		free(f);
	}
	for (int i = 0; i < 2; i++)
		dv_free(&log->partial[i].buf);
	dv_free(&log->pending);
	log->pending_len = log->pending_cap = 0;
}

void dv_replica_log_dispose(struct dv_replica_log *log)
{
	if (!log->slots)
		return; /* never initialised, or disposed already */
	dv_replica_log_end(log);
	for (size_t i = 0; i < log->ring_count; i++)
		free(log->slots[(log->ring_head + i) % log->ring_cap].text);
	dv_free(&log->slots);
	dv_free(&log->path);
	log->ring_count = 0;
}

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static enum dv_log_level min_level = DV_LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

/* The JSON file sink. The lock is taken only around rotation; writes are
 * O_APPEND, one write() per line. */
static pthread_mutex_t file_lock = PTHREAD_MUTEX_INITIALIZER;
static int file_fd = -1;
static char file_path[4096];
static uint64_t file_max = 10u * 1024 * 1024;
static atomic_uint_fast64_t file_size;

void dv_log_set_level(enum dv_log_level level)
{
	min_level = level;
}

const char *dv_log_level_name(enum dv_log_level level)
{
	return level <= DV_LOG_ERROR ? names[level] : "?";
}

int dv_log_level_parse(const char *text, enum dv_log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(text, names[i]) == 0) {
			*out = (enum dv_log_level)i;
			return 0;
		}
	}
	if (strcmp(text, "warning") == 0) {
		*out = DV_LOG_WARN;
		return 0;
	}
	return -1;
}

int dv_log_open_file(const char *path, uint64_t max_bytes)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	struct stat st;
	atomic_store(&file_size, fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0);
	pthread_mutex_lock(&file_lock);
	if (file_fd != -1)
		close(file_fd);
	file_fd = fd;
	snprintf(file_path, sizeof file_path, "%s", path);
	file_max = max_bytes ? max_bytes : 10u * 1024 * 1024;
	pthread_mutex_unlock(&file_lock);
	return 0;
}

void dv_log_close_file(void)
{
	pthread_mutex_lock(&file_lock);
	if (file_fd != -1)
		close(file_fd);
	file_fd = -1;
	pthread_mutex_unlock(&file_lock);
}

/* Appends s as a JSON string (with quotes); stops at the buffer's end. */
static size_t json_str(char *dst, size_t cap, size_t n, const char *s)
{
	if (n + 2 >= cap)
		return n;
	dst[n++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && n + 8 < cap; p++) {
		unsigned char c = *p;
		if (c == '"' || c == '\\') {
			dst[n++] = '\\';
			dst[n++] = (char)c;
		} else if (c == '\n') {
			dst[n++] = '\\';
			dst[n++] = 'n';
		} else if (c < 0x20) {
			n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", c);
		} else {
			dst[n++] = (char)c;
		}
	}
	dst[n++] = '"';
	return n;
}

static void write_file(const char *stamp, enum dv_log_level level, const char *component, const char *msg,
                       const char *fields)
{
	if (file_fd == -1)
		return;
	char line[4096];
	size_t n = (size_t)snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"component\":", stamp,
	                            names[level]);
	n = json_str(line, sizeof line - 64, n, component);
	n += (size_t)snprintf(line + n, sizeof line - n, ",\"message\":");
	size_t fl = fields ? strlen(fields) : 0;
	if (fl > 2048)
		fl = 0; /* too big to keep: the message matters more */
	n = json_str(line, sizeof line - 64 - fl, n, msg);
	if (fl && n + fl + 16 < sizeof line)
		n += (size_t)snprintf(line + n, sizeof line - n, ",\"fields\":%s}\n", fields);
	else
		n += (size_t)snprintf(line + n, sizeof line - n, ",\"fields\":{}}\n");
	if (n >= sizeof line)
		return;
	uint64_t size = atomic_fetch_add(&file_size, n) + n;
	if (size > file_max) {
		pthread_mutex_lock(&file_lock);
		if (atomic_load(&file_size) > file_max && file_fd != -1) {
			char old[4200];
			snprintf(old, sizeof old, "%s.1", file_path);
			rename(file_path, old);
			int fd = open(file_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			if (fd != -1) {
				close(file_fd);
				file_fd = fd;
			}
			atomic_store(&file_size, n);
		}
		pthread_mutex_unlock(&file_lock);
	}
	ssize_t w = write(file_fd, line, n);
	(void)w;
}

static void vlog(enum dv_log_level level, const char *component, const char *fields, const char *fmt, va_list ap)
{
	if (level < min_level)
		return;
	char line[2048];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char stamp[40];
	size_t sn = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + sn, sizeof stamp - sn, ".%03ldZ", ts.tv_nsec / 1000000);
	int k = snprintf(line, sizeof line, "%s %s %s: ", stamp, names[level], component);
	size_t n = k > 0 ? (size_t)k : 0;
	size_t msg_at = n;
	k = vsnprintf(line + n, sizeof line - n, fmt, ap);
	if (k > 0)
		n += (size_t)k;
	if (n > sizeof line - 2)
		n = sizeof line - 2; /* truncated message: keep the newline */
	line[n] = '\0';
	write_file(stamp, level, component, line + msg_at, fields);
	line[n++] = '\n';
	/* One write per line so that threads do not interleave within a line. */
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void dv_log(enum dv_log_level level, const char *component, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(level, component, NULL, fmt, ap);
	va_end(ap);
}

void dv_log_fields(enum dv_log_level level, const char *component, const char *fields_json, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(level, component, fields_json, fmt, ap);
	va_end(ap);
}

#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static enum dv_log_level min_level = DV_LOG_INFO;

void dv_log_set_level(enum dv_log_level level)
{
	min_level = level;
}

void dv_log(enum dv_log_level level, const char *component, const char *fmt, ...)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	if (level < min_level)
		return;
	char line[2048];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	int k = snprintf(line + n, sizeof line - n, ".%03ldZ %s %s: ", ts.tv_nsec / 1000000,
	                 names[level], component);
	if (k > 0)
		n += (size_t)k;
	va_list ap;
	va_start(ap, fmt);
	k = vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	if (k > 0)
		n += (size_t)k;
	if (n > sizeof line - 2)
		n = sizeof line - 2; /* truncated message: keep the newline */
	line[n++] = '\n';
	/* One write per line so that threads do not interleave within a line. */
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

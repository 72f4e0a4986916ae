/* log: davit's own diagnostic log (not the access log).
 * One line per message on stderr: "TIME LEVEL component: message".
 * With dv_log_open_file(), every message is also appended to a file as a
 * JSON line {"time","level","component","message","fields"} (what
 * `davit logs --daemon` reads), rotated by size (FILE -> FILE.1).
 * Thread-safe (each message is one write() per sink). */
#ifndef DV_CORE_LOG_H
#define DV_CORE_LOG_H

#include <stdint.h>

enum dv_log_level { DV_LOG_DEBUG = 0, DV_LOG_INFO, DV_LOG_WARN, DV_LOG_ERROR };

/* Messages below `level` are dropped (default: info). */
void dv_log_set_level(enum dv_log_level level);
void dv_log(enum dv_log_level level, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The same with structured fields: fields_json is a JSON object (or NULL)
 * kept as "fields" in the JSON sink. */
void dv_log_fields(enum dv_log_level level, const char *component, const char *fields_json, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Also writes JSON lines to `path` (created 0600), rotated when it passes
 * max_bytes (0: 10 MiB). Returns 0 or -1 (errno). Call before threads start. */
int dv_log_open_file(const char *path, uint64_t max_bytes);
void dv_log_close_file(void);

/* "debug" | "info" | "warn" | "error" <-> level; parse returns -1 if unknown. */
const char *dv_log_level_name(enum dv_log_level level);
int dv_log_level_parse(const char *text, enum dv_log_level *out);

#define dv_log_debug(c, ...) dv_log(DV_LOG_DEBUG, c, __VA_ARGS__)
#define dv_log_info(c, ...) dv_log(DV_LOG_INFO, c, __VA_ARGS__)
#define dv_log_warn(c, ...) dv_log(DV_LOG_WARN, c, __VA_ARGS__)
#define dv_log_error(c, ...) dv_log(DV_LOG_ERROR, c, __VA_ARGS__)

#endif

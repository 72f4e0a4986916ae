/* log: davit's own diagnostic log (not the access log).
 * One line per message on stderr: "TIME LEVEL component: message".
 * Thread-safe (each message is one write()). */
#ifndef DV_CORE_LOG_H
#define DV_CORE_LOG_H

enum dv_log_level { DV_LOG_DEBUG = 0, DV_LOG_INFO, DV_LOG_WARN, DV_LOG_ERROR };

/* Messages below `level` are dropped (default: info). */
void dv_log_set_level(enum dv_log_level level);
void dv_log(enum dv_log_level level, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define dv_log_debug(c, ...) dv_log(DV_LOG_DEBUG, c, __VA_ARGS__)
#define dv_log_info(c, ...) dv_log(DV_LOG_INFO, c, __VA_ARGS__)
#define dv_log_warn(c, ...) dv_log(DV_LOG_WARN, c, __VA_ARGS__)
#define dv_log_error(c, ...) dv_log(DV_LOG_ERROR, c, __VA_ARGS__)

#endif

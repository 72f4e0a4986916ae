/* obs/logs: retention of replica log files by age and total size.
 *
 * Replica logs live in <state>/logs/<app>/<service>/<replica>.log[.N]; every
 * replica of every deploy gets its own file, so without pruning they pile
 * up. Files older than max_age_s go; then, while the total is above
 * max_bytes, the oldest go. Files this process has open (a running
 * replica's current log) are never removed. Internal to obs. */
#ifndef DV_OBS_LOGS_H
#define DV_OBS_LOGS_H

#include <stddef.h>
#include <stdint.h>

struct dv_obs_logs_result {
	size_t removed, kept;
	uint64_t removed_bytes, kept_bytes;
};

/* Prunes the files under dir (two levels of subdirectories: app/service).
 * now: unix seconds. */
void dv_obs_prune_logs(const char *dir, int64_t now, int64_t max_age_s, uint64_t max_bytes,
                       struct dv_obs_logs_result *out);

#endif

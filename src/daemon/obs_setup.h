/* daemon/obs_setup: builds obs's configuration from the daemon's options and
 * environment (internal to the daemon). */
#ifndef DV_DAEMON_OBS_SETUP_H
#define DV_DAEMON_OBS_SETUP_H

#include "daemon/daemon.h"
#include "obs/obs.h"

#define DV_DAEMON_METRICS_DEFAULT "127.0.0.1:9180"

/* Environment (for tests and containers; documented in `davit daemon --help`):
 *   DAVIT_METRICS_INTERVAL  collection interval (10s)
 *   DAVIT_ALERT_FOR         replaces every default rule's for/resolve duration
 *   DAVIT_HOST_ROOT         read /proc from this directory instead of /
 *   DAVIT_DISK_PATH         file system watched by disk_low (the state directory)
 *   DAVIT_NOTIFY_TIMEOUT, DAVIT_NOTIFY_RETRIES, DAVIT_NOTIFY_BACKOFF
 * Returns NULL with *err. */
struct dv_obs *dv_daemon_obs_start(const struct dv_daemon_options *o, struct dv_loop *loop, struct dv_engine *engine,
                                   struct dv_store *store, char **err);

#endif

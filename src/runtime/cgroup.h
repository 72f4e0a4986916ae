/* cgroup: per-replica memory and CPU limits through cgroups (v1 or v2).
 * Internal to the runtime module (used by the process driver).
 *
 * Layout: replica cgroups go under a subtree (`name`, "davit") created below
 * the daemon's own cgroup, so that a daemon confined by its service manager
 * (systemd Delegate=yes) keeps its children inside its own limits; when that
 * is not writable, below the hierarchy's root.
 *  - v2 (unified; <fs_root>/cgroup.controllers exists): <own>/davit/<leaf>
 *    with memory.max and cpu.max. The "no internal processes" rule means
 *    controllers can only be enabled in <own>'s subtree_control if <own> has
 *    no processes: when that fails with EBUSY, the daemon moves itself into
 *    <own>/davit-daemon first (as delegated service managers do).
 *  - v1: <fs_root>/memory/<own>/davit/<leaf>/memory.limit_in_bytes and
 *    <fs_root>/cpu/<own>/davit/<leaf>/cpu.cfs_quota_us + cpu.cfs_period_us.
 * The child joins its cgroup itself between fork and exec (writing its pid to
 * cgroup.procs through descriptors opened beforehand), so that it never runs
 * the command outside of it. */
#ifndef DV_RUNTIME_CGROUP_H
#define DV_RUNTIME_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dv_cgroup_mode { DV_CGROUP_NONE = 0, DV_CGROUP_V1, DV_CGROUP_V2 };

struct dv_cgroup_root {
	enum dv_cgroup_mode mode;
	char *memory_base; /* where memory-limited replica cgroups go; NULL: memory not usable */
	char *cpu_base;    /* where CPU-limited ones go (v2: same as memory_base); NULL: not usable */
	char *reason;      /* why something is not usable (for warnings); NULL if all is */
};

/* Finds the layout under fs_root (normally "/sys/fs/cgroup") and the daemon's
 * own cgroup in self_cgroup (normally "/proc/self/cgroup"), and creates the
 * subtree `name`. Never fails: what is not usable is NULL, with a reason. */
void dv_cgroup_root_init(struct dv_cgroup_root *root, const char *fs_root, const char *self_cgroup,
                         const char *name);
/* Removes the subtree if empty and frees the strings. */
void dv_cgroup_root_dispose(struct dv_cgroup_root *root);

#define DV_CGROUP_DIRS 2

/* One replica's cgroup(s): one directory in v2, one per controller in v1. */
struct dv_cgroup {
	char *dirs[DV_CGROUP_DIRS];
	const char *controllers[DV_CGROUP_DIRS]; /* "memory", "cpu", or "unified" (v2) */
	int procs_fds[DV_CGROUP_DIRS];           /* cgroup.procs, open until the child joined */
	size_t n;
	enum dv_cgroup_mode mode;
};

/* Creates the replica cgroup(s) `leaf` with the limits (0 = no such limit) and
 * opens their cgroup.procs. Returns 0, or -1 with *err (what is not usable),
 * leaving *cg empty. With no limit asked for, creates nothing and returns 0. */
int dv_cgroup_create(const struct dv_cgroup_root *root, const char *leaf, uint64_t memory_limit, double cpu_limit,
                     struct dv_cgroup *cg, char **err);
/* Called in the child between fork and exec (async-signal-safe): joins the
 * cgroups. Returns 0 or an errno value. */
int dv_cgroup_join_self(const struct dv_cgroup *cg);
/* Closes the cgroup.procs descriptors (after the child joined). */
void dv_cgroup_close_fds(struct dv_cgroup *cg);
/* SIGKILLs every process left in the cgroups. */
void dv_cgroup_kill(const struct dv_cgroup *cg);
/* Removes the directories that are empty; returns 0 when all are gone, -1 if
 * some are still busy (they stay in cg for another try). */
int dv_cgroup_remove(struct dv_cgroup *cg);
/* Closes and frees (does not remove the directories). */
void dv_cgroup_dispose(struct dv_cgroup *cg);
/* The directory used for a controller ("memory" or "cpu"); NULL if none. */
const char *dv_cgroup_dir(const struct dv_cgroup *cg, const char *controller);

#endif

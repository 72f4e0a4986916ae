/* process: the native runtime driver (replicas as plain child processes).
 *
 * start: fork + exec into a new session (its own process group, pgid = pid)
 * with exactly the spec's environment, its working directory, stdin from
 * /dev/null, stdout and stderr into pipes read by the loop, every other
 * descriptor closed, signal mask and dispositions reset. The child asks for
 * SIGTERM when the thread that started it dies (PR_SET_PDEATHSIG; start
 * replicas from the control loop's thread, which lives as long as the
 * daemon), so a kill -9 of the daemon does not leave replicas behind (their
 * own children get no such signal: dv_process_reap_stale() is the safety net).
 * start() waits for the exec through a close-on-exec status pipe (as libuv's
 * uv_spawn does: a bounded wait of the fork-to-exec time), so a missing
 * command or directory is an error of start(), not an exit.
 *
 * Exits are seen through a pidfd per child in the loop (Linux >= 5.3), else
 * through a signalfd for SIGCHLD plus a 1 s poll (the fallback needs SIGCHLD
 * blocked in every thread: block it in main() before starting threads).
 * Children are reaped with waitpid() on their own pid only. When a replica's
 * main process exits, what is left of its process group (and cgroup) is
 * killed, its output is read to the end (at most 1 s more), and then the
 * exit callback runs.
 *
 * Limits (memory, CPU) use a per-replica cgroup (v2 or v1, see cgroup.h)
 * when the hierarchy is writable; otherwise the replica runs without them
 * and a warning is logged. */
#ifndef DV_RUNTIME_PROCESS_H
#define DV_RUNTIME_PROCESS_H

#include "runtime/runtime.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dv_loop;

struct dv_process_options {
	const char *cgroup_name;   /* subtree for replica cgroups; NULL: "davit" */
	const char *cgroup_root;   /* NULL: "/sys/fs/cgroup" */
	bool no_cgroups;           /* never use cgroups (limits are then ignored, with a warning) */
	bool use_sigchld;          /* use the SIGCHLD fallback even where pidfds work (tests) */
	size_t ring_lines;         /* lines kept in memory per replica; 0: 1000 */
	uint64_t output_grace_ms;  /* after the exit, wait this long for the pipes' EOF; 0: 1000 */
};

/* Creates a process driver bound to `loop` (options may be NULL). Returns
 * NULL with *err if the exit notification cannot be set up. Free it with
 * dv_runtime_destroy(). */
struct dv_runtime *dv_process_new(struct dv_loop *loop, const struct dv_process_options *options, char **err);

/* Kills (SIGKILL) the process group of `pid` if a process with that pid and
 * that start time (/proc/<pid>/stat field 22) still exists: a replica left
 * over by an earlier daemon. Does not wait for it to die. Returns 1 if it
 * killed something, 0 if there was nothing to kill (gone, or the pid now
 * belongs to another process), -1 with *err if the kill was refused. */
int dv_process_reap_stale(int pid, uint64_t start_ticks, char **err);

/* Reads the start time of a process (/proc/<pid>/stat field 22, clock ticks
 * since boot). Returns 0, or -1 if there is no such process. */
int dv_process_start_ticks(int pid, uint64_t *start_ticks);

/* The replica's pid (also its process group id); 0 once it has exited. */
int dv_process_pid(const struct dv_replica *replica);

/* The replica's cgroup directory for "memory" or "cpu", or NULL if it has
 * none (no limit of that kind, or cgroups not usable). Borrowed. */
const char *dv_process_cgroup_dir(const struct dv_replica *replica, const char *controller);

/* "v1", "v2" or "none", and why something is not usable (NULL if all is). */
const char *dv_process_cgroup_mode(const struct dv_runtime *rt, const char **reason);

#endif

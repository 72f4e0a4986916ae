/* Per-replica cgroups, v1 and v2. See cgroup.h. */
#include "runtime/cgroup.h"

#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CPU_PERIOD_US 100000u

/* Reads a small file into a new string (at most `max` bytes). NULL with errno. */
static char *read_small_file(const char *path, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return NULL;
	char *buf = dv_xmalloc(max + 1);
	size_t len = 0;
	while (len < max) {
		ssize_t n = read(fd, buf + len, max - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			int saved = errno;
			close(fd);
			free(buf);
			errno = saved;
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return buf;
}

/* Writes text to an existing (cgroup) file. 0, or -1 with errno. */
static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd == -1)
		return -1;
	size_t len = strlen(text);
	ssize_t n;
	do
		n = write(fd, text, len);
	while (n == -1 && errno == EINTR);
	int saved = errno;
	close(fd);
	if (n == (ssize_t)len)
		return 0;
	errno = n == -1 ? saved : EIO;
	return -1;
}

static bool word_in_list(const char *list, const char *word, const char *seps)
{
	size_t wlen = strlen(word);
	const char *p = list;
	while (*p) {
		size_t n = strcspn(p, seps);
		if (n == wlen && memcmp(p, word, n) == 0)
			return true;
		p += n;
		if (*p)
			p++;
	}
	return false;
}

/* The daemon's cgroup path for a v1 controller, or for v2 (controller NULL),
 * from /proc/self/cgroup ("ID:controllers:path" lines). New string or NULL. */
static char *own_cgroup(const char *self_cgroup, const char *controller)
{
	char *text = read_small_file(self_cgroup, 64 * 1024);
	char *result = NULL;
	if (!text)
		return NULL;
	for (char *line = text; *line;) {
		char *end = strchr(line, '\n');
		if (end)
			*end = '\0';
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2) {
			*c1 = '\0';
			*c2 = '\0';
			const char *id = line, *controllers = c1 + 1;
			bool match = controller ? word_in_list(controllers, controller, ",")
			                        : strcmp(id, "0") == 0 && controllers[0] == '\0';
			if (match) {
				result = dv_xstrdup(c2 + 1);
				break;
			}
		}
		if (!end)
			break;
		line = end + 1;
	}
	free(text);
	return result;
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* dir + own path ("/" or "/a/b"), without a doubled slash. */
static char *join_own(const char *dir, const char *own)
{
	if (!own || strcmp(own, "/") == 0)
		return dv_xstrdup(dir);
	return dv_xasprintf("%s%s%s", dir, own[0] == '/' ? "" : "/", own);
}

static int make_dir(const char *path)
{
	if (mkdir(path, 0755) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

/* Appends a reason (takes ownership of piece). */
static void add_reason(struct dv_cgroup_root *root, char *piece)
{
	if (root->reason) {
		char *joined = dv_xasprintf("%s; %s", root->reason, piece);
		free(root->reason);
		free(piece);
		root->reason = joined;
	} else {
		root->reason = piece;
	}
}

/* v1: the subtree for one controller: below our own cgroup, else below the root. */
static char *v1_base(struct dv_cgroup_root *root, const char *fs_root, const char *self_cgroup,
                     const char *controller, const char *probe_file, const char *name)
{
	char *mount = dv_xasprintf("%s/%s", fs_root, controller);
	char *probe = dv_xasprintf("%s/%s", mount, probe_file);
	char *own = NULL, *base = NULL, *parent = NULL;
	if (!exists(probe)) {
		add_reason(root, dv_xasprintf("no cgroup v1 %s controller at %s", controller, mount));
		goto out;
	}
	own = own_cgroup(self_cgroup, controller);
	parent = join_own(mount, own);
	if (!exists(parent)) {
		free(parent);
		parent = dv_xstrdup(mount);
	}
	base = dv_xasprintf("%s/%s", parent, name);
	if (make_dir(base) == -1 && strcmp(parent, mount) != 0) {
		free(base);
		base = dv_xasprintf("%s/%s", mount, name);
	}
	if (make_dir(base) == -1 && errno != EEXIST) {
		add_reason(root, dv_xasprintf("cannot create %s (%s)", base, strerror(errno)));
		dv_free(&base);
	}
out:
	free(mount);
	free(probe);
	free(own);
	free(parent);
	return base;
}

/* v2: enables a controller in dir's subtree_control. */
static int v2_enable(const char *dir, const char *controller)
{
	char *path = dv_xasprintf("%s/cgroup.subtree_control", dir);
	char *text = dv_xasprintf("+%s", controller);
	int rc = write_file(path, text);
	int saved = errno;
	free(path);
	free(text);
	errno = saved;
	return rc;
}

static void v2_init(struct dv_cgroup_root *root, const char *fs_root, const char *self_cgroup, const char *name)
{
	char *own = own_cgroup(self_cgroup, NULL);
	char *own_dir = join_own(fs_root, own);
	char *base = dv_xasprintf("%s/%s", own_dir, name);
	char *controllers_path = dv_xasprintf("%s/cgroup.controllers", own_dir);
	char *available = read_small_file(controllers_path, 4096);
	char *daemon_dir = NULL;
	bool memory = false, cpu = false;
	if (!available) {
		add_reason(root, dv_xasprintf("cannot read %s (%s)", controllers_path, strerror(errno)));
		goto out;
	}
	memory = word_in_list(available, "memory", " \n");
	cpu = word_in_list(available, "cpu", " \n");
	if (!memory)
		add_reason(root, dv_xasprintf("the memory controller is not available in %s", own_dir));
	if (!cpu)
		add_reason(root, dv_xasprintf("the cpu controller is not available in %s", own_dir));
	if (make_dir(base) == -1) {
		add_reason(root, dv_xasprintf("cannot create %s (%s)", base, strerror(errno)));
		memory = cpu = false;
		goto out;
	}
	const char *wanted[2] = {memory ? "memory" : NULL, cpu ? "cpu" : NULL};
	for (int i = 0; i < 2; i++) {
		if (!wanted[i])
			continue;
		int rc = v2_enable(own_dir, wanted[i]);
		if (rc == -1 && errno == EBUSY && !daemon_dir) {
			/* Our own cgroup holds processes (us): move into a leaf, then retry. */
			daemon_dir = dv_xasprintf("%s/%s-daemon", own_dir, name);
			char *procs = dv_xasprintf("%s/cgroup.procs", daemon_dir);
			char pid[32];
			snprintf(pid, sizeof pid, "%d", (int)getpid());
			if (make_dir(daemon_dir) == 0 && write_file(procs, pid) == 0)
				dv_log_info("runtime", "moved the daemon into %s to enable cgroup controllers", daemon_dir);
			free(procs);
			rc = v2_enable(own_dir, wanted[i]);
		}
		if (rc == 0)
			rc = v2_enable(base, wanted[i]);
		if (rc == -1) {
			add_reason(root, dv_xasprintf("cannot enable the %s controller below %s", wanted[i], own_dir));
			if (i == 0)
				memory = false;
			else
				cpu = false;
		}
	}
out:
	if (memory)
		root->memory_base = dv_xstrdup(base);
	if (cpu)
		root->cpu_base = dv_xstrdup(base);
	free(own);
	free(own_dir);
	free(base);
	free(controllers_path);
	free(available);
	free(daemon_dir);
}

void dv_cgroup_root_init(struct dv_cgroup_root *root, const char *fs_root, const char *self_cgroup,
                         const char *name)
{
	memset(root, 0, sizeof *root);
	char *unified = dv_xasprintf("%s/cgroup.controllers", fs_root);
	if (exists(unified)) {
		root->mode = DV_CGROUP_V2;
		v2_init(root, fs_root, self_cgroup, name);
	} else {
		root->mode = DV_CGROUP_V1;
		root->memory_base = v1_base(root, fs_root, self_cgroup, "memory", "memory.limit_in_bytes", name);
		root->cpu_base = v1_base(root, fs_root, self_cgroup, "cpu", "cpu.cfs_quota_us", name);
	}
	if (!root->memory_base && !root->cpu_base)
		root->mode = DV_CGROUP_NONE;
	free(unified);
}

void dv_cgroup_root_dispose(struct dv_cgroup_root *root)
{
	/* Fails (harmlessly) while replica cgroups are still below. */
	if (root->memory_base)
		rmdir(root->memory_base);
	if (root->cpu_base && (!root->memory_base || strcmp(root->cpu_base, root->memory_base) != 0))
		rmdir(root->cpu_base);
	dv_free(&root->memory_base);
	dv_free(&root->cpu_base);
	dv_free(&root->reason);
	root->mode = DV_CGROUP_NONE;
}

static int set_value(const char *dir, const char *file, const char *value, char **err)
{
	char *path = dv_xasprintf("%s/%s", dir, file);
	int rc = write_file(path, value);
	if (rc == -1 && err)
		*err = dv_xasprintf("cannot write %s to %s: %s", value, path, strerror(errno));
	free(path);
	return rc;
}

/* Creates dir and opens its cgroup.procs into the next slot of cg. */
static int add_dir(struct dv_cgroup *cg, const char *base, const char *leaf, const char *controller, char **err)
{
	char *dir = dv_xasprintf("%s/%s", base, leaf);
	char *procs = NULL;
	int rc = -1;
	if (make_dir(dir) == -1) {
		if (err)
			*err = dv_xasprintf("cannot create the cgroup %s: %s", dir, strerror(errno));
		goto out;
	}
	procs = dv_xasprintf("%s/cgroup.procs", dir);
	int fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd == -1) {
		if (err)
			*err = dv_xasprintf("cannot open %s: %s", procs, strerror(errno));
		rmdir(dir);
		goto out;
	}
	cg->dirs[cg->n] = dir;
	cg->controllers[cg->n] = controller;
	cg->procs_fds[cg->n] = fd;
	cg->n++;
	dir = NULL;
	rc = 0;
out:
	free(dir);
	free(procs);
	return rc;
}

int dv_cgroup_create(const struct dv_cgroup_root *root, const char *leaf, uint64_t memory_limit, double cpu_limit,
                     struct dv_cgroup *cg, char **err)
{
	memset(cg, 0, sizeof *cg);
	for (size_t i = 0; i < DV_CGROUP_DIRS; i++)
		cg->procs_fds[i] = -1;
	cg->mode = root->mode;
	int rc = -1;
	char value[64];
	uint64_t quota = 0;
	if (cpu_limit > 0) {
		double q = cpu_limit * CPU_PERIOD_US;
		quota = q < 1000 ? 1000 : (q > 1e15 ? (uint64_t)1e15 : (uint64_t)q);
	}
	if (memory_limit == 0 && quota == 0)
		return 0;
	if ((memory_limit && !root->memory_base) || (quota && !root->cpu_base)) {
		if (err)
			*err = dv_xasprintf("cgroup %s not usable: %s", memory_limit && !root->memory_base ? "memory" : "cpu",
			                    root->reason ? root->reason : "no cgroup hierarchy found");
		goto out;
	}
	if (root->mode == DV_CGROUP_V2) {
		if (add_dir(cg, root->memory_base ? root->memory_base : root->cpu_base, leaf, "unified", err) == -1)
			goto out;
		if (memory_limit) {
			snprintf(value, sizeof value, "%" PRIu64, memory_limit);
			if (set_value(cg->dirs[0], "memory.max", value, err) == -1)
				goto out;
		}
		if (quota) {
			snprintf(value, sizeof value, "%" PRIu64 " %u", quota, CPU_PERIOD_US);
			if (set_value(cg->dirs[0], "cpu.max", value, err) == -1)
				goto out;
		}
	} else {
		if (memory_limit) {
			if (add_dir(cg, root->memory_base, leaf, "memory", err) == -1)
				goto out;
			snprintf(value, sizeof value, "%" PRIu64, memory_limit);
			if (set_value(cg->dirs[cg->n - 1], "memory.limit_in_bytes", value, err) == -1)
				goto out;
		}
		if (quota) {
			if (add_dir(cg, root->cpu_base, leaf, "cpu", err) == -1)
				goto out;
			snprintf(value, sizeof value, "%u", CPU_PERIOD_US);
			if (set_value(cg->dirs[cg->n - 1], "cpu.cfs_period_us", value, err) == -1)
				goto out;
			snprintf(value, sizeof value, "%" PRIu64, quota);
			if (set_value(cg->dirs[cg->n - 1], "cpu.cfs_quota_us", value, err) == -1)
				goto out;
		}
	}
	rc = 0;
out:
	if (rc != 0) {
		dv_cgroup_close_fds(cg);
		dv_cgroup_remove(cg);
		dv_cgroup_dispose(cg);
	}
	return rc;
}

int dv_cgroup_join_self(const struct dv_cgroup *cg)
{
	/* Async-signal-safe: no stdio, no allocation. */
	char digits[24];
	size_t len = 0;
	char text[24];
	unsigned long pid = (unsigned long)getpid();
	do {
		digits[len++] = (char)('0' + pid % 10);
		pid /= 10;
	} while (pid && len < sizeof digits);
	for (size_t i = 0; i < len; i++)
		text[i] = digits[len - 1 - i];
	for (size_t i = 0; i < cg->n; i++) {
		if (cg->procs_fds[i] == -1)
			continue;
		ssize_t n;
		do
			n = write(cg->procs_fds[i], text, len);
		while (n == -1 && errno == EINTR);
		if (n != (ssize_t)len)
			return n == -1 ? errno : EIO;
	}
	return 0;
}

void dv_cgroup_close_fds(struct dv_cgroup *cg)
{
	for (size_t i = 0; i < DV_CGROUP_DIRS; i++) {
		if (cg->procs_fds[i] != -1)
			close(cg->procs_fds[i]);
		cg->procs_fds[i] = -1;
	}
}

void dv_cgroup_kill(const struct dv_cgroup *cg)
{
	for (size_t i = 0; i < cg->n; i++) {
		if (!cg->dirs[i])
			continue;
		if (cg->mode == DV_CGROUP_V2) {
			char *kill_path = dv_xasprintf("%s/cgroup.kill", cg->dirs[i]);
			int rc = write_file(kill_path, "1");
			free(kill_path);
			if (rc == 0)
				continue; /* kernel >= 5.14 */
		}
		char *procs = dv_xasprintf("%s/cgroup.procs", cg->dirs[i]);
		char *text = read_small_file(procs, 1024 * 1024);
		free(procs);
		if (!text)
			continue;
		for (char *p = text; *p;) {
			char *end;
			long pid = strtol(p, &end, 10);
			if (end == p)
				break;
			if (pid > 0)
				kill((pid_t)pid, SIGKILL);
			p = end;
			while (*p == '\n')
				p++;
		}
		free(text);
	}
}

int dv_cgroup_remove(struct dv_cgroup *cg)
{
	int rc = 0;
	for (size_t i = 0; i < cg->n; i++) {
		if (!cg->dirs[i])
			continue;
		if (rmdir(cg->dirs[i]) == 0 || errno == ENOENT)
			dv_free(&cg->dirs[i]);
		else
			rc = -1;
	}
	return rc;
}

void dv_cgroup_dispose(struct dv_cgroup *cg)
{
	dv_cgroup_close_fds(cg);
	for (size_t i = 0; i < DV_CGROUP_DIRS; i++)
		dv_free(&cg->dirs[i]);
	cg->n = 0;
}

const char *dv_cgroup_dir(const struct dv_cgroup *cg, const char *controller)
{
	for (size_t i = 0; i < cg->n; i++) {
		if (!cg->dirs[i])
			continue;
		if (cg->mode == DV_CGROUP_V2 || strcmp(cg->controllers[i], controller) == 0)
			return cg->dirs[i];
	}
	return NULL;
}

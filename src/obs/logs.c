/* obs/logs: see logs.h. */
#include "obs/logs.h"

#include "core/alloc.h"
#include "core/log.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct file {
	char *path;
	int64_t mtime;
	uint64_t size;
};

struct list {
	struct file *files;
	size_t n, cap;
	dev_t *devs;
	ino_t *inos;
	size_t nopen;
};

/* (dev, inode) of every regular file this process has open. */
static void open_files(struct list *l)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	struct dirent *e;
	size_t cap = 0;
	while ((e = readdir(d))) {
		char p[300];
		snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
		struct stat st;
		if (e->d_name[0] == '.' || stat(p, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (l->nopen == cap) {
			cap = cap ? cap * 2 : 64;
			l->devs = dv_xrealloc(l->devs, cap * sizeof *l->devs);
			l->inos = dv_xrealloc(l->inos, cap * sizeof *l->inos);
		}
		l->devs[l->nopen] = st.st_dev;
		l->inos[l->nopen++] = st.st_ino;
	}
	closedir(d);
}

static bool is_open(const struct list *l, const struct stat *st)
{
	for (size_t i = 0; i < l->nopen; i++)
		if (l->devs[i] == st->st_dev && l->inos[i] == st->st_ino)
			return true;
	return false;
}

static bool is_replica_log(const char *name)
{
	const char *p = strstr(name, ".log");
	return p && (p[4] == '\0' || p[4] == '.');
}

static void walk(struct list *l, const char *dir, int depth, struct dv_obs_logs_result *out)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char *p = dv_xasprintf("%s/%s", dir, e->d_name);
		struct stat st;
		if (lstat(p, &st) != 0) {
			free(p);
			continue;
		}
		if (S_ISDIR(st.st_mode) && depth < 2) {
			walk(l, p, depth + 1, out);
			free(p);
		} else if (S_ISREG(st.st_mode) && depth == 2 && is_replica_log(e->d_name) && !is_open(l, &st)) {
			if (l->n == l->cap) {
				l->cap = l->cap ? l->cap * 2 : 64;
				l->files = dv_xrealloc(l->files, l->cap * sizeof *l->files);
			}
			l->files[l->n++] = (struct file){p, (int64_t)st.st_mtime, (uint64_t)st.st_size};
		} else {
			if (S_ISREG(st.st_mode) && depth == 2) {
				out->kept++; /* open: a running replica writes it */
				out->kept_bytes += (uint64_t)st.st_size;
			}
			free(p);
		}
	}
	closedir(d);
}

static int by_age(const void *a, const void *b)
{
	const struct file *x = a, *y = b;
	return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

void dv_obs_prune_logs(const char *dir, int64_t now, int64_t max_age_s, uint64_t max_bytes,
                       struct dv_obs_logs_result *out)
{
	memset(out, 0, sizeof *out);
	struct list l = {0};
	open_files(&l);
	walk(&l, dir, 0, out);
	if (l.n)
		qsort(l.files, l.n, sizeof *l.files, by_age);
	uint64_t total = out->kept_bytes;
	for (size_t i = 0; i < l.n; i++)
		total += l.files[i].size;
	for (size_t i = 0; i < l.n; i++) {
		struct file *f = &l.files[i];
		bool old = max_age_s > 0 && f->mtime < now - max_age_s;
		bool over = max_bytes > 0 && total > max_bytes;
		if ((old || over) && unlink(f->path) == 0) {
			out->removed++;
			out->removed_bytes += f->size;
			total -= f->size;
		} else {
			out->kept++;
			out->kept_bytes += f->size;
		}
		free(f->path);
	}
	if (out->removed)
		dv_log_info("obs", "log retention: removed %zu replica log files (%llu bytes) under %s", out->removed,
		            (unsigned long long)out->removed_bytes, dir);
	free(l.files);
	free(l.devs);
	free(l.inos);
}

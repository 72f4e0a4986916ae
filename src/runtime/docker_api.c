/* The pure parts of the Docker driver. See docker_api.h. */
#include "runtime/docker_api.h"

#include "core/alloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- versions ---- */

static int parse_version(const char *v, unsigned *major, unsigned *minor)
{
	char *end;
	if (!v || !*v)
		return -1;
	unsigned long a = strtoul(v, &end, 10);
	if (end == v || *end != '.')
		return -1;
	const char *m = end + 1;
	unsigned long b = strtoul(m, &end, 10);
	if (end == m || *end)
		return -1;
	*major = (unsigned)a;
	*minor = (unsigned)b;
	return 0;
}

static int version_cmp(unsigned a1, unsigned b1, unsigned a2, unsigned b2)
{
	if (a1 != a2)
		return a1 < a2 ? -1 : 1;
	if (b1 != b2)
		return b1 < b2 ? -1 : 1;
	return 0;
}

int dv_docker_negotiate(const char *server_api, const char *server_min, char *out, size_t size, char **err)
{
	unsigned sa, sb, ma, mb, xa, xb;
	parse_version(DV_DOCKER_API_MIN, &ma, &mb);
	parse_version(DV_DOCKER_API_MAX, &xa, &xb);
	if (parse_version(server_api, &sa, &sb) != 0) {
		*err = dv_xasprintf("the Docker engine reported an unreadable API version '%s'",
		                    server_api ? server_api : "");
		return -1;
	}
	if (version_cmp(sa, sb, ma, mb) < 0) {
		*err = dv_xasprintf("the Docker engine speaks API %u.%u, older than %s which davit needs: upgrade Docker "
		                    "(Debian 12's docker.io works)", sa, sb, DV_DOCKER_API_MIN);
		return -1;
	}
	unsigned ua = sa, ub = sb;
	if (version_cmp(sa, sb, xa, xb) > 0) {
		ua = xa;
		ub = xb;
	}
	unsigned na, nb;
	if (server_min && parse_version(server_min, &na, &nb) == 0 && version_cmp(ua, ub, na, nb) < 0) {
		*err = dv_xasprintf("the Docker engine needs API %s or newer, davit speaks up to %s", server_min,
		                    DV_DOCKER_API_MAX);
		return -1;
	}
	snprintf(out, size, "%u.%u", ua, ub);
	return 0;
}

/* ---- names ---- */

static void sanitize(struct dv_strbuf *b, const char *s, bool lower)
{
	for (; s && *s; s++) {
		char c = *s;
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
		          (!lower && c >= 'A' && c <= 'Z');
		if (lower && c >= 'A' && c <= 'Z') {
			c = (char)(c - 'A' + 'a');
			ok = true;
		}
		dv_strbuf_append(b, ok ? &c : "-", 1);
	}
}

char *dv_docker_container_name(const char *app, const char *service, const char *name)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_strbuf_puts(&b, "davit_");
	sanitize(&b, app, false);
	dv_strbuf_puts(&b, "_");
	sanitize(&b, service, false);
	dv_strbuf_puts(&b, "_");
	sanitize(&b, name, false);
	return dv_strbuf_steal(&b);
}

char *dv_docker_image_tag(const char *app, const char *service, const char *release)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	dv_strbuf_puts(&b, "davit/");
	sanitize(&b, app, true);
	dv_strbuf_puts(&b, "-");
	sanitize(&b, service, true);
	dv_strbuf_puts(&b, ":");
	/* A tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
	sanitize(&b, release && *release ? release : "latest", false);
	return dv_strbuf_steal(&b);
}

char *dv_docker_image_registry(const char *ref)
{
	const char *slash = strchr(ref, '/');
	if (slash) {
		size_t n = (size_t)(slash - ref);
		if (memchr(ref, '.', n) || memchr(ref, ':', n) || (n == 9 && strncmp(ref, "localhost", 9) == 0))
			return dv_xstrndup(ref, n);
	}
	return dv_xstrdup("docker.io");
}

char *dv_docker_auth_header(const char *user, const char *password, const char *server)
{
	struct dv_strbuf j;
	struct dv_json w;
	dv_strbuf_init(&j);
	dv_json_init(&w, &j);
	dv_json_object_begin(&w);
	dv_json_key(&w, "username");
	dv_json_string(&w, user);
	dv_json_key(&w, "password");
	dv_json_string(&w, password);
	dv_json_key(&w, "serveraddress");
	dv_json_string(&w, server);
	dv_json_object_end(&w);
	size_t cap = sodium_base64_encoded_len(j.len, sodium_base64_VARIANT_URLSAFE);
	char *out = dv_xmalloc(cap);
	sodium_bin2base64(out, cap, (const unsigned char *)j.data, j.len, sodium_base64_VARIANT_URLSAFE);
	sodium_memzero(j.data, j.len);
	dv_strbuf_dispose(&j);
	return out;
}

/* ---- container create ---- */

static void json_strv(struct dv_json *w, char *const *v)
{
	dv_json_array_begin(w);
	for (; v && *v; v++)
		dv_json_string(w, *v);
	dv_json_array_end(w);
}

static void label(struct dv_json *w, const char *key, const char *value)
{
	dv_json_key(w, key);
	dv_json_string(w, value ? value : "");
}

void dv_docker_create_json(const struct dv_replica_spec *spec, const char *owner, struct dv_strbuf *out)
{
	const struct dv_container_spec *c = spec->container;
	struct dv_json w;
	dv_json_init(&w, out);
	dv_json_object_begin(&w);
	dv_json_key(&w, "Image");
	dv_json_string(&w, c->image);
	dv_json_key(&w, "Env");
	json_strv(&w, spec->env);
	if (c->has_entrypoint) {
		dv_json_key(&w, "Entrypoint");
		json_strv(&w, c->entrypoint);
	}
	if (c->has_command) {
		dv_json_key(&w, "Cmd");
		json_strv(&w, c->command);
	}
	if (c->user) {
		dv_json_key(&w, "User");
		dv_json_string(&w, c->user);
	}
	if (c->working_dir) {
		dv_json_key(&w, "WorkingDir");
		dv_json_string(&w, c->working_dir);
	}
	char index[16];
	snprintf(index, sizeof index, "%u", spec->index);
	dv_json_key(&w, "Labels");
	dv_json_object_begin(&w);
	label(&w, "davit.app", spec->app);
	label(&w, "davit.service", spec->service);
	label(&w, "davit.release", spec->release);
	label(&w, "davit.replica", index);
	if (spec->name)
		label(&w, "davit.name", spec->name);
	if (owner)
		label(&w, "davit.owner", owner);
	if (c->spec_hash)
		label(&w, "davit.spec", c->spec_hash);
	dv_json_object_end(&w);
	dv_json_key(&w, "StopTimeout");
	dv_json_uint(&w, ((spec->stop_timeout_ms ? spec->stop_timeout_ms : 10000) + 999) / 1000);
	if (c->stop_signal) {
		dv_json_key(&w, "StopSignal");
		dv_json_string(&w, c->stop_signal);
	} else if (spec->stop_signal > 0) {
		char sig[16];
		snprintf(sig, sizeof sig, "%d", spec->stop_signal);
		dv_json_key(&w, "StopSignal");
		dv_json_string(&w, sig);
	}
	/* Ports: the app's port on loopback (the proxy's upstream in loopback
	 * mode) and whatever the compose file publishes. */
	dv_json_key(&w, "ExposedPorts");
	dv_json_object_begin(&w);
	char key[32];
	if (c->app_port) {
		snprintf(key, sizeof key, "%u/tcp", c->app_port);
		dv_json_key(&w, key);
		dv_json_object_begin(&w);
		dv_json_object_end(&w);
	}
	for (size_t i = 0; i < c->n_ports; i++) {
		snprintf(key, sizeof key, "%u/%s", c->ports[i].target, c->ports[i].protocol ? c->ports[i].protocol : "tcp");
		if (c->app_port && c->ports[i].target == c->app_port &&
		    (!c->ports[i].protocol || strcmp(c->ports[i].protocol, "tcp") == 0))
			continue;
		dv_json_key(&w, key);
		dv_json_object_begin(&w);
		dv_json_object_end(&w);
	}
	dv_json_object_end(&w);
	if (c->health_set) {
		dv_json_key(&w, "Healthcheck");
		dv_json_object_begin(&w);
		dv_json_key(&w, "Test");
		if (c->health_disabled) {
			dv_json_array_begin(&w);
			dv_json_string(&w, "NONE");
			dv_json_array_end(&w);
		} else {
			json_strv(&w, c->health_test);
		}
		if (c->health_interval_ms) {
			dv_json_key(&w, "Interval");
			dv_json_uint(&w, c->health_interval_ms * 1000000u);
		}
		if (c->health_timeout_ms) {
			dv_json_key(&w, "Timeout");
			dv_json_uint(&w, c->health_timeout_ms * 1000000u);
		}
		if (c->health_start_period_ms) {
			dv_json_key(&w, "StartPeriod");
			dv_json_uint(&w, c->health_start_period_ms * 1000000u);
		}
		if (c->health_retries) {
			dv_json_key(&w, "Retries");
			dv_json_uint(&w, c->health_retries);
		}
		dv_json_object_end(&w);
	}

	dv_json_key(&w, "HostConfig");
	dv_json_object_begin(&w);
	dv_json_key(&w, "Init");
	dv_json_bool(&w, true);
	dv_json_key(&w, "RestartPolicy"); /* davit supervises */
	dv_json_object_begin(&w);
	dv_json_key(&w, "Name");
	dv_json_string(&w, "no");
	dv_json_object_end(&w);
	if (spec->memory_limit) {
		dv_json_key(&w, "Memory");
		dv_json_uint(&w, spec->memory_limit);
	}
	if (spec->cpu_limit > 0) {
		dv_json_key(&w, "NanoCpus");
		dv_json_uint(&w, (uint64_t)(spec->cpu_limit * 1e9));
	}
	if (c->pids_limit > 0) {
		dv_json_key(&w, "PidsLimit");
		dv_json_int(&w, c->pids_limit);
	}
	dv_json_key(&w, "PortBindings");
	dv_json_object_begin(&w);
	if (c->app_port && c->loopback_port) {
		snprintf(key, sizeof key, "%u/tcp", c->app_port);
		dv_json_key(&w, key);
		dv_json_array_begin(&w);
		dv_json_object_begin(&w);
		dv_json_key(&w, "HostIp");
		dv_json_string(&w, "127.0.0.1");
		dv_json_key(&w, "HostPort");
		char hp[8];
		snprintf(hp, sizeof hp, "%u", c->loopback_port);
		dv_json_string(&w, hp);
		dv_json_object_end(&w);
		/* A compose port for the same target joins this list (below). */
		for (size_t i = 0; i < c->n_ports; i++) {
			const struct dv_container_port *p = &c->ports[i];
			if (p->target != c->app_port || (p->protocol && strcmp(p->protocol, "tcp") != 0))
				continue;
			dv_json_object_begin(&w);
			dv_json_key(&w, "HostIp");
			dv_json_string(&w, p->host_ip ? p->host_ip : "");
			dv_json_key(&w, "HostPort");
			snprintf(hp, sizeof hp, "%u", p->host_port);
			dv_json_string(&w, p->host_port ? hp : "");
			dv_json_object_end(&w);
		}
		dv_json_array_end(&w);
	}
	/* Other published ports, grouped by target. */
	for (size_t i = 0; i < c->n_ports; i++) {
		const struct dv_container_port *p = &c->ports[i];
		const char *proto = p->protocol ? p->protocol : "tcp";
		if (c->loopback_port && p->target == c->app_port && strcmp(proto, "tcp") == 0)
			continue;
		bool seen = false;
		for (size_t k = 0; k < i; k++)
			if (c->ports[k].target == p->target &&
			    strcmp(c->ports[k].protocol ? c->ports[k].protocol : "tcp", proto) == 0)
				seen = true;
		if (seen)
			continue;
		snprintf(key, sizeof key, "%u/%s", p->target, proto);
		dv_json_key(&w, key);
		dv_json_array_begin(&w);
		for (size_t k = i; k < c->n_ports; k++) {
			const struct dv_container_port *q = &c->ports[k];
			if (q->target != p->target || strcmp(q->protocol ? q->protocol : "tcp", proto) != 0)
				continue;
			char hp[8];
			snprintf(hp, sizeof hp, "%u", q->host_port);
			dv_json_object_begin(&w);
			dv_json_key(&w, "HostIp");
			dv_json_string(&w, q->host_ip ? q->host_ip : "");
			dv_json_key(&w, "HostPort");
			dv_json_string(&w, q->host_port ? hp : "");
			dv_json_object_end(&w);
		}
		dv_json_array_end(&w);
	}
	dv_json_object_end(&w);
	dv_json_key(&w, "Mounts");
	dv_json_array_begin(&w);
	for (size_t i = 0; i < c->n_mounts; i++) {
		const struct dv_container_mount *m = &c->mounts[i];
		dv_json_object_begin(&w);
		dv_json_key(&w, "Type");
		dv_json_string(&w, m->type == DV_MOUNT_BIND ? "bind" : m->type == DV_MOUNT_TMPFS ? "tmpfs" : "volume");
		if (m->type != DV_MOUNT_TMPFS && m->source) {
			dv_json_key(&w, "Source");
			dv_json_string(&w, m->source);
		}
		dv_json_key(&w, "Target");
		dv_json_string(&w, m->target);
		dv_json_key(&w, "ReadOnly");
		dv_json_bool(&w, m->read_only);
		if (m->type == DV_MOUNT_TMPFS && m->tmpfs_size) {
			dv_json_key(&w, "TmpfsOptions");
			dv_json_object_begin(&w);
			dv_json_key(&w, "SizeBytes");
			dv_json_uint(&w, m->tmpfs_size);
			dv_json_object_end(&w);
		}
		dv_json_object_end(&w);
	}
	dv_json_array_end(&w);
	if (c->n_networks) {
		dv_json_key(&w, "NetworkMode");
		dv_json_string(&w, c->networks[0].name);
	}
	dv_json_object_end(&w);

	if (c->n_networks) {
		dv_json_key(&w, "NetworkingConfig");
		dv_json_object_begin(&w);
		dv_json_key(&w, "EndpointsConfig");
		dv_json_object_begin(&w);
		dv_json_key(&w, c->networks[0].name);
		dv_json_object_begin(&w);
		dv_json_key(&w, "Aliases");
		json_strv(&w, c->networks[0].aliases);
		dv_json_object_end(&w);
		dv_json_object_end(&w);
		dv_json_object_end(&w);
	}
	dv_json_object_end(&w);
}

/* ---- streams ---- */

void dv_docker_demux_feed(struct dv_docker_demux *d, const char *data, size_t len, dv_docker_demux_cb cb, void *arg)
{
	while (len > 0) {
		if (d->remaining == 0) {
			size_t take = 8 - d->hdr_len;
			if (take > len)
				take = len;
			memcpy(d->hdr + d->hdr_len, data, take);
			d->hdr_len += take;
			data += take;
			len -= take;
			if (d->hdr_len < 8)
				return;
			d->hdr_len = 0;
			d->stream = d->hdr[0] == 2 ? 2 : 1;
			d->remaining = (size_t)d->hdr[4] << 24 | (size_t)d->hdr[5] << 16 | (size_t)d->hdr[6] << 8 | d->hdr[7];
			continue;
		}
		size_t take = d->remaining < len ? d->remaining : len;
		cb(d->stream, data, take, arg);
		d->remaining -= take;
		data += take;
		len -= take;
	}
}

void dv_docker_json_lines(struct dv_strbuf *buf, const char *data, size_t len,
                          void (*cb)(const char *line, size_t len, void *arg), void *arg)
{
	dv_strbuf_append(buf, data, len);
	size_t start = 0;
	for (size_t i = 0; i < buf->len; i++) {
		if (buf->data[i] != '\n')
			continue;
		if (i > start)
			cb(buf->data + start, i - start, arg);
		start = i + 1;
	}
	if (start) {
		memmove(buf->data, buf->data + start, buf->len - start);
		buf->len -= start;
		buf->data[buf->len] = '\0';
	}
}

/* ---- tar ---- */

static void octal(char *field, size_t width, uint64_t value)
{
	/* width - 1 digits and a NUL (callers check that the value fits) */
	char tmp[32];
	int n = snprintf(tmp, sizeof tmp, "%0*" PRIo64, (int)(width - 1), value);
	if (n > 0 && (size_t)n < width)
		memcpy(field, tmp, (size_t)n + 1);
}

int dv_tar_header(unsigned char hdr[512], const char *name, uint64_t size, unsigned mode, char type, int64_t mtime)
{
	memset(hdr, 0, 512);
	size_t n = strlen(name);
	const char *base = name;
	size_t prefix_len = 0;
	if (n > 100) {
		/* ustar: prefix (155) "/" name (100), split at a slash */
		const char *split = NULL;
		for (const char *p = name + n - 1; p > name; p--)
			if (*p == '/' && (size_t)(p - name) <= 155 && n - (size_t)(p - name) - 1 <= 100) {
				split = p;
				break;
			}
		if (!split)
			return -1;
		prefix_len = (size_t)(split - name);
		base = split + 1;
	}
	if (strlen(base) > 100 || strlen(base) == 0)
		return -1;
	memcpy(hdr, base, strlen(base));
	octal((char *)hdr + 100, 8, mode & 07777);
	octal((char *)hdr + 108, 8, 0);
	octal((char *)hdr + 116, 8, 0);
	if (size > 077777777777ull)
		return -1;
	octal((char *)hdr + 124, 12, size);
	octal((char *)hdr + 136, 12, mtime > 0 ? (uint64_t)mtime : 0);
	memset(hdr + 148, ' ', 8);
	hdr[156] = (unsigned char)type;
	memcpy(hdr + 257, "ustar", 6);
	memcpy(hdr + 263, "00", 2);
	if (prefix_len)
		memcpy(hdr + 345, name, prefix_len);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += hdr[i];
	snprintf((char *)hdr + 148, 8, "%06o", sum);
	hdr[155] = ' ';
	return 0;
}

struct tar_ctx {
	const char *root;
	uint64_t max;
	bool mtimes;
	struct dv_strbuf *out;
	char **ignore;
	size_t n_ignore;
	char **err;
};

static bool ignored(const struct tar_ctx *t, const char *rel)
{
	for (size_t i = 0; i < t->n_ignore; i++) {
		size_t l = strlen(t->ignore[i]);
		if (strncmp(rel, t->ignore[i], l) == 0 && (rel[l] == '\0' || rel[l] == '/'))
			return true;
	}
	return false;
}

static int tar_add(struct tar_ctx *t, const char *rel, const struct stat *st)
{
	unsigned char hdr[512];
	char type = S_ISDIR(st->st_mode) ? '5' : '0';
	uint64_t size = S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
	char *name = S_ISDIR(st->st_mode) ? dv_xasprintf("%s/", rel) : dv_xstrdup(rel);
	int rc = dv_tar_header(hdr, name, size, (unsigned)st->st_mode, type, t->mtimes ? st->st_mtime : 0);
	free(name);
	if (rc != 0) {
		*t->err = dv_xasprintf("build context: the path %s is too long for a tar archive", rel);
		return -1;
	}
	if (t->out->len + 512 + size + 1024 > t->max) {
		*t->err = dv_xasprintf("build context %s is larger than %" PRIu64 " MiB: add a .dockerignore", t->root,
		                       t->max >> 20);
		return -1;
	}
	dv_strbuf_append(t->out, hdr, 512);
	if (!S_ISREG(st->st_mode))
		return 0;
	char *path = dv_xasprintf("%s/%s", t->root, rel);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd == -1) {
		*t->err = dv_xasprintf("build context: cannot read %s: %s", rel, strerror(errno));
		return -1;
	}
	char buf[65536];
	uint64_t left = size;
	while (left > 0) {
		ssize_t n = read(fd, buf, left < sizeof buf ? left : sizeof buf);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			*t->err = dv_xasprintf("build context: %s changed while it was read", rel);
			return -1;
		}
		dv_strbuf_append(t->out, buf, (size_t)n);
		left -= (uint64_t)n;
	}
	close(fd);
	static const char zeros[512];
	if (size % 512)
		dv_strbuf_append(t->out, zeros, 512 - size % 512);
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int tar_walk(struct tar_ctx *t, const char *rel)
{
	char *dir = rel ? dv_xasprintf("%s/%s", t->root, rel) : dv_xstrdup(t->root);
	DIR *d = opendir(dir);
	if (!d) {
		*t->err = dv_xasprintf("build context: cannot open %s: %s", dir, strerror(errno));
		free(dir);
		return -1;
	}
	/* Sorted, so that the same tree gives the same archive. */
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		names = dv_xrealloc(names, (n + 1) * sizeof *names);
		names[n++] = dv_xstrdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof *names, name_cmp);
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		char *child = rel ? dv_xasprintf("%s/%s", rel, names[i]) : dv_xstrdup(names[i]);
		char *path = dv_xasprintf("%s/%s", dir, names[i]);
		struct stat st;
		if (rc == 0 && !ignored(t, child) && lstat(path, &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
			rc = tar_add(t, child, &st);
			if (rc == 0 && S_ISDIR(st.st_mode))
				rc = tar_walk(t, child);
		}
		free(child);
		free(path);
		free(names[i]);
	}
	free(names);
	free(dir);
	return rc;
}

int dv_tar_directory(const char *dir, uint64_t max_bytes, bool mtimes, struct dv_strbuf *out, char **err)
{
	struct tar_ctx t = {.root = dir, .max = max_bytes, .mtimes = mtimes, .out = out, .err = err};
	/* .dockerignore: plain paths (no patterns), one per line. */
	char *ign = dv_xasprintf("%s/.dockerignore", dir);
	FILE *f = fopen(ign, "r");
	free(ign);
	if (f) {
		char *line = NULL;
		size_t cap = 0;
		ssize_t len;
		while ((len = getline(&line, &cap, f)) != -1) {
			while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == '/' ||
			                   line[len - 1] == ' '))
				line[--len] = '\0';
			const char *p = line;
			while (*p == ' ' || (*p == '.' && p[1] == '/'))
				p += *p == ' ' ? 1 : 2;
			if (!*p || *p == '#' || *p == '!' || strpbrk(p, "*?["))
				continue;
			t.ignore = dv_xrealloc(t.ignore, (t.n_ignore + 1) * sizeof *t.ignore);
			t.ignore[t.n_ignore++] = dv_xstrdup(p);
		}
		free(line);
		fclose(f);
	}
	int rc = tar_walk(&t, NULL);
	if (rc == 0) {
		static const char zeros[1024];
		dv_strbuf_append(out, zeros, sizeof zeros);
	}
	for (size_t i = 0; i < t.n_ignore; i++)
		free(t.ignore[i]);
	free(t.ignore);
	return rc;
}

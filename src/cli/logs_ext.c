/* `davit logs` with filters: --level, --grep, --since/--until, --component,
 * --daemon (davit's own JSON log), --output FILE. Replica lines come from the
 * daemon as JSON lines (/v1/logs?format=json) and are filtered here; the
 * daemon's own log is read from <state>/logs/davit.log[.1] (same machine). */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/jsonparse.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const ext_opts[] = {"--level", "--grep", "--since", "--until", "--component", "--output",
                                       "--daemon", NULL};

bool dv_cli_logs_extended(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		for (int k = 0; ext_opts[k]; k++)
			if (strcmp(argv[i], ext_opts[k]) == 0)
				return true;
	return false;
}

struct filter {
	int min_level;            /* -1: any */
	const char *grep;
	char since[40], until[40]; /* "" or an ISO time stamp to compare with */
	const char *component;
	bool json, daemon;
	FILE *out;
	struct dv_strbuf partial;  /* an incomplete line of the stream */
	const int *status;         /* the daemon's answer status (replica logs) */
	struct dv_strbuf error;    /* the body of an error answer */
	unsigned long shown;
};

/* "2026-12-02T01:00:00.000Z" for unix seconds t. */
static void iso(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

/* DUR ago, unix seconds, or an ISO time (2026-12-02T01:00:00Z). */
static int parse_when(const char *v, char *out, size_t size)
{
	uint64_t n;
	if (strchr(v, 'T') && strlen(v) >= 19) {
		snprintf(out, size, "%s", v);
		return 0;
	}
	if (strlen(v) >= 9 && dv_parse_uint(v, INT64_MAX, &n) == 0) {
		iso((int64_t)n, out, size);
		return 0;
	}
	size_t len = strlen(v);
	uint64_t days;
	char num[32];
	snprintf(num, sizeof num, "%.*s", len ? (int)len - 1 : 0, v);
	if (len > 1 && v[len - 1] == 'd' && dv_parse_uint(num, 36500, &days) == 0) {
		iso((int64_t)time(NULL) - (int64_t)days * 86400, out, size);
		return 0;
	}
	if (dv_parse_duration_ms(v, &n) != 0)
		return -1;
	iso((int64_t)time(NULL) - (int64_t)(n / 1000), out, size);
	return 0;
}

static bool contains_ci(const char *hay, size_t len, const char *needle)
{
	size_t nl = strlen(needle);
	for (size_t i = 0; i + nl <= len; i++)
		if (strncasecmp(hay + i, needle, nl) == 0)
			return true;
	return false;
}

/* The level of an application's line: its own "level" when it logs JSON,
 * else a level word near the start, else info. */
static int line_level(const char *text, size_t len)
{
	if (len && text[0] == '{') {
		struct dv_jv *j = dv_jv_parse(text, len, NULL);
		const char *l = dv_jv_str(j, "level", dv_jv_str(j, "severity", dv_jv_str(j, "lvl", NULL)));
		enum dv_log_level lv;
		int r = -1;
		if (l) {
			char low[16];
			size_t k = 0;
			for (; l[k] && k < sizeof low - 1; k++)
				low[k] = (char)tolower((unsigned char)l[k]);
			low[k] = '\0';
			if (dv_log_level_parse(low, &lv) == 0)
				r = (int)lv;
			else if (strcmp(low, "fatal") == 0 || strcmp(low, "critical") == 0 || strcmp(low, "panic") == 0)
				r = DV_LOG_ERROR;
			else if (strcmp(low, "trace") == 0)
				r = DV_LOG_DEBUG;
		}
		dv_jv_free(j);
		if (r >= 0)
			return r;
	}
	size_t head = len < 80 ? len : 80;
	if (contains_ci(text, head, "error") || contains_ci(text, head, "fatal") || contains_ci(text, head, "panic") ||
	    contains_ci(text, head, "crit"))
		return DV_LOG_ERROR;
	if (contains_ci(text, head, "warn"))
		return DV_LOG_WARN;
	if (contains_ci(text, head, "debug") || contains_ci(text, head, "trace"))
		return DV_LOG_DEBUG;
	return DV_LOG_INFO;
}

static bool time_ok(const struct filter *f, const char *t)
{
	if (f->since[0] && strcmp(t, f->since) < 0)
		return false;
	if (f->until[0] && strcmp(t, f->until) > 0)
		return false;
	return true;
}

/* One JSON line (a replica's or the daemon's): print it if it passes. */
static void one_line(struct filter *f, const char *line, size_t len)
{
	if (len == 0)
		return;
	struct dv_jv *j = dv_jv_parse(line, len, NULL);
	if (!j)
		return;
	const char *t = dv_jv_str(j, "time", "");
	bool ok = time_ok(f, t);
	if (f->daemon) {
		const char *msg = dv_jv_str(j, "message", "");
		const char *comp = dv_jv_str(j, "component", "");
		enum dv_log_level lv = DV_LOG_INFO;
		dv_log_level_parse(dv_jv_str(j, "level", "info"), &lv);
		ok = ok && (f->min_level < 0 || (int)lv >= f->min_level);
		ok = ok && (!f->component || strcmp(comp, f->component) == 0);
		ok = ok && (!f->grep || contains_ci(msg, strlen(msg), f->grep));
		if (ok) {
			if (f->json)
				fprintf(f->out, "%.*s\n", (int)len, line);
			else
				fprintf(f->out, "%s %s %s: %s\n", t, dv_jv_str(j, "level", "?"), comp, msg);
			f->shown++;
		}
	} else {
		const struct dv_jv *lj = dv_jv_get(j, "line");
		const char *text = lj && lj->type == DV_JV_STRING ? lj->string : "";
		size_t tl = lj && lj->type == DV_JV_STRING ? lj->len : 0;
		ok = ok && (f->min_level < 0 || line_level(text, tl) >= f->min_level);
		ok = ok && (!f->grep || contains_ci(text, tl, f->grep));
		if (ok) {
			if (f->json) {
				fprintf(f->out, "%.*s\n", (int)len, line);
			} else {
				const char *stream = dv_jv_str(j, "stream", "stdout");
				fprintf(f->out, "%s %s#%lld %s | %.*s\n", t, dv_jv_str(j, "service", "?"),
				        (long long)dv_jv_int(j, "replica", 0), strlen(stream) > 3 ? stream + 3 : stream, (int)tl,
				        text);
			}
			f->shown++;
		}
	}
	dv_jv_free(j);
}

static void feed(struct filter *f, const char *data, size_t len)
{
	dv_strbuf_append(&f->partial, data, len);
	size_t start = 0;
	for (size_t i = 0; i < f->partial.len; i++) {
		if (f->partial.data[i] == '\n') {
			one_line(f, f->partial.data + start, i - start);
			start = i + 1;
		}
	}
	if (start) {
		memmove(f->partial.data, f->partial.data + start, f->partial.len - start);
		f->partial.len -= start;
		f->partial.data[f->partial.len] = '\0';
	}
	fflush(f->out);
}

static void on_data(const char *data, size_t len, void *arg)
{
	struct filter *f = arg;
	if (f->status && (*f->status < 200 || *f->status > 299))
		dv_strbuf_append(&f->error, data, len);
	else
		feed(f, data, len);
}

static volatile sig_atomic_t stop_requested;

static void on_sigint(int sig)
{
	stop_requested = 1;
}

/* Reads path from *off to its end into the filter; returns false if absent. */
static bool read_from(struct filter *f, const char *path, off_t *off)
{
	FILE *in = fopen(path, "re");
	if (!in)
		return false;
	if (*off && fseeko(in, *off, SEEK_SET) != 0)
		*off = 0;
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
		feed(f, buf, n);
		*off += (off_t)n;
	}
	fclose(in);
	return true;
}

/* ---- replica log files (for time ranges: everything retention kept) ---- */

struct entry {
	char *json;
	size_t len;
	char ts[32];
	size_t seq;
};

struct entries {
	struct entry *v;
	size_t n, cap;
};

static int by_time(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	int c = strcmp(x->ts, y->ts);
	return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

/* One replica log file: "TIME STREAM TEXT" lines, as runtime/replica_log writes them. */
static void read_replica_file(struct filter *f, struct entries *out, const char *path, const char *app,
                              const char *service, long release, long index)
{
	FILE *in = fopen(path, "re");
	if (!in)
		return;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, in)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		char *sp = strchr(line, ' ');
		char *sp2 = sp ? strchr(sp + 1, ' ') : NULL;
		if (!sp || !sp2 || sp - line >= 31)
			continue;
		*sp = *sp2 = '\0';
		if (!time_ok(f, line))
			continue;
		struct dv_strbuf b;
		dv_strbuf_init(&b);
		struct dv_json j;
		dv_json_init(&j, &b);
		dv_json_object_begin(&j);
		dv_json_key(&j, "time");
		dv_json_string(&j, line);
		dv_json_key(&j, "app");
		dv_json_string(&j, app);
		dv_json_key(&j, "service");
		dv_json_string(&j, service);
		dv_json_key(&j, "replica");
		dv_json_int(&j, index);
		dv_json_key(&j, "release");
		dv_json_int(&j, release);
		dv_json_key(&j, "stream");
		dv_json_string(&j, sp + 1);
		dv_json_key(&j, "line");
		dv_json_string_n(&j, sp2 + 1, (size_t)(line + len - (sp2 + 1)));
		dv_json_object_end(&j);
		if (out->n == out->cap) {
			out->cap = out->cap ? out->cap * 2 : 256;
			out->v = dv_xrealloc(out->v, out->cap * sizeof *out->v);
		}
		struct entry *e = &out->v[out->n];
		snprintf(e->ts, sizeof e->ts, "%s", line);
		e->seq = out->n++;
		e->len = b.len;
		e->json = dv_strbuf_steal(&b);
	}
	free(line);
	fclose(in);
}

static int file_logs(struct filter *f, const char *state_dir, const char *app, const char *service)
{
	char *root = dv_xasprintf("%s/logs", state_dir);
	DIR *ad = opendir(root);
	if (!ad) {
		fprintf(stderr, "davit logs: no logs under %s (is the state directory right?)\n", root);
		free(root);
		return 1;
	}
	struct entries all = {0};
	bool service_seen = false;
	struct dirent *a;
	while ((a = readdir(ad))) {
		if (a->d_name[0] == '.' || (app && strcmp(a->d_name, app) != 0))
			continue;
		char *adir = dv_xasprintf("%s/%s", root, a->d_name);
		DIR *sd = opendir(adir);
		struct dirent *sv;
		while (sd && (sv = readdir(sd))) {
			if (sv->d_name[0] == '.' || (service && strcmp(sv->d_name, service) != 0))
				continue;
			char *sdir = dv_xasprintf("%s/%s", adir, sv->d_name);
			DIR *fd = opendir(sdir);
			struct dirent *fe;
			if (fd)
				service_seen = true;
			while (fd && (fe = readdir(fd))) {
				long rel, idx;
				int used = 0;
				if (sscanf(fe->d_name, "r%ld-%ld.log%n", &rel, &idx, &used) != 2 || used == 0 ||
				    (fe->d_name[used] && fe->d_name[used] != '.'))
					continue;
				char *path = dv_xasprintf("%s/%s", sdir, fe->d_name);
				read_replica_file(f, &all, path, a->d_name, sv->d_name, rel, idx);
				free(path);
			}
			if (fd)
				closedir(fd);
			free(sdir);
		}
		if (sd)
			closedir(sd);
		free(adir);
	}
	closedir(ad);
	free(root);
	if (service && !service_seen) {
		fprintf(stderr, "davit logs: no log files for service '%s'\n", service);
		return 1;
	}
	if (all.n)
		qsort(all.v, all.n, sizeof *all.v, by_time);
	for (size_t i = 0; i < all.n; i++) {
		one_line(f, all.v[i].json, all.v[i].len);
		free(all.v[i].json);
	}
	fflush(f->out);
	free(all.v);
	return 0;
}

static int daemon_log(struct filter *f, const char *state_dir, bool follow, unsigned long tail)
{
	char *path = dv_xasprintf("%s/logs/davit.log", state_dir), *old = dv_xasprintf("%s.1", path);
	off_t off = 0, off_old = 0;
	/* --tail for the daemon log: skip to the last lines of the current file. */
	struct stat st;
	if (tail && !f->since[0] && stat(path, &st) == 0 && (uint64_t)st.st_size > tail * 400)
		off = st.st_size - (off_t)(tail * 400);
	bool skip_partial = off > 0;
	if (!off)
		read_from(f, old, &off_old);
	if (skip_partial) {
		/* Start at a line boundary. */
		FILE *in = fopen(path, "re");
		if (in && fseeko(in, off, SEEK_SET) == 0) {
			int c;
			while ((c = fgetc(in)) != EOF && c != '\n')
				off++;
			off++;
		}
		if (in)
			fclose(in);
	}
	if (!read_from(f, path, &off)) {
		fprintf(stderr, "davit logs: no daemon log at %s (is the state directory right?)\n", path);
		free(path);
		free(old);
		return 1;
	}
	ino_t ino = stat(path, &st) == 0 ? st.st_ino : 0;
	if (follow) {
		signal(SIGINT, on_sigint);
		signal(SIGTERM, on_sigint);
		while (!stop_requested) {
			struct timespec ts = {0, 200 * 1000000L};
			nanosleep(&ts, NULL);
			if (stat(path, &st) == 0 && st.st_ino != ino) {
				/* rotated: the rest of the old file, then the new one */
				read_from(f, old, &off);
				off = 0;
				ino = st.st_ino;
			}
			read_from(f, path, &off);
		}
	}
	free(path);
	free(old);
	return 0;
}

int dv_cli_logs_ext(int argc, char **argv)
{
	static const char *const names[] = {"--level", "--grep", "--since", "--until", "--component", "--output",
	                                    "--daemon!", NULL};
	const char *vals[7] = {NULL};
	struct dv_cli_common c;
	int rc = dv_cli_parse_extra(argc, argv, names, vals, &c, "see davit logs --help\n", 1, true, "logs");
	if (rc)
		return rc < 0 ? 0 : rc;
	bool daemon = vals[6] != NULL;
	struct filter f;
	memset(&f, 0, sizeof f);
	f.min_level = -1;
	f.json = c.json;
	f.daemon = daemon;
	f.grep = vals[1];
	f.component = vals[4];
	dv_strbuf_init(&f.partial);
	if (vals[0]) {
		enum dv_log_level lv;
		if (dv_log_level_parse(vals[0], &lv) != 0) {
			fprintf(stderr, "davit logs: --level is debug, info, warn or error\n");
			return 2;
		}
		f.min_level = (int)lv;
	}
	if ((vals[2] && parse_when(vals[2], f.since, sizeof f.since) != 0) ||
	    (vals[3] && parse_when(vals[3], f.until, sizeof f.until) != 0)) {
		fprintf(stderr, "davit logs: --since/--until take a duration ago (30m, 2h, 7d), unix seconds or "
		                "an ISO time (2026-12-02T01:00:00Z)\n");
		return 2;
	}
	if (f.component && !daemon) {
		fprintf(stderr, "davit logs: --component filters the daemon's own log: add --daemon\n");
		return 2;
	}
	f.out = stdout;
	if (vals[5]) {
		f.out = fopen(vals[5], "we");
		if (!f.out) {
			fprintf(stderr, "davit logs: cannot write %s: %s\n", vals[5], strerror(errno));
			return 1;
		}
	}
	uint64_t tail = 100;
	if (c.tail && dv_parse_uint(c.tail, 100000, &tail) != 0) {
		fprintf(stderr, "davit logs: --tail takes a number of lines\n");
		return 2;
	}
	if (!c.tail && (f.since[0] || f.grep || f.min_level >= 0))
		tail = 100000; /* filters look at everything kept */
	bool range = f.since[0] || f.until[0];
	if (daemon) {
		rc = daemon_log(&f, c.state_dir, c.follow, c.tail ? (unsigned long)tail : 0);
	} else if (range && !c.tail && (rc = file_logs(&f, c.state_dir, c.app, c.npositional ? c.positional[0] : NULL)) != 0) {
		/* reported */
	} else if (range && !c.tail && !c.follow) {
		rc = 0; /* the files held the whole range */
	} else {
		if (range && !c.tail)
			tail = 0; /* the files gave the history: only new lines from the daemon */
		struct dv_strbuf extra;
		dv_strbuf_init(&extra);
		if (c.npositional) {
			dv_strbuf_puts(&extra, "&service=");
			dv_cli_url_encode(&extra, c.positional[0]);
		}
		dv_strbuf_printf(&extra, "&tail=%llu", (unsigned long long)tail);
		if (c.follow)
			dv_strbuf_puts(&extra, "&follow=1");
		bool json = c.json;
		c.json = true; /* filter JSON lines, print either form */
		char *t = dv_cli_target(&c, "/v1/logs", extra.data);
		c.json = json;
		struct dv_cli_response resp;
		memset(&resp, 0, sizeof resp);
		dv_strbuf_init(&resp.body);
		resp.on_data = on_data;
		resp.arg = &f;
		f.status = &resp.status;
		dv_strbuf_init(&f.error);
		char *err = NULL;
		if (dv_cli_request(c.state_dir, "GET", t, NULL, &resp, &err) != 0) {
			fprintf(stderr, "davit logs: %s\n", err);
			free(err);
			rc = 1;
		} else if (resp.status < 200 || resp.status > 299) {
			struct dv_jv *j = dv_jv_parse(f.error.data ? f.error.data : "", f.error.len, NULL);
			fprintf(stderr, "davit logs: %s\n", dv_jv_str(j, "error", "failed"));
			dv_jv_free(j);
			rc = 1;
		} else {
			feed(&f, "\n", 1); /* a last line without newline */
			rc = 0;
		}
		free(t);
		dv_strbuf_dispose(&extra);
		dv_strbuf_dispose(&f.error);
	}
	if (f.out != stdout)
		fclose(f.out);
	dv_strbuf_dispose(&f.partial);
	return rc;
}

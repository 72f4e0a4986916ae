#include "proxy/static.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_PATH 4096

static int hexv(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int dv_static_normalize(const char *path, size_t len, char *out, size_t cap, bool *dir)
{
	size_t q = 0;
	while (q < len && path[q] != '?' && path[q] != '#')
		q++;
	len = q;
	*dir = len > 0 && path[len - 1] == '/';
	if (len == 0 || path[0] != '/')
		return -1;
	size_t o = 0, seg_start = 0;
	for (size_t i = 0; i <= len; i++) {
		char c;
		if (i == len) {
			c = '/';
		} else if (path[i] == '%') {
			if (i + 2 >= len + 0 || hexv(path[i + 1]) < 0 || hexv(path[i + 2]) < 0)
				return -1;
			c = (char)(hexv(path[i + 1]) * 16 + hexv(path[i + 2]));
			i += 2;
			/* Encoded separators and dots only ever serve to dodge checks. */
			if (c == '/' || c == '.' || c == '\\' || c == '\0')
				return -1;
		} else {
			c = path[i];
		}
		if (c == '\0' || c == '\\' || (unsigned char)c < 0x20 || c == 0x7f)
			return -1;
		if (c == '/') {
			size_t sl = o - seg_start;
			if (sl == 0)
				continue; /* "//" and the leading slash */
			const char *seg = out + seg_start;
			if ((sl == 1 && seg[0] == '.') || (sl == 2 && seg[0] == '.' && seg[1] == '.'))
				return -1;
			if (seg[0] == '.' && !(sl == 11 && memcmp(seg, ".well-known", 11) == 0))
				return -1; /* hidden files (.git, .env) are never served */
			if (o + 1 >= cap)
				return -1;
			out[o++] = '/';
			seg_start = o;
			continue;
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = c;
	}
	if (o > 0 && out[o - 1] == '/')
		o--;
	out[o] = '\0';
	return 0;
}

bool dv_static_hashed_name(const char *name)
{
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	const char *ext = strrchr(base, '.');
	if (!ext || ext == base)
		return false;
	/* Parts between separators before the extension. */
	const char *p = base;
	while (p < ext) {
		const char *e = p;
		while (e < ext && *e != '.' && *e != '-')
			e++;
		size_t n = (size_t)(e - p);
		if (p != base && n >= 8 && n <= 64) {
			bool digit = false, ok = true;
			for (size_t i = 0; i < n && ok; i++) {
				unsigned char c = (unsigned char)p[i];
				if (isdigit(c))
					digit = true;
				else if (!isalpha(c) && c != '_')
					ok = false;
			}
			if (ok && digit)
				return true;
		}
		p = e + 1;
	}
	return false;
}

void dv_static_etag(uint64_t size, uint64_t mtime_ns, const char *suffix, char *out, size_t cap)
{
	snprintf(out, cap, "\"%llx-%llx%s\"", (unsigned long long)size, (unsigned long long)mtime_ns,
	         suffix ? suffix : "");
}

bool dv_static_etag_match(const char *h, size_t len, const char *etag)
{
	size_t el = strlen(etag);
	size_t i = 0;
	while (i < len) {
		while (i < len && (h[i] == ' ' || h[i] == '\t' || h[i] == ','))
			i++;
		if (i < len && h[i] == '*')
			return true;
		if (i + 1 < len && h[i] == 'W' && h[i + 1] == '/')
			i += 2;
		size_t s = i;
		if (i < len && h[i] == '"') {
			i++;
			while (i < len && h[i] != '"')
				i++;
			if (i < len)
				i++;
		} else {
			while (i < len && h[i] != ',')
				i++;
		}
		if (i - s == el && memcmp(h + s, etag, el) == 0)
			return true;
		if (i == s)
			i++;
	}
	return false;
}

int dv_static_parse_range(const char *v, size_t len, uint64_t size, uint64_t *start, uint64_t *end)
{
	if (len < 7 || strncasecmp(v, "bytes=", 6) != 0)
		return 0;
	const char *p = v + 6, *e = v + len;
	while (p < e && *p == ' ')
		p++;
	if (memchr(p, ',', (size_t)(e - p)))
		return 0; /* several ranges: send the whole file (allowed) */
	uint64_t a = 0, b = 0;
	bool have_a = false, have_b = false;
	while (p < e && isdigit((unsigned char)*p)) {
		if (a > UINT64_MAX / 10 - 10)
			return 0;
		a = a * 10 + (uint64_t)(*p++ - '0');
		have_a = true;
	}
	if (p >= e || *p != '-')
		return 0;
	p++;
	while (p < e && isdigit((unsigned char)*p)) {
		if (b > UINT64_MAX / 10 - 10)
			return 0;
		b = b * 10 + (uint64_t)(*p++ - '0');
		have_b = true;
	}
	while (p < e && *p == ' ')
		p++;
	if (p != e || (!have_a && !have_b))
		return 0;
	if (!have_a) { /* suffix: the last b bytes */
		if (b == 0 || size == 0)
			return -1;
		*start = b >= size ? 0 : size - b;
		*end = size - 1;
		return 1;
	}
	if (have_b && b < a)
		return 0;
	if (a >= size)
		return -1;
	*start = a;
	*end = !have_b || b >= size ? size - 1 : b;
	return 1;
}

/* ---- opening files under the root ---- */

static int open_beneath(int root, const char *rel, int flags)
{
	if (!*rel)
		rel = ".";
	static int have_openat2 = 1; /* benign race: every thread finds the same answer */
	if (have_openat2) {
		struct open_how how;
		memset(&how, 0, sizeof how);
		how.flags = (uint64_t)(flags | O_CLOEXEC);
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
		long fd = syscall(SYS_openat2, root, rel, &how, sizeof how);
		if (fd >= 0 || errno != ENOSYS)
			return (int)fd;
		have_openat2 = 0;
	}
	/* Fallback: component by component, no symlinks followed at all. */
	char buf[MAX_PATH];
	snprintf(buf, sizeof buf, "%s", rel);
	int dirfd = dup(root);
	char *save = NULL;
	char *seg = strtok_r(buf, "/", &save);
	while (seg) {
		char *next = strtok_r(NULL, "/", &save);
		int fd = openat(dirfd, seg, (next ? O_PATH | O_DIRECTORY : flags) | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		close(dirfd);
		if (fd < 0) {
			errno = e;
			return -1;
		}
		dirfd = fd;
		seg = next;
	}
	return dirfd;
}

static const char *content_type(const char *name)
{
	static const char *const types[][2] = {
		{"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
		{"css", "text/css; charset=utf-8"}, {"js", "text/javascript; charset=utf-8"},
		{"mjs", "text/javascript; charset=utf-8"}, {"json", "application/json"},
		{"map", "application/json"}, {"txt", "text/plain; charset=utf-8"},
		{"xml", "application/xml"}, {"svg", "image/svg+xml"}, {"png", "image/png"},
		{"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"}, {"gif", "image/gif"}, {"webp", "image/webp"},
		{"avif", "image/avif"}, {"ico", "image/x-icon"}, {"woff", "font/woff"}, {"woff2", "font/woff2"},
		{"ttf", "font/ttf"}, {"otf", "font/otf"}, {"wasm", "application/wasm"}, {"pdf", "application/pdf"},
		{"mp4", "video/mp4"}, {"webm", "video/webm"}, {"mp3", "audio/mpeg"}, {"zip", "application/zip"},
		{"gz", "application/gzip"}, {"webmanifest", "application/manifest+json"},
		{"md", "text/markdown; charset=utf-8"}, {"csv", "text/csv; charset=utf-8"},
	};
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	const char *dot = strrchr(base, '.');
	if (dot)
		for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
			if (strcasecmp(dot + 1, types[i][0]) == 0)
				return types[i][1];
	return "application/octet-stream";
}

__attribute__((format(printf, 2, 3))) static void add(struct dv_static_response *r, const char *fmt, ...)
{
	size_t room = sizeof r->fields - r->fields_len;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(r->fields + r->fields_len, room, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < room)
		r->fields_len += (size_t)n;
}

static void fail(struct dv_static_response *r, int status, const char *message)
{
	r->status = status;
	r->message = message;
}

static void http_date(time_t t, char *out, size_t cap)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static bool not_modified_since(const char *v, size_t len, time_t mtime)
{
	char buf[64];
	if (len == 0 || len >= sizeof buf)
		return false;
	memcpy(buf, v, len);
	buf[len] = '\0';
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (!end)
		return false;
	return mtime <= timegm(&tm);
}

void dv_static_serve(const struct dv_edge_policy *p, const struct dv_static_request *req,
                     struct dv_static_response *resp)
{
	memset(resp, 0, sizeof *resp);
	resp->fd = -1;
	bool get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
	if (!get && !req->head) {
		add(resp, "Allow: GET, HEAD\r\n");
		fail(resp, 405, "a static site answers GET and HEAD only");
		return;
	}
	char rel[MAX_PATH + 32];
	bool dir_slash;
	if (dv_static_normalize(req->target, req->target_len, rel, MAX_PATH, &dir_slash) != 0) {
		fail(resp, 400, "this path is not allowed");
		return;
	}
	bool is_index = false;
	int fd = open_beneath(p->root_fd, rel, O_RDONLY);
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (!dir_slash && rel[0]) {
			/* "/docs" -> "/docs/" so that relative links in its index work. */
			close(fd);
			size_t q = 0;
			while (q < req->target_len && req->target[q] != '?')
				q++;
			char loc[MAX_PATH + 64];
			snprintf(loc, sizeof loc, "%.*s/%.*s", (int)q, req->target, (int)(req->target_len - q),
			         req->target + q);
			if (!strpbrk(loc, "\r\n"))
				add(resp, "Location: %s\r\n", loc);
			add(resp, "Content-Length: 0\r\n");
			resp->status = 301;
			return;
		}
		int ifd = openat(fd, p->index, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = ifd;
		is_index = true;
		size_t rl = strlen(rel);
		snprintf(rel + rl, sizeof rel - rl, "%s%s", rl ? "/" : "", p->index);
	}
	if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
		close(fd);
		fd = -1;
		errno = ENOENT;
	}
	if (fd < 0 && p->spa && (errno == ENOENT || errno == ENOTDIR)) {
		/* try_files $uri /index.html */
		fd = openat(p->root_fd, p->index, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
			close(fd);
			fd = -1;
		}
		snprintf(rel, sizeof rel, "%s", p->index);
		is_index = true;
	}
	if (fd < 0) {
		fail(resp, 404, "no such file");
		return;
	}
	uint64_t mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
	const char *ctype = content_type(rel);
	bool compressible = dv_edge_compressible_type(ctype, strlen(ctype));
	const char *encoding = NULL, *suffix = NULL;
	/* A precompressed sibling (app.js.br, app.js.gz) when the client takes
	 * it; never for ranges, which address the identity bytes. */
	if (compressible && !req->range && req->accept_encoding) {
		enum dv_edge_encoding enc = dv_edge_negotiate(req->accept_encoding, req->accept_encoding_len, true, true);
		for (int pass = 0; pass < 2 && !encoding && enc != DV_EDGE_ENC_IDENTITY; pass++) {
			bool br = pass == 0 ? enc == DV_EDGE_ENC_BR : false;
			if (pass == 1 && dv_edge_negotiate(req->accept_encoding, req->accept_encoding_len, true, false) !=
			                     DV_EDGE_ENC_GZIP)
				break;
			char sib[MAX_PATH + 40];
			snprintf(sib, sizeof sib, "%s%s", rel, br ? ".br" : ".gz");
			int sfd = open_beneath(p->root_fd, sib, O_RDONLY);
			struct stat sst;
			if (sfd >= 0 && fstat(sfd, &sst) == 0 && S_ISREG(sst.st_mode)) {
				close(fd);
				fd = sfd;
				st.st_size = sst.st_size;
				encoding = br ? "br" : "gzip";
				suffix = br ? "-br" : "-gz";
			} else if (sfd >= 0) {
				close(sfd);
			}
		}
	}
	uint64_t size = (uint64_t)st.st_size;
	char etag[80], lm[64];
	dv_static_etag(size, mtime_ns, suffix, etag, sizeof etag);
	http_date(st.st_mtim.tv_sec, lm, sizeof lm);
	const char *cache = is_index || strncmp(ctype, "text/html", 9) == 0 ? "no-cache"
	                    : dv_static_hashed_name(rel)                  ? "public, max-age=31536000, immutable"
	                                                                  : NULL;
	bool not_modified = req->if_none_match
		? dv_static_etag_match(req->if_none_match, req->if_none_match_len, etag)
		: req->if_modified_since && not_modified_since(req->if_modified_since, req->if_modified_since_len,
		                                               st.st_mtim.tv_sec);
	add(resp, "ETag: %s\r\nLast-Modified: %s\r\n", etag, lm);
	if (cache)
		add(resp, "Cache-Control: %s\r\n", cache);
	if (compressible)
		add(resp, "Vary: Accept-Encoding\r\n");
	if (not_modified) {
		close(fd);
		resp->status = 304;
		return;
	}
	add(resp, "Content-Type: %s\r\n", ctype);
	if (encoding)
		add(resp, "Content-Encoding: %s\r\n", encoding);
	else
		add(resp, "Accept-Ranges: bytes\r\n");
	uint64_t start = 0, end = size ? size - 1 : 0;
	int rr = 0;
	if (req->range && !encoding) {
		bool if_range_ok = !req->if_range || dv_static_etag_match(req->if_range, req->if_range_len, etag);
		if (if_range_ok)
			rr = dv_static_parse_range(req->range, req->range_len, size, &start, &end);
	}
	char num[96];
	if (rr < 0) {
		close(fd);
		resp->fields_len = 0;
		snprintf(num, sizeof num, "%llu", (unsigned long long)size);
		add(resp, "Content-Range: bytes */%s\r\n", num);
		fail(resp, 416, "the range is outside the file");
		return;
	}
	resp->status = rr == 1 ? 206 : 200;
	resp->offset = (off_t)start;
	resp->length = size ? end - start + 1 : 0;
	if (rr == 1) {
		snprintf(num, sizeof num, "%llu-%llu/%llu", (unsigned long long)start, (unsigned long long)end,
		         (unsigned long long)size);
		add(resp, "Content-Range: bytes %s\r\n", num);
	}
	snprintf(num, sizeof num, "%llu", (unsigned long long)resp->length);
	add(resp, "Content-Length: %s\r\n", num);
	if (req->head || resp->length == 0) {
		close(fd);
		resp->length = 0;
		return;
	}
	resp->fd = fd;
}

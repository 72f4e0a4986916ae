/* Edge policies: the options parser and the request/response helpers that
 * need no state (see edge.h). Passwords are in auth.c, the shared IP state in
 * ratelimit.c, static files in static.c, compression in compress.c. */
#include "proxy/edge.h"

#include "core/alloc.h"
#include "core/strbuf.h"
#include "http/http1.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small parsers ---- */

static bool parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1")) {
		*out = true;
		return true;
	}
	if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0")) {
		*out = false;
		return true;
	}
	return false;
}

/* "10MiB", "512k", "1048576", "2G". */
static bool parse_size(const char *v, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)*v))
		return false;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno)
		return false;
	uint64_t mul = 1;
	if (!*end || !strcasecmp(end, "b"))
		mul = 1;
	else if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") || !strcasecmp(end, "kib"))
		mul = 1024;
	else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") || !strcasecmp(end, "mib"))
		mul = 1024 * 1024;
	else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb") || !strcasecmp(end, "gib"))
		mul = 1024ull * 1024 * 1024;
	else
		return false;
	if (n > UINT64_MAX / mul)
		return false;
	*out = n * mul;
	return true;
}

/* Durations: those of dv_parse_duration_ms plus "1d", "1w", "1y". */
static bool parse_dur(const char *v, uint64_t *ms)
{
	size_t n = strlen(v);
	if (n >= 2 && isdigit((unsigned char)v[0]) && strchr("dwy", v[n - 1])) {
		char num[32];
		uint64_t k;
		if (n - 1 >= sizeof num)
			return false;
		memcpy(num, v, n - 1);
		num[n - 1] = '\0';
		if (dv_parse_uint(num, 1000000, &k) != 0)
			return false;
		uint64_t day = 86400000ull;
		*ms = k * (v[n - 1] == 'd' ? day : v[n - 1] == 'w' ? 7 * day : 365 * day);
		return true;
	}
	return dv_parse_duration_ms(v, ms) == 0;
}

static bool valid_field_name(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c)))
			return false;
	}
	return true;
}

static bool valid_field_value(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return false; /* no CR/LF: no header injection */
	return true;
}

/* "100/1m" -> count and period. */
static bool parse_rate(const char *v, uint64_t *count, uint64_t *period_ms)
{
	const char *slash = strchr(v, '/');
	char num[32];
	size_t n = slash ? (size_t)(slash - v) : strlen(v);
	if (n == 0 || n >= sizeof num)
		return false;
	memcpy(num, v, n);
	num[n] = '\0';
	if (dv_parse_uint(num, 100000000, count) != 0 || *count == 0)
		return false;
	*period_ms = 1000;
	if (slash) {
		const char *p = slash + 1;
		if (!strcmp(p, "s") || !strcmp(p, "sec") || !strcmp(p, "second"))
			*period_ms = 1000;
		else if (!strcmp(p, "m") || !strcmp(p, "min") || !strcmp(p, "minute"))
			*period_ms = 60000;
		else if (!strcmp(p, "h") || !strcmp(p, "hour"))
			*period_ms = 3600000;
		else if (!parse_dur(p, period_ms) || *period_ms == 0)
			return false;
	}
	return true;
}

static bool parse_cidrs(const char *v, struct dv_cidr **list, size_t *n, char **bad)
{
	char *copy = dv_xstrdup(v), *save = NULL;
	bool ok = true;
	for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		struct dv_cidr c;
		if (dv_cidr_parse(tok, &c) != 0) {
			*bad = dv_xstrdup(tok);
			ok = false;
			break;
		}
		*list = dv_xrealloc(*list, (*n + 1) * sizeof **list);
		(*list)[(*n)++] = c;
	}
	free(copy);
	return ok;
}

/* ---- options ---- */

static const char *const keys[] = {
	"edge", "headers", "frame", "xss", "nosniff", "referrer", "permissions", "csp", "hsts",
	"hsts_subdomains", "hsts_preload", "header", "ratelimit", "burst", "compress", "compress_min",
	"maxbody", "auth", "realm", "allow", "deny", "ban", "static", "spa", "index", NULL,
};

static int apply(struct dv_edge_policy *p, const char *k, const char *v, char **err)
{
	bool b;
	uint64_t u, u2;
	char *bad = NULL;
#define BAD(...)                                                                                                   \
	do {                                                                                                       \
		*err = dv_xasprintf(__VA_ARGS__);                                                                  \
		return -1;                                                                                         \
	} while (0)
	if (!strcmp(k, "edge")) {
		if (!parse_bool(v, &b))
			BAD("edge=%s: expected on (the defaults) or off", v);
	} else if (!strcmp(k, "headers")) {
		if (!parse_bool(v, &p->preset))
			BAD("headers=%s: expected on or off (the security header preset)", v);
	} else if (!strcmp(k, "frame")) {
		free(p->frame);
		p->frame = NULL;
		p->mode[DV_EDGE_F_FRAME] = 1;
		if (!strcasecmp(v, "deny"))
			p->frame = dv_xstrdup("DENY");
		else if (!strcasecmp(v, "sameorigin"))
			p->frame = dv_xstrdup("SAMEORIGIN");
		else if (strcmp(v, "off") == 0)
			p->mode[DV_EDGE_F_FRAME] = 2;
		else
			BAD("frame=%s: expected deny, sameorigin or off (X-Frame-Options)", v);
	} else if (!strcmp(k, "xss")) {
		if (!parse_bool(v, &p->xss))
			BAD("xss=%s: expected on or off", v);
	} else if (!strcmp(k, "nosniff") || !strcmp(k, "referrer") || !strcmp(k, "permissions")) {
		/* Per-field opt-outs of the preset ("off"), or a value (referrer, permissions). */
		int bit = !strcmp(k, "nosniff") ? DV_EDGE_F_NOSNIFF : !strcmp(k, "referrer") ? DV_EDGE_F_REFERRER
		                                                                              : DV_EDGE_F_PERMISSIONS;
		static const char *const names[] = {"", "X-Content-Type-Options", "Referrer-Policy", "Permissions-Policy"};
		free(p->fixed[bit]);
		p->fixed[bit] = NULL;
		if (!strcmp(v, "off")) {
			p->mode[bit] = 2;
		} else if (bit == DV_EDGE_F_NOSNIFF) {
			if (!parse_bool(v, &b))
				BAD("nosniff=%s: expected on or off", v);
			p->mode[bit] = b ? 1 : 2;
		} else if (!*v || !valid_field_value(v)) {
			BAD("%s=%s: expected a header value or off", k, v);
		} else {
			p->mode[bit] = 1;
			p->fixed[bit] = dv_xasprintf("%s: %s\r\n", names[bit], v);
		}
	} else if (!strcmp(k, "csp")) {
		free(p->csp);
		p->csp = NULL;
		if (strcmp(v, "off") != 0) {
			if (!*v || !valid_field_value(v))
				BAD("csp: expected a Content-Security-Policy value or off");
			p->csp = dv_xstrdup(v);
		}
	} else if (!strcmp(k, "hsts")) {
		if (!strcmp(v, "off") || !strcmp(v, "0"))
			p->hsts = 0;
		else if (parse_dur(v, &u) && u >= 1000)
			p->hsts = (int64_t)(u / 1000);
		else
			BAD("hsts=%s: expected a max-age (31536000, 1y, 180d) or off", v);
	} else if (!strcmp(k, "hsts_subdomains")) {
		if (!parse_bool(v, &p->hsts_subdomains))
			BAD("hsts_subdomains=%s: expected on or off", v);
	} else if (!strcmp(k, "hsts_preload")) {
		if (!parse_bool(v, &p->hsts_preload))
			BAD("hsts_preload=%s: expected on or off", v);
	} else if (!strcmp(k, "header")) {
		const char *colon = strchr(v, ':');
		if (!colon || !valid_field_name(v, (size_t)(colon - v)))
			BAD("header=%s: expected Name:value (or Name: to remove the upstream's field)", v);
		const char *val = colon + 1;
		while (*val == ' ' || *val == '\t')
			val++;
		if (!valid_field_value(val))
			BAD("header=%s: the value must not hold control characters", v);
		p->headers = dv_xrealloc(p->headers, (p->nheaders + 1) * sizeof *p->headers);
		p->headers[p->nheaders].name = dv_xstrndup(v, (size_t)(colon - v));
		p->headers[p->nheaders].name_len = (size_t)(colon - v);
		p->headers[p->nheaders].value = dv_xstrdup(val);
		p->nheaders++;
	} else if (!strcmp(k, "ratelimit")) {
		if (!strcmp(v, "off")) {
			p->rate_per_ms = 0;
		} else {
			if (!parse_rate(v, &u, &u2))
				BAD("ratelimit=%s: expected COUNT/PERIOD (100/1m, 10/s, 50/30s) or off", v);
			p->rate_per_ms = (double)u / (double)u2;
			if (p->burst < 1)
				p->burst = (double)u;
		}
	} else if (!strcmp(k, "burst")) {
		if (dv_parse_uint(v, 100000000, &u) != 0 || u == 0)
			BAD("burst=%s: expected a number of requests (at least 1)", v);
		p->burst = (double)u;
	} else if (!strcmp(k, "compress")) {
		if (parse_bool(v, &b)) {
			p->gzip = p->br = b;
		} else {
			p->gzip = p->br = false;
			char *copy = dv_xstrdup(v), *save = NULL;
			bool ok = true;
			for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				if (!strcmp(t, "gzip"))
					p->gzip = true;
				else if (!strcmp(t, "br") || !strcmp(t, "brotli"))
					p->br = true;
				else
					ok = false;
			}
			free(copy);
			if (!ok)
				BAD("compress=%s: expected on, off, gzip, br or gzip,br", v);
		}
	} else if (!strcmp(k, "compress_min")) {
		if (!parse_size(v, &p->compress_min))
			BAD("compress_min=%s: expected a size (1024, 4k)", v);
	} else if (!strcmp(k, "maxbody")) {
		if (!strcmp(v, "off") || !strcmp(v, "0"))
			p->max_body = 0;
		else if (!parse_size(v, &p->max_body))
			BAD("maxbody=%s: expected a size (10MiB, 512k, 1048576) or off", v);
	} else if (!strcmp(k, "auth")) {
		const char *colon = strchr(v, ':');
		if (!colon || colon == v || !colon[1])
			BAD("auth=%s: expected USER:HASH (from `openssl passwd -6`, -5, -apr1, or {SHA}...)", v);
		const char *h = colon + 1;
		if (!strncmp(h, "$2", 2))
			BAD("auth: user '%.*s' has a bcrypt hash, which davit cannot check: use `openssl passwd -6` "
			    "(sha512-crypt), -5, -apr1 or {SHA}", (int)(colon - v), v);
		if (h[0] == '$' && strncmp(h, "$apr1$", 6) && strncmp(h, "$1$", 3) && strncmp(h, "$5$", 3) &&
		    strncmp(h, "$6$", 3))
			BAD("auth: user '%.*s' has an unknown hash type: use `openssl passwd -6`, -5, -apr1 or {SHA}",
			    (int)(colon - v), v);
		p->users = dv_xrealloc(p->users, (p->nusers + 1) * sizeof *p->users);
		p->users[p->nusers].name = dv_xstrndup(v, (size_t)(colon - v));
		p->users[p->nusers].hash = dv_xstrdup(h);
		p->nusers++;
	} else if (!strcmp(k, "realm")) {
		if (!valid_field_value(v) || strchr(v, '"') || strchr(v, '\\'))
			BAD("realm: no quotes, backslashes or control characters");
		free(p->realm);
		p->realm = dv_xstrdup(v);
	} else if (!strcmp(k, "allow") || !strcmp(k, "deny")) {
		bool allow = k[0] == 'a';
		if (!parse_cidrs(v, allow ? &p->allow : &p->deny, allow ? &p->nallow : &p->ndeny, &bad)) {
			*err = dv_xasprintf("%s: bad network '%s' (expected 10.0.0.0/8, 192.168.1.5, ::1/128)", k, bad);
			free(bad);
			return -1;
		}
	} else if (!strcmp(k, "ban")) {
		if (!strcmp(v, "off")) {
			p->ban_after = 0;
		} else {
			char a[32], w[32], f[32];
			uint64_t n;
			if (sscanf(v, "%31[^/]/%31[^/]/%31s", a, w, f) != 3 || dv_parse_uint(a, 1000000, &n) != 0 || n == 0 ||
			    !parse_dur(w, &p->ban_window_ms) || !parse_dur(f, &p->ban_for_ms) || p->ban_window_ms == 0 ||
			    p->ban_for_ms == 0)
				BAD("ban=%s: expected COUNT/WINDOW/DURATION (5/1m/10m: 5 responses 401, 403 or 429 "
				    "within 1m ban the client for 10m) or off", v);
			p->ban_after = (unsigned)n;
		}
	} else if (!strcmp(k, "static")) {
		if (v[0] != '/')
			BAD("static=%s: expected an absolute directory", v);
		free(p->static_root);
		p->static_root = dv_xstrdup(v);
	} else if (!strcmp(k, "spa")) {
		if (!parse_bool(v, &p->spa))
			BAD("spa=%s: expected on or off (serve /index.html for missing files)", v);
	} else if (!strcmp(k, "index")) {
		if (!*v || strchr(v, '/') || !strcmp(v, ".") || !strcmp(v, ".."))
			BAD("index=%s: expected a file name (index.html)", v);
		free(p->index);
		p->index = dv_xstrdup(v);
	} else {
		struct dv_strbuf sb;
		dv_strbuf_init(&sb);
		for (size_t i = 0; keys[i]; i++)
			dv_strbuf_printf(&sb, "%s%s", i ? ", " : "", keys[i]);
		*err = dv_xasprintf("unknown edge option '%s' (known: %s)", k, sb.data);
		dv_strbuf_dispose(&sb);
		return -1;
	}
	return 0;
#undef BAD
}

static void policy_defaults(struct dv_edge_policy *p)
{
	p->preset = true;
	p->frame = dv_xstrdup("SAMEORIGIN");
	p->hsts = 31536000;
	p->gzip = p->br = true;
	p->compress_min = 1024;
	p->max_body = 10ull * 1024 * 1024;
	p->index = dv_xstrdup("index.html");
	p->realm = dv_xstrdup("restricted");
	p->root_fd = -1;
}

int dv_edge_option_check(const char *key, const char *value, char **err)
{
	struct dv_edge_policy *p = dv_xcalloc(1, sizeof *p);
	atomic_init(&p->refs, 1);
	policy_defaults(p);
	int rc = apply(p, key, value, err);
	dv_edge_policy_unref(p);
	return rc;
}

void dv_edge_options_add(char **opts, const char *key, const char *value)
{
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	if (*opts && **opts) {
		dv_strbuf_puts(&b, *opts);
		dv_strbuf_puts(&b, " ");
	}
	dv_strbuf_printf(&b, "%s=", key);
	bool quote = !*value || strpbrk(value, " \t\"\\") != NULL;
	if (quote)
		dv_strbuf_puts(&b, "\"");
	for (const char *c = value; *c; c++) {
		if (quote && (*c == '"' || *c == '\\'))
			dv_strbuf_puts(&b, "\\");
		dv_strbuf_append(&b, c, 1);
	}
	if (quote)
		dv_strbuf_puts(&b, "\"");
	free(*opts);
	*opts = dv_strbuf_steal(&b);
}

static void build_fields(struct dv_edge_policy *p)
{
	/* With the preset, every preset field not turned off; without it, only
	 * the fields asked for by name. */
	bool want[4];
	for (int i = 0; i < 4; i++)
		want[i] = p->mode[i] == 1 || (p->preset && p->mode[i] == 0);
	if (want[DV_EDGE_F_FRAME] && p->frame)
		p->fixed[DV_EDGE_F_FRAME] = dv_xasprintf("X-Frame-Options: %s\r\n", p->frame);
	if (want[DV_EDGE_F_NOSNIFF])
		p->fixed[DV_EDGE_F_NOSNIFF] = dv_xstrdup("X-Content-Type-Options: nosniff\r\n");
	if (want[DV_EDGE_F_REFERRER] && !p->fixed[DV_EDGE_F_REFERRER])
		p->fixed[DV_EDGE_F_REFERRER] = dv_xstrdup("Referrer-Policy: strict-origin-when-cross-origin\r\n");
	if (want[DV_EDGE_F_PERMISSIONS] && !p->fixed[DV_EDGE_F_PERMISSIONS])
		p->fixed[DV_EDGE_F_PERMISSIONS] =
			dv_xstrdup("Permissions-Policy: camera=(), microphone=(), geolocation=(), payment=()\r\n");
	for (int i = DV_EDGE_F_REFERRER; i <= DV_EDGE_F_PERMISSIONS; i++)
		if (!want[i]) {
			free(p->fixed[i]);
			p->fixed[i] = NULL;
		}
	if (p->csp)
		p->fixed[DV_EDGE_F_CSP] = dv_xasprintf("Content-Security-Policy: %s\r\n", p->csp);
	if (p->xss)
		p->fixed[DV_EDGE_F_XSS] = dv_xstrdup("X-XSS-Protection: 1; mode=block\r\n");
	if (p->hsts > 0)
		p->fixed[DV_EDGE_F_HSTS] = dv_xasprintf("Strict-Transport-Security: max-age=%lld%s%s\r\n",
		                                        (long long)p->hsts, p->hsts_subdomains ? "; includeSubDomains" : "",
		                                        p->hsts_preload ? "; preload" : "");
	for (int i = 0; i < 7; i++)
		p->fixed_len[i] = p->fixed[i] ? strlen(p->fixed[i]) : 0;
	struct dv_strbuf b;
	dv_strbuf_init(&b);
	for (size_t i = 0; i < p->nheaders; i++)
		if (p->headers[i].value[0])
			dv_strbuf_printf(&b, "%s: %s\r\n", p->headers[i].name, p->headers[i].value);
	p->block_len = b.len;
	p->block = dv_strbuf_steal(&b);
}

static uint64_t fnv(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; s && *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h | 1;
}

struct dv_edge_policy *dv_edge_policy_parse(const char *options, const char *name, char **err)
{
	struct dv_edge_policy *p = dv_xcalloc(1, sizeof *p);
	atomic_init(&p->refs, 1);
	policy_defaults(p);
	p->name = dv_xstrdup(name ? name : "");
	p->key = fnv(p->name);
	const char *s = options ? options : "";
	struct dv_strbuf key, val;
	dv_strbuf_init(&key);
	dv_strbuf_init(&val);
	int rc = 0;
	while (rc == 0) {
		while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
			s++;
		if (!*s)
			break;
		dv_strbuf_reset(&key);
		dv_strbuf_reset(&val);
		while (*s && *s != '=' && *s != ' ' && *s != '\t')
			dv_strbuf_append(&key, s++, 1);
		if (*s != '=' || !key.len) {
			*err = key.len ? dv_xasprintf("edge option '%s' has no value (expected KEY=VALUE)", key.data)
			               : dv_xstrdup("an edge option has no name (expected KEY=VALUE)");
			rc = -1;
			break;
		}
		s++;
		if (*s == '"') {
			s++;
			while (*s && *s != '"') {
				if (*s == '\\' && s[1])
					s++;
				dv_strbuf_append(&val, s++, 1);
			}
			if (*s != '"') {
				*err = dv_xasprintf("edge option '%s': unterminated quote", key.data);
				rc = -1;
				break;
			}
			s++;
		} else {
			while (*s && *s != ' ' && *s != '\t')
				dv_strbuf_append(&val, s++, 1);
		}
		rc = apply(p, key.data, val.data ? val.data : "", err);
	}
	dv_strbuf_dispose(&key);
	dv_strbuf_dispose(&val);
	if (rc == 0 && p->static_root) {
		p->root_fd = open(p->static_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (p->root_fd == -1) {
			*err = dv_xasprintf("static=%s: %s", p->static_root, strerror(errno));
			rc = -1;
		}
	}
	if (rc != 0) {
		dv_edge_policy_unref(p);
		return NULL;
	}
	build_fields(p);
	return p;
}

void dv_edge_policy_ref(struct dv_edge_policy *p)
{
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void dv_edge_policy_unref(struct dv_edge_policy *p)
{
	if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(p->name);
	free(p->frame);
	free(p->csp);
	for (size_t i = 0; i < p->nheaders; i++) {
		free(p->headers[i].name);
		free(p->headers[i].value);
	}
	free(p->headers);
	for (int i = 0; i < 7; i++)
		free(p->fixed[i]);
	free(p->block);
	free(p->static_root);
	if (p->root_fd >= 0)
		close(p->root_fd);
	free(p->index);
	for (size_t i = 0; i < p->nusers; i++) {
		free(p->users[i].name);
		free(p->users[i].hash);
	}
	free(p->users);
	free(p->realm);
	free(p->allow);
	free(p->deny);
	free(p);
}

/* ---- request time ---- */

static bool parse_ip(const char *s, size_t n, struct dv_sockaddr *out)
{
	char buf[64];
	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof buf)
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(out, 0, sizeof *out);
	struct sockaddr_in *in = (struct sockaddr_in *)&out->addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->addr;
	if (inet_pton(AF_INET, buf, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		out->len = sizeof *in;
		return true;
	}
	char *b = buf;
	if (b[0] == '[') { /* "[::1]" or "[::1]:port" */
		char *close = strchr(b, ']');
		if (!close)
			return false;
		*close = '\0';
		b++;
	}
	if (inet_pton(AF_INET6, b, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		out->len = sizeof *in6;
		return true;
	}
	return false;
}

static bool is_trusted(const struct dv_sockaddr *sa, const struct dv_cidr *trusted, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (dv_cidr_contains(&trusted[i], sa))
			return true;
	return false;
}

void dv_edge_client_ip(const struct dv_sockaddr *peer, bool peer_trusted, const char *xff, size_t xff_len,
                       const struct dv_cidr *trusted, size_t ntrusted, struct dv_sockaddr *out)
{
	*out = *peer;
	if (!peer_trusted || !xff)
		return;
	/* Right to left: the nearest hop the trusted chain vouches for. */
	size_t end = xff_len;
	while (end > 0) {
		size_t start = end;
		while (start > 0 && xff[start - 1] != ',')
			start--;
		struct dv_sockaddr sa;
		if (!parse_ip(xff + start, end - start, &sa))
			return; /* garbage: keep the last address we could vouch for */
		*out = sa;
		if (!is_trusted(&sa, trusted, ntrusted))
			return;
		end = start > 0 ? start - 1 : 0;
	}
}

bool dv_edge_ip_allowed(const struct dv_edge_policy *p, const struct dv_sockaddr *ip)
{
	for (size_t i = 0; i < p->ndeny; i++)
		if (dv_cidr_contains(&p->deny[i], ip))
			return false;
	if (p->nallow == 0)
		return true;
	for (size_t i = 0; i < p->nallow; i++)
		if (dv_cidr_contains(&p->allow[i], ip))
			return true;
	return false;
}

/* q-value of one Accept-Encoding element ("gzip;q=0.5"): 1000 = 1.0. */
static int qvalue(const char *params, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if ((params[i] == 'q' || params[i] == 'Q') && params[i + 1] == '=') {
			size_t k = i + 2;
			int q = 0, digits = 0;
			bool dot = false;
			for (; k < n; k++) {
				char c = params[k];
				if (c == '.' && !dot) {
					dot = true;
				} else if (isdigit((unsigned char)c)) {
					if (!dot) {
						q = (c - '0') * 1000;
					} else if (digits < 3) {
						static const int scale[] = {100, 10, 1};
						q += (c - '0') * scale[digits++];
					}
				} else {
					break;
				}
			}
			return q > 1000 ? 1000 : q;
		}
	}
	return 1000;
}

enum dv_edge_encoding dv_edge_negotiate(const char *ae, size_t len, bool gzip, bool br)
{
	int q_gzip = -1, q_br = -1, q_any = -1;
	size_t i = 0;
	while (ae && i < len) {
		while (i < len && (ae[i] == ' ' || ae[i] == '\t' || ae[i] == ','))
			i++;
		size_t start = i;
		while (i < len && ae[i] != ',')
			i++;
		size_t el = i - start;
		const char *e = ae + start;
		size_t tl = 0;
		while (tl < el && e[tl] != ';' && e[tl] != ' ' && e[tl] != '\t')
			tl++;
		int q = qvalue(e + tl, el - tl);
		if (dv_http1_token_eq(e, tl, "gzip") || dv_http1_token_eq(e, tl, "x-gzip"))
			q_gzip = q;
		else if (dv_http1_token_eq(e, tl, "br"))
			q_br = q;
		else if (tl == 1 && e[0] == '*')
			q_any = q;
	}
	if (q_gzip < 0)
		q_gzip = q_any;
	if (q_br < 0)
		q_br = q_any;
	if (br && q_br > 0 && (!gzip || q_br >= q_gzip))
		return DV_EDGE_ENC_BR;
	if (gzip && q_gzip > 0)
		return DV_EDGE_ENC_GZIP;
	return DV_EDGE_ENC_IDENTITY;
}

static bool ci_prefix(const char *s, size_t n, const char *lower)
{
	size_t l = strlen(lower);
	return n >= l && strncasecmp(s, lower, l) == 0;
}

bool dv_edge_compressible_type(const char *ct, size_t len)
{
	size_t n = 0;
	while (n < len && ct[n] != ';' && ct[n] != ' ')
		n++;
	if (n == 0)
		return false;
	static const char *const exact[] = {
		"application/json", "application/javascript", "application/x-javascript", "application/ecmascript",
		"application/xml", "application/xhtml+xml", "application/rss+xml", "application/atom+xml",
		"application/ld+json", "application/manifest+json", "application/geo+json", "application/wasm",
		"application/x-ndjson", "application/graphql-response+json", "application/vnd.ms-fontobject",
		"application/x-font-ttf", "application/x-yaml", "application/yaml", "application/toml",
		"image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp", "font/ttf", "font/otf",
		"font/eot", NULL,
	};
	if (ci_prefix(ct, n, "text/"))
		return !(n == 17 && strncasecmp(ct, "text/event-stream", 17) == 0);
	for (size_t i = 0; exact[i]; i++)
		if (strlen(exact[i]) == n && strncasecmp(ct, exact[i], n) == 0)
			return true;
	if (n > 5 && (strncasecmp(ct + n - 5, "+json", 5) == 0 || strncasecmp(ct + n - 4, "+xml", 4) == 0))
		return true;
	return false;
}

static const char *const fixed_names[7] = {
	"x-frame-options", "x-content-type-options", "referrer-policy", "permissions-policy",
	"content-security-policy", "x-xss-protection", "strict-transport-security",
};

static const unsigned char fixed_name_len[7] = {15, 22, 15, 18, 23, 16, 25};

bool dv_edge_drop_field(const struct dv_edge_policy *p, const char *name, size_t len, unsigned *seen)
{
	/* Per upstream field: compare lengths first, bytes only when they match. */
	for (size_t i = 0; i < p->nheaders; i++)
		if (p->headers[i].name_len == len && strncasecmp(p->headers[i].name, name, len) == 0)
			return true;
	for (int i = 0; i < 7; i++)
		if (fixed_name_len[i] == len && p->fixed[i] && strncasecmp(fixed_names[i], name, len) == 0)
			*seen |= 1u << i;
	return false;
}

void dv_edge_add_fields(const struct dv_edge_policy *p, bool tls, unsigned seen,
                        void (*append)(void *arg, const void *data, size_t len), void *arg)
{
	for (int i = 0; i < 7; i++) {
		if (!p->fixed[i] || (seen & (1u << i)) || (i == DV_EDGE_F_HSTS && !tls))
			continue;
		append(arg, p->fixed[i], p->fixed_len[i]);
	}
	if (p->block_len)
		append(arg, p->block, p->block_len);
}

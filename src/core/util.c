#include "core/util.h"

#include "core/alloc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t dv_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t dv_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int dv_parse_uint(const char *text, uint64_t max, uint64_t *value)
{
	if (!text || !*text)
		return -1;
	uint64_t v = 0;
	for (const char *p = text; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		unsigned d = (unsigned)(*p - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*value = v;
	return 0;
}

int dv_parse_duration_ms(const char *text, uint64_t *ms)
{
	if (!text || !*text)
		return -1;
	/* A plain number is seconds. */
	uint64_t plain;
	if (dv_parse_uint(text, UINT64_MAX / 1000, &plain) == 0) {
		*ms = plain * 1000;
		return 0;
	}
	uint64_t total = 0;
	const char *p = text;
	while (*p) {
		if (!isdigit((unsigned char)*p))
			return -1;
		uint64_t v = 0;
		while (isdigit((unsigned char)*p)) {
			if (v > UINT64_MAX / 10 - 10)
				return -1;
			v = v * 10 + (uint64_t)(*p++ - '0');
		}
		uint64_t unit;
		if (p[0] == 'm' && p[1] == 's') {
			unit = 1;
			p += 2;
		} else if (*p == 's') {
			unit = 1000;
			p++;
		} else if (*p == 'm') {
			unit = 60000;
			p++;
		} else if (*p == 'h') {
			unit = 3600000;
			p++;
		} else if (*p == 'd') {
			unit = 86400000;
			p++;
		} else {
			return -1;
		}
		if (v > (UINT64_MAX - total) / unit)
			return -1;
		total += v * unit;
	}
	*ms = total;
	return 0;
}

int dv_sockaddr_parse(const char *text, bool numeric_only, struct dv_sockaddr *out, char **err)
{
	int rc = -1;
	char host[256];
	const char *port;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host) {
			*err = dv_xasprintf("bad address '%s' (expected [IPV6]:PORT)", text);
			goto out;
		}
		memcpy(host, text + 1, (size_t)(close - text - 1));
		host[close - text - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (!colon || (size_t)(colon - text) >= sizeof host || colon == text) {
			*err = dv_xasprintf("bad address '%s' (expected ADDR:PORT)", text);
			goto out;
		}
		memcpy(host, text, (size_t)(colon - text));
		host[colon - text] = '\0';
		if (strchr(host, ':')) {
			*err = dv_xasprintf("bad address '%s' (write IPv6 addresses as [ADDR]:PORT)", text);
			goto out;
		}
		port = colon + 1;
	}
	uint64_t portnum;
	if (dv_parse_uint(port, 65535, &portnum) != 0 || portnum == 0) {
		*err = dv_xasprintf("bad port in '%s' (expected 1-65535)", text);
		goto out;
	}
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (numeric_only ? AI_NUMERICHOST : 0);
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0 || !res) {
		*err = dv_xasprintf("cannot resolve '%s': %s", host, gai_strerror(gai));
		goto out;
	}
	memset(out, 0, sizeof *out);
	memcpy(&out->addr, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	rc = 0;
out:
	return rc;
}

char *dv_sockaddr_format_ip(const struct dv_sockaddr *sa, char *buf, size_t size)
{
	buf[0] = '\0';
	if (sa->addr.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&sa->addr;
		inet_ntop(AF_INET, &in->sin_addr, buf, (socklen_t)size);
	} else if (sa->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa->addr;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], buf, (socklen_t)size);
		else
			inet_ntop(AF_INET6, &in6->sin6_addr, buf, (socklen_t)size);
	} else if (sa->addr.ss_family == AF_UNIX) {
		snprintf(buf, size, "unix");
	}
	return buf;
}

char *dv_sockaddr_format(const struct dv_sockaddr *sa, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN];
	dv_sockaddr_format_ip(sa, ip, sizeof ip);
	unsigned port = 0;
	if (sa->addr.ss_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)&sa->addr)->sin_port);
	else if (sa->addr.ss_family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)&sa->addr)->sin6_port);
	if (strchr(ip, ':'))
		snprintf(buf, size, "[%s]:%u", ip, port);
	else
		snprintf(buf, size, "%s:%u", ip, port);
	return buf;
}

bool dv_sockaddr_equal(const struct dv_sockaddr *a, const struct dv_sockaddr *b)
{
	if (a->addr.ss_family != b->addr.ss_family)
		return false;
	if (a->addr.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)&a->addr, *y = (const void *)&b->addr;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)&a->addr, *y = (const void *)&b->addr;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
	}
	return a->len == b->len && memcmp(&a->addr, &b->addr, a->len) == 0;
}

int dv_cidr_parse(const char *text, struct dv_cidr *out)
{
	char ip[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t iplen = slash ? (size_t)(slash - text) : strlen(text);
	if (iplen == 0 || iplen >= sizeof ip)
		return -1;
	memcpy(ip, text, iplen);
	ip[iplen] = '\0';
	memset(out, 0, sizeof *out);
	unsigned maxprefix;
	if (inet_pton(AF_INET, ip, out->addr) == 1) {
		out->family = AF_INET;
		maxprefix = 32;
	} else if (inet_pton(AF_INET6, ip, out->addr) == 1) {
		out->family = AF_INET6;
		maxprefix = 128;
	} else {
		return -1;
	}
	uint64_t prefix = maxprefix;
	if (slash && dv_parse_uint(slash + 1, maxprefix, &prefix) != 0)
		return -1;
	out->prefix = (unsigned)prefix;
	return 0;
}

bool dv_cidr_contains(const struct dv_cidr *net, const struct dv_sockaddr *sa)
{
	const uint8_t *ip;
	int family = sa->addr.ss_family;
	if (family == AF_INET) {
		ip = (const uint8_t *)&((const struct sockaddr_in *)&sa->addr)->sin_addr;
	} else if (family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)&sa->addr;
		ip = in6->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			ip += 12;
			family = AF_INET;
		}
	} else {
		return false;
	}
	if (family != net->family)
		return false;
	unsigned full = net->prefix / 8, rest = net->prefix % 8;
	if (memcmp(ip, net->addr, full) != 0)
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));
		if ((ip[full] & mask) != (net->addr[full] & mask))
			return false;
	}
	return true;
}

unsigned dv_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

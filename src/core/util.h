/* util: small parsing and time helpers shared by every module. */
#ifndef DV_CORE_UTIL_H
#define DV_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DV_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define dv_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Monotonic clock in milliseconds / nanoseconds. */
uint64_t dv_now_ms(void);
uint64_t dv_now_ns(void);

/* Parses a duration: "250ms", "5s", "2m", "1h", "1m30s", or a plain number of
 * seconds. Returns 0 and sets *ms, or -1 if the text is not a duration. */
int dv_parse_duration_ms(const char *text, uint64_t *ms);

/* Parses a non-negative decimal integer that must fit in `max`.
 * Returns 0 and sets *value, or -1. */
int dv_parse_uint(const char *text, uint64_t max, uint64_t *value);

/* A socket address with its length. */
struct dv_sockaddr {
	struct sockaddr_storage addr;
	socklen_t len;
};

/* Parses "ADDR:PORT", "[V6ADDR]:PORT" or "NAME:PORT" (NAME resolved with
 * getaddrinfo, which may block: call at configuration time only). With
 * numeric_only, names are refused. Returns 0, or -1 with *err set to a
 * message the caller frees. */
int dv_sockaddr_parse(const char *text, bool numeric_only, struct dv_sockaddr *out, char **err);

/* Formats as "1.2.3.4:80" or "[::1]:80" into buf (at least 64 bytes).
 * Returns buf. */
char *dv_sockaddr_format(const struct dv_sockaddr *sa, char *buf, size_t size);

/* Formats just the IP ("1.2.3.4" or "::1"; IPv4-mapped IPv6 as IPv4). */
char *dv_sockaddr_format_ip(const struct dv_sockaddr *sa, char *buf, size_t size);

/* True if both name the same address and port. */
bool dv_sockaddr_equal(const struct dv_sockaddr *a, const struct dv_sockaddr *b);

/* An IPv4 or IPv6 network ("10.0.0.0/8", "::1/128", "127.0.0.1"). */
struct dv_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};
int dv_cidr_parse(const char *text, struct dv_cidr *out);
/* True if the IP of sa is inside the network (IPv4-mapped IPv6 matches IPv4). */
bool dv_cidr_contains(const struct dv_cidr *net, const struct dv_sockaddr *sa);

/* Number of online CPUs (at least 1). */
unsigned dv_cpu_count(void);

#endif

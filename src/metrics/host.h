/* metrics/host: host CPU, memory, disk, load and network from /proc.
 *
 * Reads <root>/proc/stat, /proc/meminfo, /proc/loadavg and /proc/net/dev
 * (root "" is the machine itself; a container can point it at the host's
 * /proc mounted elsewhere, and tests at a directory of fake files), and
 * statvfs() of the disk path (davit's state directory by default). CPU is a
 * rate: the first reading only primes it. */
#ifndef DV_METRICS_HOST_H
#define DV_METRICS_HOST_H

#include <stdbool.h>
#include <stdint.h>

struct dv_host_sample {
	bool has_cpu, has_mem, has_disk, has_load, has_net;
	double cpu_pct;                 /* busy share of all CPUs since the previous reading, 0..100 */
	uint64_t mem_total, mem_available;
	double mem_used_pct;
	uint64_t disk_total, disk_available;
	double disk_free_pct;
	double load1, load5, load15;
	uint64_t net_rx_bytes, net_tx_bytes; /* every interface but lo, since boot */
};

struct dv_host_stats {
	char root[512];
	char disk_path[512];
	uint64_t prev_total, prev_idle;
	bool primed;
};

/* root: NULL or "" for "/"; disk_path: the file system to watch. */
void dv_host_stats_init(struct dv_host_stats *h, const char *root, const char *disk_path);
/* Fills *out with what could be read (has_* flags). */
void dv_host_stats_read(struct dv_host_stats *h, struct dv_host_sample *out);

#endif

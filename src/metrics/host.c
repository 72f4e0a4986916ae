/* metrics/host: /proc readers (see host.h). */
#include "metrics/host.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

void dv_host_stats_init(struct dv_host_stats *h, const char *root, const char *disk_path)
{
	memset(h, 0, sizeof *h);
	snprintf(h->root, sizeof h->root, "%s", root ? root : "");
	snprintf(h->disk_path, sizeof h->disk_path, "%s", disk_path ? disk_path : "/");
}

static FILE *open_proc(const struct dv_host_stats *h, const char *name)
{
	char path[600];
	snprintf(path, sizeof path, "%s/proc/%s", h->root, name);
	return fopen(path, "re");
}

static void read_cpu(struct dv_host_stats *h, struct dv_host_sample *out)
{
	FILE *f = open_proc(h, "stat");
	if (!f)
		return;
	char line[512];
	if (fgets(line, sizeof line, f) && strncmp(line, "cpu ", 4) == 0) {
		uint64_t v[10] = {0};
		char *p = line + 4;
		for (int i = 0; i < 10; i++) {
			char *end;
			v[i] = strtoull(p, &end, 10);
			if (end == p)
				break;
			p = end;
		}
		/* user nice system idle iowait irq softirq steal (guest is inside user) */
		uint64_t idle = v[3] + v[4];
		uint64_t total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
		if (h->primed && total > h->prev_total) {
			uint64_t dt = total - h->prev_total;
			uint64_t di = idle >= h->prev_idle ? idle - h->prev_idle : 0;
			out->cpu_pct = di >= dt ? 0 : 100.0 * (double)(dt - di) / (double)dt;
			out->has_cpu = true;
		}
		h->prev_total = total;
		h->prev_idle = idle;
		h->primed = true;
	}
	fclose(f);
}

static void read_mem(const struct dv_host_stats *h, struct dv_host_sample *out)
{
	FILE *f = open_proc(h, "meminfo");
	if (!f)
		return;
	char line[256];
	uint64_t total = 0, avail = 0;
	bool have_avail = false;
	while (fgets(line, sizeof line, f)) {
		unsigned long long kb;
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
			total = kb * 1024;
		else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
			avail = kb * 1024;
			have_avail = true;
		}
	}
	fclose(f);
	if (total && have_avail) {
		out->mem_total = total;
		out->mem_available = avail <= total ? avail : total;
		out->mem_used_pct = 100.0 * (double)(total - out->mem_available) / (double)total;
		out->has_mem = true;
	}
}

static void read_load(const struct dv_host_stats *h, struct dv_host_sample *out)
{
	FILE *f = open_proc(h, "loadavg");
	if (!f)
		return;
	if (fscanf(f, "%lf %lf %lf", &out->load1, &out->load5, &out->load15) == 3)
		out->has_load = true;
	fclose(f);
}

static void read_net(const struct dv_host_stats *h, struct dv_host_sample *out)
{
	FILE *f = open_proc(h, "net/dev");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue; /* the two header lines */
		*colon = '\0';
		char *name = line;
		while (*name == ' ')
			name++;
		if (strcmp(name, "lo") == 0)
			continue;
		unsigned long long v[9];
		if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
		           &v[5], &v[6], &v[7], &v[8]) == 9) {
			out->net_rx_bytes += v[0];
			out->net_tx_bytes += v[8];
			out->has_net = true;
		}
	}
	fclose(f);
}

static void read_disk(const struct dv_host_stats *h, struct dv_host_sample *out)
{
	struct statvfs sv;
	if (statvfs(h->disk_path, &sv) != 0 || sv.f_blocks == 0)
		return;
	out->disk_total = (uint64_t)sv.f_blocks * sv.f_frsize;
	out->disk_available = (uint64_t)sv.f_bavail * sv.f_frsize;
	out->disk_free_pct = 100.0 * (double)sv.f_bavail / (double)sv.f_blocks;
	out->has_disk = true;
}

void dv_host_stats_read(struct dv_host_stats *h, struct dv_host_sample *out)
{
	memset(out, 0, sizeof *out);
	read_cpu(h, out);
	read_mem(h, out);
	read_load(h, out);
	read_net(h, out);
	read_disk(h, out);
}

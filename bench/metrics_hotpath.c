/* The proxy's per-request metrics work in isolation: what request_end() adds
 * when metrics are on (one clock read, the counter updates of
 * dv_metrics_request and the in-flight gauge), in ns per request, while a
 * reader merges the shards every 10 ms (the daemon does it every 10 s and
 * per scrape).
 * Built and run by bench/metrics_cost.sh (cc against build/release/libdavit.a). */
#include "core/util.h"
#include "metrics/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static atomic_bool stop;

static void *reader(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		struct dv_metrics_snapshot s;
		dv_metrics_snapshot_take(&s);
		dv_metrics_snapshot_free(&s);
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 20000000;
	struct dv_metrics_shard *sh = dv_metrics_shard_new();
	unsigned slots[4] = {dv_metrics_slot("a/web"), dv_metrics_slot("a/api"), dv_metrics_slot("b/web"),
	                     dv_metrics_slot("b/api")};
	pthread_t r;
	pthread_create(&r, NULL, reader, NULL);
	struct timespec c0, c1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0); /* CPU time: other processes' load does not count */
	uint64_t sink = 0, t0 = dv_now_ns();
	for (long i = 0; i < n; i++) {
		unsigned slot = slots[i & 3];
		dv_metrics_active(sh, slot, 1);
		uint64_t d = dv_now_ns() - t0 + (uint64_t)(i & 1023) * 1000; /* the request's end time */
		dv_metrics_request(sh, slot, 200 + (int)(i % 7 == 0) * 300, d, 0, 100, false);
		dv_metrics_active(sh, slot, -1);
		sink += d;
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	atomic_store(&stop, true);
	pthread_join(r, NULL);
	printf("metrics hot path: %.1f ns of CPU per request (%ld requests, one clock read included; a reader merging "
	       "every 10 ms) [%llu]\n",
	       ((double)(c1.tv_sec - c0.tv_sec) * 1e9 + (double)(c1.tv_nsec - c0.tv_nsec)) / (double)n, n,
	       (unsigned long long)(sink & 1));
	dv_metrics_shard_free(sh);
	return 0;
}

/* Helpers shared by the runtime drivers. */
#include "runtime/runtime.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

void dv_replica_refs_free(struct dv_replica_ref *refs, size_t n)
{
	if (!refs)
		return;
	for (size_t i = 0; i < n; i++) {
		free(refs[i].app);
		free(refs[i].service);
		free(refs[i].release);
		free(refs[i].name);
		free(refs[i].id);
		free(refs[i].spec_hash);
	}
	free(refs);
}

char *dv_runtime_status_format(int status, char *buf, size_t size)
{
	if (status == DV_REPLICA_STATUS_UNKNOWN) {
		snprintf(buf, size, "status unknown");
	} else if (WIFEXITED(status)) {
		snprintf(buf, size, "exited with code %d", WEXITSTATUS(status));
	} else if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		const char *abbrev = sigabbrev_np(sig);
		snprintf(buf, size, "killed by signal %d (SIG%s)%s", sig, abbrev ? abbrev : "?",
		         WCOREDUMP(status) ? ", core dumped" : "");
	} else {
		snprintf(buf, size, "wait status 0x%x", (unsigned)status);
	}
	return buf;
}

char *dv_runtime_format_time(int64_t unix_ms, char *buf, size_t size)
{
	time_t sec = (time_t)(unix_ms / 1000);
	int ms = (int)(unix_ms % 1000);
	if (ms < 0) {
		ms += 1000;
		sec--;
	}
	struct tm tm;
	gmtime_r(&sec, &tm);
	snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
	         tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
	return buf;
}

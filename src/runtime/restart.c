/* Restart policy helpers: exponential backoff and crash-loop detection. */
#include "runtime/runtime.h"

#define DEFAULT_INITIAL_MS 1000u
#define DEFAULT_MAX_MS 60000u
#define DEFAULT_RESET_MS 30000u
#define DEFAULT_CRASHLOOP_EXITS 5u
#define DEFAULT_CRASHLOOP_WINDOW_MS 60000u

static uint64_t or_default(uint64_t value, uint64_t fallback)
{
	return value ? value : fallback;
}

uint64_t dv_restart_backoff_ms(const struct dv_restart_policy *policy, unsigned failures)
{
	uint64_t initial = or_default(policy ? policy->backoff_initial_ms : 0, DEFAULT_INITIAL_MS);
	uint64_t max = or_default(policy ? policy->backoff_max_ms : 0, DEFAULT_MAX_MS);
	uint64_t delay = initial;
	/* Doubling stops at the cap, so there is no overflow whatever `failures` is. */
	for (unsigned i = 0; i < failures && delay < max; i++)
		delay *= 2;
	return delay < max ? delay : max;
}

bool dv_restart_is_crashloop(const struct dv_restart_policy *policy, const uint64_t *exit_times_ms, size_t n,
                             uint64_t now_ms)
{
	uint64_t limit = or_default(policy ? policy->crashloop_exits : 0, DEFAULT_CRASHLOOP_EXITS);
	uint64_t window = or_default(policy ? policy->crashloop_window_ms : 0, DEFAULT_CRASHLOOP_WINDOW_MS);
	uint64_t count = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t t = exit_times_ms[i];
		if (t <= now_ms && now_ms - t <= window)
			count++;
	}
	return count >= limit;
}

uint64_t dv_restart_note_exit(const struct dv_restart_policy *policy, struct dv_restart_state *state,
                              uint64_t now_ms, uint64_t ran_ms, bool *crashloop)
{
	uint64_t reset = or_default(policy ? policy->reset_after_ms : 0, DEFAULT_RESET_MS);
	if (ran_ms >= reset)
		state->failures = 0;
	uint64_t delay = dv_restart_backoff_ms(policy, state->failures);
	if (state->failures < 64)
		state->failures++;
	state->exits[state->next] = now_ms;
	state->next = (state->next + 1) % DV_RESTART_TRACKED_EXITS;
	if (state->n_exits < DV_RESTART_TRACKED_EXITS)
		state->n_exits++;
	if (crashloop)
		*crashloop = dv_restart_is_crashloop(policy, state->exits, state->n_exits, now_ms);
	return delay;
}

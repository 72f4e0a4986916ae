/* loop: one epoll event loop per thread, with timers.
 *
 * A loop is owned by one thread; nothing here is thread-safe except
 * dv_loop_wake(). File descriptors are registered edge-triggered: the
 * callback must consume until EAGAIN (or a short read/write) before the next
 * edge arrives. Objects embed a struct dv_io / struct dv_timer and recover
 * themselves with dv_container_of() in the callback.
 *
 * Timers live in a binary min-heap. Pushing a timer's deadline later is O(1)
 * (the heap entry is re-keyed lazily when it comes due), so per-request
 * timeout updates on the hot path cost almost nothing. */
#ifndef DV_CORE_LOOP_H
#define DV_CORE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dv_loop;
struct dv_io;
struct dv_timer;

/* events: EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP/EPOLLRDHUP bits. */
typedef void (*dv_io_cb)(struct dv_loop *loop, struct dv_io *io, uint32_t events);
typedef void (*dv_timer_cb)(struct dv_loop *loop, struct dv_timer *timer);

struct dv_io {
	int fd;
	dv_io_cb cb;
};

struct dv_timer {
	dv_timer_cb cb;
	uint64_t expires; /* when it fires (ms, dv_loop_now clock); 0 = disarmed */
	uint64_t key;     /* private: its key in the heap (<= expires) */
	size_t index;     /* private: position in the heap + 1, 0 = not in heap */
};

/* Creates a loop; NULL with *err (caller frees) if epoll cannot be created. */
struct dv_loop *dv_loop_new(char **err);
/* Frees the loop (registered fds are not closed; timers are forgotten). */
void dv_loop_free(struct dv_loop *loop);

/* Registers io->fd for `events` (EPOLLIN|EPOLLOUT|... ; EPOLLET is added).
 * Returns 0 or -1 with errno. */
int dv_loop_add(struct dv_loop *loop, struct dv_io *io, uint32_t events);
int dv_loop_mod(struct dv_loop *loop, struct dv_io *io, uint32_t events);
/* Unregisters (call before close(); harmless if not registered). */
void dv_loop_del(struct dv_loop *loop, struct dv_io *io);

/* Runs until dv_loop_stop(). `before_wait`, if set, runs before each wait
 * (deferred work, housekeeping). Returns 0. */
int dv_loop_run(struct dv_loop *loop, void (*before_wait)(struct dv_loop *loop, void *arg), void *arg);
void dv_loop_stop(struct dv_loop *loop);

/* Makes the next wait return at once (poll, do not sleep): for work that was
 * cut short to be fair to other connections and must continue without a new
 * event. Cleared after that wait. */
void dv_loop_no_wait(struct dv_loop *loop);

/* The loop's cached clock (ms, monotonic), refreshed after every wait. */
uint64_t dv_loop_now(const struct dv_loop *loop);
/* Refreshes the cached clock now and returns it. */
uint64_t dv_loop_update_now(struct dv_loop *loop);

/* Arms (or re-arms) a timer to fire at `expires` (ms on the loop clock).
 * The timer struct must stay valid until it fires or is cancelled. */
void dv_timer_set(struct dv_loop *loop, struct dv_timer *timer, uint64_t expires);
/* Disarms; safe on a timer that is not armed. Must be called before the
 * memory of an armed timer is freed. */
void dv_timer_cancel(struct dv_loop *loop, struct dv_timer *timer);
static inline bool dv_timer_armed(const struct dv_timer *timer) { return timer->index != 0; }

/* A cross-thread wake-up: `cb` runs in the loop's thread after any thread
 * calls dv_loop_wake(). Only one wake callback per loop. */
int dv_loop_set_wake(struct dv_loop *loop, void (*cb)(struct dv_loop *loop, void *arg), void *arg);
void dv_loop_wake(struct dv_loop *loop);

#endif

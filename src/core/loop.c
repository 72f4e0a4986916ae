#include "core/loop.h"

#include "core/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256

struct dv_loop {
	int epfd;
	bool stopped;
	bool no_wait;
	uint64_t now;
	struct dv_timer **heap; /* min-heap on key */
	size_t heap_len, heap_cap;
	struct dv_io wake_io;
	void (*wake_cb)(struct dv_loop *, void *);
	void *wake_arg;
};

static uint64_t clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct dv_loop *dv_loop_new(char **err)
{
	struct dv_loop *loop = dv_xcalloc(1, sizeof *loop);
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd == -1) {
		*err = dv_xasprintf("epoll_create1: %s", strerror(errno));
		free(loop);
		return NULL;
	}
	loop->wake_io.fd = -1;
	loop->now = clock_ms();
	return loop;
}

void dv_loop_free(struct dv_loop *loop)
{
	if (!loop)
		return;
	if (loop->wake_io.fd != -1)
		close(loop->wake_io.fd);
	close(loop->epfd);
	free(loop->heap);
	free(loop);
}

int dv_loop_add(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
	return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev);
}

int dv_loop_mod(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev);
}

void dv_loop_del(struct dv_loop *loop, struct dv_io *io)
{
	if (io->fd >= 0)
		epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

uint64_t dv_loop_now(const struct dv_loop *loop)
{
	return loop->now;
}

uint64_t dv_loop_update_now(struct dv_loop *loop)
{
	loop->now = clock_ms();
	return loop->now;
}

/* ---- timer heap (index stored 1-based in the timer) ---- */

static void heap_place(struct dv_loop *loop, size_t i, struct dv_timer *t)
{
	loop->heap[i] = t;
	t->index = i + 1;
}

static void heap_up(struct dv_loop *loop, size_t i)
{
	struct dv_timer *t = loop->heap[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (loop->heap[parent]->key <= t->key)
			break;
		heap_place(loop, i, loop->heap[parent]);
		i = parent;
	}
	heap_place(loop, i, t);
}

static void heap_down(struct dv_loop *loop, size_t i)
{
	struct dv_timer *t = loop->heap[i];
	size_t n = loop->heap_len;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && loop->heap[c + 1]->key < loop->heap[c]->key)
			c++;
		if (t->key <= loop->heap[c]->key)
			break;
		heap_place(loop, i, loop->heap[c]);
		i = c;
	}
	heap_place(loop, i, t);
}

static void heap_remove(struct dv_loop *loop, struct dv_timer *t)
{
	size_t i = t->index - 1;
	struct dv_timer *last = loop->heap[--loop->heap_len];
	t->index = 0;
	if (last == t)
		return;
	heap_place(loop, i, last);
	if (i > 0 && loop->heap[(i - 1) / 2]->key > last->key)
		heap_up(loop, i);
	else
		heap_down(loop, i);
}

void dv_timer_set(struct dv_loop *loop, struct dv_timer *timer, uint64_t expires)
{
	if (expires == 0)
		expires = 1;
	timer->expires = expires;
	if (timer->index) {
		/* Later than the heap key: leave it, fix up when it comes due. */
		if (expires >= timer->key)
			return;
		timer->key = expires;
		heap_up(loop, timer->index - 1);
		return;
	}
	if (loop->heap_len == loop->heap_cap) {
		loop->heap_cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
		loop->heap = dv_xrealloc(loop->heap, loop->heap_cap * sizeof *loop->heap);
	}
	timer->key = expires;
	loop->heap[loop->heap_len++] = timer;
	timer->index = loop->heap_len;
	heap_up(loop, loop->heap_len - 1);
}

void dv_timer_cancel(struct dv_loop *loop, struct dv_timer *timer)
{
	timer->expires = 0;
	if (timer->index)
		heap_remove(loop, timer);
}

static void run_timers(struct dv_loop *loop)
{
	while (loop->heap_len > 0) {
		struct dv_timer *t = loop->heap[0];
		if (t->key > loop->now)
			break;
		if (t->expires > loop->now) {
			t->key = t->expires;
			heap_down(loop, 0);
			continue;
		}
		heap_remove(loop, t);
		t->expires = 0;
		t->cb(loop, t);
	}
}

static int next_timeout(const struct dv_loop *loop)
{
	if (loop->heap_len == 0)
		return 1000;
	uint64_t key = loop->heap[0]->key;
	if (key <= loop->now)
		return 0;
	uint64_t d = key - loop->now;
	return d > 1000 ? 1000 : (int)d;
}

static void wake_ready(struct dv_loop *loop, struct dv_io *io, uint32_t events)
{
	uint64_t v;
	while (read(io->fd, &v, sizeof v) > 0)
		;
	if (loop->wake_cb)
		loop->wake_cb(loop, loop->wake_arg);
}

int dv_loop_set_wake(struct dv_loop *loop, void (*cb)(struct dv_loop *, void *), void *arg)
{
	if (loop->wake_io.fd == -1) {
		loop->wake_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (loop->wake_io.fd == -1)
			return -1;
		loop->wake_io.cb = wake_ready;
		if (dv_loop_add(loop, &loop->wake_io, EPOLLIN) == -1)
			return -1;
	}
	loop->wake_cb = cb;
	loop->wake_arg = arg;
	return 0;
}

void dv_loop_wake(struct dv_loop *loop)
{
	uint64_t one = 1;
	if (loop->wake_io.fd != -1) {
		ssize_t w = write(loop->wake_io.fd, &one, sizeof one);
		(void)w;
	}
}

void dv_loop_no_wait(struct dv_loop *loop)
{
	loop->no_wait = true;
}

void dv_loop_stop(struct dv_loop *loop)
{
	loop->stopped = true;
}

int dv_loop_run(struct dv_loop *loop, void (*before_wait)(struct dv_loop *, void *), void *arg)
{
	struct epoll_event events[MAX_EVENTS];
	loop->stopped = false;
	while (!loop->stopped) {
		if (before_wait)
			before_wait(loop, arg);
		if (loop->stopped)
			break;
		int timeout = loop->no_wait ? 0 : next_timeout(loop);
		loop->no_wait = false;
		int n = epoll_wait(loop->epfd, events, MAX_EVENTS, timeout);
		loop->now = clock_ms();
		if (n == -1 && errno != EINTR)
			return -1;
		for (int i = 0; i < n; i++) {
			struct dv_io *io = events[i].data.ptr;
			io->cb(loop, io, events[i].events);
		}
		run_timers(loop);
	}
	return 0;
}

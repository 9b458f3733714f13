/*
 * bell.h — wakes a libuv loop from another thread: an eventfd the loop polls.
 *
 * Not uv_async_t. In libuv 1.44 (Debian 12) a loop woken by uv_async_send() waits, spinning,
 * until the sending thread has finished its send. When the two share a core, the woken loop
 * thread usually runs first, right after the sender's write to the eventfd, and spins through
 * a pause loop and sched_yield() until the scheduler gives the sender its turn back
 * (libuv#2949; fixed in 1.45 by libuv#3879). The store's writer wakes a loop after every
 * commit, on the same core when the node is pinned to one.
 *
 * Rings coalesce: one run of the callback may answer several rings, so the callback takes
 * everything that is waiting (a list under a lock), as with uv_async_t.
 */
#ifndef TW_BELL_H
#define TW_BELL_H

#include <uv.h>

typedef struct tw_bell tw_bell;
typedef void (*tw_bell_cb)(tw_bell *b);

struct tw_bell {
    uv_poll_t poll; /* poll.data is the bell's */
    int fd;
    _Atomic int rung; /* set by a ring, cleared by the loop after it drains the eventfd */
    tw_bell_cb cb;
    void *data; /* the owner's */
};

/* Opens the eventfd and starts watching it on `loop`; cb runs on the loop thread after
 * rings. Returns 0 or a libuv error code. */
int tw_bell_init(uv_loop_t *loop, tw_bell *b, tw_bell_cb cb);

/* Any thread: makes cb run soon on the loop's thread. Cheap when already rung. */
void tw_bell_ring(tw_bell *b);

/* Loop thread (or once the loop has stopped): stops watching and closes the eventfd once
 * the handle is closed. A handle walk that closes every handle must come after. */
void tw_bell_close(tw_bell *b);

#endif /* TW_BELL_H */

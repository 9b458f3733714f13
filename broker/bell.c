/* bell.c — see bell.h. */
#include "bell.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    tw_bell *b = h->data;
    if (status < 0) return;
    /* Drain, then clear, then look. Cleared after the read: a ring whose write the read
     * drained must not leave `rung` set with nothing in the eventfd (every later ring would
     * then skip its write, and the loop would never wake again). A ring after the clear
     * writes again; one before it handed its work over before the callback looks. */
    uint64_t n;
    while (read(b->fd, &n, sizeof n) < 0 && errno == EINTR) {
    }
    atomic_store(&b->rung, 0);
    b->cb(b);
}

int tw_bell_init(uv_loop_t *loop, tw_bell *b, tw_bell_cb cb)
{
    b->cb = cb;
    atomic_init(&b->rung, 0);
    b->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->fd < 0) return uv_translate_sys_error(errno);
    int rc = uv_poll_init(loop, &b->poll, b->fd);
    if (rc == 0) {
        b->poll.data = b;
        rc = uv_poll_start(&b->poll, UV_READABLE, on_readable);
    }
    if (rc != 0) {
        close(b->fd);
        b->fd = -1;
    }
    return rc;
}

void tw_bell_ring(tw_bell *b)
{
    if (atomic_exchange(&b->rung, 1)) return; /* a wake is on its way */
    uint64_t one = 1;
    while (write(b->fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

static void on_closed(uv_handle_t *h)
{
    tw_bell *b = h->data;
    close(b->fd);
    b->fd = -1;
}

void tw_bell_close(tw_bell *b)
{
    if (b->fd >= 0 && !uv_is_closing((uv_handle_t *)&b->poll))
        uv_close((uv_handle_t *)&b->poll, on_closed);
}

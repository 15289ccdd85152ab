/*
 * coro9p-ffi-harness: a small virtio-9p-device played in C on top of
 * libcoro9p, for the tests (tests/ffi.rs) and `qos-test --target ffi`.
 *
 * It owns what QEMU's virtio-9p-device.c owns: a ring of 128 request slots
 * (descriptor heads), each with its own scatter-gather buffers (the request
 * split over several driver-written segments, the reply buffer over several
 * device-writable ones), the elems[pdu->idx] -> head map, the intake loop of
 * handle_9p_output, the transport callbacks, and the config space
 * (tag_len + mount tag). push_and_notify records (head, length) exactly as
 * virtqueue_push does: a request discarded by Tflush comes back with
 * length 0. Its main loop polls coro9p's descriptor next to its own input,
 * as QEMU's AioContext would (or, with --blocking, uses coro9p_wait).
 *
 * The guest side (the driver: qtest-compat's ffi target, or tests/ffi.rs)
 * talks to it over stdin/stdout. Every message is kind[1] len[4] payload,
 * little-endian.
 *
 *   driver -> harness
 *     'S' head[2] in_size[4] request...   queue a request on ring slot head
 *                                         and kick (handle_9p_output)
 *     'R'                                 device reset        -> 'r'
 *     'C'                                 read config space   -> 'c' bytes
 *     'T'                                 coro9p_get_stats    -> 't'
 *     'H' on[1]                           hold dispatch (stop polling
 *                                         coro9p's fd) or release -> 'h'
 *     'A'                                 PDU exhaustion probe -> 'a'
 *     'X'                                 API misuse probe    -> 'x'
 *     'Q'                                 destroy and exit    -> 'q' rc[4]
 *   harness -> driver
 *     'U' head[2] len[4] reply[len]       a used element (push_and_notify)
 *     'E' text                            a device error (virtio_error)
 *
 *   't' = rc[4] active[4] fids[4] msize[4] dialect[4] open_handles[8]
 *         tasks[8] busy_slots[4]
 *   'r' = rc[4] active_before[4] pushed_during[4] dropped_avail[4], then
 *         the 't' payload after the reset
 *   'a' = got[4] failures[4]
 *   'x' = failures[4] text
 *
 * usage: coro9p-ffi-harness --fsdev STRING [--compat master|7.2]
 *                           [--table master|7.2] [--tag TAG] [--blocking]
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coro9p.h"

#define RING_SIZE 128
#define MAX_TAG_LEN 31

/* Segment sizes: the request and the reply buffer are cut into these, the
 * last size repeating, so every request has more than one segment and the
 * 7-byte header itself straddles two. */
static const size_t out_pattern[] = {3, 13, 1024};
static const size_t in_pattern[] = {5, 29, 2048};

struct slot {
    int busy;
    struct iovec *out;
    unsigned int out_n;
    size_t out_total;
    struct iovec *in;
    unsigned int in_n;
    size_t in_total;
};

struct device {
    coro9p_server *s;
    struct slot ring[RING_SIZE];
    int elems[CORO9P_MAX_REQ]; /* pdu->idx -> head, -1 when none */
    uint16_t avail[RING_SIZE]; /* heads waiting for a PDU, FIFO */
    unsigned int navail;
    int broken;
    int hold;
    unsigned long pushes;
    /* Pushes on a thread other than loop_thread (the harness loop's). */
    unsigned long pushes_elsewhere;
    pthread_t loop_thread;
    int reset_rc;
    char tag[MAX_TAG_LEN + 1];
    /* probe: the next push_and_notify tries to re-enter coro9p */
    int probe_reentry;
    int reentry_failures;
    /* the probe's own device: its used elements are not reported */
    int quiet;
};

/* ---- output to the driver ------------------------------------------- */

static void write_all(const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* The driver is gone: nothing left to serve. */
            _exit(3);
        }
        p += n;
        len -= (size_t)n;
    }
}

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static void emit(char kind, const void *payload, size_t len)
{
    unsigned char head[5];
    head[0] = (unsigned char)kind;
    put_u32(head + 1, (uint32_t)len);
    write_all(head, sizeof head);
    if (len > 0)
        write_all(payload, len);
}

/* QEMU's virtio_error: the device is broken until the next reset. */
static void device_error(struct device *d, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    d->broken = 1;
    fprintf(stderr, "harness: device error: %s\n", msg);
    emit('E', msg, strlen(msg));
}

/* ---- scatter-gather ------------------------------------------------- */

static size_t iov_to_buf(const struct iovec *iov, unsigned int n, size_t offset, void *buf,
                         size_t len)
{
    size_t done = 0;
    for (unsigned int i = 0; i < n && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t take = iov[i].iov_len - offset;
        if (take > len - done)
            take = len - done;
        memcpy((char *)buf + done, (char *)iov[i].iov_base + offset, take);
        done += take;
        offset = 0;
    }
    return done;
}

static size_t iov_from_buf(const struct iovec *iov, unsigned int n, size_t offset,
                           const void *buf, size_t len)
{
    size_t done = 0;
    for (unsigned int i = 0; i < n && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t put = iov[i].iov_len - offset;
        if (put > len - done)
            put = len - done;
        memcpy((char *)iov[i].iov_base + offset, (const char *)buf + done, put);
        done += put;
        offset = 0;
    }
    return done;
}

/* Cuts total bytes into separately allocated segments. */
static struct iovec *make_segments(size_t total, const size_t *pattern, size_t npattern,
                                   unsigned int *n_out)
{
    unsigned int n = 0;
    size_t left = total;
    for (size_t i = 0; left > 0; i++) {
        size_t seg = pattern[i < npattern ? i : npattern - 1];
        left -= seg < left ? seg : left;
        n++;
    }
    struct iovec *iov = calloc(n ? n : 1, sizeof *iov);
    if (!iov)
        abort();
    left = total;
    for (unsigned int i = 0; i < n; i++) {
        size_t seg = pattern[i < npattern ? i : npattern - 1];
        if (seg > left)
            seg = left;
        iov[i].iov_base = malloc(seg);
        if (!iov[i].iov_base)
            abort();
        iov[i].iov_len = seg;
        left -= seg;
    }
    *n_out = n;
    return iov;
}

static void free_segments(struct iovec *iov, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++)
        free(iov[i].iov_base);
    free(iov);
}

/* Returns a slot's buffers without a used element (virtqueue_detach_element). */
static void slot_release(struct slot *sl)
{
    free_segments(sl->out, sl->out_n);
    free_segments(sl->in, sl->in_n);
    memset(sl, 0, sizeof *sl);
}

/* ---- the transport callbacks ---------------------------------------- */

static struct slot *pdu_slot(coro9p_pdu *pdu)
{
    struct device *d = pdu->opaque;
    if (pdu->idx >= CORO9P_MAX_REQ || d->elems[pdu->idx] < 0) {
        fprintf(stderr, "harness: callback for PDU %u, which has no element\n", pdu->idx);
        abort();
    }
    return &d->ring[d->elems[pdu->idx]];
}

static ssize_t cb_pdu_marshal(coro9p_pdu *pdu, size_t offset, const void *buf, size_t len)
{
    struct slot *sl = pdu_slot(pdu);
    if (offset > sl->in_total || len > sl->in_total - offset) {
        device_error(pdu->opaque, "Failed to encode VirtFS reply type %d", pdu->id + 1);
        return -ENOBUFS;
    }
    return (ssize_t)iov_from_buf(sl->in, sl->in_n, offset, buf, len);
}

static ssize_t cb_pdu_unmarshal(coro9p_pdu *pdu, size_t offset, void *buf, size_t len)
{
    struct slot *sl = pdu_slot(pdu);
    if (offset > sl->out_total || len > sl->out_total - offset) {
        device_error(pdu->opaque, "Failed to decode VirtFS request type %d", pdu->id);
        return -ENOBUFS;
    }
    return (ssize_t)iov_to_buf(sl->out, sl->out_n, offset, buf, len);
}

static void cb_init_in_iov(coro9p_pdu *pdu, struct iovec **piov, unsigned int *pniov, size_t size)
{
    struct slot *sl = pdu_slot(pdu);
    if (sl->in_total < size)
        device_error(pdu->opaque, "VirtFS reply type %d needs %zu bytes, buffer has %zu",
                     pdu->id + 1, size, sl->in_total);
    *piov = sl->in;
    *pniov = sl->in_n;
}

static void cb_init_out_iov(coro9p_pdu *pdu, struct iovec **piov, unsigned int *pniov,
                            size_t size)
{
    struct slot *sl = pdu_slot(pdu);
    if (sl->out_total < size)
        device_error(pdu->opaque, "VirtFS request type %d needs %zu bytes, buffer has %zu",
                     pdu->id, size, sl->out_total);
    *piov = sl->out;
    *pniov = sl->out_n;
}

static void probe_reentry(struct device *d);

static void cb_push_and_notify(coro9p_pdu *pdu)
{
    struct device *d = pdu->opaque;
    struct slot *sl = pdu_slot(pdu);
    uint16_t head = (uint16_t)d->elems[pdu->idx];
    size_t len = pdu->size;
    if (len > sl->in_total) {
        fprintf(stderr, "harness: used length %zu above the buffer's %zu\n", len, sl->in_total);
        abort();
    }
    /* virtqueue_push(elem, len) + virtio_notify: the guest sees (head, len)
     * and reads len bytes of its reply buffer. */
    unsigned char *msg = malloc(6 + len);
    if (!msg)
        abort();
    put_u16(msg, head);
    put_u32(msg + 2, (uint32_t)len);
    iov_to_buf(sl->in, sl->in_n, 0, msg + 6, len);
    if (!d->quiet)
        emit('U', msg, 6 + len);
    free(msg);
    slot_release(sl);
    d->elems[pdu->idx] = -1;
    d->pushes++;
    if (!pthread_equal(pthread_self(), d->loop_thread))
        d->pushes_elsewhere++;
    if (d->probe_reentry) {
        d->probe_reentry = 0;
        probe_reentry(d);
    }
}

static size_t cb_msize_limit(void *opaque)
{
    (void)opaque;
    return (1024 - 2) * 4096; /* virtio: VIRTQUEUE_MAX_SIZE - 2 pages */
}

static size_t cb_response_buffer_size(coro9p_pdu *pdu)
{
    return pdu_slot(pdu)->in_total;
}

static void cb_transport_error(void *opaque, const char *msg)
{
    device_error(opaque, "%s", msg);
}

static coro9p_transport table_master = {
    .pdu_marshal = cb_pdu_marshal,
    .pdu_unmarshal = cb_pdu_unmarshal,
    .init_in_iov_from_pdu = cb_init_in_iov,
    .init_out_iov_from_pdu = cb_init_out_iov,
    .push_and_notify = cb_push_and_notify,
    .msize_limit = cb_msize_limit,
    .response_buffer_size = cb_response_buffer_size,
    .transport_error = cb_transport_error,
};

/* QEMU 7.2's V9fsTransport: the five callbacks only. */
static coro9p_transport table_7_2 = {
    .pdu_marshal = cb_pdu_marshal,
    .pdu_unmarshal = cb_pdu_unmarshal,
    .init_in_iov_from_pdu = cb_init_in_iov,
    .init_out_iov_from_pdu = cb_init_out_iov,
    .push_and_notify = cb_push_and_notify,
};

/* ---- intake (handle_9p_output) -------------------------------------- */

static void handle_output(struct device *d)
{
    while (d->navail > 0 && !d->broken) {
        coro9p_pdu *pdu = coro9p_pdu_alloc(d->s);
        if (!pdu)
            return; /* the rest waits for the next kick */
        uint16_t head = d->avail[0];
        memmove(d->avail, d->avail + 1, (d->navail - 1) * sizeof d->avail[0]);
        d->navail--;
        struct slot *sl = &d->ring[head];
        coro9p_msg_header hdr;
        if (sl->in_total < 7) {
            device_error(d, "The guest sent a VirtFS request without space for the reply");
            slot_release(sl);
            coro9p_pdu_free(d->s, pdu);
            return;
        }
        size_t got = iov_to_buf(sl->out, sl->out_n, 0, &hdr, sizeof hdr);
        if (got < sizeof hdr) {
            device_error(d, "The guest sent a malformed VirtFS request: header size is %zu, "
                            "should be 7",
                         got);
            slot_release(sl);
            coro9p_pdu_free(d->s, pdu);
            return;
        }
        d->elems[pdu->idx] = head;
        unsigned int idx = pdu->idx;
        int rc = coro9p_pdu_submit(d->s, pdu, &hdr);
        if (rc < 0) {
            /* The PDU is freed; the element is ours to drop. */
            device_error(d, "coro9p_pdu_submit: %s", strerror(-rc));
            d->elems[idx] = -1;
            slot_release(sl);
            return;
        }
    }
}

/* ---- commands ------------------------------------------------------- */

struct stats_out {
    unsigned char b[40];
};

static struct stats_out stats_payload(struct device *d)
{
    struct stats_out o;
    coro9p_stats st;
    memset(&st, 0, sizeof st);
    int rc = coro9p_get_stats(d->s, &st);
    uint32_t busy = 0;
    for (int i = 0; i < RING_SIZE; i++)
        busy += d->ring[i].busy ? 1 : 0;
    put_u32(o.b, (uint32_t)rc);
    put_u32(o.b + 4, st.active_requests);
    put_u32(o.b + 8, st.fids);
    put_u32(o.b + 12, st.msize);
    put_u32(o.b + 16, st.dialect);
    put_u64(o.b + 20, st.open_handles);
    put_u64(o.b + 28, st.tasks);
    put_u32(o.b + 36, busy);
    return o;
}

static void cmd_submit(struct device *d, const unsigned char *p, size_t len)
{
    if (len < 6) {
        device_error(d, "submit: short command");
        return;
    }
    uint16_t head = get_u16(p);
    uint32_t in_size = get_u32(p + 2);
    const unsigned char *req = p + 6;
    size_t req_len = len - 6;
    if (head >= RING_SIZE || d->ring[head].busy) {
        device_error(d, "submit: descriptor head %u is out of range or in use", head);
        return;
    }
    struct slot *sl = &d->ring[head];
    sl->busy = 1;
    sl->out = make_segments(req_len, out_pattern, 3, &sl->out_n);
    sl->out_total = req_len;
    iov_from_buf(sl->out, sl->out_n, 0, req, req_len);
    sl->in = make_segments(in_size, in_pattern, 3, &sl->in_n);
    sl->in_total = in_size;
    /* The guest's reply buffer holds garbage until the device writes it. */
    for (unsigned int i = 0; i < sl->in_n; i++)
        memset(sl->in[i].iov_base, 0xa5, sl->in[i].iov_len);
    d->avail[d->navail++] = head;
    handle_output(d);
}

static void *reset_thread(void *arg)
{
    struct device *d = arg;
    d->reset_rc = coro9p_reset(d->s);
    return NULL;
}

/* Device reset; with elsewhere set, from a second thread while this one
 * waits, as QEMU resets from a vCPU thread under the BQL. */
static void cmd_reset(struct device *d, int elsewhere)
{
    coro9p_stats st;
    memset(&st, 0, sizeof st);
    coro9p_get_stats(d->s, &st);
    unsigned long before = d->pushes;
    unsigned long before_elsewhere = d->pushes_elsewhere;
    d->loop_thread = pthread_self();
    int rc;
    pthread_t t;
    if (!elsewhere)
        rc = coro9p_reset(d->s);
    else if (pthread_create(&t, NULL, reset_thread, d) == 0) {
        pthread_join(t, NULL);
        rc = d->reset_rc;
    } else
        rc = -EAGAIN;
    uint32_t pushed = (uint32_t)(d->pushes - before);
    uint32_t pushed_elsewhere = (uint32_t)(d->pushes_elsewhere - before_elsewhere);
    /* Requests the device never took are dropped with the ring. */
    uint32_t dropped = d->navail;
    for (unsigned int i = 0; i < d->navail; i++)
        slot_release(&d->ring[d->avail[i]]);
    d->navail = 0;
    d->broken = 0;
    unsigned char out[16 + 40 + 4];
    put_u32(out, (uint32_t)rc);
    put_u32(out + 4, st.active_requests);
    put_u32(out + 8, pushed);
    put_u32(out + 12, dropped);
    struct stats_out after = stats_payload(d);
    memcpy(out + 16, after.b, sizeof after.b);
    put_u32(out + 56, pushed_elsewhere);
    emit('r', out, sizeof out);
}

static void cmd_config(struct device *d)
{
    /* virtio_9p_get_config: tag_len (LE) and the tag, no NUL. */
    size_t n = strlen(d->tag);
    unsigned char cfg[2 + MAX_TAG_LEN];
    put_u16(cfg, (uint16_t)n);
    memcpy(cfg + 2, d->tag, n);
    emit('c', cfg, 2 + n);
}

static void cmd_alloc_probe(struct device *d)
{
    coro9p_pdu *got[CORO9P_MAX_REQ + 1];
    uint32_t n = 0, failures = 0;
    while (n <= CORO9P_MAX_REQ) {
        coro9p_pdu *p = coro9p_pdu_alloc(d->s);
        if (!p)
            break;
        got[n++] = p;
    }
    if (n > CORO9P_MAX_REQ)
        failures++;
    if (n > 0) {
        /* An allocated PDU blocks a reset: it would never drain. */
        if (coro9p_reset(d->s) != -EBUSY)
            failures++;
    }
    for (uint32_t i = 0; i < n; i++)
        if (coro9p_pdu_free(d->s, got[i]) != 0)
            failures++;
    /* Freeing twice is refused. */
    if (n > 0 && coro9p_pdu_free(d->s, got[0]) != -EINVAL)
        failures++;
    unsigned char out[8];
    put_u32(out, n);
    put_u32(out + 4, failures);
    emit('a', out, sizeof out);
}

/* ---- API misuse probe ----------------------------------------------- */

static char probe_log[1024];
static size_t probe_len;

static void probe_fail(uint32_t *failures, const char *what, long got)
{
    (*failures)++;
    int n = snprintf(probe_log + probe_len, sizeof probe_log - probe_len, "%s: got %ld; ", what,
                     got);
    if (n > 0 && (size_t)n < sizeof probe_log - probe_len)
        probe_len += (size_t)n;
}

#define EXPECT(failures, expr, want)                                                        \
    do {                                                                                    \
        long got_ = (long)(expr);                                                           \
        if (got_ != (long)(want))                                                           \
            probe_fail((failures), #expr, got_);                                            \
    } while (0)

static void *other_thread(void *arg)
{
    struct device *d = arg;
    return (void *)(intptr_t)coro9p_dispatch(d->s);
}

/* Called from inside push_and_notify: every entry point but get_stats
 * must refuse to run. */
static void probe_reentry(struct device *d)
{
    uint32_t f = 0;
    coro9p_stats st;
    EXPECT(&f, coro9p_dispatch(d->s), -EBUSY);
    EXPECT(&f, coro9p_wait(d->s, 0), -EBUSY);
    EXPECT(&f, coro9p_reset(d->s), -EBUSY);
    EXPECT(&f, coro9p_pdu_alloc(d->s) == NULL, 1);
    EXPECT(&f, coro9p_destroy(d->s), -EBUSY);
    EXPECT(&f, coro9p_get_stats(d->s, &st), 0);
    /* Another thread, while this one is inside the server: refused. */
    pthread_t t;
    void *ret = NULL;
    if (pthread_create(&t, NULL, other_thread, d) == 0) {
        pthread_join(t, &ret);
        EXPECT(&f, (intptr_t)ret, -EBUSY);
    } else {
        probe_fail(&f, "pthread_create", 0);
    }
    d->reentry_failures = (int)f;
}


static const unsigned char tversion[] = {19,  0,   0,   0,   100, 0xff, 0xff, 0,   0x20, 0,
                                         0,   8,   0,   '9', 'P', '2',  '0',  '0', '0',
                                         '.', 'L'};

static void cmd_misuse_probe(struct device *d)
{
    uint32_t f = 0;
    probe_len = 0;
    probe_log[0] = 0;
    coro9p_server *s = (coro9p_server *)0x1;
    coro9p_msg_header hdr = {19, 100, 0xffff};
    coro9p_stats st;

    /* NULL and bogus arguments. */
    EXPECT(&f, coro9p_new(NULL, 0, &table_master, d, &s), -EINVAL);
    EXPECT(&f, s == NULL, 1);
    EXPECT(&f, coro9p_new("synth", 0, &table_master, d, NULL), -EINVAL);
    EXPECT(&f, coro9p_new("synth", 0, NULL, d, &s), -EINVAL);
    EXPECT(&f, coro9p_new("nosuchdriver", 0, &table_master, d, &s), -EINVAL);
    EXPECT(&f, coro9p_new("synth", 7, &table_master, d, &s), -EINVAL);
    EXPECT(&f,
           coro9p_new("local,path=/nonexistent/coro9p,security_model=none", 0, &table_master, d,
                      &s) < 0,
           1);
    /* The reason is kept for hosts that report errors themselves. */
    EXPECT(&f, strstr(coro9p_last_error(), "/nonexistent/coro9p") != NULL, 1);
    /* Options are checked without opening anything. */
    EXPECT(&f, coro9p_check_fsdev("local,path=/nonexistent/coro9p,security_model=none"), 0);
    EXPECT(&f, coro9p_check_fsdev("local,path=/srv"), -EINVAL);
    EXPECT(&f, strcmp(coro9p_last_error(), "security_model property not set"), 0);
    EXPECT(&f, coro9p_check_fsdev("synth,throttling.bps-total=1"), -EINVAL);
    EXPECT(&f, coro9p_check_fsdev(NULL), -EINVAL);
    coro9p_transport partial = table_master;
    partial.push_and_notify = NULL;
    EXPECT(&f, coro9p_new("synth", 0, &partial, d, &s), -EINVAL);
    EXPECT(&f, coro9p_destroy(NULL), 0);
    EXPECT(&f, coro9p_pdu_alloc(NULL) == NULL, 1);
    EXPECT(&f, coro9p_reset(NULL), -EINVAL);
    EXPECT(&f, coro9p_dispatch(NULL), -EINVAL);
    EXPECT(&f, coro9p_poll_fd(NULL), -EINVAL);
    EXPECT(&f, coro9p_get_stats(d->s, NULL), -EINVAL);
    memset(&st, 0, sizeof st);
    EXPECT(&f, coro9p_get_stats((coro9p_server *)((char *)d->s + 1), &st), -EINVAL);
    EXPECT(&f, coro9p_pdu_submit(d->s, NULL, &hdr), -EINVAL);
    coro9p_pdu *p = coro9p_pdu_alloc(d->s);
    EXPECT(&f, p != NULL, 1);
    if (p) {
        EXPECT(&f, coro9p_pdu_submit(d->s, (coro9p_pdu *)((char *)p + 1), &hdr), -EINVAL);
        EXPECT(&f, coro9p_pdu_free(d->s, (coro9p_pdu *)&st), -EINVAL);
        EXPECT(&f, coro9p_pdu_free(d->s, p), 0);
        /* Not allocated any more. */
        EXPECT(&f, coro9p_pdu_submit(d->s, p, &hdr), -EINVAL);
    }

    /* Any thread may call, one at a time (QEMU resets from a vCPU thread). */
    pthread_t t;
    void *ret = NULL;
    if (pthread_create(&t, NULL, other_thread, d) == 0) {
        pthread_join(t, &ret);
        EXPECT(&f, (intptr_t)ret, 0);
    } else {
        probe_fail(&f, "pthread_create", 0);
    }

    /* Re-entry from inside a callback, on a second device of its own. */
    struct device *e = calloc(1, sizeof *e);
    if (!e)
        abort();
    memset(e->elems, 0xff, sizeof e->elems);
    e->quiet = 1;
    if (coro9p_new("synth", CORO9P_COMPAT_MASTER, &table_master, e, &e->s) == 0) {
        e->probe_reentry = 1;
        e->reentry_failures = -1;
        unsigned char sub[6 + sizeof tversion];
        put_u16(sub, 0);
        put_u32(sub + 2, 4096);
        memcpy(sub + 6, tversion, sizeof tversion);
        cmd_submit(e, sub, sizeof sub);
        while (e->reentry_failures < 0 && coro9p_wait(e->s, 1000) == 0)
            handle_output(e);
        if (e->reentry_failures != 0)
            probe_fail(&f, "re-entry from push_and_notify", e->reentry_failures);
        EXPECT(&f, coro9p_destroy(e->s), 0);
    } else {
        probe_fail(&f, "coro9p_new for the re-entry probe", 0);
    }
    free(e);

    unsigned char out[4 + sizeof probe_log];
    put_u32(out, f);
    memcpy(out + 4, probe_log, probe_len);
    emit('x', out, 4 + probe_len);
}

/* Runs one command; returns 0 to go on, 1 to quit. */
static int run_command(struct device *d, unsigned char kind, const unsigned char *p, size_t len)
{
    switch (kind) {
    case 'S':
        cmd_submit(d, p, len);
        return 0;
    case 'R':
        cmd_reset(d, len > 0 && p[0] != 0);
        return 0;
    case 'C':
        cmd_config(d);
        return 0;
    case 'T': {
        struct stats_out o = stats_payload(d);
        emit('t', o.b, sizeof o.b);
        return 0;
    }
    case 'H':
        d->hold = len > 0 && p[0] != 0;
        emit('h', NULL, 0);
        return 0;
    case 'A':
        cmd_alloc_probe(d);
        return 0;
    case 'X':
        cmd_misuse_probe(d);
        return 0;
    case 'Q':
        return 1;
    default:
        device_error(d, "unknown command %d", kind);
        return 0;
    }
}

/* ---- input ---------------------------------------------------------- */

struct input {
    unsigned char *buf;
    size_t len, cap;
};

/* Reads what stdin has and runs every complete command, in order, before
 * coro9p gets the loop back (one kick takes the whole batch, as QEMU's
 * handle_9p_output does). Returns 1 on EOF or quit. */
static int read_commands(struct device *d, struct input *in)
{
    if (in->cap - in->len < 65536) {
        size_t cap = in->cap ? in->cap * 2 : 131072;
        unsigned char *b = realloc(in->buf, cap);
        if (!b)
            abort();
        in->buf = b;
        in->cap = cap;
    }
    ssize_t n = read(STDIN_FILENO, in->buf + in->len, in->cap - in->len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n <= 0)
        return 1;
    in->len += (size_t)n;
    size_t at = 0;
    int quit = 0;
    while (!quit && in->len - at >= 5) {
        uint32_t len = get_u32(in->buf + at + 1);
        if (in->len - at - 5 < len)
            break;
        quit = run_command(d, in->buf[at], in->buf + at + 5, len);
        at += 5 + len;
    }
    memmove(in->buf, in->buf + at, in->len - at);
    in->len -= at;
    return quit;
}

/* coro9p's worker threads end on their own shortly after coro9p_destroy;
 * wait for them (bounded), so that a leak check at exit sees only what is
 * really left. */
static void wait_for_workers(int max_ms)
{
    for (int waited = 0; waited < max_ms; waited += 10) {
        DIR *dir = opendir("/proc/self/task");
        if (!dir)
            return;
        int threads = 0;
        struct dirent *e;
        while ((e = readdir(dir)) != NULL)
            threads += e->d_name[0] != '.';
        closedir(dir);
        if (threads <= 1)
            return;
        usleep(10000);
    }
    fprintf(stderr, "harness: worker threads still running %d ms after coro9p_destroy\n",
            max_ms);
}

static void usage(void)
{
    fprintf(stderr, "usage: coro9p-ffi-harness --fsdev STRING [--compat master|7.2] "
                    "[--table master|7.2] [--tag TAG] [--blocking]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *fsdev = NULL, *table = NULL, *tag = "qtest";
    int compat = CORO9P_COMPAT_MASTER, blocking = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fsdev") && i + 1 < argc) {
            fsdev = argv[++i];
        } else if (!strcmp(argv[i], "--compat") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "7.2"))
                compat = CORO9P_COMPAT_7_2;
            else if (strcmp(v, "master"))
                usage();
        } else if (!strcmp(argv[i], "--table") && i + 1 < argc) {
            table = argv[++i];
        } else if (!strcmp(argv[i], "--tag") && i + 1 < argc) {
            tag = argv[++i];
        } else if (!strcmp(argv[i], "--blocking")) {
            blocking = 1;
        } else {
            usage();
        }
    }
    if (!fsdev || strlen(tag) > MAX_TAG_LEN)
        usage();
    if (!table)
        table = compat == CORO9P_COMPAT_7_2 ? "7.2" : "master";
    signal(SIGPIPE, SIG_IGN);

    struct device *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    memset(d->elems, 0xff, sizeof d->elems);
    strcpy(d->tag, tag);
    int rc = coro9p_new(fsdev, compat, !strcmp(table, "7.2") ? &table_7_2 : &table_master, d,
                        &d->s);
    if (rc != 0) {
        fprintf(stderr, "harness: coro9p_new: %s\n", strerror(-rc));
        free(d);
        return 1;
    }
    int fd = coro9p_poll_fd(d->s);
    struct input in = {0};
    int quit = 0;
    while (!quit) {
        if (blocking) {
            /* A simple host: coro9p_wait does the polling. */
            struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
            if (poll(&p, 1, d->hold ? -1 : 0) > 0)
                quit = read_commands(d, &in);
            if (!quit && !d->hold) {
                coro9p_wait(d->s, 5);
                handle_output(d);
            }
            continue;
        }
        /* QEMU's way: coro9p's descriptor in the host's own poll set. */
        struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                              {.fd = fd, .events = POLLIN}};
        int n = poll(p, d->hold ? 1 : 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("harness: poll");
            break;
        }
        if (!d->hold && (p[1].revents & POLLIN)) {
            coro9p_dispatch(d->s);
            handle_output(d);
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
            quit = read_commands(d, &in);
    }
    rc = coro9p_destroy(d->s);
    wait_for_workers(20000);
    /* Whatever the device never took goes with it. */
    for (unsigned int i = 0; i < d->navail; i++)
        slot_release(&d->ring[d->avail[i]]);
    unsigned char out[4];
    put_u32(out, (uint32_t)rc);
    emit('q', out, sizeof out);
    for (int i = 0; i < RING_SIZE; i++)
        if (d->ring[i].busy) {
            fprintf(stderr, "harness: slot %d still busy after destroy\n", i);
            slot_release(&d->ring[i]);
            rc = rc ? rc : -1;
        }
    free(in.buf);
    free(d);
    return rc == 0 ? 0 : 1;
}

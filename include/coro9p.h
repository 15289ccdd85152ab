/*
 * coro9p.h - the C ABI of coro9p, a 9P2000.L/9P2000.u server that can take
 * the place of QEMU's hw/9pfs server and file system drivers behind
 * virtio-9p-device.c (see docs/qemu-dropin.md).
 *
 * Link with libcoro9p.a (plus -lpthread -ldl -lm) or libcoro9p.so.
 *
 * Rules for every function below:
 *  - It returns 0 (or a descriptor, or a pointer) on success and a negative
 *    errno (or NULL) on failure, after logging why (RUST_LOG=debug for more).
 *  - Calls on one server must not overlap: make them from one thread, or
 *    from several under one lock, as QEMU does under its BQL (a call while
 *    another thread is inside the server gets -EBUSY). Callbacks run on
 *    the thread whose call they come from.
 *  - Do not call coro9p from inside a transport callback, except
 *    coro9p_get_stats (-EBUSY otherwise).
 *
 * This header is checked against the Rust side (src/transport/ffi/) by
 * tests/ffi.rs: prototypes, struct sizes and field offsets.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef CORO9P_H
#define CORO9P_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* PDUs per server (QEMU's MAX_REQ); the fsdev option max_pdus=N uses only
 * the first N of them. */
#define CORO9P_MAX_REQ 128

/* The QEMU version whose client-visible behaviour to match. */
#define CORO9P_COMPAT_MASTER 0
#define CORO9P_COMPAT_7_2 1

/* coro9p_stats.dialect */
#define CORO9P_DIALECT_NONE 0
#define CORO9P_DIALECT_U 1
#define CORO9P_DIALECT_L 2

/* One 9P device's server. Opaque. */
typedef struct coro9p_server coro9p_server;

/*
 * One request slot (QEMU's V9fsPDU, the fields a transport reads). coro9p
 * owns the CORO9P_MAX_REQ of them; the transport reads, never writes, them.
 */
typedef struct coro9p_pdu {
    /* After submit: the request's size field. In push_and_notify: the
     * reply's length, 0 for a request discarded by Tflush. */
    uint32_t size;
    uint16_t tag;
    /* After submit: the request type; in push_and_notify: the reply type
     * (unchanged when discarded). */
    uint8_t id;
    uint8_t reserved;
    /* Fixed slot number 0..127: index of the transport's per-request
     * context (virtio: elems[idx]). */
    uint32_t idx;
    coro9p_server *s;
    /* The opaque pointer given to coro9p_new. */
    void *opaque;
} coro9p_pdu;

/* The 9P header as read from the request (QEMU's P9MsgHeader): bytes as on
 * the wire, size and tag little-endian. */
typedef struct __attribute__((packed)) coro9p_msg_header {
    uint32_t size;
    uint8_t id;
    uint16_t tag;
} coro9p_msg_header;

/*
 * The transport's callbacks (QEMU's V9fsTransport). All are called on the
 * server's thread, from inside coro9p_pdu_submit, coro9p_dispatch,
 * coro9p_wait, coro9p_reset or coro9p_destroy. The first five are required,
 * the last three may be NULL.
 *
 * QEMU's pdu_vmarshal/pdu_vunmarshal take a format string and a va_list;
 * coro9p encodes and decodes 9P itself, so these two move bytes that are
 * already in wire order (virtio: iov_from_buf / iov_to_buf on the
 * element's in_sg / out_sg).
 */
typedef struct coro9p_transport {
    /* Copy len bytes into the request's device-writable buffers (in_sg) at
     * offset. Return len, or -ENOBUFS when they do not fit (virtio also
     * raises virtio_error then). coro9p writes each reply whole, at 0. */
    ssize_t (*pdu_marshal)(coro9p_pdu *pdu, size_t offset, const void *buf, size_t len);
    /* Copy len bytes from the request's driver-written buffers (out_sg) at
     * offset. Return len, or -ENOBUFS. coro9p reads each request whole. */
    ssize_t (*pdu_unmarshal)(coro9p_pdu *pdu, size_t offset, void *buf, size_t len);
    /* Hand out the in_sg (resp. out_sg) iovec array; if it holds fewer than
     * size bytes, report the transport error but still hand it out. The
     * array must stay valid until push_and_notify. coro9p uses these to size
     * the buffers. */
    void (*init_in_iov_from_pdu)(coro9p_pdu *pdu, struct iovec **piov, unsigned int *pniov,
                                 size_t size);
    void (*init_out_iov_from_pdu)(coro9p_pdu *pdu, struct iovec **piov, unsigned int *pniov,
                                  size_t size);
    /* Complete the request with used length pdu->size (0: discarded) and
     * notify the guest. Called exactly once per submitted PDU. */
    void (*push_and_notify)(coro9p_pdu *pdu);
    /* QEMU master. The largest msize the transport carries; Tversion caps
     * to it. NULL: no cap (QEMU 7.2). */
    size_t (*msize_limit)(void *opaque);
    /* QEMU master. Bytes available for this request's reply. NULL: the
     * total of the in_sg iovecs. */
    size_t (*response_buffer_size)(coro9p_pdu *pdu);
    /* coro9p's own: the request stream is broken (a request that cannot be
     * decoded, a reply that cannot fit): QEMU's virtio_error. NULL: the
     * error is only logged. */
    void (*transport_error)(void *opaque, const char *msg);
} coro9p_transport;

/* Counters, for tests and diagnostics. */
typedef struct coro9p_stats {
    uint32_t active_requests; /* PDUs allocated or in flight */
    uint32_t fids;            /* fids in the table */
    uint32_t msize;           /* negotiated msize, 0 before Tversion */
    uint32_t dialect;         /* CORO9P_DIALECT_* */
    uint64_t open_handles;    /* files and directory streams held open */
    uint64_t tasks;           /* coroutines that have not ended */
} coro9p_stats;

/*
 * Makes a server for the export fsdev, a QEMU -fsdev string as the coro9p
 * command takes it ("local,id=fsdev0,path=/srv,security_model=mapped-xattr",
 * "synth"), with compat CORO9P_COMPAT_*. The per-session limits are fsdev
 * options too (max_fids, max_xattr_size, max_pdus, max_msize: README.md);
 * max_msize lowers the transport's msize_limit. The table is copied; opaque
 * goes to the callbacks and into every pdu->opaque. On success *out is the
 * server; on failure *out is NULL and a negative errno is returned.
 */
int coro9p_new(const char *fsdev, int compat, const coro9p_transport *transport, void *opaque,
               coro9p_server **out);

/*
 * Ends the server: requests in flight are cancelled (each still gets
 * push_and_notify, with size 0 when discarded), all fids are freed, and
 * everything is released. NULL is a no-op.
 */
int coro9p_destroy(coro9p_server *s);

/* Takes a free PDU (QEMU's pdu_alloc); NULL when all are in use: 128, or
 * the fsdev string's max_pdus=N (1..128). */
coro9p_pdu *coro9p_pdu_alloc(coro9p_server *s);

/* Gives back a PDU that was allocated but will not be submitted. */
int coro9p_pdu_free(coro9p_server *s, coro9p_pdu *pdu);

/*
 * Starts the request on pdu (QEMU's pdu_submit) with the header the
 * transport read. The request runs at once until its first worker hop; a
 * request that needs none has been pushed when this returns. On failure the
 * PDU is freed and the request is the transport's to dispose of.
 */
int coro9p_pdu_submit(coro9p_server *s, coro9p_pdu *pdu, const coro9p_msg_header *hdr);

/*
 * Device reset (QEMU's v9fs_reset): runs until every request in flight has
 * completed (uncancelled, each pushed), then frees every fid. msize and the
 * dialect stay. -EBUSY while a PDU is allocated but not submitted.
 */
int coro9p_reset(coro9p_server *s);

/* The descriptor the host's main loop polls for POLLIN; call
 * coro9p_dispatch when it is readable. */
int coro9p_poll_fd(coro9p_server *s);

/* Runs whatever is ready (coroutine resumptions, worker completions)
 * without blocking. */
int coro9p_dispatch(coro9p_server *s);

/* For simple hosts: waits up to timeout_ms (-1: no limit) for work, then
 * runs it. */
int coro9p_wait(coro9p_server *s, int timeout_ms);

/* Fills *out. May be called from inside a callback. */
int coro9p_get_stats(coro9p_server *s, coro9p_stats *out);

/*
 * Checks an fsdev string as coro9p_new would parse it, without opening the
 * export (QEMU validates -fsdev when it parses its command line). 0, or
 * -EINVAL with the reason in coro9p_last_error().
 */
int coro9p_check_fsdev(const char *fsdev);

/*
 * The sentence of the last failure of a coro9p function on the calling
 * thread ("" if none), for hosts that report errors themselves (QEMU's
 * Error **). Valid until the next failing call on this thread.
 */
const char *coro9p_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* CORO9P_H */

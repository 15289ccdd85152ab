/*
 * coro9p-glue.c - puts coro9p (include/coro9p.h) where QEMU's hw/9pfs
 * server and file system drivers were, behind QEMU's own, unchanged,
 * virtio-9p-device.c and fsdev option parsing.
 *
 * qemu-dropin/build.sh copies this file and coro9p.h into hw/9pfs/ of
 * Debian's QEMU source and builds it in place of 9p.c, cofile.c & co.
 * (docs/qemu-dropin.md). What the device calls, and what this file does:
 *
 *   pdu_alloc / pdu_free / pdu_submit    coro9p_pdu_alloc / _free / _submit,
 *                                        QEMU's V9fsPDU slot i standing for
 *                                        coro9p's PDU i
 *   v9fs_device_realize_common           coro9p_new, the fd into the main loop
 *   v9fs_reset                           coro9p_reset
 *   v9fs_device_unrealize_common         coro9p_destroy
 *
 * and coro9p's callbacks go back through the device's V9fsTransport. The
 * fsdev drivers QEMU's option table names (local, synth, proxy) become
 * option checkers: coro9p parses the same -fsdev string itself.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/config-file.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "qemu/option.h"
#include "9p.h"
#include "virtio-9p.h"
#include "fsdev/qemu-fsdev.h"
#include "coro9p.h"

/* What a V9fsState holds of coro9p; in s->ctx.private, the slot QEMU keeps
 * for the fs driver this replaces. */
typedef struct Coro9pGlue {
    V9fsState *s;
    coro9p_server *srv;
    /* coro9p's PDU behind QEMU's s->pdus[i]. */
    coro9p_pdu *pdus[MAX_REQ];
    int fd;
    /* Set while unrealize destroys the server: the device has already
     * deleted its virtqueue, so requests still in flight end without
     * touching it. */
    bool gone;
} Coro9pGlue;

static Coro9pGlue *glue_of(V9fsState *s)
{
    return s->ctx.private;
}

/* QEMU's PDU for coro9p's, with the header fields the device reads. */
static V9fsPDU *qemu_pdu(coro9p_pdu *cp)
{
    Coro9pGlue *g = cp->opaque;
    V9fsPDU *pdu = &g->s->pdus[cp->idx];

    pdu->size = cp->size;
    pdu->tag = cp->tag;
    pdu->id = cp->id;
    return pdu;
}

/* QEMU's PDU for coro9p's, or NULL once the device is gone. */
static V9fsPDU *live_pdu(coro9p_pdu *cp)
{
    V9fsPDU *pdu = qemu_pdu(cp);

    return glue_of(pdu->s)->gone ? NULL : pdu;
}

/* ---- coro9p's callbacks, through the device's V9fsTransport ------------ */

static ssize_t glue_marshal(coro9p_pdu *cp, size_t offset, const void *buf, size_t len)
{
    V9fsPDU *pdu = live_pdu(cp);
    struct iovec *iov;
    unsigned int niov;

    if (!pdu) {
        return -ENOBUFS;
    }
    /* Asking for offset + len makes the device raise its own virtio_error
     * when the guest's buffers are too small. */
    pdu->s->transport->init_in_iov_from_pdu(pdu, &iov, &niov, offset + len);
    return iov_from_buf(iov, niov, offset, buf, len) == len ? len : -ENOBUFS;
}

static ssize_t glue_unmarshal(coro9p_pdu *cp, size_t offset, void *buf, size_t len)
{
    V9fsPDU *pdu = live_pdu(cp);
    struct iovec *iov;
    unsigned int niov;

    if (!pdu) {
        return -ENOBUFS;
    }
    pdu->s->transport->init_out_iov_from_pdu(pdu, &iov, &niov, offset + len);
    return iov_to_buf(iov, niov, offset, buf, len) == len ? len : -ENOBUFS;
}

static void glue_init_in_iov(coro9p_pdu *cp, struct iovec **piov, unsigned int *pniov,
                             size_t size)
{
    V9fsPDU *pdu = live_pdu(cp);

    if (!pdu) {
        *piov = NULL;
        *pniov = 0;
        return;
    }
    pdu->s->transport->init_in_iov_from_pdu(pdu, piov, pniov, size);
}

static void glue_init_out_iov(coro9p_pdu *cp, struct iovec **piov, unsigned int *pniov,
                              size_t size)
{
    V9fsPDU *pdu = live_pdu(cp);

    if (!pdu) {
        *piov = NULL;
        *pniov = 0;
        return;
    }
    pdu->s->transport->init_out_iov_from_pdu(pdu, piov, pniov, size);
}

static void glue_push_and_notify(coro9p_pdu *cp)
{
    V9fsPDU *pdu = qemu_pdu(cp);
    Coro9pGlue *g = glue_of(pdu->s);

    if (!g->gone) {
        pdu->s->transport->push_and_notify(pdu);
    }
    g->pdus[cp->idx] = NULL;
}

/* A request coro9p cannot decode breaks the device, as QEMU's own
 * unmarshalling failure does (virtio_pdu_vunmarshal). */
static void glue_transport_error(void *opaque, const char *msg)
{
    Coro9pGlue *g = opaque;
    V9fsVirtioState *v = container_of(g->s, V9fsVirtioState, state);

    if (g->gone) {
        return;
    }
    virtio_error(VIRTIO_DEVICE(v), "%s", msg);
}

/* QEMU 7.2's transport has neither msize_limit nor response_buffer_size;
 * coro9p then behaves as 7.2 does (no msize cap, the in_sg total). */
static const coro9p_transport glue_transport = {
    .pdu_marshal = glue_marshal,
    .pdu_unmarshal = glue_unmarshal,
    .init_in_iov_from_pdu = glue_init_in_iov,
    .init_out_iov_from_pdu = glue_init_out_iov,
    .push_and_notify = glue_push_and_notify,
    .transport_error = glue_transport_error,
};

/* The QEMU release whose client-visible behaviour coro9p matches. */
#if QEMU_VERSION_MAJOR < 8
#define GLUE_COMPAT CORO9P_COMPAT_7_2
#else
#define GLUE_COMPAT CORO9P_COMPAT_MASTER
#endif

/* ---- the -fsdev options, back into the string coro9p parses ------------ */

static int add_option(void *opaque, const char *name, const char *value, Error **errp)
{
    GString *spec = opaque;

    /* coro9p splits at every ','; QEMU's ",," escape is not understood. */
    if (strchr(value, ',')) {
        error_setg(errp, "coro9p: a ',' in the value of '%s' is not supported", name);
        return -1;
    }
    g_string_append_printf(spec, "%s%s=%s", spec->len ? "," : "", name, value);
    return 0;
}

/* "fsdriver=local,id=fsdev0,path=...": the options as given, which coro9p
 * checks as QEMU's drivers do (throttling is not among them). */
static char *fsdev_spec(QemuOpts *opts, Error **errp)
{
    g_autoptr(GString) spec = g_string_new("");

    if (qemu_opt_foreach(opts, add_option, spec, errp)) {
        return NULL;
    }
    return g_string_free(g_steal_pointer(&spec), false);
}

/* The drivers' parse_opts, run by qemu_fsdev_add for every -fsdev: coro9p
 * checks the options then, as QEMU's drivers do, so that a bad option
 * stops QEMU at its command line, before any device exists. */
static int glue_parse_opts(QemuOpts *opts, FsDriverEntry *fse, Error **errp)
{
    g_autofree char *spec = fsdev_spec(opts, errp);

    if (!spec) {
        return -1;
    }
    if (coro9p_check_fsdev(spec) < 0) {
        error_setg(errp, "%s", coro9p_last_error());
        return -1;
    }
    fse->path = g_strdup(qemu_opt_get(opts, "path"));
    return 0;
}

/* The names qemu-fsdev.c's driver table refers to. */
FileOperations local_ops = { .parse_opts = glue_parse_opts };
FileOperations synth_ops = { .parse_opts = glue_parse_opts };
FileOperations proxy_ops = { .parse_opts = glue_parse_opts };

/* ---- what the device calls --------------------------------------------- */

V9fsPDU *pdu_alloc(V9fsState *s)
{
    Coro9pGlue *g = glue_of(s);
    coro9p_pdu *cp = coro9p_pdu_alloc(g->srv);

    if (!cp) {
        return NULL;
    }
    g->pdus[cp->idx] = cp;
    return qemu_pdu(cp);
}

void pdu_free(V9fsPDU *pdu)
{
    Coro9pGlue *g = glue_of(pdu->s);
    coro9p_pdu *cp = g->pdus[pdu->idx];

    g->pdus[pdu->idx] = NULL;
    if (coro9p_pdu_free(g->srv, cp) < 0) {
        error_report("9pfs: %s", coro9p_last_error());
    }
}

void pdu_submit(V9fsPDU *pdu, P9MsgHeader *hdr)
{
    Coro9pGlue *g = glue_of(pdu->s);
    coro9p_pdu *cp = g->pdus[pdu->idx];

    QEMU_BUILD_BUG_ON(sizeof(*hdr) != sizeof(coro9p_msg_header));
    if (coro9p_pdu_submit(g->srv, cp, (const coro9p_msg_header *)hdr) < 0) {
        /* coro9p has freed its PDU; give the element back empty, as a
         * request discarded by Tflush is, so the guest is not left
         * waiting. Only a misuse of the ABI gets here. */
        error_report("9pfs: %s", coro9p_last_error());
        g->pdus[pdu->idx] = NULL;
        pdu->size = 0;
        pdu->s->transport->push_and_notify(pdu);
    }
}

/* Worker completions and coroutine wake-ups, on QEMU's main loop. */
static void glue_dispatch(void *opaque)
{
    Coro9pGlue *g = opaque;

    if (coro9p_dispatch(g->srv) < 0) {
        error_report("9pfs: %s", coro9p_last_error());
    }
}

int v9fs_device_realize_common(V9fsState *s, const V9fsTransport *t, Error **errp)
{
    FsDriverEntry *fse;
    QemuOpts *opts;
    g_autofree char *spec = NULL;
    Coro9pGlue *g;
    size_t len;
    int i;

    assert(!s->transport);
    s->transport = t;
    for (i = 0; i < MAX_REQ; i++) {
        s->pdus[i].s = s;
        s->pdus[i].idx = i;
    }

    /* QEMU's checks and sentences. */
    fse = get_fsdev_fsentry(s->fsconf.fsdev_id);
    if (!fse) {
        error_setg(errp, "9pfs device couldn't find fsdev with the id = %s",
                   s->fsconf.fsdev_id ? s->fsconf.fsdev_id : "NULL");
        return -1;
    }
    if (!s->fsconf.tag) {
        error_setg(errp, "fsdev with id %s needs mount_tag arguments", s->fsconf.fsdev_id);
        return -1;
    }
    len = strlen(s->fsconf.tag);
    if (len > MAX_TAG_LEN - 1) {
        error_setg(errp, "mount tag '%s' (%zu bytes) is longer than maximum (%d bytes)",
                   s->fsconf.tag, len, MAX_TAG_LEN - 1);
        return -1;
    }

    /* -fsdev and -virtfs both leave their options in the "fsdev" list. */
    opts = qemu_opts_find(qemu_find_opts("fsdev"), s->fsconf.fsdev_id);
    if (!opts) {
        error_setg(errp, "9pfs: the options of fsdev '%s' are gone", s->fsconf.fsdev_id);
        return -1;
    }
    spec = fsdev_spec(opts, errp);
    if (!spec) {
        return -1;
    }

    g = g_new0(Coro9pGlue, 1);
    g->s = s;
    if (coro9p_new(spec, GLUE_COMPAT, &glue_transport, g, &g->srv) < 0) {
        error_setg(errp, "cannot initialize fsdev '%s': %s", s->fsconf.fsdev_id,
                   coro9p_last_error());
        g_free(g);
        return -1;
    }
    g->fd = coro9p_poll_fd(g->srv);
    s->ctx.private = g;
    s->tag = g_strdup(s->fsconf.tag);
    s->ctx.fs_root = g_strdup(fse->path);
    s->ctx.export_flags = fse->export_flags;
    qemu_set_fd_handler(g->fd, glue_dispatch, NULL, g);
    return 0;
}

void v9fs_device_unrealize_common(V9fsState *s)
{
    Coro9pGlue *g = glue_of(s);

    if (g) {
        qemu_set_fd_handler(g->fd, NULL, NULL, NULL);
        /* virtio-9p-device.c unrealizes its queue before calling here; a
         * reset has normally drained every request already. */
        g->gone = true;
        if (coro9p_destroy(g->srv) < 0) {
            error_report("9pfs: %s", coro9p_last_error());
        }
        g_free(g);
        s->ctx.private = NULL;
    }
    g_free(s->tag);
    s->tag = NULL;
    g_free(s->ctx.fs_root);
    s->ctx.fs_root = NULL;
}

void v9fs_reset(V9fsState *s)
{
    Coro9pGlue *g = glue_of(s);

    if (g && coro9p_reset(g->srv) < 0) {
        error_report("9pfs: %s", coro9p_last_error());
    }
}

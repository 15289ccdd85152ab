/*
 * Prints the layout of every struct in coro9p.h, one "name value" per line,
 * for tests/ffi.rs to compare with the Rust definitions.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stddef.h>
#include <stdio.h>

#include "coro9p.h"

#define SIZE(t) printf("%s %zu\n", #t, sizeof(t))
#define FIELD(t, f) printf("%s.%s %zu\n", #t, #f, offsetof(t, f))

int main(void)
{
    SIZE(coro9p_pdu);
    FIELD(coro9p_pdu, size);
    FIELD(coro9p_pdu, tag);
    FIELD(coro9p_pdu, id);
    FIELD(coro9p_pdu, reserved);
    FIELD(coro9p_pdu, idx);
    FIELD(coro9p_pdu, s);
    FIELD(coro9p_pdu, opaque);

    SIZE(coro9p_msg_header);
    FIELD(coro9p_msg_header, size);
    FIELD(coro9p_msg_header, id);
    FIELD(coro9p_msg_header, tag);

    SIZE(coro9p_transport);
    FIELD(coro9p_transport, pdu_marshal);
    FIELD(coro9p_transport, pdu_unmarshal);
    FIELD(coro9p_transport, init_in_iov_from_pdu);
    FIELD(coro9p_transport, init_out_iov_from_pdu);
    FIELD(coro9p_transport, push_and_notify);
    FIELD(coro9p_transport, msize_limit);
    FIELD(coro9p_transport, response_buffer_size);
    FIELD(coro9p_transport, transport_error);

    SIZE(coro9p_stats);
    FIELD(coro9p_stats, active_requests);
    FIELD(coro9p_stats, fids);
    FIELD(coro9p_stats, msize);
    FIELD(coro9p_stats, dialect);
    FIELD(coro9p_stats, open_handles);
    FIELD(coro9p_stats, tasks);
    return 0;
}

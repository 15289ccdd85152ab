//! coro9p: a 9P2000.L and 9P2000.u file server that behaves like QEMU's
//! hw/9pfs and is built the way QEMU builds it.
//!
//! One main thread polls the transports and runs one stackful coroutine per
//! request; every blocking filesystem call hops to a worker pool and back.
//! The layout mirrors QEMU's (see `DESIGN.md` in the shared folder and
//! `docs/`): [`runtime`] is the coroutine machinery (util/qemu-coroutine*,
//! hw/9pfs/coth.c, util/thread-pool.c).

#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod co;
pub mod fsdev;
pub mod fuzzing;
pub mod protocol;
pub mod runtime;
pub mod sandbox;
pub mod server;
#[doc(hidden)]
pub mod testing;
pub mod trace_render;
pub mod transport;

/// Which QEMU's client-visible behaviour to match (`--compat`): master, or
/// 7.2 as Debian ships it. Security fixes stay on under both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compat {
    /// QEMU master (the default).
    #[default]
    Master,
    /// QEMU 7.2.
    V7_2,
}

/// How many worker hops a request takes (`--hops`): QEMU's count, one per
/// driver call (the default), or at most one per request (beyond QEMU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hops {
    /// One hop per driver call, as QEMU's co functions (the default).
    #[default]
    Qemu,
    /// All of a request's driver calls in one worker block, in QEMU's order
    /// and with QEMU's replies (QEMU's "reducing thread hops" roadmap item).
    Min,
}

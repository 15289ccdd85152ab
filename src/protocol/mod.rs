//! The 9P wire codec for 9P2000.L and 9P2000.u (QEMU's fsdev/9p-marshal.c
//! and 9p-iov-marshal.c).
//!
//! [`Msg`] holds any message; [`Msg::decode`] reads a body, [`Msg::frame`]
//! writes a whole frame. Decoding is bounds-checked: any byte string gives a
//! message or a [`DecodeError`], never a panic, and no allocation is sized by
//! a wire count that was not first checked against the bytes present.

mod errno;
mod messages;
mod wire;

pub use errno::{errno_to_dotl, strerror};
pub use messages::*;
pub use wire::{Data, DecodeError, Fid, List16, P9Str, Qid, Reader, Stat, Tag, Wire, Writer};

/// The negotiated protocol (QEMU's `proto_version`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// No Tversion yet (QEMU: 0). Errors go out as Rerror; Tlopen decodes
    /// with a 1-byte mode.
    #[default]
    Unset,
    /// "9P2000.u".
    U,
    /// "9P2000.L".
    L,
}

/// P9_MAXWELEM: most names in one Twalk.
pub const MAXWELEM: usize = 16;
/// P9_MIN_MSIZE.
pub const MIN_MSIZE: u32 = 4096;
/// P9_IOHDRSZ: the Rread/Twrite header allowance used for iounit and statfs.
pub const IOHDRSZ: u32 = 24;

/// Qid types.
pub mod qid_type {
    /// A directory.
    pub const DIR: u8 = 0x80;
    /// A symbolic link.
    pub const SYMLINK: u8 = 0x02;
    /// A plain file.
    pub const FILE: u8 = 0;
}

#[cfg(test)]
mod tests;

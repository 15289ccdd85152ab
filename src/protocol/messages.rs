//! Every message either dialect handles, from one table: type byte, name,
//! fields in wire order. The table generates the structs, the [`Msg`] enum,
//! the type constants, sizes, encode and decode.

use super::wire::{
    struct_wire, Data, DecodeError, Fid, List16, MinSize, P9Str, Qid, Reader, Stat, Tag, Wire,
    Writer,
};
use super::Dialect;

macro_rules! messages {
    ($( $id:literal $name:ident { $($field:ident : $ty:ty),* $(,)? } )*) => {
        $(
            #[doc = concat!("`", stringify!($name), "` (type ", stringify!($id), ").")]
            #[derive(Clone, Debug, Default, PartialEq, Eq)]
            #[allow(missing_docs)]
            pub struct $name { $( pub $field: $ty, )* }

            impl $name {
                /// The message type byte.
                pub const ID: u8 = $id;
            }

            impl Wire for $name {
                #[allow(unused_variables)]
                fn encode(&self, w: &mut Writer) {
                    $( self.$field.encode(w); )*
                }
                #[allow(unused_variables)]
                fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                    Ok($name { $( $field: <$ty>::decode(r)?, )* })
                }
                fn wire_size(&self) -> usize {
                    0 $( + self.$field.wire_size() )*
                }
            }

            impl From<$name> for Msg {
                fn from(m: $name) -> Msg {
                    Msg::$name(m)
                }
            }
        )*

        /// Any message of the table.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Msg {
            $( $name($name), )*
        }

        impl Msg {
            /// The message's own type byte.
            pub fn id(&self) -> u8 {
                match self {
                    $( Msg::$name(_) => $id, )*
                }
            }

            /// Appends the body (everything after the 7-byte header).
            pub fn encode_body(&self, w: &mut Writer) {
                match self {
                    $( Msg::$name(m) => m.encode(w), )*
                }
            }

            /// The body's size in bytes.
            pub fn body_size(&self) -> usize {
                match self {
                    $( Msg::$name(m) => m.wire_size(), )*
                }
            }

            fn decode_by_id(id: u8, r: &mut Reader<'_>) -> Result<Msg, DecodeError> {
                match id {
                    $( $id => Ok(Msg::$name($name::decode(r)?)), )*
                    _ => Err(DecodeError::UnknownId(id)),
                }
            }
        }

        /// The name of a message type ("Twalk"), if the table has it.
        pub fn message_name(id: u8) -> Option<&'static str> {
            match id {
                $( $id => Some(stringify!($name)), )*
                _ => None,
            }
        }
    };
}

messages! {
    7 Rlerror { ecode: u32 }
    8 Tstatfs { fid: Fid }
    9 Rstatfs {
        ty: u32, bsize: u32, blocks: u64, bfree: u64, bavail: u64, files: u64, ffree: u64,
        fsid: u64, namelen: u32,
    }
    12 Tlopen { fid: Fid, flags: u32 }
    13 Rlopen { qid: Qid, iounit: u32 }
    14 Tlcreate { fid: Fid, name: P9Str, flags: u32, mode: u32, gid: u32 }
    15 Rlcreate { qid: Qid, iounit: u32 }
    16 Tsymlink { fid: Fid, name: P9Str, symtgt: P9Str, gid: u32 }
    17 Rsymlink { qid: Qid }
    18 Tmknod { dfid: Fid, name: P9Str, mode: u32, major: u32, minor: u32, gid: u32 }
    19 Rmknod { qid: Qid }
    20 Trename { fid: Fid, dfid: Fid, name: P9Str }
    21 Rrename {}
    22 Treadlink { fid: Fid }
    23 Rreadlink { target: P9Str }
    24 Tgetattr { fid: Fid, request_mask: u64 }
    25 Rgetattr {
        valid: u64, qid: Qid, mode: u32, uid: u32, gid: u32, nlink: u64, rdev: u64, size: u64,
        blksize: u64, blocks: u64, atime_sec: u64, atime_nsec: u64, mtime_sec: u64,
        mtime_nsec: u64, ctime_sec: u64, ctime_nsec: u64, btime_sec: u64, btime_nsec: u64,
        gen: u64, data_version: u64,
    }
    26 Tsetattr {
        fid: Fid, valid: u32, mode: u32, uid: u32, gid: u32, size: u64, atime_sec: u64,
        atime_nsec: u64, mtime_sec: u64, mtime_nsec: u64,
    }
    27 Rsetattr {}
    30 Txattrwalk { fid: Fid, newfid: Fid, name: P9Str }
    31 Rxattrwalk { size: u64 }
    32 Txattrcreate { fid: Fid, name: P9Str, attr_size: u64, flags: u32 }
    33 Rxattrcreate {}
    40 Treaddir { fid: Fid, offset: u64, count: u32 }
    41 Rreaddir { data: Data }
    50 Tfsync { fid: Fid, datasync: u32 }
    51 Rfsync {}
    52 Tlock {
        fid: Fid, ty: u8, flags: u32, start: u64, length: u64, proc_id: u32, client_id: P9Str,
    }
    53 Rlock { status: u8 }
    54 Tgetlock { fid: Fid, ty: u8, start: u64, length: u64, proc_id: u32, client_id: P9Str }
    55 Rgetlock { ty: u8, start: u64, length: u64, proc_id: u32, client_id: P9Str }
    70 Tlink { dfid: Fid, fid: Fid, name: P9Str }
    71 Rlink {}
    72 Tmkdir { dfid: Fid, name: P9Str, mode: u32, gid: u32 }
    73 Rmkdir { qid: Qid }
    74 Trenameat { olddirfid: Fid, oldname: P9Str, newdirfid: Fid, newname: P9Str }
    75 Rrenameat {}
    76 Tunlinkat { dirfd: Fid, name: P9Str, flags: u32 }
    77 Runlinkat {}
    100 Tversion { msize: u32, version: P9Str }
    101 Rversion { msize: u32, version: P9Str }
    102 Tauth { afid: Fid, uname: P9Str, aname: P9Str, n_uname: u32 }
    103 Rauth { aqid: Qid }
    104 Tattach { fid: Fid, afid: Fid, uname: P9Str, aname: P9Str, n_uname: u32 }
    105 Rattach { qid: Qid }
    107 Rerror { ename: P9Str, errno: u32 }
    108 Tflush { oldtag: Tag }
    109 Rflush {}
    110 Twalk { fid: Fid, newfid: Fid, wnames: List16<P9Str> }
    111 Rwalk { wqids: List16<Qid> }
    112 Topen { fid: Fid, mode: u8 }
    113 Ropen { qid: Qid, iounit: u32 }
    114 Tcreate { fid: Fid, name: P9Str, perm: u32, mode: u8, extension: P9Str }
    115 Rcreate { qid: Qid, iounit: u32 }
    116 Tread { fid: Fid, offset: u64, count: u32 }
    117 Rread { data: Data }
    118 Twrite { fid: Fid, offset: u64, data: Data }
    119 Rwrite { count: u32 }
    120 Tclunk { fid: Fid }
    121 Rclunk {}
    122 Tremove { fid: Fid }
    123 Rremove {}
    124 Tstat { fid: Fid }
    125 Rstat { size: u16, stat: Stat }
    126 Twstat { fid: Fid, size: u16, stat: Stat }
    127 Rwstat {}
}

/// The 7-byte header, `size[4] type[1] tag[2]`.
pub const HEADER_SIZE: usize = 7;

/// A frame's header, read from its first 7 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The size field: the whole frame, header included (never trusted by
    /// QEMU beyond framing).
    pub size: u32,
    /// The message type.
    pub id: u8,
    /// The request's tag.
    pub tag: Tag,
}

impl Header {
    /// Reads a header from the start of `frame`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Short`] if `frame` has fewer than 7 bytes.
    pub fn decode(frame: &[u8]) -> Result<Header, DecodeError> {
        let mut r = Reader::new(frame);
        Ok(Header {
            size: u32::decode(&mut r)?,
            id: u8::decode(&mut r)?,
            tag: Tag::decode(&mut r)?,
        })
    }
}

impl Msg {
    /// Decodes a body (the bytes after the header) of message type `id`.
    ///
    /// Tlopen (12) and Topen (112) are one handler in QEMU, which decodes by
    /// the negotiated dialect, not by the type byte: `fid[4] flags[4]` in a
    /// 9P2000.L session, `fid[4] mode[1]` otherwise (before Tversion too).
    /// Bytes after the last field are ignored, as QEMU ignores them.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Short`] for a truncated body; [`DecodeError::UnknownId`]
    /// for a type the table does not have.
    pub fn decode(id: u8, body: &[u8], dialect: Dialect) -> Result<Msg, DecodeError> {
        let mut r = Reader::new(body);
        match id {
            Tlopen::ID | Topen::ID if dialect == Dialect::L => {
                Ok(Msg::Tlopen(Tlopen::decode(&mut r)?))
            }
            Tlopen::ID | Topen::ID => Ok(Msg::Topen(Topen::decode(&mut r)?)),
            _ => Msg::decode_by_id(id, &mut r),
        }
    }

    /// The whole frame for this message with its own type byte.
    pub fn frame(&self, tag: Tag) -> Vec<u8> {
        self.frame_as(self.id(), tag)
    }

    /// The whole frame with type byte `id`: a reply's type is the request's
    /// plus one, which for Topen decoded as Tlopen is not the body's own.
    pub fn frame_as(&self, id: u8, tag: Tag) -> Vec<u8> {
        let size = HEADER_SIZE + self.body_size();
        let mut w = Writer {
            buf: Vec::with_capacity(size),
        };
        (size as u32).encode(&mut w);
        id.encode(&mut w);
        tag.encode(&mut w);
        self.encode_body(&mut w);
        w.buf
    }

    /// The message name ("Twalk").
    pub fn name(&self) -> &'static str {
        message_name(self.id()).unwrap_or("?")
    }
}

/// One Rreaddir entry: `qid[13] offset[8] type[1] name[s]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's qid.
    pub qid: Qid,
    /// The cookie to pass as Treaddir's offset to continue after this entry.
    pub offset: u64,
    /// The host's d_type (DT_*), or 0.
    pub ty: u8,
    /// The entry's name.
    pub name: P9Str,
}

struct_wire!(DirEntry {
    qid,
    offset,
    ty,
    name
});

impl MinSize for DirEntry {
    const MIN: usize = 24;
}

impl DirEntry {
    /// Decodes the entries of an Rreaddir's data.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Short`] if the data ends inside an entry.
    pub fn decode_all(data: &[u8]) -> Result<Vec<DirEntry>, DecodeError> {
        let mut r = Reader::new(data);
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.push(DirEntry::decode(&mut r)?);
        }
        Ok(out)
    }
}

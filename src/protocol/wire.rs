//! The 9P wire primitives: little-endian integers, `s` strings, qids, the
//! 9P2000.u stat, counted lists and data, read from a bounds-checked cursor.
//!
//! Decoding never panics and never allocates more than the frame holds: a
//! count read from the wire is checked against the bytes left before any
//! allocation it sizes.

use std::fmt;

/// Why a frame could not be decoded. QEMU's unmarshal reports all of these as
/// `-ENOBUFS` and breaks the device (`virtio_error`); a socket transport
/// closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A field needs more bytes than the frame has left.
    Short {
        /// Offset in the body where the field starts.
        at: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        left: usize,
    },
    /// No message has this type byte.
    UnknownId(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { at, needed, left } => write!(
                f,
                "message too short: a field at body offset {at} needs {needed} bytes, {left} left"
            ),
            DecodeError::UnknownId(id) => write!(f, "no 9P message has type {id}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over a message body.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Short {
                at: self.pos,
                needed: n,
                left: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Checks that `count` items of at least `min_size` bytes each can still
    /// be in the frame, before allocating for them.
    fn check_count(&self, count: usize, min_size: usize) -> Result<(), DecodeError> {
        let needed = count.saturating_mul(min_size);
        if needed > self.remaining() {
            return Err(DecodeError::Short {
                at: self.pos,
                needed,
                left: self.remaining(),
            });
        }
        Ok(())
    }
}

/// Appends wire encodings to a buffer.
#[derive(Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Appends raw bytes.
    pub fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

/// A value with a 9P wire form.
pub trait Wire: Sized {
    /// Appends the encoding.
    fn encode(&self, w: &mut Writer);
    /// Reads one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    /// The encoded size in bytes.
    fn wire_size(&self) -> usize;
}

macro_rules! uint_wire {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn encode(&self, w: &mut Writer) {
                w.put(&self.to_le_bytes());
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
            fn wire_size(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        }
    )*};
}
uint_wire!(u8, u16, u32, u64);

/// A fid number (`fid[4]`): the client's handle on a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fid(pub u32);

impl Fid {
    /// P9_NOFID: "no fid" (Tattach's afid, Trename's dfid meaning "same dir").
    pub const NOFID: Fid = Fid(u32::MAX);
}

/// A tag (`tag[2]`): the client's handle on a request in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u16);

impl Tag {
    /// P9_NOTAG, used by Tversion.
    pub const NOTAG: Tag = Tag(u16::MAX);
}

macro_rules! newtype_wire {
    ($($name:ident($t:ty)),*) => {$(
        impl Wire for $name {
            fn encode(&self, w: &mut Writer) {
                self.0.encode(w);
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($name(<$t>::decode(r)?))
            }
            fn wire_size(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        }
    )*};
}
newtype_wire!(Fid(u32), Tag(u16));

/// A 9P string (`s`): `len[2]` then the bytes, which need not be UTF-8 and
/// may hold a NUL. Longer than 65535 bytes cannot be encoded; QEMU cuts both
/// length and bytes to `len mod 65536` there, and so does [`P9Str::encode`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct P9Str(pub Vec<u8>);

impl P9Str {
    /// The bytes up to the first NUL: what QEMU's C code sees as the name.
    pub fn c_str(&self) -> &[u8] {
        match self.0.iter().position(|&b| b == 0) {
            Some(n) => &self.0[..n],
            None => &self.0,
        }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for P9Str {
    fn from(s: &str) -> P9Str {
        P9Str(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for P9Str {
    fn from(s: &[u8]) -> P9Str {
        P9Str(s.to_vec())
    }
}

impl fmt::Debug for P9Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl Wire for P9Str {
    fn encode(&self, w: &mut Writer) {
        let len = (self.0.len() % 65536) as u16;
        len.encode(w);
        w.put(&self.0[..len as usize]);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = u16::decode(r)? as usize;
        Ok(P9Str(r.bytes(len)?.to_vec()))
    }
    fn wire_size(&self) -> usize {
        2 + self.0.len() % 65536
    }
}

/// A qid: `type[1] version[4] path[8]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Qid {
    /// QTDIR 0x80, QTSYMLINK 0x02, or 0.
    pub ty: u8,
    /// Changes when the file changes.
    pub version: u32,
    /// Unique per file on the export.
    pub path: u64,
}

impl Wire for Qid {
    fn encode(&self, w: &mut Writer) {
        self.ty.encode(w);
        self.version.encode(w);
        self.path.encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Qid {
            ty: u8::decode(r)?,
            version: u32::decode(r)?,
            path: u64::decode(r)?,
        })
    }
    fn wire_size(&self) -> usize {
        13
    }
}

/// The 9P2000.u stat record, `size[2]` first. `size` is kept as sent; use
/// [`Stat::fit_size`] to compute it for a reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Stat {
    pub size: u16,
    pub ty: u16,
    pub dev: u32,
    pub qid: Qid,
    pub mode: u32,
    pub atime: u32,
    pub mtime: u32,
    pub length: u64,
    pub name: P9Str,
    pub uid: P9Str,
    pub gid: P9Str,
    pub muid: P9Str,
    pub extension: P9Str,
    pub n_uid: u32,
    pub n_gid: u32,
    pub n_muid: u32,
}

impl Stat {
    /// Sets `size` to the record's length without its own size field
    /// (61 + the string lengths), as QEMU does.
    pub fn fit_size(mut self) -> Stat {
        self.size = (self.wire_size() - 2) as u16;
        self
    }
}

macro_rules! struct_wire {
    ($name:ident { $($field:ident),* }) => {
        impl Wire for $name {
            fn encode(&self, w: &mut Writer) {
                $( self.$field.encode(w); )*
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($name { $( $field: Wire::decode(r)? ),* })
            }
            fn wire_size(&self) -> usize {
                0 $( + self.$field.wire_size() )*
            }
        }
    };
}
pub(crate) use struct_wire;

struct_wire!(Stat {
    size,
    ty,
    dev,
    qid,
    mode,
    atime,
    mtime,
    length,
    name,
    uid,
    gid,
    muid,
    extension,
    n_uid,
    n_gid,
    n_muid
});

/// A list with a `count[2]` prefix (wnames, wqids).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List16<T>(pub Vec<T>);

/// The smallest wire size of one list element, to bound allocations.
pub trait MinSize {
    /// Bytes at least.
    const MIN: usize;
}
impl MinSize for Qid {
    const MIN: usize = 13;
}
impl MinSize for P9Str {
    const MIN: usize = 2;
}

impl<T: Wire + MinSize> Wire for List16<T> {
    fn encode(&self, w: &mut Writer) {
        (self.0.len() as u16).encode(w);
        for item in &self.0 {
            item.encode(w);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = u16::decode(r)? as usize;
        r.check_count(count, T::MIN)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(T::decode(r)?);
        }
        Ok(List16(items))
    }
    fn wire_size(&self) -> usize {
        2 + self.0.iter().map(Wire::wire_size).sum::<usize>()
    }
}

/// Bytes with a `count[4]` prefix (Tread/Rread/Twrite/Rreaddir data).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Data(pub Vec<u8>);

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Data({} bytes)", self.0.len())
    }
}

impl Wire for Data {
    fn encode(&self, w: &mut Writer) {
        (self.0.len() as u32).encode(w);
        w.put(&self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = u32::decode(r)? as usize;
        Ok(Data(r.bytes(count)?.to_vec()))
    }
    fn wire_size(&self) -> usize {
        4 + self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_little_endian() {
        let mut w = Writer::new();
        0x0102u16.encode(&mut w);
        0x03040506u32.encode(&mut w);
        0x0708090a0b0c0d0eu64.encode(&mut w);
        assert_eq!(w.buf, [2, 1, 6, 5, 4, 3, 0xe, 0xd, 0xc, 0xb, 0xa, 9, 8, 7]);
    }

    #[test]
    fn short_input_is_an_error_with_its_place() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(u16::decode(&mut r), Ok(0x0201));
        assert_eq!(
            u32::decode(&mut r),
            Err(DecodeError::Short {
                at: 2,
                needed: 4,
                left: 1
            })
        );
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        // 65535 qids announced, 3 bytes present.
        let mut r = Reader::new(&[0xff, 0xff, 0, 0, 0]);
        assert!(List16::<Qid>::decode(&mut r).is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(Data::decode(&mut r).is_err());
    }

    #[test]
    fn strings_are_bytes_and_c_names_stop_at_nul() {
        let s = P9Str(b"a\0b\xff".to_vec());
        let mut w = Writer::new();
        s.encode(&mut w);
        assert_eq!(w.buf, [4, 0, b'a', 0, b'b', 0xff]);
        assert_eq!(P9Str::decode(&mut Reader::new(&w.buf)), Ok(s.clone()));
        assert_eq!(s.c_str(), b"a");
    }

    #[test]
    fn an_overlong_string_is_cut_to_len_mod_65536_as_qemu_does() {
        let s = P9Str(vec![b'x'; 65536 + 3]);
        let mut w = Writer::new();
        s.encode(&mut w);
        assert_eq!(w.buf, [3, 0, b'x', b'x', b'x']);
        assert_eq!(s.wire_size(), 5);
    }

    #[test]
    fn stat_size_is_61_plus_string_lengths() {
        let st = Stat {
            name: "file".into(),
            extension: "HARDLINKCOUNT 1".into(),
            ..Stat::default()
        }
        .fit_size();
        assert_eq!(st.size, 61 + 4 + 15);
        let mut w = Writer::new();
        st.encode(&mut w);
        assert_eq!(w.buf.len(), st.size as usize + 2);
    }
}

//! The client's own 9P marshalling: a few lines of little-endian writes and
//! reads, independent of coro9p's codec so that one bug cannot hide on both
//! sides (QEMU's libqos does the same with its own helpers).

/// A request or reply body being built.
#[derive(Default, Clone)]
pub struct Out(pub Vec<u8>);

impl Out {
    /// An empty body.
    pub fn new() -> Out {
        Out::default()
    }
    /// `b`: a byte.
    pub fn b(mut self, v: u8) -> Out {
        self.0.push(v);
        self
    }
    /// `w`: 16 bits.
    pub fn w(mut self, v: u16) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// `d`: 32 bits.
    pub fn d(mut self, v: u32) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// `q`: 64 bits.
    pub fn q(mut self, v: u64) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// `s`: a string with a 16-bit length.
    pub fn s(mut self, v: &[u8]) -> Out {
        self = self.w(v.len() as u16);
        self.0.extend_from_slice(v);
        self
    }
    /// Raw bytes.
    pub fn raw(mut self, v: &[u8]) -> Out {
        self.0.extend_from_slice(v);
        self
    }
}

/// A qid as 13 raw bytes.
pub type Qid = [u8; 13];

/// Reads a reply body; every read checks the bounds.
pub struct In<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> In<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> In<'a> {
        In { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!(
                "reply too short: {n} bytes wanted at offset {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    /// A byte.
    pub fn b(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    /// 16 bits.
    pub fn w(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    /// 32 bits.
    pub fn d(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    /// 64 bits.
    pub fn q(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A string.
    pub fn s(&mut self) -> Result<Vec<u8>, String> {
        let n = self.w()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// A qid.
    pub fn qid(&mut self) -> Result<Qid, String> {
        Ok(self.take(13)?.try_into().unwrap())
    }
    /// `n` raw bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], String> {
        self.take(n)
    }
    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// A frame: `size[4] id[1] tag[2]` and the body.
pub fn frame(id: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Out::new().d(7 + body.len() as u32).b(id).w(tag).0;
    v.extend_from_slice(body);
    v
}

/// Message types (P9_*).
#[allow(missing_docs)]
pub mod id {
    pub const RLERROR: u8 = 7;
    pub const TLOPEN: u8 = 12;
    pub const TLCREATE: u8 = 14;
    pub const TSYMLINK: u8 = 16;
    pub const TGETATTR: u8 = 24;
    pub const TSETATTR: u8 = 26;
    pub const TXATTRCREATE: u8 = 32;
    pub const TREADDIR: u8 = 40;
    pub const TLINK: u8 = 70;
    pub const TMKDIR: u8 = 72;
    pub const TUNLINKAT: u8 = 76;
    pub const TVERSION: u8 = 100;
    pub const TATTACH: u8 = 104;
    pub const TFLUSH: u8 = 108;
    pub const TWALK: u8 = 110;
    pub const TREAD: u8 = 116;
    pub const TWRITE: u8 = 118;
    pub const TCLUNK: u8 = 120;
}

/// P9_NOTAG.
pub const NOTAG: u16 = 0xffff;
/// P9_NOFID.
pub const NOFID: u32 = 0xffff_ffff;
/// P9_MAXWELEM.
pub const MAXWELEM: usize = 16;
/// P9_GETATTR_BASIC.
pub const GETATTR_BASIC: u64 = 0x7ff;
/// P9_SETATTR_SIZE.
pub const SETATTR_SIZE: u32 = 0x8;
/// P9_DOTL_AT_REMOVEDIR.
pub const AT_REMOVEDIR: u32 = 0x200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_little_endian_with_the_size_first() {
        assert_eq!(frame(108, 1, &[0, 0]), [9, 0, 0, 0, 108, 1, 0, 0, 0]);
        let body = Out::new().d(8192).s(b"9P2000.L").0;
        let mut r = In::new(&body);
        assert_eq!(r.d().unwrap(), 8192);
        assert_eq!(r.s().unwrap(), b"9P2000.L");
        assert!(r.b().is_err());
    }
}

//! The 9P test client, shaped like QEMU's libqos virtio-9p-client: one
//! helper per T-message, tags 0 unless given (Tversion: NOTAG), new fids
//! from `genfid()` counting up from 1000 for the whole run.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::transport::{hex, rlerror, ReqHandle, Transport};
use crate::wire::{frame, id, In, Out, Qid, GETATTR_BASIC, NOFID, NOTAG};

/// Why a step failed: an Rlerror the case did not expect, or anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// The server answered Rlerror with this errno.
    Rlerror(u32),
    /// Anything else (wrong reply type, tag, size, a timeout ...).
    Other(String),
    /// The case does not apply here (reported as SKIP, not FAIL).
    Skip(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Other(s)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Rlerror(e) => write!(f, "unexpected Rlerror {e}"),
            Fail::Other(s) | Fail::Skip(s) => f.write_str(s),
        }
    }
}

/// A step's result.
pub type Step<T> = Result<T, Fail>;

static GENFID: AtomicU32 = AtomicU32::new(1000);

/// A new fid number: 1000, 1001, ... never reset (as libqos' `genfid`).
pub fn genfid() -> u32 {
    GENFID.fetch_add(1, Ordering::Relaxed)
}

/// A request sent and not yet received.
pub struct Req {
    handle: ReqHandle,
    tag: u16,
    id: u8,
}

impl Req {
    /// The transport's handle for it.
    pub fn handle(&self) -> ReqHandle {
        self.handle
    }
}

/// The client: a transport and the largest message size (P9_MAX_SIZE).
pub struct Client<'t> {
    t: &'t mut dyn Transport,
    /// P9_MAX_SIZE: 32768 (QEMU master) or 4096 (7.2).
    pub max_size: u32,
}

/// Rgetattr, as the cases use it.
pub struct Attr {
    /// The qid.
    pub qid: Qid,
    /// st_size.
    pub size: u64,
}

/// One Rreaddir entry.
pub struct Dirent {
    /// The qid.
    pub qid: Qid,
    /// The offset to continue after it.
    pub offset: u64,
    /// d_type.
    pub ty: u8,
    /// The name.
    pub name: Vec<u8>,
}

impl<'t> Client<'t> {
    /// A client on `t`.
    pub fn new(t: &'t mut dyn Transport, max_size: u32) -> Client<'t> {
        Client { t, max_size }
    }

    /// The transport (for config reads).
    pub fn transport(&mut self) -> &mut dyn Transport {
        self.t
    }

    /// `v9fs_req_init` + `v9fs_req_send`: the request must fit P9_MAX_SIZE.
    pub fn send(&mut self, id: u8, tag: u16, body: Out) -> Step<Req> {
        let f = frame(id, tag, &body.0);
        if f.len() > self.max_size as usize {
            return Err(Fail::Other(format!(
                "request of {} bytes exceeds P9_MAX_SIZE {}",
                f.len(),
                self.max_size
            )));
        }
        let handle = self.t.send(&f)?;
        Ok(Req { handle, tag, id })
    }

    /// Sends a frame whose size field is given as is (qos-test's Tflush
    /// declares 2 body bytes but writes 4: only the first 2 are sent).
    pub fn send_raw(&mut self, id: u8, tag: u16, body: &[u8]) -> Step<Req> {
        let handle = self.t.send(&frame(id, tag, body))?;
        Ok(Req { handle, tag, id })
    }

    /// `v9fs_req_wait_for_reply`: the next completion must be this
    /// request's; `None` is a completion of length 0.
    pub fn wait(&mut self, req: &Req) -> Step<Option<Vec<u8>>> {
        Ok(self.t.wait(req.handle)?)
    }

    /// `v9fs_req_recv`: checks size, tag and type, returns the body.
    pub fn check(&self, req: &Req, reply: &[u8], want: u8) -> Step<Vec<u8>> {
        if reply.len() < 7 || reply.len() > self.max_size as usize {
            return Err(Fail::Other(format!("reply size {}", reply.len())));
        }
        let tag = u16::from_le_bytes([reply[5], reply[6]]);
        if tag != req.tag {
            return Err(Fail::Other(format!(
                "reply tag {tag}, request tag {}",
                req.tag
            )));
        }
        if reply[4] != want {
            if let Some(e) = rlerror(reply) {
                return Err(Fail::Rlerror(e));
            }
            return Err(Fail::Other(format!(
                "reply type {}, expected {want}: {}",
                reply[4],
                hex(reply)
            )));
        }
        Ok(reply[7..].to_vec())
    }

    /// Waits for `req` and checks it is a reply of its type + 1.
    pub fn recv(&mut self, req: &Req) -> Step<Vec<u8>> {
        let reply = self
            .wait(req)?
            .ok_or_else(|| Fail::Other("completed with length 0".into()))?;
        self.check(req, &reply, req.id + 1)
    }

    /// Sends and receives.
    pub fn rpc(&mut self, id: u8, tag: u16, body: Out) -> Step<Vec<u8>> {
        let req = self.send(id, tag, body)?;
        self.recv(&req)
    }

    /// Tversion with msize P9_MAX_SIZE and "9P2000.L"; checks the echo.
    pub fn tversion(&mut self) -> Step<()> {
        let req = self.send(
            id::TVERSION,
            NOTAG,
            Out::new().d(self.max_size).s(b"9P2000.L"),
        )?;
        let body = self.recv(&req)?;
        let mut r = In::new(&body);
        let msize = r.d()?;
        let version = r.s()?;
        if msize != self.max_size || version != b"9P2000.L" {
            return Err(Fail::Other(format!(
                "Rversion msize {msize} version {:?}",
                String::from_utf8_lossy(&version)
            )));
        }
        Ok(())
    }

    /// Tversion then Tattach(fid, afid NOFID, "", "", n_uname): the root qid.
    pub fn tattach(&mut self, fid: u32, n_uname: u32) -> Step<Qid> {
        self.tversion()?;
        let body = self.rpc(
            id::TATTACH,
            0,
            Out::new().d(fid).d(NOFID).s(b"").s(b"").d(n_uname),
        )?;
        Ok(In::new(&body).qid()?)
    }

    /// Twalk; the qids of the reply.
    pub fn twalk(&mut self, fid: u32, newfid: u32, names: &[&[u8]]) -> Step<Vec<Qid>> {
        let mut body = Out::new().d(fid).d(newfid).w(names.len() as u16);
        for n in names {
            body = body.s(n);
        }
        let reply = self.rpc(id::TWALK, 0, body)?;
        let mut r = In::new(&reply);
        let n = r.w()?;
        (0..n).map(|_| Ok(r.qid()?)).collect()
    }

    /// Twalk along a '/'-separated path (empty parts dropped, so "/" is no
    /// names) to a new fid; returns the fid.
    pub fn twalk_path(&mut self, fid: u32, path: &str) -> Step<u32> {
        let newfid = genfid();
        let names: Vec<&[u8]> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::as_bytes)
            .collect();
        self.twalk(fid, newfid, &names)?;
        Ok(newfid)
    }

    /// Tgetattr.
    pub fn tgetattr(&mut self, fid: u32, mask: u64) -> Step<Attr> {
        let body = self.rpc(id::TGETATTR, 0, Out::new().d(fid).q(mask))?;
        let mut r = In::new(&body);
        let _valid = r.q()?;
        let qid = r.qid()?;
        let _mode = r.d()?;
        let _uid = r.d()?;
        let _gid = r.d()?;
        let _nlink = r.q()?;
        let _rdev = r.q()?;
        let size = r.q()?;
        Ok(Attr { qid, size })
    }

    /// Tgetattr with P9_GETATTR_BASIC.
    pub fn getattr(&mut self, fid: u32) -> Step<Attr> {
        self.tgetattr(fid, GETATTR_BASIC)
    }

    /// Tlopen; (qid, iounit).
    pub fn tlopen(&mut self, fid: u32, flags: u32) -> Step<(Qid, u32)> {
        let body = self.rpc(id::TLOPEN, 0, Out::new().d(fid).d(flags))?;
        let mut r = In::new(&body);
        Ok((r.qid()?, r.d()?))
    }

    /// Twrite; the count written.
    pub fn twrite(&mut self, fid: u32, offset: u64, data: &[u8]) -> Step<u32> {
        let body = self.rpc(
            id::TWRITE,
            0,
            Out::new().d(fid).q(offset).d(data.len() as u32).raw(data),
        )?;
        Ok(In::new(&body).d()?)
    }

    /// Tread; the data.
    pub fn tread(&mut self, fid: u32, offset: u64, count: u32) -> Step<Vec<u8>> {
        let body = self.rpc(id::TREAD, 0, Out::new().d(fid).q(offset).d(count))?;
        let mut r = In::new(&body);
        let n = r.d()? as usize;
        Ok(r.raw(n)?.to_vec())
    }

    /// Treaddir; (count, entries).
    pub fn treaddir(&mut self, fid: u32, offset: u64, count: u32) -> Step<(u32, Vec<Dirent>)> {
        let body = self.rpc(id::TREADDIR, 0, Out::new().d(fid).q(offset).d(count))?;
        let mut r = In::new(&body);
        let n = r.d()?;
        let mut out = Vec::new();
        while r.left() >= 24 {
            out.push(Dirent {
                qid: r.qid()?,
                offset: r.q()?,
                ty: r.b()?,
                name: r.s()?,
            });
        }
        Ok((n, out))
    }

    /// Tmkdir; the qid.
    pub fn tmkdir(&mut self, dfid: u32, name: &str, mode: u32, gid: u32) -> Step<Qid> {
        let body = self.rpc(
            id::TMKDIR,
            0,
            Out::new().d(dfid).s(name.as_bytes()).d(mode).d(gid),
        )?;
        Ok(In::new(&body).qid()?)
    }

    /// Tlcreate; (qid, iounit).
    pub fn tlcreate(&mut self, fid: u32, name: &str, flags: u32, mode: u32) -> Step<(Qid, u32)> {
        let body = self.rpc(
            id::TLCREATE,
            0,
            Out::new().d(fid).s(name.as_bytes()).d(flags).d(mode).d(0),
        )?;
        let mut r = In::new(&body);
        Ok((r.qid()?, r.d()?))
    }

    /// Tsymlink; the qid.
    pub fn tsymlink(&mut self, fid: u32, name: &str, target: &str) -> Step<Qid> {
        let body = self.rpc(
            id::TSYMLINK,
            0,
            Out::new()
                .d(fid)
                .s(name.as_bytes())
                .s(target.as_bytes())
                .d(0),
        )?;
        Ok(In::new(&body).qid()?)
    }

    /// Tlink.
    pub fn tlink(&mut self, dfid: u32, fid: u32, name: &str) -> Step<()> {
        self.rpc(id::TLINK, 0, Out::new().d(dfid).d(fid).s(name.as_bytes()))?;
        Ok(())
    }

    /// Tunlinkat.
    pub fn tunlinkat(&mut self, dirfd: u32, name: &str, flags: u32) -> Step<()> {
        self.rpc(
            id::TUNLINKAT,
            0,
            Out::new().d(dirfd).s(name.as_bytes()).d(flags),
        )?;
        Ok(())
    }

    /// Tsetattr with only `valid` and `size` meaningful (as the cases use it).
    pub fn tsetattr_size(&mut self, fid: u32, size: u64) -> Step<()> {
        let body = Out::new()
            .d(fid)
            .d(crate::wire::SETATTR_SIZE)
            .d(0)
            .d(0)
            .d(0)
            .q(size)
            .q(0)
            .q(0)
            .q(0)
            .q(0);
        self.rpc(id::TSETATTR, 0, body)?;
        Ok(())
    }

    /// Tclunk.
    pub fn tclunk(&mut self, fid: u32) -> Step<()> {
        self.rpc(id::TCLUNK, 0, Out::new().d(fid))?;
        Ok(())
    }

    /// Txattrcreate.
    pub fn txattrcreate(&mut self, fid: u32, name: &str, size: u64, flags: u32) -> Step<()> {
        self.rpc(
            id::TXATTRCREATE,
            0,
            Out::new().d(fid).s(name.as_bytes()).q(size).d(flags),
        )?;
        Ok(())
    }
}

/// Expects a step to fail with Rlerror `errno`.
pub fn expect_err<T>(r: Step<T>, errno: u32) -> Step<()> {
    match r {
        Err(Fail::Rlerror(e)) if e == errno => Ok(()),
        Err(Fail::Rlerror(e)) => Err(Fail::Other(format!("Rlerror {e}, expected {errno}"))),
        Err(f) => Err(f),
        Ok(_) => Err(Fail::Other(format!("success, expected Rlerror {errno}"))),
    }
}

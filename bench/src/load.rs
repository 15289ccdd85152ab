//! The workloads as per-slot state machines, and the engine that keeps M
//! requests in flight on each of N connections (one thread per connection,
//! tag = slot number).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::layout;
use crate::p9::{self, oflags, Conn, Out, Rd, Reply};

/// The workloads of the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Meta,
    StatTree,
    Read4k,
    SeqRead,
    SeqWrite,
    Readdir,
    Create,
}

pub const ALL: [Workload; 7] = [
    Workload::Meta,
    Workload::StatTree,
    Workload::Read4k,
    Workload::SeqRead,
    Workload::SeqWrite,
    Workload::Readdir,
    Workload::Create,
];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Meta => "meta",
            Workload::StatTree => "stat-tree",
            Workload::Read4k => "read4k",
            Workload::SeqRead => "seqread",
            Workload::SeqWrite => "seqwrite",
            Workload::Readdir => "readdir",
            Workload::Create => "create",
        }
    }

    pub fn parse(s: &str) -> Result<Workload, String> {
        ALL.iter().copied().find(|w| w.name() == s).ok_or_else(|| {
            let names: Vec<_> = ALL.iter().map(|w| w.name()).collect();
            format!("unknown workload '{s}' (one of {})", names.join(", "))
        })
    }

    /// What one "op" is, for the reports.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Meta => "walk+getattr+clunk",
            Workload::StatTree => "file (walk+getattr+clunk; readdir included)",
            Workload::Read4k => "4 KiB Tread",
            Workload::SeqRead => "1 MiB Tread",
            Workload::SeqWrite => "1 MiB Twrite",
            Workload::Readdir => "whole 10,000-entry listing",
            Workload::Create => "walk+lcreate+clunk+unlinkat",
        }
    }

    /// The default requests in flight per connection.
    pub fn default_inflight(self) -> usize {
        match self {
            Workload::SeqRead | Workload::SeqWrite | Workload::Readdir => 4,
            _ => 32,
        }
    }

    /// The msize asked for: above 1 MiB for the sequential workloads (so a
    /// 1 MiB request fits), else 256 KiB (what `make run` suggests).
    pub fn default_msize(self) -> u32 {
        match self {
            Workload::SeqRead | Workload::SeqWrite => (1 << 20) + 4096,
            _ => 256 * 1024,
        }
    }
}

/// A small fast PRNG (xorshift64*), seeded per connection.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What `begin` did.
pub enum Began {
    Sent,
    /// Nothing to do until another slot finishes (a phase barrier).
    Idle,
}

/// What a reply led to.
pub enum Step {
    /// The slot queued its next request.
    More,
    /// The slot's operation is complete (`ops` 0: bookkeeping, not timed).
    Done { ops: u32, bytes: u64 },
}

/// A workload on one connection.
pub trait Load: Send {
    /// Synchronous setup before the clock starts (fids walked and opened).
    fn setup(&mut self, c: &mut Conn, slots: usize) -> Result<(), String>;
    /// Queues the first request of a new operation on `slot` (tag = slot).
    fn begin(&mut self, slot: usize, out: &mut Out) -> Began;
    /// Handles the reply to `slot`'s outstanding request.
    fn reply(&mut self, slot: usize, r: &Reply, out: &mut Out) -> Result<Step, String>;
}

// Fid numbering: 0 is the attach root; per-connection fids below 100;
// per-slot fids at 100 + 4 * slot + k; stat-tree's directories at 10_000 + d.
fn slot_fid(slot: usize, k: u32) -> u32 {
    100 + 4 * slot as u32 + k
}
const CONN_FID: u32 = 1;
const DIR_FID: u32 = 10_000;

fn tag(slot: usize) -> u16 {
    slot as u16
}

fn walk_ok(r: &Reply, n: usize) -> Result<(), String> {
    let nwqid = r.expect(p9::TWALK)?.u16() as usize;
    if nwqid != n {
        return Err(format!("Twalk walked {nwqid} of {n} names"));
    }
    Ok(())
}

/// Walks `names` from the root to `fid` (synchronously).
fn walk(c: &mut Conn, fid: u32, names: &[&str]) -> Result<(), String> {
    c.out.twalk(0, 0, fid, names);
    let body = c.call_ok(p9::TWALK)?;
    if Rd(&body).u16() as usize != names.len() {
        return Err(format!("cannot walk to {}", names.join("/")));
    }
    Ok(())
}

fn file_size(c: &mut Conn, fid: u32) -> Result<u64, String> {
    c.out.tgetattr(0, fid, p9::GETATTR_BASIC);
    let body = c.call_ok(p9::TGETATTR)?;
    // valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8]
    let mut r = Rd(&body);
    r.bytes(49);
    Ok(r.u64())
}

/// Parses Rreaddir's entries: calls `f(name)` for each, returns the last
/// offset.
fn dirents(data: &[u8], mut f: impl FnMut(&[u8])) -> u64 {
    let mut r = Rd(data);
    let mut last = 0;
    while r.rest().len() >= 24 {
        r.bytes(13);
        last = r.u64();
        r.u8();
        f(r.str());
    }
    last
}

fn rreaddir<'a>(r: &Reply<'a>) -> Result<&'a [u8], String> {
    let mut rd = r.expect(p9::TREADDIR)?;
    let n = rd.u32() as usize;
    Ok(rd.bytes(n))
}

/// `meta`: walk + getattr + clunk on a random file of the 10,000-file tree.
struct Meta {
    rng: Rng,
    stage: Vec<u8>,
}

impl Load for Meta {
    fn setup(&mut self, _c: &mut Conn, slots: usize) -> Result<(), String> {
        self.stage = vec![0; slots];
        Ok(())
    }
    fn begin(&mut self, slot: usize, out: &mut Out) -> Began {
        let i = self.rng.below(layout::TREE_FILES as u64) as usize;
        let (d, f) = layout::tree_file(i);
        out.twalk(tag(slot), 0, slot_fid(slot, 0), &[layout::TREE, &d, &f]);
        self.stage[slot] = 0;
        Began::Sent
    }
    fn reply(&mut self, slot: usize, r: &Reply, out: &mut Out) -> Result<Step, String> {
        let fid = slot_fid(slot, 0);
        let st = &mut self.stage[slot];
        *st += 1;
        match *st {
            1 => {
                walk_ok(r, 3)?;
                out.tgetattr(tag(slot), fid, p9::GETATTR_BASIC);
            }
            2 => {
                r.expect(p9::TGETATTR)?;
                out.tclunk(tag(slot), fid);
            }
            _ => {
                r.expect(p9::TCLUNK)?;
                return Ok(Step::Done { ops: 1, bytes: 0 });
            }
        }
        Ok(Step::More)
    }
}

/// `stat-tree`: each pass lists the tree's 100 directories (walk, lopen,
/// readdir until empty, clunk), then walks to, getattrs and clunks each of
/// the 10,000 files found, walking one name from its directory's fid.
struct StatTree {
    listing: bool,
    to_list: Vec<usize>,
    to_stat: Vec<(u16, String)>,
    next_stat: usize,
    outstanding: usize,
    readdir_count: u32,
    slots: Vec<TreeSlot>,
}

#[derive(Clone, Default)]
struct TreeSlot {
    stage: u8,
    dir: u16,
    offset: u64,
    bytes: u64,
}

impl StatTree {
    fn new_pass(&mut self) {
        self.listing = true;
        self.to_list = (0..layout::TREE_DIRS).rev().collect();
        self.to_stat.clear();
        self.next_stat = 0;
    }
}

impl Load for StatTree {
    fn setup(&mut self, c: &mut Conn, slots: usize) -> Result<(), String> {
        for d in 0..layout::TREE_DIRS {
            walk(c, DIR_FID + d as u32, &[layout::TREE, &layout::tree_dir(d)])?;
        }
        self.readdir_count = c.msize - p9::IOHDRSZ;
        self.slots = vec![TreeSlot::default(); slots];
        self.new_pass();
        Ok(())
    }
    fn begin(&mut self, slot: usize, out: &mut Out) -> Began {
        loop {
            if self.listing {
                if let Some(d) = self.to_list.pop() {
                    self.outstanding += 1;
                    self.slots[slot] = TreeSlot {
                        stage: 0,
                        dir: d as u16,
                        offset: 0,
                        bytes: 0,
                    };
                    out.twalk(tag(slot), DIR_FID + d as u32, slot_fid(slot, 0), &[]);
                    return Began::Sent;
                }
                if self.outstanding > 0 {
                    return Began::Idle;
                }
                self.listing = false;
            } else {
                if let Some((d, name)) = self.to_stat.get(self.next_stat) {
                    self.next_stat += 1;
                    self.outstanding += 1;
                    self.slots[slot].stage = 10;
                    out.twalk(tag(slot), DIR_FID + *d as u32, slot_fid(slot, 1), &[name]);
                    return Began::Sent;
                }
                if self.outstanding > 0 {
                    return Began::Idle;
                }
                self.new_pass();
            }
        }
    }
    fn reply(&mut self, slot: usize, r: &Reply, out: &mut Out) -> Result<Step, String> {
        let t = tag(slot);
        let s = &mut self.slots[slot];
        s.stage += 1;
        match s.stage {
            1 => {
                walk_ok(r, 0)?;
                out.tlopen(t, slot_fid(slot, 0), oflags::RDONLY | oflags::DIRECTORY);
            }
            2 => {
                r.expect(p9::TLOPEN)?;
                out.treaddir(t, slot_fid(slot, 0), 0, self.readdir_count);
            }
            3 => {
                let data = rreaddir(r)?;
                if data.is_empty() {
                    out.tclunk(t, slot_fid(slot, 0));
                } else {
                    s.stage = 2;
                    s.bytes += data.len() as u64;
                    let dir = s.dir;
                    let to_stat = &mut self.to_stat;
                    s.offset = dirents(data, |name| {
                        if name != b"." && name != b".." {
                            to_stat.push((dir, String::from_utf8_lossy(name).into_owned()));
                        }
                    });
                    out.treaddir(t, slot_fid(slot, 0), s.offset, self.readdir_count);
                }
            }
            4 => {
                r.expect(p9::TCLUNK)?;
                self.outstanding -= 1;
                return Ok(Step::Done {
                    ops: 0,
                    bytes: s.bytes,
                });
            }
            11 => {
                walk_ok(r, 1)?;
                out.tgetattr(t, slot_fid(slot, 1), p9::GETATTR_BASIC);
            }
            12 => {
                r.expect(p9::TGETATTR)?;
                out.tclunk(t, slot_fid(slot, 1));
            }
            _ => {
                r.expect(p9::TCLUNK)?;
                self.outstanding -= 1;
                return Ok(Step::Done { ops: 1, bytes: 0 });
            }
        }
        Ok(Step::More)
    }
}

/// `read4k` and `seqread`: Tread on a fid per slot opened on the big file,
/// at random 4 KiB-aligned offsets or sequentially (a shared cursor).
struct Read {
    rng: Rng,
    random: bool,
    chunk: u32,
    size: u64,
    next: u64,
}

impl Load for Read {
    fn setup(&mut self, c: &mut Conn, slots: usize) -> Result<(), String> {
        for s in 0..slots {
            let fid = slot_fid(s, 0);
            walk(c, fid, &[layout::BIG])?;
            if s == 0 {
                self.size = file_size(c, fid)?;
            }
            c.out.tlopen(0, fid, oflags::RDONLY);
            c.call_ok(p9::TLOPEN)?;
        }
        self.chunk = self.chunk.min(c.msize - p9::IOHDRSZ);
        if self.size < self.chunk as u64 {
            return Err(format!("{} is smaller than one read", layout::BIG));
        }
        // Connections start at different places of the file.
        self.next = self.rng.below(self.size / self.chunk as u64) * self.chunk as u64;
        Ok(())
    }
    fn begin(&mut self, slot: usize, out: &mut Out) -> Began {
        let off = if self.random {
            self.rng.below((self.size - self.chunk as u64) / 4096 + 1) * 4096
        } else {
            let o = self.next;
            self.next += self.chunk as u64;
            if self.next + self.chunk as u64 > self.size {
                self.next = 0;
            }
            o
        };
        out.tread(tag(slot), slot_fid(slot, 0), off, self.chunk);
        Began::Sent
    }
    fn reply(&mut self, _slot: usize, r: &Reply, _out: &mut Out) -> Result<Step, String> {
        let n = r.expect(p9::TREAD)?.u32();
        if n == 0 {
            return Err("Tread returned no data inside the file".into());
        }
        Ok(Step::Done {
            ops: 1,
            bytes: n as u64,
        })
    }
}

/// seqwrite's data per Twrite: 1 MiB less 4 KiB, so that the whole Twrite
/// frame stays within 1 MiB. coro9p's socket transport buffers at most
/// 1 MiB of an incoming frame (`READ_AHEAD` in src/transport/socket.rs), so
/// a Twrite frame above 1 MiB never completes and the connection stalls
/// (`--chunk 1048576` shows it).
pub const SEQWRITE_CHUNK: u32 = (1 << 20) - 4096;

/// `seqwrite`: 1 MiB Twrites, sequential, on one file per connection
/// (created empty; offsets wrap at 256 MiB).
struct SeqWrite {
    conn: usize,
    chunk: u32,
    next: u64,
}

impl Load for SeqWrite {
    fn setup(&mut self, c: &mut Conn, _slots: usize) -> Result<(), String> {
        walk(c, CONN_FID, &[layout::WR])?;
        let name = format!("c{}", self.conn);
        c.out.tlcreate(
            0,
            CONN_FID,
            &name,
            oflags::RDWR | oflags::CREAT | oflags::TRUNC,
            0o644,
            0,
        );
        c.call_ok(p9::TLCREATE)?;
        self.chunk = self.chunk.min(c.msize - p9::IOHDRSZ);
        Ok(())
    }
    fn begin(&mut self, slot: usize, out: &mut Out) -> Began {
        let off = self.next;
        self.next += self.chunk as u64;
        if self.next + self.chunk as u64 > layout::WRITE_WRAP {
            self.next = 0;
        }
        out.twrite(tag(slot), CONN_FID, off, self.chunk);
        Began::Sent
    }
    fn reply(&mut self, _slot: usize, r: &Reply, _out: &mut Out) -> Result<Step, String> {
        let n = r.expect(p9::TWRITE)?.u32();
        if n == 0 {
            return Err("Twrite wrote nothing".into());
        }
        Ok(Step::Done {
            ops: 1,
            bytes: n as u64,
        })
    }
}

/// `readdir`: clone-walk the directory, lopen it, Treaddir until an empty
/// reply, clunk; one op per complete listing.
struct Readdir {
    count: u32,
    slots: Vec<(u8, u64, u64, usize)>,
}

impl Load for Readdir {
    fn setup(&mut self, c: &mut Conn, slots: usize) -> Result<(), String> {
        for s in 0..slots {
            walk(c, slot_fid(s, 0), &[layout::DIR10K])?;
        }
        self.count = c.msize - p9::IOHDRSZ;
        self.slots = vec![(0, 0, 0, 0); slots];
        Ok(())
    }
    fn begin(&mut self, slot: usize, out: &mut Out) -> Began {
        self.slots[slot] = (0, 0, 0, 0);
        out.twalk(tag(slot), slot_fid(slot, 0), slot_fid(slot, 1), &[]);
        Began::Sent
    }
    fn reply(&mut self, slot: usize, r: &Reply, out: &mut Out) -> Result<Step, String> {
        let t = tag(slot);
        let fid = slot_fid(slot, 1);
        let (stage, offset, bytes, entries) = &mut self.slots[slot];
        *stage += 1;
        match *stage {
            1 => {
                walk_ok(r, 0)?;
                out.tlopen(t, fid, oflags::RDONLY | oflags::DIRECTORY);
            }
            2 => {
                r.expect(p9::TLOPEN)?;
                out.treaddir(t, fid, 0, self.count);
            }
            3 => {
                let data = rreaddir(r)?;
                if data.is_empty() {
                    if *entries < layout::DIR10K_ENTRIES {
                        return Err(format!("the listing returned only {entries} entries"));
                    }
                    out.tclunk(t, fid);
                } else {
                    *stage = 2;
                    *bytes += data.len() as u64;
                    *offset = dirents(data, |_| *entries += 1);
                    out.treaddir(t, fid, *offset, self.count);
                }
            }
            _ => {
                r.expect(p9::TCLUNK)?;
                return Ok(Step::Done {
                    ops: 1,
                    bytes: *bytes,
                });
            }
        }
        Ok(Step::More)
    }
}

/// `create`: clone-walk the directory, lcreate a new file, clunk it,
/// unlinkat it. A server without Tunlinkat (diod answers EOPNOTSUPP) gets
/// what Linux's v9fs falls back to: walk to the file and Tremove it.
struct Create {
    /// Differs between runs, so that names left by a failed run do not clash.
    nonce: u64,
    conn: usize,
    seq: u64,
    use_remove: bool,
    slots: Vec<(u8, String)>,
}

impl Create {
    fn walk_to_remove(&mut self, slot: usize, out: &mut Out) {
        let (stage, name) = &mut self.slots[slot];
        *stage = 10;
        out.twalk(tag(slot), CONN_FID, slot_fid(slot, 0), &[name]);
    }
}

impl Load for Create {
    fn setup(&mut self, c: &mut Conn, slots: usize) -> Result<(), String> {
        walk(c, CONN_FID, &[layout::CREATE])?;
        self.slots = vec![(0, String::new()); slots];
        Ok(())
    }
    fn begin(&mut self, slot: usize, out: &mut Out) -> Began {
        self.seq += 1;
        self.slots[slot] = (
            0,
            format!("n{}-{}-{}-{}", self.nonce, self.conn, slot, self.seq),
        );
        out.twalk(tag(slot), CONN_FID, slot_fid(slot, 0), &[]);
        Began::Sent
    }
    fn reply(&mut self, slot: usize, r: &Reply, out: &mut Out) -> Result<Step, String> {
        let t = tag(slot);
        let fid = slot_fid(slot, 0);
        let (stage, name) = &mut self.slots[slot];
        *stage += 1;
        match *stage {
            1 => {
                walk_ok(r, 0)?;
                let fl = oflags::RDWR | oflags::CREAT | oflags::EXCL;
                out.tlcreate(t, fid, name, fl, 0o644, 0);
            }
            2 => {
                r.expect(p9::TLCREATE)?;
                out.tclunk(t, fid);
            }
            3 => {
                r.expect(p9::TCLUNK)?;
                if self.use_remove {
                    self.walk_to_remove(slot, out);
                } else {
                    out.tunlinkat(t, CONN_FID, name, 0);
                }
            }
            4 if r.errno() == Some(libc::EOPNOTSUPP as u32) => {
                self.use_remove = true;
                self.walk_to_remove(slot, out);
            }
            4 => {
                r.expect(p9::TUNLINKAT)?;
                return Ok(Step::Done { ops: 1, bytes: 0 });
            }
            11 => {
                walk_ok(r, 1)?;
                out.tremove(t, fid);
            }
            _ => {
                r.expect(p9::TREMOVE)?;
                return Ok(Step::Done { ops: 1, bytes: 0 });
            }
        }
        Ok(Step::More)
    }
}

fn make_load(w: Workload, conn: usize, chunk: Option<u32>) -> Box<dyn Load> {
    let rng = Rng::new(0x5eed + conn as u64 * 7919);
    match w {
        Workload::Meta => Box::new(Meta { rng, stage: vec![] }),
        Workload::StatTree => Box::new(StatTree {
            listing: true,
            to_list: vec![],
            to_stat: vec![],
            next_stat: 0,
            outstanding: 0,
            readdir_count: 0,
            slots: vec![],
        }),
        Workload::Read4k => Box::new(Read {
            rng,
            random: true,
            chunk: chunk.unwrap_or(4096),
            size: 0,
            next: 0,
        }),
        Workload::SeqRead => Box::new(Read {
            rng,
            random: false,
            chunk: chunk.unwrap_or(1 << 20),
            size: 0,
            next: 0,
        }),
        Workload::SeqWrite => Box::new(SeqWrite {
            conn,
            chunk: chunk.unwrap_or(SEQWRITE_CHUNK),
            next: 0,
        }),
        Workload::Readdir => Box::new(Readdir {
            count: 0,
            slots: vec![],
        }),
        Workload::Create => Box::new(Create {
            nonce: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            conn,
            seq: 0,
            use_remove: false,
            slots: vec![],
        }),
    }
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct Spec {
    pub workload: Workload,
    pub addr: String,
    pub aname: String,
    pub conns: usize,
    pub inflight: usize,
    pub secs: f64,
    pub msize: u32,
    /// Bytes per request of read4k/seqread/seqwrite (default 4 KiB, 1 MiB,
    /// and 1 MiB less 4 KiB); capped by msize - 24.
    pub chunk: Option<u32>,
}

/// One run's figures (also what the direct loop reports).
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub ops: u64,
    pub reqs: u64,
    pub bytes: u64,
    pub secs: f64,
    /// Operation latencies, sorted, in nanoseconds.
    pub lat_ns: Vec<u64>,
    /// The msize the server agreed to (0 for the direct loop).
    pub msize: u32,
}

impl Figures {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_ns.len() - 1) as f64 * p).round() as usize;
        self.lat_ns[i] as f64 / 1000.0
    }
}

struct ConnOut {
    ops: u64,
    reqs: u64,
    bytes: u64,
    last: Instant,
    end: Instant,
    lat: Vec<u64>,
    msize: u32,
}

/// Keeps `inflight` operations going on `c` until `deadline`, then drains.
fn drive(
    c: &mut Conn,
    load: &mut dyn Load,
    inflight: usize,
    start: Instant,
    deadline: Instant,
) -> Result<ConnOut, String> {
    let mut o = ConnOut {
        ops: 0,
        reqs: 0,
        bytes: 0,
        last: start,
        end: start,
        lat: Vec::with_capacity(1 << 16),
        msize: c.msize,
    };
    let mut op_start = vec![start; inflight];
    let mut active = vec![false; inflight];
    let mut idle: Vec<usize> = Vec::new();
    let mut n_active = 0;
    for (s, on) in active.iter_mut().enumerate() {
        match load.begin(s, &mut c.out) {
            Began::Sent => {
                *on = true;
                n_active += 1;
                o.reqs += 1;
            }
            Began::Idle => idle.push(s),
        }
    }
    let mut stopping = false;
    while n_active > 0 {
        c.flush().map_err(|e| format!("send: {e}"))?;
        c.fill().map_err(|e| format!("receive: {e}"))?;
        let now = Instant::now();
        stopping |= now >= deadline;
        while let Some(f) = c.inbox.next_frame() {
            let r = c.inbox.reply(f);
            let slot = r.tag as usize;
            if slot >= inflight || !active[slot] {
                return Err(format!("reply with unexpected tag {}", r.tag));
            }
            match load.reply(slot, &r, &mut c.out)? {
                Step::More => o.reqs += 1,
                Step::Done { ops, bytes } => {
                    o.bytes += bytes;
                    if ops > 0 {
                        o.ops += ops as u64;
                        o.lat.push((now - op_start[slot]).as_nanos() as u64);
                        o.last = now;
                    }
                    active[slot] = false;
                    n_active -= 1;
                    if stopping {
                        continue;
                    }
                    match load.begin(slot, &mut c.out) {
                        Began::Sent => {
                            op_start[slot] = now;
                            active[slot] = true;
                            n_active += 1;
                            o.reqs += 1;
                        }
                        Began::Idle => idle.push(slot),
                    }
                }
            }
        }
        if !stopping && !idle.is_empty() {
            let waiting = std::mem::take(&mut idle);
            for s in waiting {
                match load.begin(s, &mut c.out) {
                    Began::Sent => {
                        op_start[s] = now;
                        active[s] = true;
                        n_active += 1;
                        o.reqs += 1;
                    }
                    Began::Idle => idle.push(s),
                }
            }
        }
    }
    o.end = Instant::now();
    Ok(o)
}

/// Runs `spec`: N connections, set up first, then timed together.
pub fn run(spec: &Spec, payload: &'static [u8]) -> Result<Figures, String> {
    let barrier = Arc::new(Barrier::new(spec.conns + 1));
    let start_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let handles: Vec<_> = (0..spec.conns)
        .map(|i| {
            let spec = spec.clone();
            let barrier = Arc::clone(&barrier);
            let start_at = Arc::clone(&start_at);
            thread::spawn(move || -> Result<ConnOut, String> {
                let setup = (|| {
                    let mut c = Conn::open(&spec.addr, spec.msize, &spec.aname, payload)?;
                    let mut load = make_load(spec.workload, i, spec.chunk);
                    load.setup(&mut c, spec.inflight)?;
                    Ok::<_, String>((c, load))
                })();
                barrier.wait();
                barrier.wait();
                let (mut c, mut load) = setup?;
                let start = start_at.lock().unwrap().expect("start time");
                let deadline = start + Duration::from_secs_f64(spec.secs);
                drive(&mut c, load.as_mut(), spec.inflight, start, deadline)
            })
        })
        .collect();
    barrier.wait();
    *start_at.lock().unwrap() = Some(Instant::now());
    let start = start_at.lock().unwrap().unwrap();
    barrier.wait();
    let mut f = Figures::default();
    let mut last = start;
    let mut err = None;
    for h in handles {
        match h
            .join()
            .map_err(|_| "a connection thread panicked".to_string())
        {
            Ok(Ok(o)) => {
                f.ops += o.ops;
                f.reqs += o.reqs;
                f.bytes += o.bytes;
                f.lat_ns.extend_from_slice(&o.lat);
                f.msize = o.msize;
                // Until the last timed op ends (the drain after the deadline
                // is not counted), or until the end if none was timed.
                last = last.max(if o.ops > 0 { o.last } else { o.end });
            }
            Ok(Err(e)) | Err(e) => err = err.or(Some(e)),
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    f.secs = (last - start).as_secs_f64().max(1e-9);
    f.lat_ns.sort_unstable();
    Ok(f)
}

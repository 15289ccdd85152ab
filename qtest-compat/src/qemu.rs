//! The QEMU target: the real QEMU binary under its qtest protocol, with a
//! virtio-pci (legacy) driver for virtio-9p-pci written here, as libqos
//! drives it in QEMU's own qos-test.
//!
//! QEMU runs with `-accel qtest` (the module Debian leaves out is built by
//! `scripts/build-qtest-accel.sh`; its directory goes in QEMU_MODULE_DIR) so
//! that the synth driver creates its test fixtures. The guest CPU never
//! runs: this driver writes the virtqueue and the request buffers straight
//! into guest memory and kicks the device, then polls the used ring,
//! stepping the virtual clock, as libqos' `qvirtio_wait_used_elem` does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::transport::{hex, ReqHandle, Transport};

/// PCI device 4, function 0 (`addr=04.0`).
const DEVFN: u32 = 4 << 3;
/// Where the legacy I/O BAR is placed (libqos starts its I/O space there).
const IO_BASE: u16 = 0xc000;
/// Guest-physical address of the virtqueue (page aligned).
const VRING: u64 = 0x10000;
/// Guest-physical address of the request/reply buffer slots.
const BUFS: u64 = 0x100000;
/// Buffer slots, each a request and a reply buffer of up to 64 KiB.
const SLOTS: u64 = 16;
const SLOT_SIZE: u64 = 2 * 0x10000;

// Legacy virtio-pci registers (offsets in the I/O BAR).
const VIRTIO_PCI_HOST_FEATURES: u16 = 0;
const VIRTIO_PCI_GUEST_FEATURES: u16 = 4;
const VIRTIO_PCI_QUEUE_PFN: u16 = 8;
const VIRTIO_PCI_QUEUE_NUM: u16 = 12;
const VIRTIO_PCI_QUEUE_SEL: u16 = 14;
const VIRTIO_PCI_QUEUE_NOTIFY: u16 = 16;
const VIRTIO_PCI_STATUS: u16 = 18;
const VIRTIO_PCI_ISR: u16 = 19;
/// Device config without MSI-X.
const VIRTIO_PCI_CONFIG: u16 = 20;

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

/// The qtest text protocol over QEMU's `-qtest` socket.
struct Qtest {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qtest {
    fn cmd(&mut self, line: &str) -> Result<String, String> {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("qtest: {e}"))?;
        loop {
            let mut resp = String::new();
            let n = self
                .r
                .read_line(&mut resp)
                .map_err(|e| format!("qtest: {e}"))?;
            if n == 0 {
                return Err("qtest: QEMU closed the connection".into());
            }
            let resp = resp.trim_end();
            // Asynchronous events (IRQ lines) are not for us.
            if resp.starts_with("IRQ") {
                continue;
            }
            return match resp.strip_prefix("OK") {
                Some(rest) => Ok(rest.trim().to_string()),
                None => Err(format!("qtest: '{line}' -> '{resp}'")),
            };
        }
    }

    fn value(&mut self, line: &str) -> Result<u64, String> {
        let v = self.cmd(line)?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16)
            .map_err(|_| format!("qtest: '{line}' gave '{v}'"))
    }

    fn outb(&mut self, port: u16, v: u8) -> Result<(), String> {
        self.cmd(&format!("outb 0x{port:x} 0x{v:x}")).map(drop)
    }
    fn outw(&mut self, port: u16, v: u16) -> Result<(), String> {
        self.cmd(&format!("outw 0x{port:x} 0x{v:x}")).map(drop)
    }
    fn outl(&mut self, port: u16, v: u32) -> Result<(), String> {
        self.cmd(&format!("outl 0x{port:x} 0x{v:x}")).map(drop)
    }
    fn inb(&mut self, port: u16) -> Result<u8, String> {
        Ok(self.value(&format!("inb 0x{port:x}"))? as u8)
    }
    fn inw(&mut self, port: u16) -> Result<u16, String> {
        Ok(self.value(&format!("inw 0x{port:x}"))? as u16)
    }
    fn inl(&mut self, port: u16) -> Result<u32, String> {
        Ok(self.value(&format!("inl 0x{port:x}"))? as u32)
    }
    fn readw(&mut self, addr: u64) -> Result<u16, String> {
        Ok(self.value(&format!("readw 0x{addr:x}"))? as u16)
    }
    fn writew(&mut self, addr: u64, v: u16) -> Result<(), String> {
        self.cmd(&format!("writew 0x{addr:x} 0x{v:x}")).map(drop)
    }
    fn memread(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let v = self.cmd(&format!("read 0x{addr:x} 0x{len:x}"))?;
        let v = v.trim_start_matches("0x");
        (0..len)
            .map(|i| {
                u8::from_str_radix(v.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                    .map_err(|_| "qtest: bad read data".to_string())
            })
            .collect()
    }
    fn memwrite(&mut self, addr: u64, data: &[u8]) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        let hexdata: String = data.iter().map(|b| format!("{b:02x}")).collect();
        self.cmd(&format!("write 0x{addr:x} 0x{:x} 0x{hexdata}", data.len()))
            .map(drop)
    }
    fn clock_step(&mut self) -> Result<(), String> {
        self.cmd("clock_step 100").map(drop)
    }

    fn pci_addr(off: u8) -> u32 {
        0x8000_0000 | (DEVFN << 8) | (off as u32 & !3)
    }
    fn pci_read32(&mut self, off: u8) -> Result<u32, String> {
        self.outl(0xcf8, Self::pci_addr(off))?;
        self.inl(0xcfc)
    }
    fn pci_write32(&mut self, off: u8, v: u32) -> Result<(), String> {
        self.outl(0xcf8, Self::pci_addr(off))?;
        self.outl(0xcfc, v)
    }
    fn pci_read16(&mut self, off: u8) -> Result<u16, String> {
        self.outl(0xcf8, Self::pci_addr(off))?;
        self.inw(0xcfc + (off as u16 & 2))
    }
    fn pci_write16(&mut self, off: u8, v: u16) -> Result<(), String> {
        self.outl(0xcf8, Self::pci_addr(off))?;
        self.outw(0xcfc + (off as u16 & 2), v)
    }
}

/// QEMU's monitor (QMP), for `system_reset`.
struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    fn execute(&mut self, cmd: &str) -> Result<(), String> {
        self.w
            .write_all(format!("{{\"execute\": \"{cmd}\"}}\n").as_bytes())
            .map_err(|e| format!("qmp: {e}"))?;
        loop {
            let mut line = String::new();
            if self
                .r
                .read_line(&mut line)
                .map_err(|e| format!("qmp: {e}"))?
                == 0
            {
                return Err("qmp: QEMU closed the monitor".into());
            }
            if line.contains("\"return\"") {
                return Ok(());
            }
            if line.contains("\"error\"") {
                return Err(format!("qmp: {cmd}: {}", line.trim()));
            }
            // Events (RESET, ...) come in between.
        }
    }
}

/// One request's place in the ring and in guest memory.
struct Slot {
    head: u16,
    reply_addr: u64,
}

/// A QEMU process with one virtio-9p-pci device, driven over qtest.
pub struct QemuTransport {
    child: Child,
    qt: Qtest,
    qmp: Qmp,
    dir: PathBuf,
    qsize: u16,
    avail_idx: u16,
    last_used: u16,
    sent: u64,
    slots: std::collections::HashMap<ReqHandle, Slot>,
    /// Requests whose reply was read without waiting: their used elements
    /// are skipped when they show up.
    read_early: Vec<u16>,
    max_size: u32,
    verbose: bool,
}

/// How to start QEMU for the qtest target.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The qemu-system-x86_64 binary.
    pub binary: PathBuf,
    /// The directory holding accel-qtest-x86_64.so (QEMU_MODULE_DIR).
    pub module_dir: Option<PathBuf>,
}

impl QemuTransport {
    /// Starts QEMU with `-fsdev FSDEV -device virtio-9p-pci,...` and
    /// initialises the device.
    ///
    /// # Errors
    ///
    /// QEMU cannot start or the device does not answer as expected.
    pub fn start(
        cfg: &QemuConfig,
        fsdev: &str,
        max_size: u32,
        verbose: bool,
    ) -> Result<QemuTransport, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("qtest-compat-qemu-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let qtest_path = dir.join("qtest.sock");
        let qmp_path = dir.join("qmp.sock");
        let qtest_l = UnixListener::bind(&qtest_path).map_err(|e| e.to_string())?;
        let qmp_l = UnixListener::bind(&qmp_path).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("qemu.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&cfg.binary);
        cmd.args([
            "-machine",
            "pc",
            "-accel",
            "qtest",
            "-display",
            "none",
            "-nodefaults",
        ])
        .arg("-qtest")
        .arg(format!("unix:{}", qtest_path.display()))
        .args(["-qtest-log", "/dev/null", "-chardev"])
        .arg(format!("socket,path={},id=char0", qmp_path.display()))
        .args([
            "-mon",
            "chardev=char0,mode=control",
            "-fsdev",
            fsdev,
            "-device",
        ])
        .arg("virtio-9p-pci,fsdev=fsdev0,addr=04.0,mount_tag=qtest")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        if let Some(m) = &cfg.module_dir {
            cmd.env("QEMU_MODULE_DIR", m);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cfg.binary.display()))?;
        let accept = |l: &UnixListener, child: &mut Child| -> Result<UnixStream, String> {
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).map_err(|e| e.to_string())?;
                        return Ok(s);
                    }
                    Err(_) if Instant::now() < deadline => {
                        if let Ok(Some(st)) = child.try_wait() {
                            return Err(format!("QEMU exited ({st})"));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(format!("QEMU did not connect: {e}")),
                }
            }
        };
        let started = accept(&qtest_l, &mut child).and_then(|qt| {
            let qm = accept(&qmp_l, &mut child)?;
            Ok((qt, qm))
        });
        let (qt, qm) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("{e}: {}", log.trim()));
            }
        };
        qt.set_read_timeout(Some(Duration::from_secs(30))).ok();
        qm.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut t = QemuTransport {
            child,
            qt: Qtest {
                r: BufReader::new(qt.try_clone().map_err(|e| e.to_string())?),
                w: qt,
            },
            qmp: Qmp {
                r: BufReader::new(qm.try_clone().map_err(|e| e.to_string())?),
                w: qm,
            },
            dir,
            qsize: 0,
            avail_idx: 0,
            last_used: 0,
            sent: 0,
            slots: std::collections::HashMap::new(),
            read_early: Vec::new(),
            max_size,
            verbose,
        };
        // QMP greeting, then capabilities negotiation.
        let mut greeting = String::new();
        t.qmp
            .r
            .read_line(&mut greeting)
            .map_err(|e| format!("qmp: {e}"))?;
        t.qmp.execute("qmp_capabilities")?;
        t.init_device()?;
        Ok(t)
    }

    /// PCI set-up and the legacy virtio handshake, as libqos does it.
    fn init_device(&mut self) -> Result<(), String> {
        let q = &mut self.qt;
        let id = q.pci_read32(0)?;
        if id != 0x1009_1af4 {
            return Err(format!("no virtio-9p-pci at 04.0 (id {id:#x})"));
        }
        q.pci_write32(0x10, 0xffff_ffff)?;
        let bar = q.pci_read32(0x10)?;
        if bar & 1 == 0 {
            return Err("BAR0 is not an I/O BAR".into());
        }
        q.pci_write32(0x10, IO_BASE as u32 | 1)?;
        let cmd = q.pci_read16(0x04)?;
        q.pci_write16(0x04, cmd | 0x1 | 0x4)?;
        let io = IO_BASE;
        q.outb(io + VIRTIO_PCI_STATUS, 0)?;
        q.outb(io + VIRTIO_PCI_STATUS, 1)?;
        q.outb(io + VIRTIO_PCI_STATUS, 1 | 2)?;
        let host = q.inl(io + VIRTIO_PCI_HOST_FEATURES)?;
        // Without indirect descriptors, event idx and the bad-feature bit.
        let guest = host & !((1 << 28) | (1 << 29) | (1 << 30));
        q.outl(io + VIRTIO_PCI_GUEST_FEATURES, guest)?;
        q.outw(io + VIRTIO_PCI_QUEUE_SEL, 0)?;
        let qsize = q.inw(io + VIRTIO_PCI_QUEUE_NUM)?;
        if qsize == 0 {
            return Err("virtqueue 0 has size 0".into());
        }
        q.memwrite(VRING, &vec![0u8; 0x3000])?;
        q.outl(io + VIRTIO_PCI_QUEUE_PFN, (VRING >> 12) as u32)?;
        q.outb(io + VIRTIO_PCI_STATUS, 1 | 2 | 4)?;
        self.qsize = qsize;
        self.avail_idx = 0;
        self.last_used = 0;
        self.sent = 0;
        self.slots.clear();
        self.read_early.clear();
        Ok(())
    }

    fn avail(&self) -> u64 {
        VRING + 16 * self.qsize as u64
    }

    fn used(&self) -> u64 {
        let end = self.avail() + 4 + 2 * self.qsize as u64 + 2;
        (end + 4095) & !4095
    }

    /// Reads the reply a completed request left in its buffer.
    fn read_reply(&mut self, addr: u64, len: u32) -> Result<Vec<u8>, String> {
        let n = (len as usize).min(self.max_size as usize);
        let data = self.qt.memread(addr, n)?;
        if self.verbose {
            eprintln!("  <- {}", hex(&data));
        }
        Ok(data)
    }

    /// The next used element: (descriptor head, length).
    fn next_used(&mut self) -> Result<(u16, u32), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let used = self.used();
        loop {
            let idx = self.qt.readw(used + 2)?;
            if idx != self.last_used {
                let e = used + 4 + 8 * (self.last_used % self.qsize) as u64;
                let raw = self.qt.memread(e, 8)?;
                self.last_used = self.last_used.wrapping_add(1);
                let _isr = self.qt.inb(IO_BASE + VIRTIO_PCI_ISR)?;
                let id = u32::from_le_bytes(raw[..4].try_into().unwrap());
                let len = u32::from_le_bytes(raw[4..].try_into().unwrap());
                return Ok((id as u16, len));
            }
            if Instant::now() > deadline {
                return Err("no used element within 10 s".into());
            }
            self.qt.clock_step()?;
        }
    }
}

impl Transport for QemuTransport {
    fn send(&mut self, frame: &[u8]) -> Result<ReqHandle, String> {
        if self.verbose {
            eprintln!("  -> {}", hex(frame));
        }
        let n = self.sent;
        self.sent += 1;
        let slot = BUFS + (n % SLOTS) * SLOT_SIZE;
        let (req_addr, reply_addr) = (slot, slot + SLOT_SIZE / 2);
        let head = ((2 * n) % self.qsize as u64) as u16;
        let q = &mut self.qt;
        q.memwrite(req_addr, frame)?;
        // Two descriptors: the request, then the device-writable reply.
        let mut desc = Vec::with_capacity(32);
        desc.extend_from_slice(&req_addr.to_le_bytes());
        desc.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        desc.extend_from_slice(&VRING_DESC_F_NEXT.to_le_bytes());
        desc.extend_from_slice(&(head + 1).to_le_bytes());
        desc.extend_from_slice(&reply_addr.to_le_bytes());
        desc.extend_from_slice(&self.max_size.to_le_bytes());
        desc.extend_from_slice(&VRING_DESC_F_WRITE.to_le_bytes());
        desc.extend_from_slice(&0u16.to_le_bytes());
        q.memwrite(VRING + 16 * head as u64, &desc)?;
        let avail = VRING + 16 * self.qsize as u64;
        let ring_at = avail + 4 + 2 * (self.avail_idx % self.qsize) as u64;
        q.writew(ring_at, head)?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        q.writew(avail + 2, self.avail_idx)?;
        q.outw(IO_BASE + VIRTIO_PCI_QUEUE_NOTIFY, 0)?;
        self.slots.insert(n, Slot { head, reply_addr });
        Ok(n)
    }

    fn wait(&mut self, req: ReqHandle) -> Result<Option<Vec<u8>>, String> {
        let (head, reply_addr) = match self.slots.get(&req) {
            Some(s) => (s.head, s.reply_addr),
            None => return Err(format!("request {req} is not in flight")),
        };
        loop {
            let (id, len) = self.next_used()?;
            if let Some(i) = self.read_early.iter().position(|&h| h == id) {
                self.read_early.remove(i);
                continue;
            }
            if id != head {
                return Err(format!(
                    "the next used element was descriptor {id}, not this request's {head}"
                ));
            }
            self.slots.remove(&req);
            if len == 0 {
                return Ok(None);
            }
            return self.read_reply(reply_addr, len).map(Some);
        }
    }

    fn read_done(&mut self, req: ReqHandle) -> Result<Vec<u8>, String> {
        let s = self
            .slots
            .remove(&req)
            .ok_or_else(|| format!("request {req} is not in flight"))?;
        // As qos-test: read the reply buffer straight away; its used
        // element is passed over later.
        let head = self.qt.memread(s.reply_addr, 7)?;
        let size = u32::from_le_bytes(head[..4].try_into().unwrap());
        self.read_early.push(s.head);
        self.read_reply(s.reply_addr, size)
    }

    fn reset(&mut self) -> Result<(), String> {
        self.qmp.execute("system_reset")?;
        self.init_device()
    }

    fn config(&mut self) -> Option<Vec<u8>> {
        let q = &mut self.qt;
        let len = q.inw(IO_BASE + VIRTIO_PCI_CONFIG).ok()?;
        let mut out = len.to_le_bytes().to_vec();
        for i in 0..len {
            out.push(q.inb(IO_BASE + VIRTIO_PCI_CONFIG + 2 + i).ok()?);
        }
        Some(out)
    }
}

impl Drop for QemuTransport {
    fn drop(&mut self) {
        let _ = self.qmp.execute("quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The default QEMU binary and, if built, the qtest module directory.
pub fn default_config() -> QemuConfig {
    let module_dir = std::env::var_os("QEMU_MODULE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let ver = std::process::Command::new("dpkg-query")
                .args(["-W", "-f=${Version}", "qemu-system-x86"])
                .output()
                .ok()?;
            let ver = String::from_utf8(ver.stdout).ok()?.replace(':', "_");
            let home = std::env::var_os("CORO9P_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/coro9p"))
                })?;
            let dir = home.join("qemu-qtest-modules").join(ver);
            dir.join("accel-qtest-x86_64.so").exists().then_some(dir)
        });
    QemuConfig {
        binary: PathBuf::from("qemu-system-x86_64"),
        module_dir,
    }
}

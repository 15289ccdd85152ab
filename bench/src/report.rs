//! Medians, the results table (Markdown), the per-run CSV and the SVG chart.

use std::fmt::Write as _;

use crate::load::{Figures, Workload};
use crate::mem::Mem;

/// What is measured (`coro9p-min`: `coro9p --hops=min`, added last so
/// the others keep their places; the table shows it next to coro9p).
pub const TARGETS: [&str; 5] = ["coro9p", "diod", "direct", "direct-9pfs", "coro9p-min"];

/// `coro9p --hops=min`'s index in [`TARGETS`].
pub const MIN: usize = 4;

/// One run, summarised.
#[derive(Clone, Debug, Default)]
pub struct Sum {
    pub ops_s: f64,
    pub mb_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub msize: u32,
}

impl From<&Figures> for Sum {
    fn from(f: &Figures) -> Sum {
        Sum {
            ops_s: f.ops_per_s(),
            mb_s: f.mb_per_s(),
            p50_us: f.pct_us(0.5),
            p99_us: f.pct_us(0.99),
            msize: f.msize,
        }
    }
}

/// A workload's runs on every target.
pub struct Row {
    pub w: Workload,
    pub conns: usize,
    pub inflight: usize,
    pub runs: [Vec<Sum>; 5],
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Whether a workload is judged by MB/s (else by ops/s).
pub fn by_bytes(w: Workload) -> bool {
    matches!(w, Workload::SeqRead | Workload::SeqWrite)
}

impl Row {
    pub fn med(&self, t: usize, f: impl Fn(&Sum) -> f64) -> f64 {
        median(self.runs[t].iter().map(f).collect())
    }
    /// The median of the figure the workload is judged by.
    pub fn primary(&self, t: usize) -> f64 {
        if by_bytes(self.w) {
            self.med(t, |s| s.mb_s)
        } else {
            self.med(t, |s| s.ops_s)
        }
    }
    pub fn ratio(&self, a: usize, b: usize) -> f64 {
        self.primary(a) / self.primary(b)
    }
    fn cell(&self, t: usize) -> String {
        if self.runs[t].is_empty() {
            return "-".into();
        }
        if by_bytes(self.w) {
            format!("{} MB/s", thousands(self.primary(t)))
        } else {
            format!("{} op/s", thousands(self.primary(t)))
        }
    }
    fn lat(&self, t: usize) -> String {
        if self.runs[t].is_empty() {
            return "-".into();
        }
        format!(
            "{} / {}",
            short(self.med(t, |s| s.p50_us)),
            short(self.med(t, |s| s.p99_us))
        )
    }
}

pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v < 100.0 {
        return format!("{v:.1}");
    }
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds, shortened.
fn short(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 10.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

/// The Markdown table of medians.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| workload | one op is | conns × in flight | coro9p | coro9p --hops=min | diod | direct | \
         direct, 9pfs syscalls | coro9p p50 / p99 | coro9p --hops=min p50 / p99 | diod p50 / p99 | \
         coro9p/diod | min/diod | coro9p/direct | min/direct |\n",
    );
    s.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} × {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.3} |",
            r.w.name(),
            r.w.unit(),
            r.conns,
            r.inflight,
            r.cell(0),
            r.cell(MIN),
            r.cell(1),
            r.cell(2),
            r.cell(3),
            r.lat(0),
            r.lat(MIN),
            r.lat(1),
            r.ratio(0, 1),
            r.ratio(MIN, 1),
            r.ratio(0, 2),
            r.ratio(MIN, 2),
        );
    }
    s
}

/// The Markdown table of memory figures.
pub fn mem_table(mems: &[(&str, Mem)]) -> String {
    let mut s = String::new();
    let idle = mems.first().map_or(0, |m| m.1.idle);
    let (small, large) = mems
        .first()
        .map_or((0, 0), |m| (m.1.small.read_bytes, m.1.large.read_bytes));
    let _ = writeln!(
        s,
        "| server | RSS, fresh | RSS, {} idle connections | per idle connection | threads | \
         per request in flight, {} B Treads | per request in flight, {} B Treads | threads under load |",
        thousands(idle as f64),
        thousands(small as f64),
        thousands(large as f64)
    );
    s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for (name, m) in mems {
        let _ = writeln!(
            s,
            "| {name} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {} | {:.1} KiB | {:.1} KiB | {} |",
            m.rss_start_kib as f64 / 1024.0,
            m.idle_mib(),
            m.per_idle_conn_kib(),
            m.threads_idle,
            m.small.per_request_kib(),
            m.large.per_request_kib(),
            m.large.threads
        );
    }
    let _ = writeln!(
        s,
        "\nIn flight: {} Treads (8 connections × 128) kept going for 2 s on a fresh server; \
         (peak RSS − RSS before − 8 idle connections) / {}.",
        crate::mem::IN_FLIGHT,
        crate::mem::IN_FLIGHT
    );
    s
}

/// Every run, as CSV.
pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from("workload,target,run,ops_per_s,mb_per_s,p50_us,p99_us,msize\n");
    for r in rows {
        for (t, runs) in r.runs.iter().enumerate() {
            for (i, x) in runs.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "{},{},{},{:.1},{:.2},{:.2},{:.2},{}",
                    r.w.name(),
                    TARGETS[t],
                    i + 1,
                    x.ops_s,
                    x.mb_s,
                    x.p50_us,
                    x.p99_us,
                    x.msize
                );
            }
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars per workload: each target's median, relative to the
/// direct loop (the physical limit = 1), on a log scale, labelled with the
/// absolute figure.
pub fn svg(rows: &[Row], title: &str) -> String {
    const COLORS: [&str; 5] = ["#d9480f", "#1c7ed6", "#2b8a3e", "#94d82d", "#f08c00"];
    let (left, width, bar, gap) = (150.0, 560.0, 13.0, 16.0);
    let (lo, hi) = (1e-3_f64.log10(), 2.0_f64.log10());
    let x = |v: f64| left + (v.clamp(1e-3, 2.0).log10() - lo) / (hi - lo) * width;
    let group = TARGETS.len() as f64 * bar + gap;
    let top = 70.0;
    let h = top + group * rows.len() as f64 + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{h:.0}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(s, r##"<rect width="900" height="{h:.0}" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="38">median of the runs, relative to the direct syscall loop (= 1; log scale); label: the figure itself</text>"##
    );
    for (i, name) in TARGETS.iter().enumerate() {
        let lx = 10.0 + i as f64 * 150.0;
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="48" width="12" height="12" fill="{}"/><text x="{}" y="58">{}</text>"##,
            COLORS[i],
            lx + 16.0,
            match *name {
                "direct-9pfs" => "direct, 9pfs syscalls",
                "coro9p-min" => "coro9p --hops=min",
                _ => name,
            }
        );
    }
    for v in [0.001, 0.01, 0.1, 1.0] {
        let gx = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{:.1}" stroke="#ccc"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{v}</text>"##,
            h - 40.0,
            h - 26.0
        );
    }
    for (ri, r) in rows.iter().enumerate() {
        let y0 = top + ri as f64 * group;
        let _ = writeln!(
            s,
            r##"<text x="{:.0}" y="{:.1}" text-anchor="end" font-weight="bold">{}</text>"##,
            left - 8.0,
            y0 + 2.0 * bar + 4.0,
            r.w.name()
        );
        let base = r.primary(2);
        for (t, color) in COLORS.iter().enumerate() {
            if r.runs[t].is_empty() {
                continue;
            }
            let v = r.primary(t);
            let y = y0 + t as f64 * bar;
            let w = (x(v / base) - left).max(1.0);
            let unit = if by_bytes(r.w) { "MB/s" } else { "op/s" };
            let _ = writeln!(
                s,
                r##"<rect x="{left}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}">{} {unit}</text>"##,
                bar - 2.0,
                color,
                left + w + 4.0,
                y + bar - 4.0,
                thousands(v)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

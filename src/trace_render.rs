//! Draws a hop trace (the JSON lines of `coro9p --trace-hops`) as an SVG
//! picture: one lane for the main thread and one per worker thread, one
//! colour per request, one arrow per hop (main -> worker, the job on the
//! worker, worker -> main), and marks for arrival, reply, cancellation and
//! discard. Time runs left to right, with a scale.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One event of a trace file.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The task (request) id.
    pub task: u64,
    /// The task's label ("tag 3 Twalk").
    pub label: String,
    /// The event name (`enter`, `to_worker`, `job_start`, ..., `mark`).
    pub event: String,
    /// For `mark` events: the mark's name (`arrival`, `reply`, ...).
    pub mark: Option<String>,
    /// `main` or `worker-N`.
    pub thread: String,
    /// Nanoseconds on the trace's clock.
    pub ns: u64,
}

/// Parses the JSON lines a tracer wrote (flat objects of strings and
/// numbers, as `Tracer::write_jsonl` writes them).
///
/// # Errors
///
/// A line that is not such an object, with its number.
pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields = parse_object(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let get = |k: &str| fields.get(k).cloned();
        let num = |k: &str| -> Result<u64, String> {
            get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("line {}: no number '{k}'", n + 1))
        };
        out.push(Event {
            task: num("task")?,
            label: get("label").unwrap_or_default(),
            event: get("event").ok_or_else(|| format!("line {}: no 'event'", n + 1))?,
            mark: get("mark"),
            thread: get("thread").ok_or_else(|| format!("line {}: no 'thread'", n + 1))?,
            ns: num("ns")?,
        });
    }
    Ok(out)
}

/// A flat JSON object: keys to string or number values (as text).
fn parse_object(line: &str) -> Result<BTreeMap<String, String>, String> {
    let b = line.trim().as_bytes();
    let mut i = 0;
    let mut out = BTreeMap::new();
    let expect = |i: &mut usize, c: u8| -> Result<(), String> {
        while b.get(*i).is_some_and(|x| x.is_ascii_whitespace()) {
            *i += 1;
        }
        if b.get(*i) == Some(&c) {
            *i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at {}", c as char, *i))
        }
    };
    let string = |i: &mut usize| -> Result<String, String> {
        expect(i, b'"')?;
        let mut s = String::new();
        loop {
            match b.get(*i) {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    *i += 1;
                    return Ok(s);
                }
                Some(b'\\') => {
                    let c = *b.get(*i + 1).ok_or("bad escape")?;
                    *i += 2;
                    match c {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'r' => s.push('\r'),
                        b'u' => {
                            let hex = std::str::from_utf8(b.get(*i..*i + 4).ok_or("bad \\u")?)
                                .map_err(|_| "bad \\u")?;
                            let v = u32::from_str_radix(hex, 16).map_err(|_| "bad \\u")?;
                            s.push(char::from_u32(v).unwrap_or('?'));
                            *i += 4;
                        }
                        c => s.push(c as char),
                    }
                }
                Some(_) => {
                    // Copy one UTF-8 character.
                    let rest = std::str::from_utf8(&b[*i..]).map_err(|_| "bad UTF-8")?;
                    let ch = rest.chars().next().ok_or("bad UTF-8")?;
                    s.push(ch);
                    *i += ch.len_utf8();
                }
            }
        }
    };
    expect(&mut i, b'{')?;
    loop {
        let key = string(&mut i)?;
        expect(&mut i, b':')?;
        while b.get(i).is_some_and(|x| x.is_ascii_whitespace()) {
            i += 1;
        }
        let value = if b.get(i) == Some(&b'"') {
            string(&mut i)?
        } else {
            let start = i;
            while b.get(i).is_some_and(|x| x.is_ascii_digit() || *x == b'-') {
                i += 1;
            }
            if start == i {
                return Err(format!("no value for '{key}'"));
            }
            String::from_utf8_lossy(&b[start..i]).into_owned()
        };
        out.insert(key, value);
        while b.get(i).is_some_and(|x| x.is_ascii_whitespace()) {
            i += 1;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(out),
            _ => return Err(format!("expected ',' or '}}' at {i}")),
        }
    }
}

/// What a picture holds, for tests: its lanes and how many hops it drew.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// Lane names, top to bottom.
    pub lanes: Vec<String>,
    /// Hop arrows drawn.
    pub hops: usize,
    /// Marks drawn.
    pub marks: usize,
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round tick step (1, 2 or 5 × 10^k ns) giving about 8 ticks.
fn tick_step(span: u64) -> u64 {
    let rough = (span / 8).max(1);
    let mut step = 1u64;
    while step * 10 <= rough {
        step *= 10;
    }
    for m in [1, 2, 5, 10] {
        if step * m >= rough {
            return step * m;
        }
    }
    step * 10
}

fn time_label(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// Keeps the events of labelled tasks (requests; internal tasks such as a
/// session reset have no label) whose message name is in `only` (all if
/// empty), and the `Tversion`-style names are matched on the label's last
/// word.
pub fn select(events: &[Event], only: &[&str]) -> Vec<Event> {
    let keep: std::collections::BTreeSet<u64> = events
        .iter()
        .filter(|e| !e.label.is_empty())
        .filter(|e| only.is_empty() || only.contains(&e.label.rsplit(' ').next().unwrap_or("")))
        .map(|e| e.task)
        .collect();
    events
        .iter()
        .filter(|e| keep.contains(&e.task))
        .cloned()
        .collect()
}

/// Renders `events` as an SVG document; `title` goes on top.
pub fn render(events: &[Event], title: &str) -> (String, Summary) {
    let mut lanes: Vec<String> = events.iter().map(|e| e.thread.clone()).collect();
    lanes.sort_by_key(|t| match t.strip_prefix("worker-") {
        None => (0, 0),
        Some(n) => (1, n.parse::<u64>().unwrap_or(u64::MAX)),
    });
    lanes.dedup();
    if !lanes.iter().any(|l| l == "main") {
        lanes.insert(0, "main".into());
    }
    let lane_y = |t: &str| -> f64 {
        let i = lanes.iter().position(|l| l == t).unwrap_or(0);
        70.0 + 60.0 * i as f64
    };
    let t0 = events.iter().map(|e| e.ns).min().unwrap_or(0);
    let t1 = events.iter().map(|e| e.ns).max().unwrap_or(1).max(t0 + 1);
    let (left, width) = (110.0, 900.0);
    let x = |ns: u64| left + width * (ns - t0) as f64 / (t1 - t0) as f64;
    let mut tasks: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in events {
        tasks.entry(e.task).or_default().push(e);
    }
    let height = 70.0 + 60.0 * lanes.len() as f64 + 30.0 + 18.0 * tasks.len() as f64 + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#,
        w = left + width + 40.0
    );
    let _ = writeln!(
        svg,
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>"##
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Lanes.
    for l in &lanes {
        let y = lane_y(l);
        let _ = writeln!(
            svg,
            r##"<g class="lane"><text x="10" y="{ty}">{name}</text><line x1="{left}" y1="{y}" x2="{x2}" y2="{y}" stroke="#bbb"/></g>"##,
            ty = y + 4.0,
            name = escape(l),
            x2 = left + width
        );
    }
    // Time axis.
    let axis_y = 70.0 + 60.0 * lanes.len() as f64 - 25.0;
    let step = tick_step(t1 - t0);
    let mut t = 0;
    while t <= t1 - t0 {
        let tx = x(t0 + t);
        let _ = writeln!(
            svg,
            r##"<g class="tick"><line x1="{tx}" y1="{a}" x2="{tx}" y2="{b}" stroke="#888"/><text x="{tx}" y="{ly}" text-anchor="middle" fill="#555">{label}</text></g>"##,
            a = axis_y,
            b = axis_y + 5.0,
            ly = axis_y + 18.0,
            label = time_label(t)
        );
        t += step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{axis_y}" x2="{x2}" y2="{axis_y}" stroke="#888"/>"##,
        x2 = left + width
    );
    let mut summary = Summary {
        lanes: lanes.clone(),
        hops: 0,
        marks: 0,
    };
    let legend_y = axis_y + 45.0;
    for (n, (task, evs)) in tasks.iter().enumerate() {
        let colour = PALETTE[n % PALETTE.len()];
        let _ = writeln!(svg, r#"<g class="task" data-task="{task}">"#);
        // The task's life on main, from entry to end, as a thin bar.
        let (first, last) = (evs[0].ns, evs[evs.len() - 1].ns);
        let my = lane_y("main");
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{my}" x2="{}" y2="{my}" stroke="{colour}" stroke-width="3" opacity="0.35"/>"#,
            x(first),
            x(last)
        );
        // Hops: to_worker -> job_start -> job_end -> to_main.
        let mut i = 0;
        while i < evs.len() {
            if evs[i].event == "to_worker" {
                let start = evs[i];
                let js = evs[i..].iter().find(|e| e.event == "job_start");
                let je = evs[i..].iter().find(|e| e.event == "job_end");
                let back = evs[i..].iter().find(|e| e.event == "to_main");
                if let (Some(js), Some(je), Some(back)) = (js, je, back) {
                    let wy = lane_y(&js.thread);
                    let _ = writeln!(
                        svg,
                        r#"<path class="hop" d="M{} {my} L{} {wy} L{} {wy} L{} {my}" fill="none" stroke="{colour}" stroke-width="1.5" marker-end="url(#arrow)"/>"#,
                        x(start.ns),
                        x(js.ns),
                        x(je.ns),
                        x(back.ns)
                    );
                    summary.hops += 1;
                }
            }
            i += 1;
        }
        for e in evs {
            let (cx, cy) = (x(e.ns), lane_y(&e.thread));
            let shape = match (e.event.as_str(), e.mark.as_deref()) {
                ("mark", Some("arrival")) => Some(format!(
                    r#"<circle class="mark arrival" cx="{cx}" cy="{cy}" r="4" fill="{colour}"><title>arrival</title></circle>"#
                )),
                ("mark", Some("reply")) => Some(format!(
                    r#"<path class="mark reply" d="M{a} {b} L{c} {cy} L{a} {d} z" fill="{colour}"><title>reply</title></path>"#,
                    a = cx - 5.0,
                    b = cy - 5.0,
                    c = cx + 3.0,
                    d = cy + 5.0
                )),
                ("mark", Some("discard")) => Some(format!(
                    r#"<path class="mark discard" d="M{a} {b} L{c} {d} M{a} {d} L{c} {b}" stroke="{colour}" stroke-width="2.5"><title>discarded (no reply)</title></path>"#,
                    a = cx - 5.0,
                    b = cy - 5.0,
                    c = cx + 5.0,
                    d = cy + 5.0
                )),
                ("mark", Some("cancel")) => Some(format!(
                    r##"<rect class="mark cancel" x="{a}" y="{b}" width="3" height="16" fill="#d00"><title>cancelled by Tflush</title></rect>"##,
                    a = cx - 1.5,
                    b = cy - 8.0
                )),
                ("park", _) => Some(format!(
                    r#"<rect class="mark park" x="{a}" y="{b}" width="6" height="6" fill="none" stroke="{colour}"><title>waits</title></rect>"#,
                    a = cx - 3.0,
                    b = cy - 3.0
                )),
                _ => None,
            };
            if let Some(s) = shape {
                svg.push_str(&s);
                svg.push('\n');
                summary.marks += 1;
            }
        }
        let ly = legend_y + 18.0 * n as f64;
        let label = evs
            .iter()
            .find(|e| !e.label.is_empty())
            .map_or("", |e| &e.label);
        let hops = evs.iter().filter(|e| e.event == "to_worker").count();
        let _ = writeln!(
            svg,
            r#"<rect x="{left}" y="{a}" width="12" height="12" fill="{colour}"/><text x="{tx}" y="{ty}">{} ({hops} hop{})</text>"#,
            escape(if label.is_empty() { "task" } else { label }),
            if hops == 1 { "" } else { "s" },
            a = ly - 10.0,
            tx = left + 18.0,
            ty = ly
        );
        let _ = writeln!(svg, "</g>");
    }
    let _ = writeln!(
        svg,
        r##"<text x="{x}" y="{y}" fill="#555">● arrival  ▶ reply  ✕ discarded  ▮ cancelled  □ waits</text>"##,
        x = left + width - 330.0,
        y = legend_y
    );
    svg.push_str("</svg>\n");
    (svg, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"{"task":1,"label":"tag 0 Twrite","event":"enter","thread":"main","ns":100}
{"task":1,"label":"tag 0 Twrite","event":"mark","mark":"arrival","thread":"main","ns":110}
{"task":1,"label":"tag 0 Twrite","event":"to_worker","thread":"main","ns":120}
{"task":1,"label":"tag 0 Twrite","event":"job_start","thread":"worker-1","ns":300}
{"task":1,"label":"tag 0 Twrite","event":"job_end","thread":"worker-1","ns":400}
{"task":1,"label":"tag 0 Twrite","event":"to_main","thread":"main","ns":500}
{"task":2,"label":"tag 1 \"Tflush\"","event":"mark","mark":"arrival","thread":"main","ns":510}
{"task":1,"label":"tag 0 Twrite","event":"to_worker","thread":"main","ns":520}
{"task":1,"label":"tag 0 Twrite","event":"job_start","thread":"worker-2","ns":600}
{"task":1,"label":"tag 0 Twrite","event":"job_end","thread":"worker-2","ns":700}
{"task":1,"label":"tag 0 Twrite","event":"to_main","thread":"main","ns":800}
{"task":1,"label":"tag 0 Twrite","event":"mark","mark":"discard","thread":"main","ns":810}
{"task":2,"label":"tag 1 \"Tflush\"","event":"mark","mark":"reply","thread":"main","ns":820}
"#;

    #[test]
    fn parses_what_the_tracer_writes() {
        let ev = parse_jsonl(TRACE).unwrap();
        assert_eq!(ev.len(), 13);
        assert_eq!(ev[1].mark.as_deref(), Some("arrival"));
        assert_eq!(ev[6].label, "tag 1 \"Tflush\"");
        assert!(parse_jsonl("{\"task\":1}").is_err());
        assert!(parse_jsonl("not json").is_err());
    }

    #[test]
    fn one_lane_per_thread_and_one_arrow_per_hop() {
        let ev = parse_jsonl(TRACE).unwrap();
        let (svg, sum) = render(&ev, "flush");
        assert_eq!(sum.lanes, ["main", "worker-1", "worker-2"]);
        assert_eq!(sum.hops, 2);
        assert_eq!(sum.marks, 4);
        assert_eq!(svg.matches(r#"class="lane""#).count(), 3);
        assert_eq!(svg.matches(r#"class="hop""#).count(), 2);
        assert!(svg.contains("tag 1 &quot;Tflush&quot;"));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn select_keeps_labelled_requests_by_name() {
        let mut ev = parse_jsonl(TRACE).unwrap();
        ev.push(Event {
            task: 9,
            label: String::new(),
            event: "enter".into(),
            mark: None,
            thread: "main".into(),
            ns: 900,
        });
        assert_eq!(
            select(&ev, &[]).len(),
            13,
            "the unlabelled task is left out"
        );
        let flush_only = select(&ev, &["\"Tflush\""]);
        assert!(flush_only.iter().all(|e| e.task == 2));
        assert_eq!(flush_only.len(), 2);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(1000), 200);
        assert_eq!(tick_step(80), 10);
        assert_eq!(tick_step(7_000_000), 1_000_000);
    }
}

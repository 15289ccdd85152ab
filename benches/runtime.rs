//! Runtime micro-benchmarks (`make bench`): what a hop and a coroutine cost,
//! next to the plain-thread baseline, measured in the same run.
//!
//! Each figure is the median (with p10 and p90) of per-operation times over
//! many samples; each sample times a batch of operations.

use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use coro9p::runtime::{Executor, RuntimeConfig};

const SAMPLES: usize = 31;

struct Figure {
    name: &'static str,
    per_op_ns: Vec<f64>,
}

impl Figure {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.per_op_ns.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i]
    }
}

/// Runs `sample` (which performs `batch` operations) once to warm up, then
/// SAMPLES times, and keeps the per-operation time of each.
fn measure(name: &'static str, batch: usize, mut sample: impl FnMut(usize)) -> Figure {
    sample(batch);
    let per_op_ns = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            sample(batch);
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    Figure { name, per_op_ns }
}

fn hop_round_trip(exec: &Executor, hops: usize) {
    let task = exec.enter(move |co| {
        let mut sum = 0u64;
        for i in 0..hops as u64 {
            sum += co.run_in_worker(move || i);
        }
        sum
    });
    exec.run_until(|| task.is_finished()).unwrap();
    assert!(task.take_result().unwrap().is_ok());
}

/// `tasks` tasks doing `hops` hops each, all in flight at once; per hop.
fn hops_in_flight(exec: &Executor, tasks: usize, hops: usize) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            exec.enter(move |co| {
                for i in 0..hops as u64 {
                    co.run_in_worker(move || i);
                }
            })
        })
        .collect();
    exec.run_until(|| handles.iter().all(|t| t.is_finished()))
        .unwrap();
}

fn create_enter_finish(exec: &Executor, n: usize) {
    for i in 0..n {
        let task = exec.enter(move |_| i + 1);
        assert!(task.is_finished());
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, Linux {}", kernel.trim())
}

fn show(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{:.2} us", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let pooled = Executor::new(RuntimeConfig::default()).unwrap();
    let unpooled = Executor::new(RuntimeConfig {
        reuse_stacks: false,
        ..RuntimeConfig::default()
    })
    .unwrap();

    let mut figures = vec![
        measure(
            "hop main->worker->main (run_in_worker), one task",
            2000,
            |n| hop_round_trip(&pooled, n),
        ),
        measure("hop, 32 tasks in flight (per hop)", 32 * 100, |n| {
            hops_in_flight(&pooled, 32, n / 32)
        }),
        measure("coroutine create+enter+finish, stack pool", 5000, |n| {
            create_enter_finish(&pooled, n)
        }),
        measure("coroutine create+enter+finish, no pool", 2000, |n| {
            create_enter_finish(&unpooled, n)
        }),
    ];

    // Baseline: the same round trip with a plain thread and two channels.
    let (to_worker, jobs) = mpsc::channel::<u64>();
    let (to_main, results) = mpsc::channel::<u64>();
    let worker = thread::spawn(move || {
        for x in jobs {
            if to_main.send(x).is_err() {
                break;
            }
        }
    });
    figures.push(measure(
        "baseline: std thread + mpsc channel round trip",
        2000,
        |n| {
            for i in 0..n as u64 {
                to_worker.send(i).unwrap();
                assert_eq!(results.recv().unwrap(), i);
            }
        },
    ));
    drop(to_worker);
    worker.join().unwrap();

    println!("coro9p runtime micro-benchmarks");
    println!("machine: {}", machine());
    println!("per operation; median, p10 and p90 of {SAMPLES} samples\n");
    println!(
        "{:<52} {:>10} {:>10} {:>10}",
        "benchmark", "median", "p10", "p90"
    );
    for f in &figures {
        println!(
            "{:<52} {:>10} {:>10} {:>10}",
            f.name,
            show(f.pct(0.5)),
            show(f.pct(0.1)),
            show(f.pct(0.9))
        );
    }
    let hop = figures[0].pct(0.5);
    let base = figures[4].pct(0.5);
    println!("\nhop / baseline round trip: {:.2}", hop / base);
    println!(
        "stack pool saves per coroutine: {}",
        show(figures[3].pct(0.5) - figures[2].pct(0.5))
    );
}

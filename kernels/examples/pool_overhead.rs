//! Per-call cost of a parallel region: `grist_kernels::pool::run` vs a rayon `par_iter`, both
//! started from inside a rayon pool (as every grist command runs), for an empty job and for a
//! job of 19 µs of serial work (SmolLM2-135M's q projection on one thread) split evenly over
//! the threads, called back to back and with 20 µs of serial work between calls (the norms,
//! RoPE and attention between two matmuls of a token).
//!
//! `cargo run --release -p grist-kernels --example pool_overhead [-- THREADS [CALLS]]`
//! (defaults: 2 threads, 20 000 calls per case). Prints the median and mean wall time per
//! call and, for the 19 µs job, the excess over the ideal `19 µs / threads`.
use std::hint::black_box;
use std::time::{Duration, Instant};

use grist_kernels::pool;
use rayon::prelude::*;

/// Busy-waits (without sleeping) for `d`.
fn busy(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Calls `region` `calls` times, with `gap` of serial work before each, and returns the
/// median and mean wall time of the region alone, in µs.
fn measure(calls: usize, gap: Duration, mut region: impl FnMut()) -> (f64, f64) {
    for _ in 0..calls / 10 {
        region(); // warm up (threads created, caches filled)
    }
    let mut times: Vec<f64> = Vec::with_capacity(calls);
    for _ in 0..calls {
        if !gap.is_zero() {
            busy(gap);
        }
        let t = Instant::now();
        region();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mean = times.iter().sum::<f64>() / calls as f64;
    times.sort_by(f64::total_cmp);
    (times[calls / 2], mean)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments: THREADS [CALLS]"))
        .collect();
    let threads = args.first().copied().unwrap_or(2);
    let calls = args.get(1).copied().unwrap_or(20_000);
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool");
    println!(
        "{threads} threads, {calls} calls per case, pool spin time {:?}; µs per call (median / mean)",
        pool::spin_time()
    );
    println!("| job | tasks | gap | rayon par_iter | pool::run | ideal |");
    println!("|---|---:|---|---:|---:|---:|");
    rayon_pool.install(|| {
        for (job_name, job_us) in [("empty", 0.0f64), ("19 µs", 19.0)] {
            for n_tasks in [threads, 4 * threads] {
                let share = Duration::from_secs_f64(job_us * 1e-6 / n_tasks as f64);
                let task = |i: usize| {
                    if !share.is_zero() {
                        busy(share);
                    }
                    black_box(i);
                };
                for gap_us in [0u64, 20] {
                    let gap = Duration::from_micros(gap_us);
                    let r = measure(calls, gap, || {
                        (0..n_tasks).into_par_iter().for_each(task);
                    });
                    let p = measure(calls, gap, || pool::run(n_tasks, &task));
                    println!(
                        "| {job_name} | {n_tasks} | {gap_us} µs | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} |",
                        r.0,
                        r.1,
                        p.0,
                        p.1,
                        job_us / threads as f64
                    );
                }
            }
        }
    });
}

//! CPU-time measurement shared by the speed examples: on a shared machine other processes
//! steal the cores, so wall time of the same binary moves by 2× while the CPU time it used
//! repeats within a few percent (docs/PERFORMANCE.md, "Optimisations tried").

use std::time::Instant;

/// User + system CPU time of this process, in seconds (from `/proc/self/stat`, 10 ms ticks).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Runs `f` repeatedly for ≥ 1.5 s of CPU time; returns (CPU s, wall s) per call.
///
/// Reading `/proc/self/stat` costs 10–20 µs, more than a small product, so the clock is read
/// once per batch of calls lasting ≥ 20 ms (sized from the first calls' wall time).
pub fn time(mut f: impl FnMut()) -> (f64, f64) {
    f();
    let t = Instant::now();
    f();
    let per_call = t.elapsed().as_secs_f64().max(1e-7);
    let batch = ((0.02 / per_call) as u64).max(1);
    let (c0, w0) = (cpu_seconds(), Instant::now());
    let mut calls = 0u64;
    while cpu_seconds() - c0 < 1.5 {
        for _ in 0..batch {
            f();
        }
        calls += batch;
    }
    let c = cpu_seconds() - c0;
    (c / calls as f64, w0.elapsed().as_secs_f64() / calls as f64)
}

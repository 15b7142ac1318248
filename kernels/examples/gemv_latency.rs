//! Wall time of one token-generation matrix-vector product (`n = 1`, through the matmul
//! driver, the worker pool and the table's `gemv` kernel), as token generation runs it:
//! weights streaming from DRAM (the call cycles through `COPIES` copies of the matrix, so
//! with enough copies nothing is cache-resident), called back to back and after 5, 10 and
//! 20 µs of serial work (a norm, RoPE or attention between two products), each gap with and
//! without naming the matrix to the pool's idle workers first
//! ([`grist_kernels::matmul::prefetch_gemv`]). The conditions alternate call by call, so a
//! drift of the machine's DRAM bandwidth hits them all alike.
//!
//! `cargo run --release -p grist-kernels --example gemv_latency [-- ROWS COLS THREADS COPIES FORMAT]`
//! (defaults: 576 576 2 300 Q4_1, SmolLM2-135M's attention output projection, 62 MB in all).
//! Prints the median, 10th and 90th percentile of 20 000 calls per condition, in µs.

use grist_gguf::GgmlType;
use grist_kernels::matmul::{matmul_prequantized_with, prefetch_gemv};
use std::time::{Duration, Instant};

mod streamed;
use streamed::Streamed;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let s = Streamed::from_args(&args, (576, 576, 2, 300, GgmlType::Q4_1));
    let (rows, copies, table, scratch) = (s.rows, s.copies, s.table, &s.scratch);
    let matrices = s.matrices();
    let mut y = vec![0.0f32; rows];
    let pool = s.pool();
    pool.install(|| {
        // Conditions interleaved call by call (the machine's DRAM bandwidth drifts):
        // (serial gap before the call, whether the idle workers prefetch during it).
        let conditions: Vec<(u64, bool)> = [0u64, 5, 10, 20]
            .iter()
            .flat_map(|&g| [(g, false), (g, true)])
            .filter(|&(g, hint)| g > 0 || !hint)
            .collect();
        let mut us: Vec<Vec<f64>> = vec![Vec::new(); conditions.len()];
        let mut pf = vec![0u64; conditions.len()];
        for i in 0..20_000 * conditions.len() {
            let c = i % conditions.len();
            let (gap, hint) = conditions[c];
            let m = &matrices[i % copies];
            if hint {
                prefetch_gemv(std::slice::from_ref(m));
            } else {
                grist_kernels::pool::prefetch_while_idle(&[]); // withdraw the last plan
            }
            let pf0 = grist_kernels::pool::idle_prefetched_bytes();
            let start = Instant::now();
            while start.elapsed() < Duration::from_micros(gap) {}
            let t = Instant::now();
            matmul_prequantized_with(table, m, scratch, &mut y).unwrap();
            us[c].push(t.elapsed().as_secs_f64() * 1e6);
            pf[c] += grist_kernels::pool::idle_prefetched_bytes() - pf0;
        }
        for (((gap, hint), us), pf) in conditions.iter().zip(us.iter_mut()).zip(&pf) {
            let prefetched = if *hint {
                format!(", {:.0} KB prefetched per call", *pf as f64 / us.len() as f64 / 1e3)
            } else {
                String::new()
            };
            us.sort_by(f64::total_cmp);
            let q = |f: f64| us[((us.len() - 1) as f64 * f) as usize];
            println!(
                "gap {gap:>2} µs{}: median {:.2} µs (p10 {:.2}, p90 {:.2}), {:.1} GB/s of weights{prefetched}",
                if *hint {
                    " + idle prefetch"
                } else {
                    "                "
                },
                q(0.5),
                q(0.1),
                q(0.9),
                (s.bytes() / copies) as f64 / q(0.5) / 1e3
            );
        }
    });
}

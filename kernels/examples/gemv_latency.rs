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
use grist_kernels::dispatch::kernels;
use grist_kernels::formats;
use grist_kernels::matmul::{
    matmul_prequantized_with, prefetch_gemv, quantize_activations_with, ActivationScratch, QMatrix,
};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().unwrap());
    let (rows, cols, threads, copies) = (num(0, 576), num(1, 576), num(2, 2), num(3, 300).max(1));
    let ty = match args.get(4) {
        None => GgmlType::Q4_1,
        Some(name) => GgmlType::all()
            .find(|t| t.to_string().eq_ignore_ascii_case(name))
            .expect("unknown FORMAT"),
    };
    let table = kernels();
    let entry = table.entry(ty).expect("FORMAT has no kernels");
    assert!(
        cols.is_multiple_of(ty.block_elems()),
        "COLS must be a multiple of {}",
        ty.block_elems()
    );
    let rb = cols / ty.block_elems() * ty.block_bytes();
    let mut data = vec![0u8; rows * rb * copies];
    for r in 0..rows {
        let w: Vec<f32> = (0..cols)
            .map(|i| (((i + 31 * r) * 104729 % 997) as f32 - 498.0) / 300.0)
            .collect();
        formats::quantize_row(ty, &w, &mut data[r * rb..(r + 1) * rb]).unwrap();
    }
    for c in 1..copies {
        data.copy_within(0..rows * rb, c * rows * rb);
    }
    let matrices: Vec<QMatrix> = data
        .chunks_exact(rows * rb)
        .map(|d| QMatrix::new(ty, d, rows, cols).unwrap())
        .collect();
    let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 - 6.0).collect();
    let mut scratch = ActivationScratch::new();
    quantize_activations_with(table, entry.act_type, &x, 1, cols, &mut scratch).unwrap();
    let mut y = vec![0.0f32; rows];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    println!(
        "{ty} {rows}×{cols}, {threads} threads, {copies} copies ({:.1} MB), isa {}",
        data.len() as f64 / 1e6,
        table.isa().name()
    );
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
            matmul_prequantized_with(table, m, &scratch, &mut y).unwrap();
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
                (rows * rb) as f64 / q(0.5) / 1e3
            );
        }
    });
}

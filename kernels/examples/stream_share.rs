//! How close the token-generation product comes to the memory bus, measured at the same
//! moment: alternates a pass of `n = 1` products over `COPIES` copies of one weight matrix
//! (back to back, through the matmul driver, the worker pool and the table's `gemv` kernel, so
//! the weights stream from DRAM as in a token with no serial work between products) with
//! the DRAM read probe (`probe::ReadProbe`) on a buffer of the same size, `PASSES` times.
//! The host's bandwidth drifts by 2× within minutes, so only ratios taken pass by pass mean
//! anything; it prints the median of those ratios.
//!
//! `cargo run --release -p grist-kernels --example stream_share [-- ROWS COLS THREADS COPIES FORMAT PASSES]`
//! (defaults: 9728 2560 2 70 Q4_K 20, Qwen3-4B's `ffn_up`, 980 MB in all).

use grist_gguf::GgmlType;
use grist_kernels::matmul::matmul_prequantized_with;
use grist_kernels::probe::ReadProbe;
use std::time::Instant;

mod streamed;
use streamed::Streamed;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let s = Streamed::from_args(&args, (9728, 2560, 2, 70, GgmlType::Q4_K));
    let passes = args.get(5).map_or(20, |a| a.parse().unwrap()).max(1);
    let (rows, table, scratch) = (s.rows, s.table, &s.scratch);
    let read_probe = ReadProbe::new(s.bytes());
    let matrices = s.matrices();
    let mut y = vec![0.0f32; rows];
    let pool = s.pool();
    pool.install(|| {
        let (mut gemv, mut probe, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..passes {
            let t = Instant::now();
            for m in &matrices {
                matmul_prequantized_with(table, m, scratch, &mut y).unwrap();
            }
            let g = s.bytes() as f64 / t.elapsed().as_secs_f64() / 1e9;
            let p = read_probe.measure(1);
            println!(
                "products {g:5.1} GB/s, probe {p:5.1} GB/s, {:5.1} %",
                100.0 * g / p
            );
            gemv.push(g);
            probe.push(p);
            ratio.push(g / p);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "median: products {:.1} GB/s, probe {:.1} GB/s, share {:.1} % (pass by pass)",
            median(&mut gemv),
            median(&mut probe),
            100.0 * median(&mut ratio)
        );
    });
}

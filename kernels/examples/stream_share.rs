//! How close the token-generation product comes to the memory bus, measured at the same
//! moment: alternates a pass of `n = 1` products over `COPIES` copies of one weight matrix
//! (back to back, through the matmul driver, the worker pool and the table's `gemv` kernel, so
//! the weights stream from DRAM as in a token with no serial work between products) with
//! the DRAM read probe (`probe::read_bandwidth`) on a buffer of the same size, `PASSES` times.
//! The host's bandwidth drifts by 2× within minutes, so only ratios taken pass by pass mean
//! anything; it prints the median of those ratios.
//!
//! `cargo run --release -p grist-kernels --example stream_share [-- ROWS COLS THREADS COPIES FORMAT PASSES]`
//! (defaults: 9728 2560 2 70 Q4_K 20, Qwen3-4B's `ffn_up`, 980 MB in all).

use grist_gguf::GgmlType;
use grist_kernels::dispatch::kernels;
use grist_kernels::formats;
use grist_kernels::matmul::{
    matmul_prequantized_with, quantize_activations_with, ActivationScratch, QMatrix,
};
use grist_kernels::probe::read_bandwidth;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().unwrap());
    let (rows, cols, threads, copies) = (num(0, 9728), num(1, 2560), num(2, 2), num(3, 70).max(1));
    let ty = match args.get(4) {
        None => GgmlType::Q4_K,
        Some(name) => GgmlType::all()
            .find(|t| t.to_string().eq_ignore_ascii_case(name))
            .expect("unknown FORMAT"),
    };
    let passes = num(5, 20).max(1);
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
        let (mut gemv, mut probe, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..passes {
            let t = Instant::now();
            for m in &matrices {
                matmul_prequantized_with(table, m, &scratch, &mut y).unwrap();
            }
            let g = data.len() as f64 / t.elapsed().as_secs_f64() / 1e9;
            let p = read_bandwidth(data.len(), 1);
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

//! Prompt-processing matmul speed per weight format, in **CPU time** (immune to other
//! processes stealing the core on a shared machine; wall time is printed too):
//! the table's panel GEMM (`panel`, AVX-512 VNNI, see `grist_kernels::panel`) vs the same
//! table without it (`tiled`: the per-format tiled product) and without either (`vec_dot`: one
//! `vec_dot` per output), and token generation (`n = 1`) GB/s. For a format with an
//! interleaved layout (`Q4_K_R16`, `Q6_K_R16`; `ROWS` a multiple of 16) also the same matrix
//! interleaved: its token-generation kernel (`gemv R16`; for Q6_K on a CPU with GFNI also the
//! kernel without it, `gemv R16 no-gfni`) and the panel GEMM unpacking the interleaved groups
//! (`panel R16`, the prompt path of a repacked file).
//!
//! `cargo run --release -p grist-kernels --example gemm_speed [-- ROWS COLS N THREADS [FORMAT]]`
//! (defaults: 896 896 128 1, a qwen2.5-0.5b attention matrix and a 128-token batch).
mod cputime;
use cputime::time;

use grist_gguf::GgmlType;
use grist_kernels::dispatch::{select, Isa, Kernels};
use grist_kernels::formats;
use grist_kernels::matmul::{matmul_with, ActivationScratch, QMatrix};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(896);
    let cols = args.get(1).copied().unwrap_or(896);
    let n = args.get(2).copied().unwrap_or(128);
    let threads = args.get(3).copied().unwrap_or(1);
    let table: &Kernels = select(Isa::detect_best()).expect("best ISA");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    println!(
        "isa {} rows {rows} cols {cols} n {n} threads {threads}",
        table.isa()
    );
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q5_1,
        GgmlType::IQ4_NL,
    ];
    // Optional 5th argument: only the formats whose name contains it (e.g. `Q4_`).
    let only = std::env::args().nth(5).unwrap_or_default();
    let types: Vec<GgmlType> = types
        .into_iter()
        .filter(|t| t.to_string().contains(&only))
        .collect();
    let x: Vec<f32> = (0..n * cols)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0)
        .collect();
    for ty in types {
        // Rows hold whole blocks: 896 columns (qwen2.5-0.5b) suit the 32-value formats but
        // not the 256-value k-quants.
        if !cols.is_multiple_of(ty.block_elems()) {
            println!(
                "{ty:5}  SKIPPED: {cols} columns are not whole {}-value blocks",
                ty.block_elems()
            );
            continue;
        }
        let rb = cols / ty.block_elems() * ty.block_bytes();
        let mut data = vec![0u8; rows * rb];
        for r in 0..rows {
            let w: Vec<f32> = (0..cols)
                .map(|i| (((i + 31 * r) * 104729 % 997) as f32 - 498.0) / 300.0)
                .collect();
            formats::quantize_row(ty, &w, &mut data[r * rb..(r + 1) * rb]).unwrap();
        }
        let m = QMatrix::new(ty, &data, rows, cols).unwrap();
        let mut tiled = table.clone();
        tiled.set_panel_gemm(None);
        let mut plain = tiled.clone();
        let vd = table.entry(ty).unwrap().vec_dot;
        plain.set_vec_dot(ty, vd);
        let mut s = ActivationScratch::new();
        let mut y = vec![0.0f32; n * rows];
        let gop = 2.0 * (rows * cols * n) as f64 / 1e9;
        let mut line = format!("{:5}", ty.to_string());
        for (name, tbl) in [("panel", table), ("tiled", &tiled), ("vec_dot", &plain)] {
            let (c, w) =
                pool.install(|| time(|| matmul_with(tbl, &m, &x, n, &mut y, &mut s).unwrap()));
            line += &format!(
                "  {name}: {:7.1} GOPS/cpu-s ({:7.1} wall)",
                gop / c,
                gop / w
            );
        }
        let mut y1 = vec![0.0f32; rows];
        let gb = data.len() as f64 / 1e9;
        for (name, tbl) in [("gemv", table), ("gemv vec_dot", &plain)] {
            let (c, w) = pool
                .install(|| time(|| matmul_with(tbl, &m, &x[..cols], 1, &mut y1, &mut s).unwrap()));
            line += &format!("  {name}: {:6.1} GB/cpu-s ({:6.1} wall)", gb / c, gb / w);
        }
        let r16 = GgmlType::all().find(|t| t.interleaved() == Some((ty, 16)));
        if let Some(r16) = r16.filter(|_| rows.is_multiple_of(16)) {
            let mut inter = vec![0u8; data.len()];
            // The two-block layouts (Q8_0_R16, Q4_1_R16, Q5_0_R16) also need whole 64-value
            // columns: say so instead of measuring.
            if let Err(e) = formats::interleaved::interleave(r16, &data, rb, &mut inter) {
                println!("{line}  ({r16} skipped: {e})");
                continue;
            }
            let mi = QMatrix::new(r16, &inter, rows, cols).unwrap();
            let (c, w) = pool.install(|| {
                time(|| matmul_with(table, &mi, &x[..cols], 1, &mut y1, &mut s).unwrap())
            });
            line += &format!("  gemv R16: {:6.1} GB/cpu-s ({:6.1} wall)", gb / c, gb / w);
            if let Some(no_gfni) = q6_k_r16_without_gfni(table, r16) {
                let (c, w) = pool.install(|| {
                    time(|| matmul_with(&no_gfni, &mi, &x[..cols], 1, &mut y1, &mut s).unwrap())
                });
                line += &format!(
                    "  gemv R16 no-gfni: {:6.1} GB/cpu-s ({:6.1} wall)",
                    gb / c,
                    gb / w
                );
            }
            let (c, w) =
                pool.install(|| time(|| matmul_with(table, &mi, &x, n, &mut y, &mut s).unwrap()));
            line += &format!(
                "  panel R16: {:7.1} GOPS/cpu-s ({:7.1} wall)",
                gop / c,
                gop / w
            );
        }
        println!("{line}");
    }
}

/// For `Q6_K_R16` on an AVX-512 table with GFNI: the table with the Q6_K_R16 kernel that
/// does without GFNI (what a CPU lacking it runs).
#[cfg(target_arch = "x86_64")]
fn q6_k_r16_without_gfni(table: &Kernels, ty: GgmlType) -> Option<Kernels> {
    fn gemv(w: &[u8], _row_bytes: usize, act: &[u8], out: &mut [f32]) {
        let a: Vec<grist_kernels::blocks::BlockQ8_K> = act
            .chunks_exact(std::mem::size_of::<grist_kernels::blocks::BlockQ8_K>())
            .map(bytemuck::pod_read_unaligned)
            .collect();
        // SAFETY: only installed into an AVX-512 table (checked below).
        unsafe { grist_kernels::simd::x86::interleaved_avx512::gemv_q6_k_r16(w, &a, out) }
    }
    let applies = ty == GgmlType::Q6_K_R16 && table.isa() == Isa::Avx512 && table.features().gfni;
    applies.then(|| {
        let mut t = table.clone();
        t.set_gemv(ty, gemv);
        t
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn q6_k_r16_without_gfni(_table: &Kernels, _ty: GgmlType) -> Option<Kernels> {
    None
}

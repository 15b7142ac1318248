//! Token-generation speed of the interleaved layouts (`grist_kernels::formats::interleaved`)
//! against their base types on the same matrix, in **CPU time** (wall time in parentheses),
//! through the matmul driver with the best kernel table: each interleaved type's own `gemv`
//! vs the base type's `gemv`, alternated over `ROUNDS` rounds. With `N > 1` it also times a
//! prompt-sized product (`n = N`), where the interleaved matrix is de-interleaved before the
//! base type's kernels run. The outputs are checked against each other first.
//!
//! ```sh
//! cargo run --release -p grist-kernels --example interleaved_speed -- ROWS COLS [THREADS [N [TYPE]]]
//! ```
//! e.g. `65536 640` (gemma-3-270m's tied output, 42 MB of Q8_0), `2048 2560`, `1536 576`
//! (SmolLM2-135M's ffn_gate, 0.55 MB of Q4_1, in L2) or `4864 896` (qwen2.5-0.5b's ffn
//! gate/up, Q5_0); `TYPE` keeps the interleaved types whose name contains it (`Q8_0`, `Q4_1`,
//! `Q5_0`). Q8_0_R16, Q4_1_R16 and Q5_0_R16 need `COLS` a multiple of 64.
mod cputime;
use cputime::time;

use grist_gguf::GgmlType;
use grist_kernels::dispatch::{select, Isa};
use grist_kernels::formats::{self, interleaved};
use grist_kernels::matmul::{matmul_with, ActivationScratch, QMatrix};

/// Alternated measurements of each pair.
const ROUNDS: usize = 2;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (rows, cols, threads, n) = (num(0, 65536), num(1, 640), num(2, 1), num(3, 1));
    let only = args.get(4).cloned().unwrap_or_default();
    let table = select(Isa::detect_best()).expect("best ISA");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    println!(
        "isa {} rows {rows} cols {cols} threads {threads} n {n}",
        table.isa()
    );
    let probe = grist_kernels::probe::ReadProbe::new(512 << 20);
    println!(
        "DRAM read probe on {threads} thread(s): {:.1} GB/s",
        pool.install(|| probe.measure(3))
    );
    drop(probe);
    let x: Vec<f32> = (0..n.max(1) * cols)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0)
        .collect();
    for ty in GgmlType::all().filter(|t| t.name().contains(&only)) {
        let Some((base, group)) = ty.interleaved() else {
            continue;
        };
        if !cols.is_multiple_of(ty.block_elems()) || !rows.is_multiple_of(group) {
            println!("{ty}: SKIPPED, {rows}×{cols} is not whole groups and blocks");
            continue;
        }
        let rb = cols / base.block_elems() * base.block_bytes();
        let mut plain = vec![0u8; rows * rb];
        for (r, row) in plain.chunks_exact_mut(rb).enumerate() {
            let w: Vec<f32> = (0..cols)
                .map(|i| (((i + 31 * r) * 104729 % 997) as f32 - 498.0) / 300.0)
                .collect();
            formats::quantize_row(base, &w, row).unwrap();
        }
        let mut inter = vec![0u8; plain.len()];
        interleaved::interleave(ty, &plain, rb, &mut inter).unwrap();
        let wp = QMatrix::new(base, &plain, rows, cols).unwrap();
        let wi = QMatrix::new(ty, &inter, rows, cols).unwrap();
        let mut s = ActivationScratch::new();
        let (mut yp, mut yi) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        let mut run = |m: &QMatrix<'_>, k: usize, y: &mut Vec<f32>| {
            y.resize(k * rows, 0.0);
            pool.install(|| time(|| matmul_with(table, m, &x[..k * cols], k, y, &mut s).unwrap()))
        };
        // The same products up to float rounding (relative to the largest output).
        run(&wp, 1, &mut yp);
        run(&wi, 1, &mut yi);
        let top = yp.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = yp
            .iter()
            .zip(&yi)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "{ty} vs {base}: {:.1} MB, max |difference| {:.2e} of max |y| {top:.2e}",
            plain.len() as f64 / 1e6,
            diff
        );
        let gb = plain.len() as f64 / 1e9;
        let gop = 2.0 * (rows * cols * n) as f64 / 1e9;
        for round in 0..ROUNDS {
            let mut line = format!("  round {round}: gemv GB/cpu-s");
            let mut speeds = [0.0; 2];
            for (k, (name, m)) in [(base, &wp), (ty, &wi)].into_iter().enumerate() {
                let (c, w) = run(m, 1, &mut yp);
                speeds[k] = gb / c;
                line += &format!("  {name} {:6.1} ({:6.1} wall)", gb / c, gb / w);
            }
            line += &format!("  ratio {:.2}", speeds[1] / speeds[0]);
            if n > 1 {
                line += &format!("  |  n {n} GOPS/cpu-s");
                for (name, m) in [(base, &wp), (ty, &wi)] {
                    let (c, w) = run(m, n, &mut yp);
                    line += &format!("  {name} {:6.1} ({:6.1} wall)", gop / c, gop / w);
                }
            }
            println!("{line}");
        }
    }
}

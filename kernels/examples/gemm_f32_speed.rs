//! Speed of the f32 GEMM behind the tiled attention (`ops.gemm_acc_f32`, `c += a·b`), one
//! thread, with the table of the best ISA, at the shapes one attention run uses.
//!
//! `cargo run --release -p grist-kernels --example gemm_f32_speed [-- M N K]` (without
//! arguments: gemma-3's and qwen2.5's score and value products for a run of 4 queries).
use grist_kernels::dispatch::kernels;
use grist_kernels::ops::GemmDims;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let shapes: Vec<(&str, [usize; 3])> = if args.len() >= 3 {
        vec![("custom", [args[0], args[1], args[2]])]
    } else {
        vec![
            ("gemma scores (16×64, k 256)", [16, 64, 256]),
            ("gemma values (16×256, k 64)", [16, 256, 64]),
            ("qwen scores (28×64, k 64)", [28, 64, 64]),
            ("qwen values (28×64, k 64)", [28, 64, 64]),
        ]
    };
    let ops = &kernels().ops;
    for (name, [m, n, k]) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect(); // [m, k]
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect(); // [k, n]
        let mut c = vec![0.0f32; m * n]; // [m, n]
        let dims = GemmDims {
            m,
            n,
            k,
            lda: k,
            ldb: n,
            ldc: n,
        };
        let calls = (2_000_000_000 / (2 * m * n * k)).max(10);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..calls {
                (ops.gemm_acc_f32)(dims, &a, &b, &mut c);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gflops = (2 * m * n * k * calls) as f64 / best / 1e9;
        println!("{} {name}: {gflops:.1} GFLOP/s", kernels().isa().name());
        std::hint::black_box(&c);
    }
}

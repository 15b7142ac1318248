//! Matmul against a naive reference, for every weight type and every ISA this CPU has, plus
//! determinism across thread counts and the error paths.

use grist_gguf::GgmlType;
use grist_kernels::dispatch::{self, Isa, Kernels};
use grist_kernels::formats;
use grist_kernels::matmul::{
    self, matmul_prequantized_with, matmul_with, quantize_activations_with, ActivationScratch,
    MatmulError, QMatrix,
};

/// xorshift64*: deterministic test data without a crate.
struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40; // 24 bits
        bits as f32 / (1u64 << 23) as f32 - 1.0 // [-1, 1)
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

const TYPES: [GgmlType; 15] = grist_kernels::formats::WEIGHT_TYPES;

fn tables() -> Vec<&'static Kernels> {
    Isa::ALL
        .into_iter()
        .filter_map(|isa| match dispatch::select(isa) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("SKIPPED: {isa}: {e}");
                None
            }
        })
        .collect()
}

/// Quantized weights `[rows, cols]` of `ty` built from random f32 values.
fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let row_bytes = cols / ty.block_elems() * ty.block_bytes();
    let mut data = vec![0u8; rows * row_bytes];
    for r in 0..rows {
        let w = rng.vec(cols, 0.5);
        formats::quantize_row(ty, &w, &mut data[r * row_bytes..(r + 1) * row_bytes]).unwrap();
    }
    data
}

/// Naive reference: dequantized weights · (activations quantized then dequantized), in f64.
/// Returns (y, Σ|w·a| per output) — the latter scales the tolerance.
fn reference(w: &QMatrix<'_>, x: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
    let cols = w.cols();
    let act = w.act_type();
    let act_row_bytes = cols / act.block_elems() * act.block_bytes();
    let mut y = vec![0.0; n * w.rows()];
    let mut mag = vec![0.0; n * w.rows()];
    let mut wrow = vec![0.0f32; cols];
    let mut arow = vec![0.0f32; cols];
    let mut qa = vec![0u8; act_row_bytes];
    for t in 0..n {
        formats::quantize_row(act, &x[t * cols..(t + 1) * cols], &mut qa).unwrap();
        formats::dequantize_row(act, &qa, &mut arow).unwrap();
        for r in 0..w.rows() {
            matmul::dequantize_row_into(w.ty(), w.row(r), &mut wrow).unwrap();
            let (mut s, mut m) = (0.0f64, 0.0f64);
            for (a, b) in wrow.iter().zip(&arow) {
                s += *a as f64 * *b as f64;
                m += (*a as f64 * *b as f64).abs();
            }
            // Q8_1 activations carry `s = d·Σq` rounded to f16, which multiplies the weight
            // block's minimum: allow that rounding (half an f16 ulp, 2⁻¹¹ relative) per block.
            if act == GgmlType::Q8_1 {
                let bb = w.ty().block_bytes();
                for (b, blk) in w.row(r).chunks_exact(bb).enumerate() {
                    let min = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32() as f64;
                    let block_sum: f64 = arow[b * 32..(b + 1) * 32].iter().map(|&v| v as f64).sum();
                    m += (min * block_sum).abs() * 2f64.powi(-11) / 1e-5;
                }
            }
            y[t * w.rows() + r] = s;
            mag[t * w.rows() + r] = m;
        }
    }
    (y, mag)
}

#[test]
fn matmul_matches_naive_reference_for_every_type_and_isa() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let tables = tables();
    for ty in TYPES {
        // Two row lengths: one block-group minimum and a longer one; 37 rows leaves a partial
        // parallel chunk.
        for &cols in &[256usize, 768] {
            let rows = 37;
            let data = weights(ty, rows, cols, &mut rng);
            let w = QMatrix::new(ty, &data, rows, cols).unwrap();
            for &n in &[1usize, 3] {
                let x = rng.vec(n * cols, 2.0);
                let (want, mag) = reference(&w, &x, n);
                for table in &tables {
                    let mut y = vec![f32::NAN; n * rows];
                    let mut scratch = ActivationScratch::new();
                    matmul_with(table, &w, &x, n, &mut y, &mut scratch).unwrap();
                    for i in 0..y.len() {
                        // Integer block sums are exact; only float scale products and their
                        // summation order differ from the f64 reference.
                        let tol = 1e-5 * mag[i] + 1e-6;
                        let err = (y[i] as f64 - want[i]).abs();
                        assert!(
                            err <= tol,
                            "{ty} {} cols {cols} n {n} out {i}: got {} want {} (err {err:e}, tol {tol:e})",
                            table.isa(),
                            y[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn scalar_matmul_is_exactly_the_reference_vec_dot() {
    let mut rng = Rng(42);
    let table = dispatch::select(Isa::Scalar).unwrap();
    for ty in TYPES {
        let (rows, cols, n) = (9, 512, 2);
        let data = weights(ty, rows, cols, &mut rng);
        let w = QMatrix::new(ty, &data, rows, cols).unwrap();
        let x = rng.vec(n * cols, 1.0);
        let mut scratch = ActivationScratch::new();
        let mut y = vec![0.0; n * rows];
        matmul_with(table, &w, &x, n, &mut y, &mut scratch).unwrap();
        for t in 0..n {
            for r in 0..rows {
                let want = formats::vec_dot_row(ty, cols, w.row(r), scratch.row(t)).unwrap();
                assert_eq!(
                    y[t * rows + r].to_bits(),
                    want.to_bits(),
                    "{ty} t {t} r {r}"
                );
            }
        }
    }
}

#[test]
fn results_are_bit_identical_for_any_thread_count() {
    let mut rng = Rng(7);
    let best = dispatch::select(Isa::detect_best()).unwrap();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ] {
        let (rows, cols) = (203, 512);
        let data = weights(ty, rows, cols, &mut rng);
        let w = QMatrix::new(ty, &data, rows, cols).unwrap();
        for n in [1usize, 5] {
            let x = rng.vec(n * cols, 1.0);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut y = vec![0.0f32; n * rows];
                    let mut scratch = ActivationScratch::new();
                    matmul_with(best, &w, &x, n, &mut y, &mut scratch).unwrap();
                    y.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
                })
            };
            let one = run(1);
            assert_eq!(one, run(2), "{ty} n {n}: 1 vs 2 threads");
            assert_eq!(one, run(3), "{ty} n {n}: 1 vs 3 threads");
        }
    }
}

#[test]
fn prequantized_activations_serve_several_matrices() {
    let mut rng = Rng(11);
    let table = dispatch::select(Isa::detect_best()).unwrap();
    let (cols, n) = (256, 4);
    let dq = weights(GgmlType::Q4_0, 16, cols, &mut rng);
    let dk = weights(GgmlType::Q8_0, 8, cols, &mut rng);
    let wq = QMatrix::new(GgmlType::Q4_0, &dq, 16, cols).unwrap();
    let wk = QMatrix::new(GgmlType::Q8_0, &dk, 8, cols).unwrap();
    let x = rng.vec(n * cols, 1.0);
    let mut scratch = ActivationScratch::with_capacity(GgmlType::Q8_0, n, cols).unwrap();
    quantize_activations_with(table, GgmlType::Q8_0, &x, n, cols, &mut scratch).unwrap();
    let (mut yq, mut yk) = (vec![0.0; n * 16], vec![0.0; n * 8]);
    matmul_prequantized_with(table, &wq, &scratch, &mut yq).unwrap();
    matmul_prequantized_with(table, &wk, &scratch, &mut yk).unwrap();
    let (mut yq2, mut yk2) = (vec![0.0; n * 16], vec![0.0; n * 8]);
    let mut s2 = ActivationScratch::new();
    matmul_with(table, &wq, &x, n, &mut yq2, &mut s2).unwrap();
    matmul_with(table, &wk, &x, n, &mut yk2, &mut s2).unwrap();
    assert_eq!(yq, yq2);
    assert_eq!(yk, yk2);

    // A Q4_K matrix needs Q8_K activations: a clear error, not garbage.
    let d4k = weights(GgmlType::Q4_K, 2, cols, &mut rng);
    let w4k = QMatrix::new(GgmlType::Q4_K, &d4k, 2, cols).unwrap();
    let err = matmul_prequantized_with(table, &w4k, &scratch, &mut [0.0; 8]).unwrap_err();
    assert_eq!(
        err,
        MatmulError::ActivationType {
            expected: GgmlType::Q8_K,
            actual: Some(GgmlType::Q8_0)
        }
    );
    assert!(err.to_string().contains("Q8_K"), "{err}");
}

#[test]
fn bad_shapes_are_errors() {
    let data = vec![0u8; 2 * 34];
    assert!(QMatrix::new(GgmlType::Q8_0, &data, 2, 32).is_ok());
    assert_eq!(
        QMatrix::new(GgmlType::Q8_0, &data, 2, 64).unwrap_err(),
        MatmulError::DataSize {
            expected: 136,
            actual: 68
        }
    );
    assert!(matches!(
        QMatrix::new(GgmlType::Q8_0, &data, 1, 48),
        Err(MatmulError::NotBlockMultiple { .. })
    ));
    assert_eq!(
        QMatrix::new(GgmlType::IQ2_XXS, &[], 0, 256).unwrap_err(),
        MatmulError::Unsupported(GgmlType::IQ2_XXS)
    );
    assert_eq!(
        QMatrix::new(GgmlType::Q8_0, &data, usize::MAX, 32).unwrap_err(),
        MatmulError::Overflow
    );
    let w = QMatrix::new(GgmlType::Q8_0, &data, 2, 32).unwrap();
    let table = dispatch::select(Isa::Scalar).unwrap();
    let mut scratch = ActivationScratch::new();
    // x too short, y too short.
    assert!(matches!(
        matmul_with(table, &w, &[0.0; 31], 1, &mut [0.0; 2], &mut scratch),
        Err(MatmulError::Shape {
            what: "activations x",
            ..
        })
    ));
    assert!(matches!(
        matmul_with(table, &w, &[0.0; 32], 1, &mut [0.0; 3], &mut scratch),
        Err(MatmulError::Shape {
            what: "output y",
            ..
        })
    ));
    // Nothing quantized yet.
    assert!(matches!(
        matmul_prequantized_with(table, &w, &ActivationScratch::new(), &mut [0.0; 2]),
        Err(MatmulError::ActivationType { actual: None, .. })
    ));
    // n = 0 is a no-op.
    matmul_with(table, &w, &[], 0, &mut [], &mut scratch).unwrap();
}

#[test]
fn misaligned_weight_bytes_still_work() {
    // GGUF data is aligned, but a view at an odd offset must not fail or misread.
    let mut rng = Rng(5);
    let (rows, cols) = (3, 64);
    let data = weights(GgmlType::Q8_0, rows, cols, &mut rng);
    let mut shifted = vec![0u8; data.len() + 1];
    shifted[1..].copy_from_slice(&data);
    let x = rng.vec(cols, 1.0);
    for table in tables() {
        let a = QMatrix::new(GgmlType::Q8_0, &data, rows, cols).unwrap();
        let b = QMatrix::new(GgmlType::Q8_0, &shifted[1..], rows, cols).unwrap();
        let (mut ya, mut yb) = (vec![0.0; rows], vec![0.0; rows]);
        let mut s = ActivationScratch::new();
        matmul_with(table, &a, &x, 1, &mut ya, &mut s).unwrap();
        matmul_with(table, &b, &x, 1, &mut yb, &mut s).unwrap();
        assert_eq!(ya, yb, "{}", table.isa());
    }
}

/// Rough speed print (not an assertion; run with `--ignored --nocapture`): token-generation
/// matmul of a 4096×4096 matrix, weight bytes streamed per second.
#[test]
#[ignore]
fn gemv_throughput_print() {
    let mut rng = Rng(99);
    let (rows, cols) = (4096, 4096);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let row = rng.vec(cols, 0.5);
        let rb = cols / ty.block_elems() * ty.block_bytes();
        let mut one = vec![0u8; rb];
        formats::quantize_row(ty, &row, &mut one).unwrap();
        let data: Vec<u8> = one.iter().copied().cycle().take(rows * rb).collect();
        let w = QMatrix::new(ty, &data, rows, cols).unwrap();
        let x = rng.vec(cols, 1.0);
        let mut y = vec![0.0; rows];
        let mut s = ActivationScratch::new();
        for table in tables() {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t0 = std::time::Instant::now();
                matmul_with(table, &w, &x, 1, &mut y, &mut s).unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            eprintln!(
                "{ty} {:>6}: {:7.3} ms  {:6.1} GB/s",
                table.isa().name(),
                best * 1e3,
                data.len() as f64 / best / 1e9
            );
        }
    }
}

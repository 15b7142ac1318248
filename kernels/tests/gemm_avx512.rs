//! The AVX-512 tiled products (`simd::x86::gemm_avx512`), for every tile shape and remainder
//! (weight rows 1..=7, activation rows 1..=13, row lengths with odd block counts), on
//! quantized random data and on raw random bytes (every code and scale pattern, NaN/∞ scales
//! included):
//! - every output has **the same bits** whatever tile computed it (compared with a 1×1 call);
//! - Q6_K: the same bits as the single-row AVX-512 `vec_dot` (tested against the scalar
//!   references in `simd_x86.rs`);
//! - Q4_K, Q5_K and the 32-value formats (another float order than `vec_dot`): within the
//!   reordered-summation bound of the scalar reference `formats::vec_dot_row`.
//!
//! Then through the matmul driver: a batch gives the same bits as the same tokens one at a
//! time, for 1, 2 and 3 threads (and, for Q6_K, as the `vec_dot` fallback path).

#![cfg(target_arch = "x86_64")]

mod common;

use common::{same, weights, Rng};
use grist_gguf::GgmlType;
use grist_kernels::dispatch::{select, Isa, Kernels};
use grist_kernels::formats;
use grist_kernels::matmul::{matmul_with, ActivationScratch, QMatrix};
use grist_kernels::simd::x86::gemm_avx512::gemm_bytes;

const TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn avx512() -> Option<&'static Kernels> {
    match select(Isa::Avx512) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("SKIPPED: AVX-512 tiled products: {e}");
            None
        }
    }
}

/// Quantized activations `[n, cols]` for `ty`, with the table's quantizer.
fn activations(rng: &mut Rng, table: &Kernels, ty: GgmlType, n: usize, cols: usize) -> Vec<u8> {
    let entry = table.entry(ty).unwrap();
    let at = entry.act_type;
    let rb = cols / at.block_elems() * at.block_bytes();
    let mut out = vec![0u8; n * rb];
    for t in 0..n {
        let x = rng.vec(cols, [0.5f32, 3.0, 100.0][t % 3]);
        (entry.quantize_act)(&x, &mut out[t * rb..(t + 1) * rb]);
    }
    out
}

/// Formats whose tile sums in exactly `vec_dot`'s float order (same bits). The Q4_K / Q5_K
/// `vec_dot` uses `vpdpbusd` with another lane grouping than the tile.
fn same_order_as_vec_dot(ty: GgmlType) -> bool {
    ty == GgmlType::Q6_K
}

/// `Σ_b (|d_b|·Σ_j s_j·Σ_{i∈j} q_i·|y_i| + |dmin_b|·Σ_j m_j·Σ_{i∈j} |y_i|)` of a Q4_K or
/// (`five`) Q5_K row against dequantized activations `y`: the magnitude of the two products
/// that these kernels sum separately (their difference, the dequantized product, can cancel).
fn k4_terms(w: &[u8], y: &[f32], five: bool) -> f64 {
    let f16 = |b: &[u8], o: usize| half::f16::from_le_bytes([b[o], b[o + 1]]).to_f64();
    let block = if five { 176 } else { 144 };
    let mut m = 0.0;
    for (wb, yb) in w.chunks_exact(block).zip(y.chunks_exact(256)) {
        let (d, dmin, p) = (f16(wb, 0), f16(wb, 2), &wb[4..16]);
        let (qh, qs) = if five {
            (&wb[16..48], &wb[48..])
        } else {
            (&wb[16..16], &wb[16..])
        };
        for j in 0..8 {
            let (s, mn) = if j < 4 {
                (p[j] & 63, p[j + 4] & 63)
            } else {
                (
                    (p[j + 4] & 0x0F) | ((p[j - 4] >> 6) << 4),
                    (p[j + 4] >> 4) | ((p[j] >> 6) << 4),
                )
            };
            for i in 0..32 {
                let byte = qs[32 * (j / 2) + i];
                let mut q = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                if five {
                    q += 16 * (qh[i] >> j & 1);
                }
                let ay = yb[32 * j + i].abs() as f64;
                m += (d * s as f64 * q as f64).abs() * ay + (dmin * mn as f64).abs() * ay;
            }
        }
    }
    m
}

/// `(n_terms + 16) · 2^-22 · M` with `M = Σ |w_i·a_i|` over the dequantized values plus
/// `Σ |m_b·s_b|` for Q4_1: the bound for a reordered float summation.
fn tolerance(ty: GgmlType, w: &[u8], a: &[u8], cols: usize) -> f64 {
    let at = formats::activation_type(ty).unwrap();
    let (mut wf, mut af) = (vec![0.0f32; cols], vec![0.0f32; cols]);
    formats::dequantize_row(ty, w, &mut wf).unwrap();
    formats::dequantize_row(at, a, &mut af).unwrap();
    let mut m: f64 = wf
        .iter()
        .zip(&af)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum();
    if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K) {
        m += k4_terms(w, &af, ty == GgmlType::Q5_K);
    }
    if ty == GgmlType::Q4_1 {
        let f16 = |b: &[u8], o: usize| half::f16::from_le_bytes([b[o], b[o + 1]]).to_f64();
        for (wb, ab) in w.chunks_exact(20).zip(a.chunks_exact(36)) {
            m += (f16(wb, 2) * f16(ab, 2)).abs() + (f16(wb, 0) * f16(ab, 0)).abs() * 4096.0;
        }
    }
    let n_terms = (cols / 32 + 16) as f64;
    n_terms * m / (1u64 << 22) as f64
}

#[test]
fn tiles_are_tile_independent_and_match_the_references() {
    let Some(table) = avx512() else { return };
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for ty in TYPES {
        let blocks: &[usize] = if ty.block_elems() == 32 {
            &[1, 2, 3, 4, 5, 7, 8, 13]
        } else {
            &[1, 2, 3]
        };
        let entry = table.entry(ty).unwrap();
        assert!(entry.gemm.is_some(), "{ty}: no tiled product installed");
        for &nb in blocks {
            let cols = nb * ty.block_elems();
            for raw in [false, true] {
                for (n_w, n_a) in [(1, 1), (2, 4), (3, 5), (7, 13), (4, 6), (5, 1), (1, 9)] {
                    let w = weights(&mut rng, ty, n_w, cols, raw);
                    let a = activations(&mut rng, table, ty, n_a, cols);
                    let (wrb, arb) = (w.len() / n_w, a.len() / n_a);
                    let mut out = vec![f32::NAN; n_w * n_a];
                    // SAFETY: `select(Avx512)` succeeded, so the CPU has the features.
                    unsafe { gemm_bytes(ty, &w, wrb, &a, arb, &mut out) }.unwrap();
                    for t in 0..n_a {
                        for r in 0..n_w {
                            let (wr, ar) = (&w[r * wrb..(r + 1) * wrb], &a[t * arb..(t + 1) * arb]);
                            let got = out[t * n_w + r];
                            let mut alone = [f32::NAN];
                            // SAFETY: as above.
                            unsafe { gemm_bytes(ty, wr, wrb, ar, arb, &mut alone) }.unwrap();
                            let what =
                                format!("{ty} nb={nb} raw={raw} tile {n_w}×{n_a} [{t}][{r}]");
                            assert!(
                                same(got, alone[0]),
                                "{what}: {got:e} but 1×1 gives {:e}",
                                alone[0]
                            );
                            if same_order_as_vec_dot(ty) {
                                let want = (entry.vec_dot)(wr, ar);
                                assert!(same(got, want), "{what}: {got:e}, vec_dot = {want:e}");
                            } else if !raw {
                                let want = formats::vec_dot_row(ty, cols, wr, ar).unwrap();
                                let tol = tolerance(ty, wr, ar, cols);
                                assert!(
                                    (got as f64 - want as f64).abs() <= tol,
                                    "{what}: {got:e}, scalar {want:e}, tolerance {tol:e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn batched_matmul_is_thread_count_invariant_and_matches_token_by_token() {
    let Some(table) = avx512() else { return };
    // This test is about the per-format tiles: switch the panel GEMM (which takes precedence
    // for n > 1 and is tested in tests/panel.rs) off.
    let mut tiles_only = table.clone();
    tiles_only.set_panel_gemm(None);
    let table = &tiles_only;
    let mut rng = Rng(0xfeed_beef_0bad_cafe);
    let mut fallback = table.clone();
    for ty in TYPES {
        let vd = table.entry(ty).unwrap().vec_dot;
        fallback.set_vec_dot(ty, vd); // drops the tiled product
        assert!(fallback.entry(ty).unwrap().gemm.is_none());
    }
    for ty in TYPES {
        let (rows, cols, n) = (45, 2 * 256, 70);
        let data = weights(&mut rng, ty, rows, cols, false);
        let m = QMatrix::new(ty, &data, rows, cols).unwrap();
        let x = rng.vec(n * cols, 2.0);
        // Token by token (n = 1 path).
        let mut one = vec![0.0f32; n * rows];
        let mut s = ActivationScratch::new();
        for t in 0..n {
            matmul_with(
                table,
                &m,
                &x[t * cols..(t + 1) * cols],
                1,
                &mut one[t * rows..(t + 1) * rows],
                &mut s,
            )
            .unwrap();
        }
        // The batched product: bit-identical for any thread count; equal to token-by-token
        // bit for bit where the tile sums in vec_dot's order (Q6_K), and up to float
        // reordering otherwise (token generation uses vec_dot, the batch the tiles).
        let tables: &[(&str, &Kernels)] = if same_order_as_vec_dot(ty) {
            &[("tiled", table), ("fallback", &fallback)]
        } else {
            &[("tiled", table)]
        };
        // Float reordering error scales with the magnitude of the terms, not of the (possibly
        // cancelling) sum: bound it relative to the largest output of the matrix.
        let scale = one.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for &(name, tbl) in tables {
            let mut first: Option<Vec<f32>> = None;
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut y = vec![f32::NAN; n * rows];
                pool.install(|| matmul_with(tbl, &m, &x, n, &mut y, &mut s))
                    .unwrap();
                for (i, (&a, &b)) in y.iter().zip(&one).enumerate() {
                    let close = if same_order_as_vec_dot(ty) {
                        same(a, b)
                    } else {
                        (a - b).abs() <= 1e-5 * (scale + b.abs())
                    };
                    assert!(
                        close,
                        "{ty} {name} {threads} threads: y[{}][{}] = {a:e}, alone {b:e}",
                        i / rows,
                        i % rows
                    );
                }
                match &first {
                    None => first = Some(y),
                    Some(f) => assert!(
                        f.iter().zip(&y).all(|(&a, &b)| same(a, b)),
                        "{ty} {name}: {threads} threads differ from 1 thread"
                    ),
                }
            }
        }
    }
}

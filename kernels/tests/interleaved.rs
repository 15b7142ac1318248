//! Interleaved weights (Q4_K_R16, Q6_K_R16, Q8_0_R16, Q4_1_R16 and Q5_0_R16,
//! `grist_kernels::formats::interleaved`), every test run for each layout (row lengths counted
//! in the layout's blocks):
//! - every table's interleaved token-generation kernel, and on x86 both Q6_K_R16 and both
//!   Q5_0_R16 kernels (with and without GFNI), against the scalar reference
//!   (`gemv_reference`: the base type's reference `vec_dot` of each de-interleaved row), on
//!   quantized random rows, raw random codes and scales, and extreme codes/scales/activations,
//!   for row lengths on both sides of the kernels' passes (64 super-blocks, 256 Q8_0, Q4_1 or
//!   Q5_0 blocks); the Q8_0_R16, Q4_1_R16 and Q5_0_R16 kernels' outputs are the reference's
//!   bits;
//! - the matmul driver: an interleaved matrix gives the plain matrix's results, bit for
//!   bit wherever the same kernels run (prompt processing, the fused gate/up product, and
//!   token generation on tables without an interleaved kernel), up to float rounding where
//!   the interleaved kernel runs; in a fused group after a matrix whose rows are not a
//!   multiple of 16; for 1–3 threads;
//! - a matrix that is not whole groups (or, for Q8_0_R16, Q4_1_R16 and Q5_0_R16, whole 64-value
//!   columns) is refused.

mod common;

use common::{same, weights, Rng};
use grist_gguf::GgmlType;
use grist_kernels::blocks::{BlockQ8_0, BlockQ8_1, BlockQ8_K, QK, QK_K};
use grist_kernels::dispatch::{select, GemvFn, Isa, Kernels};
use grist_kernels::formats::{self, interleaved};
use grist_kernels::matmul::{
    self, matmul_prequantized_gated_with, matmul_prequantized_many_with, quantize_activations_with,
    ActivationScratch, MatmulError, QMatrix,
};

/// The interleaved types and their base types.
const TYPES: [(GgmlType, GgmlType); 5] = [
    (GgmlType::Q4_K_R16, GgmlType::Q4_K),
    (GgmlType::Q6_K_R16, GgmlType::Q6_K),
    (GgmlType::Q8_0_R16, GgmlType::Q8_0),
    (GgmlType::Q4_1_R16, GgmlType::Q4_1),
    (GgmlType::Q5_0_R16, GgmlType::Q5_0),
];

/// Base-type blocks per block of the interleaved type `ty` (Q8_0_R16's 64-value column is
/// two Q8_0 blocks, Q4_1_R16's two Q4_1 blocks): row lengths in the tests count the interleaved type's blocks, so every
/// length is valid for every type.
fn base_blocks(ty: GgmlType, base: GgmlType, blocks: usize) -> usize {
    blocks * ty.block_elems() / base.block_elems()
}

/// Every table this CPU can run.
fn tables() -> Vec<&'static Kernels> {
    Isa::ALL
        .into_iter()
        .filter_map(|isa| select(isa).ok())
        .collect()
}

/// `plain` (rows of `ty`'s base type) interleaved as `ty`.
fn interleave(ty: GgmlType, plain: &[u8], rb: usize) -> Vec<u8> {
    let mut out = vec![0u8; plain.len()];
    interleaved::interleave(ty, plain, rb, &mut out).unwrap();
    out
}

/// Rows of `base` of three kinds, see [`q4_k_rows`], [`q6_k_rows`], [`q8_0_rows`] and
/// [`q4_1_rows`] or [`q5_0_rows`].
fn base_rows(base: GgmlType, rng: &mut Rng, rows: usize, blocks: usize, kind: usize) -> Vec<u8> {
    match base {
        GgmlType::Q4_K => q4_k_rows(rng, rows, blocks, kind),
        GgmlType::Q6_K => q6_k_rows(rng, rows, blocks, kind),
        GgmlType::Q8_0 => q8_0_rows(rng, rows, blocks, kind),
        GgmlType::Q4_1 => q4_1_rows(rng, rows, blocks, kind),
        GgmlType::Q5_0 => q5_0_rows(rng, rows, blocks, kind),
        _ => unreachable!("{base} has no interleaved layout"),
    }
}

/// Q6_K rows of three kinds: quantized random values (`kind` 0), raw random codes and
/// scales with finite random super-scales (1), or codes of 0 and 63 only (every `ql` and
/// `qh` byte 0x00 or 0xFF, so codes 0, 15, 48 and 63) with scales of −128 and 127 and
/// large super-scales (2).
fn q6_k_rows(rng: &mut Rng, rows: usize, blocks: usize, kind: usize) -> Vec<u8> {
    let cols = blocks * QK_K;
    let mut w = weights(rng, GgmlType::Q6_K, rows, cols, kind != 0);
    if kind != 0 {
        for block in w.chunks_exact_mut(210) {
            let d = if kind == 1 { rng.f32() * 0.01 } else { 60000.0 };
            block[208..210].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
            if kind == 2 {
                let pick = rng.u64();
                for (i, b) in block[..208].iter_mut().enumerate() {
                    *b = if i < 192 {
                        [0x00, 0xFF][(rng.u64() >> 7) as usize % 2]
                    } else {
                        [0x80, 0x7F][(pick >> (i - 192)) as usize % 2]
                    };
                }
            }
        }
    }
    w
}

/// Q4_K rows of three kinds: quantized random values (`kind` 0), raw random codes and
/// scales with finite random super-scales (1), or every code 15 and every scale and min 63
/// with large super-scales (2).
fn q4_k_rows(rng: &mut Rng, rows: usize, blocks: usize, kind: usize) -> Vec<u8> {
    let cols = blocks * QK_K;
    let mut w = weights(rng, GgmlType::Q4_K, rows, cols, kind != 0);
    if kind != 0 {
        for block in w.chunks_exact_mut(144) {
            let (d, dmin) = if kind == 1 {
                (rng.f32() * 0.01, rng.f32().abs() * 0.01)
            } else {
                (60000.0, 60000.0)
            };
            block[0..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
            block[2..4].copy_from_slice(&half::f16::from_f32(dmin).to_bits().to_le_bytes());
            if kind == 2 {
                block[4..144].fill(0xFF);
            }
        }
    }
    w
}

/// A Q8_K activation row: quantized random values (`extreme` false), or codes of ±127 and
/// -128 only, so sub-block sums reach −4096 and +4064 (the ends of the kernel's split of
/// them into two bytes); the sums always match the codes.
fn q8_k_row(rng: &mut Rng, blocks: usize, extreme: bool) -> Vec<u8> {
    let mut row: Vec<BlockQ8_K> = vec![bytemuck::Zeroable::zeroed(); blocks];
    if !extreme {
        let x = rng.vec(blocks * QK_K, 3.0);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut row);
        formats::quantize_row(GgmlType::Q8_K, &x, bytes).unwrap();
        return bytemuck::cast_slice(&row).to_vec();
    }
    for (b, y) in row.iter_mut().enumerate() {
        y.d = 1.0 / 127.0;
        for (i, q) in y.qs.iter_mut().enumerate() {
            *q = match (b + i / 32) % 3 {
                0 => -128,
                1 => 127,
                _ => [-128, 127, -127][rng.u64() as usize % 3],
            };
        }
        for j in 0..QK_K / 16 {
            y.bsums[j] = y.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
        }
    }
    bytemuck::cast_slice(&row).to_vec()
}

/// The size of the float terms one row of `base` and the values `x` it multiplies sum:
/// [`q4_k_magnitude`], [`q6_k_magnitude`], [`q8_0_magnitude`], [`q4_1_magnitude`] or
/// [`q5_0_magnitude`]. It bounds the rounding of any order of summing them.
fn magnitude(base: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    match base {
        GgmlType::Q4_K => q4_k_magnitude(row, x),
        GgmlType::Q6_K => q6_k_magnitude(row, x),
        GgmlType::Q8_0 => q8_0_magnitude(row, x),
        GgmlType::Q4_1 => q4_1_magnitude(row, x),
        GgmlType::Q5_0 => q5_0_magnitude(row, x),
        _ => unreachable!("{base} has no interleaved layout"),
    }
}

/// `Σ |d·sc·(q − 32)| · |x|` over one Q6_K row and the values `x` it multiplies.
fn q6_k_magnitude(row: &[u8], x: &[f32]) -> f32 {
    let mut w = vec![0.0f32; x.len()];
    formats::dequantize_row(GgmlType::Q6_K, row, &mut w).unwrap();
    w.iter().zip(x).map(|(w, x)| (w * x).abs()).sum()
}

/// `Σ (|d·sc·q| + |dmin·m|) · |x|` over one Q4_K row and the values `x` it multiplies: the
/// size of the two float terms (scaled codes, minimums) whose difference a super-block
/// contributes.
fn q4_k_magnitude(row: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (b, block) in row.chunks_exact(144).enumerate() {
        let f = |i: usize| half::f16::from_bits(u16::from_le_bytes([block[i], block[i + 1]]));
        let (d, dmin) = (f(0).to_f32().abs(), f(2).to_f32().abs());
        let (sc, m) = formats::scales_mins(block[4..16].try_into().unwrap());
        for (i, &xv) in x[b * QK_K..(b + 1) * QK_K].iter().enumerate() {
            let s = i / 32; // sub-block
            let byte = block[16 + 32 * (s / 2) + i % 32];
            let q = if s % 2 == 0 { byte & 15 } else { byte >> 4 };
            total += (d * sc[s] as f32 * q as f32 + dmin * m[s] as f32) * xv.abs();
        }
    }
    total
}

/// An activation row of `blocks` blocks of `base` for its activation type: [`q8_k_row`],
/// [`q8_0_act`] or [`q8_1_act`].
fn act_row(base: GgmlType, rng: &mut Rng, blocks: usize, extreme: bool) -> Vec<u8> {
    match base {
        GgmlType::Q8_0 | GgmlType::Q5_0 => q8_0_act(rng, blocks, extreme),
        GgmlType::Q4_1 => q8_1_act(rng, blocks, extreme),
        _ => q8_k_row(rng, blocks * base.block_elems() / QK_K, extreme),
    }
}

/// The values (`d · q`) of a quantized activation row for weights of type `base`.
fn act_values(base: GgmlType, a: &[u8]) -> Vec<f32> {
    let at = formats::activation_type(base).unwrap();
    let mut x = vec![0.0f32; a.len() / at.block_bytes() * at.block_elems()];
    formats::dequantize_row(at, a, &mut x).unwrap();
    x
}

/// The typed Q6_K_R16 kernels of the AVX-512 table (the one with GFNI and the one without,
/// whichever the table installed), as `GemvFn`s, where this CPU runs them.
#[cfg(target_arch = "x86_64")]
fn q6_k_r16_kernels() -> Vec<(&'static str, GemvFn)> {
    use grist_kernels::simd::x86::interleaved_avx512 as k;
    fn blocks(act: &[u8]) -> Vec<BlockQ8_K> {
        act.chunks_exact(std::mem::size_of::<BlockQ8_K>())
            .map(bytemuck::pod_read_unaligned)
            .collect()
    }
    fn shifts(w: &[u8], _rb: usize, act: &[u8], out: &mut [f32]) {
        // SAFETY: only listed when the AVX-512 table is available; the kernel asserts the
        // lengths.
        unsafe { k::gemv_q6_k_r16(w, &blocks(act), out) }
    }
    fn gfni(w: &[u8], _rb: usize, act: &[u8], out: &mut [f32]) {
        // SAFETY: only listed when the AVX-512 table is available and the CPU has GFNI.
        unsafe { k::gemv_q6_k_r16_gfni(w, &blocks(act), out) }
    }
    let mut kernels = Vec::new();
    if select(Isa::Avx512).is_ok() {
        kernels.push(("gemv_q6_k_r16", shifts as GemvFn));
        if std::arch::is_x86_feature_detected!("gfni") {
            kernels.push(("gemv_q6_k_r16_gfni", gfni as GemvFn));
        }
    }
    kernels
}

#[cfg(not(target_arch = "x86_64"))]
fn q6_k_r16_kernels() -> Vec<(&'static str, GemvFn)> {
    Vec::new()
}

/// The typed Q5_0_R16 kernels of the AVX-512 table (with GFNI and without), as `GemvFn`s,
/// where this CPU runs them.
#[cfg(target_arch = "x86_64")]
fn q5_0_r16_kernels() -> Vec<(&'static str, GemvFn)> {
    use grist_kernels::simd::x86::interleaved_avx512 as k;
    fn blocks(act: &[u8]) -> Vec<BlockQ8_0> {
        act.chunks_exact(std::mem::size_of::<BlockQ8_0>())
            .map(bytemuck::pod_read_unaligned)
            .collect()
    }
    fn shifts(w: &[u8], _rb: usize, act: &[u8], out: &mut [f32]) {
        // SAFETY: only listed when the AVX-512 table is available; the kernel asserts the
        // lengths.
        unsafe { k::gemv_q5_0_r16(w, &blocks(act), out) }
    }
    fn gfni(w: &[u8], _rb: usize, act: &[u8], out: &mut [f32]) {
        // SAFETY: only listed when the AVX-512 table is available and the CPU has GFNI.
        unsafe { k::gemv_q5_0_r16_gfni(w, &blocks(act), out) }
    }
    let mut kernels = Vec::new();
    if select(Isa::Avx512).is_ok() {
        kernels.push(("gemv_q5_0_r16", shifts as GemvFn));
        if std::arch::is_x86_feature_detected!("gfni") {
            kernels.push(("gemv_q5_0_r16_gfni", gfni as GemvFn));
        }
    }
    kernels
}

#[cfg(not(target_arch = "x86_64"))]
fn q5_0_r16_kernels() -> Vec<(&'static str, GemvFn)> {
    Vec::new()
}

#[test]
fn interleaved_gemv_matches_the_scalar_reference() {
    let mut rng = Rng(0x51d4_0e77_2a9c_b613);
    let mut tested = 0;
    // Every table's kernels, then the Q6_K_R16 and Q5_0_R16 variants by name.
    let mut kernels: Vec<(String, GgmlType, GgmlType, GemvFn)> = Vec::new();
    for table in tables() {
        for (ty, base) in TYPES {
            if let Some(gemv) = table.entry(ty).unwrap().gemv {
                kernels.push((table.isa().name().to_string(), ty, base, gemv));
            }
        }
    }
    for (name, gemv) in q6_k_r16_kernels() {
        kernels.push((name.to_string(), GgmlType::Q6_K_R16, GgmlType::Q6_K, gemv));
    }
    for (name, gemv) in q5_0_r16_kernels() {
        kernels.push((name.to_string(), GgmlType::Q5_0_R16, GgmlType::Q5_0, gemv));
    }
    for (name, ty, base, gemv) in kernels {
        // Both sides of one block, of typical widths, and of the k-quant kernels' 64-super-
        // block pass (Q8_0_R16 and Q5_0_R16: 128 columns).
        for blocks in [1, 2, 3, 10, 38, 63, 64, 65, 130] {
            let blocks = base_blocks(ty, base, blocks);
            let rb = blocks * base.block_bytes();
            for rows in [16, 48] {
                for kind in 0..3 {
                    for extreme in [false, true] {
                        let plain = base_rows(base, &mut rng, rows, blocks, kind);
                        let w = interleave(ty, &plain, rb);
                        let a = act_row(base, &mut rng, blocks, extreme);
                        let mut want = vec![0.0f32; rows];
                        interleaved::gemv_reference(ty, &w, rb, &a, &mut want).unwrap();
                        let mut got = vec![f32::NAN; rows];
                        gemv(&w, rb, &a, &mut got);
                        let x = act_values(base, &a);
                        for r in 0..rows {
                            // The integer sums are exact; only the float arithmetic
                            // per block and across them differs. The Q8_0_R16, Q4_1_R16 and Q5_0_R16
                            // kernels do the reference's float operations in its order: its
                            // bits.
                            let row = &plain[r * rb..(r + 1) * rb];
                            let tol = 1e-5 * magnitude(base, row, &x) + 1e-30;
                            let bitwise =
                                matches!(base, GgmlType::Q8_0 | GgmlType::Q4_1 | GgmlType::Q5_0);
                            let exact = !bitwise || same(got[r], want[r]);
                            assert!(
                                (got[r] - want[r]).abs() <= tol && exact,
                                "{name} {ty}: {blocks} blocks, {rows} rows, kind {kind}, \
                                 extreme {extreme}: row {r} kernel {} vs reference {} \
                                 (tolerance {tol})",
                                got[r],
                                want[r]
                            );
                        }
                        tested += 1;
                    }
                }
            }
        }
    }
    if tested == 0 {
        eprintln!("SKIPPED: no table on this CPU has an interleaved kernel");
    }
}

/// Runs `f` on a rayon pool of `threads` threads.
fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// `y = x · Wᵀ` for each of `ws` in one fused call (`x`: `[n, cols]`).
fn products(table: &Kernels, ws: &[QMatrix<'_>], x: &[f32], n: usize) -> Vec<Vec<f32>> {
    let cols = ws[0].cols();
    let mut scratch = ActivationScratch::new();
    quantize_activations_with(table, ws[0].act_type(), x, n, cols, &mut scratch).unwrap();
    let mut ys: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n * w.rows()]).collect();
    let mut jobs: Vec<(QMatrix<'_>, &mut [f32])> = ws
        .iter()
        .zip(ys.iter_mut())
        .map(|(w, y)| (*w, &mut y[..]))
        .collect();
    matmul_prequantized_many_with(table, &mut jobs, &scratch).unwrap();
    ys
}

#[test]
fn the_driver_runs_interleaved_matrices_like_plain_ones() {
    let mut rng = Rng(0x0c3b_9f42_7ae1_6d58);
    for table in tables() {
        for (ty, base) in TYPES {
            let native = table.entry(ty).unwrap().gemv.is_some();
            for (rows, blocks) in [(16, 1), (48, 10), (320, 10), (1040, 3)] {
                let blocks = base_blocks(ty, base, blocks);
                let rb = blocks * base.block_bytes();
                let cols = blocks * base.block_elems();
                let plain = base_rows(base, &mut rng, rows, blocks, 0);
                let inter = interleave(ty, &plain, rb);
                let wp = QMatrix::new(base, &plain, rows, cols).unwrap();
                let wi = QMatrix::new(ty, &inter, rows, cols).unwrap();
                for n in [1, 2, 7, 33, 80] {
                    let x = rng.vec(n * cols, 2.0);
                    let want = with_threads(2, || products(table, &[wp], &x, n)).remove(0);
                    for threads in 1..=3 {
                        let got = with_threads(threads, || products(table, &[wi], &x, n)).remove(0);
                        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                            let ok = if n == 1 && native {
                                let row = &plain[(i % rows) * rb..][..rb];
                                (g - w).abs() <= 1e-5 * magnitude(base, row, &x) + 1e-30
                            } else {
                                same(g, w)
                            };
                            assert!(
                                ok,
                                "{} {ty} {rows}×{cols}, n {n}, {threads} threads: output {i} \
                                 interleaved {g} vs plain {w}",
                                table.isa().name()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn interleaved_rows_after_an_unaligned_matrix_in_a_fused_group() {
    // Token generation cuts a fused group's concatenated rows into tasks; a first matrix of
    // 40 rows must not shift the interleaved one's cut off its 16-row groups.
    let mut rng = Rng(0x7d21_3c95_e806_4fa1);
    for (ty, base) in TYPES {
        let blocks = base_blocks(ty, base, 4);
        let cols = blocks * base.block_elems();
        // A plain type of the same activation format (the group shares one quantization).
        let first = [GgmlType::Q6_K, GgmlType::Q4_0, GgmlType::Q5_1]
            .into_iter()
            .find(|&t| formats::activation_type(t) == formats::activation_type(base))
            .unwrap();
        let w_first = weights(&mut rng, first, 40, cols, false);
        let w6 = QMatrix::new(first, &w_first, 40, cols).unwrap();
        let rb = blocks * base.block_bytes();
        let plain = base_rows(base, &mut rng, 96, blocks, 0);
        let inter = interleave(ty, &plain, rb);
        let wp = QMatrix::new(base, &plain, 96, cols).unwrap();
        let wi = QMatrix::new(ty, &inter, 96, cols).unwrap();
        for table in tables() {
            let native = table.entry(ty).unwrap().gemv.is_some();
            let x = rng.vec(cols, 1.0);
            for threads in 1..=3 {
                let want = with_threads(threads, || products(table, &[w6, wp, w6], &x, 1));
                let got = with_threads(threads, || products(table, &[w6, wi, w6], &x, 1));
                for m in [0, 2] {
                    assert!(got[m].iter().zip(&want[m]).all(|(&g, &w)| same(g, w)));
                }
                for (i, (&g, &w)) in got[1].iter().zip(&want[1]).enumerate() {
                    let ok = if native {
                        let row = &plain[i * rb..][..rb];
                        (g - w).abs() <= 1e-5 * magnitude(base, row, &x) + 1e-30
                    } else {
                        same(g, w)
                    };
                    assert!(ok, "{} {ty} row {i}: {g} vs {w}", table.isa().name());
                }
            }
        }
    }
}

#[test]
fn the_fused_gate_up_product_reads_interleaved_matrices() {
    let mut rng = Rng(0x2b6e_8d01_f37c_a945);
    let (rows, n) = (144, 37);
    for (ty, base) in TYPES {
        let blocks = base_blocks(ty, base, 3);
        let cols = blocks * base.block_elems();
        let rb = blocks * base.block_bytes();
        let (gate, up) = (
            base_rows(base, &mut rng, rows, blocks, 0),
            base_rows(base, &mut rng, rows, blocks, 0),
        );
        let (gate_i, up_i) = (interleave(ty, &gate, rb), interleave(ty, &up, rb));
        let x = rng.vec(n * cols, 1.0);
        assert_gated_products_agree((&gate, &up, base), (&gate_i, &up_i, ty), rows, cols, &x);
    }
}

/// The fused gate/up product (`matmul_prequantized_gated_with`, SwiGLU) of the plain pair
/// and of the interleaved pair (`(gate, up, type)`, `[rows, cols]` each) on `x` (`[n, cols]`)
/// fuses on the same tables and gives the same bits, on every table.
fn assert_gated_products_agree(
    plain: (&[u8], &[u8], GgmlType),
    inter: (&[u8], &[u8], GgmlType),
    rows: usize,
    cols: usize,
    x: &[f32],
) {
    let n = x.len() / cols;
    for table in tables() {
        let run = |(g, u, ty): (&[u8], &[u8], GgmlType)| {
            let (g, u) = (
                QMatrix::new(ty, g, rows, cols).unwrap(),
                QMatrix::new(ty, u, rows, cols).unwrap(),
            );
            let mut scratch = ActivationScratch::new();
            quantize_activations_with(table, g.act_type(), x, n, cols, &mut scratch).unwrap();
            let mut out = vec![f32::NAN; n * rows];
            let fused = matmul_prequantized_gated_with(
                table,
                &g,
                &u,
                grist_kernels::ops::swiglu,
                &scratch,
                &mut out,
            )
            .unwrap();
            (fused, out)
        };
        let ((fused_p, want), (fused_i, got)) = (run(plain), run(inter));
        let what = format!("{} {}", table.isa().name(), inter.2);
        assert_eq!(fused_p, fused_i, "{what}");
        if fused_p {
            assert!(
                got.iter().zip(&want).all(|(&g, &w)| same(g, w)),
                "{what}: the fused product differs"
            );
        }
    }
}

#[test]
fn a_matrix_that_is_not_whole_groups_is_refused() {
    for (ty, base) in TYPES {
        let rb = ty.block_bytes();
        let cols = ty.block_elems();
        let data = vec![0u8; 24 * rb];
        let err = QMatrix::new(ty, &data, 24, cols).unwrap_err();
        assert_eq!(
            err,
            MatmulError::PartialGroup {
                ty,
                rows: 24,
                group_rows: 16
            }
        );
        assert!(err.to_string().contains("multiple of 16 rows"), "{err}");
        let m = QMatrix::new(ty, &data[..16 * rb], 16, cols).unwrap();
        assert_eq!((m.group_rows(), m.row_bytes()), (16, rb));
        assert_eq!(Some(m.act_type()), formats::activation_type(base));
        // Rows of an interleaved matrix are not contiguous: `row` refuses.
        assert!(std::panic::catch_unwind(|| m.row(3).len()).is_err());
    }
    let _ = matmul::MAX_FUSED_MATRICES;
}

// ---------------------------------------------------------------------------------------
// Q8_0_R16's test data, and what only it refuses.
// ---------------------------------------------------------------------------------------

const Q8_R16: GgmlType = GgmlType::Q8_0_R16;
const Q8_0: GgmlType = GgmlType::Q8_0;

/// Writes `d` as the f16 scale of a Q8_0 (or Q5_0) block.
fn set_d(block: &mut [u8], d: f32) {
    block[0..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
}

/// Q8_0 rows of three kinds: quantized random values (`kind` 0), raw random codes with
/// finite random scales (1), or codes of −128 and 127 only with large scales (2).
fn q8_0_rows(rng: &mut Rng, rows: usize, blocks: usize, kind: usize) -> Vec<u8> {
    let mut w = weights(rng, Q8_0, rows, blocks * QK, kind != 0);
    if kind != 0 {
        for block in w.chunks_exact_mut(34) {
            if kind == 1 {
                set_d(block, rng.f32() * 0.01);
            } else {
                set_d(block, 60000.0);
                for q in &mut block[2..] {
                    *q = if rng.u64().is_multiple_of(2) {
                        0x80
                    } else {
                        0x7F
                    };
                }
            }
        }
    }
    w
}

/// A Q8_0 activation row: quantized random values (`extreme` false), or codes of −128 and 127
/// only (whole blocks of each, and mixed blocks), so `−128 · Σ a` reaches both its ends.
fn q8_0_act(rng: &mut Rng, blocks: usize, extreme: bool) -> Vec<u8> {
    let mut row: Vec<BlockQ8_0> = vec![bytemuck::Zeroable::zeroed(); blocks];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut row);
    if !extreme {
        let x = rng.vec(blocks * QK, 3.0);
        formats::quantize_row(Q8_0, &x, bytes).unwrap();
        return bytes.to_vec();
    }
    for (b, y) in row.iter_mut().enumerate() {
        y.d = half::f16::from_f32(1.0 / 127.0).to_bits();
        for q in y.qs.iter_mut() {
            *q = match b % 3 {
                0 => -128,
                1 => 127,
                _ => [-128, 127][rng.u64() as usize % 2],
            };
        }
    }
    bytemuck::cast_slice(&row).to_vec()
}

/// `Σ |d · q · x|` over one Q8_0 row and the values `x` it multiplies: bounds the rounding of
/// any order of summing the row's products.
fn q8_0_magnitude(row: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (block, x) in row.chunks_exact(34).zip(x.chunks_exact(QK)) {
        let d = half::f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
        for (&q, &xv) in block[2..].iter().zip(x) {
            total += (d * q as i8 as f32 * xv).abs();
        }
    }
    total
}

// ---------------------------------------------------------------------------------------
// Q5_0_R16's test data, and what only it refuses.
// ---------------------------------------------------------------------------------------

const Q5_0: GgmlType = GgmlType::Q5_0;

/// Q5_0 rows of three kinds: quantized random values (`kind` 0), raw random codes and high
/// bits with finite random scales (1), or extreme blocks (2): all codes 31 (every `qs` and
/// `qh` byte 0xFF), all codes 0, or codes of 0 and 31 only, with the f16 extremes as scales
/// (±65504, the smallest normal and subnormal, 0).
fn q5_0_rows(rng: &mut Rng, rows: usize, blocks: usize, kind: usize) -> Vec<u8> {
    let mut w = weights(rng, Q5_0, rows, blocks * QK, kind != 0);
    if kind != 0 {
        for block in w.chunks_exact_mut(22) {
            if kind == 1 {
                set_d(block, rng.f32() * 0.01);
            } else {
                let d = [65504.0, -65504.0, 6.1035156e-5, 5.9604645e-8, 0.0, 60000.0];
                set_d(block, d[rng.u64() as usize % d.len()]);
                match rng.u64() % 3 {
                    0 => block[2..].fill(0xFF),
                    1 => block[2..].fill(0x00),
                    _ => {
                        // Every nibble 0 or 15, and the high bit with it: codes 0 or 31.
                        let bits = rng.u64() as u32;
                        block[2..6].copy_from_slice(&bits.to_le_bytes());
                        for (j, q) in block[6..].iter_mut().enumerate() {
                            let (lo, hi) = ((bits >> j) & 1, (bits >> (j + 16)) & 1);
                            *q = ((lo * 0x0F) | (hi * 0xF0)) as u8;
                        }
                    }
                }
            }
        }
    }
    w
}

/// `Σ |d · (code − 16) · x|` over one Q5_0 row and the values `x` it multiplies: bounds the
/// rounding of any order of summing the row's products.
fn q5_0_magnitude(row: &[u8], x: &[f32]) -> f32 {
    let mut w = vec![0.0f32; x.len()];
    formats::dequantize_row(Q5_0, row, &mut w).unwrap();
    w.iter().zip(x).map(|(w, x)| (w * x).abs()).sum()
}

#[test]
fn q5_0_r16_rows_of_partial_columns_are_refused() {
    // 96 values are three Q5_0 blocks: not whole 64-value columns of Q5_0_R16.
    let data = vec![0u8; 16 * 3 * 22];
    assert!(QMatrix::new(GgmlType::Q5_0_R16, &data, 16, 96).is_err());
    assert!(QMatrix::new(Q5_0, &data, 16, 96).is_ok());
}

#[test]
fn q8_0_r16_rows_of_partial_columns_are_refused() {
    // 96 values are three Q8_0 blocks: not whole 64-value columns of Q8_0_R16.
    let data = vec![0u8; 16 * 3 * 34];
    assert!(QMatrix::new(Q8_R16, &data, 16, 96).is_err());
    assert!(QMatrix::new(Q8_0, &data, 16, 96).is_ok());
}

#[test]
fn embedding_rows_gather_from_interleaved_matrices() {
    // The embedding lookup reads one row at a time (`QMatrix::row_plain`); a tied Q6_K
    // token_embd is also the output product's matrix.
    let mut rng = Rng(0x4f1a_92c3_d7e8_0b65);
    let rows = 48;
    for (ty, base) in TYPES {
        let blocks = base_blocks(ty, base, 3);
        let rb = blocks * base.block_bytes();
        let plain = base_rows(base, &mut rng, rows, blocks, 0);
        let inter = interleave(ty, &plain, rb);
        let wi = QMatrix::new(ty, &inter, rows, blocks * base.block_elems()).unwrap();
        for r in [0, 5, 15, 16, 31, 47] {
            wi.row_plain(r, |row| {
                assert!(row == &plain[r * rb..][..rb], "{ty} row {r}")
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Q4_1_R16's test data, and what only it refuses.
// ---------------------------------------------------------------------------------------

/// Writes `d` and `m` as the f16 scale and minimum of a Q4_1 block.
fn set_d_m(block: &mut [u8], d: f32, m: f32) {
    block[0..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
    block[2..4].copy_from_slice(&half::f16::from_f32(m).to_bits().to_le_bytes());
}

/// Q4_1 rows of three kinds: quantized random values (`kind` 0), raw random codes with
/// finite random scales and minimums (1), or f16 extremes (2): every code 15 in one block of
/// three and codes of 0 and 15 only in the others (bytes 0x00, 0x0F, 0xF0, 0xFF), with `d`
/// and `m` each the largest finite f16 (±65504) or the smallest subnormal (±2⁻²⁴).
fn q4_1_rows(rng: &mut Rng, rows: usize, blocks: usize, kind: usize) -> Vec<u8> {
    let mut w = weights(rng, GgmlType::Q4_1, rows, blocks * QK, kind != 0);
    if kind != 0 {
        let tiny = half::f16::from_bits(1).to_f32();
        let ends = [65504.0, -65504.0, tiny, -tiny];
        for (b, block) in w.chunks_exact_mut(20).enumerate() {
            if kind == 1 {
                set_d_m(block, rng.f32() * 0.01, rng.f32() * 0.1);
                continue;
            }
            let pick = rng.u64();
            set_d_m(
                block,
                ends[pick as usize % 4],
                ends[(pick >> 2) as usize % 4],
            );
            for q in &mut block[4..] {
                *q = if b % 3 == 0 {
                    0xFF
                } else {
                    [0x00, 0x0F, 0xF0, 0xFF][(rng.u64() >> 9) as usize % 4]
                };
            }
        }
    }
    w
}

/// A Q8_1 activation row: quantized random values (`extreme` false), or codes of −128 and 127
/// only (whole blocks of each, and mixed blocks) with `s = d · Σ q`, so each block's code sum
/// reaches both its ends.
fn q8_1_act(rng: &mut Rng, blocks: usize, extreme: bool) -> Vec<u8> {
    let mut row: Vec<BlockQ8_1> = vec![bytemuck::Zeroable::zeroed(); blocks];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut row);
    if !extreme {
        let x = rng.vec(blocks * QK, 3.0);
        formats::quantize_row(GgmlType::Q8_1, &x, bytes).unwrap();
        return bytes.to_vec();
    }
    let d = half::f16::from_f32(1.0 / 127.0);
    for (b, y) in row.iter_mut().enumerate() {
        y.d = d.to_bits();
        for q in y.qs.iter_mut() {
            *q = match b % 3 {
                0 => -128,
                1 => 127,
                _ => [-128, 127][rng.u64() as usize % 2],
            };
        }
        let sum: i32 = y.qs.iter().map(|&q| q as i32).sum();
        y.s = half::f16::from_f32(d.to_f32() * sum as f32).to_bits();
    }
    bytemuck::cast_slice(&row).to_vec()
}

/// `Σ (|d · q| + |m|) · |x|` over one Q4_1 row and the values `x` it multiplies: the size of
/// the two float terms (scaled codes, minimums) a block adds, which bounds the rounding of
/// any order of summing them.
fn q4_1_magnitude(row: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (block, x) in row.chunks_exact(20).zip(x.chunks_exact(QK)) {
        let f = |i: usize| half::f16::from_bits(u16::from_le_bytes([block[i], block[i + 1]]));
        let (d, m) = (f(0).to_f32().abs(), f(2).to_f32().abs());
        for (j, &xv) in x.iter().enumerate() {
            let byte = block[4 + j % 16];
            let q = if j < 16 { byte & 15 } else { byte >> 4 };
            total += (d * q as f32 + m) * xv.abs();
        }
    }
    total
}

#[test]
fn q4_1_r16_rows_of_partial_columns_are_refused() {
    // 96 values are three Q4_1 blocks: not whole 64-value columns of Q4_1_R16.
    let data = vec![0u8; 16 * 3 * 20];
    assert!(QMatrix::new(GgmlType::Q4_1_R16, &data, 16, 96).is_err());
    assert!(QMatrix::new(GgmlType::Q4_1, &data, 16, 96).is_ok());
}

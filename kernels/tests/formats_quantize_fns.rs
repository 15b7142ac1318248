//! ggml's `tests/test-quantize-fns.cpp`, for grist's scalar reference formats: on the same
//! synthetic row (`0.1 + 2·cos(i + offset)`, 4096 values) the round-trip error and the
//! quantized dot-product error must stay under ggml's published bounds. Also checks that
//! every `vec_dot` equals the dot product of the dequantized rows.

use grist_gguf::GgmlType;
use grist_kernels::formats::{activation_type, dequantize_row, quantize_row, vec_dot_row};

const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
const MAX_QUANTIZATION_TOTAL_ERROR_2BITS: f32 = 0.0075;
const MAX_QUANTIZATION_TOTAL_ERROR_3BITS: f32 = 0.0040;
const MAX_DOT_PRODUCT_ERROR: f32 = 0.02;
const MAX_DOT_PRODUCT_ERROR_LOWBIT: f32 = 0.04;

const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// ggml's `generate_data`: `0.1 + 2*cosf(i + offset)` (evaluated in double, stored as float).
fn generate_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1 + 2.0 * ((i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

/// ggml's `array_rmse` (which divides the root of the sum by n, not by √n).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    (sum.sqrt() as f32) / a.len() as f32
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.bytes_for(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut q).unwrap();
    q
}

fn dequantize(ty: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n];
    dequantize_row(ty, q, &mut y).unwrap();
    y
}

#[test]
fn quantization_and_dot_product_errors_within_ggml_bounds() {
    let n = 32 * 128;
    let x1 = generate_data(0.0, n);
    let x2 = generate_data(1.0, n);
    let dot_ref: f64 = x1.iter().zip(&x2).map(|(&a, &b)| (a * b) as f64).sum();
    let mut failures = Vec::new();
    for &ty in TYPES {
        let q1 = quantize(ty, &x1);
        let total_error = array_rmse(&x1, &dequantize(ty, &q1, n));
        let max_total = match ty {
            GgmlType::Q2_K => MAX_QUANTIZATION_TOTAL_ERROR_2BITS,
            GgmlType::Q3_K => MAX_QUANTIZATION_TOTAL_ERROR_3BITS,
            _ => MAX_QUANTIZATION_TOTAL_ERROR,
        };

        let aty = activation_type(ty).unwrap();
        let q2 = quantize(aty, &x2);
        let result = vec_dot_row(ty, n, &q1, &q2).unwrap();
        let dot_error = ((result as f64 - dot_ref).abs() / n as f64) as f32;
        let max_dot = if ty == GgmlType::Q2_K {
            MAX_DOT_PRODUCT_ERROR_LOWBIT
        } else {
            MAX_DOT_PRODUCT_ERROR
        };

        eprintln!(
            "{:<7} quantization error {total_error:.6} (< {max_total})   dot product error {dot_error:.6} (< {max_dot})",
            ty.name()
        );
        if total_error.is_nan() || total_error >= max_total {
            failures.push(format!("{ty}: quantization error {total_error}"));
        }
        if dot_error.is_nan() || dot_error >= max_dot {
            failures.push(format!("{ty}: dot product error {dot_error}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// A small deterministic generator (xorshift) for adversarial-ish test rows.
fn random_row(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            // Mostly Gaussian-ish values with an occasional outlier.
            if i % 97 == 13 {
                8.0 * u * scale
            } else {
                u * scale
            }
        })
        .collect()
}

/// Q4_1/Q5_1 dot products use the activation's `s = d·Σq` rounded to f16 (as ggml does), so
/// they differ from the exact dot of dequantized rows by up to `Σ |m|·|s|·2⁻¹¹` per row.
fn q8_1_sum_rounding(ty: GgmlType, qw: &[u8], qa: &[u8]) -> f64 {
    if activation_type(ty) != Some(GgmlType::Q8_1) || ty == GgmlType::Q8_1 {
        return 0.0;
    }
    let f16_at = |b: &[u8], o: usize| half::f16::from_le_bytes([b[o], b[o + 1]]).to_f64();
    qw.chunks_exact(ty.block_bytes())
        .zip(qa.chunks_exact(GgmlType::Q8_1.block_bytes()))
        .map(|(w, a)| (f16_at(w, 2) * f16_at(a, 2)).abs() * 2f64.powi(-10))
        .sum()
}

#[test]
fn vec_dot_equals_dot_of_dequantized_rows() {
    let n = 1024;
    for &ty in TYPES {
        let aty = activation_type(ty).unwrap();
        for seed in 0..8u64 {
            let w = random_row(seed, n, 1.0 + seed as f32);
            let a = random_row(seed + 100, n, 0.5);
            let qw = quantize(ty, &w);
            let qa = quantize(aty, &a);
            let got = vec_dot_row(ty, n, &qw, &qa).unwrap() as f64;
            let dw = dequantize(ty, &qw, n);
            let da = dequantize(aty, &qa, n);
            let want: f64 = dw.iter().zip(&da).map(|(&x, &y)| x as f64 * y as f64).sum();
            let mag: f64 = dw
                .iter()
                .zip(&da)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            let tol = 1e-5 * mag + 1e-6 + q8_1_sum_rounding(ty, &qw, &qa);
            assert!(
                (got - want).abs() <= tol,
                "{ty} seed {seed}: vec_dot {got} vs dequantized dot {want}"
            );
        }
    }
}

#[test]
fn zero_and_constant_rows_round_trip_without_nan() {
    let n = 512;
    for &ty in TYPES {
        for row in [vec![0.0f32; n], vec![0.75f32; n], vec![-3.0f32; n]] {
            let y = dequantize(ty, &quantize(ty, &row), n);
            assert!(y.iter().all(|v| v.is_finite()), "{ty}: non-finite output");
            let err = array_rmse(&row, &y) * n as f32 / (n as f32).sqrt();
            let amax = row[0].abs();
            assert!(
                err <= 0.35 * amax + 1e-6,
                "{ty}: constant {} rms error {err}",
                row[0]
            );
        }
    }
}

//! Scalar reference implementations of the f32 operations: the definitions every SIMD version
//! is tested against. Each mirrors the scalar code path of ggml-cpu (`vec.h`, `vec.cpp`,
//! `ops.cpp`) operation for operation, including where ggml accumulates in `double`
//! (`ggml_float`).

use half::f16;

/// `Σ x[i]²`, each square rounded to f32 and accumulated in f64 (ggml's `rms_norm` sum:
/// `sum += (ggml_float)(x*x)`).
pub fn sum_squares(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v * v) as f64).sum()
}

/// `y[i] *= s` (ggml's `ggml_vec_scale_f32`).
pub fn scale(y: &mut [f32], s: f32) {
    for v in y {
        *v *= s;
    }
}

/// `y[i] *= x[i]` (ggml's `mul` with same-shape operands).
pub fn mul_assign(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "mul: operands differ in length");
    for (a, &b) in y.iter_mut().zip(x) {
        *a *= b;
    }
}

/// `y[i] += x[i]` (ggml's `add` with same-shape operands).
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add: operands differ in length");
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// The largest element, `-inf` for an empty slice (ggml's `ggml_vec_max_f32`, which uses
/// `MAX(a, b) = a > b ? a : b`).
pub fn max(x: &[f32]) -> f32 {
    x.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if m > v { m } else { v })
}

/// `x[i] = exp(x[i] - max)` in place; returns `Σ x[i]` accumulated in f64 (ggml's
/// `ggml_vec_soft_max_f32`, scalar path: libm `expf`).
pub fn exp_sub_sum(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0.0f64;
    for v in x {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    sum
}

/// SiLU of one value: `x / (1 + exp(-x))` (ggml's `ggml_silu_f32`).
#[inline]
pub fn silu1(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `x[i] = silu(x[i])` in place.
pub fn silu(x: &mut [f32]) {
    for v in x {
        *v = silu1(*v);
    }
}

/// SwiGLU in place: `gate[i] = silu(gate[i]) * up[i]` (ggml's `ggml_vec_swiglu_f32`).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu1(*g) * u;
    }
}

/// Dot product of two f32 rows, products rounded to f32 and summed in f64 (ggml's scalar
/// `ggml_vec_dot_f32`).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: operands differ in length");
    a.iter().zip(b).map(|(&x, &y)| (x * y) as f64).sum::<f64>() as f32
}

/// Converts an f32 row to f16, rounding to nearest-even (ggml's `GGML_FP32_TO_FP16`).
pub fn f32_to_f16(x: &[f32], out: &mut [f16]) {
    assert_eq!(x.len(), out.len(), "f32_to_f16: lengths differ");
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f16::from_f32(v);
    }
}

/// Dot product of an f16 row (e.g. a cached key) with an f32 row (a query), each f16 widened
/// exactly to f32, products summed in f64.
pub fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16_f32: operands differ in length");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x.to_f32() * y) as f64)
        .sum::<f64>() as f32
}

/// `y[i] += alpha * x[i]` with `x` in f16 (accumulating a probability-weighted cached value
/// row; ggml's `ggml_vec_mad_f16` with an f32 destination). One rounding per step (fused
/// multiply-add) so SIMD versions, which use FMA, agree exactly.
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f16: lengths differ");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.to_f32().mul_add(alpha, *o);
    }
}

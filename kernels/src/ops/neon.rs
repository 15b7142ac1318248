//! NEON versions of the dispatched f32 operations (every aarch64 CPU has NEON).
//!
//! Same structure and agreement rules as `x86.rs`: whole 4-lane vectors via `as_chunks`, the
//! remainder through the scalar reference (`swiglu`: through the vector code, zero-padded).
//! Element-wise ops and `max` are bit-identical, `sum_squares` / `dot_f32` differ by
//! summation order, and `exp` (softmax, SiLU) is the polynomial of ggml's NEON `ggml_v_expf`
//! (≤ 2 ulp from libm). The f16 helpers stay scalar: Rust's `float16x4_t` intrinsics are not
//! stable yet.

use std::arch::aarch64::*;

use super::{scalar, OpKernels};

/// Installs the NEON versions into an op table.
pub(super) fn install(t: &mut OpKernels) {
    t.sum_squares = sum_squares_neon;
    t.scale = scale_neon;
    t.scale_mul = scale_mul_neon;
    t.add_assign = add_assign_neon;
    t.max = max_neon;
    t.exp_sub_sum = exp_sub_sum_neon;
    t.silu = silu_neon;
    t.swiglu = swiglu_neon;
    t.dot_f32 = dot_f32_neon;
}

macro_rules! entry {
    ($name:ident => $imp:ident, ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: NEON is part of the aarch64 baseline, and this function is only stored
            // in the table dispatch builds for `Isa::Neon` after checking the feature.
            unsafe { $imp($($arg),*) }
        }
    };
}

entry!(sum_squares_neon => sum_squares_n, (x: &[f32]) -> f64);
entry!(scale_neon => scale_n, (y: &mut [f32], s: f32));
entry!(scale_mul_neon => scale_mul_n, (y: &mut [f32], s: f32, w: &[f32]));
entry!(add_assign_neon => add_assign_n, (y: &mut [f32], x: &[f32]));
entry!(max_neon => max_n, (x: &[f32]) -> f32);
entry!(exp_sub_sum_neon => exp_sub_sum_n, (x: &mut [f32], s: f32, m: f32) -> f64);
entry!(silu_neon => silu_n, (x: &mut [f32]));
entry!(swiglu_neon => swiglu_n, (g: &mut [f32], u: &[f32]));
entry!(dot_f32_neon => dot_f32_n, (a: &[f32], b: &[f32]) -> f32);

#[target_feature(enable = "neon")]
fn ld4(a: &[f32; 4]) -> float32x4_t {
    // SAFETY: reads exactly the 4 floats of `a`.
    unsafe { vld1q_f32(a.as_ptr()) }
}

#[target_feature(enable = "neon")]
fn st4(a: &mut [f32; 4], v: float32x4_t) {
    // SAFETY: writes exactly the 4 floats of `a`.
    unsafe { vst1q_f32(a.as_mut_ptr(), v) }
}

#[target_feature(enable = "neon")]
fn splat(bits: u32) -> float32x4_t {
    vdupq_n_f32(f32::from_bits(bits))
}

use super::exp_consts::*;

/// `exp(x)` per lane (see `x86.rs` `exp8` for the method; `vfmaq_f32(a, b, c) = a + b·c`).
#[target_feature(enable = "neon")]
fn exp4(x: float32x4_t) -> float32x4_t {
    let shift = splat(EXP_SHIFT);
    let z = vfmaq_f32(shift, x, splat(EXP_LOG2E));
    let n = vsubq_f32(z, shift);
    let b = vfmsq_f32(vfmsq_f32(x, n, splat(EXP_LN2_HI)), n, splat(EXP_LN2_LO));
    let e = vshlq_n_u32::<23>(vreinterpretq_u32_f32(z));
    let k = vreinterpretq_f32_u32(vaddq_u32(e, vreinterpretq_u32_f32(vdupq_n_f32(1.0))));
    let big = vcagtq_f32(n, vdupq_n_f32(126.0));
    let u = vmulq_f32(b, b);
    let j = vfmaq_f32(
        vmulq_f32(splat(EXP_C1), b),
        vfmaq_f32(
            vfmaq_f32(splat(EXP_C2), splat(EXP_C3), b),
            vfmaq_f32(splat(EXP_C4), splat(EXP_C5), b),
            u,
        ),
        u,
    );
    let normal = vfmaq_f32(k, j, k);
    if vmaxvq_u32(big) == 0 {
        return normal;
    }
    let g = vandq_u32(vclezq_f32(n), vdupq_n_u32(0x8200_0000));
    let s1 = vreinterpretq_f32_u32(vaddq_u32(g, vdupq_n_u32(0x7f00_0000)));
    let s2 = vreinterpretq_f32_u32(vsubq_u32(e, g));
    let huge = vcagtq_f32(n, vdupq_n_f32(192.0));
    let split = vmulq_f32(vfmaq_f32(s2, s2, j), s1);
    vbslq_f32(huge, vmulq_f32(s1, s1), vbslq_f32(big, split, normal))
}

#[target_feature(enable = "neon")]
fn silu4(x: float32x4_t) -> float32x4_t {
    let e = exp4(vnegq_f32(x));
    vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0), e))
}

#[target_feature(enable = "neon")]
fn sum_squares_n(x: &[f32]) -> f64 {
    let (chunks, tail) = x.as_chunks::<4>();
    let (mut lo, mut hi) = (vdupq_n_f64(0.0), vdupq_n_f64(0.0));
    for c in chunks {
        let v = ld4(c);
        let sq = vmulq_f32(v, v);
        lo = vaddq_f64(lo, vcvt_f64_f32(vget_low_f32(sq)));
        hi = vaddq_f64(hi, vcvt_high_f64_f32(sq));
    }
    vaddvq_f64(vaddq_f64(lo, hi)) + scalar::sum_squares(tail)
}

#[target_feature(enable = "neon")]
fn scale_n(y: &mut [f32], s: f32) {
    let (chunks, tail) = y.as_chunks_mut::<4>();
    for c in chunks {
        let v = vmulq_n_f32(ld4(c), s);
        st4(c, v);
    }
    scalar::scale(tail, s);
}

#[target_feature(enable = "neon")]
fn scale_mul_n(y: &mut [f32], s: f32, w: &[f32]) {
    assert_eq!(y.len(), w.len(), "scale_mul: operands differ in length");
    let (yc, yt) = y.as_chunks_mut::<4>();
    let (wc, wt) = w.as_chunks::<4>();
    for (a, b) in yc.iter_mut().zip(wc) {
        // Two roundings, as `scale` then `mul_assign` (no fused multiply-add).
        let v = vmulq_f32(vmulq_n_f32(ld4(a), s), ld4(b));
        st4(a, v);
    }
    scalar::scale_mul(yt, s, wt);
}

#[target_feature(enable = "neon")]
fn add_assign_n(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add: operands differ in length");
    let (yc, yt) = y.as_chunks_mut::<4>();
    let (xc, xt) = x.as_chunks::<4>();
    for (a, b) in yc.iter_mut().zip(xc) {
        let v = vaddq_f32(ld4(a), ld4(b));
        st4(a, v);
    }
    scalar::add_assign(yt, xt);
}

#[target_feature(enable = "neon")]
fn max_n(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<4>();
    let mut m = vdupq_n_f32(f32::NEG_INFINITY);
    for c in chunks {
        m = vmaxq_f32(m, ld4(c));
    }
    let mut lanes = [0.0f32; 4];
    st4(&mut lanes, m);
    let head = scalar::max(&lanes);
    let rest = scalar::max(tail);
    if head > rest {
        head
    } else {
        rest
    }
}

#[target_feature(enable = "neon")]
fn exp_sub_sum_n(x: &mut [f32], s: f32, m: f32) -> f64 {
    let (chunks, tail) = x.as_chunks_mut::<4>();
    let vm = vdupq_n_f32(m);
    let (mut lo, mut hi) = (vdupq_n_f64(0.0), vdupq_n_f64(0.0));
    for c in chunks {
        // x·s rounded, then − m (no fused multiply-add, as the scalar reference).
        let e = exp4(vsubq_f32(vmulq_n_f32(ld4(c), s), vm));
        st4(c, e);
        lo = vaddq_f64(lo, vcvt_f64_f32(vget_low_f32(e)));
        hi = vaddq_f64(hi, vcvt_high_f64_f32(e));
    }
    vaddvq_f64(vaddq_f64(lo, hi)) + scalar::exp_sub_sum(tail, s, m)
}

#[target_feature(enable = "neon")]
fn silu_n(x: &mut [f32]) {
    let (chunks, tail) = x.as_chunks_mut::<4>();
    for c in chunks {
        let v = silu4(ld4(c));
        st4(c, v);
    }
    scalar::silu(tail);
}

#[target_feature(enable = "neon")]
fn swiglu_n(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "swiglu: gate and up differ in length");
    let (gc, gt) = g.as_chunks_mut::<4>();
    let (uc, ut) = u.as_chunks::<4>();
    for (a, b) in gc.iter_mut().zip(uc) {
        let v = vmulq_f32(silu4(ld4(a)), ld4(b));
        st4(a, v);
    }
    // The tail through the same vector code (zero-padded), so that every value's bits are
    // independent of its position in the slice (`matmul::GluFn`).
    let (mut a, mut b) = ([0.0f32; 4], [0.0f32; 4]);
    a[..gt.len()].copy_from_slice(gt);
    b[..ut.len()].copy_from_slice(ut);
    let v = vmulq_f32(silu4(ld4(&a)), ld4(&b));
    st4(&mut a, v);
    let n = gt.len();
    gt.copy_from_slice(&a[..n]);
}

#[target_feature(enable = "neon")]
fn dot_f32_n(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: operands differ in length");
    let (ac, at) = a.as_chunks::<4>();
    let (bc, bt) = b.as_chunks::<4>();
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 4 <= ac.len() {
        for (k, lane) in acc.iter_mut().enumerate() {
            *lane = vfmaq_f32(*lane, ld4(&ac[i + k]), ld4(&bc[i + k]));
        }
        i += 4;
    }
    while i < ac.len() {
        acc[0] = vfmaq_f32(acc[0], ld4(&ac[i]), ld4(&bc[i]));
        i += 1;
    }
    let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(sum) + scalar::dot_f32(at, bt)
}

//! AVX2 (+FMA, F16C) and AVX-512 versions of the dispatched f32 operations.
//!
//! Layout: every loop walks the slice in whole vectors (`as_chunks::<8>` / `<16>`) and hands
//! the remainder (fewer than one vector) to the scalar reference, so any length works;
//! `swiglu` instead runs its remainder through the vector code, zero-padded, so each value's
//! bits do not depend on where it sits (the fused gated matmul applies it per tile).
//!
//! Agreement with [`super::scalar`]:
//! - `scale`, `add_assign`, `max`, `f32_to_f16` and `axpy_f16` do the same one
//!   rounding per element (`scale_mul` the same two): bit-identical.
//! - `sum_squares` squares in f32 and sums in f64 like the reference, in another order.
//! - `dot_f32` / `dot_f16_f32` accumulate in f32 vector lanes (like ggml's SIMD
//!   `ggml_vec_dot_f32`), the reference in f64: relative error ~`n · 2⁻²⁴` of `Σ|a·b|`.
//! - `exp_sub_sum`, `silu`, `swiglu` use a vectorised `exp` (the polynomial of ggml's
//!   `ggml_v_expf`, from Arm's optimized-routines: `2^n · p(b)` with `n = round(x·log2 e)`,
//!   `b = x − n·ln 2` in two parts, a degree-5 polynomial; max error 1.45 ulp + 0.5 ulp, large
//!   |n| handled by splitting the power of two). libm's `expf` is correctly rounded or nearly
//!   so, hence ≤ 2 ulp apart per element.

use std::arch::x86_64::*;

use half::f16;

use super::scalar::ATTN_KEY_BLOCK;
use super::{scalar, GemmDims, KvRows, OpKernels};

/// Installs the AVX2 versions into an op table (called only when the CPU has AVX2+FMA+F16C).
pub(super) fn install_avx2(t: &mut OpKernels) {
    t.sum_squares = sum_squares_avx2;
    t.scale = scale_avx2;
    t.scale_mul = scale_mul_avx2;
    t.add_assign = add_assign_avx2;
    t.max = max_avx2;
    t.exp_sub_sum = exp_sub_sum_avx2;
    t.silu = silu_avx2;
    t.swiglu = swiglu_avx2;
    t.geglu = geglu_avx2;
    t.dot_f32 = dot_f32_avx2;
    t.f32_to_f16 = f32_to_f16_avx2;
    t.dot_f16_f32 = dot_f16_f32_avx2;
    t.axpy_f16 = axpy_f16_avx2;
    t.f16_to_f32 = f16_to_f32_avx2;
    t.gemm_acc_f32 = gemm_acc_f32_avx2;
    t.attn_f16_acc = attn_f16_acc_avx2;
}

/// Installs the AVX-512 versions of the exp-heavy and attention loops (called only when the
/// CPU has AVX-512 F/BW/VL/VNNI on top of AVX2); the rest keep their AVX2 versions.
pub(super) fn install_avx512(t: &mut OpKernels) {
    t.exp_sub_sum = exp_sub_sum_avx512;
    t.silu = silu_avx512;
    t.swiglu = swiglu_avx512;
    t.geglu = geglu_avx512;
    t.dot_f32 = dot_f32_avx512;
    t.dot_f16_f32 = dot_f16_f32_avx512;
    t.axpy_f16 = axpy_f16_avx512;
    t.gemm_acc_f32 = gemm_acc_f32_avx512;
    t.attn_f16_acc = attn_f16_acc_avx512;
}

// Safe table entries. Each wraps a `#[target_feature]` function.
macro_rules! entry {
    ($name:ident => $imp:ident, $feat:literal, ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: this function is only stored in an op table built by `crate::dispatch`
            // after it checked that the CPU supports every feature in `$feat`.
            unsafe { $imp($($arg),*) }
        }
    };
}

entry!(sum_squares_avx2 => sum_squares_a2, "avx2,fma", (x: &[f32]) -> f64);
entry!(scale_avx2 => scale_a2, "avx2,fma", (y: &mut [f32], s: f32));
entry!(scale_mul_avx2 => scale_mul_a2, "avx2,fma", (y: &mut [f32], s: f32, w: &[f32]));
entry!(add_assign_avx2 => add_assign_a2, "avx2,fma", (y: &mut [f32], x: &[f32]));
entry!(max_avx2 => max_a2, "avx2,fma", (x: &[f32]) -> f32);
entry!(exp_sub_sum_avx2 => exp_sub_sum_a2, "avx2,fma", (x: &mut [f32], s: f32, m: f32) -> f64);
entry!(silu_avx2 => silu_a2, "avx2,fma", (x: &mut [f32]));
entry!(swiglu_avx2 => swiglu_a2, "avx2,fma", (g: &mut [f32], u: &[f32]));
entry!(geglu_avx2 => geglu_a2, "avx2,fma,f16c", (g: &mut [f32], u: &[f32]));
entry!(dot_f32_avx2 => dot_f32_a2, "avx2,fma", (a: &[f32], b: &[f32]) -> f32);
entry!(f32_to_f16_avx2 => f32_to_f16_a2, "avx2,fma,f16c", (x: &[f32], o: &mut [f16]));
entry!(dot_f16_f32_avx2 => dot_f16_f32_a2, "avx2,fma,f16c", (a: &[f16], b: &[f32]) -> f32);
entry!(axpy_f16_avx2 => axpy_f16_a2, "avx2,fma,f16c", (al: f32, x: &[f16], y: &mut [f32]));
entry!(f16_to_f32_avx2 => f16_to_f32_a2, "avx2,fma,f16c", (x: &[f16], o: &mut [f32]));
entry!(gemm_acc_f32_avx2 => gemm_acc_f32_a2, "avx2,fma", (d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]));
entry!(attn_f16_acc_avx2 => attn_f16_acc_a2, "avx2,fma,f16c",
    (q: &[f32], kv: KvRows<'_>, sc: f32, st: &mut [f32], acc: &mut [f32]));
entry!(gemm_acc_f32_avx512 => gemm_acc_f32_a5, "avx512f", (d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]));
entry!(attn_f16_acc_avx512 => attn_f16_acc_a5, "avx512f",
    (q: &[f32], kv: KvRows<'_>, sc: f32, st: &mut [f32], acc: &mut [f32]));
entry!(exp_sub_sum_avx512 => exp_sub_sum_a5, "avx512f", (x: &mut [f32], s: f32, m: f32) -> f64);
entry!(silu_avx512 => silu_a5, "avx512f", (x: &mut [f32]));
entry!(swiglu_avx512 => swiglu_a5, "avx512f", (g: &mut [f32], u: &[f32]));
entry!(geglu_avx512 => geglu_a5, "avx512f", (g: &mut [f32], u: &[f32]));
entry!(dot_f32_avx512 => dot_f32_a5, "avx512f", (a: &[f32], b: &[f32]) -> f32);
entry!(dot_f16_f32_avx512 => dot_f16_f32_a5, "avx512f", (a: &[f16], b: &[f32]) -> f32);
entry!(axpy_f16_avx512 => axpy_f16_a5, "avx512f", (al: f32, x: &[f16], y: &mut [f32]));

// ------------------------------------------------------------------------------------------
// Loads and stores of whole vectors from fixed-size arrays (bounds are in the types).

#[target_feature(enable = "avx")]
fn ld8(a: &[f32; 8]) -> __m256 {
    // SAFETY: reads exactly the 8 floats of `a` (unaligned load).
    unsafe { _mm256_loadu_ps(a.as_ptr()) }
}

#[target_feature(enable = "avx")]
fn st8(a: &mut [f32; 8], v: __m256) {
    // SAFETY: writes exactly the 8 floats of `a` (unaligned store).
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx2,f16c")]
fn ld8h(a: &[f16; 8]) -> __m256 {
    // SAFETY: reads exactly the 16 bytes of `a` (`f16` is a transparent `u16`).
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().cast())) }
}

#[target_feature(enable = "avx512f")]
fn ld16(a: &[f32; 16]) -> __m512 {
    // SAFETY: reads exactly the 16 floats of `a`.
    unsafe { _mm512_loadu_ps(a.as_ptr()) }
}

#[target_feature(enable = "avx512f")]
fn st16(a: &mut [f32; 16], v: __m512) {
    // SAFETY: writes exactly the 16 floats of `a`.
    unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx512f")]
fn ld16h(a: &[f16; 16]) -> __m512 {
    // SAFETY: reads exactly the 32 bytes of `a` (`f16` is a transparent `u16`).
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(a.as_ptr().cast())) }
}

#[target_feature(enable = "avx")]
fn hsum8(v: __m256) -> f32 {
    let mut lanes = [0.0f32; 8];
    st8(&mut lanes, v);
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

#[target_feature(enable = "avx")]
fn hsum4d(v: __m256d) -> f64 {
    let mut lanes = [0.0f64; 4];
    // SAFETY: writes exactly the 4 doubles of `lanes`.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), v) };
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

// ------------------------------------------------------------------------------------------
// Constants of the vectorised exp: see `super::exp_consts`.

use super::exp_consts::*;

#[target_feature(enable = "avx2,fma")]
fn splat(bits: u32) -> __m256 {
    _mm256_set1_ps(f32::from_bits(bits))
}

/// `exp(x)` per lane, AVX2. `exp(x) = 2^n · exp(b)` with `n = round(x / ln 2)` and
/// `exp(b) - 1 ≈ j`, a degree-5 polynomial in `b ∈ [-ln2/2, ln2/2]`. When `|n| > 126` the
/// power of two is split into two factors (`s1`, `s2`) so it does not overflow the exponent
/// field; when `|n| > 192` the result is 0 or +inf.
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let shift = splat(EXP_SHIFT);
    let z = _mm256_fmadd_ps(x, splat(EXP_LOG2E), shift);
    let n = _mm256_sub_ps(z, shift);
    let b = _mm256_fnmadd_ps(
        n,
        splat(EXP_LN2_LO),
        _mm256_fnmadd_ps(n, splat(EXP_LN2_HI), x),
    );
    // 2^n: the integer n sits in z's low mantissa bits; shift it into the exponent field.
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(splat(EXP_C5), b, splat(EXP_C4)),
            u,
            _mm256_fmadd_ps(splat(EXP_C3), b, splat(EXP_C2)),
        ),
        u,
        _mm256_mul_ps(splat(EXP_C1), b),
    );
    let normal = _mm256_fmadd_ps(j, k, k);
    if _mm256_movemask_ps(big) == 0 {
        return normal;
    }
    let neg = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps()));
    let g = _mm256_and_si256(neg, _mm256_set1_epi32(0x8200_0000u32 as i32));
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let split = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    let r = _mm256_blendv_ps(normal, split, big);
    _mm256_blendv_ps(r, _mm256_mul_ps(s1, s1), huge)
}

#[target_feature(enable = "avx2,fma")]
fn silu8(x: __m256) -> __m256 {
    let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

// ------------------------------------------------------------------------------------------
// AVX2 implementations.

#[target_feature(enable = "avx2,fma")]
fn sum_squares_a2(x: &[f32]) -> f64 {
    let (chunks, tail) = x.as_chunks::<8>();
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for c in chunks {
        let v = ld8(c);
        let sq = _mm256_mul_ps(v, v);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(sq)));
    }
    hsum4d(_mm256_add_pd(lo, hi)) + scalar::sum_squares(tail)
}

#[target_feature(enable = "avx2,fma")]
fn scale_a2(y: &mut [f32], s: f32) {
    let (chunks, tail) = y.as_chunks_mut::<8>();
    let vs = _mm256_set1_ps(s);
    for c in chunks {
        let v = _mm256_mul_ps(ld8(c), vs);
        st8(c, v);
    }
    scalar::scale(tail, s);
}

#[target_feature(enable = "avx2,fma")]
fn scale_mul_a2(y: &mut [f32], s: f32, w: &[f32]) {
    assert_eq!(y.len(), w.len(), "scale_mul: operands differ in length");
    let (yc, yt) = y.as_chunks_mut::<8>();
    let (wc, wt) = w.as_chunks::<8>();
    let vs = _mm256_set1_ps(s);
    for (a, b) in yc.iter_mut().zip(wc) {
        // Two roundings, as `scale` then `mul_assign` (no fused multiply-add).
        let v = _mm256_mul_ps(_mm256_mul_ps(ld8(a), vs), ld8(b));
        st8(a, v);
    }
    scalar::scale_mul(yt, s, wt);
}

#[target_feature(enable = "avx2,fma")]
fn add_assign_a2(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add: operands differ in length");
    let (yc, yt) = y.as_chunks_mut::<8>();
    let (xc, xt) = x.as_chunks::<8>();
    for (a, b) in yc.iter_mut().zip(xc) {
        let v = _mm256_add_ps(ld8(a), ld8(b));
        st8(a, v);
    }
    scalar::add_assign(yt, xt);
}

#[target_feature(enable = "avx2,fma")]
fn max_a2(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<8>();
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in chunks {
        m = _mm256_max_ps(m, ld8(c));
    }
    let mut lanes = [0.0f32; 8];
    st8(&mut lanes, m);
    let head = scalar::max(&lanes);
    let rest = scalar::max(tail);
    if head > rest {
        head
    } else {
        rest
    }
}

#[target_feature(enable = "avx2,fma")]
fn exp_sub_sum_a2(x: &mut [f32], s: f32, m: f32) -> f64 {
    let (chunks, tail) = x.as_chunks_mut::<8>();
    let (vs, vm) = (_mm256_set1_ps(s), _mm256_set1_ps(m));
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for c in chunks {
        // x·s rounded, then − m (no fused multiply-add, as the scalar reference).
        let e = exp8(_mm256_sub_ps(_mm256_mul_ps(ld8(c), vs), vm));
        st8(c, e);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
    }
    hsum4d(_mm256_add_pd(lo, hi)) + scalar::exp_sub_sum(tail, s, m)
}

#[target_feature(enable = "avx2,fma")]
fn silu_a2(x: &mut [f32]) {
    let (chunks, tail) = x.as_chunks_mut::<8>();
    for c in chunks {
        let v = silu8(ld8(c));
        st8(c, v);
    }
    scalar::silu(tail);
}

#[target_feature(enable = "avx2,fma")]
fn swiglu_a2(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "swiglu: gate and up differ in length");
    let (gc, gt) = g.as_chunks_mut::<8>();
    let (uc, ut) = u.as_chunks::<8>();
    for (a, b) in gc.iter_mut().zip(uc) {
        let v = _mm256_mul_ps(silu8(ld8(a)), ld8(b));
        st8(a, v);
    }
    // The tail through the same vector code (zero-padded), so that every value's bits are
    // independent of its position in the slice (`matmul::GluFn`).
    let (mut a, mut b) = ([0.0f32; 8], [0.0f32; 8]);
    a[..gt.len()].copy_from_slice(gt);
    b[..ut.len()].copy_from_slice(ut);
    let v = _mm256_mul_ps(silu8(ld8(&a)), ld8(&b));
    st8(&mut a, v);
    let n = gt.len();
    gt.copy_from_slice(&a[..n]);
}

/// GeGLU, 8 values at a time: round to f16 (`vcvtps2ph`, round to nearest even like
/// `f16::from_f32`), gather the table words, widen back (`vcvtph2ps`), multiply by `up`; the
/// `≤ −10` / `≥ 10` cases by masks. Same bits as [`super::geglu_scalar`].
#[target_feature(enable = "avx2,fma,f16c")]
fn geglu_a2(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "geglu: gate and up differ in length");
    let table = super::gelu_table();
    assert_eq!(table.len(), 65_537, "gelu table has its padding entry");
    let (gc, gt) = g.as_chunks_mut::<8>();
    let (uc, ut) = u.as_chunks::<8>();
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    let low16 = _mm256_set1_epi32(0xFFFF);
    for (a, b) in gc.iter_mut().zip(uc) {
        let x = ld8(a);
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        let idx = _mm256_cvtepu16_epi32(h);
        // SAFETY: every index is < 65 536, so the 4 bytes read at `2·idx` lie inside the
        // 65 537-entry table (asserted above).
        let words = unsafe { _mm256_i32gather_epi32::<2>(table.as_ptr().cast(), idx) };
        let words = _mm256_and_si256(words, low16);
        // Pack the 8 16-bit results (in the low halves of the 32-bit lanes) into 128 bits.
        let packed = _mm256_packus_epi32(words, words); // per 128-bit lane: w0..w3 w0..w3
        let packed = _mm256_permute4x64_epi64::<0b1000>(packed);
        let gelu = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
        let gelu = _mm256_blendv_ps(gelu, x, _mm256_cmp_ps::<_CMP_GE_OQ>(x, hi));
        let v = _mm256_mul_ps(gelu, ld8(b));
        let v = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, lo), v);
        st8(a, v);
    }
    super::geglu_scalar(gt, ut);
}

#[target_feature(enable = "avx2,fma")]
fn dot_f32_a2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: operands differ in length");
    let (ac, at) = a.as_chunks::<8>();
    let (bc, bt) = b.as_chunks::<8>();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 4 <= ac.len() {
        for (k, lane) in acc.iter_mut().enumerate() {
            *lane = _mm256_fmadd_ps(ld8(&ac[i + k]), ld8(&bc[i + k]), *lane);
        }
        i += 4;
    }
    while i < ac.len() {
        acc[0] = _mm256_fmadd_ps(ld8(&ac[i]), ld8(&bc[i]), acc[0]);
        i += 1;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum8(sum) + scalar::dot_f32(at, bt)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn f32_to_f16_a2(x: &[f32], o: &mut [f16]) {
    assert_eq!(x.len(), o.len(), "f32_to_f16: lengths differ");
    let (xc, xt) = x.as_chunks::<8>();
    let (oc, ot) = o.as_chunks_mut::<8>();
    for (src, dst) in xc.iter().zip(oc.iter_mut()) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(ld8(src));
        // SAFETY: writes exactly the 16 bytes of `dst` (`f16` is a transparent `u16`).
        unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), h) };
    }
    scalar::f32_to_f16(xt, ot);
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16_f32_a2(a: &[f16], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16_f32: operands differ in length");
    let (ac, at) = a.as_chunks::<8>();
    let (bc, bt) = b.as_chunks::<8>();
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut pairs = ac.iter().zip(bc);
    while let (Some((a0, b0)), Some((a1, b1))) = (pairs.next(), pairs.next()) {
        s0 = _mm256_fmadd_ps(ld8h(a0), ld8(b0), s0);
        s1 = _mm256_fmadd_ps(ld8h(a1), ld8(b1), s1);
    }
    if ac.len() % 2 == 1 {
        let last = ac.len() - 1;
        s0 = _mm256_fmadd_ps(ld8h(&ac[last]), ld8(&bc[last]), s0);
    }
    hsum8(_mm256_add_ps(s0, s1)) + scalar::dot_f16_f32(at, bt)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn axpy_f16_a2(alpha: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f16: lengths differ");
    let (xc, xt) = x.as_chunks::<8>();
    let (yc, yt) = y.as_chunks_mut::<8>();
    let va = _mm256_set1_ps(alpha);
    for (src, dst) in xc.iter().zip(yc.iter_mut()) {
        let v = _mm256_fmadd_ps(ld8h(src), va, ld8(dst));
        st8(dst, v);
    }
    scalar::axpy_f16(alpha, xt, yt);
}

// ------------------------------------------------------------------------------------------
// AVX-512 implementations.

#[target_feature(enable = "avx512f")]
fn splat16(bits: u32) -> __m512 {
    _mm512_set1_ps(f32::from_bits(bits))
}

/// `exp(x)` per lane, AVX-512: the same reduction and polynomial as [`exp8`], with the
/// polynomial including the constant term (`p(b) ≈ exp(b)`) and the power of two applied by
/// `vscalefps`, which handles large `|n|` by itself; `|n| > 192` gives 0 or +inf directly.
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let shift = splat16(EXP_SHIFT);
    let z = _mm512_fmadd_ps(x, splat16(EXP_LOG2E), shift);
    let n = _mm512_sub_ps(z, shift);
    let b = _mm512_fnmadd_ps(
        n,
        splat16(EXP_LN2_LO),
        _mm512_fnmadd_ps(n, splat16(EXP_LN2_HI), x),
    );
    let huge = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
    let u = _mm512_mul_ps(b, b);
    let j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(splat16(EXP_C5), b, splat16(EXP_C4)),
            u,
            _mm512_fmadd_ps(splat16(EXP_C3), b, splat16(EXP_C2)),
        ),
        u,
        _mm512_fmadd_ps(splat16(EXP_C1), b, _mm512_set1_ps(1.0)),
    );
    let res = _mm512_scalef_ps(j, n);
    if huge == 0 {
        return res;
    }
    let nonpos = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps());
    let alt = _mm512_mask_blend_ps(nonpos, _mm512_set1_ps(f32::INFINITY), _mm512_setzero_ps());
    _mm512_mask_blend_ps(huge, res, alt)
}

#[target_feature(enable = "avx512f")]
fn silu16(x: __m512) -> __m512 {
    let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
}

#[target_feature(enable = "avx512f")]
fn exp_sub_sum_a5(x: &mut [f32], s: f32, m: f32) -> f64 {
    let (chunks, tail) = x.as_chunks_mut::<16>();
    let (vs, vm) = (_mm512_set1_ps(s), _mm512_set1_ps(m));
    let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    for c in chunks {
        // x·s rounded, then − m (no fused multiply-add, as the scalar reference).
        let e = exp16(_mm512_sub_ps(_mm512_mul_ps(ld16(c), vs), vm));
        st16(c, e);
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(upper));
    }
    _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)) + scalar::exp_sub_sum(tail, s, m)
}

#[target_feature(enable = "avx512f")]
fn silu_a5(x: &mut [f32]) {
    let (chunks, tail) = x.as_chunks_mut::<16>();
    for c in chunks {
        let v = silu16(ld16(c));
        st16(c, v);
    }
    scalar::silu(tail);
}

#[target_feature(enable = "avx512f")]
fn swiglu_a5(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "swiglu: gate and up differ in length");
    let (gc, gt) = g.as_chunks_mut::<16>();
    let (uc, ut) = u.as_chunks::<16>();
    for (a, b) in gc.iter_mut().zip(uc) {
        let v = _mm512_mul_ps(silu16(ld16(a)), ld16(b));
        st16(a, v);
    }
    // The tail through the same vector code (zero-padded), so that every value's bits are
    // independent of its position in the slice (`matmul::GluFn`).
    let (mut a, mut b) = ([0.0f32; 16], [0.0f32; 16]);
    a[..gt.len()].copy_from_slice(gt);
    b[..ut.len()].copy_from_slice(ut);
    let v = _mm512_mul_ps(silu16(ld16(&a)), ld16(&b));
    st16(&mut a, v);
    let n = gt.len();
    gt.copy_from_slice(&a[..n]);
}

/// GeGLU, 16 values at a time (see [`geglu_a2`]); same bits as [`super::geglu_scalar`].
#[target_feature(enable = "avx512f")]
fn geglu_a5(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "geglu: gate and up differ in length");
    let table = super::gelu_table();
    assert_eq!(table.len(), 65_537, "gelu table has its padding entry");
    let (gc, gt) = g.as_chunks_mut::<16>();
    let (uc, ut) = u.as_chunks::<16>();
    let (lo, hi) = (_mm512_set1_ps(-10.0), _mm512_set1_ps(10.0));
    for (a, b) in gc.iter_mut().zip(uc) {
        let x = ld16(a);
        let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        let idx = _mm512_cvtepu16_epi32(h);
        // SAFETY: every index is < 65 536, so the 4 bytes read at `2·idx` lie inside the
        // 65 537-entry table (asserted above).
        let words = unsafe { _mm512_i32gather_epi32::<2>(idx, table.as_ptr().cast()) };
        let gelu = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words)); // keeps the low 16 bits
        let gelu = _mm512_mask_mov_ps(gelu, _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, hi), x);
        let v = _mm512_mul_ps(gelu, ld16(b));
        let v = _mm512_maskz_mov_ps(!_mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, lo), v);
        st16(a, v);
    }
    super::geglu_scalar(gt, ut);
}

#[target_feature(enable = "avx512f")]
fn dot_f32_a5(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: operands differ in length");
    let (ac, at) = a.as_chunks::<16>();
    let (bc, bt) = b.as_chunks::<16>();
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut pairs = ac.iter().zip(bc);
    while let (Some((a0, b0)), Some((a1, b1))) = (pairs.next(), pairs.next()) {
        s0 = _mm512_fmadd_ps(ld16(a0), ld16(b0), s0);
        s1 = _mm512_fmadd_ps(ld16(a1), ld16(b1), s1);
    }
    if ac.len() % 2 == 1 {
        let last = ac.len() - 1;
        s0 = _mm512_fmadd_ps(ld16(&ac[last]), ld16(&bc[last]), s0);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + scalar::dot_f32(at, bt)
}

#[target_feature(enable = "avx512f")]
fn dot_f16_f32_a5(a: &[f16], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16_f32: operands differ in length");
    let (ac, at) = a.as_chunks::<16>();
    let (bc, bt) = b.as_chunks::<16>();
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut pairs = ac.iter().zip(bc);
    while let (Some((a0, b0)), Some((a1, b1))) = (pairs.next(), pairs.next()) {
        s0 = _mm512_fmadd_ps(ld16h(a0), ld16(b0), s0);
        s1 = _mm512_fmadd_ps(ld16h(a1), ld16(b1), s1);
    }
    if ac.len() % 2 == 1 {
        let last = ac.len() - 1;
        s0 = _mm512_fmadd_ps(ld16h(&ac[last]), ld16(&bc[last]), s0);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + scalar::dot_f16_f32(at, bt)
}

#[target_feature(enable = "avx512f")]
fn axpy_f16_a5(alpha: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f16: lengths differ");
    let (xc, xt) = x.as_chunks::<16>();
    let (yc, yt) = y.as_chunks_mut::<16>();
    let va = _mm512_set1_ps(alpha);
    for (src, dst) in xc.iter().zip(yc.iter_mut()) {
        let v = _mm512_fmadd_ps(ld16h(src), va, ld16(dst));
        st16(dst, v);
    }
    scalar::axpy_f16(alpha, xt, yt);
}

// ------------------------------------------------------------------------------------------
// Attention helpers: f16 → f32 rows, the small tile GEMM, the f16-accumulator online softmax.

#[target_feature(enable = "avx2,fma,f16c")]
fn f16_to_f32_a2(x: &[f16], o: &mut [f32]) {
    assert_eq!(x.len(), o.len(), "f16_to_f32: lengths differ");
    let (xc, xt) = x.as_chunks::<8>();
    let (oc, ot) = o.as_chunks_mut::<8>();
    for (src, dst) in xc.iter().zip(oc.iter_mut()) {
        st8(dst, ld8h(src));
    }
    scalar::f16_to_f32(xt, ot);
}

/// One register block of `c += a·b`: rows `r0..r0 + R`, columns `j0..j0 + 8·V` of which the
/// last vector holds only the lanes set in `tail` (a lane mask of `_mm256_maskload_ps`).
///
/// # Safety
/// `d.check` passed for the slices behind `a`, `b`, `c`, and the block lies inside the shape
/// (masked-off lanes are neither read nor written).
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_block_a2<const R: usize, const V: usize>(
    d: &GemmDims,
    (a, b, c): (*const f32, *const f32, *mut f32),
    (r0, j0): (usize, usize),
    tail: __m256i,
) {
    let full = _mm256_set1_epi32(-1);
    let mask = |v: usize| if v + 1 == V { tail } else { full };
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for (rr, row) in acc.iter_mut().enumerate() {
        for (v, x) in row.iter_mut().enumerate() {
            // SAFETY: element (r0 + rr, j0 + 8v + lane) of c is inside the checked shape for
            // every unmasked lane.
            *x = unsafe { _mm256_maskload_ps(c.add((r0 + rr) * d.ldc + j0 + 8 * v), mask(v)) };
        }
    }
    for i in 0..d.k {
        let mut bv = [_mm256_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: row i < k of b, columns inside the checked shape for unmasked lanes.
            *x = unsafe { _mm256_maskload_ps(b.add(i * d.ldb + j0 + 8 * v), mask(v)) };
        }
        for (rr, row) in acc.iter_mut().enumerate() {
            // SAFETY: element (r0 + rr, i) of a, inside the checked shape.
            let av = _mm256_set1_ps(unsafe { *a.add((r0 + rr) * d.lda + i) });
            for (x, &bx) in row.iter_mut().zip(&bv) {
                *x = _mm256_fmadd_ps(av, bx, *x);
            }
        }
    }
    for (rr, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: as for the loads of c.
            unsafe { _mm256_maskstore_ps(c.add((r0 + rr) * d.ldc + j0 + 8 * v), mask(v), x) };
        }
    }
}

#[target_feature(enable = "avx2,fma")]
fn gemm_acc_f32_a2(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]) {
    d.check(a.len(), b.len(), c.len());
    if d.m == 0 || d.n == 0 {
        return;
    }
    let ptrs = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let full = _mm256_set1_epi32(-1);
    let mut r0 = 0;
    while r0 < d.m {
        let rows = (d.m - r0).min(4);
        let mut j0 = 0;
        while j0 < d.n {
            let cols = (d.n - j0).min(32);
            let nv = cols.div_ceil(8);
            let rem = cols - 8 * (nv - 1);
            let tail = if rem == 8 {
                full
            } else {
                let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                _mm256_cmpgt_epi32(_mm256_set1_epi32(rem as i32), lanes)
            };
            // SAFETY: `d.check` passed; rows r0..r0+rows and columns j0..j0+cols are inside
            // the shape, the lanes beyond `cols` are masked off.
            unsafe {
                match (rows, nv) {
                    (4, 4) => gemm_block_a2::<4, 4>(&d, ptrs, (r0, j0), tail),
                    (4, 3) => gemm_block_a2::<4, 3>(&d, ptrs, (r0, j0), tail),
                    (4, 2) => gemm_block_a2::<4, 2>(&d, ptrs, (r0, j0), tail),
                    (4, _) => gemm_block_a2::<4, 1>(&d, ptrs, (r0, j0), tail),
                    (3, 4) => gemm_block_a2::<3, 4>(&d, ptrs, (r0, j0), tail),
                    (3, 3) => gemm_block_a2::<3, 3>(&d, ptrs, (r0, j0), tail),
                    (3, 2) => gemm_block_a2::<3, 2>(&d, ptrs, (r0, j0), tail),
                    (3, _) => gemm_block_a2::<3, 1>(&d, ptrs, (r0, j0), tail),
                    (2, 4) => gemm_block_a2::<2, 4>(&d, ptrs, (r0, j0), tail),
                    (2, 3) => gemm_block_a2::<2, 3>(&d, ptrs, (r0, j0), tail),
                    (2, 2) => gemm_block_a2::<2, 2>(&d, ptrs, (r0, j0), tail),
                    (2, _) => gemm_block_a2::<2, 1>(&d, ptrs, (r0, j0), tail),
                    (_, 4) => gemm_block_a2::<1, 4>(&d, ptrs, (r0, j0), tail),
                    (_, 3) => gemm_block_a2::<1, 3>(&d, ptrs, (r0, j0), tail),
                    (_, 2) => gemm_block_a2::<1, 2>(&d, ptrs, (r0, j0), tail),
                    (_, _) => gemm_block_a2::<1, 1>(&d, ptrs, (r0, j0), tail),
                }
            }
            j0 += cols;
        }
        r0 += rows;
    }
}

/// One register block of `c += a·b` with 16-lane vectors (see [`gemm_block_a2`]); `tail` is
/// the lane mask of the last vector.
///
/// # Safety
/// As [`gemm_block_a2`].
#[target_feature(enable = "avx512f")]
unsafe fn gemm_block_a5<const R: usize, const V: usize>(
    d: &GemmDims,
    (a, b, c): (*const f32, *const f32, *mut f32),
    (r0, j0): (usize, usize),
    tail: __mmask16,
) {
    let mask = |v: usize| if v + 1 == V { tail } else { 0xffff };
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for (rr, row) in acc.iter_mut().enumerate() {
        for (v, x) in row.iter_mut().enumerate() {
            // SAFETY: element (r0 + rr, j0 + 16v + lane) of c is inside the checked shape for
            // every unmasked lane (masked lanes are not accessed).
            *x = unsafe { _mm512_maskz_loadu_ps(mask(v), c.add((r0 + rr) * d.ldc + j0 + 16 * v)) };
        }
    }
    for i in 0..d.k {
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: row i < k of b, columns inside the checked shape for unmasked lanes.
            *x = unsafe { _mm512_maskz_loadu_ps(mask(v), b.add(i * d.ldb + j0 + 16 * v)) };
        }
        for (rr, row) in acc.iter_mut().enumerate() {
            // SAFETY: element (r0 + rr, i) of a, inside the checked shape.
            let av = _mm512_set1_ps(unsafe { *a.add((r0 + rr) * d.lda + i) });
            for (x, &bx) in row.iter_mut().zip(&bv) {
                *x = _mm512_fmadd_ps(av, bx, *x);
            }
        }
    }
    for (rr, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: as for the loads of c.
            unsafe { _mm512_mask_storeu_ps(c.add((r0 + rr) * d.ldc + j0 + 16 * v), mask(v), x) };
        }
    }
}

#[target_feature(enable = "avx512f")]
fn gemm_acc_f32_a5(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]) {
    d.check(a.len(), b.len(), c.len());
    if d.m == 0 || d.n == 0 {
        return;
    }
    let ptrs = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let mut r0 = 0;
    while r0 < d.m {
        let rows = (d.m - r0).min(4);
        let mut j0 = 0;
        while j0 < d.n {
            let cols = (d.n - j0).min(64);
            let nv = cols.div_ceil(16);
            let rem = cols - 16 * (nv - 1);
            let tail: __mmask16 = if rem == 16 { 0xffff } else { (1u16 << rem) - 1 };
            // SAFETY: `d.check` passed; rows r0..r0+rows and columns j0..j0+cols are inside
            // the shape, the lanes beyond `cols` are masked off.
            unsafe {
                match (rows, nv) {
                    (4, 4) => gemm_block_a5::<4, 4>(&d, ptrs, (r0, j0), tail),
                    (4, 3) => gemm_block_a5::<4, 3>(&d, ptrs, (r0, j0), tail),
                    (4, 2) => gemm_block_a5::<4, 2>(&d, ptrs, (r0, j0), tail),
                    (4, _) => gemm_block_a5::<4, 1>(&d, ptrs, (r0, j0), tail),
                    (3, 4) => gemm_block_a5::<3, 4>(&d, ptrs, (r0, j0), tail),
                    (3, 3) => gemm_block_a5::<3, 3>(&d, ptrs, (r0, j0), tail),
                    (3, 2) => gemm_block_a5::<3, 2>(&d, ptrs, (r0, j0), tail),
                    (3, _) => gemm_block_a5::<3, 1>(&d, ptrs, (r0, j0), tail),
                    (2, 4) => gemm_block_a5::<2, 4>(&d, ptrs, (r0, j0), tail),
                    (2, 3) => gemm_block_a5::<2, 3>(&d, ptrs, (r0, j0), tail),
                    (2, 2) => gemm_block_a5::<2, 2>(&d, ptrs, (r0, j0), tail),
                    (2, _) => gemm_block_a5::<2, 1>(&d, ptrs, (r0, j0), tail),
                    (_, 4) => gemm_block_a5::<1, 4>(&d, ptrs, (r0, j0), tail),
                    (_, 3) => gemm_block_a5::<1, 3>(&d, ptrs, (r0, j0), tail),
                    (_, 2) => gemm_block_a5::<1, 2>(&d, ptrs, (r0, j0), tail),
                    (_, _) => gemm_block_a5::<1, 1>(&d, ptrs, (r0, j0), tail),
                }
            }
            j0 += cols;
        }
        r0 += rows;
    }
}

/// `a = f16(a · s)` (when `s` is given) then `a = f16(fma(v, w, a))`, AVX2: one accumulator
/// update of `attn_f16_acc`, whole vectors here, the tail in the scalar reference.
#[target_feature(enable = "avx2,fma,f16c")]
fn acc_row_a2(a: &mut [f32], v: &[f16], s: Option<f32>, w: f32) {
    let (ac, at) = a.as_chunks_mut::<8>();
    let (vc, vt) = v.as_chunks::<8>();
    let vw = _mm256_set1_ps(w);
    if let Some(s) = s {
        let vs = _mm256_set1_ps(s);
        for (x, v) in ac.iter_mut().zip(vc) {
            let r = round8h(_mm256_mul_ps(ld8(x), vs));
            st8(x, round8h(_mm256_fmadd_ps(ld8h(v), vw, r)));
        }
    } else {
        for (x, v) in ac.iter_mut().zip(vc) {
            st8(x, round8h(_mm256_fmadd_ps(ld8h(v), vw, ld8(x))));
        }
    }
    scalar::acc_row_f16(at, vt, s, w);
}

#[target_feature(enable = "avx2,fma,f16c")]
fn round8h(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn attn_f16_acc_a2(q: &[f32], kv: KvRows<'_>, scale: f32, state: &mut [f32], acc: &mut [f32]) {
    scalar::attn_f16_acc_with(
        |k, q| dot_f16_f32_a2(k, q),
        |e: &mut [f32; ATTN_KEY_BLOCK]| {
            for x in e.as_chunks_mut::<8>().0 {
                st8(x, exp8(ld8(x)));
            }
        },
        |a, v, s, w| acc_row_a2(a, v, s, w),
        q,
        kv,
        scale,
        state,
        acc,
    )
}

#[target_feature(enable = "avx512f")]
fn round16h(x: __m512) -> __m512 {
    _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

/// [`acc_row_a2`] with AVX-512 vectors.
#[target_feature(enable = "avx512f")]
fn acc_row_a5(a: &mut [f32], v: &[f16], s: Option<f32>, w: f32) {
    let (ac, at) = a.as_chunks_mut::<16>();
    let (vc, vt) = v.as_chunks::<16>();
    let vw = _mm512_set1_ps(w);
    if let Some(s) = s {
        let vs = _mm512_set1_ps(s);
        for (x, v) in ac.iter_mut().zip(vc) {
            let r = round16h(_mm512_mul_ps(ld16(x), vs));
            st16(x, round16h(_mm512_fmadd_ps(ld16h(v), vw, r)));
        }
    } else {
        for (x, v) in ac.iter_mut().zip(vc) {
            st16(x, round16h(_mm512_fmadd_ps(ld16h(v), vw, ld16(x))));
        }
    }
    scalar::acc_row_f16(at, vt, s, w);
}

#[target_feature(enable = "avx512f")]
fn attn_f16_acc_a5(q: &[f32], kv: KvRows<'_>, scale: f32, state: &mut [f32], acc: &mut [f32]) {
    scalar::attn_f16_acc_with(
        |k, q| dot_f16_f32_a5(k, q),
        |e: &mut [f32; ATTN_KEY_BLOCK]| {
            for x in e.as_chunks_mut::<16>().0 {
                st16(x, exp16(ld16(x)));
            }
        },
        |a, v, s, w| acc_row_a5(a, v, s, w),
        q,
        kv,
        scale,
        state,
        acc,
    )
}

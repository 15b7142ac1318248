//! The f32 operations of a transformer layer, besides matrix multiplication: RMSNorm,
//! softmax, RoPE, SiLU/SwiGLU, GELU/GeGLU, element-wise add/mul/scale, and the f16 helpers of
//! an f16 KV cache.
//!
//! Every operation is defined by its scalar reference in [`scalar`], which mirrors ggml-cpu's
//! arithmetic (where ggml sums in `double`, so do we). The hot inner loops are dispatched
//! through [`OpKernels`], a table of function pointers inside the ISA's
//! [`crate::dispatch::Kernels`]; SIMD versions (`x86.rs`) are tested against the scalar ones.
//!
//! The public functions here ([`rms_norm`], [`softmax`], …) use the global table
//! ([`crate::dispatch::kernels`]). Operations that are not hot enough to vectorise (RoPE, whose
//! cost is `O(n_heads · head_dim)` per token, and GELU, which ggml computes through a lookup
//! table) have one implementation.
//!
//! Length mismatches between operands are programming errors in the caller (buffer shapes are
//! fixed when the model is loaded) and panic with a message.

use half::f16;

pub mod scalar;

pub use scalar::{GemmDims, KvRows};

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod neon;

/// Constants of the vectorised `exp` shared by the SIMD versions: bit patterns of ggml's
/// hex-float constants in `ggml_v_expf` (Rust has no hex-float literals).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod exp_consts {
    /// 0x1.8p23: adding it rounds a float (|x| < 2²²) to an integer in the low mantissa bits.
    pub const EXP_SHIFT: u32 = 0x4b40_0000;
    /// 0x1.715476p+0 = log2(e).
    pub const EXP_LOG2E: u32 = 0x3fb8_aa3b;
    /// 0x1.62e4p-1: ln 2, high part.
    pub const EXP_LN2_HI: u32 = 0x3f31_7200;
    /// 0x1.7f7d1cp-20: ln 2, low part.
    pub const EXP_LN2_LO: u32 = 0x35bf_be8e;
    /// 0x1.0e4020p-7: polynomial coefficient of b⁵.
    pub const EXP_C5: u32 = 0x3c07_2010;
    /// 0x1.573e2ep-5: coefficient of b⁴.
    pub const EXP_C4: u32 = 0x3d2b_9f17;
    /// 0x1.555e66p-3: coefficient of b³.
    pub const EXP_C3: u32 = 0x3e2a_af33;
    /// 0x1.fffdb6p-2: coefficient of b².
    pub const EXP_C2: u32 = 0x3eff_fedb;
    /// 0x1.ffffecp-1: coefficient of b.
    pub const EXP_C1: u32 = 0x3f7f_fff6;
}

/// The dispatched f32 inner loops. Each field has the semantics of the [`scalar`] function of
/// the same name; SIMD versions differ from it only by floating-point summation order (sums)
/// or by the documented accuracy of a vectorised `exp` (≤ 2 ulp, see `x86.rs`).
#[derive(Clone, Copy)]
pub struct OpKernels {
    /// See [`scalar::sum_squares`].
    pub sum_squares: fn(&[f32]) -> f64,
    /// See [`scalar::scale`].
    pub scale: fn(&mut [f32], f32),
    /// See [`scalar::scale_mul`].
    pub scale_mul: fn(&mut [f32], f32, &[f32]),
    /// See [`scalar::add_assign`].
    pub add_assign: fn(&mut [f32], &[f32]),
    /// See [`scalar::max`].
    pub max: fn(&[f32]) -> f32,
    /// See [`scalar::exp_sub_sum`].
    pub exp_sub_sum: fn(&mut [f32], f32, f32) -> f64,
    /// See [`scalar::silu`].
    pub silu: fn(&mut [f32]),
    /// See [`scalar::swiglu`].
    pub swiglu: fn(&mut [f32], &[f32]),
    /// See [`geglu_scalar`] (bit-identical in every version: the same f16 table lookup).
    pub geglu: fn(&mut [f32], &[f32]),
    /// See [`scalar::dot_f32`].
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// See [`scalar::f32_to_f16`].
    pub f32_to_f16: fn(&[f32], &mut [f16]),
    /// See [`scalar::dot_f16_f32`].
    pub dot_f16_f32: fn(&[f16], &[f32]) -> f32,
    /// See [`scalar::axpy_f16`].
    pub axpy_f16: fn(f32, &[f16], &mut [f32]),
    /// See [`scalar::f16_to_f32`].
    pub f16_to_f32: fn(&[f16], &mut [f32]),
    /// See [`scalar::gemm_acc_f32`] (bit-identical in every version).
    pub gemm_acc_f32: fn(GemmDims, &[f32], &[f32], &mut [f32]),
    /// See [`scalar::attn_f16_acc`].
    pub attn_f16_acc: fn(&[f32], KvRows<'_>, f32, &mut [f32], &mut [f32]),
}

impl OpKernels {
    /// The scalar reference table.
    pub fn scalar() -> OpKernels {
        OpKernels {
            sum_squares: scalar::sum_squares,
            scale: scalar::scale,
            scale_mul: scalar::scale_mul,
            add_assign: scalar::add_assign,
            max: scalar::max,
            exp_sub_sum: scalar::exp_sub_sum,
            silu: scalar::silu,
            swiglu: scalar::swiglu,
            geglu: geglu_scalar,
            dot_f32: scalar::dot_f32,
            f32_to_f16: scalar::f32_to_f16,
            dot_f16_f32: scalar::dot_f16_f32,
            axpy_f16: scalar::axpy_f16,
            f16_to_f32: scalar::f16_to_f32,
            gemm_acc_f32: scalar::gemm_acc_f32,
            attn_f16_acc: scalar::attn_f16_acc,
        }
    }
}

impl std::fmt::Debug for OpKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpKernels").finish_non_exhaustive()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn install_avx2(table: &mut crate::dispatch::Kernels) {
    x86::install_avx2(&mut table.ops);
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn install_avx512(table: &mut crate::dispatch::Kernels) {
    x86::install_avx512(&mut table.ops);
}

#[cfg(target_arch = "aarch64")]
pub(crate) fn install_neon(table: &mut crate::dispatch::Kernels) {
    neon::install(&mut table.ops);
}

fn ops() -> &'static OpKernels {
    &crate::dispatch::kernels().ops
}

/// RMSNorm with the ops of `table`: `out[i] = x[i] * (1 / sqrt(mean(x²) + eps)) * weight[i]`
/// (`weight` = `None` skips the last multiply). Mirrors ggml: the mean of squares is summed
/// in f64, `scale = 1.0f / sqrtf(mean + eps)` in f32, then `x * scale`, then `* weight` as a
/// separate rounding (ggml's `rms_norm` followed by `mul`).
pub fn rms_norm_with(
    table: &OpKernels,
    x: &[f32],
    weight: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    assert_eq!(
        x.len(),
        out.len(),
        "rms_norm: input and output differ in length"
    );
    out.copy_from_slice(x);
    rms_norm_in_place_with(table, out, weight, eps);
}

/// In-place [`rms_norm_with`] (e.g. per-head QK-norm).
pub fn rms_norm_in_place_with(table: &OpKernels, x: &mut [f32], weight: Option<&[f32]>, eps: f32) {
    if x.is_empty() {
        return;
    }
    let mean = ((table.sum_squares)(x) / x.len() as f64) as f32;
    let scale = 1.0f32 / (mean + eps).sqrt();
    match weight {
        Some(w) => (table.scale_mul)(x, scale, w),
        None => (table.scale)(x, scale),
    }
}

/// RMSNorm (see [`rms_norm_with`]) with the global kernels. `x`, `out`: `[dim]`,
/// `weight`: `[dim]`.
pub fn rms_norm(x: &[f32], weight: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    rms_norm_with(ops(), x, weight, eps, out)
}

/// In-place RMSNorm with the global kernels.
pub fn rms_norm_in_place(x: &mut [f32], weight: Option<&[f32]>, eps: f32) {
    rms_norm_in_place_with(ops(), x, weight, eps)
}

/// Softmax in place with the ops of `table`, as ggml: `m = max(x)`, `x = exp(x - m)` summed in
/// f64, then `x *= (float)(1.0 / sum)`. An all-`-inf` row (fully masked) becomes all zeros
/// instead of NaN.
pub fn softmax_with(table: &OpKernels, x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let m = (table.max)(x);
    if m == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let sum = (table.exp_sub_sum)(x, 1.0, m);
    (table.scale)(x, (1.0 / sum) as f32);
}

/// Softmax in place with the global kernels. `x`: `[n]`.
pub fn softmax(x: &mut [f32]) {
    softmax_with(ops(), x)
}

/// Index of the largest value of `x`: greedy decoding's pick from a row of logits.
///
/// The order is the one the sampler uses on its candidates: NaN counts as `−∞` (it never
/// wins), `+0` ranks above `−0`, and among equal values the lowest index wins; an empty row,
/// or one holding only `−∞` and NaN, gives 0.
///
/// A row of logits has one value per vocabulary entry (150 000 for Qwen), and a plain
/// compare-and-keep loop carries a dependency from each element to the next (≈ 75 µs per
/// Qwen token, 0.7 % of a qwen2.5-0.5b token). This takes the maximum in 16 independent lanes
/// (the compiler vectorises it), then finds its first position in a second pass that tests
/// 256 values at a time (`first_hit`): 16–24 µs per Qwen token in `grist bench --profile`.
pub fn argmax(x: &[f32]) -> usize {
    const LANES: usize = 16;
    // `if v > m` keeps `m` when `v` is NaN.
    let keep_max = |m: f32, v: f32| if v > m { v } else { m };
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = keep_max(*m, v);
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| keep_max(m, v));
    if max == f32::NEG_INFINITY {
        return 0;
    }
    if max == 0.0 {
        // +0 outranks −0; fall through to the first −0 if there is no +0.
        if let Some(i) = first_hit(x, |v| v.to_bits() == 0) {
            return i;
        }
    }
    first_hit(x, |v| v == max).expect("the maximum is an element of the row")
}

/// Position of the first value of `x` for which `hit` holds, 256 values at a time: a `fold`
/// without early exit per piece (vectorised, `hit` inlined), then a scan of the one piece
/// that has it.
fn first_hit(x: &[f32], hit: impl Fn(f32) -> bool) -> Option<usize> {
    const SEARCH: usize = 256;
    let mut base = 0;
    for piece in x.chunks(SEARCH) {
        if piece.iter().fold(false, |any, &v| any | hit(v)) {
            return piece.iter().position(|&v| hit(v)).map(|i| base + i);
        }
        base += piece.len();
    }
    None
}

/// `x = silu(x)` in place (global kernels).
pub fn silu(x: &mut [f32]) {
    (ops().silu)(x)
}

/// SwiGLU in place: `gate = silu(gate) * up` (global kernels). `gate`, `up`: `[n_ff]`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    (ops().swiglu)(gate, up)
}

/// `y += x` (global kernels).
pub fn add(y: &mut [f32], x: &[f32]) {
    (ops().add_assign)(y, x)
}

/// `y *= s` (global kernels).
pub fn scale(y: &mut [f32], s: f32) {
    (ops().scale)(y, s)
}

/// Dot product of two f32 rows (global kernels).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    (ops().dot_f32)(a, b)
}

/// f32 row → f16 row, round to nearest even (global kernels); for writing the KV cache.
pub fn f32_to_f16_row(x: &[f32], out: &mut [f16]) {
    (ops().f32_to_f16)(x, out)
}

/// f16 row · f32 row (global kernels); attention scores against an f16 key cache.
pub fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    (ops().dot_f16_f32)(a, b)
}

/// `y += alpha * x` with `x` an f16 row (global kernels); accumulating cached value rows
/// weighted by attention probabilities.
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    (ops().axpy_f16)(alpha, x, y)
}

// ---------------------------------------------------------------------------------------------
// GELU: ggml-cpu defines GGML_GELU_FP16, so its f32 GELU rounds the input to f16 and reads a
// 65 536-entry table of f16 results of the tanh approximation (outside (-10, 10) it returns 0
// or x). We mirror that exactly; the table is built once on first use.

const GELU_COEF_A: f32 = 0.044715;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// The tanh approximation of GELU in f32: `0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))`
/// (ggml's `ggml_gelu_f32`, used to fill the table).
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// The GELU table: entry `b` = `gelu_tanh` of the f16 with bits `b`, rounded to f16. One
/// extra zero entry at the end (65 537 in all) lets the SIMD versions gather 32-bit words at
/// byte offset `2·b` (they keep the low 16 bits) without reading past the table.
fn gelu_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())).to_bits())
            .chain([0])
            .collect()
    })
}

/// GELU of one value exactly as ggml-cpu computes it (f16 lookup table, see above).
#[inline]
pub fn gelu1(x: f32) -> f32 {
    gelu1_in(gelu_table(), x)
}

#[inline]
fn gelu1_in(table: &[u16], x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        f16::from_bits(table[f16::from_f32(x).to_bits() as usize]).to_f32()
    }
}

/// `x = gelu(x)` in place (ggml's `ggml_vec_gelu_f32` with `GGML_GELU_FP16`).
pub fn gelu(x: &mut [f32]) {
    let table = gelu_table();
    for v in x {
        *v = gelu1_in(table, *v);
    }
}

/// GeGLU in place with the global kernels: `gate = gelu(gate) * up`, see [`geglu_scalar`].
/// `gate`, `up`: `[n_ff]` (or `[n, n_ff]`).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    (ops().geglu)(gate, up)
}

/// GeGLU in place: `gate = gelu(gate) * up` (ggml's `ggml_vec_geglu_f32`; for `gate ≥ 10`
/// the result is `gate * up`, for `gate ≤ -10` it is 0). The reference for the SIMD versions.
pub fn geglu_scalar(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu: gate and up differ in length");
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = if *g <= -10.0 {
            0.0
        } else {
            gelu1_in(table, *g) * u
        };
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE

/// How RoPE pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)` (ggml mode 0; LLaMA GGUFs, whose Q/K weights were permuted
    /// by the converter).
    Normal,
    /// Pairs `(i, i + n_rot/2)` (ggml `GGML_ROPE_TYPE_NEOX`; Qwen2/3, Gemma, Phi, …).
    Neox,
}

/// Parameters of a rotary position embedding.
#[derive(Clone, Copy, Debug)]
pub struct RopeParams<'a> {
    /// Number of leading dimensions of each head that rotate (`n_rot ≤ head_dim`, even); the
    /// rest pass through unchanged.
    pub n_rot: usize,
    /// Base of the frequencies (`rope.freq_base`, 10000 for LLaMA).
    pub freq_base: f32,
    /// Linear position scaling (`1 / rope.scaling.factor`; 1.0 = none).
    pub freq_scale: f32,
    /// Optional per-pair frequency divisors (`rope_freqs.weight`, `[n_rot/2]`).
    pub freq_factors: Option<&'a [f32]>,
    /// Pairing of dimensions.
    pub style: RopeStyle,
}

impl<'a> RopeParams<'a> {
    /// Plain RoPE: `freq_scale` 1, no frequency factors.
    pub fn new(n_rot: usize, freq_base: f32, style: RopeStyle) -> RopeParams<'a> {
        RopeParams {
            n_rot,
            freq_base,
            freq_scale: 1.0,
            freq_factors: None,
            style,
        }
    }
}

/// Fills `cache` (`[n_rot]`: cos, sin interleaved per pair) with the rotation of position
/// `pos`, as ggml's `ggml_rope_cache_init` without YaRN: `theta_scale = powf(base, -2/n_rot)`,
/// `theta_0 = pos`, `theta_{i+1} = theta_i * theta_scale` (iteratively, in f32), and pair `i`
/// rotates by `freq_scale * theta_i / freq_factors[i]`. Compute it once per token and apply it
/// to every head of Q and K with [`rope_apply`].
pub fn rope_cache(pos: usize, params: &RopeParams<'_>, cache: &mut [f32]) {
    let n_rot = params.n_rot;
    assert!(
        n_rot.is_multiple_of(2),
        "rope: n_rot ({n_rot}) must be even"
    );
    assert_eq!(cache.len(), n_rot, "rope: cache must hold n_rot values");
    if let Some(ff) = params.freq_factors {
        assert_eq!(
            ff.len(),
            n_rot / 2,
            "rope: freq_factors must hold n_rot/2 values"
        );
    }
    let theta_scale = params.freq_base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    for i in 0..n_rot / 2 {
        let ff = params.freq_factors.map_or(1.0, |f| f[i]);
        let angle = params.freq_scale * (theta / ff);
        cache[2 * i] = angle.cos();
        cache[2 * i + 1] = angle.sin();
        theta *= theta_scale;
    }
}

/// Rotates every head of `x` (`[n_heads, head_dim]`, contiguous) in place by the rotation in
/// `cache` (from [`rope_cache`], `[n_rot]`). Dimensions `n_rot..head_dim` are untouched.
/// Per pair `(a, b)`: `a' = a·cos − b·sin`, `b' = a·sin + b·cos` (ggml's `rotate_pairs`).
pub fn rope_apply(x: &mut [f32], head_dim: usize, cache: &[f32], style: RopeStyle) {
    let n_rot = cache.len();
    assert!(
        n_rot <= head_dim && head_dim > 0 && x.len().is_multiple_of(head_dim),
        "rope: n_rot {n_rot} / head_dim {head_dim} / len {} inconsistent",
        x.len()
    );
    let half = n_rot / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (c, s) = (cache[2 * i], cache[2 * i + 1]);
            let (ia, ib) = match style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (a, b) = (head[ia], head[ib]);
            head[ia] = a * c - b * s;
            head[ib] = a * s + b * c;
        }
    }
}

/// Convenience: [`rope_cache`] then [`rope_apply`] (allocates the cache; the executor keeps
/// its own cache buffer instead).
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, params: &RopeParams<'_>) {
    let mut cache = vec![0.0f32; params.n_rot];
    rope_cache(pos, params, &mut cache);
    rope_apply(x, head_dim, &cache, params.style);
}

//! AVX2 (+FMA, F16C) kernels: `vec_dot` for Q4_0, Q4_1, Q5_0, Q8_0 (× Q8_0/Q8_1), Q4_K,
//! Q5_K, Q6_K (× Q8_K), F16 and BF16, and the activation quantizers f32 → Q8_0, Q8_1, Q8_K.
//!
//! Layout tricks (docs/KERNELS.md, "x86 kernels", explains them with diagrams):
//! - The integer dot product is `vpmaddubsw` (u8 × i8 → adjacent pairs summed into i16) then
//!   `vpmaddwd` with ones (pairs of i16 → i32). The first operand must be unsigned, so weight
//!   codes are kept unsigned (`0..15`, `0..31`, `0..63`) and the format's offset is
//!   subtracted afterwards: for Q4_0/Q5_0 per pair in i16 (`maddubs(q, y) - maddubs(8, y)`),
//!   for Q6_K once per super-block from the activation block sums (`32 · Σ scale·bsum`).
//!   Only Q8_0 × Q8_0 uses the sign trick (`|w|` × `y·sign(w)`), exact because activation
//!   codes are in `-127..=127` (the Q8_0 quantizer never produces −128).
//! - Q4_0's 16 bytes hold values `j` (low nibble) and `j + 16` (high nibble): one 128-bit
//!   load, shifted copy in the upper half, `& 0x0F` gives the 32 values in order.
//! - Q5_0's 32 high bits become 32 bytes with a byte shuffle + compare (`bit_bytes_32`).
//! - k-quants: sub-block scales multiply the i16 pair sums through `vpmaddwd` (exact in
//!   i32); the whole super-block is summed in i32 and converted to float once. Q4_K/Q5_K
//!   mins are folded with the Q8_K `bsums`: `Σ_j min_j · (bsums[2j] + bsums[2j+1])`.
//! - Quantizers reproduce the scalar rounding exactly: `roundf` (half away from zero) for
//!   Q8_0/Q8_1 is built from truncation, Q8_K's `nearest_int` is round-half-even.

use std::arch::x86_64::*;

use grist_gguf::GgmlType;
use half::{bf16, f16};

use super::{byte_quantize, byte_vec_dot, check_quantize_len, check_same_len, k4_scales_mins};
use crate::blocks::{
    f32_to_f16, BlockIQ4_NL, BlockIQ4_XS, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1,
    BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K, IQ4NL_VALUES, QK, QK_K,
};
use crate::dispatch::Kernels;

/// Overrides the table entries these kernels accelerate.
pub(crate) fn install(table: &mut Kernels) {
    table.set_vec_dot(GgmlType::Q4_0, q4_0_bytes);
    table.set_vec_dot(GgmlType::Q4_1, q4_1_bytes);
    table.set_vec_dot(GgmlType::Q5_0, q5_0_bytes);
    table.set_vec_dot(GgmlType::Q5_1, q5_1_bytes);
    table.set_vec_dot(GgmlType::Q8_0, q8_0_bytes);
    table.set_vec_dot(GgmlType::IQ4_NL, iq4_nl_bytes);
    table.set_vec_dot(GgmlType::IQ4_XS, iq4_xs_bytes);
    table.set_vec_dot(GgmlType::Q4_K, q4_k_bytes);
    table.set_vec_dot(GgmlType::Q5_K, q5_k_bytes);
    table.set_vec_dot(GgmlType::Q6_K, q6_k_bytes);
    table.set_vec_dot(GgmlType::F16, f16_bytes);
    table.set_vec_dot(GgmlType::BF16, bf16_bytes);
    table.set_quantize_act(GgmlType::Q8_0, quantize_q8_0_bytes);
    table.set_quantize_act(GgmlType::Q8_1, quantize_q8_1_bytes);
    table.set_quantize_act(GgmlType::Q8_K, quantize_q8_k_bytes);
}

byte_vec_dot!(q4_0_bytes, vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
byte_vec_dot!(q4_1_bytes, vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
byte_vec_dot!(q5_0_bytes, vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
byte_vec_dot!(q5_1_bytes, vec_dot_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
byte_vec_dot!(q8_0_bytes, vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
byte_vec_dot!(iq4_nl_bytes, vec_dot_iq4_nl_q8_0, BlockIQ4_NL, BlockQ8_0);
byte_vec_dot!(iq4_xs_bytes, vec_dot_iq4_xs_q8_k, BlockIQ4_XS, BlockQ8_K);
byte_vec_dot!(q4_k_bytes, vec_dot_q4_k_q8_k, BlockQ4_K, BlockQ8_K);
byte_vec_dot!(q5_k_bytes, vec_dot_q5_k_q8_k, BlockQ5_K, BlockQ8_K);
byte_vec_dot!(q6_k_bytes, vec_dot_q6_k_q8_k, BlockQ6_K, BlockQ8_K);
byte_vec_dot!(f16_bytes, vec_dot_f16, f16, f16);
byte_vec_dot!(bf16_bytes, vec_dot_bf16, bf16, bf16);
byte_quantize!(quantize_q8_0_bytes, quantize_q8_0, BlockQ8_0);
byte_quantize!(quantize_q8_1_bytes, quantize_q8_1, BlockQ8_1);
byte_quantize!(quantize_q8_k_bytes, quantize_q8_k, BlockQ8_K);

// ----------------------------------------------------------------------------------------
// Small helpers (inlined into the kernels, which enable the same features).
// ----------------------------------------------------------------------------------------

/// f16 bit pattern → f32 with F16C (exact, same value as `half`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fp16(bits: u16) -> f32 {
    // A broadcast, not `cvtsi32_si128`: LLVM turns the latter into `vpinsrw` merging into a
    // live register, a false dependency that chained every block to the previous FMA.
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits as i16)))
}

/// `fp16(a) · fp16(b)` with one conversion (the product of the two scales of a block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fp16_product(a: u16, b: u16) -> f32 {
    let both = _mm_cvtph_ps(_mm_set1_epi32((a as u32 | (b as u32) << 16) as i32));
    _mm_cvtss_f32(_mm_mul_ss(both, _mm_movehdup_ps(both)))
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    hsum_ps128(s)
}

/// Sum of the 4 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sum of the 8 i32 lanes (wrapping, like the scalar i32 sums it mirrors never overflow).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Maximum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// `u · s` for 32 unsigned × 32 signed bytes, summed in groups of 4 into 8 i32 lanes.
/// Exact when every adjacent pair sum `u0·s0 + u1·s1` fits i16 (true for all callers:
/// `u ≤ 63` with any `s`, or `u ≤ 128` with `|s| ≤ 127`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// Expands 16 bytes of packed nibbles (byte `j` = value `j` | value `j+16` << 4) into 32
/// bytes `0..15` in value order.
///
/// # Safety
/// `p` must be readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles_32(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes; loadu has no alignment requirement.
    let raw = unsafe { _mm_loadu_si128(p.cast()) };
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Expands 32 bits into 32 bytes: byte `k` is `0xFF` if bit `k` is set, else `0x00`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bit_bytes_32(bits: u32) -> __m256i {
    // Byte k takes byte k/8 of `bits` ...
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0x0000_0000_0000_0000,
        ),
    );
    // ... then every bit except bit k%8 is forced to 1, so the byte is all-ones iff bit k%8 was.
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
}

/// Loads 32 bytes.
///
/// # Safety
/// `p` must be readable for 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32<T>(p: *const T) -> __m256i {
    // SAFETY: guaranteed by the caller; no alignment needed.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

// ----------------------------------------------------------------------------------------
// Legacy 32-value blocks.
// ----------------------------------------------------------------------------------------

/// Drives a legacy-format dot product: `block` returns one block's exact integer sums (8 i32
/// lanes), `scales` its `d_w·d_a` in lane 0 (and, with `MINS`, `m_w·s_a` in lane 1); blocks
/// alternate between two accumulators (held in registers) to hide the FMA latency.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_blocks<W, A, const MINS: bool>(
    w: &[W],
    a: &[A],
    block: impl Fn(&W, &A) -> __m256i,
    scales: impl Fn(&W, &A) -> __m128,
) -> f32 {
    let mut acc_m = _mm_setzero_ps();
    let mut scaled = |x: &W, y: &A, acc: __m256| {
        let d = scales(x, y);
        if MINS {
            acc_m = _mm_add_ps(acc_m, d);
        }
        _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(block(x, y)),
            _mm256_broadcastss_ps(d),
            acc,
        )
    };
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (wp, ap) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
        acc0 = scaled(&wp[0], &ap[0], acc0);
        acc1 = scaled(&wp[1], &ap[1], acc1);
    }
    if w.len() % 2 == 1 {
        acc0 = scaled(&w[w.len() - 1], &a[a.len() - 1], acc0);
    }
    let dots = hsum_ps(_mm256_add_ps(acc0, acc1));
    if MINS {
        dots + _mm_cvtss_f32(_mm_movehdup_ps(acc_m))
    } else {
        dots
    }
}

/// `[d_w·d_a, m_w·s_a, …]` from the leading words `(d, m)` of a Q4_1/Q5_1 block and `(d, s)`
/// of a Q8_1 block: one conversion, one multiply.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales_with_min(d_w: u16, m_w: u16, d_a: u16, s_a: u16) -> __m128 {
    let words = d_w as u64 | (m_w as u64) << 16 | (d_a as u64) << 32 | (s_a as u64) << 48;
    let v = _mm_cvtph_ps(_mm_cvtsi64_si128(words as i64)); // [d_w, m_w, d_a, s_a]
    _mm_mul_ps(v, _mm_movehl_ps(v, v))
}

/// `[d_w·d_a, …]` as lane 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_only(d_w: u16, d_a: u16) -> __m128 {
    _mm_set_ss(fp16_product(d_w, d_a))
}

/// Q4_0 · Q8_0: per block `Σ (q-8)·y` exact in i32, then `+= sumi · (d_w·d_a)`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    check_same_len(w.len(), a.len(), "Q4_0·Q8_0");
    let eight = _mm256_set1_epi8(8);
    sum_blocks::<_, _, false>(
        w,
        a,
        |x, y| {
            // SAFETY: `qs` arrays are 16 and 32 bytes long.
            let (q, yv) = unsafe { (nibbles_32(x.qs.as_ptr()), load32(y.qs.as_ptr())) };
            // (q - 8)·y per pair in i16: both terms and their difference fit i16.
            let pairs =
                _mm256_sub_epi16(_mm256_maddubs_epi16(q, yv), _mm256_maddubs_epi16(eight, yv));
            _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
        },
        |x, y| scale_only(x.d, y.d),
    )
}

/// Q4_1 · Q8_1: per block `Σ q·y` (q unsigned), `+= sumi·(d_w·d_a) + m_w·s_a`, one pass.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    check_same_len(w.len(), a.len(), "Q4_1·Q8_1");
    sum_blocks::<_, _, true>(
        w,
        a,
        |x, y| {
            // SAFETY: `qs` arrays are 16 and 32 bytes long.
            let (q, yv) = unsafe { (nibbles_32(x.qs.as_ptr()), load32(y.qs.as_ptr())) };
            dot_u8_i8(q, yv)
        },
        |x, y| scales_with_min(x.d, x.m, y.d, y.s),
    )
}

/// Q5_1 · Q8_1: codes `q = nibble | bit << 4` unsigned (`0..31`), as Q4_1.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_1_q8_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    check_same_len(w.len(), a.len(), "Q5_1·Q8_1");
    let sixteen = _mm256_set1_epi8(16);
    sum_blocks::<_, _, true>(
        w,
        a,
        |x, y| {
            // SAFETY: `qs` arrays are 16 and 32 bytes long.
            let (lo, yv) = unsafe { (nibbles_32(x.qs.as_ptr()), load32(y.qs.as_ptr())) };
            let high = _mm256_and_si256(bit_bytes_32(u32::from_le_bytes(x.qh)), sixteen);
            dot_u8_i8(_mm256_or_si256(lo, high), yv)
        },
        |x, y| scales_with_min(x.d, x.m, y.d, y.s),
    )
}

/// [`IQ4NL_VALUES`] in both 128-bit lanes, for `vpshufb`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq4nl_lut() -> __m256i {
    // SAFETY: the table is 16 bytes.
    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(IQ4NL_VALUES.as_ptr().cast()) })
}

/// `Σ v·y` of signed weights `v` (`|v| ≤ 127`) and activation codes in `-127..=127`, per 4
/// bytes into 8 i32 lanes, with the sign trick `|v| · (y·sign(v))`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_i8_i8(v: __m256i, y: __m256i) -> __m256i {
    dot_u8_i8(_mm256_sign_epi8(v, v), _mm256_sign_epi8(y, v))
}

/// IQ4_NL · Q8_0: `vpshufb` looks the 32 nibbles up in the 16-value table (signed values
/// in `-127..=113`), then the sign trick as Q8_0 · Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq4_nl_q8_0(w: &[BlockIQ4_NL], a: &[BlockQ8_0]) -> f32 {
    check_same_len(w.len(), a.len(), "IQ4_NL·Q8_0");
    let lut = iq4nl_lut();
    sum_blocks::<_, _, false>(
        w,
        a,
        |x, y| {
            // SAFETY: `qs` arrays are 16 and 32 bytes long.
            let (idx, yv) = unsafe { (nibbles_32(x.qs.as_ptr()), load32(y.qs.as_ptr())) };
            dot_i8_i8(_mm256_shuffle_epi8(lut, idx), yv)
        },
        |x, y| scale_only(x.d, y.d),
    )
}

/// Q5_0 · Q8_0: codes `q = nibble | bit << 4` (unsigned `0..31`), `Σ (q-16)·y` per block.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    check_same_len(w.len(), a.len(), "Q5_0·Q8_0");
    let sixteen = _mm256_set1_epi8(16);
    sum_blocks::<_, _, false>(
        w,
        a,
        |x, y| {
            // SAFETY: `qs` arrays are 16 and 32 bytes long.
            let (lo, yv) = unsafe { (nibbles_32(x.qs.as_ptr()), load32(y.qs.as_ptr())) };
            let high = _mm256_and_si256(bit_bytes_32(u32::from_le_bytes(x.qh)), sixteen);
            let q = _mm256_or_si256(lo, high);
            let pairs = _mm256_sub_epi16(
                _mm256_maddubs_epi16(q, yv),
                _mm256_maddubs_epi16(sixteen, yv),
            );
            _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
        },
        |x, y| scale_only(x.d, y.d),
    )
}

/// Q8_0 · Q8_0 with the sign trick: `|w| · (y·sign(w))` feeds `maddubs`. Exact for weight
/// codes `-128..=127` and activation codes `-127..=127` (what the Q8_0 quantizer produces).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    check_same_len(w.len(), a.len(), "Q8_0·Q8_0");
    sum_blocks::<_, _, false>(
        w,
        a,
        |x, y| {
            // SAFETY: both `qs` arrays are 32 bytes long.
            let (xv, yv) = unsafe { (load32(x.qs.as_ptr()), load32(y.qs.as_ptr())) };
            dot_i8_i8(xv, yv)
        },
        |x, y| scale_only(x.d, y.d),
    )
}

// ----------------------------------------------------------------------------------------
// k-quants (256-value super-blocks) · Q8_K.
// ----------------------------------------------------------------------------------------

/// `Σ_j mins[j] · (bsums[2j] + bsums[2j+1])` as 4 i32 lanes: the Q4_K/Q5_K min correction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn k4_min_products(mins: &[u8; 8], bsums: &[i16; 16]) -> __m128i {
    // SAFETY: `bsums` is 32 bytes long.
    let bs = unsafe { load32(bsums.as_ptr()) };
    // Adjacent pairs of 16-value sums = the 8 sums of 32 values (each |·| ≤ 4096).
    let sums32 = _mm_hadd_epi16(
        _mm256_castsi256_si128(bs),
        _mm256_extracti128_si256::<1>(bs),
    );
    let mins16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(*mins)));
    _mm_madd_epi16(mins16, sums32)
}

/// Q4_K · Q8_K: `d·Σ_j scale_j·(q·y)_j − dmin·Σ_j min_j·Σy_j` per super-block, the two sums
/// exact in i32.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
/// Activation `bsums` must be the sums of their codes (as the Q8_K quantizer writes them).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k_q8_k(w: &[BlockQ4_K], a: &[BlockQ8_K]) -> f32 {
    check_same_len(w.len(), a.len(), "Q4_K·Q8_K");
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_mins = _mm_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let (scales, mins) = k4_scales_mins(&x.scales);
        let dmin = y.d * fp16(x.dmin);
        acc_mins = _mm_fmadd_ps(
            _mm_set1_ps(dmin),
            _mm_cvtepi32_ps(k4_min_products(&mins, &y.bsums)),
            acc_mins,
        );
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 64 {
            // 32 bytes of codes = sub-block 2j (low nibbles) and 2j+1 (high nibbles).
            // SAFETY: offsets stay inside `qs` (128 B) and `y.qs` (256 B).
            let (bits, y_lo, y_hi) = unsafe {
                (
                    load32(x.qs.as_ptr().add(32 * j)),
                    load32(y.qs.as_ptr().add(64 * j)),
                    load32(y.qs.as_ptr().add(64 * j + 32)),
                )
            };
            let q_lo = _mm256_and_si256(bits, low4);
            let q_hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low4);
            let p_lo = _mm256_madd_epi16(
                _mm256_maddubs_epi16(q_lo, y_lo),
                _mm256_set1_epi16(scales[2 * j] as i16),
            );
            let p_hi = _mm256_madd_epi16(
                _mm256_maddubs_epi16(q_hi, y_hi),
                _mm256_set1_epi16(scales[2 * j + 1] as i16),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
        }
        let d = y.d * fp16(x.d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) - hsum_ps128(acc_mins)
}

/// Q5_K · Q8_K: as Q4_K with a fifth bit from `qh` (bit `2j` for the low-nibble sub-block
/// of chunk `j`, bit `2j+1` for the high one), codes `0..31`.
///
/// # Safety
/// As [`vec_dot_q4_k_q8_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_k_q8_k(w: &[BlockQ5_K], a: &[BlockQ8_K]) -> f32 {
    check_same_len(w.len(), a.len(), "Q5_K·Q8_K");
    let low4 = _mm256_set1_epi8(0x0F);
    let bit4 = _mm256_set1_epi8(0x10);
    let mut acc = _mm256_setzero_ps();
    let mut acc_mins = _mm_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let (scales, mins) = k4_scales_mins(&x.scales);
        let dmin = y.d * fp16(x.dmin);
        acc_mins = _mm_fmadd_ps(
            _mm_set1_ps(dmin),
            _mm_cvtepi32_ps(k4_min_products(&mins, &y.bsums)),
            acc_mins,
        );
        // SAFETY: `qh` is 32 bytes long.
        let mut high = unsafe { load32(x.qh.as_ptr()) };
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 64 {
            // SAFETY: offsets stay inside `qs` (128 B) and `y.qs` (256 B).
            let (bits, y_lo, y_hi) = unsafe {
                (
                    load32(x.qs.as_ptr().add(32 * j)),
                    load32(y.qs.as_ptr().add(64 * j)),
                    load32(y.qs.as_ptr().add(64 * j + 32)),
                )
            };
            // `high` was shifted right by 2j: bits 0 and 1 of each byte are this chunk's.
            let q_lo = _mm256_or_si256(
                _mm256_and_si256(bits, low4),
                _mm256_and_si256(_mm256_slli_epi16::<4>(high), bit4),
            );
            let q_hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low4),
                _mm256_and_si256(_mm256_slli_epi16::<3>(high), bit4),
            );
            high = _mm256_srli_epi16::<2>(high);
            let p_lo = _mm256_madd_epi16(
                _mm256_maddubs_epi16(q_lo, y_lo),
                _mm256_set1_epi16(scales[2 * j] as i16),
            );
            let p_hi = _mm256_madd_epi16(
                _mm256_maddubs_epi16(q_hi, y_hi),
                _mm256_set1_epi16(scales[2 * j + 1] as i16),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
        }
        let d = y.d * fp16(x.d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) - hsum_ps128(acc_mins)
}

/// The 8 group scales of an IQ4_XS super-block, minus 32 (`-32..=31`).
#[inline(always)]
pub(super) fn iq4_xs_scales(x: &BlockIQ4_XS) -> [i16; 8] {
    std::array::from_fn(|g| {
        let low = (x.scales_l[g / 2] >> (4 * (g % 2))) & 0xF;
        let high = ((x.scales_h >> (2 * g)) & 3) as u8;
        (low | high << 4) as i16 - 32
    })
}

/// IQ4_XS · Q8_K: per 32-value group `vpshufb` table lookup, the sign trick into i16 pairs,
/// `vpmaddwd` with the group scale; the super-block sums exactly in i32 and is converted
/// once.
///
/// # Safety
/// As [`vec_dot_q4_k_q8_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq4_xs_q8_k(w: &[BlockIQ4_XS], a: &[BlockQ8_K]) -> f32 {
    check_same_len(w.len(), a.len(), "IQ4_XS·Q8_K");
    let lut = iq4nl_lut();
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let scales = iq4_xs_scales(x);
        let mut sumi = _mm256_setzero_si256();
        for (g, &scale) in scales.iter().enumerate() {
            // SAFETY: offsets stay inside `qs` (128 B) and `y.qs` (256 B).
            let (idx, yv) = unsafe {
                (
                    nibbles_32(x.qs.as_ptr().add(16 * g)),
                    load32(y.qs.as_ptr().add(32 * g)),
                )
            };
            let v = _mm256_shuffle_epi8(lut, idx);
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(yv, v));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pairs, _mm256_set1_epi16(scale)));
        }
        let d = y.d * fp16(x.d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// Q6_K · Q8_K: codes `q = ql | qh << 4` kept unsigned (`0..63`);
/// `Σ_g scale_g·Σ(q-32)·y = Σ_g scale_g·(q·y)_g − 32·Σ_g scale_g·bsums_g`, exact in i32.
///
/// Value `128n + 32k + l` (`n < 2`, `k < 4`, `l < 32`) takes its low 4 bits from
/// `ql[64n + 32(k&1) + l]` (low nibble for `k < 2`, high for `k ≥ 2`) and its high 2 bits
/// from bits `2k, 2k+1` of `qh[32n + l]`.
///
/// # Safety
/// As [`vec_dot_q4_k_q8_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k_q8_k(w: &[BlockQ6_K], a: &[BlockQ8_K]) -> f32 {
    check_same_len(w.len(), a.len(), "Q6_K·Q8_K");
    let low4 = _mm256_set1_epi8(0x0F);
    let bits45 = _mm256_set1_epi8(0x30);
    // After `permutevar8x32` puts (scale[g], scale[g+1]) in every i32 lane, this byte
    // shuffle spreads scale[g] over the low 128 bits and scale[g+1] over the high 128.
    let spread_pair = _mm256_set_epi8(
        3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, //
        1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0,
    );
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        // SAFETY: `scales` is 16 bytes, `bsums` 32 bytes.
        let (scales, bsums) = unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr().cast())),
                load32(y.bsums.as_ptr()),
            )
        };
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales, bsums));
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            // SAFETY: offsets stay inside `ql` (128 B) and `qh` (64 B).
            let (ql0, ql1, qh) = unsafe {
                (
                    load32(x.ql.as_ptr().add(64 * n)),
                    load32(x.ql.as_ptr().add(64 * n + 32)),
                    load32(x.qh.as_ptr().add(32 * n)),
                )
            };
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, low4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bits45),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, low4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), bits45),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4),
                    _mm256_and_si256(qh, bits45),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), bits45),
                ),
            ];
            for (k, &qk) in q.iter().enumerate() {
                // SAFETY: offset ≤ 224, `y.qs` is 256 bytes.
                let yv = unsafe { load32(y.qs.as_ptr().add(128 * n + 32 * k)) };
                // Sub-blocks g = 8n + 2k and g + 1 (16 values each).
                let pair =
                    _mm256_permutevar8x32_epi32(scales, _mm256_set1_epi32((4 * n + k) as i32));
                let scale = _mm256_shuffle_epi8(pair, spread_pair);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, yv), scale);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        sumi = _mm256_sub_epi32(sumi, offset);
        let d = y.d * fp16(x.d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

// ----------------------------------------------------------------------------------------
// Float rows.
// ----------------------------------------------------------------------------------------

/// F16 · F16: products of two halves are exact in f32; summed with FMA in 4×8 lanes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f16(w: &[f16], a: &[f16]) -> f32 {
    check_same_len(w.len(), a.len(), "F16·F16");
    let n = w.len();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    // SAFETY (all loads below): `i + 8 ≤ n` before every 8-value load.
    let load =
        |p: *const f16, i: usize| unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(i).cast())) };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(load(wp, i + 8 * k), load(ap, i + 8 * k), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load(wp, i), load(ap, i), acc[0]);
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for j in i..n {
        sum += fp16(w[j].to_bits()) * fp16(a[j].to_bits());
    }
    sum
}

/// 8 bf16 values → 8 f32 (a bf16 is the high half of an f32).
///
/// # Safety
/// `p` must be readable for 8 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16_8(p: *const bf16) -> __m256 {
    // SAFETY: guaranteed by the caller.
    let raw = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
}

/// BF16 · BF16: products exact in f32; summed with FMA in 4×8 lanes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics if the rows have different lengths.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_bf16(w: &[bf16], a: &[bf16]) -> f32 {
    check_same_len(w.len(), a.len(), "BF16·BF16");
    let n = w.len();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    // SAFETY (all loads below): `i + 8 ≤ n` before every 8-value load.
    let load = |p: *const bf16, i: usize| unsafe { bf16_8(p.add(i)) };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(load(wp, i + 8 * k), load(ap, i + 8 * k), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load(wp, i), load(ap, i), acc[0]);
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for j in i..n {
        sum += w[j].to_f32() * a[j].to_f32();
    }
    sum
}

// ----------------------------------------------------------------------------------------
// Activation quantizers.
// ----------------------------------------------------------------------------------------

/// `roundf` on 8 lanes: round half away from zero, exactly as C's `roundf` / Rust's
/// `f32::round` (the hardware's nearest mode rounds halves to even, which would differ).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_half_away(v: __m256) -> __m256 {
    let sign_bit = _mm256_set1_ps(-0.0);
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let frac = _mm256_andnot_ps(sign_bit, _mm256_sub_ps(v, t)); // |v - trunc(v)|, exact
    let bump = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, sign_bit)); // ±1
    _mm256_add_ps(t, _mm256_and_ps(bump, one))
}

/// Clamps to `[-128, 127]` with NaN → 0: what Rust's saturating `f32 as i8` does. Only
/// matters for degenerate rows (all values subnormal make `1/d` infinite), but keeps the
/// quantizers bit-identical to the scalar ones on every finite input.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn saturate_i8(v: __m256) -> __m256 {
    let not_nan = _mm256_cmp_ps::<_CMP_ORD_Q>(v, v);
    let v = _mm256_and_ps(v, not_nan);
    _mm256_min_ps(
        _mm256_max_ps(v, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    )
}

/// Packs 4×8 i32 (each in `-128..=127`) into 32 bytes in lane order and stores them.
///
/// # Safety
/// `out` must be writable for 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_i8x32(q: [__m256i; 4], out: *mut i8) {
    // packs work per 128-bit half, leaving 4-byte groups in order 0,4,1,5,2,6,3,7 ...
    let p = _mm256_packs_epi16(
        _mm256_packs_epi32(q[0], q[1]),
        _mm256_packs_epi32(q[2], q[3]),
    );
    // ... which this permutation undoes.
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: guaranteed by the caller.
    unsafe { _mm256_storeu_si256(out.cast(), p) }
}

/// Loads the 32 values of one block and returns them with their maximum magnitude.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_block_32(xb: &[f32]) -> ([__m256; 4], f32) {
    assert!(xb.len() >= 32);
    // SAFETY: 32 values checked above.
    let v: [__m256; 4] =
        std::array::from_fn(|k| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * k)) });
    let abs = |x| _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
    let m = _mm256_max_ps(
        _mm256_max_ps(abs(v[0]), abs(v[1])),
        _mm256_max_ps(abs(v[2]), abs(v[3])),
    );
    (v, hmax_ps(m))
}

/// Quantizes one 32-value block as `quantize_row_q8_0_ref` does: `d = amax/127`,
/// `q = roundf(x·(1/d))`. Returns the f32 scale and the codes as 4×8 i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_block(xb: &[f32]) -> (f32, [__m256i; 4]) {
    let (v, amax) = load_block_32(xb);
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let q = v.map(|v| _mm256_cvttps_epi32(saturate_i8(round_half_away(_mm256_mul_ps(v, id)))));
    (d, q)
}

/// f32 row → Q8_0, bit-identical to the scalar quantizer.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics unless `x.len() == 32 · out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    check_quantize_len(x.len(), out.len(), QK, "f32→Q8_0");
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, q) = q8_block(xb);
        b.d = f32_to_f16(d);
        // SAFETY: `qs` is 32 bytes.
        unsafe { store_i8x32(q, b.qs.as_mut_ptr()) };
    }
}

/// f32 row → Q8_1 (Q8_0 plus `s = fp16(Σq · d)`), bit-identical to the scalar quantizer.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics unless `x.len() == 32 · out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    check_quantize_len(x.len(), out.len(), QK, "f32→Q8_1");
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, q) = q8_block(xb);
        let sum = hsum_epi32(_mm256_add_epi32(
            _mm256_add_epi32(q[0], q[1]),
            _mm256_add_epi32(q[2], q[3]),
        ));
        b.d = f32_to_f16(d);
        b.s = f32_to_f16(sum as f32 * d);
        // SAFETY: `qs` is 32 bytes.
        unsafe { store_i8x32(q, b.qs.as_mut_ptr()) };
    }
}

/// f32 row → Q8_K as `quantize_row_q8_K_ref`: the first value of largest magnitude `max`
/// gives `iscale = -127/max`, codes `nearest_int(iscale·x)` (round half to even), `d =
/// 1/iscale`, and `bsums` the sums of each 16 codes. Bit-identical to the scalar quantizer.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Panics unless `x.len() == 256 · out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8_K]) {
    check_quantize_len(x.len(), out.len(), QK_K, "f32→Q8_K");
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut amax = 0.0f32;
        for c in xb.chunks_exact(32) {
            amax = amax.max(load_block_32(c).1);
        }
        // The scalar code keeps the first value whose magnitude is the maximum.
        let max = first_with_magnitude(xb, amax);
        let iscale = -127.0 / max;
        // All zero, or so small that the inverse scale overflows: the scalar quantizer
        // stores the all-zero block.
        if amax == 0.0 || !iscale.is_finite() {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            continue;
        }
        let scale = _mm256_set1_ps(iscale);
        for (c, (xc, qs)) in xb
            .chunks_exact(32)
            .zip(b.qs.chunks_exact_mut(32))
            .enumerate()
        {
            // SAFETY: `xc` has 32 values.
            let q: [__m256i; 4] = std::array::from_fn(|k| unsafe {
                let v = _mm256_mul_ps(_mm256_loadu_ps(xc.as_ptr().add(8 * k)), scale);
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                _mm256_cvttps_epi32(saturate_i8(r))
            });
            // |iscale·x| ≤ 127 (+ rounding), so codes never exceed 127: the scalar `min(127, v)`
            // and the saturating packs agree.
            b.bsums[2 * c] = hsum_epi32(_mm256_add_epi32(q[0], q[1])) as i16;
            b.bsums[2 * c + 1] = hsum_epi32(_mm256_add_epi32(q[2], q[3])) as i16;
            // SAFETY: `qs` chunk is 32 bytes.
            unsafe { store_i8x32(q, qs.as_mut_ptr()) };
        }
        b.d = 1.0 / iscale;
    }
}

/// The first element of `xb` whose magnitude equals `amax` (which must occur in `xb`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn first_with_magnitude(xb: &[f32], amax: f32) -> f32 {
    let target = _mm256_set1_ps(amax);
    for c in xb.chunks_exact(8) {
        // SAFETY: `c` has 8 values.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
        let hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(abs, target));
        if hits != 0 {
            return c[hits.trailing_zeros() as usize];
        }
    }
    amax
}

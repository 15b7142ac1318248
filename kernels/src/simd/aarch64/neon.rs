//! aarch64 NEON kernels: weight-row · activation-row dot products for Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K, F16 and BF16, and the activation quantizers
//! f32 → Q8_0, Q8_1, Q8_K.
//!
//! # The one integer primitive: 16 × (i8 · i8) summed into 4 × i32
//!
//! Every quantized kernel reduces to "multiply 16 signed bytes by 16 signed bytes and add the
//! products into an `int32x4_t` accumulator". Two engines do that ([`Dot`]):
//! - [`Sdot`]: the Armv8.2 `sdot` instruction (feature `dotprod`), one instruction; lane `i`
//!   receives the sum of bytes `4i..4i+4`. Its intrinsic `vdotq_s32` is still unstable on Rust
//!   1.95 (`stdarch_neon_dotprod`), so it is emitted with `asm!`; the assembler only accepts it
//!   inside functions compiled with `#[target_feature(enable = "dotprod")]`, which is what
//!   keeps it out of the plain path at compile time.
//! - [`Plain`]: base NEON, `smull`/`smull2` (8 × i8·i8 → i16 each, |product| ≤ 2^14 so no
//!   overflow) followed by two `sadalp` (pairwise add-accumulate i16 → i32).
//!
//! The two engines spread the sum over the four lanes differently but every kernel only uses
//! the lane total (or scales all four lanes by the same factor), so both paths give the same
//! integer per block. Each kernel is written once, generic over the engine, and instantiated
//! twice: `vec_dot_*` (plain NEON) and `vec_dot_*_sdot`.
//!
//! # Unpacking tricks
//! - 4-bit codes: byte `j` holds value `j` (low nibble) and `j + 16` (high nibble), so one
//!   16-byte load, an `and 0x0F` and a `ushr #4` give the two 16-value halves in order.
//!   Q4_0 subtracts 8 in the byte domain (values −8..7 fit i8); Q4_1 keeps them unsigned (0..15
//!   is also a valid i8) and adds `m · s` (Q8_1's precomputed `d · Σq`) per block.
//! - Q5_0/Q5_1 5th bits: the 32-bit `qh` is splatted into a vector, `tbl` spreads byte `k` of it
//!   over 8 lanes, and `cmtst` against the masks 1, 2, 4, …, 128 turns bit `j` into lane `j`
//!   being 0xFF; `and 0x10` then gives the 16 to add.
//! - IQ4_NL: the 16-entry signed table fits one register; `tbl` maps nibbles to values.
//! - Q4_K/Q5_K: the 12 packed bytes of 6-bit scales and mins are unpacked with scalar code (12
//!   bytes per 256 values); the mins are folded in with Q8_K's `bsums` (sums of 16 codes):
//!   pairwise-added to 8 sums of 32 and multiplied by the 8 mins (`smull`), so the weights'
//!   minimums cost one multiply per sub-block instead of one per value. Per 32-value group the
//!   integer dot product is scaled with `mla` by its 6-bit scale, still in integers; only one
//!   float multiply-add per 256-value super-block.
//! - Q5_K 5th bits: `qh[l]` bit `2j` / `2j+1` belongs to value `l` of group `2j` / `2j+1`;
//!   `(qh & 1) << 4` and `(qh & 2) << 3` give them, then `qh >>= 2` for the next 64 values.
//! - Q6_K: codes are kept unsigned (0..63) and the −32 offset is applied once per super-block
//!   as `32 · Σ scale_j · bsum_j`. The two high bits of the four 32-value quarters of a
//!   128-value half live in bits (0,1), (2,3), (4,5), (6,7) of `qh`, which masks and shifts
//!   move to bits (4,5) of each byte.
//! - F16: `fcvtl`/`fcvtl2` widen halves to f32 (base Armv8, no FEAT_FP16 needed; written with
//!   `asm!` because the f16 vector intrinsics need Rust ≥ 1.94 and this crate supports 1.89).
//!   BF16: a bf16 is the top half of an f32, so `zip` with a zero vector widens it exactly.
//!   Products of two halves (or two bf16) are exact in f32; only the summation order differs
//!   from the scalar reference (16 partial sums here).
//!
//! # Activation quantizers are bit-identical to the scalar reference
//! They compute the same f32 operations in the same order per value (`x · id` with `id`
//! computed by the same scalar expression), and round with the instruction whose rounding
//! matches: `fcvtas` (nearest, ties away = C `roundf`) for Q8_0/Q8_1 and `fcvtns` (nearest,
//! ties to even = ggml's `nearest_int`) for Q8_K. Maxima are exact (max is order-independent).

use core::arch::aarch64::*;
use core::arch::asm;

use half::{bf16, f16};

use crate::blocks::{
    f32_to_f16, BlockIQ4_NL, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K,
    BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K, IQ4NL_VALUES, QK, QK_K,
};

// ---------------------------------------------------------------------------------------------
// The int8 dot-product engines
// ---------------------------------------------------------------------------------------------

/// How 16 signed-byte products are accumulated into four i32 lanes (see the module docs).
pub(crate) trait Dot {
    /// `acc + (the 16 products a[k]·b[k], summed into 4 lanes in an engine-specific way)`.
    ///
    /// # Safety
    /// The CPU must support NEON, and `dotprod` for [`Sdot`]. Only called from
    /// `#[target_feature]` functions that require exactly that.
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// `sdot` engine (Armv8.2 dot-product extension).
pub(crate) struct Sdot;

/// Plain NEON engine: `smull` + `sadalp`.
pub(crate) struct Plain;

impl Dot for Sdot {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: `sdot` only reads and writes the three vector registers; the callers are
        // `#[target_feature(enable = "neon,dotprod")]` functions reached only when the CPU
        // has `dotprod` (the assembler rejects `sdot` anywhere else).
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    }
}

impl Dot for Plain {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: plain NEON arithmetic on registers; callers require the `neon` feature.
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b)); // [8] i16, |p| <= 2^14
            let hi = vmull_high_s8(a, b); // [8] i16
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Converts the bit pattern of an IEEE half to f32 with `fcvt` (exact, base Armv8 FP).
#[inline(always)]
unsafe fn h2f(bits: u16) -> f32 {
    let out: f32;
    // SAFETY: `fcvt` between the h and s views of vector registers is base Armv8 FP/SIMD;
    // callers are `neon` functions. Reads/writes registers only.
    unsafe {
        let v = vdup_n_u16(bits);
        asm!(
            "fcvt {out:s}, {v:h}",
            out = lateout(vreg) out,
            v = in(vreg) v,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// Widens 8 halves to two f32 vectors (`fcvtl` / `fcvtl2`).
#[inline(always)]
unsafe fn f16x8_to_f32(v: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let lo: float32x4_t;
    let hi: float32x4_t;
    // SAFETY: base Armv8 SIMD conversions on registers only; callers are `neon` functions.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {v:v}.4h",
            "fcvtl2 {hi:v}.4s, {v:v}.8h",
            // `lo` is written before `v` is read again: it must not share `v`'s register.
            lo = out(vreg) lo,
            hi = lateout(vreg) hi,
            v = in(vreg) v,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (lo, hi)
}

/// Widens 8 bf16 to two f32 vectors: each bf16 becomes the high half of an f32 (exact).
#[inline(always)]
unsafe fn bf16x8_to_f32(v: uint16x8_t) -> (float32x4_t, float32x4_t) {
    // SAFETY: register-only NEON; callers are `neon` functions.
    unsafe {
        let z = vdupq_n_u16(0);
        (
            vreinterpretq_f32_u16(vzip1q_u16(z, v)),
            vreinterpretq_f32_u16(vzip2q_u16(z, v)),
        )
    }
}

/// Loads the 32 signed codes of a Q8_0/Q8_1 block as two 16-byte halves.
#[inline(always)]
unsafe fn load_q8x32(qs: &[i8; QK]) -> (int8x16_t, int8x16_t) {
    // SAFETY: both loads read 16 bytes inside the 32-byte array.
    unsafe { (vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16))) }
}

/// Splits 16 bytes of packed nibbles into the low-nibble half (values 0..16) and the
/// high-nibble half (values 16..32), as unsigned bytes 0..15.
#[inline(always)]
unsafe fn nibbles(qs: &[u8; QK / 2]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: one 16-byte load of a 16-byte array; the rest is register arithmetic.
    unsafe {
        let v = vld1q_u8(qs.as_ptr());
        (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8(v, 4))
    }
}

/// Expands the 32 5th-bits of a Q5 block to `0x10` bytes: lane `j` of the first vector is
/// `0x10` if bit `j` of `qh` is set (values 0..16), of the second for bit `16 + j`.
#[inline(always)]
unsafe fn q5_high_bits(qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    const IDX_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const IDX_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: loads of 16-byte constant arrays; the rest is register arithmetic.
    unsafe {
        let all = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(qh)));
        let bits = vld1q_u8(BITS.as_ptr());
        let sixteen = vdupq_n_u8(0x10);
        let lo = vtstq_u8(vqtbl1q_u8(all, vld1q_u8(IDX_LO.as_ptr())), bits);
        let hi = vtstq_u8(vqtbl1q_u8(all, vld1q_u8(IDX_HI.as_ptr())), bits);
        (vandq_u8(lo, sixteen), vandq_u8(hi, sixteen))
    }
}

/// Unpacks the 12 bytes of Q4_K/Q5_K 6-bit scales and mins (ggml's `get_scale_min_k4` for
/// all 8 sub-blocks): returns `(scales[8], mins[8])`.
#[inline(always)]
fn unpack_k4_scales(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
    }
    for j in 4..8 {
        sc[j] = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        mn[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
    (sc, mn)
}

/// `Σ_j mins[j] · (bsums[2j] + bsums[2j+1])`: the dot product of the 8 sub-block minimums
/// with the activation sums of the matching 32 values.
#[inline(always)]
unsafe fn k4_min_dot(bsums: &[i16; QK_K / 16], mins: &[u8; 8]) -> i32 {
    // SAFETY: 8-lane loads inside 16-element / 8-element arrays; register arithmetic.
    unsafe {
        let b0 = vld1q_s16(bsums.as_ptr());
        let b1 = vld1q_s16(bsums.as_ptr().add(8));
        let sums = vpaddq_s16(b0, b1); // [8] sums of 32 codes, |s| <= 4064
        let m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins.as_ptr()))); // [8] 0..63
        let p = vaddq_s32(
            vmull_s16(vget_low_s16(sums), vget_low_s16(m)),
            vmull_high_s16(sums, m),
        );
        vaddvq_s32(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy 32-value formats
// ---------------------------------------------------------------------------------------------

#[inline(always)]
unsafe fn q4_0_q8_0<D: Dot>(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY (whole body): register NEON plus loads inside block arrays (see helpers).
    unsafe {
        let eight = vdupq_n_s8(8);
        let mut acc = vdupq_n_f32(0.0); // 4 partial sums
        for (x, y) in w.iter().zip(a) {
            let (lo, hi) = nibbles(&x.qs);
            let lo = vsubq_s8(vreinterpretq_s8_u8(lo), eight); // values 0..16, -8..7
            let hi = vsubq_s8(vreinterpretq_s8_u8(hi), eight); // values 16..32
            let (y0, y1) = load_q8x32(&y.qs);
            let p = D::dot(D::dot(vdupq_n_s32(0), lo, y0), hi, y1);
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x.d) * h2f(y.d));
        }
        vaddvq_f32(acc)
    }
}

#[inline(always)]
unsafe fn q4_1_q8_1<D: Dot>(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    // SAFETY (whole body): register NEON plus loads inside block arrays (see helpers).
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        let mut mins = 0.0f32; // Σ m_x · s_y
        for (x, y) in w.iter().zip(a) {
            let (lo, hi) = nibbles(&x.qs); // 0..15, valid as i8
            let (y0, y1) = load_q8x32(&y.qs);
            let p = D::dot(
                D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(lo), y0),
                vreinterpretq_s8_u8(hi),
                y1,
            );
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x.d) * h2f(y.d));
            mins += h2f(x.m) * h2f(y.s);
        }
        vaddvq_f32(acc) + mins
    }
}

#[inline(always)]
unsafe fn q5_0_q8_0<D: Dot>(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY (whole body): register NEON plus loads inside block arrays (see helpers).
    unsafe {
        let sixteen = vdupq_n_s8(16);
        let mut acc = vdupq_n_f32(0.0);
        for (x, y) in w.iter().zip(a) {
            let (lo, hi) = nibbles(&x.qs);
            let (hlo, hhi) = q5_high_bits(x.qh);
            let lo = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hlo)), sixteen); // -16..15
            let hi = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(hi, hhi)), sixteen);
            let (y0, y1) = load_q8x32(&y.qs);
            let p = D::dot(D::dot(vdupq_n_s32(0), lo, y0), hi, y1);
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x.d) * h2f(y.d));
        }
        vaddvq_f32(acc)
    }
}

#[inline(always)]
unsafe fn q5_1_q8_1<D: Dot>(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    // SAFETY (whole body): register NEON plus loads inside block arrays (see helpers).
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        let mut mins = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let (lo, hi) = nibbles(&x.qs);
            let (hlo, hhi) = q5_high_bits(x.qh);
            let lo = vreinterpretq_s8_u8(vorrq_u8(lo, hlo)); // 0..31
            let hi = vreinterpretq_s8_u8(vorrq_u8(hi, hhi));
            let (y0, y1) = load_q8x32(&y.qs);
            let p = D::dot(D::dot(vdupq_n_s32(0), lo, y0), hi, y1);
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x.d) * h2f(y.d));
            mins += h2f(x.m) * h2f(y.s);
        }
        vaddvq_f32(acc) + mins
    }
}

#[inline(always)]
unsafe fn q8_0_q8_0<D: Dot>(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    // SAFETY (whole body): register NEON plus loads inside block arrays (see helpers).
    unsafe {
        let mut acc = vdupq_n_f32(0.0);
        for (x, y) in w.iter().zip(a) {
            let (x0, x1) = load_q8x32(&x.qs);
            let (y0, y1) = load_q8x32(&y.qs);
            let p = D::dot(D::dot(vdupq_n_s32(0), x0, y0), x1, y1);
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x.d) * h2f(y.d));
        }
        vaddvq_f32(acc)
    }
}

#[inline(always)]
unsafe fn iq4_nl_q8_0<D: Dot>(w: &[BlockIQ4_NL], a: &[BlockQ8_0]) -> f32 {
    // SAFETY (whole body): register NEON plus loads inside block arrays (see helpers).
    unsafe {
        let table = vld1q_s8(IQ4NL_VALUES.as_ptr()); // [16] the non-linear values
        let mut acc = vdupq_n_f32(0.0);
        for (x, y) in w.iter().zip(a) {
            let (lo, hi) = nibbles(&x.qs);
            let lo = vqtbl1q_s8(table, lo);
            let hi = vqtbl1q_s8(table, hi);
            let (y0, y1) = load_q8x32(&y.qs);
            let p = D::dot(D::dot(vdupq_n_s32(0), lo, y0), hi, y1);
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x.d) * h2f(y.d));
        }
        vaddvq_f32(acc)
    }
}

// ---------------------------------------------------------------------------------------------
// k-quants (256-value super-blocks, Q8_K activations)
// ---------------------------------------------------------------------------------------------

#[inline(always)]
unsafe fn q4_k_q8_k<D: Dot>(w: &[BlockQ4_K], a: &[BlockQ8_K]) -> f32 {
    // SAFETY (whole body): register NEON plus 16-byte loads at offsets 16·k inside the
    // 128-byte `qs` (k < 8) and 256-byte `y.qs` (k < 16) arrays.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let mut sum = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let d = y.d * h2f(x.d);
            let dmin = y.d * h2f(x.dmin);
            let (sc, mn) = unpack_k4_scales(&x.scales);
            let min_dot = k4_min_dot(&y.bsums, &mn);
            let mut isum = vdupq_n_s32(0); // Σ scale_j · (codes · q8) of group j, 4 lanes
            let q4 = x.qs.as_ptr();
            let q8 = y.qs.as_ptr();
            for j in 0..QK_K / 64 {
                // 64 values: 32 bytes of nibbles; low nibbles = group 2j, high = group 2j+1.
                let b0 = vld1q_u8(q4.add(32 * j));
                let b1 = vld1q_u8(q4.add(32 * j + 16));
                let y0 = vld1q_s8(q8.add(64 * j));
                let y1 = vld1q_s8(q8.add(64 * j + 16));
                let y2 = vld1q_s8(q8.add(64 * j + 32));
                let y3 = vld1q_s8(q8.add(64 * j + 48));
                let lo0 = vreinterpretq_s8_u8(vandq_u8(b0, m4));
                let lo1 = vreinterpretq_s8_u8(vandq_u8(b1, m4));
                let hi0 = vreinterpretq_s8_u8(vshrq_n_u8(b0, 4));
                let hi1 = vreinterpretq_s8_u8(vshrq_n_u8(b1, 4));
                let p_lo = D::dot(D::dot(vdupq_n_s32(0), lo0, y0), lo1, y1);
                let p_hi = D::dot(D::dot(vdupq_n_s32(0), hi0, y2), hi1, y3);
                isum = vmlaq_n_s32(isum, p_lo, sc[2 * j] as i32);
                isum = vmlaq_n_s32(isum, p_hi, sc[2 * j + 1] as i32);
            }
            sum += d * vaddvq_s32(isum) as f32 - dmin * min_dot as f32;
        }
        sum
    }
}

#[inline(always)]
unsafe fn q5_k_q8_k<D: Dot>(w: &[BlockQ5_K], a: &[BlockQ8_K]) -> f32 {
    // SAFETY (whole body): register NEON plus 16-byte loads inside `qs` (128 B), `qh` (32 B)
    // and `y.qs` (256 B) at in-bounds offsets.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let one = vdupq_n_u8(1);
        let two = vdupq_n_u8(2);
        let mut sum = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let d = y.d * h2f(x.d);
            let dmin = y.d * h2f(x.dmin);
            let (sc, mn) = unpack_k4_scales(&x.scales);
            let min_dot = k4_min_dot(&y.bsums, &mn);
            let mut qh0 = vld1q_u8(x.qh.as_ptr()); // bits of values l = 0..16 of each group
            let mut qh1 = vld1q_u8(x.qh.as_ptr().add(16)); // l = 16..32
            let mut isum = vdupq_n_s32(0);
            let q4 = x.qs.as_ptr();
            let q8 = y.qs.as_ptr();
            for j in 0..QK_K / 64 {
                let b0 = vld1q_u8(q4.add(32 * j));
                let b1 = vld1q_u8(q4.add(32 * j + 16));
                let y0 = vld1q_s8(q8.add(64 * j));
                let y1 = vld1q_s8(q8.add(64 * j + 16));
                let y2 = vld1q_s8(q8.add(64 * j + 32));
                let y3 = vld1q_s8(q8.add(64 * j + 48));
                // bit 2j of qh -> 16 for group 2j, bit 2j+1 -> 16 for group 2j+1.
                let h_lo0 = vshlq_n_u8(vandq_u8(qh0, one), 4);
                let h_lo1 = vshlq_n_u8(vandq_u8(qh1, one), 4);
                let h_hi0 = vshlq_n_u8(vandq_u8(qh0, two), 3);
                let h_hi1 = vshlq_n_u8(vandq_u8(qh1, two), 3);
                qh0 = vshrq_n_u8(qh0, 2);
                qh1 = vshrq_n_u8(qh1, 2);
                let lo0 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(b0, m4), h_lo0)); // 0..31
                let lo1 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(b1, m4), h_lo1));
                let hi0 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(b0, 4), h_hi0));
                let hi1 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(b1, 4), h_hi1));
                let p_lo = D::dot(D::dot(vdupq_n_s32(0), lo0, y0), lo1, y1);
                let p_hi = D::dot(D::dot(vdupq_n_s32(0), hi0, y2), hi1, y3);
                isum = vmlaq_n_s32(isum, p_lo, sc[2 * j] as i32);
                isum = vmlaq_n_s32(isum, p_hi, sc[2 * j + 1] as i32);
            }
            sum += d * vaddvq_s32(isum) as f32 - dmin * min_dot as f32;
        }
        sum
    }
}

#[inline(always)]
unsafe fn q6_k_q8_k<D: Dot>(w: &[BlockQ6_K], a: &[BlockQ8_K]) -> f32 {
    // SAFETY (whole body): register NEON plus 16-byte loads inside `ql` (128 B), `qh` (64 B),
    // `scales` (16 B), `bsums` (16 × i16) and `y.qs` (256 B) at in-bounds offsets.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let m2 = vdupq_n_u8(0x03);
        let m2x4 = vdupq_n_u8(0x0C);
        let m2x16 = vdupq_n_u8(0x30);
        let m2x64 = vdupq_n_u8(0xC0);
        let mut sum = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let d = y.d * h2f(x.d);
            let sc = &x.scales;
            // Offset part: Σ_j scale_j · bsum_j (16 groups of 16).
            let s8 = vld1q_s8(sc.as_ptr());
            let s_lo = vmovl_s8(vget_low_s8(s8));
            let s_hi = vmovl_high_s8(s8);
            let b_lo = vld1q_s16(y.bsums.as_ptr());
            let b_hi = vld1q_s16(y.bsums.as_ptr().add(8));
            let off = vaddq_s32(
                vaddq_s32(
                    vmull_s16(vget_low_s16(s_lo), vget_low_s16(b_lo)),
                    vmull_high_s16(s_lo, b_lo),
                ),
                vaddq_s32(
                    vmull_s16(vget_low_s16(s_hi), vget_low_s16(b_hi)),
                    vmull_high_s16(s_hi, b_hi),
                ),
            );
            let off = vaddvq_s32(off);

            let mut isum = vdupq_n_s32(0);
            for half in 0..2 {
                // 128 values: ql[64], qh[32], scales[8], q8[128].
                let ql = x.ql.as_ptr().add(64 * half);
                let qh = x.qh.as_ptr().add(32 * half);
                let q8 = y.qs.as_ptr().add(128 * half);
                let s = &sc[8 * half..8 * half + 8];
                let h0 = vld1q_u8(qh);
                let h1 = vld1q_u8(qh.add(16));
                let l0 = vld1q_u8(ql);
                let l1 = vld1q_u8(ql.add(16));
                let l2 = vld1q_u8(ql.add(32));
                let l3 = vld1q_u8(ql.add(48));
                // Quarter 0 (values 0..32): low nibbles of ql[0..32], qh bits 0-1.
                let v0 = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(h0, m2), 4));
                let v1 = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(h1, m2), 4));
                // Quarter 1 (32..64): low nibbles of ql[32..64], qh bits 2-3.
                let v2 = vorrq_u8(vandq_u8(l2, m4), vshlq_n_u8(vandq_u8(h0, m2x4), 2));
                let v3 = vorrq_u8(vandq_u8(l3, m4), vshlq_n_u8(vandq_u8(h1, m2x4), 2));
                // Quarter 2 (64..96): high nibbles of ql[0..32], qh bits 4-5.
                let v4 = vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(h0, m2x16));
                let v5 = vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(h1, m2x16));
                // Quarter 3 (96..128): high nibbles of ql[32..64], qh bits 6-7.
                let v6 = vorrq_u8(vshrq_n_u8(l2, 4), vshrq_n_u8(vandq_u8(h0, m2x64), 2));
                let v7 = vorrq_u8(vshrq_n_u8(l3, 4), vshrq_n_u8(vandq_u8(h1, m2x64), 2));
                let vs = [v0, v1, v2, v3, v4, v5, v6, v7];
                for (g, v) in vs.into_iter().enumerate() {
                    let yv = vld1q_s8(q8.add(16 * g));
                    let p = D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(v), yv);
                    isum = vmlaq_n_s32(isum, p, s[g] as i32);
                }
            }
            sum += d * (vaddvq_s32(isum) - 32 * off) as f32;
        }
        sum
    }
}

// ---------------------------------------------------------------------------------------------
// Float formats
// ---------------------------------------------------------------------------------------------

/// Shared body of the F16 (`BF == false`) and BF16 (`BF == true`) dot products: 16 values
/// per step into 4 accumulators.
#[inline(always)]
unsafe fn float16_dot<const BF: bool>(w: &[u16], a: &[u16]) -> f32 {
    // SAFETY: register-only conversions; callers are `neon` functions.
    let widen = |v| unsafe {
        if BF {
            bf16x8_to_f32(v)
        } else {
            f16x8_to_f32(v)
        }
    };
    let scalar = if BF {
        bf16_bits_to_f32
    } else {
        f16_bits_to_f32
    };
    let n = w.len().min(a.len());
    let main = n - n % 16;
    // SAFETY (whole body): every load reads 8 u16 at offsets i, i + 8 with i + 16 <= main
    // <= len of both slices; the rest is register arithmetic.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i < main {
            let (w0, w1) = widen(vld1q_u16(w.as_ptr().add(i)));
            let (w2, w3) = widen(vld1q_u16(w.as_ptr().add(i + 8)));
            let (a0, a1) = widen(vld1q_u16(a.as_ptr().add(i)));
            let (a2, a3) = widen(vld1q_u16(a.as_ptr().add(i + 8)));
            acc[0] = vfmaq_f32(acc[0], w0, a0);
            acc[1] = vfmaq_f32(acc[1], w1, a1);
            acc[2] = vfmaq_f32(acc[2], w2, a2);
            acc[3] = vfmaq_f32(acc[3], w3, a3);
            i += 16;
        }
        let total = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut sum = vaddvq_f32(total);
        for k in main..n {
            sum += scalar(w[k]) * scalar(a[k]);
        }
        sum
    }
}

fn f16_bits_to_f32(b: u16) -> f32 {
    f16::from_bits(b).to_f32()
}

fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers
// ---------------------------------------------------------------------------------------------

/// Loads 32 floats, returns them and their maximum absolute value.
#[inline(always)]
unsafe fn load32_amax(x: &[f32]) -> ([float32x4_t; 8], f32) {
    debug_assert!(x.len() >= 32);
    // SAFETY: 8 loads of 4 floats from a slice of at least 32 floats (callers pass chunks
    // of exactly 32); register arithmetic otherwise.
    unsafe {
        let p = x.as_ptr();
        let v: [float32x4_t; 8] = core::array::from_fn(|k| vld1q_f32(p.add(4 * k)));
        let mut m = vabsq_f32(v[0]);
        for vk in &v[1..] {
            m = vmaxq_f32(m, vabsq_f32(*vk));
        }
        (v, vmaxvq_f32(m))
    }
}

/// Rounds 32 scaled values `v · id` half away from zero (`fcvtas`, = C `roundf`) and stores
/// them as i8 in `out`, narrowing with saturation (`sqxtn`) exactly like Rust's saturating
/// `f32 as i8` (±inf → ±127/±128, NaN → 0). Returns `Σ out` (for Q8_1).
#[inline(always)]
unsafe fn store_round_away(v: &[float32x4_t; 8], id: f32, out: &mut [i8; QK]) -> i32 {
    // SAFETY: two 16-byte stores into the 32-byte `out`; register arithmetic otherwise.
    unsafe {
        let i: [int32x4_t; 8] = core::array::from_fn(|k| vcvtaq_s32_f32(vmulq_n_f32(v[k], id)));
        let h: [int16x8_t; 4] =
            core::array::from_fn(|k| vcombine_s16(vqmovn_s32(i[2 * k]), vqmovn_s32(i[2 * k + 1])));
        let b0 = vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])); // codes 0..16
        let b1 = vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3])); // codes 16..32
        vst1q_s8(out.as_mut_ptr(), b0);
        vst1q_s8(out.as_mut_ptr().add(16), b1);
        vaddlvq_s8(b0) as i32 + vaddlvq_s8(b1) as i32
    }
}

/// f32 → Q8_0 (`x.len() == 32 · out.len()`), bit-identical to the scalar quantizer.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_q8_0: length mismatch");
    for (xb, yb) in x.chunks_exact(QK).zip(out.iter_mut()) {
        // SAFETY: `xb` has exactly 32 floats; the CPU has NEON (caller contract).
        unsafe {
            let (v, amax) = load32_amax(xb);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = f32_to_f16(d);
            store_round_away(&v, id, &mut yb.qs);
        }
    }
}

/// f32 → Q8_1 (`x.len() == 32 · out.len()`), bit-identical to the scalar quantizer.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_q8_1: length mismatch");
    for (xb, yb) in x.chunks_exact(QK).zip(out.iter_mut()) {
        // SAFETY: `xb` has exactly 32 floats; the CPU has NEON (caller contract).
        unsafe {
            let (v, amax) = load32_amax(xb);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = f32_to_f16(d);
            let sum = store_round_away(&v, id, &mut yb.qs); // Σ codes, exact
            yb.s = f32_to_f16(sum as f32 * d);
        }
    }
}

/// f32 → Q8_K (`x.len() == 256 · out.len()`), bit-identical to the scalar quantizer.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8_K]) {
    assert_eq!(x.len(), out.len() * QK_K, "quantize_q8_k: length mismatch");
    for (xb, yb) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        // SAFETY: `xb` has exactly 256 floats, all loads are at offsets 4k < 256 and all
        // stores at 16k < 256 inside `yb.qs`; the CPU has NEON (caller contract).
        unsafe {
            let p = xb.as_ptr();
            let mut m = vdupq_n_f32(0.0);
            for k in 0..QK_K / 4 {
                m = vmaxq_f32(m, vabsq_f32(vld1q_f32(p.add(4 * k))));
            }
            let amax = vmaxvq_f32(m);
            // The signed value of the first element of largest magnitude (as the scalar
            // reference's strict `>` scan finds it).
            let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
            let iscale = -127.0 / max;
            // All zero, or so small that the inverse scale overflows: the scalar quantizer
            // stores the all-zero block.
            if amax == 0.0 || !iscale.is_finite() {
                yb.d = 0.0;
                yb.qs = [0; QK_K];
                yb.bsums = [0; QK_K / 16];
                continue;
            }
            let cap = vdupq_n_s32(127);
            for g in 0..QK_K / 16 {
                let q: [int32x4_t; 4] = core::array::from_fn(|k| {
                    let v = vmulq_n_f32(vld1q_f32(p.add(16 * g + 4 * k)), iscale);
                    vminq_s32(vcvtnq_s32_f32(v), cap)
                });
                // Codes are in [-127, 127] (|iscale · v| <= 127 up to rounding), so plain
                // narrowing is exact.
                let h0 = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
                let h1 = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
                vst1q_s8(
                    yb.qs.as_mut_ptr().add(16 * g),
                    vcombine_s8(vmovn_s16(h0), vmovn_s16(h1)),
                );
                yb.bsums[g] = vaddvq_s16(vaddq_s16(h0, h1));
            }
            yb.d = 1.0 / iscale;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public typed entry points: each kernel twice, plain NEON and sdot
// ---------------------------------------------------------------------------------------------

macro_rules! vec_dots {
    ($( $(#[$doc:meta])* $plain:ident, $sdot:ident = $body:ident($w:ty, $a:ty); )*) => {$(
        $(#[$doc])*
        ///
        /// Plain-NEON version (`smull` + `sadalp`).
        ///
        /// # Safety
        /// The CPU must support NEON (every aarch64 Linux CPU does). `w` and `a` should hold
        /// the same number of blocks (extra blocks of the longer one are ignored).
        #[target_feature(enable = "neon")]
        pub unsafe fn $plain(w: &[$w], a: &[$a]) -> f32 {
            debug_assert_eq!(w.len(), a.len());
            // SAFETY: NEON is enabled for this function (caller contract).
            unsafe { $body::<Plain>(w, a) }
        }

        $(#[$doc])*
        ///
        /// `sdot` version.
        ///
        /// # Safety
        /// The CPU must support NEON and the `dotprod` extension
        /// (`is_aarch64_feature_detected!("dotprod")`).
        #[target_feature(enable = "neon,dotprod")]
        pub unsafe fn $sdot(w: &[$w], a: &[$a]) -> f32 {
            debug_assert_eq!(w.len(), a.len());
            // SAFETY: NEON and dotprod are enabled for this function (caller contract).
            unsafe { $body::<Sdot>(w, a) }
        }
    )*};
}

vec_dots! {
    /// Q4_0 weights · Q8_0 activations.
    vec_dot_q4_0_q8_0, vec_dot_q4_0_q8_0_sdot = q4_0_q8_0(BlockQ4_0, BlockQ8_0);
    /// Q4_1 weights · Q8_1 activations.
    vec_dot_q4_1_q8_1, vec_dot_q4_1_q8_1_sdot = q4_1_q8_1(BlockQ4_1, BlockQ8_1);
    /// Q5_0 weights · Q8_0 activations.
    vec_dot_q5_0_q8_0, vec_dot_q5_0_q8_0_sdot = q5_0_q8_0(BlockQ5_0, BlockQ8_0);
    /// Q5_1 weights · Q8_1 activations.
    vec_dot_q5_1_q8_1, vec_dot_q5_1_q8_1_sdot = q5_1_q8_1(BlockQ5_1, BlockQ8_1);
    /// Q8_0 weights · Q8_0 activations.
    vec_dot_q8_0_q8_0, vec_dot_q8_0_q8_0_sdot = q8_0_q8_0(BlockQ8_0, BlockQ8_0);
    /// IQ4_NL weights · Q8_0 activations.
    vec_dot_iq4_nl_q8_0, vec_dot_iq4_nl_q8_0_sdot = iq4_nl_q8_0(BlockIQ4_NL, BlockQ8_0);
    /// Q4_K weights · Q8_K activations.
    vec_dot_q4_k_q8_k, vec_dot_q4_k_q8_k_sdot = q4_k_q8_k(BlockQ4_K, BlockQ8_K);
    /// Q5_K weights · Q8_K activations.
    vec_dot_q5_k_q8_k, vec_dot_q5_k_q8_k_sdot = q5_k_q8_k(BlockQ5_K, BlockQ8_K);
    /// Q6_K weights · Q8_K activations.
    vec_dot_q6_k_q8_k, vec_dot_q6_k_q8_k_sdot = q6_k_q8_k(BlockQ6_K, BlockQ8_K);
}

/// F16 weights · F16 activations, accumulated in f32 (16 partial sums).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_f16(w: &[f16], a: &[f16]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    // SAFETY: NEON is enabled (caller contract); f16 is a transparent u16.
    unsafe { float16_dot::<false>(bytemuck::cast_slice(w), bytemuck::cast_slice(a)) }
}

/// BF16 weights · BF16 activations, accumulated in f32 (16 partial sums).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn vec_dot_bf16(w: &[bf16], a: &[bf16]) -> f32 {
    debug_assert_eq!(w.len(), a.len());
    // SAFETY: NEON is enabled (caller contract); bf16 is a transparent u16.
    unsafe { float16_dot::<true>(bytemuck::cast_slice(w), bytemuck::cast_slice(a)) }
}

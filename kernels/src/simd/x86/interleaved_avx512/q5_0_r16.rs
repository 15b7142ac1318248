//! AVX-512 VNNI token generation with interleaved Q5_0 weights ([`GgmlType::Q5_0_R16`],
//! layout in [`crate::formats::interleaved`]).
//!
//! Per activation block (32 values) and 16-row group: one register of high bits and four
//! code registers. Code register `t` gives two registers of 5-bit codes, lane `r` = row `r`:
//! its low nibbles (values `4t .. 4t + 4`) and its high nibbles (values `16 + 4t ..`), each
//! merged with its fifth bits, which the layout stores so that one shift and one mask (or
//! one `vgf2p8affineqb`) of the high-bit register puts them at bit 4 of every code byte.
//! Each code register is multiplied by one broadcast dword of activations (`vpdpbusd`,
//! codes unsigned `0..32`) into an `i32` sum started at `−16 · Σ a` (prepared once per
//! activation block for all the groups): `Σ code·a − 16·Σ a = Σ (code − 16)·a`, exact. Then
//! the reference's float operations in its order, so each output is the scalar reference
//! `vec_dot`'s bits. No horizontal reduction: 16 outputs leave in one store.
//!
//! [`GgmlType::Q5_0_R16`]: grist_gguf::GgmlType::Q5_0_R16

use std::arch::x86_64::*;

use super::bit_matrix;
use crate::blocks::{f16_to_f32, BlockQ8_0};
use crate::formats::interleaved::{
    Q5_0_R16_COLUMN, Q5_0_R16_OFF_CODES, Q5_0_R16_OFF_HIGH, Q5_0_R16_ROWS,
};

/// Activation blocks of 32 values whose offset terms and scales the kernel prepares per pass
/// (2 KiB of stack; an even number, whole columns); longer rows run in several passes that
/// add into the outputs.
const PASS_BLOCKS: usize = 256;

/// `vgf2p8affineqb` matrices moving bit `u` of every byte to bit 4 (the other bits 0):
/// the fifth bits of code register `u` from the stored high bits.
const BIT_TO_4: [i64; 8] = {
    let mut m = [0i64; 8];
    let mut u = 0;
    while u < 8 {
        m[u] = bit_matrix(&[(u, 4)]);
        u += 1;
    }
    m
};

/// The typed Q5_0_R16 kernel (shifts and masks): `out[i] = row i · a`, `w` holding
/// `out.len() / 16` groups of `a.len() / 2` columns (see the module docs).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C. Panics unless `a.len()` is
/// even, `out.len()` a multiple of 16 and `w.len()` `out.len() / 16 × a.len() / 2 × 704`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemv_q5_0_r16(w: &[u8], a: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: the caller's contract; the features are enabled here.
    unsafe { q5_0_r16_rows::<false>(w, a, out) }
}

/// [`gemv_q5_0_r16`] with GFNI: the fifth bits of each code register are one
/// `vgf2p8affineqb` of the high-bit register instead of a shift and a mask.
///
/// # Safety
/// As [`gemv_q5_0_r16`], and the CPU must have GFNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,gfni")]
pub unsafe fn gemv_q5_0_r16_gfni(w: &[u8], a: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: the caller's contract; the features are enabled here.
    unsafe { q5_0_r16_rows::<true>(w, a, out) }
}

/// The 5-bit codes of code register `t` (`q`: `qs[4t .. 4t + 4]` of 16 rows) with the
/// block's high-bit register `hb`: `[low nibbles, high nibbles]`, each `nibble | fifth bit`:
///
/// ```text
/// low:   q & 0x0F        | (hb << (4 − t)) & 0x10    register u = t
/// high:  (q >> 4) & 0x0F | (hb >> t) & 0x10          register u = t + 4
/// ```
///
/// `x | y & z` is one `vpternlogd`; the 16-bit shift of `q` pulls bits of the next byte into
/// bits 4..8, which the mask drops. With `GFNI` the fifth bits are one `vgf2p8affineqb` each
/// (bit `u` to bit 4, nothing else) and the nibble's mask goes into the merge: 5
/// instructions per code register instead of 7. `t` is a constant once the caller's loop is
/// unrolled, so the shifts by a count register become shifts by an immediate.
///
/// # Safety
/// Inlined into [`gemv_q5_0_r16`] / [`gemv_q5_0_r16_gfni`], whose features it needs.
#[inline(always)]
unsafe fn q5_0_codes<const GFNI: bool>(q: __m512i, hb: __m512i, t: usize) -> [__m512i; 2] {
    let low4 = _mm512_set1_epi8(0x0F);
    let high = _mm512_srli_epi16::<4>(q);
    // `x | y & z`.
    let merge = |x, y, z| _mm512_ternarylogic_epi32::<0xF8>(x, y, z);
    if GFNI {
        let fifth =
            |u: usize| _mm512_gf2p8affine_epi64_epi8::<0>(hb, _mm512_set1_epi64(BIT_TO_4[u]));
        [merge(fifth(t), q, low4), merge(fifth(t + 4), high, low4)]
    } else {
        let bit4 = _mm512_set1_epi8(0x10);
        let count = |n: usize| _mm_cvtsi32_si128(n as i32);
        [
            merge(
                _mm512_and_si512(q, low4),
                _mm512_sll_epi32(hb, count(4 - t)),
                bit4,
            ),
            merge(
                _mm512_and_si512(high, low4),
                _mm512_srl_epi32(hb, count(t)),
                bit4,
            ),
        ]
    }
}

/// The body of both Q5_0_R16 kernels (see the module docs): per pass of up to
/// [`PASS_BLOCKS`] activation blocks, `−16 · Σ a` and `d_a` of each, then per group and
/// column, per block `h`: [`q5_0_codes`] of its four code registers, eight `vpdpbusd` in two
/// chains (the offset in the first), and `acc += sumi · (d_w · d_a)` as the reference does.
///
/// # Safety
/// Inlined into the entry points, whose features it needs; the lengths are asserted.
#[inline(always)]
unsafe fn q5_0_r16_rows<const GFNI: bool>(w: &[u8], a: &[BlockQ8_0], out: &mut [f32]) {
    let blocks = a.len();
    assert!(blocks.is_multiple_of(2) && out.len().is_multiple_of(Q5_0_R16_ROWS));
    let columns = blocks / 2;
    assert_eq!(
        w.len(),
        out.len() / Q5_0_R16_ROWS * columns * Q5_0_R16_COLUMN
    );
    if blocks == 0 {
        out.fill(0.0);
        return;
    }
    let base = w.as_ptr();
    // Per block of the pass: −16 · Σ codes, and d as f32.
    let mut offset = [0i32; PASS_BLOCKS];
    let mut da = [0.0f32; PASS_BLOCKS];
    for pass in (0..blocks).step_by(PASS_BLOCKS) {
        let a_pass = &a[pass..blocks.min(pass + PASS_BLOCKS)];
        for ((offset, da), y) in offset.iter_mut().zip(da.iter_mut()).zip(a_pass) {
            *offset = -16 * y.qs.iter().map(|&q| q as i32).sum::<i32>();
            *da = f16_to_f32(y.d);
        }
        for (g, out) in out.chunks_exact_mut(Q5_0_R16_ROWS).enumerate() {
            // SAFETY: every weight load reads inside `w`: column `pass / 2 + c` of group `g`
            // is the 704 bytes at `(g × columns + pass / 2 + c) × 704` (length asserted
            // above), and the loads end at offset ≤ 192 + 256 + 4 × 64 = 704 of it; the
            // activation loads read `qs[16k + 4t .. 16k + 4t + 4]`, `k < 2`, `t < 4`, of a
            // 32-byte array; `out` is 16 floats; every load and store is unaligned-tolerant;
            // the features are the caller's.
            unsafe {
                let mut acc = if pass == 0 {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(out.as_ptr())
                }; // [16] one lane per row
                let first = (g * columns + pass / 2) * Q5_0_R16_COLUMN;
                for (c, pair) in a_pass.chunks_exact(2).enumerate() {
                    let p = base.add(first + c * Q5_0_R16_COLUMN);
                    for (h, y) in pair.iter().enumerate() {
                        let i = 2 * c + h;
                        let hb = _mm512_loadu_si512(p.add(Q5_0_R16_OFF_HIGH + 64 * h).cast());
                        let codes = p.add(Q5_0_R16_OFF_CODES + 256 * h);
                        let yq = y.qs.as_ptr();
                        let y4 =
                            |k: usize| _mm512_set1_epi32(yq.add(k).cast::<i32>().read_unaligned());
                        // Two chains of four `vpdpbusd` (low and high nibbles), the offset
                        // in the first.
                        let mut dot = [_mm512_set1_epi32(offset[i]), _mm512_setzero_si512()];
                        for t in 0..4 {
                            let q = _mm512_loadu_si512(codes.add(64 * t).cast());
                            let [low, high] = q5_0_codes::<GFNI>(q, hb, t);
                            dot[0] = _mm512_dpbusd_epi32(dot[0], low, y4(4 * t));
                            dot[1] = _mm512_dpbusd_epi32(dot[1], high, y4(16 + 4 * t));
                        }
                        let sumi = _mm512_add_epi32(dot[0], dot[1]);
                        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32 * h).cast()));
                        let scale = _mm512_mul_ps(dw, _mm512_set1_ps(da[i]));
                        acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), scale));
                    }
                }
                _mm512_storeu_ps(out.as_mut_ptr(), acc);
            }
        }
    }
}

//! AVX-512 VNNI token generation with interleaved Q4_K, Q6_K, Q8_0, Q4_1 and Q5_0 weights
//! ([`GgmlType::Q4_K_R16`], [`GgmlType::Q6_K_R16`], [`GgmlType::Q8_0_R16`],
//! [`GgmlType::Q4_1_R16`] in [`q4_1_r16`], [`GgmlType::Q5_0_R16`] in [`q5_0_r16`]; layouts in
//! [`crate::formats::interleaved`]).
//!
//! Lane `r` of every register belongs to row `r` of a 16-row group, so a super-block column
//! is 32 code registers, each multiplied by one broadcast dword of activations
//! (`vpdpbusd`), then 8 sub-block sums per lane are scaled by the rows' 6-bit scales with
//! `vpmulld`, and the mins term comes from 4 more `vpdpbusd` on the activation's sub-block
//! sums. No horizontal reduction anywhere: 16 outputs leave in one store. Against the
//! row-at-a-time `k4_rows` this is 2.6–3.2× the work per cycle on a Zen 4, which moves
//! the 4B model's products from compute-bound to the memory bus (docs/PERFORMANCE.md,
//! "Round 12" and "Round 13").
//!
//! Q6_K_R16 ([`gemv_q6_k_r16`], [`gemv_q6_k_r16_gfni`]) works the same way: per step three
//! registers (two of low nibbles, one of high bits) give the 6-bit codes of four sub-blocks
//! (shifts and masks, or with GFNI one `vgf2p8affineqb` per code, merged by ternary logic),
//! each one `vpdpbusd` against a broadcast activation dword into a sum that starts at
//! `−32·bsum`; the 16 signed sub-block scales are sign-extended per lane by one load each
//! and applied with `vpmulld`.
//!
//! Q8_0_R16 ([`gemv_q8_0_r16`]): per activation block, 8 code registers (stored `q + 128`)
//! against broadcast activation dwords into a sum that starts at `−128 · Σ a`, then the
//! reference's float operations in its order. Q4_1_R16 ([`gemv_q4_1_r16`], in its own
//! module) the same with the nibbles of 4 code registers per block (low and high nibbles
//! against two broadcast activation dwords) and the minimums' term `m_w · s_a`.
//!
//! The sum per row is exact in `i32` per super-block, then one float multiply-add per
//! super-block, so the result differs from the reference `vec_dot` by float rounding alone.

use std::arch::x86_64::*;

use grist_gguf::GgmlType;

use crate::blocks::{f16_to_f32, BlockQ8_0, BlockQ8_1, BlockQ8_K};
use crate::dispatch::{GemvFn, Kernels};
use crate::formats::interleaved::{
    Q4_K_R16_COLUMN, Q4_K_R16_ROWS, Q6_K_R16_COLUMN, Q6_K_R16_OFF_CODES, Q6_K_R16_OFF_D,
    Q6_K_R16_OFF_SCALES, Q6_K_R16_ROWS,
};
use crate::formats::interleaved::{Q8_0_R16_COLUMN, Q8_0_R16_OFF_CODES, Q8_0_R16_ROWS};

pub mod q4_1_r16;
pub mod q5_0_r16;
pub use q4_1_r16::gemv_q4_1_r16;
pub use q5_0_r16::{gemv_q5_0_r16, gemv_q5_0_r16_gfni};

/// Installs the interleaved kernels.
pub(crate) fn install(table: &mut Kernels) {
    table.set_gemv(GgmlType::Q4_K_R16, q4_k_r16_gemv_bytes);
    table.set_gemv(GgmlType::Q8_0_R16, q8_0_r16_gemv_bytes);
    table.set_gemv(GgmlType::Q4_1_R16, q4_1_r16_gemv_bytes);
    let q6_k_r16 = if table.features().gfni {
        q6_k_r16_gfni_gemv_bytes as GemvFn
    } else {
        q6_k_r16_gemv_bytes
    };
    table.set_gemv(GgmlType::Q6_K_R16, q6_k_r16);
    let q5_0_r16 = if table.features().gfni {
        q5_0_r16_gfni_gemv_bytes as GemvFn
    } else {
        q5_0_r16_gemv_bytes
    };
    table.set_gemv(GgmlType::Q5_0_R16, q5_0_r16);
}

/// Defines a [`crate::dispatch::GemvFn`] adapter `$name` around the typed kernel `$kernel`:
/// `out[i] = row i · act` for the `out.len()` rows (whole groups of 16) of an interleaved
/// matrix `w` whose base type's blocks are `$block_bytes` bytes, with activations of type
/// `$act`; checks the lengths the kernel relies on.
macro_rules! interleaved_adapter {
    ($name:ident, $kernel:ident, $act:ty, $block_bytes:expr) => {
        fn $name(w: &[u8], w_row_bytes: usize, act: &[u8], out: &mut [f32]) {
            assert!(
                out.len().is_multiple_of(16),
                "{}: {} rows is not whole groups of 16",
                stringify!($kernel),
                out.len()
            );
            assert_eq!(
                w.len(),
                w_row_bytes * out.len(),
                "{}: weights are not out.len() rows of w_row_bytes",
                stringify!($kernel)
            );
            let a = crate::simd::x86::blocks_of::<$act>(act);
            assert_eq!(
                w_row_bytes,
                a.len() * $block_bytes,
                "{}: weight and activation rows differ in length",
                stringify!($kernel)
            );
            // SAFETY: only installed into a table that dispatch built after checking the CPU
            // has AVX-512 F/BW/VL/VNNI (and AVX2/FMA/F16C), and GFNI for a GFNI kernel
            // (`install`); the lengths are checked above.
            unsafe { $kernel(w, &a, out) }
        }
    };
}
interleaved_adapter!(q4_k_r16_gemv_bytes, gemv_q4_k_r16, BlockQ8_K, 144);
interleaved_adapter!(q6_k_r16_gemv_bytes, gemv_q6_k_r16, BlockQ8_K, 210);
interleaved_adapter!(q6_k_r16_gfni_gemv_bytes, gemv_q6_k_r16_gfni, BlockQ8_K, 210);
interleaved_adapter!(q8_0_r16_gemv_bytes, gemv_q8_0_r16, BlockQ8_0, 34);
interleaved_adapter!(q4_1_r16_gemv_bytes, gemv_q4_1_r16, BlockQ8_1, 20);
interleaved_adapter!(q5_0_r16_gemv_bytes, gemv_q5_0_r16, BlockQ8_0, 22);
interleaved_adapter!(q5_0_r16_gfni_gemv_bytes, gemv_q5_0_r16_gfni, BlockQ8_0, 22);

/// Byte offset of the three scale registers in a column.
const OFF_SCALES: usize = 64;
/// Byte offset of the 32 code registers in a column.
const OFF_QS: usize = 256;
/// Super-blocks of activation sums prepared per pass (a 1 KiB stack buffer); longer rows
/// run in several passes that add into the outputs.
const SUM_BLOCKS: usize = 64;

/// Per activation super-block, the sums of its 8 sub-blocks of 32 codes
/// `B_s = bsums[2s] + bsums[2s + 1]` (|B| ≤ 4064) split as `B = 64·high + low`, `low` in
/// `0..64` and `high` in `-64..64`, so both fit `vpdpbusd`'s signed byte operand; as dwords
/// `[low 0..4, high 0..4, low 4..8, high 4..8]`.
fn sub_block_sums(y: &BlockQ8_K) -> [i32; 4] {
    let split = |s: usize| {
        let b = y.bsums[2 * s] as i32 + y.bsums[2 * s + 1] as i32;
        ((b & 63) as u8, (b >> 6) as i8 as u8)
    };
    let word = |first: usize, high: bool| {
        i32::from_le_bytes(std::array::from_fn(|k| {
            let (low, hi) = split(first + k);
            if high {
                hi
            } else {
                low
            }
        }))
    };
    [word(0, false), word(0, true), word(4, false), word(4, true)]
}

/// `vpshufb` control that zero-extends byte `k` of every dword.
const fn byte_of_dword(k: usize) -> [u8; 64] {
    let mut c = [0x80u8; 64];
    let mut i = 0;
    while i < 64 {
        if i % 4 == 0 {
            c[i] = (i % 16 + k) as u8;
        }
        i += 1;
    }
    c
}
const BYTE_OF_DWORD: [[u8; 64]; 4] = [
    byte_of_dword(0),
    byte_of_dword(1),
    byte_of_dword(2),
    byte_of_dword(3),
];

/// The typed kernel: `out[i] = row i · a`, `w` holding `out.len() / 16` groups of
/// `a.len()` columns.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `w.len()` must be
/// `out.len() / 16 × a.len() × 2304` and `out.len()` a multiple of 16.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemv_q4_k_r16(w: &[u8], a: &[BlockQ8_K], out: &mut [f32]) {
    let blocks = a.len();
    assert!(out.len().is_multiple_of(Q4_K_R16_ROWS));
    assert_eq!(
        w.len(),
        out.len() / Q4_K_R16_ROWS * blocks * Q4_K_R16_COLUMN
    );
    if blocks == 0 {
        out.fill(0.0);
        return;
    }
    let base = w.as_ptr();
    // SAFETY (whole body): every load reads inside `w` (a column is 2304 bytes at
    // `(g × blocks + b) × 2304`, the loads end at offset ≤ 2304, and the length is asserted
    // above) or inside `y.qs` (256 bytes; `64j + 32 + 4t + 4 ≤ 256`); the loads are
    // unaligned-tolerant (`loadu`), the features are enabled on this function.
    unsafe {
        let low4 = _mm512_set1_epi8(0x0F);
        let high4 = _mm512_set1_epi8(0xF0u8 as i8);
        let six_bits = _mm512_set1_epi8(0x3F);
        let bits_4_5 = _mm512_set1_epi8(0x30);
        let pick: [__m512i; 4] =
            std::array::from_fn(|k| _mm512_loadu_si512(BYTE_OF_DWORD[k].as_ptr().cast()));
        // The activation's sub-block sums, prepared once per pass for every group.
        let mut sums = [[0i32; 4]; SUM_BLOCKS];
        for pass in (0..blocks).step_by(SUM_BLOCKS) {
            let a_pass = &a[pass..blocks.min(pass + SUM_BLOCKS)];
            for (s, y) in sums.iter_mut().zip(a_pass) {
                *s = sub_block_sums(y);
            }
            for (g, out) in out.chunks_exact_mut(Q4_K_R16_ROWS).enumerate() {
                let mut acc = if pass == 0 {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(out.as_ptr())
                }; // [16] one lane per row
                for (i, (y, sums)) in a_pass.iter().zip(&sums).enumerate() {
                    let p = base.add((g * blocks + pass + i) * Q4_K_R16_COLUMN);
                    // dot[s]: lane r = Σ code·y over sub-block s of row r (odd s: 16× that,
                    // the high nibble is kept in place by one `and`).
                    let mut dot = [_mm512_setzero_si512(); 8];
                    let yq = y.qs.as_ptr();
                    for t in 0..8 {
                        for j in 0..4 {
                            let bits = _mm512_loadu_si512(p.add(OFF_QS + 64 * (4 * t + j)).cast());
                            let y_even = _mm512_set1_epi32(
                                yq.add(64 * j + 4 * t).cast::<i32>().read_unaligned(),
                            );
                            let y_odd = _mm512_set1_epi32(
                                yq.add(64 * j + 32 + 4 * t).cast::<i32>().read_unaligned(),
                            );
                            let (lo, hi) =
                                (_mm512_and_si512(bits, low4), _mm512_and_si512(bits, high4));
                            dot[2 * j] = _mm512_dpbusd_epi32(dot[2 * j], lo, y_even);
                            dot[2 * j + 1] = _mm512_dpbusd_epi32(dot[2 * j + 1], hi, y_odd);
                        }
                    }
                    // The 6-bit scales and mins of the 16 rows (formats::scales_mins): byte
                    // k of a lane is sub-block k (0..4) or k + 4 (4..8).
                    let word = |k: usize| _mm512_loadu_si512(p.add(OFF_SCALES + 64 * k).cast());
                    let (u0, u1, u2) = (word(0), word(1), word(2));
                    let scales_03 = _mm512_and_si512(u0, six_bits);
                    let mins_03 = _mm512_and_si512(u1, six_bits);
                    // Bits 6, 7 of each byte moved to bits 4, 5 (a 16-bit shift by 2; the
                    // bits it pulls in from the next byte are masked off).
                    let top_two = |u| _mm512_and_si512(_mm512_srli_epi16::<2>(u), bits_4_5);
                    // (u2 & 0x0F) | top_two(u0), per byte: ternary logic A | (B & C).
                    let scales_47 = _mm512_ternarylogic_epi32::<0xF8>(top_two(u0), u2, low4);
                    let mins_47 = _mm512_ternarylogic_epi32::<0xF8>(
                        top_two(u1),
                        _mm512_srli_epi32::<4>(u2),
                        low4,
                    );
                    // Σ_s scale_s · dot_s, exact in i32 (|·| < 2.6e8); the odd sub-blocks'
                    // sum is 16× and each of its terms a multiple of 16, so the shift is exact.
                    let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                    for (s, &dot) in dot.iter().enumerate() {
                        let from = if s < 4 { scales_03 } else { scales_47 };
                        let scaled =
                            _mm512_mullo_epi32(dot, _mm512_shuffle_epi8(from, pick[s % 4]));
                        if s % 2 == 0 {
                            even = _mm512_add_epi32(even, scaled);
                        } else {
                            odd = _mm512_add_epi32(odd, scaled);
                        }
                    }
                    let sumi = _mm512_add_epi32(even, _mm512_srai_epi32::<4>(odd));
                    // Σ_s min_s · B_s = 64·Σ min·high + Σ min·low (four byte dot products).
                    let dp = |acc, mins, word: i32| {
                        _mm512_dpbusd_epi32(acc, mins, _mm512_set1_epi32(word))
                    };
                    let high = dp(
                        dp(_mm512_setzero_si512(), mins_03, sums[1]),
                        mins_47,
                        sums[3],
                    );
                    let summ = dp(
                        dp(_mm512_slli_epi32::<6>(high), mins_03, sums[0]),
                        mins_47,
                        sums[2],
                    );
                    let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
                    let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32).cast()));
                    let row = _mm512_fnmadd_ps(
                        dmin,
                        _mm512_cvtepi32_ps(summ),
                        _mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi)),
                    );
                    acc = _mm512_fmadd_ps(row, _mm512_set1_ps(y.d), acc);
                }
                _mm512_storeu_ps(out.as_mut_ptr(), acc);
            }
        }
    }
}

/// Per activation super-block, the start of each of its 16 sub-block sums, `−32·bsum_s`
/// (the codes' offset 32 times the activation's sum), times 4 for the sub-blocks of
/// quarter 3 of each half (`s % 8` = 6, 7), whose codes the kernel multiplies by 4
/// (|·| ≤ 128·2048).
fn q6_k_offsets(y: &BlockQ8_K) -> [i32; 16] {
    std::array::from_fn(|s| {
        let scale = if s % 8 >= 6 { -128 } else { -32 };
        scale * y.bsums[s] as i32
    })
}

/// `vgf2p8affineqb` bit matrix moving input bit `from` to output bit `to` for each pair
/// (result bit i = parity(matrix byte 7 − i & x); the other output bits are 0).
const fn bit_matrix(moves: &[(usize, usize)]) -> i64 {
    let mut m = 0u64;
    let mut k = 0;
    while k < moves.len() {
        let (from, to) = moves[k];
        m |= (1u64 << from) << (8 * (7 - to));
        k += 1;
    }
    m as i64
}
/// Bits 4..8 to 0..4 (the high nibble of `ql`, quarters 2 and 3).
const HIGH_NIBBLE_DOWN: i64 = bit_matrix(&[(4, 0), (5, 1), (6, 2), (7, 3)]);
/// Bits 4..8 to 2..6 (quarter 3's low nibble, 4× in place).
const HIGH_NIBBLE_TO_2: i64 = bit_matrix(&[(4, 2), (5, 3), (6, 4), (7, 5)]);
/// Bits 0, 1 to 4, 5 (quarter 0's high bits).
const QH_0_UP: i64 = bit_matrix(&[(0, 4), (1, 5)]);
/// Bits 2, 3 to 4, 5 (quarter 1's high bits).
const QH_1_UP: i64 = bit_matrix(&[(2, 4), (3, 5)]);

/// The typed Q6_K_R16 kernel: `out[i] = row i · a`, `w` holding `out.len() / 16` groups of
/// `a.len()` columns (`q6_k_r16_rows`, shifts and masks).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `w.len()` must be
/// `out.len() / 16 × a.len() × 3360` and `out.len()` a multiple of 16 (both asserted).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemv_q6_k_r16(w: &[u8], a: &[BlockQ8_K], out: &mut [f32]) {
    // SAFETY: the caller's contract; the features are enabled here.
    unsafe { q6_k_r16_rows::<false>(w, a, out) }
}

/// [`gemv_q6_k_r16`] with GFNI: each code's shift and mask is one `vgf2p8affineqb`
/// (+5–10 % on a Zen 4).
///
/// # Safety
/// As [`gemv_q6_k_r16`], and the CPU must have GFNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,gfni")]
pub unsafe fn gemv_q6_k_r16_gfni(w: &[u8], a: &[BlockQ8_K], out: &mut [f32]) {
    // SAFETY: the caller's contract; the features are enabled here.
    unsafe { q6_k_r16_rows::<true>(w, a, out) }
}

/// The 6-bit codes of the four quarters of step `(h, t)` from its registers `A` (`ql`,
/// quarters 0 | 2), `B` (quarters 1 | 3) and `C` (`qh`), per byte:
///
/// ```text
/// k = 0:  A & 0x0F        | (C << 4) & 0x30
/// k = 1:  B & 0x0F        | (C << 2) & 0x30
/// k = 2:  (A >> 4) & 0x0F | C & 0x30
/// k = 3:  (B >> 2) & 0x3C | C & 0xC0        4 × the code, so C needs no shift
/// ```
///
/// Without `GFNI`, 16-bit shifts (the bits they pull in from the neighbouring byte are
/// masked off) and `x | y & mask` in one `vpternlogd`: 12 instructions. With `GFNI`, the
/// moved part of each code is one `vgf2p8affineqb` and the merge one `vpternlogd`: 8.
///
/// # Safety
/// Inlined into [`gemv_q6_k_r16`] / [`gemv_q6_k_r16_gfni`], whose features it needs.
#[inline(always)]
unsafe fn q6_k_codes<const GFNI: bool>(a: __m512i, b: __m512i, c: __m512i) -> [__m512i; 4] {
    let low4 = _mm512_set1_epi8(0x0F);
    let bits_4_5 = _mm512_set1_epi8(0x30);
    let bits_6_7 = _mm512_set1_epi8(0xC0u8 as i8);
    // `x | y & z`.
    let merge = |x, y, z| _mm512_ternarylogic_epi32::<0xF8>(x, y, z);
    if GFNI {
        let moved = |x, m: i64| _mm512_gf2p8affine_epi64_epi8::<0>(x, _mm512_set1_epi64(m));
        [
            merge(moved(c, QH_0_UP), a, low4),
            merge(moved(c, QH_1_UP), b, low4),
            merge(moved(a, HIGH_NIBBLE_DOWN), c, bits_4_5),
            merge(moved(b, HIGH_NIBBLE_TO_2), c, bits_6_7),
        ]
    } else {
        let bits_2_5 = _mm512_set1_epi8(0x3C);
        [
            merge(
                _mm512_and_si512(a, low4),
                _mm512_slli_epi16::<4>(c),
                bits_4_5,
            ),
            merge(
                _mm512_and_si512(b, low4),
                _mm512_slli_epi16::<2>(c),
                bits_4_5,
            ),
            merge(
                _mm512_and_si512(_mm512_srli_epi16::<4>(a), low4),
                c,
                bits_4_5,
            ),
            merge(
                _mm512_and_si512(_mm512_srli_epi16::<2>(b), bits_2_5),
                c,
                bits_6_7,
            ),
        ]
    }
}

/// The body of both Q6_K_R16 kernels. Per column, in four quarters of 4 steps (`hu`: half
/// `h = hu / 2`, values `l = 16u .. 16u + 16` of its quarters, `u = hu % 2`):
/// [`q6_k_codes`], then `vpdpbusd` adds each code register's four code × activation
/// products into the lane's sum of sub-block `8h + 2k + u`, an accumulator that starts at
/// `−32·bsum` (so it ends at `Σ (code − 32)·y`, 4× for `k = 3`). Then per sub-block, exact
/// in `i32`: `sc_s · sum_s` with `vpmulld` (`sc_s`: 16 scales sign-extended by one
/// `vpmovsxbd` load), the `k = 3` terms summed apart and divided by 4 (exactly: each is a
/// multiple of 4; |Σ| ≤ 16·32·128·128·16 = 2^27), and one float multiply-add by `d · y.d`
/// per super-block. The quarter loop is left rolled: unrolled, LLVM hoists code
/// computations far ahead and spills them (−10 %).
///
/// # Safety
/// Inlined into the entry points, whose features it needs; the lengths are asserted.
#[inline(always)]
unsafe fn q6_k_r16_rows<const GFNI: bool>(w: &[u8], a: &[BlockQ8_K], out: &mut [f32]) {
    let blocks = a.len();
    assert!(out.len().is_multiple_of(Q6_K_R16_ROWS));
    assert_eq!(
        w.len(),
        out.len() / Q6_K_R16_ROWS * blocks * Q6_K_R16_COLUMN
    );
    if blocks == 0 {
        out.fill(0.0);
        return;
    }
    let base = w.as_ptr();
    // SAFETY (whole body): every load reads inside `w` (a column is 3360 bytes at
    // `(g × blocks + b) × 3360`; code loads end at offset ≤ 3072, scale loads at ≤ 3328, the
    // `d` load at 3360, and the length is asserted above) or inside `y.qs` (256 bytes;
    // `128h + 32k + 16u + 4t + 4 ≤ 256`); the loads are unaligned-tolerant, the features
    // are the caller's.
    unsafe {
        // The activation's sub-block offsets, prepared once per pass for every group.
        let mut offsets = [[0i32; 16]; SUM_BLOCKS];
        for pass in (0..blocks).step_by(SUM_BLOCKS) {
            let a_pass = &a[pass..blocks.min(pass + SUM_BLOCKS)];
            for (o, y) in offsets.iter_mut().zip(a_pass) {
                *o = q6_k_offsets(y);
            }
            for (g, out) in out.chunks_exact_mut(Q6_K_R16_ROWS).enumerate() {
                let mut acc = if pass == 0 {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(out.as_ptr())
                }; // [16] one lane per row
                for (i, (y, offsets)) in a_pass.iter().zip(&offsets).enumerate() {
                    let p = base.add((g * blocks + pass + i) * Q6_K_R16_COLUMN);
                    let yq = y.qs.as_ptr();
                    // Σ_s sc_s · sum_s, the k = 3 sub-blocks (4× their sums) apart.
                    let (mut sum1, mut sum4) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                    for hu in 0..4 {
                        let (h, u) = (hu / 2, hu % 2);
                        // sums[k]: lane r = Σ (code − 32)·y over sub-block 8h + 2k + u of
                        // row r (4× that for k = 3).
                        let mut sums: [__m512i; 4] =
                            std::array::from_fn(|k| _mm512_set1_epi32(offsets[8 * h + 2 * k + u]));
                        for t in 4 * u..4 * u + 4 {
                            let reg = |j: usize| {
                                let at = Q6_K_R16_OFF_CODES + 64 * (3 * (8 * h + t) + j);
                                _mm512_loadu_si512(p.add(at).cast())
                            };
                            let codes = q6_k_codes::<GFNI>(reg(0), reg(1), reg(2));
                            for (k, (sum, &code)) in sums.iter_mut().zip(&codes).enumerate() {
                                let y = yq.add(128 * h + 32 * k + 4 * t).cast::<i32>();
                                *sum = _mm512_dpbusd_epi32(
                                    *sum,
                                    code,
                                    _mm512_set1_epi32(y.read_unaligned()),
                                );
                            }
                        }
                        for (k, &sum) in sums.iter().enumerate() {
                            let at = Q6_K_R16_OFF_SCALES + 16 * (8 * h + 2 * k + u);
                            let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(at).cast()));
                            let term = _mm512_mullo_epi32(sc, sum);
                            if k == 3 {
                                sum4 = _mm512_add_epi32(sum4, term);
                            } else {
                                sum1 = _mm512_add_epi32(sum1, term);
                            }
                        }
                    }
                    let sumi = _mm512_add_epi32(sum1, _mm512_srai_epi32::<2>(sum4));
                    let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(Q6_K_R16_OFF_D).cast()));
                    acc = _mm512_fmadd_ps(
                        _mm512_mul_ps(d, _mm512_set1_ps(y.d)),
                        _mm512_cvtepi32_ps(sumi),
                        acc,
                    );
                }
                _mm512_storeu_ps(out.as_mut_ptr(), acc);
            }
        }
    }
}

/// Activation blocks of 32 values whose bias terms and scales [`gemv_q8_0_r16`] prepares per
/// pass (2 KiB of stack; an even number, whole columns); longer rows run in several passes
/// that add into the outputs.
const Q8_0_PASS_BLOCKS: usize = 256;

/// The typed Q8_0_R16 kernel: `out[i] = row i · a`, `w` holding `out.len() / 16` groups of
/// `a.len() / 2` columns.
///
/// Per activation block, its 8 dwords of codes are broadcast against the block's 8 code
/// registers (`vpdpbusd`, lane `r` = row `r`; the weights are stored `q + 128`, unsigned),
/// into an `i32` accumulator started at `−128 · Σ a` (prepared once per pass for all the
/// groups): `Σ (q + 128)·a − 128·Σ a = Σ q·a`, exact. The sum is then converted and scaled as
/// the reference does, `sumi · (d_w · d_a)` added to an `f32` accumulator block after block,
/// so each output is the scalar reference `vec_dot`'s bits (the Q8_0 `vec_dot` of this table
/// sums in another order). One 16-lane store per group.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C. Panics unless `a.len()` is
/// even, `out.len()` a multiple of 16 and `w.len()` `out.len() / 16 × a.len() / 2 × 1088`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemv_q8_0_r16(w: &[u8], a: &[BlockQ8_0], out: &mut [f32]) {
    let blocks = a.len();
    assert!(blocks.is_multiple_of(2) && out.len().is_multiple_of(Q8_0_R16_ROWS));
    let columns = blocks / 2;
    assert_eq!(
        w.len(),
        out.len() / Q8_0_R16_ROWS * columns * Q8_0_R16_COLUMN
    );
    if blocks == 0 {
        out.fill(0.0);
        return;
    }
    let base = w.as_ptr();
    // Per block of the pass: −128 · Σ codes, and d as f32.
    let mut bias = [0i32; Q8_0_PASS_BLOCKS];
    let mut da = [0.0f32; Q8_0_PASS_BLOCKS];
    for pass in (0..blocks).step_by(Q8_0_PASS_BLOCKS) {
        let a_pass = &a[pass..blocks.min(pass + Q8_0_PASS_BLOCKS)];
        for ((bias, da), y) in bias.iter_mut().zip(da.iter_mut()).zip(a_pass) {
            *bias = -128 * y.qs.iter().map(|&q| q as i32).sum::<i32>();
            *da = f16_to_f32(y.d);
        }
        for (g, out) in out.chunks_exact_mut(Q8_0_R16_ROWS).enumerate() {
            // SAFETY: every weight load reads inside `w`: column `pass / 2 + c` of group `g`
            // is the 1088 bytes at `(g × columns + pass / 2 + c) × 1088` (length asserted
            // above), and the loads end at offset ≤ 64 + 512 + 8 × 64 = 1088 of it; the
            // activation loads read `qs[4t .. 4t + 4]`, `t < 8`, of a 32-byte array; `out`
            // is 16 floats; every load and store is unaligned-tolerant; the features are
            // enabled on this function.
            unsafe {
                let mut acc = if pass == 0 {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(out.as_ptr())
                }; // [16] one lane per row
                let first = (g * columns + pass / 2) * Q8_0_R16_COLUMN;
                for (c, pair) in a_pass.chunks_exact(2).enumerate() {
                    let p = base.add(first + c * Q8_0_R16_COLUMN);
                    for (h, y) in pair.iter().enumerate() {
                        let i = 2 * c + h;
                        let codes = p.add(Q8_0_R16_OFF_CODES + 512 * h);
                        let yq = y.qs.as_ptr();
                        // Two chains of four `vpdpbusd`, the bias in the first.
                        let mut dot = [_mm512_set1_epi32(bias[i]), _mm512_setzero_si512()];
                        for t in 0..8 {
                            let q = _mm512_loadu_si512(codes.add(64 * t).cast());
                            let y4 =
                                _mm512_set1_epi32(yq.add(4 * t).cast::<i32>().read_unaligned());
                            dot[t % 2] = _mm512_dpbusd_epi32(dot[t % 2], q, y4);
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

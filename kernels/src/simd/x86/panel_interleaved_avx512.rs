//! AVX-512 panel unpackers of the interleaved types ([`crate::panel::PanelGroupUnpackFn`]):
//! a group of 16 rows of any interleaved type (Q4_K_R16, Q6_K_R16, Q8_0_R16, Q4_1_R16,
//! Q5_0_R16) goes straight from its columns ([`crate::formats::interleaved`]) to the panel
//! layout ([`crate::panel`]), without first de-interleaving the rows into plain blocks.
//!
//! In a column, lane `r` of every register is row `r`, which suits everything per row and
//! sub-block: the 16 rows' scales come out of one register (`dw = d · sc`, `ow = −dmin · m`),
//! and so do the sums of the codes behind `bias = −128 · Σ w_q` (one `vpdpbusd` against
//! bytes of 1 per code register, no horizontal reduction). The panel wants the codes row
//! by row, so each run of 8 code registers (dwords `t = 0 .. 8` of a 32-byte row of codes,
//! for 16 rows) is transposed in registers to 16 rows × 32 bytes (`transpose_8x16`), then
//! split into nibbles and stored. The 6-bit (Q6_K) and 5-bit (Q5_0) codes are assembled in
//! the lanes before the transpose, as the token-generation kernels do.
//!
//! The panel bytes are exactly those of de-interleaving the group and calling the base
//! type's unpacker (the same integer codes and sums; the same one f32 multiply per scale),
//! which `kernels/tests/panel.rs` checks bit for bit.
//!
//! Every function with `#[target_feature]` is only reachable through the dispatch table,
//! which is built after checking the CPU has these features.

use std::arch::x86_64::*;

use grist_gguf::GgmlType;

use crate::dispatch::Kernels;
use crate::formats::interleaved::{
    Q4_1_R16_COLUMN, Q4_1_R16_OFF_CODES, Q4_1_R16_OFF_M, Q4_K_R16_COLUMN, Q5_0_R16_COLUMN,
    Q5_0_R16_OFF_CODES, Q5_0_R16_OFF_HIGH, Q6_K_R16_COLUMN, Q6_K_R16_OFF_CODES, Q6_K_R16_OFF_D,
    Q6_K_R16_OFF_SCALES, Q8_0_R16_CODE_BIAS, Q8_0_R16_COLUMN, Q8_0_R16_OFF_CODES,
};
use crate::panel::UNPACK_GROUP_ROWS;

/// Installs the group unpackers.
pub(crate) fn install(table: &mut Kernels) {
    table.set_panel_group(GgmlType::Q4_K_R16, unpack_q4_k_r16);
    table.set_panel_group(GgmlType::Q6_K_R16, unpack_q6_k_r16);
    table.set_panel_group(GgmlType::Q8_0_R16, unpack_q8_0_r16);
    table.set_panel_group(GgmlType::Q4_1_R16, unpack_q4_1_r16);
    table.set_panel_group(GgmlType::Q5_0_R16, unpack_q5_0_r16);
}

/// The group rows held by output register `p` of [`transpose_8x16`]: its low 256 bits are
/// row `ROW_PAIRS[p].0`, its high 256 bits row `ROW_PAIRS[p].1`.
const ROW_PAIRS: [(usize, usize); 8] = [
    (0, 4),
    (8, 12),
    (1, 5),
    (9, 13),
    (2, 6),
    (10, 14),
    (3, 7),
    (11, 15),
];

/// 8 registers of 16 dwords (`x[t]`, lane `r` = row `r`) to 8 registers of two rows of 8
/// dwords each: the low half of `y[p]` is `x[0][a], x[1][a], …, x[7][a]` for row
/// `a = ROW_PAIRS[p].0`, the high half the same for row `ROW_PAIRS[p].1`. Two rounds of
/// unpacks within 128-bit lanes (4 dwords of each of 4 rows), then one two-source
/// permutation per output.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn transpose_8x16(x: &[__m512i; 8]) -> [__m512i; 8] {
    // Lane L of lo[i] / hi[i]: dwords 4L, 4L+1 / 4L+2, 4L+3 of x[2i] and x[2i+1], alternating.
    let lo: [__m512i; 4] = std::array::from_fn(|i| _mm512_unpacklo_epi32(x[2 * i], x[2 * i + 1]));
    let hi: [__m512i; 4] = std::array::from_fn(|i| _mm512_unpackhi_epi32(x[2 * i], x[2 * i + 1]));
    // rows[q][u], lane L: dwords 4u .. 4u + 4 (x[4u .. 4u + 4]) of row 4L + q.
    let rows: [[__m512i; 2]; 4] = std::array::from_fn(|q| {
        std::array::from_fn(|u| {
            let (a, b) = if q < 2 {
                (lo[2 * u], lo[2 * u + 1])
            } else {
                (hi[2 * u], hi[2 * u + 1])
            };
            if q % 2 == 0 {
                _mm512_unpacklo_epi64(a, b)
            } else {
                _mm512_unpackhi_epi64(a, b)
            }
        })
    });
    // Lanes 0, 1 of both halves: rows q, 4 + q; lanes 2, 3: rows 8 + q, 12 + q.
    let first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    let second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    std::array::from_fn(|p| {
        let [a, b] = rows[p / 2];
        let idx = if p % 2 == 0 { first } else { second };
        _mm512_permutex2var_epi32(a, idx, b)
    })
}

/// Columns ahead that [`prefetch_column`] fetches: the unpacker is the first to read a
/// work item's weights, which come from DRAM, and it visits a column's lines in the order the
/// transposes need them (stride 256 bytes), which the hardware prefetchers follow too late
/// (without this, the loads of the codes took 60 % of the unpacker's time).
const PREFETCH_COLUMNS: usize = 2;

/// Asks for the lines of the column `PREFETCH_COLUMNS` after the one at `col` (`column`
/// bytes each): past the group's end this is the next group's first column (the groups of a
/// work item are contiguous), and past the matrix's end a harmless hint.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn prefetch_column(col: *const u8, column: usize) {
    let ahead = col.wrapping_add(PREFETCH_COLUMNS * column);
    for line in (0..column).step_by(64) {
        // A prefetch is only a hint: it never faults, whatever the address.
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
    }
}

/// `−128 · sum`, lane by lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn times_minus_128(sum: __m512i) -> __m512i {
    _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<7>(sum))
}

/// Per lane (row), the sum of the unsigned code bytes of `regs` (4 per register), minus
/// `offset`: one `vpdpbusd` against bytes of 1 per register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn code_sum(regs: impl IntoIterator<Item = __m512i>, offset: i32) -> __m512i {
    let ones = _mm512_set1_epi8(1);
    let sum = regs.into_iter().fold(_mm512_setzero_si512(), |acc, v| {
        _mm512_dpbusd_epi32(acc, v, ones)
    });
    _mm512_sub_epi32(sum, _mm512_set1_epi32(offset))
}

/// Per lane (row), the sums of the low and of the high nibbles of the code bytes of `regs`:
/// the low ones with one `vpdpbusd` of the masked bytes, the high ones from the sum of the
/// whole bytes (`Σ bytes = Σ low + 16 Σ high`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn nibble_sums(regs: &[__m512i]) -> (__m512i, __m512i) {
    let nibbles = _mm512_set1_epi8(0x0F);
    let low = code_sum(regs.iter().map(|&v| _mm512_and_si512(v, nibbles)), 0);
    let bytes = code_sum(regs.iter().copied(), 0);
    (low, _mm512_srli_epi32::<4>(_mm512_sub_epi32(bytes, low)))
}

/// The 16 f16 at `at` as f32 (the 16 rows' scales of one block or super-block).
///
/// # Safety
/// `at .. at + 32` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn halves(at: *const u8) -> __m512 {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(at.cast())) }
}

/// Stores one sub-block's values for 16 rows: `dw`, `ow` and `−128 · sum` at `at`.
///
/// # Safety
/// `dw`, `ow`, `bias` writable at `at .. at + 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_sub_block(
    (dw, ow, bias): (*mut f32, *mut f32, *mut i32),
    at: usize,
    scale: __m512,
    offset: __m512,
    sum: __m512i,
) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        _mm512_storeu_ps(dw.add(at), scale);
        _mm512_storeu_ps(ow.add(at), offset);
        _mm512_storeu_si512(bias.add(at).cast(), times_minus_128(sum));
    }
}

/// Transposes 8 code registers ([`transpose_8x16`]) and stores each row's 32 codes at
/// `codes[r · cols + at ..]`.
///
/// # Safety
/// `codes` writable at `r · cols + at .. + 32` for every row `r < 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_rows_32(codes: *mut i8, cols: usize, at: usize, q: &[__m512i; 8]) {
    for (y, &(ra, rb)) in transpose_8x16(q).iter().zip(&ROW_PAIRS) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            _mm256_storeu_si256(codes.add(ra * cols + at).cast(), _mm512_castsi512_si256(*y));
            _mm256_storeu_si256(
                codes.add(rb * cols + at).cast(),
                _mm512_extracti64x4_epi64::<1>(*y),
            );
        }
    }
}

/// `x >> n` per dword, for a shift count known only at run time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn shr(x: __m512i, n: i32) -> __m512i {
    _mm512_srl_epi32(x, _mm_cvtsi32_si128(n))
}

/// The lengths a group unpacker relies on: `group` is whole columns of `column` bytes and
/// `column_values` values each, `codes` 16 rows of `cols`, and `dw`, `ow`, `bias` reach
/// sub-block `n_sub − 1` of row 15 at `stride ≥ 16`. A mismatch is a driver bug and panics.
#[allow(clippy::too_many_arguments)]
fn check_group(
    group: &[u8],
    (column, column_values): (usize, usize),
    cols: usize,
    sub_len: usize,
    codes: &[i8],
    dw: &[f32],
    ow: &[f32],
    bias: &[i32],
    stride: usize,
) {
    const G: usize = UNPACK_GROUP_ROWS;
    assert!(
        cols.is_multiple_of(column_values),
        "{cols} values is not whole columns of {column_values}"
    );
    assert_eq!(group.len(), cols / column_values * column, "group bytes");
    assert_eq!(codes.len(), G * cols, "panel codes length");
    assert!(stride >= G, "scale stride {stride} below a group");
    let need = (cols / sub_len - 1) * stride + G;
    assert!(
        dw.len() >= need && ow.len() >= need && bias.len() >= need,
        "panel scales length"
    );
}

/// Defines a safe [`crate::panel::PanelGroupUnpackFn`] adapter `$name` around the unsafe
/// `$kernel`, for columns of `$column` bytes and `$values` values, and sub-blocks of `$sub`
/// values.
macro_rules! group_adapter {
    ($name:ident, $kernel:ident, $column:expr, $values:expr, $sub:expr) => {
        fn $name(
            group: &[u8],
            cols: usize,
            codes: &mut [i8],
            dw: &mut [f32],
            ow: &mut [f32],
            bias: &mut [i32],
            stride: usize,
        ) {
            check_group(
                group,
                ($column, $values),
                cols,
                $sub,
                codes,
                dw,
                ow,
                bias,
                stride,
            );
            // SAFETY: lengths checked above; only installed into a table that dispatch built
            // after checking the CPU has AVX-512 F/BW/VL/VNNI (and AVX2/FMA/F16C).
            unsafe { $kernel(group, cols, codes, dw, ow, bias, stride) }
        }
    };
}

group_adapter!(unpack_q4_k_r16, q4_k_r16_group, Q4_K_R16_COLUMN, 256, 32);
group_adapter!(unpack_q6_k_r16, q6_k_r16_group, Q6_K_R16_COLUMN, 256, 16);
group_adapter!(unpack_q8_0_r16, q8_0_r16_group, Q8_0_R16_COLUMN, 64, 32);
group_adapter!(unpack_q4_1_r16, q4_1_r16_group, Q4_1_R16_COLUMN, 64, 32);
group_adapter!(unpack_q5_0_r16, q5_0_r16_group, Q5_0_R16_COLUMN, 64, 32);

/// Q4_K_R16 → panel: per column (super-block `b`), the 8 scales and mins of 16 rows from the
/// 3 scale registers, then per pair of sub-blocks `2j, 2j + 1` the 8 code registers
/// `4t + j`: their nibble sums (the biases) and, transposed, the rows' 64 codes.
///
/// # Safety
/// Lengths checked with [`check_group`]; the CPU has the enabled features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k_r16_group(
    group: &[u8],
    cols: usize,
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
    stride: usize,
) {
    let (m6, m4, m2) = (
        _mm512_set1_epi32(63),
        _mm512_set1_epi32(0x0F),
        _mm512_set1_epi32(3),
    );
    let nibbles = _mm512_set1_epi8(0x0F);
    let sign = _mm512_set1_epi32(i32::MIN);
    for b in 0..cols / 256 {
        // SAFETY (all loads and stores below): column `b` is inside `group`; the scale
        // stores reach sub-block 8b + 7 ≤ n_sub − 1, row 15, and the code stores row 15,
        // value 256b + 255 < cols (checked by the caller).
        unsafe {
            let col = group.as_ptr().add(b * Q4_K_R16_COLUMN);
            prefetch_column(col, Q4_K_R16_COLUMN);
            let (d, dmin) = (halves(col), halves(col.add(32)));
            // Dword k of row r: packed scale bytes 4k .. 4k + 4 (see `k4_scales_mins`).
            let s: [__m512i; 3] =
                std::array::from_fn(|k| _mm512_loadu_si512(col.add(64 + 64 * k).cast()));
            for j in 0..8 {
                let (sc, m) = if j < 4 {
                    let at = 8 * j as i32;
                    (
                        _mm512_and_si512(shr(s[0], at), m6),
                        _mm512_and_si512(shr(s[1], at), m6),
                    )
                } else {
                    let at = 8 * (j as i32 - 4);
                    let high =
                        |x: __m512i| _mm512_slli_epi32::<4>(_mm512_and_si512(shr(x, at + 6), m2));
                    (
                        _mm512_or_si512(_mm512_and_si512(shr(s[2], at), m4), high(s[0])),
                        _mm512_or_si512(_mm512_and_si512(shr(s[2], at + 4), m4), high(s[1])),
                    )
                };
                let at = (8 * b + j) * stride;
                _mm512_storeu_ps(
                    dw.as_mut_ptr().add(at),
                    _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)),
                );
                let min = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(m));
                let neg = _mm512_xor_si512(_mm512_castps_si512(min), sign);
                _mm512_storeu_si512(ow.as_mut_ptr().add(at).cast(), neg);
            }
            for j in 0..4 {
                // x[t], row r: qs[32j + 4t .. + 4]: values 4t .. 4t + 4 of sub-block 2j (low
                // nibbles) and 2j + 1 (high).
                let x: [__m512i; 8] = std::array::from_fn(|t| {
                    _mm512_loadu_si512(col.add(256 + 64 * (4 * t + j)).cast())
                });
                let (low_sum, high_sum) = nibble_sums(&x);
                let at = (8 * b + 2 * j) * stride;
                _mm512_storeu_si512(bias.as_mut_ptr().add(at).cast(), times_minus_128(low_sum));
                _mm512_storeu_si512(
                    bias.as_mut_ptr().add(at + stride).cast(),
                    times_minus_128(high_sum),
                );
                for (y, &(ra, rb)) in transpose_8x16(&x).iter().zip(&ROW_PAIRS) {
                    let lo = _mm512_and_si512(*y, nibbles);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(*y), nibbles);
                    // Row ra: low halves of both; row rb: high halves.
                    let (a, c) = (
                        _mm512_shuffle_i64x2::<0x44>(lo, hi),
                        _mm512_shuffle_i64x2::<0xEE>(lo, hi),
                    );
                    let at = 256 * b + 64 * j;
                    _mm512_storeu_si512(codes.as_mut_ptr().add(ra * cols + at).cast(), a);
                    _mm512_storeu_si512(codes.as_mut_ptr().add(rb * cols + at).cast(), c);
                }
            }
        }
    }
}

/// Q6_K_R16 → panel: per column (super-block `b`), the 16 sub-block scales of 16 rows
/// (one sign-extending load each), then per half `h` and quarter `k` the 8 steps' 6-bit
/// codes of 16 rows built in registers (low nibbles | high bits, as the token-generation
/// kernel does), their sums per 16-value sub-block, and, minus 32 and transposed, the rows'
/// 32 codes of the quarter.
///
/// # Safety
/// Lengths checked with [`check_group`]; the CPU has the enabled features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6_k_r16_group(
    group: &[u8],
    cols: usize,
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
    stride: usize,
) {
    let nibbles = _mm512_set1_epi8(0x0F);
    let high_bits = _mm512_set1_epi8(0x30);
    let thirty_two = _mm512_set1_epi8(32);
    for b in 0..cols / 256 {
        // SAFETY (all loads and stores below): column `b` is inside `group`; the scale
        // stores reach sub-block 16b + 15 ≤ n_sub − 1, row 15, and the code stores row 15,
        // value 256b + 255 < cols (checked by the caller).
        unsafe {
            let col = group.as_ptr().add(b * Q6_K_R16_COLUMN);
            prefetch_column(col, Q6_K_R16_COLUMN);
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(col.add(Q6_K_R16_OFF_D).cast()));
            for s in 0..16 {
                let sc = _mm_loadu_si128(col.add(Q6_K_R16_OFF_SCALES + 16 * s).cast());
                let at = (16 * b + s) * stride;
                let scale = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)));
                _mm512_storeu_ps(dw.as_mut_ptr().add(at), scale);
                _mm512_storeu_ps(ow.as_mut_ptr().add(at), _mm512_setzero_ps());
            }
            for h in 0..2 {
                // Register j of step t: at 64 · (3 · (8h + t) + j) (see the layout docs).
                let reg = |t: usize, j: usize| {
                    let at = Q6_K_R16_OFF_CODES + 64 * (3 * (8 * h + t) + j);
                    _mm512_loadu_si512(col.add(at).cast())
                };
                for k in 0..4 {
                    // q[t], row r: the 6-bit codes of values 4t .. 4t + 4 of quarter k.
                    let q: [__m512i; 8] = std::array::from_fn(|t| {
                        let low = reg(t, k % 2);
                        let low = if k < 2 {
                            low
                        } else {
                            _mm512_srli_epi16::<4>(low)
                        };
                        let qh = reg(t, 2);
                        // Bits 2k, 2k + 1 of each qh byte moved to bits 4, 5.
                        let qh = match k {
                            0 => _mm512_slli_epi16::<4>(qh),
                            1 => _mm512_slli_epi16::<2>(qh),
                            2 => qh,
                            _ => _mm512_srli_epi16::<2>(qh),
                        };
                        // (low & 0x0F) | (qh & 0x30): with a = low, b = qh & 0x30, c = 0x0F,
                        // the truth table of (a & c) | b is 0xEC.
                        let qh = _mm512_and_si512(qh, high_bits);
                        _mm512_ternarylogic_epi32::<0xEC>(low, qh, nibbles)
                    });
                    // Sub-blocks 8h + 2k (steps 0..4) and 8h + 2k + 1 (steps 4..8); Σ (q − 32)
                    // over 16 values = Σ q − 512.
                    for half in 0..2 {
                        let sum = code_sum(q[4 * half..4 * half + 4].iter().copied(), 512);
                        let at = (16 * b + 8 * h + 2 * k + half) * stride;
                        _mm512_storeu_si512(bias.as_mut_ptr().add(at).cast(), times_minus_128(sum));
                    }
                    let q = q.map(|v| _mm512_sub_epi8(v, thirty_two));
                    store_rows_32(codes.as_mut_ptr(), cols, 256 * b + 128 * h + 32 * k, &q);
                }
            }
        }
    }
}

/// Q8_0_R16 → panel: per column (blocks `2c`, `2c + 1`) and block, the 16 rows' `d`
/// (`dw = d`), the sums of the block's 8 code registers (stored `q + 128`: the biases) and,
/// with the `+ 128` taken off and transposed, each row's 32 codes.
///
/// # Safety
/// Lengths checked with [`check_group`]; the CPU has the enabled features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_r16_group(
    group: &[u8],
    cols: usize,
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
    stride: usize,
) {
    let code_bias = _mm512_set1_epi8(Q8_0_R16_CODE_BIAS as i8);
    let scales = (dw.as_mut_ptr(), ow.as_mut_ptr(), bias.as_mut_ptr());
    for c in 0..cols / 64 {
        // SAFETY (all loads and stores below): column `c` is inside `group`; the scale
        // stores reach sub-block 2c + 1 ≤ n_sub − 1, row 15, and the code stores row 15,
        // value 64c + 63 < cols (checked by the caller).
        unsafe {
            let col = group.as_ptr().add(c * Q8_0_R16_COLUMN);
            prefetch_column(col, Q8_0_R16_COLUMN);
            for h in 0..2 {
                // x[t], row r: qs[4t .. 4t + 4] + 128 of block 2c + h.
                let x: [__m512i; 8] = std::array::from_fn(|t| {
                    _mm512_loadu_si512(col.add(Q8_0_R16_OFF_CODES + 512 * h + 64 * t).cast())
                });
                // Σ q over 32 values = Σ (q + 128) − 32 · 128.
                let sum = code_sum(x, 32 * 128);
                let d = halves(col.add(32 * h));
                store_sub_block(scales, (2 * c + h) * stride, d, _mm512_setzero_ps(), sum);
                let x = x.map(|v| _mm512_xor_si512(v, code_bias));
                store_rows_32(codes.as_mut_ptr(), cols, 64 * c + 32 * h, &x);
            }
        }
    }
}

/// Q4_1_R16 → panel: per column (blocks `2c`, `2c + 1`), the 16 rows' `d` and `m` of each
/// block as they are (`dw = d`, `ow = m`), the nibble sums of each block's 4 code registers
/// (the biases), and the 8 code registers transposed to each row's two blocks of 16 code
/// bytes, split into nibbles.
///
/// # Safety
/// Lengths checked with [`check_group`]; the CPU has the enabled features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_r16_group(
    group: &[u8],
    cols: usize,
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
    stride: usize,
) {
    let nibbles = _mm512_set1_epi8(0x0F);
    let scales = (dw.as_mut_ptr(), ow.as_mut_ptr(), bias.as_mut_ptr());
    // Row a of a transposed pair: 128-bit lanes low 0, high 0, low 1, high 1 (block 2c's 16
    // low nibbles, its 16 high ones, the same of block 2c + 1); row b: lanes 2 and 3.
    let row_a = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let row_b = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for c in 0..cols / 64 {
        // SAFETY (all loads and stores below): column `c` is inside `group`; the scale
        // stores reach sub-block 2c + 1 ≤ n_sub − 1, row 15, and the code stores row 15,
        // value 64c + 63 < cols (checked by the caller).
        unsafe {
            let col = group.as_ptr().add(c * Q4_1_R16_COLUMN);
            prefetch_column(col, Q4_1_R16_COLUMN);
            // x[4h + t], row r: qs[4t .. 4t + 4] of block 2c + h.
            let x: [__m512i; 8] = std::array::from_fn(|i| {
                _mm512_loadu_si512(col.add(Q4_1_R16_OFF_CODES + 64 * i).cast())
            });
            for h in 0..2 {
                let (low_sum, high_sum) = nibble_sums(&x[4 * h..4 * h + 4]);
                let sum = _mm512_add_epi32(low_sum, high_sum);
                let (d, m) = (
                    halves(col.add(32 * h)),
                    halves(col.add(Q4_1_R16_OFF_M + 32 * h)),
                );
                store_sub_block(scales, (2 * c + h) * stride, d, m, sum);
            }
            for (y, &(ra, rb)) in transpose_8x16(&x).iter().zip(&ROW_PAIRS) {
                let lo = _mm512_and_si512(*y, nibbles);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(*y), nibbles);
                let at = 64 * c;
                _mm512_storeu_si512(
                    codes.as_mut_ptr().add(ra * cols + at).cast(),
                    _mm512_permutex2var_epi64(lo, row_a, hi),
                );
                _mm512_storeu_si512(
                    codes.as_mut_ptr().add(rb * cols + at).cast(),
                    _mm512_permutex2var_epi64(lo, row_b, hi),
                );
            }
        }
    }
}

/// Q5_0_R16 → panel: per column (blocks `2c`, `2c + 1`) and block, the 16 rows' `d`
/// (`dw = d`), the block's 8 registers of 5-bit codes built from the code nibbles and the
/// stored high bits (register `u` holds values `4u .. 4u + 4`, its fifth bits are bit `u` of
/// each byte of the high-bit register), their sums (the biases) and, minus 16 and
/// transposed, each row's 32 codes.
///
/// # Safety
/// Lengths checked with [`check_group`]; the CPU has the enabled features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0_r16_group(
    group: &[u8],
    cols: usize,
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
    stride: usize,
) {
    let nibbles = _mm512_set1_epi8(0x0F);
    let fifth = _mm512_set1_epi8(0x10);
    let sixteen = _mm512_set1_epi8(16);
    let scales = (dw.as_mut_ptr(), ow.as_mut_ptr(), bias.as_mut_ptr());
    for c in 0..cols / 64 {
        // SAFETY (all loads and stores below): column `c` is inside `group`; the scale
        // stores reach sub-block 2c + 1 ≤ n_sub − 1, row 15, and the code stores row 15,
        // value 64c + 63 < cols (checked by the caller).
        unsafe {
            let col = group.as_ptr().add(c * Q5_0_R16_COLUMN);
            prefetch_column(col, Q5_0_R16_COLUMN);
            for h in 0..2 {
                let high = _mm512_loadu_si512(col.add(Q5_0_R16_OFF_HIGH + 64 * h).cast());
                let q: [__m512i; 8] = std::array::from_fn(|u| {
                    let x = _mm512_loadu_si512(
                        col.add(Q5_0_R16_OFF_CODES + 256 * h + 64 * (u % 4)).cast(),
                    );
                    let low = if u < 4 { x } else { _mm512_srli_epi16::<4>(x) };
                    // Bit u of each high-bit byte to bit 4.
                    let bit = if u <= 4 {
                        _mm512_sll_epi32(high, _mm_cvtsi32_si128(4 - u as i32))
                    } else {
                        _mm512_srl_epi32(high, _mm_cvtsi32_si128(u as i32 - 4))
                    };
                    // (low & 0x0F) | (bit & 0x10): with a = low, b = bit & 0x10, c = 0x0F,
                    // the truth table of (a & c) | b is 0xEC.
                    _mm512_ternarylogic_epi32::<0xEC>(low, _mm512_and_si512(bit, fifth), nibbles)
                });
                // Σ (q − 16) over 32 values = Σ q − 512.
                let sum = code_sum(q, 512);
                let d = halves(col.add(32 * h));
                store_sub_block(scales, (2 * c + h) * stride, d, _mm512_setzero_ps(), sum);
                let q = q.map(|v| _mm512_sub_epi8(v, sixteen));
                store_rows_32(codes.as_mut_ptr(), cols, 64 * c + 32 * h, &q);
            }
        }
    }
}

//! Interleaved layouts (grist-private): the blocks of 16 consecutive rows of a matrix stored
//! column by column, so that one 512-bit register holds the same bytes of 16 rows and one
//! `vpdpbusd` lane accumulates one row. Token generation then needs no horizontal reduction
//! and reads every loaded byte once (docs/KERNELS.md, "Q4_K_R16").
//!
//! **Q4_K_R16.** A matrix of `rows` (a multiple of 16) Q4_K rows is `rows / 16` groups, each
//! `blocks` super-block columns of [`Q4_K_R16_COLUMN`] = 2304 bytes = 16 Q4_K blocks, so the
//! file and the kernel read exactly as many bytes as plain Q4_K. One column, row `r` of the
//! group at lane `r`:
//!
//! ```text
//! offset  0: d     [16 × f16]      row r at 2r
//! offset 32: dmin  [16 × f16]      row r at 32 + 2r
//! offset 64: scales, 3 registers   register k, row r: scales[4k .. 4k + 4] at 64 + 64k + 4r
//! offset 256: codes, 32 registers  register 4t + j, row r: qs[32j + 4t .. 32j + 4t + 4]
//!                                   at 256 + 64(4t + j) + 4r
//! ```
//!
//! Code register `4t + j` holds values `4t .. 4t + 4` of sub-block `2j` (low nibbles) and of
//! sub-block `2j + 1` (high nibbles): the order the AVX-512 kernel reads them in, so a column
//! streams line after line and the hardware prefetchers keep up (docs/PERFORMANCE.md,
//! "Round 12").
//!
//! **Q8_0_R16.** A matrix of `rows` (a multiple of 16) Q8_0 rows of `cols` (a multiple of 64)
//! values is `rows / 16` groups, each `cols / 64` columns of [`Q8_0_R16_COLUMN`] = 1088 bytes
//! = two consecutive Q8_0 blocks of 16 rows = 17 cache lines, as many bytes as plain Q8_0.
//! Column `c` (blocks `2c`, `2c + 1`), row `r` of the group at lane `r`:
//!
//! ```text
//! offset   0: d of block 2c       [16 × f16]  row r at 2r
//! offset  32: d of block 2c + 1   [16 × f16]  row r at 32 + 2r
//! offset  64: codes of block 2c, 8 registers      register t, row r: qs[4t .. 4t + 4] ^ 0x80
//!                                                   at 64 + 64t + 4r
//! offset 576: codes of block 2c + 1, 8 registers  the same at 576 + 64t + 4r
//! ```
//!
//! Every code register is a whole cache line when the matrix is 64-byte aligned (`grist
//! repack` aligns tensors to 64). The codes are stored **biased**, `q + 128` (`q ^ 0x80`),
//! so they are the unsigned operand `vpdpbusd` wants as they are, and the kernel removes the
//! bias with one `−128 · Σ a` per activation block. This type is therefore not a pure
//! permutation of the Q8_0 bytes: [`interleave`] adds the bias and [`deinterleave`] /
//! [`extract_row`] take it off, so the round trip is still exact. The table geometry of
//! [`GgmlType::Q8_0_R16`] is one column's share of a row (64 values, 68 bytes).
//!
//! **Q4_1_R16.** The same two-block columns for Q4_1 (`[d: f16][m: f16][qs: 16 B]`, byte `j`
//! of `qs` = value `j` in the low nibble, value `j + 16` in the high one, see
//! `formats::q4_1`): a matrix of `rows` (a multiple of 16) Q4_1 rows of `cols` (a multiple
//! of 64) values is `rows / 16` groups, each `cols / 64` columns of [`Q4_1_R16_COLUMN`] =
//! 640 bytes = two consecutive Q4_1 blocks of 16 rows = 10 cache lines. Column `c` (blocks
//! `2c`, `2c + 1`), row `r` of the group at lane `r`:
//!
//! ```text
//! offset   0: d of block 2c       [16 × f16]  row r at 2r
//! offset  32: d of block 2c + 1   [16 × f16]  row r at 32 + 2r
//! offset  64: m of block 2c       [16 × f16]  row r at 64 + 2r
//! offset  96: m of block 2c + 1   [16 × f16]  row r at 96 + 2r
//! offset 128: codes, 8 registers  register 4h + t (block 2c + h, h < 2, t < 4), row r:
//!                                   qs[4t .. 4t + 4] at 128 + 64(4h + t) + 4r
//! ```
//!
//! Code register `4h + t` holds values `4t .. 4t + 4` of block `2c + h` in its low nibbles
//! and values `16 + 4t .. 16 + 4t + 4` in its high ones: two `vpdpbusd` against two broadcast
//! activation dwords, the nibbles unsigned as they are. A pure permutation of the Q4_1
//! bytes (no bias); the table geometry of [`GgmlType::Q4_1_R16`] is one column's share of a
//! row (64 values, 40 bytes).
//! **Q5_0_R16.** The same for Q5_0 (`[d: f16][qh: u32][qs: 16 B]`, code `v` =
//! `nibble | (bit v of qh) << 4`, value `d · (code − 16)`; `qs[i]` holds value `i` in its low
//! nibble and `i + 16` in its high one): `rows / 16` groups of `cols / 64` columns of
//! [`Q5_0_R16_COLUMN`] = 704 bytes = two Q5_0 blocks of 16 rows = 11 cache lines, as many
//! bytes as plain Q5_0. Column `c` (blocks `2c`, `2c + 1`), row `r` at lane `r`:
//!
//! ```text
//! offset   0: d of block 2c       [16 × f16]   row r at 2r
//! offset  32: d of block 2c + 1   [16 × f16]   row r at 32 + 2r
//! offset  64: high bits of block 2c, 1 register   row r: its qh, permuted, at 64 + 4r
//! offset 128: high bits of block 2c + 1            the same at 128 + 4r
//! offset 192: codes of block 2c, 4 registers      register t, row r: qs[4t .. 4t + 4]
//!                                                   at 192 + 64t + 4r
//! offset 448: codes of block 2c + 1, 4 registers  the same at 448 + 64t + 4r
//! ```
//!
//! Code register `t` holds values `4t .. 4t + 4` in its low nibbles and `16 + 4t ..` in its
//! high ones: "register" `u` = `t` and `u` = `t + 4` of the block's values `4u .. 4u + 4`.
//! The high bits are **permuted within their dword**: bit `4u + j` of `qh` (the high bit of
//! value `4u + j`) is stored at bit `8j + u`, so `(hb << (4 − u)) & 0x10101010` (`>> (u − 4)`
//! for `u > 4`) is exactly the bit-4 part of register `u`'s four code bytes, one shift and
//! one mask (or one `vgf2p8affineqb`) per code register. The permutation is a bijection:
//! [`deinterleave`] and [`extract_row`] restore `qh`, and the round trip is exact. The codes
//! are unsigned `0..32`, `vpdpbusd`'s unsigned operand, and the kernel removes the offset 16
//! with one `−16 · Σ a` per activation block. The table geometry of
//! [`GgmlType::Q5_0_R16`] is one column's share of a row (64 values, 44 bytes).
//!
//! **Q6_K_R16.** The same for Q6_K (`[ql: 128][qh: 64][scales: 16 × i8][d: f16]`, see
//! `formats::q6_k`): `blocks` columns of [`Q6_K_R16_COLUMN`] = 3360 bytes = 16 Q6_K blocks
//! per group. One column, row `r` at lane `r`, every register 64 bytes (one dword per row):
//!
//! ```text
//! offset    0: codes, 48 registers  register 3(8h + t) + j, h < 2, t < 8, row r at
//!                                     64(3(8h + t) + j) + 4r:
//!                                     j = 0: ql[64h + 4t .. +4]       quarters 0 | 2 of half h
//!                                     j = 1: ql[64h + 32 + 4t .. +4]  quarters 1 | 3
//!                                     j = 2: qh[32h + 4t .. +4]       their high 2 bits
//! offset 3072: scales [16 × 16 i8]  sub-block s (scales[s]), row r at 3072 + 16s + r
//! offset 3328: d      [16 × f16]     row r at 3328 + 2r
//! ```
//!
//! The three registers of step `(h, t)` hold values `l = 4t .. 4t + 4` of the four 32-value
//! quarters of half `h` (value `128h + 32k + l`, sub-block `8h + 2k + l / 16`): the low
//! nibbles of quarters 0 and 2 (`j = 0`) and 1 and 3 (`j = 1`), and in `qh` bits `2k, 2k + 1`
//! the high bits of quarter `k`. The scales are transposed, one 16-byte row per sub-block,
//! so one `vpmovsxbd` load gives a sub-block's 16 signed scales as dwords (5 % faster than
//! dwords of 4 scales per row, which need a shift pair per sub-block). The kernel reads the
//! steps in this order, the scales per quarter of steps and `d` last: the column streams
//! front to back. Codes and scales start on a 64-byte line of the column, `d` takes half a
//! line; a column is 52.5 lines, so every other column of a 64-byte aligned matrix starts
//! half a line in (the kernel's loads are unaligned; on a Zen 4 a 64-byte load is two
//! 32-byte halves, which never cross a line either way).
//!
//! A 16-row-aligned range of rows `r0 .. r0 + 16k` is the contiguous byte range
//! `r0 × row_bytes .. (r0 + 16k) × row_bytes`, as for a plain matrix, so the matmul driver cuts
//! token generation's rows the same way for both (in multiples of 16). The paths without an
//! interleaved kernel (prompt processing, other ISAs) [`deinterleave`] a work item's rows
//! first and run the base type's kernels on them.

use grist_gguf::GgmlType;

use super::FormatError;

mod block_pairs;
mod q4_1_r16;
mod q5_0_r16;
mod q8_0_r16;
pub use q4_1_r16::{Q4_1_R16_COLUMN, Q4_1_R16_OFF_CODES, Q4_1_R16_OFF_M, Q4_1_R16_ROWS};
pub use q5_0_r16::{Q5_0_R16_COLUMN, Q5_0_R16_OFF_CODES, Q5_0_R16_OFF_HIGH, Q5_0_R16_ROWS};
pub use q8_0_r16::{Q8_0_R16_CODE_BIAS, Q8_0_R16_COLUMN, Q8_0_R16_OFF_CODES, Q8_0_R16_ROWS};

/// Rows per group of [`GgmlType::Q4_K_R16`].
pub const Q4_K_R16_ROWS: usize = 16;
/// Bytes of one super-block column of a Q4_K_R16 group (16 Q4_K blocks).
pub const Q4_K_R16_COLUMN: usize = Q4_K_R16_ROWS * Q4_K_BLOCK;
/// Bytes of one Q4_K block.
const Q4_K_BLOCK: usize = 144;
/// Rows per group of [`GgmlType::Q6_K_R16`].
pub const Q6_K_R16_ROWS: usize = 16;
/// Bytes of one super-block column of a Q6_K_R16 group (16 Q6_K blocks).
pub const Q6_K_R16_COLUMN: usize = Q6_K_R16_ROWS * Q6_K_BLOCK;
/// Bytes of one Q6_K block.
const Q6_K_BLOCK: usize = 210;
/// Byte offset of the 48 code registers in a Q6_K_R16 column.
pub const Q6_K_R16_OFF_CODES: usize = 0;
/// Byte offset of the 16 × 16 scales (sub-block after sub-block) in a Q6_K_R16 column.
pub const Q6_K_R16_OFF_SCALES: usize = 3072;
/// Byte offset of the 16 f16 `d` in a Q6_K_R16 column.
pub const Q6_K_R16_OFF_D: usize = 3328;

/// Where byte `p` of a Q4_K block (`[d: 2][dmin: 2][scales: 12][qs: 128]`) of group row `r`
/// goes in the column (see the module docs).
const fn q4_k_column_offset(p: usize, r: usize) -> usize {
    if p < 2 {
        2 * r + p
    } else if p < 4 {
        32 + 2 * r + (p - 2)
    } else if p < 16 {
        let (k, i) = ((p - 4) / 4, (p - 4) % 4);
        64 + 64 * k + 4 * r + i
    } else {
        let q = p - 16;
        let (j, t, i) = (q / 32, (q % 32) / 4, q % 4);
        256 + 64 * (4 * t + j) + 4 * r + i
    }
}

/// [`q4_k_column_offset`] for every (row, byte): the permutation between 16 plain blocks
/// (row after row) and one column.
const Q4_K_OFFSETS: [[u16; Q4_K_BLOCK]; Q4_K_R16_ROWS] = {
    let mut t = [[0u16; Q4_K_BLOCK]; Q4_K_R16_ROWS];
    let mut r = 0;
    while r < Q4_K_R16_ROWS {
        let mut p = 0;
        while p < Q4_K_BLOCK {
            t[r][p] = q4_k_column_offset(p, r) as u16;
            p += 1;
        }
        r += 1;
    }
    t
};

/// Where byte `p` of a Q6_K block (`[ql: 128][qh: 64][scales: 16][d: 2]`) of group row `r`
/// goes in the column (see the module docs).
const fn q6_k_column_offset(p: usize, r: usize) -> usize {
    if p < 192 {
        // ql: half h = q / 64, j = (q % 64) / 32; qh: half h = q / 32, j = 2.
        let (h, j, q) = if p < 128 {
            (p / 64, (p % 64) / 32, p % 32)
        } else {
            ((p - 128) / 32, 2, (p - 128) % 32)
        };
        let (t, i) = (q / 4, q % 4);
        Q6_K_R16_OFF_CODES + 64 * (3 * (8 * h + t) + j) + 4 * r + i
    } else if p < 208 {
        Q6_K_R16_OFF_SCALES + 16 * (p - 192) + r
    } else {
        Q6_K_R16_OFF_D + 2 * r + (p - 208)
    }
}

/// [`q6_k_column_offset`] for every (row, byte).
const Q6_K_OFFSETS: [[u16; Q6_K_BLOCK]; Q6_K_R16_ROWS] = {
    let mut t = [[0u16; Q6_K_BLOCK]; Q6_K_R16_ROWS];
    let mut r = 0;
    while r < Q6_K_R16_ROWS {
        let mut p = 0;
        while p < Q6_K_BLOCK {
            t[r][p] = q6_k_column_offset(p, r) as u16;
            p += 1;
        }
        r += 1;
    }
    t
};

/// The number of runs [`runs_of`] finds in `offsets`.
const fn count_runs(offsets: &[u16]) -> usize {
    let (mut n, mut p) = (0, 0);
    while p < offsets.len() {
        p += run_len(offsets, p);
        n += 1;
    }
    n
}

/// The length of the run starting at byte `p`: bytes that stay consecutive in the column,
/// at most 4.
const fn run_len(offsets: &[u16], p: usize) -> usize {
    let mut len = 1;
    while len < 4 && p + len < offsets.len() && offsets[p + len] == offsets[p] + len as u16 {
        len += 1;
    }
    len
}

/// The runs `(p, len)` of a block's bytes that move as a whole (the same for every row of
/// a group: tested), from one row's column offsets.
const fn runs_of<const N: usize>(offsets: &[u16]) -> [(u8, u8); N] {
    let mut runs = [(0u8, 0u8); N];
    let (mut k, mut p) = (0, 0);
    while p < offsets.len() {
        let len = run_len(offsets, p);
        runs[k] = (p as u8, len as u8);
        p += len;
        k += 1;
    }
    assert!(k == N);
    runs
}

/// Q4_K's runs: `d`, `dmin` (2 bytes each), then 35 dwords of scales and codes.
const Q4_K_RUNS: [(u8, u8); count_runs(&Q4_K_OFFSETS[0])] = runs_of(&Q4_K_OFFSETS[0]);
/// Q6_K's runs: 48 dwords of codes, 16 scale bytes, `d`.
const Q6_K_RUNS: [(u8, u8); count_runs(&Q6_K_OFFSETS[0])] = runs_of(&Q6_K_OFFSETS[0]);

/// One interleaved type's permutation: block and column sizes, and where each byte of each
/// group row's block goes in a column.
struct Layout {
    /// Bytes of one block of the base type.
    block: usize,
    /// Bytes of one column (`rows × block`).
    column: usize,
    /// `offsets[r × block + p]`: the column offset of byte `p` of row `r`'s block.
    offsets: &'static [u16],
    /// The runs `(p, len)` of a block's bytes that stay together in the column (fields of
    /// 1, 2 or 4 bytes), in block order.
    runs: &'static [(u8, u8)],
}

impl Layout {
    /// The layout of an interleaved `ty` (`None` for other types).
    fn of(ty: GgmlType) -> Option<Layout> {
        match ty {
            GgmlType::Q4_K_R16 => Some(Layout {
                block: Q4_K_BLOCK,
                column: Q4_K_R16_COLUMN,
                offsets: Q4_K_OFFSETS.as_flattened(),
                runs: &Q4_K_RUNS,
            }),
            GgmlType::Q6_K_R16 => Some(Layout {
                block: Q6_K_BLOCK,
                column: Q6_K_R16_COLUMN,
                offsets: Q6_K_OFFSETS.as_flattened(),
                runs: &Q6_K_RUNS,
            }),
            _ => None,
        }
    }

    /// The column offsets of row `r`'s block bytes.
    fn row(&self, r: usize) -> &'static [u16] {
        &self.offsets[r * self.block..(r + 1) * self.block]
    }
}

/// Copies `len` (1, 2 or 4) bytes from `src[from..]` to `out[to..]`, as one move of a fixed
/// size (a run of [`Layout::runs`]).
#[inline(always)]
fn copy_run(out: &mut [u8], to: usize, src: &[u8], from: usize, len: usize) {
    match len {
        4 => out[to..to + 4].copy_from_slice(&src[from..from + 4]),
        2 => out[to..to + 2].copy_from_slice(&src[from..from + 2]),
        _ => out[to] = src[from],
    }
}

/// Checks that `bytes` holds whole groups of `ty` rows of `row_bytes` bytes (whole blocks);
/// returns the rows per group.
fn check(ty: GgmlType, bytes: usize, row_bytes: usize) -> Result<usize, FormatError> {
    let Some((_, group_rows)) = ty.interleaved() else {
        return Err(FormatError::Unsupported(ty));
    };
    let group = group_rows * row_bytes;
    if row_bytes == 0 || !row_bytes.is_multiple_of(ty.block_bytes()) || !bytes.is_multiple_of(group)
    {
        return Err(FormatError::PartialGroup {
            ty,
            group_rows,
            row_bytes,
            bytes,
        });
    }
    Ok(group_rows)
}

/// Interleaves plain rows into `ty`'s layout: `plain` holds `k × 16` rows of the base type
/// (`row_bytes` each, row after row); `out` (the same length) receives the `k` groups.
/// (Q8_0_R16 also adds its code bias, Q5_0_R16 permutes the bits of `qh`, see the module
/// docs.)
pub fn interleave(
    ty: GgmlType,
    plain: &[u8],
    row_bytes: usize,
    out: &mut [u8],
) -> Result<(), FormatError> {
    use block_pairs::interleave as pairs;
    match ty {
        GgmlType::Q8_0_R16 => pairs(ty, plain, row_bytes, out, q8_0_r16::to_column),
        GgmlType::Q4_1_R16 => pairs(ty, plain, row_bytes, out, q4_1_r16::to_column),
        GgmlType::Q5_0_R16 => pairs(ty, plain, row_bytes, out, q5_0_r16::to_column),
        _ => permute(ty, plain, row_bytes, out, true),
    }
}

/// The inverse of [`interleave`]: `src` holds `k` groups of `ty`; `out` (the same length)
/// receives their `k × 16` rows in the base type's plain layout (for Q8_0_R16, with the code
/// bias taken off).
pub fn deinterleave(
    ty: GgmlType,
    src: &[u8],
    row_bytes: usize,
    out: &mut [u8],
) -> Result<(), FormatError> {
    use block_pairs::deinterleave as pairs;
    match ty {
        GgmlType::Q8_0_R16 => pairs(ty, src, row_bytes, out, q8_0_r16::from_column),
        GgmlType::Q4_1_R16 => pairs(ty, src, row_bytes, out, q4_1_r16::from_column),
        GgmlType::Q5_0_R16 => pairs(ty, src, row_bytes, out, q5_0_r16::from_column),
        _ => permute(ty, src, row_bytes, out, false),
    }
}

/// For each group row `r` and dword `k ≥ 1` of its block, the dword of the column it comes
/// from (dword 0 of a block is `d` and `dmin`, two separate halves): [`deinterleave`]'s fast
/// path moves whole dwords with this map.
const Q4_K_DWORD_SOURCES: [[u16; Q4_K_BLOCK / 4]; Q4_K_R16_ROWS] = {
    let mut t = [[0u16; Q4_K_BLOCK / 4]; Q4_K_R16_ROWS];
    let mut r = 0;
    while r < Q4_K_R16_ROWS {
        let mut k = 1;
        while k < Q4_K_BLOCK / 4 {
            t[r][k] = (q4_k_column_offset(4 * k, r) / 4) as u16;
            k += 1;
        }
        r += 1;
    }
    t
};

/// [`deinterleave`] on 4-byte-aligned buffers, by whole dwords: per column, each of the 16
/// rows' blocks is a fixed-size gather with the row's indices as constants (a const generic),
/// which the compiler unrolls without bounds checks (the prompt path de-interleaves every
/// weight row it multiplies). `src`, `out`: whole groups, `row_words` dwords per row.
fn deinterleave_q4_k_words(src: &[u32], row_words: usize, out: &mut [u32]) {
    const COLUMN_WORDS: usize = Q4_K_R16_COLUMN / 4;
    let group = Q4_K_R16_ROWS * row_words;
    let blocks = row_words / Q4_K_BLOCK_WORDS;
    for (g_src, g_out) in src.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        for (b, column) in g_src.chunks_exact(COLUMN_WORDS).take(blocks).enumerate() {
            let column: &[u32; COLUMN_WORDS] = column.try_into().unwrap();
            for (r, row) in g_out.chunks_exact_mut(row_words).enumerate() {
                let at = b * Q4_K_BLOCK_WORDS;
                let block: &mut [u32; Q4_K_BLOCK_WORDS] =
                    (&mut row[at..at + Q4_K_BLOCK_WORDS]).try_into().unwrap();
                macro_rules! by_row {
                    ($($r:literal)*) => {
                        match r {
                            $($r => gather_q4_k_block::<$r>(column, block),)*
                            _ => unreachable!("a group has 16 rows"),
                        }
                    };
                }
                by_row!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            }
        }
    }
}

/// Dwords per Q4_K block.
const Q4_K_BLOCK_WORDS: usize = Q4_K_BLOCK / 4;

/// Row `R`'s block of one Q4_K_R16 column, gathered dword by dword.
#[inline(always)]
fn gather_q4_k_block<const R: usize>(
    column: &[u32; Q4_K_R16_COLUMN / 4],
    block: &mut [u32; Q4_K_BLOCK_WORDS],
) {
    // d and dmin: the first 16 dwords hold 16 f16 `d` then 16 f16 `dmin`.
    let half = |i: usize| (column[i / 2] >> (16 * (i % 2))) & 0xFFFF;
    block[0] = half(R) | half(16 + R) << 16;
    for k in 1..Q4_K_BLOCK_WORDS {
        block[k] = column[Q4_K_DWORD_SOURCES[R][k] as usize];
    }
}

/// For each of the 48 code dwords of a Q6_K block (`ql`, then `qh`), the code register of
/// the column that holds it ([`q6_k_column_offset`]: row `r`'s copy at `64 × register + 4r`).
const Q6_K_CODE_REGISTERS: [u8; 48] = {
    let mut t = [0u8; 48];
    let mut k = 0;
    while k < 48 {
        t[k] = (q6_k_column_offset(4 * k, 0) / 64) as u8;
        k += 1;
    }
    t
};

/// [`deinterleave`] for Q6_K_R16 by fixed-size moves: per block and row, 48 dwords of codes,
/// 16 scale bytes and `d` (the prompt path de-interleaves every weight row it multiplies;
/// this is ~2× the run-table loop). `src`, `out`: whole groups of rows of `row_bytes`.
fn deinterleave_q6_k(src: &[u8], row_bytes: usize, out: &mut [u8]) {
    let group = Q6_K_R16_ROWS * row_bytes;
    for (g_src, g_out) in src.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        for (b, column) in g_src.chunks_exact(Q6_K_R16_COLUMN).enumerate() {
            let column: &[u8; Q6_K_R16_COLUMN] = column.try_into().expect("whole columns");
            for (r, row) in g_out.chunks_exact_mut(row_bytes).enumerate() {
                let block: &mut [u8; Q6_K_BLOCK] = (&mut row[b * Q6_K_BLOCK..][..Q6_K_BLOCK])
                    .try_into()
                    .expect("whole blocks");
                for (dword, &reg) in block.chunks_exact_mut(4).zip(&Q6_K_CODE_REGISTERS) {
                    let at = Q6_K_R16_OFF_CODES + 64 * reg as usize + 4 * r;
                    dword.copy_from_slice(&column[at..at + 4]);
                }
                for (s, scale) in block[192..208].iter_mut().enumerate() {
                    *scale = column[Q6_K_R16_OFF_SCALES + 16 * s + r];
                }
                let d = Q6_K_R16_OFF_D + 2 * r;
                block[208..210].copy_from_slice(&column[d..d + 2]);
            }
        }
    }
}

/// Moves every byte between the plain and the interleaved layout (`to_interleaved` says
/// which way).
fn permute(
    ty: GgmlType,
    src: &[u8],
    row_bytes: usize,
    out: &mut [u8],
    to_interleaved: bool,
) -> Result<(), FormatError> {
    let group_rows = check(ty, src.len(), row_bytes)?;
    if out.len() != src.len() {
        return Err(FormatError::LengthMismatch {
            left: src.len(),
            right: out.len(),
        });
    }
    if ty == GgmlType::Q4_K_R16 && !to_interleaved && cfg!(target_endian = "little") {
        if let (Ok(src), Ok(out)) = (
            bytemuck::try_cast_slice::<u8, u32>(src),
            bytemuck::try_cast_slice_mut::<u8, u32>(out),
        ) {
            deinterleave_q4_k_words(src, row_bytes / 4, out);
            return Ok(());
        }
    }
    if ty == GgmlType::Q6_K_R16 && !to_interleaved {
        deinterleave_q6_k(src, row_bytes, out);
        return Ok(());
    }
    let layout = Layout::of(ty).ok_or(FormatError::Unsupported(ty))?;
    let blocks = row_bytes / layout.block;
    let group = group_rows * row_bytes;
    // Fields move as runs of 4 bytes (codes, Q4_K's scales), 2 (f16) or 1 (Q6_K's scales):
    // 37 moves per Q4_K block and row, 65 per Q6_K block, instead of 144 or 210 byte moves
    // (the prompt path de-interleaves every weight row it multiplies).
    for (g_src, g_out) in src.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        for r in 0..group_rows {
            let offsets = layout.row(r);
            for b in 0..blocks {
                let column = b * layout.column;
                let block = r * row_bytes + b * layout.block;
                for &(p, len) in layout.runs {
                    let (p, len) = (p as usize, len as usize);
                    let o = offsets[p] as usize;
                    if to_interleaved {
                        copy_run(g_out, column + o, g_src, block + p, len);
                    } else {
                        copy_run(g_out, block + p, g_src, column + o, len);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Copies row `r` of an interleaved matrix `src` (whole groups of `ty`, rows of
/// `row_bytes`) into `out` (`row_bytes`) in the base type's layout: an embedding lookup.
pub fn extract_row(
    ty: GgmlType,
    src: &[u8],
    row_bytes: usize,
    r: usize,
    out: &mut [u8],
) -> Result<(), FormatError> {
    let group_rows = check(ty, src.len(), row_bytes)?;
    let group = group_rows * row_bytes;
    if r >= src.len() / row_bytes {
        return Err(FormatError::RowOutOfRange {
            row: r,
            rows: src.len() / row_bytes,
        });
    }
    if out.len() != row_bytes {
        return Err(FormatError::LengthMismatch {
            left: row_bytes,
            right: out.len(),
        });
    }
    let g = &src[(r / group_rows) * group..][..group];
    use block_pairs::extract_row as pairs;
    let gr = r % group_rows;
    match ty {
        GgmlType::Q8_0_R16 => pairs(g, gr, out, q8_0_r16::from_column),
        GgmlType::Q4_1_R16 => pairs(g, gr, out, q4_1_r16::from_column),
        GgmlType::Q5_0_R16 => pairs(g, gr, out, q5_0_r16::from_column),
        _ => return extract_row_by_layout(ty, g, gr, out),
    }
    Ok(())
}

/// [`extract_row`] for the k-quant layouts: row `r` of the group `g`, byte by byte through
/// the layout's permutation.
fn extract_row_by_layout(
    ty: GgmlType,
    g: &[u8],
    r: usize,
    out: &mut [u8],
) -> Result<(), FormatError> {
    let layout = Layout::of(ty).ok_or(FormatError::Unsupported(ty))?;
    let offsets = layout.row(r);
    for (b, block) in out.chunks_exact_mut(layout.block).enumerate() {
        let column = &g[b * layout.column..][..layout.column];
        for (byte, &o) in block.iter_mut().zip(offsets) {
            *byte = column[o as usize];
        }
    }
    Ok(())
}

/// The scalar reference of a token-generation product with interleaved weights:
/// `out[i] = row i · act` for the `out.len()` rows (whole groups) in `w`, each the base
/// type's reference `vec_dot` of the de-interleaved row. Every interleaved kernel is tested
/// against it.
pub fn gemv_reference(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    act: &[u8],
    out: &mut [f32],
) -> Result<(), FormatError> {
    let (base, _) = ty.interleaved().ok_or(FormatError::Unsupported(ty))?;
    let mut plain = vec![0u8; w.len()];
    deinterleave(ty, w, row_bytes, &mut plain)?;
    if out.len() * row_bytes != w.len() {
        return Err(FormatError::LengthMismatch {
            left: w.len() / row_bytes.max(1),
            right: out.len(),
        });
    }
    let n = row_bytes / base.block_bytes() * base.block_elems();
    for (o, row) in out.iter_mut().zip(plain.chunks_exact(row_bytes)) {
        *o = super::vec_dot_row(base, n, row, act)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: [GgmlType; 2] = [GgmlType::Q4_K_R16, GgmlType::Q6_K_R16];

    #[test]
    fn fields_move_as_runs_of_1_2_and_4_bytes() {
        assert_eq!(Q4_K_RUNS.len(), 2 + 35);
        assert_eq!(Q6_K_RUNS.len(), 48 + 16 + 1);
        for ty in TYPES {
            let layout = Layout::of(ty).unwrap();
            let runs: Vec<(usize, usize)> = layout
                .runs
                .iter()
                .map(|&(p, len)| (p as usize, len as usize))
                .collect();
            assert_eq!(runs.iter().map(|r| r.1).sum::<usize>(), layout.block);
            for r in 0..16 {
                let offsets = layout.row(r);
                for &(start, len) in &runs {
                    assert!(matches!(len, 1 | 2 | 4), "{ty}: run of {len}");
                    assert_eq!(start % len, 0, "{ty}: run at {start}");
                    for p in start..start + len {
                        assert_eq!(
                            offsets[p] as usize,
                            offsets[start] as usize + p - start,
                            "{ty}: row {r} byte {p}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_column_map_is_a_permutation() {
        for ty in TYPES {
            let layout = Layout::of(ty).unwrap();
            assert_eq!(layout.column, 16 * layout.block);
            assert_eq!(layout.block, ty.block_bytes());
            let mut seen = vec![false; layout.column];
            for &o in layout.offsets {
                assert!(!seen[o as usize], "{ty}: offset {o} hit twice");
                seen[o as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "{ty}");
        }
    }

    #[test]
    fn the_q6_k_column_is_in_the_documented_order() {
        let at = |p: usize, r: usize| Q6_K_OFFSETS[r][p] as usize;
        // Step (h 1, t 2): ql[64 + 8], ql[64 + 32 + 8], qh[32 + 8] of row 5.
        assert_eq!(at(64 + 8, 5), 64 * (3 * 10) + 20);
        assert_eq!(at(64 + 32 + 8, 5), 64 * (3 * 10 + 1) + 20);
        assert_eq!(at(128 + 32 + 8, 5), 64 * (3 * 10 + 2) + 20);
        // The last code register, the scales, d.
        assert_eq!(at(191, 15), 64 * 47 + 63);
        assert_eq!(at(192 + 13, 3), 3072 + 16 * 13 + 3);
        assert_eq!(at(208, 7), 3328 + 14);
        assert_eq!(at(209, 15), Q6_K_R16_COLUMN - 1);
        // Code registers and the scales start on 64-byte lines of the column.
        assert_eq!(Q6_K_R16_OFF_CODES % 64 + Q6_K_R16_OFF_SCALES % 64, 0);
    }

    #[test]
    fn interleave_round_trips_and_rows_extract() {
        for ty in TYPES {
            let block = ty.block_bytes();
            let row_bytes = 3 * block;
            let plain: Vec<u8> = (0..32 * row_bytes)
                .map(|i| (i * 7 + i / 251) as u8)
                .collect();
            let mut inter = vec![0u8; plain.len()];
            interleave(ty, &plain, row_bytes, &mut inter).unwrap();
            assert_ne!(inter, plain);
            let mut back = vec![0u8; plain.len()];
            deinterleave(ty, &inter, row_bytes, &mut back).unwrap();
            assert_eq!(back, plain, "{ty}");
            // The run-table path too for Q4_K_R16 (a source that is not 4-byte aligned).
            let mut shifted = vec![0u8; plain.len() + 1];
            let off = usize::from(shifted.as_ptr().align_offset(4) == 0);
            let src = &mut shifted[off..off + plain.len()];
            src.copy_from_slice(&inter);
            let mut back = vec![0u8; plain.len()];
            deinterleave(ty, src, row_bytes, &mut back).unwrap();
            assert_eq!(back, plain, "{ty}");
            let mut row = vec![0u8; row_bytes];
            for r in 0..32 {
                extract_row(ty, &inter, row_bytes, r, &mut row).unwrap();
                assert_eq!(row, plain[r * row_bytes..][..row_bytes], "{ty} row {r}");
            }
        }
        // d of row 5, block 1 sits in column 1 at bytes 10..12 (Q4_K_R16), 3338..3340
        // (Q6_K_R16).
        for (ty, at) in [(GgmlType::Q4_K_R16, 10), (GgmlType::Q6_K_R16, 3338)] {
            let (block, row_bytes) = (ty.block_bytes(), 3 * ty.block_bytes());
            let plain: Vec<u8> = (0..16 * row_bytes)
                .map(|i| (i * 13 + i / 7) as u8)
                .collect();
            let mut inter = vec![0u8; plain.len()];
            interleave(ty, &plain, row_bytes, &mut inter).unwrap();
            let d = if ty == GgmlType::Q4_K_R16 { 0 } else { 208 };
            assert_eq!(
                inter[16 * block + at..][..2],
                plain[5 * row_bytes + block + d..][..2],
                "{ty}"
            );
        }
    }

    #[test]
    fn partial_groups_and_plain_types_are_refused() {
        for (ty, base) in [
            (GgmlType::Q4_K_R16, GgmlType::Q4_K),
            (GgmlType::Q6_K_R16, GgmlType::Q6_K),
        ] {
            let row_bytes = ty.block_bytes();
            let mut out = vec![0u8; 15 * row_bytes];
            let src = vec![0u8; 15 * row_bytes];
            assert!(interleave(ty, &src, row_bytes, &mut out).is_err());
            assert!(deinterleave(ty, &src, row_bytes, &mut out).is_err());
            let src = vec![0u8; 16 * row_bytes];
            let mut out = vec![0u8; 16 * row_bytes];
            assert!(interleave(base, &src, row_bytes, &mut out).is_err());
            assert!(interleave(ty, &src, row_bytes + 1, &mut out).is_err());
            let mut row = vec![0u8; row_bytes];
            assert!(extract_row(ty, &src, row_bytes, 16, &mut row).is_err());
            assert!(extract_row(ty, &src, row_bytes, 15, &mut row).is_ok());
        }
    }
}

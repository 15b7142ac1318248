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
//! A 16-row-aligned range of rows `r0 .. r0 + 16k` is the contiguous byte range
//! `r0 × row_bytes .. (r0 + 16k) × row_bytes`, as for a plain matrix, so the matmul driver cuts
//! token generation's rows the same way for both (in multiples of 16). The paths without an
//! interleaved kernel (prompt processing, other ISAs) [`deinterleave`] a work item's rows
//! first and run the base type's kernels on them.

use grist_gguf::GgmlType;

use super::FormatError;

mod q8_0_r16;
pub use q8_0_r16::{Q8_0_R16_CODE_BIAS, Q8_0_R16_COLUMN, Q8_0_R16_OFF_CODES, Q8_0_R16_ROWS};

/// Rows per group of [`GgmlType::Q4_K_R16`].
pub const Q4_K_R16_ROWS: usize = 16;
/// Bytes of one super-block column of a Q4_K_R16 group (16 Q4_K blocks).
pub const Q4_K_R16_COLUMN: usize = Q4_K_R16_ROWS * Q4_K_BLOCK;
/// Bytes of one Q4_K block.
const Q4_K_BLOCK: usize = 144;

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
/// (Q8_0_R16 also adds its code bias, see the module docs.)
pub fn interleave(
    ty: GgmlType,
    plain: &[u8],
    row_bytes: usize,
    out: &mut [u8],
) -> Result<(), FormatError> {
    if ty == GgmlType::Q8_0_R16 {
        return q8_0_r16::interleave(plain, row_bytes, out);
    }
    permute(ty, plain, row_bytes, out, true)
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
    if ty == GgmlType::Q8_0_R16 {
        return q8_0_r16::deinterleave(src, row_bytes, out);
    }
    permute(ty, src, row_bytes, out, false)
}

/// For each dword `w` of a column (past the 16 dwords of `d` and `dmin`), the group row and
/// the dword of that row's block it comes from: [`deinterleave`]'s fast path moves whole
/// dwords with this map.
const Q4_K_DWORD_SOURCES: [(u8, u8); Q4_K_R16_COLUMN / 4] = {
    let mut t = [(0u8, 0u8); Q4_K_R16_COLUMN / 4];
    let mut r = 0;
    while r < Q4_K_R16_ROWS {
        let mut k = 1; // dword 0 of a block is d and dmin, two separate u16 moves
        while k < Q4_K_BLOCK / 4 {
            t[q4_k_column_offset(4 * k, r) / 4] = (r as u8, k as u8);
            k += 1;
        }
        r += 1;
    }
    t
};

/// [`deinterleave`] on 4-byte-aligned buffers, by whole dwords (~8× the byte-wise
/// permutation: the prompt path de-interleaves every weight row it multiplies).
/// `src`, `out`: whole groups, `row_words` dwords per row.
fn deinterleave_q4_k_words(src: &[u32], row_words: usize, out: &mut [u32]) {
    const BLOCK_WORDS: usize = Q4_K_BLOCK / 4;
    const COLUMN_WORDS: usize = Q4_K_R16_COLUMN / 4;
    let group = Q4_K_R16_ROWS * row_words;
    let blocks = row_words / BLOCK_WORDS;
    for (g_src, g_out) in src.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        for (b, column) in g_src.chunks_exact(COLUMN_WORDS).take(blocks).enumerate() {
            // d and dmin: the first 16 dwords hold 16 f16 `d` then 16 f16 `dmin`.
            for r in 0..Q4_K_R16_ROWS {
                let half = |i: usize| (column[i / 2] >> (16 * (i % 2))) & 0xFFFF;
                g_out[r * row_words + b * BLOCK_WORDS] = half(r) | half(16 + r) << 16;
            }
            for (w, &(r, k)) in Q4_K_DWORD_SOURCES.iter().enumerate().skip(16) {
                g_out[r as usize * row_words + b * BLOCK_WORDS + k as usize] = column[w];
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
    if !to_interleaved && cfg!(target_endian = "little") {
        if let (Ok(src), Ok(out)) = (
            bytemuck::try_cast_slice::<u8, u32>(src),
            bytemuck::try_cast_slice_mut::<u8, u32>(out),
        ) {
            deinterleave_q4_k_words(src, row_bytes / 4, out);
            return Ok(());
        }
    }
    let blocks = row_bytes / Q4_K_BLOCK;
    let group = group_rows * row_bytes;
    // Every field is a run of at least 2 bytes (d, dmin) or 4 (scales, codes) that moves as
    // a whole: 2 + 35 moves per block and row instead of 144 byte moves (the prompt path
    // de-interleaves every weight row it multiplies).
    let runs = |r: usize| {
        (0..2)
            .map(move |k| (2 * k, Q4_K_OFFSETS[r][2 * k] as usize, 2))
            .chain((1..Q4_K_BLOCK / 4).map(move |k| (4 * k, Q4_K_OFFSETS[r][4 * k] as usize, 4)))
    };
    for (g_src, g_out) in src.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        for r in 0..group_rows {
            for b in 0..blocks {
                let column = b * Q4_K_R16_COLUMN;
                let block = r * row_bytes + b * Q4_K_BLOCK;
                for (p, o, len) in runs(r) {
                    let (from, to) = if to_interleaved {
                        (block + p, column + o)
                    } else {
                        (column + o, block + p)
                    };
                    g_out[to..to + len].copy_from_slice(&g_src[from..from + len]);
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
    if ty == GgmlType::Q8_0_R16 {
        q8_0_r16::extract_row(g, r % group_rows, out);
        return Ok(());
    }
    let offsets = &Q4_K_OFFSETS[r % group_rows];
    for (b, block) in out.chunks_exact_mut(Q4_K_BLOCK).enumerate() {
        let column = &g[b * Q4_K_R16_COLUMN..][..Q4_K_R16_COLUMN];
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

    #[test]
    fn fields_move_as_runs_of_2_and_4_bytes() {
        for r in 0..Q4_K_R16_ROWS {
            for p in 0..Q4_K_BLOCK {
                let run = if p < 4 { 2 } else { 4 };
                let start = p - p % run;
                assert_eq!(
                    Q4_K_OFFSETS[r][p] as usize,
                    Q4_K_OFFSETS[r][start] as usize + p % run,
                    "row {r} byte {p}"
                );
            }
        }
    }

    #[test]
    fn the_column_map_is_a_permutation() {
        let mut seen = [false; Q4_K_R16_COLUMN];
        for r in 0..Q4_K_R16_ROWS {
            for p in 0..Q4_K_BLOCK {
                let o = Q4_K_OFFSETS[r][p] as usize;
                assert!(!seen[o], "offset {o} hit twice");
                seen[o] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn interleave_round_trips_and_rows_extract() {
        let row_bytes = 3 * Q4_K_BLOCK;
        let plain: Vec<u8> = (0..32 * row_bytes)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let mut inter = vec![0u8; plain.len()];
        interleave(GgmlType::Q4_K_R16, &plain, row_bytes, &mut inter).unwrap();
        assert_ne!(inter, plain);
        let mut back = vec![0u8; plain.len()];
        deinterleave(GgmlType::Q4_K_R16, &inter, row_bytes, &mut back).unwrap();
        assert_eq!(back, plain);
        // The byte-wise path too (a source that is not 4-byte aligned).
        let mut shifted = vec![0u8; plain.len() + 1];
        let off = usize::from(shifted.as_ptr().align_offset(4) == 0);
        let src = &mut shifted[off..off + plain.len()];
        src.copy_from_slice(&inter);
        let mut back = vec![0u8; plain.len()];
        deinterleave(GgmlType::Q4_K_R16, src, row_bytes, &mut back).unwrap();
        assert_eq!(back, plain);
        let mut row = vec![0u8; row_bytes];
        for r in 0..32 {
            extract_row(GgmlType::Q4_K_R16, &inter, row_bytes, r, &mut row).unwrap();
            assert_eq!(row, plain[r * row_bytes..][..row_bytes], "row {r}");
        }
        // d of row 5, block 1 sits at column 1, bytes 10..12.
        assert_eq!(
            inter[Q4_K_R16_COLUMN + 10..Q4_K_R16_COLUMN + 12],
            plain[5 * row_bytes + Q4_K_BLOCK..][..2]
        );
    }

    #[test]
    fn partial_groups_and_plain_types_are_refused() {
        let row_bytes = Q4_K_BLOCK;
        let mut out = vec![0u8; 15 * row_bytes];
        let src = vec![0u8; 15 * row_bytes];
        assert!(interleave(GgmlType::Q4_K_R16, &src, row_bytes, &mut out).is_err());
        let src = vec![0u8; 16 * row_bytes];
        let mut out = vec![0u8; 16 * row_bytes];
        assert!(interleave(GgmlType::Q4_K, &src, row_bytes, &mut out).is_err());
        assert!(interleave(GgmlType::Q4_K_R16, &src, row_bytes + 1, &mut out).is_err());
        let mut row = vec![0u8; row_bytes];
        assert!(extract_row(GgmlType::Q4_K_R16, &src, row_bytes, 16, &mut row).is_err());
    }
}

//! [`GgmlType::Q4_1_R16`](grist_gguf::GgmlType::Q4_1_R16): 16 Q4_1 rows interleaved per column of two blocks (layout in the
//! parent module's docs). A pure permutation of the Q4_1 bytes: the nibbles are the unsigned
//! operand `vpdpbusd` wants as they are, so unlike Q8_0_R16 no bias is stored.

/// Rows per group of [`GgmlType::Q4_1_R16`](grist_gguf::GgmlType::Q4_1_R16).
pub const Q4_1_R16_ROWS: usize = 16;
/// Bytes of one column of a Q4_1_R16 group: two Q4_1 blocks (64 values) of 16 rows, 10 lines.
pub const Q4_1_R16_COLUMN: usize = Q4_1_R16_ROWS * 2 * Q4_1_BLOCK;
/// Byte offset of the 32 minimums `m` in a column (after the line of 32 scales `d`).
pub const Q4_1_R16_OFF_M: usize = 64;
/// Byte offset of the 8 code registers in a column (after the lines of `d` and `m`).
pub const Q4_1_R16_OFF_CODES: usize = 128;

/// Bytes of one Q4_1 block (`[d: f16][m: f16][qs: 16 B]`).
const Q4_1_BLOCK: usize = 20;
/// Code bytes of one Q4_1 block (two 4-bit codes each).
const CODES: usize = 16;

/// Column offset of the `d` of block `h` (0, 1) of the column, row `r`.
const fn d_offset(h: usize, r: usize) -> usize {
    32 * h + 2 * r
}

/// Column offset of the `m` of block `h` of the column, row `r`.
const fn m_offset(h: usize, r: usize) -> usize {
    Q4_1_R16_OFF_M + 32 * h + 2 * r
}

/// Column offset of code bytes `4t .. 4t + 4` (values `4t ..` in the low nibbles,
/// `16 + 4t ..` in the high ones) of block `h` of the column, row `r`: register `4h + t`.
const fn codes_offset(h: usize, t: usize, r: usize) -> usize {
    Q4_1_R16_OFF_CODES + 64 * (4 * h + t) + 4 * r
}

/// Writes row `r`'s 40 plain bytes (blocks `2c`, `2c + 1`) into its column.
#[inline(always)]
pub(super) fn to_column(pair: &[u8; 2 * Q4_1_BLOCK], r: usize, column: &mut [u8; Q4_1_R16_COLUMN]) {
    for (h, block) in pair.chunks_exact(Q4_1_BLOCK).enumerate() {
        column[d_offset(h, r)..][..2].copy_from_slice(&block[..2]);
        column[m_offset(h, r)..][..2].copy_from_slice(&block[2..4]);
        for t in 0..CODES / 4 {
            column[codes_offset(h, t, r)..][..4].copy_from_slice(&block[4 + 4 * t..][..4]);
        }
    }
}

/// Reads row `r`'s 40 plain bytes (blocks `2c`, `2c + 1`) out of its column: 4 `u16` and
/// 8 `u32` moves, whatever the alignment.
#[inline(always)]
pub(super) fn from_column(
    column: &[u8; Q4_1_R16_COLUMN],
    r: usize,
    pair: &mut [u8; 2 * Q4_1_BLOCK],
) {
    for (h, block) in pair.chunks_exact_mut(Q4_1_BLOCK).enumerate() {
        block[..2].copy_from_slice(&column[d_offset(h, r)..][..2]);
        block[2..4].copy_from_slice(&column[m_offset(h, r)..][..2]);
        for t in 0..CODES / 4 {
            block[4 + 4 * t..][..4].copy_from_slice(&column[codes_offset(h, t, r)..][..4]);
        }
    }
}

#[cfg(test)]
mod tests {
    use grist_gguf::GgmlType;

    use super::*;

    /// Where byte `p` of block `h` of row `r` lands in a column.
    fn offset(h: usize, p: usize, r: usize) -> usize {
        match p {
            0 | 1 => d_offset(h, r) + p,
            2 | 3 => m_offset(h, r) + p - 2,
            _ => codes_offset(h, (p - 4) / 4, r) + (p - 4) % 4,
        }
    }

    #[test]
    fn the_column_map_is_a_bijection_onto_10_lines() {
        assert_eq!(Q4_1_R16_COLUMN, 10 * 64);
        let mut seen = [false; Q4_1_R16_COLUMN];
        for r in 0..Q4_1_R16_ROWS {
            for h in 0..2 {
                for p in 0..Q4_1_BLOCK {
                    let o = offset(h, p, r);
                    assert!(!seen[o], "offset {o} hit twice");
                    seen[o] = true;
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
        // d in line 0, m in line 1, and every code register a whole line after them, in the
        // order (h, t) the kernel reads.
        assert_eq!((d_offset(1, 15), m_offset(0, 0)), (62, 64));
        assert_eq!(m_offset(1, 15), 126);
        for h in 0..2 {
            for t in 0..4 {
                assert_eq!(codes_offset(h, t, 0), 128 + 64 * (4 * h + t));
            }
        }
    }

    /// `rows` plain rows of `blocks` Q4_1 blocks whose bytes are all different-ish.
    fn plain(rows: usize, blocks: usize) -> Vec<u8> {
        (0..rows * blocks * Q4_1_BLOCK)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect()
    }

    #[test]
    fn bytes_land_where_the_docs_say() {
        let (blocks, rb) = (4, 4 * Q4_1_BLOCK);
        let p = plain(32, blocks);
        let mut inter = vec![0u8; p.len()];
        super::super::interleave(GgmlType::Q4_1_R16, &p, rb, &mut inter).unwrap();
        for g in 0..2 {
            for r in 0..16 {
                for b in 0..blocks {
                    let (c, h) = (b / 2, b % 2);
                    let column = &inter[g * 16 * rb + c * Q4_1_R16_COLUMN..][..Q4_1_R16_COLUMN];
                    let block = &p[(16 * g + r) * rb + b * Q4_1_BLOCK..][..Q4_1_BLOCK];
                    for (i, &byte) in block.iter().enumerate() {
                        assert_eq!(column[offset(h, i, r)], byte, "row {r} block {b} {i}");
                    }
                }
            }
        }
        // Spelled out once: group 1, row 5, block 3 (column 1, h = 1): its m is at
        // 64 + 32 + 10 of column 1, its code bytes 8..12 (t = 2) at 128 + 64·6 + 20.
        let block = &p[21 * rb + 3 * Q4_1_BLOCK..][..Q4_1_BLOCK];
        let column = &inter[16 * rb + Q4_1_R16_COLUMN..][..Q4_1_R16_COLUMN];
        assert_eq!(column[106..108], block[2..4]);
        assert_eq!(column[128 + 384 + 20..][..4], block[12..16]);
    }
}

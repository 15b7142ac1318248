//! [`GgmlType::Q5_0_R16`](grist_gguf::GgmlType::Q5_0_R16): 16 Q5_0 rows interleaved per column of two blocks (layout in the
//! parent module's docs). The scales and code nibbles only move; each block's 32 high bits
//! `qh` are also **permuted within their dword** ([`pack_high_bits`]) so that the kernel
//! gets the fifth bit of every code byte of a code register with one shift and one mask.
//! The permutation is a bijection of the 32 bits, so [`deinterleave`](super::deinterleave) and [`extract_row`](super::extract_row)
//! restore `qh` exactly.

/// Rows per group of [`GgmlType::Q5_0_R16`](grist_gguf::GgmlType::Q5_0_R16).
pub const Q5_0_R16_ROWS: usize = 16;
/// Bytes of one column of a Q5_0_R16 group: two Q5_0 blocks (64 values) of 16 rows, 11 lines.
pub const Q5_0_R16_COLUMN: usize = Q5_0_R16_ROWS * 2 * Q5_0_BLOCK;
/// Byte offset of the two registers of high bits in a column (after the line of `d`s).
pub const Q5_0_R16_OFF_HIGH: usize = 64;
/// Byte offset of the 8 code registers in a column (after the high bits).
pub const Q5_0_R16_OFF_CODES: usize = 192;

/// Bytes of one Q5_0 block (`[d: f16][qh: u32 LE][qs: 16 B]`).
const Q5_0_BLOCK: usize = 22;
/// Code dwords (`qs`) of one Q5_0 block.
const CODE_WORDS: usize = 4;

/// Column offset of the `d` of block `h` (0, 1) of the column, row `r`.
const fn d_offset(h: usize, r: usize) -> usize {
    32 * h + 2 * r
}

/// Column offset of the (permuted) high bits of block `h` of the column, row `r`.
const fn high_offset(h: usize, r: usize) -> usize {
    Q5_0_R16_OFF_HIGH + 64 * h + 4 * r
}

/// Column offset of `qs[4t .. 4t + 4]` of block `h` of the column, row `r`.
const fn codes_offset(h: usize, t: usize, r: usize) -> usize {
    Q5_0_R16_OFF_CODES + 256 * h + 64 * t + 4 * r
}

/// Bits `0, 4, 8, …, 28` of `x` gathered into bits `0..8`.
const fn gather_every_fourth_bit(x: u32) -> u32 {
    let x = x & 0x1111_1111;
    let x = (x | x >> 3) & 0x0303_0303;
    let x = (x | x >> 6) & 0x000F_000F;
    (x | x >> 12) & 0xFF
}

/// The inverse of [`gather_every_fourth_bit`]: bits `0..8` of `x` spread to bits `0, 4, …, 28`.
const fn spread_to_every_fourth_bit(x: u32) -> u32 {
    let x = x & 0xFF;
    let x = (x | x << 12) & 0x000F_000F;
    let x = (x | x << 6) & 0x0303_0303;
    (x | x << 3) & 0x1111_1111
}

/// A block's `qh` (bit `v` = bit 4 of code `v`) as the column stores it: bit `4u + j` of
/// `qh` moves to bit `8j + u`, i.e. byte `j` of the stored dword holds in bit `u` the high
/// bit of value `4u + j`, the `j`-th value of code register `u` (the low nibbles of
/// `qs[4u .. 4u + 4]` for `u < 4`, the high nibbles of `qs[4(u − 4) ..]` for `u ≥ 4`).
pub(crate) const fn pack_high_bits(qh: u32) -> u32 {
    let mut out = 0;
    let mut j = 0;
    while j < 4 {
        out |= gather_every_fourth_bit(qh >> j) << (8 * j);
        j += 1;
    }
    out
}

/// The inverse of [`pack_high_bits`].
pub(crate) const fn unpack_high_bits(stored: u32) -> u32 {
    let mut qh = 0;
    let mut j = 0;
    while j < 4 {
        qh |= spread_to_every_fourth_bit(stored >> (8 * j)) << j;
        j += 1;
    }
    qh
}

/// Reads 4 bytes at `o`.
#[inline(always)]
fn word(bytes: &[u8], o: usize) -> [u8; 4] {
    bytes[o..o + 4].try_into().unwrap()
}

/// Writes row `r`'s 44 plain bytes (blocks `2c`, `2c + 1`) into its column, the high bits
/// through [`pack_high_bits`].
#[inline(always)]
pub(super) fn to_column(pair: &[u8; 2 * Q5_0_BLOCK], r: usize, column: &mut [u8; Q5_0_R16_COLUMN]) {
    for (h, block) in pair.chunks_exact(Q5_0_BLOCK).enumerate() {
        column[d_offset(h, r)..][..2].copy_from_slice(&block[..2]);
        let high = pack_high_bits(u32::from_le_bytes(word(block, 2)));
        column[high_offset(h, r)..][..4].copy_from_slice(&high.to_le_bytes());
        for t in 0..CODE_WORDS {
            column[codes_offset(h, t, r)..][..4].copy_from_slice(&word(block, 6 + 4 * t));
        }
    }
}

/// Reads row `r`'s 44 plain bytes (blocks `2c`, `2c + 1`) out of its column: 2 `u16` and
/// 10 `u32` moves, two of them through [`unpack_high_bits`], whatever the alignment.
#[inline(always)]
pub(super) fn from_column(
    column: &[u8; Q5_0_R16_COLUMN],
    r: usize,
    pair: &mut [u8; 2 * Q5_0_BLOCK],
) {
    for (h, block) in pair.chunks_exact_mut(Q5_0_BLOCK).enumerate() {
        block[..2].copy_from_slice(&column[d_offset(h, r)..][..2]);
        let qh = unpack_high_bits(u32::from_le_bytes(word(column, high_offset(h, r))));
        block[2..6].copy_from_slice(&qh.to_le_bytes());
        for t in 0..CODE_WORDS {
            block[6 + 4 * t..][..4].copy_from_slice(&word(column, codes_offset(h, t, r)));
        }
    }
}

#[cfg(test)]
mod tests {
    use grist_gguf::GgmlType;

    use super::*;

    /// Where byte `p` of block `h` of row `r` lands in a column (`qh`'s four bytes as a
    /// whole: its bits are permuted within the dword).
    fn offset(h: usize, p: usize, r: usize) -> usize {
        match p {
            0..2 => d_offset(h, r) + p,
            2..6 => high_offset(h, r) + p - 2,
            _ => codes_offset(h, (p - 6) / 4, r) + (p - 6) % 4,
        }
    }

    #[test]
    fn the_column_map_is_a_bijection_onto_11_lines() {
        assert_eq!(Q5_0_R16_COLUMN, 11 * 64);
        let mut seen = [false; Q5_0_R16_COLUMN];
        for r in 0..Q5_0_R16_ROWS {
            for h in 0..2 {
                for p in 0..Q5_0_BLOCK {
                    let o = offset(h, p, r);
                    assert!(!seen[o], "offset {o} hit twice");
                    seen[o] = true;
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
        // Every register of high bits and codes starts a 64-byte line of the column.
        for h in 0..2 {
            assert_eq!(high_offset(h, 0) % 64, 0);
            for t in 0..CODE_WORDS {
                assert_eq!(codes_offset(h, t, 0) % 64, 0);
            }
        }
    }

    #[test]
    fn the_high_bit_permutation_is_the_documented_bijection() {
        for v in 0..32 {
            let (u, j) = (v / 4, v % 4);
            assert_eq!(pack_high_bits(1 << v), 1 << (8 * j + u), "bit {v}");
            assert_eq!(unpack_high_bits(1 << (8 * j + u)), 1 << v, "bit {v}");
        }
        let mut x = 0x9E37_79B9u32;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            assert_eq!(unpack_high_bits(pack_high_bits(x)), x);
            assert_eq!(pack_high_bits(x).count_ones(), x.count_ones());
        }
        // What the kernel relies on: for code register u, `(stored << (4 − u)) & 0x10101010`
        // (`>> (u − 4)` for u > 4) is bit 4 of each of the register's four codes.
        let qh = 0xA5C3_0F69u32;
        let stored = pack_high_bits(qh);
        for u in 0..8 {
            let moved = if u <= 4 {
                stored << (4 - u)
            } else {
                stored >> (u - 4)
            };
            for j in 0..4 {
                let want = (qh >> (4 * u + j)) & 1;
                assert_eq!((moved >> (8 * j + 4)) & 1, want, "register {u} byte {j}");
            }
        }
    }

    /// `rows` plain rows of `blocks` Q5_0 blocks whose bytes are all different-ish.
    fn plain(rows: usize, blocks: usize) -> Vec<u8> {
        (0..rows * blocks * Q5_0_BLOCK)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect()
    }

    #[test]
    fn bytes_land_where_the_docs_say() {
        let (blocks, rb) = (4, 4 * Q5_0_BLOCK);
        let p = plain(32, blocks);
        let mut inter = vec![0u8; p.len()];
        super::super::interleave(GgmlType::Q5_0_R16, &p, rb, &mut inter).unwrap();
        for g in 0..2 {
            for r in 0..16 {
                for b in 0..blocks {
                    let (c, h) = (b / 2, b % 2);
                    let column = &inter[g * 16 * rb + c * Q5_0_R16_COLUMN..][..Q5_0_R16_COLUMN];
                    let block = &p[(16 * g + r) * rb + b * Q5_0_BLOCK..][..Q5_0_BLOCK];
                    for (i, &byte) in block.iter().enumerate() {
                        if !(2..6).contains(&i) {
                            assert_eq!(column[offset(h, i, r)], byte, "row {r} block {b} {i}");
                        }
                    }
                    let qh = u32::from_le_bytes(word(block, 2));
                    let stored = u32::from_le_bytes(word(column, high_offset(h, r)));
                    assert_eq!(stored, pack_high_bits(qh), "row {r} block {b} qh");
                }
            }
        }
        // d of row 5, block 3 (column 1, second block) at 32 + 10; its qs[4..8] in code
        // register (h 1, t 1) at 192 + 256 + 64 + 20.
        let row5 = &p[5 * rb + 3 * Q5_0_BLOCK..][..Q5_0_BLOCK];
        let column1 = &inter[Q5_0_R16_COLUMN..][..Q5_0_R16_COLUMN];
        assert_eq!(column1[42..44], row5[..2]);
        assert_eq!(column1[192 + 256 + 64 + 20..][..4], row5[10..14]);
    }
}

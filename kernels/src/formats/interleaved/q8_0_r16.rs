//! [`GgmlType::Q8_0_R16`](grist_gguf::GgmlType::Q8_0_R16): 16 Q8_0 rows interleaved per column of two blocks (layout in the
//! parent module's docs). Unlike the k-quant layouts this is not a pure permutation: the
//! codes are stored `+ 128` (`xor 0x80`, i.e. as unsigned bytes), which [`interleave`](super::interleave) applies
//! and [`deinterleave`](super::deinterleave) / [`extract_row`](super::extract_row) undo, so the kernel's `vpdpbusd` takes them as its
//! unsigned operand as they are.

/// Rows per group of [`GgmlType::Q8_0_R16`](grist_gguf::GgmlType::Q8_0_R16).
pub const Q8_0_R16_ROWS: usize = 16;
/// Bytes of one column of a Q8_0_R16 group: two Q8_0 blocks (64 values) of 16 rows, 17 lines.
pub const Q8_0_R16_COLUMN: usize = Q8_0_R16_ROWS * 2 * Q8_0_BLOCK;
/// Byte offset of the 16 code registers in a column (after the two lines' half of `d`s).
pub const Q8_0_R16_OFF_CODES: usize = 64;
/// What is added to (xor-ed into) every stored code byte: `q + 128` is `q ^ 0x80`.
pub const Q8_0_R16_CODE_BIAS: u8 = 0x80;

/// Bytes of one Q8_0 block (`[d: f16][qs: 32 × i8]`).
const Q8_0_BLOCK: usize = 34;
/// Code bytes of one Q8_0 block.
const CODES: usize = 32;
/// [`Q8_0_R16_CODE_BIAS`] in every byte of a dword.
const BIAS4: u32 = u32::from_ne_bytes([Q8_0_R16_CODE_BIAS; 4]);

/// Column offset of the `d` of block `h` (0, 1) of the column, row `r`.
const fn d_offset(h: usize, r: usize) -> usize {
    32 * h + 2 * r
}

/// Column offset of codes `4t .. 4t + 4` of block `h` of the column, row `r`.
const fn codes_offset(h: usize, t: usize, r: usize) -> usize {
    Q8_0_R16_OFF_CODES + 512 * h + 64 * t + 4 * r
}

/// Reads 4 bytes at `o`.
#[inline(always)]
fn word(bytes: &[u8], o: usize) -> [u8; 4] {
    bytes[o..o + 4].try_into().unwrap()
}

/// Writes row `r`'s 68 plain bytes (blocks `2c`, `2c + 1`) into its column, the codes biased.
#[inline(always)]
pub(super) fn to_column(pair: &[u8; 2 * Q8_0_BLOCK], r: usize, column: &mut [u8; Q8_0_R16_COLUMN]) {
    for (h, block) in pair.chunks_exact(Q8_0_BLOCK).enumerate() {
        column[d_offset(h, r)..][..2].copy_from_slice(&block[..2]);
        for t in 0..CODES / 4 {
            let q = u32::from_ne_bytes(word(block, 2 + 4 * t)) ^ BIAS4;
            column[codes_offset(h, t, r)..][..4].copy_from_slice(&q.to_ne_bytes());
        }
    }
}

/// Reads row `r`'s 68 plain bytes (blocks `2c`, `2c + 1`) out of its column, the bias taken
/// off: 2 `u16` and 16 `u32` moves with an xor, whatever the alignment.
#[inline(always)]
pub(super) fn from_column(
    column: &[u8; Q8_0_R16_COLUMN],
    r: usize,
    pair: &mut [u8; 2 * Q8_0_BLOCK],
) {
    for (h, block) in pair.chunks_exact_mut(Q8_0_BLOCK).enumerate() {
        block[..2].copy_from_slice(&column[d_offset(h, r)..][..2]);
        for t in 0..CODES / 4 {
            let q = u32::from_ne_bytes(word(column, codes_offset(h, t, r))) ^ BIAS4;
            block[2 + 4 * t..][..4].copy_from_slice(&q.to_ne_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use grist_gguf::GgmlType;

    use super::*;

    /// Where byte `p` of block `h` of row `r` lands in a column.
    fn offset(h: usize, p: usize, r: usize) -> usize {
        if p < 2 {
            d_offset(h, r) + p
        } else {
            codes_offset(h, (p - 2) / 4, r) + (p - 2) % 4
        }
    }

    #[test]
    fn the_column_map_is_a_bijection_onto_17_lines() {
        assert_eq!(Q8_0_R16_COLUMN, 17 * 64);
        let mut seen = [false; Q8_0_R16_COLUMN];
        for r in 0..Q8_0_R16_ROWS {
            for h in 0..2 {
                for p in 0..Q8_0_BLOCK {
                    let o = offset(h, p, r);
                    assert!(!seen[o], "offset {o} hit twice");
                    seen[o] = true;
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
        // Every code register starts a 64-byte line of the column.
        for h in 0..2 {
            for t in 0..8 {
                assert_eq!(codes_offset(h, t, 0) % 64, 0);
            }
        }
    }

    /// `rows` plain rows of `blocks` Q8_0 blocks whose bytes are all different-ish.
    fn plain(rows: usize, blocks: usize) -> Vec<u8> {
        (0..rows * blocks * Q8_0_BLOCK)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect()
    }

    #[test]
    fn bytes_land_where_the_docs_say_biased() {
        let (blocks, rb) = (4, 4 * Q8_0_BLOCK);
        let p = plain(32, blocks);
        let mut inter = vec![0u8; p.len()];
        super::super::interleave(GgmlType::Q8_0_R16, &p, rb, &mut inter).unwrap();
        for g in 0..2 {
            for r in 0..16 {
                for b in 0..blocks {
                    let (c, h) = (b / 2, b % 2);
                    let column = &inter[g * 16 * rb + c * Q8_0_R16_COLUMN..][..Q8_0_R16_COLUMN];
                    let block = &p[(16 * g + r) * rb + b * Q8_0_BLOCK..][..Q8_0_BLOCK];
                    for (i, &byte) in block.iter().enumerate() {
                        let bias = if i < 2 { 0 } else { 0x80 };
                        assert_eq!(
                            column[offset(h, i, r)],
                            byte ^ bias,
                            "row {r} block {b} {i}"
                        );
                    }
                }
            }
        }
    }
}

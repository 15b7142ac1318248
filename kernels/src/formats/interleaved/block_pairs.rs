//! The loops shared by the layouts whose column holds two consecutive blocks of 16 rows
//! (Q8_0_R16, Q4_1_R16, Q5_0_R16): a group of `ty` is `row_bytes / PAIR` columns of `COLUMN` bytes,
//! and row `r`'s `PAIR` plain bytes (two blocks) of column `c` are bytes `c × PAIR ..` of
//! the row. Each layout supplies only how one row's pair goes into a column and back; the
//! fixed-size arrays let the compiler drop every bounds check of those moves.

use grist_gguf::GgmlType;

use super::{check, FormatError};

/// Checks whole groups of `ty` and equal lengths; returns the bytes of one group.
fn check_lengths(
    ty: GgmlType,
    src: &[u8],
    row_bytes: usize,
    out: &[u8],
) -> Result<usize, FormatError> {
    let rows = check(ty, src.len(), row_bytes)?;
    if out.len() != src.len() {
        return Err(FormatError::LengthMismatch {
            left: src.len(),
            right: out.len(),
        });
    }
    Ok(rows * row_bytes)
}

/// Plain rows → groups of `ty` (see [`super::interleave`]): `to_column(pair, r, column)`
/// writes row `r`'s pair into its column.
#[inline(always)]
pub(super) fn interleave<const COLUMN: usize, const PAIR: usize>(
    ty: GgmlType,
    plain: &[u8],
    row_bytes: usize,
    out: &mut [u8],
    to_column: impl Fn(&[u8; PAIR], usize, &mut [u8; COLUMN]),
) -> Result<(), FormatError> {
    let group = check_lengths(ty, plain, row_bytes, out)?;
    for (g_src, g_out) in plain.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        for (c, column) in g_out.chunks_exact_mut(COLUMN).enumerate() {
            let column: &mut [u8; COLUMN] = column.try_into().unwrap();
            for (r, row) in g_src.chunks_exact(row_bytes).enumerate() {
                to_column(row[c * PAIR..][..PAIR].try_into().unwrap(), r, column);
            }
        }
    }
    Ok(())
}

/// Groups of `ty` → plain rows (see [`super::deinterleave`]): `from_column(column, r, pair)`
/// reads row `r`'s pair out of its column.
#[inline(always)]
pub(super) fn deinterleave<const COLUMN: usize, const PAIR: usize>(
    ty: GgmlType,
    src: &[u8],
    row_bytes: usize,
    out: &mut [u8],
    from_column: impl Fn(&[u8; COLUMN], usize, &mut [u8; PAIR]),
) -> Result<(), FormatError> {
    let group = check_lengths(ty, src, row_bytes, out)?;
    for (g_src, g_out) in src.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        for (c, column) in g_src.chunks_exact(COLUMN).enumerate() {
            let column: &[u8; COLUMN] = column.try_into().unwrap();
            for (r, row) in g_out.chunks_exact_mut(row_bytes).enumerate() {
                from_column(
                    column,
                    r,
                    (&mut row[c * PAIR..][..PAIR]).try_into().unwrap(),
                );
            }
        }
    }
    Ok(())
}

/// Row `r` of the group `group` in the plain layout (see [`super::extract_row`], which
/// checks the arguments).
#[inline(always)]
pub(super) fn extract_row<const COLUMN: usize, const PAIR: usize>(
    group: &[u8],
    r: usize,
    out: &mut [u8],
    from_column: impl Fn(&[u8; COLUMN], usize, &mut [u8; PAIR]),
) {
    for (column, pair) in group.chunks_exact(COLUMN).zip(out.chunks_exact_mut(PAIR)) {
        from_column(column.try_into().unwrap(), r, pair.try_into().unwrap());
    }
}

#[cfg(test)]
mod tests {
    use grist_gguf::GgmlType;

    use super::super::{deinterleave, extract_row, interleave};

    /// The two-block layouts and the bytes of one of their base type's blocks.
    const LAYOUTS: [(GgmlType, usize); 3] = [
        (GgmlType::Q8_0_R16, 34),
        (GgmlType::Q4_1_R16, 20),
        (GgmlType::Q5_0_R16, 22),
    ];

    /// `rows` plain rows of `blocks` blocks of `block` bytes whose bytes are all different-ish.
    fn plain(rows: usize, blocks: usize, block: usize) -> Vec<u8> {
        (0..rows * blocks * block)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect()
    }

    #[test]
    fn interleave_round_trips_and_rows_extract() {
        for (ty, block) in LAYOUTS {
            for blocks in [2, 6, 18, 48] {
                let rb = blocks * block;
                let p = plain(48, blocks, block);
                let mut inter = vec![0u8; p.len()];
                interleave(ty, &p, rb, &mut inter).unwrap();
                assert_ne!(inter, p);
                let mut back = vec![0u8; p.len()];
                deinterleave(ty, &inter, rb, &mut back).unwrap();
                assert_eq!(back, p, "{ty}, {blocks} blocks");
                // From a source at an odd address too.
                let mut shifted = vec![0u8; p.len() + 1];
                shifted[1..].copy_from_slice(&inter);
                let mut back = vec![0u8; p.len()];
                deinterleave(ty, &shifted[1..], rb, &mut back).unwrap();
                assert_eq!(back, p, "{ty}, {blocks} blocks, unaligned");
                let mut row = vec![0u8; rb];
                for r in 0..48 {
                    extract_row(ty, &inter, rb, r, &mut row).unwrap();
                    assert_eq!(row, p[r * rb..][..rb], "{ty}, {blocks} blocks, row {r}");
                }
                assert!(extract_row(ty, &inter, rb, 48, &mut row).is_err());
                assert!(extract_row(ty, &inter, rb, 0, &mut row[1..]).is_err());
            }
        }
    }

    #[test]
    fn partial_groups_and_odd_block_counts_are_refused() {
        for (ty, block) in LAYOUTS {
            let (base, _) = ty.interleaved().unwrap();
            let rb = 2 * block;
            let (src, mut out) = (vec![0u8; 15 * rb], vec![0u8; 15 * rb]);
            assert!(interleave(ty, &src, rb, &mut out).is_err(), "{ty}");
            assert!(deinterleave(ty, &src, rb, &mut out).is_err(), "{ty}");
            // Rows of an odd number of blocks are not whole 64-value columns.
            let rb = 3 * block;
            let (src, mut out) = (vec![0u8; 16 * rb], vec![0u8; 16 * rb]);
            assert!(interleave(ty, &src, rb, &mut out).is_err(), "{ty}");
            assert!(deinterleave(ty, &src, rb, &mut out).is_err(), "{ty}");
            let mut row = vec![0u8; rb];
            assert!(extract_row(ty, &src, rb, 0, &mut row).is_err(), "{ty}");
            // Different lengths, and the plain type.
            let rb = 2 * block;
            let (src, mut out) = (vec![0u8; 16 * rb], vec![0u8; 32 * rb]);
            assert!(interleave(ty, &src, rb, &mut out).is_err(), "{ty}");
            assert!(
                interleave(base, &src, rb, &mut out[..16 * rb]).is_err(),
                "{ty}"
            );
        }
    }
}

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

//! Scalar reference implementations of every format: `dequantize`, `quantize`, `vec_dot`.
//!
//! These are the definitions of what each format means. They are written for clarity, mirror
//! ggml's reference C code (`ggml-quants.c`: `dequantize_row_*`, `quantize_row_*_ref`,
//! `ggml_vec_dot_*_generic`) operation for operation so results are bit-identical, and every
//! SIMD kernel in `simd/` is tested against them.
//!
//! A weight format `W` is multiplied with activations quantized to `W::Activation` (ggml's
//! `vec_dot_type`): Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for Q4_1/Q5_1, Q8_K for the k-quants
//! and IQ4_XS, and the float type itself for F32/F16/BF16.

// The reference kernels index like the C they transcribe, so that each can be compared with
// ggml line by line.
#![allow(clippy::needless_range_loop)]

use grist_gguf::GgmlType;

/// One block of a storage format: `BLOCK_ELEMS` values of a row in `size_of::<Self>()` bytes.
///
/// Implemented by every `Block*` struct in [`crate::blocks`] and by `f32`, `half::f16` and
/// `half::bf16` (blocks of one value).
pub trait BlockFormat: bytemuck::Pod + Send + Sync {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
    /// Values per block.
    const BLOCK_ELEMS: usize;
    /// The format activations are quantized to before a dot product with this format.
    type Activation: BlockFormat;

    /// Expands `blocks` into `out` (`out.len() == blocks.len() * BLOCK_ELEMS`).
    fn dequantize(blocks: &[Self], out: &mut [f32]);

    /// Quantizes `x` into `out` with ggml's reference algorithm
    /// (`x.len() == out.len() * BLOCK_ELEMS`).
    fn quantize(x: &[f32], out: &mut [Self]);

    /// Dot product of a weight row with an activation row of the same length in values,
    /// computed as ggml does (integer sums per block, one float multiply-add per block).
    fn vec_dot(w: &[Self], a: &[Self::Activation]) -> f32;
}

mod float;
pub mod interleaved;
mod iq4_nl;
mod iq4_xs;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_1;
mod q8_k;
pub mod search;

pub use float::{bf16_from_f32_ggml, Bf16, F16};
pub use q4_k::scales_mins;
pub use search::nearest_int;

use crate::blocks::{
    BlockIQ4_NL, BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0,
    BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K,
};
use std::fmt;

/// Why a type-erased row operation refused its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// grist has no scalar implementation of this type (e.g. the IQ2/IQ3 codebook formats).
    Unsupported(GgmlType),
    /// The number of values is not a whole number of the type's blocks.
    NotBlockMultiple {
        /// The type whose block size was violated.
        ty: GgmlType,
        /// The offending number of values.
        n_values: usize,
        /// Values per block of `ty`.
        block_elems: usize,
    },
    /// A byte buffer's length does not match the number of values.
    SizeMismatch {
        /// The type of the byte buffer.
        ty: GgmlType,
        /// Bytes the values require.
        expected_bytes: usize,
        /// Bytes actually given.
        actual_bytes: usize,
    },
    /// Two rows that must hold the same number of values do not.
    LengthMismatch {
        /// Values in the first (weight) row.
        left: usize,
        /// Values in the second (activation) row.
        right: usize,
    },
    /// Data of an interleaved type ([`interleaved`]) that is not whole groups of rows.
    PartialGroup {
        /// The interleaved type.
        ty: GgmlType,
        /// Rows per group of `ty`.
        group_rows: usize,
        /// Bytes per row.
        row_bytes: usize,
        /// Bytes given.
        bytes: usize,
    },
    /// A row index past the end of a matrix.
    RowOutOfRange {
        /// The row asked for.
        row: usize,
        /// Rows the matrix has.
        rows: usize,
    },
    /// A byte buffer is not aligned for the type's block struct.
    Misaligned {
        /// The type of the byte buffer.
        ty: GgmlType,
        /// Alignment the block struct requires.
        align: usize,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Unsupported(ty) => {
                write!(f, "tensor type {ty} is not supported by grist's kernels")
            }
            FormatError::NotBlockMultiple {
                ty,
                n_values,
                block_elems,
            } => write!(
                f,
                "{n_values} values is not a whole number of {ty} blocks ({block_elems} values each)"
            ),
            FormatError::SizeMismatch {
                ty,
                expected_bytes,
                actual_bytes,
            } => write!(
                f,
                "{ty} buffer holds {actual_bytes} bytes but the row needs {expected_bytes}"
            ),
            FormatError::LengthMismatch { left, right } => {
                write!(f, "row lengths differ: {left} values vs {right} values")
            }
            FormatError::PartialGroup {
                ty,
                group_rows,
                row_bytes,
                bytes,
            } => write!(
                f,
                "{ty} data of {bytes} bytes is not whole groups of {group_rows} rows of \
                 {row_bytes} bytes"
            ),
            FormatError::RowOutOfRange { row, rows } => {
                write!(f, "row {row} is out of range (the matrix has {rows} rows)")
            }
            FormatError::Misaligned { ty, align } => {
                write!(f, "{ty} buffer is not aligned to {align} bytes")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Whether grist can dequantize, quantize and dot-multiply tensors of type `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    activation_type(ty).is_some()
}

/// Every weight format grist computes with, in ggml id order within each family (the
/// supported types minus the activation-only Q8_1 and Q8_K).
pub const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
];

/// The type activations are quantized to before a dot product with weights of type `ty`
/// (ggml's `vec_dot_type`), or `None` if grist does not support `ty`.
pub fn activation_type(ty: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    if let Some((base, _)) = ty.interleaved() {
        return activation_type(base); // an interleaved layout multiplies as its base type
    }
    Some(match ty {
        F32 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => Q8_0,
        Q4_1 | Q5_1 | Q8_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K | IQ4_XS => Q8_K,
        _ => return None,
    })
}

/// Runs `$body` with `$T` bound to the block type of `$ty`, or returns `Unsupported`.
macro_rules! with_block_type {
    ($ty:expr, $T:ident => $body:expr) => {{
        match $ty {
            GgmlType::F32 => {
                type $T = f32;
                $body
            }
            GgmlType::F16 => {
                type $T = F16;
                $body
            }
            GgmlType::BF16 => {
                type $T = Bf16;
                $body
            }
            GgmlType::Q4_0 => {
                type $T = BlockQ4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $T = BlockQ4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $T = BlockQ5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $T = BlockQ5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $T = BlockQ8_0;
                $body
            }
            GgmlType::Q8_1 => {
                type $T = BlockQ8_1;
                $body
            }
            GgmlType::Q2_K => {
                type $T = BlockQ2_K;
                $body
            }
            GgmlType::Q3_K => {
                type $T = BlockQ3_K;
                $body
            }
            GgmlType::Q4_K => {
                type $T = BlockQ4_K;
                $body
            }
            GgmlType::Q5_K => {
                type $T = BlockQ5_K;
                $body
            }
            GgmlType::Q6_K => {
                type $T = BlockQ6_K;
                $body
            }
            GgmlType::Q8_K => {
                type $T = BlockQ8_K;
                $body
            }
            GgmlType::IQ4_NL => {
                type $T = BlockIQ4_NL;
                $body
            }
            GgmlType::IQ4_XS => {
                type $T = BlockIQ4_XS;
                $body
            }
            other => return Err(FormatError::Unsupported(other)),
        }
    }};
}

/// Number of blocks `n_values` values of `T` occupy, checking divisibility.
fn block_count<T: BlockFormat>(n_values: usize) -> Result<usize, FormatError> {
    if !n_values.is_multiple_of(T::BLOCK_ELEMS) {
        return Err(FormatError::NotBlockMultiple {
            ty: T::TYPE,
            n_values,
            block_elems: T::BLOCK_ELEMS,
        });
    }
    Ok(n_values / T::BLOCK_ELEMS)
}

/// Views `bytes` as exactly `n_blocks` blocks of `T`.
pub(crate) fn blocks_of<T: BlockFormat>(
    bytes: &[u8],
    n_blocks: usize,
) -> Result<&[T], FormatError> {
    let expected_bytes = n_blocks * std::mem::size_of::<T>();
    if bytes.len() != expected_bytes {
        return Err(FormatError::SizeMismatch {
            ty: T::TYPE,
            expected_bytes,
            actual_bytes: bytes.len(),
        });
    }
    bytemuck::try_cast_slice(bytes).map_err(|_| FormatError::Misaligned {
        ty: T::TYPE,
        align: std::mem::align_of::<T>(),
    })
}

/// Views `bytes` mutably as exactly `n_blocks` blocks of `T`.
fn blocks_of_mut<T: BlockFormat>(
    bytes: &mut [u8],
    n_blocks: usize,
) -> Result<&mut [T], FormatError> {
    let expected_bytes = n_blocks * std::mem::size_of::<T>();
    if bytes.len() != expected_bytes {
        return Err(FormatError::SizeMismatch {
            ty: T::TYPE,
            expected_bytes,
            actual_bytes: bytes.len(),
        });
    }
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| FormatError::Misaligned {
        ty: T::TYPE,
        align: std::mem::align_of::<T>(),
    })
}

/// Dequantizes one row of type `ty` stored in `src` into `out` (`out.len()` values).
///
/// `src.len()` must be exactly the byte size of `out.len()` values of `ty`, and `out.len()`
/// a multiple of the type's block size.
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<(), FormatError> {
    with_block_type!(ty, T => {
        let n_blocks = block_count::<T>(out.len())?;
        let blocks = blocks_of::<T>(src, n_blocks)?;
        T::dequantize(blocks, out);
        Ok(())
    })
}

/// Quantizes the values `x` into `out` with ggml's reference quantizer for `ty`.
///
/// `out.len()` must be exactly the byte size of `x.len()` values of `ty`.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), FormatError> {
    with_block_type!(ty, T => {
        let n_blocks = block_count::<T>(x.len())?;
        let blocks = blocks_of_mut::<T>(out, n_blocks)?;
        T::quantize(x, blocks);
        Ok(())
    })
}

/// Dot product of a weight row of type `ty` (`w`, `n` values) with an activation row already
/// quantized to `activation_type(ty)` (`a`, `n` values), with the scalar reference kernel.
pub fn vec_dot_row(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> Result<f32, FormatError> {
    with_block_type!(ty, T => {
        let n_blocks = block_count::<T>(n)?;
        let wb = blocks_of::<T>(w, n_blocks)?;
        type A = <T as BlockFormat>::Activation;
        let na = block_count::<A>(n)?;
        let ab = blocks_of::<A>(a, na)?;
        Ok(T::vec_dot(wb, ab))
    })
}

/// Asserts the length contract shared by every `dequantize` implementation.
#[inline]
fn check_dequantize_len<T: BlockFormat>(blocks: &[T], out: &[f32]) {
    assert_eq!(
        out.len(),
        blocks.len() * T::BLOCK_ELEMS,
        "{}: output holds {} values, blocks hold {}",
        T::TYPE,
        out.len(),
        blocks.len() * T::BLOCK_ELEMS
    );
}

/// Asserts the length contract shared by every `quantize` implementation.
#[inline]
fn check_quantize_len<T: BlockFormat>(x: &[f32], out: &[T]) {
    assert_eq!(
        x.len(),
        out.len() * T::BLOCK_ELEMS,
        "{}: input holds {} values, output blocks hold {}",
        T::TYPE,
        x.len(),
        out.len() * T::BLOCK_ELEMS
    );
}

/// Asserts the length contract shared by every `vec_dot` implementation.
#[inline]
fn check_dot_len<W: BlockFormat>(w: &[W], a: &[W::Activation]) {
    let nw = w.len() * W::BLOCK_ELEMS;
    let na = a.len() * <W::Activation as BlockFormat>::BLOCK_ELEMS;
    assert_eq!(
        nw,
        na,
        "{}: weight row has {nw} values, activation row {na}",
        W::TYPE
    );
}

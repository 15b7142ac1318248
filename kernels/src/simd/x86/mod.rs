//! x86-64 SIMD kernels: the block dot products (`vec_dot`) and activation quantizers of
//! [`crate::formats`], rewritten with AVX2 (+FMA, F16C) in [`avx2`] and AVX-512
//! (F/BW/VL/VNNI) in [`avx512`].
//!
//! Every kernel computes exactly what its scalar reference computes: the integer part of each
//! block's dot product is exact, then one float multiply-add per block (or per 256-value
//! super-block). Only the order of the float additions differs from the scalar code, so
//! results differ by float rounding alone; the activation quantizers are bit-identical to
//! the scalar ones. `kernels/tests/simd_x86.rs` checks both claims against the references.
//!
//! The typed kernels (`vec_dot_q4_0_q8_0(&[BlockQ4_0], &[BlockQ8_0])`, …) are `unsafe`
//! because they execute instructions the CPU may lack. The dispatch table
//! ([`crate::dispatch::Kernels`]) holds safe byte-slice adapters instead; they are only
//! installed into a table for an ISA that dispatch has checked the CPU supports.

use crate::dispatch::Kernels;

pub mod avx2;
pub mod avx512;
pub mod gemm_avx512;
pub mod interleaved_avx512;
pub mod panel_avx512;
pub mod panel_interleaved_avx512;

/// Overrides the table entries the AVX2 kernels accelerate.
pub(crate) fn install_avx2(table: &mut Kernels) {
    avx2::install(table);
}

/// Overrides the table entries the AVX-512 kernels accelerate (runs after [`install_avx2`]).
pub(crate) fn install_avx512(table: &mut Kernels) {
    avx512::install(table);
    gemm_avx512::install(table);
    panel_avx512::install(table);
    panel_interleaved_avx512::install(table);
    interleaved_avx512::install(table);
}

pub(crate) use super::{blocks_of, with_blocks_mut};

/// Checks that a weight row and an activation row hold the same number of blocks (weight
/// and activation blocks cover the same number of values for every pair we accelerate).
///
/// # Panics
/// On a mismatch: reading past the shorter row would be undefined behaviour.
#[inline(always)]
pub(crate) fn check_same_len(w: usize, a: usize, what: &str) {
    assert_eq!(
        w, a,
        "{what}: weight row has {w} blocks, activation row {a}"
    );
}

/// Checks `x.len() == blocks * block_elems` for an activation quantizer.
///
/// # Panics
/// On a mismatch.
#[inline(always)]
pub(crate) fn check_quantize_len(x: usize, blocks: usize, block_elems: usize, what: &str) {
    assert_eq!(
        x,
        blocks * block_elems,
        "{what}: {x} values do not fill {blocks} blocks of {block_elems}"
    );
}

/// Unpacks the 12 bytes of 6-bit sub-block scales and mins shared by Q4_K and Q5_K
/// (ggml's `get_scale_min_k4`): returns `(scales[8], mins[8])`.
///
/// ```text
/// j < 4:  scale = b[j] & 63                       min = b[j+4] & 63
/// j ≥ 4:  scale = b[j+4] & 15 | (b[j-4] >> 6) << 4   min = b[j+4] >> 4 | (b[j] >> 6) << 4
/// ```
#[inline(always)]
pub(crate) fn k4_scales_mins(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..4 {
        scales[j] = packed[j] & 63;
        mins[j] = packed[j + 4] & 63;
    }
    for j in 4..8 {
        scales[j] = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
        mins[j] = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
    }
    (scales, mins)
}

/// Defines a safe `fn(&[u8], &[u8]) -> f32` table adapter around an unsafe typed kernel.
macro_rules! byte_vec_dot {
    ($name:ident, $kernel:path, $w:ty, $a:ty) => {
        fn $name(w: &[u8], a: &[u8]) -> f32 {
            let w = crate::simd::x86::blocks_of::<$w>(w);
            let a = crate::simd::x86::blocks_of::<$a>(a);
            // SAFETY: this adapter is private and only reachable through the `Kernels` table
            // that `install` fills; dispatch builds that table only after checking that the
            // CPU has every feature the kernel's `#[target_feature]` enables.
            unsafe { $kernel(&w, &a) }
        }
    };
}

/// Defines a safe [`crate::dispatch::GemvFn`] table adapter around an unsafe typed
/// many-rows kernel `fn(w: &[W], a: &[A], out: &mut [f32])` (`w`: `out.len()` rows).
macro_rules! byte_gemv {
    ($name:ident, $kernel:path, $w:ty, $a:ty) => {
        fn $name(w: &[u8], w_row_bytes: usize, a: &[u8], out: &mut [f32]) {
            assert_eq!(
                w.len(),
                w_row_bytes * out.len(),
                "gemv: weights are not out.len() rows of w_row_bytes"
            );
            assert_eq!(
                w_row_bytes,
                a.len() / std::mem::size_of::<$a>() * std::mem::size_of::<$w>(),
                "gemv: weight and activation rows differ in length"
            );
            let w = crate::simd::x86::blocks_of::<$w>(w);
            let a = crate::simd::x86::blocks_of::<$a>(a);
            // SAFETY: as `byte_vec_dot!`: only reachable through a table built after the
            // CPU check.
            unsafe { $kernel(&w, &a, out) }
        }
    };
}
pub(crate) use byte_gemv;

/// Defines a safe `fn(&[f32], &mut [u8])` table adapter around an unsafe typed quantizer.
macro_rules! byte_quantize {
    ($name:ident, $kernel:path, $a:ty) => {
        fn $name(x: &[f32], out: &mut [u8]) {
            crate::simd::x86::with_blocks_mut::<$a>(out, |blocks| {
                // SAFETY: as for the dot products: only reachable through a table dispatch
                // built after checking the CPU's features.
                unsafe { $kernel(x, blocks) }
            })
        }
    };
}

pub(crate) use byte_quantize;
pub(crate) use byte_vec_dot;

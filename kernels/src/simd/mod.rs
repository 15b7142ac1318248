//! SIMD kernels per instruction set. Nothing here is called directly: each ISA module has an
//! installer that overrides entries of a [`Kernels`] table being built by
//! [`crate::dispatch`], which only builds a table after checking that the CPU has the ISA's
//! features. That check is what makes the safe table entries sound.

#[cfg(target_arch = "aarch64")]
use crate::dispatch::Kernels;
#[cfg(target_arch = "x86_64")]
use crate::dispatch::Kernels;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::borrow::Cow;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use bytemuck::Pod;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86;

/// Overrides the entries the AVX2 (+FMA, F16C) kernels accelerate.
#[cfg(target_arch = "x86_64")]
pub(crate) fn install_avx2(table: &mut Kernels) {
    x86::install_avx2(table);
    crate::ops::install_avx2(table);
}

/// Overrides the entries the AVX-512 (F/BW/VL/VNNI) kernels accelerate. Runs after
/// [`install_avx2`], so anything not overridden here keeps its AVX2 version.
#[cfg(target_arch = "x86_64")]
pub(crate) fn install_avx512(table: &mut Kernels) {
    x86::install_avx512(table);
    crate::ops::install_avx512(table);
}

/// Overrides the entries the NEON kernels accelerate.
#[cfg(target_arch = "aarch64")]
pub(crate) fn install_neon(table: &mut Kernels) {
    aarch64::install(table);
    crate::ops::install_neon(table);
}

// Byte-slice adapters shared by the safe table entries of every ISA: the table passes rows
// as raw bytes of whole blocks; the kernels take typed blocks.

/// Reads a whole-block byte row as blocks. Rows come from aligned scratch buffers or GGUF
/// tensor data, so this borrows; a misaligned row is copied rather than rejected.
///
/// # Panics
/// If `bytes.len()` is not a whole number of blocks (a caller bug, not bad input).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn blocks_of<B: Pod>(bytes: &[u8]) -> Cow<'_, [B]> {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(blocks) => Cow::Borrowed(blocks),
        Err(_) => {
            let size = std::mem::size_of::<B>();
            assert!(
                bytes.len().is_multiple_of(size),
                "row of {} bytes is not a whole number of {size}-byte blocks",
                bytes.len()
            );
            Cow::Owned(
                bytes
                    .chunks_exact(size)
                    .map(bytemuck::pod_read_unaligned)
                    .collect(),
            )
        }
    }
}

/// Runs `quantize` on `out` viewed as blocks of `B` (through a temporary when `out` is
/// misaligned for `B`).
///
/// # Panics
/// If `out.len()` is not a whole number of blocks.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn with_blocks_mut<B: Pod>(out: &mut [u8], quantize: impl FnOnce(&mut [B])) {
    match bytemuck::try_cast_slice_mut::<u8, B>(out) {
        Ok(blocks) => quantize(blocks),
        Err(_) => {
            let size = std::mem::size_of::<B>();
            assert!(
                out.len().is_multiple_of(size),
                "buffer of {} bytes is not a whole number of {size}-byte blocks",
                out.len()
            );
            let mut blocks = vec![B::zeroed(); out.len() / size];
            quantize(&mut blocks);
            out.copy_from_slice(bytemuck::cast_slice(&blocks));
        }
    }
}

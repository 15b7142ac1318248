//! SIMD kernels per instruction set. Nothing here is called directly: each ISA module has an
//! installer that overrides entries of a [`Kernels`] table being built by
//! [`crate::dispatch`], which only builds a table after checking that the CPU has the ISA's
//! features. That check is what makes the safe table entries sound.

#[cfg(target_arch = "aarch64")]
use crate::dispatch::Kernels;
#[cfg(target_arch = "x86_64")]
use crate::dispatch::Kernels;

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

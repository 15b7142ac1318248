//! aarch64 kernels: NEON dot products and activation quantizers ([`neon`]), and the installer
//! that puts them into a dispatch [`Kernels`] table.
//!
//! NEON (Advanced SIMD) is part of every aarch64 Linux CPU. The Armv8.2 dot-product extension
//! (`sdot`, feature `dotprod`) is not: Cortex-A53/A55-class and older cores lack it. Every
//! quantized kernel therefore exists twice (see `neon.rs`): `sdot` and plain NEON
//! (`smull` + `sadalp`); [`install`] picks the `sdot` versions only when the table's detected
//! features include `dotprod`, so no CPU ever meets an instruction it does not have.
//!
//! Table entries are safe `fn(&[u8], &[u8]) -> f32` / `fn(&[f32], &mut [u8])` wrappers around
//! the `#[target_feature]` functions: raw whole-block bytes are viewed as blocks (copied if the
//! slice is misaligned) and the kernel is called.

pub mod neon;

use grist_gguf::GgmlType;
use half::{bf16, f16};

use crate::blocks::*;
use crate::dispatch::Kernels;

use super::{blocks_of as blocks, with_blocks_mut};

/// Defines a safe byte-level wrapper around a typed NEON dot product.
macro_rules! byte_vec_dot {
    ($name:ident, $kernel:path, $w:ty, $a:ty) => {
        fn $name(w: &[u8], a: &[u8]) -> f32 {
            let w = blocks::<$w>(w);
            let a = blocks::<$a>(a);
            assert_eq!(
                w.len(),
                a.len(),
                "vec_dot: weight and activation rows differ in length"
            );
            // SAFETY: this wrapper is only stored in a table by `install`, which dispatch runs
            // after checking the CPU has NEON; `_sdot` kernels are only installed when the
            // detected features include `dotprod`.
            unsafe { $kernel(&w, &a) }
        }
    };
}

/// Defines a safe byte-level wrapper around a typed NEON activation quantizer.
macro_rules! byte_quantize {
    ($name:ident, $kernel:path, $b:ty) => {
        fn $name(x: &[f32], out: &mut [u8]) {
            // SAFETY: only reachable through a NEON table (CPU checked by dispatch).
            with_blocks_mut::<$b>(out, |blocks| unsafe { $kernel(x, blocks) });
        }
    };
}

byte_vec_dot!(q4_0_plain, neon::vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
byte_vec_dot!(
    q4_0_sdot,
    neon::vec_dot_q4_0_q8_0_sdot,
    BlockQ4_0,
    BlockQ8_0
);
byte_vec_dot!(q4_1_plain, neon::vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
byte_vec_dot!(
    q4_1_sdot,
    neon::vec_dot_q4_1_q8_1_sdot,
    BlockQ4_1,
    BlockQ8_1
);
byte_vec_dot!(q5_0_plain, neon::vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
byte_vec_dot!(
    q5_0_sdot,
    neon::vec_dot_q5_0_q8_0_sdot,
    BlockQ5_0,
    BlockQ8_0
);
byte_vec_dot!(q5_1_plain, neon::vec_dot_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
byte_vec_dot!(
    q5_1_sdot,
    neon::vec_dot_q5_1_q8_1_sdot,
    BlockQ5_1,
    BlockQ8_1
);
byte_vec_dot!(q8_0_plain, neon::vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
byte_vec_dot!(
    q8_0_sdot,
    neon::vec_dot_q8_0_q8_0_sdot,
    BlockQ8_0,
    BlockQ8_0
);
byte_vec_dot!(
    iq4_nl_plain,
    neon::vec_dot_iq4_nl_q8_0,
    BlockIQ4_NL,
    BlockQ8_0
);
byte_vec_dot!(
    iq4_nl_sdot,
    neon::vec_dot_iq4_nl_q8_0_sdot,
    BlockIQ4_NL,
    BlockQ8_0
);
byte_vec_dot!(q4_k_plain, neon::vec_dot_q4_k_q8_k, BlockQ4_K, BlockQ8_K);
byte_vec_dot!(
    q4_k_sdot,
    neon::vec_dot_q4_k_q8_k_sdot,
    BlockQ4_K,
    BlockQ8_K
);
byte_vec_dot!(q5_k_plain, neon::vec_dot_q5_k_q8_k, BlockQ5_K, BlockQ8_K);
byte_vec_dot!(
    q5_k_sdot,
    neon::vec_dot_q5_k_q8_k_sdot,
    BlockQ5_K,
    BlockQ8_K
);
byte_vec_dot!(q6_k_plain, neon::vec_dot_q6_k_q8_k, BlockQ6_K, BlockQ8_K);
byte_vec_dot!(
    q6_k_sdot,
    neon::vec_dot_q6_k_q8_k_sdot,
    BlockQ6_K,
    BlockQ8_K
);
byte_vec_dot!(f16_dot, neon::vec_dot_f16, f16, f16);
byte_vec_dot!(bf16_dot, neon::vec_dot_bf16, bf16, bf16);

byte_quantize!(quantize_q8_0, neon::quantize_q8_0, BlockQ8_0);
byte_quantize!(quantize_q8_1, neon::quantize_q8_1, BlockQ8_1);
byte_quantize!(quantize_q8_k, neon::quantize_q8_k, BlockQ8_K);

/// Whether the `sdot` kernels should be used: the table's CPU has `dotprod`, unless the
/// environment variable `GRIST_NEON_DOTPROD=0` asks for the plain-NEON path (A/B profiling,
/// and testing that path on a CPU that has `dotprod`).
fn use_sdot(table: &Kernels) -> bool {
    let disabled = std::env::var("GRIST_NEON_DOTPROD").is_ok_and(|v| v.trim() == "0");
    table.features().dotprod && !disabled
}

/// Overrides the table entries the NEON kernels accelerate: the dot products of Q4_0, Q4_1,
/// Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K, F16 and BF16 weights (`sdot` versions when the
/// CPU has `dotprod`), and the f32 → Q8_0 / Q8_1 / Q8_K activation quantizers.
pub(crate) fn install(table: &mut Kernels) {
    let sdot = use_sdot(table);
    let pick = |plain: fn(&[u8], &[u8]) -> f32, fast: fn(&[u8], &[u8]) -> f32| {
        if sdot {
            fast
        } else {
            plain
        }
    };
    table.set_vec_dot(GgmlType::Q4_0, pick(q4_0_plain, q4_0_sdot));
    table.set_vec_dot(GgmlType::Q4_1, pick(q4_1_plain, q4_1_sdot));
    table.set_vec_dot(GgmlType::Q5_0, pick(q5_0_plain, q5_0_sdot));
    table.set_vec_dot(GgmlType::Q5_1, pick(q5_1_plain, q5_1_sdot));
    table.set_vec_dot(GgmlType::Q8_0, pick(q8_0_plain, q8_0_sdot));
    table.set_vec_dot(GgmlType::IQ4_NL, pick(iq4_nl_plain, iq4_nl_sdot));
    table.set_vec_dot(GgmlType::Q4_K, pick(q4_k_plain, q4_k_sdot));
    table.set_vec_dot(GgmlType::Q5_K, pick(q5_k_plain, q5_k_sdot));
    table.set_vec_dot(GgmlType::Q6_K, pick(q6_k_plain, q6_k_sdot));
    table.set_vec_dot(GgmlType::F16, f16_dot);
    table.set_vec_dot(GgmlType::BF16, bf16_dot);
    table.set_quantize_act(GgmlType::Q8_0, quantize_q8_0);
    table.set_quantize_act(GgmlType::Q8_1, quantize_q8_1);
    table.set_quantize_act(GgmlType::Q8_K, quantize_q8_k);
}

//! grist-kernels: the arithmetic of grist.
//!
//! - [`blocks`]: the `#[repr(C)]` block layouts of every GGUF quantized format.
//! - [`formats`]: per format, the scalar reference `dequantize`, `quantize` and `vec_dot`.
//! - `simd`: the same dot products (and activation quantization) with AVX2, AVX-512 and NEON.
//! - [`cpu`]: which processor this is (vendor, family / model, Zen generation), for reports.
//! - [`dispatch`]: picks an instruction set once at run time (`GRIST_ISA` overrides).
//! - [`matmul`]: weights `[rows, cols]` × activations `[n, cols]` → `[n, rows]`, parallel.
//! - [`panel`]: the int8 "panel" GEMM of prompt processing (weights unpacked to 8 bits).
//! - [`ops`]: the f32 operations of a transformer layer (RMSNorm, RoPE, softmax, …).
//! - [`pool`]: a persistent spinning worker pool for the tiny parallel regions of generation.

#![warn(missing_docs)]

pub mod blocks;
mod cache;
pub mod cpu;
pub mod dispatch;
pub mod formats;
pub mod matmul;
pub mod ops;
pub mod panel;
pub mod pool;
pub mod probe;
pub mod simd;

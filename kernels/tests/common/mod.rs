//! Test data shared by the kernel tests that compare bit patterns (`gemv.rs`,
//! `gemm_avx512.rs`): a tiny deterministic generator, quantized or raw weight rows, and a
//! bit-equality check that treats two NaNs as equal.

#![allow(dead_code)] // each test crate uses its own subset

use grist_gguf::GgmlType;
use grist_kernels::formats;

/// xorshift64*: deterministic test data without a crate.
pub struct Rng(pub u64);
impl Rng {
    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `[-1, 1)`.
    pub fn f32(&mut self) -> f32 {
        let bits = self.u64() >> 40; // 24 bits
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
}

/// Same bits, or both NaN.
pub fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// `rows` weight rows of `ty`: quantized random values at three scales (`raw = false`) or raw
/// random bytes (every code and scale pattern, NaN/∞ scales included).
pub fn weights(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize, raw: bool) -> Vec<u8> {
    let rb = cols / ty.block_elems() * ty.block_bytes();
    if raw {
        return rng.bytes(rows * rb);
    }
    let mut data = vec![0u8; rows * rb];
    for r in 0..rows {
        let x = rng.vec(cols, [0.01f32, 1.0, 40.0][r % 3]);
        formats::quantize_row(ty, &x, &mut data[r * rb..(r + 1) * rb]).unwrap();
    }
    data
}

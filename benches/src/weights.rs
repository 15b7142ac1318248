//! Synthetic operands for the kernel benchmarks (`benches/benches/kernels.rs`): random weight
//! matrices of any supported type and random f32 activations, built fast enough that a
//! 256 MB matrix per type costs a fraction of a second.
//!
//! Why random bytes and not the reference quantizers: quantizing 256 MB of k-quants with
//! ggml's search-based quantizers takes tens of seconds per type, and the dot-product kernels
//! do the same work whatever the codes are (no data-dependent branches). So every block is
//! filled with random bytes (every bit pattern of a code, a packed 6-bit scale or an i8 scale
//! is valid) and only the f16 fields (`d`, `dmin`, `m`) are overwritten with small, normal
//! half-precision values, so results are finite and no NaN, infinity or subnormal reaches the
//! float units. Float formats (F32, F16, BF16) get uniform values in `[-1, 1)`.
//!
//! Every row is distinct (one random stream over the whole buffer), so a matrix larger than
//! the caches really streams from DRAM.

use std::mem::{offset_of, size_of};

use grist_gguf::GgmlType;
use grist_kernels::blocks::{
    f32_to_f16, BlockIQ4_NL, BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K,
    BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1,
};

/// A small, fast pseudo-random generator (SplitMix64): deterministic per seed, no crate.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)` (24 random bits, exact in f32).
    pub fn next_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A uniform value in `[-1, 1)`.
    pub fn next_signed(&mut self) -> f32 {
        2.0 * self.next_unit() - 1.0
    }
}

/// A byte buffer whose start is 8-byte aligned (it is made of `u64`s), so kernels can view
/// rows of whole blocks as block structs without the copy a misaligned slice would cost.
#[derive(Clone, Debug)]
pub struct AlignedBytes {
    words: Vec<u64>, // [len.div_ceil(8)] words; bytes past `len` are padding
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    /// The bytes, mutable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..self.len]
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Byte offsets of the f16 scale fields inside one block of `ty`, or `None` for a type this
/// module cannot synthesise (float types are handled separately).
fn f16_field_offsets(ty: GgmlType) -> Option<&'static [usize]> {
    Some(match ty {
        GgmlType::Q4_0 => &[offset_of!(BlockQ4_0, d)],
        GgmlType::Q4_1 => &[offset_of!(BlockQ4_1, d), offset_of!(BlockQ4_1, m)],
        GgmlType::Q5_0 => &[offset_of!(BlockQ5_0, d)],
        GgmlType::Q5_1 => &[offset_of!(BlockQ5_1, d), offset_of!(BlockQ5_1, m)],
        GgmlType::Q8_0 => &[offset_of!(BlockQ8_0, d)],
        GgmlType::Q8_1 => &[offset_of!(BlockQ8_1, d), offset_of!(BlockQ8_1, s)],
        GgmlType::IQ4_NL => &[offset_of!(BlockIQ4_NL, d)],
        GgmlType::Q2_K => &[offset_of!(BlockQ2_K, d), offset_of!(BlockQ2_K, dmin)],
        GgmlType::Q3_K => &[offset_of!(BlockQ3_K, d)],
        GgmlType::Q4_K => &[offset_of!(BlockQ4_K, d), offset_of!(BlockQ4_K, dmin)],
        GgmlType::Q5_K => &[offset_of!(BlockQ5_K, d), offset_of!(BlockQ5_K, dmin)],
        GgmlType::Q6_K => &[offset_of!(BlockQ6_K, d)],
        GgmlType::IQ4_XS => &[offset_of!(BlockIQ4_XS, d)],
        _ => return None,
    })
}

/// Whether [`random_weights`] can build matrices of type `ty`.
pub fn can_synthesise(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) || f16_field_offsets(ty).is_some()
}

/// Bytes of one row of `cols` values of `ty` (`cols` must be a whole number of blocks).
pub fn row_bytes(ty: GgmlType, cols: usize) -> usize {
    assert!(
        cols.is_multiple_of(ty.block_elems()),
        "{cols} columns is not a whole number of {ty} blocks"
    );
    cols / ty.block_elems() * ty.block_bytes()
}

/// A random `[rows, cols]` weight matrix of type `ty` as the raw bytes of whole blocks
/// (row-major, `rows × row_bytes(ty, cols)` bytes), deterministic for a given `seed`.
///
/// Panics if `ty` is not one of the types [`can_synthesise`] accepts or `cols` is not a whole
/// number of blocks (benchmark set-up errors, not input errors).
pub fn random_weights(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> AlignedBytes {
    let len = rows * row_bytes(ty, cols);
    let mut buf = AlignedBytes::zeroed(len);
    let mut rng = SplitMix64::new(seed);
    let bytes = buf.as_bytes_mut();
    match ty {
        GgmlType::F32 => {
            for v in bytes.chunks_exact_mut(size_of::<f32>()) {
                v.copy_from_slice(&rng.next_signed().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for v in bytes.chunks_exact_mut(2) {
                let h = half::f16::from_f32(rng.next_signed());
                v.copy_from_slice(&h.to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for v in bytes.chunks_exact_mut(2) {
                let h = half::bf16::from_f32(rng.next_signed());
                v.copy_from_slice(&h.to_bits().to_le_bytes());
            }
        }
        _ => {
            let offsets = f16_field_offsets(ty)
                .unwrap_or_else(|| panic!("cannot synthesise random {ty} weights"));
            // Random bits everywhere (8 bytes per generator call), then valid scales.
            for chunk in bytes.chunks_mut(8) {
                let r = rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                for &off in offsets {
                    // A scale in [2^-8, 2^-7): normal in f16, products stay normal in f32.
                    let scale = (1.0 + rng.next_unit()) / 256.0;
                    block[off..off + 2].copy_from_slice(&f32_to_f16(scale).to_le_bytes());
                }
            }
        }
    }
    buf
}

/// `n` random f32 values in `[-1, 1)` (activations), deterministic for a given `seed`.
pub fn random_activations(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_signed()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use grist_kernels::formats::{activation_type, dequantize_row, quantize_row, vec_dot_row};

    const TYPES: [GgmlType; 15] = grist_kernels::formats::WEIGHT_TYPES;

    #[test]
    fn random_weights_are_finite_and_distinct_per_row() {
        let (rows, cols) = (3, 512);
        for ty in TYPES {
            assert!(can_synthesise(ty), "{ty}");
            let w = random_weights(ty, rows, cols, 7);
            let rb = row_bytes(ty, cols);
            assert_eq!(w.len(), rows * rb, "{ty}");
            assert_eq!(w.as_bytes().as_ptr() as usize % 8, 0, "{ty}: aligned");
            let bytes = w.as_bytes();
            assert_ne!(bytes[..rb], bytes[rb..2 * rb], "{ty}: rows differ");

            // Dequantized values are finite, and the reference dot with a quantized
            // activation row is finite.
            let mut values = vec![0.0f32; cols];
            dequantize_row(ty, &bytes[..rb], &mut values).unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{ty}: finite values");
            let act_ty = activation_type(ty).unwrap();
            let x = random_activations(cols, 3);
            let mut act = AlignedBytes::zeroed(row_bytes(act_ty, cols));
            quantize_row(act_ty, &x, act.as_bytes_mut()).unwrap();
            let dot = vec_dot_row(ty, cols, &bytes[..rb], act.as_bytes()).unwrap();
            assert!(dot.is_finite(), "{ty}: dot {dot}");
        }
    }

    #[test]
    fn same_seed_same_matrix() {
        let a = random_weights(GgmlType::Q4_K, 2, 256, 42);
        let b = random_weights(GgmlType::Q4_K, 2, 256, 42);
        let c = random_weights(GgmlType::Q4_K, 2, 256, 43);
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), c.as_bytes());
    }

    #[test]
    fn unit_values_stay_in_range() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            let u = rng.next_unit();
            assert!((0.0..1.0).contains(&u));
            let s = rng.next_signed();
            assert!((-1.0..1.0).contains(&s));
        }
    }
}

//! The on-disk block layouts of every block-quantized format grist computes with.
//!
//! Each struct is `#[repr(C)]`, byte-for-byte identical to ggml's `block_*` struct of the
//! same name, so a GGUF tensor's bytes can be reinterpreted as `&[Block…]` without copying
//! (`bytemuck::cast_slice`). All fields are byte arrays or `f16`/`f32`, so every struct has
//! alignment ≤ 4 and no padding; sizes are asserted at compile time below.
//!
//! Scales are stored as raw little-endian `u16` bit patterns of an IEEE half (`f16`), read
//! with [`f16_to_f32`]; this keeps the structs `Pod` and the alignment at 2.
//!
//! Layouts (one block = `QK` values of a row):
//! ```text
//! Q4_0  [d:f16][qs:16B]                       x = d*(q-8),      q = nibble
//! Q4_1  [d:f16][m:f16][qs:16B]                x = d*q + m
//! Q5_0  [d:f16][qh:4B][qs:16B]                x = d*(q-16),     q = nibble | bit<<4
//! Q5_1  [d:f16][m:f16][qh:4B][qs:16B]         x = d*q + m
//! Q8_0  [d:f16][qs:32×i8]                     x = d*q
//! Q8_1  [d:f16][s:f16][qs:32×i8]              x = d*q, s = d*Σq
//! IQ4_NL[d:f16][qs:16B]                       x = d*KVALUES[nibble]
//! Q2_K  [scales:16B][qs:64B][d:f16][dmin:f16] 256 values
//! Q3_K  [hmask:32B][qs:64B][scales:12B][d:f16]
//! Q4_K  [d:f16][dmin:f16][scales:12B][qs:128B]
//! Q5_K  [d:f16][dmin:f16][scales:12B][qh:32B][qs:128B]
//! Q6_K  [ql:128B][qh:64B][scales:16×i8][d:f16]
//! Q8_K  [d:f32][qs:256×i8][bsums:16×i16]
//! IQ4_XS[d:f16][scales_h:u16][scales_l:4B][qs:128B]
//! ```
//! docs/KERNELS.md draws each one with its dequantization formula.

use bytemuck::{Pod, Zeroable};

/// Values per block of the 32-value ("legacy") formats.
pub const QK: usize = 32;
/// Values per super-block of the k-quants and IQ4_XS.
pub const QK_K: usize = 256;

/// Converts the bit pattern of an IEEE half to f32 (exact).
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Rounds an f32 to the nearest IEEE half (ties to even) and returns its bit pattern.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

macro_rules! block {
    ($(#[$doc:meta])* $name:ident, $size:expr, { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
    };
}

block!(
    /// Q4_0: 32 values, 4.5 bits each.
    BlockQ4_0, 18, {
    /// Scale (f16 bits).
    d: u16,
    /// Byte `j` holds value `j` in its low nibble and value `j + 16` in its high nibble.
    qs: [u8; QK / 2],
});

block!(
    /// Q4_1: 32 values with scale and minimum, 5 bits each.
    BlockQ4_1, 20, {
    /// Scale (f16 bits).
    d: u16,
    /// Minimum (f16 bits).
    m: u16,
    /// Nibbles as in Q4_0.
    qs: [u8; QK / 2],
});

block!(
    /// Q5_0: 32 values, 5.5 bits each.
    BlockQ5_0, 22, {
    /// Scale (f16 bits).
    d: u16,
    /// Bit `j` of this little-endian u32 is the 5th bit of value `j`.
    qh: [u8; 4],
    /// Low nibbles as in Q4_0.
    qs: [u8; QK / 2],
});

block!(
    /// Q5_1: 32 values with scale and minimum, 6 bits each.
    BlockQ5_1, 24, {
    /// Scale (f16 bits).
    d: u16,
    /// Minimum (f16 bits).
    m: u16,
    /// 5th bits as in Q5_0.
    qh: [u8; 4],
    /// Low nibbles as in Q4_0.
    qs: [u8; QK / 2],
});

block!(
    /// Q8_0: 32 signed bytes and a scale, 8.5 bits each. Weight format and the activation
    /// format for Q4_0/Q5_0/Q8_0/IQ4_NL weights.
    BlockQ8_0, 34, {
    /// Scale (f16 bits).
    d: u16,
    /// Signed codes.
    qs: [i8; QK],
});

block!(
    /// Q8_1: Q8_0 plus `s = d * Σqs`, the activation format for Q4_1/Q5_1 weights (the sum
    /// folds the weights' minimum into one multiply per block).
    BlockQ8_1, 36, {
    /// Scale (f16 bits).
    d: u16,
    /// `d * Σ qs` (f16 bits).
    s: u16,
    /// Signed codes.
    qs: [i8; QK],
});

block!(
    /// IQ4_NL: 32 values, 4-bit indices into the non-linear table `IQ4NL_VALUES`.
    BlockIQ4_NL, 18, {
    /// Scale (f16 bits).
    d: u16,
    /// Nibbles as in Q4_0.
    qs: [u8; QK / 2],
});

block!(
    /// Q2_K: 256 values in 16 groups of 16, 2.625 bits each.
    BlockQ2_K, 84, {
    /// Per group: low nibble = scale, high nibble = min (both 4-bit).
    scales: [u8; QK_K / 16],
    /// 2-bit codes.
    qs: [u8; QK_K / 4],
    /// Super-block scale for the scales (f16 bits).
    d: u16,
    /// Super-block scale for the mins (f16 bits).
    dmin: u16,
});

block!(
    /// Q3_K: 256 values in 16 groups of 16, 3.4375 bits each.
    BlockQ3_K, 110, {
    /// High (3rd) bit of each code.
    hmask: [u8; QK_K / 8],
    /// Low 2 bits of each code.
    qs: [u8; QK_K / 4],
    /// 16 6-bit scales, packed.
    scales: [u8; 12],
    /// Super-block scale (f16 bits).
    d: u16,
});

block!(
    /// Q4_K: 256 values in 8 groups of 32, 4.5 bits each.
    BlockQ4_K, 144, {
    /// Super-block scale for the scales (f16 bits).
    d: u16,
    /// Super-block scale for the mins (f16 bits).
    dmin: u16,
    /// 8 6-bit scales and 8 6-bit mins, packed.
    scales: [u8; 12],
    /// 4-bit codes.
    qs: [u8; QK_K / 2],
});

block!(
    /// Q5_K: 256 values in 8 groups of 32, 5.5 bits each.
    BlockQ5_K, 176, {
    /// Super-block scale for the scales (f16 bits).
    d: u16,
    /// Super-block scale for the mins (f16 bits).
    dmin: u16,
    /// 8 6-bit scales and 8 6-bit mins, packed as in Q4_K.
    scales: [u8; 12],
    /// 5th bit of each code.
    qh: [u8; QK_K / 8],
    /// Low 4 bits of each code.
    qs: [u8; QK_K / 2],
});

block!(
    /// Q6_K: 256 values in 16 groups of 16, 6.5625 bits each.
    BlockQ6_K, 210, {
    /// Low 4 bits of each code.
    ql: [u8; QK_K / 2],
    /// High 2 bits of each code.
    qh: [u8; QK_K / 4],
    /// Signed 8-bit scale per group.
    scales: [i8; QK_K / 16],
    /// Super-block scale (f16 bits).
    d: u16,
});

block!(
    /// Q8_K: 256 signed bytes with an f32 scale and the sums of each 16 codes; the activation
    /// format for k-quant and IQ4_XS weights (the sums serve the weights' minimums).
    BlockQ8_K, 292, {
    /// Scale.
    d: f32,
    /// Signed codes.
    qs: [i8; QK_K],
    /// `bsums[j] = Σ qs[16j .. 16j+16]`.
    bsums: [i16; QK_K / 16],
});

block!(
    /// IQ4_XS: 256 values in 8 groups of 32, IQ4_NL codes with 6-bit group scales, 4.25 bits.
    BlockIQ4_XS, 136, {
    /// Super-block scale (f16 bits).
    d: u16,
    /// High 2 bits of the 8 group scales.
    scales_h: u16,
    /// Low 4 bits of the 8 group scales.
    scales_l: [u8; QK_K / 64],
    /// Nibbles; each group of 32 as in Q4_0.
    qs: [u8; QK_K / 2],
});

/// The 16 values an IQ4_NL / IQ4_XS nibble indexes (ggml's `kvalues_iq4nl`).
pub const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

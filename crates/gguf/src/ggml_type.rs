//! The ggml tensor element types: their numeric ids (as stored in GGUF tensor infos),
//! names, and the block geometry needed to size a tensor's data.
//!
//! Every quantized format packs `block_elems` consecutive values of one row into a block of
//! `block_bytes` bytes; a row of `n` values therefore occupies `n / block_elems * block_bytes`
//! bytes and `n` must be a multiple of `block_elems`. Plain types (F32, F16, …) are the
//! degenerate case `block_elems == 1`.
//!
//! The table covers ggml's whole type list (ids 0–42, including the three ids that were
//! removed from GGUF files, 31–33 and 36–38, which are rejected), so a file holding a type
//! grist cannot compute with still opens and inspects. Beyond them, grist defines private
//! interleaved layouts of ggml types (ids from [`GRIST_PRIVATE_IDS`]), which only files
//! written by `grist repack` hold.

use std::fmt;

/// A ggml tensor element type, identified by the id GGUF stores for each tensor.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32 = 0,
    /// 16-bit IEEE half float.
    F16 = 1,
    /// 32 values: f16 scale `d`, 16 bytes of 4-bit codes; `x = d * (q - 8)`.
    Q4_0 = 2,
    /// 32 values: f16 scale `d`, f16 min `m`, 4-bit codes; `x = d * q + m`.
    Q4_1 = 3,
    /// 32 values: f16 scale, 5th bits in `qh`, 4-bit low parts; `x = d * (q - 16)`.
    Q5_0 = 6,
    /// 32 values: f16 scale and min, 5-bit codes; `x = d * q + m`.
    Q5_1 = 7,
    /// 32 values: f16 scale, 32 signed bytes; `x = d * q`.
    Q8_0 = 8,
    /// 32 values: f16 scale, f16 `s = d * sum(q)`, 32 signed bytes (activation format).
    Q8_1 = 9,
    /// 256-value super-block, 16 sub-blocks of 16 with 4-bit scales and mins, 2-bit codes.
    Q2_K = 10,
    /// 256-value super-block, 16 sub-blocks with 6-bit scales, 3-bit codes.
    Q3_K = 11,
    /// 256-value super-block, 8 sub-blocks of 32 with 6-bit scales and mins, 4-bit codes.
    Q4_K = 12,
    /// 256-value super-block, 8 sub-blocks of 32 with 6-bit scales and mins, 5-bit codes.
    Q5_K = 13,
    /// 256-value super-block, 16 sub-blocks of 16 with 8-bit scales, 6-bit codes.
    Q6_K = 14,
    /// 256 values: f32 scale, signed bytes, per-16 sums (activation format for k-quants).
    Q8_K = 15,
    /// 2.06 bpw codebook quantization.
    IQ2_XXS = 16,
    /// 2.31 bpw codebook quantization.
    IQ2_XS = 17,
    /// 3.06 bpw codebook quantization.
    IQ3_XXS = 18,
    /// 1.56 bpw codebook quantization.
    IQ1_S = 19,
    /// 32 values: f16 scale, 4-bit indices into a non-linear 16-entry table.
    IQ4_NL = 20,
    /// 3.44 bpw codebook quantization.
    IQ3_S = 21,
    /// 2.5 bpw codebook quantization.
    IQ2_S = 22,
    /// 256-value super-block of IQ4_NL-style codes with 6-bit sub-block scales.
    IQ4_XS = 23,
    /// 8-bit signed integer.
    I8 = 24,
    /// 16-bit signed integer.
    I16 = 25,
    /// 32-bit signed integer.
    I32 = 26,
    /// 64-bit signed integer.
    I64 = 27,
    /// 64-bit IEEE float.
    F64 = 28,
    /// 1.75 bpw codebook quantization.
    IQ1_M = 29,
    /// bfloat16: the top 16 bits of an f32.
    BF16 = 30,
    /// Ternary quantization, 1.69 bpw.
    TQ1_0 = 34,
    /// Ternary quantization, 2.06 bpw.
    TQ2_0 = 35,
    /// 32 values: E8M0 shared exponent, 4-bit E2M1 codes.
    MXFP4 = 39,
    /// 64 values: four UE4M3 sub-block scales, 4-bit E2M1 codes.
    NVFP4 = 40,
    /// 128 values: f16 scale, one sign bit per value.
    Q1_0 = 41,
    /// 64 values: f16 scale, 2-bit codes.
    Q2_0 = 42,
    /// **grist-private**: Q4_1 with 16 rows interleaved per column of two blocks (the 16
    /// rows' 32 scales, their 32 minimums, then their codes as they are, so one SIMD lane
    /// accumulates one row; written by `grist repack`, see
    /// `grist_kernels::formats::interleaved`). Its table geometry is one column's share of
    /// a row, 64 values in 40 bytes: the bytes per value of Q4_1, and rows must be whole
    /// columns. No other engine reads it.
    Q4_1_R16 = 1003,
    /// **grist-private**: Q5_0 with 16 rows interleaved per column of two blocks (the 16
    /// rows' 32 scales, their high bits, then their 4-bit codes, so one SIMD lane
    /// accumulates one row; written by `grist repack`, see
    /// `grist_kernels::formats::interleaved`). Its table geometry is one column's share of
    /// a row, 64 values in 44 bytes: the bytes per value of Q5_0, and rows must be whole
    /// columns. No other engine reads it.
    Q5_0_R16 = 1006,
    /// **grist-private**: Q8_0 with 16 rows interleaved per column of two blocks (the 16
    /// rows' 32 scales, then their codes stored `+ 128` (`xor 0x80`), so one SIMD lane
    /// accumulates one row; written by `grist repack`, see
    /// `grist_kernels::formats::interleaved`). Its table geometry is one column's share of
    /// a row, 64 values in 68 bytes: the bytes per value of Q8_0, and rows must be whole
    /// columns. No other engine reads it.
    Q8_0_R16 = 1008,
    /// **grist-private**: Q4_K with 16 rows interleaved per super-block column (the same
    /// bytes as 16 Q4_K blocks, reordered so one SIMD lane accumulates one row; written by
    /// `grist repack`, see `grist_kernels::formats::interleaved`). No other engine reads it.
    Q4_K_R16 = 1012,
    /// **grist-private**: Q6_K with 16 rows interleaved per super-block column (the same
    /// bytes as 16 Q6_K blocks, reordered for the same one-lane-per-row kernels as
    /// [`GgmlType::Q4_K_R16`]; written by `grist repack`). No other engine reads it.
    Q6_K_R16 = 1014,
}

/// The first id of grist's private types (ggml's ids stop at 42; ik_llama.cpp's private
/// types sit in the hundreds). Private id `1000 + k` is an interleaved layout of ggml type `k`.
pub const GRIST_PRIVATE_IDS: u32 = 1000;

/// Geometry and name of one type: (type, name, values per block, bytes per block).
const TABLE: &[(GgmlType, &str, usize, usize)] = &[
    (GgmlType::F32, "F32", 1, 4),
    (GgmlType::F16, "F16", 1, 2),
    (GgmlType::Q4_0, "Q4_0", 32, 18),
    (GgmlType::Q4_1, "Q4_1", 32, 20),
    (GgmlType::Q5_0, "Q5_0", 32, 22),
    (GgmlType::Q5_1, "Q5_1", 32, 24),
    (GgmlType::Q8_0, "Q8_0", 32, 34),
    (GgmlType::Q8_1, "Q8_1", 32, 36),
    (GgmlType::Q2_K, "Q2_K", 256, 84),
    (GgmlType::Q3_K, "Q3_K", 256, 110),
    (GgmlType::Q4_K, "Q4_K", 256, 144),
    (GgmlType::Q5_K, "Q5_K", 256, 176),
    (GgmlType::Q6_K, "Q6_K", 256, 210),
    (GgmlType::Q8_K, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, "IQ4_XS", 256, 136),
    (GgmlType::I8, "I8", 1, 1),
    (GgmlType::I16, "I16", 1, 2),
    (GgmlType::I32, "I32", 1, 4),
    (GgmlType::I64, "I64", 1, 8),
    (GgmlType::F64, "F64", 1, 8),
    (GgmlType::IQ1_M, "IQ1_M", 256, 56),
    (GgmlType::BF16, "BF16", 1, 2),
    (GgmlType::TQ1_0, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, "MXFP4", 32, 17),
    (GgmlType::NVFP4, "NVFP4", 64, 36),
    (GgmlType::Q1_0, "Q1_0", 128, 18),
    (GgmlType::Q2_0, "Q2_0", 64, 18),
    (GgmlType::Q4_1_R16, "Q4_1_R16", 64, 40),
    (GgmlType::Q5_0_R16, "Q5_0_R16", 64, 44),
    (GgmlType::Q8_0_R16, "Q8_0_R16", 64, 68),
    (GgmlType::Q4_K_R16, "Q4_K_R16", 256, 144),
    (GgmlType::Q6_K_R16, "Q6_K_R16", 256, 210),
];

impl GgmlType {
    /// Every type in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|row| row.0)
    }

    /// Number of types (ggml's and grist's private ones): the length of a table indexed by
    /// [`GgmlType::index`].
    pub const COUNT: usize = TABLE.len();

    /// A dense index `0 .. COUNT` (the position in id order), for per-type tables: ids are
    /// sparse (ggml's removed ids, grist's private range).
    pub fn index(self) -> usize {
        TABLE
            .iter()
            .position(|row| row.0 == self)
            .expect("every GgmlType variant has a table row")
    }

    /// For an interleaved (grist-private) layout, the ggml type whose blocks it reorders and
    /// how many rows it interleaves: `Q4_K_R16` → `(Q4_K, 16)`, `Q6_K_R16` → `(Q6_K, 16)`,
    /// `Q4_1_R16` → `(Q4_1, 16)`.
    /// `None` for ggml's types, whose rows are stored one after another.
    pub fn interleaved(self) -> Option<(GgmlType, usize)> {
        match self {
            GgmlType::Q4_K_R16 => Some((GgmlType::Q4_K, 16)),
            GgmlType::Q4_1_R16 => Some((GgmlType::Q4_1, 16)),
            GgmlType::Q8_0_R16 => Some((GgmlType::Q8_0, 16)),
            GgmlType::Q5_0_R16 => Some((GgmlType::Q5_0, 16)),
            GgmlType::Q6_K_R16 => Some((GgmlType::Q6_K, 16)),
            _ => None,
        }
    }

    /// The type with GGUF id `id`, or `None` for an id ggml does not define (or has removed).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.0 as u32 == id).map(|row| row.0)
    }

    /// The type called `name` (case-insensitive, as printed by `name()`), if any.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|row| row.1.eq_ignore_ascii_case(name))
            .map(|row| row.0)
    }

    fn row(self) -> &'static (GgmlType, &'static str, usize, usize) {
        TABLE
            .iter()
            .find(|row| row.0 == self)
            .expect("every GgmlType variant has a table row")
    }

    /// The numeric id stored in GGUF.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name for the type (`"Q4_K"`, `"F32"`, …).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Number of values one block holds (1 for plain types).
    pub fn block_elems(self) -> usize {
        self.row().2
    }

    /// Number of bytes one block occupies.
    pub fn block_bytes(self) -> usize {
        self.row().3
    }

    /// Whether the type is a block-quantized format (as opposed to a plain number type).
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes taken by `n_elems` values, or `None` if `n_elems` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, n_elems: u64) -> Option<u64> {
        let be = self.block_elems() as u64;
        if !n_elems.is_multiple_of(be) {
            return None;
        }
        (n_elems / be).checked_mul(self.block_bytes() as u64)
    }

    /// Average storage cost in bits per value.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_elems() as f64
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        for removed in [
            4,
            5,
            31,
            32,
            33,
            36,
            37,
            38,
            43,
            1000,
            1011,
            1013,
            1015,
            u32::MAX,
        ] {
            assert_eq!(GgmlType::from_id(removed), None);
        }
    }

    #[test]
    fn dense_indices_and_interleaved_layouts() {
        for (i, t) in GgmlType::all().enumerate() {
            assert_eq!(t.index(), i);
            assert!(i < GgmlType::COUNT);
            if let Some((base, rows)) = t.interleaved() {
                // The bytes per value of the base type (a block may span several of the
                // base's: Q8_0_R16's 64 values are one column of two Q8_0 blocks), a private
                // id derived from it.
                assert_eq!(t.id(), GRIST_PRIVATE_IDS + base.id());
                assert!(t.block_elems().is_multiple_of(base.block_elems()));
                assert_eq!(
                    t.block_bytes() * base.block_elems(),
                    base.block_bytes() * t.block_elems()
                );
                assert!(rows > 1 && base.interleaved().is_none());
            } else {
                assert!(t.id() < GRIST_PRIVATE_IDS);
            }
        }
        assert_eq!(GgmlType::Q4_K_R16.interleaved(), Some((GgmlType::Q4_K, 16)));
        assert_eq!(GgmlType::from_name("q4_k_r16"), Some(GgmlType::Q4_K_R16));
        assert_eq!(GgmlType::Q8_0_R16.interleaved(), Some((GgmlType::Q8_0, 16)));
        assert_eq!(GgmlType::from_name("q8_0_r16"), Some(GgmlType::Q8_0_R16));
        assert_eq!(GgmlType::from_id(1008), Some(GgmlType::Q8_0_R16));
        assert_eq!(
            (GgmlType::from_id(1007), GgmlType::from_id(1009)),
            (None, None)
        );
        assert_eq!(GgmlType::Q8_0_R16.bits_per_weight(), 8.5);
        // Rows of Q8_0_R16 are whole 64-value columns.
        assert_eq!(GgmlType::Q8_0_R16.bytes_for(640), Some(680));
        assert_eq!(GgmlType::Q8_0_R16.bytes_for(96), None);
        assert_eq!(GgmlType::Q5_0_R16.interleaved(), Some((GgmlType::Q5_0, 16)));
        assert_eq!(GgmlType::from_name("q5_0_r16"), Some(GgmlType::Q5_0_R16));
        assert_eq!(GgmlType::from_id(1006), Some(GgmlType::Q5_0_R16));
        assert_eq!(GgmlType::Q5_0_R16.bits_per_weight(), 5.5);
        assert_eq!(GgmlType::Q5_0_R16.bytes_for(896), Some(616));
        assert_eq!(GgmlType::Q5_0_R16.bytes_for(96), None);
        assert_eq!(GgmlType::Q6_K_R16.interleaved(), Some((GgmlType::Q6_K, 16)));
        assert_eq!(GgmlType::from_name("Q6_K_R16"), Some(GgmlType::Q6_K_R16));
        assert_eq!(GgmlType::from_id(1014), Some(GgmlType::Q6_K_R16));
        assert_eq!(GgmlType::Q6_K_R16.bits_per_weight(), 6.5625);
        assert_eq!(GgmlType::Q4_1_R16.interleaved(), Some((GgmlType::Q4_1, 16)));
        assert_eq!(GgmlType::from_name("q4_1_r16"), Some(GgmlType::Q4_1_R16));
        assert_eq!(GgmlType::from_id(1003), Some(GgmlType::Q4_1_R16));
        assert_eq!(GgmlType::Q4_1_R16.bits_per_weight(), 5.0);
        // Rows of Q4_1_R16 are whole 64-value columns (SmolLM2's 576 and 1536 are).
        assert_eq!(GgmlType::Q4_1_R16.bytes_for(576), Some(360));
        assert_eq!(GgmlType::Q4_1_R16.bytes_for(96), None);
        let interleaved: Vec<GgmlType> = GgmlType::all()
            .filter(|t| t.interleaved().is_some())
            .collect();
        assert_eq!(
            interleaved,
            [
                GgmlType::Q4_1_R16,
                GgmlType::Q5_0_R16,
                GgmlType::Q8_0_R16,
                GgmlType::Q4_K_R16,
                GgmlType::Q6_K_R16
            ]
        );
    }

    #[test]
    fn known_sizes() {
        assert_eq!(GgmlType::Q4_K.bits_per_weight(), 4.5);
        assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
        assert_eq!(GgmlType::F32.bytes_for(3), Some(12));
        assert_eq!(GgmlType::Q8_0.bytes_for(u64::MAX - 31), None);
    }
}

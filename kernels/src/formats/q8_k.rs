//! Q8_K: super-blocks of 256 values, an f32 scale, 256 signed bytes and the sum of each 16
//! codes (292 bytes). The activation format for the k-quants and IQ4_XS: the sums let a
//! weight format's per-group minimum be applied with one multiply per group.
//!
//! ```text
//! [d: f32][qs: 256 × i8][bsums: 16 × i16]    x[j] = d * qs[j],  bsums[g] = Σ qs[16g..16g+16]
//! ```

use super::search::nearest_int;
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{BlockQ8_K, QK_K};
use grist_gguf::GgmlType;

impl BlockFormat for BlockQ8_K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Activation = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = b.d * q as f32;
            }
        }
    }

    /// `quantize_row_q8_K_ref`: the value of largest magnitude maps to -127
    /// (`iscale = -127/max`), codes `nearest_int(iscale·x)` capped at 127, `d = 1/iscale`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut max = 0.0f32;
            let mut amax = 0.0f32;
            for &v in xb {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            let iscale = -127.0 / max;
            // A block of only subnormal values overflows the inverse scale; its scale
            // `1 / iscale` would be 0 anyway, so it is stored as the all-zero block (ggml
            // would compute codes from infinities; every dot product with it is 0 either way).
            if amax == 0.0 || !iscale.is_finite() {
                b.d = 0.0;
                b.qs = [0; QK_K];
                b.bsums = [0; QK_K / 16];
                continue;
            }
            for (q, &v) in b.qs.iter_mut().zip(xb) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (g, s) in b.bsums.iter_mut().enumerate() {
                *s = b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i16).sum();
            }
            b.d = 1.0 / iscale;
        }
    }

    /// Q8_K·Q8_K (not a ggml kernel; used to test activations): `Σ qw·qa · dw·da`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_K]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let sumi: i32 =
                x.qs.iter()
                    .zip(&y.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            sumf += sumi as f32 * (x.d * y.d);
        }
        sumf
    }
}

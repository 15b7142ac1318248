//! Q8_1: Q8_0 plus `s = d·Σqs` (36 bytes); the activation format for Q4_1 and Q5_1 weights,
//! where `s` folds the weights' minimum into a single multiply per block.
//!
//! ```text
//! [d: f16][s: f16][qs: 32 × i8]     x[j] = d * qs[j]
//! ```

use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ8_1, QK};
use grist_gguf::GgmlType;

impl BlockFormat for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK_ELEMS: usize = QK;
    type Activation = BlockQ8_1;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = q as f32 * d;
            }
        }
    }

    /// `quantize_row_q8_1_ref`: as Q8_0, plus `s = fp16(Σq · d)` with the f32 `d`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            let mut sum = 0i32;
            for j in 0..QK / 2 {
                let v0 = xb[j] * id;
                let v1 = xb[j + QK / 2] * id;
                b.qs[j] = v0.round() as i8;
                b.qs[j + QK / 2] = v1.round() as i8;
                sum += b.qs[j] as i32 + b.qs[j + QK / 2] as i32;
            }
            b.s = f32_to_f16(sum as f32 * d);
        }
    }

    /// Q8_1·Q8_1 (not a ggml kernel, provided for completeness): `Σ qw·qa · dw·da`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let sumi: i32 =
                x.qs.iter()
                    .zip(&y.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            sumf += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
        }
        sumf
    }
}

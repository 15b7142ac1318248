//! Q8_0: blocks of 32 values, an f16 scale and 32 signed bytes (34 bytes, 8.5 bits/value).
//!
//! ```text
//! [d: f16][qs: 32 × i8]        x[j] = d * qs[j]
//! ```
//! Also the activation format for Q4_0, Q5_0, Q8_0 and IQ4_NL weights.

use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ8_0, QK};
use grist_gguf::GgmlType;

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK_ELEMS: usize = QK;
    type Activation = BlockQ8_0;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = q as f32 * d;
            }
        }
    }

    /// `quantize_row_q8_0_ref`: `d = amax / 127`, `q = roundf(x / d)`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            for (q, &v) in b.qs.iter_mut().zip(xb) {
                *q = (v * id).round() as i8;
            }
        }
    }

    /// `ggml_vec_dot_q8_0_q8_0_generic`: per block `Σ qw·qa` in i32, times `dw·da`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
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

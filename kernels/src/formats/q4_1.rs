//! Q4_1: blocks of 32 values, f16 scale and minimum, 4-bit codes (20 bytes, 5 bits/value).
//!
//! ```text
//! [d: f16][m: f16][qs: 16 B]     byte j = code[j] | code[j+16] << 4
//! x[j] = d * code[j] + m
//! ```

use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ4_1, BlockQ8_1, QK};
use grist_gguf::GgmlType;

impl BlockFormat for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK_ELEMS: usize = QK;
    type Activation = BlockQ8_1;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            let m = f16_to_f32(b.m);
            for j in 0..QK / 2 {
                let x0 = (b.qs[j] & 0x0F) as i32;
                let x1 = (b.qs[j] >> 4) as i32;
                y[j] = x0 as f32 * d + m;
                y[j + QK / 2] = x1 as f32 * d + m;
            }
        }
    }

    /// `quantize_row_q4_1_ref`: `d = (max - min) / 15`, codes `trunc((x - min)/d + 0.5)`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let mut min = f32::MAX;
            let mut max = -f32::MAX;
            for &v in xb {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            b.m = f32_to_f16(min);
            for j in 0..QK / 2 {
                let x0 = (xb[j] - min) * id;
                let x1 = (xb[j + QK / 2] - min) * id;
                let q0 = ((x0 + 0.5) as i8).min(15) as u8;
                let q1 = ((x1 + 0.5) as i8).min(15) as u8;
                b.qs[j] = q0 | (q1 << 4);
            }
        }
    }

    /// `ggml_vec_dot_q4_1_q8_1_generic`: `dw·da·Σ q·qa + m·s` per block.
    fn vec_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..QK / 2 {
                let v0 = (x.qs[j] & 0x0F) as i32;
                let v1 = (x.qs[j] >> 4) as i32;
                sumi0 += v0 * y.qs[j] as i32;
                sumi1 += v1 * y.qs[j + QK / 2] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (f16_to_f32(x.d) * f16_to_f32(y.d)) * sumi as f32
                + f16_to_f32(x.m) * f16_to_f32(y.s);
        }
        sumf
    }
}

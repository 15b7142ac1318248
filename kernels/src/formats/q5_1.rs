//! Q5_1: blocks of 32 values, f16 scale and minimum, 5-bit codes (24 bytes, 6 bits/value).
//!
//! ```text
//! [d: f16][m: f16][qh: u32 LE][qs: 16 B]   codes packed as in Q5_0
//! x[j] = d * code[j] + m
//! ```

use super::q5_0::q5_codes;
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ5_1, BlockQ8_1, QK};
use grist_gguf::GgmlType;

impl BlockFormat for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK_ELEMS: usize = QK;
    type Activation = BlockQ8_1;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            let m = f16_to_f32(b.m);
            let qh = u32::from_le_bytes(b.qh);
            for j in 0..QK / 2 {
                let (c0, c1) = q5_codes(&b.qs, qh, j);
                y[j] = c0 as f32 * d + m;
                y[j + QK / 2] = c1 as f32 * d + m;
            }
        }
    }

    /// `quantize_row_q5_1_ref`: `d = (max - min) / 31`, codes `trunc((x - min)/d + 0.5)`.
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
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            b.m = f32_to_f16(min);
            let mut qh = 0u32;
            for j in 0..QK / 2 {
                let x0 = (xb[j] - min) * id;
                let x1 = (xb[j + QK / 2] - min) * id;
                let q0 = (x0 + 0.5) as u8;
                let q1 = (x1 + 0.5) as u8;
                b.qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
                qh |= ((q0 as u32 & 0x10) >> 4) << j;
                qh |= ((q1 as u32 & 0x10) >> 4) << (j + QK / 2);
            }
            b.qh = qh.to_le_bytes();
        }
    }

    /// `ggml_vec_dot_q5_1_q8_1_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let qh = u32::from_le_bytes(x.qh);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..QK / 2 {
                let (c0, c1) = q5_codes(&x.qs, qh, j);
                sumi0 += c0 as i32 * y.qs[j] as i32;
                sumi1 += c1 as i32 * y.qs[j + QK / 2] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (f16_to_f32(x.d) * f16_to_f32(y.d)) * sumi as f32
                + f16_to_f32(x.m) * f16_to_f32(y.s);
        }
        sumf
    }
}

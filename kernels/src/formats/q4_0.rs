//! Q4_0: blocks of 32 values, an f16 scale and 4-bit codes (18 bytes, 4.5 bits/value).
//!
//! ```text
//! [d: f16][qs: 16 B]     byte j = code[j] | code[j+16] << 4
//! x[j] = d * (code[j] - 8)
//! ```

use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ4_0, BlockQ8_0, QK};
use grist_gguf::GgmlType;

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK_ELEMS: usize = QK;
    type Activation = BlockQ8_0;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            for j in 0..QK / 2 {
                let x0 = (b.qs[j] & 0x0F) as i32 - 8;
                let x1 = (b.qs[j] >> 4) as i32 - 8;
                y[j] = x0 as f32 * d;
                y[j + QK / 2] = x1 as f32 * d;
            }
        }
    }

    /// `quantize_row_q4_0_ref`: the value of largest magnitude maps to code 0 (`d = max/-8`),
    /// codes are `trunc(x/d + 8.5)` capped at 15.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let mut amax = 0.0f32;
            let mut max = 0.0f32;
            for &v in xb {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            for j in 0..QK / 2 {
                let x0 = xb[j] * id;
                let x1 = xb[j + QK / 2] * id;
                let q0 = ((x0 + 8.5) as i8).min(15) as u8;
                let q1 = ((x1 + 8.5) as i8).min(15) as u8;
                b.qs[j] = q0 | (q1 << 4);
            }
        }
    }

    /// `ggml_vec_dot_q4_0_q8_0_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..QK / 2 {
                let v0 = (x.qs[j] & 0x0F) as i32 - 8;
                let v1 = (x.qs[j] >> 4) as i32 - 8;
                sumi0 += v0 * y.qs[j] as i32;
                sumi1 += v1 * y.qs[j + QK / 2] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += sumi as f32 * f16_to_f32(x.d) * f16_to_f32(y.d);
        }
        sumf
    }
}

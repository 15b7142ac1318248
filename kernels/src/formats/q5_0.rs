//! Q5_0: blocks of 32 values, an f16 scale and 5-bit codes (22 bytes, 5.5 bits/value).
//!
//! ```text
//! [d: f16][qh: u32 LE][qs: 16 B]   low nibbles as Q4_0; bit j of qh = bit 4 of code[j]
//! x[j] = d * (code[j] - 16)
//! ```

use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ5_0, BlockQ8_0, QK};
use grist_gguf::GgmlType;

/// The 5-bit codes `(code[j], code[j+16])` of byte `j` of a Q5_0/Q5_1 block.
#[inline(always)]
pub(crate) fn q5_codes(qs: &[u8; 16], qh: u32, j: usize) -> (u8, u8) {
    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
    ((qs[j] & 0x0F) | xh0, (qs[j] >> 4) | xh1)
}

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK_ELEMS: usize = QK;
    type Activation = BlockQ8_0;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            let qh = u32::from_le_bytes(b.qh);
            for j in 0..QK / 2 {
                let (c0, c1) = q5_codes(&b.qs, qh, j);
                y[j] = (c0 as i32 - 16) as f32 * d;
                y[j + QK / 2] = (c1 as i32 - 16) as f32 * d;
            }
        }
    }

    /// `quantize_row_q5_0_ref`: `d = max / -16`, codes `trunc(x/d + 16.5)` capped at 31.
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
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            let mut qh = 0u32;
            for j in 0..QK / 2 {
                let x0 = xb[j] * id;
                let x1 = xb[j + QK / 2] * id;
                let q0 = ((x0 + 16.5) as i8).min(31) as u8;
                let q1 = ((x1 + 16.5) as i8).min(31) as u8;
                b.qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
                qh |= ((q0 as u32 & 0x10) >> 4) << j;
                qh |= ((q1 as u32 & 0x10) >> 4) << (j + QK / 2);
            }
            b.qh = qh.to_le_bytes();
        }
    }

    /// `ggml_vec_dot_q5_0_q8_0_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let qh = u32::from_le_bytes(x.qh);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..QK / 2 {
                let (c0, c1) = q5_codes(&x.qs, qh, j);
                sumi0 += (c0 as i32 - 16) * y.qs[j] as i32;
                sumi1 += (c1 as i32 - 16) * y.qs[j + QK / 2] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (f16_to_f32(x.d) * f16_to_f32(y.d)) * sumi as f32;
        }
        sumf
    }
}

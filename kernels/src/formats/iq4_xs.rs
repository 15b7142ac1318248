//! IQ4_XS: super-blocks of 256 values in 8 groups of 32; IQ4_NL indices with a 6-bit signed
//! scale per group (136 bytes, 4.25 bits/value).
//!
//! ```text
//! [d: f16][scales_h: u16][scales_l: 4 B][qs: 128 B]
//! ls[g] = (scales_l[g/2] >> 4*(g%2) & 0xF) | ((scales_h >> 2g) & 3) << 4     (0..63)
//! x[32g + j] = d * (ls[g] - 32) * IQ4NL_VALUES[idx]      (each group's 16 bytes as IQ4_NL)
//! ```

use super::iq4_nl::quantize_iq4_nl_impl;
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, BlockIQ4_XS, BlockQ8_K, IQ4NL_VALUES, QK_K};
use grist_gguf::GgmlType;

/// The 6-bit scale (0..63, bias 32) of group `ib` of an IQ4_XS block.
#[inline(always)]
fn group_scale(b: &BlockIQ4_XS, ib: usize) -> i32 {
    (((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32)
        | ((((b.scales_h >> (2 * ib)) & 3) as i32) << 4)
}

impl BlockFormat for BlockIQ4_XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const BLOCK_ELEMS: usize = QK_K;
    type Activation = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            for ib in 0..QK_K / 32 {
                let dl = d * (group_scale(b, ib) - 32) as f32;
                let qs = &b.qs[16 * ib..16 * ib + 16];
                let yb = &mut y[32 * ib..32 * ib + 32];
                for j in 0..16 {
                    yb[j] = dl * IQ4NL_VALUES[(qs[j] & 0xF) as usize] as f32;
                    yb[j + 16] = dl * IQ4NL_VALUES[(qs[j] >> 4) as usize] as f32;
                }
            }
        }
    }

    /// `quantize_iq4_xs` without imatrix: `quantize_row_iq4_nl_impl(256, 32, …, ntry = 7)`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        let mut scales = [0.0f32; QK_K / 32];
        let mut l = [0u8; QK_K];
        for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let r = quantize_iq4_nl_impl(xb, QK_K, &mut scales, &mut l, 7);
            b.d = r.d;
            b.scales_h = r.scales_h;
            b.scales_l = r.scales_l;
            b.qs = r.qs;
        }
    }

    /// `ggml_vec_dot_iq4_xs_q8_K_generic`: integer sum per group of 32, one float
    /// multiply-add per group.
    fn vec_dot(w: &[Self], a: &[BlockQ8_K]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let d4d8 = f16_to_f32(x.d) * y.d;
            for ib in 0..QK_K / 32 {
                let ls = group_scale(x, ib);
                let qs = &x.qs[16 * ib..16 * ib + 16];
                let q8 = &y.qs[32 * ib..32 * ib + 32];
                let mut sumi1 = 0i32;
                let mut sumi2 = 0i32;
                for j in 0..16 {
                    sumi1 += q8[j] as i32 * IQ4NL_VALUES[(qs[j] & 0xF) as usize] as i32;
                    sumi2 += q8[j + 16] as i32 * IQ4NL_VALUES[(qs[j] >> 4) as usize] as i32;
                }
                sumf += d4d8 * (ls - 32) as f32 * (sumi1 + sumi2) as f32;
            }
        }
        sumf
    }
}

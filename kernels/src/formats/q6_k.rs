//! Q6_K: super-blocks of 256 values in 16 groups of 16, each with a signed 8-bit scale, and
//! 6-bit codes (210 bytes, 6.5625 bits/value).
//!
//! ```text
//! [ql: 128 B][qh: 64 B][scales: 16 × i8][d: f16]
//! for half n (128 values), quarter k (32 values), l < 32:  v = 128n + 32k + l
//!   low 4 bits:  ql[64n + l + 32(k&1)] >> 4(k>>1) & 15
//!   high 2 bits: qh[32n + l] >> 2k & 3
//! x[v] = d * scales[v/16] * (code - 32)
//! ```

use super::search::{make_qx_quants, nearest_int, GROUP_MAX_EPS};
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ6_K, BlockQ8_K, QK_K};
use grist_gguf::GgmlType;

/// The 256 signed codes (`code - 32`, -32..31) of a Q6_K block in value order.
#[inline]
fn codes(b: &BlockQ6_K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for n in 0..2 {
        let ql = &b.ql[64 * n..64 * n + 64];
        let qh = &b.qh[32 * n..32 * n + 32];
        let y = &mut q[128 * n..128 * n + 128];
        for l in 0..32 {
            y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    q
}

impl BlockFormat for BlockQ6_K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Activation = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            let q = codes(b);
            for v in 0..QK_K {
                y[v] = d * b.scales[v / 16] as f32 * q[v] as f32;
            }
        }
    }

    /// `quantize_row_q6_K_ref`: `make_qx_quants(16, 32, …, rmse_type 1)` per group, group
    /// scales quantized to i8 with `iscale = -128/max_scale`, then every value re-quantized.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut l = [0i8; QK_K];
            let mut scales = [0.0f32; QK_K / 16];
            let mut max_scale = 0.0f32;
            let mut max_abs_scale = 0.0f32;
            for ib in 0..QK_K / 16 {
                let s = make_qx_quants(
                    32,
                    &xb[16 * ib..16 * ib + 16],
                    &mut l[16 * ib..16 * ib + 16],
                    None,
                );
                scales[ib] = s;
                if s.abs() > max_abs_scale {
                    max_abs_scale = s.abs();
                    max_scale = s;
                }
            }
            if max_abs_scale < GROUP_MAX_EPS {
                *b = bytemuck::Zeroable::zeroed();
                b.d = f32_to_f16(0.0);
                continue;
            }
            let iscale = -128.0 / max_scale;
            b.d = f32_to_f16(1.0 / iscale);
            for ib in 0..QK_K / 16 {
                b.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
            }
            for j in 0..QK_K / 16 {
                let d = f16_to_f32(b.d) * b.scales[j] as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let q = nearest_int(xb[16 * j + ii] / d).clamp(-32, 31);
                    l[16 * j + ii] = (q + 32) as i8;
                }
            }
            let lu: [u8; QK_K] = bytemuck::cast(l);
            for n in 0..2 {
                let base = 128 * n;
                for i in 0..32 {
                    let q1 = lu[base + i] & 0xF;
                    let q2 = lu[base + i + 32] & 0xF;
                    let q3 = lu[base + i + 64] & 0xF;
                    let q4 = lu[base + i + 96] & 0xF;
                    b.ql[64 * n + i] = q1 | (q3 << 4);
                    b.ql[64 * n + i + 32] = q2 | (q4 << 4);
                    b.qh[32 * n + i] = (lu[base + i] >> 4)
                        | ((lu[base + i + 32] >> 4) << 2)
                        | ((lu[base + i + 64] >> 4) << 4)
                        | ((lu[base + i + 96] >> 4) << 6);
                }
            }
        }
    }

    /// Integer sum `Σ_g scale[g] · Σ q·a` per super-block, then one multiply by `d·da`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_K]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let q = codes(x);
            let mut isum = 0i32;
            for g in 0..QK_K / 16 {
                let mut s = 0i32;
                for j in 16 * g..16 * g + 16 {
                    s += q[j] as i32 * y.qs[j] as i32;
                }
                isum += x.scales[g] as i32 * s;
            }
            sumf += f16_to_f32(x.d) * y.d * isum as f32;
        }
        sumf
    }
}

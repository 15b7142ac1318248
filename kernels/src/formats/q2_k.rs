//! Q2_K: super-blocks of 256 values in 16 groups of 16, each with a 4-bit scale and a 4-bit
//! min scaled by two f16 super-scales, 2-bit codes (84 bytes, 2.625 bits/value).
//!
//! ```text
//! [scales: 16 B][qs: 64 B][d: f16][dmin: f16]
//! scales[g] = sc | m << 4
//! for half n (128 values), quarter j (32 values), l < 32:  v = 128n + 32j + l
//!   code = qs[32n + l] >> 2j & 3
//! x[v] = d * sc[v/16] * code - dmin * m[v/16]
//! ```

use super::search::{make_qkx2_quants, nearest_int, Qkx2Search};
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ2_K, BlockQ8_K, QK_K};
use grist_gguf::GgmlType;

/// The 256 codes (0..3) of a Q2_K block in value order.
#[inline]
fn codes(b: &BlockQ2_K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for n in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                q[128 * n + 32 * j + l] = (b.qs[32 * n + l] >> (2 * j)) & 3;
            }
        }
    }
    q
}

impl BlockFormat for BlockQ2_K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Activation = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            let min = f16_to_f32(b.dmin);
            let q = codes(b);
            for v in 0..QK_K {
                let sc = b.scales[v / 16];
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                y[v] = dl * q[v] as f32 - ml;
            }
        }
    }

    /// `quantize_row_q2_K_ref`: `make_qkx2_quants(16, 3, weights |x|, rmin -0.5, rdelta 0.1,
    /// nstep 15, use_mad)` per group, 4-bit scales and mins, then every value re-quantized.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        const Q4SCALE: f32 = 15.0;
        let search = Qkx2Search {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut l = [0u8; QK_K];
            let mut laux = [0u8; 16];
            let mut weights = [0.0f32; 16];
            let mut mins = [0.0f32; QK_K / 16];
            let mut scales = [0.0f32; QK_K / 16];
            let mut max_scale = 0.0f32;
            let mut max_min = 0.0f32;
            for j in 0..QK_K / 16 {
                let xg = &xb[16 * j..16 * j + 16];
                for (w, &v) in weights.iter_mut().zip(xg) {
                    *w = v.abs();
                }
                let (s, m) = make_qkx2_quants(
                    3,
                    xg,
                    &weights,
                    &mut l[16 * j..16 * j + 16],
                    &mut laux,
                    &search,
                );
                scales[j] = s;
                mins[j] = m;
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            if max_scale > 0.0 {
                let iscale = Q4SCALE / max_scale;
                for j in 0..QK_K / 16 {
                    b.scales[j] = nearest_int(iscale * scales[j]) as u8;
                }
                b.d = f32_to_f16(max_scale / Q4SCALE);
            } else {
                b.scales = [0; QK_K / 16];
                b.d = f32_to_f16(0.0);
            }
            if max_min > 0.0 {
                let iscale = Q4SCALE / max_min;
                for j in 0..QK_K / 16 {
                    b.scales[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
                }
                b.dmin = f32_to_f16(max_min / Q4SCALE);
            } else {
                b.dmin = f32_to_f16(0.0);
            }
            for j in 0..QK_K / 16 {
                let d = f16_to_f32(b.d) * (b.scales[j] & 0xF) as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = f16_to_f32(b.dmin) * (b.scales[j] >> 4) as f32;
                for ii in 0..16 {
                    let q = nearest_int((xb[16 * j + ii] + dm) / d).clamp(0, 3);
                    l[16 * j + ii] = q as u8;
                }
            }
            for n in 0..2 {
                let j = 128 * n;
                for i in 0..32 {
                    b.qs[32 * n + i] = l[j + i]
                        | (l[j + i + 32] << 2)
                        | (l[j + i + 64] << 4)
                        | (l[j + i + 96] << 6);
                }
            }
        }
    }

    /// `ggml_vec_dot_q2_K_q8_K_generic`: `d·da·Σ sc·q·a - dmin·da·Σ m·bsums`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_K]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let q = codes(x);
            let mut summs = 0i32;
            for j in 0..QK_K / 16 {
                summs += y.bsums[j] as i32 * (x.scales[j] >> 4) as i32;
            }
            let mut isum = 0i32;
            for g in 0..QK_K / 16 {
                let mut s = 0i32;
                for j in 16 * g..16 * g + 16 {
                    s += q[j] as i32 * y.qs[j] as i32;
                }
                isum += (x.scales[g] & 0xF) as i32 * s;
            }
            let dall = y.d * f16_to_f32(x.d);
            let dmin = y.d * f16_to_f32(x.dmin);
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}

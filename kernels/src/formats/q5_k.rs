//! Q5_K: super-blocks of 256 values in 8 groups of 32 with 6-bit scales and mins as in Q4_K,
//! 5-bit codes (176 bytes, 5.5 bits/value).
//!
//! ```text
//! [d: f16][dmin: f16][scales: 12 B (as Q4_K)][qh: 32 B][qs: 128 B]
//! qs as Q4_K (low 4 bits); bit 2c of qh[l] = bit 4 of value 64c+l, bit 2c+1 = of value 64c+32+l
//! x = d*sc[g] * q - dmin*m[g]
//! ```

use super::q4_k::{dot_groups32, dot_mins, quantize_kx, scales_mins};
use super::search::{get_scale_min_k4, Qkx2Search};
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, BlockQ5_K, BlockQ8_K, QK_K};
use grist_gguf::GgmlType;

/// The 256 5-bit codes of a Q5_K block in value order.
#[inline]
fn codes(b: &BlockQ5_K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for c in 0..4 {
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for l in 0..32 {
            let hi1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let hi2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            q[64 * c + l] = (b.qs[32 * c + l] & 0xF) + hi1;
            q[64 * c + 32 + l] = (b.qs[32 * c + l] >> 4) + hi2;
        }
    }
    q
}

impl BlockFormat for BlockQ5_K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Activation = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            let min = f16_to_f32(b.dmin);
            let q = codes(b);
            for g in 0..8 {
                let (sc, m) = get_scale_min_k4(g, &b.scales);
                let (dl, ml) = (d * sc as f32, min * m as f32);
                for l in 32 * g..32 * g + 32 {
                    y[l] = dl * q[l] as f32 - ml;
                }
            }
        }
    }

    /// `quantize_row_q5_K_ref`: `make_qkx2_quants(32, 31, …, rmin -0.5, rdelta 0.1, nstep 15)`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        let search = Qkx2Search {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let (d, dmin, scales, l) = quantize_kx(xb, 31, &search);
            b.d = d;
            b.dmin = dmin;
            b.scales = scales;
            b.qh = [0; QK_K / 8];
            let (mut m1, mut m2) = (1u8, 2u8);
            for c in 0..4 {
                for j in 0..32 {
                    let mut l1 = l[64 * c + j];
                    if l1 > 15 {
                        l1 -= 16;
                        b.qh[j] |= m1;
                    }
                    let mut l2 = l[64 * c + j + 32];
                    if l2 > 15 {
                        l2 -= 16;
                        b.qh[j] |= m2;
                    }
                    b.qs[32 * c + j] = l1 | (l2 << 4);
                }
                m1 <<= 2;
                m2 <<= 2;
            }
        }
    }

    /// As Q4_K with 5-bit codes.
    fn vec_dot(w: &[Self], a: &[BlockQ8_K]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let (sc, m) = scales_mins(&x.scales);
            let isum = dot_groups32(&codes(x), &sc, y);
            let msum = dot_mins(&m, y);
            let d = f16_to_f32(x.d) * y.d;
            let dmin = f16_to_f32(x.dmin) * y.d;
            sumf += d * isum as f32 - dmin * msum as f32;
        }
        sumf
    }
}

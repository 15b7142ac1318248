//! Q3_K: super-blocks of 256 values in 16 groups of 16 with 6-bit signed scales, 3-bit codes
//! (110 bytes, 3.4375 bits/value).
//!
//! ```text
//! [hmask: 32 B][qs: 64 B][scales: 12 B][d: f16]
//! for half n (128 values), quarter j (32 values), l < 32:  v = 128n + 32j + l
//!   low 2 bits: qs[32n + l] >> 2j & 3;   high bit: hmask[l] >> (4n + j) & 1
//! scale s (0..15): low 4 bits = s<8 ? scales[s] & 15 : scales[s-8] >> 4,
//!                  high 2 bits = scales[8 + s%4] >> 2(s/4) & 3
//! x[v] = d * (scale[v/16] - 32) * (low2 - (high ? 0 : 4))
//! ```

use super::search::{make_q3_quants, nearest_int};
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ3_K, BlockQ8_K, QK_K};
use grist_gguf::GgmlType;

/// The 16 group scales of a Q3_K block, bias removed (-32..31).
#[inline]
fn unpack_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (lo | (hi << 4)) as i8 - 32;
    }
    out
}

/// The 256 signed codes (-4..3) of a Q3_K block in value order.
#[inline]
fn codes(b: &BlockQ3_K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for n in 0..2 {
        for j in 0..4 {
            let m = 1u8 << (4 * n + j);
            for l in 0..32 {
                let low = ((b.qs[32 * n + l] >> (2 * j)) & 3) as i8;
                q[128 * n + 32 * j + l] = low - if b.hmask[l] & m != 0 { 0 } else { 4 };
            }
        }
    }
    q
}

impl BlockFormat for BlockQ3_K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Activation = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d_all = f16_to_f32(b.d);
            let sc = unpack_scales(&b.scales);
            let q = codes(b);
            for v in 0..QK_K {
                let dl = d_all * sc[v / 16] as f32;
                y[v] = dl * q[v] as f32;
            }
        }
    }

    /// `quantize_row_q3_K_ref`: `make_q3_quants(16, 4, …, do_rmse)` per group, 6-bit group
    /// scales with `iscale = -32/max_scale`, then every value re-quantized.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut l = [0i8; QK_K];
            let mut scales = [0.0f32; QK_K / 16];
            let mut max_scale = 0.0f32;
            let mut amax = 0.0f32;
            for j in 0..QK_K / 16 {
                scales[j] =
                    make_q3_quants(4, &xb[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
                let scale = scales[j].abs();
                if scale > amax {
                    amax = scale;
                    max_scale = scales[j];
                }
            }
            b.scales = [0; 12];
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for j in 0..QK_K / 16 {
                    // C: `int8_t l = nearest_int(…)` truncates to 8 bits before clamping.
                    let lv = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
                    let lu = lv as u8;
                    if j < 8 {
                        b.scales[j] = lu & 0xF;
                    } else {
                        b.scales[j - 8] |= (lu & 0xF) << 4;
                    }
                    b.scales[j % 4 + 8] |= (lu >> 4) << (2 * (j / 4));
                }
                b.d = f32_to_f16(1.0 / iscale);
            } else {
                b.d = f32_to_f16(0.0);
            }
            let sc = unpack_scales(&b.scales);
            for j in 0..QK_K / 16 {
                let d = f16_to_f32(b.d) * sc[j] as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let q = nearest_int(xb[16 * j + ii] / d).clamp(-4, 3);
                    l[16 * j + ii] = (q + 4) as i8;
                }
            }
            b.hmask = [0; QK_K / 8];
            let (mut m, mut hm) = (0usize, 1u8);
            for lj in l.iter_mut() {
                if *lj > 3 {
                    b.hmask[m] |= hm;
                    *lj -= 4;
                }
                m += 1;
                if m == QK_K / 8 {
                    m = 0;
                    hm <<= 1;
                }
            }
            for n in 0..2 {
                let j = 128 * n;
                for i in 0..32 {
                    b.qs[32 * n + i] = (l[j + i]
                        | (l[j + i + 32] << 2)
                        | (l[j + i + 64] << 4)
                        | (l[j + i + 96] << 6)) as u8;
                }
            }
        }
    }

    /// Integer sum `Σ_g (scale[g]-32) · Σ q·a` per super-block, then one multiply by `d·da`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_K]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let sc = unpack_scales(&x.scales);
            let q = codes(x);
            let mut isum = 0i32;
            for g in 0..QK_K / 16 {
                let mut s = 0i32;
                for j in 16 * g..16 * g + 16 {
                    s += q[j] as i32 * y.qs[j] as i32;
                }
                isum += sc[g] as i32 * s;
            }
            sumf += f16_to_f32(x.d) * y.d * isum as f32;
        }
        sumf
    }
}

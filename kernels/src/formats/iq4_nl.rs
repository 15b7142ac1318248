//! IQ4_NL: blocks of 32 values, an f16 scale and 4-bit indices into a fixed non-linear table
//! (18 bytes, 4.5 bits/value). The table is denser near zero, where weights concentrate.
//!
//! ```text
//! [d: f16][qs: 16 B]     byte j = idx[j] | idx[j+16] << 4
//! x[j] = d * IQ4NL_VALUES[idx[j]]      IQ4NL_VALUES = {-127, -104, …, 89, 113}
//! ```

use super::search::{best_index_int8, nearest_int, GROUP_MAX_EPS};
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockIQ4_NL, BlockQ8_0, IQ4NL_VALUES, QK};
use grist_gguf::GgmlType;

impl BlockFormat for BlockIQ4_NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const BLOCK_ELEMS: usize = QK;
    type Activation = BlockQ8_0;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            for j in 0..QK / 2 {
                y[j] = d * IQ4NL_VALUES[(b.qs[j] & 0xF) as usize] as f32;
                y[j + QK / 2] = d * IQ4NL_VALUES[(b.qs[j] >> 4) as usize] as f32;
            }
        }
    }

    /// What llama-quantize runs (`quantize_iq4_nl` without imatrix): ggml's
    /// `quantize_row_iq4_nl_impl` with `ntry = 7` and weights `x²`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        let mut scales = [0.0f32; 1];
        let mut l = [0u8; QK];
        for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let r = quantize_iq4_nl_impl(xb, QK, &mut scales, &mut l, 7);
            b.d = r.d;
            b.qs.copy_from_slice(&r.qs[..QK / 2]);
        }
    }

    /// `ggml_vec_dot_iq4_nl_q8_0_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        check_dot_len(w, a);
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let d = f16_to_f32(y.d) * f16_to_f32(x.d);
            let mut sumi1 = 0i32;
            let mut sumi2 = 0i32;
            for j in 0..QK / 2 {
                sumi1 += y.qs[j] as i32 * IQ4NL_VALUES[(x.qs[j] & 0xF) as usize] as i32;
                sumi2 += y.qs[j + QK / 2] as i32 * IQ4NL_VALUES[(x.qs[j] >> 4) as usize] as i32;
            }
            sumf += d * (sumi1 + sumi2) as f32;
        }
        sumf
    }
}

/// Output of [`quantize_iq4_nl_impl`] for one super-block.
pub(crate) struct Iq4Quantized {
    /// Super-block scale (f16 bits).
    pub d: u16,
    /// Packed indices (only the first `super_block_size / 2` bytes are meaningful).
    pub qs: [u8; 128],
    /// IQ4_XS: high 2 bits of the 8 group scales.
    pub scales_h: u16,
    /// IQ4_XS: low 4 bits of the 8 group scales.
    pub scales_l: [u8; 4],
}

/// ggml's `quantize_row_iq4_nl_impl` without importance weights (weights `x²`), shared by
/// IQ4_NL (`super_block_size = 32`, one group) and IQ4_XS (256, eight groups of 32 with
/// 6-bit scales). For each group: start from `d = max/127`, then try the 2·ntry+1 scales
/// `max / (v0 + t)` and keep the best weighted least-squares fit.
pub(crate) fn quantize_iq4_nl_impl(
    x: &[f32],
    super_block_size: usize,
    scales: &mut [f32],
    l: &mut [u8],
    ntry: i32,
) -> Iq4Quantized {
    const BLOCK: usize = 32;
    let values = &IQ4NL_VALUES;
    let v0 = values[0] as i32;
    let mut res = Iq4Quantized {
        d: f32_to_f16(0.0),
        qs: [0; 128],
        scales_h: 0,
        scales_l: [0; 4],
    };
    let n_groups = super_block_size / BLOCK;

    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for ib in 0..n_groups {
        let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
        let lb = &mut l[ib * BLOCK..(ib + 1) * BLOCK];
        let mut weight = [0.0f32; BLOCK];
        for j in 0..BLOCK {
            weight[j] = xb[j] * xb[j];
        }
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            lb.fill(0);
            continue;
        }
        let mut d = if ntry > 0 {
            -max / v0 as f32
        } else {
            max / v0 as f32
        };
        let mut id = 1.0 / d;
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for j in 0..BLOCK {
            let al = id * xb[j];
            let li = best_index_int8(values, al);
            lb[j] = li as u8;
            let q = values[li] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -ntry..=ntry {
            id = (itry + v0) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..BLOCK {
                let al = id * xb[j];
                let li = best_index_int8(values, al);
                let q = values[li] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if n_groups > 1 {
        let d = -max_scale / 32.0;
        res.d = f32_to_f16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..n_groups {
            let lv = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * lv as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
            let lb = &mut l[ib * BLOCK..(ib + 1) * BLOCK];
            for j in 0..BLOCK {
                lb[j] = best_index_int8(values, idl * xb[j]) as u8;
            }
            let lu = (lv + 32) as u8;
            let l_l = lu & 0xF;
            let l_h = (lu >> 4) as u16;
            if ib % 2 == 0 {
                res.scales_l[ib / 2] = l_l;
            } else {
                res.scales_l[ib / 2] |= l_l << 4;
            }
            res.scales_h |= l_h << (2 * (ib % 8));
        }
    } else {
        res.d = f32_to_f16(scales[0]);
        if ntry > 0 {
            let id = if scales[0] != 0.0 {
                1.0 / scales[0]
            } else {
                0.0
            };
            for j in 0..super_block_size {
                l[j] = best_index_int8(values, id * x[j]) as u8;
            }
        }
    }

    for i in 0..super_block_size / 32 {
        for j in 0..16 {
            res.qs[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    res
}

//! Q4_K: super-blocks of 256 values in 8 groups of 32; each group has a 6-bit scale and a
//! 6-bit min, scaled by two f16 super-scales (144 bytes, 4.5 bits/value).
//!
//! ```text
//! [d: f16][dmin: f16][scales: 12 B][qs: 128 B]
//! scales: groups 0-3: sc = s[g] & 63,   m = s[g+4] & 63
//!         groups 4-7: sc = s[g+4] & 15 | (s[g-4] >> 6) << 4,  m = s[g+4] >> 4 | (s[g] >> 6) << 4
//! qs: 4 chunks of 32 bytes; chunk c holds group 2c in low nibbles, group 2c+1 in high nibbles
//! x = d*sc[g] * q - dmin*m[g]
//! ```

use super::search::{
    get_scale_min_k4, make_qkx2_quants, nearest_int, put_scales_mins_k4, Qkx2Search,
};
use super::{check_dequantize_len, check_dot_len, check_quantize_len, BlockFormat};
use crate::blocks::{f16_to_f32, f32_to_f16, BlockQ4_K, BlockQ8_K, QK_K};
use grist_gguf::GgmlType;

/// Unpacks the 8 scales and 8 mins of a Q4_K/Q5_K block (the 12 packed `scales` bytes; the
/// layout is in docs/KERNELS.md): the reference every SIMD unpacking is checked against.
#[inline]
pub fn scales_mins(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = get_scale_min_k4(j, packed);
    }
    (sc, m)
}

/// The shared tail of Q4_K/Q5_K reference quantization: per-group scale/min search with
/// `make_qkx2_quants`, 6-bit quantization of the scales and mins, then re-quantization of
/// every value with the final (f16-rounded) scales. Returns `(d, dmin, scales, codes)`.
pub(crate) fn quantize_kx(
    xb: &[f32],
    nmax: i32,
    search: &Qkx2Search,
) -> (u16, u16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; QK_K / 32];
    let mut scales = [0.0f32; QK_K / 32];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let x = &xb[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in x {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(x) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            x,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            search,
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
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..QK_K / 32 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let mut packed = [0u8; 12];
    put_scales_mins_k4(&ls, &lm, &mut packed);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dd = f16_to_f32(d) * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for ii in 0..32 {
            let q = nearest_int((xb[32 * j + ii] + dm) / dd);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

/// Integer dot product of the 256 codes `q` (unsigned, as i32) with a Q8_K block, weighted
/// per group of 32 by `sc`: `Σ_g sc[g] · Σ_{j in g} q[j]·a[j]`.
#[inline]
pub(crate) fn dot_groups32(q: &[u8; QK_K], sc: &[u8; 8], a: &BlockQ8_K) -> i32 {
    let mut isum = 0i32;
    for g in 0..8 {
        let mut s = 0i32;
        for j in 32 * g..32 * g + 32 {
            s += q[j] as i32 * a.qs[j] as i32;
        }
        isum += sc[g] as i32 * s;
    }
    isum
}

/// `Σ_g m[g] · (bsums[2g] + bsums[2g+1])`: the mins' share of a Q4_K/Q5_K dot product.
#[inline]
pub(crate) fn dot_mins(m: &[u8; 8], a: &BlockQ8_K) -> i32 {
    let mut s = 0i32;
    for j in 0..QK_K / 16 {
        s += a.bsums[j] as i32 * m[j / 2] as i32;
    }
    s
}

/// The 256 4-bit codes of a Q4_K block in value order.
#[inline]
fn codes(b: &BlockQ4_K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for c in 0..4 {
        for l in 0..32 {
            q[64 * c + l] = b.qs[32 * c + l] & 0xF;
            q[64 * c + 32 + l] = b.qs[32 * c + l] >> 4;
        }
    }
    q
}

impl BlockFormat for BlockQ4_K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK_ELEMS: usize = QK_K;
    type Activation = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_dequantize_len(blocks, out);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            let min = f16_to_f32(b.dmin);
            for c in 0..4 {
                let (sc1, m1) = get_scale_min_k4(2 * c, &b.scales);
                let (sc2, m2) = get_scale_min_k4(2 * c + 1, &b.scales);
                let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
                let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
                let q = &b.qs[32 * c..32 * c + 32];
                let yc = &mut y[64 * c..64 * c + 64];
                for l in 0..32 {
                    yc[l] = d1 * (q[l] & 0xF) as f32 - m1;
                    yc[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                }
            }
        }
    }

    /// `quantize_row_q4_K_ref` (what llama-quantize runs without imatrix):
    /// `make_qkx2_quants(32, 15, …, rmin -1, rdelta 0.1, nstep 20)` per group.
    fn quantize(x: &[f32], out: &mut [Self]) {
        check_quantize_len(x, out);
        let search = Qkx2Search {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let (d, dmin, scales, l) = quantize_kx(xb, 15, &search);
            b.d = d;
            b.dmin = dmin;
            b.scales = scales;
            for c in 0..4 {
                for i in 0..32 {
                    b.qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
                }
            }
        }
    }

    /// Integer sums per super-block (`Σ sc·q·a` and `Σ m·bsums`), then
    /// `d·da·isum - dmin·da·msum` (ggml's generic kernel computes the same integers).
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

//! Causal multi-head attention with GQA and sliding windows over the f16 KV cache, mirroring
//! the two paths of ggml-cpu's flash attention (`ggml_compute_forward_flash_attn_ext_f16`),
//! which produced the goldens:
//!
//! - batches of at least [`TILED_MIN_BATCH`] queries (prompt processing): the "tiled" path.
//!   Queries stay f32, cached keys/values are widened from f16 to f32, accumulation is f32,
//!   and keys are taken in tiles of 64: the scores of a tile first, then one update of the
//!   running maximum, then the tile's softmax numerators and values.
//! - smaller batches, in particular token generation: the "one chunk" path. The query is
//!   rounded to f16 (ggml converts Q to the K cache's dot-product type), and the running
//!   weighted sum of values is kept in f16 (`VKQ16`: every rescale and every
//!   multiply-add rounds back to f16).
//!
//! Both compute the softmax online, in one pass over the keys: keep the running maximum `M`,
//! the running sum `S` and the running weighted sum of values `o`; a new maximum rescales `S`
//! and `o` by `exp(M_old - M_new)`. One task per (query, head), so the result does not
//! depend on the number of threads.

use grist_kernels::ops::OpKernels;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Largest head size the attention kernels accept (their per-task buffers live on the stack,
/// so nothing is allocated per call). Checked when hyperparameters are read.
pub const MAX_HEAD_DIM: usize = 512;

/// Keys per tile of the tiled path (`GGML_FA_TILE_KV`): the running maximum is updated once
/// per tile.
const KV_TILE: usize = 64;

/// Smallest batch for which ggml uses its tiled (f32) flash-attention path (`GGML_FA_TILE_Q`).
pub const TILED_MIN_BATCH: usize = 64;

/// Geometry of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Position of the chunk's first query.
    pub pos0: usize,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (divides `n_head`).
    pub n_head_kv: usize,
    /// Size of one head.
    pub head_dim: usize,
}

/// Causal multi-head attention with GQA over an f16 KV cache, one task per (query, head).
///
/// `q`: `[n, n_head * head_dim]` (RoPE applied); `k_cache`, `v_cache`:
/// `[pos0 + n, n_head_kv * head_dim]`; `out`: `[n, n_head * head_dim]`. Query `t` (position
/// `p = pos0 + t`) of head `h` attends to the cached positions `j ≤ p` (and `p - j < window`
/// for sliding-window layers) of KV head `h / (n_head / n_head_kv)`.
/// `scale` multiplies the scores. The path (f32 or f16 accumulation) follows the number of
/// queries, see the module documentation.
pub fn attention(
    q: &[f32],
    k_cache: &[f16],
    v_cache: &[f16],
    out: &mut [f32],
    shape: AttnShape,
    scale: f32,
    window: Option<usize>,
) {
    let AttnShape {
        pos0,
        n_head,
        n_head_kv,
        head_dim: hd,
    } = shape;
    let (qd, kvd) = (n_head * hd, n_head_kv * hd);
    let group = n_head / n_head_kv;
    // The dispatched f32/f16 inner loops, fetched once per call.
    let kern: &OpKernels = &grist_kernels::dispatch::kernels().ops;
    let n = q.len() / qd;
    if n < TILED_MIN_BATCH {
        return attention_f16_accum(q, k_cache, v_cache, out, shape, scale, window);
    }
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / n_head, i % n_head);
        let kh = h / group;
        let p = pos0 + t;
        let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
        let qv = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
        o.fill(0.0);
        let mut m = f32::NEG_INFINITY;
        let mut sum = 0.0f32;
        // Scores of one tile of keys (stack buffer; `-inf` = masked).
        let mut s_buf = [0.0f32; KV_TILE];
        // Tiles are aligned to multiples of KV_TILE from position 0, as in ggml; tiles that
        // are entirely masked are skipped.
        for tile0 in (first / KV_TILE * KV_TILE..=p).step_by(KV_TILE) {
            let tile = &mut s_buf[..KV_TILE.min(pos0 + n - tile0)];
            let mut tile_max = f32::NEG_INFINITY;
            for (jj, sj) in tile.iter_mut().enumerate() {
                let j = tile0 + jj;
                *sj = if j < first || j > p {
                    f32::NEG_INFINITY
                } else {
                    let kv_off = j * kvd + kh * hd;
                    (kern.dot_f16_f32)(&k_cache[kv_off..kv_off + hd], qv) * scale
                };
                tile_max = tile_max.max(*sj);
            }
            // New running maximum: rescale what was accumulated so far.
            if tile_max > m {
                let ms = (m - tile_max).exp();
                (kern.scale)(o, ms);
                sum *= ms;
                m = tile_max;
            }
            // Softmax numerators of the tile (sum in f64 like ggml_vec_soft_max_f32), then
            // o += Σ_j exp(s_j - M) · v_j.
            let mut tile_sum = 0.0f64;
            for (jj, sj) in tile.iter().enumerate() {
                if *sj == f32::NEG_INFINITY {
                    continue;
                }
                let w = (*sj - m).exp();
                tile_sum += w as f64;
                let kv_off = (tile0 + jj) * kvd + kh * hd;
                (kern.axpy_f16)(w, &v_cache[kv_off..kv_off + hd], o);
            }
            sum += tile_sum as f32;
        }
        (kern.scale)(o, if sum == 0.0 { 0.0 } else { 1.0 / sum });
    });
}

/// The "one chunk" path: f16 query, f16 accumulator (see the module documentation).
fn attention_f16_accum(
    q: &[f32],
    k_cache: &[f16],
    v_cache: &[f16],
    out: &mut [f32],
    shape: AttnShape,
    scale: f32,
    window: Option<usize>,
) {
    let AttnShape {
        pos0,
        n_head,
        n_head_kv,
        head_dim: hd,
    } = shape;
    let (qd, kvd) = (n_head * hd, n_head_kv * hd);
    let group = n_head / n_head_kv;
    // The dispatched f32/f16 inner loops, fetched once per call.
    let kern: &OpKernels = &grist_kernels::dispatch::kernels().ops;
    assert!(
        hd <= MAX_HEAD_DIM,
        "head_dim {hd} > {MAX_HEAD_DIM} (checked at load)"
    );
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        // Stack buffers: the f16-rounded query and accumulator, widened to f32 (every value
        // is exactly representable in f16), and an f16 staging row for the rounding.
        let mut q_buf = [0.0f32; MAX_HEAD_DIM];
        let mut acc_buf = [0.0f32; MAX_HEAD_DIM];
        let mut stage_buf = [f16::ZERO; MAX_HEAD_DIM];
        let (qr, acc, stage) = (&mut q_buf[..hd], &mut acc_buf[..hd], &mut stage_buf[..hd]);
        let (t, h) = (i / n_head, i % n_head);
        let kh = h / group;
        let p = pos0 + t;
        let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
        qr.copy_from_slice(&q[t * qd + h * hd..t * qd + (h + 1) * hd]);
        round_to_f16(kern, qr, stage);
        let mut m = f32::NEG_INFINITY;
        let mut sum = 0.0f32;
        for j in first..=p {
            let kv_off = j * kvd + kh * hd;
            let score = (kern.dot_f16_f32)(&k_cache[kv_off..kv_off + hd], qr) * scale;
            let vrow = &v_cache[kv_off..kv_off + hd];
            let (mut ms, mut vs) = (1.0f32, 1.0f32);
            if score > m {
                // acc = f16(acc * exp(M_old - M_new))
                ms = (m - score).exp();
                m = score;
                (kern.scale)(acc, ms);
                round_to_f16(kern, acc, stage);
            } else {
                vs = (score - m).exp();
            }
            // acc = f16(v * vs + acc), one rounding in f32 (fused), then to f16
            (kern.axpy_f16)(vs, vrow, acc);
            round_to_f16(kern, acc, stage);
            sum = sum * ms + vs;
        }
        let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
        o.copy_from_slice(acc);
        (kern.scale)(o, inv);
    });
}

/// Rounds every value of `x` to the nearest f16 (ties to even), in place; `stage`: `[x.len()]`.
fn round_to_f16(kern: &OpKernels, x: &mut [f32], stage: &mut [f16]) {
    (kern.f32_to_f16)(x, stage);
    stage.convert_to_f32_slice(x);
}

//! `y = x · Wᵀ`: the executor's entry point to `grist_kernels::matmul`.
//!
//! Activations are quantized to the weight type's activation format (ggml's `vec_dot_type`:
//! Q8_0, Q8_1, Q8_K, or the float type itself), exactly as ggml-cpu does, then multiplied with
//! the kernels' dispatched dot products. Several matrices that read the same input (Wq, Wk, Wv;
//! Wgate, Wup) share one quantization of it when their activation formats agree.

use std::time::Instant;

use grist_kernels::matmul::{self, ActivationScratch, QMatrix};

use crate::model::Model;
use crate::profile::{self, Op};
use crate::weights::Matrix;

/// The kernels' view of a model matrix.
fn qmatrix<'a>(model: &'a Model, w: &Matrix) -> QMatrix<'a> {
    QMatrix::new(w.ty, model.matrix_bytes(w), w.rows, w.cols)
        .unwrap_or_else(|e| panic!("matrix {} was validated at load: {e}", w.name))
}

/// The input rows of a product: `x` as it is, or a layer's RMSNorm of it,
/// `rms_norm(x[row]) * weight`, computed row by row as the rows are quantized
/// ([`matmul::quantize_activations_mapped`]) and never stored as f32: one parallel region and
/// one pass over the batch fewer than normalizing first, with the same bits (the same copy
/// and `ops::rms_norm_in_place` per row).
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// `[n, cols]` rows, used as they are.
    Rows(&'a [f32]),
    /// `[n, cols]` rows to normalize with `weight` (`[cols]`) and `eps`.
    Normed {
        /// The rows before the norm.
        x: &'a [f32],
        /// The norm's per-value weights.
        weight: &'a [f32],
        /// The norm's epsilon.
        eps: f32,
    },
}

impl Input<'_> {
    /// The rows before any norm (for shapes).
    fn rows(&self) -> &[f32] {
        match *self {
            Input::Rows(x) | Input::Normed { x, .. } => x,
        }
    }

    /// Quantizes the (normalized) rows for `w` into `scratch`, `n` rows of `w.cols`.
    fn quantize(&self, act: grist_gguf::GgmlType, w: &Matrix, scratch: &mut ActivationScratch) {
        let x = self.rows();
        let n = x.len() / w.cols;
        let _p = profile::scope(Op::QuantizeAct, 0, x.len() as u64);
        let done = match *self {
            Input::Rows(x) => matmul::quantize_activations(act, x, n, w.cols, scratch),
            Input::Normed { x, weight, eps } => {
                let norm = |src: &[f32], dst: &mut [f32]| {
                    dst.copy_from_slice(src);
                    grist_kernels::ops::rms_norm_in_place(dst, Some(weight), eps);
                };
                matmul::quantize_activations_mapped(act, x, n, w.cols, scratch, &norm)
            }
        };
        done.unwrap_or_else(|e| panic!("quantizing activations for {}: {e}", w.name));
    }
}

/// `outs[i] = x · ws[i]ᵀ` for matrices that all have `x`'s row length; `ops[i]` names the
/// product for the profiler. `x`: `[n, cols]` ([`Input`]: the rows or their norm);
/// `outs[i]`: `[n, ws[i].rows]`.
///
/// Consecutive jobs whose weights use the same activation format share one quantization of
/// `x` and run as **one** parallel region ([`matmul::matmul_prequantized_many`]): one
/// fork-join per group instead of one per matrix, with the same bits as separate products.
/// When profiling, a group's time is shared among its products by their weight bytes.
pub fn matmul_many(
    model: &Model,
    x: Input<'_>,
    jobs: &mut [(&Matrix, &mut [f32], Op)],
    scratch: &mut ActivationScratch,
) {
    let mut start = 0;
    while start < jobs.len() {
        let w0: &Matrix = jobs[start].0;
        let act = qmatrix(model, w0).act_type();
        let cols = w0.cols;
        let end = start + leading_group(model, jobs[start..].iter().map(|j| j.0));
        let n = x.rows().len() / cols;
        x.quantize(act, w0, scratch);
        let group = &mut jobs[start..end];
        let len = group.len();
        let started = profile::is_enabled().then(Instant::now);
        {
            // [(W_i, y_i [n, W_i.rows])] for the group, on the stack (no allocation); the
            // unused slots hold an empty matrix.
            let empty = QMatrix::new(w0.ty, &[], 0, cols)
                .unwrap_or_else(|e| panic!("matrix {} was validated at load: {e}", w0.name));
            let mut fused: [(QMatrix<'_>, &mut [f32]); matmul::MAX_FUSED_MATRICES] =
                std::array::from_fn(|_| (empty, &mut [][..]));
            for (slot, (w, out, _)) in fused.iter_mut().zip(group.iter_mut()) {
                *slot = (qmatrix(model, w), &mut **out);
            }
            matmul::matmul_prequantized_many(&mut fused[..len], scratch)
                .unwrap_or_else(|e| panic!("matmul {}: {e}", w0.name));
        }
        if let Some(t0) = started {
            let nanos = t0.elapsed().as_nanos() as u64;
            let total: u64 = group.iter().map(|(w, _, _)| weight_bytes(model, w)).sum();
            for (w, _, op) in group.iter() {
                let bytes = weight_bytes(model, w);
                let share = (nanos as u128 * bytes as u128 / total.max(1) as u128) as u64;
                profile::record(*op, share, bytes, 2 * (n * w.rows * w.cols) as u64);
            }
        }
        start = end;
    }
}

/// How [`matmul_gated`] left its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gated {
    /// The two products are in `gate` and `up`; the caller applies the activation.
    Separate,
    /// `act(gate)·up` is in `gate`.
    Fused,
    /// `act(gate)·up` went straight into the down product's quantized activations (`next`);
    /// `gate` and `up` are untouched. Run the down product with [`matmul_quantized`].
    Quantized,
}

/// The feed-forward input `act(x·W_gateᵀ) · (x·W_upᵀ)`: `x` `[n, cols]` ([`Input`]); `gate`, `up`:
/// `[n, w_gate.rows]`.
///
/// Prompt processing on the panel path runs the two products and the activation in one pass
/// ([`matmul::matmul_prequantized_gated`]). When it can, that pass also quantizes its output
/// for the down product `down.0` into the second scratch `down.1`
/// ([`matmul::matmul_prequantized_gated_quantize`]), so the f32 result is never stored.
/// Otherwise both products are computed into `gate` and `up` as [`matmul_many`] would, for the
/// caller to apply `glu`. The bits are the same every way; the returned [`Gated`] says where
/// the result is.
#[allow(clippy::too_many_arguments)]
pub fn matmul_gated(
    model: &Model,
    x: Input<'_>,
    w_gate: &Matrix,
    w_up: &Matrix,
    glu: matmul::GluFn,
    gate: &mut [f32],
    up: &mut [f32],
    scratch: &mut ActivationScratch,
    (w_down, next): (&Matrix, &mut ActivationScratch),
) -> Gated {
    let (qg, qu) = (qmatrix(model, w_gate), qmatrix(model, w_up));
    if qg.act_type() != qu.act_type() || w_gate.cols != w_up.cols {
        matmul_many(
            model,
            x,
            &mut [(w_gate, gate, Op::MatmulGate), (w_up, up, Op::MatmulUp)],
            scratch,
        );
        return Gated::Separate;
    }
    let n = x.rows().len() / w_gate.cols;
    x.quantize(qg.act_type(), w_gate, scratch);
    let started = profile::is_enabled().then(Instant::now);
    let down_act = qmatrix(model, w_down).act_type();
    let quantized =
        matmul::matmul_prequantized_gated_quantize(&qg, &qu, glu, scratch, down_act, next)
            .unwrap_or_else(|e| panic!("gated matmul {}, {}: {e}", w_gate.name, w_up.name));
    let how = if quantized {
        Gated::Quantized
    } else if matmul::matmul_prequantized_gated(&qg, &qu, glu, scratch, gate)
        .unwrap_or_else(|e| panic!("gated matmul {}, {}: {e}", w_gate.name, w_up.name))
    {
        Gated::Fused
    } else {
        matmul::matmul_prequantized_many(&mut [(qg, gate), (qu, up)], scratch)
            .unwrap_or_else(|e| panic!("matmul {}: {e}", w_gate.name));
        Gated::Separate
    };
    if let Some(t0) = started {
        // The group's time shared by weight bytes, as in `matmul_many` (fused, it includes
        // the activation, and quantized, the down product's activation quantization).
        let nanos = t0.elapsed().as_nanos() as u64;
        let (bg, bu) = (weight_bytes(model, w_gate), weight_bytes(model, w_up));
        let share_g = (nanos as u128 * bg as u128 / (bg + bu).max(1) as u128) as u64;
        let flops = |w: &Matrix| 2 * (n * w.rows * w.cols) as u64;
        profile::record(Op::MatmulGate, share_g, bg, flops(w_gate));
        profile::record(Op::MatmulUp, nanos - share_g, bu, flops(w_up));
    }
    how
}

/// `out = x · Wᵀ` with `x` already quantized in `scratch` for `w` (by
/// [`matmul_gated`]); `op` names it for the profiler. `out`: `[n, w.rows]`.
pub fn matmul_quantized(
    model: &Model,
    w: &Matrix,
    scratch: &ActivationScratch,
    out: &mut [f32],
    op: Op,
) {
    let started = profile::is_enabled().then(Instant::now);
    matmul::matmul_prequantized(&qmatrix(model, w), scratch, out)
        .unwrap_or_else(|e| panic!("matmul {}: {e}", w.name));
    if let Some(t0) = started {
        let n = scratch.n() as u64;
        let flops = 2 * n * (w.rows * w.cols) as u64;
        profile::record(
            op,
            t0.elapsed().as_nanos() as u64,
            weight_bytes(model, w),
            flops,
        );
    }
}

/// How many of `ws` (at least one, at most [`matmul::MAX_FUSED_MATRICES`]), from the first
/// on, share its row length and activation format: the group [`matmul_many`] runs as one
/// product.
fn leading_group<'w>(model: &Model, mut ws: impl Iterator<Item = &'w Matrix>) -> usize {
    let Some(w0) = ws.next() else { return 0 };
    let act = qmatrix(model, w0).act_type();
    1 + ws
        .take(matmul::MAX_FUSED_MATRICES - 1)
        .take_while(|w| w.cols == w0.cols && qmatrix(model, w).act_type() == act)
        .count()
}

/// `out = x · Wᵀ` (`op` names it for the profiler). `x`: `[n, w.cols]`; `out`: `[n, w.rows]`.
pub fn matmul(
    model: &Model,
    w: &Matrix,
    x: &[f32],
    out: &mut [f32],
    op: Op,
    scratch: &mut ActivationScratch,
) {
    matmul_many(model, Input::Rows(x), &mut [(w, out, op)], scratch);
}

/// Names the matrices of the token-generation product that comes after the one about to
/// run (`ws`, as [`matmul_many`] will get them), so the worker threads prefetch their share
/// of its weights while they wait; see [`matmul::prefetch_gemv`]. Only a hint. Of a list
/// that `matmul_many` splits into several groups, the first group is named (it runs first).
pub fn prefetch(model: &Model, ws: &[&Matrix]) {
    let n = leading_group(model, ws.iter().copied());
    if n == 0 {
        return;
    }
    // The group's views on the stack (slots past `n` repeat the last one, unused).
    let qs: [QMatrix<'_>; matmul::MAX_FUSED_MATRICES] =
        std::array::from_fn(|i| qmatrix(model, ws[i.min(n - 1)]));
    matmul::prefetch_gemv(&qs[..n]);
}

/// Bytes of weights `w` holds (what one product with it streams).
fn weight_bytes(model: &Model, w: &Matrix) -> u64 {
    model.matrix_bytes(w).len() as u64
}

/// Dequantizes row `r` of matrix `w` into `out` (`[w.cols]`): an embedding lookup. A row of
/// an interleaved matrix (`grist repack`) is gathered into the base type's layout first.
pub fn dequantize_row(model: &Model, w: &Matrix, r: usize, out: &mut [f32]) {
    let ty = w.ty.interleaved().map_or(w.ty, |(base, _)| base);
    qmatrix(model, w).row_plain(r, |src| {
        grist_kernels::formats::dequantize_row(ty, src, out)
            .unwrap_or_else(|e| panic!("matrix {} was validated at load: {e}", w.name))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tiny-llama-q4_1`: Q4_1 layers (activations Q8_1) and a Q6_K output (Q8_K), all with
    /// 256-value rows except `ffn_down` (512).
    fn model() -> Model {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/models/tiny-llama-q4_1.gguf"
        );
        Model::load(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A layer's norm fused into the quantization ([`Input::Normed`]) gives the bits of the
    /// norm applied first ([`Input::Rows`]): for one token (generation), a few, and prompts
    /// on the panel path (partial groups included), on 1 and 2 threads, for the plain and
    /// the gated products.
    #[test]
    fn normed_input_gives_the_bits_of_normalizing_first() {
        let model = model();
        let w = model.weights();
        let l = &w.layers[0];
        let d = l.wq.cols;
        let mut state = 0x2545_F491u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 4001) as f32 / 1000.0 - 2.0
        };
        let weight: Vec<f32> = (0..d).map(|_| next()).collect();
        let eps = 1e-5;
        for n in [1, 5, 17, 64, 100] {
            let x: Vec<f32> = (0..n * d).map(|_| next()).collect();
            let mut h = x.clone();
            for row in h.chunks_exact_mut(d) {
                grist_kernels::ops::rms_norm_in_place(row, Some(&weight), eps);
            }
            let normed = Input::Normed {
                x: &x,
                weight: &weight,
                eps,
            };
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let run = |input: Input<'_>| {
                    let mut act = ActivationScratch::new();
                    let mut down = ActivationScratch::new();
                    let (mut q, mut k) = (vec![0.0; n * l.wq.rows], vec![0.0; n * l.wk.rows]);
                    let (mut g, mut u) = (vec![0.0; n * l.w_gate.rows], vec![0.0; n * l.w_up.rows]);
                    pool.install(|| {
                        matmul_many(
                            &model,
                            input,
                            &mut [(&l.wq, &mut q, Op::MatmulQ), (&l.wk, &mut k, Op::MatmulK)],
                            &mut act,
                        );
                        let how = matmul_gated(
                            &model,
                            input,
                            &l.w_gate,
                            &l.w_up,
                            grist_kernels::ops::swiglu,
                            &mut g,
                            &mut u,
                            &mut act,
                            (&l.w_down, &mut down),
                        );
                        // The gated result, wherever it went.
                        let gated = match how {
                            Gated::Quantized => down.rows(0, n).to_vec(),
                            _ => bytemuck::cast_slice::<f32, u8>(&g).to_vec(),
                        };
                        (q, k, gated)
                    })
                };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let (q1, k1, g1) = run(Input::Rows(&h));
                let (q2, k2, g2) = run(normed);
                assert_eq!(bits(&q1), bits(&q2), "q, n {n}, {threads} threads");
                assert_eq!(bits(&k1), bits(&k2), "k, n {n}, {threads} threads");
                assert!(g1 == g2, "gated, n {n}, {threads} threads");
            }
        }
    }

    #[test]
    fn a_group_shares_row_length_and_activation_format() {
        let model = model();
        let w = model.weights();
        let l = &w.layers[0];
        let group = |ws: &[&Matrix]| leading_group(&model, ws.iter().copied());
        assert_eq!(group(&[]), 0);
        assert_eq!(group(&[&l.wq, &l.wk, &l.wv]), 3);
        assert_eq!(group(&[&l.w_gate, &l.w_up]), 2);
        // Another activation format (Q8_K) ends the group, even with the same row length.
        assert_eq!(group(&[&l.wq, &w.output, &l.wk]), 1);
        assert_eq!(group(&[&w.output, &l.wq]), 1);
        // Another row length ends it.
        assert_eq!(group(&[&l.w_gate, &l.w_down]), 1);
        assert_eq!(group(&[&l.wo, &l.wq, &l.w_down, &l.wk]), 2);
        // At most MAX_FUSED_MATRICES.
        let many = [&l.wq; matmul::MAX_FUSED_MATRICES + 2];
        assert_eq!(group(&many), matmul::MAX_FUSED_MATRICES);
    }
}

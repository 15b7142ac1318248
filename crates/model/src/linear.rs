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

/// `outs[i] = x · ws[i]ᵀ` for matrices that all have `x`'s row length; `ops[i]` names the
/// product for the profiler. `x`: `[n, cols]`; `outs[i]`: `[n, ws[i].rows]`.
///
/// Consecutive jobs whose weights use the same activation format share one quantization of
/// `x` and run as **one** parallel region ([`matmul::matmul_prequantized_many`]): one
/// fork-join per group instead of one per matrix, with the same bits as separate products.
/// When profiling, a group's time is shared among its products by their weight bytes.
pub fn matmul_many(
    model: &Model,
    x: &[f32],
    jobs: &mut [(&Matrix, &mut [f32], Op)],
    scratch: &mut ActivationScratch,
) {
    let mut start = 0;
    while start < jobs.len() {
        let w0: &Matrix = jobs[start].0;
        let act = qmatrix(model, w0).act_type();
        let cols = w0.cols;
        let end = start + leading_group(model, jobs[start..].iter().map(|j| j.0));
        let n = x.len() / cols;
        {
            let _p = profile::scope(Op::QuantizeAct, 0, x.len() as u64);
            matmul::quantize_activations(act, x, n, cols, scratch)
                .unwrap_or_else(|e| panic!("quantizing activations for {}: {e}", w0.name));
        }
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

/// The feed-forward input `act(x·W_gateᵀ) · (x·W_upᵀ)`: `x` `[n, cols]`; `gate`, `up`:
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
    x: &[f32],
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
    let n = x.len() / w_gate.cols;
    {
        let _p = profile::scope(Op::QuantizeAct, 0, x.len() as u64);
        matmul::quantize_activations(qg.act_type(), x, n, w_gate.cols, scratch)
            .unwrap_or_else(|e| panic!("quantizing activations for {}: {e}", w_gate.name));
    }
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
    matmul_many(model, x, &mut [(w, out, op)], scratch);
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

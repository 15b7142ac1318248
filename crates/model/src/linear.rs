//! `y = x · Wᵀ`: the executor's entry point to `grist_kernels::matmul`.
//!
//! Activations are quantized to the weight type's activation format (ggml's `vec_dot_type`:
//! Q8_0, Q8_1, Q8_K, or the float type itself), exactly as ggml-cpu does, then multiplied with
//! the kernels' dispatched dot products. Several matrices that read the same input (Wq, Wk, Wv;
//! Wgate, Wup) share one quantization of it when their activation formats agree.

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
pub fn matmul_many(
    model: &Model,
    x: &[f32],
    jobs: &mut [(&Matrix, &mut [f32], Op)],
    scratch: &mut ActivationScratch,
) {
    for (i, (w, out, op)) in jobs.iter_mut().enumerate() {
        let qm = qmatrix(model, w);
        let n = x.len() / w.cols;
        let act = qm.act_type();
        // The scratch holds `x` itself only after the first job quantized it.
        let fresh = i > 0
            && scratch.act_type() == Some(act)
            && scratch.n() == n
            && scratch.cols() == w.cols;
        if !fresh {
            let _p = profile::scope(Op::QuantizeAct, 0, x.len() as u64);
            matmul::quantize_activations(act, x, n, w.cols, scratch)
                .unwrap_or_else(|e| panic!("quantizing activations for {}: {e}", w.name));
        }
        let _p = profile::scope(
            *op,
            qm.data().len() as u64,
            2 * (n * w.rows * w.cols) as u64,
        );
        matmul::matmul_prequantized(&qm, scratch, out)
            .unwrap_or_else(|e| panic!("matmul {}: {e}", w.name));
    }
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

/// Dequantizes row `r` of matrix `w` into `out` (`[w.cols]`): an embedding lookup.
pub fn dequantize_row(model: &Model, w: &Matrix, r: usize, out: &mut [f32]) {
    let src = &model.matrix_bytes(w)[r * w.row_bytes..(r + 1) * w.row_bytes];
    grist_kernels::formats::dequantize_row(w.ty, src, out)
        .unwrap_or_else(|e| panic!("matrix {} was validated at load: {e}", w.name));
}

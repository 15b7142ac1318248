//! [`Session`]: the forward pass. A session owns the KV cache (f16, allocated once for the
//! context size) and every scratch buffer (allocated once for the largest batch); evaluating
//! tokens allocates nothing, except growing the logits buffer the first time a call asks for
//! more rows of logits than any call before.
//!
//! One call of [`Session::eval`] runs the batch through the graph of [`crate::arch`] in chunks
//! of at most [`MAX_BATCH`] tokens: every matrix multiplication is matrix × matrix over the
//! chunk, attention reads the cache (positions `0..n_past + chunk`), and the new keys/values are
//! written to the cache before attention so a token attends to itself.
//!
//! When a call wants only the last token's logits (generation, `grist bench`'s `pp` test),
//! the last layer stops after its attention for every other row, as llama.cpp prunes its graph
//! to the output rows: their keys and values are cached by then and nothing reads the rest.
//! A chunk that needs no logits at all (the first chunks of a long prompt) ends its last layer
//! right after caching. Each computed row keeps the bits it would have had (the attention of
//! the kept rows is the whole call's, bit for bit); only the rows after the last layer's
//! attention run through the batch kernels for fewer rows (one row: the matrix-vector ones).

use grist_kernels::ops::{self, RopeParams, RopeStyle};
use half::f16;
use rayon::prelude::*;

use crate::arch::FfnActivation;
use crate::attention::{self, AttnInput, AttnShape};
use crate::error::ModelError;
use crate::linear::{self, Gated};
use crate::model::Model;
use crate::profile::{scope, Op};
use crate::weights::Matrix;
use grist_kernels::matmul::ActivationScratch;

/// Largest number of tokens processed as one batch; longer prompts are split into chunks.
pub const MAX_BATCH: usize = 512;

/// The per-chunk working buffers. Shapes are for a chunk of `n ≤ max_batch` tokens; only the
/// first `n` rows are used.
#[derive(Debug)]
struct Scratch {
    /// Residual stream `[max_batch, n_embd]`.
    x: Vec<f32>,
    /// Normalised input of a sub-block / its output `[max_batch, n_embd]`.
    h: Vec<f32>,
    /// Queries `[max_batch, n_head * head_dim]`.
    q: Vec<f32>,
    /// New keys `[max_batch, n_head_kv * head_dim]`.
    k: Vec<f32>,
    /// New values `[max_batch, n_head_kv * head_dim]`.
    v: Vec<f32>,
    /// Attention output before Wo `[max_batch, n_head * head_dim]`.
    att: Vec<f32>,
    /// FFN gate, then the gated activation `[max_batch, n_ff]`.
    gate: Vec<f32>,
    /// FFN up projection `[max_batch, n_ff]`.
    up: Vec<f32>,
    /// RoPE cos/sin of the chunk's positions, `[max_batch, n_rot]` each: `[0]` with the
    /// global base, `[1]` with the sliding-window layers' base (empty unless the model has
    /// such layers). Filled once per chunk and read by every layer: the rotation depends on
    /// the position and the base only.
    rope: [Vec<f32>; 2],
    /// Quantized activations for the matmuls.
    act: ActivationScratch,
    /// The down product's activations when the gated product quantizes them itself
    /// (prompts; `act` still holds the gated product's input while they are written).
    act_down: ActivationScratch,
}

/// An inference session over a [`Model`]: KV cache, scratch buffers and the last logits.
pub struct Session<'m> {
    model: &'m Model,
    n_ctx: usize,
    n_past: usize,
    max_batch: usize,
    /// Per layer, cached keys `[n_ctx, n_head_kv * head_dim]` (f16).
    k_cache: Vec<Vec<f16>>,
    /// Per layer, cached values `[n_ctx, n_head_kv * head_dim]` (f16).
    v_cache: Vec<Vec<f16>>,
    s: Scratch,
    /// Logits of the last call `[n_out, n_vocab]`.
    logits: Vec<f32>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("n_ctx", &self.n_ctx)
            .field("n_past", &self.n_past)
            .finish_non_exhaustive()
    }
}

/// Refuses a context whose KV cache (`n_layer × 2 × cache_len` f16 values) this process cannot
/// allocate, with an error naming its size, instead of the abort of a failed allocation.
/// The cache itself is allocated zeroed, lazily backed by the kernel (a 4096-token context of
/// which a short chat touches a few pages costs only those), so the check asks for the whole
/// size once, without touching it: with Linux's default overcommit that fails when it
/// exceeds RAM and swap.
fn check_kv_cache_fits(n_ctx: usize, cache_len: usize, n_layer: usize) -> Result<(), ModelError> {
    let too_large = || {
        ModelError::InvalidArgument(format!(
            "context size {n_ctx} needs a KV cache of {} MiB, more than this machine can allocate",
            (cache_len as u128 * n_layer as u128 * 4) >> 20
        ))
    };
    let bytes = cache_len
        .checked_mul(n_layer)
        .and_then(|v| v.checked_mul(2 * std::mem::size_of::<f16>()))
        .ok_or_else(too_large)?;
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| too_large())?;
    Ok(())
}

impl<'m> Session<'m> {
    /// A session with room for `n_ctx` tokens. Allocates the KV cache and all scratch buffers.
    pub fn new(model: &'m Model, n_ctx: usize) -> Result<Session<'m>, ModelError> {
        if n_ctx == 0 {
            return Err(ModelError::InvalidArgument(
                "context size must be at least 1".into(),
            ));
        }
        let hp = model.hparams();
        let max_batch = n_ctx.min(MAX_BATCH);
        let kvd = hp.kv_dim();
        let widest = hp.n_embd.max(hp.q_dim()).max(hp.n_ff);
        let cache_len = n_ctx.checked_mul(kvd).ok_or_else(|| {
            ModelError::InvalidArgument(format!("context size {n_ctx} is too large"))
        })?;
        check_kv_cache_fits(n_ctx, cache_len, hp.n_layer)?;
        let s = Scratch {
            x: vec![0.0; max_batch * hp.n_embd],
            h: vec![0.0; max_batch * hp.n_embd],
            q: vec![0.0; max_batch * hp.q_dim()],
            k: vec![0.0; max_batch * kvd],
            v: vec![0.0; max_batch * kvd],
            att: vec![0.0; max_batch * hp.q_dim()],
            gate: vec![0.0; max_batch * hp.n_ff],
            up: vec![0.0; max_batch * hp.n_ff],
            rope: [
                vec![0.0; max_batch * hp.n_rot],
                if (0..hp.n_layer).any(|il| hp.is_swa(il)) {
                    vec![0.0; max_batch * hp.n_rot]
                } else {
                    Vec::new()
                },
            ],
            act: activation_scratch(model, max_batch, widest),
            act_down: down_activation_scratch(model, max_batch),
        };
        Ok(Session {
            model,
            n_ctx,
            n_past: 0,
            max_batch,
            k_cache: (0..hp.n_layer)
                .map(|_| vec![f16::ZERO; cache_len])
                .collect(),
            v_cache: (0..hp.n_layer)
                .map(|_| vec![f16::ZERO; cache_len])
                .collect(),
            s,
            logits: vec![0.0; hp.n_vocab],
        })
    }

    /// Number of tokens in the KV cache (the position of the next token).
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// The context size this session was created with.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Empties the KV cache (the next token is at position 0).
    pub fn clear(&mut self) {
        self.n_past = 0;
    }

    /// Forgets every cached token from position `n_past` on (no-op if `n_past` is beyond the
    /// cache).
    pub fn truncate(&mut self, n_past: usize) {
        self.n_past = self.n_past.min(n_past);
    }

    /// Evaluates `tokens` at positions `n_past..n_past + tokens.len()`, appending them to the
    /// KV cache. Returns logits `[n_out, n_vocab]`: for every token of this call when
    /// `all_logits`, else only for the last one.
    pub fn eval(&mut self, tokens: &[u32], all_logits: bool) -> Result<&[f32], ModelError> {
        let n_vocab = self.model.n_vocab();
        if tokens.is_empty() {
            return Err(ModelError::InvalidArgument("no tokens to evaluate".into()));
        }
        if self.n_past + tokens.len() > self.n_ctx {
            return Err(ModelError::ContextOverflow {
                n_past: self.n_past,
                n_new: tokens.len(),
                n_ctx: self.n_ctx,
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange {
                token: bad,
                n_vocab,
            });
        }
        let n_out = if all_logits { tokens.len() } else { 1 };
        if self.logits.len() < n_out * n_vocab {
            self.logits.resize(n_out * n_vocab, 0.0);
        }
        let mut done = 0;
        for chunk in tokens.chunks(self.max_batch) {
            let last_chunk = done + chunk.len() == tokens.len();
            let out_rows = if all_logits {
                Some((0..chunk.len(), done))
            } else if last_chunk {
                Some((chunk.len() - 1..chunk.len(), 0))
            } else {
                None
            };
            self.forward(chunk, out_rows);
            self.n_past += chunk.len();
            done += chunk.len();
        }
        Ok(&self.logits[..n_out * n_vocab])
    }

    /// Runs one chunk (`tokens.len() ≤ max_batch`) at positions `n_past..`. `out_rows`:
    /// which rows of the chunk need logits, and the row of `self.logits` the first goes to.
    fn forward(&mut self, tokens: &[u32], out_rows: Option<(std::ops::Range<usize>, usize)>) {
        let model = self.model;
        let hp = model.hparams();
        let spec = model.spec();
        let w = model.weights();
        let n = tokens.len();
        let (e, qd, kvd, hd, nf) = (hp.n_embd, hp.q_dim(), hp.kv_dim(), hp.head_dim, hp.n_ff);
        let pos0 = self.n_past;
        let s = &mut self.s;

        // x = embed(tokens)                                         [n, n_embd]
        let x = &mut s.x[..n * e];
        {
            let _p = scope(
                Op::Embedding,
                (n * w.token_embd.row_bytes) as u64,
                x.len() as u64,
            );
            for (row, &tok) in x.chunks_exact_mut(e).zip(tokens) {
                linear::dequantize_row(model, &w.token_embd, tok as usize, row);
            }
            if spec.scale_embeddings {
                ops::scale(x, (e as f32).sqrt());
            }
        }

        // Token generation reads every weight from DRAM once per token. Right before each
        // product we name the one after it, and the worker threads pull its weights into
        // their caches whenever they wait (the end of this product, the caller's serial work
        // after it), so the memory bus keeps streaming while the caller computes attention
        // or norms (`pool::prefetch_while_idle`; no effect on the results).
        let announce = |next: &[&Matrix]| {
            if n == 1 {
                linear::prefetch(model, next);
            }
        };
        // cos/sin of the chunk's positions, per RoPE base in use          [n, n_rot] ×1–2
        let n_rot = hp.n_rot;
        let rope_params = |swa: bool| RopeParams {
            n_rot,
            freq_base: if swa {
                hp.rope_freq_base_swa
            } else {
                hp.rope_freq_base
            },
            freq_scale: hp.rope_freq_scale,
            freq_factors: w.rope_freqs.as_deref(),
            style: spec.rope_style,
        };
        {
            let _p = scope(Op::Rope, 0, (n * n_rot) as u64);
            for (swa, table) in s.rope.iter_mut().enumerate() {
                if !table.is_empty() {
                    rope_table(&mut table[..n * n_rot], pos0, &rope_params(swa == 1));
                }
            }
        }
        let attn_scale = 1.0 / (hd as f32).sqrt();
        // Rows of the chunk whose logits are wanted, and the row of `self.logits` the first
        // goes to.
        let (mut out_range, first_out) = match &out_rows {
            Some((rows, first)) => (rows.clone(), *first),
            None => (0..0, 0),
        };
        for (il, lw) in w.layers.iter().enumerate() {
            // After the last layer's attention only the rows whose logits are wanted go on
            // (as in llama.cpp): the other rows' keys and values are cached by then, and
            // nothing reads the rest of their last layer.
            let last_layer = il + 1 == w.layers.len();
            let keep = if last_layer { out_range.clone() } else { 0..n };
            // ---- attention ----
            // h = rms_norm(x) * attn_norm                           [n, n_embd]
            // q, k, v = h·Wq, h·Wk, h·Wv                             [n, q_dim], [n, kv_dim] ×2
            // (the norm runs row by row inside the quantization of h: `linear::Input`)
            let h = linear::Input::Normed {
                x: &s.x[..n * e],
                weight: &lw.attn_norm,
                eps: hp.rms_eps,
            };
            let (q, k, v) = (&mut s.q[..n * qd], &mut s.k[..n * kvd], &mut s.v[..n * kvd]);
            announce(&[&lw.wo]);
            linear::matmul_many(
                model,
                h,
                &mut [
                    (&lw.wq, q, Op::MatmulQ),
                    (&lw.wk, k, Op::MatmulK),
                    (&lw.wv, v, Op::MatmulV),
                ],
                &mut s.act,
            );
            let (q, k, v) = (&mut s.q[..n * qd], &mut s.k[..n * kvd], &mut s.v[..n * kvd]);
            if let Some([bq, bk, bv]) = &lw.qkv_bias {
                let _p = scope(Op::Elementwise, 0, (q.len() + k.len() + v.len()) as u64);
                add_rows(q, bq);
                add_rows(k, bk);
                add_rows(v, bv);
            }
            if let Some([qn, kn]) = &lw.qk_norm {
                norm_rows(q, qn, hp.rms_eps);
                norm_rows(k, kn, hp.rms_eps);
            }
            // RoPE, with the local base on sliding-window layers.
            let swa = hp.is_swa(il);
            let _p = scope(Op::Rope, 0, 3 * (q.len() + k.len()) as u64);
            let table = &s.rope[swa as usize][..n * n_rot];
            rope_rows(q, k, (qd, kvd, hd), table, spec.rope_style);
            drop(_p);
            let score_scale = if spec.scale_q_before_attention {
                scale_batch(q, attn_scale);
                1.0
            } else {
                attn_scale
            };
            // Append k, v to the cache (f16).                        [n_ctx, kv_dim]
            let window = if swa { Some(hp.n_swa) } else { None };
            let pairs = attention::visible_pairs(pos0 + keep.start, keep.len(), window);
            let _p = scope(Op::Attention, 0, 4 * pairs * qd as u64);
            let kc = &mut self.k_cache[il];
            let vc = &mut self.v_cache[il];
            ops::f32_to_f16_row(k, &mut kc[pos0 * kvd..(pos0 + n) * kvd]);
            ops::f32_to_f16_row(v, &mut vc[pos0 * kvd..(pos0 + n) * kvd]);
            if keep.is_empty() {
                break; // a chunk without logits: its last layer ends with the cache
            }
            // att = softmax(q·Kᵀ·scale + mask)·V for the kept rows  [m, q_dim]
            let m = keep.len();
            let input = AttnInput {
                q,
                kv: (&kc[..(pos0 + n) * kvd], &vc[..(pos0 + n) * kvd]),
                shape: AttnShape {
                    pos0,
                    n_head: hp.n_head,
                    n_head_kv: hp.n_head_kv,
                    head_dim: hd,
                },
                scale: score_scale,
                window,
            };
            attention::attention(input, &mut s.att[..m * qd], keep.clone());
            drop(_p);
            // From here on the layer runs on the kept rows only: move their residual rows to
            // the front.                                              x: [m, n_embd]
            if m < n {
                s.x.copy_within(keep.start * e..keep.end * e, 0);
                out_range = 0..m;
            }
            let n = m;
            // h = att·Wo [→ rms_norm * post_attention_norm];  x += h
            let h = &mut s.h[..n * e];
            announce(&[&lw.w_gate, &lw.w_up]);
            mm(model, &lw.wo, &s.att[..n * qd], h, Op::MatmulO, &mut s.act);
            if let Some(pn) = &lw.post_attn_norm {
                norm_rows(h, pn, hp.rms_eps);
            }
            {
                let _p = scope(Op::Elementwise, 0, h.len() as u64);
                add_batch(&mut s.x[..n * e], h);
            }

            // ---- feed-forward ----
            // h = rms_norm(x) * ffn_norm, inside the quantization    [n, n_embd]
            let normed = linear::Input::Normed {
                x: &s.x[..n * e],
                weight: &lw.ffn_norm,
                eps: hp.rms_eps,
            };
            // gate = act(h·Wgate) * (h·Wup)                          [n, n_ff]
            // (prompts: in one pass, see `linear::matmul_gated`)
            let (gate, up) = (&mut s.gate[..n * nf], &mut s.up[..n * nf]);
            announce(&[&lw.w_down]);
            let glu = match spec.ffn_activation {
                FfnActivation::Silu => ops::swiglu,
                FfnActivation::GeluTanh => ops::geglu,
            };
            let down = (&lw.w_down, &mut s.act_down);
            let how = linear::matmul_gated(
                model, normed, &lw.w_gate, &lw.w_up, glu, gate, up, &mut s.act, down,
            );
            if how == Gated::Separate {
                let _p = scope(Op::Activation, 0, 4 * gate.len() as u64);
                zip_batch(gate, up, glu);
            }
            // h = gate·Wdown [→ rms_norm * post_ffw_norm];  x += h   [n, n_embd]
            match w.layers.get(il + 1) {
                Some(next) => announce(&[&next.wq, &next.wk, &next.wv]),
                None => announce(&[&w.output]),
            }
            if how == Gated::Quantized {
                linear::matmul_quantized(model, &lw.w_down, &s.act_down, h, Op::MatmulDown);
            } else {
                mm(model, &lw.w_down, gate, h, Op::MatmulDown, &mut s.act);
            }
            if let Some(pn) = &lw.post_ffn_norm {
                norm_rows(h, pn, hp.rms_eps);
            }
            {
                let _p = scope(Op::Elementwise, 0, h.len() as u64);
                add_batch(&mut s.x[..n * e], h);
            }
        }

        // logits = (rms_norm(x) * output_norm)·Woutput, for the requested rows only.
        if out_rows.is_some() {
            let rows = out_range;
            let m = rows.len();
            let h = linear::Input::Normed {
                x: &s.x[rows.start * e..rows.end * e],
                weight: &w.output_norm,
                eps: hp.rms_eps,
            };
            let nv = hp.n_vocab;
            let out = &mut self.logits[first_out * nv..(first_out + m) * nv];
            // The next token starts with layer 0's q/k/v (after sampling).
            if let Some(first) = w.layers.first() {
                announce(&[&first.wq, &first.wk, &first.wv]);
            }
            let job = (&w.output, out, Op::MatmulOutput);
            linear::matmul_many(model, h, &mut [job], &mut s.act);
        }
    }
}

/// `out = x · Wᵀ` for a model matrix.
fn mm(model: &Model, w: &Matrix, x: &[f32], out: &mut [f32], op: Op, act: &mut ActivationScratch) {
    linear::matmul(model, w, x, out, op, act);
}

/// An activation scratch pre-sized for the largest activation format any matrix of `model`
/// uses, so the hot path never grows it.
fn activation_scratch(model: &Model, max_batch: usize, widest: usize) -> ActivationScratch {
    let mut act = ActivationScratch::new();
    let w = model.weights();
    let mats = w
        .layers
        .iter()
        .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
    for m in mats.chain([&w.output]) {
        if let Some(ty) = grist_kernels::formats::activation_type(m.ty) {
            // Sizes were validated at load; a failure here only means no pre-sizing.
            let _ = act.reserve(ty, max_batch, widest);
        }
    }
    act
}

/// A scratch pre-sized for the down products' activations of a `max_batch`-token prompt,
/// which the gated product writes quantized ([`linear::matmul_gated`]).
fn down_activation_scratch(model: &Model, max_batch: usize) -> ActivationScratch {
    let mut act = ActivationScratch::new();
    for l in &model.weights().layers {
        if let Some(ty) = grist_kernels::formats::activation_type(l.w_down.ty) {
            // Sizes were validated at load; a failure here only means no pre-sizing.
            let _ = act.reserve(ty, max_batch, l.w_down.cols);
        }
    }
    act
}

/// Fewest values a row-wise or element-wise op needs before it is split over rayon's threads.
/// Each value's result does not depend on the split, so results are the same bits either way.
/// Token generation (one row of a few thousand values) stays on the calling thread, where a
/// parallel region would cost more (microseconds) than the op. Prompt processing's ops (a
/// whole batch) took 15 % of gemma-3's pp512 on one thread (docs/PERFORMANCE.md).
const PARALLEL_MIN_VALUES: usize = 1 << 15;

/// Values per parallel piece of an element-wise op: large enough that a piece costs more than
/// its scheduling, small enough to balance two to a few dozen threads.
const ELEMENTWISE_PIECE: usize = 1 << 14;

/// `x[row] = rms_norm(x[row]) * weight` for every row of `x` (`[n, weight.len()]`).
fn norm_rows(x: &mut [f32], weight: &[f32], eps: f32) {
    let _p = scope(Op::Norm, 0, 4 * x.len() as u64);
    let norm = |row: &mut [f32]| ops::rms_norm_in_place(row, Some(weight), eps);
    if x.len() < PARALLEL_MIN_VALUES {
        x.chunks_exact_mut(weight.len()).for_each(norm);
    } else {
        x.par_chunks_exact_mut(weight.len()).for_each(norm);
    }
}

/// `y = f(y, x)` element-wise over a batch (`ops::add`, `ops::swiglu`, `ops::geglu`), in
/// pieces of [`ELEMENTWISE_PIECE`] values on rayon's threads for large batches.
fn zip_batch(y: &mut [f32], x: &[f32], f: fn(&mut [f32], &[f32])) {
    assert_eq!(
        y.len(),
        x.len(),
        "element-wise op: operands differ in length"
    );
    if y.len() < PARALLEL_MIN_VALUES {
        f(y, x);
    } else {
        y.par_chunks_mut(ELEMENTWISE_PIECE)
            .zip(x.par_chunks(ELEMENTWISE_PIECE))
            .for_each(|(y, x)| f(y, x));
    }
}

/// `y += x` over a batch ([`zip_batch`]).
fn add_batch(y: &mut [f32], x: &[f32]) {
    zip_batch(y, x, ops::add);
}

/// Fills `table` (`[n, n_rot]`) with the cos/sin of positions `pos0..pos0 + n`
/// ([`ops::rope_cache`] per position; positions in parallel for large chunks).
fn rope_table(table: &mut [f32], pos0: usize, rope: &RopeParams<'_>) {
    let n_rot = rope.n_rot;
    if n_rot == 0 {
        return;
    }
    let row = |(t, cache): (usize, &mut [f32])| ops::rope_cache(pos0 + t, rope, cache);
    if table.len() < PARALLEL_MIN_VALUES {
        table.chunks_exact_mut(n_rot).enumerate().for_each(row);
    } else {
        table.par_chunks_exact_mut(n_rot).enumerate().for_each(row);
    }
}

/// RoPE on the queries `q` (`[n, q_dim]`) and keys `k` (`[n, kv_dim]`) of a chunk, token `t`
/// rotated by row `t` of `table` (`[n, n_rot]`, from [`rope_table`]). `dims` is `(q_dim,
/// kv_dim, head_dim)`. Large batches run their tokens in parallel.
fn rope_rows(
    q: &mut [f32],
    k: &mut [f32],
    (qd, kvd, hd): (usize, usize, usize),
    table: &[f32],
    style: RopeStyle,
) {
    let n = q.len() / qd;
    if n == 0 || table.is_empty() {
        return;
    }
    let n_rot = table.len() / n;
    let token = |((q, k), cache): ((&mut [f32], &mut [f32]), &[f32])| {
        ops::rope_apply(q, hd, cache, style);
        ops::rope_apply(k, hd, cache, style);
    };
    if q.len() + k.len() < PARALLEL_MIN_VALUES {
        q.chunks_exact_mut(qd)
            .zip(k.chunks_exact_mut(kvd))
            .zip(table.chunks_exact(n_rot))
            .for_each(token);
    } else {
        q.par_chunks_exact_mut(qd)
            .zip(k.par_chunks_exact_mut(kvd))
            .zip(table.par_chunks_exact(n_rot))
            .for_each(token);
    }
}

/// Adds `bias` (`[d]`) to every row of `x` (`[n, d]`), rows in parallel for large batches.
fn add_rows(x: &mut [f32], bias: &[f32]) {
    let add = |row: &mut [f32]| ops::add(row, bias);
    if x.len() < PARALLEL_MIN_VALUES {
        x.chunks_exact_mut(bias.len()).for_each(add);
    } else {
        x.par_chunks_exact_mut(bias.len()).for_each(add);
    }
}

/// `x *= s` over a batch, in pieces of [`ELEMENTWISE_PIECE`] values on rayon's threads for
/// large batches (one thread scaling gemma's `[512, 1024]` queries left the other idle).
fn scale_batch(x: &mut [f32], s: f32) {
    if x.len() < PARALLEL_MIN_VALUES {
        ops::scale(x, s);
    } else {
        x.par_chunks_mut(ELEMENTWISE_PIECE)
            .for_each(|piece| ops::scale(piece, s));
    }
}

#[cfg(test)]
mod tests {
    //! The batch-parallel row ops against their one-thread forms, bit for bit, on batches
    //! above [`PARALLEL_MIN_VALUES`] (the model tests' fixtures are too small to reach it).
    use super::*;

    /// Whether two results are the same bits.
    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
            })
            .collect()
    }

    /// Runs `f` in a 3-thread rayon pool, so the parallel paths really split.
    fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(f)
    }

    #[test]
    fn parallel_row_ops_match_one_thread_bits() {
        let (n, d) = (300, 640); // 192 000 values: the parallel path
        assert!(n * d >= PARALLEL_MIN_VALUES);
        let x = values(n * d, 1);
        let y = values(n * d, 2);
        let weight = values(d, 3);

        let mut want = x.clone();
        for row in want.chunks_exact_mut(d) {
            ops::rms_norm_in_place(row, Some(&weight), 1e-6);
        }
        let mut got = x.clone();
        in_pool(|| norm_rows(&mut got, &weight, 1e-6));
        assert!(same_bits(&got, &want));

        let mut want = x.clone();
        ops::scale(&mut want, 0.37);
        let mut got = x.clone();
        in_pool(|| scale_batch(&mut got, 0.37));
        assert!(same_bits(&got, &want));

        let mut want = x.clone();
        for row in want.chunks_exact_mut(d) {
            ops::add(row, &weight);
        }
        let mut got = x.clone();
        in_pool(|| add_rows(&mut got, &weight));
        assert!(same_bits(&got, &want));

        for (f, name) in [
            (ops::add as fn(&mut [f32], &[f32]), "add"),
            (ops::swiglu, "swiglu"),
            (ops::geglu, "geglu"),
        ] {
            let mut want = x.clone();
            f(&mut want, &y);
            let mut got = x.clone();
            in_pool(|| zip_batch(&mut got, &y, f));
            assert!(same_bits(&got, &want), "{name}");
        }
    }

    #[test]
    fn parallel_rope_matches_token_by_token() {
        let (n, hd, n_head, n_head_kv) = (520, 64, 4, 2);
        let (qd, kvd) = (n_head * hd, n_head_kv * hd);
        assert!(n * (qd + kvd) >= PARALLEL_MIN_VALUES);
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let rope = RopeParams::new(hd, 10_000.0, style);
            let (q0, k0) = (values(n * qd, 4), values(n * kvd, 5));
            let (mut q, mut k) = (q0.clone(), k0.clone());
            let mut cache = vec![0.0; hd];
            for t in 0..n {
                ops::rope_cache(7 + t, &rope, &mut cache);
                ops::rope_apply(&mut q[t * qd..(t + 1) * qd], hd, &cache, style);
                ops::rope_apply(&mut k[t * kvd..(t + 1) * kvd], hd, &cache, style);
            }
            let (mut pq, mut pk) = (q0.clone(), k0.clone());
            let mut table = vec![0.0; n * hd];
            in_pool(|| {
                rope_table(&mut table, 7, &rope);
                rope_rows(&mut pq, &mut pk, (qd, kvd, hd), &table, style)
            });
            assert!(
                table.len() >= PARALLEL_MIN_VALUES,
                "the table's parallel path"
            );
            assert!(same_bits(&pq, &q));
            assert!(same_bits(&pk, &k));
            assert_ne!(pq, q0, "rope changed nothing");
        }
    }
}

//! Architectures as data: each supported architecture is an [`ArchSpec`], a short list of the
//! choices that distinguish it from a plain LLaMA block. The executor ([`crate::session`])
//! reads the spec; adding an architecture that recombines these building blocks means adding
//! one small file here and one line to [`spec_for`].
//!
//! The block every spec describes (pre-norm decoder layer):
//! ```text
//! x = embed(tokens) [* sqrt(n_embd)]
//! for each layer:
//!     h = rms_norm(x) * attn_norm
//!     q, k, v = h·Wq [+ bq], h·Wk [+ bk], h·Wv [+ bv]
//!     [q, k = rms_norm_per_head(q) * q_norm, rms_norm_per_head(k) * k_norm]
//!     q, k = rope(q), rope(k)                    (Normal or Neox pairing; local/global base)
//!     a = attention(q, k, v) · Wo                (causal, GQA, [sliding window])
//!     [a = rms_norm(a) * post_attention_norm]
//!     x = x + a
//!     h = rms_norm(x) * ffn_norm
//!     f = (act(h·Wgate) * (h·Wup)) · Wdown       (act = SiLU or GELU-tanh)
//!     [f = rms_norm(f) * post_ffw_norm]
//!     x = x + f
//! logits = (rms_norm(x) * output_norm) · Woutput (Woutput = token_embd when tied)
//! ```

use grist_kernels::ops::RopeStyle;

mod gemma3;
mod llama;
mod qwen2;
mod qwen3;

/// The non-linearity of the gated feed-forward network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// `silu(gate) * up` (SwiGLU: LLaMA, Qwen).
    Silu,
    /// `gelu_tanh(gate) * up` (GeGLU: Gemma).
    GeluTanh,
}

/// What distinguishes one architecture's graph from another's.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchSpec {
    /// The `general.architecture` value.
    pub name: &'static str,
    /// How RoPE pairs the dimensions of a head.
    pub rope_style: RopeStyle,
    /// Whether Q, K and V have biases (`attn_q.bias`, …); required when true.
    pub qkv_bias: bool,
    /// Whether Q and K are RMS-normalised per head before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// Whether the attention and FFN outputs are RMS-normalised before the residual add
    /// (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    /// Non-linearity of the feed-forward network.
    pub ffn_activation: FfnActivation,
    /// Whether the token embeddings are multiplied by `sqrt(n_embd)`.
    pub scale_embeddings: bool,
    /// Whether the attention scale `1/sqrt(head_dim)` is applied to Q after RoPE (gemma3) rather
    /// than to the scores (the others). Same math, different rounding, as llama.cpp does.
    pub scale_q_before_attention: bool,
    /// `Some(n)`: when the file sets `attention.sliding_window`, layers alternate between
    /// sliding-window and global attention with period `n` (the last of every `n` layers is
    /// global) unless `attention.sliding_window_pattern` says otherwise.
    pub swa_period: Option<usize>,
}

/// The spec of the architecture called `name`, if grist implements it.
pub fn spec_for(name: &str) -> Option<ArchSpec> {
    match name {
        "llama" => Some(llama::spec()),
        "qwen2" => Some(qwen2::spec()),
        "qwen3" => Some(qwen3::spec()),
        "gemma3" => Some(gemma3::spec()),
        _ => None,
    }
}

//! Gemma 3: embeddings scaled by `sqrt(n_embd)`, per-head Q/K RMSNorm, NEOX RoPE, Q scaled by
//! `1/sqrt(head_dim)` before attention, RMSNorm of the attention and FFN outputs before each
//! residual add, GELU(tanh)-gated FFN, and sliding-window layers interleaved with global ones
//! (llama.cpp's default period 6: layers with `il % 6 == 5` are global). Local layers use their
//! own RoPE base (`rope.freq_base_swa`, default 10000). The LM head is tied.
//!
//! (gemma-3-27B uses `1/sqrt(n_embd/n_head)` as attention scale; grist follows the smaller
//! models, whose `key_length` gives the scale.)

use super::{ArchSpec, FfnActivation};
use grist_kernels::ops::RopeStyle;

/// The gemma3 spec.
pub fn spec() -> ArchSpec {
    ArchSpec {
        name: "gemma3",
        rope_style: RopeStyle::Neox,
        qkv_bias: false,
        qk_norm: true,
        post_norms: true,
        ffn_activation: FfnActivation::GeluTanh,
        scale_embeddings: true,
        scale_q_before_attention: true,
        swa_period: Some(6),
    }
}

//! Qwen3: no biases, but Q and K are RMS-normalised per head (`attn_q_norm`, `attn_k_norm`,
//! `[head_dim]`) before NEOX RoPE. Small Qwen3 models tie the LM head to the embeddings.

use super::{ArchSpec, FfnActivation};
use grist_kernels::ops::RopeStyle;

/// The qwen3 spec.
pub fn spec() -> ArchSpec {
    ArchSpec {
        name: "qwen3",
        rope_style: RopeStyle::Neox,
        qkv_bias: false,
        qk_norm: true,
        post_norms: false,
        ffn_activation: FfnActivation::Silu,
        scale_embeddings: false,
        scale_q_before_attention: false,
        swa_period: None,
    }
}

//! Qwen2 / Qwen2.5: LLaMA's block with biases on Q, K and V and NEOX-style RoPE (pairs
//! `(i, i + head_dim/2)`).

use super::{ArchSpec, FfnActivation};
use grist_kernels::ops::RopeStyle;

/// The qwen2 spec.
pub fn spec() -> ArchSpec {
    ArchSpec {
        name: "qwen2",
        rope_style: RopeStyle::Neox,
        qkv_bias: true,
        qk_norm: false,
        post_norms: false,
        ffn_activation: FfnActivation::Silu,
        scale_embeddings: false,
        scale_q_before_attention: false,
        swa_period: None,
    }
}

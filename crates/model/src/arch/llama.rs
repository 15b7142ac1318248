//! LLaMA (and SmolLM2, Mistral-style GGUFs): the plain block. RMSNorm, Q/K/V without biases,
//! RoPE on adjacent pairs (the GGUF converter permuted Wq/Wk for it), SwiGLU FFN; the LM head
//! is `output.weight`, or `token_embd.weight` when the file has none (tied embeddings).

use super::{ArchSpec, FfnActivation};
use grist_kernels::ops::RopeStyle;

/// The llama spec.
pub fn spec() -> ArchSpec {
    ArchSpec {
        name: "llama",
        rope_style: RopeStyle::Normal,
        qkv_bias: false,
        qk_norm: false,
        post_norms: false,
        ffn_activation: FfnActivation::Silu,
        scale_embeddings: false,
        scale_q_before_attention: false,
        swa_period: None,
    }
}

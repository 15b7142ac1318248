//! [`ModelError`]: everything that can go wrong loading a model or running it, each variant
//! printed as one line a user can act on.

use std::fmt;

use grist_gguf::{GgmlType, GgufError};

/// Why a model could not be loaded or a forward pass could not run.
#[derive(Debug)]
pub enum ModelError {
    /// The GGUF file could not be read, or a metadata key / tensor is missing or mistyped.
    Gguf(GgufError),
    /// `general.architecture` names an architecture grist does not implement.
    UnsupportedArchitecture(String),
    /// A tensor's type has no kernel in grist.
    UnsupportedTensorType {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// A hyperparameter is missing, out of range or inconsistent with another one.
    InvalidHParams(String),
    /// A tensor's shape does not match what the hyperparameters say.
    TensorShape {
        /// The tensor.
        tensor: String,
        /// The shape the hyperparameters imply (ggml order, row length first).
        expected: Vec<u64>,
        /// The shape in the file.
        found: Vec<u64>,
    },
    /// A feature the file asks for (e.g. a RoPE scaling type) that grist does not implement.
    Unsupported(String),
    /// The tokens would not fit in the context window.
    ContextOverflow {
        /// Tokens already in the KV cache.
        n_past: usize,
        /// Tokens in this call.
        n_new: usize,
        /// Context size of the session.
        n_ctx: usize,
    },
    /// A token id outside the vocabulary.
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// A caller mistake that is not one of the above (empty batch, zero context, …).
    InvalidArgument(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Gguf(e) => write!(f, "{e}"),
            ModelError::UnsupportedArchitecture(a) => write!(
                f,
                "unsupported architecture '{a}' (grist runs llama, qwen2, qwen3 and gemma3)"
            ),
            ModelError::UnsupportedTensorType { tensor, ty } => {
                write!(f, "tensor '{tensor}' has type {ty}, which grist does not support")
            }
            ModelError::InvalidHParams(m) => write!(f, "invalid hyperparameters: {m}"),
            ModelError::TensorShape { tensor, expected, found } => write!(
                f,
                "tensor '{tensor}' has shape {found:?} but the hyperparameters imply {expected:?}"
            ),
            ModelError::Unsupported(m) => write!(f, "unsupported: {m}"),
            ModelError::ContextOverflow { n_past, n_new, n_ctx } => write!(
                f,
                "prompt too long: {n_past} cached + {n_new} new tokens exceed the context size {n_ctx}"
            ),
            ModelError::TokenOutOfRange { token, n_vocab } => {
                write!(f, "token id {token} is outside the vocabulary (size {n_vocab})")
            }
            ModelError::InvalidArgument(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModelError::Gguf(e) => Some(e),
            _ => None,
        }
    }
}

impl From<GgufError> for ModelError {
    fn from(e: GgufError) -> Self {
        ModelError::Gguf(e)
    }
}

//! grist-model: hyperparameters, architectures, the forward pass, KV cache and sampling.
//!
//! ```text
//! Model::load(path)            GGUF → ArchSpec + HParams + weight descriptors (zero copy)
//! Session::new(&model, n_ctx)  KV cache + scratch buffers, allocated once
//! session.eval(&tokens, all)   forward pass over a batch → logits [n_out, n_vocab]
//! ```
//!
//! Offline tools write GGUF files: [`synth`] (a real model's shape, random weights) and
//! [`repack`] (Q4_K, Q6_K, Q8_0, Q4_1 and Q5_0 matrices rewritten in the interleaved Q4_K_R16,
//! Q6_K_R16, Q8_0_R16, Q4_1_R16 and Q5_0_R16 layouts, which grist memory-maps as they are).

#![warn(missing_docs)]

pub mod arch;
pub mod attention;
pub mod chat;
pub mod error;
pub mod hparams;
pub mod linear;
pub mod model;
pub mod profile;
pub mod repack;
pub mod sampler;
pub mod session;
pub mod synth;
pub mod weights;

pub use arch::{ArchSpec, FfnActivation};
pub use error::ModelError;
pub use hparams::HParams;
pub use model::Model;
pub use session::{Session, MAX_BATCH};

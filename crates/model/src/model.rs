//! [`Model`]: an opened GGUF file, its architecture, hyperparameters and weight descriptors.

use std::path::Path;

use grist_gguf::GgufFile;

use crate::arch::{spec_for, ArchSpec};
use crate::error::ModelError;
use crate::hparams::HParams;
use crate::weights::{Location, Matrix, WeightLoader, Weights};

/// A loaded model. The weights stay in the memory-mapped file (zero copy); a `Model` is
/// immutable and can be shared by several [`crate::Session`]s.
pub struct Model {
    gguf: GgufFile,
    spec: ArchSpec,
    hparams: HParams,
    weights: Weights,
    /// Aligned copies of the (rare) tensors whose bytes in the file are misaligned.
    owned: Vec<Vec<u64>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.gguf.path())
            .field("hparams", &self.hparams)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Opens `path`, reads the architecture and hyperparameters and locates every weight.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        Model::from_gguf(GgufFile::open(path)?)
    }

    /// Builds a model from an already opened GGUF file.
    pub fn from_gguf(gguf: GgufFile) -> Result<Model, ModelError> {
        let arch = gguf.get_str("general.architecture")?.to_string();
        let spec = spec_for(&arch).ok_or(ModelError::UnsupportedArchitecture(arch))?;
        let hparams = HParams::from_gguf(&gguf, &spec)?;
        let mut loader = WeightLoader {
            gguf: &gguf,
            owned: Vec::new(),
        };
        let weights = loader.load(&spec, &hparams)?;
        let owned = loader.owned;
        Ok(Model {
            gguf,
            spec,
            hparams,
            weights,
            owned,
        })
    }

    /// The hyperparameters.
    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }

    /// The underlying GGUF file (metadata for the tokenizer, chat template, …).
    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    /// Vocabulary size (rows of the embedding matrix, columns of the logits).
    pub fn n_vocab(&self) -> usize {
        self.hparams.n_vocab
    }

    /// `general.architecture`.
    pub fn arch_name(&self) -> &str {
        self.spec.name
    }

    /// The architecture's graph description.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// The weight descriptors.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The bytes of matrix `m` (`[rows * row_bytes]`), borrowed from the mapping.
    pub fn matrix_bytes(&self, m: &Matrix) -> &[u8] {
        match m.loc {
            Location::Mapped { start, len } => &self.gguf.bytes()[start..start + len],
            Location::Owned { index, len } => {
                &bytemuck::cast_slice::<u64, u8>(&self.owned[index])[..len]
            }
        }
    }
}

//! The weights of a model: matrices borrowed zero-copy from the memory-mapped GGUF file, and
//! the small vectors (norm weights, biases) converted once to owned `f32`.
//!
//! A [`Matrix`] records where its bytes are, not a reference to them, so [`crate::Model`] can own
//! the mapped file and the descriptors side by side; [`crate::Model::matrix_bytes`] turns a
//! descriptor into a `&[u8]` view of the mapping.
//!
//! Alignment: the kernels view a row's bytes as `&[Block]`, which needs the block's alignment
//! (at most 4 bytes). GGUF aligns every tensor to `general.alignment` (default 32) inside a
//! page-aligned mapping, so this always holds for well-formed files. A file with a smaller
//! alignment that leaves a tensor misaligned is still accepted: that tensor (only) is copied
//! once into an aligned owned buffer at load time.

use grist_gguf::{GgmlType, GgufFile, TensorView};
use grist_kernels::formats;

use crate::arch::ArchSpec;
use crate::error::ModelError;
use crate::hparams::HParams;

/// Alignment the kernels need for any tensor's bytes (the largest block alignment, f32's).
const KERNEL_ALIGN: usize = 4;

/// Where a matrix's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// `file.bytes()[start..start + len]`.
    Mapped {
        /// Absolute offset in the file.
        start: usize,
        /// Length in bytes.
        len: usize,
    },
    /// `Model::owned[index]` (a misaligned tensor copied at load time), first `len` bytes.
    Owned {
        /// Index in the model's owned buffers.
        index: usize,
        /// Length in bytes.
        len: usize,
    },
}

/// A weight matrix `[rows, cols]` (ggml dims `[cols, rows]`): `rows` rows of `cols` values of
/// type `ty`, each row `row_bytes` bytes.
#[derive(Clone, Debug)]
pub struct Matrix {
    /// Tensor name in the file.
    pub name: String,
    /// Storage type.
    pub ty: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Values per row (input features).
    pub cols: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    pub(crate) loc: Location,
}

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// RMSNorm weight before attention, `[n_embd]`.
    pub attn_norm: Vec<f32>,
    /// Query projection `[n_head*head_dim, n_embd]`.
    pub wq: Matrix,
    /// Key projection `[n_head_kv*head_dim, n_embd]`.
    pub wk: Matrix,
    /// Value projection `[n_head_kv*head_dim, n_embd]`.
    pub wv: Matrix,
    /// Output projection `[n_embd, n_head*head_dim]`.
    pub wo: Matrix,
    /// Q/K/V biases (`[q_dim]`, `[kv_dim]`, `[kv_dim]`) when the architecture has them.
    pub qkv_bias: Option<[Vec<f32>; 3]>,
    /// Per-head RMSNorm weights of Q and K (`[head_dim]` each) when the architecture has them.
    pub qk_norm: Option<[Vec<f32>; 2]>,
    /// RMSNorm weight of the attention output before the residual add, `[n_embd]`.
    pub post_attn_norm: Option<Vec<f32>>,
    /// RMSNorm weight before the FFN, `[n_embd]`.
    pub ffn_norm: Vec<f32>,
    /// FFN gate projection `[n_ff, n_embd]`.
    pub w_gate: Matrix,
    /// FFN up projection `[n_ff, n_embd]`.
    pub w_up: Matrix,
    /// FFN down projection `[n_embd, n_ff]`.
    pub w_down: Matrix,
    /// RMSNorm weight of the FFN output before the residual add, `[n_embd]`.
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// All the weights of a model.
#[derive(Clone, Debug)]
pub struct Weights {
    /// Token embeddings `[n_vocab, n_embd]`.
    pub token_embd: Matrix,
    /// The blocks.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm weight, `[n_embd]`.
    pub output_norm: Vec<f32>,
    /// LM head `[n_vocab, n_embd]` (a copy of `token_embd`'s descriptor when tied).
    pub output: Matrix,
    /// Whether the LM head is the embedding matrix.
    pub tied_output: bool,
    /// Optional RoPE frequency divisors (`rope_freqs.weight`, `[n_rot/2]`).
    pub rope_freqs: Option<Vec<f32>>,
}

/// Loads weight descriptors and small vectors, checking every shape against `hp`.
pub(crate) struct WeightLoader<'f> {
    pub gguf: &'f GgufFile,
    /// Owned copies of misaligned tensors (u64 words: 8-byte aligned).
    pub owned: Vec<Vec<u64>>,
}

impl<'f> WeightLoader<'f> {
    fn view(&self, name: &str) -> Result<TensorView<'f>, ModelError> {
        Ok(self.gguf.require_tensor(name)?)
    }

    /// A 1-D tensor of `n` values converted to f32 (norm weights and biases; tiny).
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.view(name)?;
        let dims = t.dims();
        if dims.iter().product::<u64>() != n as u64 || dims.iter().filter(|&&d| d != 1).count() > 1
        {
            return Err(ModelError::TensorShape {
                tensor: name.to_string(),
                expected: vec![n as u64],
                found: dims.to_vec(),
            });
        }
        let mut out = vec![0.0f32; n];
        if t.ty() == GgmlType::F32 {
            // Read value by value: no alignment requirement on the source bytes.
            for (o, c) in out.iter_mut().zip(t.data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        } else {
            let aligned = aligned_copy(t.data);
            let bytes: &[u8] = bytemuck::cast_slice(&aligned);
            formats::dequantize_row(t.ty(), &bytes[..t.data.len()], &mut out)
                .map_err(|e| unsupported_or(name, t.ty(), e))?;
        }
        Ok(out)
    }

    /// A matrix `[rows, cols]`, checked and located.
    pub fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let t = self.view(name)?;
        let dims = t.dims();
        if dims.len() != 2 || dims[0] != cols as u64 || dims[1] != rows as u64 {
            return Err(ModelError::TensorShape {
                tensor: name.to_string(),
                expected: vec![cols as u64, rows as u64],
                found: dims.to_vec(),
            });
        }
        let ty = t.ty();
        if !formats::is_supported(ty) {
            return Err(ModelError::UnsupportedTensorType {
                tensor: name.to_string(),
                ty,
            });
        }
        if !cols.is_multiple_of(ty.block_elems()) {
            return Err(ModelError::TensorShape {
                tensor: format!("{name} (row length not a multiple of the {ty} block size)"),
                expected: vec![cols as u64, rows as u64],
                found: dims.to_vec(),
            });
        }
        if let Some((_, group_rows)) = ty.interleaved() {
            if !rows.is_multiple_of(group_rows) {
                return Err(ModelError::TensorShape {
                    tensor: format!("{name} ({ty} needs a multiple of {group_rows} rows)"),
                    expected: vec![cols as u64, rows.next_multiple_of(group_rows) as u64],
                    found: dims.to_vec(),
                });
            }
        }
        let row_bytes = cols / ty.block_elems() * ty.block_bytes();
        let len = t.data.len();
        debug_assert_eq!(len, row_bytes * rows);
        let base = self.gguf.bytes().as_ptr() as usize;
        let start = t.data.as_ptr() as usize - base;
        let loc = if (t.data.as_ptr() as usize).is_multiple_of(KERNEL_ALIGN) {
            Location::Mapped { start, len }
        } else {
            self.owned.push(aligned_copy(t.data));
            Location::Owned {
                index: self.owned.len() - 1,
                len,
            }
        };
        Ok(Matrix {
            name: name.to_string(),
            ty,
            rows,
            cols,
            row_bytes,
            loc,
        })
    }

    /// Loads every weight of a model of architecture `spec`.
    pub fn load(&mut self, spec: &ArchSpec, hp: &HParams) -> Result<Weights, ModelError> {
        let (e, f, v) = (hp.n_embd, hp.n_ff, hp.n_vocab);
        let (qd, kvd, hd) = (hp.q_dim(), hp.kv_dim(), hp.head_dim);
        let token_embd = self.matrix("token_embd.weight", v, e)?;
        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            let qkv_bias = if spec.qkv_bias {
                Some([
                    self.vector(&n("attn_q.bias"), qd)?,
                    self.vector(&n("attn_k.bias"), kvd)?,
                    self.vector(&n("attn_v.bias"), kvd)?,
                ])
            } else {
                None
            };
            let qk_norm = if spec.qk_norm {
                Some([
                    self.vector(&n("attn_q_norm.weight"), hd)?,
                    self.vector(&n("attn_k_norm.weight"), hd)?,
                ])
            } else {
                None
            };
            let (post_attn_norm, post_ffn_norm) = if spec.post_norms {
                (
                    Some(self.vector(&n("post_attention_norm.weight"), e)?),
                    Some(self.vector(&n("post_ffw_norm.weight"), e)?),
                )
            } else {
                (None, None)
            };
            layers.push(LayerWeights {
                attn_norm: self.vector(&n("attn_norm.weight"), e)?,
                wq: self.matrix(&n("attn_q.weight"), qd, e)?,
                wk: self.matrix(&n("attn_k.weight"), kvd, e)?,
                wv: self.matrix(&n("attn_v.weight"), kvd, e)?,
                wo: self.matrix(&n("attn_output.weight"), e, qd)?,
                qkv_bias,
                qk_norm,
                post_attn_norm,
                ffn_norm: self.vector(&n("ffn_norm.weight"), e)?,
                w_gate: self.matrix(&n("ffn_gate.weight"), f, e)?,
                w_up: self.matrix(&n("ffn_up.weight"), f, e)?,
                w_down: self.matrix(&n("ffn_down.weight"), e, f)?,
                post_ffn_norm,
            });
        }
        let output_norm = self.vector("output_norm.weight", e)?;
        let (output, tied_output) = if self.gguf.tensor("output.weight").is_some() {
            (self.matrix("output.weight", v, e)?, false)
        } else {
            (token_embd.clone(), true)
        };
        let rope_freqs = if self.gguf.tensor("rope_freqs.weight").is_some() {
            Some(self.vector("rope_freqs.weight", hp.n_rot / 2)?)
        } else {
            None
        };
        Ok(Weights {
            token_embd,
            layers,
            output_norm,
            output,
            tied_output,
            rope_freqs,
        })
    }
}

/// Copies `bytes` into a zero-padded buffer of u64 words (8-byte aligned).
fn aligned_copy(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

fn unsupported_or(name: &str, ty: GgmlType, e: formats::FormatError) -> ModelError {
    match e {
        formats::FormatError::Unsupported(_) => ModelError::UnsupportedTensorType {
            tensor: name.to_string(),
            ty,
        },
        other => ModelError::InvalidHParams(format!("tensor '{name}': {other}")),
    }
}

//! Synthetic models: GGUF files with a real model's exact shape and random weights.
//!
//! Inference speed and memory do not depend on the values of the weights, only on their
//! shapes and types. [`synthesize`] writes a file that `grist run` / `grist bench` load like
//! the real model — same tensor names, shapes, ggml types (llama-quantize's mixes, quantized
//! with grist's own reference quantizers) and metadata keys — so 4B-scale speed and memory can
//! be measured without a 4B download. The text such a model generates is meaningless.
//!
//! ```text
//! Preset (real hyperparameters) + SynthType (qN mix) + vocabulary
//!   → tensor plan: names, shapes, per-tensor ggml type (llama_tensor_get_type's rules)
//!   → GgufStreamWriter: header first, then each tensor quantized row by row (rayon) and
//!     streamed to the file, so peak memory stays a few megabytes whatever the model size
//! ```
//!
//! Weights are drawn from N(0, 1/sqrt(fan_in)) (fan_in = row length) with a seeded PRNG, one
//! stream per (tensor, row), so a file is reproducible bit for bit whatever the thread count.
//! Norm weights are 1. By default each matrix is built from a pool of
//! [`DEFAULT_DISTINCT_ROWS`] distinct random rows repeated down the matrix: quantizing all
//! 4·10⁹ values of a 4B model with the scalar quantizers takes many minutes on two cores, and
//! repeated rows are still distinct bytes in the file, read from DRAM like any others. The
//! file's `general.description` says which was used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use grist_gguf::{Array, GgmlType, GgufFile, GgufStreamWriter, TensorDecl, Value};
use grist_kernels::formats;
use rayon::prelude::*;

use crate::arch::{spec_for, ArchSpec};
use crate::error::ModelError;

/// Default number of distinct random rows per matrix (see the module documentation).
pub const DEFAULT_DISTINCT_ROWS: usize = 256;

/// The super-block size of the k-quants (ggml's `QK_K`).
const QK_K: u64 = 256;

/// Llama 3's RoPE frequency scaling (`rope_scaling.rope_type = "llama3"` in config.json).
///
/// Real Llama 3.x GGUFs do not store it as `rope.scaling.*` keys: llama.cpp's converter bakes
/// it into a `rope_freqs.weight` tensor of per-frequency divisors, which grist's executor
/// applies. The synthetic files do the same.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Rope {
    /// `factor`: how much the low frequencies are slowed down.
    pub factor: f32,
    /// `low_freq_factor`.
    pub low_freq_factor: f32,
    /// `high_freq_factor`.
    pub high_freq_factor: f32,
    /// `original_max_position_embeddings`.
    pub original_context: f32,
}

/// The shape of a real model, from its `config.json`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    /// Preset name as given on the command line (`qwen3-4b`).
    pub name: &'static str,
    /// Model name for `general.name` (`Qwen3-4B`).
    pub model_name: &'static str,
    /// `general.architecture`.
    pub arch: &'static str,
    /// Transformer blocks (`num_hidden_layers`).
    pub n_layer: usize,
    /// Residual width (`hidden_size`).
    pub n_embd: usize,
    /// FFN width (`intermediate_size`).
    pub n_ff: usize,
    /// Query heads (`num_attention_heads`).
    pub n_head: usize,
    /// Key/value heads (`num_key_value_heads`).
    pub n_head_kv: usize,
    /// Head size (`head_dim`).
    pub head_dim: usize,
    /// Vocabulary size (`vocab_size`).
    pub n_vocab: usize,
    /// Training context (`max_position_embeddings`).
    pub n_ctx_train: usize,
    /// RoPE base (`rope_theta`).
    pub rope_freq_base: f32,
    /// RMSNorm epsilon (`rms_norm_eps`).
    pub rms_eps: f32,
    /// Whether the LM head is the embedding matrix (`tie_word_embeddings`).
    pub tied_embeddings: bool,
    /// Sliding-window size of the local layers (gemma3), 0 for none.
    pub sliding_window: usize,
    /// Llama 3 RoPE scaling, written as `rope_freqs.weight`.
    pub llama3_rope: Option<Llama3Rope>,
}

const LLAMA32_ROPE: Llama3Rope = Llama3Rope {
    factor: 32.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_context: 8192.0,
};

/// The built-in presets, from the models' public `config.json` files.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "qwen3-0.6b",
        model_name: "Qwen3-0.6B",
        arch: "qwen3",
        n_layer: 28,
        n_embd: 1024,
        n_ff: 3072,
        n_head: 16,
        n_head_kv: 8,
        head_dim: 128,
        n_vocab: 151936,
        n_ctx_train: 40960,
        rope_freq_base: 1e6,
        rms_eps: 1e-6,
        tied_embeddings: true,
        sliding_window: 0,
        llama3_rope: None,
    },
    Preset {
        name: "qwen3-4b",
        model_name: "Qwen3-4B",
        arch: "qwen3",
        n_layer: 36,
        n_embd: 2560,
        n_ff: 9728,
        n_head: 32,
        n_head_kv: 8,
        head_dim: 128,
        n_vocab: 151936,
        n_ctx_train: 40960,
        rope_freq_base: 1e6,
        rms_eps: 1e-6,
        tied_embeddings: true,
        sliding_window: 0,
        llama3_rope: None,
    },
    Preset {
        name: "llama-3.2-1b",
        model_name: "Llama-3.2-1B",
        arch: "llama",
        n_layer: 16,
        n_embd: 2048,
        n_ff: 8192,
        n_head: 32,
        n_head_kv: 8,
        head_dim: 64,
        n_vocab: 128256,
        n_ctx_train: 131072,
        rope_freq_base: 500000.0,
        rms_eps: 1e-5,
        tied_embeddings: true,
        sliding_window: 0,
        llama3_rope: Some(LLAMA32_ROPE),
    },
    Preset {
        name: "llama-3.2-3b",
        model_name: "Llama-3.2-3B",
        arch: "llama",
        n_layer: 28,
        n_embd: 3072,
        n_ff: 8192,
        n_head: 24,
        n_head_kv: 8,
        head_dim: 128,
        n_vocab: 128256,
        n_ctx_train: 131072,
        rope_freq_base: 500000.0,
        rms_eps: 1e-5,
        tied_embeddings: true,
        sliding_window: 0,
        llama3_rope: Some(LLAMA32_ROPE),
    },
    Preset {
        name: "gemma3-1b",
        model_name: "Gemma-3-1B",
        arch: "gemma3",
        n_layer: 26,
        n_embd: 1152,
        n_ff: 6912,
        n_head: 4,
        n_head_kv: 1,
        head_dim: 256,
        n_vocab: 262144,
        n_ctx_train: 32768,
        rope_freq_base: 1e6,
        rms_eps: 1e-6,
        tied_embeddings: true,
        sliding_window: 512,
        llama3_rope: None,
    },
];

/// Finds a preset by its full name (`qwen3-4b`), or by architecture and size
/// (`arch = Some("qwen3")`, `name = "4b"`). Case-insensitive.
pub fn find_preset(arch: Option<&str>, name: &str) -> Result<Preset, ModelError> {
    let name = name.to_ascii_lowercase();
    let arch = arch.map(str::to_ascii_lowercase);
    let wanted = match &arch {
        Some(a) if !name.starts_with(a.as_str()) => format!("{a}-{name}"),
        _ => name.clone(),
    };
    PRESETS
        .iter()
        .find(|p| p.name == wanted && arch.as_deref().is_none_or(|a| a == p.arch))
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            ModelError::InvalidArgument(format!(
                "unknown preset '{wanted}' (known: {}; or --arch ARCH --preset SIZE, e.g. \
                 --arch qwen3 --preset 4b)",
                known.join(", ")
            ))
        })
}

/// The tensor-type mix of a synthetic file, named like llama-quantize's types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthType {
    /// Everything F32.
    F32,
    /// Matrices F16, vectors F32.
    F16,
    /// Matrices Q8_0.
    Q8_0,
    /// Matrices Q4_0, LM head Q6_K.
    Q4_0,
    /// Matrices Q4_1, LM head Q6_K.
    Q4_1,
    /// Every matrix Q4_K (`llama-quantize --pure` Q4_K).
    Q4K,
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the LM head and for `attn_v`/`ffn_down` in the
    /// "use more bits" layers.
    Q4KM,
    /// llama.cpp's Q5_K_M: as Q4_K_M with Q5_K as the base type.
    Q5KM,
    /// Every matrix Q6_K.
    Q6K,
}

impl SynthType {
    /// All types, in the order `--help` lists them.
    pub const ALL: [SynthType; 9] = [
        SynthType::F32,
        SynthType::F16,
        SynthType::Q8_0,
        SynthType::Q4_0,
        SynthType::Q4_1,
        SynthType::Q4K,
        SynthType::Q4KM,
        SynthType::Q5KM,
        SynthType::Q6K,
    ];

    /// The command-line name (`q4_k_m`).
    pub fn name(self) -> &'static str {
        match self {
            SynthType::F32 => "f32",
            SynthType::F16 => "f16",
            SynthType::Q8_0 => "q8_0",
            SynthType::Q4_0 => "q4_0",
            SynthType::Q4_1 => "q4_1",
            SynthType::Q4K => "q4_k",
            SynthType::Q4KM => "q4_k_m",
            SynthType::Q5KM => "q5_k_m",
            SynthType::Q6K => "q6_k",
        }
    }

    /// Parses a command-line name (case-insensitive).
    pub fn parse(s: &str) -> Result<SynthType, ModelError> {
        let lower = s.to_ascii_lowercase();
        SynthType::ALL
            .into_iter()
            .find(|t| t.name() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = SynthType::ALL.iter().map(|t| t.name()).collect();
                ModelError::InvalidArgument(format!(
                    "unknown type '{s}' (known: {})",
                    names.join(", ")
                ))
            })
    }

    /// The type of most matrices.
    fn base(self) -> GgmlType {
        match self {
            SynthType::F32 => GgmlType::F32,
            SynthType::F16 => GgmlType::F16,
            SynthType::Q8_0 => GgmlType::Q8_0,
            SynthType::Q4_0 => GgmlType::Q4_0,
            SynthType::Q4_1 => GgmlType::Q4_1,
            SynthType::Q4K | SynthType::Q4KM => GgmlType::Q4_K,
            SynthType::Q5KM => GgmlType::Q5_K,
            SynthType::Q6K => GgmlType::Q6_K,
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`; pure Q4_K is written as Q4_K_S).
    fn file_type(self) -> u32 {
        match self {
            SynthType::F32 => 0,
            SynthType::F16 => 1,
            SynthType::Q4_0 => 2,
            SynthType::Q4_1 => 3,
            SynthType::Q8_0 => 7,
            SynthType::Q4K => 14,
            SynthType::Q4KM => 15,
            SynthType::Q5KM => 17,
            SynthType::Q6K => 18,
        }
    }
}

/// Where the tokenizer metadata comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VocabSource {
    /// A minimal byte-level BPE vocabulary: the 256 byte tokens, `<|endoftext|>`,
    /// `<|im_start|>`, `<|im_end|>` and a ChatML template, padded with unused `[PADn]` tokens
    /// to the model's vocabulary size.
    Builtin,
    /// Every `tokenizer.*` key of another GGUF file, its token list padded with unused
    /// `[PADn]` tokens if shorter than the model's vocabulary.
    CopyFrom(PathBuf),
}

/// Everything [`synthesize`] needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSpec {
    /// The shape (possibly with overridden `n_layer` / `n_vocab` for tests).
    pub preset: Preset,
    /// The tensor-type mix.
    pub ty: SynthType,
    /// The tokenizer.
    pub vocab: VocabSource,
    /// PRNG seed of the weights.
    pub seed: u64,
    /// Distinct random rows per matrix (the rest repeat them); 0 = every row distinct.
    pub distinct_rows: usize,
}

impl SynthSpec {
    /// A spec with the built-in vocabulary, seed 42 and [`DEFAULT_DISTINCT_ROWS`].
    pub fn new(preset: Preset, ty: SynthType) -> SynthSpec {
        SynthSpec {
            preset,
            ty,
            vocab: VocabSource::Builtin,
            seed: 42,
            distinct_rows: DEFAULT_DISTINCT_ROWS,
        }
    }

    fn arch_spec(&self) -> Result<ArchSpec, ModelError> {
        spec_for(self.preset.arch)
            .ok_or_else(|| ModelError::UnsupportedArchitecture(self.preset.arch.to_string()))
    }

    fn validate(&self) -> Result<(), ModelError> {
        let p = &self.preset;
        let bad = |m: String| Err(ModelError::InvalidArgument(m));
        if p.n_layer == 0 || p.n_embd == 0 || p.n_ff == 0 || p.n_head == 0 || p.n_vocab == 0 {
            return bad(format!(
                "preset {}: layers, widths, heads and vocabulary must be positive",
                p.name
            ));
        }
        if p.n_head_kv == 0
            || !p.n_head.is_multiple_of(p.n_head_kv)
            || !p.head_dim.is_multiple_of(2)
        {
            return bad(format!(
                "preset {}: {} heads, {} kv heads, head size {}: heads must be a multiple of \
                 kv heads and the head size even",
                p.name, p.n_head, p.n_head_kv, p.head_dim
            ));
        }
        if p.n_vocab < BUILTIN_SPECIALS.len() + 256 {
            return bad(format!(
                "vocabulary size {} is smaller than the {} tokens every vocabulary needs",
                p.n_vocab,
                BUILTIN_SPECIALS.len() + 256
            ));
        }
        if p.n_vocab > u32::MAX as usize {
            return bad(format!(
                "vocabulary size {} does not fit u32 ids",
                p.n_vocab
            ));
        }
        Ok(())
    }
}

/// What [`synthesize`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSummary {
    /// Number of tensors.
    pub n_tensors: usize,
    /// Number of weights (all tensors).
    pub n_params: u64,
    /// File size in bytes.
    pub file_bytes: u64,
    /// Tensors per ggml type.
    pub type_counts: BTreeMap<GgmlType, usize>,
}

/// Progress of [`synthesize_with_progress`]: tensor `index` of `total`, called `name`, is
/// about to be written.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// 0-based index of the tensor.
    pub index: usize,
    /// Number of tensors.
    pub total: usize,
    /// Tensor name.
    pub name: &'a str,
}

/// Writes the synthetic model `spec` to `out_path`.
pub fn synthesize(spec: &SynthSpec, out_path: &Path) -> Result<SynthSummary, ModelError> {
    synthesize_with_progress(spec, out_path, &mut |_| {})
}

/// [`synthesize`], calling `progress` before each tensor.
pub fn synthesize_with_progress(
    spec: &SynthSpec,
    out_path: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SynthSummary, ModelError> {
    spec.validate()?;
    let tokenizer = match &spec.vocab {
        VocabSource::Builtin => builtin_vocab(spec.preset.n_vocab),
        VocabSource::CopyFrom(path) => vocab_from(path, spec.preset.n_vocab)?,
    };
    let plan = plan_tensors(spec)?;
    let mut metadata = model_metadata(spec);
    metadata.extend(tokenizer);

    let decls: Vec<TensorDecl> = plan.iter().map(|t| t.decl.clone()).collect();
    let mut writer = GgufStreamWriter::create(out_path, &metadata, decls)?;
    let mut summary = SynthSummary {
        n_tensors: plan.len(),
        n_params: 0,
        file_bytes: 0,
        type_counts: BTreeMap::new(),
    };
    for (index, t) in plan.iter().enumerate() {
        progress(Progress {
            index,
            total: plan.len(),
            name: &t.decl.name,
        });
        // One PRNG seed per tensor, derived from the file's seed and the tensor's index.
        let seed = splitmix64(spec.seed ^ splitmix64(index as u64));
        write_tensor(&mut writer, t, seed, spec.distinct_rows)?;
        summary.n_params += t.decl.dims.iter().product::<u64>();
        *summary.type_counts.entry(t.decl.ty).or_insert(0) += 1;
    }
    summary.file_bytes = writer.finish_file()?;
    Ok(summary)
}

/// How a tensor's values are made.
#[derive(Clone, Debug, PartialEq)]
enum Init {
    /// Random N(0, std²) values.
    Normal { std: f32 },
    /// Every value the same (norm weights: 1).
    Const(f32),
    /// Given values (`rope_freqs.weight`).
    Values(Vec<f32>),
}

/// One tensor of the plan.
#[derive(Clone, Debug, PartialEq)]
struct PlannedTensor {
    decl: TensorDecl,
    init: Init,
}

/// What a matrix is, for llama-quantize's type rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `token_embd.weight` (also the LM head when tied).
    TokenEmbd,
    /// `output.weight`.
    Output,
    /// `attn_v.weight` of layer `il`.
    AttnV(usize),
    /// `ffn_down.weight` of layer `il`.
    FfnDown(usize),
    /// Any other matrix.
    Other,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// layer in between get more bits for `attn_v` and `ffn_down` in the `_M` mixes.
fn use_more_bits(il: usize, n_layer: usize) -> bool {
    il < n_layer / 8 || il >= 7 * n_layer / 8 || (il as isize - (n_layer / 8) as isize) % 3 == 2
}

/// The type llama-quantize gives a matrix with rows of `ne0` values (its
/// `llama_tensor_get_type` for the types grist synthesizes, then the fallback for rows that
/// are not whole k-quant super-blocks: Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0, else F16).
fn matrix_type(ty: SynthType, role: Role, tied: bool, n_layer: usize, ne0: u64) -> GgmlType {
    let base = ty.base();
    if matches!(ty, SynthType::F32 | SynthType::F16) {
        return base;
    }
    let pure = matches!(ty, SynthType::Q4K);
    let mixed = matches!(ty, SynthType::Q4KM | SynthType::Q5KM);
    let is_lm_head = role == Role::Output || (tied && role == Role::TokenEmbd);
    let mut t = match role {
        _ if pure => base,
        _ if is_lm_head => {
            if !ne0.is_multiple_of(QK_K) {
                GgmlType::Q8_0
            } else if base != GgmlType::Q8_0 {
                GgmlType::Q6_K
            } else {
                base
            }
        }
        Role::AttnV(il) | Role::FfnDown(il) if mixed && use_more_bits(il, n_layer) => {
            GgmlType::Q6_K
        }
        _ => base,
    };
    if !ne0.is_multiple_of(t.block_elems() as u64) {
        t = match t {
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            GgmlType::Q6_K => GgmlType::Q8_0,
            other => other,
        };
        if !ne0.is_multiple_of(t.block_elems() as u64) {
            t = GgmlType::F16;
        }
    }
    t
}

/// The tensors of the model, in the order llama.cpp's converter writes them.
fn plan_tensors(spec: &SynthSpec) -> Result<Vec<PlannedTensor>, ModelError> {
    let p = &spec.preset;
    let arch = spec.arch_spec()?;
    let (e, f, v) = (p.n_embd as u64, p.n_ff as u64, p.n_vocab as u64);
    let hd = p.head_dim as u64;
    let (qd, kvd) = (p.n_head as u64 * hd, p.n_head_kv as u64 * hd);
    let tied = p.tied_embeddings;
    let mut plan = Vec::new();
    let matrix = |plan: &mut Vec<PlannedTensor>, name: String, role: Role, cols: u64, rows: u64| {
        let ty = matrix_type(spec.ty, role, tied, p.n_layer, cols);
        let std = 1.0 / (cols as f32).sqrt();
        plan.push(PlannedTensor {
            decl: TensorDecl::new(name, ty, &[cols, rows]),
            init: Init::Normal { std },
        });
    };
    let vector = |plan: &mut Vec<PlannedTensor>, name: String, n: u64, init: Init| {
        plan.push(PlannedTensor {
            decl: TensorDecl::new(name, GgmlType::F32, &[n]),
            init,
        });
    };
    let ones = Init::Const(1.0);

    matrix(&mut plan, "token_embd.weight".into(), Role::TokenEmbd, e, v);
    if let Some(rope) = &p.llama3_rope {
        let factors = llama3_rope_factors(rope, p.rope_freq_base, p.head_dim);
        vector(
            &mut plan,
            "rope_freqs.weight".into(),
            hd / 2,
            Init::Values(factors),
        );
    }
    for il in 0..p.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        vector(&mut plan, n("attn_norm.weight"), e, ones.clone());
        matrix(&mut plan, n("attn_q.weight"), Role::Other, e, qd);
        matrix(&mut plan, n("attn_k.weight"), Role::Other, e, kvd);
        matrix(&mut plan, n("attn_v.weight"), Role::AttnV(il), e, kvd);
        if arch.qkv_bias {
            vector(&mut plan, n("attn_q.bias"), qd, Init::Const(0.0));
            vector(&mut plan, n("attn_k.bias"), kvd, Init::Const(0.0));
            vector(&mut plan, n("attn_v.bias"), kvd, Init::Const(0.0));
        }
        if arch.qk_norm {
            vector(&mut plan, n("attn_q_norm.weight"), hd, ones.clone());
            vector(&mut plan, n("attn_k_norm.weight"), hd, ones.clone());
        }
        matrix(&mut plan, n("attn_output.weight"), Role::Other, qd, e);
        if arch.post_norms {
            vector(&mut plan, n("post_attention_norm.weight"), e, ones.clone());
        }
        vector(&mut plan, n("ffn_norm.weight"), e, ones.clone());
        matrix(&mut plan, n("ffn_gate.weight"), Role::Other, e, f);
        matrix(&mut plan, n("ffn_up.weight"), Role::Other, e, f);
        matrix(&mut plan, n("ffn_down.weight"), Role::FfnDown(il), f, e);
        if arch.post_norms {
            vector(&mut plan, n("post_ffw_norm.weight"), e, ones.clone());
        }
    }
    vector(&mut plan, "output_norm.weight".into(), e, ones);
    if !tied {
        matrix(&mut plan, "output.weight".into(), Role::Output, e, v);
    }
    Ok(plan)
}

/// The per-frequency divisors llama.cpp's converter writes as `rope_freqs.weight` for Llama 3
/// RoPE scaling: 1 for high frequencies (wavelength below `original_context /
/// high_freq_factor`), `factor` for low ones (above `original_context / low_freq_factor`),
/// and a smooth interpolation between.
pub fn llama3_rope_factors(rope: &Llama3Rope, base: f32, head_dim: usize) -> Vec<f32> {
    let low_wavelen = rope.original_context / rope.low_freq_factor;
    let high_wavelen = rope.original_context / rope.high_freq_factor;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / (base as f64).powf((2 * i) as f64 / head_dim as f64);
            let wavelen = (2.0 * std::f64::consts::PI / freq) as f32;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                rope.factor
            } else {
                let smooth = (rope.original_context / wavelen - rope.low_freq_factor)
                    / (rope.high_freq_factor - rope.low_freq_factor);
                1.0 / ((1.0 - smooth) / rope.factor + smooth)
            }
        })
        .collect()
}

/// `general.*` and `<arch>.*` metadata, with the keys real GGUFs of the architecture have.
fn model_metadata(spec: &SynthSpec) -> Vec<(String, Value)> {
    let p = &spec.preset;
    let a = p.arch;
    let rows = if spec.distinct_rows == 0 {
        "every row distinct".to_string()
    } else {
        format!(
            "each matrix repeats a pool of {} distinct quantized rows",
            spec.distinct_rows
        )
    };
    let description = format!(
        "grist synth: {} shape with random weights N(0, 1/sqrt(fan_in)), seed {}, {rows}, \
         quantized {} by grist's reference quantizers; norm weights 1. For speed and memory \
         measurements only: its output is meaningless.",
        p.model_name,
        spec.seed,
        spec.ty.name()
    );
    let mut m: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| m.push((k.to_string(), v));
    put("general.architecture", a.into());
    put("general.type", "model".into());
    put(
        "general.name",
        format!("{} synthetic (grist synth)", p.model_name)
            .as_str()
            .into(),
    );
    put("general.description", description.as_str().into());
    put("general.file_type", Value::U32(spec.ty.file_type()));
    let u = |x: usize| Value::U32(x as u32);
    put(&format!("{a}.block_count"), u(p.n_layer));
    put(&format!("{a}.context_length"), u(p.n_ctx_train));
    put(&format!("{a}.embedding_length"), u(p.n_embd));
    put(&format!("{a}.feed_forward_length"), u(p.n_ff));
    put(&format!("{a}.attention.head_count"), u(p.n_head));
    put(&format!("{a}.attention.head_count_kv"), u(p.n_head_kv));
    put(&format!("{a}.rope.freq_base"), Value::F32(p.rope_freq_base));
    put(
        &format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(p.rms_eps),
    );
    put(&format!("{a}.attention.key_length"), u(p.head_dim));
    put(&format!("{a}.attention.value_length"), u(p.head_dim));
    if p.sliding_window > 0 {
        put(
            &format!("{a}.attention.sliding_window"),
            u(p.sliding_window),
        );
    }
    if a == "llama" {
        put(&format!("{a}.vocab_size"), u(p.n_vocab));
        put(&format!("{a}.rope.dimension_count"), u(p.head_dim));
    }
    if spec.ty.base().is_quantized() {
        put("general.quantization_version", Value::U32(2));
    }
    m
}

/// The special tokens of the built-in vocabulary, after the 256 byte tokens.
const BUILTIN_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_UNUSED: i32 = 5;

/// A ChatML template for the built-in vocabulary.
const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] \
    + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|im_start|>assistant\\n' }}{% endif %}";

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the others are
/// shifted to U+0100 and up, so every byte is one visible character of a token's text.
fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// The built-in byte-level BPE vocabulary (see [`VocabSource::Builtin`]).
fn builtin_vocab(n_vocab: usize) -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    let mut types = vec![TOKEN_NORMAL; 256];
    for s in BUILTIN_SPECIALS {
        tokens.push(s.to_string());
        types.push(TOKEN_CONTROL);
    }
    pad_tokens(&mut tokens, &mut types, None, n_vocab);
    let id = |s: &str| {
        Value::U32(256 + BUILTIN_SPECIALS.iter().position(|&t| t == s).unwrap_or(0) as u32)
    };
    vec![
        ("tokenizer.ggml.model".into(), "gpt2".into()),
        ("tokenizer.ggml.pre".into(), "qwen2".into()),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(Array::String(Vec::new())),
        ),
        ("tokenizer.ggml.bos_token_id".into(), id("<|endoftext|>")),
        ("tokenizer.ggml.eos_token_id".into(), id("<|im_end|>")),
        (
            "tokenizer.ggml.padding_token_id".into(),
            id("<|endoftext|>"),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), CHATML_TEMPLATE.into()),
    ]
}

/// Appends unused `[PADi]` tokens (score 0) up to `n_vocab` entries.
fn pad_tokens(
    tokens: &mut Vec<String>,
    types: &mut Vec<i32>,
    mut scores: Option<&mut Vec<f32>>,
    n_vocab: usize,
) {
    for i in tokens.len()..n_vocab {
        tokens.push(format!("[PAD{i}]"));
        types.push(TOKEN_UNUSED);
        if let Some(s) = scores.as_deref_mut() {
            s.push(0.0);
        }
    }
}

/// Every `tokenizer.*` key of the GGUF file `path`, the token list padded to `n_vocab`.
fn vocab_from(path: &Path, n_vocab: usize) -> Result<Vec<(String, Value)>, ModelError> {
    let src = GgufFile::open(path)?;
    let bad =
        |m: String| ModelError::InvalidArgument(format!("--vocab-from {}: {m}", path.display()));
    let n_src = src.get_str_array("tokenizer.ggml.tokens")?.len();
    if n_src > n_vocab {
        return Err(bad(format!(
            "its vocabulary has {n_src} tokens, more than the model's {n_vocab} (token ids \
             past the embedding matrix would be out of range); use a smaller vocabulary or \
             the built-in one"
        )));
    }
    let mut out = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut scores: Option<Vec<f32>> = None;
    for (key, value) in src.metadata() {
        if !key.starts_with("tokenizer.") {
            continue;
        }
        match (key.as_str(), value) {
            ("tokenizer.ggml.tokens", Value::Array(Array::String(v))) => tokens = v.clone(),
            ("tokenizer.ggml.token_type", Value::Array(Array::I32(v))) => types = v.clone(),
            ("tokenizer.ggml.scores", Value::Array(Array::F32(v))) => scores = Some(v.clone()),
            ("tokenizer.ggml.token_type" | "tokenizer.ggml.scores", _) => {
                return Err(bad(format!(
                    "{key} has an unexpected type {}",
                    value.value_type()
                )))
            }
            _ => out.push((key.clone(), value.clone())),
        }
    }
    if types.is_empty() {
        types = vec![TOKEN_NORMAL; n_src];
    }
    if types.len() != n_src || scores.as_ref().is_some_and(|s| s.len() != n_src) {
        return Err(bad(format!(
            "token_type/scores lengths differ from the {n_src} tokens"
        )));
    }
    pad_tokens(&mut tokens, &mut types, scores.as_mut(), n_vocab);
    out.push((
        "tokenizer.ggml.tokens".into(),
        Value::Array(Array::String(tokens)),
    ));
    out.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(Array::I32(types)),
    ));
    if let Some(s) = scores {
        out.push(("tokenizer.ggml.scores".into(), Value::Array(Array::F32(s))));
    }
    Ok(out)
}

/// Rows quantized per parallel batch when every row is distinct (bounds memory).
const BATCH_BYTES: usize = 16 << 20;

/// Writes one tensor's data.
fn write_tensor<W: std::io::Write>(
    w: &mut GgufStreamWriter<W>,
    t: &PlannedTensor,
    seed: u64,
    distinct_rows: usize,
) -> Result<(), ModelError> {
    let d = &t.decl;
    let n: u64 = d.dims.iter().product();
    match &t.init {
        Init::Const(c) => {
            let bytes: Vec<u8> = (0..n).flat_map(|_| c.to_le_bytes()).collect();
            w.write_data(&bytes)?;
        }
        Init::Values(v) => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.write_data(&bytes)?;
        }
        Init::Normal { std } => {
            let cols = d.dims[0] as usize;
            let rows = (n / d.dims[0]) as usize;
            let row_bytes = d.ty.block_bytes() * cols / d.ty.block_elems();
            if distinct_rows > 0 && distinct_rows < rows {
                // A pool of distinct rows, repeated down the matrix.
                let pool = random_rows(d.ty, cols, *std, seed, 0..distinct_rows)?;
                let mut written = 0;
                while written < rows {
                    let k = (rows - written).min(distinct_rows);
                    w.write_data(&pool.bytes()[..k * row_bytes])?;
                    written += k;
                }
            } else {
                let batch = (BATCH_BYTES / row_bytes).max(1);
                for start in (0..rows).step_by(batch) {
                    let end = (start + batch).min(rows);
                    w.write_data(random_rows(d.ty, cols, *std, seed, start..end)?.bytes())?;
                }
            }
        }
    }
    Ok(())
}

/// Bytes in a buffer of u32 words, so every block struct (alignment ≤ 4) can view them.
struct AlignedBytes {
    words: Vec<u32>,
    len: usize,
}

impl AlignedBytes {
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
}

/// Rows `rows` of a `[*, cols]` matrix of random N(0, std²) values quantized to `ty`, in
/// parallel. Row `r` always gets the same values (its own PRNG stream).
fn random_rows(
    ty: GgmlType,
    cols: usize,
    std: f32,
    seed: u64,
    rows: std::ops::Range<usize>,
) -> Result<AlignedBytes, ModelError> {
    let row_bytes = ty.block_bytes() * cols / ty.block_elems();
    let len = rows.len() * row_bytes;
    let mut words = vec![0u32; len.div_ceil(4)];
    let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..len];
    bytes
        .par_chunks_mut(row_bytes)
        .enumerate()
        .try_for_each_init(
            || vec![0f32; cols], // [cols] values of one row
            |x, (i, dst)| {
                let mut rng = Rng::new(seed, (rows.start + i) as u64);
                rng.fill_normal(x, std);
                formats::quantize_row(ty, x, dst)
            },
        )
        .map_err(|e| ModelError::InvalidArgument(format!("quantizing to {ty}: {e}")))?;
    Ok(AlignedBytes { words, len })
}

/// SplitMix64's output function: a strong 64-bit mixer.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small seeded PRNG (SplitMix64) with Box–Muller normals. Not cryptographic; plenty for
/// random weights.
struct Rng(u64);

impl Rng {
    /// The stream of row `row` of the tensor seeded `seed`.
    fn new(seed: u64, row: u64) -> Rng {
        Rng(splitmix64(
            seed ^ splitmix64(row.wrapping_add(0x5851_F42D_4C95_7F2D)),
        ))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// Fills `out` with N(0, std²) values.
    fn fill_normal(&mut self, out: &mut [f32], std: f32) {
        for pair in out.chunks_mut(2) {
            let bits = self.next_u64();
            // u1 in (0, 1] (so ln is finite), u2 in [0, 1): 24 bits each.
            let u1 = ((bits >> 40) + 1) as f32 * (1.0 / (1u64 << 24) as f32);
            let u2 = ((bits >> 8) & 0xFF_FFFF) as f32 * (1.0 / (1u64 << 24) as f32);
            let r = std * (-2.0 * u1.ln()).sqrt();
            let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
            pair[0] = r * c;
            if let Some(second) = pair.get_mut(1) {
                *second = r * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_found_both_ways() {
        assert_eq!(find_preset(None, "qwen3-4b").unwrap().n_embd, 2560);
        assert_eq!(find_preset(Some("qwen3"), "4B").unwrap().name, "qwen3-4b");
        assert_eq!(
            find_preset(Some("qwen3"), "qwen3-0.6b").unwrap().n_layer,
            28
        );
        assert_eq!(find_preset(Some("llama"), "3.2-1b").unwrap().head_dim, 64);
        assert_eq!(
            find_preset(Some("gemma3"), "1b").unwrap().sliding_window,
            512
        );
        let e = find_preset(Some("llama"), "4b").unwrap_err().to_string();
        assert!(
            e.contains("unknown preset 'llama-4b'") && e.contains("qwen3-4b"),
            "{e}"
        );
        assert!(find_preset(Some("gemma3"), "qwen3-4b").is_err());
        assert!(SynthType::parse("Q4_K_M").is_ok());
        assert!(SynthType::parse("q3_k")
            .unwrap_err()
            .to_string()
            .contains("q4_k_m"));
    }

    /// Qwen3-4B Q4_K_M: 18 of 36 layers get Q6_K attn_v/ffn_down, as llama-quantize does.
    #[test]
    fn q4_k_m_mix_follows_llama_quantize() {
        let more: Vec<usize> = (0..36).filter(|&il| use_more_bits(il, 36)).collect();
        assert_eq!(more.len(), 18);
        assert_eq!(&more[..6], &[0, 1, 2, 3, 6, 9]);
        // tiny fixtures: 2 layers → layer 1; 6 layers → layers 2 and 5.
        assert_eq!(
            (0..2)
                .filter(|&il| use_more_bits(il, 2))
                .collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(
            (0..6)
                .filter(|&il| use_more_bits(il, 6))
                .collect::<Vec<_>>(),
            [2, 5]
        );
        let t = |role, tied, ne0| matrix_type(SynthType::Q4KM, role, tied, 36, ne0);
        assert_eq!(t(Role::TokenEmbd, true, 2560), GgmlType::Q6_K);
        assert_eq!(t(Role::TokenEmbd, false, 2560), GgmlType::Q4_K);
        assert_eq!(t(Role::Output, false, 2560), GgmlType::Q6_K);
        assert_eq!(t(Role::AttnV(0), true, 2560), GgmlType::Q6_K);
        assert_eq!(t(Role::AttnV(4), true, 2560), GgmlType::Q4_K);
        assert_eq!(t(Role::FfnDown(35), true, 9728), GgmlType::Q6_K);
        // gemma-3-270m (n_embd 640) Q4_K_M as llama-quantize wrote it.
        let g = |role, ne0| matrix_type(SynthType::Q4KM, role, true, 18, ne0);
        assert_eq!(g(Role::TokenEmbd, 640), GgmlType::Q8_0);
        assert_eq!(g(Role::AttnV(0), 640), GgmlType::Q8_0);
        assert_eq!(g(Role::AttnV(3), 640), GgmlType::Q5_0);
        assert_eq!(g(Role::FfnDown(0), 2048), GgmlType::Q6_K);
        assert_eq!(g(Role::Other, 1024), GgmlType::Q4_K);
        // Q4_0 and Q8_0 LM heads; F16 untouched.
        assert_eq!(
            matrix_type(SynthType::Q4_0, Role::Output, false, 2, 256),
            GgmlType::Q6_K
        );
        assert_eq!(
            matrix_type(SynthType::Q8_0, Role::Output, false, 2, 256),
            GgmlType::Q8_0
        );
        assert_eq!(
            matrix_type(SynthType::F16, Role::Output, false, 2, 100),
            GgmlType::F16
        );
        assert_eq!(
            matrix_type(SynthType::Q4K, Role::TokenEmbd, true, 2, 256),
            GgmlType::Q4_K
        );
    }

    #[test]
    fn llama3_rope_factors_match_the_converter() {
        let f = llama3_rope_factors(&LLAMA32_ROPE, 500000.0, 64);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0); // highest frequency: unscaled
        assert_eq!(f[31], 32.0); // lowest: divided by the factor
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
    }

    #[test]
    fn byte_map_is_gpt2s() {
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(byte_to_char(0), '\u{100}');
        assert_eq!(byte_to_char(b' '), '\u{120}'); // "Ġ"
        assert_eq!(byte_to_char(b'\n'), '\u{10A}'); // "Ċ"
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_to_char).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn normals_have_the_right_spread() {
        let mut x = vec![0f32; 100_000];
        Rng::new(1, 2).fill_normal(&mut x, 0.5);
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / x.len() as f32;
        assert!(
            mean.abs() < 0.01 && (var.sqrt() - 0.5).abs() < 0.01,
            "{mean} {var}"
        );
    }
}

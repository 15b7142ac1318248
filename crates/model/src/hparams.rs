//! [`HParams`]: the hyperparameters of a model, read from the GGUF metadata
//! (`<arch>.block_count`, `<arch>.embedding_length`, …) and validated.
//!
//! Only what the forward pass needs is kept. Everything a file may ask for that grist does not
//! implement (a RoPE scaling type other than none/linear, different key and value head sizes,
//! …) is refused here with a clear error instead of producing wrong logits later.

use grist_gguf::{GgufFile, Value};

use crate::arch::ArchSpec;
use crate::error::ModelError;

/// Hyperparameters of a decoder-only transformer, as grist uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    /// `general.architecture` (`llama`, `qwen2`, `qwen3`, `gemma3`).
    pub arch: String,
    /// Number of transformer blocks (`block_count`).
    pub n_layer: usize,
    /// Width of the residual stream (`embedding_length`).
    pub n_embd: usize,
    /// Hidden width of the feed-forward network (`feed_forward_length`).
    pub n_ff: usize,
    /// Number of query heads (`attention.head_count`).
    pub n_head: usize,
    /// Number of key/value heads (`attention.head_count_kv`; GQA when smaller than `n_head`).
    pub n_head_kv: usize,
    /// Size of one attention head (`attention.key_length`, default `n_embd / n_head`).
    pub head_dim: usize,
    /// Number of leading dimensions of each head that RoPE rotates (`rope.dimension_count`).
    pub n_rot: usize,
    /// RoPE frequency base of the global-attention layers (`rope.freq_base`).
    pub rope_freq_base: f32,
    /// RoPE frequency base of the sliding-window layers (`rope.freq_base_swa`, gemma3 default
    /// 10000).
    pub rope_freq_base_swa: f32,
    /// Linear RoPE position scale (`1 / rope.scaling.factor` for linear scaling, else 1).
    pub rope_freq_scale: f32,
    /// Epsilon of every RMSNorm (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Sliding-window size in tokens (`attention.sliding_window`), 0 = no sliding window.
    pub n_swa: usize,
    /// Per layer: whether it attends through the sliding window (else globally).
    pub swa_layers: Vec<bool>,
    /// Context length the model was trained with (`context_length`).
    pub n_ctx_train: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub n_vocab: usize,
}

impl HParams {
    /// Reads and validates the hyperparameters of `gguf` for the architecture `spec`.
    pub fn from_gguf(gguf: &GgufFile, spec: &ArchSpec) -> Result<HParams, ModelError> {
        let arch = spec.name;
        let key = |k: &str| format!("{arch}.{k}");
        let req_usize =
            |k: &str| -> Result<usize, ModelError> { Ok(gguf.get_u32(&key(k))? as usize) };
        let opt_usize = |k: &str| -> Result<Option<usize>, ModelError> {
            match gguf.get(&key(k)) {
                None => Ok(None),
                Some(_) => Ok(Some(gguf.get_u32(&key(k))? as usize)),
            }
        };
        let opt_f32 = |k: &str| -> Result<Option<f32>, ModelError> {
            match gguf.get(&key(k)) {
                None => Ok(None),
                Some(_) => Ok(Some(gguf.get_f32(&key(k))?)),
            }
        };

        let n_layer = req_usize("block_count")?;
        let n_embd = req_usize("embedding_length")?;
        let n_ff = per_layer_constant(gguf, &key("feed_forward_length"))?;
        let n_head = per_layer_constant(gguf, &key("attention.head_count"))?;
        let n_head_kv = match gguf.get(&key("attention.head_count_kv")) {
            None => n_head,
            Some(_) => per_layer_constant(gguf, &key("attention.head_count_kv"))?,
        };
        let invalid = |m: String| Err(ModelError::InvalidHParams(m));
        if n_layer == 0 || n_embd == 0 || n_ff == 0 || n_head == 0 || n_head_kv == 0 {
            return invalid(format!(
                "block_count {n_layer}, embedding_length {n_embd}, feed_forward_length {n_ff}, \
                 head_count {n_head}, head_count_kv {n_head_kv}: all must be positive"
            ));
        }
        if n_head % n_head_kv != 0 {
            return invalid(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            ));
        }
        let default_hd = n_embd / n_head;
        let head_dim = opt_usize("attention.key_length")?.unwrap_or(default_hd);
        let head_dim_v = opt_usize("attention.value_length")?.unwrap_or(head_dim);
        if head_dim != head_dim_v {
            return Err(ModelError::Unsupported(format!(
                "key head size {head_dim} differs from value head size {head_dim_v}"
            )));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return invalid(format!("head size {head_dim} must be positive and even"));
        }
        if head_dim > crate::attention::MAX_HEAD_DIM {
            return Err(ModelError::Unsupported(format!(
                "head size {head_dim} (grist supports up to {})",
                crate::attention::MAX_HEAD_DIM
            )));
        }
        let n_rot = opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot == 0 || n_rot > head_dim || n_rot % 2 != 0 {
            return invalid(format!(
                "rope.dimension_count {n_rot} must be even and at most the head size {head_dim}"
            ));
        }
        let rope_freq_base = opt_f32("rope.freq_base")?.unwrap_or(10000.0);
        let rope_freq_base_swa = opt_f32("rope.freq_base_swa")?.unwrap_or(10000.0);
        let rope_freq_scale = rope_scale(gguf, arch)?;
        let rms_eps = opt_f32("attention.layer_norm_rms_epsilon")?.ok_or_else(|| {
            ModelError::InvalidHParams(format!(
                "missing key {}",
                key("attention.layer_norm_rms_epsilon")
            ))
        })?;
        if !(rms_eps > 0.0 && rms_eps < 1.0) {
            return invalid(format!("layer_norm_rms_epsilon {rms_eps} out of range"));
        }
        if !(rope_freq_base > 0.0 && rope_freq_base_swa > 0.0) {
            return invalid("rope.freq_base must be positive".to_string());
        }
        let n_ctx_train = opt_usize("context_length")?.unwrap_or(2048);

        // Sliding window: only architectures that interleave local and global layers use it.
        let mut n_swa = 0;
        let mut swa_layers = vec![false; n_layer];
        if let Some(default_period) = spec.swa_period {
            n_swa = opt_usize("attention.sliding_window")?.unwrap_or(0);
            if n_swa > 0 {
                swa_layers = swa_pattern(
                    gguf,
                    &key("attention.sliding_window_pattern"),
                    n_layer,
                    default_period,
                )?;
            }
        }

        let embd = gguf.require_tensor("token_embd.weight")?;
        let dims = embd.dims();
        if dims.len() != 2 || dims[0] as usize != n_embd {
            return Err(ModelError::TensorShape {
                tensor: "token_embd.weight".into(),
                expected: vec![n_embd as u64, dims.get(1).copied().unwrap_or(0)],
                found: dims.to_vec(),
            });
        }
        let n_vocab = dims[1] as usize;
        if let Some(v) = opt_usize("vocab_size")? {
            if v != n_vocab {
                return invalid(format!(
                    "vocab_size {v} differs from token_embd.weight's {n_vocab} rows"
                ));
            }
        }
        if n_vocab == 0 {
            return invalid("empty vocabulary".to_string());
        }

        Ok(HParams {
            arch: arch.to_string(),
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rope_freq_base,
            rope_freq_base_swa,
            rope_freq_scale,
            rms_eps,
            n_swa,
            swa_layers,
            n_ctx_train,
            n_vocab,
        })
    }

    /// Width of all query heads together (`n_head * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of all key (or value) heads together (`n_head_kv * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Whether layer `il` uses the sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.n_swa > 0 && self.swa_layers.get(il).copied().unwrap_or(false)
    }
}

/// A value that GGUF may store either as one integer or as one integer per layer (all of which
/// grist requires to be equal).
fn per_layer_constant(gguf: &GgufFile, key: &str) -> Result<usize, ModelError> {
    match gguf.get(key) {
        Some(Value::Array(_)) => {
            let v: Vec<u32> = gguf.get_array(key)?;
            match v.first() {
                Some(&first) if v.iter().all(|&x| x == first) => Ok(first as usize),
                _ => Err(ModelError::Unsupported(format!(
                    "{key} varies per layer ({v:?})"
                ))),
            }
        }
        _ => Ok(gguf.get_u32(key)? as usize),
    }
}

/// The linear RoPE position scale from `rope.scaling.*` (or the older `rope.scale_linear`).
fn rope_scale(gguf: &GgufFile, arch: &str) -> Result<f32, ModelError> {
    let ty = match gguf.get(&format!("{arch}.rope.scaling.type")) {
        None => None,
        Some(_) => Some(
            gguf.get_str(&format!("{arch}.rope.scaling.type"))?
                .to_string(),
        ),
    };
    let factor_key = format!("{arch}.rope.scaling.factor");
    let factor = match gguf.get(&factor_key) {
        None => None,
        Some(_) => Some(gguf.get_f32(&factor_key)?),
    };
    let legacy_key = format!("{arch}.rope.scale_linear");
    let legacy = match gguf.get(&legacy_key) {
        None => None,
        Some(_) => Some(gguf.get_f32(&legacy_key)?),
    };
    let linear = |f: f32| -> Result<f32, ModelError> {
        if !(f > 0.0 && f.is_finite()) {
            return Err(ModelError::InvalidHParams(format!(
                "rope scaling factor {f} must be positive"
            )));
        }
        Ok(1.0 / f)
    };
    match ty.as_deref() {
        None | Some("none") => match legacy {
            Some(f) if f != 1.0 => linear(f),
            _ => Ok(1.0),
        },
        Some("linear") => linear(factor.or(legacy).unwrap_or(1.0)),
        Some(other) => Err(ModelError::Unsupported(format!(
            "RoPE scaling type '{other}' (grist implements none and linear)"
        ))),
    }
}

/// Which layers use the sliding window: from `key` when present (a per-layer bool array, or a
/// period `n` meaning layer `il` is local unless `il % n == n - 1`), else `default_period`
/// (llama.cpp's gemma3 default: 6, i.e. five local layers then one global).
fn swa_pattern(
    gguf: &GgufFile,
    key: &str,
    n_layer: usize,
    default_period: usize,
) -> Result<Vec<bool>, ModelError> {
    let by_period =
        |n: usize| -> Vec<bool> { (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect() };
    match gguf.get(key) {
        None => Ok(by_period(default_period)),
        Some(Value::Array(_)) => {
            let v: Vec<bool> = gguf.get_array(key)?;
            if v.len() != n_layer {
                return Err(ModelError::InvalidHParams(format!(
                    "{key} has {} entries for {n_layer} layers",
                    v.len()
                )));
            }
            Ok(v)
        }
        Some(_) => Ok(by_period(gguf.get_u32(key)? as usize)),
    }
}

//! `grist synth`: write a GGUF with a real model's exact shape and random weights.
//!
//! Speed and memory do not depend on weight values, so a synthetic Qwen3-4B Q4_K_M measures
//! what the real one would without the download. See `grist_model::synth` for what is written.
//!
//! ```text
//! grist synth --arch qwen3 --preset 4b --type q4_k_m -o models/synth-qwen3-4b-q4_k_m.gguf
//! grist synth --preset qwen3-0.6b --vocab-from models/qwen2.5-coder-0.5b-instruct.gguf -o x.gguf
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args as ClapArgs;
use grist_model::synth::{self, SynthSpec, SynthType, VocabSource};

use crate::common;
use crate::CliError;

/// Flags of `grist synth`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Architecture of the preset (qwen3, llama, gemma3); optional when --preset is a full
    /// name such as qwen3-4b.
    #[arg(long = "arch")]
    pub arch: Option<String>,

    /// Model shape: qwen3-0.6b, qwen3-4b, llama-3.2-1b, llama-3.2-3b, gemma3-1b (or the size
    /// alone with --arch: 4b).
    #[arg(long = "preset")]
    pub preset: String,

    /// Tensor types: f32, f16, q8_0, q4_0, q4_1, q4_k, q4_k_m, q5_k_m, q6_k (llama-quantize's
    /// mixes).
    #[arg(long = "type", value_name = "TYPE", default_value = "q4_k_m")]
    pub ty: String,

    /// Output GGUF file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,

    /// Copy the tokenizer (every tokenizer.* key) from this GGUF instead of using the built-in
    /// byte-level vocabulary.
    #[arg(long = "vocab-from")]
    pub vocab_from: Option<PathBuf>,

    /// Seed of the random weights.
    #[arg(long = "seed", default_value_t = 42)]
    pub seed: u64,

    /// Distinct random rows per matrix, repeated down the matrix (0 = every row distinct,
    /// about 7x more quantization work).
    #[arg(long = "distinct-rows", default_value_t = synth::DEFAULT_DISTINCT_ROWS)]
    pub distinct_rows: usize,

    /// Override the number of layers (a smaller model of the same width, for tests).
    #[arg(long = "layers")]
    pub layers: Option<usize>,

    /// Override the vocabulary size.
    #[arg(long = "vocab-size")]
    pub vocab_size: Option<usize>,

    /// Worker threads (default: all available cores).
    #[arg(short = 't', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
}

/// Runs `grist synth`.
pub fn run(args: Args) -> Result<(), CliError> {
    let start = Instant::now();
    let mut preset = synth::find_preset(args.arch.as_deref(), &args.preset)?;
    if let Some(n) = args.layers {
        if n == 0 {
            return Err(CliError::msg("--layers must be at least 1"));
        }
        preset.n_layer = n;
    }
    if let Some(n) = args.vocab_size {
        preset.n_vocab = n;
    }
    let spec = SynthSpec {
        preset,
        ty: SynthType::parse(&args.ty)?,
        vocab: match &args.vocab_from {
            Some(p) => VocabSource::CopyFrom(p.clone()),
            None => VocabSource::Builtin,
        },
        seed: args.seed,
        distinct_rows: args.distinct_rows,
    };
    let pool = common::thread_pool(args.threads)?;
    eprintln!(
        "synth: {} ({} layers, n_embd {}, n_ff {}, {} heads / {} kv x {}, vocab {}) {} -> {}",
        preset.model_name,
        preset.n_layer,
        preset.n_embd,
        preset.n_ff,
        preset.n_head,
        preset.n_head_kv,
        preset.head_dim,
        preset.n_vocab,
        spec.ty.name(),
        args.output.display()
    );
    let mut last_pct = usize::MAX;
    let summary = pool.install(|| {
        synth::synthesize_with_progress(&spec, &args.output, &mut |p| {
            let pct = 100 * p.index / p.total.max(1);
            if pct / 10 != last_pct / 10 {
                last_pct = pct;
                eprint!("\rsynth: {pct:3}% ({} / {} tensors)", p.index, p.total);
                let _ = std::io::stderr().flush();
            }
        })
    })?;
    let types: Vec<String> = summary
        .type_counts
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    eprintln!("\rsynth: 100% ({0} / {0} tensors)", summary.n_tensors);
    println!(
        "wrote {}: {} tensors ({}), {:.3} B params, {} bytes ({:.2} GB, {:.2} GiB) in {:.1} s",
        args.output.display(),
        summary.n_tensors,
        types.join(", "),
        summary.n_params as f64 / 1e9,
        summary.file_bytes,
        summary.file_bytes as f64 / 1e9,
        summary.file_bytes as f64 / (1u64 << 30) as f64,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

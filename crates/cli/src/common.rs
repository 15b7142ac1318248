//! Helpers shared by the commands that run a model (`run`, `chat`, `logits`, `perplexity`, …):
//! the kernel ISA and thread-pool flags, loading a model with its tokenizer, the context size,
//! the sampling flags, and llama.cpp-style timing reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use grist_kernels::dispatch::{self, Isa};
use grist_model::sampler::SamplerParams;
use grist_model::Model;
use grist_tokenizer::Tokenizer;

use crate::CliError;

/// Flags every model-running command takes: threads and instruction set.
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// Worker threads (default: all available cores).
    #[arg(short = 't', long = "threads", value_name = "N")]
    pub threads: Option<usize>,

    /// Kernel instruction set: scalar, avx2, avx512 or neon (default: the best the CPU has,
    /// or the GRIST_ISA environment variable).
    #[arg(long = "isa", value_name = "ISA")]
    pub isa: Option<String>,
}

impl ComputeArgs {
    /// Selects the kernel table (before any kernel runs) and builds the rayon pool.
    pub fn setup(&self) -> Result<rayon::ThreadPool, CliError> {
        select_isa(self.isa.as_deref())?;
        thread_pool(self.threads)
    }
}

/// Chooses the global kernel table: `--isa` if given, else `GRIST_ISA`, else the best the CPU
/// supports. An unknown or unavailable ISA is an error rather than a silent fallback.
pub fn select_isa(isa: Option<&str>) -> Result<Isa, CliError> {
    let table = match isa {
        Some(name) => dispatch::init(Isa::parse(name)?)?,
        None => dispatch::try_kernels()?,
    };
    Ok(table.isa())
}

/// A rayon pool with `threads` workers (default: the available parallelism). Commands run
/// their whole body inside `pool.install(…)` so every parallel kernel uses exactly this pool.
pub fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool, CliError> {
    let n = match threads {
        Some(0) => return Err(CliError::msg("-t/--threads must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| CliError::msg(format!("cannot start {n} threads: {e}")))
}

/// A model, its tokenizer, and how long loading both took.
pub struct Loaded {
    /// The model (weights memory-mapped).
    pub model: Model,
    /// The tokenizer built from the same file.
    pub tokenizer: Tokenizer,
    /// Wall time of opening the file, validating the model and building the tokenizer.
    pub load_time: Duration,
}

/// Opens a GGUF model and its tokenizer, with one-line errors for a missing file, an
/// unsupported architecture or a broken vocabulary.
pub fn load_model(path: &Path) -> Result<Loaded, CliError> {
    if !path.exists() {
        return Err(CliError::msg(format!(
            "model file not found: {}",
            path.display()
        )));
    }
    let start = Instant::now();
    let model = Model::load(path)
        .map_err(|e| CliError::msg(format!("cannot load {}: {e}", path.display())))?;
    let tokenizer = Tokenizer::from_gguf(model.gguf()).map_err(|e| {
        CliError::msg(format!(
            "cannot load the tokenizer of {}: {e}",
            path.display()
        ))
    })?;
    Ok(Loaded {
        model,
        tokenizer,
        load_time: start.elapsed(),
    })
}

/// Default context when `-c` is not given: the model's training context, capped.
pub const DEFAULT_MAX_CTX: usize = 4096;

/// The context size to use: `-c` if given (must be ≥ 1), else `min(training context, 4096)`.
pub fn context_size(model: &Model, requested: Option<usize>) -> Result<usize, CliError> {
    match requested {
        Some(0) => Err(CliError::msg("-c/--ctx-size must be at least 1")),
        Some(n) => Ok(n),
        None => {
            let train = model.hparams().n_ctx_train;
            Ok(if train == 0 {
                DEFAULT_MAX_CTX
            } else {
                train.min(DEFAULT_MAX_CTX)
            })
        }
    }
}

/// Reads a prompt file, refusing invalid UTF-8 with the offending byte offset.
pub fn read_prompt_file(path: &PathBuf) -> Result<String, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::msg(format!("cannot read prompt file {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        CliError::msg(format!(
            "prompt file {} is not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Sampling flags, named as in llama.cpp, with llama.cpp's defaults.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 (or less) = greedy.
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Top-k: keep the k most likely tokens (0 = off).
    #[arg(long = "top-k", default_value_t = 40, allow_negative_numbers = true)]
    pub top_k: i32,
    /// Top-p (nucleus): keep the smallest set with this probability mass, in [0, 1] (1 = off).
    #[arg(long = "top-p", default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Min-p: drop tokens less likely than this fraction of the top one, in [0, 1] (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Repetition penalty over the last --repeat-last-n tokens (1 = off).
    #[arg(
        long = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties consider (0 = off, -1 = the whole context).
    #[arg(
        long = "repeat-last-n",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub repeat_last_n: i64,
    /// Presence penalty: subtracted once from every token already in the window (0 = off).
    #[arg(
        long = "presence-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub presence_penalty: f32,
    /// Frequency penalty: subtracted per occurrence in the window (0 = off).
    #[arg(
        long = "frequency-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub frequency_penalty: f32,
    /// RNG seed (default or negative: a random seed, printed on stderr).
    #[arg(short = 's', long = "seed", allow_negative_numbers = true)]
    pub seed: Option<i64>,
}

impl SamplingArgs {
    /// The sampler parameters for a context of `n_ctx` tokens, validated (one-line errors).
    pub fn params(&self, n_ctx: usize) -> Result<SamplerParams, CliError> {
        if self.top_k < 0 {
            return Err(CliError::msg(format!(
                "invalid value {} for --top-k: expected 0 (off) or a positive count",
                self.top_k
            )));
        }
        let repeat_last_n = match self.repeat_last_n {
            -1 => n_ctx,
            n if n >= 0 => n as usize,
            n => {
                return Err(CliError::msg(format!(
                    "invalid value {n} for --repeat-last-n: expected -1 (whole context), 0 (off) \
                     or a positive count"
                )))
            }
        };
        let seed = match self.seed {
            Some(s) if s >= 0 => s as u64,
            _ => random_seed(),
        };
        let params = SamplerParams {
            temp: self.temp,
            top_k: self.top_k as usize,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed,
        };
        params.validate()?;
        Ok(params)
    }
}

/// A seed from the clock and the process id (llama.cpp's default seed is random too).
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Keep it short enough to retype with -s.
    (nanos ^ ((std::process::id() as u64) << 32)) % 4_294_967_291
}

/// Wall-clock accounting of one generation, printed like llama.cpp's `llama_perf_context_print`.
#[derive(Debug, Default, Clone)]
pub struct Timings {
    /// Model + tokenizer load time.
    pub load: Duration,
    /// Prompt tokens evaluated, and the time it took.
    pub prompt_tokens: usize,
    /// Time spent evaluating the prompt.
    pub prompt: Duration,
    /// Single-token evaluations during generation ("runs").
    pub eval_runs: usize,
    /// Time spent in those evaluations.
    pub eval: Duration,
    /// Tokens sampled.
    pub sampled: usize,
    /// Time spent sampling.
    pub sample: Duration,
    /// Wall time from start to finish (including load and printing).
    pub total: Duration,
}

fn per_token(d: Duration, n: usize) -> (f64, f64) {
    let ms = d.as_secs_f64() * 1e3;
    if n == 0 || ms == 0.0 {
        return (0.0, 0.0);
    }
    (ms / n as f64, n as f64 / d.as_secs_f64())
}

impl Timings {
    /// Prints the timing block on stderr.
    pub fn print(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (s_ms, s_tps) = per_token(self.sample, self.sampled);
        let (p_ms, p_tps) = per_token(self.prompt, self.prompt_tokens);
        let (e_ms, e_tps) = per_token(self.eval, self.eval_runs);
        eprintln!();
        eprintln!("grist:        load time = {:10.2} ms", ms(self.load));
        eprintln!(
            "grist:    sampling time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:9.2} tokens per second)",
            ms(self.sample),
            self.sampled,
            s_ms,
            s_tps
        );
        eprintln!(
            "grist: prompt eval time = {:10.2} ms / {:5} tokens ({:8.2} ms per token, {:9.2} tokens per second)",
            ms(self.prompt),
            self.prompt_tokens,
            p_ms,
            p_tps
        );
        eprintln!(
            "grist:        eval time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:9.2} tokens per second)",
            ms(self.eval),
            self.eval_runs,
            e_ms,
            e_tps
        );
        eprintln!(
            "grist:       total time = {:10.2} ms / {:5} tokens",
            ms(self.total),
            self.prompt_tokens + self.eval_runs
        );
    }
}

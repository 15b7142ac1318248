//! `grist run`: complete a prompt, streaming the text as it is generated.
//!
//! Like llama.cpp's `llama-completion`: the prompt is tokenized (BOS as the model asks, special
//! tokens parsed unless `--no-special`), echoed, evaluated as one batch, then tokens are sampled
//! one at a time until an end-of-generation token (every one the vocabulary marks: eos, eot,
//! `<|im_end|>`, `<end_of_turn>` …), `-n` tokens, or a full context. A timing block follows on
//! stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args as ClapArgs;
use grist_model::sampler::Sampler;
use grist_model::Session;
use grist_tokenizer::StreamDecoder;

use crate::common::{self, ComputeArgs, SamplingArgs, Timings};
use crate::CliError;

/// Flags of `grist run`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,

    /// The prompt text.
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "file",
        allow_hyphen_values = true
    )]
    pub prompt: Option<String>,

    /// Read the prompt from a UTF-8 text file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,

    /// Tokens to generate (-1 = until end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,

    /// Context size in tokens (default: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,

    /// Treat special-token text in the prompt (`<|im_start|>` …) as plain text.
    #[arg(long = "no-special")]
    pub no_special: bool,

    #[command(flatten)]
    pub compute: ComputeArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Runs `grist run`.
pub fn run(args: Args) -> Result<(), CliError> {
    let start = Instant::now();
    if args.ctx_size == Some(0) {
        return Err(CliError::msg("-c/--ctx-size must be at least 1"));
    }
    if args.n_predict < -1 {
        return Err(CliError::msg(format!(
            "invalid value {} for -n: expected -1 (unlimited) or a count",
            args.n_predict
        )));
    }
    let prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => common::read_prompt_file(f)?,
        (None, None) => return Err(CliError::msg("no prompt: give -p TEXT or -f FILE")),
    };
    let pool = args.compute.setup()?;
    pool.install(|| generate(&args, &prompt, start))
}

fn generate(args: &Args, prompt: &str, start: Instant) -> Result<(), CliError> {
    let loaded = common::load_model(&args.model)?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let n_ctx = common::context_size(model, args.ctx_size)?;
    let params = args.sampling.params(n_ctx)?;

    let mut tokens = tok.encode(prompt, true, !args.no_special);
    if tokens.is_empty() {
        match tok.vocab().bos {
            Some(bos) => tokens.push(bos),
            None => return Err(CliError::msg("the prompt is empty")),
        }
    }
    if tokens.len() > n_ctx {
        return Err(CliError::msg(format!(
            "the prompt is {} tokens, longer than the context size {n_ctx} (raise -c)",
            tokens.len()
        )));
    }
    let mut sampler = Sampler::new(params, model.n_vocab())?;
    for &t in &tokens {
        // Prompt tokens count for the repetition penalties, as in llama.cpp.
        sampler.accept(t)?;
    }
    let mut session = Session::new(model, n_ctx)?;
    eprintln!(
        "grist: {} ({}), {} prompt tokens, context {n_ctx}, {} threads, seed {}",
        args.model.display(),
        model.arch_name(),
        tokens.len(),
        rayon::current_num_threads(),
        sampler.params().seed
    );

    let mut out = std::io::stdout().lock();
    let mut decoder = StreamDecoder::new(false);
    // Echo the prompt as the model sees it (control tokens such as BOS are not shown).
    for &t in &tokens {
        out.write_all(decoder.push(tok, t)?.as_bytes())?;
    }
    out.flush()?;

    let mut timings = Timings {
        load: loaded.load_time,
        ..Timings::default()
    };
    let t0 = Instant::now();
    let mut logits = session.eval(&tokens, false)?;
    timings.prompt = t0.elapsed();
    timings.prompt_tokens = tokens.len();

    let limit = if args.n_predict < 0 {
        usize::MAX
    } else {
        args.n_predict as usize
    };
    let mut generated = 0usize;
    let mut stop_reason = "end of generation";
    while generated < limit {
        let t0 = Instant::now();
        let next = sampler.sample(logits)?;
        sampler.accept(next)?;
        timings.sample += t0.elapsed();
        timings.sampled += 1;
        if tok.is_eog(next) {
            break;
        }
        generated += 1;
        out.write_all(decoder.push(tok, next)?.as_bytes())?;
        out.flush()?;
        if generated == limit {
            stop_reason = "token limit (-n)";
            break;
        }
        if session.n_past() >= session.n_ctx() {
            stop_reason = "context full";
            break;
        }
        let t0 = Instant::now();
        logits = session.eval(&[next], false)?;
        timings.eval += t0.elapsed();
        timings.eval_runs += 1;
    }
    if limit == 0 {
        stop_reason = "token limit (-n)";
    }
    out.write_all(decoder.flush().as_bytes())?;
    writeln!(out)?;
    out.flush()?;
    timings.total = start.elapsed();
    eprintln!("grist: stopped: {stop_reason} after {generated} tokens");
    timings.print();
    Ok(())
}

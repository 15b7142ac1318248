//! `grist perplexity`: llama.cpp's `llama-perplexity` method and output.
//!
//! 1. Tokenize the whole file once with the model's default special tokens (BOS only if the
//!    model adds one); special-token text is not parsed.
//! 2. Cut it into `n_tokens / n_ctx` chunks of `n_ctx` tokens (the remainder is dropped).
//! 3. If the model adds BOS, the first token of every chunk is replaced by BOS.
//! 4. Evaluate each chunk from an empty KV cache (positions 0..n_ctx), all logits.
//! 5. Score the second half only: for `j` in `n_ctx/2 .. n_ctx-1`, add
//!    `-log softmax(logits[j])[token j+1]`.
//! 6. Print the running `exp(mean NLL)` after each chunk (`[1]x,[2]y,…`) and
//!    `Final estimate: PPL = x +/- y`, with `y = sqrt(var(nll) / (count - 1)) · PPL`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args as ClapArgs;
use grist_model::Session;

use crate::common::{self, ComputeArgs};
use crate::CliError;

/// Flags of `grist perplexity`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,

    /// The UTF-8 text to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,

    /// Chunk (context) size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,

    /// Score at most this many chunks (default: all).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,

    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `log softmax(row)[target]` as llama.cpp computes it: max in f32, `Σ exp(x - max)` in f64.
pub fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = row.iter().map(|&x| ((x - max).exp()) as f64).sum();
    (row[target] - max) as f64 - sum_exp.ln()
}

/// Runs `grist perplexity`.
pub fn run(args: Args) -> Result<(), CliError> {
    if args.ctx_size < 4 {
        return Err(CliError::msg(
            "-c/--ctx-size must be at least 4 for perplexity",
        ));
    }
    let pool = args.compute.setup()?;
    pool.install(|| perplexity(&args))
}

fn perplexity(args: &Args) -> Result<(), CliError> {
    let start = Instant::now();
    let loaded = common::load_model(&args.model)?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let text = common::read_prompt_file(&args.file)?;
    let tokens = tok.encode(&text, true, false);
    let n_ctx = args.ctx_size;
    let mut n_chunk = tokens.len() / n_ctx;
    if let Some(c) = args.chunks {
        n_chunk = n_chunk.min(c);
    }
    if n_chunk == 0 {
        return Err(CliError::msg(format!(
            "the file has {} tokens, fewer than one chunk of {n_ctx} (lower -c)",
            tokens.len()
        )));
    }
    let bos = if tok.vocab().add_bos {
        tok.vocab().bos
    } else {
        None
    };
    let n_vocab = model.n_vocab();
    eprintln!(
        "grist: perplexity of {} on {} ({} tokens), {n_chunk} chunks of {n_ctx}, {} threads",
        args.model.display(),
        args.file.display(),
        tokens.len(),
        rayon::current_num_threads()
    );
    let mut session = Session::new(model, n_ctx)?;
    let mut chunk = vec![0u32; n_ctx];
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let first = n_ctx / 2;
    let mut out = std::io::stdout().lock();
    for i in 0..n_chunk {
        chunk.copy_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.clear();
        let logits = session.eval(&chunk, true)?;
        for j in first..n_ctx - 1 {
            // The target is the original text's next token (never the BOS substitute).
            let target = tokens[i * n_ctx + j + 1] as usize;
            let lp = log_softmax_at(&logits[j * n_vocab..(j + 1) * n_vocab], target);
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        write!(out, "[{}]{:.4},", i + 1, (nll / count as f64).exp())?;
        out.flush()?;
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    writeln!(out)?;
    if var > 0.0 && count > 1 {
        let err = (var / (count - 1) as f64).sqrt() * ppl;
        writeln!(out, "Final estimate: PPL = {ppl:.4} +/- {err:.5}")?;
    } else {
        writeln!(out, "Final estimate: PPL = {ppl:.4}")?;
    }
    eprintln!("grist: {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

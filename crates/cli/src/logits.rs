//! `grist logits`: evaluate a prompt as one batch and write the top-k logits of every position
//! (and optionally of greedy generation steps) as JSON in the shape of llama.cpp goldens:
//!
//! ```text
//! { "model": …, "n_vocab": V, "tokens": [ids], "top": [[[id, logit], …] per position],
//!   "generated": [ids], "gen_top": [[[id, logit], …] per step] }
//! ```
//! `top` lists are sorted by logit, descending (ties: lower id first). `gen_top[0]` is the
//! distribution the first generated id was taken from, i.e. `top[-1]`.
//!
//! `--tokens ID,ID,…` evaluates ids exactly as given (no BOS added), so a golden can be replayed
//! teacher-forced: `--tokens` = the golden's `tokens + generated[:-1]`.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use grist_model::Session;
use serde_json::json;

use crate::common::{self, ComputeArgs};
use crate::CliError;

/// Flags of `grist logits`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,

    /// Read the prompt from a UTF-8 text file (special tokens parsed, model's default BOS).
    #[arg(short = 'f', long = "file", conflicts_with_all = ["prompt", "tokens"])]
    pub file: Option<PathBuf>,

    /// The prompt text (special tokens parsed, model's default BOS).
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "tokens",
        allow_hyphen_values = true
    )]
    pub prompt: Option<String>,

    /// Token ids to evaluate as given, comma-separated (no BOS added).
    #[arg(long = "tokens", value_name = "ID,ID,…")]
    pub tokens: Option<String>,

    /// Greedy tokens to generate after the prompt (stops after an end-of-generation token
    /// unless --ignore-eog).
    #[arg(short = 'n', long = "n-predict", default_value_t = 0)]
    pub n_predict: usize,

    /// Keep generating through end-of-generation tokens.
    #[arg(long = "ignore-eog")]
    pub ignore_eog: bool,

    /// Entries per position in `top` / `gen_top`.
    #[arg(long = "top", default_value_t = 20)]
    pub top: usize,

    /// Context size (default: prompt + generated tokens).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,

    /// Output JSON file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,

    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// Parses `"1, 2,3"` into ids.
fn parse_ids(s: &str) -> Result<Vec<u32>, CliError> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| CliError::msg(format!("invalid token id '{t}' in --tokens")))
        })
        .collect()
}

/// The `k` largest logits of `row` as `(id, logit)`, descending (lower id first on ties).
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, by_logit);
    idx.truncate(k);
    idx.sort_by(by_logit);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

fn top_json(row: &[f32], k: usize) -> serde_json::Value {
    json!(top_k(row, k)
        .into_iter()
        .map(|(i, l)| json!([i, l]))
        .collect::<Vec<_>>())
}

/// Runs `grist logits`.
pub fn run(args: Args) -> Result<(), CliError> {
    if args.ctx_size == Some(0) {
        return Err(CliError::msg("-c/--ctx-size must be at least 1"));
    }
    let pool = args.compute.setup()?;
    pool.install(|| logits(&args))
}

fn logits(args: &Args) -> Result<(), CliError> {
    let loaded = common::load_model(&args.model)?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let tokens = match (&args.tokens, &args.prompt, &args.file) {
        (Some(ids), _, _) => parse_ids(ids)?,
        (None, Some(p), _) => tok.encode(p, true, true),
        (None, None, Some(f)) => tok.encode(&common::read_prompt_file(f)?, true, true),
        (None, None, None) => {
            return Err(CliError::msg(
                "no prompt: give -f FILE, -p TEXT or --tokens ID,ID,…",
            ))
        }
    };
    if tokens.is_empty() {
        return Err(CliError::msg("the prompt has no tokens"));
    }
    let n_ctx = args.ctx_size.unwrap_or(tokens.len() + args.n_predict);
    if tokens.len() + args.n_predict > n_ctx {
        return Err(CliError::msg(format!(
            "{} prompt tokens + {} generated exceed the context size {n_ctx} (raise -c)",
            tokens.len(),
            args.n_predict
        )));
    }
    let n_vocab = model.n_vocab();
    let mut session = Session::new(model, n_ctx)?;
    let all = session.eval(&tokens, true)?;
    let top: Vec<_> = all
        .chunks_exact(n_vocab)
        .map(|row| top_json(row, args.top))
        .collect();
    let mut last = all[all.len() - n_vocab..].to_vec();
    let mut generated = Vec::new();
    let mut gen_top = Vec::new();
    for step in 0..args.n_predict {
        gen_top.push(top_json(&last, args.top));
        let next = top_k(&last, 1)[0].0;
        generated.push(next);
        if (tok.is_eog(next) && !args.ignore_eog) || step + 1 == args.n_predict {
            break;
        }
        last.copy_from_slice(session.eval(&[next], false)?);
    }
    let mut doc = json!({
        "model": args.model.display().to_string(),
        "arch": model.arch_name(),
        "n_vocab": n_vocab,
        "tokens": tokens,
        "top": top,
    });
    if args.n_predict > 0 {
        doc["generated"] = json!(generated);
        doc["gen_top"] = json!(gen_top);
        let text = tok
            .decode(&generated, false, false)
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        doc["gen_text"] = json!(text.unwrap_or_default());
    }
    let text = serde_json::to_string(&doc).map_err(CliError::msg)?;
    std::fs::write(&args.output, text)
        .map_err(|e| CliError::msg(format!("cannot write {}: {e}", args.output.display())))?;
    eprintln!(
        "grist: {} positions{} → {}",
        tokens.len(),
        if generated.is_empty() {
            String::new()
        } else {
            format!(" + {} generated", generated.len())
        },
        args.output.display()
    );
    Ok(())
}

//! `grist chat`: interactive multi-turn chat on stdin, using the model's chat template.
//!
//! Each turn renders the *whole* conversation with the template, tokenizes it, and compares it
//! with the tokens already in the KV cache: only the suffix after the longest common prefix is
//! evaluated (the cache is truncated where they diverge, e.g. at the end-of-turn token that
//! ended the previous reply). So a long conversation costs one forward pass per new token, and
//! the text the model sees is always exactly what the template says.
//!
//! Commands: `/clear` resets the conversation and the cache, `/bye` (or end of input) exits.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args as ClapArgs;
use grist_model::chat::{ChatMessage, ChatTemplate, TemplateOrigin};
use grist_model::sampler::Sampler;
use grist_model::Session;
use grist_tokenizer::StreamDecoder;

use crate::common::{self, ComputeArgs, SamplingArgs};
use crate::CliError;

/// Flags of `grist chat`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,

    /// A system prompt for the conversation.
    #[arg(long = "system", allow_hyphen_values = true)]
    pub system: Option<String>,

    /// Maximum tokens per reply (-1 = until end of turn or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,

    /// Context size in tokens (default: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,

    #[command(flatten)]
    pub compute: ComputeArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Runs `grist chat`.
pub fn run(args: Args) -> Result<(), CliError> {
    if args.ctx_size == Some(0) {
        return Err(CliError::msg("-c/--ctx-size must be at least 1"));
    }
    if args.n_predict < -1 {
        return Err(CliError::msg(format!(
            "invalid value {} for -n: expected -1 (unlimited) or a count",
            args.n_predict
        )));
    }
    let pool = args.compute.setup()?;
    pool.install(|| chat(&args))
}

/// Length of the longest common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn chat(args: &Args) -> Result<(), CliError> {
    let loaded = common::load_model(&args.model)?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let n_ctx = common::context_size(model, args.ctx_size)?;
    let params = args.sampling.params(n_ctx)?;
    let template = ChatTemplate::from_gguf(model.gguf())?;
    match template.origin() {
        TemplateOrigin::Model => {}
        TemplateOrigin::BuiltinChatMl => {
            eprintln!("grist: warning: the model has no chat template; using ChatML")
        }
        TemplateOrigin::BuiltinGemma => {
            eprintln!("grist: warning: the model has no chat template; using the Gemma format")
        }
    }
    let mut sampler = Sampler::new(params, model.n_vocab())?;
    let mut session = Session::new(model, n_ctx)?;
    eprintln!(
        "grist: {} ({}), context {n_ctx}, {} threads, seed {}, loaded in {:.0} ms",
        args.model.display(),
        model.arch_name(),
        rayon::current_num_threads(),
        sampler.params().seed,
        loaded.load_time.as_secs_f64() * 1e3
    );
    eprintln!("grist: type a message; /clear resets the conversation, /bye exits");

    let initial: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s.as_str()))
        .collect();
    let mut messages = initial.clone();
    // Tokens whose keys/values are in the KV cache, in order: `[session.n_past()]`.
    let mut cached: Vec<u32> = Vec::new();
    let limit = if args.n_predict < 0 {
        usize::MAX
    } else {
        args.n_predict as usize
    };

    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout();
    let mut line = String::new();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        line.clear();
        if input.read_line(&mut line)? == 0 {
            // End of input: leave cleanly.
            writeln!(out)?;
            return Ok(());
        }
        let text = line.trim_end_matches(['\n', '\r']);
        match text.trim() {
            "" => continue,
            "/bye" => return Ok(()),
            "/clear" => {
                messages = initial.clone();
                cached.clear();
                session.clear();
                sampler.reset();
                eprintln!("grist: conversation cleared");
                continue;
            }
            _ => {}
        }

        messages.push(ChatMessage::new("user", text));
        let rendered = template.render(&messages, true)?;
        let rendered = if tok.vocab().add_bos {
            template.strip_bos(&rendered)
        } else {
            &rendered
        };
        let tokens = tok.encode(rendered, true, true);
        if tokens.len() >= n_ctx {
            eprintln!(
                "grist: error: the conversation is {} tokens, the context is {n_ctx}: use /clear or \
                 a larger -c",
                tokens.len()
            );
            messages.pop();
            continue;
        }

        // Reuse the cache up to the first difference; always evaluate at least one token so
        // there are fresh logits.
        let keep = common_prefix(&cached, &tokens).min(tokens.len() - 1);
        cached.truncate(keep);
        session.truncate(keep);
        let t0 = Instant::now();
        let mut logits = session.eval(&tokens[keep..], false)?;
        let prompt_time = t0.elapsed();
        let n_prompt = tokens.len() - keep;
        cached.extend_from_slice(&tokens[keep..]);

        let mut decoder = StreamDecoder::new(false);
        let mut reply = String::new();
        let mut generated = 0usize;
        let t0 = Instant::now();
        while generated < limit {
            let next = sampler.sample(logits)?;
            sampler.accept(next)?;
            if tok.is_eog(next) {
                break;
            }
            generated += 1;
            let piece = decoder.push(tok, next)?;
            write!(out, "{piece}")?;
            out.flush()?;
            reply.push_str(&piece);
            if generated == limit {
                break;
            }
            if session.n_past() >= n_ctx {
                eprintln!("\ngrist: context full: the reply is cut; use /clear");
                break;
            }
            logits = session.eval(&[next], false)?;
            cached.push(next);
        }
        let tail = decoder.flush();
        write!(out, "{tail}")?;
        reply.push_str(&tail);
        writeln!(out)?;
        out.flush()?;
        let gen_time = t0.elapsed();
        eprintln!(
            "grist: [{n_prompt} prompt tokens in {:.0} ms, {generated} tokens at {:.1} t/s]",
            prompt_time.as_secs_f64() * 1e3,
            if gen_time.is_zero() {
                0.0
            } else {
                generated as f64 / gen_time.as_secs_f64()
            }
        );
        messages.push(ChatMessage::new("assistant", reply));
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_lengths() {
        assert_eq!(common_prefix(&[], &[1, 2]), 0);
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2]), 2);
    }
}

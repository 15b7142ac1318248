//! `grist`: the command-line front end. Each subcommand lives in its own module and exposes
//! `Args` (its clap flags) and `run(args) -> Result<(), CliError>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod chat;
mod common;
mod error;
mod inspect;
mod logits;
mod perplexity;
mod repack;
mod run;
mod synth;
mod tokenize;

pub use error::CliError;

/// grist: a quantized LLM inference runtime for CPUs.
#[derive(Parser)]
#[command(name = "grist", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Complete a prompt, streaming the generated text (llama.cpp's llama-completion).
    Run(run::Args),
    /// Chat with a model interactively, using its chat template.
    Chat(chat::Args),
    /// Measure prompt-processing and generation speed against the machine's limits.
    Bench(bench::Args),
    /// Show a GGUF file's header, metadata, tensors and architecture summary.
    Inspect(inspect::Args),
    /// Write the top-k logits of every prompt position (and greedy steps) as JSON.
    Logits(logits::Args),
    /// Measure perplexity on a text file, llama.cpp's way.
    Perplexity(perplexity::Args),
    /// Show how a model's tokenizer splits a text into token ids.
    Tokenize(tokenize::Args),
    /// Write a GGUF with a real model's shape and random weights (for speed tests).
    Synth(synth::Args),
    /// Rewrite a GGUF's Q4_K, Q6_K, Q8_0, Q4_1 and Q5_0 matrices in grist's interleaved
    /// layouts (faster token generation and prompts, memory-mapped as they are).
    Repack(repack::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Repack(args) => repack::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Perplexity(args) => perplexity::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `grist repack`: rewrite a GGUF's Q4_K, Q6_K, Q8_0, Q4_1 and Q5_0 matrices in grist's
//! interleaved Q4_K_R16, Q6_K_R16, Q8_0_R16, Q4_1_R16 and Q5_0_R16 layouts.
//!
//! The output is a GGUF that only grist reads; grist memory-maps it as is, so the faster
//! token-generation layout costs no second copy in RAM and no start-up time. See
//! `grist_model::repack` for what is written.
//!
//! ```text
//! grist repack models/qwen3-4b-q4_k_m.gguf -o models/qwen3-4b-q4_k_m.r16.gguf
//! ```

use std::io::Write;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use grist_model::repack::{self, RepackOptions};

use crate::common;
use crate::CliError;

/// Repackable-type tensors kept as they are listed by name in the summary; beyond that, only
/// their count.
const MAX_KEPT_NAMES: usize = 8;

/// Flags of `grist repack`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The GGUF file to repack (left unchanged).
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// Output GGUF file (replaced once complete if it exists; must not be INPUT).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,

    /// Worker threads (default: all available cores).
    #[arg(short = 't', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
}

/// Runs `grist repack`.
pub fn run(args: Args) -> Result<(), CliError> {
    let pool = common::thread_pool(args.threads)?;
    eprintln!(
        "repack: {} -> {} (Q4_K -> Q4_K_R16, Q6_K -> Q6_K_R16, Q8_0 -> Q8_0_R16, \
         Q4_1 -> Q4_1_R16, Q5_0 -> Q5_0_R16)",
        args.input.display(),
        args.output.display()
    );
    let mut last_pct = usize::MAX;
    let report = pool.install(|| {
        repack::repack_file_with_progress(
            &args.input,
            &args.output,
            &RepackOptions::default(),
            &mut |p| {
                let pct = 100 * p.index / p.total.max(1);
                if pct / 10 != last_pct / 10 {
                    last_pct = pct;
                    eprint!("\rrepack: {pct:3}% ({} / {} tensors)", p.index, p.total);
                    let _ = std::io::stderr().flush();
                }
            },
        )
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            if last_pct != usize::MAX {
                eprintln!(); // end the progress line before the error
            }
            return Err(e.into());
        }
    };
    let total = report.n_repacked + report.n_copied;
    eprintln!("\rrepack: 100% ({total} / {total} tensors)");
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let types: Vec<String> = report
        .repacked_types
        .iter()
        .map(|(ty, n)| format!("{n} to {ty}"))
        .collect();
    eprintln!(
        "repack: wrote {}: {} tensors repacked ({}{:.1} MB), {} copied as they are \
         ({:.1} MB); {} bytes in {:.1} s",
        args.output.display(),
        report.n_repacked,
        if types.is_empty() {
            String::new()
        } else {
            types.join(", ") + "; "
        },
        mb(report.bytes_repacked),
        report.n_copied,
        mb(report.bytes_copied),
        report.file_bytes,
        report.elapsed.as_secs_f64()
    );
    kept(
        &report.kept,
        "not 2-D, rows not a multiple of 16, or Q8_0/Q4_1/Q5_0 rows not a multiple of 64 values",
    );
    if report.n_repacked == 0 {
        eprintln!(
            "repack: warning: no Q4_K, Q6_K, Q8_0, Q4_1 or Q5_0 matrix to repack; the output holds \
             the input's tensors unchanged"
        );
    }
    Ok(())
}

/// Names the tensors of type `ty` left as they are (`why`), if any.
fn kept(names: &[String], why: &str) {
    if names.is_empty() {
        return;
    }
    let shown = &names[..names.len().min(MAX_KEPT_NAMES)];
    let more = names.len() - shown.len();
    eprintln!(
        "repack: {} Q4_K/Q6_K/Q8_0/Q4_1/Q5_0 tensors kept as they are ({why}): {}{}",
        names.len(),
        shown.join(", "),
        if more > 0 {
            format!(", and {more} more")
        } else {
            String::new()
        }
    );
}

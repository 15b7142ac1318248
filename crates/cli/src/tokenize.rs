//! `grist tokenize`: show how a model's tokenizer cuts a text, id by id.
//!
//! ```text
//! grist tokenize -m model.gguf -p "Hello world"
//!   9906 -> 'Hello'
//!   1917 -> ' world'
//! grist tokenize -m model.gguf -f prompt.txt --ids
//! [9906, 1917]
//! ```

use std::path::PathBuf;

use grist_gguf::GgufFile;
use grist_tokenizer::Tokenizer;

use crate::CliError;

/// Flags of `grist tokenize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model whose vocabulary to use.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Text to tokenize.
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    pub prompt: Option<String>,
    /// File whose contents to tokenize (UTF-8).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Print only the ids, as a JSON array.
    #[arg(long)]
    pub ids: bool,
    /// Treat control tokens written in the text (`<|im_start|>`…) as plain text.
    #[arg(long)]
    pub no_special: bool,
    /// Do not add the BOS/EOS tokens the model's metadata asks for.
    #[arg(long)]
    pub no_bos: bool,
}

/// Runs `grist tokenize`.
pub fn run(args: Args) -> Result<(), CliError> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => {
            let bytes = std::fs::read(path)
                .map_err(|e| CliError::msg(format!("cannot read {}: {e}", path.display())))?;
            String::from_utf8(bytes).map_err(|e| {
                CliError::msg(format!("{} is not valid UTF-8 ({e})", path.display()))
            })?
        }
        (None, None) => return Err(CliError::msg("give a text with -p or a file with -f")),
    };
    let file = GgufFile::open(&args.model)?;
    let tok = Tokenizer::from_gguf(&file)
        .map_err(|e| CliError::msg(format!("{}: {e}", args.model.display())))?;
    for w in &tok.vocab().warnings {
        eprintln!("warning: {w}");
    }
    let ids = tok.encode(&text, !args.no_bos, !args.no_special);
    if args.ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("[{}]", list.join(", "));
        return Ok(());
    }
    for &id in &ids {
        let piece = tok.token_to_piece(id, true)?;
        println!("{id:>6} -> '{}'", show_piece(piece));
    }
    Ok(())
}

/// A piece as printable text: control characters escaped, and a byte that is not (yet) valid
/// UTF-8 shown as `\xNN` instead of garbage.
fn show_piece(piece: &[u8]) -> String {
    let mut out = String::new();
    for chunk in piece.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::show_piece;

    #[test]
    fn pieces_are_printable() {
        assert_eq!(show_piece(b"Hello"), "Hello");
        assert_eq!(show_piece(b" a\nb\t"), " a\\nb\\t");
        assert_eq!(show_piece(&[0xE4, 0xBD]), "\\xE4\\xBD");
    }
}

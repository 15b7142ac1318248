//! Ids → text: token pieces (llama.cpp's `token_to_piece`), whole-sequence detokenization
//! (`detokenize`), and a streaming decoder that only ever emits complete UTF-8.

use crate::unicode::{char_to_byte, push_utf8};
use crate::vocab::{TokenAttr, TokenId, Vocab, VocabKind};

/// The bytes of every token as llama.cpp renders it with `special = true` (its piece cache).
pub fn build_pieces(vocab: &Vocab) -> Vec<Vec<u8>> {
    (0..vocab.len()).map(|id| render(vocab, id)).collect()
}

/// Renders one token: control / unknown / user-defined text as is, byte tokens as their byte,
/// normal tokens with `▁` → space (SPM) or GPT-2 characters → bytes (BPE); other types are empty.
fn render(vocab: &Vocab, id: usize) -> Vec<u8> {
    let text = vocab.tokens[id].as_str();
    let attr = vocab.attrs[id];
    if attr.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL | TokenAttr::USER_DEFINED) {
        return text.as_bytes().to_vec();
    }
    if attr.has(TokenAttr::NORMAL) {
        return match vocab.kind {
            VocabKind::Spm => text.replace('\u{2581}', " ").into_bytes(),
            VocabKind::Bpe => decode_byte_level(text),
        };
    }
    if attr.has(TokenAttr::BYTE) {
        // "<0xNN>": llama.cpp parses the two hex digits at offset 3.
        let byte = text
            .get(3..5)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        return vec![byte];
    }
    Vec::new()
}

/// GPT-2 stand-in characters → bytes; a character outside the map is rendered the way
/// llama.cpp does it: `[UNK_BYTE_0x<hex of its UTF-8><whole token text>]`.
fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut utf8 = Vec::new();
                push_utf8(&mut utf8, c as u32);
                for b in utf8 {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's `detokenize`: concatenates pieces, drops a BOS/EOS added by the model when
/// `remove_special`, strips the space-prefix of the first piece for SPM vocabularies that add
/// one, and applies the `clean_spaces` rules of the pre-tokenizer.
pub fn detokenize(
    vocab: &Vocab,
    pieces: &[Vec<u8>],
    mut ids: &[TokenId],
    remove_special: bool,
    unparse_special: bool,
) -> Vec<u8> {
    let mut remove_space = vocab.add_space_prefix;
    if remove_special && vocab.add_bos && !ids.is_empty() && Some(ids[0]) == vocab.bos {
        remove_space = false;
        ids = &ids[1..];
    }
    if remove_special && vocab.add_eos && !ids.is_empty() && Some(ids[ids.len() - 1]) == vocab.eos {
        ids = &ids[..ids.len() - 1];
    }
    let mut text = Vec::new();
    for &id in ids {
        let attr = vocab.attrs[id as usize];
        if !unparse_special && attr.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL) {
            remove_space = false;
            continue;
        }
        let mut piece = pieces[id as usize].as_slice();
        if remove_space && piece.first() == Some(&b' ') {
            piece = &piece[1..];
        }
        remove_space = false;
        text.extend_from_slice(piece);
    }
    if vocab.pre.clean_spaces {
        clean_spaces(&mut text);
    }
    text
}

/// The three clean-up passes of llama.cpp's `detokenize` (` ?`→`?`, ` ' `→`'`, ` 's`→`'s`…).
fn clean_spaces(text: &mut Vec<u8>) {
    // Pass 1: drop the space before ? ! . ,
    let src = std::mem::take(text);
    let mut out: Vec<u8> = Vec::with_capacity(src.len());
    for (i, &x) in src.iter().enumerate() {
        if i > 0 && src[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    // Pass 2: " ' " → "'" (drop the spaces around a lone apostrophe). llama.cpp works in
    // place and zeroes the skipped space, so the next character sees a NUL before it.
    let mut src = out;
    let mut out: Vec<u8> = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        let x = src[i];
        if i > 0 && x == b'\'' && i + 1 < src.len() && src[i - 1] == b' ' && src[i + 1] == b' ' {
            out.pop();
            out.push(x);
            src[i + 1] = 0;
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    // Pass 3: " 's", " 'm", " 're", " 've" lose their space.
    let src = out;
    let mut out: Vec<u8> = Vec::with_capacity(src.len());
    for (i, &x) in src.iter().enumerate() {
        if i > 0 && src[i - 1] == b' ' && x == b'\'' && i + 1 < src.len() {
            let x1 = src[i + 1];
            if x1 == b's' || x1 == b'm' {
                out.pop();
            } else if x1 != b't' && x1 != b'd' && i + 2 < src.len() {
                let x2 = src[i + 2];
                if x2 == b'e' && (x1 == b'r' || x1 == b'v') {
                    out.pop();
                }
            }
        }
        out.push(x);
    }
    *text = out;
}

/// Turns a stream of token ids into text, holding back the bytes of a character split across
/// tokens until it is complete, so a terminal never sees half a UTF-8 sequence.
///
/// Invalid bytes (which no continuation can complete) are emitted as U+FFFD right away.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    special: bool,
}

impl StreamDecoder {
    /// A decoder; `special` renders control tokens (like `token_to_piece(special = true)`).
    pub fn new(special: bool) -> StreamDecoder {
        StreamDecoder {
            pending: Vec::new(),
            special,
        }
    }

    /// Adds the piece of one token and returns the text that became complete.
    pub fn push(
        &mut self,
        tok: &crate::Tokenizer,
        id: TokenId,
    ) -> Result<String, crate::TokenizerError> {
        let piece = tok.token_to_piece(id, self.special)?;
        Ok(self.push_bytes(piece))
    }

    /// Adds raw bytes and returns the text that became complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid UTF-8 by construction.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Invalid bytes: replace them and go on.
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Emits whatever is held back (an unfinished character becomes U+FFFD).
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::clean_spaces;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn clean_spaces_mirrors_llama_cpp() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("it ' s"), "it's");
        assert_eq!(
            clean("I 'm sure you 're fine , he 's"),
            "I'm sure you're fine, he's"
        );
        assert_eq!(
            clean("don 't and we 'd and we 'll"),
            "don 't and we 'd and we 'll"
        );
        // The skipped space is zeroed in place, so a second " ' " right after is kept.
        assert_eq!(clean("x ' ' y"), "x'' y");
    }
}

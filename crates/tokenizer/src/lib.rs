//! grist-tokenizer: text ↔ token ids, byte-for-byte as llama.cpp does it.
//!
//! A [`Tokenizer`] is built from a GGUF file's `tokenizer.ggml.*` metadata ([`Vocab::from_gguf`])
//! or from plain data ([`Vocab::from_metadata`]). Two algorithms are implemented:
//!
//! * **byte-level BPE** (`tokenizer.ggml.model = "gpt2"`: SmolLM, Qwen, Llama 3, …): the text is
//!   cut into words by a pre-tokenizer ([`PreTokenizer`], chosen by `tokenizer.ggml.pre`), each
//!   word's bytes are mapped to GPT-2's printable characters, and merges are applied by rank;
//! * **SentencePiece BPE** (`"llama"`: Llama 2, Gemma, …): spaces become `▁`, adjacent pieces are
//!   merged by score, and leftovers fall back to `<0xNN>` byte tokens.
//!
//! Before either, special tokens are cut out of the text as whole strings ([`special`]).
//! Decoding reverses the piece mapping; [`StreamDecoder`] emits only complete UTF-8.
//!
//! ```no_run
//! let file = grist_gguf::GgufFile::open("model.gguf")?;
//! let tok = grist_tokenizer::Tokenizer::from_gguf(&file)?;
//! let ids = tok.encode("Hello world", true, true);
//! assert_eq!(tok.decode(&ids, true, false)?, b"Hello world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod bpe;
mod decode;
mod gguf;
mod pretokenize;
pub mod special;
mod spm;
pub mod unicode;
#[rustfmt::skip]
mod unicode_tables;
mod vocab;

use std::fmt;

pub use decode::StreamDecoder;
pub use pretokenize::{PreConfig, PreTokenizer};
pub use unicode_tables::UNICODE_VERSION;
pub use vocab::{TokenAttr, TokenId, Vocab, VocabKind, VocabMetadata, SPECIAL_ID_NAMES};

/// What can go wrong when loading a vocabulary or decoding ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerError {
    /// The GGUF metadata does not describe a usable vocabulary.
    BadVocab(String),
    /// A token id outside the vocabulary.
    InvalidId {
        /// The offending id.
        id: TokenId,
        /// Number of tokens in the vocabulary.
        n_vocab: usize,
    },
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::BadVocab(m) => write!(f, "bad vocabulary: {m}"),
            TokenizerError::InvalidId { id, n_vocab } => {
                write!(f, "token id {id} is outside the vocabulary (0..{n_vocab})")
            }
        }
    }
}

impl std::error::Error for TokenizerError {}

/// A ready-to-use tokenizer: the vocabulary plus the lookup tables built from it.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    /// `[n_vocab]` rendered pieces (special tokens included), like llama.cpp's piece cache.
    pieces: Vec<Vec<u8>>,
    /// SPM byte-fallback token of each byte (`<0xNN>`, else the one-byte token), if any.
    byte_tokens: [Option<TokenId>; 256],
    /// Finds which special tokens occur in a text.
    special_trie: special::SpecialTrie,
}

impl Tokenizer {
    /// Builds the tokenizer of a vocabulary.
    pub fn new(vocab: Vocab) -> Tokenizer {
        let pieces = decode::build_pieces(&vocab);
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = vocab.id(&format!("<0x{b:02X}>")).or_else(|| {
                // One byte is a string only if it is ASCII.
                char::from_u32(b as u32)
                    .filter(|c| c.is_ascii())
                    .and_then(|c| vocab.id(c.encode_utf8(&mut [0; 4])))
            });
        }
        let special_trie = special::SpecialTrie::new(&vocab);
        Tokenizer {
            vocab,
            pieces,
            byte_tokens,
            special_trie,
        }
    }

    /// Loads the vocabulary of a GGUF model and builds its tokenizer.
    pub fn from_gguf(file: &grist_gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer::new(Vocab::from_gguf(file)?))
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// True if generation should stop after `id` (llama.cpp's end-of-generation set).
    pub fn is_eog(&self, id: TokenId) -> bool {
        self.vocab.is_eog(id)
    }

    /// Text → ids, like `llama_tokenize(text, add_special, parse_special)`.
    ///
    /// `add_special` adds BOS/EOS where the model's metadata asks for them; `parse_special`
    /// matches control tokens written in the text (`<|im_start|>`…) as single ids.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<TokenId> {
        let v = &self.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let frags = special::partition(v, &self.special_trie, text, parse_special);
        if add_special && v.add_bos {
            out.extend(v.bos);
        }
        match v.kind {
            VocabKind::Spm => {
                let mut is_prev_special = true;
                let mut buf = String::new();
                for frag in frags {
                    match frag {
                        special::Fragment::Text(r) => {
                            buf.clear();
                            if v.add_space_prefix && is_prev_special {
                                buf.push(' ');
                            }
                            buf.push_str(&text[r]);
                            let escaped = buf.replace(' ', "\u{2581}");
                            spm::tokenize(v, &self.byte_tokens, &escaped, &mut out);
                            is_prev_special = false;
                        }
                        special::Fragment::Token(id) => {
                            out.push(id);
                            is_prev_special = true;
                        }
                    }
                }
            }
            VocabKind::Bpe => {
                let mut scratch = bpe::BpeScratch::default();
                let mut word = String::new();
                for frag in frags {
                    match frag {
                        special::Fragment::Text(r) => {
                            let piece = &text[r];
                            for w in v.pre.pre.split(piece) {
                                word.clear();
                                for &b in piece[w].as_bytes() {
                                    word.push(unicode::BYTE_TO_CHAR[b as usize]);
                                }
                                bpe::merge_word(v, &word, &mut scratch, &mut out);
                            }
                        }
                        special::Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.eos);
        }
        out
    }

    /// The bytes of one token, like `llama_token_to_piece(id, lstrip = 0, special)`: with
    /// `special = false` control and unknown tokens render as nothing.
    pub fn token_to_piece(&self, id: TokenId, special: bool) -> Result<&[u8], TokenizerError> {
        let idx = self.check(id)?;
        if !special && self.vocab.attrs[idx].has(TokenAttr::UNKNOWN | TokenAttr::CONTROL) {
            return Ok(&[]);
        }
        Ok(&self.pieces[idx])
    }

    /// Ids → bytes, like `llama_detokenize(ids, remove_special, unparse_special)`.
    pub fn decode(
        &self,
        ids: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>, TokenizerError> {
        for &id in ids {
            self.check(id)?;
        }
        Ok(decode::detokenize(
            &self.vocab,
            &self.pieces,
            ids,
            remove_special,
            unparse_special,
        ))
    }

    /// Validates an id and returns it as an index.
    fn check(&self, id: TokenId) -> Result<usize, TokenizerError> {
        let n_vocab = self.vocab.len();
        if (id as usize) < n_vocab {
            Ok(id as usize)
        } else {
            Err(TokenizerError::InvalidId { id, n_vocab })
        }
    }
}

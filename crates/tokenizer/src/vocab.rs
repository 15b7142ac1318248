//! The vocabulary: token texts, scores and attributes, merge ranks, special ids, and the switches
//! llama.cpp derives from GGUF metadata (`llama_vocab::impl::load`).

use std::collections::HashMap;

use crate::pretokenize::{PreConfig, PreTokenizer};
use crate::TokenizerError;

/// Token id, as stored in GGUF and fed to the model.
pub type TokenId = u32;

/// Token attributes (llama.cpp's `llama_token_attr` bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenAttr(pub u16);

impl TokenAttr {
    /// No attribute: a token type llama.cpp does not know.
    pub const UNDEFINED: u16 = 0;
    /// The unknown token.
    pub const UNKNOWN: u16 = 1 << 0;
    /// A slot the model never uses.
    pub const UNUSED: u16 = 1 << 1;
    /// An ordinary piece of text.
    pub const NORMAL: u16 = 1 << 2;
    /// A control token (`<s>`, `<|im_end|>`…): matched as a whole only when parsing specials.
    pub const CONTROL: u16 = 1 << 3;
    /// A user-defined token: always matched as a whole before BPE.
    pub const USER_DEFINED: u16 = 1 << 4;
    /// A byte-fallback token `<0xNN>`.
    pub const BYTE: u16 = 1 << 5;
    /// Whitespace to the left of the token is swallowed when it is matched.
    pub const LSTRIP: u16 = 1 << 7;
    /// Whitespace to the right of the token is swallowed when it is matched.
    pub const RSTRIP: u16 = 1 << 8;

    /// True if any of `bits` is set.
    #[inline]
    pub fn has(self, bits: u16) -> bool {
        self.0 & bits != 0
    }

    /// The attribute of a GGUF `tokenizer.ggml.token_type` value.
    pub fn from_token_type(ty: i32) -> TokenAttr {
        TokenAttr(match ty {
            1 => Self::NORMAL,
            2 => Self::UNKNOWN,
            3 => Self::CONTROL,
            4 => Self::USER_DEFINED,
            5 => Self::UNUSED,
            6 => Self::BYTE,
            _ => Self::UNDEFINED,
        })
    }
}

/// The two tokenizer algorithms grist implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with merge ranks and a pre-tokenizer.
    Bpe,
    /// `tokenizer.ggml.model = "llama"`: SentencePiece BPE driven by token scores.
    Spm,
}

/// Everything the tokenizer reads from GGUF metadata, as plain data (so tests can build a
/// vocabulary without a file). Optional fields are "key absent".
#[derive(Clone, Debug, Default)]
pub struct VocabMetadata {
    /// `tokenizer.ggml.model`.
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` ("left right" strings, rank = index).
    pub merges: Vec<String>,
    /// Special ids by key suffix (`bos`, `eos`, `eot`, `eom`, `unknown`, `seperator`,
    /// `padding`, `mask`, `fim_pre`, …), from `tokenizer.ggml.<name>_token_id`.
    pub special_ids: HashMap<String, u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `general.name` (llama.cpp keys a phi-3 quirk on it).
    pub model_name: Option<String>,
}

/// The names of the `tokenizer.ggml.<name>_token_id` keys llama.cpp reads.
pub const SPECIAL_ID_NAMES: &[&str] = &[
    "bos",
    "eos",
    "eot",
    "eom",
    "unknown",
    "seperator",
    "padding",
    "mask",
    "fim_pre",
    "fim_suf",
    "fim_mid",
    "fim_pad",
    "fim_rep",
    "fim_sep",
    "prefix",
    "suffix",
    "middle",
];

/// A loaded vocabulary, with every derived table the tokenizer needs.
#[derive(Clone, Debug)]
pub struct Vocab {
    /// Which algorithm tokenizes text.
    pub kind: VocabKind,
    /// Pre-tokenizer regexes and switches (BPE only).
    pub pre: PreConfig,
    /// `[n_vocab]` token texts (empty texts replaced by `[EMPTY_<id>]` like llama.cpp).
    pub tokens: Vec<String>,
    /// `[n_vocab]` SentencePiece scores (0 when absent).
    pub scores: Vec<f32>,
    /// `[n_vocab]` attributes, after llama.cpp's automatic fix-ups.
    pub attrs: Vec<TokenAttr>,
    /// Text → id.
    pub token_to_id: HashMap<String, TokenId>,
    /// BPE merges keyed by the ids of both parts: (rank, id of the merged text if it is a token).
    pub merges_by_id: HashMap<(TokenId, TokenId), (u32, Option<TokenId>)>,
    /// BPE merges whose parts are not both tokens, keyed by text (rarely non-empty).
    pub merges_by_text: HashMap<(String, String), u32>,
    /// Beginning-of-sequence id.
    pub bos: Option<TokenId>,
    /// End-of-sequence id.
    pub eos: Option<TokenId>,
    /// End-of-turn id.
    pub eot: Option<TokenId>,
    /// Unknown-token id.
    pub unk: Option<TokenId>,
    /// Padding id.
    pub pad: Option<TokenId>,
    /// Whether `encode(add_special = true)` prepends BOS.
    pub add_bos: bool,
    /// Whether `encode(add_special = true)` appends EOS.
    pub add_eos: bool,
    /// SPM: prepend a space to text that starts a fragment after a special token / the start.
    pub add_space_prefix: bool,
    /// End-of-generation ids, sorted: the executor stops on any of them.
    pub eog: Vec<TokenId>,
    /// Ids matched as whole strings before BPE (control, user-defined, unknown), longest first.
    pub special_tokens: Vec<TokenId>,
    /// Warnings produced while loading (unknown `pre`, …), for the caller to print.
    pub warnings: Vec<String>,
}

/// Token texts llama.cpp treats as end-of-generation whatever their type.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Texts that make a token the end-of-turn token when `eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Texts for the fill-in-the-middle tokens that llama.cpp counts as end-of-generation.
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// FIM prefix / suffix / middle texts: detected only to mark them as control tokens.
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];

impl Vocab {
    /// Builds a vocabulary from metadata, applying llama.cpp's defaults and fix-ups.
    pub fn from_metadata(md: VocabMetadata) -> Result<Vocab, TokenizerError> {
        let bad = |m: String| TokenizerError::BadVocab(m);
        let kind = match md.model.as_str() {
            "gpt2" => VocabKind::Bpe,
            "llama" => VocabKind::Spm,
            other => {
                return Err(bad(format!(
                    "unsupported tokenizer model '{other}' (tokenizer.ggml.model): grist supports \
                     'gpt2' (byte-level BPE) and 'llama' (SentencePiece)"
                )))
            }
        };
        let n = md.tokens.len();
        if n == 0 {
            return Err(bad("the vocabulary is empty (tokenizer.ggml.tokens)".into()));
        }
        if n > u32::MAX as usize {
            return Err(bad(format!("{n} tokens do not fit 32-bit ids")));
        }
        let mut warnings = Vec::new();

        // Algorithm defaults (llama.cpp), before metadata overrides.
        let (pre, mut add_bos, mut add_space_prefix) = match kind {
            VocabKind::Bpe => {
                let (pre, warning) = PreConfig::from_name(md.pre.as_deref());
                warnings.extend(warning);
                (pre, pre.add_bos, false)
            }
            VocabKind::Spm => {
                let pre = PreConfig {
                    pre: PreTokenizer::Default,
                    ignore_merges: false,
                    clean_spaces: false,
                    add_bos: true,
                };
                (pre, true, true)
            }
        };
        let mut add_eos = false;
        if let Some(v) = md.add_space_prefix {
            add_space_prefix = v;
        }

        // Tokens, scores, attributes.
        let mut tokens = md.tokens;
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                warnings.push(format!("empty token at index {i}"));
                *t = format!("[EMPTY_{i}]");
            }
            if let Some(prev) = token_to_id.insert(t.clone(), i as TokenId) {
                return Err(bad(format!(
                    "duplicate token in vocabulary: '{t}' has ids {prev} and {i}"
                )));
            }
        }
        let scores = match md.scores {
            Some(s) if s.len() < n => {
                return Err(bad(format!(
                    "{} scores for {n} tokens (tokenizer.ggml.scores)",
                    s.len()
                )))
            }
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None => vec![0.0; n],
        };
        let mut attrs = match md.token_types {
            Some(t) if t.len() < n => {
                return Err(bad(format!(
                    "{} token types for {n} tokens (tokenizer.ggml.token_type)",
                    t.len()
                )))
            }
            Some(t) => t[..n]
                .iter()
                .map(|&ty| TokenAttr::from_token_type(ty))
                .collect(),
            None => vec![TokenAttr(TokenAttr::NORMAL); n],
        };

        // Merges: "left right", split at the first space after the first byte.
        let mut merges_by_id = HashMap::new();
        let mut merges_by_text = HashMap::new();
        if kind == VocabKind::Bpe {
            for (rank, m) in md.merges.iter().enumerate() {
                // llama.cpp: `word.find(' ', 1)` on bytes; a space is never inside a char.
                let space = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1);
                let (left, right) = match space {
                    Some(p) => (&m[..p], &m[p + 1..]),
                    None => ("", ""),
                };
                let rank = rank as u32;
                match (token_to_id.get(left), token_to_id.get(right)) {
                    (Some(&l), Some(&r)) => {
                        let merged = token_to_id.get(&format!("{left}{right}")).copied();
                        merges_by_id.entry((l, r)).or_insert((rank, merged));
                    }
                    _ => {
                        merges_by_text
                            .entry((left.to_string(), right.to_string()))
                            .or_insert(rank);
                    }
                }
            }
        }

        // Special ids: defaults per algorithm, then metadata.
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let (mut bos, mut eos, mut unk) = match kind {
            VocabKind::Spm => (Some(1), Some(2), Some(0)),
            VocabKind::Bpe => (Some(11), Some(11), None),
        };
        bos = in_range(bos);
        eos = in_range(eos);
        unk = in_range(unk);
        let meta = |name: &str, default: Option<u32>, warnings: &mut Vec<String>| match md
            .special_ids
            .get(name)
        {
            Some(&id) if (id as usize) < n => Some(id),
            Some(&id) => {
                warnings.push(format!(
                    "bad special token: 'tokenizer.ggml.{name}_token_id' = {id}, using default"
                ));
                default
            }
            None => default,
        };
        bos = meta("bos", bos, &mut warnings);
        eos = meta("eos", eos, &mut warnings);
        unk = meta("unknown", unk, &mut warnings);
        let pad = meta("padding", None, &mut warnings);
        let mut eot = meta("eot", None, &mut warnings);
        let mut eom = meta("eom", None, &mut warnings);
        let mut fim_pre = meta(
            "prefix",
            meta("fim_pre", None, &mut warnings),
            &mut warnings,
        );
        let mut fim_suf = meta(
            "suffix",
            meta("fim_suf", None, &mut warnings),
            &mut warnings,
        );
        let mut fim_mid = meta(
            "middle",
            meta("fim_mid", None, &mut warnings),
            &mut warnings,
        );
        let mut fim_pad = meta("fim_pad", None, &mut warnings);
        let mut fim_rep = meta("fim_rep", None, &mut warnings);
        let mut fim_sep = meta("fim_sep", None, &mut warnings);
        if let Some(v) = md.add_bos {
            add_bos = v;
        }
        if let Some(v) = md.add_eos {
            add_eos = v;
        }
        if add_bos && bos.is_none() {
            return Err(bad(
                "add_bos_token is true, but bos_token_id is not set".into()
            ));
        }
        if add_eos && eos.is_none() {
            return Err(bad(
                "add_eos_token is true, but eos_token_id is not set".into()
            ));
        }

        // Auto-detect EOT / EOM / FIM tokens by text and force them to be control tokens.
        // llama.cpp walks an unordered map, so "first match" is unspecified; we walk ids in order.
        let make_control = |attrs: &mut Vec<TokenAttr>, id: TokenId| {
            attrs[id as usize].0 |= TokenAttr::CONTROL;
        };
        for id in 0..n as TokenId {
            let text = tokens[id as usize].as_str();
            let detect = |slot: &mut Option<TokenId>, texts: &[&str]| {
                if slot.is_none() && texts.contains(&text) {
                    *slot = Some(id);
                    true
                } else {
                    false
                }
            };
            let hit = detect(&mut eot, EOT_TEXTS)
                | detect(&mut eom, &["<|eom_id|>"])
                | detect(&mut fim_pad, FIM_PAD_TEXTS)
                | detect(&mut fim_rep, FIM_REP_TEXTS)
                | detect(&mut fim_sep, FIM_SEP_TEXTS)
                | detect(&mut fim_pre, FIM_PRE_TEXTS)
                | detect(&mut fim_suf, FIM_SUF_TEXTS)
                | detect(&mut fim_mid, FIM_MID_TEXTS);
            if hit {
                make_control(&mut attrs, id);
            }
        }

        // Control tokens whose text says "unused" are unused.
        for (id, t) in tokens.iter().enumerate() {
            if attrs[id].has(TokenAttr::CONTROL) && t.contains("unused") {
                attrs[id].0 |= TokenAttr::UNUSED;
            }
        }

        // End-of-generation set.
        let mut eog: Vec<TokenId> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for (id, t) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                eog.push(id as TokenId);
                make_control(&mut attrs, id as TokenId);
            }
        }
        // gpt-oss: these are always rendered.
        for (id, t) in tokens.iter().enumerate() {
            if matches!(
                t.as_str(),
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                attrs[id] = TokenAttr(TokenAttr::USER_DEFINED);
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        // o200k_harmony / solar-open: "<|end|>" is not end-of-generation there.
        let eog_has = |eog: &[TokenId], s: &str| eog.iter().any(|&i| tokens[i as usize] == s);
        if (eog_has(&eog, "<|return|>") && eog_has(&eog, "<|call|>") && eog_has(&eog, "<|end|>"))
            || ((eog_has(&eog, "<|call|>") || eog_has(&eog, "<|calls|>"))
                && eog_has(&eog, "<|flush|>")
                && eog_has(&eog, "<|end|>"))
        {
            if let Some(pos) = eog.iter().position(|&i| tokens[i as usize] == "<|end|>") {
                attrs[eog[pos] as usize] = TokenAttr(TokenAttr::USER_DEFINED);
                eog.remove(pos);
            }
        }
        // gemma4 / paddleocr: "</s>" is not end-of-generation when "<|tool_response>" is.
        if eog_has(&eog, "<|tool_response>") {
            if let Some(pos) = eog.iter().position(|&i| tokens[i as usize] == "</s>") {
                attrs[eog[pos] as usize] = TokenAttr(TokenAttr::NORMAL);
                eog.remove(pos);
            }
        }

        // Special tokens matched before BPE: longest text first (ties by id, our choice:
        // llama.cpp's std::sort leaves their order unspecified).
        let mut special_tokens: Vec<TokenId> = (0..n as TokenId)
            .filter(|&id| {
                attrs[id as usize]
                    .has(TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN)
            })
            .collect();
        special_tokens.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });

        // Per-model attribute quirks keyed on the model name (phi-3: specials swallow spaces
        // on their right).
        let name = md.model_name.unwrap_or_default().to_lowercase();
        if name.contains("phi-3") || name.contains("phi3") {
            for &id in &special_tokens {
                attrs[id as usize].0 |= TokenAttr::RSTRIP;
            }
            if let Some(&id) = token_to_id.get("</s>") {
                attrs[id as usize].0 |= TokenAttr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(&id) = token_to_id.get(t) {
                    attrs[id as usize].0 &= !TokenAttr::RSTRIP;
                }
            }
        }

        Ok(Vocab {
            kind,
            pre,
            tokens,
            scores,
            attrs,
            token_to_id,
            merges_by_id,
            merges_by_text,
            bos,
            eos,
            eot,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
            special_tokens,
            warnings,
        })
    }

    /// Reads the vocabulary from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &grist_gguf::GgufFile) -> Result<Vocab, TokenizerError> {
        Vocab::from_metadata(crate::gguf::read_metadata(file)?)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True if the vocabulary has no tokens (never the case for a loaded one).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of a token text, if it is in the vocabulary.
    #[inline]
    pub fn id(&self, text: &str) -> Option<TokenId> {
        self.token_to_id.get(text).copied()
    }

    /// True if generation should stop after `id`.
    pub fn is_eog(&self, id: TokenId) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
}

//! Pre-tokenizers: how byte-level BPE vocabularies cut text into words before merging.
//!
//! Each `tokenizer.ggml.pre` names a list of regular expressions (llama.cpp's `llm_tokenizer_bpe`
//! constructor). They are applied in order: the first splits the whole text into pieces, each
//! later one re-splits every piece, and a regex's non-matching gaps stay pieces of their own.
//! llama.cpp runs two of them through hand-written state machines (`unicode_regex_split_custom_gpt2`
//! and `_llama3`) and the others through `std::regex` on a "collapsed" text where every
//! non-ASCII codepoint is replaced by one byte standing for its category. We write every one of
//! them as a small matcher over codepoints and their [`CpFlags`], reproducing both behaviours
//! (ECMAScript leftmost / first-alternative-wins semantics for the `std::regex` ones).
//!
//! Positions below are codepoint indices into the text; a *segment* is a half-open range
//! `[start, end)` that a regex sees as its whole input (so `$` and look-ahead stop there).

use crate::unicode::{self, CpFlags};

/// Which regex list splits the text (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`, grouped by regex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// llama.cpp's fallback list: punctuation runs, the GPT-2 rule, number runs, digit triples.
    Default,
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    /// (gpt-2, phi-2, mpt, olmo, jais, …).
    Gpt2,
    /// Llama 3: case-insensitive contractions, `[^\r\n\p{L}\p{N}]?\p{L}+`, numbers in groups
    /// of up to three, newline-aware whitespace (llama3, llama-bpe, dbrx, smaug-bpe, …).
    Llama3,
    /// Qwen 2: the Llama 3 regex with single-digit numbers (qwen2, stablelm2, …).
    Qwen2,
    /// StarCoder: every digit isolated first, then the GPT-2 rule (starcoder, smollm, refact,
    /// command-r, codeshell, exaone, …).
    Starcoder,
    /// DeepSeek LLM: newlines, explicit Latin/Greek/Cyrillic letter classes, ASCII and CJK
    /// punctuation, trailing whitespace, CJK runs, number runs.
    DeepseekLlm,
    /// DeepSeek Coder: newlines, `\s?\p{L}+`, `\s?\p{P}+`, CJK runs, single digits.
    DeepseekCoder,
    /// Falcon: punctuation runs, the GPT-2 rule, digit triples.
    Falcon,
}

/// Per-`pre` switches llama.cpp sets next to the regexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreConfig {
    /// The regex list.
    pub pre: PreTokenizer,
    /// A word that is already a token is emitted whole, without merging (llama 3 family).
    pub ignore_merges: bool,
    /// Detokenization removes spaces before punctuation and some contractions.
    pub clean_spaces: bool,
    /// Default of `add_bos` before metadata overrides it.
    pub add_bos: bool,
}

impl PreConfig {
    /// Maps a `tokenizer.ggml.pre` value to its regex list and switches, as llama.cpp's
    /// `llama_vocab::impl::load` does. A missing value means `default`; an unknown one falls
    /// back to the GPT-2 rule with a warning in the returned message (llama.cpp refuses it).
    pub fn from_name(pre: Option<&str>) -> (PreConfig, Option<String>) {
        use PreTokenizer::*;
        let cfg = |pre, ignore_merges, clean_spaces, add_bos| PreConfig {
            pre,
            ignore_merges,
            clean_spaces,
            add_bos,
        };
        let name = match pre {
            None | Some("") => {
                let warning = "missing pre-tokenizer type (tokenizer.ggml.pre), using 'default': \
                               generation quality will be degraded";
                return (cfg(Default, false, true, false), Some(warning.to_string()));
            }
            Some(name) => name,
        };
        let config = match name {
            "default" => cfg(Default, false, true, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => cfg(Llama3, true, true, true),
            "dbrx" | "smaug-bpe" => cfg(Llama3, false, true, false),
            "deepseek-llm" => cfg(DeepseekLlm, false, false, false),
            "deepseek-coder" => cfg(DeepseekCoder, false, false, false),
            "falcon" => cfg(Falcon, false, true, false),
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "jina-es" | "jina-de" | "gigachat"
            | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4"
            | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => cfg(Gpt2, false, true, false),
            "trillion" | "granite-docling" => cfg(Gpt2, false, false, false),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                cfg(Starcoder, false, true, false)
            }
            "smollm" | "command-r" => cfg(Starcoder, false, false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" => {
                cfg(Qwen2, false, false, false)
            }
            "stablelm2" | "megrez" => cfg(Qwen2, false, true, false),
            other => {
                let warning = format!(
                    "unknown pre-tokenizer type '{other}' (tokenizer.ggml.pre), falling back to \
                     the GPT-2 rule: tokenization may differ from the model's own"
                );
                return (cfg(Gpt2, false, true, false), Some(warning));
            }
        };
        (config, None)
    }
}

/// The text of one call, decoded once: codepoints, their flags, and where each starts in bytes.
struct Text<'a> {
    cpts: &'a [u32],
    flags: &'a [CpFlags],
}

impl Text<'_> {
    /// Flags at `pos` if it lies inside `[start, end)`, else the "nothing here" sentinel.
    #[inline]
    fn flags_in(&self, pos: usize, end: usize) -> CpFlags {
        if pos < end {
            self.flags[pos]
        } else {
            CpFlags(0)
        }
    }
    /// Codepoint at `pos` if inside the segment, else `u32::MAX` (llama.cpp's OUT_OF_RANGE).
    #[inline]
    fn cpt_in(&self, pos: usize, end: usize) -> u32 {
        if pos < end {
            self.cpts[pos]
        } else {
            u32::MAX
        }
    }
}

impl PreTokenizer {
    /// Splits `text` into words and returns their byte ranges, in order, covering the text.
    pub fn split(self, text: &str) -> Vec<std::ops::Range<usize>> {
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let flags: Vec<CpFlags> = cpts.iter().map(|&c| unicode::flags(c)).collect();
        let t = Text {
            cpts: &cpts,
            flags: &flags,
        };
        // Segment lengths in codepoints; the first regex sees the whole text.
        let mut segs = vec![cpts.len()];
        for stage in self.stages() {
            segs = apply_stage(&t, *stage, &segs);
        }
        // Codepoint lengths → byte ranges.
        let mut out = Vec::with_capacity(segs.len());
        let mut chars = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()));
        let mut byte_start = chars.next().unwrap_or(0);
        for len in segs {
            if len == 0 {
                continue;
            }
            let mut byte_end = byte_start;
            for _ in 0..len {
                byte_end = chars.next().unwrap_or(text.len());
            }
            out.push(byte_start..byte_end);
            byte_start = byte_end;
        }
        out
    }

    /// The regexes of this pre-tokenizer, in application order.
    fn stages(self) -> &'static [Stage] {
        use Stage::*;
        match self {
            PreTokenizer::Default => &[PunctRun, Gpt2, NumberRun, AsciiDigits3],
            PreTokenizer::Gpt2 => &[Gpt2],
            PreTokenizer::Llama3 => &[Llama3],
            PreTokenizer::Qwen2 => &[Qwen2],
            PreTokenizer::Starcoder => &[SingleNumber, Gpt2],
            PreTokenizer::DeepseekLlm => &[
                Newline,
                DeepseekLetters,
                DeepseekPunct,
                TrailingSpace,
                CjkRun,
                NumberRun,
            ],
            PreTokenizer::DeepseekCoder => {
                &[Newline, SpaceLetters, SpacePunct, CjkRun, SingleNumber]
            }
            PreTokenizer::Falcon => &[FalconPunctRun, Gpt2, AsciiDigits3],
        }
    }
}

/// One regex of a pre-tokenizer list.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (custom).
    Gpt2,
    /// The Llama 3 regex (custom).
    Llama3,
    /// The Qwen 2 regex (`std::regex`).
    Qwen2,
    /// `\p{N}`
    SingleNumber,
    /// `\p{N}+`
    NumberRun,
    /// `[0-9][0-9][0-9]`
    AsciiDigits3,
    /// `[\p{P}\$\+<=>\^~\|]+`
    PunctRun,
    /// ``[\p{P}\$\+<=>\^~\|`]+``
    FalconPunctRun,
    /// `[\r\n]`
    Newline,
    /// `\s?[A-Za-zµÀ-Ö…]+` (DeepSeek's explicit cased-letter class)
    DeepseekLetters,
    /// `\s?[!-/:-~！-／：-～‘-‟　-。]+`
    DeepseekPunct,
    /// `\s+$`
    TrailingSpace,
    /// `[一-龥ࠀ-一가-퟿]+`
    CjkRun,
    /// `\s?\p{L}+`
    SpaceLetters,
    /// `\s?\p{P}+`
    SpacePunct,
}

/// Runs one regex over every segment and returns the new segment lengths.
fn apply_stage(t: &Text, stage: Stage, segs: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(segs.len() * 2);
    let mut start = 0;
    for &len in segs {
        let end = start + len;
        match stage {
            Stage::Gpt2 => split_gpt2(t, start, end, &mut out),
            Stage::Llama3 => split_llama3(t, start, end, &mut out),
            _ => split_regex(t, start, end, &mut out, |pos| {
                match_at(t, stage, pos, start, end)
            }),
        }
        start = end;
    }
    out
}

/// `std::regex_iterator` splitting: find the leftmost match, emit the gap before it and the
/// match, continue after it; the tail after the last match is a piece too.
fn split_regex(
    _t: &Text,
    start: usize,
    end: usize,
    out: &mut Vec<usize>,
    matcher: impl Fn(usize) -> Option<usize>,
) {
    let mut prev = start;
    let mut pos = start;
    while pos < end {
        match matcher(pos) {
            Some(m_end) if m_end > pos => {
                if pos > prev {
                    out.push(pos - prev);
                }
                out.push(m_end - pos);
                prev = m_end;
                pos = m_end;
            }
            _ => pos += 1,
        }
    }
    if end > prev {
        out.push(end - prev);
    }
}

/// Length-one membership test for ASCII-and-beyond character classes given as inclusive ranges.
fn in_ranges(c: u32, ranges: &[(u32, u32)]) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// DeepSeek LLM's letter class (the cased letters of Latin, Greek, Cyrillic, Armenian, Georgian,
/// Cherokee, Glagolitic, Coptic, Deseret, Osage, Old Hungarian, Warang Citi, Adlam, fullwidth).
#[rustfmt::skip]
const DEEPSEEK_LETTERS: &[(u32, u32)] = &[
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA),
    (0x1BC, 0x1BF), (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x377), (0x37B, 0x37D),
    (0x37F, 0x37F), (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5),
    (0x3F7, 0x481), (0x48A, 0x52F), (0x531, 0x556), (0x10A0, 0x10C5), (0x13A0, 0x13F5),
    (0x13F8, 0x13FD), (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77),
    (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45), (0x1F48, 0x1F4D),
    (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D),
    (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC),
    (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D),
    (0x2124, 0x2124), (0x2126, 0x2126), (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134),
    (0x2139, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2184),
    (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF3), (0xA640, 0xA66D),
    (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF),
    (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0x10400, 0x1044F),
    (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2),
    (0x118A0, 0x118DF), (0x1E900, 0x1E943),
];

/// DeepSeek LLM's punctuation class `[!-/:-~！-／：-～‘-‟　-。]`.
#[rustfmt::skip]
const DEEPSEEK_PUNCT: &[(u32, u32)] = &[
    (0x21, 0x2F), (0x3A, 0x7E), (0xFF01, 0xFF0F), (0xFF1A, 0xFF5E), (0x2018, 0x201F),
    (0x3000, 0x3002),
];

/// DeepSeek's CJK class `[一-龥ࠀ-一가-퟿]`.
#[rustfmt::skip]
const DEEPSEEK_CJK: &[(u32, u32)] = &[
    (0x4E00, 0x9FA5), (0x0800, 0x4E00), (0xAC00, 0xD7FF),
];

/// The codepoint `std::wregex` sees: llama.cpp replaces non-ASCII whitespace by U+000B first.
#[inline]
fn wide(t: &Text, pos: usize) -> u32 {
    let c = t.cpts[pos];
    if c > 0x7F && t.flags[pos].is_whitespace() {
        0x0B
    } else {
        c
    }
}

/// Where the regex of `stage` matches when tried at `pos` (ECMAScript semantics), if it does.
fn match_at(t: &Text, stage: Stage, pos: usize, start: usize, end: usize) -> Option<usize> {
    let _ = start;
    let f = |p: usize| t.flags_in(p, end);
    let run = |mut p: usize, pred: &dyn Fn(usize) -> bool| {
        while p < end && pred(p) {
            p += 1;
        }
        p
    };
    // `\s?X+`: an optional whitespace is taken only if an X follows it (backtracking otherwise).
    let opt_space_then_run = |pred: &dyn Fn(usize) -> bool| -> Option<usize> {
        if f(pos).is_whitespace() && pos + 1 < end && pred(pos + 1) {
            Some(run(pos + 1, pred))
        } else if pred(pos) {
            Some(run(pos, pred))
        } else {
            None
        }
    };
    match stage {
        Stage::SingleNumber => f(pos).is_number().then_some(pos + 1),
        Stage::NumberRun => f(pos).is_number().then(|| run(pos, &|p| f(p).is_number())),
        Stage::AsciiDigits3 => {
            let digit = |p: usize| p < end && (t.cpts[p] as u8).is_ascii_digit() && t.cpts[p] < 128;
            (digit(pos) && digit(pos + 1) && digit(pos + 2)).then_some(pos + 3)
        }
        Stage::PunctRun | Stage::FalconPunctRun => {
            let extra: &[u32] = if matches!(stage, Stage::PunctRun) {
                &[0x24, 0x2B, 0x3C, 0x3D, 0x3E, 0x5E, 0x7E, 0x7C]
            } else {
                &[0x24, 0x2B, 0x3C, 0x3D, 0x3E, 0x5E, 0x7E, 0x7C, 0x60]
            };
            let pred = |p: usize| f(p).is_punctuation() || extra.contains(&t.cpts[p]);
            pred(pos).then(|| run(pos, &pred))
        }
        Stage::Newline => matches!(t.cpts[pos], 0x0A | 0x0D).then_some(pos + 1),
        Stage::DeepseekLetters => {
            opt_space_then_run(&|p: usize| in_ranges(wide(t, p), DEEPSEEK_LETTERS))
        }
        Stage::DeepseekPunct => {
            opt_space_then_run(&|p: usize| in_ranges(wide(t, p), DEEPSEEK_PUNCT))
        }
        Stage::CjkRun => {
            let pred = |p: usize| in_ranges(wide(t, p), DEEPSEEK_CJK);
            pred(pos).then(|| run(pos, &pred))
        }
        Stage::TrailingSpace => {
            (f(pos).is_whitespace() && run(pos, &|p| f(p).is_whitespace()) == end).then_some(end)
        }
        Stage::SpaceLetters => opt_space_then_run(&|p: usize| f(p).is_letter()),
        Stage::SpacePunct => opt_space_then_run(&|p: usize| f(p).is_punctuation()),
        Stage::Qwen2 => match_qwen2(t, pos, end),
        Stage::Gpt2 | Stage::Llama3 => None, // custom splitters, never reached
    }
}

/// The Qwen 2 regex at `pos`:
/// `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|`
/// ` ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` — alternatives tried in order.
fn match_qwen2(t: &Text, pos: usize, end: usize) -> Option<usize> {
    let f = |p: usize| t.flags_in(p, end);
    let c = t.cpts[pos];
    if let Some(e) = match_contraction(t, pos, end, true) {
        return Some(e);
    }
    let letter = |p: usize| f(p).is_letter();
    let letters_from = |mut p: usize| {
        while letter(p) {
            p += 1;
        }
        p
    };
    let is_crlf = |c: u32| c == 0x0D || c == 0x0A;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if !is_crlf(c) && !f(pos).is_letter() && !f(pos).is_number() && letter(pos + 1) {
        return Some(letters_from(pos + 1));
    }
    if letter(pos) {
        return Some(letters_from(pos));
    }
    // \p{N}
    if f(pos).is_number() {
        return Some(pos + 1);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let other = |p: usize| {
        let fl = f(p);
        p < end && !fl.is_whitespace() && !fl.is_letter() && !fl.is_number()
    };
    let first = if c == 0x20 && other(pos + 1) {
        Some(pos + 1)
    } else if other(pos) {
        Some(pos)
    } else {
        None
    };
    if let Some(mut p) = first {
        while other(p) {
            p += 1;
        }
        while p < end && is_crlf(t.cpts[p]) {
            p += 1;
        }
        return Some(p);
    }
    // Whitespace alternatives.
    whitespace_tail(t, pos, end)
}

/// `\s*[\r\n]+|\s+(?!\S)|\s+` at `pos` (shared by the Llama 3 and Qwen 2 rules).
fn whitespace_tail(t: &Text, pos: usize, end: usize) -> Option<usize> {
    let mut p = pos;
    let mut last_crlf_end = None;
    while p < end && t.flags[p].is_whitespace() {
        if t.cpts[p] == 0x0D || t.cpts[p] == 0x0A {
            last_crlf_end = Some(p + 1);
        }
        p += 1;
    }
    let n = p - pos;
    if n == 0 {
        return None;
    }
    if let Some(e) = last_crlf_end {
        return Some(e);
    }
    if n > 1 && p < end {
        return Some(p - 1);
    }
    Some(p)
}

/// `'s|'t|'re|'ve|'m|'ll|'d` at `pos`, optionally case-insensitive on the letters.
fn match_contraction(t: &Text, pos: usize, end: usize, ignore_case: bool) -> Option<usize> {
    if t.cpts[pos] != u32::from(b'\'') || pos + 1 >= end {
        return None;
    }
    let lower = |c: u32| {
        if ignore_case && (0x41..=0x5A).contains(&c) {
            c + 0x20
        } else {
            c
        }
    };
    let n1 = lower(t.cpts[pos + 1]);
    if [b's', b't', b'm', b'd'].iter().any(|&b| n1 == u32::from(b)) {
        return Some(pos + 2);
    }
    if pos + 2 < end {
        let n2 = lower(t.cpts[pos + 2]);
        let pair = |a: u8, b: u8| n1 == u32::from(a) && n2 == u32::from(b);
        if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
            return Some(pos + 3);
        }
    }
    None
}

/// llama.cpp's `unicode_regex_split_custom_gpt2` on the segment `[start, end)`.
fn split_gpt2(t: &Text, start: usize, end: usize, out: &mut Vec<usize>) {
    let mut prev_end = start;
    let mut add = |e: usize, out: &mut Vec<usize>| -> usize {
        let len = e - prev_end;
        if len > 0 {
            out.push(len);
        }
        prev_end = e;
        len
    };
    let mut pos = start;
    while pos < end {
        let cpt = t.cpts[pos];
        let flags = t.flags[pos];
        if let Some(e) = match_contraction(t, pos, end, false) {
            pos += add(e, out);
            continue;
        }
        let is_space = cpt == 0x20;
        let mut flags2 = if is_space {
            t.flags_in(pos + 1, end)
        } else {
            flags
        };
        // <space>?\p{L}+
        if flags2.is_letter() {
            pos += usize::from(is_space);
            while flags2.is_letter() {
                pos += 1;
                flags2 = t.flags_in(pos, end);
            }
            add(pos, out);
            continue;
        }
        // <space>?\p{N}+
        if flags2.is_number() {
            pos += usize::from(is_space);
            while flags2.is_number() {
                pos += 1;
                flags2 = t.flags_in(pos, end);
            }
            add(pos, out);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+
        let other =
            |fl: CpFlags| !(fl.is_whitespace() || fl.is_letter() || fl.is_number() || fl.is_none());
        if other(flags2) {
            pos += usize::from(is_space);
            while other(flags2) {
                pos += 1;
                flags2 = t.flags_in(pos, end);
            }
            add(pos, out);
            continue;
        }
        let mut n_ws = 0;
        while t.flags_in(pos + n_ws, end).is_whitespace() {
            n_ws += 1;
        }
        // \s+(?!\S)
        if n_ws > 1 && t.cpt_in(pos + n_ws, end) != u32::MAX {
            pos += n_ws - 1;
            add(pos, out);
            continue;
        }
        // \s+
        if n_ws > 0 {
            pos += n_ws;
            add(pos, out);
            continue;
        }
        // no match: one codepoint on its own
        pos += 1;
        add(pos, out);
    }
}

/// llama.cpp's `unicode_regex_split_custom_llama3` on the segment `[start, end)`.
fn split_llama3(t: &Text, start: usize, end: usize, out: &mut Vec<usize>) {
    let mut prev_end = start;
    let mut add = |e: usize, out: &mut Vec<usize>| -> usize {
        let len = e - prev_end;
        if len > 0 {
            out.push(len);
        }
        prev_end = e;
        len
    };
    let mut pos = start;
    while pos < end {
        let cpt = t.cpts[pos];
        let flags = t.flags[pos];
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if let Some(e) = match_contraction(t, pos, end, true) {
            pos += add(e, out);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(cpt == 0x0D || cpt == 0x0A || flags.is_number())
            && (flags.is_letter() || t.flags_in(pos + 1, end).is_letter())
        {
            pos += 1;
            while t.flags_in(pos, end).is_letter() {
                pos += 1;
            }
            add(pos, out);
            continue;
        }
        // \p{N}{1,3}
        if flags.is_number() {
            let mut ini = pos;
            while t.flags_in(pos, end).is_number() {
                pos += 1;
                if pos - ini >= 3 {
                    add(pos, out);
                    ini = pos;
                }
            }
            add(pos, out);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*   (llama.cpp tests the *first* codepoint's flags for
        // the "is anything" condition, so a lone trailing space enters this branch)
        let mut flags2 = if cpt == 0x20 {
            t.flags_in(pos + 1, end)
        } else {
            flags
        };
        let other = |fl: CpFlags| !(fl.is_whitespace() || fl.is_letter() || fl.is_number());
        if other(flags2) && !flags.is_none() {
            pos += usize::from(cpt == 0x20);
            while other(flags2) && !flags2.is_none() {
                pos += 1;
                flags2 = t.flags_in(pos, end);
            }
            let mut cpt2 = t.cpt_in(pos, end);
            while cpt2 == 0x0D || cpt2 == 0x0A {
                pos += 1;
                cpt2 = t.cpt_in(pos, end);
            }
            add(pos, out);
            continue;
        }
        match whitespace_tail(t, pos, end) {
            Some(e) => {
                pos = e;
                add(pos, out);
            }
            None => {
                pos += 1;
                add(pos, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        pre.split(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn gpt2_rule() {
        let w = words(PreTokenizer::Gpt2, "Hello world's  end 123 !!x\n\n");
        assert_eq!(
            w,
            ["Hello", " world", "'s", " ", " end", " 123", " !!", "x", "\n\n"]
        );
        assert_eq!(words(PreTokenizer::Gpt2, "a  b"), ["a", " ", " b"]);
        assert_eq!(words(PreTokenizer::Gpt2, "DON'T"), ["DON", "'", "T"]);
    }

    #[test]
    fn starcoder_isolates_digits() {
        let w = words(PreTokenizer::Starcoder, "x=123 and 4.5");
        assert_eq!(w, ["x", "=", "1", "2", "3", " and", " ", "4", ".", "5"]);
    }

    #[test]
    fn llama3_rule() {
        let w = words(PreTokenizer::Llama3, "Hello, world! 12345 DON'T\n\n  x  ");
        assert_eq!(
            w,
            [
                "Hello", ",", " world", "!", " ", "123", "45", " DON", "'T", "\n\n", " ", " x",
                "  "
            ]
        );
    }

    #[test]
    fn qwen2_rule() {
        let w = words(PreTokenizer::Qwen2, "Hi 2024!\r\n  end");
        assert_eq!(w, ["Hi", " ", "2", "0", "2", "4", "!\r\n", " ", " end"]);
    }

    #[test]
    fn default_rule() {
        let w = words(PreTokenizer::Default, "a+b=1234, ok");
        assert_eq!(w, ["a", "+", "b", "=", "123", "4", ",", " ok"]);
    }

    #[test]
    fn deepseek_rules() {
        let w = words(PreTokenizer::DeepseekCoder, "def f(x):\n  return 42");
        assert_eq!(
            w,
            ["def", " f", "(", "x", "):", "\n", " ", " return", " ", "4", "2"]
        );
        let w = words(PreTokenizer::DeepseekLlm, "Hi 你好, 42  ");
        assert_eq!(w, ["Hi", " ", "你好", ",", " ", "42", "  "]);
    }

    #[test]
    fn pieces_cover_the_text() {
        let text = "Ünïcödé 😀👍🏽 \t\n mixed中文and 3.14 «x»";
        for pre in [
            PreTokenizer::Default,
            PreTokenizer::Gpt2,
            PreTokenizer::Llama3,
            PreTokenizer::Qwen2,
            PreTokenizer::Starcoder,
            PreTokenizer::DeepseekLlm,
            PreTokenizer::DeepseekCoder,
            PreTokenizer::Falcon,
        ] {
            let ranges = pre.split(text);
            let mut at = 0;
            for r in &ranges {
                assert_eq!(r.start, at, "{pre:?}");
                assert!(r.end > r.start);
                at = r.end;
            }
            assert_eq!(at, text.len(), "{pre:?}");
        }
    }

    #[test]
    fn unknown_pre_falls_back_with_warning() {
        let (cfg, warning) = PreConfig::from_name(Some("no-such-thing"));
        assert_eq!(cfg.pre, PreTokenizer::Gpt2);
        assert!(warning.unwrap().contains("no-such-thing"));
        let (cfg, warning) = PreConfig::from_name(Some("smollm"));
        assert_eq!(cfg.pre, PreTokenizer::Starcoder);
        assert!(!cfg.clean_spaces && warning.is_none());
    }
}

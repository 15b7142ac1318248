//! SentencePiece BPE (llama.cpp's `llm_tokenizer_spm_session`).
//!
//! The text (spaces already replaced by `▁`) starts as one symbol per UTF-8 character. Every
//! adjacent pair whose concatenation is a token is a candidate; the candidate with the highest
//! score is merged first (ties: leftmost), new candidates are formed with the neighbours, and so
//! on. A final symbol that is not a token is emitted as byte-fallback tokens `<0xNN>`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::unicode::utf8_len;
use crate::vocab::{TokenId, Vocab};

#[derive(Clone, Copy, Debug)]
struct Symbol {
    /// Byte offset in the text.
    start: usize,
    /// Length in bytes; 0 once merged into its left neighbour.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text when queued.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // Highest score first, then leftmost (llama.cpp's comparator; scores are never NaN
        // in practice, and total_cmp keeps the order total if one is).
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Appends the SentencePiece tokens of `text` to `out`; `byte_tokens[b]` is the token of byte `b`.
pub fn tokenize(
    vocab: &Vocab,
    byte_tokens: &[Option<TokenId>; 256],
    text: &str,
    out: &mut Vec<TokenId>,
) {
    let bytes = text.as_bytes();
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    let mut offs = 0;
    while offs < bytes.len() {
        let len = utf8_len(bytes[offs]).min(bytes.len() - offs);
        let i = symbols.len();
        symbols.push(Symbol {
            start: offs,
            len,
            prev: i.checked_sub(1),
            next: (offs + len < bytes.len()).then_some(i + 1),
        });
        offs += len;
    }
    let mut heap = BinaryHeap::new();
    let try_add = |symbols: &[Symbol], heap: &mut BinaryHeap<Bigram>, left: usize, right: usize| {
        let (l, r) = (symbols[left], symbols[right]);
        let piece = &text[l.start..l.start + l.len + r.len];
        if let Some(id) = vocab.id(piece) {
            heap.push(Bigram {
                score: vocab.scores[id as usize],
                left,
                right,
                size: piece.len(),
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut heap, i - 1, i);
    }
    while let Some(b) = heap.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        symbols[b.left].len += r.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = r.next;
        if let Some(n) = r.next {
            symbols[n].prev = Some(b.left);
        }
        if let Some(p) = l.prev {
            try_add(&symbols, &mut heap, p, b.left);
        }
        if let Some(n) = r.next {
            try_add(&symbols, &mut heap, b.left, n);
        }
    }
    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(k) = i {
        let s = symbols[k];
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for &b in piece.as_bytes() {
                    // llama.cpp throws when a byte has no token; we fall back to <unk>.
                    if let Some(id) = byte_tokens[b as usize].or(vocab.unk) {
                        out.push(id);
                    }
                }
            }
        }
        i = s.next;
    }
}

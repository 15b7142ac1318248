//! Byte-level BPE merging of one pre-tokenized word (llama.cpp's `llm_tokenizer_bpe_session`).
//!
//! The word arrives GPT-2 byte-encoded (every byte replaced by a printable stand-in character).
//! It starts as one symbol per character; the adjacent pair with the lowest merge rank is merged
//! (ties: leftmost first) until no pair has a rank. Each final symbol is a token; one that is not
//! in the vocabulary falls back to the tokens of its single ASCII bytes, as llama.cpp does.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::vocab::{TokenId, Vocab};

/// One symbol of the word being merged: a byte range of the word and its token id, if any.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    /// Byte offset in the word.
    start: usize,
    /// Length in bytes; 0 once merged into its left neighbour.
    len: usize,
    /// Token id of the symbol's text, if it is a token.
    id: Option<TokenId>,
    /// Index of the previous live symbol.
    prev: Option<usize>,
    /// Index of the next live symbol.
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and `right`, valid while both keep the lengths recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    left_len: usize,
    right_len: usize,
    merged: Option<TokenId>,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: lowest rank first, then leftmost.
        other.rank.cmp(&self.rank).then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reusable buffers for [`merge_word`], so a long text does not allocate per word.
#[derive(Default)]
pub struct BpeScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
}

/// Appends the tokens of one byte-encoded `word` to `out`.
pub fn merge_word(vocab: &Vocab, word: &str, scratch: &mut BpeScratch, out: &mut Vec<TokenId>) {
    if vocab.pre.ignore_merges {
        if let Some(id) = vocab.id(word) {
            out.push(id);
            return;
        }
    }
    let symbols = &mut scratch.symbols;
    let heap = &mut scratch.heap;
    symbols.clear();
    heap.clear();
    for (i, (start, c)) in word.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            id: vocab.id(&word[start..start + len]),
            prev: i.checked_sub(1),
            next: None,
        });
        if i > 0 {
            symbols[i - 1].next = Some(i);
        }
    }
    for i in 1..symbols.len() {
        push_bigram(vocab, word, symbols, heap, i - 1, i);
    }
    while let Some(b) = heap.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        if l.len == 0 || r.len == 0 || l.len != b.left_len || r.len != b.right_len {
            continue; // outdated: one side was merged since
        }
        symbols[b.left].len += r.len;
        symbols[b.left].id = b.merged;
        symbols[b.left].next = r.next;
        symbols[b.right].len = 0;
        if let Some(n) = r.next {
            symbols[n].prev = Some(b.left);
        }
        if let Some(p) = l.prev {
            push_bigram(vocab, word, symbols, heap, p, b.left);
        }
        if let Some(n) = r.next {
            push_bigram(vocab, word, symbols, heap, b.left, n);
        }
    }
    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(k) = i {
        let s = symbols[k];
        match s.id {
            Some(id) => out.push(id),
            None => {
                // Not a token: try each byte of the (encoded) text as a one-byte token.
                for &b in &word.as_bytes()[s.start..s.start + s.len] {
                    if b < 0x80 {
                        let one = [b];
                        // One ASCII byte is valid UTF-8.
                        if let Some(id) = std::str::from_utf8(&one).ok().and_then(|t| vocab.id(t)) {
                            out.push(id);
                        }
                    }
                }
            }
        }
        i = s.next;
    }
}

/// Queues the merge of symbols `left` and `right` if the vocabulary ranks it.
fn push_bigram(
    vocab: &Vocab,
    word: &str,
    symbols: &[Symbol],
    heap: &mut BinaryHeap<Bigram>,
    left: usize,
    right: usize,
) {
    let (l, r) = (symbols[left], symbols[right]);
    let found = match (l.id, r.id) {
        (Some(a), Some(b)) => vocab.merges_by_id.get(&(a, b)).copied(),
        _ if vocab.merges_by_text.is_empty() => None,
        _ => {
            let lt = &word[l.start..l.start + l.len];
            let rt = &word[r.start..r.start + r.len];
            vocab
                .merges_by_text
                .get(&(lt.to_string(), rt.to_string()))
                .map(|&rank| (rank, vocab.id(&word[l.start..r.start + r.len])))
        }
    };
    if let Some((rank, merged)) = found {
        heap.push(Bigram {
            rank,
            left,
            right,
            left_len: l.len,
            right_len: r.len,
            merged,
        });
    }
}

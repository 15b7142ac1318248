//! Special-token partitioning (llama.cpp's `tokenizer_st_partition`): before any BPE, the text
//! is cut around whole-string occurrences of control, user-defined and unknown tokens.
//!
//! Tokens are tried longest first; each one is searched in every still-unclaimed text fragment,
//! left to right. With `parse_special = false` control and unknown tokens are skipped, but
//! user-defined tokens are still matched (Hugging Face tokenizers do the same).

use std::ops::Range;

use crate::vocab::{TokenAttr, TokenId, Vocab};

/// A piece of the input: raw text still to be tokenized, or a special token already matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// A byte range of the input text.
    Text(Range<usize>),
    /// A special token.
    Token(TokenId),
}

/// A byte trie over the special tokens' texts, used to find which of them occur in a text at
/// all (a vocabulary like Gemma's has thousands; searching each one would be slow).
#[derive(Clone, Debug, Default)]
pub struct SpecialTrie {
    /// Nodes; node 0 is the root.
    nodes: Vec<TrieNode>,
}

/// One trie node: outgoing edges sorted by byte, and the token whose text ends here, if any.
#[derive(Clone, Debug, Default)]
struct TrieNode {
    edges: Vec<(u8, u32)>,
    token: Option<TokenId>,
}

impl SpecialTrie {
    /// Builds the trie of all of `vocab.special_tokens`.
    pub fn new(vocab: &Vocab) -> SpecialTrie {
        let mut trie = SpecialTrie {
            nodes: vec![TrieNode::default()],
        };
        for &id in &vocab.special_tokens {
            let mut node = 0usize;
            for &b in vocab.tokens[id as usize].as_bytes() {
                node = match trie.nodes[node].edges.binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => trie.nodes[node].edges[i].1 as usize,
                    Err(i) => {
                        let child = trie.nodes.len();
                        trie.nodes.push(TrieNode::default());
                        trie.nodes[node].edges.insert(i, (b, child as u32));
                        child
                    }
                };
            }
            trie.nodes[node].token = Some(id);
        }
        trie
    }

    /// Marks in `present[id]` every special token that occurs somewhere in `text`.
    fn mark_present(&self, text: &[u8], present: &mut [bool]) -> bool {
        let mut any = false;
        for start in 0..text.len() {
            let mut node = 0usize;
            for &b in &text[start..] {
                match self.nodes[node].edges.binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => node = self.nodes[node].edges[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(id) = self.nodes[node].token {
                    present[id as usize] = true;
                    any = true;
                }
            }
        }
        any
    }
}

/// llama.cpp's `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Cuts `text` into raw-text fragments and special tokens.
pub fn partition(
    vocab: &Vocab,
    trie: &SpecialTrie,
    text: &str,
    parse_special: bool,
) -> Vec<Fragment> {
    if text.is_empty() {
        return Vec::new();
    }
    let bytes = text.as_bytes();
    let mut frags = vec![Fragment::Text(0..text.len())];
    let mut present = vec![false; vocab.len()];
    if !trie.mark_present(bytes, &mut present) {
        return frags;
    }
    for &id in &vocab.special_tokens {
        if !present[id as usize] {
            continue;
        }
        let attr = vocab.attrs[id as usize];
        if !parse_special && attr.has(TokenAttr::CONTROL | TokenAttr::UNKNOWN) {
            continue;
        }
        let needle = vocab.tokens[id as usize].as_str();
        let mut next = Vec::with_capacity(frags.len() + 2);
        for frag in frags {
            let Fragment::Text(range) = frag else {
                next.push(frag);
                continue;
            };
            let (mut base, end) = (range.start, range.end);
            loop {
                let Some(found) = text[base..end].find(needle) else {
                    next.push(Fragment::Text(base..end));
                    break;
                };
                let m = base + found;
                if m > base {
                    let mut left_end = m;
                    if attr.has(TokenAttr::LSTRIP) {
                        while left_end > base && is_c_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > base {
                        next.push(Fragment::Text(base..left_end));
                    }
                }
                next.push(Fragment::Token(id));
                let mut right = m + needle.len();
                if right >= end {
                    break;
                }
                if attr.has(TokenAttr::RSTRIP) {
                    while right < end && is_c_space(bytes[right]) {
                        right += 1;
                    }
                }
                if right >= end {
                    break;
                }
                base = right;
            }
        }
        frags = next;
    }
    frags
}

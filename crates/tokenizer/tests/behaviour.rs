//! Round trips, streaming, special tokens, errors and speed on the fixture vocabularies.

use std::path::{Path, PathBuf};
use std::time::Instant;

use grist_gguf::GgufFile;
use grist_tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(model: &str) -> Tokenizer {
    let path = workspace().join("tests/fixtures/models").join(model);
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap()
}

fn bpe() -> Tokenizer {
    fixture("tiny-llama-q4_0.gguf")
}

fn spm() -> Tokenizer {
    fixture("tiny-gemma3-q4_k_m.gguf")
}

const TEXTS: &[&str] = &[
    "Hello, world!",
    "  leading and trailing  ",
    "naïve café 你好 😀👍🏽 👨\u{200d}👩\u{200d}👧",
    "line\r\nbreaks\n\n\ttabs",
    "'quoted' «guillemets» „German“ ∑ ≤ ∞",
    "",
];

#[test]
fn bpe_decode_round_trips() {
    let tok = bpe();
    for text in TEXTS {
        let ids = tok.encode(text, false, false);
        assert_eq!(
            tok.decode(&ids, false, false).unwrap(),
            text.as_bytes(),
            "{text:?}"
        );
    }
}

#[test]
fn spm_round_trips_where_the_vocab_allows() {
    let tok = spm();
    // Texts without spaces round-trip exactly even with this tiny vocabulary (spaces before a
    // piece with no '▁x' token become the bytes of '▁': llama.cpp's behaviour, see goldens).
    for text in ["naïve", "你好😀", "a\nb\tc", "<html>"] {
        let ids = tok.encode(text, false, false);
        assert_eq!(
            tok.decode(&ids, false, false).unwrap(),
            text.as_bytes(),
            "{text:?}"
        );
    }
    // With BOS added and remove_special, detokenization drops it again.
    let ids = tok.encode("naïve", true, false);
    assert_eq!(ids[0], tok.vocab().bos.unwrap());
    assert_eq!(tok.decode(&ids, true, false).unwrap(), b"na\xc3\xafve");
}

#[test]
fn streaming_decoder_never_splits_a_character() {
    for tok in [bpe(), spm()] {
        // Multi-byte characters the tiny vocabularies can only spell with byte tokens.
        let text = "é中😀👍🏽ß";
        let ids = tok.encode(text, false, false);
        assert!(ids.len() > text.chars().count(), "expect byte-level pieces");
        let mut dec = StreamDecoder::new(false);
        let mut out = String::new();
        for &id in &ids {
            let chunk = dec.push(&tok, id).unwrap();
            assert!(!chunk.contains('\u{FFFD}'), "garbage emitted: {chunk:?}");
            out.push_str(&chunk);
        }
        out.push_str(&dec.flush());
        assert_eq!(out, text);
    }
}

#[test]
fn streaming_decoder_handles_split_and_invalid_bytes() {
    let mut dec = StreamDecoder::new(false);
    let euro = "€".as_bytes(); // E2 82 AC
    assert_eq!(dec.push_bytes(&euro[..1]), "");
    assert_eq!(dec.push_bytes(&euro[1..2]), "");
    assert_eq!(dec.push_bytes(&[euro[2], b'x']), "€x");
    // An invalid byte is replaced at once instead of blocking the stream.
    assert_eq!(dec.push_bytes(&[0xFF, b'y']), "\u{FFFD}y");
    // An unfinished character at the end is flushed as a replacement character.
    assert_eq!(dec.push_bytes(&euro[..2]), "");
    assert_eq!(dec.flush(), "\u{FFFD}");
}

#[test]
fn control_tokens_are_parsed_only_when_asked() {
    let tok = bpe();
    let text = "<|im_start|>user\nHi<|im_end|>";
    let parsed = tok.encode(text, false, true);
    assert_eq!(parsed[0], 1, "<|im_start|> is id 1");
    assert_eq!(*parsed.last().unwrap(), 2, "<|im_end|> is id 2");
    let literal = tok.encode(text, false, false);
    assert!(!literal.contains(&1) && !literal.contains(&2));
    // Control tokens render only with special = true.
    assert_eq!(tok.token_to_piece(2, true).unwrap(), b"<|im_end|>");
    assert_eq!(tok.token_to_piece(2, false).unwrap(), b"");
    assert_eq!(tok.decode(&parsed, false, true).unwrap(), text.as_bytes());
    assert!(tok.is_eog(2) && tok.is_eog(0) && !tok.is_eog(1));
}

#[test]
fn spm_user_defined_tokens_are_always_matched() {
    let tok = spm();
    // "<start_of_turn>" is a control token (id 105); html tags are user-defined pieces.
    let ids = tok.encode("<start_of_turn>user", true, true);
    assert_eq!(&ids[..2], &[2, 105]);
    let ids = tok.encode("<start_of_turn>user", false, false);
    assert!(!ids.contains(&105));
    let vocab = tok.vocab();
    let user_defined = (0..vocab.len() as u32)
        .find(|&id| vocab.tokens[id as usize] == "<html>")
        .expect("<html> is in the tiny gemma vocab");
    assert!(tok.encode("x<html>y", false, false).contains(&user_defined));
}

#[test]
fn bad_ids_are_errors_not_panics() {
    let tok = bpe();
    let n = tok.n_vocab() as u32;
    assert_eq!(
        tok.decode(&[5, n], false, false),
        Err(TokenizerError::InvalidId {
            id: n,
            n_vocab: n as usize
        })
    );
    assert!(tok.token_to_piece(u32::MAX, true).is_err());
}

/// Speed check (not a benchmark: tests never assert on timing). Run with
/// `cargo test --release -p grist-tokenizer --test behaviour -- --ignored --nocapture`.
#[test]
#[ignore]
fn tokenize_one_megabyte_of_english() {
    let gpl = std::fs::read_to_string(workspace().join("tests/golden/texts/GPL-3.txt")).unwrap();
    let mut text = String::new();
    while text.len() < 1 << 20 {
        text.push_str(&gpl);
    }
    let mut models: Vec<(String, Tokenizer)> = vec![
        ("tiny BPE (smollm, 1024)".into(), bpe()),
        ("tiny SPM (gemma, 1024)".into(), spm()),
    ];
    let dir = workspace().join("models");
    for name in [
        "SmolLM2-135M-Instruct.Q4_1",
        "qwen2.5-coder-0.5b-instruct",
        "gemma-3-270m-q4_k_m",
    ] {
        let path = dir.join(format!("{name}.gguf"));
        if path.exists() {
            models.push((
                name.into(),
                Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap(),
            ));
        } else {
            eprintln!("SKIPPED: model {} not found", path.display());
        }
    }
    for (name, tok) in &models {
        let t = Instant::now();
        let ids = tok.encode(&text, false, false);
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {:.2} MB -> {} tokens in {:.3} s = {:.1} MB/s",
            text.len() as f64 / 1e6,
            ids.len(),
            secs,
            text.len() as f64 / 1e6 / secs
        );
    }
}

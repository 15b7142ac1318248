//! Byte-exact comparison with llama.cpp's tokenizer goldens.
//!
//! Each golden line is `{"text", "ids", "ids_special_bos", "decoded"}`: `ids` is
//! `llama_tokenize(text, add_special = false, parse_special = false)`, `ids_special_bos` is
//! `(add_special = true, parse_special = true)`, `decoded` is llama.cpp's detokenization of `ids`.

use std::path::{Path, PathBuf};

use grist_gguf::GgufFile;
use grist_tokenizer::Tokenizer;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One golden case.
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_special_bos: Vec<u32>,
    decoded: String,
}

/// A minimal JSON reader for the golden lines (objects of strings and integer arrays).
struct Json<'a> {
    s: &'a [u8],
    i: usize,
}

impl Json<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s[self.i], c,
            "JSON: expected '{}' at {}",
            c as char, self.i
        );
        self.i += 1;
    }
    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out: Vec<u16> = Vec::new();
        let mut bytes = Vec::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    let ch = match e {
                        b'n' => '\n' as u16,
                        b't' => '\t' as u16,
                        b'r' => '\r' as u16,
                        b'b' => 8,
                        b'f' => 12,
                        b'/' => '/' as u16,
                        b'\\' => '\\' as u16,
                        b'"' => '"' as u16,
                        b'u' => {
                            let h = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            u16::from_str_radix(h, 16).unwrap()
                        }
                        _ => panic!("bad escape"),
                    };
                    if !bytes.is_empty() {
                        out.extend(
                            String::from_utf8(std::mem::take(&mut bytes))
                                .unwrap()
                                .encode_utf16(),
                        );
                    }
                    out.push(ch);
                }
                _ => bytes.push(c),
            }
        }
        out.extend(String::from_utf8(bytes).unwrap().encode_utf16());
        String::from_utf16(&out).unwrap()
    }
    fn ints(&mut self) -> Vec<u32> {
        self.eat(b'[');
        let mut v = Vec::new();
        loop {
            self.ws();
            if self.s[self.i] == b']' {
                self.i += 1;
                return v;
            }
            if self.s[self.i] == b',' {
                self.i += 1;
                continue;
            }
            let start = self.i;
            while self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            v.push(
                std::str::from_utf8(&self.s[start..self.i])
                    .unwrap()
                    .parse()
                    .unwrap(),
            );
        }
    }
}

fn load_cases(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut j = Json {
                s: line.as_bytes(),
                i: 0,
            };
            let mut case = Case {
                text: String::new(),
                ids: vec![],
                ids_special_bos: vec![],
                decoded: String::new(),
            };
            j.eat(b'{');
            loop {
                let key = j.string();
                j.eat(b':');
                match key.as_str() {
                    "text" => case.text = j.string(),
                    "decoded" => case.decoded = j.string(),
                    "ids" => case.ids = j.ints(),
                    "ids_special_bos" => case.ids_special_bos = j.ints(),
                    other => panic!("unexpected key {other}"),
                }
                j.ws();
                if j.s[j.i] == b',' {
                    j.i += 1;
                    continue;
                }
                j.eat(b'}');
                break;
            }
            case
        })
        .collect()
}

/// Runs every case; returns the number of mismatches (each one printed).
fn check(tok: &Tokenizer, cases: &[Case], label: &str) -> usize {
    let mut failures = 0;
    for (i, c) in cases.iter().enumerate() {
        let ids = tok.encode(&c.text, false, false);
        if ids != c.ids {
            failures += 1;
            eprintln!(
                "[{label} #{i}] ids mismatch for {:?}\n  want {:?}\n  got  {:?}",
                c.text, c.ids, ids
            );
        }
        let ids_sb = tok.encode(&c.text, true, true);
        if ids_sb != c.ids_special_bos {
            failures += 1;
            eprintln!(
                "[{label} #{i}] ids_special_bos mismatch for {:?}\n  want {:?}\n  got  {:?}",
                c.text, c.ids_special_bos, ids_sb
            );
        }
        let decoded = tok.decode(&c.ids, false, false).unwrap();
        if decoded != c.decoded.as_bytes() {
            failures += 1;
            eprintln!(
                "[{label} #{i}] decoded mismatch for {:?}\n  want {:?}\n  got  {:?}",
                c.text,
                c.decoded,
                String::from_utf8_lossy(&decoded)
            );
        }
    }
    eprintln!("{label}: {} cases, {failures} mismatches", cases.len());
    failures
}

fn fixture_tokenizer(model: &str) -> Tokenizer {
    let path = workspace().join("tests/fixtures/models").join(model);
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&file).unwrap()
}

#[test]
fn bpe_fixture_vocab_matches_llama_cpp() {
    let tok = fixture_tokenizer("tiny-llama-q4_0.gguf");
    let cases = load_cases(&workspace().join("tests/fixtures/tok/bpe-smollm-1024.shared.jsonl"));
    assert_eq!(cases.len(), 53);
    assert_eq!(check(&tok, &cases, "bpe-smollm-1024"), 0);
    assert_eq!(tok.vocab().eog, vec![0, 2, 4], "llama.cpp's EOG set");
}

#[test]
fn spm_fixture_vocab_matches_llama_cpp() {
    let tok = fixture_tokenizer("tiny-gemma3-q4_k_m.gguf");
    let cases = load_cases(&workspace().join("tests/fixtures/tok/spm-gemma-1024.shared.jsonl"));
    assert_eq!(cases.len(), 53);
    assert_eq!(check(&tok, &cases, "spm-gemma-1024"), 0);
    assert_eq!(tok.vocab().eog, vec![1, 106, 212], "llama.cpp's EOG set");
}

#[test]
fn every_bpe_fixture_has_the_same_vocab() {
    let reference = fixture_tokenizer("tiny-llama-q4_0.gguf");
    for model in [
        "tiny-qwen2-q4_k_m.gguf",
        "tiny-qwen3-q4_k_m.gguf",
        "tiny-llama-q8_0.gguf",
    ] {
        let tok = fixture_tokenizer(model);
        let text = "Hello, world! <|im_start|>user 12345";
        assert_eq!(
            tok.encode(text, true, true),
            reference.encode(text, true, true),
            "{model}"
        );
    }
}

/// The real vocabularies: run when the model file is present, skip loudly otherwise.
fn real_model(name: &str) {
    let dir = std::env::var_os("GRIST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models"));
    let path = dir.join(format!("{name}.gguf"));
    if !path.exists() {
        eprintln!(
            "SKIPPED: model {} not found (run tools/fetch-models, or set GRIST_MODELS)",
            path.display()
        );
        return;
    }
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let cases = load_cases(&workspace().join(format!("tests/golden/tokenizer/{name}.jsonl")));
    assert_eq!(check(&tok, &cases, name), 0);
    let v = tok.vocab();
    let eog: Vec<(u32, &str)> = v
        .eog
        .iter()
        .map(|&i| (i, v.tokens[i as usize].as_str()))
        .collect();
    eprintln!("{name}: EOG = {eog:?}");
}

#[test]
fn smollm2_real_vocab_matches_llama_cpp() {
    real_model("SmolLM2-135M-Instruct.Q4_1");
}

#[test]
fn qwen25_coder_real_vocab_matches_llama_cpp() {
    real_model("qwen2.5-coder-0.5b-instruct");
}

#[test]
fn gemma3_real_vocab_matches_llama_cpp() {
    real_model("gemma-3-270m-q4_k_m");
}

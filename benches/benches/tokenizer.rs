//! Tokenizer throughput: encoding ~1 MB of English (the GPL-3 text, repeated) with the tiny
//! fixture vocabularies (always present) and the real ones when `models/` has them.
//!
//! `cargo bench -p grist-benches --bench tokenizer`

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grist_gguf::GgufFile;
use grist_tokenizer::Tokenizer;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// About 1 MiB of English prose.
fn english_megabyte() -> String {
    let path = workspace().join("tests/golden/texts/GPL-3.txt");
    let gpl = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::with_capacity((1 << 20) + gpl.len());
    while text.len() < 1 << 20 {
        text.push_str(&gpl);
    }
    text
}

fn tokenizers() -> Vec<(String, Tokenizer)> {
    let mut out = Vec::new();
    let fixtures = workspace().join("tests/fixtures/models");
    let models = std::env::var_os("GRIST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models"));
    let candidates = [
        ("bpe-smollm-1024", fixtures.join("tiny-llama-q4_0.gguf")),
        ("spm-gemma-1024", fixtures.join("tiny-gemma3-q4_k_m.gguf")),
        (
            "smollm2-135m",
            models.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        (
            "qwen2.5-coder-0.5b",
            models.join("qwen2.5-coder-0.5b-instruct.gguf"),
        ),
        ("gemma-3-270m", models.join("gemma-3-270m-q4_k_m.gguf")),
    ];
    for (name, path) in candidates {
        if !path.exists() {
            eprintln!("SKIPPED: model {} not found", path.display());
            continue;
        }
        let file = GgufFile::open(&path).expect("open GGUF");
        out.push((
            name.to_string(),
            Tokenizer::from_gguf(&file).expect("load vocabulary"),
        ));
    }
    out
}

fn bench_encode(c: &mut Criterion) {
    let text = english_megabyte();
    let mut group = c.benchmark_group("tokenizer/encode_1MB_english");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(10);
    for (name, tok) in tokenizers() {
        group.bench_function(name, |b| b.iter(|| tok.encode(&text, false, false)));
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let text = english_megabyte();
    let mut group = c.benchmark_group("tokenizer/decode_1MB_english");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(10);
    for (name, tok) in tokenizers() {
        let ids = tok.encode(&text, false, false);
        group.bench_function(name, |b| b.iter(|| tok.decode(&ids, false, false).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode);
criterion_main!(benches);

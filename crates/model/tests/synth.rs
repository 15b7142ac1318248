//! `grist synth`: every preset, shrunk to 2 layers and a small vocabulary, is written, read
//! back (tensor names, shapes, types, metadata), loaded by the executor and evaluated; files
//! are reproducible; the row pool is a prefix of the all-distinct file; vocabularies copied
//! from another GGUF tokenize like the original.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use grist_gguf::{GgmlType, GgufFile};
use grist_model::synth::{self, Preset, SynthSpec, SynthType, VocabSource, PRESETS};
use grist_model::{Model, Session};
use grist_tokenizer::Tokenizer;

/// A fresh path in cargo's per-test scratch directory.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("synth");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `preset` with 2 layers and a 1024-token vocabulary.
fn small(preset: Preset) -> Preset {
    Preset {
        n_layer: 2,
        n_vocab: 1024,
        ..preset
    }
}

/// Tensors a model of `p` must have: 9 per layer (+2 q/k norms, +2 post norms), embeddings,
/// final norm, and rope_freqs for Llama 3.
fn expected_tensor_count(p: &Preset) -> usize {
    let per_layer = match p.arch {
        "llama" => 9,
        "qwen3" => 11,
        "gemma3" => 13,
        other => panic!("no expectation for {other}"),
    };
    p.n_layer * per_layer
        + 2
        + usize::from(p.llama3_rope.is_some())
        + usize::from(!p.tied_embeddings)
}

#[test]
fn every_preset_writes_loads_and_evaluates() {
    for preset in PRESETS {
        let p = small(*preset);
        let path = scratch(&format!("{}.gguf", p.name));
        let spec = SynthSpec::new(p, SynthType::Q4KM);
        let summary = synth::synthesize(&spec, &path).unwrap();

        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.tensors().len(), expected_tensor_count(&p), "{}", p.name);
        assert_eq!(summary.n_tensors, f.tensors().len());
        assert_eq!(summary.file_bytes, f.file_size());
        let a = p.arch;
        assert_eq!(f.get_str("general.architecture").unwrap(), a);
        assert_eq!(f.get_u32(&format!("{a}.block_count")).unwrap(), 2);
        assert_eq!(
            f.get_u32(&format!("{a}.embedding_length")).unwrap() as usize,
            p.n_embd
        );
        assert_eq!(
            f.get_u32(&format!("{a}.feed_forward_length")).unwrap() as usize,
            p.n_ff
        );
        assert_eq!(
            f.get_u32(&format!("{a}.attention.head_count")).unwrap() as usize,
            p.n_head
        );
        assert_eq!(
            f.get_u32(&format!("{a}.attention.head_count_kv")).unwrap() as usize,
            p.n_head_kv
        );
        assert_eq!(
            f.get_u32(&format!("{a}.attention.key_length")).unwrap() as usize,
            p.head_dim
        );
        assert_eq!(
            f.get_f32(&format!("{a}.rope.freq_base")).unwrap(),
            p.rope_freq_base
        );
        assert_eq!(
            f.get_u32(&format!("{a}.context_length")).unwrap() as usize,
            p.n_ctx_train
        );
        assert_eq!(f.get_u32("general.file_type").unwrap(), 15);

        // Shapes and the Q4_K_M mix: with 2 layers, layer 1 gets the extra bits.
        let embd = f.tensor("token_embd.weight").unwrap();
        assert_eq!(embd.dims(), &[p.n_embd as u64, 1024]);
        let ty = |n: &str| f.tensor(n).unwrap().ty();
        let row_is_superblocks = p.n_embd.is_multiple_of(256);
        let (q4, q6) = if row_is_superblocks {
            (GgmlType::Q4_K, GgmlType::Q6_K)
        } else {
            (GgmlType::Q5_0, GgmlType::Q8_0) // gemma3-1b: 1152-wide rows fall back
        };
        assert_eq!(ty("token_embd.weight"), q6, "{}", p.name);
        assert_eq!(ty("blk.0.attn_v.weight"), q4, "{}", p.name);
        assert_eq!(ty("blk.1.attn_v.weight"), q6, "{}", p.name);
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q4_K, "{}", p.name);
        assert_eq!(ty("blk.1.ffn_down.weight"), GgmlType::Q6_K, "{}", p.name);
        assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
        let q = f.tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!(q.dims(), &[p.n_embd as u64, (p.n_head * p.head_dim) as u64]);
        let down = f.tensor("blk.1.ffn_down.weight").unwrap();
        assert_eq!(down.dims(), &[p.n_ff as u64, p.n_embd as u64]);

        // The executor and the tokenizer accept it, and a few tokens evaluate to finite logits.
        let tok = Tokenizer::from_gguf(&f).unwrap();
        let ids = tok.encode("<|im_start|>user\nHi!<|im_end|>", false, true);
        assert_eq!(ids[0], 257, "{}: specials are parsed", p.name);
        let model = Model::load(&path).unwrap();
        let mut s = Session::new(&model, 64).unwrap();
        let logits = s.eval(&ids, false).unwrap();
        assert_eq!(logits.len(), 1024);
        assert!(
            logits.iter().all(|x| x.is_finite()),
            "{}: non-finite logits",
            p.name
        );
        let logits = s.eval(&[65], false).unwrap();
        assert!(
            logits.iter().all(|x| x.is_finite()),
            "{}: non-finite logits",
            p.name
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn every_type_writes_the_expected_mix() {
    let p = small(synth::find_preset(None, "qwen3-0.6b").unwrap());
    let cases: &[(SynthType, &[(GgmlType, usize)])] = &[
        (SynthType::F32, &[(GgmlType::F32, 24)]),
        (SynthType::F16, &[(GgmlType::F32, 9), (GgmlType::F16, 15)]),
        (SynthType::Q8_0, &[(GgmlType::F32, 9), (GgmlType::Q8_0, 15)]),
        (
            SynthType::Q4_0,
            &[
                (GgmlType::F32, 9),
                (GgmlType::Q4_0, 14),
                (GgmlType::Q6_K, 1),
            ],
        ),
        (
            SynthType::Q4_1,
            &[
                (GgmlType::F32, 9),
                (GgmlType::Q4_1, 14),
                (GgmlType::Q6_K, 1),
            ],
        ),
        (SynthType::Q4K, &[(GgmlType::F32, 9), (GgmlType::Q4_K, 15)]),
        (
            SynthType::Q4KM,
            &[
                (GgmlType::F32, 9),
                (GgmlType::Q4_K, 12),
                (GgmlType::Q6_K, 3),
            ],
        ),
        (
            SynthType::Q5KM,
            &[
                (GgmlType::F32, 9),
                (GgmlType::Q5_K, 12),
                (GgmlType::Q6_K, 3),
            ],
        ),
        (SynthType::Q6K, &[(GgmlType::F32, 9), (GgmlType::Q6_K, 15)]),
    ];
    for &(ty, expected) in cases {
        let path = scratch(&format!("mix-{}.gguf", ty.name()));
        let summary = synth::synthesize(&SynthSpec::new(p, ty), &path).unwrap();
        let expected: BTreeMap<GgmlType, usize> = expected.iter().copied().collect();
        assert_eq!(summary.type_counts, expected, "{}", ty.name());
        let f = GgufFile::open(&path).unwrap();
        let mut counts = BTreeMap::new();
        for t in f.tensors() {
            *counts.entry(t.ty).or_insert(0) += 1;
        }
        assert_eq!(counts, expected, "{}", ty.name());
        Model::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
    }
}

/// Same spec, same bytes; the pool of distinct rows is the first rows of the all-distinct
/// file and then repeats; F32 weights have the requested spread.
#[test]
fn weights_are_reproducible_and_pooled_rows_repeat() {
    let p = Preset {
        n_vocab: 600,
        ..small(synth::find_preset(None, "llama-3.2-1b").unwrap())
    };
    let mut spec = SynthSpec::new(p, SynthType::F32);
    spec.distinct_rows = 256;
    let (a, b, full) = (
        scratch("rep-a.gguf"),
        scratch("rep-b.gguf"),
        scratch("rep-full.gguf"),
    );
    synth::synthesize(&spec, &a).unwrap();
    synth::synthesize(&spec, &b).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "not reproducible"
    );
    spec.distinct_rows = 0;
    synth::synthesize(&spec, &full).unwrap();

    let (fa, ff) = (GgufFile::open(&a).unwrap(), GgufFile::open(&full).unwrap());
    let row = 2048 * 4; // bytes of one F32 row of token_embd [2048, 600]
    let pooled = fa.tensor("token_embd.weight").unwrap().data;
    let distinct = ff.tensor("token_embd.weight").unwrap().data;
    assert_eq!(pooled[..256 * row], distinct[..256 * row]);
    assert_eq!(pooled[256 * row..512 * row], pooled[..256 * row]);
    assert_ne!(distinct[256 * row..512 * row], distinct[..256 * row]);

    let values: Vec<f32> = distinct
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let want = 1.0 / (2048f64).sqrt();
    assert!(
        mean.abs() < 1e-3 && (std / want - 1.0).abs() < 0.01,
        "mean {mean}, std {std}"
    );

    // Llama 3 RoPE scaling is written as rope_freqs.weight, as llama.cpp's converter does.
    let freqs = fa.tensor("rope_freqs.weight").unwrap();
    assert_eq!(freqs.dims(), &[32]);
    assert_eq!(fa.get("llama.rope.scaling.type"), None);
    assert_eq!(fa.get_u32("llama.vocab_size").unwrap(), 600);
    for p in [a, b, full] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn vocab_copied_from_another_file_tokenizes_the_same() {
    let Some(src) = common::fixture_model("tiny-qwen3-q4_k_m") else {
        eprintln!("SKIPPED: tiny-qwen3-q4_k_m.gguf not found");
        return;
    };
    let p = Preset {
        n_vocab: 1100, // the fixture has 1024 tokens: 76 [PADn] tokens are appended
        ..small(synth::find_preset(None, "qwen3-0.6b").unwrap())
    };
    let mut spec = SynthSpec::new(p, SynthType::Q8_0);
    spec.vocab = VocabSource::CopyFrom(src.clone());
    let path = scratch("vocab-from.gguf");
    synth::synthesize(&spec, &path).unwrap();

    let (orig, copy) = (
        GgufFile::open(&src).unwrap(),
        GgufFile::open(&path).unwrap(),
    );
    let (t0, t1) = (
        Tokenizer::from_gguf(&orig).unwrap(),
        Tokenizer::from_gguf(&copy).unwrap(),
    );
    assert_eq!(t1.n_vocab(), 1100);
    let text = "The children played in the park until the sun went down.";
    assert_eq!(t0.encode(text, true, true), t1.encode(text, true, true));
    assert_eq!(copy.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    let model = Model::load(&path).unwrap();
    let mut s = Session::new(&model, 32).unwrap();
    assert_eq!(
        s.eval(&t1.encode(text, true, true), false).unwrap().len(),
        1100
    );

    // A source vocabulary larger than the model's is refused with a clear message.
    spec.preset.n_vocab = 512;
    let e = synth::synthesize(&spec, &path).unwrap_err().to_string();
    assert!(e.contains("1024 tokens, more than the model's 512"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_specs_are_clear_errors() {
    let mut p = small(synth::find_preset(None, "qwen3-4b").unwrap());
    p.n_head_kv = 5;
    let e = synth::synthesize(&SynthSpec::new(p, SynthType::Q4KM), &scratch("bad.gguf"));
    assert!(e.unwrap_err().to_string().contains("multiple of kv heads"));
    let mut p = small(synth::find_preset(None, "qwen3-4b").unwrap());
    p.n_vocab = 100;
    let e = synth::synthesize(&SynthSpec::new(p, SynthType::Q4KM), &scratch("bad.gguf"));
    assert!(e.unwrap_err().to_string().contains("vocabulary size 100"));
    let p = small(synth::find_preset(None, "qwen3-4b").unwrap());
    let e = synth::synthesize(
        &SynthSpec::new(p, SynthType::Q4KM),
        &scratch("no/such/dir.gguf"),
    );
    assert!(e.unwrap_err().to_string().contains("no/such/dir.gguf"));
}

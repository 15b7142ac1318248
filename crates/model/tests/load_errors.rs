//! Loading: hyperparameter validation with clear errors, and misaligned tensors handled by
//! an aligned copy (same logits as the aligned file). Uses small synthetic llama files built
//! in memory with the GGUF writer.

use grist_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use grist_model::{Model, ModelError, Session};

const E: usize = 32; // n_embd
const F: usize = 64; // n_ff
const V: usize = 16; // vocab
const HEADS: u32 = 2;

/// Deterministic pseudo-random f32 bytes.
fn weights(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A 1-layer llama; `edit` may change metadata before the tensors are added.
fn build(
    alignment: Option<u32>,
    edit: impl FnOnce(&mut Vec<(&'static str, Value)>),
    skip_tensor: Option<&str>,
    q_rows: usize,
) -> Vec<u8> {
    let mut meta: Vec<(&'static str, Value)> = vec![
        ("general.architecture", "llama".into()),
        ("llama.block_count", 1u32.into()),
        ("llama.embedding_length", (E as u32).into()),
        ("llama.feed_forward_length", (F as u32).into()),
        ("llama.attention.head_count", HEADS.into()),
        ("llama.attention.head_count_kv", 1u32.into()),
        ("llama.attention.layer_norm_rms_epsilon", 1e-5f32.into()),
        ("llama.context_length", 128u32.into()),
    ];
    edit(&mut meta);
    let mut w = GgufWriter::new();
    if let Some(a) = alignment {
        w.set_alignment(a).unwrap();
        // An odd-length string shifts the data section off 4-byte alignment.
        w.add("general.name", "abc").unwrap();
    }
    for (k, v) in meta {
        w.add(k, v).unwrap();
    }
    let hd = E / HEADS as usize;
    let tensors: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![E as u64, V as u64]),
        ("output_norm.weight".into(), vec![E as u64]),
        ("blk.0.attn_norm.weight".into(), vec![E as u64]),
        ("blk.0.attn_q.weight".into(), vec![E as u64, q_rows as u64]),
        ("blk.0.attn_k.weight".into(), vec![E as u64, hd as u64]),
        ("blk.0.attn_v.weight".into(), vec![E as u64, hd as u64]),
        ("blk.0.attn_output.weight".into(), vec![E as u64, E as u64]),
        ("blk.0.ffn_norm.weight".into(), vec![E as u64]),
        ("blk.0.ffn_gate.weight".into(), vec![E as u64, F as u64]),
        ("blk.0.ffn_up.weight".into(), vec![E as u64, F as u64]),
        ("blk.0.ffn_down.weight".into(), vec![F as u64, E as u64]),
    ];
    for (i, (name, dims)) in tensors.iter().enumerate() {
        if Some(name.as_str()) == skip_tensor {
            continue;
        }
        let n: u64 = dims.iter().product();
        w.add_tensor(name, GgmlType::F32, dims, weights(n as usize, i as u64 + 1))
            .unwrap();
    }
    w.to_bytes().unwrap()
}

fn load(bytes: Vec<u8>) -> Result<Model, ModelError> {
    Model::from_gguf(GgufFile::from_bytes(bytes).unwrap())
}

fn logits(model: &Model) -> Vec<f32> {
    let mut s = Session::new(model, 16).unwrap();
    s.eval(&[1, 5, 7, 3, 2], true).unwrap().to_vec()
}

#[test]
fn valid_file_loads_and_runs() {
    let m = load(build(None, |_| {}, None, E)).unwrap();
    assert_eq!(m.arch_name(), "llama");
    assert_eq!(m.n_vocab(), V);
    assert_eq!(m.hparams().head_dim, E / 2);
    assert!(m.weights().tied_output);
    assert!(logits(&m).iter().all(|v| v.is_finite()));
}

#[test]
fn misaligned_tensors_are_copied_and_give_the_same_logits() {
    let aligned = load(build(Some(32), |_| {}, None, E)).unwrap();
    let bytes = build(Some(1), |_| {}, None, E);
    let file = GgufFile::from_bytes(bytes).unwrap();
    let misaligned = !file.data_offset().is_multiple_of(4);
    let m = Model::from_gguf(file).unwrap();
    assert!(
        misaligned,
        "the test file should have a misaligned data section"
    );
    assert_eq!(logits(&aligned), logits(&m));
}

fn err(bytes: Vec<u8>) -> String {
    load(bytes).unwrap_err().to_string()
}

#[test]
fn clear_errors() {
    let e = err(build(
        None,
        |m| m.retain(|(k, _)| *k != "llama.block_count"),
        None,
        E,
    ));
    assert!(e.contains("llama.block_count"), "{e}");
    let e = err(build(None, |m| m[0].1 = "mamba".into(), None, E));
    assert!(e.contains("unsupported architecture 'mamba'"), "{e}");
    let e = err(build(None, |_| {}, Some("blk.0.ffn_up.weight"), E));
    assert!(e.contains("blk.0.ffn_up.weight"), "{e}");
    let e = err(build(None, |_| {}, None, E + 8));
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("shape"),
        "{e}"
    );
    let e = err(build(
        None,
        |m| m.push(("llama.rope.scaling.type", "yarn".into())),
        None,
        E,
    ));
    assert!(e.contains("RoPE scaling type 'yarn'"), "{e}");
    let e = err(build(None, |m| m[5].1 = 3u32.into(), None, E));
    assert!(e.contains("not a multiple of head_count_kv"), "{e}");
    let e = err(build(
        None,
        |m| m.push(("llama.vocab_size", 99u32.into())),
        None,
        E,
    ));
    assert!(e.contains("vocab_size 99"), "{e}");
    // Linear RoPE scaling is accepted.
    let m = load(build(
        None,
        |m| {
            m.push(("llama.rope.scaling.type", "linear".into()));
            m.push(("llama.rope.scaling.factor", 4.0f32.into()));
        },
        None,
        E,
    ))
    .unwrap();
    assert_eq!(m.hparams().rope_freq_scale, 0.25);
}

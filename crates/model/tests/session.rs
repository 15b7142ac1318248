//! Session behaviour: thread-count independence, batch vs token-by-token agreement, chunking
//! of long batches, cache truncation, and clear errors on bad input.

mod common;

use common::*;
use grist_model::{Model, ModelError, Session};

fn load(name: &str) -> Option<Model> {
    match fixture_model(name) {
        Some(p) => Some(Model::load(p).unwrap()),
        None => {
            eprintln!("SKIPPED: {name}.gguf not found");
            None
        }
    }
}

fn golden_input(name: &str) -> Vec<u32> {
    Golden::load(&root().join(format!("tests/fixtures/goldens/{name}.long.json"))).input()
}

fn eval_in_pool(model: &Model, tokens: &[u32], threads: usize) -> Vec<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut s = Session::new(model, 256).unwrap();
        let mut out = s.eval(tokens, true).unwrap().to_vec();
        // Then a few single-token steps (the generation path).
        for &t in &tokens[..4] {
            out.extend_from_slice(s.eval(&[t], false).unwrap());
        }
        out
    })
}

#[test]
fn logits_identical_for_1_and_2_threads() {
    for name in [
        "tiny-llama-q4_k_m",
        "tiny-gemma3-q4_k_m",
        "tiny-llama-q4_0",
        "tiny-llama-f32",
    ] {
        let Some(model) = load(name) else { continue };
        let tokens = golden_input(name);
        let a = eval_in_pool(&model, &tokens, 1);
        let b = eval_in_pool(&model, &tokens, 2);
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}: logits differ between 1 and 2 threads"
        );
    }
}

/// Evaluates `tokens` one call per token, returning all logits `[n, n_vocab]`.
fn eval_one_by_one(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut s = Session::new(model, 256).unwrap();
    let mut out = Vec::new();
    for &t in tokens {
        out.extend_from_slice(s.eval(&[t], false).unwrap());
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batch_and_token_by_token_agree() {
    // Different attention paths (f32 tiled for batches ≥ 64, f16 accumulation otherwise) and
    // different activation rounding make them differ slightly, like llama.cpp.
    for (name, tol) in [
        ("tiny-llama-f32", 0.03),
        ("tiny-qwen3-f32", 0.03),
        ("tiny-gemma3-f32", 0.03),
        ("tiny-llama-q4_k_m", 0.6),
    ] {
        let Some(model) = load(name) else { continue };
        let tokens = golden_input(name);
        let mut s = Session::new(&model, 256).unwrap();
        let batch = s.eval(&tokens, true).unwrap().to_vec();
        let single = eval_one_by_one(&model, &tokens);
        let d = max_abs_diff(&batch, &single);
        eprintln!("{name}: batch vs token-by-token max|d| = {d:.5}");
        assert!(
            d <= tol,
            "{name}: batch vs token-by-token max|d| {d} > {tol}"
        );
    }
}

#[test]
fn small_chunks_match_one_batch_of_the_same_size() {
    // A prompt evaluated as 3 calls of ~30 tokens equals evaluating them with all logits
    // call by call: the cache carries the earlier tokens.
    let Some(model) = load("tiny-llama-q8_0") else {
        return;
    };
    let tokens = golden_input("tiny-llama-q8_0");
    let mut a = Session::new(&model, 256).unwrap();
    let mut whole = Vec::new();
    for chunk in tokens.chunks(30) {
        whole.extend_from_slice(a.eval(chunk, true).unwrap());
    }
    // Same chunks again after clear(): identical.
    a.clear();
    let mut again = Vec::new();
    for chunk in tokens.chunks(30) {
        again.extend_from_slice(a.eval(chunk, true).unwrap());
    }
    assert_eq!(whole, again);
    // truncate + re-eval of the last chunk gives the same logits.
    let n = tokens.len();
    let last = (n - 1) / 30 * 30;
    a.truncate(last);
    assert_eq!(a.n_past(), last);
    let redo = a.eval(&tokens[last..], true).unwrap().to_vec();
    assert_eq!(&whole[last * model.n_vocab()..], &redo[..]);
}

#[test]
fn bad_input_is_a_clear_error() {
    let Some(model) = load("tiny-llama-q4_0") else {
        return;
    };
    assert!(matches!(
        Session::new(&model, 0),
        Err(ModelError::InvalidArgument(_))
    ));
    // A context whose KV cache cannot be allocated: an error, not an abort.
    let Err(e) = Session::new(&model, 1 << 50) else {
        panic!("a 2^50-token cache was allocated");
    };
    assert!(matches!(e, ModelError::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("KV cache of"), "{e}");
    let mut s = Session::new(&model, 8).unwrap();
    let e = s.eval(&[1; 9], false).unwrap_err();
    assert!(matches!(e, ModelError::ContextOverflow { .. }), "{e}");
    assert!(e.to_string().contains("context size 8"), "{e}");
    let e = s.eval(&[5000], false).unwrap_err();
    assert!(matches!(e, ModelError::TokenOutOfRange { .. }), "{e}");
    assert!(s.eval(&[], false).is_err());
    assert_eq!(s.n_past(), 0);
    s.eval(&[1, 2, 3, 4, 5, 6, 7, 8], false).unwrap();
    assert!(s.eval(&[1], false).is_err());
    let e = Model::load("/nonexistent/model.gguf").unwrap_err();
    assert!(!e.to_string().is_empty());
}

#[test]
fn prompts_longer_than_max_batch_are_chunked() {
    let Some(model) = load("tiny-llama-q4_k_m") else {
        return;
    };
    let base = golden_input("tiny-llama-q4_k_m");
    let tokens: Vec<u32> = base.iter().copied().cycle().take(700).collect();
    let nv = model.n_vocab();
    let mut a = Session::new(&model, 1024).unwrap();
    let one_call = a.eval(&tokens, true).unwrap().to_vec();
    assert_eq!(one_call.len(), 700 * nv);
    assert_eq!(a.n_past(), 700);
    let mut b = Session::new(&model, 1024).unwrap();
    let mut two_calls = b
        .eval(&tokens[..grist_model::MAX_BATCH], true)
        .unwrap()
        .to_vec();
    two_calls.extend_from_slice(b.eval(&tokens[grist_model::MAX_BATCH..], true).unwrap());
    assert_eq!(one_call, two_calls);
    // Only the last row when all_logits is false. The output projection then runs for one
    // token (the matrix-vector kernel) instead of a batch (the panel GEMM): the same integer
    // products summed in another float order, so equal up to rounding, not bit for bit (grist
    // guarantees bits across thread counts and chunkings, not across batch sizes).
    let mut c = Session::new(&model, 1024).unwrap();
    let last = c.eval(&tokens, false).unwrap();
    let expected = &one_call[699 * nv..];
    assert_eq!(last.len(), nv);
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in last.iter().zip(expected).enumerate() {
        assert!((a - b).abs() <= 1e-4 * scale, "logit {i}: {a} vs {b}");
    }
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j]));
    assert_eq!(argmax(last), argmax(expected));
}

/// Without all logits, the last layer stops after its attention for every row but the last
/// (and, in a chunk that needs no logits, right after caching its keys and values). The KV
/// cache must still be the whole computation's: whatever follows gets the same bits.
#[test]
fn pruned_last_layers_leave_the_cache_whole() {
    for name in ["tiny-llama-q4_k_m", "tiny-gemma3-q4_k_m", "tiny-llama-f32"] {
        let Some(model) = load(name) else { continue };
        let base = golden_input(name);
        let n = grist_model::MAX_BATCH + 40;
        let tokens: Vec<u32> = base.iter().copied().cycle().take(n).collect();
        let (prompt, next) = (&tokens[..n - 3], &tokens[n - 3..]);
        // Reference: every row of every layer computed.
        let mut full = Session::new(&model, 1024).unwrap();
        full.eval(prompt, true).unwrap();
        let want = full.eval(next, true).unwrap().to_vec();
        // The first chunk needs no logits, the second only its last row's.
        let mut pruned = Session::new(&model, 1024).unwrap();
        pruned.eval(prompt, false).unwrap();
        let got = pruned.eval(next, true).unwrap().to_vec();
        assert!(
            want.iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: logits after a pruned prompt differ"
        );
        // Generation after the pruned prompt: one row per call, as before.
        let mut a = Session::new(&model, 1024).unwrap();
        let mut b = Session::new(&model, 1024).unwrap();
        a.eval(prompt, true).unwrap();
        b.eval(prompt, false).unwrap();
        for &t in next {
            let (x, y) = (
                a.eval(&[t], false).unwrap().to_vec(),
                b.eval(&[t], false).unwrap(),
            );
            assert!(
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{name}: generation after a pruned prompt differs"
            );
        }
    }
}

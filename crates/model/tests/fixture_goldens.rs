//! Every tiny-fixture golden (tests/fixtures/goldens/*.json), teacher-forced, against
//! compare.py's criteria in its class: F32/F16 → f32, BF16 → bf16, quantized → quant. The
//! Q4_K_M, Q8_0, Q4_1 and Q5_0 fixtures run a second time from a `grist repack`ed copy
//! (interleaved layouts Q4_K_R16, Q6_K_R16, Q8_0_R16, Q4_1_R16, Q5_0_R16; the tied llama's
//! token_embd is both its embedding table and its output; the Q4_1 and Q5_0 llamas'
//! token_embd are interleaved embedding tables), which must meet the same goldens.

mod common;

use common::*;
use grist_model::Model;

/// The compare.py class of a fixture model name.
fn class_of(model: &str) -> Limits {
    if model.ends_with("-f32") || model.ends_with("-f16") {
        F32
    } else if model.ends_with("-bf16") {
        BF16
    } else {
        QUANT
    }
}

fn check_model(model_name: &str) -> Vec<String> {
    let Some(path) = fixture_model(model_name) else {
        eprintln!("SKIPPED: {model_name}.gguf not found (tests/fixtures/models or ../shared/fixtures/models)");
        return Vec::new();
    };
    check_file(model_name, &path)
}

/// [`check_model`] on a `grist repack`ed copy of the fixture (written to cargo's scratch
/// directory): the interleaved layouts must not move any golden result.
fn check_repacked(model_name: &str) -> Vec<String> {
    let Some(path) = fixture_model(model_name) else {
        eprintln!("SKIPPED: {model_name}.gguf not found");
        return Vec::new();
    };
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixture-repack");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{model_name}.gguf"));
    let report = grist_model::repack::repack_file(&path, &out, &Default::default())
        .unwrap_or_else(|e| panic!("repacking {model_name}: {e}"));
    assert!(report.n_repacked > 0, "{model_name}: nothing was repacked");
    let mut failures = check_file(&format!("{model_name} (repacked)"), &out);
    // Token by token too: generation (one token per step) runs the interleaved kernels
    // themselves, where a batch de-interleaves rows for the prompt kernels.
    let model = Model::load(&out).unwrap();
    let lim = class_of(model_name);
    for prompt in ["short", "long"] {
        let gp = root().join(format!("tests/fixtures/goldens/{model_name}.{prompt}.json"));
        let g = Golden::load(&gp);
        let logits = eval_step_by_step(&model, &g);
        let res = compare(&g, &logits, model.n_vocab(), &lim);
        eprintln!("{model_name} (repacked, one token per step).{prompt}: {res}");
        if !res.problems.is_empty() {
            failures.push(format!("{model_name} (repacked, stepwise).{prompt}: {res}"));
        }
    }
    std::fs::remove_file(&out).unwrap();
    failures
}

/// Checks the model in `path` against the goldens of fixture `model_name` (the name up to
/// a space).
fn check_file(label: &str, path: &std::path::Path) -> Vec<String> {
    let model_name = label.split(' ').next().unwrap();
    let model = Model::load(path).unwrap_or_else(|e| panic!("{label}: {e}"));
    let lim = class_of(model_name);
    let mut failures = Vec::new();
    for prompt in ["short", "long"] {
        let gp = root().join(format!("tests/fixtures/goldens/{model_name}.{prompt}.json"));
        let g = Golden::load(&gp);
        let logits = eval_teacher_forced(&model, &g);
        let out = compare(&g, &logits, model.n_vocab(), &lim);
        eprintln!("{label}.{prompt} [{}]: {out}", lim.name);
        if !out.problems.is_empty() {
            failures.push(format!("{label}.{prompt}: {out}"));
        }
    }
    failures
}

macro_rules! fixture_tests {
    ($($test:ident => $name:expr,)*) => {
        $(
            #[test]
            fn $test() {
                let failures = check_model($name);
                assert!(failures.is_empty(), "{}", failures.join("\n"));
            }
        )*
    };
}

fixture_tests! {
    llama_f32 => "tiny-llama-f32",
    llama_f16 => "tiny-llama-f16",
    llama_bf16 => "tiny-llama-bf16",
    llama_tied_f32 => "tiny-llama-tied-f32",
    llama_q4_0 => "tiny-llama-q4_0",
    llama_q4_1 => "tiny-llama-q4_1",
    llama_q5_0 => "tiny-llama-q5_0",
    llama_q5_1 => "tiny-llama-q5_1",
    llama_q8_0 => "tiny-llama-q8_0",
    llama_tied_q8_0 => "tiny-llama-tied-q8_0",
    llama_q2_k => "tiny-llama-q2_k",
    llama_q3_k_m => "tiny-llama-q3_k_m",
    llama_q4_k_m => "tiny-llama-q4_k_m",
    llama_q5_k_m => "tiny-llama-q5_k_m",
    llama_q6_k => "tiny-llama-q6_k",
    llama_iq4_nl => "tiny-llama-iq4_nl",
    llama_iq4_xs => "tiny-llama-iq4_xs",
    qwen2_f32 => "tiny-qwen2-f32",
    qwen2_q4_k_m => "tiny-qwen2-q4_k_m",
    qwen3_f32 => "tiny-qwen3-f32",
    qwen3_q4_k_m => "tiny-qwen3-q4_k_m",
    gemma3_f32 => "tiny-gemma3-f32",
    gemma3_q4_k_m => "tiny-gemma3-q4_k_m",
}

macro_rules! repacked_fixture_tests {
    ($($test:ident => $name:expr,)*) => {
        $(
            #[test]
            fn $test() {
                let failures = check_repacked($name);
                assert!(failures.is_empty(), "{}", failures.join("\n"));
            }
        )*
    };
}

repacked_fixture_tests! {
    llama_q4_k_m_repacked => "tiny-llama-q4_k_m",
    qwen2_q4_k_m_repacked => "tiny-qwen2-q4_k_m",
    qwen3_q4_k_m_repacked => "tiny-qwen3-q4_k_m",
    gemma3_q4_k_m_repacked => "tiny-gemma3-q4_k_m",
    llama_q8_0_repacked => "tiny-llama-q8_0",
    llama_tied_q8_0_repacked => "tiny-llama-tied-q8_0",
    llama_q4_1_repacked => "tiny-llama-q4_1",
    llama_q5_0_repacked => "tiny-llama-q5_0",
}

//! Every tiny-fixture golden (tests/fixtures/goldens/*.json), teacher-forced, against
//! compare.py's criteria in its class: F32/F16 → f32, BF16 → bf16, quantized → quant.

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
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{model_name}: {e}"));
    let lim = class_of(model_name);
    let mut failures = Vec::new();
    for prompt in ["short", "long"] {
        let gp = root().join(format!("tests/fixtures/goldens/{model_name}.{prompt}.json"));
        let g = Golden::load(&gp);
        let logits = eval_teacher_forced(&model, &g);
        let out = compare(&g, &logits, model.n_vocab(), &lim);
        eprintln!("{model_name}.{prompt} [{}]: {out}", lim.name);
        if !out.problems.is_empty() {
            failures.push(format!("{model_name}.{prompt}: {out}"));
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

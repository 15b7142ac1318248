//! `grist inspect` run as a program on the fixture models: text and JSON output, tensor
//! counts against `tests/fixtures/tensor_types.json`, and a clean failure on a corrupt file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn grist(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grist"))
        .args(args)
        .output()
        .expect("run grist")
}

fn inspect_json(path: &Path) -> serde_json::Value {
    let out = grist(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints valid JSON")
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/tensor_types.json"))
        .expect("tests/fixtures/tensor_types.json");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn json_tensor_tables_match_the_manifest() {
    let manifest = manifest();
    let dir = workspace().join("tests/fixtures/models");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir)
        .expect("tests/fixtures/models")
        .flatten()
    {
        let path = entry.path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(expected) = manifest[&name].as_array() else {
            continue;
        };
        let j = inspect_json(&path);
        assert_eq!(
            j["n_tensors"].as_u64().unwrap() as usize,
            expected.len(),
            "{name}"
        );
        let tensors = j["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), expected.len(), "{name}");
        for (t, e) in tensors.iter().zip(expected) {
            assert_eq!(t["name"], e[0], "{name}");
            assert_eq!(t["type"], e[1], "{name}");
            assert_eq!(t["shape"], e[2], "{name}");
        }
        // Totals per type add up to the tensor count and the bytes.
        let types = j["types"].as_array().unwrap();
        let count: u64 = types.iter().map(|t| t["count"].as_u64().unwrap()).sum();
        assert_eq!(count as usize, expected.len(), "{name}");
        let bytes: u64 = types.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
        assert_eq!(bytes, j["tensor_bytes"].as_u64().unwrap());
        let params: u64 = tensors
            .iter()
            .map(|t| t["n_elements"].as_u64().unwrap())
            .sum();
        assert_eq!(params, j["n_params"].as_u64().unwrap());
        assert_eq!(j["version"], 3);
        assert!(j["architecture"].is_string());
        // The vocabulary is summarized, not dumped.
        let tokens = &j["metadata"]["tokenizer.ggml.tokens"];
        assert_eq!(tokens["type"], "array");
        assert!(tokens["len"].as_u64().unwrap() > 100);
        assert!(tokens["values"].as_array().unwrap().len() <= 16);
        assert_eq!(tokens["truncated"], true);
        checked += 1;
    }
    assert!(checked >= 14, "checked only {checked} fixtures");
}

#[test]
fn text_output_has_every_section() {
    let path = workspace().join("tests/fixtures/models/tiny-llama-q4_k_m.gguf");
    let out = grist(&["inspect", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "GGUF v3",
        "alignment 32",
        "data section at byte",
        "parameters",
        "Architecture",
        "llama: layers",
        "heads",
        "rope base",
        "Metadata (",
        "general.architecture",
        "(vocabulary: --full to show)",
        "Tensors (",
        "token_embd.weight",
        "Totals by tensor type",
        "Q4_K",
        "100.0%",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // --full dumps the vocabulary: much longer output.
    let full = grist(&["inspect", "--full", path.to_str().unwrap()]);
    assert!(full.status.success());
    assert!(full.stdout.len() > text.len() * 2);
    assert!(!String::from_utf8(full.stdout)
        .unwrap()
        .contains("--full to show"));
}

#[test]
fn tied_and_sliding_window_are_reported() {
    let dir = workspace().join("tests/fixtures/models");
    let tied = inspect_json(&dir.join("tiny-llama-tied-q8_0.gguf"));
    assert_eq!(tied["summary"]["output"], "tied to token_embd");
    let untied = inspect_json(&dir.join("tiny-llama-q8_0.gguf"));
    assert_eq!(untied["summary"]["output"], "separate (output.weight)");
    let gemma = inspect_json(&dir.join("tiny-gemma3-q4_k_m.gguf"));
    assert!(
        gemma["summary"]["sliding_window"].is_string(),
        "{}",
        gemma["summary"]
    );
}

#[test]
fn corrupt_and_missing_files_fail_cleanly() {
    let dir = std::env::temp_dir().join(format!("grist-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good =
        std::fs::read(workspace().join("tests/fixtures/models/tiny-qwen3-q4_k_m.gguf")).unwrap();

    // Truncated inside the metadata.
    let bad = dir.join("truncated.gguf");
    std::fs::write(&bad, &good[..5000]).unwrap();
    let out = grist(&["inspect", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("truncated.gguf: malformed GGUF at byte"),
        "{err}"
    );
    assert!(
        err.contains("tokenizer.ggml.tokens"),
        "names what is cut: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // Forged tensor count.
    let mut forged = good.clone();
    forged[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let bad = dir.join("forged.gguf");
    std::fs::write(&bad, &forged).unwrap();
    let out = grist(&["inspect", "--json", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing printed on stdout on error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("malformed GGUF at byte 8: tensor count"),
        "{err}"
    );

    // Not a GGUF file at all, and a missing file.
    let bad = dir.join("text.gguf");
    std::fs::write(&bad, "hello, world\n").unwrap();
    let out = grist(&["inspect", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a GGUF file"));
    let out = grist(&["inspect", "/nonexistent/x.gguf"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.gguf"));

    std::fs::remove_dir_all(&dir).unwrap();
}

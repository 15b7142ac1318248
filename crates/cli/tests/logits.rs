//! `grist logits` end to end on a tiny fixture: JSON shape, teacher-forced replay of a golden,
//! and one-line errors on bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn grist(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_grist"))
        .args(args)
        .output()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("grist-logits-test-{}-{name}", std::process::id()))
}

const MODEL: &str = "tests/fixtures/models/tiny-llama-q8_0.gguf";
const GOLDEN: &str = "tests/fixtures/goldens/tiny-llama-q8_0.short.json";

#[test]
fn replays_a_golden_teacher_forced() {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(GOLDEN)).unwrap()).unwrap();
    let mut ids: Vec<u64> = g["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let gen: Vec<u64> = g["generated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.extend_from_slice(&gen[..gen.len() - 1]);
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let out = tmp("replay.json");
    let model = root().join(MODEL);
    let r = grist(&[
        "logits",
        "-m",
        model.to_str().unwrap(),
        "--tokens",
        &list,
        "-o",
        out.to_str().unwrap(),
        "-t",
        "2",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let o: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    let toks: Vec<u64> = o["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(toks, ids, "JSON must include the evaluated ids as given");
    let top = o["top"].as_array().unwrap();
    assert_eq!(top.len(), ids.len());
    // Every position: 20 entries sorted by logit; top-1 agrees with the golden at the
    // first prompt position and the logits are close (quant class bound 0.6).
    for pos in top {
        let e = pos.as_array().unwrap();
        assert_eq!(e.len(), 20);
        let l: Vec<f64> = e.iter().map(|x| x[1].as_f64().unwrap()).collect();
        assert!(l.windows(2).all(|w| w[0] >= w[1]));
    }
    let g0 = &g["top"][0];
    assert_eq!(top[0][0][0], g0[0][0]);
    assert!((top[0][0][1].as_f64().unwrap() - g0[0][1].as_f64().unwrap()).abs() < 0.6);
}

#[test]
fn prompt_with_greedy_generation() {
    let out = tmp("gen.json");
    let model = root().join(MODEL);
    let prompt = root().join("tests/fixtures/prompts/short.txt");
    let r = grist(&[
        "logits",
        "-m",
        model.to_str().unwrap(),
        "-f",
        prompt.to_str().unwrap(),
        "-n",
        "4",
        "--top",
        "5",
        "--ignore-eog",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let o: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(GOLDEN)).unwrap()).unwrap();
    assert_eq!(
        o["tokens"], g["tokens"],
        "tokenization of the prompt file (no BOS for this vocab)"
    );
    assert_eq!(o["generated"].as_array().unwrap().len(), 4);
    assert_eq!(o["gen_top"].as_array().unwrap().len(), 4);
    let top = o["top"].as_array().unwrap();
    assert_eq!(o["gen_top"][0], top[top.len() - 1], "gen_top[0] == top[-1]");
    assert_eq!(top[0].as_array().unwrap().len(), 5);
    assert_eq!(o["generated"][0], o["gen_top"][0][0][0]);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let model = root().join(MODEL);
    let m = model.to_str().unwrap();
    let out = tmp("bad.json");
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec![
                "logits",
                "-m",
                "/nonexistent.gguf",
                "--tokens",
                "1",
                "-o",
                o,
            ],
            "not found",
        ),
        (
            vec!["logits", "-m", m, "--tokens", "1,x", "-o", o],
            "invalid token id",
        ),
        (
            vec!["logits", "-m", m, "--tokens", "99999", "-o", o],
            "outside the vocabulary",
        ),
        (
            vec!["logits", "-m", m, "--tokens", "1,2,3", "-c", "2", "-o", o],
            "context size",
        ),
        (
            vec!["logits", "-m", m, "--tokens", "1", "-c", "0", "-o", o],
            "at least 1",
        ),
        (vec!["logits", "-m", m, "-o", o], "no prompt"),
    ] {
        let r = grist(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `grist perplexity` prints llama.cpp's format: `[1]x,[2]y,` then `Final estimate: PPL = …`.
#[test]
fn perplexity_output_format() {
    let model = root().join(MODEL);
    let text = root().join("tests/golden/texts/GPL-3.txt");
    let r = grist(&[
        "perplexity",
        "-m",
        model.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        "64",
        "--chunks",
        "3",
        "-t",
        "2",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = String::from_utf8_lossy(&r.stdout);
    let mut lines = out.lines();
    let running = lines.next().unwrap();
    assert!(
        running.starts_with("[1]") && running.contains(",[3]"),
        "{out}"
    );
    let fin = lines.next().unwrap();
    assert!(
        fin.starts_with("Final estimate: PPL = ") && fin.contains(" +/- "),
        "{out}"
    );
    let ppl: f64 = fin["Final estimate: PPL = ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // A random tiny model on English text: worse than its vocabulary of 1024 would allow
    // only by chance, but finite and > 1.
    assert!(ppl > 1.0 && ppl.is_finite(), "{fin}");
    let r = grist(&[
        "perplexity",
        "-m",
        model.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        "100000",
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("fewer than one chunk"));
}

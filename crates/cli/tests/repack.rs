//! `grist repack` run as a program: the summary of a successful run (and of
//! Q4_K/Q6_K/Q8_0/Q4_1/Q5_0 tensors left as they are), the repacked file as `grist inspect`
//! shows it, and clean failures (message, non-zero status, no panic) for a missing input, a
//! non-GGUF input, an output that is the input and a missing `-o`. (`grist_model::repack`'s
//! tests check the file's contents byte by byte.)

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

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("grist-repack-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts a clean failure: non-zero status, nothing on stdout, stderr containing every
/// needle and no panic. Returns stderr.
fn assert_fails(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {err}");
    assert!(out.stdout.is_empty(), "stdout on error");
    assert!(!err.contains("panicked"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    err
}

/// Runs `grist repack INPUT -o OUTPUT EXTRA…`, checks that it succeeded and printed its
/// summary on stderr only; returns stderr.
fn repack_ok(input: &Path, output: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "repack",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = grist(&args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(out.stdout.is_empty(), "the summary goes to stderr");
    err
}

#[test]
fn repack_prints_a_summary_and_inspect_shows_the_layout() {
    let dir = scratch("ok");
    let input = workspace().join("tests/fixtures/models/tiny-qwen3-q4_k_m.gguf");
    let output = dir.join("out.gguf");
    let err = repack_ok(&input, &output, &["-t", "2"]);
    // tiny-qwen3 Q4_K_M: 12 Q4_K and 3 Q6_K matrices, 9 F32 norms.
    for needle in [
        "repack: 100% (24 / 24 tensors)",
        "(Q4_K -> Q4_K_R16, Q6_K -> Q6_K_R16, Q8_0 -> Q8_0_R16, Q4_1 -> Q4_1_R16, Q5_0 -> Q5_0_R16)",
        "15 tensors repacked (12 to Q4_K_R16, 3 to Q6_K_R16; ",
        "9 copied as they are",
        &format!("{} bytes in", std::fs::metadata(&output).unwrap().len()),
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        !err.contains("kept as they are") && !err.contains("warning"),
        "{err}"
    );

    let out = grist(&["inspect", output.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "alignment 64",
        "grist.repack",
        "\"Q4_K_R16,Q6_K_R16\"",
        "Q6_K_R16",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    // Repacking the output again has nothing to do, and says so.
    let again = dir.join("again.gguf");
    let err = repack_ok(&output, &again, &[]);
    assert!(
        err.contains("0 tensors repacked (0.0 MB)")
            && err.contains("warning: no Q4_K, Q6_K, Q8_0, Q4_1 or Q5_0 matrix"),
        "{err}"
    );

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn q4_k_left_as_is_is_named() {
    let dir = scratch("kept");
    let input = dir.join("in.gguf");
    let q4_k = |rows: usize| vec![0x5au8; rows * 144]; // [rows, 256 values]
    let mut w = grist_gguf::GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    w.add_tensor("rows16", grist_gguf::GgmlType::Q4_K, &[256, 16], q4_k(16))
        .unwrap();
    w.add_tensor("rows24", grist_gguf::GgmlType::Q4_K, &[256, 24], q4_k(24))
        .unwrap();
    w.write_to_path(&input).unwrap();
    let output = dir.join("out.gguf");
    let err = repack_ok(&input, &output, &[]);
    assert!(
        err.contains("1 tensors repacked") && err.contains("1 copied"),
        "{err}"
    );
    assert!(
        err.contains(
            "1 Q4_K/Q6_K/Q8_0/Q4_1/Q5_0 tensors kept as they are (not 2-D, rows not a multiple of \
             16, or Q8_0/Q4_1/Q5_0 rows not a multiple of 64 values): rows24"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn q8_0_matrices_are_repacked_and_the_others_named() {
    let dir = scratch("q8_0");
    let input = dir.join("in.gguf");
    let q8_0 = |rows: usize, cols: usize| vec![0x3cu8; rows * cols / 32 * 34];
    let mut w = grist_gguf::GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    for (name, cols, rows) in [("whole", 640, 32), ("cols96", 96, 16), ("rows8", 64, 8)] {
        w.add_tensor(
            name,
            grist_gguf::GgmlType::Q8_0,
            &[cols, rows],
            q8_0(rows as usize, cols as usize),
        )
        .unwrap();
    }
    w.add_tensor(
        "q4_k",
        grist_gguf::GgmlType::Q4_K,
        &[256, 16],
        vec![0x5au8; 16 * 144],
    )
    .unwrap();
    w.write_to_path(&input).unwrap();
    let output = dir.join("out.gguf");
    let err = repack_ok(&input, &output, &[]);
    for needle in [
        "2 tensors repacked (1 to Q8_0_R16, 1 to Q4_K_R16; ",
        "2 copied as they are",
        "2 Q4_K/Q6_K/Q8_0/Q4_1/Q5_0 tensors kept as they are (not 2-D, rows not a multiple of 16, \
         or Q8_0/Q4_1/Q5_0 rows not a multiple of 64 values): cols96, rows8",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("warning"), "{err}");

    let out = grist(&["inspect", output.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("\"Q8_0_R16,Q4_K_R16\""), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("whole") && l.contains("Q8_0_R16")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn q5_0_matrices_are_repacked_and_the_others_named() {
    let dir = scratch("q5_0");
    let input = dir.join("in.gguf");
    let q5_0 = |rows: usize, cols: usize| vec![0xa7u8; rows * cols / 32 * 22];
    let mut w = grist_gguf::GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    for (name, cols, rows) in [("whole", 896, 32), ("cols96", 96, 16)] {
        w.add_tensor(
            name,
            grist_gguf::GgmlType::Q5_0,
            &[cols, rows],
            q5_0(rows as usize, cols as usize),
        )
        .unwrap();
    }
    w.write_to_path(&input).unwrap();
    let output = dir.join("out.gguf");
    let err = repack_ok(&input, &output, &[]);
    for needle in [
        "1 tensors repacked (1 to Q5_0_R16; ",
        "1 copied as they are",
        "1 Q4_K/Q6_K/Q8_0/Q4_1/Q5_0 tensors kept as they are (not 2-D, rows not a multiple of 16, \
         or Q8_0/Q4_1/Q5_0 rows not a multiple of 64 values): cols96",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let out = grist(&["inspect", output.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("\"Q5_0_R16\""), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("whole") && l.contains("Q5_0_R16")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_and_outputs_fail_cleanly() {
    let dir = scratch("errors");
    let model = dir.join("model.gguf");
    std::fs::copy(
        workspace().join("tests/fixtures/models/tiny-qwen3-q4_k_m.gguf"),
        &model,
    )
    .unwrap();
    let before = std::fs::read(&model).unwrap();
    let m = model.to_str().unwrap();
    let output = dir.join("out.gguf");
    let o = output.to_str().unwrap();

    let missing = dir.join("missing.gguf");
    let e = assert_fails(
        &grist(&["repack", missing.to_str().unwrap(), "-o", o]),
        &["missing.gguf", "No such file"],
    );
    let last = e.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("missing.gguf"),
        "{e}"
    );

    let text = dir.join("text.gguf");
    std::fs::write(&text, "hello, world\n").unwrap();
    assert_fails(
        &grist(&["repack", text.to_str().unwrap(), "-o", o]),
        &["error: ", "text.gguf", "not a GGUF file"],
    );

    assert_fails(
        &grist(&["repack", m, "-o", m]),
        &["error: ", "is the input file"],
    );
    let spelled = dir
        .join("../")
        .join(dir.file_name().unwrap())
        .join("model.gguf");
    assert_fails(
        &grist(&["repack", m, "-o", spelled.to_str().unwrap()]),
        &["is the input file"],
    );
    assert!(
        std::fs::read(&model).unwrap() == before,
        "the input changed"
    );

    // clap's usage error: exit status 2.
    let out = grist(&["repack", m]);
    assert_fails(&out, &["--output", "required"]);
    assert_eq!(out.status.code(), Some(2));

    // Nothing written: no output, no temporary file.
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["model.gguf", "text.gguf"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn q4_1_matrices_are_repacked_and_the_others_named() {
    let dir = scratch("q4_1");
    // tiny-llama Q4_1: 15 Q4_1 matrices (token_embd included) and a Q6_K output, 5 F32 norms.
    let input = workspace().join("tests/fixtures/models/tiny-llama-q4_1.gguf");
    let output = dir.join("out.gguf");
    let err = repack_ok(&input, &output, &[]);
    for needle in [
        "16 tensors repacked (15 to Q4_1_R16, 1 to Q6_K_R16; ",
        "5 copied as they are",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("kept") && !err.contains("warning"), "{err}");
    let out = grist(&["inspect", output.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("\"Q4_1_R16,Q6_K_R16\""), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("blk.1.ffn_down.weight") && l.contains("Q4_1_R16")),
        "{text}"
    );

    // Q4_1 rows of three blocks (96 values) are not whole Q4_1_R16 columns.
    let input = dir.join("in.gguf");
    let mut w = grist_gguf::GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    for (name, cols, rows) in [("whole", 576u64, 32u64), ("cols96", 96, 16)] {
        let bytes = vec![0x3cu8; (rows * cols / 32 * 20) as usize];
        w.add_tensor(name, grist_gguf::GgmlType::Q4_1, &[cols, rows], bytes)
            .unwrap();
    }
    w.write_to_path(&input).unwrap();
    let err = repack_ok(&input, &dir.join("built.gguf"), &[]);
    for needle in [
        "1 tensors repacked (1 to Q4_1_R16; ",
        "1 Q4_K/Q6_K/Q8_0/Q4_1/Q5_0 tensors kept as they are (not 2-D, rows not a multiple of \
         16, or Q8_0/Q4_1/Q5_0 rows not a multiple of 64 values): cols96",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

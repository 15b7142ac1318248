//! End-to-end tests of `grist run` and `grist chat`: the built binary on a tiny fixture model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const GRIST: &str = env!("CARGO_BIN_EXE_grist");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

fn tiny() -> String {
    fixture("tiny-llama-q8_0.gguf")
        .to_string_lossy()
        .into_owned()
}

/// A scratch file path unique to this test process.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("grist-cli-test-{}-{name}", std::process::id()))
}

fn grist(args: &[&str]) -> Output {
    Command::new(GRIST).args(args).output().expect("grist runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure with exactly one line on stderr, `error: …` containing `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail; stderr: {err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn greedy_run_is_identical_across_thread_counts() {
    let model = tiny();
    let run = |threads: &str| {
        let o = grist(&[
            "run",
            "-m",
            &model,
            "-p",
            "Once upon a time",
            "--temp",
            "0",
            "-n",
            "8",
            "-t",
            threads,
        ]);
        assert!(o.status.success(), "stderr: {}", stderr(&o));
        stdout(&o)
    };
    let one = run("1");
    let two = run("2");
    assert!(
        one.starts_with("Once upon a time"),
        "prompt is echoed: {one:?}"
    );
    assert!(
        one.len() > "Once upon a time\n".len(),
        "something was generated: {one:?}"
    );
    assert_eq!(one, two);
}

#[test]
fn run_prints_a_timing_block() {
    let o = grist(&[
        "run",
        "-m",
        &tiny(),
        "-p",
        "Hello",
        "--temp",
        "0",
        "-n",
        "4",
        "-t",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for needle in [
        "load time",
        "prompt eval time",
        "eval time",
        "4 runs",
        "tokens per second",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let model = tiny();
    let run = |seed: &str| {
        let o = grist(&[
            "run", "-m", &model, "-p", "Hello", "-n", "12", "-s", seed, "--temp", "1.5",
        ]);
        assert!(o.status.success(), "stderr: {}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(run("7"), run("7"));
}

#[test]
fn prompt_file_is_read() {
    let path = scratch("prompt.txt");
    std::fs::write(&path, "Hello from a file").unwrap();
    let o = grist(&[
        "run",
        "-m",
        &tiny(),
        "-f",
        path.to_str().unwrap(),
        "--temp",
        "0",
        "-n",
        "2",
    ]);
    std::fs::remove_file(&path).ok();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("Hello from a file"));
}

#[test]
fn missing_model_is_an_error() {
    let o = grist(&["run", "-m", "/nonexistent/model.gguf", "-p", "hi"]);
    assert_one_line_error(&o, "not found");
    let o = grist(&["chat", "-m", "/nonexistent/model.gguf"]);
    assert_one_line_error(&o, "not found");
}

#[test]
fn zero_context_is_an_error() {
    let o = grist(&["run", "-m", &tiny(), "-p", "hi", "-c", "0"]);
    assert_one_line_error(&o, "ctx-size");
    let o = grist(&["chat", "-m", &tiny(), "-c", "0"]);
    assert_one_line_error(&o, "ctx-size");
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let prompt = "the quick brown fox jumps over the lazy dog ".repeat(8);
    let o = grist(&["run", "-m", &tiny(), "-p", &prompt, "-c", "16"]);
    assert_one_line_error(&o, "longer than the context");
}

#[test]
fn invalid_utf8_prompt_file_is_an_error() {
    let path = scratch("bad-utf8.txt");
    std::fs::write(&path, b"caf\xc3 \xff\xfe").unwrap();
    let o = grist(&["run", "-m", &tiny(), "-f", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_one_line_error(&o, "not valid UTF-8");
}

#[test]
fn bad_sampling_flags_are_errors() {
    let model = tiny();
    for (flag, value) in [
        ("--top-p", "2"),
        ("--min-p", "-0.5"),
        ("--repeat-penalty", "0"),
        ("--top-k", "-3"),
        ("--repeat-last-n", "-2"),
        ("--temp", "nan"),
    ] {
        let o = grist(&["run", "-m", &model, "-p", "hi", flag, value]);
        assert_one_line_error(&o, flag);
    }
    let o = grist(&["run", "-m", &model, "-p", "hi", "-t", "0"]);
    assert_one_line_error(&o, "threads");
    let o = grist(&["run", "-m", &model, "-p", "hi", "--isa", "sse9"]);
    assert_one_line_error(&o, "sse9");
}

/// A minimal GGUF v3 file: no tensors, one metadata key `general.architecture`.
fn gguf_with_arch(arch: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes()); // version
    b.extend_from_slice(&0u64.to_le_bytes()); // tensor count
    b.extend_from_slice(&1u64.to_le_bytes()); // metadata count
    let key = "general.architecture";
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&8u32.to_le_bytes()); // type: string
    b.extend_from_slice(&(arch.len() as u64).to_le_bytes());
    b.extend_from_slice(arch.as_bytes());
    b
}

#[test]
fn unsupported_architecture_is_an_error() {
    let path = scratch("mamba.gguf");
    std::fs::write(&path, gguf_with_arch("mamba")).unwrap();
    let o = grist(&["run", "-m", path.to_str().unwrap(), "-p", "hi"]);
    std::fs::remove_file(&path).ok();
    assert_one_line_error(&o, "unsupported architecture");
}

fn chat(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(GRIST)
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("grist chat starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The prompt-token counts of each turn, from the `grist: [N prompt tokens …]` stderr lines.
fn turn_prompt_tokens(err: &str) -> Vec<usize> {
    err.lines()
        .filter_map(|l| l.strip_prefix("grist: ["))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn chat_over_stdin_until_bye() {
    let model = tiny();
    let system = "You are a helpful assistant who answers every question briefly and politely.";
    let args = [
        "-m", &model, "--temp", "0", "-n", "6", "-t", "1", "--system", system,
    ];
    let o = chat(&args, "Hello there\nAnd again\n/bye\nnever read\n");
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.starts_with("> "), "{out:?}");
    // The tiny model has no template: ChatML with a warning.
    assert!(err.contains("no chat template"), "{err}");
    // Two turns ran (the line after /bye was not read), and the second reused the cache: it
    // evaluated fewer tokens than the first, although its conversation is longer.
    let counts = turn_prompt_tokens(&err);
    assert_eq!(counts.len(), 2, "{err}");
    assert!(counts[1] < counts[0], "cache not reused: {counts:?}");

    // The same conversation gives the same greedy replies whatever the thread count.
    let args2 = [
        "-m", &model, "--temp", "0", "-n", "6", "-t", "2", "--system", system,
    ];
    let o2 = chat(&args2, "Hello there\nAnd again\n/bye\n");
    assert_eq!(stdout(&o2), out);
}

#[test]
fn chat_clear_resets_the_conversation() {
    let model = tiny();
    let args = ["-m", &model, "--temp", "0", "-n", "6", "-t", "1"];
    let o = chat(&args, "Hello there\n/clear\nHello there\n");
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("conversation cleared"), "{err}");
    // After /clear the whole (identical) prompt is evaluated again and gets the same reply.
    let counts = turn_prompt_tokens(&err);
    assert_eq!(counts.len(), 2, "{err}");
    assert_eq!(counts[0], counts[1], "{err}");
    let out = stdout(&o);
    let replies: Vec<&str> = out.split("> ").filter(|s| !s.trim().is_empty()).collect();
    assert_eq!(replies.len(), 2, "{out:?}");
    assert_eq!(replies[0], replies[1]);
}

#[test]
fn chat_exits_cleanly_on_eof() {
    let o = chat(&["-m", &tiny(), "--temp", "0", "-n", "4"], "");
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let o = chat(&["-m", &tiny(), "--temp", "0", "-n", "4"], "hi");
    assert!(o.status.success(), "stderr: {}", stderr(&o));
}

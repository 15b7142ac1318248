//! End-to-end tests of `grist bench`: the built binary on a tiny fixture model. They check the
//! output's shape and figures' consistency, never speed.

use std::path::Path;
use std::process::{Command, Output};

const GRIST: &str = env!("CARGO_BIN_EXE_grist");

fn tiny() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/tiny-llama-q4_0.gguf")
        .to_string_lossy()
        .into_owned()
}

fn grist(args: &[&str]) -> Output {
    Command::new(GRIST).args(args).output().expect("grist runs")
}

#[test]
fn json_has_one_object_per_test_with_llama_bench_fields() {
    let model = tiny();
    let o = grist(&[
        "bench",
        "-m",
        &model,
        "-p",
        "16",
        "-n",
        "4",
        "-r",
        "3",
        "-t",
        "2",
        "-o",
        "json",
        "--no-roofline",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let tests: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    assert_eq!(tests.len(), 2, "{text}");
    let (pp, tg) = (&tests[0], &tests[1]);
    assert_eq!(
        (pp["n_prompt"].as_u64(), pp["n_gen"].as_u64()),
        (Some(16), Some(0))
    );
    assert_eq!(
        (tg["n_prompt"].as_u64(), tg["n_gen"].as_u64()),
        (Some(0), Some(4))
    );
    for t in &tests {
        assert_eq!(t["n_threads"].as_u64(), Some(2));
        let samples: Vec<f64> = t["samples_ts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(samples.len(), 3);
        assert!(samples.iter().all(|&s| s > 0.0 && s.is_finite()));
        let mean = samples.iter().sum::<f64>() / 3.0;
        assert!((t["avg_ts"].as_f64().unwrap() - mean).abs() <= 1e-9 * mean);
        assert!(t["stddev_ts"].as_f64().unwrap() >= 0.0);
        assert!(t.get("roofline").is_none(), "--no-roofline");
        // The CPU, so that runs on two hosts are seen to be comparable or not.
        assert!(t["cpu_info"].is_string(), "{t}");
        for field in ["cpu_family", "cpu_model", "cpu_stepping"] {
            assert!(t[field].is_u64(), "{field}: {t}");
        }
        assert!(
            t["cpu_uarch"].is_string() || t["cpu_uarch"].is_null(),
            "{t}"
        );
    }
    #[cfg(target_arch = "x86_64")]
    assert!(
        tests[0]["cpu_family"].as_u64() > Some(0),
        "cpuid family: {}",
        tests[0]
    );
}

#[test]
fn tg_roofline_is_taken_against_a_probe_after_each_repetition() {
    let model = tiny();
    let o = grist(&[
        "bench", "-m", &model, "-p", "0", "-n", "2", "-r", "3", "-t", "2", "-o", "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tg: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let roof = &tg["roofline"];
    assert_eq!(roof["unit"].as_str(), Some("GB/s"), "{tg}");
    let probes: Vec<f64> = roof["limit_samples"]
        .as_array()
        .expect("limit_samples")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(probes.len(), 3, "one probe pass per repetition: {tg}");
    assert!(probes.iter().all(|&b| b > 0.0 && b.is_finite()), "{tg}");
    let limit = roof["limit"].as_f64().unwrap();
    let mean = probes.iter().sum::<f64>() / 3.0;
    assert!(
        (limit - mean).abs() <= 1e-9 * mean,
        "limit {limit} vs mean {mean}"
    );
    let (achieved, fraction) = (
        roof["achieved"].as_f64().unwrap(),
        roof["fraction"].as_f64().unwrap(),
    );
    assert!((fraction - achieved / limit).abs() <= 1e-9, "{tg}");
}

#[test]
fn markdown_table_roofline_and_profile() {
    let model = tiny();
    let o = grist(&[
        "bench",
        "-m",
        &model,
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--profile",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("| model | size | params | isa | threads | test | t/s | roofline |"));
    assert!(
        text.contains("| pp8 |") && text.contains("| tg2 |"),
        "{text}"
    );
    assert!(
        text.contains("GB/s (") && text.contains("GOPS ("),
        "roofline shares: {text}"
    );
    assert!(
        text.contains("tg2's share is against a probe pass right after each repetition: "),
        "{text}"
    );
    let cpu = text
        .lines()
        .find(|l| l.starts_with("cpu: "))
        .unwrap_or_else(|| panic!("no cpu line: {text}"));
    assert!(cpu.contains(" (family ") && cpu.ends_with(')'), "{cpu}");
    // Where the ISA has an int8 multiply-add instruction, the hardware line puts the kernel
    // peak and pp against it (scalar, forced by GRIST_ISA in one CI pass, has none).
    if !text.contains("| scalar |") {
        let hw = text
            .lines()
            .find(|l| l.starts_with("hardware: "))
            .unwrap_or_else(|| panic!("no hardware line: {text}"));
        assert!(
            hw.contains("GOPS on 1 threads") && hw.contains("pp8 reaches"),
            "{hw}"
        );
        // AVX-512 also shows the ceiling of the panel kernel's instruction mix.
        if text.contains("| avx512 |") {
            assert!(
                hw.contains("with the panel kernel's float work per 32-value block"),
                "{hw}"
            );
        }
    }
    // The per-operation breakdown names each matmul role, and its shares add up to ~100 %.
    for op in [
        "matmul.q",
        "matmul.down",
        "matmul.output",
        "attention",
        "norm",
    ] {
        assert!(text.contains(&format!("| {op} |")), "{op} missing: {text}");
    }
    let profile = text.split("profile of tg2").nth(1).expect("tg profile");
    let total: f64 = profile
        .lines()
        .filter_map(|l| l.split('|').nth(4))
        .filter_map(|c| c.trim().strip_suffix(" %"))
        .filter_map(|c| c.parse::<f64>().ok())
        .sum();
    assert!((total - 100.0).abs() < 1.0, "shares sum to {total}");
}

#[test]
fn bad_arguments_are_refused_with_an_error() {
    let model = tiny();
    let o = grist(&["bench", "-m", &model, "-p", "0", "-n", "0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: nothing to run"), "{err}");
    let o = grist(&["bench", "-m", "/nonexistent.gguf"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    // No repetitions would measure nothing: refused by the flag parser (clap's usual
    // message and hint), not run once.
    let o = grist(&["bench", "-m", &model, "-r", "0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("'0' for '--repetitions"), "{err}");
}

#[test]
fn depth_runs_the_tests_after_that_much_context() {
    let model = tiny();
    let run = |extra: &[&str]| {
        let mut args = vec!["bench", "-m", &model, "-p", "4", "-n", "2", "-d", "8"];
        args.extend_from_slice(extra);
        grist(&args)
    };
    let o = run(&["-r", "2", "-t", "2", "-o", "json", "--no-roofline"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    for line in text.lines() {
        let t: serde_json::Value = serde_json::from_str(line).expect("JSON per test");
        assert_eq!(t["n_depth"].as_u64(), Some(8), "{t}");
        assert!(t["avg_ts"].as_f64().unwrap() > 0.0, "{t}");
    }
    assert_eq!(text.lines().count(), 2, "{text}");
    let o = run(&["-r", "1", "--no-roofline"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("| pp4 @ d8 |") && text.contains("| tg2 @ d8 |"),
        "{text}"
    );
    // Past the model's training context: a one-line error, before anything is allocated.
    let o = grist(&["bench", "-m", &model, "-d", "1000000000000"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: -d 1000000000000") && err.lines().count() == 1,
        "{err}"
    );
}

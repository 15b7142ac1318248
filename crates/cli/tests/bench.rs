//! End-to-end tests of `grist bench`: the built binary on a tiny fixture model. They check the
//! output's shape and figures' consistency, never speed.

use std::path::Path;
use std::process::{Command, Output};

const GRIST: &str = env!("CARGO_BIN_EXE_grist");

fn tiny() -> String {
    tiny_named("tiny-llama-q4_0.gguf")
}

fn tiny_named(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

fn grist(args: &[&str]) -> Output {
    Command::new(GRIST).args(args).output().expect("grist runs")
}

/// `grist bench -m MODEL` followed by `flags` (split on whitespace).
fn bench(model: &str, flags: &str) -> Output {
    let mut args = vec!["bench", "-m", model];
    args.extend(flags.split_whitespace());
    grist(&args)
}

#[test]
fn json_has_one_object_per_test_with_llama_bench_fields() {
    let model = tiny();
    let o = bench(&model, "-p 16 -n 4 -r 3 -t 2 -o json --no-roofline");
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
    let o = bench(&model, "-p 0 -n 2 -r 3 -t 2 -o json");
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
    let o = bench(&model, "-p 8 -n 2 -r 1 -t 1 --profile");
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
            (hw.contains("GOPS on 1 thread,") || hw.contains("GOPS on 1 thread ("))
                && hw.contains("pp8 reaches"),
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
    // (A llama has no norm row: its layer norms run inside the activation quantization.)
    for op in [
        "matmul.q",
        "matmul.down",
        "matmul.output",
        "attention",
        "quantize-act",
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
    let o = bench(&model, "-p 0 -n 0");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: nothing to run"), "{err}");
    let o = grist(&["bench", "-m", "/nonexistent.gguf"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    // No repetitions would measure nothing: refused by the flag parser (clap's usual
    // message and hint), not run once.
    let o = bench(&model, "-r 0");
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
    let o = bench(&model, "-d 1000000000000");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: -d 1000000000000") && err.lines().count() == 1,
        "{err}"
    );
}

/// Parses a markdown table row into its trimmed cells.
fn cells(line: &str) -> Vec<&str> {
    line.trim_matches('|').split('|').map(str::trim).collect()
}

#[test]
fn lists_run_every_combination_in_llama_bench_order() {
    let (q4, q8) = (tiny(), tiny_named("tiny-llama-q8_0.gguf"));
    let mut args = vec!["bench", "-m", &q4, "-m", &q8];
    args.extend("-p 4,8 -n 2,0 -d 0,3 -t 1,2 -r 1 -o json --no-roofline".split_whitespace());
    let o = grist(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let got: Vec<(String, u64, u64, u64, u64)> = text
        .lines()
        .map(|l| {
            let t: serde_json::Value = serde_json::from_str(l).expect("JSON per test");
            assert!(t["avg_ts"].as_f64().unwrap() > 0.0, "{t}");
            (
                t["model_filename"].as_str().unwrap().to_string(),
                t["n_threads"].as_u64().unwrap(),
                t["n_depth"].as_u64().unwrap(),
                t["n_prompt"].as_u64().unwrap(),
                t["n_gen"].as_u64().unwrap(),
            )
        })
        .collect();
    // Per model, per thread count, per depth: the pp tests, then the tg tests (-n 0: none).
    let mut want = Vec::new();
    for model in ["tiny-llama-q4_0.gguf", "tiny-llama-q8_0.gguf"] {
        for threads in [1, 2] {
            for depth in [0, 3] {
                for (p, n) in [(4, 0), (8, 0), (0, 2)] {
                    want.push((model.to_string(), threads, depth, p, n));
                }
            }
        }
    }
    assert_eq!(got, want, "{text}");
}

#[test]
fn several_thread_counts_add_a_scaling_table_of_the_measured_means() {
    let model = tiny();
    let o = bench(&model, "-p 8 -n 2 -t 2,1 -r 2 --no-roofline");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    // t/s per (threads, test) from the main table.
    let mut ts = std::collections::HashMap::new();
    for line in text.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let c = cells(line);
        let mean: f64 = c[6].split(' ').next().unwrap().parse().unwrap();
        ts.insert((c[4].to_string(), c[5].to_string()), mean);
    }
    assert_eq!(ts.len(), 4, "{text}");
    let table = text
        .split("thread scaling (t/s relative to 2 threads):")
        .nth(1)
        .unwrap_or_else(|| panic!("no scaling table: {text}"));
    let lines: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(cells(lines[0]), ["model", "test", "2", "1"], "{table}");
    assert_eq!(lines.len(), 4, "header, rule, pp8, tg2: {table}");
    for line in &lines[2..] {
        let c = cells(line);
        let test = c[1].to_string();
        assert_eq!(c[2], "1.00×", "{line}");
        let ratio: f64 = c[3].trim_end_matches('×').parse().unwrap();
        let want = ts[&("1".to_string(), test.clone())] / ts[&("2".to_string(), test)];
        assert!((ratio - want).abs() <= 0.006, "{line}: want {want:.3}");
    }
    // One thread count: no scaling table.
    let o = bench(&model, "-p 8 -n 0 -t 1 -r 1 --no-roofline");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("thread scaling"));
}

#[test]
fn bad_lists_are_refused_before_anything_runs() {
    let model = tiny();
    for (args, want) in [
        ("-t 1,0", "error: -t/--threads must be at least 1"),
        ("-p 8,x", "invalid value 'x' for '--n-prompt"),
        ("-p 0,0 -n 0", "error: nothing to run"),
    ] {
        let o = bench(&model, args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing measured");
    }
    // A second model that does not load: refused before the first is measured.
    let o = bench(&model, "-m /nonexistent.gguf -r 1");
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.gguf"));
}

//! `grist_model::repack`: the fixture models and a hand-built GGUF are repacked and read
//! back. Metadata is the input's plus the alignment and `grist.repack` (the interleaved types
//! written); tensor names, order and shapes are unchanged; every repackable Q4_K, Q6_K, Q8_0,
//! Q4_1 or Q5_0 matrix is Q4_K_R16, Q6_K_R16, Q8_0_R16, Q4_1_R16 or Q5_0_R16, and each
//! de-interleaves to the original bytes exactly; every other tensor is byte-identical; every
//! tensor starts on a 64-byte line. Bad paths are refused without touching the input.

mod common;

use std::path::{Path, PathBuf};

use grist_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use grist_kernels::formats::interleaved::deinterleave;
use grist_model::repack::{
    is_repackable, repack_file, repack_file_with_progress, RepackOptions, RepackReport,
};
use grist_model::{Model, Session};

/// A fresh directory in cargo's per-test scratch directory.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("repack")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> PathBuf {
    common::fixture_model(name).unwrap_or_else(|| panic!("fixture {name}.gguf is missing"))
}

/// Checks `output` against `input` as the module documentation promises; returns the names
/// of the tensors that were repacked.
fn check_repacked(input: &Path, output: &Path, report: &RepackReport) -> Vec<String> {
    let src = GgufFile::open(input).unwrap();
    let out = GgufFile::open(output).unwrap();

    // Metadata: the input's, in order, with general.alignment = 64 (in place or appended)
    // and grist.repack appended: the interleaved types the output holds, in id order.
    let mut layouts: Vec<GgmlType> = out
        .tensors()
        .iter()
        .map(|t| t.ty)
        .filter(|t| t.interleaved().is_some())
        .collect();
    layouts.sort();
    layouts.dedup();
    let layouts: Vec<&str> = layouts.iter().map(|t| t.name()).collect();
    let layouts = layouts.join(",");
    let mut expected = src.metadata().to_vec();
    match expected.iter_mut().find(|(k, _)| k == "general.alignment") {
        Some((_, v)) => *v = Value::U32(64),
        None => expected.push(("general.alignment".into(), Value::U32(64))),
    }
    expected.push(("grist.repack".into(), Value::from(layouts.as_str())));
    assert_eq!(out.metadata(), &expected[..]);
    assert_eq!(out.alignment(), 64);
    assert_eq!(out.get_str("grist.repack").unwrap(), layouts);

    // Tensors: same names, order and shapes; 64-byte aligned in the file.
    assert_eq!(out.tensors().len(), src.tensors().len());
    assert_eq!(out.data_offset() % 64, 0);
    let mut repacked = Vec::new();
    let (mut bytes_repacked, mut bytes_copied) = (0, 0);
    for (s, o) in src.tensors().iter().zip(out.tensors()) {
        assert_eq!(o.name, s.name);
        assert_eq!(o.dims, s.dims, "{}", s.name);
        assert_eq!(o.n_bytes, s.n_bytes, "{}", s.name);
        assert_eq!(o.offset % 64, 0, "{} at {}", s.name, o.offset);
        let (s_data, o_data) = (src.tensor_data(s), out.tensor_data(o));
        let matrix = s.dims.len() == 2 && s.dims[1] % 16 == 0;
        let eligible = match s.ty {
            GgmlType::Q4_K if matrix => Some(GgmlType::Q4_K_R16),
            GgmlType::Q6_K if matrix => Some(GgmlType::Q6_K_R16),
            GgmlType::Q8_0 if matrix && s.dims[0] % 64 == 0 => Some(GgmlType::Q8_0_R16),
            GgmlType::Q4_1 if matrix && s.dims[0] % 64 == 0 => Some(GgmlType::Q4_1_R16),
            GgmlType::Q5_0 if matrix && s.dims[0] % 64 == 0 => Some(GgmlType::Q5_0_R16),
            _ => None,
        };
        if let Some(ty) = eligible {
            assert_eq!(o.ty, ty, "{}", s.name);
            assert_ne!(o_data, s_data, "{}: bytes were not reordered", s.name);
            let row_bytes = s_data.len() / s.dims[1] as usize;
            let mut plain = vec![0u8; o_data.len()]; // [rows, row_bytes]
            deinterleave(ty, o_data, row_bytes, &mut plain).unwrap();
            assert!(plain == s_data, "{}: de-interleaves to other bytes", s.name);
            repacked.push(s.name.clone());
            bytes_repacked += s.n_bytes;
        } else {
            assert_eq!(o.ty, s.ty, "{}", s.name);
            assert!(o_data == s_data, "{}: copied bytes differ", s.name);
            bytes_copied += s.n_bytes;
        }
    }

    assert_eq!(report.n_repacked, repacked.len());
    assert_eq!(
        report.repacked_types.iter().map(|(_, n)| n).sum::<usize>(),
        repacked.len()
    );
    assert_eq!(report.n_copied, src.tensors().len() - repacked.len());
    assert_eq!(report.bytes_repacked, bytes_repacked);
    assert_eq!(report.bytes_copied, bytes_copied);
    assert_eq!(report.file_bytes, out.file_size());
    repacked
}

/// No temporary file is left next to the output.
fn only_files(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, names);
}

#[test]
fn fixtures_repack_losslessly() {
    // Q4_K_M: every Q4_K and Q6_K matrix has a multiple of 16 rows; token_embd is Q6_K in
    // qwen3 (tied: also the output product) and Q4_K in llama, whose output is Q6_K; layer
    // 1's attn_v and ffn_down are Q6_K. Only the F32 norms stay.
    for (name, n_repacked) in [("tiny-qwen3-q4_k_m", 15), ("tiny-llama-q4_k_m", 16)] {
        let input = fixture(name);
        let dir = scratch(name);
        let output = dir.join("out.gguf");
        let mut seen = Vec::new();
        let report =
            repack_file_with_progress(&input, &output, &RepackOptions::default(), &mut |p| {
                assert_eq!(p.index, seen.len());
                seen.push((p.name.to_string(), p.repacked));
            })
            .unwrap();
        let repacked = check_repacked(&input, &output, &report);
        assert_eq!(repacked.len(), n_repacked, "{name}: {repacked:?}");
        assert!(report.kept.is_empty(), "{:?}", report.kept);
        for t in [
            "blk.0.ffn_down.weight",
            "blk.1.ffn_down.weight",
            "token_embd.weight",
        ] {
            assert!(repacked.contains(&t.to_string()), "{name}: {t}");
        }
        assert_eq!(
            repacked.contains(&"output.weight".to_string()),
            name.contains("llama")
        );
        let progress_repacked: Vec<&String> =
            seen.iter().filter(|(_, r)| *r).map(|(n, _)| n).collect();
        assert_eq!(progress_repacked, repacked.iter().collect::<Vec<_>>());
        only_files(&dir, &["out.gguf"]);

        // One 16-row group per chunk writes the same file as the default chunking.
        let small = dir.join("small-chunks.gguf");
        repack_file(&input, &small, &RepackOptions { chunk_bytes: 1 }).unwrap();
        assert!(
            std::fs::read(&small).unwrap() == std::fs::read(&output).unwrap(),
            "{name}: chunking changed the output"
        );

        // Repacking a repacked file copies its Q4_K_R16 tensors as they are.
        let again = dir.join("again.gguf");
        let report = repack_file(&output, &again, &RepackOptions::default()).unwrap();
        assert_eq!(report.n_repacked, 0);
        assert!(
            std::fs::read(&again).unwrap() == std::fs::read(&output).unwrap(),
            "{name}: a second repack changed the file"
        );
    }
}

/// Logits of a 12-token prompt (one batch, every position), then of 4 single-token steps.
fn prompt_then_steps(model: &Model) -> (Vec<f32>, Vec<f32>) {
    let n_vocab = model.n_vocab() as u32;
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % n_vocab).collect();
    let mut s = Session::new(model, 64).unwrap();
    let prompt = s.eval(&tokens, true).unwrap().to_vec();
    let mut steps = Vec::new();
    for &t in &tokens[..4] {
        steps.extend_from_slice(s.eval(&[t], false).unwrap());
    }
    (prompt, steps)
}

#[test]
fn a_repacked_model_runs_like_the_original() {
    // qwen3's tied Q6_K token_embd is both the embedding (rows gathered from the interleaved
    // groups) and the output product; llama's output is Q6_K.
    for name in ["tiny-qwen3-q4_k_m", "tiny-llama-q4_k_m"] {
        let input = fixture(name);
        let dir = scratch(&format!("run-{name}"));
        let output = dir.join("out.gguf");
        repack_file(&input, &output, &RepackOptions::default()).unwrap();
        let (plain, packed) = (Model::load(&input).unwrap(), Model::load(&output).unwrap());
        let (prompt_p, steps_p) = prompt_then_steps(&plain);
        let (prompt_i, steps_i) = prompt_then_steps(&packed);
        // The prompt path de-interleaves the weights and runs the same kernels: the same bits.
        assert!(
            prompt_p
                .iter()
                .zip(&prompt_i)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: prompt logits differ"
        );
        // Token generation runs the interleaved kernels where the table has them: the same
        // integer sums, float rounding apart.
        let scale = steps_p.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (i, (a, b)) in steps_p.iter().zip(&steps_i).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{name}: step logit {i}: {a} vs {b}"
            );
        }
    }
}

/// Bytes of `rows × cols` values of `ty` whose blocks are all different (the permutation is
/// visible in every byte).
fn block_bytes(ty: GgmlType, rows: usize, cols: usize, seed: usize) -> Vec<u8> {
    let n = rows * cols / ty.block_elems() * ty.block_bytes();
    (0..n).map(|i| (i * 31 + i / 253 + seed) as u8).collect()
}

/// A built tensor: name, type, dims (`[cols, rows]` for a matrix) and bytes.
type Built<'a> = (&'a str, GgmlType, Vec<u64>, Vec<u8>);

/// Writes `tensors` as a llama GGUF `in.gguf` in `dir` and repacks it to `out.gguf` there;
/// returns the input, the output and the report.
fn repack_built(dir: &Path, tensors: &[Built<'_>]) -> (PathBuf, PathBuf, RepackReport) {
    let input = dir.join("in.gguf");
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    for (name, ty, dims, data) in tensors {
        w.add_tensor(name, *ty, dims, data.clone()).unwrap();
    }
    w.write_to_path(&input).unwrap();
    let output = dir.join("out.gguf");
    let report = repack_file(&input, &output, &RepackOptions::default()).unwrap();
    (input, output, report)
}

/// Q4_K bytes, see [`block_bytes`].
fn q4_k_bytes(rows: usize, cols: usize, seed: usize) -> Vec<u8> {
    block_bytes(GgmlType::Q4_K, rows, cols, seed)
}

#[test]
fn only_2d_q4_k_and_q6_k_with_whole_groups_are_repacked() {
    let dir = scratch("built");
    let input = dir.join("in.gguf");
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    w.add("general.alignment", Value::U32(32)).unwrap();
    w.add("general.name", "repack test").unwrap();
    let norm: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let tensors: Vec<(&str, GgmlType, Vec<u64>, Vec<u8>)> = vec![
        ("norm", GgmlType::F32, vec![64], norm),
        (
            "rows24",
            GgmlType::Q4_K,
            vec![512, 24],
            q4_k_bytes(24, 512, 1),
        ),
        (
            "rows32",
            GgmlType::Q4_K,
            vec![512, 32],
            q4_k_bytes(32, 512, 2),
        ),
        (
            "three_d",
            GgmlType::Q4_K,
            vec![256, 16, 2],
            q4_k_bytes(32, 256, 3),
        ),
        ("vector", GgmlType::Q4_K, vec![256], q4_k_bytes(1, 256, 4)),
        (
            "r16",
            GgmlType::Q4_K_R16,
            vec![256, 16],
            q4_k_bytes(16, 256, 5),
        ),
        (
            "q6_rows48",
            GgmlType::Q6_K,
            vec![768, 48],
            block_bytes(GgmlType::Q6_K, 48, 768, 6),
        ),
        (
            "q6_rows8",
            GgmlType::Q6_K,
            vec![256, 8],
            block_bytes(GgmlType::Q6_K, 8, 256, 7),
        ),
        (
            "q6_r16",
            GgmlType::Q6_K_R16,
            vec![256, 16],
            block_bytes(GgmlType::Q6_K, 16, 256, 8),
        ),
        ("q5", GgmlType::Q5_K, vec![256, 16], vec![7u8; 16 * 176]),
    ];
    for (name, ty, dims, data) in &tensors {
        w.add_tensor(name, *ty, dims, data.clone()).unwrap();
    }
    w.write_to_path(&input).unwrap();
    let before = std::fs::read(&input).unwrap();

    let output = dir.join("out.gguf");
    let report = repack_file(&input, &output, &RepackOptions::default()).unwrap();
    assert_eq!(
        check_repacked(&input, &output, &report),
        ["rows32", "q6_rows48"]
    );
    assert_eq!(report.kept, ["rows24", "three_d", "vector", "q6_rows8"]);
    let out = GgufFile::open(&output).unwrap();
    assert_eq!(out.tensor("rows24").unwrap().ty(), GgmlType::Q4_K);
    assert_eq!(out.tensor("r16").unwrap().ty(), GgmlType::Q4_K_R16);
    assert_eq!(out.tensor("q6_rows48").unwrap().ty(), GgmlType::Q6_K_R16);
    assert_eq!(out.tensor("q6_rows8").unwrap().ty(), GgmlType::Q6_K);
    assert_eq!(out.tensor("q6_r16").unwrap().ty(), GgmlType::Q6_K_R16);
    assert_eq!(out.tensor("q5").unwrap().ty(), GgmlType::Q5_K);
    // general.alignment was replaced where it stood.
    assert_eq!(
        out.metadata()[1],
        ("general.alignment".into(), Value::U32(64))
    );
    assert!(
        std::fs::read(&input).unwrap() == before,
        "the input changed"
    );
    for t in out.tensors() {
        assert!(!is_repackable(t), "{} is left to repack", t.name);
    }
}

#[test]
fn q8_0_fixtures_repack_losslessly() {
    // Every Q8_0 matrix of the tiny llamas has 64-value rows and a multiple of 16 rows: the
    // layers' 7 matrices × 2 layers, and the output (untied) or token_embd (tied).
    for name in ["tiny-llama-q8_0", "tiny-llama-tied-q8_0"] {
        let input = fixture(name);
        let dir = scratch(name);
        let output = dir.join("out.gguf");
        let report = repack_file(&input, &output, &RepackOptions::default()).unwrap();
        let repacked = check_repacked(&input, &output, &report);
        assert_eq!(
            report.repacked_types,
            [(GgmlType::Q8_0_R16, repacked.len())],
            "{name}"
        );
        assert!(report.kept.is_empty(), "{:?}", report.kept);
        assert!(
            repacked.contains(&"token_embd.weight".to_string()),
            "{name}"
        );
        assert!(
            repacked.contains(&"blk.1.ffn_down.weight".to_string()),
            "{name}"
        );
        let out = GgufFile::open(&output).unwrap();
        assert_eq!(out.get_str("grist.repack").unwrap(), "Q8_0_R16");
        only_files(&dir, &["out.gguf"]);
        // A second repack copies the Q8_0_R16 tensors as they are.
        let again = dir.join("again.gguf");
        let report = repack_file(&output, &again, &RepackOptions::default()).unwrap();
        assert_eq!(report.n_repacked, 0);
        assert!(
            std::fs::read(&again).unwrap() == std::fs::read(&output).unwrap(),
            "{name}: a second repack changed the file"
        );
    }
}

#[test]
fn only_2d_q8_0_with_whole_groups_and_columns_is_repacked() {
    let dir = scratch("built-q8_0");
    let q8_0 = |rows, cols, seed| block_bytes(GgmlType::Q8_0, rows, cols, seed);
    let tensors: Vec<Built<'_>> = vec![
        ("rows32", GgmlType::Q8_0, vec![640, 32], q8_0(32, 640, 1)),
        ("rows24", GgmlType::Q8_0, vec![640, 24], q8_0(24, 640, 2)),
        ("cols96", GgmlType::Q8_0, vec![96, 16], q8_0(16, 96, 3)),
        ("three_d", GgmlType::Q8_0, vec![64, 16, 2], q8_0(32, 64, 4)),
        ("vector", GgmlType::Q8_0, vec![64], q8_0(1, 64, 5)),
        (
            "q4_k",
            GgmlType::Q4_K,
            vec![256, 16],
            q4_k_bytes(16, 256, 6),
        ),
    ];
    let (input, output, report) = repack_built(&dir, &tensors);
    assert_eq!(check_repacked(&input, &output, &report), ["rows32", "q4_k"]);
    assert_eq!(
        report.repacked_types,
        [(GgmlType::Q8_0_R16, 1), (GgmlType::Q4_K_R16, 1)]
    );
    assert_eq!(report.kept, ["rows24", "cols96", "three_d", "vector"]);
    let out = GgufFile::open(&output).unwrap();
    assert_eq!(out.get_str("grist.repack").unwrap(), "Q8_0_R16,Q4_K_R16");
    // The codes are stored + 128: the first code of row 0 sits at byte 64 of the matrix.
    let (src, dst) = (
        GgufFile::open(&input).unwrap(),
        out.tensor("rows32").unwrap(),
    );
    let first = src.tensor_data(&src.tensors()[0])[2];
    assert_eq!(dst.data[64], first ^ 0x80);
}

#[test]
fn the_q5_0_fixture_repacks_losslessly_and_runs_like_the_original() {
    // tiny-llama-q5_0: 15 Q5_0 matrices (token_embd included; rows of 256 or 512 values, 128
    // to 1024 rows) and the Q6_K output.
    let name = "tiny-llama-q5_0";
    let input = fixture(name);
    let dir = scratch(name);
    let output = dir.join("out.gguf");
    let report = repack_file(&input, &output, &RepackOptions::default()).unwrap();
    let repacked = check_repacked(&input, &output, &report);
    assert_eq!(
        report.repacked_types,
        [(GgmlType::Q5_0_R16, 15), (GgmlType::Q6_K_R16, 1)]
    );
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert!(repacked.contains(&"token_embd.weight".to_string()));
    let out = GgufFile::open(&output).unwrap();
    assert_eq!(out.get_str("grist.repack").unwrap(), "Q5_0_R16,Q6_K_R16");
    // The same prompt logits bit for bit (de-interleaved rows, the same kernels), the steps
    // up to float rounding (the interleaved kernel sums as the scalar reference does).
    let (plain, packed) = (Model::load(&input).unwrap(), Model::load(&output).unwrap());
    let ((prompt_p, steps_p), (prompt_i, steps_i)) =
        (prompt_then_steps(&plain), prompt_then_steps(&packed));
    assert!(
        prompt_p
            .iter()
            .zip(&prompt_i)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "prompt logits differ"
    );
    let scale = steps_p.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    for (i, (a, b)) in steps_p.iter().zip(&steps_i).enumerate() {
        assert!((a - b).abs() <= 1e-4 * scale, "step logit {i}: {a} vs {b}");
    }
    only_files(&dir, &["out.gguf"]);
}

#[test]
fn only_2d_q5_0_with_whole_groups_and_columns_is_repacked() {
    let dir = scratch("built-q5_0");
    let q5_0 = |rows, cols, seed| block_bytes(GgmlType::Q5_0, rows, cols, seed);
    let tensors: Vec<Built<'_>> = vec![
        ("rows32", GgmlType::Q5_0, vec![896, 32], q5_0(32, 896, 1)),
        ("rows24", GgmlType::Q5_0, vec![896, 24], q5_0(24, 896, 2)),
        ("cols96", GgmlType::Q5_0, vec![96, 16], q5_0(16, 96, 3)),
        ("three_d", GgmlType::Q5_0, vec![64, 16, 2], q5_0(32, 64, 4)),
        ("q8_0", GgmlType::Q8_0, vec![64, 16], vec![0x3c; 16 * 68]),
    ];
    let (input, output, report) = repack_built(&dir, &tensors);
    assert_eq!(check_repacked(&input, &output, &report), ["rows32", "q8_0"]);
    assert_eq!(
        report.repacked_types,
        [(GgmlType::Q5_0_R16, 1), (GgmlType::Q8_0_R16, 1)]
    );
    assert_eq!(report.kept, ["rows24", "cols96", "three_d"]);
    let out = GgufFile::open(&output).unwrap();
    assert_eq!(out.get_str("grist.repack").unwrap(), "Q5_0_R16,Q8_0_R16");
    // Row 0's first code dword (its qs[0..4]) sits at byte 192 of the matrix, row 1's at 196.
    let (src, dst) = (
        GgufFile::open(&input).unwrap(),
        out.tensor("rows32").unwrap(),
    );
    let plain = src.tensor_data(&src.tensors()[0]);
    assert_eq!(dst.data[192..196], plain[6..10]);
    assert_eq!(dst.data[196..200], plain[28 * 22 + 6..28 * 22 + 10]);
}

#[test]
fn bad_paths_are_refused_and_the_input_is_untouched() {
    let dir = scratch("errors");
    let input = dir.join("model.gguf");
    std::fs::copy(fixture("tiny-qwen3-q4_k_m"), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let opts = RepackOptions::default();
    let err = |i: &Path, o: &Path| repack_file(i, o, &opts).unwrap_err().to_string();

    // The output is the input: same path, another spelling, a symlink, a hard link.
    let e = err(&input, &input);
    assert!(e.contains("is the input file"), "{e}");
    let spelled = dir.join("../errors/./model.gguf");
    let e = err(&input, &spelled);
    assert!(e.contains("is the input file"), "{e}");
    #[cfg(unix)]
    {
        let link = dir.join("link.gguf");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert!(err(&input, &link).contains("is the input file"));
        assert!(err(&link, &input).contains("is the input file"));
        let hard = dir.join("hard.gguf");
        std::fs::hard_link(&input, &hard).unwrap();
        assert!(err(&input, &hard).contains("is the input file"));
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&hard).unwrap();
    }
    assert!(
        std::fs::read(&input).unwrap() == before,
        "the input changed"
    );

    // Missing input, non-GGUF input, missing output directory, a directory as output.
    let out = dir.join("out.gguf");
    let e = err(&dir.join("missing.gguf"), &out);
    assert!(e.contains("missing.gguf"), "{e}");
    let text = dir.join("text.gguf");
    std::fs::write(&text, "hello, world\n").unwrap();
    let e = err(&text, &out);
    assert!(
        e.contains("text.gguf") && e.contains("not a GGUF file"),
        "{e}"
    );
    let e = err(&input, &dir.join("no-such-dir/out.gguf"));
    assert!(
        e.contains("no-such-dir") && e.contains("No such file"),
        "{e}"
    );
    let e = err(&input, &dir);
    assert!(e.contains("is a directory"), "{e}");

    // Nothing was written.
    only_files(&dir, &["model.gguf", "text.gguf"]);
}

#[test]
fn the_q4_1_fixture_repacks_losslessly() {
    // Every Q4_1 matrix of the tiny llama (token_embd, 7 per layer × 2 layers) has 256-value
    // rows and a multiple of 16 rows; the output is Q6_K.
    let name = "tiny-llama-q4_1";
    let input = fixture(name);
    let dir = scratch(name);
    let output = dir.join("out.gguf");
    let report = repack_file(&input, &output, &RepackOptions::default()).unwrap();
    let repacked = check_repacked(&input, &output, &report);
    assert_eq!(
        report.repacked_types,
        [(GgmlType::Q4_1_R16, 15), (GgmlType::Q6_K_R16, 1)]
    );
    assert_eq!(repacked.len(), 16);
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    let out = GgufFile::open(&output).unwrap();
    assert_eq!(out.get_str("grist.repack").unwrap(), "Q4_1_R16,Q6_K_R16");
    assert_eq!(
        out.tensor("token_embd.weight").unwrap().ty(),
        GgmlType::Q4_1_R16
    );
    only_files(&dir, &["out.gguf"]);
    // A second repack copies the Q4_1_R16 tensors as they are.
    let again = dir.join("again.gguf");
    let report = repack_file(&output, &again, &RepackOptions::default()).unwrap();
    assert_eq!(report.n_repacked, 0);
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(&output).unwrap(),
        "a second repack changed the file"
    );
}

#[test]
fn only_2d_q4_1_with_whole_groups_and_columns_is_repacked() {
    let dir = scratch("built-q4_1");
    let q4_1 = |rows, cols, seed| block_bytes(GgmlType::Q4_1, rows, cols, seed);
    let tensors: Vec<Built<'_>> = vec![
        ("rows32", GgmlType::Q4_1, vec![576, 32], q4_1(32, 576, 1)),
        ("rows24", GgmlType::Q4_1, vec![576, 24], q4_1(24, 576, 2)),
        ("cols96", GgmlType::Q4_1, vec![96, 16], q4_1(16, 96, 3)),
        ("three_d", GgmlType::Q4_1, vec![64, 16, 2], q4_1(32, 64, 4)),
        ("vector", GgmlType::Q4_1, vec![64], q4_1(1, 64, 5)),
    ];
    let (input, output, report) = repack_built(&dir, &tensors);
    assert_eq!(check_repacked(&input, &output, &report), ["rows32"]);
    assert_eq!(report.repacked_types, [(GgmlType::Q4_1_R16, 1)]);
    assert_eq!(report.kept, ["rows24", "cols96", "three_d", "vector"]);
    // A pure permutation: row 1's m (its bytes 2..4) sits at byte 64 + 2 of the matrix.
    let (src, out) = (
        GgufFile::open(&input).unwrap(),
        GgufFile::open(&output).unwrap(),
    );
    let row_bytes = 576 / 32 * 20;
    let plain = src.tensor_data(&src.tensors()[0]);
    let dst = out.tensor("rows32").unwrap();
    assert_eq!(dst.data[66..68], plain[row_bytes + 2..row_bytes + 4]);
}

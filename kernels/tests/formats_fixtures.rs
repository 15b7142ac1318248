//! The quantized fixture GGUFs were made by llama-quantize (no imatrix) from the F32 fixtures
//! of the same architecture. Two checks per quantized tensor:
//!
//! 1. dequantizing it lands within the format's error bound of the F32 tensor it came from;
//! 2. quantizing the F32 tensor with grist's reference quantizer reproduces its bytes. The
//!    fraction of identical blocks is printed per type and asserted to be 100 %.
//!
//! The F32 inputs are large and live in `../shared/fixtures/models`; without them the test
//! prints `SKIPPED` and passes.

use grist_gguf::{GgmlType, GgufFile};
use grist_kernels::formats::{dequantize_row, quantize_row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// (quantized fixture in tests/fixtures/models, its F32 source in ../shared/fixtures/models).
const PAIRS: &[(&str, &str)] = &[
    ("tiny-llama-q4_0.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q4_1.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q5_0.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q5_1.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q8_0.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-iq4_nl.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-iq4_xs.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q2_k.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q3_k_m.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q4_k_m.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q5_k_m.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-q6_k.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-tied-q8_0.gguf", "tiny-llama-tied-f32.gguf"),
    ("tiny-qwen2-q4_k_m.gguf", "tiny-qwen2-f32.gguf"),
    ("tiny-qwen3-q4_k_m.gguf", "tiny-qwen3-f32.gguf"),
    ("tiny-gemma3-q4_k_m.gguf", "tiny-gemma3-f32.gguf"),
];

/// Float fixtures converted by llama-quantize from the same F32 file (both in shared/).
const FLOAT_PAIRS: &[(&str, &str)] = &[
    ("tiny-llama-f16.gguf", "tiny-llama-f32.gguf"),
    ("tiny-llama-bf16.gguf", "tiny-llama-f32.gguf"),
];

/// Largest accepted RMS of (dequantized − original) relative to the tensor's RMS. Set from
/// the step size of each format on Gaussian data, with margin: e.g. Q4_0's step is about
/// amax/8 ≈ 0.28 σ for blocks of 32, giving an RMS error ≈ step/√12 ≈ 0.08 σ.
fn rel_rmse_bound(ty: GgmlType) -> f64 {
    use GgmlType::*;
    match ty {
        F16 => 1e-3,
        BF16 => 5e-3,
        Q8_0 => 0.01,
        Q6_K => 0.03,
        Q5_0 | Q5_1 | Q5_K => 0.06,
        Q4_0 | Q4_1 | Q4_K | IQ4_NL | IQ4_XS => 0.12,
        Q3_K => 0.25,
        Q2_K => 0.45,
        _ => panic!("no bound for {ty}"),
    }
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[derive(Default)]
struct Tally {
    blocks: usize,
    identical: usize,
    tensors: usize,
    worst_rel_rmse: f64,
}

fn check_pair(q_path: &Path, f_path: &Path, tally: &mut BTreeMap<GgmlType, Tally>) {
    let qf = GgufFile::open(q_path).unwrap_or_else(|e| panic!("{}: {e}", q_path.display()));
    let ff = GgufFile::open(f_path).unwrap_or_else(|e| panic!("{}: {e}", f_path.display()));
    for info in qf.tensors() {
        let ty = info.ty;
        if ty == GgmlType::F32 {
            continue;
        }
        let src = ff
            .tensor(&info.name)
            .unwrap_or_else(|| panic!("{} missing from {}", info.name, f_path.display()));
        assert_eq!(src.ty(), GgmlType::F32, "{}", info.name);
        assert_eq!(src.dims(), &info.dims[..], "{}", info.name);
        let x = f32_values(src.data);
        let q = qf.tensor_data(info);

        // 1. Dequantization error against the source.
        let mut deq = vec![0.0f32; x.len()];
        dequantize_row(ty, q, &mut deq).unwrap();
        let (mut se, mut sx) = (0.0f64, 0.0f64);
        for (&a, &b) in x.iter().zip(&deq) {
            se += (a as f64 - b as f64).powi(2);
            sx += (a as f64).powi(2);
        }
        let rel = (se / sx.max(f64::MIN_POSITIVE)).sqrt();
        assert!(
            rel <= rel_rmse_bound(ty),
            "{} {}: relative RMS error {rel:.4} above {}",
            q_path.display(),
            info.name,
            rel_rmse_bound(ty)
        );

        // 2. Byte-exact quantization.
        let mut mine = vec![0u8; q.len()];
        quantize_row(ty, &x, &mut mine).unwrap();
        let bb = ty.block_bytes();
        let t = tally.entry(ty).or_default();
        t.tensors += 1;
        t.worst_rel_rmse = t.worst_rel_rmse.max(rel);
        for (a, b) in mine.chunks_exact(bb).zip(q.chunks_exact(bb)) {
            t.blocks += 1;
            t.identical += (a == b) as usize;
        }
    }
}

fn report(tally: &BTreeMap<GgmlType, Tally>) {
    eprintln!("type     tensors   blocks  identical   worst rel. RMS error");
    for (ty, t) in tally {
        eprintln!(
            "{:<8} {:>7} {:>8} {:>9.4}%   {:.4}",
            ty.name(),
            t.tensors,
            t.blocks,
            100.0 * t.identical as f64 / t.blocks as f64,
            t.worst_rel_rmse
        );
    }
}

#[test]
fn fixtures_dequantize_within_bounds_and_quantize_byte_exact() {
    let root = workspace_root();
    let shared = root.join("../shared/fixtures/models");
    let local = root.join("tests/fixtures/models");
    if !shared.join("tiny-llama-f32.gguf").exists() {
        eprintln!(
            "SKIPPED: {} absent, cannot check quantizer agreement",
            shared.display()
        );
        return;
    }
    let mut tally = BTreeMap::new();
    for (q, f) in PAIRS {
        let q_path = if local.join(q).exists() {
            local.join(q)
        } else {
            shared.join(q)
        };
        let f_path = shared.join(f);
        if !f_path.exists() {
            eprintln!("SKIPPED: {} absent", f_path.display());
            continue;
        }
        check_pair(&q_path, &f_path, &mut tally);
    }
    for (q, f) in FLOAT_PAIRS {
        check_pair(&shared.join(q), &shared.join(f), &mut tally);
    }
    report(&tally);
    for (ty, t) in &tally {
        assert_eq!(
            t.identical,
            t.blocks,
            "{ty}: {} of {} blocks differ from llama-quantize",
            t.blocks - t.identical,
            t.blocks
        );
    }
}

//! Kernel benchmarks: the dot product, the matrix-vector product of token generation and the
//! matrix-matrix product of prompt processing, per weight format and per instruction set.
//!
//! Groups (criterion ids `group/function/parameter`):
//! - `vec_dot/<type>/<isa>`: one 4096-value weight row · one pre-quantized activation row,
//!   L1-resident, one thread. Throughput = weight-row bytes ⇒ GB/s.
//! - `matvec/<type>/<isa>/l2` and `…/dram`: weights `[rows, 4096]` × one activation row
//!   (batch 1, as in token generation), on a 2-thread rayon pool, including the activation
//!   quantization. `l2`: rows chosen so the matrix is ~512 KB (stays in L2); `dram`: ≥ 256 MiB
//!   of distinct random rows (8× the L3, so every byte comes from DRAM). Throughput = weight
//!   bytes ⇒ GB/s, to compare with the DRAM read bandwidth
//!   (`cargo run --release -p grist-kernels --example roofline`).
//! - `matmul/<type>/<isa>/n64`: weights `[4096, 4096]` × activations `[64, 4096]` (prompt
//!   processing), 2 threads, including activation quantization. Throughput =
//!   `2·rows·cols·n` elements ⇒ elements/s = FLOP/s.
//! - `quantize_act/<act type>/<isa>/n512`: activations `[512, 4096]` quantized to Q8_0, Q8_1
//!   or Q8_K, 2 threads, with the activation panel where the table has a panel GEMM (what
//!   prompt processing pays once per group of products). Throughput = values ⇒ elements/s.
//!
//! Every available ISA of this CPU is measured (the scalar reference included). The main
//! formats get every group; the other supported formats (F32, Q5_1, Q2_K, Q3_K, IQ4_XS) only
//! the cheap `vec_dot` and `matvec/…/l2` benches. Matrices are built once per type and shared
//! across ISAs; the 256 MiB one only when a `dram` bench actually runs (criterion filters).
//!
//! ```text
//! cargo bench -p grist-benches --bench kernels                      # everything (10-15 min)
//! cargo bench -p grist-benches --bench kernels -- 'matvec/.*/dram'  # one group (regex)
//! cargo bench -p grist-benches --bench kernels -- --test            # smoke run, each once
//! ```
//! Environment: `GRIST_BENCH_THREADS` (default 2) sets the pool size of `matvec`/`matmul`;
//! `GRIST_BENCH_N` (default 64) the activation rows of `matmul`.

use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use grist_benches::weights::{random_activations, random_weights, row_bytes, AlignedBytes};
use grist_gguf::GgmlType;
use grist_kernels::dispatch::{select, Isa, Kernels};
use grist_kernels::matmul::{matmul_with, quantize_activations_with, ActivationScratch, QMatrix};

/// Values per row (the hidden size of a 4B-class model).
const COLS: usize = 4096;
/// Target size of the cache-resident matvec matrix (the L2 is 1 MiB per core here).
const L2_BYTES: usize = 512 * 1024;
/// Minimum size of the DRAM-sized matvec matrix (far beyond the 32 MiB L3).
const DRAM_BYTES: usize = 256 << 20;
/// Rows of the matmul weights.
const MATMUL_ROWS: usize = 4096;

/// Formats measured in every group.
const MAIN_TYPES: [GgmlType; 10] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
];
/// Formats measured only in the cheap groups (`vec_dot`, `matvec/…/l2`).
const EXTRA_TYPES: [GgmlType; 5] = [
    GgmlType::F32,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_XS,
];

/// The kernel tables of every ISA this CPU can run, scalar first.
fn tables() -> Vec<&'static Kernels> {
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.available())
        .filter_map(|isa| select(isa).ok())
        .collect()
}

/// A positive integer from the environment, or `default`.
fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?}: expected a positive integer")),
        Err(_) => default,
    }
}

/// A short, fast criterion configuration, so the whole file runs in minutes on a shared
/// machine (command-line flags such as `--sample-size` still override it; no HTML plots, which
/// take longer to draw than the short measurements). Slow benchmarks
/// (scalar kernels on 256 MiB) switch to flat sampling by themselves (criterion's default
/// `SamplingMode::Auto`).
fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .without_plots()
        .configure_from_args()
}

/// The activation row `[COLS]` quantized for weights of `ty` with `table`'s quantizer.
fn quantized_activation(table: &Kernels, ty: GgmlType, x: &[f32]) -> ActivationScratch {
    let act_type = table.entry(ty).expect("supported type").act_type;
    let mut scratch = ActivationScratch::new();
    quantize_activations_with(table, act_type, x, 1, COLS, &mut scratch)
        .expect("quantize activations");
    scratch
}

/// `vec_dot/<type>/<isa>`: one row · one row, single thread, L1-resident.
fn bench_vec_dot(c: &mut Criterion, tables: &[&'static Kernels], ty: GgmlType) {
    let w = random_weights(ty, 1, COLS, 1); // [1, COLS]
    let x = random_activations(COLS, 2); // [COLS]
    let mut group = c.benchmark_group(format!("vec_dot/{ty}"));
    group.throughput(Throughput::BytesDecimal(w.len() as u64));
    for &table in tables {
        let entry = table.entry(ty).expect("supported type");
        let act = quantized_activation(table, ty, &x);
        let (vec_dot, w_row, a_row) = (entry.vec_dot, w.as_bytes(), act.row(0));
        group.bench_function(table.isa().name(), |b| {
            b.iter(|| vec_dot(black_box(w_row), black_box(a_row)))
        });
    }
    group.finish();
}

/// One batch-1 matmul (activation quantization included) of `w` with `x`, into `y`.
fn bench_matvec_once(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    table: &'static Kernels,
    size: &str,
    w: &QMatrix<'_>,
    x: &[f32],
) {
    let mut y = vec![0.0f32; w.rows()]; // [rows]
    let mut scratch = ActivationScratch::new();
    group.throughput(Throughput::BytesDecimal(w.data().len() as u64));
    group.bench_function(BenchmarkId::new(table.isa().name(), size), |b| {
        b.iter(|| matmul_with(table, w, black_box(x), 1, &mut y, &mut scratch).expect("matvec"))
    });
}

/// `matvec/<type>/<isa>/{l2,dram}`: token-generation matrix-vector products.
fn bench_matvec(c: &mut Criterion, tables: &[&'static Kernels], ty: GgmlType, dram: bool) {
    let rb = row_bytes(ty, COLS);
    let l2_rows = (L2_BYTES / rb / 8 * 8).max(8);
    let l2 = random_weights(ty, l2_rows, COLS, 3); // [l2_rows, COLS], ~512 KB
    let x = random_activations(COLS, 4); // [COLS]
    let mut group = c.benchmark_group(format!("matvec/{ty}"));
    let w = QMatrix::new(ty, l2.as_bytes(), l2_rows, COLS).expect("L2 matrix");
    for &table in tables {
        bench_matvec_once(&mut group, table, "l2", &w, &x);
    }
    if dram {
        // Built on first use only, so a filter that skips every `dram` bench skips the build.
        let dram_rows = DRAM_BYTES.div_ceil(rb);
        let big: OnceCell<AlignedBytes> = OnceCell::new(); // [dram_rows, COLS], ≥ 256 MiB
        for &table in tables {
            let mut y = vec![0.0f32; dram_rows]; // [dram_rows]
            let mut scratch = ActivationScratch::new();
            group.throughput(Throughput::BytesDecimal((dram_rows * rb) as u64));
            group.bench_function(BenchmarkId::new(table.isa().name(), "dram"), |b| {
                let data = big.get_or_init(|| random_weights(ty, dram_rows, COLS, 5));
                let w = QMatrix::new(ty, data.as_bytes(), dram_rows, COLS).expect("matrix");
                b.iter(|| {
                    matmul_with(table, &w, black_box(&x), 1, &mut y, &mut scratch).expect("matvec")
                })
            });
        }
    }
    group.finish();
}

/// `matmul/<type>/<isa>/n<N>`: prompt-processing matrix products, `[4096, 4096] × [n, 4096]`.
fn bench_matmul(c: &mut Criterion, tables: &[&'static Kernels], ty: GgmlType, n: usize) {
    let data = OnceCell::new(); // [MATMUL_ROWS, COLS]
    let x = random_activations(n * COLS, 6); // [n, COLS]
    let mut group = c.benchmark_group(format!("matmul/{ty}"));
    group.throughput(Throughput::Elements((2 * MATMUL_ROWS * COLS * n) as u64));
    for &table in tables {
        let mut y = vec![0.0f32; n * MATMUL_ROWS]; // [n, MATMUL_ROWS]
        let mut scratch = ActivationScratch::new();
        group.bench_function(BenchmarkId::new(table.isa().name(), format!("n{n}")), |b| {
            let data = data.get_or_init(|| random_weights(ty, MATMUL_ROWS, COLS, 7));
            let w = QMatrix::new(ty, data.as_bytes(), MATMUL_ROWS, COLS).expect("matrix");
            b.iter(|| matmul_with(table, &w, black_box(&x), n, &mut y, &mut scratch).expect("mm"))
        });
    }
    group.finish();
}

/// `quantize_act/<act type>/<isa>/n512`: 512 activation rows `[512, COLS]` quantized to
/// `act_type`, 2 threads, including the activation panel of the prompt-processing GEMM when
/// the table has one. Throughput = values ⇒ elements/s.
fn bench_quantize_act(c: &mut Criterion, tables: &[&'static Kernels], act_type: GgmlType) {
    const N: usize = 512;
    let x = random_activations(N * COLS, 8); // [N, COLS]
    let mut group = c.benchmark_group(format!("quantize_act/{act_type}"));
    group.throughput(Throughput::Elements((N * COLS) as u64));
    for &table in tables {
        let mut scratch = ActivationScratch::new();
        group.bench_function(BenchmarkId::new(table.isa().name(), format!("n{N}")), |b| {
            b.iter(|| {
                quantize_activations_with(table, act_type, black_box(&x), N, COLS, &mut scratch)
                    .expect("quantize activations")
            })
        });
    }
    group.finish();
}

fn main() {
    let threads = env_usize("GRIST_BENCH_THREADS", 2);
    let n = env_usize("GRIST_BENCH_N", 64);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("the rayon pool is built before any parallel work");
    let tables = tables();
    let isas: Vec<&str> = tables.iter().map(|t| t.isa().name()).collect();
    eprintln!(
        "kernels bench: ISAs {isas:?}, {threads} threads for matvec/matmul, matmul n = {n}, \
         load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into())
    );

    let mut c = criterion();
    for ty in MAIN_TYPES.into_iter().chain(EXTRA_TYPES) {
        bench_vec_dot(&mut c, &tables, ty);
    }
    for ty in MAIN_TYPES {
        bench_matvec(&mut c, &tables, ty, true);
    }
    for ty in EXTRA_TYPES {
        bench_matvec(&mut c, &tables, ty, false);
    }
    for ty in MAIN_TYPES {
        bench_matmul(&mut c, &tables, ty, n);
    }
    for act_type in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        bench_quantize_act(&mut c, &tables, act_type);
    }
    c.final_summary();
}

//! The panel GEMM ([`grist_kernels::panel`]): the unpackers against each format's scalar
//! `dequantize`, the SIMD unpackers and microkernel against the scalar ones (bit for bit),
//! and the whole panel matmul against the scalar reference matmul, for odd shapes and any
//! thread count.

use grist_gguf::GgmlType;
use grist_kernels::dispatch::{select, Isa, Kernels};
use grist_kernels::formats;
use grist_kernels::matmul::{matmul_with, ActivationScratch, QMatrix};
use grist_kernels::panel::{self, PanelFormat, WeightPanelBuf};

/// Every format with a panel path (those the scalar reference supports).
fn formats() -> Vec<GgmlType> {
    grist_kernels::formats::WEIGHT_TYPES
        .into_iter()
        .filter(|&ty| panel::scalar_format(ty).is_some())
        .collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
}

/// Byte offsets of the f16 fields (scales, mins) of one block of `ty`.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[0],
    }
}

/// A row of `blocks` blocks of `ty` from raw random bytes, with its f16 fields replaced by
/// finite values from a list of adversarial ones (max, subnormal, ±0, tiny) or random ones;
/// `fill` = `Some(byte)` sets every other byte to it (max/min codes).
fn raw_row(ty: GgmlType, blocks: usize, rng: &mut Rng, fill: Option<u8>) -> Vec<u8> {
    let bs = ty.block_bytes();
    let mut row: Vec<u8> = (0..blocks * bs)
        .map(|_| fill.unwrap_or(rng.next() as u8))
        .collect();
    let special: [u16; 7] = [0x7BFF, 0x0001, 0x0000, 0x8000, 0x03FF, 0xFBFF, 0x3C00];
    for b in 0..blocks {
        for &o in f16_fields(ty) {
            let v = if rng.next().is_multiple_of(2) {
                special[(rng.next() % special.len() as u64) as usize]
            } else {
                half::f16::from_f32(rng.f32() * 0.05).to_bits()
            };
            row[b * bs + o..b * bs + o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    row
}

/// A row quantized from random values with the reference quantizer.
fn quantized_row(ty: GgmlType, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
    let mut row = vec![0u8; cols / ty.block_elems() * ty.block_bytes()];
    formats::quantize_row(ty, &x, &mut row).unwrap();
    row
}

/// Unpacks one row with `fmt`: (codes, dw, ow, bias).
fn unpack(fmt: &PanelFormat, row: &[u8], cols: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>, Vec<i32>) {
    let mut buf = WeightPanelBuf::default();
    let p = panel::unpack_rows(fmt, row, row.len(), 1, cols, &mut buf);
    (
        p.codes.to_vec(),
        p.dw.to_vec(),
        p.ow.to_vec(),
        p.bias.to_vec(),
    )
}

fn rows_for_tests(ty: GgmlType, rng: &mut Rng) -> Vec<Vec<u8>> {
    let blocks = 512 / ty.block_elems();
    let mut rows = vec![quantized_row(ty, 512, rng)];
    for fill in [None, None, Some(0xFF), Some(0x00), Some(0x88)] {
        rows.push(raw_row(ty, blocks, rng, fill));
    }
    rows
}

#[test]
fn scalar_unpack_dequantizes_like_the_format() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for ty in formats() {
        let fmt = panel::scalar_format(ty).expect("panel format");
        for row in rows_for_tests(ty, &mut rng) {
            let cols = row.len() / ty.block_bytes() * ty.block_elems();
            let (codes, dw, ow, bias) = unpack(&fmt, &row, cols);
            let mut reference = vec![0.0f32; cols];
            formats::dequantize_row(ty, &row, &mut reference).unwrap();
            for (c, &want) in reference.iter().enumerate() {
                let j = c / fmt.sub_len;
                let a = dw[j] * codes[c] as f32;
                let got = a + ow[j];
                // Two f32 roundings on each side, relative to the magnitudes involved.
                let tol = 4.0 * f32::EPSILON * (a.abs() + ow[j].abs()) + 1e-30;
                assert!(
                    (got - want).abs() <= tol,
                    "{ty} value {c}: panel {got} vs dequantize {want}"
                );
            }
            for (j, &b) in bias.iter().enumerate() {
                let s: i32 = codes[j * fmt.sub_len..(j + 1) * fmt.sub_len]
                    .iter()
                    .map(|&v| v as i32)
                    .sum();
                assert_eq!(b, -128 * s, "{ty} sub-block {j} bias");
            }
            if !fmt.has_offset {
                assert!(ow.iter().all(|&v| v == 0.0), "{ty}: offset without offset");
            }
        }
    }
}

#[test]
fn simd_unpack_matches_scalar_bit_for_bit() {
    let Ok(table) = select(Isa::Avx512) else {
        eprintln!("SKIPPED: no AVX-512 VNNI on this CPU");
        return;
    };
    // The AVX-512 table accelerates exactly the formats the scalar reference supports.
    for ty in grist_kernels::formats::WEIGHT_TYPES {
        let has_simd = table.entry(ty).is_some_and(|e| e.panel.is_some());
        assert_eq!(has_simd, panel::scalar_format(ty).is_some(), "{ty}");
    }
    assert!(formats().len() >= 9, "panel formats: {:?}", formats());
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for ty in formats() {
        let simd = table
            .entry(ty)
            .unwrap()
            .panel
            .expect("AVX-512 panel format");
        let scalar = panel::scalar_format(ty).unwrap();
        assert_eq!(
            (simd.sub_len, simd.has_offset),
            (scalar.sub_len, scalar.has_offset)
        );
        for _ in 0..4 {
            for row in rows_for_tests(ty, &mut rng) {
                let cols = row.len() / ty.block_bytes() * ty.block_elems();
                let (c1, d1, o1, b1) = unpack(&simd, &row, cols);
                let (c2, d2, o2, b2) = unpack(&scalar, &row, cols);
                assert_eq!(c1, c2, "{ty} codes");
                assert_eq!(b1, b2, "{ty} bias");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&d1), bits(&d2), "{ty} dw");
                assert_eq!(bits(&o1), bits(&o2), "{ty} ow");
            }
        }
    }
}

/// The interleaved types' group unpackers (straight from the interleaved bytes) give the
/// panel of the de-interleaved rows with the base type's scalar unpacker, bit for bit: on
/// quantized rows and on raw bytes with adversarial f16 fields and all-equal code bytes, for
/// 1–3 groups and rows of 1–3 columns (scale strides 16–48).
#[test]
fn interleaved_group_unpack_matches_the_plain_rows_bit_for_bit() {
    let Ok(table) = select(Isa::Avx512) else {
        eprintln!("SKIPPED: no AVX-512 VNNI on this CPU");
        return;
    };
    let mut rng = Rng(0x51A7_E0F1_C0DE_0016);
    let mut checked = 0;
    // Every interleaved type has one.
    for ty in GgmlType::all().filter(|t| t.interleaved().is_some()) {
        let (base, group_rows) = ty.interleaved().unwrap();
        let unpack = table
            .entry(ty)
            .and_then(|e| e.panel_group)
            .unwrap_or_else(|| panic!("{ty}: no AVX-512 group unpacker"));
        let fmt = panel::scalar_format(base).unwrap();
        // Rows of whole columns: super-blocks, or pairs of 32-value blocks.
        let per_column = ty.block_elems() / base.block_elems();
        for (groups, columns) in [(1, 1), (2, 3), (3, 2)] {
            let blocks = columns * per_column;
            let rows = groups * group_rows;
            let cols = blocks * base.block_elems();
            for kind in 0..5 {
                let plain: Vec<u8> = (0..rows)
                    .flat_map(|r| match (kind, r % 3) {
                        (0, _) | (1, 0) => quantized_row(base, cols, &mut rng),
                        (2, _) => raw_row(base, blocks, &mut rng, Some(0xFF)),
                        (3, _) => raw_row(base, blocks, &mut rng, Some(0x00)),
                        _ => raw_row(base, blocks, &mut rng, None),
                    })
                    .collect();
                let row_bytes = plain.len() / rows;
                let mut inter = vec![0u8; plain.len()];
                formats::interleaved::interleave(ty, &plain, row_bytes, &mut inter).unwrap();
                let (mut b1, mut b2) = (WeightPanelBuf::default(), WeightPanelBuf::default());
                let want = panel::unpack_rows(&fmt, &plain, row_bytes, rows, cols, &mut b1);
                let got =
                    panel::unpack_groups(unpack, &fmt, &inter, row_bytes, rows, cols, &mut b2);
                let what = format!("{ty}, {groups} groups of {columns} columns, data {kind}");
                assert_eq!(got.codes, want.codes, "{what}: codes");
                assert_eq!(got.bias, want.bias, "{what}: bias");
                assert_eq!(bits(got.dw), bits(want.dw), "{what}: dw");
                assert_eq!(bits(got.ow), bits(want.ow), "{what}: ow");
                checked += rows;
            }
        }
    }
    eprintln!("{checked} interleaved rows unpacked identically");
}

#[test]
fn simd_act_panel_matches_scalar_bytes() {
    let Ok(table) = select(Isa::Avx512) else {
        eprintln!("SKIPPED: no AVX-512 VNNI on this CPU");
        return;
    };
    let mut rng = Rng(0x0005_EED0_FAC7);
    let mut checked = 0;
    for act in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        for cols in [256_usize, 512, 896, 1536] {
            if !cols.is_multiple_of(act.block_elems()) {
                continue;
            }
            // Partial groups (1, 15, 17, 33) go to the scalar builder, full ones do not.
            for n in [1, 15, 16, 17, 32, 33, 48] {
                let mut acts = Vec::new();
                for t in 0..n {
                    // Every 5th row all zero, every 7th huge: scales at both ends.
                    let x: Vec<f32> = (0..cols)
                        .map(|_| match t % 7 {
                            _ if t % 5 == 4 => 0.0,
                            6 => rng.f32() * 6.0e4,
                            _ => rng.f32(),
                        })
                        .collect();
                    let mut row = vec![0u8; cols / act.block_elems() * act.block_bytes()];
                    formats::quantize_row(act, &x, &mut row).unwrap();
                    acts.extend_from_slice(&row);
                }
                let row_bytes = acts.len() / n;
                let build = |f: panel::ActGroupFn| {
                    let mut lines = Vec::new();
                    panel::build_act_panel(f, act, &acts, row_bytes, n, cols, &mut lines);
                    lines
                };
                let (simd, scalar) = (
                    build(table.act_panel_group()),
                    build(panel::build_group_scalar),
                );
                assert_eq!(simd.len(), scalar.len());
                for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
                    assert_eq!(a.0, b.0, "{act} cols {cols} n {n}: line {i} differs");
                }
                checked += simd.len();
            }
        }
    }
    eprintln!("{checked} activation panel lines identical");
}

/// `rows × cols` weights of `ty`.
fn matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    (0..rows)
        .flat_map(|_| quantized_row(ty, cols, rng))
        .collect()
}

/// `base` with the panel path: every format's unpacker from `scalar_unpack` (scalar) or the
/// base table, and the given microkernel.
fn with_panel(base: &Kernels, gemm: panel::PanelGemmFn, scalar_unpack: bool) -> Kernels {
    let mut t = base.clone();
    t.set_panel_gemm(Some(gemm));
    for ty in formats() {
        let fmt = if scalar_unpack {
            panel::scalar_format(ty)
        } else {
            t.entry(ty).unwrap().panel.or(panel::scalar_format(ty))
        };
        t.set_panel(ty, fmt);
    }
    t
}

fn run(table: &Kernels, m: &QMatrix<'_>, x: &[f32], n: usize, threads: usize) -> Vec<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut y = vec![f32::NAN; n * m.rows()];
    let mut s = ActivationScratch::new();
    pool.install(|| matmul_with(table, m, x, n, &mut y, &mut s))
        .unwrap();
    y
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts two outputs have the same bits, naming the first difference (not dumping both).
fn assert_same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!("{what}: first difference at {i}: {:e} vs {:e}", a[i], b[i]);
    }
}

/// The panel matmul (scalar microkernel, scalar unpackers: runs on every CPU) against the
/// scalar reference matmul, and (with AVX-512) the SIMD panel against the scalar panel bit
/// for bit, with 1, 2 and 3 threads.
#[test]
fn panel_matmul_matches_the_reference() {
    let scalar = select(Isa::Scalar).unwrap();
    let scalar_panel = with_panel(scalar, panel::panel_gemm_scalar, true);
    // (GRIST_NO_PANEL leaves the AVX-512 microkernel out of the table.)
    let simd = select(Isa::Avx512)
        .ok()
        .filter(|t| t.panel_gemm().is_some());
    if simd.is_none() {
        eprintln!(
            "SKIPPED (partly): no AVX-512 VNNI panel kernel (CPU or GRIST_NO_PANEL), only the \
             scalar panel is tested"
        );
    }
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let cols = 512;
    // 70 rows: > PANEL_ROWS (64), not a multiple of the 4-row tile. 512 rows: output lines
    // 2048 bytes apart, which the AVX-512 kernel stores a band of 16 rows at a time.
    let cases = formats()
        .into_iter()
        .enumerate()
        .flat_map(|(k, ty)| [(k, ty, 70), (k, ty, 512)]);
    for (k, ty, rows) in cases {
        let data = matrix(ty, rows, cols, &mut rng);
        let m = QMatrix::new(ty, &data, rows, cols).unwrap();
        // Token counts: odd, around group boundaries, one format gets the big batch.
        let ns: &[usize] = if rows > 70 {
            &[2, 17, 33]
        } else if k % 3 == 0 {
            &[2, 15, 17, 33, 512]
        } else {
            &[2, 15, 17, 33]
        };
        for &n in ns {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f32() * 3.0).collect();
            let reference = run(scalar, &m, &x, n, 1);
            let got = run(&scalar_panel, &m, &x, n, 1);
            // Bound: both sums add cols/32 (or cols/256 … cols/16) rounded block terms; each
            // is within a few ulps of its exact value, so the error is ≲ (blocks + c)·ε·Σ|w·x|.
            let mut wrow = vec![0.0f32; cols];
            for r in 0..rows {
                formats::dequantize_row(ty, m.row(r), &mut wrow).unwrap();
                for t in 0..n {
                    let mag: f32 = (0..cols).map(|c| (wrow[c] * x[t * cols + c]).abs()).sum();
                    let tol = (2.0 * (cols / 16) as f32 + 16.0) * f32::EPSILON * mag + 1e-6;
                    let (a, b) = (got[t * rows + r], reference[t * rows + r]);
                    assert!(
                        (a - b).abs() <= tol,
                        "{ty} rows {rows} n {n} row {r} token {t}: panel {a} vs reference {b} \
                         (tol {tol})"
                    );
                }
            }
            // The panel path really ran: its float order differs from `vec_dot`'s.
            assert_ne!(
                bits(&got),
                bits(&reference),
                "{ty} n {n}: panel path not taken?"
            );
            if let Some(simd) = simd {
                assert!(simd.panel_gemm().is_some());
                let fast = run(simd, &m, &x, n, 1);
                // Same unpack (checked above) and same float order: identical bits.
                assert_eq!(
                    bits(&fast),
                    bits(&got),
                    "{ty} n {n}: AVX-512 vs scalar panel"
                );
                let scalar_kernel = with_panel(simd, panel::panel_gemm_scalar, false);
                assert_eq!(
                    bits(&run(&scalar_kernel, &m, &x, n, 2)),
                    bits(&got),
                    "{ty} n {n}"
                );
                for threads in [2, 3] {
                    assert_same_bits(
                        &run(simd, &m, &x, n, threads),
                        &fast,
                        &format!("{ty} n {n} threads {threads}"),
                    );
                }
            }
            for threads in [2, 3] {
                assert_same_bits(
                    &run(&scalar_panel, &m, &x, n, threads),
                    &got,
                    &format!("{ty} n {n} threads {threads} (scalar panel)"),
                );
            }
        }
    }
}

/// Work items cut for balance (an odd number of row blocks on 2 threads: each thread gets
/// whole blocks and one half of the last, `matmul::ItemPlan`) give the bits of one thread, in
/// the plain product and in the gated one that quantizes its output. 3 row blocks × 32 token
/// groups are cut that way on 2 threads (and evenly on 1 and 3): a piece missing, or put
/// in the wrong place, leaves the NaN the outputs start as, or another token's values.
#[test]
fn balanced_item_cuts_give_the_bits_of_one_thread() {
    use grist_kernels::matmul::{quantize_activations_with, QUANTIZED_ROWS_PER_ITEM};
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    let (cols, n) = (256, 512);
    let x: Vec<f32> = (0..n * cols).map(|_| rng.f32() * 3.0).collect();
    for (name, table) in &gated_tables() {
        // The plain product: 3 blocks of PANEL_ROWS (64) rows, the last one partial.
        let rows = 3 * 64 - 6;
        let data = matrix(GgmlType::Q5_0, rows, cols, &mut rng);
        let m = QMatrix::new(GgmlType::Q5_0, &data, rows, cols).unwrap();
        let one = run(table, &m, &x, n, 1);
        assert!(one.iter().all(|v| v.is_finite()), "{name}: 1 thread");
        for threads in [2, 3] {
            let what = format!("{name} plain product, {threads} threads");
            assert_same_bits(&run(table, &m, &x, n, threads), &one, &what);
        }
        // The gated product into the down product's activations: 3 blocks of 256 rows.
        let rows = 3 * QUANTIZED_ROWS_PER_ITEM;
        let (gdata, udata) = (
            matrix(GgmlType::Q5_0, rows, cols, &mut rng),
            matrix(GgmlType::Q5_0, rows, cols, &mut rng),
        );
        let g = QMatrix::new(GgmlType::Q5_0, &gdata, rows, cols).unwrap();
        let u = QMatrix::new(GgmlType::Q5_0, &udata, rows, cols).unwrap();
        let gated = |threads: usize| {
            let mut bytes = Vec::new();
            on_threads(threads, || {
                let mut s = ActivationScratch::new();
                quantize_activations_with(table, g.act_type(), &x, n, cols, &mut s).unwrap();
                let next = gated_quantized(table, (&g, &u), &s, GgmlType::Q8_K, name);
                bytes = next.rows(0, n).to_vec();
            });
            bytes
        };
        let one = gated(1);
        for threads in [2, 3] {
            assert!(
                gated(threads) == one,
                "{name} gated product, {threads} threads"
            );
        }
    }
}

/// Tables without a panel microkernel (scalar, AVX2) keep their old path: no panel is built.
#[test]
fn tables_without_panel_gemm_build_no_panel() {
    let scalar = select(Isa::Scalar).unwrap();
    assert!(scalar.panel_gemm().is_none());
    let mut s = ActivationScratch::new();
    let x = vec![0.25f32; 3 * 64];
    grist_kernels::matmul::quantize_activations_with(scalar, GgmlType::Q8_0, &x, 3, 64, &mut s)
        .unwrap();
    assert!(s.act_panel().is_none());
    if let Some(simd) = select(Isa::Avx512)
        .ok()
        .filter(|t| t.panel_gemm().is_some())
    {
        grist_kernels::matmul::quantize_activations_with(simd, GgmlType::Q8_0, &x, 3, 64, &mut s)
            .unwrap();
        let p = s.act_panel().expect("panel built for n > 1");
        assert_eq!((p.n_groups, p.n_blocks), (1, 2));
        grist_kernels::matmul::quantize_activations_with(
            simd,
            GgmlType::Q8_0,
            &x[..64],
            1,
            64,
            &mut s,
        )
        .unwrap();
        assert!(s.act_panel().is_none(), "stale panel after n = 1");
    }
}

/// `(gate, up)` weight format pairs for the gated product: same format, two formats sharing
/// an activation type (Q4_K/Q6_K: Q8_K; Q5_0/Q8_0: Q8_0), and one with an offset.
const GATED_PAIRS: [(GgmlType, GgmlType); 5] = [
    (GgmlType::Q4_K, GgmlType::Q4_K),
    (GgmlType::Q4_K, GgmlType::Q6_K),
    (GgmlType::Q5_0, GgmlType::Q8_0),
    (GgmlType::Q4_1, GgmlType::Q4_1),
    (GgmlType::IQ4_NL, GgmlType::IQ4_NL),
];

/// Runs `f` on a rayon pool of `threads` threads.
fn on_threads(threads: usize, f: impl FnOnce() + Send) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// `swiglu(x·W_gateᵀ, x·W_upᵀ)` quantized to `act` by the fused product, which must run (`s`:
/// `x` quantized for the gate's format): the next product's activations.
fn gated_quantized(
    table: &Kernels,
    (gate, up): (&QMatrix<'_>, &QMatrix<'_>),
    s: &ActivationScratch,
    act: GgmlType,
    what: &str,
) -> ActivationScratch {
    let mut next = ActivationScratch::new();
    let done = grist_kernels::matmul::matmul_prequantized_gated_quantize_with(
        table,
        gate,
        up,
        grist_kernels::ops::swiglu,
        s,
        act,
        &mut next,
    );
    assert_eq!(done, Ok(true), "{what}: not quantized");
    next
}

/// The tables the gated-product tests run: the scalar panel microkernel (every CPU) and, when
/// the CPU has it, the AVX-512 VNNI one.
fn gated_tables() -> Vec<(&'static str, Kernels)> {
    let scalar = select(Isa::Scalar).unwrap();
    let mut tables = vec![(
        "scalar panel",
        with_panel(scalar, panel::panel_gemm_scalar, true),
    )];
    if let Some(simd) = select(Isa::Avx512)
        .ok()
        .filter(|t| t.panel_gemm().is_some())
    {
        tables.push(("AVX-512 panel", simd.clone()));
    } else {
        eprintln!("SKIPPED (partly): no AVX-512 VNNI panel kernel, only the scalar panel");
    }
    tables
}

/// The fused gated product (`matmul_prequantized_gated_with`) against the two products and
/// the activation run separately, bit for bit: with the scalar panel microkernel (every CPU)
/// and the AVX-512 one, SwiGLU and GeGLU, odd token counts and row counts, 1–3 threads. Also:
/// it declines (`Ok(false)`, output untouched) for one token and for tables without a panel
/// kernel, and rejects activations quantized for another format.
#[test]
fn gated_product_matches_the_products_and_the_activation() {
    use grist_kernels::matmul::{
        matmul_prequantized_gated_with, matmul_prequantized_many_with, quantize_activations_with,
    };
    use grist_kernels::ops;
    let scalar = select(Isa::Scalar).unwrap();
    let tables = gated_tables();
    let glus: [(&str, grist_kernels::matmul::GluFn); 2] =
        [("swiglu", ops::swiglu), ("geglu", ops::geglu)];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let cols = 256;
    for (pair_index, &(gty, uty)) in GATED_PAIRS.iter().enumerate() {
        let rows = if pair_index % 2 == 0 { 70 } else { 130 }; // partial 64-row blocks
        let (gdata, udata) = (
            matrix(gty, rows, cols, &mut rng),
            matrix(uty, rows, cols, &mut rng),
        );
        let g = QMatrix::new(gty, &gdata, rows, cols).unwrap();
        let u = QMatrix::new(uty, &udata, rows, cols).unwrap();
        for &n in &[2usize, 15, 17, 33, 100] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f32() * 3.0).collect();
            for (name, table) in &tables {
                for &(glu_name, glu) in &glus {
                    let what = format!("{name} {gty}/{uty} n {n} rows {rows} {glu_name}");
                    for threads in [1, 2, 3] {
                        on_threads(threads, || {
                            let mut s = ActivationScratch::new();
                            quantize_activations_with(table, g.act_type(), &x, n, cols, &mut s)
                                .unwrap();
                            let mut want = vec![f32::NAN; n * rows];
                            let mut up = vec![f32::NAN; n * rows];
                            matmul_prequantized_many_with(
                                table,
                                &mut [(g, &mut want[..]), (u, &mut up[..])],
                                &s,
                            )
                            .unwrap();
                            glu(&mut want, &up);
                            let mut got = vec![f32::NAN; n * rows];
                            let fused =
                                matmul_prequantized_gated_with(table, &g, &u, glu, &s, &mut got);
                            assert_eq!(fused, Ok(true), "{what}: not fused");
                            assert_same_bits(&got, &want, &format!("{what} threads {threads}"));
                        });
                    }
                }
            }
        }
    }
    // Declines: one token, and a table without a panel kernel (output untouched).
    let (gdata, udata) = (
        matrix(GgmlType::Q4_K, 64, cols, &mut rng),
        matrix(GgmlType::Q4_K, 64, cols, &mut rng),
    );
    let g = QMatrix::new(GgmlType::Q4_K, &gdata, 64, cols).unwrap();
    let u = QMatrix::new(GgmlType::Q4_K, &udata, 64, cols).unwrap();
    let x: Vec<f32> = (0..4 * cols).map(|_| rng.f32()).collect();
    let (_, panel_table) = &tables[0];
    for (table, n) in [(panel_table, 1), (scalar, 4)] {
        let mut s = ActivationScratch::new();
        quantize_activations_with(table, GgmlType::Q8_K, &x[..n * cols], n, cols, &mut s).unwrap();
        let mut out = vec![f32::NAN; n * 64];
        assert_eq!(
            matmul_prequantized_gated_with(table, &g, &u, ops::swiglu, &s, &mut out),
            Ok(false),
            "n {n}"
        );
        assert!(out.iter().all(|v| v.is_nan()), "n {n}: output touched");
    }
    // Activations quantized for another format, and mismatched shapes: errors.
    let mut s = ActivationScratch::new();
    quantize_activations_with(panel_table, GgmlType::Q8_0, &x, 4, cols, &mut s).unwrap();
    let mut out = vec![0.0; 4 * 64];
    assert!(
        matmul_prequantized_gated_with(panel_table, &g, &u, ops::swiglu, &s, &mut out).is_err()
    );
    quantize_activations_with(panel_table, GgmlType::Q8_K, &x, 4, cols, &mut s).unwrap();
    let short = QMatrix::new(GgmlType::Q4_K, &udata[..udata.len() / 2], 32, cols).unwrap();
    assert!(
        matmul_prequantized_gated_with(panel_table, &g, &short, ops::swiglu, &s, &mut out).is_err()
    );
    assert!(
        matmul_prequantized_gated_with(panel_table, &g, &u, ops::swiglu, &s, &mut out[1..])
            .is_err()
    );
}

/// The gated product that quantizes its output for the next product
/// (`matmul_prequantized_gated_quantize_with`) against the fused product followed by
/// `quantize_activations_with` on its f32 output: the same activation bytes and the same
/// activation panel (the down product then gives the same bits), for every activation format
/// a down matrix uses, several batch sizes (partial last group included) and thread counts.
#[test]
fn gated_product_quantized_for_the_next_product_matches_quantizing_its_output() {
    use grist_kernels::matmul::{
        matmul_prequantized_gated_quantize_with, matmul_prequantized_gated_with,
        matmul_prequantized_with, quantize_activations_with, QUANTIZED_ROWS_PER_ITEM,
    };
    use grist_kernels::ops;
    let tables = gated_tables();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let cols = 256;
    let rows = 2 * QUANTIZED_ROWS_PER_ITEM;
    // (gate/up format, down format): the down format sets the activation format (Q8_K,
    // Q8_0, Q8_1).
    let cases = [
        (GgmlType::Q4_K, GgmlType::Q6_K),
        (GgmlType::Q5_0, GgmlType::Q8_0),
        (GgmlType::Q4_1, GgmlType::Q4_1),
    ];
    for (ty, down_ty) in cases {
        let (gdata, udata, ddata) = (
            matrix(ty, rows, cols, &mut rng),
            matrix(ty, rows, cols, &mut rng),
            matrix(down_ty, cols, rows, &mut rng),
        );
        let g = QMatrix::new(ty, &gdata, rows, cols).unwrap();
        let u = QMatrix::new(ty, &udata, rows, cols).unwrap();
        let d = QMatrix::new(down_ty, &ddata, cols, rows).unwrap();
        let act = d.act_type();
        for &n in &[2usize, 17, 48, 100] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f32() * 3.0).collect();
            for (name, table) in &tables {
                for threads in [1, 2, 3] {
                    let what = format!("{name} {ty}→{down_ty} n {n} threads {threads}");
                    on_threads(threads, || {
                        let mut s = ActivationScratch::new();
                        quantize_activations_with(table, g.act_type(), &x, n, cols, &mut s)
                            .unwrap();
                        let mut h = vec![f32::NAN; n * rows];
                        let fused =
                            matmul_prequantized_gated_with(table, &g, &u, ops::swiglu, &s, &mut h);
                        assert_eq!(fused, Ok(true), "{what}: not fused");
                        let mut want = ActivationScratch::new();
                        quantize_activations_with(table, act, &h, n, rows, &mut want).unwrap();
                        let got = gated_quantized(table, (&g, &u), &s, act, &what);
                        assert_eq!(got.n(), n, "{what}");
                        assert_eq!(got.rows(0, n), want.rows(0, n), "{what}: bytes differ");
                        // The down product reads the panel built from those bytes.
                        let (mut y_got, mut y_want) =
                            (vec![f32::NAN; n * cols], vec![f32::NAN; n * cols]);
                        matmul_prequantized_with(table, &d, &got, &mut y_got).unwrap();
                        matmul_prequantized_with(table, &d, &want, &mut y_want).unwrap();
                        assert_same_bits(&y_got, &y_want, &format!("{what}: down product"));
                    });
                }
            }
        }
    }
    // Declines, touching nothing: rows not a multiple of the item, one token.
    let (_, table) = &tables[0];
    let x: Vec<f32> = (0..4 * cols).map(|_| rng.f32()).collect();
    let declines = |w_rows: usize, n: usize, what: &str, rng: &mut Rng| {
        let data = matrix(GgmlType::Q4_K, w_rows, cols, rng);
        let w = QMatrix::new(GgmlType::Q4_K, &data, w_rows, cols).unwrap();
        let mut s = ActivationScratch::new();
        quantize_activations_with(table, GgmlType::Q8_K, &x[..n * cols], n, cols, &mut s).unwrap();
        let mut next = ActivationScratch::new();
        let r = matmul_prequantized_gated_quantize_with(
            table,
            &w,
            &w,
            ops::swiglu,
            &s,
            GgmlType::Q8_K,
            &mut next,
        );
        assert_eq!(r, Ok(false), "{what}");
        assert_eq!(next.n(), 0, "{what}: scratch touched");
    };
    declines(rows - 64, 4, "rows not a multiple of the item", &mut rng);
    declines(rows, 1, "one token", &mut rng);
}

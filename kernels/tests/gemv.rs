//! The many-rows token-generation products ([`grist_kernels::dispatch::GemvFn`]) of every
//! table that has them: each output must have **the same bits** as the table's single-row
//! `vec_dot` (which `simd_x86.rs` / `simd_neon.rs` test against the scalar references), for
//! 1..=9 rows (and 15, 16, 17, 33 on rows up to 70 blocks), row lengths on both sides of the kernels' 8- and 16-block groups and of their
//! longest recorded row, on quantized random data and on raw random bytes (every code and
//! scale pattern, NaN/∞ scales included). Then the matrix-vector driver, which cuts rows
//! into tasks, against `vec_dot` row by row for 1, 2 and 3 threads.

mod common;

use common::{same, weights, Rng};
use grist_gguf::GgmlType;
use grist_kernels::dispatch::{select, Isa, Kernels};
use grist_kernels::matmul::{matmul_with, ActivationScratch, QMatrix};

/// Every available table with at least one `gemv` kernel, with those weight types.
fn tables_with_gemv() -> Vec<(&'static Kernels, Vec<GgmlType>)> {
    let mut out = Vec::new();
    for isa in Isa::ALL {
        let Ok(table) = select(isa) else { continue };
        let types: Vec<GgmlType> = table
            .supported_types()
            .into_iter()
            // Interleaved layouts' kernels are tested in `interleaved.rs`.
            .filter(|&ty| ty.interleaved().is_none())
            .filter(|&ty| table.entry(ty).is_some_and(|e| e.gemv.is_some()))
            .collect();
        if !types.is_empty() {
            out.push((table, types));
        }
    }
    if out.is_empty() {
        eprintln!("SKIPPED: no table on this CPU has a gemv kernel");
    }
    out
}

/// One activation row for `ty` with the table's quantizer (or raw bytes).
fn activation(rng: &mut Rng, table: &Kernels, ty: GgmlType, cols: usize, raw: bool) -> Vec<u8> {
    let entry = table.entry(ty).unwrap();
    let at = entry.act_type;
    let rb = cols / at.block_elems() * at.block_bytes();
    if raw {
        return rng.bytes(rb);
    }
    let mut out = vec![0u8; rb];
    (entry.quantize_act)(&rng.vec(cols, 3.0), &mut out);
    out
}

#[test]
fn gemv_gives_vec_dot_bits_for_every_row_count_and_length() {
    let mut rng = Rng(0x6e3f_11d2_a4c7_9b05);
    // Blocks per row: short rows, both sides of the 8- and 16-block groups, SmolLM2's 18,
    // and both sides of the longest row kept (512 blocks).
    let lengths = [
        1, 2, 3, 7, 8, 9, 15, 16, 17, 18, 24, 31, 32, 33, 48, 70, 255, 256, 257, 511, 512, 513,
    ];
    for (table, types) in tables_with_gemv() {
        for &ty in &types {
            let entry = table.entry(ty).unwrap();
            let gemv = entry.gemv.unwrap();
            for &blocks in &lengths {
                let cols = blocks * ty.block_elems();
                let rb = blocks * ty.block_bytes();
                // Up to 9 rows for every length; for rows up to 70 blocks also both sides of
                // the 16 rows whose sums the AVX-512 legacy kernels reduce together.
                let batches: &[usize] = if blocks <= 70 { &[15, 16, 17, 33] } else { &[] };
                for rows in (1..=9).chain(batches.iter().copied()) {
                    for raw in [false, true] {
                        let w = weights(&mut rng, ty, rows, cols, raw);
                        let a = activation(&mut rng, table, ty, cols, raw);
                        let mut out = vec![f32::NAN; rows];
                        gemv(&w, rb, &a, &mut out);
                        for (r, &got) in out.iter().enumerate() {
                            let want = (entry.vec_dot)(&w[r * rb..(r + 1) * rb], &a);
                            assert!(
                                same(got, want),
                                "{} {ty}: {blocks} blocks, {rows} rows, raw {raw}: row {r} \
                                 gemv {got} vs vec_dot {want}",
                                table.isa().name()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matrix_vector_driver_matches_vec_dot_for_any_thread_count() {
    let mut rng = Rng(0x1b87_c9e0_5d23_f461);
    for (table, types) in tables_with_gemv() {
        for &ty in &types {
            let entry = table.entry(ty).unwrap();
            for (rows, blocks) in [
                (1, 18),
                (77, 18),
                (1536, 18),
                (300, 48),
                (50, 300),
                (20, 600),
            ] {
                let cols = blocks * ty.block_elems();
                let rb = blocks * ty.block_bytes();
                let w = weights(&mut rng, ty, rows, cols, false);
                let x = rng.vec(cols, 2.0);
                let mut a =
                    vec![0u8; cols / entry.act_type.block_elems() * entry.act_type.block_bytes()];
                (entry.quantize_act)(&x, &mut a);
                let want: Vec<f32> = (0..rows)
                    .map(|r| (entry.vec_dot)(&w[r * rb..(r + 1) * rb], &a))
                    .collect();
                let m = QMatrix::new(ty, &w, rows, cols).unwrap();
                for threads in 1..=3 {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut y = vec![0.0f32; rows];
                    pool.install(|| {
                        let mut scratch = ActivationScratch::new();
                        matmul_with(table, &m, &x, 1, &mut y, &mut scratch).unwrap();
                    });
                    for r in 0..rows {
                        assert!(
                            same(y[r], want[r]),
                            "{} {ty} {rows}×{cols}, {threads} threads: row {r} {} vs {}",
                            table.isa().name(),
                            y[r],
                            want[r]
                        );
                    }
                }
            }
        }
    }
}

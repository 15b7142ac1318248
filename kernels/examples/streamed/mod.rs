//! Set-up shared by the examples that time token-generation products on weights streaming
//! from DRAM (`gemv_latency`, `stream_share`): `COPIES` copies of one quantized `[ROWS, COLS]`
//! matrix, cycled through so that no call finds its weights in the caches, and one quantized
//! activation row.

use grist_gguf::GgmlType;
use grist_kernels::dispatch::{kernels, Kernels};
use grist_kernels::formats;
use grist_kernels::matmul::{quantize_activations_with, ActivationScratch, QMatrix};

/// The matrix copies and the activation, built from the command line.
pub struct Streamed {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub threads: usize,
    pub copies: usize,
    pub table: &'static Kernels,
    data: Vec<u8>, // [copies, rows, row bytes]
    /// The quantized activation row (`n = 1`).
    pub scratch: ActivationScratch,
}

impl Streamed {
    /// Reads `ROWS COLS THREADS COPIES FORMAT` from `args` (the ones missing take
    /// `defaults`), quantizes the matrix with the format's own quantizer and copies it.
    pub fn from_args(args: &[String], defaults: (usize, usize, usize, usize, GgmlType)) -> Self {
        let num = |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().unwrap());
        let (rows, cols, threads) = (num(0, defaults.0), num(1, defaults.1), num(2, defaults.2));
        let copies = num(3, defaults.3).max(1);
        let ty = match args.get(4) {
            None => defaults.4,
            Some(name) => GgmlType::all()
                .find(|t| t.to_string().eq_ignore_ascii_case(name))
                .expect("unknown FORMAT"),
        };
        let table = kernels();
        let entry = table.entry(ty).expect("FORMAT has no kernels");
        assert!(
            cols.is_multiple_of(ty.block_elems()),
            "COLS must be a multiple of {}",
            ty.block_elems()
        );
        let rb = cols / ty.block_elems() * ty.block_bytes();
        let mut data = vec![0u8; rows * rb * copies];
        for r in 0..rows {
            let w: Vec<f32> = (0..cols)
                .map(|i| (((i + 31 * r) * 104729 % 997) as f32 - 498.0) / 300.0)
                .collect();
            formats::quantize_row(ty, &w, &mut data[r * rb..(r + 1) * rb]).unwrap();
        }
        for c in 1..copies {
            data.copy_within(0..rows * rb, c * rows * rb);
        }
        let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 - 6.0).collect();
        let mut scratch = ActivationScratch::new();
        quantize_activations_with(table, entry.act_type, &x, 1, cols, &mut scratch).unwrap();
        let streamed = Streamed {
            ty,
            rows,
            cols,
            threads,
            copies,
            table,
            data,
            scratch,
        };
        println!(
            "{ty} {rows}×{cols}, {threads} threads, {copies} copies ({:.1} MB), isa {}",
            streamed.bytes() as f64 / 1e6,
            table.isa().name()
        );
        streamed
    }

    /// Bytes of all copies.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The copies, as matrices.
    pub fn matrices(&self) -> Vec<QMatrix<'_>> {
        self.data
            .chunks_exact(self.bytes() / self.copies)
            .map(|d| QMatrix::new(self.ty, d, self.rows, self.cols).unwrap())
            .collect()
    }

    /// A rayon pool of `THREADS` threads to run the products in.
    pub fn pool(&self) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .build()
            .unwrap()
    }
}

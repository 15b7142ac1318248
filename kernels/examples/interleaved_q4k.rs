//! Experiment: Q4_K weights with 16 rows interleaved ("Q4_K_R16") for token generation,
//! against the kernel table's Q4_K `gemv` on the same matrix (docs/PERFORMANCE.md, "Round 12").
//!
//! grist's Q4_K `gemv` (`k4_rows`) dots one row at a time: per 256-value super-block it
//! splits nibbles, runs `vpdpbusd`, then narrows and rescales the per-sub-block sums
//! (`vpackssdw`, `vpshufb`, `vpdpwssd`) and reduces the row at its end, about 18 512-bit
//! instructions per super-block. A Zen 4 executes each as two 256-bit halves, which makes that
//! kernel compute-bound below the memory bus. Interleaving 16 rows puts 4 code bytes of each
//! row in one register, so `vpdpbusd` lane r is row r's running sum and the activation is
//! one broadcast `dword` per step. The rows' sub-block sums then sit in lanes, where the
//! scales and mins apply without narrowing or reductions: ~11.6 instructions per row and
//! super-block.
//!
//! The runtime does not use this layout yet (the executor and the prompt-processing panel
//! GEMM address weights by contiguous rows). This program measures what it would give and
//! checks its kernel against the scalar Q4_K reference.
//!
//! ```sh
//! cargo run --release -p grist-kernels --example interleaved_q4k -- check
//! cargo run --release -p grist-kernels --example interleaved_q4k -- ROWS COLS [THREADS]
//! ```
//! The speed run alternates both kernels on one `ROWS × COLS` matrix (e.g. 9728 2560), three
//! runs, and prints GB of weights per CPU-second and per wall-clock second. With several
//! threads the wall-clock figure is the one to read, next to the DRAM read probe
//! (`probe::ReadProbe`) on the same threads: pass a matrix far larger than the L3 (e.g.
//! 65536 4096, 151 MB). It needs AVX-512 VNNI and GFNI.

#[cfg(target_arch = "x86_64")]
mod cputime;

#[cfg(target_arch = "x86_64")]
fn main() {
    r16::main();
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("interleaved_q4k: an x86-64 AVX-512 experiment; nothing to run on this target");
}

#[cfg(target_arch = "x86_64")]
mod r16 {
    use std::arch::x86_64::*;

    use bytemuck::Zeroable;
    use grist_gguf::GgmlType;
    use grist_kernels::blocks::{f16_to_f32, BlockQ4_K, BlockQ8_K, QK_K};
    use grist_kernels::dispatch::{select, Isa};
    use grist_kernels::formats::{quantize_row, scales_mins, BlockFormat};
    use grist_kernels::probe::ReadProbe;

    use crate::cputime::time;

    /// Rows interleaved per group.
    const R: usize = 16;
    /// Bytes of one group's super-block column: `[d: 16 f16][dmin: 16 f16][u0: 16 u32]
    /// [u1: 16 u32][u2: 16 u32][qs: 32 × 64 B]`, exactly 16 × `BlockQ4_K` (144 B), so the
    /// layout reads as many bytes per token as plain Q4_K.
    const COLUMN: usize = 2304;
    /// Where the three little-endian words of each row's 12 packed scale bytes start.
    const OFF_SCALES: usize = 64;
    /// Where the codes start: register `4t + j` holds, for row r in lane r, the code bytes
    /// `qs[32j + 4t .. 32j + 4t + 4]` of that row (values `4t..4t+4` of sub-block `2j` in the
    /// low nibbles, of sub-block `2j + 1` in the high ones). That is the order the kernel
    /// reads them in, so a column streams line after line. With the order `8j + t` the
    /// reads jumped across the column, and the kernel needed a software prefetch that never
    /// reached the bus's rate (docs/PERFORMANCE.md, "Round 12"); in this order the hardware
    /// prefetchers keep up and none is issued.
    const OFF_QS: usize = 256;
    /// One cache line; the repacked matrix is a vector of them, so registers load aligned.
    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    struct Line([u8; 64]);

    /// A repacked matrix: `rows / 16` groups, each `blocks` columns of [`COLUMN`] bytes.
    struct Interleaved {
        lines: Vec<Line>, // [rows / 16, blocks, COLUMN / 64]
        blocks: usize,
    }

    impl Interleaved {
        /// The lines of groups `g0..g1`.
        fn groups(&self, g0: usize, g1: usize) -> &[Line] {
            let per_group = self.blocks * COLUMN / 64;
            &self.lines[g0 * per_group..g1 * per_group]
        }
    }

    /// Plain scalar repack of `rows` rows (a multiple of 16) of `blocks` Q4_K super-blocks.
    fn repack(w: &[BlockQ4_K], rows: usize, blocks: usize) -> Interleaved {
        assert!(
            rows.is_multiple_of(R) && w.len() == rows * blocks,
            "rows must be a multiple of 16"
        );
        let mut lines = vec![Line([0; 64]); rows / R * blocks * COLUMN / 64];
        let bytes: &mut [u8] = line_bytes(&mut lines);
        for g in 0..rows / R {
            for b in 0..blocks {
                let column = &mut bytes[(g * blocks + b) * COLUMN..][..COLUMN];
                for r in 0..R {
                    let x = &w[(R * g + r) * blocks + b];
                    column[2 * r..2 * r + 2].copy_from_slice(&x.d.to_le_bytes());
                    column[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&x.dmin.to_le_bytes());
                    for k in 0..3 {
                        column[OFF_SCALES + 64 * k + 4 * r..][..4]
                            .copy_from_slice(&x.scales[4 * k..4 * k + 4]);
                    }
                    for j in 0..4 {
                        for t in 0..8 {
                            column[OFF_QS + 64 * (4 * t + j) + 4 * r..][..4]
                                .copy_from_slice(&x.qs[32 * j + 4 * t..][..4]);
                        }
                    }
                }
            }
        }
        Interleaved { lines, blocks }
    }

    /// The lines as bytes (a `Line` is 64 plain bytes).
    fn line_bytes(lines: &mut [Line]) -> &mut [u8] {
        let len = std::mem::size_of_val(lines);
        // SAFETY: `Line` is `repr(C)` of 64 `u8`, no padding; the slice covers exactly them.
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), len) }
    }

    /// Per activation super-block, the sums of its 8 sub-blocks of 32 codes
    /// `B_s = bsums[2s] + bsums[2s + 1]` (|B| ≤ 4064) split as `B = 64·high + low` with `low`
    /// in `0..64` and `high` in `-64..64`, so both fit the signed byte operand of `vpdpbusd`:
    /// dwords `[low 0..4, high 0..4, low 4..8, high 4..8]`.
    fn sub_block_sums(a: &[BlockQ8_K]) -> Vec<[i32; 4]> {
        a.iter()
            .map(|y| {
                let split = |s: usize| {
                    let b = y.bsums[2 * s] as i32 + y.bsums[2 * s + 1] as i32;
                    ((b & 63) as u8, (b >> 6) as i8 as u8)
                };
                let word = |first: usize, high: bool| {
                    i32::from_le_bytes(std::array::from_fn(|k| {
                        let (low, hi) = split(first + k);
                        if high {
                            hi
                        } else {
                            low
                        }
                    }))
                };
                [word(0, false), word(0, true), word(4, false), word(4, true)]
            })
            .collect()
    }

    /// `vpshufb` control that zero-extends byte `k` of every dword.
    const fn byte_of_dword(k: usize) -> [u8; 64] {
        let mut c = [0x80u8; 64];
        let mut i = 0;
        while i < 64 {
            if i % 4 == 0 {
                c[i] = (i % 16 + k) as u8;
            }
            i += 1;
        }
        c
    }
    const BYTE_OF_DWORD: [[u8; 64]; 4] = [
        byte_of_dword(0),
        byte_of_dword(1),
        byte_of_dword(2),
        byte_of_dword(3),
    ];
    /// `vgf2p8affineqb` matrix moving bits 6, 7 of each byte to bits 4, 5 (the rest 0).
    const TOP_TWO_TO_4_5: i64 = 0x0000_0000_4080_0000;

    /// `out[r] = w_r · a` for the `out.len()` rows (a multiple of 16) whose groups are `lines`
    /// (a slice of [`Interleaved::lines`] at a group boundary).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL/VNNI and GFNI. `sums` must be
    /// [`sub_block_sums`]`(a)`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,gfni")]
    unsafe fn gemv(lines: &[Line], a: &[BlockQ8_K], sums: &[[i32; 4]], out: &mut [f32]) {
        let blocks = a.len();
        assert!(out.len().is_multiple_of(R) && sums.len() == blocks);
        assert_eq!(lines.len() * 64, out.len() / R * blocks * COLUMN);
        let base = lines.as_ptr().cast::<u8>();
        // SAFETY (whole body): the loads stay inside `lines` (size asserted; each column
        // starts 64-byte aligned, so the aligned loads are legal) and inside `y.qs` (256 B:
        // `64j + 32 + 4t + 4 ≤ 256`); the features are enabled here.
        unsafe {
            let low4 = _mm512_set1_epi8(0x0F);
            let high4 = _mm512_set1_epi8(0xF0u8 as i8);
            let six_bits = _mm512_set1_epi8(0x3F);
            let top_two = _mm512_set1_epi64(TOP_TWO_TO_4_5);
            let pick: [__m512i; 4] =
                std::array::from_fn(|k| _mm512_loadu_si512(BYTE_OF_DWORD[k].as_ptr().cast()));
            for (g, out) in out.chunks_exact_mut(R).enumerate() {
                let mut acc = _mm512_setzero_ps(); // [16] one lane per row
                for (b, (y, sums)) in a.iter().zip(sums).enumerate() {
                    let p = base.add((g * blocks + b) * COLUMN);
                    // dot[s]: lane r = Σ code·y over sub-block s of row r (odd s: 16× that,
                    // the high nibble is kept in place by one `and`).
                    let mut dot = [_mm512_setzero_si512(); 8];
                    let yq = y.qs.as_ptr();
                    for t in 0..8 {
                        for j in 0..4 {
                            let bits = _mm512_load_si512(p.add(OFF_QS + 64 * (4 * t + j)).cast());
                            let y_even = _mm512_set1_epi32(
                                yq.add(64 * j + 4 * t).cast::<i32>().read_unaligned(),
                            );
                            let y_odd = _mm512_set1_epi32(
                                yq.add(64 * j + 32 + 4 * t).cast::<i32>().read_unaligned(),
                            );
                            let (lo, hi) =
                                (_mm512_and_si512(bits, low4), _mm512_and_si512(bits, high4));
                            dot[2 * j] = _mm512_dpbusd_epi32(dot[2 * j], lo, y_even);
                            dot[2 * j + 1] = _mm512_dpbusd_epi32(dot[2 * j + 1], hi, y_odd);
                        }
                    }
                    // The 6-bit scales and mins of the 16 rows (formats::q4_k::scales_mins):
                    // byte k of a lane is sub-block k (0..4) or k + 4 (4..8).
                    let word = |k: usize| _mm512_load_si512(p.add(OFF_SCALES + 64 * k).cast());
                    let (u0, u1, u2) = (word(0), word(1), word(2));
                    let scales_03 = _mm512_and_si512(u0, six_bits);
                    let mins_03 = _mm512_and_si512(u1, six_bits);
                    // (u2 & 0x0F) | (u0 >> 6) << 4 per byte: ternary logic A | (B & C).
                    let scales_47 = _mm512_ternarylogic_epi32::<0xF8>(
                        _mm512_gf2p8affine_epi64_epi8::<0>(u0, top_two),
                        u2,
                        low4,
                    );
                    let mins_47 = _mm512_ternarylogic_epi32::<0xF8>(
                        _mm512_gf2p8affine_epi64_epi8::<0>(u1, top_two),
                        _mm512_srli_epi32::<4>(u2),
                        low4,
                    );
                    // Σ_s scale_s · dot_s, exact in i32 (|·| < 2.6e8); the odd sub-blocks' sum
                    // is 16× and every term of it a multiple of 16, so the shift is exact.
                    let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                    for (s, &dot) in dot.iter().enumerate() {
                        let from = if s < 4 { scales_03 } else { scales_47 };
                        let scaled =
                            _mm512_mullo_epi32(dot, _mm512_shuffle_epi8(from, pick[s % 4]));
                        if s % 2 == 0 {
                            even = _mm512_add_epi32(even, scaled);
                        } else {
                            odd = _mm512_add_epi32(odd, scaled);
                        }
                    }
                    let sumi = _mm512_add_epi32(even, _mm512_srai_epi32::<4>(odd));
                    // Σ_s min_s · B_s = 64·Σ min·high + Σ min·low (four byte dot products).
                    let dp = |acc, mins, word: i32| {
                        _mm512_dpbusd_epi32(acc, mins, _mm512_set1_epi32(word))
                    };
                    let high = dp(
                        dp(_mm512_setzero_si512(), mins_03, sums[1]),
                        mins_47,
                        sums[3],
                    );
                    let summ = dp(
                        dp(_mm512_slli_epi32::<6>(high), mins_03, sums[0]),
                        mins_47,
                        sums[2],
                    );
                    let d = _mm512_cvtph_ps(_mm256_load_si256(p.cast()));
                    let dmin = _mm512_cvtph_ps(_mm256_load_si256(p.add(32).cast()));
                    let row = _mm512_fnmadd_ps(
                        dmin,
                        _mm512_cvtepi32_ps(summ),
                        _mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi)),
                    );
                    acc = _mm512_fmadd_ps(row, _mm512_set1_ps(y.d), acc);
                }
                _mm512_storeu_ps(out.as_mut_ptr(), acc);
            }
        }
    }

    /// Xorshift generator for reproducible weights and activations.
    struct Rng(u64);
    impl Rng {
        /// Uniform in [-1, 1).
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// `rows` Q4_K rows of `cols` values: `distinct` random rows (row scales vary by row),
    /// repeated down the matrix (speed does not depend on the values).
    fn weights(rows: usize, cols: usize, distinct: usize, rng: &mut Rng) -> Vec<BlockQ4_K> {
        let blocks = cols / QK_K;
        let mut w = vec![BlockQ4_K::zeroed(); rows * blocks];
        let distinct = distinct.clamp(1, rows);
        for r in 0..distinct {
            let x: Vec<f32> = (0..cols).map(|_| rng.next() * (1 + r % 5) as f32).collect();
            let row = &mut w[r * blocks..(r + 1) * blocks];
            quantize_row(GgmlType::Q4_K, &x, bytemuck::cast_slice_mut(row)).expect("quantize");
        }
        for r in distinct..rows {
            let from = (r * 7919) % distinct;
            w.copy_within(from * blocks..(from + 1) * blocks, r * blocks);
        }
        w
    }

    fn activations(cols: usize, rng: &mut Rng) -> Vec<BlockQ8_K> {
        let x: Vec<f32> = (0..cols).map(|_| 3.0 * rng.next()).collect();
        let mut a = vec![BlockQ8_K::zeroed(); cols / QK_K];
        BlockQ8_K::quantize(&x, &mut a);
        a
    }

    /// Checks the kernel on `rows × cols` against the scalar `vec_dot` of every row, to 1e-5
    /// of the row's magnitude Σ |d·scale·q·y| + |dmin·min·y| (the kernel sums in another
    /// order); returns the largest relative error.
    fn check(rows: usize, cols: usize, rng: &mut Rng) -> f64 {
        let blocks = cols / QK_K;
        let w = weights(rows, cols, rows, rng);
        let a = activations(cols, rng);
        let mut out = vec![f32::NAN; rows];
        let interleaved = repack(&w, rows, blocks);
        // SAFETY: `main` checked the features; `sums` is made from `a`.
        unsafe {
            gemv(
                interleaved.groups(0, rows / R),
                &a,
                &sub_block_sums(&a),
                &mut out,
            )
        };
        let mut worst = 0.0f64;
        for (r, &got) in out.iter().enumerate() {
            let row = &w[r * blocks..(r + 1) * blocks];
            let want = BlockQ4_K::vec_dot(row, &a) as f64;
            let magnitude: f64 = row
                .iter()
                .zip(&a)
                .map(|(x, y)| {
                    let (sc, mn) = scales_mins(&x.scales);
                    let (d, dmin) = (f16_to_f32(x.d) as f64, f16_to_f32(x.dmin) as f64);
                    (0..QK_K)
                        .map(|i| {
                            let (s, half) = (i / 32, i % 32);
                            let byte = x.qs[32 * (s / 2) + half];
                            let q = if s % 2 == 0 { byte & 15 } else { byte >> 4 };
                            let y = y.d as f64 * y.qs[i] as f64;
                            (d * sc[s] as f64 * q as f64 * y).abs()
                                + (dmin * mn[s] as f64 * y).abs()
                        })
                        .sum::<f64>()
                })
                .sum();
            let err = (got as f64 - want).abs() / magnitude.max(f64::MIN_POSITIVE);
            assert!(
                err <= 1e-5,
                "row {r} of {rows}×{cols}: {got} against {want} (relative {err:e})"
            );
            worst = worst.max(err);
        }
        worst
    }

    pub fn main() {
        use std::is_x86_feature_detected as has;
        let features = has!("avx512f") && has!("avx512bw") && has!("avx512vl");
        if !(features && has!("avx512vnni") && has!("gfni") && has!("f16c") && has!("fma")) {
            eprintln!("interleaved_q4k: needs AVX-512 F/BW/VL/VNNI, GFNI, F16C and FMA");
            std::process::exit(1);
        }
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        if args.first().map(String::as_str) == Some("check") {
            let mut worst = 0.0f64;
            // One super-block per row, 3, 10, an odd 37 and 38; 1 to 16 groups of rows.
            for (rows, cols) in [
                (16, 256),
                (32, 768),
                (48, 2560),
                (64, 9472),
                (256, 2560),
                (16, 9728),
            ] {
                let err = check(rows, cols, &mut rng);
                println!("{rows}×{cols}: every row within {err:.1e} of the scalar vec_dot");
                worst = worst.max(err);
            }
            println!("check passed (largest relative error {worst:.1e})");
            return;
        }
        let number = |i: usize, default: usize| {
            args.get(i).map_or(default, |a| {
                a.parse().unwrap_or_else(|_| {
                    eprintln!("interleaved_q4k: {a:?} is not a number (usage: check | ROWS COLS)");
                    std::process::exit(2)
                })
            })
        };
        let (rows, cols, threads) = (number(0, 9728), number(1, 2560), number(2, 1));
        if !rows.is_multiple_of(R) || !cols.is_multiple_of(QK_K) || rows == 0 || cols == 0 {
            eprintln!("interleaved_q4k: ROWS must be a multiple of 16 and COLS of 256");
            std::process::exit(2);
        }
        let threads = threads.clamp(1, rows / R);
        let blocks = cols / QK_K;
        let row_bytes = blocks * std::mem::size_of::<BlockQ4_K>();
        let w = weights(rows, cols, 64, &mut rng);
        let a = activations(cols, &mut rng);
        let interleaved = repack(&w, rows, blocks);
        let sums = sub_block_sums(&a);
        let table = select(Isa::detect_best()).expect("best ISA");
        let plain = table
            .entry(GgmlType::Q4_K)
            .and_then(|e| e.gemv)
            .expect("Q4_K gemv");
        let (w_bytes, a_bytes): (&[u8], &[u8]) =
            (bytemuck::cast_slice(&w), bytemuck::cast_slice(&a));
        let gb = w_bytes.len() as f64 / 1e9;
        let mut out = vec![0.0f32; rows];
        // One contiguous range of row groups per thread, as the runtime splits a product.
        let groups = rows / R;
        let ranges: Vec<(usize, usize)> = (0..threads)
            .map(|t| (groups * t / threads, groups * (t + 1) / threads))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        let run_plain = |out: &mut [f32]| {
            split(out, &ranges, |g0, g1, out| {
                plain(
                    &w_bytes[g0 * R * row_bytes..g1 * R * row_bytes],
                    row_bytes,
                    a_bytes,
                    out,
                )
            })
        };
        let run_interleaved = |out: &mut [f32]| {
            split(out, &ranges, |g0, g1, out| {
                // SAFETY: the features were checked above; `sums` is made from `a`.
                unsafe { gemv(interleaved.groups(g0, g1), &a, &sums, out) }
            })
        };
        pool.install(|| {
            // Several threads share the bus: then the read probe on the same threads too.
            let probe = (threads > 1).then(|| ReadProbe::new(w_bytes.len().max(1 << 30)));
            println!(
                "{rows}×{cols} Q4_K ({:.1} MB), {threads} thread(s), GB of weights per CPU-second \
                 (per wall-clock second):",
                gb * 1e3
            );
            for run in 1..=3 {
                let (cpu, wall) = time(|| run_plain(&mut out));
                let (cpu_i, wall_i) = time(|| run_interleaved(&mut out));
                let bus = probe.as_ref().map_or(String::new(), |p| {
                    format!(", DRAM read probe {:.1} GB/s", p.measure(2))
                });
                println!(
                    "run {run}: k4_rows {:.1} ({:.1}), interleaved {:.1} ({:.1}){bus}",
                    gb / cpu,
                    gb / wall,
                    gb / cpu_i,
                    gb / wall_i
                );
            }
        });
    }

    /// Runs `f(g0, g1, out)` for each range of row groups on its own rayon task, with `out`
    /// the outputs of those groups' rows.
    fn split(
        out: &mut [f32],
        ranges: &[(usize, usize)],
        f: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) {
        rayon::scope(|scope| {
            let mut rest = out;
            for &(g0, g1) in ranges {
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut((g1 - g0) * R);
                rest = tail;
                let f = &f;
                scope.spawn(move |_| f(g0, g1, mine));
            }
        });
    }
}

//! Roofline probes: the machine's own limits, measured on the spot, so `grist bench` can say
//! how close a run comes to them.
//!
//! - [`read_bandwidth`] / [`ReadProbe`]: how fast the CPU streams a buffer far larger than its
//!   caches from DRAM, the better of a loads-only loop and one that prefetches ahead as the
//!   kernels do. Token generation reads every weight byte once per token, so this bounds
//!   tokens/s.
//! - [`int8_peak`]: the int8 multiply-add rate of the selected kernel table's Q8_0 dot product
//!   on cache-resident data: the ceiling for compute-bound prompt processing with that ISA's
//!   *kernels*.
//! - [`int8_instruction_peak`]: the rate of the ISA's int8 multiply-add *instruction* itself
//!   (`vpdpbusd`, `vpmaddubsw`+`vpmaddwd`, `sdot`) in a loop with no loads and many
//!   independent accumulators: the hardware ceiling no kernel can pass. The gap between the
//!   two is what a better kernel could still win.
//!
//! All run on the current rayon pool (install a pool to choose the thread count) and report
//! the best of several repetitions, as the machine may be shared and noisy.

use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;

use crate::blocks::BlockQ8_0;
use crate::dispatch::{Isa, Kernels};
use grist_gguf::GgmlType;

/// Sums `buf` (wrapping), returning the sum so the reads are not elided. Integer addition is
/// associative, so the compiler vectorizes this into several independent vector accumulators:
/// the loop is bound by loads, not by an add chain.
#[inline(always)]
fn stream_sum(buf: &[u64]) -> u64 {
    buf.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

/// How far ahead of the loads [`stream_sum_prefetched`] asks for lines: the distance the
/// AVX-512 k-quant kernels prefetch their weights (`simd::x86::avx512::K_PREFETCH`).
const PREFETCH_AHEAD: usize = 8192;

/// [`stream_sum`] with a software prefetch [`PREFETCH_AHEAD`] bytes ahead of the loads, as the
/// matrix-vector kernels stream their weights. On this project's EPYC host the prefetched
/// stream read 6–20 % more than the plain one at the host's lower bandwidth level
/// (docs/PERFORMANCE.md, "Token generation, round 6"), so a probe without it would
/// understate the bandwidth the kernels can reach.
#[inline(always)]
fn stream_sum_prefetched(buf: &[u64]) -> u64 {
    const LINE_WORDS: usize = 8; // 64-byte cache lines of u64
    const CHUNK_WORDS: usize = 8 * LINE_WORDS; // 512 bytes: 8 lines per prefetch burst
    let mut lanes = [0u64; LINE_WORDS]; // one vector register of running sums
    let mut chunks = buf.chunks_exact(CHUNK_WORDS);
    for chunk in &mut chunks {
        let ahead = (chunk.as_ptr() as usize).wrapping_add(PREFETCH_AHEAD);
        for line in 0..CHUNK_WORDS / LINE_WORDS {
            crate::cache::prefetch_line(ahead.wrapping_add(64 * line));
        }
        for line in chunk.chunks_exact(LINE_WORDS) {
            for (lane, &x) in lanes.iter_mut().zip(line) {
                *lane = lane.wrapping_add(x);
            }
        }
    }
    stream_sum(chunks.remainder()).wrapping_add(stream_sum(&lanes))
}

/// Which read loop a bandwidth repetition runs.
#[derive(Clone, Copy)]
enum ReadLoop {
    /// Loads only: the hardware prefetcher alone fetches ahead.
    Plain,
    /// Loads with a software prefetch ahead ([`stream_sum_prefetched`]).
    Prefetched,
}

/// `buf`'s wrapping sum by `read_loop`, with the widest loads the CPU has (the anchor figures
/// were measured with AVX-512 loads; 16-byte SSE2 loads reach less).
fn stream_sum_widest(buf: &[u64], read_loop: ReadLoop) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected on this CPU just above.
        return unsafe { stream_sum_avx512(buf, read_loop) };
    }
    match read_loop {
        ReadLoop::Plain => stream_sum(buf),
        ReadLoop::Prefetched => stream_sum_prefetched(buf),
    }
}

/// The read loops compiled with AVX-512 enabled, so they are vectorized with 64-byte loads.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_sum_avx512(buf: &[u64], read_loop: ReadLoop) -> u64 {
    match read_loop {
        ReadLoop::Plain => stream_sum(buf),
        ReadLoop::Prefetched => stream_sum_prefetched(buf),
    }
}

/// A buffer for measuring DRAM read bandwidth, allocated and paged in once, so the bandwidth
/// can be measured again and again in one run (`grist bench` measures it after each
/// token-generation repetition, as the host's bandwidth drifts).
pub struct ReadProbe {
    buf: Vec<u64>, // [bytes / 8], far larger than the last-level cache
}

impl ReadProbe {
    /// Allocates a `bytes`-sized buffer (use far more than the last-level cache, e.g. 1 GiB)
    /// and fills it with distinct values, which also pages it in before any timing.
    pub fn new(bytes: usize) -> Self {
        let n = (bytes / 8).max(8);
        Self {
            buf: (0..n as u64).collect(),
        }
    }

    /// DRAM read bandwidth in GB/s (10⁹ bytes per second): reads the buffer split evenly
    /// over the current rayon pool's threads, `reps` times with each of two read loops
    /// (loads only, and loads with a software prefetch ahead as the kernels do),
    /// alternated, and returns the best pass of either. The best, because the machine may
    /// be shared: this is what the bus can deliver, the ceiling a token's weight stream is
    /// measured against.
    pub fn measure(&self, reps: usize) -> f64 {
        let threads = rayon::current_num_threads().max(1);
        let share = self.buf.len().div_ceil(threads);
        let mut best = 0.0f64;
        for _ in 0..reps.max(1) {
            for read_loop in [ReadLoop::Plain, ReadLoop::Prefetched] {
                let t = Instant::now();
                let sum: u64 = self
                    .buf
                    .par_chunks(share)
                    .map(|part| stream_sum_widest(part, read_loop))
                    .reduce(|| 0, u64::wrapping_add);
                let secs = t.elapsed().as_secs_f64();
                black_box(sum);
                best = best.max((self.buf.len() * 8) as f64 / secs / 1e9);
            }
        }
        best
    }
}

/// DRAM read bandwidth in GB/s of a fresh [`ReadProbe`] of `bytes`, best of `reps` passes
/// per read loop ([`ReadProbe::measure`]).
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    ReadProbe::new(bytes).measure(reps)
}

/// Int8 multiply-add throughput in GOPS (10⁹ operations per second, a multiply and an add
/// counted as two) of `kernels`' best Q8_0 matrix product: a cache-resident Q8_0 weight matrix
/// `[256, 2048]` times 192 activation rows (a whole number of the panel GEMM's 3 × 16-token
/// tiles), through [`crate::matmul::matmul_prequantized_with`] (the panel GEMM or the
/// register tiles, whichever the ISA has) on the current rayon pool; best of `reps`. This is
/// the ceiling a compute-bound prompt-processing matmul can reach with that ISA's kernels.
pub fn int8_peak(kernels: &Kernels, reps: usize) -> f64 {
    use crate::formats::quantize_row;
    use crate::matmul::{matmul_prequantized_with, quantize_activations_with, QMatrix};
    const ROWS: usize = 256;
    const COLS: usize = 2048;
    const N: usize = 192;
    const CALLS: usize = 8;
    let Some(entry) = kernels.entry(GgmlType::Q8_0) else {
        return 0.0;
    };
    let values: Vec<f32> = (0..ROWS * COLS)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0)
        .collect();
    let row_bytes = COLS / 32 * std::mem::size_of::<BlockQ8_0>();
    let mut weights = vec![0u8; ROWS * row_bytes];
    for (src, dst) in values
        .chunks_exact(COLS)
        .zip(weights.chunks_exact_mut(row_bytes))
    {
        if quantize_row(GgmlType::Q8_0, src, dst).is_err() {
            return 0.0;
        }
    }
    let Ok(w) = QMatrix::new(GgmlType::Q8_0, &weights, ROWS, COLS) else {
        return 0.0;
    };
    let x: Vec<f32> = values[..N * COLS].iter().map(|v| v * 0.5).collect();
    let mut scratch = crate::matmul::ActivationScratch::new();
    if quantize_activations_with(kernels, entry.act_type, &x, N, COLS, &mut scratch).is_err() {
        return 0.0;
    }
    let mut y = vec![0.0f32; N * ROWS];
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        for _ in 0..CALLS {
            if matmul_prequantized_with(kernels, &w, &scratch, &mut y).is_err() {
                return 0.0;
            }
            black_box(&mut y);
        }
        let secs = t.elapsed().as_secs_f64();
        let ops = 2.0 * (ROWS * COLS * N * CALLS) as f64;
        best = best.max(ops / secs / 1e9);
    }
    best
}

/// The int8 multiply-add instruction [`int8_instruction_peak`] times for `isa`, as printed.
pub fn int8_instruction_name(isa: Isa) -> Option<&'static str> {
    match isa {
        Isa::Scalar => None,
        Isa::Avx2 => Some("vpmaddubsw+vpmaddwd ymm"),
        Isa::Avx512 => Some("vpdpbusd zmm"),
        Isa::Neon => Some(if crate::dispatch::CpuFeatures::detect().dotprod {
            "sdot"
        } else {
            "smull+sadalp"
        }),
    }
}

/// Peak int8 multiply-add rate in GOPS (a multiply and an add counted as two) of `isa`'s
/// widest integer dot-product instruction, on every thread of the current rayon pool at
/// once: a register-only loop of independent accumulators (no loads, no dependency chains),
/// timed over ~`millis` ms per repetition, best of `reps`. `None` when the CPU lacks the
/// ISA or the ISA has no such instruction (scalar).
///
/// Ops per instruction: `vpdpbusd zmm` 64 u8×s8 products summed into 16 lanes = 128;
/// `vpmaddubsw`+`vpmaddwd` on ymm 32 products = 64 per pair (the AVX2 kernels' recipe); NEON
/// `sdot` (16 products) = 32, without dotprod `smull`+`sadalp` 8 products = 16 per pair.
pub fn int8_instruction_peak(isa: Isa, millis: u64, reps: usize) -> Option<f64> {
    let (kernel, ops_per_iter): (fn(u64), f64) = instruction_loop(isa)?;
    Some(loop_peak(kernel, ops_per_iter, millis, reps))
}

/// [`int8_instruction_peak`] with the panel microkernel's per-block float work added: per
/// 32-value block, 8 `vpdpbusd` into each of 12 accumulators, then per accumulator the fold
/// of the 32-value formats (`vcvtdq2ps`, `vmulps` for `dw·dy`, `vfmadd231ps`), registers
/// only. On cores where the float multiplies share the `vpdpbusd` pipes this is the ceiling
/// of the prompt-processing kernel, below the instruction's own (80 % on Zen 4; see
/// docs/PERFORMANCE.md, "Round 17", and `kernels/examples/pipe_mix.rs`). GOPS counts the
/// int8 work only. `None` unless `isa` is AVX-512 and available (the only panel kernel).
pub fn panel_mix_peak(isa: Isa, millis: u64, reps: usize) -> Option<f64> {
    if isa != Isa::Avx512 || !isa.available() {
        return None;
    }
    Some(loop_peak(panel_mix_loop()?, 96.0 * 128.0, millis, reps))
}

/// The timing loop of [`panel_mix_peak`] (x86-64 only).
fn panel_mix_loop() -> Option<fn(u64)> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(peak_loops::vpdpbusd_zmm_panel_mix)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// GOPS of `kernel` (`ops_per_iter` int8 ops per iteration) run on every thread of the current
/// rayon pool at once, ~`millis` ms per repetition, best of `reps`.
fn loop_peak(kernel: fn(u64), ops_per_iter: f64, millis: u64, reps: usize) -> f64 {
    // Calibrate the iteration count to ~`millis` ms on one thread.
    let mut iters = 1u64 << 16;
    loop {
        let t = Instant::now();
        kernel(iters);
        let secs = t.elapsed().as_secs_f64();
        if secs * 1e3 >= millis as f64 / 4.0 || iters >= 1 << 40 {
            iters = ((iters as f64) * (millis as f64 / 1e3) / secs.max(1e-9)).max(1.0) as u64;
            break;
        }
        iters *= 4;
    }
    let threads = rayon::current_num_threads().max(1);
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        rayon::broadcast(|_| kernel(iters));
        let secs = t.elapsed().as_secs_f64();
        best = best.max(iters as f64 * ops_per_iter * threads as f64 / secs / 1e9);
    }
    best
}

/// The timing loop of [`int8_instruction_peak`] for `isa` and the int8 ops one iteration
/// performs, if the CPU can run it.
fn instruction_loop(isa: Isa) -> Option<(fn(u64), f64)> {
    if !isa.available() {
        return None;
    }
    match isa {
        Isa::Scalar => None,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some((peak_loops::vpdpbusd_zmm, 12.0 * 128.0)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some((peak_loops::maddubs_ymm, 6.0 * 64.0)),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Some(if crate::dispatch::CpuFeatures::detect().dotprod {
            (peak_loops::sdot as fn(u64), 12.0 * 32.0)
        } else {
            (peak_loops::smull_sadalp as fn(u64), 6.0 * 16.0)
        }),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Register-only instruction loops for [`int8_instruction_peak`]. Each iteration issues a
/// fixed number of independent multiply-adds (12 accumulators, more than latency ×
/// throughput on current cores, so the loop measures throughput, not latency).
#[cfg(target_arch = "x86_64")]
mod peak_loops {
    use std::arch::asm;

    /// `iters` × 12 `vpdpbusd zmm` into 12 independent accumulators.
    pub(super) fn vpdpbusd_zmm(iters: u64) {
        // `int8_instruction_peak` only returns this loop when `Isa::Avx512` is available
        // (AVX-512 VNNI detected), and it is private to this module's caller.
        // SAFETY: the CPU supports AVX-512 VNNI (checked by `instruction_loop` through
        // `Isa::available`); the asm only touches the registers it declares as clobbered
        // and the counter, reads no memory and leaves the stack alone.
        unsafe {
            asm!(
                "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
                "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
                "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7", "vpxord zmm8, zmm8, zmm8",
                "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
                "vpternlogd zmm12, zmm12, zmm12, 0xff", "vpxord zmm13, zmm13, zmm13",
                "2:",
                "vpdpbusd zmm0, zmm12, zmm13", "vpdpbusd zmm1, zmm12, zmm13",
                "vpdpbusd zmm2, zmm12, zmm13", "vpdpbusd zmm3, zmm12, zmm13",
                "vpdpbusd zmm4, zmm12, zmm13", "vpdpbusd zmm5, zmm12, zmm13",
                "vpdpbusd zmm6, zmm12, zmm13", "vpdpbusd zmm7, zmm12, zmm13",
                "vpdpbusd zmm8, zmm12, zmm13", "vpdpbusd zmm9, zmm12, zmm13",
                "vpdpbusd zmm10, zmm12, zmm13", "vpdpbusd zmm11, zmm12, zmm13",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters.max(1) => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
                out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
                out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _,
                options(nomem, nostack),
            );
        }
    }

    /// 8 `vpdpbusd zmm` into each of the 12 accumulators zmm0–zmm11 (one 32-value block of
    /// the panel microkernel's 4 × 3 tile).
    macro_rules! block_of_vpdpbusd {
        () => {
            concat!(
                ".rept 8\n",
                "vpdpbusd zmm0, zmm12, zmm13\n",
                "vpdpbusd zmm1, zmm12, zmm13\n",
                "vpdpbusd zmm2, zmm12, zmm13\n",
                "vpdpbusd zmm3, zmm12, zmm13\n",
                "vpdpbusd zmm4, zmm12, zmm13\n",
                "vpdpbusd zmm5, zmm12, zmm13\n",
                "vpdpbusd zmm6, zmm12, zmm13\n",
                "vpdpbusd zmm7, zmm12, zmm13\n",
                "vpdpbusd zmm8, zmm12, zmm13\n",
                "vpdpbusd zmm9, zmm12, zmm13\n",
                "vpdpbusd zmm10, zmm12, zmm13\n",
                "vpdpbusd zmm11, zmm12, zmm13\n",
                ".endr\n",
            )
        };
    }

    /// The fold of accumulator `$a` into float sum `$s`: convert, scale `dw·dy`, add.
    macro_rules! fold {
        ($a:literal, $s:literal) => {
            concat!(
                "vcvtdq2ps zmm",
                $a,
                ", zmm",
                $a,
                "\n",
                "vmulps zmm31, zmm30, zmm28\n",
                "vfmadd231ps zmm",
                $s,
                ", zmm",
                $a,
                ", zmm31\n",
            )
        };
    }

    /// `iters` panel blocks: the accumulators set from a bias, [`block_of_vpdpbusd`], then
    /// the 12 folds (see [`super::panel_mix_peak`]).
    pub(super) fn vpdpbusd_zmm_panel_mix(iters: u64) {
        // SAFETY: the CPU supports AVX-512 VNNI (checked by `panel_mix_peak` through
        // `Isa::available`); the asm only touches the registers it declares as clobbered
        // and two general registers, reads no memory and leaves the stack alone. The float
        // registers start at 0 and 1.0, so no denormal slows the loop.
        unsafe {
            asm!(
                "mov {one:e}, 0x3f800000",
                "vpbroadcastd zmm28, {one:e}", "vmovaps zmm30, zmm28",
                "vpternlogd zmm12, zmm12, zmm12, 0xff", "vpxord zmm13, zmm13, zmm13",
                "vpxord zmm29, zmm29, zmm29",
                "vpxord zmm16, zmm16, zmm16", "vpxord zmm17, zmm17, zmm17",
                "vpxord zmm18, zmm18, zmm18", "vpxord zmm19, zmm19, zmm19",
                "vpxord zmm20, zmm20, zmm20", "vpxord zmm21, zmm21, zmm21",
                "vpxord zmm22, zmm22, zmm22", "vpxord zmm23, zmm23, zmm23",
                "vpxord zmm24, zmm24, zmm24", "vpxord zmm25, zmm25, zmm25",
                "vpxord zmm26, zmm26, zmm26", "vpxord zmm27, zmm27, zmm27",
                "2:",
                "vmovdqa64 zmm0, zmm29", "vmovdqa64 zmm1, zmm29", "vmovdqa64 zmm2, zmm29",
                "vmovdqa64 zmm3, zmm29", "vmovdqa64 zmm4, zmm29", "vmovdqa64 zmm5, zmm29",
                "vmovdqa64 zmm6, zmm29", "vmovdqa64 zmm7, zmm29", "vmovdqa64 zmm8, zmm29",
                "vmovdqa64 zmm9, zmm29", "vmovdqa64 zmm10, zmm29", "vmovdqa64 zmm11, zmm29",
                block_of_vpdpbusd!(),
                fold!(0, 16), fold!(1, 17), fold!(2, 18), fold!(3, 19),
                fold!(4, 20), fold!(5, 21), fold!(6, 22), fold!(7, 23),
                fold!(8, 24), fold!(9, 25), fold!(10, 26), fold!(11, 27),
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters.max(1) => _,
                one = out(reg) _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
                out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
                out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _,
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
                out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
                options(nomem, nostack),
            );
        }
    }

    /// `iters` × 6 (`vpmaddubsw` + `vpmaddwd` + `vpaddd`) on ymm, 6 independent chains.
    pub(super) fn maddubs_ymm(iters: u64) {
        // SAFETY: the CPU supports AVX2 (checked by `instruction_loop` through
        // `Isa::available`); the asm only touches the registers it declares as clobbered
        // and the counter, reads no memory and leaves the stack alone.
        unsafe {
            asm!(
                "vpxor ymm0, ymm0, ymm0", "vpxor ymm1, ymm1, ymm1", "vpxor ymm2, ymm2, ymm2",
                "vpxor ymm3, ymm3, ymm3", "vpxor ymm4, ymm4, ymm4", "vpxor ymm5, ymm5, ymm5",
                "vpcmpeqb ymm14, ymm14, ymm14", "vpabsb ymm15, ymm14",
                "2:",
                "vpmaddubsw ymm6, ymm14, ymm15", "vpmaddubsw ymm7, ymm14, ymm15",
                "vpmaddubsw ymm8, ymm14, ymm15", "vpmaddubsw ymm9, ymm14, ymm15",
                "vpmaddubsw ymm10, ymm14, ymm15", "vpmaddubsw ymm11, ymm14, ymm15",
                "vpmaddwd ymm6, ymm6, ymm15", "vpmaddwd ymm7, ymm7, ymm15",
                "vpmaddwd ymm8, ymm8, ymm15", "vpmaddwd ymm9, ymm9, ymm15",
                "vpmaddwd ymm10, ymm10, ymm15", "vpmaddwd ymm11, ymm11, ymm15",
                "vpaddd ymm0, ymm0, ymm6", "vpaddd ymm1, ymm1, ymm7",
                "vpaddd ymm2, ymm2, ymm8", "vpaddd ymm3, ymm3, ymm9",
                "vpaddd ymm4, ymm4, ymm10", "vpaddd ymm5, ymm5, ymm11",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters.max(1) => _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
                out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
                out("ymm10") _, out("ymm11") _, out("ymm14") _, out("ymm15") _,
                options(nomem, nostack),
            );
        }
    }
}

/// Register-only instruction loops for [`int8_instruction_peak`] (aarch64).
#[cfg(target_arch = "aarch64")]
mod peak_loops {
    use std::arch::asm;

    /// `iters` × 12 `sdot v.4s, v.16b, v.16b` into 12 independent accumulators.
    pub(super) fn sdot(iters: u64) {
        // SAFETY: the CPU has the dotprod extension (checked by `instruction_loop`); the asm
        // (encoded as `.inst` words so no target feature is needed to assemble it) only
        // touches the registers it declares as clobbered and the counter, reads no memory.
        unsafe {
            asm!(
                "movi v12.16b, #1", "movi v13.16b, #2",
                "movi v0.16b, #0", "movi v1.16b, #0", "movi v2.16b, #0", "movi v3.16b, #0",
                "movi v4.16b, #0", "movi v5.16b, #0", "movi v6.16b, #0", "movi v7.16b, #0",
                "movi v8.16b, #0", "movi v9.16b, #0", "movi v10.16b, #0", "movi v11.16b, #0",
                "2:",
                // sdot vD.4s, v12.16b, v13.16b for D = 0..11: 0x4e8d9580 | D
                ".inst 0x4e8d9580", ".inst 0x4e8d9581", ".inst 0x4e8d9582", ".inst 0x4e8d9583",
                ".inst 0x4e8d9584", ".inst 0x4e8d9585", ".inst 0x4e8d9586", ".inst 0x4e8d9587",
                ".inst 0x4e8d9588", ".inst 0x4e8d9589", ".inst 0x4e8d958a", ".inst 0x4e8d958b",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) iters.max(1) => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _,
                out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _,
                options(nomem, nostack),
            );
        }
    }

    /// `iters` × 6 (`smull` + `sadalp`): 8 products each, 6 independent accumulators.
    pub(super) fn smull_sadalp(iters: u64) {
        // SAFETY: plain NEON (every aarch64 CPU); the asm only touches the registers it
        // declares as clobbered and the counter, reads no memory.
        unsafe {
            asm!(
                "movi v12.16b, #1", "movi v13.16b, #2",
                "movi v0.16b, #0", "movi v1.16b, #0", "movi v2.16b, #0",
                "movi v3.16b, #0", "movi v4.16b, #0", "movi v5.16b, #0",
                "2:",
                "smull v6.8h, v12.8b, v13.8b", "smull v7.8h, v12.8b, v13.8b",
                "smull v8.8h, v12.8b, v13.8b", "smull v9.8h, v12.8b, v13.8b",
                "smull v10.8h, v12.8b, v13.8b", "smull v11.8h, v12.8b, v13.8b",
                "sadalp v0.4s, v6.8h", "sadalp v1.4s, v7.8h", "sadalp v2.4s, v8.8h",
                "sadalp v3.4s, v9.8h", "sadalp v4.4s, v10.8h", "sadalp v5.4s, v11.8h",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) iters.max(1) => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _,
                out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _,
                options(nomem, nostack),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_sum_adds_everything() {
        let v: Vec<u64> = (1..=1003).collect();
        assert_eq!(stream_sum(&v), 1003 * 1004 / 2);
    }

    #[test]
    fn every_read_loop_adds_everything() {
        // Lengths around the 64-word prefetch chunk: empty, partial, whole, whole + tail;
        // values near u64::MAX so the sums wrap.
        for len in [0, 1, 63, 64, 65, 128, 1003, 4096 + 17] {
            let v: Vec<u64> = (0..len as u64).map(|i| u64::MAX - i * 7919).collect();
            let want = v.iter().fold(0u64, |a, &x| a.wrapping_add(x));
            for read_loop in [ReadLoop::Plain, ReadLoop::Prefetched] {
                assert_eq!(stream_sum_widest(&v, read_loop), want, "len {len}");
            }
        }
    }

    #[test]
    fn probes_return_positive_rates() {
        assert!(read_bandwidth(1 << 20, 1) > 0.0);
        assert!(int8_peak(crate::dispatch::kernels(), 1) > 0.0);
    }

    #[test]
    fn instruction_peak_is_reported_for_every_available_simd_isa() {
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
            let peak = int8_instruction_peak(isa, 5, 1);
            if isa == Isa::Scalar || !isa.available() {
                assert!(peak.is_none(), "{isa:?}");
            } else {
                assert!(peak.is_some_and(|p| p > 0.0), "{isa:?}");
                assert!(int8_instruction_name(isa).is_some());
            }
        }
    }

    #[test]
    fn panel_mix_peak_is_reported_for_avx512_only() {
        // Rates only, never compared with each other: tests run side by side, so timings
        // here say nothing.
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
            let mix = panel_mix_peak(isa, 5, 1);
            if isa == Isa::Avx512 && isa.available() {
                assert!(mix.is_some_and(|m| m > 0.0), "{isa:?}");
            } else {
                assert!(mix.is_none(), "{isa:?}");
            }
        }
    }
}

//! Roofline probes: the machine's own limits, measured on the spot, so `grist bench` can say
//! how close a run comes to them.
//!
//! - [`read_bandwidth`]: how fast the CPU streams a buffer far larger than its caches from DRAM.
//!   Token generation reads every weight byte once per token, so this bounds tokens/s.
//! - [`int8_peak`]: the int8 multiply-add rate of the selected kernel table's Q8_0 dot product
//!   on cache-resident data: the ceiling for compute-bound prompt processing with that ISA.
//!
//! Both run on the current rayon pool (install a pool to choose the thread count) and report
//! the best of several repetitions, as the machine may be shared and noisy.

use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;

use crate::blocks::BlockQ8_0;
use crate::dispatch::Kernels;
use grist_gguf::GgmlType;

/// Sums `buf` (wrapping), returning the sum so the reads are not elided. Integer addition is
/// associative, so the compiler vectorizes this into several independent vector accumulators:
/// the loop is bound by loads, not by an add chain.
#[inline(always)]
fn stream_sum(buf: &[u64]) -> u64 {
    buf.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

/// [`stream_sum`] compiled with AVX-512 enabled, so the loop is vectorized with 64-byte loads
/// (the anchor figures were measured with AVX-512 loads; 16-byte SSE2 loads reach less).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream_sum_avx512(buf: &[u64]) -> u64 {
    stream_sum(buf)
}

/// [`stream_sum`] with the widest loads the CPU has.
fn stream_sum_widest(buf: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected on this CPU just above.
        return unsafe { stream_sum_avx512(buf) };
    }
    stream_sum(buf)
}

/// DRAM read bandwidth in GB/s (10⁹ bytes per second): reads a `bytes`-sized buffer (use far
/// more than the last-level cache, e.g. 1 GiB) split evenly over the current rayon pool's
/// threads, `reps` times, and returns the best repetition.
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let n = (bytes / 8).max(8);
    // Filled with distinct values (and thereby paged in) before timing.
    let buf: Vec<u64> = (0..n as u64).collect();
    let threads = rayon::current_num_threads().max(1);
    let share = n.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let sum: u64 = buf
            .par_chunks(share)
            .map(stream_sum_widest)
            .reduce(|| 0, u64::wrapping_add);
        let secs = t.elapsed().as_secs_f64();
        black_box(sum);
        best = best.max((n * 8) as f64 / secs / 1e9);
    }
    best
}

/// Int8 multiply-add throughput in GOPS (10⁹ operations per second, a multiply and an add
/// counted as two) of `kernels`' best Q8_0 matrix product: a cache-resident Q8_0 weight matrix
/// `[128, 2048]` times 64 activation rows, through [`crate::matmul::matmul_prequantized_with`]
/// (register-tiled where the ISA has tiles) on the current rayon pool; best of `reps`. This is
/// the ceiling a compute-bound prompt-processing matmul can reach with that ISA.
pub fn int8_peak(kernels: &Kernels, reps: usize) -> f64 {
    use crate::formats::quantize_row;
    use crate::matmul::{matmul_prequantized_with, quantize_activations_with, QMatrix};
    const ROWS: usize = 128;
    const COLS: usize = 2048;
    const N: usize = 64;
    const CALLS: usize = 40;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_sum_adds_everything() {
        let v: Vec<u64> = (1..=1003).collect();
        assert_eq!(stream_sum(&v), 1003 * 1004 / 2);
    }

    #[test]
    fn probes_return_positive_rates() {
        assert!(read_bandwidth(1 << 20, 1) > 0.0);
        assert!(int8_peak(crate::dispatch::kernels(), 1) > 0.0);
    }
}

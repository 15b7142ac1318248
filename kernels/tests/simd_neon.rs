//! NEON kernels against the scalar references, on random and adversarial blocks.
//!
//! Runs only on aarch64 (natively, or cross-compiled and run under qemu by
//! `tools/test-aarch64.sh`). Both paths are tested: plain NEON always, `sdot` when the CPU has
//! `dotprod` (otherwise a loud `SKIPPED:` line).
//!
//! Dot products: the integer part of every block is exact in both implementations; they differ
//! only in the float operations that follow (per-block scale multiply, conversion of the
//! integer sums, and summation order: 4 lane partial sums here, one running sum in the
//! reference; f64 accumulation in the F16/BF16 references). Each of those is one rounding of
//! a term no larger than `|w_i|·|a_i|` summed, so the difference is bounded by
//! `c · steps · ε · M` with `M = Σ_i (|ŵ_i| + 2|ŵ0_i|) · |â_i|`: `ŵ`, `â` are the dequantized
//! values and `ŵ0` the dequantized weights with all codes zeroed (the offset / minimum part,
//! which k-quant kernels handle separately from the code part: `|d·sc·q| ≤ |ŵ| + |ŵ0|`).
//! `steps` is the number of blocks plus a few reductions; we use `4 · (steps + 8) · ε · M`.
//!
//! Activation quantizers: bit-identical to the scalar ones (compared as bytes).
//!
//! `GRIST_TEST_BLOCKS` sets the number of random weight blocks per format (default 100 000;
//! the qemu run uses fewer).
#![cfg(target_arch = "aarch64")]

use bytemuck::{Pod, Zeroable};
use grist_kernels::blocks::*;
use grist_kernels::formats::{Bf16, BlockFormat, F16};
use grist_kernels::simd::aarch64::neon;

// ---------------------------------------------------------------------------------------------
// Random numbers (no dev-dependency needed): SplitMix64.
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn fill(&mut self, bytes: &mut [u8]) {
        for b in bytes {
            *b = self.next() as u8;
        }
    }
    /// A value of random sign and magnitude 10^[lo, hi).
    fn magnitude(&mut self, lo: f32, hi: f32) -> f32 {
        let m = 10f32.powf(lo + (hi - lo) * self.unit());
        if self.next() & 1 == 0 {
            m
        } else {
            -m
        }
    }
    /// Roughly normal (sum of uniforms).
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.unit()).sum::<f32>() - 2.0
    }
}

fn test_blocks() -> usize {
    std::env::var("GRIST_TEST_BLOCKS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(100_000)
}

fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

// ---------------------------------------------------------------------------------------------
// Random and adversarial blocks
// ---------------------------------------------------------------------------------------------

/// How a random block's code bytes and scales are chosen. `Random` most of the time; the
/// others are the adversarial cases (extreme codes, extreme or zero scales).
#[derive(Clone, Copy, Debug)]
enum Mode {
    Random,
    CodesZero,
    CodesFF,
    Codes80,
    Codes7F,
    ScaleMax,
    ScaleZero,
    ScaleSubnormal,
}

impl Mode {
    const ADVERSARIAL: [Mode; 7] = [
        Mode::CodesZero,
        Mode::CodesFF,
        Mode::Codes80,
        Mode::Codes7F,
        Mode::ScaleMax,
        Mode::ScaleZero,
        Mode::ScaleSubnormal,
    ];

    fn pick(rng: &mut Rng) -> Mode {
        if rng.below(16) == 0 {
            Mode::ADVERSARIAL[rng.below(Mode::ADVERSARIAL.len())]
        } else {
            Mode::Random
        }
    }

    /// An f16 scale for this mode (bit pattern; never inf/NaN).
    fn f16_scale(self, rng: &mut Rng) -> u16 {
        match self {
            Mode::ScaleMax => {
                if rng.next() & 1 == 0 {
                    0x7BFF // 65504
                } else {
                    0xFBFF
                }
            }
            Mode::ScaleZero => 0,
            Mode::ScaleSubnormal => 1 + (rng.next() as u16 & 0x3FF),
            _ => f32_to_f16(rng.magnitude(-4.0, 0.5)),
        }
    }

    /// Fills the code bytes of a block.
    fn codes(self, rng: &mut Rng, bytes: &mut [u8]) {
        match self {
            Mode::CodesZero => bytes.fill(0),
            Mode::CodesFF => bytes.fill(0xFF),
            Mode::Codes80 => bytes.fill(0x80),
            Mode::Codes7F => bytes.fill(0x7F),
            _ => rng.fill(bytes),
        }
    }
}

/// A block type the tests can generate.
trait TestBlock: Pod {
    /// A random block in `mode`.
    fn random(rng: &mut Rng, mode: Mode) -> Self;
    /// The block with every code set to "zero" (so dequantizing it gives the offset/min part).
    fn zero_codes(&self) -> Self {
        Self::zeroed()
    }
}

macro_rules! test_block {
    ($t:ty, scales: [$($s:ident),*], codes: [$($c:ident = $z:expr),*]) => {
        impl TestBlock for $t {
            fn random(rng: &mut Rng, mode: Mode) -> Self {
                let mut b = <$t>::zeroed();
                $( mode.codes(rng, bytemuck::bytes_of_mut(&mut b.$c)); )*
                $( b.$s = mode.f16_scale(rng); )*
                b
            }
            fn zero_codes(&self) -> Self {
                let mut b = *self;
                $( bytemuck::bytes_of_mut(&mut b.$c).fill($z); )*
                b
            }
        }
    };
}

test_block!(BlockQ4_0, scales: [d], codes: [qs = 0]);
test_block!(BlockQ4_1, scales: [d, m], codes: [qs = 0]);
test_block!(BlockQ5_0, scales: [d], codes: [qs = 0, qh = 0]);
test_block!(BlockQ5_1, scales: [d, m], codes: [qs = 0, qh = 0]);
test_block!(BlockIQ4_NL, scales: [d], codes: [qs = 0x88]);
test_block!(BlockQ4_K, scales: [d, dmin], codes: [qs = 0, scales = 0xFF]);
test_block!(BlockQ5_K, scales: [d, dmin], codes: [qs = 0, qh = 0, scales = 0xFF]);
test_block!(BlockQ6_K, scales: [d], codes: [ql = 0, qh = 0, scales = 0xFF]);

impl TestBlock for BlockQ8_0 {
    fn random(rng: &mut Rng, mode: Mode) -> Self {
        let mut b = Self::zeroed();
        mode.codes(rng, bytemuck::bytes_of_mut(&mut b.qs));
        b.d = mode.f16_scale(rng);
        b
    }
}

impl TestBlock for BlockQ8_1 {
    /// `s` is kept consistent with the codes (`d · Σq`), as the quantizer makes it.
    fn random(rng: &mut Rng, mode: Mode) -> Self {
        let mut b = Self::zeroed();
        mode.codes(rng, bytemuck::bytes_of_mut(&mut b.qs));
        b.d = mode.f16_scale(rng);
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        // With the largest scales `d · Σq` overflows f16: halve `d` until it fits (a real
        // quantizer has d = amax / 127, so |s| <= 32 · amax stays finite for sane rows).
        while !f16_to_f32(f32_to_f16(sum as f32 * f16_to_f32(b.d))).is_finite() {
            b.d = f32_to_f16(f16_to_f32(b.d) / 2.0);
        }
        b.s = f32_to_f16(sum as f32 * f16_to_f32(b.d));
        b
    }
}

impl TestBlock for BlockQ8_K {
    /// `bsums` are kept consistent with the codes, as the quantizer makes them.
    fn random(rng: &mut Rng, mode: Mode) -> Self {
        let mut b = Self::zeroed();
        mode.codes(rng, bytemuck::bytes_of_mut(&mut b.qs));
        b.d = match mode {
            Mode::ScaleMax => rng.magnitude(2.0, 3.0),
            Mode::ScaleZero => 0.0,
            Mode::ScaleSubnormal => f32::from_bits(1 + (rng.next() as u32 & 0x7F_FFFF)),
            _ => rng.magnitude(-5.0, 0.0),
        };
        for g in 0..QK_K / 16 {
            b.bsums[g] = b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i16).sum();
        }
        b
    }
}

impl TestBlock for F16 {
    fn random(rng: &mut Rng, mode: Mode) -> Self {
        match mode {
            Mode::ScaleMax => F16::from_f32(rng.magnitude(4.0, 4.8)),
            Mode::ScaleZero | Mode::CodesZero => F16::ZERO,
            Mode::ScaleSubnormal => F16::from_bits(rng.next() as u16 & 0x83FF),
            _ => F16::from_f32(rng.normal() * 4.0),
        }
    }
}

impl TestBlock for Bf16 {
    fn random(rng: &mut Rng, mode: Mode) -> Self {
        match mode {
            Mode::ScaleMax => Bf16::from_f32(rng.magnitude(15.0, 18.0)),
            Mode::ScaleZero | Mode::CodesZero => Bf16::ZERO,
            Mode::ScaleSubnormal => Bf16::from_bits(rng.next() as u16 & 0x807F),
            _ => Bf16::from_f32(rng.magnitude(-3.0, 3.0)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dot-product equivalence
// ---------------------------------------------------------------------------------------------

/// A typed kernel under test.
type Kernel<W> = unsafe fn(&[W], &[<W as BlockFormat>::Activation]) -> f32;

/// The bound `M = Σ (|ŵ| + 2|ŵ0|)·|â|` of the module docs.
fn magnitude<W>(w: &[W], a: &[W::Activation]) -> f64
where
    W: BlockFormat + TestBlock,
{
    let n = w.len() * W::BLOCK_ELEMS;
    let mut wd = vec![0f32; n];
    let mut w0 = vec![0f32; n];
    let mut ad = vec![0f32; n];
    W::dequantize(w, &mut wd);
    let zeroed: Vec<W> = w.iter().map(TestBlock::zero_codes).collect();
    W::dequantize(&zeroed, &mut w0);
    <W::Activation as BlockFormat>::dequantize(a, &mut ad);
    (0..n)
        .map(|i| (wd[i].abs() as f64 + 2.0 * w0[i].abs() as f64) * ad[i].abs() as f64)
        .sum()
}

/// Checks every kernel against `W::vec_dot` on rows of (mostly) 1..=`max_row` blocks until
/// `test_blocks() · unit` weight blocks were used (`unit` scales that count for the
/// one-value "blocks" of the float formats).
fn check_vec_dot<W>(name: &str, max_row: usize, unit: usize, kernels: &[(&str, Kernel<W>)])
where
    W: BlockFormat + TestBlock,
    W::Activation: TestBlock,
{
    let target = test_blocks() * unit;
    let mut rng = Rng(0x5EED ^ name.len() as u64 ^ (max_row as u64) << 8);
    let mut done = 0usize;
    let mut rows = 0usize;
    let mut worst = 0f64; // largest |diff| / tolerance seen
    while done < target {
        // Row lengths: random, plus the exact block boundaries 1 and max_row, and now and
        // then a long row (4–8 × max_row: long accumulation chains).
        let len = match rows % 8 {
            0 => 1,
            1 => max_row,
            2 if rows % 32 == 2 => 4 * max_row + rng.below(4 * max_row + 1),
            _ => 1 + rng.below(max_row),
        };
        let w: Vec<W> = (0..len)
            .map(|_| {
                let m = Mode::pick(&mut rng);
                W::random(&mut rng, m)
            })
            .collect();
        let a: Vec<W::Activation> = (0..len * W::BLOCK_ELEMS / W::Activation::BLOCK_ELEMS)
            .map(|_| {
                let m = Mode::pick(&mut rng);
                <W::Activation as TestBlock>::random(&mut rng, m)
            })
            .collect();
        let reference = W::vec_dot(&w, &a);
        let mag = magnitude(&w, &a);
        let steps = (len * W::BLOCK_ELEMS / 16.max(W::BLOCK_ELEMS)) as f64 + len as f64;
        let tol = 4.0 * (steps + 8.0) * f32::EPSILON as f64 * mag + 1e-37;
        assert!(reference.is_finite(), "{name}: reference not finite");
        for (kname, kernel) in kernels {
            // SAFETY: the kernel list only holds kernels whose CPU features were checked.
            let got = unsafe { kernel(&w, &a) };
            let diff = (got as f64 - reference as f64).abs();
            assert!(
                diff <= tol,
                "{name} {kname}: row of {len} blocks: got {got}, reference {reference}, \
                 |diff| {diff:e} > tolerance {tol:e} (row {rows})"
            );
            worst = worst.max(diff / tol);
        }
        done += len;
        rows += 1;
    }
    eprintln!(
        "{name}: {done} blocks in {rows} rows, {} kernel(s), worst |diff|/tolerance {worst:.2e}",
        kernels.len()
    );
}

/// The plain kernel always, the `sdot` one when the CPU has `dotprod`.
fn paths<W: BlockFormat>(
    name: &str,
    plain: Kernel<W>,
    sdot: Kernel<W>,
) -> Vec<(&'static str, Kernel<W>)> {
    let mut v: Vec<(&'static str, Kernel<W>)> = vec![("neon", plain)];
    if has_dotprod() {
        v.push(("sdot", sdot));
    } else {
        eprintln!("SKIPPED: {name} sdot kernel (this CPU has no dotprod); plain NEON tested");
    }
    v
}

#[test]
fn q4_0_matches_scalar() {
    let k = paths::<BlockQ4_0>(
        "q4_0",
        neon::vec_dot_q4_0_q8_0,
        neon::vec_dot_q4_0_q8_0_sdot,
    );
    check_vec_dot::<BlockQ4_0>("q4_0", 32, 1, &k);
}

#[test]
fn q4_1_matches_scalar() {
    let k = paths::<BlockQ4_1>(
        "q4_1",
        neon::vec_dot_q4_1_q8_1,
        neon::vec_dot_q4_1_q8_1_sdot,
    );
    check_vec_dot::<BlockQ4_1>("q4_1", 32, 1, &k);
}

#[test]
fn q5_0_matches_scalar() {
    let k = paths::<BlockQ5_0>(
        "q5_0",
        neon::vec_dot_q5_0_q8_0,
        neon::vec_dot_q5_0_q8_0_sdot,
    );
    check_vec_dot::<BlockQ5_0>("q5_0", 32, 1, &k);
}

#[test]
fn q5_1_matches_scalar() {
    let k = paths::<BlockQ5_1>(
        "q5_1",
        neon::vec_dot_q5_1_q8_1,
        neon::vec_dot_q5_1_q8_1_sdot,
    );
    check_vec_dot::<BlockQ5_1>("q5_1", 32, 1, &k);
}

#[test]
fn q8_0_matches_scalar() {
    let k = paths::<BlockQ8_0>(
        "q8_0",
        neon::vec_dot_q8_0_q8_0,
        neon::vec_dot_q8_0_q8_0_sdot,
    );
    check_vec_dot::<BlockQ8_0>("q8_0", 32, 1, &k);
}

#[test]
fn iq4_nl_matches_scalar() {
    let k = paths::<BlockIQ4_NL>(
        "iq4_nl",
        neon::vec_dot_iq4_nl_q8_0,
        neon::vec_dot_iq4_nl_q8_0_sdot,
    );
    check_vec_dot::<BlockIQ4_NL>("iq4_nl", 32, 1, &k);
}

#[test]
fn q4_k_matches_scalar() {
    let k = paths::<BlockQ4_K>(
        "q4_k",
        neon::vec_dot_q4_k_q8_k,
        neon::vec_dot_q4_k_q8_k_sdot,
    );
    check_vec_dot::<BlockQ4_K>("q4_k", 8, 1, &k);
}

#[test]
fn q5_k_matches_scalar() {
    let k = paths::<BlockQ5_K>(
        "q5_k",
        neon::vec_dot_q5_k_q8_k,
        neon::vec_dot_q5_k_q8_k_sdot,
    );
    check_vec_dot::<BlockQ5_K>("q5_k", 8, 1, &k);
}

#[test]
fn q6_k_matches_scalar() {
    let k = paths::<BlockQ6_K>(
        "q6_k",
        neon::vec_dot_q6_k_q8_k,
        neon::vec_dot_q6_k_q8_k_sdot,
    );
    check_vec_dot::<BlockQ6_K>("q6_k", 8, 1, &k);
}

#[test]
fn f16_matches_scalar() {
    // Rows of 1..=300 values: covers the 16-value main loop and every tail length.
    check_vec_dot::<F16>("f16", 300, 32, &[("neon", neon::vec_dot_f16)]);
}

#[test]
fn bf16_matches_scalar() {
    check_vec_dot::<Bf16>("bf16", 300, 32, &[("neon", neon::vec_dot_bf16)]);
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers: bit-identical
// ---------------------------------------------------------------------------------------------

/// A random f32 row of `n` values: mostly scaled normals, plus adversarial rows.
fn random_row(rng: &mut Rng, n: usize, case: usize) -> Vec<f32> {
    match case % 10 {
        // All zero.
        0 => vec![0.0; n],
        // Exact ties after scaling: max |x| = 127 → scale 1 (Q8_0 / Q8_1) or -1 (Q8_K), and
        // values k + 0.5, so roundf (away) and round-to-even disagree.
        1 => (0..n)
            .map(|i| {
                if i % 32 == 5 {
                    -127.0
                } else {
                    (rng.below(253) as f32 - 126.0) + 0.5
                }
            })
            .collect(),
        // One large outlier among tiny values.
        2 => {
            let mut v: Vec<f32> = (0..n).map(|_| rng.normal() * 1e-3).collect();
            let i = rng.below(n);
            v[i] = rng.magnitude(2.0, 4.0);
            v
        }
        // Two values of equal magnitude and opposite sign (the first one sets Q8_K's sign).
        3 => {
            let mut v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            for b in 0..n / 32 {
                let (i, j) = (32 * b + rng.below(16), 32 * b + 16 + rng.below(16));
                v[i] = 9.0;
                v[j] = -9.0;
            }
            v
        }
        // Very small and very large magnitudes.
        4 => (0..n).map(|_| rng.magnitude(-30.0, -25.0)).collect(),
        5 => (0..n).map(|_| rng.magnitude(20.0, 30.0)).collect(),
        // Around the smallest normal: Q8_K's inverse scale `-127/max` overflows below
        // ~3.7e-37 (the scalar quantizer then stores the all-zero block).
        6 => {
            let scale = 10f32.powi(-40 + rng.below(7) as i32);
            (0..n).map(|_| rng.normal() * scale).collect()
        }
        _ => {
            let scale = rng.magnitude(-4.0, 3.0).abs();
            (0..n).map(|_| rng.normal() * scale).collect()
        }
    }
}

fn check_quantizer<A: BlockFormat>(name: &str, kernel: unsafe fn(&[f32], &mut [A])) {
    let mut rng = Rng(0xAC7 ^ name.len() as u64);
    let target = test_blocks() * (QK / A::BLOCK_ELEMS).max(1);
    let target = target.max(64);
    let mut done = 0;
    let mut case = 0;
    while done < target {
        let blocks = 1 + rng.below(8);
        let x = random_row(&mut rng, blocks * A::BLOCK_ELEMS, case);
        let mut want = vec![A::zeroed(); blocks];
        let mut got = vec![A::zeroed(); blocks];
        A::quantize(&x, &mut want);
        // SAFETY: NEON is present on every aarch64 CPU.
        unsafe { kernel(&x, &mut got) };
        assert!(
            bytemuck::cast_slice::<A, u8>(&want) == bytemuck::cast_slice::<A, u8>(&got),
            "{name}: quantized bytes differ from the scalar quantizer (case {case})"
        );
        done += blocks;
        case += 1;
    }
    eprintln!("{name}: {done} blocks bit-identical in {case} rows");
}

#[test]
fn quantize_q8_0_bit_identical() {
    check_quantizer::<BlockQ8_0>("quantize_q8_0", neon::quantize_q8_0);
}

#[test]
fn quantize_q8_1_bit_identical() {
    check_quantizer::<BlockQ8_1>("quantize_q8_1", neon::quantize_q8_1);
}

#[test]
fn quantize_q8_k_bit_identical() {
    check_quantizer::<BlockQ8_K>("quantize_q8_k", neon::quantize_q8_k);
}

// ---------------------------------------------------------------------------------------------
// The dispatch table uses these kernels
// ---------------------------------------------------------------------------------------------

#[test]
fn neon_table_matches_scalar_table() {
    use grist_gguf::GgmlType;
    use grist_kernels::dispatch::{select, Isa};

    let neon_table = select(Isa::Neon).expect("NEON is available on every aarch64 CPU");
    let scalar = select(Isa::Scalar).expect("scalar is always available");
    assert_eq!(neon_table.isa(), Isa::Neon);
    eprintln!(
        "neon table: dotprod {} (sdot kernels {})",
        neon_table.features().dotprod,
        if neon_table.features().dotprod {
            "installed"
        } else {
            "not installed"
        }
    );
    let mut rng = Rng(42);
    let cols = 512;
    let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
    let w: Vec<f32> = (0..cols).map(|_| rng.normal() * 0.1).collect();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let (Some(n), Some(s)) = (neon_table.entry(ty), scalar.entry(ty)) else {
            panic!("{ty:?}: missing table entry");
        };
        assert_eq!(n.act_type, s.act_type);
        let w_bytes = quantize_bytes(ty, &w);
        let (mut qa_n, mut qa_s) = (
            quantize_bytes(s.act_type, &x),
            quantize_bytes(s.act_type, &x),
        );
        (n.quantize_act)(&x, &mut qa_n);
        (s.quantize_act)(&x, &mut qa_s);
        assert_eq!(qa_n, qa_s, "{ty:?}: activation quantization differs");
        let (dn, ds) = ((n.vec_dot)(&w_bytes, &qa_n), (s.vec_dot)(&w_bytes, &qa_s));
        assert!(
            (dn - ds).abs() <= 1e-4 * ds.abs().max(1.0),
            "{ty:?}: neon table {dn} vs scalar table {ds}"
        );
        // Rows that are not aligned for the block type are copied, not rejected.
        let mut shifted_w = vec![0u8; w_bytes.len() + 1];
        shifted_w[1..].copy_from_slice(&w_bytes);
        let mut shifted_a = vec![0u8; qa_n.len() + 1];
        shifted_a[1..].copy_from_slice(&qa_n);
        assert_eq!(
            (n.vec_dot)(&shifted_w[1..], &shifted_a[1..]).to_bits(),
            dn.to_bits(),
            "{ty:?}: misaligned rows"
        );
        let mut shifted_q = vec![0u8; qa_n.len() + 1];
        (n.quantize_act)(&x, &mut shifted_q[1..]);
        assert_eq!(
            shifted_q[1..],
            qa_n[..],
            "{ty:?}: misaligned quantizer output"
        );
    }
}

/// `x` quantized to `ty` with the scalar reference, as raw bytes.
fn quantize_bytes(ty: grist_gguf::GgmlType, x: &[f32]) -> Vec<u8> {
    let size = ty.bytes_for(x.len() as u64).expect("whole blocks") as usize;
    let mut out = vec![0u8; size];
    grist_kernels::formats::quantize_row(ty, x, &mut out).expect("quantize_row");
    out
}

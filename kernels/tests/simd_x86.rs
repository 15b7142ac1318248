//! The x86 SIMD kernels (AVX2 and AVX-512) against the scalar references of
//! `grist_kernels::formats`, on ≥ 10^5 random blocks per format plus adversarial blocks.
//!
//! What is asserted, and why:
//! - Activation quantizers (f32 → Q8_0, Q8_1, Q8_K): **bit-identical** bytes.
//! - Dot products: the integer part of every block is exact and only the order of the float
//!   additions differs from the scalar code. So
//!   1. with unit scales (`d = 1` everywhere) the results are integers and must be **equal**
//!      (whenever they are below 2^23, where f32 holds every integer);
//!   2. with arbitrary scales `|simd − scalar| ≤ (n_terms + 8) · 2^-23 · M`, where `M` is the
//!      sum of `|weight part| · |activation|` over all values (the scale part and the min part
//!      counted separately, since the kernels may cancel them in another order) and
//!      `n_terms` the number of float additions in the longest chain: the textbook bound for
//!      reordered floating-point summation.
//!
//! Each ISA runs only where the CPU has it; otherwise the test prints `SKIPPED: …`.

#![cfg(target_arch = "x86_64")]

use bytemuck::Pod;
use grist_kernels::blocks::*;
use grist_kernels::formats::BlockFormat;
use grist_kernels::simd::x86::{avx2, avx512};
use half::{bf16, f16};

// ---------------------------------------------------------------------------------------
// ISAs under test.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Isa {
    Avx2,
    Avx512,
}

fn available(isa: Isa) -> bool {
    match isa {
        Isa::Avx2 => {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        }
        Isa::Avx512 => {
            available(Isa::Avx2)
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        }
    }
}

/// The ISAs this CPU can run, announcing loudly the ones it cannot.
fn isas(test: &str) -> Vec<Isa> {
    [Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&isa| {
            let ok = available(isa);
            if !ok {
                eprintln!("SKIPPED: {test} on {isa:?}: this CPU lacks the features");
            }
            ok
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Random numbers (splitmix64: no extra crate, reproducible).
// ---------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn fill(&mut self, bytes: &mut [u8]) {
        for b in bytes {
            *b = self.next_u64() as u8;
        }
    }
    /// Roughly normal, with occasional outliers (like real activations).
    fn activation(&mut self) -> f32 {
        let g = self.unit() + self.unit() + self.unit() + self.unit() - 2.0;
        if self.below(64) == 0 {
            g * 40.0
        } else {
            g
        }
    }
    /// A finite f16 scale of either sign, magnitudes 1e-4 .. 1.
    fn scale(&mut self) -> u16 {
        let mag = 10f32.powf(-4.0 * self.unit());
        let sign = if self.below(2) == 0 { 1.0 } else { -1.0 };
        f32_to_f16(sign * mag)
    }
    fn block<B: Pod>(&mut self) -> B {
        let mut b = B::zeroed();
        self.fill(bytemuck::bytes_of_mut(&mut b));
        b
    }
}

const F16_ONE: u16 = 0x3C00;
/// Adversarial f16 scales: largest finite, its negative, smallest subnormal, one, zero.
const F16_EXTREMES: [u16; 5] = [0x7BFF, 0xFBFF, 0x0001, F16_ONE, 0x0000];
/// Byte patterns an adversarial block is filled with (codes at their extremes).
const BYTE_PATTERNS: [u8; 6] = [0x00, 0xFF, 0x80, 0x7F, 0x55, 0xAA];

// ---------------------------------------------------------------------------------------
// Per-format description: how to set scales, and how to split a block into its scale part
// and min part for the error bound.
// ---------------------------------------------------------------------------------------

trait Weight: BlockFormat {
    /// Sets the block's scale(s) to `d` (and its min scale to `m`, if it has one).
    fn set_scales(&mut self, d: u16, m: u16);
    /// Copies whose dequantizations add up to this block's, each without cancellation
    /// between scale and min terms (one copy for formats without mins).
    fn parts(&self) -> Vec<Self> {
        vec![*self]
    }
}

impl Weight for BlockQ4_0 {
    fn set_scales(&mut self, d: u16, _m: u16) {
        self.d = d;
    }
}
impl Weight for BlockQ5_0 {
    fn set_scales(&mut self, d: u16, _m: u16) {
        self.d = d;
    }
}
impl Weight for BlockQ8_0 {
    fn set_scales(&mut self, d: u16, _m: u16) {
        self.d = d;
    }
}
impl Weight for BlockQ4_1 {
    fn set_scales(&mut self, d: u16, m: u16) {
        self.d = d;
        self.m = m;
    }
    fn parts(&self) -> Vec<Self> {
        vec![Self { m: 0, ..*self }, Self { d: 0, ..*self }]
    }
}
impl Weight for BlockQ4_K {
    fn set_scales(&mut self, d: u16, m: u16) {
        self.d = d;
        self.dmin = m;
    }
    fn parts(&self) -> Vec<Self> {
        vec![Self { dmin: 0, ..*self }, Self { d: 0, ..*self }]
    }
}
impl Weight for BlockQ5_K {
    fn set_scales(&mut self, d: u16, m: u16) {
        self.d = d;
        self.dmin = m;
    }
    fn parts(&self) -> Vec<Self> {
        vec![Self { dmin: 0, ..*self }, Self { d: 0, ..*self }]
    }
}
impl Weight for BlockQ5_1 {
    fn set_scales(&mut self, d: u16, m: u16) {
        self.d = d;
        self.m = m;
    }
    fn parts(&self) -> Vec<Self> {
        vec![Self { m: 0, ..*self }, Self { d: 0, ..*self }]
    }
}
impl Weight for BlockIQ4_NL {
    fn set_scales(&mut self, d: u16, _m: u16) {
        self.d = d;
    }
}
impl Weight for BlockIQ4_XS {
    fn set_scales(&mut self, d: u16, _m: u16) {
        self.d = d;
    }
}
impl Weight for BlockQ6_K {
    fn set_scales(&mut self, d: u16, _m: u16) {
        self.d = d;
    }
}

/// Activation blocks: built by quantizing f32 values with the scalar quantizer (so their
/// invariants hold: codes in -127..=127, `s`/`bsums` consistent), then optionally forced to
/// unit scale.
trait Act: BlockFormat {
    fn set_unit_scale(&mut self);
}
impl Act for BlockQ8_0 {
    fn set_unit_scale(&mut self) {
        self.d = F16_ONE;
    }
}
impl Act for BlockQ8_1 {
    fn set_unit_scale(&mut self) {
        self.d = F16_ONE;
        let sum: i32 = self.qs.iter().map(|&q| q as i32).sum();
        self.s = f32_to_f16(sum as f32);
    }
}
impl Act for BlockQ8_K {
    fn set_unit_scale(&mut self) {
        self.d = 1.0;
    }
}

fn quantize_act<A: BlockFormat>(x: &[f32]) -> Vec<A> {
    let mut out = vec![A::zeroed(); x.len() / A::BLOCK_ELEMS];
    A::quantize(x, &mut out);
    out
}

/// Activation rows for `nb` weight blocks, cycling through random and adversarial inputs.
fn activation_row<W: BlockFormat>(rng: &mut Rng, nb: usize, kind: usize) -> Vec<W::Activation> {
    let n = nb * W::BLOCK_ELEMS;
    let x: Vec<f32> = match kind % 8 {
        0 => vec![0.0; n], // all zero
        1 => vec![1.0; n], // all codes +127
        2 => (0..n)
            .map(|i| if i % 2 == 0 { -3.0 } else { 3.0 })
            .collect(), // ±127
        3 => (0..n).map(|i| -(i as f32)).collect(), // ramp
        _ => (0..n).map(|_| rng.activation()).collect(),
    };
    quantize_act::<W::Activation>(&x)
}

/// `M` of the error bound: Σ over values of |weight part| · |activation|.
fn magnitude<W: Weight>(w: &[W], a: &[W::Activation]) -> f64 {
    let mut av = vec![0f32; a.len() * <W::Activation as BlockFormat>::BLOCK_ELEMS];
    <W::Activation as BlockFormat>::dequantize(a, &mut av);
    let mut m = 0f64;
    let mut wv = vec![0f32; W::BLOCK_ELEMS];
    for (bi, b) in w.iter().enumerate() {
        for part in b.parts() {
            W::dequantize(std::slice::from_ref(&part), &mut wv);
            for (j, &x) in wv.iter().enumerate() {
                m += (x as f64).abs() * (av[bi * W::BLOCK_ELEMS + j] as f64).abs();
            }
        }
    }
    m
}

type DotFn<W> = unsafe fn(&[W], &[<W as BlockFormat>::Activation]) -> f32;

/// Runs the full equivalence suite for one weight format and one kernel.
fn check_format<W: Weight>(name: &str, isa: Isa, kernel: DotFn<W>, float_ops_per_block: usize)
where
    W::Activation: Act,
{
    let mut rng = Rng(0x5EED ^ W::BLOCK_ELEMS as u64 ^ std::mem::size_of::<W>() as u64);
    let dot = |w: &[W], a: &[W::Activation]| {
        // SAFETY: `isa` was checked to be available before this suite runs.
        unsafe { kernel(w, a) }
    };
    let mut blocks_checked = 0usize;
    let mut worst = 0f64; // worst error as a fraction of the allowed bound

    let mut check = |w: &[W], a: &[W::Activation], what: &str| {
        let want = W::vec_dot(w, a);
        let got = dot(w, a);
        let m = magnitude(w, a);
        let terms = (w.len() * float_ops_per_block + 8) as f64;
        let bound = terms * f32::EPSILON as f64 * m;
        let err = (got as f64 - want as f64).abs();
        assert!(
            err <= bound,
            "{name} {isa:?} {what}: simd {got} vs scalar {want}, |err| {err:e} > bound {bound:e} \
             ({} blocks)",
            w.len()
        );
        if bound > 0.0 {
            worst = worst.max(err / bound);
        }
        w.len()
    };

    // 1. Random blocks, short rows of 1..=9 blocks (odd and even counts): 10^5 blocks.
    while blocks_checked < 100_000 {
        let nb = 1 + rng.below(9);
        let mut w: Vec<W> = (0..nb).map(|_| rng.block()).collect();
        for b in &mut w {
            let (d, m) = (rng.scale(), rng.scale());
            b.set_scales(d, m);
        }
        let kind = 4 + rng.below(4); // random activations
        let a = activation_row::<W>(&mut rng, nb, kind);
        blocks_checked += check(&w, &a, "random");

        // Same codes with unit scales: integer results, must match exactly.
        for b in &mut w {
            b.set_scales(F16_ONE, F16_ONE);
        }
        let mut a = a;
        for b in &mut a {
            b.set_unit_scale();
        }
        let want = W::vec_dot(&w, &a);
        if want.abs() < (1 << 23) as f32 {
            let got = dot(&w, &a);
            assert_eq!(
                got, want,
                "{name} {isa:?}: integer part differs (unit scales)"
            );
        }
    }

    // 2. Adversarial blocks: every byte pattern × every extreme scale × adversarial activations.
    for &pattern in &BYTE_PATTERNS {
        for &d in &F16_EXTREMES {
            for &m in &F16_EXTREMES {
                for kind in 0..8 {
                    let nb = 1 + (kind % 3);
                    let mut w: Vec<W> = vec![W::zeroed(); nb];
                    for b in &mut w {
                        bytemuck::bytes_of_mut(b).fill(pattern);
                        b.set_scales(d, m);
                    }
                    let a = activation_row::<W>(&mut rng, nb, kind);
                    check(
                        &w,
                        &a,
                        &format!("pattern {pattern:#04x} d {d:#06x} m {m:#06x}"),
                    );
                }
            }
        }
    }

    // 3. Long rows (accumulation over many blocks).
    for _ in 0..20 {
        let nb = 256 + rng.below(300);
        let mut w: Vec<W> = (0..nb).map(|_| rng.block()).collect();
        for b in &mut w {
            let (d, m) = (rng.scale(), rng.scale());
            b.set_scales(d, m);
        }
        let a = activation_row::<W>(&mut rng, nb, 4);
        check(&w, &a, "long row");
    }
    eprintln!(
        "{name} {isa:?}: {blocks_checked} random blocks + adversarial + long rows OK \
         (worst error = {:.3} of the bound)",
        worst
    );
}

macro_rules! format_test {
    ($test:ident, $w:ty, $name:literal, $avx2:path, $avx512:expr, $ops:expr) => {
        #[test]
        fn $test() {
            for isa in isas($name) {
                let kernel: Option<DotFn<$w>> = match isa {
                    Isa::Avx2 => Some($avx2),
                    Isa::Avx512 => $avx512,
                };
                match kernel {
                    Some(k) => check_format::<$w>($name, isa, k, $ops),
                    None => eprintln!("{}: no {isa:?} kernel (the table keeps AVX2)", $name),
                }
            }
        }
    };
}

format_test!(
    q4_0,
    BlockQ4_0,
    "Q4_0·Q8_0",
    avx2::vec_dot_q4_0_q8_0,
    Some(avx512::vec_dot_q4_0_q8_0),
    1
);
format_test!(
    q4_1,
    BlockQ4_1,
    "Q4_1·Q8_1",
    avx2::vec_dot_q4_1_q8_1,
    Some(avx512::vec_dot_q4_1_q8_1),
    2
);
format_test!(
    q5_0,
    BlockQ5_0,
    "Q5_0·Q8_0",
    avx2::vec_dot_q5_0_q8_0,
    Some(avx512::vec_dot_q5_0_q8_0),
    1
);
format_test!(
    q5_1,
    BlockQ5_1,
    "Q5_1·Q8_1",
    avx2::vec_dot_q5_1_q8_1,
    Some(avx512::vec_dot_q5_1_q8_1),
    2
);
format_test!(
    iq4_nl,
    BlockIQ4_NL,
    "IQ4_NL·Q8_0",
    avx2::vec_dot_iq4_nl_q8_0,
    Some(avx512::vec_dot_iq4_nl_q8_0),
    1
);
format_test!(
    iq4_xs,
    BlockIQ4_XS,
    "IQ4_XS·Q8_K",
    avx2::vec_dot_iq4_xs_q8_k,
    Some(avx512::vec_dot_iq4_xs_q8_k),
    16
);
format_test!(
    q8_0,
    BlockQ8_0,
    "Q8_0·Q8_0",
    avx2::vec_dot_q8_0_q8_0,
    Some(avx512::vec_dot_q8_0_q8_0),
    1
);
format_test!(
    q4_k,
    BlockQ4_K,
    "Q4_K·Q8_K",
    avx2::vec_dot_q4_k_q8_k,
    Some(avx512::vec_dot_q4_k_q8_k),
    16
);
format_test!(
    q5_k,
    BlockQ5_K,
    "Q5_K·Q8_K",
    avx2::vec_dot_q5_k_q8_k,
    Some(avx512::vec_dot_q5_k_q8_k),
    16
);
format_test!(
    q6_k,
    BlockQ6_K,
    "Q6_K·Q8_K",
    avx2::vec_dot_q6_k_q8_k,
    Some(avx512::vec_dot_q6_k_q8_k),
    16
);

/// The GFNI variants of the AVX-512 Q4_K/Q5_K kernels (installed when the CPU has GFNI):
/// against the scalar reference like every kernel, and bit for bit against the shift-and-mask
/// variant, since both compute the same integers in the same float order.
#[test]
fn q4_k_q5_k_gfni_variants() {
    if !available(Isa::Avx512) || !is_x86_feature_detected!("gfni") {
        eprintln!("SKIPPED: the GFNI k-quant kernels: this CPU lacks AVX-512 VNNI or GFNI");
        return;
    }
    check_format::<BlockQ4_K>(
        "Q4_K·Q8_K gfni",
        Isa::Avx512,
        avx512::vec_dot_q4_k_q8_k_gfni,
        16,
    );
    check_format::<BlockQ5_K>(
        "Q5_K·Q8_K gfni",
        Isa::Avx512,
        avx512::vec_dot_q5_k_q8_k_gfni,
        16,
    );
    let mut rng = Rng(0x6f1e_5a7d);
    for nb in [1usize, 2, 5, 6, 35] {
        for kind in 0..8 {
            let mut w4: Vec<BlockQ4_K> = (0..nb).map(|_| rng.block()).collect();
            let mut w5: Vec<BlockQ5_K> = (0..nb).map(|_| rng.block()).collect();
            for (b4, b5) in w4.iter_mut().zip(&mut w5) {
                let (d, m) = (rng.scale(), rng.scale());
                b4.set_scales(d, m);
                b5.set_scales(d, m);
            }
            let a = activation_row::<BlockQ4_K>(&mut rng, nb, kind);
            // SAFETY: AVX-512 VNNI and GFNI were checked above.
            let (p4, g4, p5, g5) = unsafe {
                (
                    avx512::vec_dot_q4_k_q8_k(&w4, &a),
                    avx512::vec_dot_q4_k_q8_k_gfni(&w4, &a),
                    avx512::vec_dot_q5_k_q8_k(&w5, &a),
                    avx512::vec_dot_q5_k_q8_k_gfni(&w5, &a),
                )
            };
            assert_eq!(p4.to_bits(), g4.to_bits(), "Q4_K {nb} blocks, kind {kind}");
            assert_eq!(p5.to_bits(), g5.to_bits(), "Q5_K {nb} blocks, kind {kind}");
        }
    }
    // Both many-rows entry points (the dispatch table installs only one of them per CPU):
    // every row gives the single-row kernel's bits.
    for (nb, rows) in [(1usize, 5usize), (6, 3), (35, 4)] {
        let w4: Vec<BlockQ4_K> = (0..nb * rows).map(|_| rng.block()).collect();
        let w5: Vec<BlockQ5_K> = (0..nb * rows).map(|_| rng.block()).collect();
        let a = activation_row::<BlockQ4_K>(&mut rng, nb, 5);
        let (mut o4, mut g4, mut o5, mut g5) = (
            vec![0.0; rows],
            vec![0.0; rows],
            vec![0.0; rows],
            vec![0.0; rows],
        );
        // SAFETY: AVX-512 VNNI and GFNI were checked above.
        unsafe {
            avx512::gemv_q4_k_q8_k(&w4, &a, &mut o4);
            avx512::gemv_q4_k_q8_k_gfni(&w4, &a, &mut g4);
            avx512::gemv_q5_k_q8_k(&w5, &a, &mut o5);
            avx512::gemv_q5_k_q8_k_gfni(&w5, &a, &mut g5);
        }
        for r in 0..rows {
            let (x4, x5) = (&w4[r * nb..(r + 1) * nb], &w5[r * nb..(r + 1) * nb]);
            // SAFETY: as above.
            let (d4, d5) = unsafe {
                (
                    avx512::vec_dot_q4_k_q8_k(x4, &a),
                    avx512::vec_dot_q5_k_q8_k(x5, &a),
                )
            };
            let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
            assert!(
                same(o4[r], d4) && same(g4[r], d4),
                "Q4_K gemv row {r} of {rows}"
            );
            assert!(
                same(o5[r], d5) && same(g5[r], d5),
                "Q5_K gemv row {r} of {rows}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Float rows: every length 0..=300 (all tails) plus long rows. Products of two halves are
// exact in f32; the scalar sums them in f64, the kernels in f32 lanes: bound
// (n + 8) · 2^-23 · Σ|w·a|.
// ---------------------------------------------------------------------------------------

fn check_float<T: BlockFormat<Activation = T>>(
    name: &str,
    isa: Isa,
    kernel: unsafe fn(&[T], &[T]) -> f32,
    from_f32: fn(f32) -> T,
    to_f32: fn(T) -> f32,
) {
    let mut rng = Rng(0xF10A7);
    let mut values = 0usize;
    let lengths: Vec<usize> = (0..=300).chain([1000, 4096, 4099, 11008]).collect();
    for round in 0..40 {
        for &n in &lengths {
            let gen = |rng: &mut Rng| -> T {
                match round % 4 {
                    0 => from_f32(rng.activation()),
                    1 => from_f32(rng.activation() * 1e-3),
                    2 => from_f32(if rng.below(2) == 0 { 60000.0 } else { -1e-7 }),
                    _ => from_f32((rng.unit() - 0.5) * 8.0),
                }
            };
            let w: Vec<T> = (0..n).map(|_| gen(&mut rng)).collect();
            let a: Vec<T> = (0..n).map(|_| gen(&mut rng)).collect();
            let want = T::vec_dot(&w, &a);
            // SAFETY: `isa` was checked to be available.
            let got = unsafe { kernel(&w, &a) };
            let m: f64 = w
                .iter()
                .zip(&a)
                .map(|(&x, &y)| (to_f32(x) as f64 * to_f32(y) as f64).abs())
                .sum();
            let bound = (n + 8) as f64 * f32::EPSILON as f64 * m;
            let err = (got as f64 - want as f64).abs();
            assert!(
                err <= bound || (got.is_infinite() && got == want),
                "{name} {isa:?} n={n}: simd {got} vs scalar {want}, |err| {err:e} > {bound:e}"
            );
            values += n;
        }
    }
    eprintln!("{name} {isa:?}: {values} values OK");
}

#[test]
fn f16_dot() {
    for isa in isas("F16·F16") {
        let kernel: unsafe fn(&[f16], &[f16]) -> f32 = match isa {
            Isa::Avx2 => avx2::vec_dot_f16,
            Isa::Avx512 => avx512::vec_dot_f16,
        };
        check_float("F16·F16", isa, kernel, f16::from_f32, f16::to_f32);
    }
}

#[test]
fn bf16_dot() {
    for isa in isas("BF16·BF16") {
        let kernel: unsafe fn(&[bf16], &[bf16]) -> f32 = match isa {
            Isa::Avx2 => avx2::vec_dot_bf16,
            Isa::Avx512 => avx512::vec_dot_bf16,
        };
        check_float("BF16·BF16", isa, kernel, bf16::from_f32, bf16::to_f32);
    }
}

// ---------------------------------------------------------------------------------------
// Activation quantizers: bit-identical to the scalar ones.
// ---------------------------------------------------------------------------------------

/// Rows of f32 values for quantizer tests: random, plus rounding ties, zeros, signed zeros,
/// equal-magnitude maxima of both signs, tiny (subnormal) and huge values.
fn quantizer_rows(block: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    // 40 000 rows of 1..=4 blocks: ≥ 10^5 blocks per format.
    for _ in 0..40_000 {
        let nb = 1 + rng.below(4);
        rows.push((0..nb * block).map(|_| rng.activation()).collect());
    }
    let n = 4 * block;
    rows.push(vec![0.0; n]);
    rows.push(vec![-0.0; n]);
    // amax = 127 → d = 1 (Q8_0) / iscale = ±1 (Q8_K): x.5 values are exact ties.
    rows.push(
        (0..n)
            .map(|i| {
                if i == 0 {
                    127.0
                } else {
                    (i % 64) as f32 - 31.5
                }
            })
            .collect(),
    );
    rows.push(
        (0..n)
            .map(|i| {
                if i == 0 {
                    -127.0
                } else {
                    (i % 64) as f32 - 31.5
                }
            })
            .collect(),
    );
    // Both +m and −m present: the first one decides Q8_K's sign.
    rows.push(
        (0..n)
            .map(|i| {
                if i % 7 == 3 {
                    5.0
                } else if i % 7 == 1 {
                    -5.0
                } else {
                    0.25
                }
            })
            .collect(),
    );
    rows.push(
        (0..n)
            .map(|i| {
                if i % 7 == 1 {
                    5.0
                } else if i % 7 == 3 {
                    -5.0
                } else {
                    0.25
                }
            })
            .collect(),
    );
    rows.push((0..n).map(|i| (i as f32 - 100.0) * 1e-40).collect()); // subnormals
    rows.push((0..n).map(|i| (i as f32 - 100.0) * 1e35).collect()); // huge
                                                                    // Blocks at 1e-38, 1e-37, 1e-36, 1e-35: Q8_K's inverse scale `-127/max` overflows for
                                                                    // the first two (the all-zero block), not for the others.
    rows.push(
        (0..n)
            .map(|i| ((i % 17) as f32 - 8.0) * 10f32.powi(-38 + (i / block) as i32))
            .collect(),
    );
    rows.push(
        (0..n)
            .map(|i| if i % block == 5 { 1.0 } else { 0.0 })
            .collect(),
    ); // one spike
    rows
}

fn check_quantizer<A: BlockFormat>(name: &str, isa: Isa, kernel: unsafe fn(&[f32], &mut [A])) {
    let mut rng = Rng(0xA11CE);
    let mut blocks = 0;
    for x in quantizer_rows(A::BLOCK_ELEMS, &mut rng) {
        let want = quantize_act::<A>(&x);
        let mut got = vec![A::zeroed(); want.len()];
        // SAFETY: `isa` was checked to be available.
        unsafe { kernel(&x, &mut got) };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                bytemuck::bytes_of(g) == bytemuck::bytes_of(w),
                "{name} {isa:?}: block {i} differs for input {:?}",
                &x[i * A::BLOCK_ELEMS..(i + 1) * A::BLOCK_ELEMS]
            );
        }
        blocks += want.len();
    }
    eprintln!("{name} {isa:?}: {blocks} blocks bit-identical");
}

#[test]
fn quantize_q8_0() {
    for isa in isas("f32→Q8_0") {
        let k: unsafe fn(&[f32], &mut [BlockQ8_0]) = match isa {
            Isa::Avx2 => avx2::quantize_q8_0,
            Isa::Avx512 => avx512::quantize_q8_0,
        };
        check_quantizer("f32→Q8_0", isa, k);
    }
}

#[test]
fn quantize_q8_1() {
    for isa in isas("f32→Q8_1") {
        let k: unsafe fn(&[f32], &mut [BlockQ8_1]) = match isa {
            Isa::Avx2 => avx2::quantize_q8_1,
            Isa::Avx512 => avx512::quantize_q8_1,
        };
        check_quantizer("f32→Q8_1", isa, k);
    }
}

#[test]
fn quantize_q8_k() {
    for isa in isas("f32→Q8_K") {
        let k: unsafe fn(&[f32], &mut [BlockQ8_K]) = match isa {
            Isa::Avx2 => avx2::quantize_q8_k,
            Isa::Avx512 => avx512::quantize_q8_k,
        };
        check_quantizer("f32→Q8_K", isa, k);
    }
}

/// The dispatch table entries route to these kernels and agree with the scalar table.
#[test]
fn dispatch_tables_agree() {
    use grist_gguf::GgmlType;
    use grist_kernels::dispatch::{select, Isa as DIsa};
    let scalar = select(DIsa::Scalar).expect("scalar table");
    for (isa, name) in [(DIsa::Avx2, "avx2"), (DIsa::Avx512, "avx512")] {
        let Ok(table) = select(isa) else {
            eprintln!("SKIPPED: dispatch table {name}: not available on this CPU");
            continue;
        };
        let mut rng = Rng(7);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::IQ4_NL,
            GgmlType::IQ4_XS,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::F16,
            GgmlType::BF16,
        ] {
            let (s, t) = (scalar.entry(ty).unwrap(), table.entry(ty).unwrap());
            assert_eq!(s.act_type, t.act_type);
            let cols = 512;
            let x: Vec<f32> = (0..cols).map(|_| rng.activation()).collect();
            let w_f32: Vec<f32> = (0..cols).map(|_| rng.activation()).collect();
            let act_bytes = act_len(s.act_type, cols);
            let (mut qa_s, mut qa_t) = (vec![0u8; act_bytes], vec![0u8; act_bytes]);
            (s.quantize_act)(&x, &mut qa_s);
            (t.quantize_act)(&x, &mut qa_t);
            assert_eq!(qa_s, qa_t, "{name} {ty:?}: activation bytes differ");
            let mut w = vec![0u8; act_len(ty, cols)];
            grist_kernels::formats::quantize_row(ty, &w_f32, &mut w).unwrap();
            let (want, got) = ((s.vec_dot)(&w, &qa_s), (t.vec_dot)(&w, &qa_t));
            assert!(
                (want - got).abs() <= 1e-4 * want.abs().max(1.0),
                "{name} {ty:?}: {got} vs {want}"
            );
        }
    }
}

fn act_len(ty: grist_gguf::GgmlType, cols: usize) -> usize {
    use grist_gguf::GgmlType as T;
    let (elems, bytes) = match ty {
        T::Q4_0 => (32, 18),
        T::Q4_1 => (32, 20),
        T::Q5_0 => (32, 22),
        T::Q5_1 => (32, 24),
        T::IQ4_NL => (32, 18),
        T::IQ4_XS => (256, 136),
        T::Q8_0 => (32, 34),
        T::Q8_1 => (32, 36),
        T::Q4_K => (256, 144),
        T::Q5_K => (256, 176),
        T::Q6_K => (256, 210),
        T::Q8_K => (256, 292),
        T::F16 | T::BF16 => (1, 2),
        T::F32 => (1, 4),
        other => panic!("unexpected type {other:?}"),
    };
    cols / elems * bytes
}

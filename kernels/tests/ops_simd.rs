//! f32 ops: every SIMD table against the scalar references (random + adversarial data, all
//! lengths around the vector widths), and the scalar references against hand-computed values.

use grist_kernels::dispatch::{self, Isa};
use grist_kernels::ops::{self, scalar, OpKernels, RopeParams, RopeStyle};
use half::f16;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// SIMD op tables of this CPU (the scalar one excluded).
fn simd_tables() -> Vec<(Isa, &'static OpKernels)> {
    let mut out = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
        match dispatch::select(isa) {
            Ok(t) => out.push((isa, &t.ops)),
            Err(e) => eprintln!("SKIPPED: {isa} ops: {e}"),
        }
    }
    out
}

/// Lengths around every vector width (8, 16, unrolled 32/64) plus long rows.
fn lengths() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=70).collect();
    v.extend([127, 128, 129, 1000, 4097]);
    v
}

/// Inputs: random at several magnitudes, plus adversarial values mixed in.
fn inputs(rng: &mut Rng, n: usize) -> Vec<Vec<f32>> {
    let specials = [
        0.0, -0.0, 1e-38, -1e-38, 1e-30, 87.0, -87.0, 88.5, -103.0, -110.0, 200.0, -200.0,
    ];
    let mut mixed = rng.vec(n, 30.0);
    for (i, v) in mixed.iter_mut().enumerate() {
        if rng.next().is_multiple_of(4) {
            *v = specials[i % specials.len()];
        }
    }
    vec![rng.vec(n, 1.0), rng.vec(n, 1e3), rng.vec(n, 1e-3), mixed]
}

fn ulp_diff(a: f32, b: f32) -> u32 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.is_sign_negative() != b.is_sign_negative() {
        return a.to_bits().wrapping_add(b.to_bits()) & 0x7fff_ffff;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// Close within `ulps`, or both below the smallest normal (exp flushes there).
fn close(a: f32, b: f32, ulps: u32) -> bool {
    ulp_diff(a, b) <= ulps || (a.abs() < f32::MIN_POSITIVE && b.abs() < f32::MIN_POSITIVE)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn elementwise_ops_are_bit_identical() {
    let mut rng = Rng(1);
    let s = OpKernels::scalar();
    for (isa, t) in simd_tables() {
        for n in lengths() {
            for x in inputs(&mut rng, n) {
                let other = rng.vec(n, 3.0);
                let (mut a, mut b) = (x.clone(), x.clone());
                (s.scale)(&mut a, 0.37);
                (t.scale)(&mut b, 0.37);
                assert_eq!(bits(&a), bits(&b), "{isa} scale n={n}");
                let (mut a, mut b) = (x.clone(), x.clone());
                (s.scale_mul)(&mut a, 0.37, &other);
                (t.scale_mul)(&mut b, 0.37, &other);
                assert_eq!(bits(&a), bits(&b), "{isa} scale_mul n={n}");
                let (mut a, mut b) = (x.clone(), x.clone());
                (s.add_assign)(&mut a, &other);
                (t.add_assign)(&mut b, &other);
                assert_eq!(bits(&a), bits(&b), "{isa} add n={n}");
                assert_eq!(
                    (s.max)(&x).to_bits(),
                    (t.max)(&x).to_bits(),
                    "{isa} max n={n}"
                );
                let (mut ha, mut hb) = (vec![f16::ZERO; n], vec![f16::ONE; n]);
                (s.f32_to_f16)(&x, &mut ha);
                (t.f32_to_f16)(&x, &mut hb);
                assert_eq!(ha, hb, "{isa} f32_to_f16 n={n}");
                let (mut ya, mut yb) = (other.clone(), other.clone());
                (s.axpy_f16)(-0.75, &ha, &mut ya);
                (t.axpy_f16)(-0.75, &ha, &mut yb);
                assert_eq!(bits(&ya), bits(&yb), "{isa} axpy_f16 n={n}");
            }
        }
    }
}

/// `exp_sub_sum` with a scale is `scale` followed by `exp_sub_sum` with scale 1, bit for bit,
/// in every table (the tiled attention relies on it), including the maximum it subtracts:
/// the scaled maximum is the maximum of the scaled values.
#[test]
fn exp_sub_sum_with_a_scale_is_scale_then_exp() {
    let mut rng = Rng(8);
    let mut tables = simd_tables();
    let scalar_table = OpKernels::scalar();
    tables.push((Isa::Scalar, &scalar_table));
    for (isa, t) in tables {
        for n in lengths() {
            for x in inputs(&mut rng, n) {
                for c in [0.125f32, 0.37, 1.0 / 3.0, 1.0, 2.5] {
                    let mut a = x.clone();
                    (t.scale)(&mut a, c);
                    let m = (t.max)(&a);
                    assert_eq!(m.to_bits(), (c * (t.max)(&x)).to_bits(), "{isa} max n={n}");
                    if m == f32::NEG_INFINITY {
                        continue;
                    }
                    let sa = (t.exp_sub_sum)(&mut a, 1.0, m);
                    let mut b = x.clone();
                    let sb = (t.exp_sub_sum)(&mut b, c, m);
                    assert_eq!(bits(&a), bits(&b), "{isa} exp n={n} scale {c}");
                    assert_eq!(sa.to_bits(), sb.to_bits(), "{isa} sum n={n} scale {c}");
                }
            }
        }
    }
}

/// The fused `scale_mul` is `scale` then `mul_assign`, bit for bit (RMSNorm's result must not
/// change when it calls one instead of the two).
#[test]
fn scale_mul_is_scale_then_mul() {
    let mut rng = Rng(7);
    for n in [0, 1, 7, 8, 9, 31, 640, 1001] {
        for x in inputs(&mut rng, n) {
            let w = rng.vec(n, 3.0);
            let s = 1.0 / (rng.f32().abs() + 1e-3);
            let mut two = x.clone();
            scalar::scale(&mut two, s);
            scalar::mul_assign(&mut two, &w);
            let mut one = x.clone();
            scalar::scale_mul(&mut one, s, &w);
            assert_eq!(bits(&one), bits(&two), "n={n}");
        }
    }
}

#[test]
fn f16_conversion_handles_extremes() {
    for (isa, t) in simd_tables() {
        let x = [
            65504.0,
            65520.0,
            1e9,
            -1e9,
            6e-8,
            3e-8,
            1e-10,
            f32::INFINITY,
            -0.0,
            2.0e-5,
        ];
        let (mut a, mut b) = (vec![f16::ZERO; 10], vec![f16::ZERO; 10]);
        scalar::f32_to_f16(&x, &mut a);
        (t.f32_to_f16)(&x, &mut b);
        assert_eq!(a, b, "{isa}");
    }
}

#[test]
fn reductions_agree_within_summation_order() {
    let mut rng = Rng(2);
    let s = OpKernels::scalar();
    for (isa, t) in simd_tables() {
        for n in lengths() {
            for x in inputs(&mut rng, n) {
                let y = rng.vec(n, 2.0);
                // Sum of squares: same f32 squares, f64 sums in another order.
                let (a, b) = ((s.sum_squares)(&x), (t.sum_squares)(&x));
                assert!(
                    (a - b).abs() <= a * 1e-13,
                    "{isa} sum_squares n={n}: {a} vs {b}"
                );
                // Dot products: f32 lanes vs f64; bound by n·2⁻²⁴·Σ|xy|.
                let mag: f64 = x
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                let tol = mag * (n as f64 + 4.0) * 2f64.powi(-24) + 1e-30;
                let (a, b) = ((s.dot_f32)(&x, &y), (t.dot_f32)(&x, &y));
                assert!(
                    ((a - b) as f64).abs() <= tol,
                    "{isa} dot_f32 n={n}: {a} vs {b}"
                );
                let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                let (a, b) = ((s.dot_f16_f32)(&h, &y), (t.dot_f16_f32)(&h, &y));
                assert!(
                    ((a - b) as f64).abs() <= tol * 1.01 + 1e-6 * tol,
                    "{isa} dot_f16 n={n}: {a} vs {b}"
                );
            }
        }
    }
}

/// `swiglu` gives each value the same bits wherever it sits in the slice (every ISA, the
/// scalar one included): the fused gated matmul applies it to tiles of a row, the unfused path
/// to whole rows (`matmul::GluFn`). A tail handed to the scalar `exp` would differ by an ulp.
#[test]
fn swiglu_bits_do_not_depend_on_the_position() {
    let mut rng = Rng(11);
    let scalar = OpKernels::scalar();
    let mut tables = simd_tables();
    tables.push((Isa::Scalar, &scalar));
    for (isa, t) in tables {
        for x in inputs(&mut rng, 53) {
            let up = rng.vec(x.len(), 2.0);
            let mut whole = x.clone();
            (t.swiglu)(&mut whole, &up);
            for start in 0..x.len() {
                for end in start..=x.len().min(start + 20) {
                    let mut part = x[start..end].to_vec();
                    (t.swiglu)(&mut part, &up[start..end]);
                    for (i, v) in part.iter().enumerate() {
                        assert_eq!(
                            v.to_bits(),
                            whole[start + i].to_bits(),
                            "{isa} swiglu of x[{}] = {} in x[{start}..{end}]",
                            start + i,
                            x[start + i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn exp_based_ops_agree_within_two_ulp() {
    let mut rng = Rng(3);
    let s = OpKernels::scalar();
    for (isa, t) in simd_tables() {
        for n in lengths() {
            for x in inputs(&mut rng, n) {
                let up = rng.vec(n, 2.0);
                let (mut a, mut b) = (x.clone(), x.clone());
                (s.silu)(&mut a);
                (t.silu)(&mut b);
                for i in 0..n {
                    assert!(
                        close(a[i], b[i], 5),
                        "{isa} silu({}) = {} vs {}",
                        x[i],
                        a[i],
                        b[i]
                    );
                }
                let (mut a, mut b) = (x.clone(), x.clone());
                (s.swiglu)(&mut a, &up);
                (t.swiglu)(&mut b, &up);
                for i in 0..n {
                    assert!(
                        close(a[i], b[i], 6),
                        "{isa} swiglu({}) = {} vs {}",
                        x[i],
                        a[i],
                        b[i]
                    );
                }
                let m = (s.max)(&x);
                let (mut a, mut b) = (x.clone(), x.clone());
                let sa = (s.exp_sub_sum)(&mut a, 1.0, m);
                let sb = (t.exp_sub_sum)(&mut b, 1.0, m);
                for i in 0..n {
                    assert!(
                        close(a[i], b[i], 2),
                        "{isa} exp({}) = {} vs {}",
                        x[i] - m,
                        a[i],
                        b[i]
                    );
                }
                assert!(
                    (sa - sb).abs() <= sa * 3e-7,
                    "{isa} exp sum n={n}: {sa} vs {sb}"
                );
            }
        }
        // The whole useful range of exp, densely.
        let mut x: Vec<f32> = (0..200_000)
            .map(|i| -104.0 + i as f32 * (192.0 / 200_000.0))
            .collect();
        let mut y = x.clone();
        (s.exp_sub_sum)(&mut x, 1.0, 0.0);
        (t.exp_sub_sum)(&mut y, 1.0, 0.0);
        for i in 0..x.len() {
            assert!(close(x[i], y[i], 2), "{isa} exp #{i}: {} vs {}", x[i], y[i]);
        }
        // Infinities: exp(-inf) = 0 (masked softmax entries), exp(+inf) = inf.
        let mut v = vec![f32::NEG_INFINITY; 16];
        v[3] = f32::INFINITY;
        (t.exp_sub_sum)(&mut v, 1.0, 0.0);
        assert_eq!(v[0], 0.0, "{isa}");
        assert_eq!(v[3], f32::INFINITY, "{isa}");
    }
}

#[test]
fn norm_and_softmax_agree_across_isas() {
    let mut rng = Rng(4);
    let s = OpKernels::scalar();
    for (isa, t) in simd_tables() {
        for n in [1usize, 7, 64, 896, 2049] {
            let x = rng.vec(n, 5.0);
            let w = rng.vec(n, 1.0);
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            ops::rms_norm_with(&s, &x, Some(&w), 1e-6, &mut a);
            ops::rms_norm_with(t, &x, Some(&w), 1e-6, &mut b);
            for i in 0..n {
                assert!(
                    close(a[i], b[i], 1),
                    "{isa} rms_norm n={n} i={i}: {} vs {}",
                    a[i],
                    b[i]
                );
            }
            let (mut a, mut b) = (x.clone(), x.clone());
            ops::softmax_with(&s, &mut a);
            ops::softmax_with(t, &mut b);
            for i in 0..n {
                assert!(
                    close(a[i], b[i], 4),
                    "{isa} softmax n={n} i={i}: {} vs {}",
                    a[i],
                    b[i]
                );
            }
        }
    }
}

#[test]
fn rms_norm_matches_definition() {
    let x = [1.0f32, -2.0, 3.0, -4.0];
    let mut out = [0.0; 4];
    ops::rms_norm_with(&OpKernels::scalar(), &x, None, 0.0, &mut out);
    let rms = (30.0f64 / 4.0).sqrt();
    for i in 0..4 {
        assert!((out[i] as f64 - x[i] as f64 / rms).abs() < 1e-6);
    }
    let w = [2.0f32, 0.5, 1.0, 0.0];
    ops::rms_norm(&x, Some(&w), 0.0, &mut out);
    assert!((out[0] as f64 - 2.0 / rms).abs() < 1e-6 && out[3] == 0.0);
    let mut z = [0.0f32; 5];
    ops::rms_norm_in_place(&mut z, None, 1e-5);
    assert_eq!(z, [0.0; 5]);
}

#[test]
fn softmax_matches_definition_and_handles_masks() {
    let mut x = [1.0f32, 2.0, 3.0];
    ops::softmax(&mut x);
    let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
    let sum: f64 = e.iter().sum();
    for i in 0..3 {
        assert!((x[i] as f64 - e[i] / sum).abs() < 1e-7);
    }
    let mut masked = [f32::NEG_INFINITY, 0.5, f32::NEG_INFINITY, 0.5];
    ops::softmax(&mut masked);
    assert_eq!(masked, [0.0, 0.5, 0.0, 0.5]);
    let mut all = [f32::NEG_INFINITY; 3];
    ops::softmax(&mut all);
    assert_eq!(all, [0.0; 3]);
    let mut huge = [1e30f32, 0.0];
    ops::softmax(&mut huge);
    assert_eq!(huge, [1.0, 0.0]);
}

#[test]
fn gelu_mirrors_ggml_lookup_table() {
    // Outside (-10, 10) ggml returns 0 / x; inside, the f16-rounded tanh approximation.
    assert_eq!(ops::gelu1(-10.0), 0.0);
    assert_eq!(ops::gelu1(-50.0), 0.0);
    assert_eq!(ops::gelu1(10.0), 10.0);
    assert_eq!(ops::gelu1(1e6), 1e6);
    assert_eq!(ops::gelu1(0.0), 0.0);
    for i in -1000..1000 {
        let x = i as f32 * 0.00999;
        let want = ops::gelu_tanh(f16::from_f32(x).to_f32());
        let got = ops::gelu1(x);
        assert_eq!(got, f16::from_f32(want).to_f32(), "gelu({x})");
        // And close to the exact tanh formula (f16 precision).
        assert!(
            (got - ops::gelu_tanh(x)).abs() <= 2e-3 * (1.0 + x.abs()),
            "gelu({x})"
        );
    }
    // Known values of the tanh approximation.
    assert!((ops::gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
    assert!((ops::gelu_tanh(-1.0) + 0.158_808).abs() < 1e-5);
    let mut g = [1.0f32, -20.0, 20.0, 0.5];
    let up = [2.0f32, 3.0, 0.5, 0.0];
    ops::geglu(&mut g, &up);
    assert_eq!(g, [ops::gelu1(1.0) * 2.0, 0.0, 10.0, 0.0]);
    let mut v = [1.0f32, 20.0];
    ops::gelu(&mut v);
    assert_eq!(v, [ops::gelu1(1.0), 20.0]);
}

#[test]
fn silu_swiglu_match_definition() {
    let mut x = [0.0f32, 1.0, -1.0, 30.0, -30.0];
    ops::silu(&mut x);
    let want = [
        0.0f64,
        0.731_058_578_6,
        -0.268_941_421_4,
        30.0,
        -30.0 * (-30.0f64).exp(),
    ];
    for i in 0..5 {
        assert!(
            (x[i] as f64 - want[i]).abs() <= 1e-6 * want[i].abs().max(1e-12),
            "{i}"
        );
    }
    let mut g = vec![1.0f32; 19];
    let up = vec![2.0f32; 19];
    ops::swiglu(&mut g, &up);
    for v in g {
        assert!((v as f64 - 2.0 * 0.731_058_578_6).abs() < 1e-6);
    }
}

#[test]
fn rope_rotates_pairs_like_ggml() {
    // head_dim 6, n_rot 4: pairs rotate by pos·base^(-2i/n_rot); dims 4, 5 pass through.
    let base = 10000.0f32;
    let pos = 3usize;
    let x: Vec<f32> = (1..=12).map(|v| v as f32).collect(); // 2 heads
    let theta = [pos as f64, pos as f64 * (base as f64).powf(-2.0 / 4.0)];
    for style in [RopeStyle::Normal, RopeStyle::Neox] {
        let params = RopeParams::new(4, base, style);
        let mut y = x.clone();
        ops::rope(&mut y, 6, pos, &params);
        for h in 0..2 {
            let src = &x[h * 6..h * 6 + 6];
            let dst = &y[h * 6..h * 6 + 6];
            for (i, &t) in theta.iter().enumerate() {
                let (ia, ib) = match style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + 2),
                };
                let (a, b) = (src[ia] as f64, src[ib] as f64);
                let (ea, eb) = (a * t.cos() - b * t.sin(), a * t.sin() + b * t.cos());
                assert!(
                    (dst[ia] as f64 - ea).abs() < 1e-5,
                    "{style:?} h{h} pair {i}"
                );
                assert!(
                    (dst[ib] as f64 - eb).abs() < 1e-5,
                    "{style:?} h{h} pair {i}"
                );
            }
            assert_eq!(&dst[4..], &src[4..], "{style:?}: unrotated tail");
        }
        // Position 0 is the identity.
        let mut z = x.clone();
        ops::rope(&mut z, 6, 0, &params);
        assert_eq!(z, x);
    }
}

#[test]
fn rope_cache_uses_iterative_theta_and_factors() {
    let ff = [1.0f32, 2.0, 4.0, 8.0];
    let params = RopeParams {
        n_rot: 8,
        freq_base: 500_000.0,
        freq_scale: 0.5,
        freq_factors: Some(&ff),
        style: RopeStyle::Neox,
    };
    let mut cache = [0.0f32; 8];
    ops::rope_cache(1000, &params, &mut cache);
    let scale = 500_000.0f32.powf(-2.0 / 8.0);
    let mut theta = 1000.0f32;
    for i in 0..4 {
        let angle = 0.5 * (theta / ff[i]);
        assert_eq!(cache[2 * i], angle.cos(), "cos {i}");
        assert_eq!(cache[2 * i + 1], angle.sin(), "sin {i}");
        theta *= scale;
    }
}

/// GeGLU looks its GELU up in ggml's f16 table, so every version must give the scalar
/// reference's bits exactly: random values over several ranges, every f16 value (so every
/// table entry, including the last, is gathered), the ±10 cut-offs and their neighbours,
/// values that round across f16 boundaries, ±0, subnormals, infinities and NaN.
#[test]
fn geglu_is_bit_identical_to_the_scalar_reference() {
    let mut rng = Rng(11);
    let s = OpKernels::scalar();
    let mut special: Vec<f32> = vec![
        0.0,
        -0.0,
        10.0,
        -10.0,
        f32::from_bits(10.0f32.to_bits() - 1),
        f32::from_bits(10.0f32.to_bits() + 1),
        f32::from_bits((-10.0f32).to_bits() - 1),
        f32::from_bits((-10.0f32).to_bits() + 1),
        1e-40,
        -1e-40,
        6e-8,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        1.0 + 1.0 / 2048.0, // exactly between two f16 values: ties to even
        1.0 + 3.0 / 2048.0,
    ];
    special.extend((0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()));
    for (isa, t) in simd_tables() {
        let mut cases = vec![special.clone()];
        for scale in [0.5, 4.0, 12.0, 100.0] {
            for n in lengths() {
                cases.push(rng.vec(n, scale));
            }
        }
        for x in cases {
            let up: Vec<f32> = (0..x.len()).map(|_| rng.f32() * 3.0).collect();
            let (mut a, mut b) = (x.clone(), x.clone());
            (s.geglu)(&mut a, &up);
            (t.geglu)(&mut b, &up);
            for i in 0..x.len() {
                assert_eq!(
                    a[i].to_bits(),
                    b[i].to_bits(),
                    "{isa} geglu({}, {}) = {} vs {}",
                    x[i],
                    up[i],
                    a[i],
                    b[i]
                );
            }
        }
    }
}

/// The order greedy decoding uses: NaN as −∞, `total_cmp` (so +0 > −0), lowest index on ties.
fn argmax_reference(x: &[f32]) -> usize {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if key(v).total_cmp(&key(x[best])).is_gt() {
            best = i;
        }
    }
    best
}

#[test]
fn argmax_matches_the_total_order_with_lowest_index_on_ties() {
    let mut rng = Rng(0x5eed_a11a);
    let special = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::MAX,
        f32::MIN,
        1.0,
    ];
    let mut lens = lengths();
    lens.extend([255, 256, 257, 511, 513, 151_936]);
    let mut checked = 0;
    for &n in &lens {
        for case in 0..12 {
            let mut x = rng.vec(n, 8.0);
            match case {
                // Random values.
                0 => {}
                // Few distinct values: many ties, the first must win.
                1 => x.iter_mut().for_each(|v| *v = v.round() / 4.0),
                // Special values sprinkled in.
                2..=5 => {
                    for _ in 0..n / 3 + 1 {
                        if n > 0 {
                            let i = rng.next() as usize % n;
                            x[i] = special[rng.next() as usize % special.len()];
                        }
                    }
                }
                // Only NaN and −∞ (the answer is 0), then one finite value among them.
                6 | 7 => {
                    for v in x.iter_mut() {
                        *v = if rng.next().is_multiple_of(2) {
                            f32::NAN
                        } else {
                            f32::NEG_INFINITY
                        };
                    }
                    if case == 7 && n > 0 {
                        x[rng.next() as usize % n] = -3.0;
                    }
                }
                // Signed zeros as the maximum: +0 wins over an earlier −0.
                8 | 9 => {
                    x.iter_mut().for_each(|v| *v = -v.abs() - 1.0);
                    if n > 1 {
                        x[rng.next() as usize % n] = -0.0;
                        if case == 9 {
                            x[rng.next() as usize % n] = 0.0;
                        }
                    }
                }
                // The maximum in the last element, or first in the last 16-value chunk.
                10 if n > 0 => x[n - 1] = 100.0,
                11 if n > 0 => x[n - 1 - (n - 1) % 16] = 100.0,
                _ => {}
            }
            assert_eq!(
                ops::argmax(&x),
                argmax_reference(&x),
                "n = {n}, case {case}: {:?}",
                &x[..n.min(40)]
            );
            checked += 1;
        }
    }
    assert!(checked > 900);
}

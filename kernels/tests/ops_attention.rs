//! The attention helpers of the op table (`f16_to_f32`, `gemm_acc_f32`, `attn_f16_acc`):
//! every SIMD table against the scalar references on random and adversarial shapes, and the
//! references against hand-computed values.

use grist_kernels::dispatch::{self, Isa};
use grist_kernels::ops::{scalar, GemmDims, KvRows, OpKernels};
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
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
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

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

#[test]
fn f16_to_f32_is_exact() {
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let mut want = vec![0.0f32; all.len()];
    scalar::f16_to_f32(&all, &mut want);
    assert_eq!(want[0x3c00], 1.0);
    for (isa, t) in simd_tables() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 33, 65536] {
            let mut got = vec![0.0f32; n];
            (t.f16_to_f32)(&all[..n], &mut got);
            // NaNs keep their payload class; compare bits of everything else.
            for (i, (a, b)) in got.iter().zip(&want[..n]).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{isa} {i}"
                );
            }
        }
    }
}

#[test]
fn gemm_reference_matches_definition() {
    // c = [[1, 2]] + [[1, 2, 3]] · [[1, 0], [0, 1], [1, 1]] = [[5, 7]]
    let d = GemmDims {
        m: 1,
        n: 2,
        k: 3,
        lda: 3,
        ldb: 2,
        ldc: 2,
    };
    let mut c = [1.0, 2.0];
    scalar::gemm_acc_f32(d, &[1.0, 2.0, 3.0], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &mut c);
    assert_eq!(c, [5.0, 7.0]);
}

#[test]
fn gemm_simd_is_bit_identical() {
    let mut rng = Rng(7);
    let s = OpKernels::scalar();
    for (isa, t) in simd_tables() {
        for case in 0..400 {
            let (m, n, k) = if case < 64 {
                // Every shape around the register blocks.
                (
                    1 + case % 9,
                    [1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 70][case % 12],
                    case % 5,
                )
            } else {
                (1 + rng.below(12), 1 + rng.below(140), rng.below(80))
            };
            let (lda, ldb, ldc) = (k + rng.below(3), n + rng.below(3), n + rng.below(3));
            let d = GemmDims {
                m,
                n,
                k,
                lda,
                ldb,
                ldc,
            };
            let scale = [1.0, 1e-3, 1e3][case % 3];
            let a = rng.vec(m * lda, scale);
            let b = rng.vec(k.max(1) * ldb, 1.0);
            let c0 = rng.vec(m * ldc, 1.0);
            let (mut want, mut got) = (c0.clone(), c0.clone());
            (s.gemm_acc_f32)(d, &a, &b, &mut want);
            (t.gemm_acc_f32)(d, &a, &b, &mut got);
            assert_eq!(bits(&want), bits(&got), "{isa} gemm {d:?}");
        }
    }
}

#[test]
#[should_panic(expected = "gemm: c too short")]
fn gemm_rejects_short_output() {
    let d = GemmDims {
        m: 2,
        n: 4,
        k: 1,
        lda: 1,
        ldb: 4,
        ldc: 4,
    };
    let mut c = [0.0f32; 7];
    (dispatch::kernels().ops.gemm_acc_f32)(d, &[1.0, 1.0], &[1.0; 4], &mut c);
}

/// Random inputs of `attn_f16_acc`: `g` query heads of `hd` values (rounded to f16, as the
/// caller passes them) and `count` cached key/value rows `stride` values apart.
struct AttnInputs {
    q: Vec<f32>,      // [g, hd]
    keys: Vec<f16>,   // [count, stride]
    values: Vec<f16>, // [count, stride]
    stride: usize,
    count: usize,
}

impl AttnInputs {
    fn random(rng: &mut Rng, g: usize, hd: usize, count: usize, stride: usize) -> AttnInputs {
        let q = to_f16(&rng.vec(g * hd, 1.0))
            .iter()
            .map(|x| x.to_f32())
            .collect();
        let keys = to_f16(&rng.vec(count * stride, 2.0));
        let values = to_f16(&rng.vec(count * stride, 3.0));
        AttnInputs {
            q,
            keys,
            values,
            stride,
            count,
        }
    }

    fn kv(&self) -> KvRows<'_> {
        KvRows {
            keys: &self.keys,
            values: &self.values,
            stride: self.stride,
            count: self.count,
        }
    }
}

/// Runs `attn_f16_acc` of `table` over random keys/values: `g` heads of size `hd`, `count`
/// rows with a row stride of `hd + 3`. Returns (acc, state).
fn run_attn(
    table: &OpKernels,
    seed: u64,
    g: usize,
    hd: usize,
    count: usize,
) -> (Vec<f32>, Vec<f32>) {
    let x = AttnInputs::random(&mut Rng(seed), g, hd, count, hd + 3);
    let mut state: Vec<f32> = [f32::NEG_INFINITY, 0.0].repeat(g);
    let mut acc = vec![0.0f32; g * hd];
    (table.attn_f16_acc)(&x.q, x.kv(), 0.125, &mut state, &mut acc);
    (acc, state)
}

#[test]
fn attn_f16_acc_reference_matches_definition() {
    // One head, two keys: scores 1 and 0 (scale 1) → weights 1 and e^-1.
    let q = [1.0f32, 0.0];
    let keys = to_f16(&[1.0, 0.0, 0.0, 1.0]);
    let values = to_f16(&[2.0, 4.0, 8.0, 16.0]);
    let kv = KvRows {
        keys: &keys,
        values: &values,
        stride: 2,
        count: 2,
    };
    let mut state = [f32::NEG_INFINITY, 0.0];
    let mut acc = [0.0f32; 2];
    scalar::attn_f16_acc(&q, kv, 1.0, &mut state, &mut acc);
    let w = (-1.0f32).exp();
    assert_eq!(state, [1.0, 1.0 + w]);
    let r = |x: f32| f16::from_f32(x).to_f32();
    assert_eq!(acc, [r(8.0f32.mul_add(w, 2.0)), r(16.0f32.mul_add(w, 4.0))]);
    // The accumulator stays representable in f16.
    assert!(acc.iter().all(|&x| r(x) == x));
}

#[test]
fn attn_f16_acc_simd_agrees_with_reference() {
    let s = OpKernels::scalar();
    for (isa, t) in simd_tables() {
        for (seed, (g, hd, count)) in [
            (1, 64, 1),
            (3, 64, 200),
            (2, 128, 77),
            (1, 80, 50),
            (4, 17, 33),
            (1, 8, 9),
            (2, 3, 5),
        ]
        .into_iter()
        .enumerate()
        {
            let (wa, ws) = run_attn(&s, seed as u64, g, hd, count);
            let (ga, gs) = run_attn(t, seed as u64, g, hd, count);
            // Only the dot products' summation order differs: a score may move by an ulp,
            // which changes weights by ~1e-7 relative and can flip an f16 rounding of the
            // accumulator (1 f16 ulp ≈ 1e-3 relative).
            for (i, (a, b)) in ga.iter().zip(&wa).enumerate() {
                assert!(
                    (a - b).abs() <= 2e-3 * (1.0 + b.abs()),
                    "{isa} g={g} hd={hd} n={count} acc[{i}]: {a} vs {b}"
                );
            }
            for (a, b) in gs.iter().zip(&ws) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{isa} state {a} vs {b}"
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "do not fit")]
fn attn_f16_acc_rejects_short_cache() {
    let keys = to_f16(&[0.0; 10]);
    let kv = KvRows {
        keys: &keys,
        values: &keys,
        stride: 4,
        count: 3,
    };
    let mut state = [f32::NEG_INFINITY, 0.0];
    let mut acc = [0.0f32; 4];
    (dispatch::kernels().ops.attn_f16_acc)(&[0.0; 4], kv, 1.0, &mut state, &mut acc);
}

/// The one-key-at-a-time loop that `attn_f16_acc` blocks (libm `expf`, as ggml).
fn attn_one_key_at_a_time(q: &[f32], kv: KvRows<'_>, scale: f32, st: &mut [f32], acc: &mut [f32]) {
    let hd = q.len() / (st.len() / 2);
    for j in 0..kv.count {
        let (k, v) = (
            &kv.keys[j * kv.stride..][..hd],
            &kv.values[j * kv.stride..][..hd],
        );
        for ((qh, ah), st) in q.chunks(hd).zip(acc.chunks_mut(hd)).zip(st.chunks_mut(2)) {
            let s = scalar::dot_f16_f32(k, qh) * scale;
            let (mut ms, mut vs) = (1.0f32, 1.0f32);
            if s > st[0] {
                ms = (st[0] - s).exp();
                st[0] = s;
                ah.iter_mut()
                    .for_each(|a| *a = f16::from_f32(*a * ms).to_f32());
            } else {
                vs = (s - st[0]).exp();
            }
            for (a, &x) in ah.iter_mut().zip(v) {
                *a = f16::from_f32(x.to_f32().mul_add(vs, *a)).to_f32();
            }
            st[1] = st[1] * ms + vs;
        }
    }
}

#[test]
fn attn_f16_acc_blocks_equal_one_key_at_a_time() {
    // Rising scores (a new maximum at many keys, inside and across blocks), block-sized and
    // partial counts, several heads; 64, 128 and 256 take the kernel's constant head sizes.
    for (seed, (g, hd, count)) in [
        (3, 64, 100),
        (1, 32, 32),
        (2, 16, 65),
        (1, 8, 1),
        (2, 128, 40),
        (1, 256, 33),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng(seed as u64 + 50);
        let q: Vec<f32> = to_f16(&rng.vec(g * hd, 1.0))
            .iter()
            .map(|x| x.to_f32())
            .collect();
        let keys: Vec<f16> = (0..count * hd)
            .map(|i| f16::from_f32(rng.f32() + (i / hd) as f32 * 0.05 * (i % 2) as f32))
            .collect();
        let values = to_f16(&rng.vec(count * hd, 3.0));
        let kv = KvRows {
            keys: &keys,
            values: &values,
            stride: hd,
            count,
        };
        let mut want = ([f32::NEG_INFINITY, 0.0].repeat(g), vec![0.0f32; g * hd]);
        attn_one_key_at_a_time(&q, kv, 0.5, &mut want.0, &mut want.1);
        let mut got = ([f32::NEG_INFINITY, 0.0].repeat(g), vec![0.0f32; g * hd]);
        scalar::attn_f16_acc(&q, kv, 0.5, &mut got.0, &mut got.1);
        assert_eq!(bits(&got.0), bits(&want.0), "state g={g} hd={hd} n={count}");
        assert_eq!(bits(&got.1), bits(&want.1), "acc g={g} hd={hd} n={count}");
        for (isa, t) in simd_tables() {
            let mut simd = ([f32::NEG_INFINITY, 0.0].repeat(g), vec![0.0f32; g * hd]);
            (t.attn_f16_acc)(&q, kv, 0.5, &mut simd.0, &mut simd.1);
            for (a, b) in simd.1.iter().zip(&want.1) {
                assert!((a - b).abs() <= 2e-3 * (1.0 + b.abs()), "{isa}: {a} vs {b}");
            }
        }
    }
}

/// `attn_f16_acc` interleaves the heads it is given key by key (`ATTN_SHARED_HEADS` at a
/// time): each head must get exactly the bits it gets alone, for every table, with groups
/// below, at and above that count (10 heads: a group of 8, then one of 2), rows not a
/// multiple of a vector, and key counts around a block.
#[test]
fn attn_f16_acc_heads_together_equal_heads_alone() {
    assert_eq!(scalar::ATTN_SHARED_HEADS, 8);
    let scalar_table = OpKernels::scalar();
    let mut tables = simd_tables();
    tables.push((Isa::Scalar, &scalar_table));
    for (seed, (g, hd, count)) in [
        (3, 64, 100),
        (7, 24, 33),
        (8, 16, 64),
        (10, 40, 70),
        (2, 8, 1),
    ]
    .into_iter()
    .enumerate()
    {
        // Other KV heads' values between the rows, as in a cache row.
        let x = AttnInputs::random(&mut Rng(seed as u64 + 900), g, hd, count, g * hd + 5);
        let (q, kv) = (&x.q, x.kv());
        for (isa, t) in &tables {
            let mut together = ([f32::NEG_INFINITY, 0.0].repeat(g), vec![0.0f32; g * hd]);
            (t.attn_f16_acc)(q, kv, 0.3, &mut together.0, &mut together.1);
            for h in 0..g {
                let mut alone = ([f32::NEG_INFINITY, 0.0], vec![0.0f32; hd]);
                (t.attn_f16_acc)(
                    &q[h * hd..(h + 1) * hd],
                    kv,
                    0.3,
                    &mut alone.0,
                    &mut alone.1,
                );
                let what = format!("{isa} g={g} hd={hd} n={count} head {h}");
                assert_eq!(
                    bits(&together.0[2 * h..2 * h + 2]),
                    bits(&alone.0),
                    "state {what}"
                );
                assert_eq!(
                    bits(&together.1[h * hd..(h + 1) * hd]),
                    bits(&alone.1),
                    "acc {what}"
                );
            }
        }
    }
}

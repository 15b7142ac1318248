//! Scalar reference implementations of the f32 operations: the definitions every SIMD version
//! is tested against. Each mirrors the scalar code path of ggml-cpu (`vec.h`, `vec.cpp`,
//! `ops.cpp`) operation for operation, including where ggml accumulates in `double`
//! (`ggml_float`).

use half::f16;

/// `Σ x[i]²`, each square rounded to f32 and accumulated in f64 (ggml's `rms_norm` sum:
/// `sum += (ggml_float)(x*x)`).
pub fn sum_squares(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v * v) as f64).sum()
}

/// `y[i] *= s` (ggml's `ggml_vec_scale_f32`).
pub fn scale(y: &mut [f32], s: f32) {
    for v in y {
        *v *= s;
    }
}

/// `y[i] *= x[i]` (ggml's `mul` with same-shape operands): the second rounding of
/// [`scale_mul`], which the runtime calls instead (kept as the statement of what it does).
pub fn mul_assign(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "mul: operands differ in length");
    for (a, &b) in y.iter_mut().zip(x) {
        *a *= b;
    }
}

/// `y[i] = (y[i] · s) · w[i]`, two roundings per element: [`scale`] then [`mul_assign`] in
/// one pass (RMSNorm's normalise-and-weigh, which ggml runs as `ggml_vec_scale_f32` and then
/// a `mul` by the norm weight).
pub fn scale_mul(y: &mut [f32], s: f32, w: &[f32]) {
    assert_eq!(y.len(), w.len(), "scale_mul: operands differ in length");
    for (a, &b) in y.iter_mut().zip(w) {
        *a = (*a * s) * b;
    }
}

/// `y[i] += x[i]` (ggml's `add` with same-shape operands).
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add: operands differ in length");
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// The largest element, `-inf` for an empty slice (ggml's `ggml_vec_max_f32`, which uses
/// `MAX(a, b) = a > b ? a : b`).
pub fn max(x: &[f32]) -> f32 {
    x.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if m > v { m } else { v })
}

/// `x[i] = exp(x[i] · scale - max)` in place; returns `Σ x[i]` accumulated in f64 (ggml's
/// `ggml_vec_soft_max_f32`, scalar path: libm `expf`). The product is rounded before the
/// subtraction (no fused multiply-add), so this is `scale` followed by the softmax step, in
/// one pass; `scale = 1` is the step alone (`x · 1 = x`). `max` is the maximum of the scaled
/// values, i.e. `scale · max(x)` for `scale > 0` (rounding is monotonic).
pub fn exp_sub_sum(x: &mut [f32], scale: f32, max: f32) -> f64 {
    let mut sum = 0.0f64;
    for v in x {
        *v = (*v * scale - max).exp();
        sum += *v as f64;
    }
    sum
}

/// SiLU of one value: `x / (1 + exp(-x))` (ggml's `ggml_silu_f32`).
#[inline]
pub fn silu1(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `x[i] = silu(x[i])` in place.
pub fn silu(x: &mut [f32]) {
    for v in x {
        *v = silu1(*v);
    }
}

/// SwiGLU in place: `gate[i] = silu(gate[i]) * up[i]` (ggml's `ggml_vec_swiglu_f32`).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu1(*g) * u;
    }
}

/// Dot product of two f32 rows, products rounded to f32 and summed in f64 (ggml's scalar
/// `ggml_vec_dot_f32`).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: operands differ in length");
    a.iter().zip(b).map(|(&x, &y)| (x * y) as f64).sum::<f64>() as f32
}

/// Converts an f32 row to f16, rounding to nearest-even (ggml's `GGML_FP32_TO_FP16`).
pub fn f32_to_f16(x: &[f32], out: &mut [f16]) {
    assert_eq!(x.len(), out.len(), "f32_to_f16: lengths differ");
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f16::from_f32(v);
    }
}

/// Dot product of an f16 row (e.g. a cached key) with an f32 row (a query), each f16 widened
/// exactly to f32, products summed in f64.
pub fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16_f32: operands differ in length");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x.to_f32() * y) as f64)
        .sum::<f64>() as f32
}

/// `y[i] += alpha * x[i]` with `x` in f16 (accumulating a probability-weighted cached value
/// row; ggml's `ggml_vec_mad_f16` with an f32 destination). One rounding per step (fused
/// multiply-add) so SIMD versions, which use FMA, agree exactly.
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy_f16: lengths differ");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.to_f32().mul_add(alpha, *o);
    }
}

/// Converts an f16 row to f32 (exact).
pub fn f16_to_f32(x: &[f16], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "f16_to_f32: lengths differ");
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v.to_f32();
    }
}

/// Shape and row strides of [`gemm_acc_f32`]: `c[m×n] += a[m×k] · b[k×n]`, element `(r, i)`
/// of `a` at `a[r * lda + i]`, `(i, j)` of `b` at `b[i * ldb + j]`, `(r, j)` of `c` at
/// `c[r * ldc + j]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDims {
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
    /// Columns of `a`, rows of `b` (the summed dimension).
    pub k: usize,
    /// Row stride of `a` (≥ `k`).
    pub lda: usize,
    /// Row stride of `b` (≥ `n`).
    pub ldb: usize,
    /// Row stride of `c` (≥ `n`).
    pub ldc: usize,
}

impl GemmDims {
    /// Panics with a message unless the strides and slice lengths fit the shape.
    pub fn check(&self, a: usize, b: usize, c: usize) {
        let GemmDims {
            m,
            n,
            k,
            lda,
            ldb,
            ldc,
        } = *self;
        assert!(
            lda >= k && ldb >= n && ldc >= n,
            "gemm: strides too small for {self:?}"
        );
        if m == 0 || n == 0 {
            return;
        }
        assert!(c >= (m - 1) * ldc + n, "gemm: c too short for {self:?}");
        if k > 0 {
            assert!(a >= (m - 1) * lda + k, "gemm: a too short for {self:?}");
            assert!(b >= (k - 1) * ldb + n, "gemm: b too short for {self:?}");
        }
    }
}

/// `c += a · b` for small f32 matrices (attention tiles: scores `Q·Kᵀ` with `Kᵀ` stored
/// transposed, and `P·V`). Every output element is one chain of fused multiply-adds over
/// `i = 0..k` in order, starting from its value in `c`, so SIMD versions (which vectorise
/// over `j`) are bit-identical.
pub fn gemm_acc_f32(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]) {
    d.check(a.len(), b.len(), c.len());
    for r in 0..d.m {
        for j in 0..d.n {
            let mut acc = c[r * d.ldc + j];
            for i in 0..d.k {
                acc = a[r * d.lda + i].mul_add(b[i * d.ldb + j], acc);
            }
            c[r * d.ldc + j] = acc;
        }
    }
}

/// Cached key/value rows of one KV head for [`attn_f16_acc`]: row `j` (`0 ≤ j < count`) of
/// the keys is `keys[j * stride..j * stride + head_dim]`, likewise for the values.
#[derive(Clone, Copy, Debug)]
pub struct KvRows<'a> {
    /// Key rows (f16), the first one at offset 0.
    pub keys: &'a [f16],
    /// Value rows (f16), the first one at offset 0.
    pub values: &'a [f16],
    /// Distance between consecutive rows, in elements.
    pub stride: usize,
    /// Number of rows.
    pub count: usize,
}

impl KvRows<'_> {
    /// Panics with a message unless `count` rows of `head_dim` fit both slices.
    pub fn check(&self, head_dim: usize) {
        if self.count > 0 {
            let need = (self.count - 1) * self.stride + head_dim;
            assert!(
                self.keys.len() >= need && self.values.len() >= need,
                "attn_f16_acc: {} rows of {head_dim} with stride {} do not fit",
                self.count,
                self.stride
            );
        }
    }
}

/// Keys per block of [`attn_f16_acc`]: the scores of a block are computed first, then their
/// exponentials in one (vectorisable) pass, then the value accumulation.
pub const ATTN_KEY_BLOCK: usize = 32;

/// Asks for the key and value rows `rows` (those that exist) in the cache, before
/// [`attn_f16_acc`] reads them (it asks for row `j + ATTN_KEY_BLOCK` as it scores key `j`):
/// the rows of one KV head are `stride` apart, a pattern the hardware prefetchers did not
/// follow well, and a long context's cache is read from L3 or DRAM
/// (`kernels/examples/attn_speed.rs 64 2048 192 H 30`, per (key, head): 34 → 21 ns for one
/// head, 30 → 9 ns for three; docs/PERFORMANCE.md, "Round 8").
fn prefetch_kv_rows(kv: KvRows<'_>, hd: usize, rows: std::ops::Range<usize>) {
    for j in rows.start..rows.end.min(kv.count) {
        let off = j * kv.stride;
        for row in [&kv.keys[off..off + hd], &kv.values[off..off + hd]] {
            let (start, end) = (row.as_ptr() as usize, row.as_ptr() as usize + 2 * hd);
            for line in (start & !63..end).step_by(64) {
                crate::cache::prefetch_line(line);
            }
        }
    }
}

/// Query heads [`attn_f16_acc`] interleaves key by key (more are taken this many at a time):
/// 8 covers the usual GQA groups (2–8 query heads per KV head).
pub const ATTN_SHARED_HEADS: usize = 8;

/// Online-softmax attention of `G` query heads sharing one KV head, with an f16 accumulator
/// (ggml's "one chunk" flash-attention path with `VKQ16`). `q`: `[G, head_dim]` (values
/// already rounded to f16); `acc`: `[G, head_dim]` running weighted sum of values (values
/// exactly representable in f16); `state`: `[G, 2]` running maximum and sum per head
/// (start with `-inf`, 0). For each key `j` in order and each head: `s = dot(k_j, q)·scale`
/// ([`dot_f16_f32`]); if `s > M`: `acc = f16(acc · exp(M − s))`, `M = s`, weight 1, else
/// weight `exp(s − M)`; then `acc = f16(fma(v_j, weight, acc))` and `S = S·rescale + weight`.
///
/// Keys are taken in blocks of [`ATTN_KEY_BLOCK`]: the running maximum before each key only
/// depends on the scores, so the block's scores and exponent arguments are computed first,
/// then all their exponentials, then the accumulation, with the same operations per key as
/// the one-key-at-a-time loop above. The heads are interleaved key by key (up to
/// [`ATTN_SHARED_HEADS`] at a time), which changes no head's operations or their order: each
/// key row is loaded once for all of them, and their accumulator chains (a rounding to f16
/// after every key) run side by side instead of one after the other: with 3 heads of 64
/// values, 7.8 ns per (key, head) against 16–18 for one head alone (AVX-512,
/// `kernels/examples/attn_speed.rs`). SIMD versions differ by the summation order of the dot
/// product and by their vectorised `exp` (≤ 2 ulp from libm's `expf`).
pub fn attn_f16_acc(q: &[f32], kv: KvRows<'_>, scale: f32, state: &mut [f32], acc: &mut [f32]) {
    attn_f16_acc_with(
        dot_f16_f32,
        |x: &mut [f32; ATTN_KEY_BLOCK]| x.iter_mut().for_each(|v| *v = v.exp()),
        acc_row_f16,
        q,
        kv,
        scale,
        state,
        acc,
    )
}

/// One accumulator update of [`attn_f16_acc`]: `acc = f16(acc · r)` when `rescale = Some(r)`,
/// then `acc = f16(fma(v, w, acc))`, element by element.
pub(crate) fn acc_row_f16(acc: &mut [f32], v: &[f16], rescale: Option<f32>, w: f32) {
    for (x, &vv) in acc.iter_mut().zip(v) {
        if let Some(r) = rescale {
            *x = f16::from_f32(*x * r).to_f32();
        }
        *x = f16::from_f32(vv.to_f32().mul_add(w, *x)).to_f32();
    }
}

/// [`attn_f16_acc`] with a given dot product, block `exp` (in place, every lane; lanes past
/// the block's keys hold finite or stale values whose results are not read) and accumulator
/// update (the SIMD versions pass theirs; inlined so their target features apply).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn attn_f16_acc_with(
    dot: impl Fn(&[f16], &[f32]) -> f32,
    exp: impl Fn(&mut [f32; ATTN_KEY_BLOCK]),
    acc_row: impl Fn(&mut [f32], &[f16], Option<f32>, f32),
    q: &[f32],
    kv: KvRows<'_>,
    scale: f32,
    state: &mut [f32],
    acc: &mut [f32],
) {
    let g = state.len() / 2;
    assert!(
        g > 0 && state.len() == 2 * g && q.len() == acc.len() && q.len().is_multiple_of(g),
        "attn_f16_acc: q {} / acc {} / state {} inconsistent",
        q.len(),
        acc.len(),
        state.len()
    );
    let hd = q.len() / g;
    kv.check(hd);
    // The usual head sizes as constants, so the per-key loops over a head's values unroll
    // (same operations, same bits).
    match hd {
        64 => attn_heads::<64>(hd, &dot, &exp, &acc_row, q, kv, scale, state, acc),
        128 => attn_heads::<128>(hd, &dot, &exp, &acc_row, q, kv, scale, state, acc),
        256 => attn_heads::<256>(hd, &dot, &exp, &acc_row, q, kv, scale, state, acc),
        _ => attn_heads::<0>(hd, &dot, &exp, &acc_row, q, kv, scale, state, acc),
    }
}

/// The body of [`attn_f16_acc_with`] for heads of `HD` values (`hd` when `HD` is 0).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attn_heads<const HD: usize>(
    hd: usize,
    dot: &impl Fn(&[f16], &[f32]) -> f32,
    exp: &impl Fn(&mut [f32; ATTN_KEY_BLOCK]),
    acc_row: &impl Fn(&mut [f32], &[f16], Option<f32>, f32),
    q: &[f32],
    kv: KvRows<'_>,
    scale: f32,
    state: &mut [f32],
    acc: &mut [f32],
) {
    let hd = if HD == 0 { hd } else { HD };
    let g = q.len() / hd;
    // Up to ATTN_SHARED_HEADS heads at a time, interleaved key by key: each key row is read
    // once for all of them, and their accumulator updates, each a chain of dependent
    // roundings, overlap. Every head still sees exactly its own operations in key order.
    for h0 in (0..g).step_by(ATTN_SHARED_HEADS) {
        let nh = ATTN_SHARED_HEADS.min(g - h0);
        let (q, acc) = (
            &q[h0 * hd..(h0 + nh) * hd],
            &mut acc[h0 * hd..(h0 + nh) * hd],
        );
        let state = &mut state[2 * h0..2 * (h0 + nh)];
        // e[i]: head i's exponent arguments for the block, then their exponentials; up[i][b]:
        // key b raised head i's running maximum (its exponential rescales the accumulator,
        // its weight is 1).
        let mut e = [[0.0f32; ATTN_KEY_BLOCK]; ATTN_SHARED_HEADS];
        let mut up = [[false; ATTN_KEY_BLOCK]; ATTN_SHARED_HEADS];
        let mut m = [0.0f32; ATTN_SHARED_HEADS]; // running maxima
        let mut sum = [0.0f32; ATTN_SHARED_HEADS]; // running sums
        for i in 0..nh {
            (m[i], sum[i]) = (state[2 * i], state[2 * i + 1]);
        }
        // The first block's rows: the loop below asks for each row a block ahead.
        prefetch_kv_rows(kv, hd, 0..ATTN_KEY_BLOCK);
        for j0 in (0..kv.count).step_by(ATTN_KEY_BLOCK) {
            let nb = ATTN_KEY_BLOCK.min(kv.count - j0);
            for b in 0..nb {
                let ahead = j0 + b + ATTN_KEY_BLOCK;
                prefetch_kv_rows(kv, hd, ahead..ahead + 1);
                let off = (j0 + b) * kv.stride;
                let k = &kv.keys[off..off + hd];
                for (i, qh) in q.chunks_exact(hd).enumerate() {
                    let s = dot(k, qh) * scale;
                    up[i][b] = s > m[i];
                    if up[i][b] {
                        e[i][b] = m[i] - s;
                        m[i] = s;
                    } else {
                        e[i][b] = s - m[i];
                    }
                }
            }
            for ei in &mut e[..nh] {
                exp(ei);
            }
            for b in 0..nb {
                let off = (j0 + b) * kv.stride;
                let v = &kv.values[off..off + hd];
                for (i, ah) in acc.chunks_exact_mut(hd).enumerate() {
                    let (ms, vs) = if up[i][b] {
                        (e[i][b], 1.0)
                    } else {
                        (1.0, e[i][b])
                    };
                    acc_row(ah, v, up[i][b].then_some(ms), vs);
                    sum[i] = sum[i] * ms + vs;
                }
            }
        }
        for i in 0..nh {
            (state[2 * i], state[2 * i + 1]) = (m[i], sum[i]);
        }
    }
}

//! AVX-512 VNNI register-tiled matrix products for prompt processing: an `R × C` tile of
//! outputs (`R` weight rows × `C` activation rows) per pass over the row length, for Q4_0,
//! Q4_1, Q5_0, Q8_0 (× Q8_0/Q8_1) and Q4_K, Q5_K, Q6_K (× Q8_K).
//!
//! Why tiles: the single-row kernels of [`super::avx512`] unpack a weight block (nibbles,
//! high bits, scales) and convert its scales for every activation row they meet. A tile unpacks
//! each weight register once and feeds it to `C` activation rows, and loads (and converts the
//! scales of) each activation register once for `R` weight rows.
//!
//! **Tile-independent results.** Every output is computed in one fixed order whatever tile it
//! falls in, so the results do not depend on the tile shape, on how the matmul driver splits
//! rows and tokens, on the thread count, or on whether a token was processed in a batch or
//! alone (the driver uses these kernels for `n = 1` too).
//! - Q6_K: every output keeps exactly the accumulators the single-row kernel keeps for it
//!   (same lanes, integer sums, float operations and final reduction), so the results are
//!   **bit-identical** to `avx512::vec_dot_q6_k_q8_k`.
//! - Q4_K, Q5_K: the same integer sums as the single-row kernels, grouped in other lanes
//!   (those use `vpdpbusd` + `vpackssdw`, the tiles `vpmaddubsw`), so the results equal theirs
//!   up to float rounding.
//! - 32-value formats: one accumulator per output instead of the single-row kernel's two
//!   (which would need `2·R·C` registers); see `legacy_tile`. The results equal the
//!   single-row kernel's up to float rounding.
//!
//! `kernels/tests/gemm_avx512.rs` checks the bits (and the rounding against the scalar
//! references).
//!
//! The per-format tile functions are `unsafe` (they execute AVX-512 instructions); the
//! dispatch table holds the safe byte-slice adapters `gemm_q4_0`, … defined at the bottom,
//! which are only installed into a table built for a CPU with these features.

use std::arch::x86_64::*;

use bytemuck::Pod;
use grist_gguf::GgmlType;

use super::avx512::{load64, load_halves, scaled_dot, two_halves_epi16, two_halves_epi8};
use super::{blocks_of, k4_scales_mins};
use crate::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1,
    BlockQ8_K,
};
use crate::dispatch::Kernels;

/// Weight rows per tile of the 32-value formats (accumulators: `R·C` registers).
const LEGACY_R: usize = 4;
/// Weight rows per tile of the 32-value formats when there is one activation row. With 2 or
/// 4, a DRAM-sized matrix-vector product ran at less than half the speed of 1 (several
/// interleaved read streams per thread; software prefetch did not help), though 4 is 1.3×
/// faster on cache-resident weights. The float order does not depend on the tile shape, so
/// this choice does not change any result. See docs/PERFORMANCE.md.
const GEMV_R: usize = 1;
/// Activation rows per tile of the 32-value formats.
const LEGACY_C: usize = 4;
/// Weight rows per tile of the k-quants.
const KQ_R: usize = 1;
/// Activation rows per tile of the k-quants (accumulators: `3·R·C` registers).
const KQ_C: usize = 6;

/// Installs the tiled products into an AVX-512 table (after `avx512::install`, whose
/// `set_vec_dot` calls clear any tiled product of a lower layer).
pub(crate) fn install(table: &mut Kernels) {
    table.set_gemm(GgmlType::Q4_0, gemm_q4_0);
    table.set_gemm(GgmlType::Q4_1, gemm_q4_1);
    table.set_gemm(GgmlType::Q5_0, gemm_q5_0);
    table.set_gemm(GgmlType::Q8_0, gemm_q8_0);
    table.set_gemm(GgmlType::Q4_K, gemm_q4_k);
    table.set_gemm(GgmlType::Q5_K, gemm_q5_k);
    table.set_gemm(GgmlType::Q6_K, gemm_q6_k);
}

// ----------------------------------------------------------------------------------------
// Helpers (the same instruction sequences as the single-row kernels).
// ----------------------------------------------------------------------------------------

/// `[fp16(lo) ×8 | fp16(hi) ×8]` as f32 lanes (one conversion for both halves).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn two_fp16_scales(lo: u16, hi: u16) -> __m512 {
    let h = _mm256_inserti128_si256::<1>(
        _mm256_castsi128_si256(_mm_set1_epi16(lo as i16)),
        _mm_set1_epi16(hi as i16),
    );
    _mm512_cvtph_ps(h)
}

/// 2×16 bytes of packed nibbles → 64 bytes `0..15` (block 0 low half, block 1 high half).
///
/// # Safety
/// Both pointers must be readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles_2x32(p0: *const u8, p1: *const u8) -> __m512i {
    // SAFETY: guaranteed by the caller.
    let t = unsafe { _mm256_set_m128i(_mm_loadu_si128(p1.cast()), _mm_loadu_si128(p0.cast())) };
    let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(t), _mm256_srli_epi16::<4>(t));
    let z = _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z);
    _mm512_and_si512(z, _mm512_set1_epi8(0x0F))
}

/// Sum of the 4 lanes, in the single-row kernels' order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn hsum4(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The 8 sums of 32 activation values of a Q8_K block (adjacent pairs of `bsums`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn bsums32(y: &BlockQ8_K) -> __m128i {
    // SAFETY: `bsums` is 32 bytes long.
    let bs = unsafe { _mm256_loadu_si256(y.bsums.as_ptr().cast()) };
    _mm_hadd_epi16(
        _mm256_castsi256_si128(bs),
        _mm256_extracti128_si256::<1>(bs),
    )
}

/// The 8 sub-block mins as i16 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn mins_epi16(mins: &[u8; 8]) -> __m128i {
    _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(*mins)))
}

// ----------------------------------------------------------------------------------------
// Tiling over a block of rows.
// ----------------------------------------------------------------------------------------

/// Where a tile's results go: `out[(t0 + c) · n_w + r0 + r]`.
struct OutTile<'a> {
    out: &'a mut [f32],
    n_w: usize,
    r0: usize,
    t0: usize,
}

impl OutTile<'_> {
    #[inline(always)]
    fn store<const R: usize, const C: usize>(&mut self, res: [[f32; C]; R]) {
        for (r, row) in res.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                self.out[(self.t0 + c) * self.n_w + self.r0 + r] = v;
            }
        }
    }
}

/// Rows `0..N` of `s` (`[≥ N][nb]` blocks) as an array of row slices.
#[inline(always)]
fn first<T, const N: usize>(s: &[T], nb: usize) -> [&[T]; N] {
    std::array::from_fn(|i| &s[i * nb..(i + 1) * nb])
}

/// Cuts `w` (`n_w` rows of `w_row_bytes`) and `acts` (`n_a` rows of `a_row_bytes`) into
/// rows of blocks and calls `tile` for every tile of at most `r_max × c_max` rows, row tiles
/// outer, activation tiles inner (the weight tile stays in L1 while the activations stream).
///
/// # Panics
/// If a row is not a whole number of blocks, the two kinds of rows hold different numbers of
/// blocks, or `out.len() != n_w · n_a` (caller bugs; the matmul driver checks shapes).
#[allow(clippy::too_many_arguments)]
fn for_each_tile<W: Pod, A: Pod>(
    w: &[u8],
    w_row_bytes: usize,
    acts: &[u8],
    a_row_bytes: usize,
    out: &mut [f32],
    r_max: usize,
    c_max: usize,
    mut tile: impl FnMut(&[W], &[A], usize, &mut OutTile<'_>),
) {
    if w_row_bytes == 0 || a_row_bytes == 0 {
        out.fill(0.0); // empty rows: every dot product is 0
        return;
    }
    let (n_w, n_a) = (w.len() / w_row_bytes, acts.len() / a_row_bytes);
    assert_eq!(
        out.len(),
        n_w * n_a,
        "gemm: output holds {} values",
        out.len()
    );
    let wb = blocks_of::<W>(w);
    let ab = blocks_of::<A>(acts);
    let nb = wb.len() / n_w.max(1);
    assert_eq!(
        ab.len(),
        nb * n_a,
        "gemm: weight and activation rows differ in blocks"
    );
    let nb = nb.max(1);
    let mut sink = OutTile {
        out,
        n_w,
        r0: 0,
        t0: 0,
    };
    for r0 in (0..n_w).step_by(r_max) {
        let wt = &wb[r0 * nb..(r0 + r_max).min(n_w) * nb]; // [≤ r_max][nb]
        for t0 in (0..n_a).step_by(c_max) {
            let at = &ab[t0 * nb..(t0 + c_max).min(n_a) * nb]; // [≤ c_max][nb]
            sink.r0 = r0;
            sink.t0 = t0;
            tile(wt, at, nb, &mut sink);
        }
    }
}

/// Calls the const-generic tile kernel `$k::<R, C>` matching the runtime tile shape.
macro_rules! dispatch_tile {
    ($k:ident, $w:expr, $a:expr, $nb:expr, $sink:expr; $(($r:literal, $c:literal)),* $(,)?) => {
        match ($w.len() / $nb, $a.len() / $nb) {
            $(
                // SAFETY: only reachable from the table adapters below, installed into a
                // table built after checking the CPU's AVX-512 features.
                ($r, $c) => $sink.store::<$r, $c>(unsafe { $k::<$r, $c>(first($w, $nb), first($a, $nb)) }),
            )*
            (r, c) => unreachable!("tile {r}×{c} exceeds the configured tile size"),
        }
    };
}

// ----------------------------------------------------------------------------------------
// 32-value formats.
// ----------------------------------------------------------------------------------------

/// A second per-pair product (Q4_1's `m_w · s_a`): two fp16 values packed in a `u32`
/// (block `2p` low, `2p+1` high) from the weight pair and from the activation pair.
type ExtraTerm<W, A> = (fn(&W, &W) -> u32, fn(&A, &A) -> u32);

/// The shared loop of the 32-value formats. Per output one 16-lane f32 accumulator; pair `p`
/// of blocks (`2p` in lanes 0–7, `2p+1` in lanes 8–15) adds
/// `f32(Σ (q - c)·y) · (d_w · d_a)` with one FMA; an odd last block is paired with itself
/// with the high half's scale exactly `0.0 · 1.0 = 0`; `extra` may add one more FMA per pair
/// (Q4_1's `m_w · s_a`); one `_mm512_reduce_add_ps` at the end.
///
/// This order is *the definition* of these formats' tiled results: it does not depend on the
/// tile shape, so every output has the same bits whatever the tile, the batch or the thread
/// count (the single-row `vec_dot` sums in another order: results agree to rounding).
///
/// `codes(x0, x1)` unpacks two weight blocks to 64 unsigned bytes, `offset` is the format's
/// constant `c` (as bytes, `None` = 0): `Σ (q - c)·y = dpbusd(−dpbusd(c, y), q, y)`, with the
/// offset term computed once per activation register. `wd`/`ad` give the fp16 scales, `aq`
/// the activation codes. `extra` returns (per weight, per activation) vectors whose product
/// is added, or `None`.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; all rows hold the same
/// number of blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn legacy_tile<W, A, const R: usize, const C: usize>(
    w: [&[W]; R],
    a: [&[A]; C],
    codes: impl Fn(&W, &W) -> __m512i,
    offset: Option<__m512i>,
    wd: impl Fn(&W) -> u16,
    ad: impl Fn(&A) -> u16,
    aq: impl Fn(&A) -> *const i8,
    extra: Option<ExtraTerm<W, A>>,
) -> [[f32; C]; R] {
    let nb = w[0].len();
    let zero = _mm512_setzero_si512();
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    // One pair of blocks (`i0`, `i1`, with `hi_scale` = 1.0, or an odd last block `i0 = i1`
    // with `hi_scale` = 0.0) of every row into `acc` (a macro, not a closure: the
    // accumulators must stay in registers).
    macro_rules! pair {
        ($i0:expr, $i1:expr, $odd:expr) => {{
            let (i0, i1) = ($i0, $i1);
            let q: [__m512i; R] = std::array::from_fn(|r| codes(&w[r][i0], &w[r][i1]));
            let ws: [__m512; R] = std::array::from_fn(|r| {
                let v = two_fp16_scales(wd(&w[r][i0]), wd(&w[r][i1]));
                if $odd {
                    _mm512_maskz_mov_ps(0x00FF, v)
                } else {
                    v
                }
            });
            let wx: [__m512; R] = std::array::from_fn(|r| match extra {
                // Lane 0 (and lane 8 unless odd) carries `m_w`, the others 0.
                Some((fw, _)) => {
                    let m = fw(&w[r][i0], &w[r][i1]);
                    let v = two_fp16_scales(m as u16, (m >> 16) as u16);
                    _mm512_maskz_mov_ps(if $odd { 0x0001 } else { 0x0101 }, v)
                }
                None => _mm512_setzero_ps(),
            });
            for c in 0..C {
                // SAFETY: activation blocks hold 32 code bytes.
                let y = unsafe { load_halves(aq(&a[c][i0]), aq(&a[c][i1])) };
                let s = two_fp16_scales(ad(&a[c][i0]), ad(&a[c][i1]));
                let base = match offset {
                    Some(o) => _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, o, y)),
                    None => zero,
                };
                let sx = match extra {
                    Some((_, fa)) => {
                        let v = fa(&a[c][i0], &a[c][i1]);
                        two_fp16_scales(v as u16, (v >> 16) as u16)
                    }
                    None => _mm512_setzero_ps(),
                };
                for r in 0..R {
                    let sumi = _mm512_dpbusd_epi32(base, q[r], y);
                    let d = _mm512_mul_ps(ws[r], s);
                    acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), d, acc[r][c]);
                    if extra.is_some() {
                        acc[r][c] = _mm512_fmadd_ps(wx[r], sx, acc[r][c]);
                    }
                }
            }
        }};
    }
    for p in 0..nb / 2 {
        pair!(2 * p, 2 * p + 1, false);
    }
    if nb % 2 == 1 {
        pair!(nb - 1, nb - 1, true);
    }
    std::array::from_fn(|r| std::array::from_fn(|c| _mm512_reduce_add_ps(acc[r][c])))
}

/// Q4_0 · Q8_0 tile: `Σ (q-8)·y` per block.
///
/// # Safety
/// As [`legacy_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_0_tile<const R: usize, const C: usize>(
    w: [&[BlockQ4_0]; R],
    a: [&[BlockQ8_0]; C],
) -> [[f32; C]; R] {
    // SAFETY: forwarded; `qs` arrays are 16 bytes.
    unsafe {
        legacy_tile(
            w,
            a,
            |x0, x1| nibbles_2x32(x0.qs.as_ptr(), x1.qs.as_ptr()),
            Some(_mm512_set1_epi8(8)),
            |x| x.d,
            |y| y.d,
            |y| y.qs.as_ptr(),
            None,
        )
    }
}

/// Q5_0 · Q8_0 tile: the fifth bits as a 64-bit byte mask adding 16; `Σ (q-16)·y`.
///
/// # Safety
/// As [`legacy_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0_tile<const R: usize, const C: usize>(
    w: [&[BlockQ5_0]; R],
    a: [&[BlockQ8_0]; C],
) -> [[f32; C]; R] {
    let sixteen = _mm512_set1_epi8(16);
    // SAFETY: forwarded; `qs` arrays are 16 bytes.
    unsafe {
        legacy_tile(
            w,
            a,
            |x0, x1| {
                let lo = nibbles_2x32(x0.qs.as_ptr(), x1.qs.as_ptr());
                let bits =
                    u32::from_le_bytes(x0.qh) as u64 | (u32::from_le_bytes(x1.qh) as u64) << 32;
                _mm512_mask_add_epi8(lo, bits, lo, sixteen)
            },
            Some(sixteen),
            |x| x.d,
            |y| y.d,
            |y| y.qs.as_ptr(),
            None,
        )
    }
}

/// Q8_0 · Q8_0 tile: `w + 128` unsigned, offset 128.
///
/// # Safety
/// As [`legacy_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_tile<const R: usize, const C: usize>(
    w: [&[BlockQ8_0]; R],
    a: [&[BlockQ8_0]; C],
) -> [[f32; C]; R] {
    let bias = _mm512_set1_epi8(-128);
    // SAFETY: forwarded; `qs` arrays are 32 bytes.
    unsafe {
        legacy_tile(
            w,
            a,
            |x0, x1| _mm512_xor_si512(load_halves(x0.qs.as_ptr(), x1.qs.as_ptr()), bias),
            Some(bias),
            |x| x.d,
            |y| y.d,
            |y| y.qs.as_ptr(),
            None,
        )
    }
}

/// Q4_1 · Q8_1 tile: `Σ q·y` per block (codes unsigned, no offset) plus `m_w · s_a` per
/// block as a second FMA (lanes 0 and 8).
///
/// # Safety
/// As [`legacy_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_tile<const R: usize, const C: usize>(
    w: [&[BlockQ4_1]; R],
    a: [&[BlockQ8_1]; C],
) -> [[f32; C]; R] {
    fn mins(x0: &BlockQ4_1, x1: &BlockQ4_1) -> u32 {
        x0.m as u32 | (x1.m as u32) << 16
    }
    fn sums(y0: &BlockQ8_1, y1: &BlockQ8_1) -> u32 {
        y0.s as u32 | (y1.s as u32) << 16
    }
    // SAFETY: forwarded; `qs` arrays are 16 bytes.
    unsafe {
        legacy_tile(
            w,
            a,
            |x0, x1| nibbles_2x32(x0.qs.as_ptr(), x1.qs.as_ptr()),
            None,
            |x| x.d,
            |y| y.d,
            |y| y.qs.as_ptr(),
            Some((mins, sums)),
        )
    }
}

// ----------------------------------------------------------------------------------------
// k-quants.
// ----------------------------------------------------------------------------------------

/// Q4_K / Q5_K · Q8_K tile (tiled copy of `avx512::vec_dot_q4_k_q8_k` / `_q5_k_`):
/// `d·Σ_j scale_j·(q·y)_j` in a 16-lane f32 accumulator and `dmin·Σ_j min_j·Σy_j` in a
/// 4-lane one per output. `FIVE` selects Q5_K's high bits (read by `qh`).
///
/// # Safety
/// As [`legacy_tile`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn k4_tile<W, const R: usize, const C: usize, const FIVE: bool>(
    w: [&[W]; R],
    a: [&[BlockQ8_K]; C],
    d: impl Fn(&W) -> u16,
    dmin: impl Fn(&W) -> u16,
    packed: impl Fn(&W) -> &[u8; 12],
    qs: impl Fn(&W) -> *const u8,
    qh: impl Fn(&W) -> *const u8,
) -> [[f32; C]; R] {
    let low4 = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(16);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut acc_mins = [[_mm_setzero_ps(); C]; R];
    for b in 0..w[0].len() {
        let sm: [([u8; 8], [u8; 8]); R] = std::array::from_fn(|r| k4_scales_mins(packed(&w[r][b])));
        let sums: [__m128i; C] = std::array::from_fn(|c| bsums32(&a[c][b]));
        // `[d, dmin, 0, 0]` of each weight row, converted together from one 32-bit word
        // (as `avx512::k4_superblock_setup`): a lone f16 → f32 conversion compiled to a
        // `vpinsrw` merging into a live accumulator register, chaining every super-block's
        // scales to the previous block's FMA.
        let wdm: [__m128; R] = std::array::from_fn(|r| {
            let word = d(&w[r][b]) as u32 | (dmin(&w[r][b]) as u32) << 16;
            _mm_cvtph_ps(_mm_cvtsi32_si128(word as i32))
        });
        for r in 0..R {
            let mins = mins_epi16(&sm[r].1);
            for c in 0..C {
                // `[d_w·d_a, dmin_w·d_a, 0, 0]`: the same products as the scalar ones.
                let dm = _mm_mul_ps(wdm[r], _mm_set1_ps(a[c][b].d));
                acc_mins[r][c] = _mm_fmadd_ps(
                    _mm_permute_ps::<0b01_01_01_01>(dm),
                    _mm_cvtepi32_ps(_mm_madd_epi16(mins, sums[c])),
                    acc_mins[r][c],
                );
            }
        }
        // SAFETY: `qh` is 32 bytes when `FIVE` (Q5_K); not read otherwise.
        let high: [__m512i; R] = std::array::from_fn(|r| {
            if FIVE {
                _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(qh(&w[r][b]).cast()) })
            } else {
                _mm512_setzero_si512()
            }
        });
        let mut sumi = [[_mm512_setzero_si512(); C]; R];
        for h in 0..2 {
            let mut q_a = [_mm512_setzero_si512(); R];
            let mut q_b = [_mm512_setzero_si512(); R];
            let mut sc_a = [_mm512_setzero_si512(); R];
            let mut sc_b = [_mm512_setzero_si512(); R];
            for r in 0..R {
                // SAFETY: `qs` is 128 bytes.
                let bits = unsafe { load64(qs(&w[r][b]).add(64 * h)) };
                let lo = _mm512_and_si512(bits, low4);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(bits), low4);
                q_a[r] = _mm512_shuffle_i64x2::<0b01_00_01_00>(lo, hi);
                q_b[r] = _mm512_shuffle_i64x2::<0b11_10_11_10>(lo, hi);
                if FIVE {
                    let (ka, kb) = (4 * h as u32, 4 * h as u32 + 2);
                    let m_a =
                        _mm512_test_epi8_mask(high[r], two_halves_epi8(1 << ka, 1 << (ka + 1)));
                    let m_b =
                        _mm512_test_epi8_mask(high[r], two_halves_epi8(1 << kb, 1 << (kb + 1)));
                    q_a[r] = _mm512_mask_add_epi8(q_a[r], m_a, q_a[r], sixteen);
                    q_b[r] = _mm512_mask_add_epi8(q_b[r], m_b, q_b[r], sixteen);
                }
                let s = |j: usize| sm[r].0[4 * h + j] as i16;
                sc_a[r] = two_halves_epi16(s(0), s(1));
                sc_b[r] = two_halves_epi16(s(2), s(3));
            }
            for c in 0..C {
                // SAFETY: offsets stay inside `y.qs` (256 bytes).
                let (y_a, y_b) = unsafe {
                    (
                        load64(a[c][b].qs.as_ptr().add(128 * h)),
                        load64(a[c][b].qs.as_ptr().add(128 * h + 64)),
                    )
                };
                for r in 0..R {
                    sumi[r][c] = scaled_dot(sumi[r][c], q_a[r], y_a, sc_a[r]);
                    sumi[r][c] = scaled_dot(sumi[r][c], q_b[r], y_b, sc_b[r]);
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                let dd = _mm_mul_ps(wdm[r], _mm_set1_ps(a[c][b].d));
                acc[r][c] = _mm512_fmadd_ps(
                    _mm512_broadcastss_ps(dd),
                    _mm512_cvtepi32_ps(sumi[r][c]),
                    acc[r][c],
                );
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|c| _mm512_reduce_add_ps(acc[r][c]) - hsum4(acc_mins[r][c]))
    })
}

/// Q4_K · Q8_K tile.
///
/// # Safety
/// As [`legacy_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k_tile<const R: usize, const C: usize>(
    w: [&[BlockQ4_K]; R],
    a: [&[BlockQ8_K]; C],
) -> [[f32; C]; R] {
    // SAFETY: forwarded.
    unsafe {
        k4_tile::<_, R, C, false>(
            w,
            a,
            |x| x.d,
            |x| x.dmin,
            |x| &x.scales,
            |x| x.qs.as_ptr(),
            |x| x.qs.as_ptr(),
        )
    }
}

/// Q5_K · Q8_K tile.
///
/// # Safety
/// As [`legacy_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_k_tile<const R: usize, const C: usize>(
    w: [&[BlockQ5_K]; R],
    a: [&[BlockQ8_K]; C],
) -> [[f32; C]; R] {
    // SAFETY: forwarded.
    unsafe {
        k4_tile::<_, R, C, true>(
            w,
            a,
            |x| x.d,
            |x| x.dmin,
            |x| &x.scales,
            |x| x.qs.as_ptr(),
            |x| x.qh.as_ptr(),
        )
    }
}

/// Lane `i` of 32 i16 lanes → `i / 8` (see `avx512::SUBBLOCK_OF_LANE`).
const SUBBLOCK_OF_LANE: [i16; 32] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
];

/// Q6_K · Q8_K tile (tiled copy of `avx512::vec_dot_q6_k_q8_k`).
///
/// # Safety
/// As [`legacy_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6_k_tile<const R: usize, const C: usize>(
    w: [&[BlockQ6_K]; R],
    a: [&[BlockQ8_K]; C],
) -> [[f32; C]; R] {
    let low4 = _mm512_set1_epi8(0x0F);
    let bits45 = _mm512_set1_epi8(0x30);
    let shl_first = two_halves_epi16(4, 2);
    let shr_second = two_halves_epi16(0, 2);
    // SAFETY: the array has 32 i16 = 64 bytes.
    let lane_subblock = unsafe { load64(SUBBLOCK_OF_LANE.as_ptr()) };
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for b in 0..w[0].len() {
        // SAFETY: `scales` is 16 bytes, `bsums` 32 bytes.
        let scales: [__m256i; R] = std::array::from_fn(|r| unsafe {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(w[r][b].scales.as_ptr().cast()))
        });
        let bsums: [__m256i; C] =
            std::array::from_fn(|c| unsafe { _mm256_loadu_si256(a[c][b].bsums.as_ptr().cast()) });
        let mut sumi = [[_mm512_setzero_si512(); C]; R];
        for n in 0..2 {
            let mut q0 = [_mm512_setzero_si512(); R];
            let mut q1 = [_mm512_setzero_si512(); R];
            let mut sc0 = [_mm512_setzero_si512(); R];
            let mut sc1 = [_mm512_setzero_si512(); R];
            for r in 0..R {
                let x = &w[r][b];
                // SAFETY: offsets stay inside `ql` (128 B) and `qh` (64 B).
                let (ql, qh) = unsafe {
                    (
                        load64(x.ql.as_ptr().add(64 * n)),
                        _mm512_broadcast_i64x4(_mm256_loadu_si256(
                            x.qh.as_ptr().add(32 * n).cast(),
                        )),
                    )
                };
                q0[r] = _mm512_or_si512(
                    _mm512_and_si512(ql, low4),
                    _mm512_and_si512(_mm512_sllv_epi16(qh, shl_first), bits45),
                );
                q1[r] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low4),
                    _mm512_and_si512(_mm512_srlv_epi16(qh, shr_second), bits45),
                );
                let sc = _mm512_castsi256_si512(scales[r]);
                sc0[r] = _mm512_permutexvar_epi16(
                    _mm512_add_epi16(lane_subblock, _mm512_set1_epi16(8 * n as i16)),
                    sc,
                );
                sc1[r] = _mm512_permutexvar_epi16(
                    _mm512_add_epi16(lane_subblock, _mm512_set1_epi16(8 * n as i16 + 4)),
                    sc,
                );
            }
            for c in 0..C {
                // SAFETY: offsets stay inside `y.qs` (256 B).
                let (y0, y1) = unsafe {
                    (
                        load64(a[c][b].qs.as_ptr().add(128 * n)),
                        load64(a[c][b].qs.as_ptr().add(128 * n + 64)),
                    )
                };
                for r in 0..R {
                    sumi[r][c] = scaled_dot(sumi[r][c], q0[r], y0, sc0[r]);
                    sumi[r][c] = scaled_dot(sumi[r][c], q1[r], y1, sc1[r]);
                }
            }
        }
        for r in 0..R {
            // The scale converted as a full 16-lane broadcast (`vpbroadcastw` +
            // `vcvtph2ps`), as `avx512::vec_dot_q6_k_q8_k`: a lone f16 → f32 conversion
            // compiled to a `vpinsrw` merging into a live accumulator register, chaining
            // every super-block to the previous block's FMA.
            let wd = _mm512_cvtph_ps(_mm256_set1_epi16(w[r][b].d as i16));
            for c in 0..C {
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales[r], bsums[c]));
                let s = _mm512_sub_epi32(sumi[r][c], _mm512_zextsi256_si512(offset));
                let dd = _mm512_mul_ps(wd, _mm512_set1_ps(a[c][b].d));
                acc[r][c] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s), acc[r][c]);
            }
        }
    }
    std::array::from_fn(|r| std::array::from_fn(|c| _mm512_reduce_add_ps(acc[r][c])))
}

// ----------------------------------------------------------------------------------------
// Table adapters: `out[t · n_w + r] = w_r · acts_t` (see `dispatch::GemmFn`).
// ----------------------------------------------------------------------------------------

/// Defines a table adapter for a 32-value format (tiles up to `LEGACY_R × LEGACY_C`).
macro_rules! legacy_gemm {
    ($name:ident, $tile:ident, $w:ty, $a:ty) => {
        /// Tiled product for the dispatch table (see the module docs).
        fn $name(w: &[u8], w_row_bytes: usize, acts: &[u8], a_row_bytes: usize, out: &mut [f32]) {
            // One activation row (token generation): one weight row per tile, so the weights
            // are read as one sequential stream (see `GEMV_R`).
            let r_max = if acts.len() == a_row_bytes { GEMV_R } else { LEGACY_R };
            for_each_tile::<$w, $a>(
                w,
                w_row_bytes,
                acts,
                a_row_bytes,
                out,
                r_max,
                LEGACY_C,
                |wt, at, nb, sink| {
                    dispatch_tile!($tile, wt, at, nb, sink;
                        (4, 4), (4, 3), (4, 2), (4, 1), (3, 4), (3, 3), (3, 2), (3, 1),
                        (2, 4), (2, 3), (2, 2), (2, 1), (1, 4), (1, 3), (1, 2), (1, 1))
                },
            );
        }
    };
}

/// Defines a table adapter for a k-quant (tiles up to `KQ_R × KQ_C`).
macro_rules! kquant_gemm {
    ($name:ident, $tile:ident, $w:ty) => {
        /// Tiled product for the dispatch table (see the module docs).
        fn $name(w: &[u8], w_row_bytes: usize, acts: &[u8], a_row_bytes: usize, out: &mut [f32]) {
            for_each_tile::<$w, BlockQ8_K>(
                w,
                w_row_bytes,
                acts,
                a_row_bytes,
                out,
                KQ_R,
                KQ_C,
                |wt, at, nb, sink| {
                    dispatch_tile!($tile, wt, at, nb, sink;
                        (1, 6), (1, 5), (1, 4), (1, 3), (1, 2), (1, 1))
                },
            );
        }
    };
}

legacy_gemm!(gemm_q4_0, q4_0_tile, BlockQ4_0, BlockQ8_0);
legacy_gemm!(gemm_q4_1, q4_1_tile, BlockQ4_1, BlockQ8_1);
legacy_gemm!(gemm_q5_0, q5_0_tile, BlockQ5_0, BlockQ8_0);
legacy_gemm!(gemm_q8_0, q8_0_tile, BlockQ8_0, BlockQ8_0);
kquant_gemm!(gemm_q4_k, q4_k_tile, BlockQ4_K);
kquant_gemm!(gemm_q5_k, q5_k_tile, BlockQ5_K);
kquant_gemm!(gemm_q6_k, q6_k_tile, BlockQ6_K);

/// Public typed entry for tests and benchmarks: `out[t · n_w + r] = w_r · acts_t` for weight
/// type `ty` with this module's tiles, or `None` if `ty` has no tiled kernel here.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
pub unsafe fn gemm_bytes(
    ty: GgmlType,
    w: &[u8],
    w_row_bytes: usize,
    acts: &[u8],
    a_row_bytes: usize,
    out: &mut [f32],
) -> Option<()> {
    let f: fn(&[u8], usize, &[u8], usize, &mut [f32]) = match ty {
        GgmlType::Q4_0 => gemm_q4_0,
        GgmlType::Q4_1 => gemm_q4_1,
        GgmlType::Q5_0 => gemm_q5_0,
        GgmlType::Q8_0 => gemm_q8_0,
        GgmlType::Q4_K => gemm_q4_k,
        GgmlType::Q5_K => gemm_q5_k,
        GgmlType::Q6_K => gemm_q6_k,
        _ => return None,
    };
    f(w, w_row_bytes, acts, a_row_bytes, out);
    Some(())
}

//! AVX-512 (F/BW/VL + VNNI) kernels: `vec_dot` and `gemv` for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! IQ4_NL (× Q8_0/Q8_1), Q4_K and Q5_K (× Q8_K; a GFNI variant when the CPU has it),
//! `vec_dot` for IQ4_XS, Q6_K (× Q8_K), F16 and BF16, and the activation quantizers f32 →
//! Q8_0, Q8_1, Q8_K. Installed on top of the AVX2 table.
//!
//! Layout tricks (see docs/KERNELS.md, "x86 kernels"):
//! - `vpdpbusd` (u8 × i8, four products summed into each i32 lane, no intermediate
//!   saturation) does the integer dot product in one instruction. Its first operand is
//!   unsigned, so weight codes stay unsigned and the format's offset `c` is removed with a
//!   second `vpdpbusd` of the constant `c` against the activations:
//!   `Σ (q - c)·y = dpbusd(q, y) - dpbusd(c, y)`. For Q8_0 weights `q = w + 128` (`w ^ 0x80`),
//!   which makes Q8_0 · Q8_0 exact for every code, −128 included.
//! - Legacy formats process two 32-value blocks per 512-bit register (lanes 0–7 block 0,
//!   8–15 block 1), with a scale vector `[d0 ×8 | d1 ×8]`. They run 16 blocks per group:
//!   the f16 head words of 16 blocks are gathered from whole 64-byte loads with `vpermt2w`
//!   and converted at once (`legacy_row`).
//! - Token generation's many-rows product (`gemv`, [`crate::dispatch::GemvFn`]) for the
//!   legacy formats: the activation's share of `legacy_row` (its head gathers and
//!   conversions, its code loads and the offset products `dpbusd(c, y)`) is computed by the
//!   first row and replayed by the others from a stack buffer (`legacy_gemv`), and the rows'
//!   horizontal sums are taken 16 at a time, with the same float operations, so the results
//!   are `vec_dot`'s bits.
//! - Q5_0's 2×32 high bits are a 64-bit mask register used directly by a masked byte add.
//! - k-quants: the sub-block scales are applied exactly in integers with `vpdpwssd`
//!   (i16 × scale i16, pairs summed into i32, accumulated) and a super-block is converted to
//!   float once. Q4_K/Q5_K: `vpdpbusd` of the unsigned codes (each 32 code bytes broadcast to
//!   both register halves and shifted by `[0 | 4]`, so one register holds two whole
//!   sub-blocks in value order; with GFNI one `vgf2p8affineqb` does the shift and mask), two
//!   results packed to i16 with `vpackssdw`, then one `vpdpwssd` (`k4_rows`, which also
//!   loops over a `gemv` task's rows). Q6_K: `vpmaddubsw` (u8 × i8 pairs → i16) then `vpdpwssd`.
//!   Q5_K/Q6_K high bits come from the `qh` bytes broadcast to both register halves and
//!   tested / shifted per half. The k-quant loops prefetch the weights `K_PREFETCH` bytes
//!   ahead (a large gain on DRAM-resident matrices).
//! - Float rows use masked loads for the tail (no scalar remainder loop).

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use grist_gguf::GgmlType;
use half::{bf16, f16};

use bytemuck::Pod;

use super::avx2::fp16;
use super::{byte_gemv, byte_quantize, byte_vec_dot, check_quantize_len, check_same_len};
use crate::blocks::{
    f32_to_f16, BlockIQ4_NL, BlockIQ4_XS, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1,
    BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K, IQ4NL_VALUES, QK, QK_K,
};
use crate::dispatch::{GemvFn, Kernels, VecDotFn};

/// Overrides the table entries these kernels accelerate.
pub(crate) fn install(table: &mut Kernels) {
    table.set_vec_dot(GgmlType::Q4_0, q4_0_bytes);
    table.set_vec_dot(GgmlType::Q4_1, q4_1_bytes);
    table.set_vec_dot(GgmlType::Q5_0, q5_0_bytes);
    table.set_vec_dot(GgmlType::Q5_1, q5_1_bytes);
    table.set_vec_dot(GgmlType::Q8_0, q8_0_bytes);
    table.set_vec_dot(GgmlType::IQ4_NL, iq4_nl_bytes);
    table.set_gemv(GgmlType::Q4_0, q4_0_gemv_bytes);
    table.set_gemv(GgmlType::Q4_1, q4_1_gemv_bytes);
    table.set_gemv(GgmlType::Q5_0, q5_0_gemv_bytes);
    table.set_gemv(GgmlType::Q5_1, q5_1_gemv_bytes);
    table.set_gemv(GgmlType::Q8_0, q8_0_gemv_bytes);
    table.set_gemv(GgmlType::IQ4_NL, iq4_nl_gemv_bytes);
    table.set_vec_dot(GgmlType::IQ4_XS, iq4_xs_bytes);
    // Q4_K/Q5_K: the GFNI nibble split where the CPU has it (`k4_rows`).
    let k4 = if table.features().gfni {
        [
            (
                GgmlType::Q4_K,
                q4_k_gfni_bytes as VecDotFn,
                q4_k_gfni_gemv_bytes as GemvFn,
            ),
            (GgmlType::Q5_K, q5_k_gfni_bytes, q5_k_gfni_gemv_bytes),
        ]
    } else {
        [
            (
                GgmlType::Q4_K,
                q4_k_bytes as VecDotFn,
                q4_k_gemv_bytes as GemvFn,
            ),
            (GgmlType::Q5_K, q5_k_bytes, q5_k_gemv_bytes),
        ]
    };
    for (ty, vec_dot, gemv) in k4 {
        table.set_vec_dot(ty, vec_dot);
        table.set_gemv(ty, gemv);
    }
    table.set_vec_dot(GgmlType::Q6_K, q6_k_bytes);
    table.set_vec_dot(GgmlType::F16, f16_bytes);
    table.set_vec_dot(GgmlType::BF16, bf16_bytes);
    table.set_quantize_act(GgmlType::Q8_0, quantize_q8_0_bytes);
    table.set_quantize_act(GgmlType::Q8_1, quantize_q8_1_bytes);
    table.set_quantize_act(GgmlType::Q8_K, quantize_q8_k_bytes);
}

byte_vec_dot!(q4_0_bytes, vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
byte_vec_dot!(q4_1_bytes, vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
byte_vec_dot!(q5_0_bytes, vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
byte_vec_dot!(q5_1_bytes, vec_dot_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
byte_vec_dot!(q8_0_bytes, vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
byte_vec_dot!(iq4_nl_bytes, vec_dot_iq4_nl_q8_0, BlockIQ4_NL, BlockQ8_0);
byte_gemv!(q4_0_gemv_bytes, gemv_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
byte_gemv!(q4_1_gemv_bytes, gemv_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
byte_gemv!(q5_0_gemv_bytes, gemv_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
byte_gemv!(q5_1_gemv_bytes, gemv_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
byte_gemv!(q8_0_gemv_bytes, gemv_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
byte_gemv!(iq4_nl_gemv_bytes, gemv_iq4_nl_q8_0, BlockIQ4_NL, BlockQ8_0);
byte_vec_dot!(iq4_xs_bytes, vec_dot_iq4_xs_q8_k, BlockIQ4_XS, BlockQ8_K);
byte_vec_dot!(q4_k_bytes, vec_dot_q4_k_q8_k, BlockQ4_K, BlockQ8_K);
byte_vec_dot!(q5_k_bytes, vec_dot_q5_k_q8_k, BlockQ5_K, BlockQ8_K);
byte_gemv!(q4_k_gemv_bytes, gemv_q4_k_q8_k, BlockQ4_K, BlockQ8_K);
byte_gemv!(q5_k_gemv_bytes, gemv_q5_k_q8_k, BlockQ5_K, BlockQ8_K);
byte_vec_dot!(
    q4_k_gfni_bytes,
    vec_dot_q4_k_q8_k_gfni,
    BlockQ4_K,
    BlockQ8_K
);
byte_vec_dot!(
    q5_k_gfni_bytes,
    vec_dot_q5_k_q8_k_gfni,
    BlockQ5_K,
    BlockQ8_K
);
byte_gemv!(
    q4_k_gfni_gemv_bytes,
    gemv_q4_k_q8_k_gfni,
    BlockQ4_K,
    BlockQ8_K
);
byte_gemv!(
    q5_k_gfni_gemv_bytes,
    gemv_q5_k_q8_k_gfni,
    BlockQ5_K,
    BlockQ8_K
);
byte_vec_dot!(q6_k_bytes, vec_dot_q6_k_q8_k, BlockQ6_K, BlockQ8_K);
byte_vec_dot!(f16_bytes, vec_dot_f16, f16, f16);
byte_vec_dot!(bf16_bytes, vec_dot_bf16, bf16, bf16);
byte_quantize!(quantize_q8_0_bytes, quantize_q8_0, BlockQ8_0);
byte_quantize!(quantize_q8_1_bytes, quantize_q8_1, BlockQ8_1);
byte_quantize!(quantize_q8_k_bytes, quantize_q8_k, BlockQ8_K);

// ----------------------------------------------------------------------------------------
// Helpers.
// ----------------------------------------------------------------------------------------

/// Loads 64 bytes.
///
/// # Safety
/// `p` must be readable for 64 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn load64<T>(p: *const T) -> __m512i {
    // SAFETY: guaranteed by the caller; no alignment needed.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// Loads 32 bytes from `lo` into the low half and 32 bytes from `hi` into the high half.
///
/// # Safety
/// Both pointers must be readable for 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn load_halves<T>(lo: *const T, hi: *const T) -> __m512i {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let l = _mm256_loadu_si256(lo.cast());
        let h = _mm256_loadu_si256(hi.cast());
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(l), h)
    }
}

/// `[lo ×16 | hi ×16]` as i16 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn two_halves_epi16(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi))
}

/// `[lo ×32 | hi ×32]` as bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn two_halves_epi8(lo: u8, hi: u8) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi8(lo as i8), _mm256_set1_epi8(hi as i8))
}

/// 2×16 bytes of packed nibbles (two Q4_0-style blocks) → 64 bytes `0..15`, block 0's 32
/// values in the low half and block 1's in the high half.
///
/// Each 16 bytes are broadcast to two 128-bit lanes (`[qs0, qs0, qs1, qs1]`, the broadcasts
/// are loads), then one variable shift moves the high nibbles down in lanes 1 and 3.
///
/// # Safety
/// Both pointers must be readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles_2x32(p0: *const u8, p1: *const u8) -> __m512i {
    // SAFETY: guaranteed by the caller.
    let (b0, b1) = unsafe {
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(p0.cast())),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(p1.cast())),
        )
    };
    let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(b0), b1);
    // 64-bit lanes 2,3 and 6,7 (128-bit lanes 1 and 3) shift by 4.
    let z = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    _mm512_and_si512(z, _mm512_set1_epi8(0x0F))
}

/// The 64-bit mask of two Q5-style blocks' fifth bits (`qh` of block 0 in bits 0..32).
#[inline(always)]
fn fifth_bits(qh0: [u8; 4], qh1: [u8; 4]) -> u64 {
    u32::from_le_bytes(qh0) as u64 | (u32::from_le_bytes(qh1) as u64) << 32
}

/// A legacy block type (32 values, f16 head words first) as seen by [`legacy_dot`]: its
/// size in 16-bit words and where the head words of 16 consecutive blocks lie.
///
/// # Safety
/// `HEADS` must be 1 (`d`) or 2 (`d` then `m` / `s`), and the type a `repr(C)` block whose
/// first `HEADS` fields are those f16 words.
unsafe trait LegacyBlock: Pod {
    /// Head f16 words per block: 1 (`d`) or 2 (`d` and `m` / `s`).
    const HEADS: usize;
    /// The `vpermt2w` controls gathering the head words of 16 blocks (see [`HeadGather`]).
    const GATHER16: HeadGather = head_gather(std::mem::size_of::<Self>() / 2, Self::HEADS, 16);
    /// The same for 8 blocks (a row's last few blocks).
    const GATHER8: HeadGather = head_gather(std::mem::size_of::<Self>() / 2, Self::HEADS, 8);
}

// SAFETY (all impls): each block starts with `d` (and `m` / `s` when `HEADS = 2`), see
// `crate::blocks`.
unsafe impl LegacyBlock for BlockQ4_0 {
    const HEADS: usize = 1;
}
unsafe impl LegacyBlock for BlockQ4_1 {
    const HEADS: usize = 2;
}
unsafe impl LegacyBlock for BlockQ5_0 {
    const HEADS: usize = 1;
}
unsafe impl LegacyBlock for BlockQ5_1 {
    const HEADS: usize = 2;
}
unsafe impl LegacyBlock for BlockQ8_0 {
    const HEADS: usize = 1;
}
unsafe impl LegacyBlock for BlockQ8_1 {
    const HEADS: usize = 2;
}
unsafe impl LegacyBlock for BlockIQ4_NL {
    const HEADS: usize = 1;
}

/// Blocks per group of [`legacy_dot`].
const GROUP: usize = 16;

/// How to gather the head words of 16 (or 8) consecutive blocks of `words` 16-bit words each
/// from the 64-byte registers `R0, R1, …` holding them: a word lane `l` takes block `l`'s `d`,
/// lane `16 + l` its second head word. Register pair `p` (`R2p`, `R2p+1`, words
/// `64p..64p+64`) holds the heads of some blocks; `idx[p]` is the `vpermt2w` control that
/// moves them to their lanes and `lanes[p]` the lanes it fills (a head never straddles two
/// pairs: a block's two words start at an even word).
#[derive(Clone, Copy)]
struct HeadGather {
    /// 64-byte registers covering the blocks.
    regs: usize,
    /// Register pairs (`regs.div_ceil(2)`).
    pairs: usize,
    /// `vpermt2w` controls per pair (word index into `R2p ‖ R2p+1`).
    idx: [[i16; 32]; 5],
    /// Word lanes filled by each pair.
    lanes: [u32; 5],
}

/// Builds a [`HeadGather`] (at compile time) for `blocks` (16 or 8) blocks of `words` 16-bit
/// words with `heads` head words each.
const fn head_gather(words: usize, heads: usize, blocks: usize) -> HeadGather {
    let regs = (blocks * words).div_ceil(32);
    let pairs = regs.div_ceil(2);
    assert!(pairs <= 5 && (heads == 1 || heads == 2));
    let mut g = HeadGather {
        regs,
        pairs,
        idx: [[0; 32]; 5],
        lanes: [0; 5],
    };
    let mut block = 0;
    while block < blocks {
        let mut h = 0;
        while h < heads {
            let word = block * words + h;
            let (pair, lane) = (word / 64, block + 16 * h);
            assert!(
                word / 64 == block * words / 64,
                "a head straddles two register pairs"
            );
            g.idx[pair][lane] = (word % 64) as i16;
            g.lanes[pair] |= 1 << lane;
            h += 1;
        }
        block += 1;
    }
    g
}

/// The head words of the first `n` (`1..=16`) blocks at `p` (blocks of type `B`) as 32 word
/// lanes, gathered as `g` says ([`LegacyBlock::GATHER16`], or `GATHER8` when `n ≤ 8`): `d`
/// of block `l` in lane `l`, its `m` / `s` in lane `16 + l` (with `HEADS = 2`); lanes of
/// blocks `≥ n` are zero or copies of other heads. The blocks are read as whole 64-byte
/// registers (masked at the end of the `n` blocks, so nothing past them is touched) and the
/// words moved into place with one `vpermt2w` per register pair, replacing ~10 scalar
/// instructions per block.
///
/// A macro so that it is always inlined (as a function LLVM outlined it, with the
/// accumulators of the caller spilled around each call). Unsafe to expand: `p` must be
/// readable for `n` blocks; `n ≤ 16`, and `n ≤ 8` with `GATHER8`.
macro_rules! gather_heads {
    ($B:ty, $p:expr, $n:expr, $g:expr) => {{
        let (p, n, g): (*const $B, usize, &HeadGather) = ($p, $n, $g);
        let bytes = n * std::mem::size_of::<$B>();
        let base = p.cast::<u8>();
        let load = |k: usize| {
            if k >= g.regs {
                return _mm512_setzero_si512();
            }
            let valid = bytes.saturating_sub(64 * k).min(64);
            let ptr = base.wrapping_add(64 * k);
            if valid == 64 {
                // An opaque load: given a plain one, LLVM rebuilt the per-pair code's loads
                // of the same bytes from these registers with many shuffles (slower).
                let r: __m512i;
                // SAFETY: the 64 bytes are inside the `n` blocks (the caller's contract);
                // the asm only reads them.
                unsafe {
                    std::arch::asm!(
                        "vmovdqu64 {r}, [{p}]",
                        r = out(zmm_reg) r,
                        p = in(reg) ptr,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
                r
            } else {
                // SAFETY: only the `valid` bytes, all inside the `n` blocks, are read
                // (masked-off bytes are not accessed); `wrapping_add` keeps the pointer
                // arithmetic defined.
                unsafe { _mm512_maskz_loadu_epi8((1u64 << valid) - 1, ptr.cast()) }
            }
        };
        let gather = |pair: usize| {
            // SAFETY: each `idx` row is 32 i16 = 64 bytes.
            let idx = unsafe { load64(g.idx[pair].as_ptr()) };
            _mm512_permutex2var_epi16(load(2 * pair), idx, load(2 * pair + 1))
        };
        let mut heads = gather(0);
        for pair in 1..g.pairs {
            heads = _mm512_mask_blend_epi16(g.lanes[pair], heads, gather(pair));
        }
        heads
    }};
}

/// The activation side of one group of [`legacy_row`]: the `d` (and, with `MINS`, `s`) head
/// words of its blocks converted to f32, block `l` in lane `l`.
#[derive(Clone, Copy)]
struct ActHeads {
    d: __m512,
    s: __m512,
}

/// The activation side of one pair of blocks in [`legacy_row`]: their 2×32 codes (block 0 in
/// the low half) and, for the formats with an offset `c`, `dpbusd(c, y)`.
#[derive(Clone, Copy)]
struct ActPair {
    y: __m512i,
    offset_dot: __m512i,
}

/// An activation block of the legacy formats (Q8_0, Q8_1): 32 signed codes.
trait LegacyAct: LegacyBlock {
    /// The block's 32 codes.
    fn codes(&self) -> &[i8; 32];
}

impl LegacyAct for BlockQ8_0 {
    fn codes(&self) -> &[i8; 32] {
        &self.qs
    }
}

impl LegacyAct for BlockQ8_1 {
    fn codes(&self) -> &[i8; 32] {
        &self.qs
    }
}

/// [`ActHeads`] of the first `n` blocks at `a`, gathered as `g` says (see [`gather_heads!`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn act_heads<A: LegacyAct>(a: &[A], n: usize, g: &HeadGather) -> ActHeads {
    assert!(
        n <= a.len() && n <= GROUP,
        "act_heads: group outside the row"
    );
    // `gather_heads!` contract: `a` holds at least `n ≤ 16` blocks (checked above); the
    // callers pass `GATHER8` only with `n ≤ 8`.
    let h = gather_heads!(A, a.as_ptr(), n, g);
    ActHeads {
        d: _mm512_cvtph_ps(_mm512_castsi512_si256(h)),
        s: _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(h)),
    }
}

/// [`ActPair`] of blocks `a0`, `a1`; `offset_dot` is `dpbusd(offset, y)` when `OFFSET`
/// (zero otherwise).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn act_pair<A: LegacyAct, const OFFSET: bool>(a0: &A, a1: &A, offset: __m512i) -> ActPair {
    // SAFETY: both code arrays are 32 bytes.
    let y = unsafe { load_halves(a0.codes().as_ptr(), a1.codes().as_ptr()) };
    let offset_dot = if OFFSET {
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, y)
    } else {
        _mm512_setzero_si512()
    };
    ActPair { y, offset_dot }
}

/// Drives a legacy-format dot product 16 blocks at a time. `pair(x0, x1, y)` returns
/// `dpbusd(q, y)` for the unsigned codes `q` of weight blocks `x0`, `x1` (`[block 0 ×8
/// lanes | block 1 ×8 lanes]`); with `OFFSET` the format's offset is removed by subtracting
/// the activation's `dpbusd(c, y)`, which makes each block's integer sum exact.
///
/// The activation side comes from `heads` (per group) and `pairs` (per pair, in order), so
/// that [`legacy_gemv`] can compute it once for many weight rows: [`legacy_dot`] passes
/// [`act_heads`] and [`act_pair`] directly, and the float operations are the same either way
/// (the results are bit-identical).
///
/// Per group, the head words of the 16 weight blocks are gathered with a few permutes
/// ([`gather_heads!`]) and converted by one `vcvtph2ps`, so the float work per pair is one
/// convert, one `vpermps` (spreading its two scale products) and one FMA into one of four
/// accumulators. With `MINS` the `m_w·s_a` terms are one FMA per group. A last partial
/// group reads only its blocks; an odd last block is paired with itself, its twin's scale
/// lanes being zero.
///
/// Returns the 16 lane sums; the dot product is their `_mm512_reduce_add_ps`, which
/// [`legacy_dot`] takes per row and [`legacy_gemv`] for 16 rows at once ([`reduce_add_16`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn legacy_row<W: LegacyBlock, A: LegacyAct, const MINS: bool, const OFFSET: bool>(
    w: &[W],
    a: &[A],
    mut heads: impl FnMut(&[A], usize, &HeadGather) -> ActHeads,
    mut pairs: impl FnMut(&A, &A) -> ActPair,
    pair: impl Fn(&W, &W, __m512i) -> __m512i,
) -> __m512 {
    assert_eq!(w.len(), a.len(), "legacy_dot: rows of different lengths");
    debug_assert!(W::HEADS == 1 + MINS as usize && A::HEADS == 1 + MINS as usize);
    // Lanes 0..8 take scale `2j`, lanes 8..16 scale `2j + 1` (plus `2j`).
    let spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut acc_m = _mm512_setzero_ps();
    // One group of `$n` (`1..=16`) blocks whose first `$skip` blocks are left out (their
    // scale lanes zeroed, their pairs skipped). A macro, not a closure: LLVM left a closure
    // this size out of line, with the accumulators in memory.
    macro_rules! group {
        ($w:expr, $a:expr, $n:expr, $skip:expr) => {{
            let (w, a, n, skip): (&[W], &[A], usize, usize) = ($w, $a, $n, $skip);
            prefetch_span_ahead(&w[skip..n]);
            // Lanes of blocks `skip..n` (the others may hold copies of other heads).
            let keep = ((1_u32 << n) - 1) as u16 & (0xFFFF_u32 << skip) as u16;
            // `gather_heads!` contract: both slices hold at least `n ≤ 16` blocks (the callers
            // pass whole slices of that length), and `n ≤ 8` with `GATHER8`.
            let (gw, ga) = if n <= GROUP / 2 {
                (&W::GATHER8, &A::GATHER8)
            } else {
                (&W::GATHER16, &A::GATHER16)
            };
            let hw = gather_heads!(W, w.as_ptr(), n, gw);
            let ha = heads(a, n, ga);
            let dd = _mm512_maskz_mul_ps(keep, _mm512_cvtph_ps(_mm512_castsi512_si256(hw)), ha.d); // [16] d_w·d_a per block
            if MINS {
                acc_m = _mm512_mask3_fmadd_ps(
                    _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(hw)),
                    ha.s,
                    acc_m,
                    keep,
                );
            }
            for j in 0..n.div_ceil(2) {
                if 2 * j + 2 <= skip {
                    continue; // both blocks left out
                }
                let (i0, i1) = (2 * j, (2 * j + 1).min(n - 1));
                let y = pairs(&a[i0], &a[i1]);
                let raw = pair(&w[i0], &w[i1], y.y);
                let sums = if OFFSET {
                    _mm512_sub_epi32(raw, y.offset_dot)
                } else {
                    raw
                };
                let scale = _mm512_permutexvar_ps(
                    _mm512_add_epi32(spread, _mm512_set1_epi32(2 * j as i32)),
                    dd,
                );
                // A constant index in the unrolled 16-block groups; a short row (runtime
                // `n`) uses accumulator 0 only, so the array never needs a runtime index
                // (which would keep it in memory).
                let k = if n == GROUP || n == GROUP / 2 {
                    j % 4
                } else {
                    0
                };
                acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[k]);
            }
        }};
    }
    let len = w.len();
    let full = len / GROUP * GROUP;
    for (wq, aq) in w[..full]
        .chunks_exact(GROUP)
        .zip(a[..full].chunks_exact(GROUP))
    {
        group!(wq, aq, GROUP, 0);
    }
    if len < GROUP {
        group!(w, a, len, 0);
    } else if full < len {
        // The last 8 or 16 blocks, of which the first `start..full` were done above: whole
        // loads and a constant-shape group beat a group of runtime length.
        if len - full <= GROUP / 2 {
            let start = len - GROUP / 2;
            group!(&w[start..], &a[start..], GROUP / 2, full - start);
        } else {
            let start = len - GROUP;
            group!(&w[start..], &a[start..], GROUP, full - start);
        }
    }
    let dots = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    if MINS {
        _mm512_add_ps(dots, acc_m)
    } else {
        dots
    }
}

/// One weight row · one activation row ([`legacy_row`] with the activation side computed
/// in place). `offset` is the format's code offset `c` in every byte (with `OFFSET`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn legacy_dot<W: LegacyBlock, A: LegacyAct, const MINS: bool, const OFFSET: bool>(
    w: &[W],
    a: &[A],
    offset: __m512i,
    pair: impl Fn(&W, &W, __m512i) -> __m512i,
) -> f32 {
    _mm512_reduce_add_ps(legacy_row::<W, A, MINS, OFFSET>(
        w,
        a,
        |a, n, g| act_heads(a, n, g),
        |a0, a1| act_pair::<A, OFFSET>(a0, a1, offset),
        pair,
    ))
}

/// Sixteen horizontal sums at once: lane `r` of the result is `_mm512_reduce_add_ps(v[r])`,
/// bit for bit. That intrinsic adds lane `i + 8` to lane `i`, then `i + 4`, `i + 2` and
/// `i + 1` (low half first in every addition); here each of those four steps adds the same
/// pairs in the same order for several rows per instruction, with shuffles that bring two
/// rows' halves (then four rows' quarters, ...) side by side: 46 instructions for 16 rows,
/// ~3 per row instead of 8 in a dependent chain. On rows of 18–28 blocks the reductions
/// one by one cost a `gemv` 7–30 % of its time; batched, `gemv` is 2–14 % faster
/// (docs/PERFORMANCE.md, "Round 10").
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn reduce_add_16(v: &[__m512; 16]) -> __m512 {
    // Step 1, lane i += lane i + 8: [row 2j lanes 0..8 | row 2j+1 lanes 0..8].
    let halves: [__m512; 8] = std::array::from_fn(|j| {
        let (a, b) = (v[2 * j], v[2 * j + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), // lanes 0..8 of a, of b
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b), // lanes 8..16 of a, of b
        )
    });
    // Step 2, lane i += lane i + 4: 128-bit quarter q holds row 4k + q's lanes 0..4.
    let quarters: [__m512; 4] = std::array::from_fn(|k| {
        let (a, b) = (halves[2 * k], halves[2 * k + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    });
    // Step 3, lane i += lane i + 2 (within each quarter): quarter q holds
    // [row q: i = 0, 1 | row q + 4: i = 0, 1] (and rows q + 8, q + 12 in the second vector).
    let pairs: [__m512; 2] = std::array::from_fn(|m| {
        let (a, b) = (quarters[2 * m], quarters[2 * m + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
        )
    });
    // Step 4, lane 0 += lane 1: quarter q holds rows [q, q + 4, q + 8, q + 12].
    let sums = _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(pairs[0], pairs[1]),
        _mm512_shuffle_ps::<0b11_01_11_01>(pairs[0], pairs[1]),
    );
    // Row r sits in lane 4·(r % 4) + r / 4.
    let rows = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(rows, sums)
}

/// Longest row (in blocks) [`legacy_gemv`] keeps the activation side of; longer rows go
/// through [`legacy_dot`] one by one (their per-row set-up is a small share anyway).
const GEMV_MAX_BLOCKS: usize = 512;
/// Groups of a row of [`GEMV_MAX_BLOCKS`] blocks (full groups plus a tail group).
const GEMV_MAX_GROUPS: usize = GEMV_MAX_BLOCKS / GROUP + 1;
/// Pairs of a row of [`GEMV_MAX_BLOCKS`] blocks (a tail group repeats at most 8).
const GEMV_MAX_PAIRS: usize = GEMV_MAX_BLOCKS / 2 + GROUP / 2;

/// `out[r] = w[r] · a` for `out.len()` consecutive weight rows of `a.len()` blocks each
/// (token generation: one activation row, many weight rows).
///
/// The activation side of [`legacy_row`] (head gathers and conversions per group, code
/// loads and `dpbusd(c, y)` per pair) does not depend on the weight row, so the first row
/// records it in a small stack buffer and the other rows replay it: per 18-block row
/// (576 values) that removes about a third of the instructions, as well as a call and its
/// constant loads per row. The rows' final horizontal sums are done 16 rows at a time
/// ([`reduce_add_16`]). Each row performs exactly [`legacy_dot`]'s float operations in
/// the same order, so every output is bit-identical to `vec_dot` (tested in
/// `kernels/tests/gemv.rs`). The rows are read one after the other, as `vec_dot` reads them
/// (interleaving several rows per pass made token generation slower end to end,
/// docs/PERFORMANCE.md, "Multi-row matrix-vector kernels").
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn legacy_gemv<W: LegacyBlock, A: LegacyAct, const MINS: bool, const OFFSET: bool>(
    w: &[W],
    a: &[A],
    offset: __m512i,
    out: &mut [f32],
    pair: impl Fn(&W, &W, __m512i) -> __m512i + Copy,
) {
    let nb = a.len();
    assert_eq!(
        w.len(),
        nb * out.len(),
        "gemv: weights are not out.len() rows"
    );
    if out.is_empty() {
        return;
    }
    if nb > GEMV_MAX_BLOCKS || nb == 0 {
        for (row, o) in w.chunks_exact(nb.max(1)).zip(out.iter_mut()) {
            *o = legacy_dot::<W, A, MINS, OFFSET>(row, a, offset, pair);
        }
        return;
    }
    // Each row's lane sums, reduced 16 rows at a time.
    let mut lanes = [_mm512_setzero_ps(); 16];
    let mut flush = |r: usize, row_lanes: __m512| {
        lanes[r % 16] = row_lanes;
        if r % 16 == 15 || r + 1 == out.len() {
            let first = r - r % 16;
            // Lanes past `r % 16` hold rows of the previous batch: computed, never stored.
            let sums = reduce_add_16(&lanes);
            // Rows `first..=r`.
            let keep = (u32::MAX >> (31 - r % 16)) as u16;
            // SAFETY: `out[first..=r]` are `r % 16 + 1` floats (`r < out.len()`); the mask
            // stores exactly those.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(first), keep, sums) };
        }
    };
    // Uninitialised: only the entries row 0 records are read back (checked per read).
    let mut heads = [MaybeUninit::<ActHeads>::uninit(); GEMV_MAX_GROUPS];
    let mut pairs = [MaybeUninit::<ActPair>::uninit(); GEMV_MAX_PAIRS];
    let (mut n_heads, mut n_pairs) = (0, 0);
    // Row 0 computes the activation side and records it.
    let row0 = legacy_row::<W, A, MINS, OFFSET>(
        &w[..nb],
        a,
        |a, n, g| {
            let h = act_heads(a, n, g);
            heads[n_heads].write(h);
            n_heads += 1;
            h
        },
        |a0, a1| {
            let p = act_pair::<A, OFFSET>(a0, a1, offset);
            pairs[n_pairs].write(p);
            n_pairs += 1;
            p
        },
        pair,
    );
    flush(0, row0);
    // The other rows replay it: `legacy_row` asks for groups and pairs in the same order
    // for every row of the same length.
    for (r, row) in w[nb..].chunks_exact(nb).enumerate() {
        let (mut g, mut p) = (0, 0);
        let row_lanes = legacy_row::<W, A, MINS, OFFSET>(
            row,
            a,
            |_, _, _| {
                assert!(g < n_heads, "gemv: replay past the recorded groups");
                g += 1;
                // SAFETY: entries `0..n_heads` were written by row 0 (checked above).
                unsafe { heads[g - 1].assume_init() }
            },
            |_, _| {
                assert!(p < n_pairs, "gemv: replay past the recorded pairs");
                p += 1;
                // SAFETY: entries `0..n_pairs` were written by row 0 (checked above).
                unsafe { pairs[p - 1].assume_init() }
            },
            pair,
        );
        flush(r + 1, row_lanes);
    }
}

/// The weight side of Q4_0: `dpbusd(q, y)` of the raw nibbles (offset 8).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_0_pair(x0: &BlockQ4_0, x1: &BlockQ4_0, y: __m512i) -> __m512i {
    // SAFETY: `qs` arrays are 16 bytes long.
    let q = unsafe { nibbles_2x32(x0.qs.as_ptr(), x1.qs.as_ptr()) };
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y)
}

/// The weight side of Q4_1: `dpbusd(q, y)` of the unsigned nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q4_1_pair(x0: &BlockQ4_1, x1: &BlockQ4_1, y: __m512i) -> __m512i {
    // SAFETY: `qs` arrays are 16 bytes long.
    let q = unsafe { nibbles_2x32(x0.qs.as_ptr(), x1.qs.as_ptr()) };
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y)
}

/// The weight side of Q5_0: the 2×32 fifth bits form a 64-bit mask that adds 16 to the
/// selected nibbles (offset 16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_0_pair(x0: &BlockQ5_0, x1: &BlockQ5_0, y: __m512i) -> __m512i {
    // SAFETY: `qs` arrays are 16 bytes long.
    let lo = unsafe { nibbles_2x32(x0.qs.as_ptr(), x1.qs.as_ptr()) };
    let q = _mm512_mask_add_epi8(lo, fifth_bits(x0.qh, x1.qh), lo, _mm512_set1_epi8(16));
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y)
}

/// The weight side of Q5_1: codes `nibble + 16·bit`, unsigned (`0..31`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_1_pair(x0: &BlockQ5_1, x1: &BlockQ5_1, y: __m512i) -> __m512i {
    // SAFETY: `qs` arrays are 16 bytes long.
    let lo = unsafe { nibbles_2x32(x0.qs.as_ptr(), x1.qs.as_ptr()) };
    let q = _mm512_mask_add_epi8(lo, fifth_bits(x0.qh, x1.qh), lo, _mm512_set1_epi8(16));
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y)
}

/// The weight side of Q8_0: `w + 128` (`w ^ 0x80`) is unsigned (offset 128), which makes
/// Q8_0 · Q8_0 exact for every code, −128 included.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_0_pair(x0: &BlockQ8_0, x1: &BlockQ8_0, y: __m512i) -> __m512i {
    // SAFETY: `qs` arrays are 32 bytes long.
    let x = unsafe { load_halves(x0.qs.as_ptr(), x1.qs.as_ptr()) };
    let q = _mm512_xor_si512(x, _mm512_set1_epi8(-128));
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y)
}

/// [`IQ4NL_VALUES`] `+ 128` (all in `1..=241`, so unsigned), repeated in the four 128-bit
/// lanes for `vpshufb`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn iq4nl_lut_biased() -> __m512i {
    let biased = IQ4NL_VALUES.map(|v| (v as i16 + 128) as u8);
    // SAFETY: the array is 16 bytes.
    _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(biased.as_ptr().cast()) })
}

/// The weight side of IQ4_NL: each nibble indexes the 16-value table through `vpshufb`
/// (values `+ 128`, unsigned; offset 128). `lut` is [`iq4nl_lut_biased`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn iq4_nl_pair(lut: __m512i, x0: &BlockIQ4_NL, x1: &BlockIQ4_NL, y: __m512i) -> __m512i {
    // SAFETY: `qs` arrays are 16 bytes long.
    let idx = unsafe { nibbles_2x32(x0.qs.as_ptr(), x1.qs.as_ptr()) };
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(lut, idx), y)
}

/// Defines, for one legacy format, the typed `vec_dot` and `gemv` kernels on
/// [`legacy_dot`] / [`legacy_gemv`] with its weight side `$pair` (built by `$setup` from
/// nothing, e.g. a table register), its `MINS` and its offset (`None` or `Some(c)`).
macro_rules! legacy_kernels {
    (
        $(#[$doc:meta])*
        $dot:ident, $gemv:ident, $W:ty, $A:ty, mins: $mins:literal, offset: $offset:expr,
        pair: $pair:expr
    ) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI. Panics if the rows
        /// have different lengths.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $dot(w: &[$W], a: &[$A]) -> f32 {
            check_same_len(w.len(), a.len(), stringify!($W));
            let offset: Option<i8> = $offset;
            let pair = $pair;
            match offset {
                Some(c) => legacy_dot::<_, _, $mins, true>(w, a, _mm512_set1_epi8(c), pair),
                None => legacy_dot::<_, _, $mins, false>(w, a, _mm512_setzero_si512(), pair),
            }
        }

        /// `out[r] = w[r] · a` for `out.len()` consecutive rows of `a.len()` blocks
        /// (`legacy_gemv`); bit-identical to the single-row kernel.
        ///
        /// # Safety
        /// As the single-row kernel. Panics if `w` is not `out.len()` rows of `a.len()`
        /// blocks.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $gemv(w: &[$W], a: &[$A], out: &mut [f32]) {
            let offset: Option<i8> = $offset;
            let pair = $pair;
            match offset {
                Some(c) => legacy_gemv::<_, _, $mins, true>(w, a, _mm512_set1_epi8(c), out, pair),
                None => {
                    legacy_gemv::<_, _, $mins, false>(w, a, _mm512_setzero_si512(), out, pair)
                }
            }
        }
    };
}

legacy_kernels!(
    /// Q4_0 · Q8_0: `Σ (q-8)·y` per block with `vpdpbusd`, two blocks per register.
    vec_dot_q4_0_q8_0, gemv_q4_0_q8_0, BlockQ4_0, BlockQ8_0, mins: false, offset: Some(8),
    pair: |x0: &BlockQ4_0, x1: &BlockQ4_0, y| q4_0_pair(x0, x1, y)
);
legacy_kernels!(
    /// Q4_1 · Q8_1: `Σ q·y` per block (q unsigned), plus `m_w·s_a` per block (one FMA per
    /// group of 16 blocks).
    vec_dot_q4_1_q8_1, gemv_q4_1_q8_1, BlockQ4_1, BlockQ8_1, mins: true, offset: None,
    pair: |x0: &BlockQ4_1, x1: &BlockQ4_1, y| q4_1_pair(x0, x1, y)
);
legacy_kernels!(
    /// Q5_0 · Q8_0: `Σ (q-16)·y` per block, the fifth bits added by a masked byte add.
    vec_dot_q5_0_q8_0, gemv_q5_0_q8_0, BlockQ5_0, BlockQ8_0, mins: false, offset: Some(16),
    pair: |x0: &BlockQ5_0, x1: &BlockQ5_0, y| q5_0_pair(x0, x1, y)
);
legacy_kernels!(
    /// Q5_1 · Q8_1: `Σ q·y` per block (codes `0..31`) plus `m_w·s_a`, as Q4_1.
    vec_dot_q5_1_q8_1, gemv_q5_1_q8_1, BlockQ5_1, BlockQ8_1, mins: true, offset: None,
    pair: |x0: &BlockQ5_1, x1: &BlockQ5_1, y| q5_1_pair(x0, x1, y)
);
legacy_kernels!(
    /// Q8_0 · Q8_0: `Σ w·y = dpbusd(w+128, y) − dpbusd(128, y)`, exact for every code.
    vec_dot_q8_0_q8_0, gemv_q8_0_q8_0, BlockQ8_0, BlockQ8_0, mins: false,
    offset: Some(-128), pair: |x0: &BlockQ8_0, x1: &BlockQ8_0, y| q8_0_pair(x0, x1, y)
);
legacy_kernels!(
    /// IQ4_NL · Q8_0: each nibble indexes the 16-value table through `vpshufb` (values
    /// `+ 128`), then `Σ v·y = dpbusd(v+128, y) − dpbusd(128, y)` per block.
    vec_dot_iq4_nl_q8_0, gemv_iq4_nl_q8_0, BlockIQ4_NL, BlockQ8_0, mins: false,
    offset: Some(-128),
    pair: {
        let lut = iq4nl_lut_biased();
        move |x0: &BlockIQ4_NL, x1: &BlockIQ4_NL, y| iq4_nl_pair(lut, x0, x1, y)
    }
);

// ----------------------------------------------------------------------------------------
// k-quants · Q8_K.
// ----------------------------------------------------------------------------------------

/// Σ over one 64-value register of `scale_(sub-block) · q·y`, accumulated into `sumi`:
/// `vpmaddubsw` (pairs in i16, exact for `q ≤ 63`) then `vpdpwssd` with the per-lane scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn scaled_dot(sumi: __m512i, q: __m512i, y: __m512i, scales: __m512i) -> __m512i {
    _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q, y), scales)
}

/// The packed 6-bit scales and mins of a Q4_K / Q5_K super-block as 16 bytes
/// `[scale 0..8 | min 0..8]` (the same values as [`super::k4_scales_mins`]), unpacked in
/// 32-bit lanes. With `u0, u1, u2` the three words of `packed`: sub-blocks 0..4 are the low
/// 6 bits of `u0` (scales) and `u1` (mins); sub-blocks 4..8 take the low (scales) or high
/// (mins) nibbles of `u2` plus the top 2 bits of `u0` / `u1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_scales_mins_bytes(packed: &[u8; 12]) -> __m128i {
    let word =
        |i: usize| i32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let v = _mm_setr_epi32(word(0), word(4), word(8), 0); // [u0, u1, u2, 0]
    let tops = _mm_shuffle_epi32::<0b01_01_00_00>(v); // [u0, u0, u1, u1]
    let nibbles = _mm_shuffle_epi32::<0b10_01_10_00>(v); // [·, u2, ·, u2]
    let nibbles = _mm_and_si128(
        _mm_srlv_epi32(nibbles, _mm_setr_epi32(0, 0, 0, 4)),
        _mm_set1_epi32(0x0F0F_0F0F),
    );
    // (t >> 6 & 3) << 4 == t >> 2 & 0x30 per byte.
    let high = _mm_or_si128(
        nibbles,
        _mm_and_si128(_mm_srli_epi32::<2>(tops), _mm_set1_epi32(0x3030_3030)),
    );
    let low = _mm_and_si128(tops, _mm_set1_epi32(0x3F3F_3F3F));
    _mm_blend_epi32::<0b1010>(low, high)
}

/// Bytes of weights ahead of the current super-block that the k-quant kernels prefetch: the
/// rows of a matrix are contiguous, so this reaches into the next rows. Measured on
/// 16384×4096 (DRAM) rows, one thread: Q6_K 35 GB/cpu-s without, 39–42 at 4 KiB, 48–51 at
/// 8–16 KiB; 1 KiB and 2 KiB were slower than none (docs/PERFORMANCE.md, "Single-row
/// k-quants, round 2").
const K_PREFETCH: usize = 8192;

/// Prefetches the weights [`K_PREFETCH`] bytes past block `x`: `size_of::<T>() / 64` lines
/// 64 bytes apart. Called for every block of a run of contiguous blocks this touches every
/// line (the gaps, `size_of::<T>() % 64` bytes, are shorter than a line). A hint: it never
/// faults, so the address may lie past the end of the row or of the matrix.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn prefetch_ahead<T>(x: &T) {
    let p = (x as *const T).cast::<i8>().wrapping_add(K_PREFETCH);
    for line in 0..std::mem::size_of::<T>() / 64 {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * line));
    }
}

/// Prefetches the lines [`K_PREFETCH`] bytes past the blocks `x` (a run of the 32-value
/// formats' blocks, which are smaller than a line, so [`prefetch_ahead`] per block would
/// skip lines). A hint: it never faults.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn prefetch_span_ahead<T>(x: &[T]) {
    let p = x.as_ptr().cast::<i8>().wrapping_add(K_PREFETCH);
    for line in 0..std::mem::size_of_val(x).div_ceil(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * line));
    }
}

/// `vpshufb` controls spreading the 8 i16 sub-block scales of a Q4_K / Q5_K super-block
/// (repeated in every 128-bit lane) over `packs(dot(2h), dot(2h + 1))`, for `h` in `0..2`.
/// `dot(j)` (sixteen i32 lanes) covers sub-block `2j` in lanes `0..8` and `2j + 1` in lanes
/// `8..16`; `vpackssdw` puts i32 lanes `4L..4L+4` of its two operands in 128-bit lane `L`, so
/// words `0..4` of lane `L` come from sub-block `4h + (L ≥ 2)` and words `4..8` from
/// `4h + 2 + (L ≥ 2)`.
const K4_PACKED_SCALES: [[u8; 64]; 2] = {
    let mut out = [[0u8; 64]; 2];
    let mut h = 0;
    while h < 2 {
        let mut i = 0;
        while i < 64 {
            let (lane, word) = (i / 16, i % 16 / 2);
            let sub = 4 * h + 2 * (word / 4) + lane / 2;
            out[h][i] = (2 * sub + i % 2) as u8;
            i += 1;
        }
        h += 1;
    }
    out
};

/// `dmin_w·d_a · Σ_j min_j·Σy_j` of one Q4_K / Q5_K super-block accumulated into
/// `acc_mins` (8 lanes, one per sub-block), and the broadcast `d_w·d_a` returned. `sm` is
/// [`k4_scales_mins_bytes`].
///
/// `d` and `dmin` are converted together from one 32-bit word: converting a lone f16
/// made LLVM insert the word (`vpinsrw`) into a live accumulator register, chaining every
/// super-block's scale to the previous FMA (measured: that chain bounded the kernel).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_scale_and_mins(
    d: u16,
    dmin: u16,
    sm: __m128i,
    y: &BlockQ8_K,
    acc_mins: &mut __m256,
) -> __m512 {
    let both = _mm_cvtph_ps(_mm_cvtsi32_si128((d as u32 | (dmin as u32) << 16) as i32));
    let dd = _mm_mul_ps(both, _mm_set1_ps(y.d)); // [d_w·d_a, dmin_w·d_a, 0, 0]
                                                 // SAFETY: `bsums` is 32 bytes long.
    let bs = unsafe { _mm256_loadu_si256(y.bsums.as_ptr().cast()) }; // [16] i16: Σy per 16
                                                                     // Min j applies to the 16-value sums 2j and 2j+1: bytes [m0, m0, m1, m1, …, m7, m7].
    let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
        sm,
        _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15),
    ));
    *acc_mins = _mm256_fmadd_ps(
        _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
        _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)),
        *acc_mins,
    );
    _mm512_broadcastss_ps(dd)
}

/// The shared loop of Q4_K and Q5_K (`FIVE`) · Q8_K: `out[r] = w[r] · a` for `out.len()`
/// consecutive rows of `a.len()` super-blocks (one row for `vec_dot`, a task's rows for
/// `gemv`, so both give the same bits). The rows share the constants and the call.
///
/// Register `j` (`0..4`) holds sub-blocks `2j` (low half) and `2j + 1` (high half) in value
/// order, against one 64-byte activation load: the 32 code bytes `qs[32j..32j+32]` are
/// broadcast to both halves (a load), shifted by `[0 | 4]` (`vpsrlvw`) and masked to
/// nibbles; for Q5_K the fifth bits (`qh` bits `2j` | `2j + 1`, `vptestmb`) add 16.
/// `vpdpbusd` sums the unsigned codes against the activations per 4 bytes (|·| ≤ 4·31·128,
/// so i16), `vpackssdw` packs two registers exactly, and one `vpdpwssd` per pair applies
/// the sub-block scales (spread by `vpshufb`, [`K4_PACKED_SCALES`]) and accumulates: per 64
/// values 4.5 vector instructions instead of the 7 of `vpmaddubsw` + `vpdpwssd` on
/// regrouped nibbles. Mins from the Q8_K `bsums` once per super-block
/// ([`k4_scale_and_mins`]). Integer sums exact.
///
/// With `GFNI` the shift and mask become one `vgf2p8affineqb` whose bit matrix differs per
/// half (identity on the low nibble | high nibble moved down): 4 fewer instructions per
/// super-block, +6–8 % on long rows. Same integers, so the same bits either way.
///
/// Not a `target_feature` function itself: it is always inlined into the entry points
/// (`k4_kernels!`), which enable the base AVX-512 features, plus GFNI for `GFNI`, so its
/// intrinsics compile for them.
///
/// # Safety
/// The CPU must have the entry point's features (GFNI for `GFNI`). `qs(x)` must be readable
/// for 128 bytes and, with `FIVE`, `qh(x)` for 32 bytes.
#[inline(always)]
unsafe fn k4_rows<W, const FIVE: bool, const GFNI: bool>(
    w: &[W],
    a: &[BlockQ8_K],
    out: &mut [f32],
    head: impl Fn(&W) -> (u16, u16, &[u8; 12]),
    qs: impl Fn(&W) -> *const u8,
    qh: impl Fn(&W) -> *const u8,
) {
    assert_eq!(
        w.len(),
        a.len() * out.len(),
        "k-quant gemv: weights are not out.len() rows of a.len() super-blocks"
    );
    // SAFETY: the entry points enable the features these intrinsics need (caller); the
    // pointer reads below stay inside the blocks (commented where they happen).
    unsafe {
        if a.is_empty() {
            out.fill(0.0);
            return;
        }
        let low4 = _mm512_set1_epi8(0x0F);
        let sixteen = _mm512_set1_epi8(16);
        let nibble_shift = two_halves_epi16(0, 4);
        // `vgf2p8affineqb`: result bit i = parity(matrix byte 7 − i & x). Low half keeps
        // bits 0..4, high half takes bits 4..8 down to 0..4.
        const LOW_NIBBLE: i64 = 0x0102_0408_0000_0000;
        const HIGH_NIBBLE: i64 = 0x1020_4080_0000_0000;
        let nibble_matrix = _mm512_inserti64x4::<1>(
            _mm512_set1_epi64(LOW_NIBBLE),
            _mm256_set1_epi64x(HIGH_NIBBLE),
        );
        // Each row is 64 bytes.
        let spread: [__m512i; 2] = std::array::from_fn(|h| load64(K4_PACKED_SCALES[h].as_ptr()));
        let zero = _mm512_setzero_si512();
        for (row, out) in w.chunks_exact(a.len()).zip(out.iter_mut()) {
            let mut acc = _mm512_setzero_ps();
            let mut acc_mins = _mm256_setzero_ps();
            for (x, y) in row.iter().zip(a) {
                prefetch_ahead(x);
                let (d, dmin, packed) = head(x);
                let sm = k4_scales_mins_bytes(packed);
                let d = k4_scale_and_mins(d, dmin, sm, y, &mut acc_mins);
                let scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sm)); // [8] i16 per 128 bits
                let high = if FIVE {
                    // `qh` is readable for 32 bytes (caller).
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(qh(x).cast()))
                } else {
                    zero
                };
                let mut sumi = zero;
                for (h, spread) in spread.iter().enumerate() {
                    let dot: [__m512i; 2] = std::array::from_fn(|k| {
                        let j = 2 * h + k;
                        // Offsets stay inside `qs` (128 B, caller) and `y.qs` (256 B).
                        let bits =
                            _mm512_broadcast_i64x4(_mm256_loadu_si256(qs(x).add(32 * j).cast()));
                        let yj = load64(y.qs.as_ptr().add(64 * j));
                        let mut q = if GFNI {
                            _mm512_gf2p8affine_epi64_epi8::<0>(bits, nibble_matrix)
                        } else {
                            _mm512_and_si512(_mm512_srlv_epi16(bits, nibble_shift), low4)
                        };
                        if FIVE {
                            let bit = 2 * j as u32;
                            let m = _mm512_test_epi8_mask(
                                high,
                                two_halves_epi8(1 << bit, 1 << (bit + 1)),
                            );
                            q = _mm512_mask_add_epi8(q, m, q, sixteen);
                        }
                        _mm512_dpbusd_epi32(zero, q, yj)
                    });
                    let packed = _mm512_packs_epi32(dot[0], dot[1]);
                    sumi = _mm512_dpwssd_epi32(sumi, packed, _mm512_shuffle_epi8(scales, *spread));
                }
                acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
            }
            // One reduction: the 8 mins lanes subtracted from the low half first.
            *out = _mm512_reduce_add_ps(_mm512_sub_ps(acc, _mm512_zextps256_ps512(acc_mins)));
        }
    }
}

/// The `vec_dot` and `gemv` entry points of one [`k4_rows`] instance: `$features` enabled,
/// `$five` for Q5_K, `$gfni` for the GFNI nibble split.
macro_rules! k4_kernels {
    (
        $(#[$doc:meta])*
        $dot:ident, $gemv:ident, $W:ty, five: $five:literal, gfni: $gfni:literal,
        features: $features:literal, qh: $qh:expr
    ) => {
        $(#[$doc])*
        ///
        /// # Safety
        #[doc = concat!("The CPU must support ", $features, ".")]
        /// Activation `bsums` must be the sums of their codes. Panics if the rows have
        /// different lengths.
        #[target_feature(enable = $features)]
        pub unsafe fn $dot(w: &[$W], a: &[BlockQ8_K]) -> f32 {
            check_same_len(w.len(), a.len(), stringify!($W));
            let mut out = [0.0];
            // SAFETY: same contract.
            unsafe { $gemv(w, a, &mut out) };
            out[0]
        }

        /// `out[r] = w[r] · a` for `out.len()` consecutive rows (`k4_rows`); per row the
        /// same bits as the single-row kernel.
        ///
        /// # Safety
        /// As the single-row kernel. Panics if `w` is not `out.len()` rows of `a.len()`
        /// blocks.
        #[target_feature(enable = $features)]
        pub unsafe fn $gemv(w: &[$W], a: &[BlockQ8_K], out: &mut [f32]) {
            // SAFETY: this function enables the features (caller's contract); `qs` is 128
            // bytes, `qh` (read only for Q5_K) 32 bytes.
            unsafe {
                k4_rows::<_, $five, $gfni>(
                    w,
                    a,
                    out,
                    |x| (x.d, x.dmin, &x.scales),
                    |x| x.qs.as_ptr(),
                    $qh,
                )
            }
        }
    };
}

k4_kernels!(
    /// Q4_K · Q8_K (`k4_rows`). Qs byte `32j + i` holds value `i` of sub-block `2j` (low
    /// nibble) and of `2j + 1` (high nibble).
    vec_dot_q4_k_q8_k, gemv_q4_k_q8_k, BlockQ4_K, five: false, gfni: false,
    features: "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    qh: |x: &BlockQ4_K| x.qs.as_ptr()
);
k4_kernels!(
    /// Q4_K · Q8_K with the GFNI nibble split (`k4_rows`).
    vec_dot_q4_k_q8_k_gfni, gemv_q4_k_q8_k_gfni, BlockQ4_K, five: false, gfni: true,
    features: "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,gfni",
    qh: |x: &BlockQ4_K| x.qs.as_ptr()
);
k4_kernels!(
    /// Q5_K · Q8_K (`k4_rows`): as Q4_K, plus bit `j` of `qh[i]` is the fifth bit of
    /// value `i` of sub-block `j`.
    vec_dot_q5_k_q8_k, gemv_q5_k_q8_k, BlockQ5_K, five: true, gfni: false,
    features: "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    qh: |x: &BlockQ5_K| x.qh.as_ptr()
);
k4_kernels!(
    /// Q5_K · Q8_K with the GFNI nibble split (`k4_rows`).
    vec_dot_q5_k_q8_k_gfni, gemv_q5_k_q8_k_gfni, BlockQ5_K, five: true, gfni: true,
    features: "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,gfni",
    qh: |x: &BlockQ5_K| x.qh.as_ptr()
);

/// IQ4_XS · Q8_K. A 64-byte load holds the nibbles of groups `4c..4c+4`; `vpermt2q`
/// regroups low and high nibbles into two registers of two whole groups in value order,
/// `vpshufb` looks them up in the table biased by `+128` (unsigned), `vpdpbusd` sums them
/// against the activations, and `vpmulld` applies the group scales (`ls − 32`, spread by
/// `vpermd`) in i32. The bias is removed once per super-block from the Q8_K `bsums`:
/// `128 · Σ_g (ls_g − 32) · Σy_g`.
///
/// # Safety
/// As [`vec_dot_q4_k_q8_k`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_iq4_xs_q8_k(w: &[BlockIQ4_XS], a: &[BlockQ8_K]) -> f32 {
    check_same_len(w.len(), a.len(), "IQ4_XS·Q8_K");
    let lut = iq4nl_lut_biased();
    let low4 = _mm512_set1_epi8(0x0F);
    // 64-bit lanes: [lo 0, hi 0, lo 1, hi 1] and [lo 2, hi 2, lo 3, hi 3] (128-bit lanes).
    let first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    let second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    let low_shifts = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
    let high_shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let mut acc = _mm512_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        // Group g's low scale bits are nibble g%2 of scales_l[g/2]: spread the 4 bytes so
        // lane g holds byte g/2, then shift by 0 or 4.
        let low_bytes = _mm256_cvtepu8_epi32(_mm_set1_epi64x(u64::from_le_bytes([
            x.scales_l[0],
            x.scales_l[0],
            x.scales_l[1],
            x.scales_l[1],
            x.scales_l[2],
            x.scales_l[2],
            x.scales_l[3],
            x.scales_l[3],
        ]) as i64));
        let low = _mm256_and_si256(
            _mm256_srlv_epi32(low_bytes, low_shifts),
            _mm256_set1_epi32(0xF),
        );
        let high = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32(x.scales_h as i32), high_shifts),
            _mm256_set1_epi32(3),
        );
        let scales = _mm256_sub_epi32(
            _mm256_or_si256(low, _mm256_slli_epi32::<4>(high)),
            _mm256_set1_epi32(32),
        ); // [8] i32
           // SAFETY: `bsums` is 32 bytes.
        let bsums = unsafe { _mm256_loadu_si256(y.bsums.as_ptr().cast()) };
        let group_sums = _mm256_madd_epi16(bsums, _mm256_set1_epi16(1)); // [8] Σy per group
        let bias = _mm256_slli_epi32::<7>(_mm256_mullo_epi32(scales, group_sums));
        let scales = _mm512_castsi256_si512(scales);
        let mut sumi = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), bias));
        for c in 0..2 {
            // SAFETY: offsets stay inside `qs` (128 B) and `y.qs` (256 B).
            let (bits, y_a, y_b) = unsafe {
                (
                    load64(x.qs.as_ptr().add(64 * c)),
                    load64(y.qs.as_ptr().add(128 * c)),
                    load64(y.qs.as_ptr().add(128 * c + 64)),
                )
            };
            let lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(bits, low4));
            let hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16::<4>(bits), low4));
            let q_a = _mm512_permutex2var_epi64(lo, first, hi); // groups 4c, 4c+1
            let q_b = _mm512_permutex2var_epi64(lo, second, hi); // groups 4c+2, 4c+3
            let g = 4 * c as i32;
            let sc_a = _mm512_permutexvar_epi32(
                _mm512_set_epi32(
                    g + 1,
                    g + 1,
                    g + 1,
                    g + 1,
                    g + 1,
                    g + 1,
                    g + 1,
                    g + 1, //
                    g,
                    g,
                    g,
                    g,
                    g,
                    g,
                    g,
                    g,
                ),
                scales,
            );
            let sc_b = _mm512_permutexvar_epi32(
                _mm512_set_epi32(
                    g + 3,
                    g + 3,
                    g + 3,
                    g + 3,
                    g + 3,
                    g + 3,
                    g + 3,
                    g + 3, //
                    g + 2,
                    g + 2,
                    g + 2,
                    g + 2,
                    g + 2,
                    g + 2,
                    g + 2,
                    g + 2,
                ),
                scales,
            );
            let zero = _mm512_setzero_si512();
            sumi = _mm512_add_epi32(
                sumi,
                _mm512_mullo_epi32(_mm512_dpbusd_epi32(zero, q_a, y_a), sc_a),
            );
            sumi = _mm512_add_epi32(
                sumi,
                _mm512_mullo_epi32(_mm512_dpbusd_epi32(zero, q_b, y_b), sc_b),
            );
        }
        let d = y.d * fp16(x.d);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Lane `i` of 32 i16 lanes → `i / 8`: the 16-value sub-block (0..4) a `vpmaddubsw` pair
/// sum of a 64-value register belongs to.
const SUBBLOCK_OF_LANE: [i16; 32] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
];

/// Q6_K · Q8_K: codes `ql | qh << 4` unsigned (`0..63`); `vpmaddubsw` + `vpdpwssd` with
/// the 16 signed scales spread by `vpermw`; `−32·Σ scale·bsum` once per super-block.
///
/// Half `n` (128 values): `ql[64n..64n+64]` low nibbles are values `128n + 0..64`, high
/// nibbles `128n + 64..128`; the matching `qh[32n..32n+32]` bits are (0,1 | 2,3) and
/// (4,5 | 6,7) for the low | high 32 values of each register.
///
/// # Safety
/// As [`vec_dot_q4_k_q8_k`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_q6_k_q8_k(w: &[BlockQ6_K], a: &[BlockQ8_K]) -> f32 {
    check_same_len(w.len(), a.len(), "Q6_K·Q8_K");
    let low4 = _mm512_set1_epi8(0x0F);
    let bits45 = _mm512_set1_epi8(0x30);
    // Shift counts per 16-bit lane bringing the wanted qh bit pair to bits 4,5.
    let shl_first = two_halves_epi16(4, 2); // bits 0,1 | bits 2,3
    let shr_second = two_halves_epi16(0, 2); // bits 4,5 | bits 6,7
                                             // SAFETY: the array has 32 i16 = 64 bytes.
    let lane_subblock = unsafe { load64(SUBBLOCK_OF_LANE.as_ptr()) };
    let mut acc = _mm512_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        prefetch_ahead(x);
        // SAFETY: `scales` is 16 bytes, `bsums` 32 bytes.
        let (scales, bsums) = unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr().cast())),
                _mm256_loadu_si256(y.bsums.as_ptr().cast()),
            )
        };
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales, bsums));
        let scales = _mm512_castsi256_si512(scales);
        let mut sumi = _mm512_setzero_si512();
        for n in 0..2 {
            // SAFETY: offsets stay inside `ql` (128 B), `qh` (64 B) and `y.qs` (256 B).
            let (ql, qh, y0, y1) = unsafe {
                (
                    load64(x.ql.as_ptr().add(64 * n)),
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(x.qh.as_ptr().add(32 * n).cast())),
                    load64(y.qs.as_ptr().add(128 * n)),
                    load64(y.qs.as_ptr().add(128 * n + 64)),
                )
            };
            let q0 = _mm512_or_si512(
                _mm512_and_si512(ql, low4),
                _mm512_and_si512(_mm512_sllv_epi16(qh, shl_first), bits45),
            );
            let q1 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low4),
                _mm512_and_si512(_mm512_srlv_epi16(qh, shr_second), bits45),
            );
            // Registers cover sub-blocks 8n..8n+4 and 8n+4..8n+8.
            let sc0 = _mm512_permutexvar_epi16(
                _mm512_add_epi16(lane_subblock, _mm512_set1_epi16(8 * n as i16)),
                scales,
            );
            let sc1 = _mm512_permutexvar_epi16(
                _mm512_add_epi16(lane_subblock, _mm512_set1_epi16(8 * n as i16 + 4)),
                scales,
            );
            sumi = scaled_dot(sumi, q0, y0, sc0);
            sumi = scaled_dot(sumi, q1, y1, sc1);
        }
        sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(offset));
        // The scale is converted as a full broadcast vector: a lone f16 → f32 conversion
        // became a `vpinsrw` into the live accumulator, chaining super-blocks (see
        // [`k4_scale_and_mins`]).
        let d = _mm512_mul_ps(
            _mm512_cvtph_ps(_mm256_set1_epi16(x.d as i16)),
            _mm512_set1_ps(y.d),
        );
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

// ----------------------------------------------------------------------------------------
// Float rows.
// ----------------------------------------------------------------------------------------

/// Shared loop of the float dot products: `load(p, i, mask)` returns 16 f32 from element `i`
/// (only the `mask` lanes are read; the rest are zero).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn float_dot<T>(w: &[T], a: &[T], load: impl Fn(*const T, usize, __mmask16) -> __m512) -> f32 {
    let n = w.len();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let all = 0xFFFF;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let j = i + 16 * k;
            *acc = _mm512_fmadd_ps(load(wp, j, all), load(ap, j, all), *acc);
        }
        i += 64;
    }
    while i < n {
        let left = n - i;
        let mask = if left >= 16 { all } else { (1u16 << left) - 1 };
        acc[0] = _mm512_fmadd_ps(load(wp, i, mask), load(ap, i, mask), acc[0]);
        i += 16;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// F16 · F16: exact products, FMA in 4×16 lanes, masked loads for the tail.
///
/// # Safety
/// As [`vec_dot_q4_0_q8_0`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_f16(w: &[f16], a: &[f16]) -> f32 {
    check_same_len(w.len(), a.len(), "F16·F16");
    float_dot(w, a, |p, i, mask| {
        // SAFETY: `float_dot` passes `i < n` and a mask covering only elements `< n`;
        // masked-off elements are not read.
        let raw = unsafe { _mm256_maskz_loadu_epi16(mask, p.add(i).cast()) };
        _mm512_cvtph_ps(raw)
    })
}

/// BF16 · BF16: exact products (a bf16 is the high half of an f32), FMA in 4×16 lanes.
///
/// # Safety
/// As [`vec_dot_q4_0_q8_0`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn vec_dot_bf16(w: &[bf16], a: &[bf16]) -> f32 {
    check_same_len(w.len(), a.len(), "BF16·BF16");
    float_dot(w, a, |p, i, mask| {
        // SAFETY: as in `vec_dot_f16`.
        let raw = unsafe { _mm256_maskz_loadu_epi16(mask, p.add(i).cast()) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
    })
}

// ----------------------------------------------------------------------------------------
// Activation quantizers (bit-identical to the scalar ones; see avx2.rs for the reasoning).
// ----------------------------------------------------------------------------------------

/// `roundf` on 16 lanes (half away from zero), then Rust's saturating `as i8` clamp
/// (`[-128, 127]`, NaN → 0), as i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn round_half_away_i8(v: __m512) -> __m512i {
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let frac = _mm512_abs_ps(_mm512_sub_ps(v, t)); // exact
    let bump = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    let sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN));
    let one = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(_mm512_set1_ps(1.0)),
        sign,
    ));
    saturate_i8(_mm512_mask_add_ps(t, bump, t, one))
}

/// Rust's `f32 as i8` on integral lanes: clamp to `[-128, 127]`, NaN → 0; as i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn saturate_i8(v: __m512) -> __m512i {
    let v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v);
    let v = _mm512_min_ps(
        _mm512_max_ps(v, _mm512_set1_ps(-128.0)),
        _mm512_set1_ps(127.0),
    );
    _mm512_cvttps_epi32(v)
}

/// Stores 16 i32 lanes (each in `-128..=127`) as 16 bytes.
///
/// # Safety
/// `out` must be writable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_i8x16(q: __m512i, out: *mut i8) {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm_storeu_si128(out.cast(), _mm512_cvtsepi32_epi8(q)) }
}

/// One 32-value block as `quantize_row_q8_0_ref`: returns `d` and the codes as 2×16 i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q8_block(xb: &[f32]) -> (f32, [__m512i; 2]) {
    assert!(xb.len() >= 32);
    // SAFETY: 32 values checked above.
    let v = unsafe {
        [
            _mm512_loadu_ps(xb.as_ptr()),
            _mm512_loadu_ps(xb.as_ptr().add(16)),
        ]
    };
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    let d = amax / 127.0;
    let id = _mm512_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    (d, v.map(|v| round_half_away_i8(_mm512_mul_ps(v, id))))
}

/// f32 row → Q8_0, bit-identical to the scalar quantizer.
///
/// # Safety
/// As [`vec_dot_q4_0_q8_0`]. Panics unless `x.len() == 32 · out.len()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    check_quantize_len(x.len(), out.len(), QK, "f32→Q8_0");
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, q) = q8_block(xb);
        b.d = f32_to_f16(d);
        // SAFETY: `qs` is 32 bytes.
        unsafe {
            store_i8x16(q[0], b.qs.as_mut_ptr());
            store_i8x16(q[1], b.qs.as_mut_ptr().add(16));
        }
    }
}

/// f32 row → Q8_1, bit-identical to the scalar quantizer.
///
/// # Safety
/// As [`vec_dot_q4_0_q8_0`]. Panics unless `x.len() == 32 · out.len()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    check_quantize_len(x.len(), out.len(), QK, "f32→Q8_1");
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (d, q) = q8_block(xb);
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
        b.d = f32_to_f16(d);
        b.s = f32_to_f16(sum as f32 * d);
        // SAFETY: `qs` is 32 bytes.
        unsafe {
            store_i8x16(q[0], b.qs.as_mut_ptr());
            store_i8x16(q[1], b.qs.as_mut_ptr().add(16));
        }
    }
}

/// f32 row → Q8_K, bit-identical to the scalar quantizer (see the AVX2 version).
///
/// Per super-block, one pass over the 16 registers keeps the signed maximum and minimum:
/// the larger magnitude of the two is `amax`, and its sign is the sign of the first element
/// of that magnitude (the scalar code's strict `>` scan) unless both signs reach it, when a
/// scan finds the first. A second pass (from L1) scales, rounds and packs the codes 64 to a
/// register, and `vpsadbw` on those codes (+128, so unsigned) gives the 16 `bsums` four
/// registers at a time instead of 16 horizontal additions.
///
/// # Safety
/// As [`vec_dot_q4_0_q8_0`]. Panics unless `x.len() == 256 · out.len()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8_K]) {
    check_quantize_len(x.len(), out.len(), QK_K, "f32→Q8_K");
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        // SAFETY: `xb` has 256 values = 16 registers (`g < 16` below).
        let load = |g: usize| unsafe { _mm512_loadu_ps(xb.as_ptr().add(16 * g)) };
        // `v` first: `max`/`min` return their second operand when one is NaN, so NaNs are
        // skipped, as the scalar scan skips them.
        let (mut hi, mut lo) = (
            _mm512_set1_ps(f32::NEG_INFINITY),
            _mm512_set1_ps(f32::INFINITY),
        );
        for g in 0..16 {
            hi = _mm512_max_ps(load(g), hi);
            lo = _mm512_min_ps(load(g), lo);
        }
        let (hi, lo) = (_mm512_reduce_max_ps(hi), _mm512_reduce_min_ps(lo));
        let amax = hi.max(-lo);
        let max = if hi == amax && -lo == amax {
            first_with_magnitude(xb, amax)
        } else if hi == amax {
            hi
        } else {
            lo
        };
        let iscale = -127.0 / max;
        // All zero (or all NaN: `amax` is then −∞), or so small that the inverse scale
        // overflows: the scalar quantizer stores the all-zero block.
        if amax <= 0.0 || !iscale.is_finite() {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            continue;
        }
        let scale = _mm512_set1_ps(iscale);
        let codes = |g: usize| {
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(load(g), scale),
            );
            _mm512_cvtsepi32_epi8(saturate_i8(r)) // [16] i8
        };
        // Per 64 codes (groups 4k .. 4k + 4): 8 sums of 8 biased codes, two per group.
        let mut halves = [_mm512_setzero_si512(); 4];
        for (k, h) in halves.iter_mut().enumerate() {
            let mut v = _mm512_castsi128_si512(codes(4 * k));
            v = _mm512_inserti32x4::<1>(v, codes(4 * k + 1));
            v = _mm512_inserti32x4::<2>(v, codes(4 * k + 2));
            v = _mm512_inserti32x4::<3>(v, codes(4 * k + 3));
            // SAFETY: `qs` is 256 bytes and `64k + 64 ≤ 256`.
            unsafe { _mm512_storeu_si512(b.qs.as_mut_ptr().add(64 * k).cast(), v) };
            let biased = _mm512_xor_si512(v, _mm512_set1_epi8(-128)); // q + 128, unsigned
            *h = _mm512_sad_epu8(biased, _mm512_setzero_si512());
        }
        // Group `4k + j` is lanes `2j`, `2j + 1` of `halves[k]`: add the pairs, drop the bias
        // (16 codes × 128), narrow to i16.
        let even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        let odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
        for (m, sums) in b.bsums.chunks_exact_mut(8).enumerate() {
            let (a, c) = (halves[2 * m], halves[2 * m + 1]);
            let total = _mm512_add_epi64(
                _mm512_permutex2var_epi64(a, even, c),
                _mm512_permutex2var_epi64(a, odd, c),
            );
            let s = _mm512_cvtepi64_epi16(_mm512_sub_epi64(total, _mm512_set1_epi64(16 * 128)));
            // SAFETY: `sums` is 8 i16 = 16 bytes.
            unsafe { _mm_storeu_si128(sums.as_mut_ptr().cast(), s) };
        }
        b.d = 1.0 / iscale;
    }
}

/// The first element of the 256 values `xb` whose magnitude is `amax`, or `amax` if none
/// is (the scalar quantizer's strict `>` scan keeps the first).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn first_with_magnitude(xb: &[f32], amax: f32) -> f32 {
    let target = _mm512_set1_ps(amax);
    for c in xb.chunks_exact(16) {
        // SAFETY: `c` has 16 values.
        let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        let hits = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(v), target);
        if hits != 0 {
            return c[hits.trailing_zeros() as usize];
        }
    }
    amax
}

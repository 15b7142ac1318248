//! AVX-512 VNNI version of the panel GEMM ([`crate::panel`]): the weight unpackers (one
//! 256-bit register of 32 codes per sub-block, sums with `vpsadbw`) and the register-tiled
//! microkernel.
//!
//! Microkernel: a tile of `R` weight rows × `G` token groups keeps `R·G` integer and `R·G`
//! float accumulators (16 tokens each). Per 32-value block and per 4 values (`k4`) it loads
//! `G` activation registers (4 codes of 16 tokens, as `u8`) and, per row, broadcasts 4
//! weight bytes (`i8`), then runs `R·G` `vpdpbusd`. Per sub-block the integer accumulator
//! starts at `−128·Σw_q` (undoing the `+128` of the activation codes, exactly), and is
//! folded into the float total with one multiply (`dw·dy`) and one FMA, plus one FMA with
//! `ow·sy` for formats with an offset: the float operations of
//! [`crate::panel::panel_gemm_scalar`], in its order, so the results are bit-identical to it
//! for any tile shape.
//!
//! Every function with `#[target_feature]` is only reachable through the dispatch table,
//! which is built after checking the CPU has these features.

use std::arch::x86_64::*;

use grist_gguf::GgmlType;

use crate::blocks::*;
use crate::dispatch::Kernels;
use crate::panel::{
    ActPanel, Line, PanelFormat, PanelOut, PanelUnpackFn, WeightPanel, CELL_LINES, DY_LINE, GROUP,
    PANEL_BLOCK, SY_LINE,
};

/// Weight rows per tile.
const TILE_R: usize = 4;
/// Token groups (of 16) per tile (4×3 measured 10–18 % faster than 4×2, 6×2, 8×1 and 3×3;
/// docs/PERFORMANCE.md). At most 3: [`row_tiles`] handles remainders of 1 and 2 groups.
const TILE_G: usize = 3;

/// Installs the panel microkernel and the unpackers of the formats it accelerates. Setting
/// the environment variable `GRIST_NO_PANEL` (any value) leaves the microkernel out, so prompt
/// processing uses the per-format tiles of `gemm_avx512` instead: an A/B switch for profiling
/// and for comparing results.
pub(crate) fn install(table: &mut Kernels) {
    if std::env::var_os("GRIST_NO_PANEL").is_none() {
        table.set_panel_gemm(Some(panel_gemm));
    }
    table.set_act_panel_group(build_act_group);
    // The layout of each format (sub-block length, offset) is the scalar reference's; only
    // the unpacker is replaced.
    let unpackers: [(GgmlType, PanelUnpackFn); 9] = [
        (GgmlType::Q4_0, unpack_q4_0),
        (GgmlType::Q4_1, unpack_q4_1),
        (GgmlType::Q5_0, unpack_q5_0),
        (GgmlType::Q5_1, unpack_q5_1),
        (GgmlType::Q8_0, unpack_q8_0),
        (GgmlType::IQ4_NL, unpack_iq4_nl),
        (GgmlType::Q4_K, unpack_q4_k),
        (GgmlType::Q5_K, unpack_q5_k),
        (GgmlType::Q6_K, unpack_q6_k),
    ];
    for (ty, unpack) in unpackers {
        let scalar =
            crate::panel::scalar_format(ty).expect("every AVX-512 panel format has a scalar one");
        table.set_panel(ty, Some(PanelFormat { unpack, ..scalar }));
    }
}

// ----------------------------------------------------------------------------------------
// Microkernel.
// ----------------------------------------------------------------------------------------

/// One tile: rows `r0 .. r0 + R` × groups `g .. g + G`, into `out[t · stride + r]` (`out`
/// points at the tile's first token, first row; `stride` = floats per token). `HALVES` = weight sub-blocks
/// per 32-value block (1, or 2 for 16-value sub-blocks); `OFF` = the format has an offset.
///
/// # Safety
/// `w` and `a` passed their `check()`, `r0 + R <= w.rows`, `g + G <= a.n_groups`, and `out`
/// is writable at `t · stride + r` for `t < G·16`, `r < R`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<
    const R: usize,
    const G: usize,
    const HALVES: usize,
    const OFF: bool,
    const SB: bool,
>(
    w: &WeightPanel<'_>,
    a: &ActPanel<'_>,
    r0: usize,
    g: usize,
    out: *mut f32,
    stride: usize,
) {
    let (cols, nb) = (w.cols, a.n_blocks);
    let k4_per_sub = 8 / HALVES;
    // SAFETY (all pointer arithmetic and loads below): in bounds by the caller's contract;
    // the activation lines are 64-byte aligned (`Line` is `align(64)`).
    unsafe {
        let codes = w.codes.as_ptr().add(r0 * cols);
        // Sub-block `s` of tile row `r` at `s · rows + r` (`[n_sub, rows]`).
        let rows = w.rows;
        let dw = w.dw.as_ptr().add(r0);
        let ow = w.ow.as_ptr().add(r0);
        let bias = w.bias.as_ptr().add(r0);
        let act = a.lines.as_ptr().add(g * nb * CELL_LINES).cast::<u8>();
        let gstride = nb * CELL_LINES * 64; // bytes between groups
        let mut tot = [[_mm512_setzero_ps(); G]; R];
        let mut x = [[_mm512_setzero_ps(); G]; R]; // sums of runs of 8 blocks (SB, or !OFF)
        for b in 0..nb {
            let cell = act.add(b * CELL_LINES * 64);
            if SB && b % 8 == 0 {
                x = [[_mm512_setzero_ps(); G]; R];
            }
            for h in 0..HALVES {
                let s = b * HALVES + h;
                let mut acc = [[_mm512_setzero_si512(); G]; R];
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let init = _mm512_set1_epi32(*bias.add(s * rows + r));
                    for x in acc_r.iter_mut() {
                        *x = init;
                    }
                }
                for k4 in h * k4_per_sub..(h + 1) * k4_per_sub {
                    let mut av = [_mm512_setzero_si512(); G];
                    for (gi, v) in av.iter_mut().enumerate() {
                        *v = _mm512_load_si512(cell.add(gi * gstride + k4 * 64).cast());
                    }
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let p = codes.add(r * cols + b * PANEL_BLOCK + k4 * 4);
                        let wv = _mm512_set1_epi32(std::ptr::read_unaligned(p.cast::<i32>()));
                        for (x, v) in acc_r.iter_mut().zip(av.iter()) {
                            *x = _mm512_dpbusd_epi32(*x, *v, wv);
                        }
                    }
                }
                if SB {
                    for r in 0..R {
                        let d = _mm512_set1_ps(*dw.add(s * rows + r));
                        for gi in 0..G {
                            x[r][gi] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][gi]), d, x[r][gi]);
                        }
                    }
                } else {
                    for gi in 0..G {
                        let dy = _mm512_load_ps(cell.add(gi * gstride + DY_LINE * 64).cast());
                        for r in 0..R {
                            let sc = _mm512_mul_ps(_mm512_set1_ps(*dw.add(s * rows + r)), dy);
                            // Offset formats: one chain into the total; the others: the
                            // run of 8 blocks first (see `panel_gemm_scalar`).
                            let sum = if OFF { &mut tot[r][gi] } else { &mut x[r][gi] };
                            *sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][gi]), sc, *sum);
                        }
                    }
                }
            }
            if OFF {
                for gi in 0..G {
                    let sy = _mm512_load_ps(cell.add(gi * gstride + SY_LINE * 64).cast());
                    for r in 0..R {
                        let o = _mm512_set1_ps(*ow.add(b * rows + r));
                        if SB {
                            x[r][gi] = _mm512_fmadd_ps(o, sy, x[r][gi]);
                        } else {
                            tot[r][gi] = _mm512_fmadd_ps(o, sy, tot[r][gi]);
                        }
                    }
                }
            }
            if !SB && !OFF && (b % 8 == 7 || b + 1 == nb) {
                for r in 0..R {
                    for gi in 0..G {
                        tot[r][gi] = _mm512_add_ps(tot[r][gi], x[r][gi]);
                        x[r][gi] = _mm512_setzero_ps();
                    }
                }
            }
            if SB && b % 8 == 7 {
                for gi in 0..G {
                    let dy = _mm512_load_ps(cell.add(gi * gstride + DY_LINE * 64).cast());
                    for r in 0..R {
                        tot[r][gi] = _mm512_fmadd_ps(x[r][gi], dy, tot[r][gi]);
                    }
                }
            }
        }
        for gi in 0..G {
            let o = out.add(gi * GROUP * stride);
            if R == 4 {
                store_4x16_transposed([tot[0][gi], tot[1][gi], tot[2][gi], tot[3][gi]], o, stride);
            } else {
                for (r, tot_r) in tot.iter().enumerate() {
                    let mut lanes = [0.0f32; GROUP];
                    _mm512_storeu_ps(lanes.as_mut_ptr(), tot_r[gi]);
                    for (lane, v) in lanes.iter().enumerate() {
                        *o.add(lane * stride + r) = *v;
                    }
                }
            }
        }
    }
}

/// Stores 4 rows × 16 tokens (`v[r]` lane `t`) token-major: `out[t · stride + r]`, 16 stores
/// of 4 floats after a 4×4 transpose inside each 128-bit lane.
///
/// # Safety
/// `out[t · stride .. t · stride + 4]` writable for every `t < 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_4x16_transposed(v: [__m512; 4], out: *mut f32, stride: usize) {
    let a = _mm512_unpacklo_ps(v[0], v[1]); // per lane: r0[0] r1[0] r0[1] r1[1]
    let b = _mm512_unpackhi_ps(v[0], v[1]); //           r0[2] r1[2] r0[3] r1[3]
    let c = _mm512_unpacklo_ps(v[2], v[3]);
    let d = _mm512_unpackhi_ps(v[2], v[3]);
    // t[j] holds, in 128-bit lane k, rows 0..4 of token 4k + j.
    let t = [
        _mm512_shuffle_ps::<0x44>(a, c),
        _mm512_shuffle_ps::<0xEE>(a, c),
        _mm512_shuffle_ps::<0x44>(b, d),
        _mm512_shuffle_ps::<0xEE>(b, d),
    ];
    // SAFETY: guaranteed by the caller.
    unsafe {
        for (j, tj) in t.iter().enumerate() {
            _mm_storeu_ps(out.add(j * stride), _mm512_castps512_ps128(*tj));
            _mm_storeu_ps(out.add((4 + j) * stride), _mm512_extractf32x4_ps::<1>(*tj));
            _mm_storeu_ps(out.add((8 + j) * stride), _mm512_extractf32x4_ps::<2>(*tj));
            _mm_storeu_ps(out.add((12 + j) * stride), _mm512_extractf32x4_ps::<3>(*tj));
        }
    }
}

/// Weight rows of a band ([`band_tiles`]): four 4-row tiles, one 64-byte line of f32.
const BAND_ROWS: usize = 4 * TILE_R;
const _: () = assert!(
    BAND_ROWS == 16,
    "a band's token line is one 512-bit register"
);

/// Whether consecutive token lines of an output with `stride` floats per line fall into at
/// most two sets of the L1 data cache (64 sets of 64-byte lines: the line stride is a
/// multiple of 2048 bytes, i.e. 512, 1024, 1536, 2048 … rows). A tile's 48 token lines then
/// compete for a set's 8 ways, and the 16-byte pieces that tiles store miss L1: the outputs
/// [`band_tiles`] is for.
fn aliased_lines(stride: usize) -> bool {
    (stride * 4).is_multiple_of(2048)
}

/// All tiles of a panel product, rows outer, so that the weight rows of a step stay in L1
/// while the token groups stream past. A step is one 4-row tile ([`row_tiles`]), or, for
/// outputs whose lines alias in L1 ([`aliased_lines`]), one band of 16 rows
/// ([`band_tiles`]); the rows past the last whole step go in 4-row tiles, then singly.
///
/// # Safety
/// As for [`tile`]: checked panels, `g0 + ng <= a.n_groups`, `out` is `ng·16` tokens ×
/// `w.rows`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn run<const HALVES: usize, const OFF: bool, const SB: bool>(
    w: &WeightPanel<'_>,
    a: &ActPanel<'_>,
    g0: usize,
    ng: usize,
    mut out: PanelOut<'_>,
) {
    let stride = out.stride(); // floats per token of `out`
    let o = out.as_mut_ptr();
    let banded = aliased_lines(stride);
    let step = if banded { BAND_ROWS } else { TILE_R };
    // The prefetch hint, cut into one slice of whole lines per step.
    let lines = w.prefetch.len().div_ceil(64);
    let per_step = lines.div_ceil((w.rows / step).max(1));
    // SAFETY: every tile stays inside rows 0..w.rows and groups g0..g0+ng, i.e. inside `out`.
    unsafe {
        let mut r = 0;
        while r + step <= w.rows {
            let first = (r / step) * per_step;
            for line in first..(first + per_step).min(lines) {
                // A prefetch is only a hint; the address is inside `w.prefetch`.
                _mm_prefetch::<_MM_HINT_T0>(w.prefetch.as_ptr().add(64 * line).cast());
            }
            if banded {
                band_tiles::<HALVES, OFF, SB>(w, a, r, g0, ng, o.add(r), stride);
            } else {
                row_tiles::<TILE_R, HALVES, OFF, SB>(w, a, r, g0, ng, o.add(r), stride);
            }
            r += step;
        }
        while r + TILE_R <= w.rows {
            row_tiles::<TILE_R, HALVES, OFF, SB>(w, a, r, g0, ng, o.add(r), stride);
            r += TILE_R;
        }
        while r < w.rows {
            row_tiles::<1, HALVES, OFF, SB>(w, a, r, g0, ng, o.add(r), stride);
            r += 1;
        }
    }
}

/// The tiles of rows `r .. r + 16` × all `ng` groups, for outputs whose token lines alias in
/// L1. Per block of [`TILE_G`] groups, the band's four 4-row tiles run one after the other
/// into a buffer of the block's token lines (3 KiB, in L1), and each line then goes to the
/// output as one 64-byte store. Stored directly, each tile would write 16-byte pieces of 48
/// token lines, the next tile of rows the next pieces after the sweep over the token groups
/// had pushed those lines out of L1: with gemma-3's 1024-row query product that cost 13 % of
/// the product (docs/PERFORMANCE.md, Round 18). On other outputs direct stores are faster,
/// since a band's weight rows do not stay in L1 as well as a tile's.
///
/// # Safety
/// As for [`tile`], for rows `r .. r + 16` and every group of `g0 .. g0 + ng`; `out` points at
/// row `r`, token 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn band_tiles<const HALVES: usize, const OFF: bool, const SB: bool>(
    w: &WeightPanel<'_>,
    a: &ActPanel<'_>,
    r: usize,
    g0: usize,
    ng: usize,
    out: *mut f32,
    stride: usize,
) {
    // [TILE_G · 16 tokens, BAND_ROWS] the band's results for one block of groups.
    let mut lines = [_mm512_setzero_ps(); TILE_G * GROUP];
    let buf = lines.as_mut_ptr().cast::<f32>();
    let mut gi = 0;
    // SAFETY: guaranteed by the caller; each tile covers 4 rows of the band and groups
    // gi .. gi + g ≤ ng, into `buf` (token line t of the block at t · BAND_ROWS).
    unsafe {
        while gi < ng {
            let g = (ng - gi).min(TILE_G);
            for sub in (0..BAND_ROWS).step_by(TILE_R) {
                // g ≤ TILE_G groups: one tile.
                row_tiles::<TILE_R, HALVES, OFF, SB>(
                    w,
                    a,
                    r + sub,
                    g0 + gi,
                    g,
                    buf.add(sub),
                    BAND_ROWS,
                );
            }
            for t in 0..g * GROUP {
                let line = _mm512_loadu_ps(buf.add(t * BAND_ROWS));
                _mm512_storeu_ps(out.add((gi * GROUP + t) * stride), line);
            }
            gi += g;
        }
    }
}

/// The tiles of rows `r .. r + R` × all `ng` groups: [`TILE_G`] groups at a time, then the
/// 1–2 remaining groups.
///
/// # Safety
/// As for [`tile`], for every group of `g0 .. g0 + ng`; `out` points at row `r`, token 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_tiles<const R: usize, const HALVES: usize, const OFF: bool, const SB: bool>(
    w: &WeightPanel<'_>,
    a: &ActPanel<'_>,
    r: usize,
    g0: usize,
    ng: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut gi = 0;
    while gi < ng {
        let g = (ng - gi).min(TILE_G);
        // SAFETY: guaranteed by the caller; the tile covers groups gi .. gi + g ≤ ng.
        unsafe {
            tile_of::<R, HALVES, OFF, SB>(g)(w, a, r, g0 + gi, out.add(gi * GROUP * stride), stride)
        };
        gi += g;
    }
}

/// [`tile`] for `g` (1 ..= [`TILE_G`]) token groups.
type TileFn = unsafe fn(&WeightPanel<'_>, &ActPanel<'_>, usize, usize, *mut f32, usize);

/// The [`tile`] of `R` rows × `g` token groups (1 ..= [`TILE_G`]).
fn tile_of<const R: usize, const HALVES: usize, const OFF: bool, const SB: bool>(
    g: usize,
) -> TileFn {
    match g {
        3 => tile::<R, 3, HALVES, OFF, SB>,
        2 => tile::<R, 2, HALVES, OFF, SB>,
        1 => tile::<R, 1, HALVES, OFF, SB>,
        _ => unreachable!("TILE_G ≤ 3"),
    }
}

/// The table's [`crate::panel::PanelGemmFn`].
fn panel_gemm(w: &WeightPanel<'_>, a: &ActPanel<'_>, g0: usize, ng: usize, out: PanelOut<'_>) {
    w.check();
    a.check();
    assert!(g0 + ng <= a.n_groups, "token groups out of range");
    assert_eq!(a.n_blocks * PANEL_BLOCK, w.cols, "panel widths differ");
    out.check(ng, w.rows);
    // SAFETY: shapes checked above; only reachable through a table built for a CPU with
    // these features.
    unsafe {
        match (w.sub_len, w.has_offset, a.scale_blocks == 8) {
            (32, false, false) => run::<1, false, false>(w, a, g0, ng, out),
            (32, true, false) => run::<1, true, false>(w, a, g0, ng, out),
            (32, false, true) => run::<1, false, true>(w, a, g0, ng, out),
            (32, true, true) => run::<1, true, true>(w, a, g0, ng, out),
            (16, false, true) => run::<2, false, true>(w, a, g0, ng, out),
            (16, false, false) => run::<2, false, false>(w, a, g0, ng, out),
            _ => unreachable!("checked by WeightPanel::check"),
        }
    }
}

// ----------------------------------------------------------------------------------------
// Activation panel.
// ----------------------------------------------------------------------------------------

/// The AVX-512 [`crate::panel::ActGroupFn`]: a full group of 16 tokens is transposed in
/// registers, per 32-value block 16 rows × 8 words of codes into 8 lines of 16 tokens
/// ([`transpose_16x8`]), and its `dy` / `sy` lines are gathered; a partial last group, or
/// rows too long for 32-bit gather offsets, go to the scalar builder. Writes the bytes of
/// [`crate::panel::build_group_scalar`] (tested in `kernels/tests/panel.rs`); the scalar
/// loop stored one word at a time, 8–9 % of a qwen 0.5b pp512 with the quantizer.
fn build_act_group(
    act_type: GgmlType,
    acts: &[u8],
    row_bytes: usize,
    n: usize,
    g: usize,
    cells: &mut [Line],
) {
    let nb = cells.len() / CELL_LINES;
    // Bytes of `nb` blocks of a row; `None`: a type without a panel (the scalar one panics).
    let need = match act_type {
        GgmlType::Q8_0 => Some(nb * 34),
        GgmlType::Q8_1 => Some(nb * 36),
        GgmlType::Q8_K if nb.is_multiple_of(8) => Some(nb / 8 * 292),
        _ => None,
    };
    let fits = need.is_some_and(|need| {
        row_bytes >= need
            && cells.len() == nb * CELL_LINES
            && (g + 1) * GROUP <= n
            && acts.len() >= n * row_bytes
            && row_bytes <= i32::MAX as usize / GROUP
    });
    if !fits {
        crate::panel::build_group_scalar(act_type, acts, row_bytes, n, g, cells);
        return;
    }
    // SAFETY: checked above: rows `16g .. 16g + 16` exist, each holds `nb` blocks of
    // `act_type`, `cells` holds `nb` cells, and offsets of 16 rows fit in an i32; the table
    // installs this function only after checking the CPU's AVX-512 features.
    unsafe {
        build_full_group(
            act_type,
            acts.as_ptr().add(g * GROUP * row_bytes),
            row_bytes,
            nb,
            cells.as_mut_ptr(),
        )
    }
}

/// [`build_act_group`] for 16 rows starting at `rows`.
///
/// # Safety
/// `rows` points at 16 rows of `row_bytes` bytes, each holding `nb` blocks of `act_type`
/// (Q8_0, Q8_1, or Q8_K with `nb % 8 == 0`); `16 · row_bytes` fits in an i32; `cells` is
/// writable for `nb · CELL_LINES` lines.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn build_full_group(
    act_type: GgmlType,
    rows: *const u8,
    row_bytes: usize,
    nb: usize,
    cells: *mut Line,
) {
    // Byte offset of each token's row, for the gathers.
    let offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(row_bytes as i32),
    );
    let flip = _mm512_set1_epi8(-128); // q + 128
                                       // SAFETY (loads, gathers, stores): every offset below stays inside one block of a row or
                                       // one cell, by the caller's contract.
    unsafe {
        for b in 0..nb {
            // (offset of the 32 codes, offset of the head) of block `b` in a row.
            let (codes, head) = match act_type {
                GgmlType::Q8_0 => (b * 34 + 2, b * 34),
                GgmlType::Q8_1 => (b * 36 + 4, b * 36),
                _ => (b / 8 * 292 + 4 + 32 * (b % 8), b / 8 * 292),
            };
            // Register i: [row i | row i + 4] (i < 4), [row i + 4 | row i + 8] (i ≥ 4).
            let load = |t: usize| _mm256_loadu_si256(rows.add(t * row_bytes + codes).cast());
            let z: [__m512i; 8] = std::array::from_fn(|i| {
                let lo = if i < 4 { i } else { i + 4 };
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load(lo)), load(lo + 4))
            });
            let cell = cells.add(b * CELL_LINES);
            for (k, line) in transpose_16x8(&z).into_iter().enumerate() {
                _mm512_store_si512(cell.add(k).cast(), _mm512_xor_si512(line, flip));
            }
            let words = _mm512_i32gather_epi32::<1>(offsets, rows.add(head).cast());
            let (dy, sy) = match act_type {
                GgmlType::Q8_0 => (
                    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words)),
                    _mm512_setzero_ps(),
                ),
                GgmlType::Q8_1 => (
                    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words)),
                    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(words))),
                ),
                _ => {
                    // `bsums[2j]`, `bsums[2j + 1]` of block `j = b % 8`, as one word.
                    let pair = head + 4 + 256 + 4 * (b % 8);
                    let bs = _mm512_i32gather_epi32::<1>(offsets, rows.add(pair).cast());
                    let sum = _mm512_add_epi32(
                        _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(bs)),
                        _mm512_srai_epi32::<16>(bs),
                    );
                    (_mm512_castsi512_ps(words), _mm512_cvtepi32_ps(sum))
                }
            };
            _mm512_store_ps(cell.add(DY_LINE).cast(), dy);
            _mm512_store_ps(cell.add(SY_LINE).cast(), sy);
        }
    }
}

/// 16 rows × 8 words (`z[i]` = rows `[i | i + 4]` for `i < 4`, `[i + 4 | i + 8]` after) to 8
/// lines: line `k` = word `k` of rows 0..16. Two 4 × 4 transposes within 128-bit lanes, then
/// one lane shuffle per line.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn transpose_16x8(z: &[__m512i; 8]) -> [__m512i; 8] {
    // Quarter q of `t[m]`: word `m` (q even) or `4 + m` (q odd) of 4 consecutive rows.
    let quads = |x: &[__m512i]| {
        let t0 = _mm512_unpacklo_epi32(x[0], x[1]);
        let t1 = _mm512_unpackhi_epi32(x[0], x[1]);
        let t2 = _mm512_unpacklo_epi32(x[2], x[3]);
        let t3 = _mm512_unpackhi_epi32(x[2], x[3]);
        [
            _mm512_unpacklo_epi64(t0, t2),
            _mm512_unpackhi_epi64(t0, t2),
            _mm512_unpacklo_epi64(t1, t3),
            _mm512_unpackhi_epi64(t1, t3),
        ]
    };
    // c: rows 0..4 (quarters 0, 1) and 4..8 (2, 3); d: rows 8..12 and 12..16.
    let (c, d) = (quads(&z[..4]), quads(&z[4..]));
    std::array::from_fn(|k| {
        let m = k % 4;
        if k < 4 {
            _mm512_shuffle_i32x4::<0b10_00_10_00>(c[m], d[m])
        } else {
            _mm512_shuffle_i32x4::<0b11_01_11_01>(c[m], d[m])
        }
    })
}

// ----------------------------------------------------------------------------------------
// Unpackers.
// ----------------------------------------------------------------------------------------

/// An IEEE half (bit pattern, little-endian bytes `b[o]`, `b[o + 1]`) as f32, with F16C
/// (exact, as [`f16_to_f32`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn half_at(b: &[u8], o: usize) -> f32 {
    let bits = u16::from_le_bytes([b[o], b[o + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// `−128 · Σ` of 32 signed codes (`vpsadbw` of the codes + 128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn bias32(v: __m256i) -> i32 {
    let s = _mm256_sad_epu8(
        _mm256_xor_si256(v, _mm256_set1_epi8(-128)),
        _mm256_setzero_si256(),
    );
    let s = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let sum = _mm_cvtsi128_si64(s) + _mm_extract_epi64::<1>(s); // Σ(w + 128)
    -128 * (sum as i32 - 32 * 128)
}

/// `−128 · Σ` of each 16-code half of 32 signed codes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn bias16x2(v: __m256i) -> (i32, i32) {
    let s = _mm256_sad_epu8(
        _mm256_xor_si256(v, _mm256_set1_epi8(-128)),
        _mm256_setzero_si256(),
    );
    let (lo, hi) = (_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let a = _mm_cvtsi128_si64(lo) + _mm_extract_epi64::<1>(lo);
    let b = _mm_cvtsi128_si64(hi) + _mm_extract_epi64::<1>(hi);
    (-128 * (a as i32 - 16 * 128), -128 * (b as i32 - 16 * 128))
}

/// 16 nibble bytes → 32 codes `0..15` (low nibbles first, as the block's value order).
///
/// # Safety
/// `qs` readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles32(qs: *const u8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    let q = unsafe { _mm_loadu_si128(qs.cast()) };
    let m4 = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), m4);
    _mm256_set_m128i(hi, lo)
}

/// Stores 32 codes at `codes[at..at + 32]` (checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn store32(codes: &mut [i8], at: usize, v: __m256i) {
    let dst = &mut codes[at..at + 32];
    // SAFETY: `dst` is 32 bytes long.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) };
}

/// Checks an unpacker's buffer lengths (a mismatch is a driver bug and panics).
fn check_lens(
    blocks: usize,
    elems: usize,
    sub: usize,
    c: &[i8],
    dw: &[f32],
    ow: &[f32],
    b: &[i32],
) {
    assert_eq!(c.len(), blocks * elems, "panel codes length");
    let ns = c.len() / sub;
    assert!(
        dw.len() == ns && ow.len() == ns && b.len() == ns,
        "panel scales length"
    );
}

/// The kinds of 32-value blocks, for [`unpack_legacy`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Legacy {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Iq4Nl,
}

/// Unpacks a row of 32-value blocks (`d`, optional `m`, optional `qh`, `qs`), given as raw
/// bytes with the block layout of `kind`.
///
/// # Safety
/// `w` holds whole blocks of `kind`; the lengths were checked with [`check_lens`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_legacy(
    kind: Legacy,
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    let bsz = match kind {
        Legacy::Q4_0 | Legacy::Iq4Nl => 18,
        Legacy::Q4_1 => 20,
        Legacy::Q5_0 => 22,
        Legacy::Q5_1 => 24,
        Legacy::Q8_0 => 34,
    };
    let tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_VALUES.as_ptr().cast()));
    for (i, blk) in w.chunks_exact(bsz).enumerate() {
        dw[i] = half_at(blk, 0);
        ow[i] = match kind {
            Legacy::Q4_1 | Legacy::Q5_1 => half_at(blk, 2),
            _ => 0.0,
        };
        // SAFETY: each block is `bsz` bytes long, so the 16 (or 32) code bytes at the
        // offsets below are in bounds.
        let v = unsafe {
            match kind {
                Legacy::Q4_0 => {
                    _mm256_sub_epi8(nibbles32(blk.as_ptr().add(2)), _mm256_set1_epi8(8))
                }
                Legacy::Q4_1 => nibbles32(blk.as_ptr().add(4)),
                Legacy::Iq4Nl => _mm256_shuffle_epi8(tbl, nibbles32(blk.as_ptr().add(2))),
                Legacy::Q5_0 | Legacy::Q5_1 => {
                    let o = if kind == Legacy::Q5_0 { 2 } else { 4 };
                    let qh = u32::from_le_bytes([blk[o], blk[o + 1], blk[o + 2], blk[o + 3]]);
                    let v = nibbles32(blk.as_ptr().add(o + 4));
                    let v = _mm256_mask_add_epi8(v, qh, v, _mm256_set1_epi8(16));
                    if kind == Legacy::Q5_0 {
                        _mm256_sub_epi8(v, _mm256_set1_epi8(16))
                    } else {
                        v
                    }
                }
                Legacy::Q8_0 => _mm256_loadu_si256(blk.as_ptr().add(2).cast()),
            }
        };
        store32(codes, 32 * i, v);
        bias[i] = bias32(v);
    }
}

/// Unpacks a row of Q4_K (`qh = false`) or Q5_K (`qh = true`) super-blocks.
///
/// # Safety
/// Lengths checked with [`check_lens`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_kx<const QH: bool>(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    let bsz = if QH { 176 } else { 144 };
    let m4 = _mm256_set1_epi8(0x0F);
    for (i, blk) in w.chunks_exact(bsz).enumerate() {
        let (d, dmin) = (half_at(blk, 0), half_at(blk, 2));
        let packed: &[u8; 12] = blk[4..16].try_into().expect("12 bytes");
        let (sc, m) = super::k4_scales_mins(packed);
        for j in 0..8 {
            dw[8 * i + j] = d * sc[j] as f32;
            ow[8 * i + j] = -(dmin * m[j] as f32);
        }
        let qs_at = if QH { 48 } else { 16 };
        // SAFETY: the block is `bsz` bytes: qh at 16..48 (Q5_K), qs at qs_at..qs_at+128.
        let qh = if QH {
            unsafe { _mm256_loadu_si256(blk.as_ptr().add(16).cast()) }
        } else {
            _mm256_setzero_si256()
        };
        for c in 0..4 {
            // SAFETY: as above.
            let q = unsafe { _mm256_loadu_si256(blk.as_ptr().add(qs_at + 32 * c).cast()) };
            let mut lo = _mm256_and_si256(q, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            if QH {
                let sixteen = _mm256_set1_epi8(16);
                let klo = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((1u8 << (2 * c)) as i8));
                let khi = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((2u8 << (2 * c)) as i8));
                lo = _mm256_mask_add_epi8(lo, klo, lo, sixteen);
                hi = _mm256_mask_add_epi8(hi, khi, hi, sixteen);
            }
            store32(codes, 256 * i + 64 * c, lo);
            store32(codes, 256 * i + 64 * c + 32, hi);
            bias[8 * i + 2 * c] = bias32(lo);
            bias[8 * i + 2 * c + 1] = bias32(hi);
        }
    }
}

/// Unpacks a row of Q6_K super-blocks (sub-blocks of 16).
///
/// # Safety
/// Lengths checked with [`check_lens`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_q6_k_impl(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(3);
    let m32 = _mm256_set1_epi8(32);
    for (i, blk) in w.chunks_exact(210).enumerate() {
        let d = half_at(blk, 208);
        for j in 0..16 {
            dw[16 * i + j] = d * (blk[192 + j] as i8) as f32;
            ow[16 * i + j] = 0.0;
        }
        for h in 0..2 {
            // SAFETY: ql at 64h..64h+64 and qh at 128+32h..+32 lie inside the 210 bytes.
            let (ql0, ql1, qh) = unsafe {
                (
                    _mm256_loadu_si256(blk.as_ptr().add(64 * h).cast()),
                    _mm256_loadu_si256(blk.as_ptr().add(64 * h + 32).cast()),
                    _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * h).cast()),
                )
            };
            let high = |shift: __m128i| {
                _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srl_epi16(qh, shift), m3))
            };
            let v = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), high(_mm_cvtsi32_si128(0))),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), high(_mm_cvtsi32_si128(2))),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    high(_mm_cvtsi32_si128(4)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    high(_mm_cvtsi32_si128(6)),
                ),
            ];
            for (k, &x) in v.iter().enumerate() {
                let x = _mm256_sub_epi8(x, m32);
                let at = 256 * i + 128 * h + 32 * k;
                store32(codes, at, x);
                let (b0, b1) = bias16x2(x);
                bias[at / 16] = b0;
                bias[at / 16 + 1] = b1;
            }
        }
    }
}

/// Defines a safe [`PanelUnpackFn`] adapter.
macro_rules! adapter {
    ($name:ident, $block:ty, $elems:expr, $sub:expr, |$w:ident, $c:ident, $d:ident, $o:ident, $b:ident| $call:expr) => {
        fn $name($w: &[u8], $c: &mut [i8], $d: &mut [f32], $o: &mut [f32], $b: &mut [i32]) {
            let size = std::mem::size_of::<$block>();
            assert!($w.len().is_multiple_of(size), "row is not whole blocks");
            check_lens($w.len() / size, $elems, $sub, $c, $d, $o, $b);
            // SAFETY: lengths checked; only reachable through a table built for a CPU with
            // AVX-512 F/BW/VL/VNNI.
            unsafe { $call }
        }
    };
}

adapter!(unpack_q4_0, BlockQ4_0, 32, 32, |w, c, d, o, b| {
    unpack_legacy(Legacy::Q4_0, w, c, d, o, b)
});
adapter!(unpack_q4_1, BlockQ4_1, 32, 32, |w, c, d, o, b| {
    unpack_legacy(Legacy::Q4_1, w, c, d, o, b)
});
adapter!(unpack_q5_0, BlockQ5_0, 32, 32, |w, c, d, o, b| {
    unpack_legacy(Legacy::Q5_0, w, c, d, o, b)
});
adapter!(unpack_q5_1, BlockQ5_1, 32, 32, |w, c, d, o, b| {
    unpack_legacy(Legacy::Q5_1, w, c, d, o, b)
});
adapter!(unpack_q8_0, BlockQ8_0, 32, 32, |w, c, d, o, b| {
    unpack_legacy(Legacy::Q8_0, w, c, d, o, b)
});
adapter!(unpack_iq4_nl, BlockIQ4_NL, 32, 32, |w, c, d, o, b| {
    unpack_legacy(Legacy::Iq4Nl, w, c, d, o, b)
});
adapter!(
    unpack_q4_k,
    BlockQ4_K,
    256,
    32,
    |w, c, d, o, b| unpack_kx::<false>(w, c, d, o, b)
);
adapter!(
    unpack_q5_k,
    BlockQ5_K,
    256,
    32,
    |w, c, d, o, b| unpack_kx::<true>(w, c, d, o, b)
);
adapter!(unpack_q6_k, BlockQ6_K, 256, 16, |w, c, d, o, b| {
    unpack_q6_k_impl(w, c, d, o, b)
});

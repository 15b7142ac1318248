//! The "panel" GEMM for prompt processing (`n > 1`): every weight format is first unpacked
//! to one plain 8-bit layout, then a single register-tiled int8 product serves all formats
//! (the approach of ik_llama.cpp, in our own design).
//!
//! **Weight panel** (per work item, rebuilt for every block of weight rows): each row of
//! `cols` values becomes `cols` signed bytes `w_q` plus, per sub-block of `sub_len` values
//! (32; 16 for Q6_K), an f32 scale `dw`, an f32 offset `ow` (formats with a minimum) and the
//! integer `bias = −128·Σw_q`, such that the dequantized weight is `dw·w_q + ow`. The codes
//! are row-major (`[rows, cols]`), the per-sub-block values sub-block-major
//! (`[n_sub, rows]`): the kernel broadcasts one row's value at a time either way, and the
//! interleaved types' unpackers ([`PanelGroupUnpackFn`]) compute them for 16 rows at once, in
//! one register, which then is one store.
//!
//! ```text
//! Q4_0  w = q−8        dw = d                 Q4_1  w = q      dw = d      ow = m
//! Q5_0  w = q−16       dw = d                 Q5_1  w = q      dw = d      ow = m
//! Q8_0  w = q          dw = d                 IQ4_NL w = table[q]          dw = d
//! Q4_K  w = q          dw = d·sc_j    ow = −dmin·m_j   (Q5_K likewise, q has 5 bits)
//! Q6_K  w = q−32       dw = d·sc_j    (sub-blocks of 16)
//! ```
//!
//! **Activation panel** (built once per matmul call from the already quantized Q8_0 / Q8_1 /
//! Q8_K rows, see [`build_act_panel`]): tokens in groups of [`GROUP`] = 16, and per group and
//! per 32-value block one 640-byte cell:
//!
//! ```text
//! cell = [codes: 8 k4 × 16 tokens × 4 bytes (u8 = q_y + 128)][dy: 16 × f32][sy: 16 × f32]
//! dy = the activation block's scale (Q8_K: the super-block's d)
//! sy = Q8_1: its s (= dy·Σq_y); Q8_K: Σq_y (unscaled); Q8_0: 0 (no offset format uses it)
//! ```
//!
//! so one 64-byte load gives 4 consecutive codes of 16 tokens: exactly the `u8` operand of
//! `vpdpbusd`, whose `i8` operand is 4 weight bytes of one row broadcast to every lane.
//!
//! **Product** (per weight row `r`, token `t`, summed over the blocks in order):
//!
//! ```text
//! acc  = bias_j + Σ_k w_q[k]·(q_y[k] + 128)         (exact: = Σ w_q·q_y)
//! tot  = fma(f32(acc), dw_j·dy, tot)
//! tot  = fma(ow_j, sy, tot)                         (formats with an offset)
//! ```
//!
//! With Q8_K activations (one `dy` per 256 values: the k-quants), the scale is applied once
//! per super-block, as ggml's k-quant dot products do, which saves a multiply per sub-block
//! and rounds less: `x = Σ_j fma(f32(acc_j), dw_j, x)` (+ `fma(ow_j, Σq_y, x)`), then
//! `tot = fma(x, dy, tot)`; the Q8_K panel's `sy` line holds the unscaled `Σq_y`.
//!
//! The 32-value formats without an offset (Q4_0, Q5_0, Q8_0, IQ4_NL) sum in the same runs of
//! 8 blocks (256 values), a blocked summation: `x = Σ_b fma(f32(acc_b), dw_b·dy_b, x)`, then
//! `tot += x` (also after the last, shorter run). Q4_1/Q5_1 keep the single chain above.
//! Every one of these orders is an equally valid rounding of the same exact integer sums;
//! this combination is the one whose results stay within llama.cpp's golden tolerance on all
//! 20 real-model goldens (docs/ACCURACY.md, "Float order and the real goldens").
//!
//! [`panel_gemm_scalar`] is the reference; the AVX-512 VNNI version
//! (`simd::x86::panel_avx512`) performs the same float operations in the same order, so the
//! two give the same bits, whatever the tile shape. Missing tokens of the last group are
//! padded with code 128 and `dy = sy = 0` (their outputs are 0 and never stored).

use bytemuck::{Pod, Zeroable};
use grist_gguf::GgmlType;

use crate::blocks::*;

/// Tokens per activation group (one 512-bit register of f32/i32 lanes).
pub const GROUP: usize = 16;
/// Values per activation block of the panel.
pub const PANEL_BLOCK: usize = 32;
/// 64-byte lines per (group, block) cell: 8 lines of codes, one of `dy`, one of `sy`.
pub const CELL_LINES: usize = 10;
/// Line of the cell holding `dy`.
pub const DY_LINE: usize = 8;
/// Line of the cell holding `sy`.
pub const SY_LINE: usize = 9;

/// One 64-byte-aligned cache line of the activation panel.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Line(pub [u8; 64]);

/// Unpacks one weight row (raw bytes of whole blocks) into the panel layout:
/// `codes`: `[cols]` signed bytes; `dw`, `ow`, `bias`: `[cols / sub_len]` per sub-block.
/// Lengths are checked by the caller ([`unpack_rows`]); a mismatch panics.
pub type PanelUnpackFn =
    fn(w_row: &[u8], codes: &mut [i8], dw: &mut [f32], ow: &mut [f32], bias: &mut [i32]);

/// How a weight format is unpacked to the panel layout.
#[derive(Clone, Copy, Debug)]
pub struct PanelFormat {
    /// The row unpacker.
    pub unpack: PanelUnpackFn,
    /// Values per sub-block with its own `dw` (32, or 16 for Q6_K).
    pub sub_len: usize,
    /// Whether the format has a per-sub-block offset `ow` (Q4_1, Q5_1, Q4_K, Q5_K).
    pub has_offset: bool,
}

/// An unpacked block of weight rows, borrowed from a [`WeightPanelBuf`].
#[derive(Clone, Copy, Debug)]
pub struct WeightPanel<'a> {
    /// `[rows, cols]` signed codes.
    pub codes: &'a [i8],
    /// `[n_sub, rows]` scales (sub-block `s` of row `r` at `s · rows + r`).
    pub dw: &'a [f32],
    /// `[n_sub, rows]` offsets (all zero / unused without offset).
    pub ow: &'a [f32],
    /// `[n_sub, rows]` integer corrections `−128·Σw_q`.
    pub bias: &'a [i32],
    /// Number of rows.
    pub rows: usize,
    /// Values per row (a multiple of [`PANEL_BLOCK`]).
    pub cols: usize,
    /// Values per sub-block (32 or 16).
    pub sub_len: usize,
    /// Whether `ow` is used.
    pub has_offset: bool,
    /// Bytes the caller reads next (the next work item's weights, or empty): a kernel may
    /// request them into the cache a slice at a time while it multiplies this panel, so that
    /// their transfer from DRAM overlaps the arithmetic instead of stalling the next unpack.
    /// Only a hint; it never changes a result.
    pub prefetch: &'a [u8],
}

impl WeightPanel<'_> {
    /// Sub-blocks per row.
    pub fn n_sub(&self) -> usize {
        self.cols / self.sub_len
    }

    /// Panics unless every buffer has the length the shape needs (kernels rely on it).
    pub fn check(&self) {
        let ns = self.cols / self.sub_len;
        assert!(self.sub_len == 16 || self.sub_len == 32, "sub_len");
        assert!(
            self.cols.is_multiple_of(PANEL_BLOCK),
            "cols not whole blocks"
        );
        assert!(
            !self.has_offset || self.sub_len == 32,
            "offset needs 32-value sub-blocks"
        );
        assert!(self.codes.len() >= self.rows * self.cols, "codes too short");
        assert!(self.dw.len() >= self.rows * ns, "dw too short");
        assert!(self.ow.len() >= self.rows * ns, "ow too short");
        assert!(self.bias.len() >= self.rows * ns, "bias too short");
    }
}

/// Unpacks one group of 16 rows of an interleaved weight type (e.g. Q4_K_R16,
/// `crate::formats::interleaved`) straight into the panel layout, with the bytes the base
/// type's [`PanelUnpackFn`] gives for the de-interleaved rows (tested bit for bit):
/// `group`: the group's `16 × row_bytes` bytes; `codes`: `[16, cols]`; `dw`, `ow`, `bias`:
/// sub-block `s` of group row `r` at `s · stride + r` (the group's part of a panel's
/// `[n_sub, stride]` arrays). A length mismatch panics.
///
/// Compared with de-interleaving the rows first, this skips a copy of every weight byte,
/// and with 16 rows in one register the scales and sums need no horizontal reduction.
pub type PanelGroupUnpackFn = fn(
    group: &[u8],
    cols: usize,
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
    stride: usize,
);

/// Rows per group of a [`PanelGroupUnpackFn`].
pub const UNPACK_GROUP_ROWS: usize = 16;

/// Reusable buffers for a weight panel (grown, never shrunk).
#[derive(Debug, Default)]
pub struct WeightPanelBuf {
    codes: Vec<i8>, // [rows, cols]
    dw: Vec<f32>,   // [n_sub, rows]
    ow: Vec<f32>,   // [n_sub, rows]
    bias: Vec<i32>, // [n_sub, rows]
    // One row's per-sub-block values, as a row unpacker writes them.
    row_dw: Vec<f32>,   // [n_sub]
    row_ow: Vec<f32>,   // [n_sub]
    row_bias: Vec<i32>, // [n_sub]
}

impl WeightPanelBuf {
    /// Grows the buffers for `rows` rows of `cols` values in sub-blocks of `sub_len`.
    fn reserve(&mut self, rows: usize, cols: usize, sub_len: usize) {
        let ns = cols / sub_len;
        grow(&mut self.codes, rows * cols, 0);
        grow(&mut self.dw, rows * ns, 0.0);
        grow(&mut self.ow, rows * ns, 0.0);
        grow(&mut self.bias, rows * ns, 0);
        grow(&mut self.row_dw, ns, 0.0);
        grow(&mut self.row_ow, ns, 0.0);
        grow(&mut self.row_bias, ns, 0);
    }

    /// The panel view of the first `rows` rows.
    fn view(&self, rows: usize, cols: usize, fmt: &PanelFormat) -> WeightPanel<'_> {
        let ns = cols / fmt.sub_len;
        WeightPanel {
            codes: &self.codes[..rows * cols],
            dw: &self.dw[..rows * ns],
            ow: &self.ow[..rows * ns],
            bias: &self.bias[..rows * ns],
            rows,
            cols,
            sub_len: fmt.sub_len,
            has_offset: fmt.has_offset,
            prefetch: &[],
        }
    }
}

/// Grows `v` to at least `len` elements.
fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// Unpacks `rows` weight rows (`w`: `rows × row_bytes` bytes) of `cols` values with `fmt`
/// into `buf`, and returns the panel view.
pub fn unpack_rows<'b>(
    fmt: &PanelFormat,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    cols: usize,
    buf: &'b mut WeightPanelBuf,
) -> WeightPanel<'b> {
    assert_eq!(w.len(), rows * row_bytes, "weight bytes");
    let ns = cols / fmt.sub_len;
    buf.reserve(rows, cols, fmt.sub_len);
    for r in 0..rows {
        let (dw, ow, bias) = (
            &mut buf.row_dw[..ns],
            &mut buf.row_ow[..ns],
            &mut buf.row_bias[..ns],
        );
        (fmt.unpack)(
            &w[r * row_bytes..(r + 1) * row_bytes],
            &mut buf.codes[r * cols..(r + 1) * cols],
            dw,
            ow,
            bias,
        );
        for s in 0..ns {
            buf.dw[s * rows + r] = dw[s];
            buf.ow[s * rows + r] = ow[s];
            buf.bias[s * rows + r] = bias[s];
        }
    }
    buf.view(rows, cols, fmt)
}

/// Unpacks `rows` weight rows of an interleaved type (`w`: `rows / 16` whole groups of rows
/// of `row_bytes` bytes) of `cols` values with its group unpacker `unpack` into `buf`; `fmt`
/// is the base type's format (sub-block length, offset). The same panel as de-interleaving
/// the rows and calling [`unpack_rows`] with `fmt`.
pub fn unpack_groups<'b>(
    unpack: PanelGroupUnpackFn,
    fmt: &PanelFormat,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    cols: usize,
    buf: &'b mut WeightPanelBuf,
) -> WeightPanel<'b> {
    const G: usize = UNPACK_GROUP_ROWS;
    assert_eq!(w.len(), rows * row_bytes, "weight bytes");
    assert!(
        rows.is_multiple_of(G),
        "{rows} rows is not whole groups of {G}"
    );
    let ns = cols / fmt.sub_len;
    buf.reserve(rows, cols, fmt.sub_len);
    let scales_len = rows * ns;
    for (g, group) in w.chunks_exact(G * row_bytes).enumerate() {
        let r0 = g * G;
        (unpack)(
            group,
            cols,
            &mut buf.codes[r0 * cols..(r0 + G) * cols],
            &mut buf.dw[r0..scales_len],
            &mut buf.ow[r0..scales_len],
            &mut buf.bias[r0..scales_len],
            rows,
        );
    }
    buf.view(rows, cols, fmt)
}

/// The activation panel: `n_groups × n_blocks` cells of [`CELL_LINES`] lines, group-major
/// (cell `(g, b)` starts at line `(g · n_blocks + b) · CELL_LINES`).
#[derive(Clone, Copy, Debug)]
pub struct ActPanel<'a> {
    /// The cells.
    pub lines: &'a [Line],
    /// Number of token groups (`ceil(n / 16)`).
    pub n_groups: usize,
    /// 32-value blocks per row.
    pub n_blocks: usize,
    /// Blocks sharing one activation scale: 1 (Q8_0, Q8_1), or 8 (Q8_K, whose `sy` line
    /// holds the unscaled `Σq_y`; see [`panel_gemm_scalar`]).
    pub scale_blocks: usize,
}

impl ActPanel<'_> {
    /// Panics unless `lines` holds every cell.
    pub fn check(&self) {
        assert!(
            self.lines.len() >= self.n_groups * self.n_blocks * CELL_LINES,
            "activation panel too short"
        );
        assert!(
            self.scale_blocks == 1 || (self.scale_blocks == 8 && self.n_blocks.is_multiple_of(8)),
            "scale_blocks"
        );
    }
}

/// Lines the activation panel of `n` tokens × `cols` values needs.
pub fn act_panel_lines(n: usize, cols: usize) -> usize {
    n.div_ceil(GROUP) * (cols / PANEL_BLOCK) * CELL_LINES
}

/// Blocks of 32 sharing one scale in activations of type `act_type` (8 for Q8_K).
pub fn scale_blocks(act_type: GgmlType) -> usize {
    if act_type == GgmlType::Q8_K {
        8
    } else {
        1
    }
}

/// Whether activations of type `act_type` can be put into a panel.
pub fn act_panel_supported(act_type: GgmlType) -> bool {
    matches!(act_type, GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K)
}

/// Builds the cells of one token group of an activation panel: `build(act_type, acts,
/// row_bytes, n, g, cells)` fills `cells` (`n_blocks × CELL_LINES` lines) for tokens
/// `16g .. min(16g + 16, n)` of the quantized rows `acts` (`n` rows of `row_bytes` bytes of
/// `act_type`, one of [`act_panel_supported`]). Implementations must write exactly the bytes
/// of [`build_group_scalar`]. [`crate::dispatch::Kernels::act_panel_group`] holds the one in
/// use.
pub type ActGroupFn =
    fn(act_type: GgmlType, acts: &[u8], row_bytes: usize, n: usize, g: usize, cells: &mut [Line]);

/// The reference [`ActGroupFn`]: token by token, block by block, 4 codes at a time.
pub fn build_group_scalar(
    act_type: GgmlType,
    acts: &[u8],
    row_bytes: usize,
    n: usize,
    g: usize,
    cells: &mut [Line],
) {
    let t_end = ((g + 1) * GROUP).min(n);
    if t_end - g * GROUP < GROUP {
        for cell in cells.chunks_exact_mut(CELL_LINES) {
            // Padding of a partial group: code 128 (q = 0), dy = sy = 0.
            for line in &mut cell[..DY_LINE] {
                line.0 = [128u8; 64];
            }
            cell[DY_LINE].0 = [0u8; 64];
            cell[SY_LINE].0 = [0u8; 64];
        }
    }
    for t in g * GROUP..t_end {
        let lane = t - g * GROUP;
        let row = &acts[t * row_bytes..(t + 1) * row_bytes];
        for (b, cell) in cells.chunks_exact_mut(CELL_LINES).enumerate() {
            // (codes q[32], dy, sy) of block b of this row.
            let (q, dy, sy): (&[u8], f32, f32) = match act_type {
                GgmlType::Q8_0 => {
                    let blk = &row[b * 34..(b + 1) * 34];
                    let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                    (&blk[2..34], d, 0.0) // no Q8_0-activated format has an offset
                }
                GgmlType::Q8_1 => {
                    let blk = &row[b * 36..(b + 1) * 36];
                    let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                    let s = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
                    (&blk[4..36], d, s)
                }
                GgmlType::Q8_K => {
                    let (sb, j) = (b / 8, b % 8);
                    let blk = &row[sb * 292..(sb + 1) * 292];
                    let d = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
                    let q = &blk[4 + 32 * j..4 + 32 * (j + 1)];
                    let bs = |i: usize| {
                        let o = 4 + 256 + 2 * i;
                        i16::from_le_bytes([blk[o], blk[o + 1]]) as i32
                    };
                    // Unscaled: the k-quant kernels apply `d` once per super-block.
                    (q, d, (bs(2 * j) + bs(2 * j + 1)) as f32)
                }
                other => unreachable!("no activation panel for {other}"),
            };
            // 4 codes at a time, each + 128 (flipping the sign bit of every byte).
            for (k4, line) in cell[..DY_LINE].iter_mut().enumerate() {
                let four =
                    u32::from_ne_bytes([q[4 * k4], q[4 * k4 + 1], q[4 * k4 + 2], q[4 * k4 + 3]]);
                words(line)[lane] = four ^ 0x8080_8080;
            }
            words(&mut cell[DY_LINE])[lane] = dy.to_bits();
            words(&mut cell[SY_LINE])[lane] = sy.to_bits();
        }
    }
}

/// A line as 16 native-endian 32-bit words (lane `i` = bytes `4i .. 4i + 4`).
fn words(line: &mut Line) -> &mut [u32; 16] {
    bytemuck::cast_mut(&mut line.0)
}

/// Builds the activation panel of `n` quantized rows (`acts`: `n × row_bytes` bytes of
/// `act_type`, `cols` values each) into the first [`act_panel_lines`] lines of `lines`
/// (grown if shorter, never shrunk), one group at a time with `build`. Groups are built in
/// parallel; the bytes do not depend on the thread count.
pub fn build_act_panel(
    build: ActGroupFn,
    act_type: GgmlType,
    acts: &[u8],
    row_bytes: usize,
    n: usize,
    cols: usize,
    lines: &mut Vec<Line>,
) {
    use rayon::prelude::*;
    assert!(
        act_panel_supported(act_type),
        "no activation panel for {act_type}"
    );
    assert!(cols.is_multiple_of(PANEL_BLOCK) && acts.len() >= n * row_bytes);
    let need = act_panel_lines(n, cols);
    if lines.len() < need {
        // Only grows: matmuls of different widths alternate (e.g. 896 and 4864 columns), and
        // shrinking would zero-fill megabytes again at every wider call.
        lines.resize(need, Line([0; 64]));
    }
    let per_group = (cols / PANEL_BLOCK) * CELL_LINES;
    if per_group == 0 {
        return;
    }
    lines[..need]
        .par_chunks_mut(per_group)
        .enumerate()
        .for_each(|(g, cells)| build(act_type, acts, row_bytes, n, g, cells));
}

/// Where a panel product writes: value (token `t`, weight row `r`) at `ptr[t · stride + r]`,
/// for `t < tokens` and `r < rows`. Either a dense `[tokens, rows]` buffer
/// ([`PanelOut::dense`]) or, so that the kernel stores straight into the matmul output
/// `y` (`[n, all_rows]`) instead of into a tile buffer that is then copied, a rectangle of
/// `y`: `stride` = its row length, the rectangle's first value at `ptr` (built inside this
/// crate by the matmul driver, which owns the exclusivity argument). Only the `rows` values of each of the `tokens` lines are
/// written; the values between them (other work items' rows) are never touched.
pub struct PanelOut<'o> {
    ptr: *mut f32,
    stride: usize,
    tokens: usize,
    rows: usize,
    _out: std::marker::PhantomData<&'o mut [f32]>,
}

impl<'o> PanelOut<'o> {
    /// All of `out` as `[out.len() / rows, rows]`.
    pub fn dense(out: &'o mut [f32], rows: usize) -> Self {
        assert!(
            rows > 0 && out.len().is_multiple_of(rows),
            "panel output of {} values is not whole lines of {rows}",
            out.len()
        );
        PanelOut {
            ptr: out.as_mut_ptr(),
            stride: rows,
            tokens: out.len() / rows,
            rows,
            _out: std::marker::PhantomData,
        }
    }

    /// The rectangle `ptr[t · stride + r]`, `t < tokens`, `r < rows`.
    ///
    /// # Safety
    /// `rows <= stride`; every address of the rectangle is valid for writes for `'o`, and
    /// nothing else reads or writes the rectangle's values while the `PanelOut` lives.
    pub(crate) unsafe fn from_raw_parts(
        ptr: *mut f32,
        stride: usize,
        tokens: usize,
        rows: usize,
    ) -> Self {
        assert!(rows <= stride, "panel output lines overlap");
        PanelOut {
            ptr,
            stride,
            tokens,
            rows,
            _out: std::marker::PhantomData,
        }
    }

    /// Token lines in the rectangle.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Values per token line (weight rows).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Floats from one token line to the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The first value, for kernels that store with their own addressing inside the
    /// rectangle (`t · stride + r`, `t < tokens`, `r < rows`).
    pub fn as_mut_ptr(&mut self) -> *mut f32 {
        self.ptr
    }

    /// Panics unless this is the output of `ng` token groups × `rows` weight rows, the shape
    /// every [`PanelGemmFn`] writes.
    pub fn check(&self, ng: usize, rows: usize) {
        assert!(
            self.tokens == ng * GROUP && self.rows == rows,
            "panel output is {} tokens × {} rows, the product {} × {rows}",
            self.tokens,
            self.rows,
            ng * GROUP
        );
    }

    /// Stores `v` at (token `t`, row `r`).
    pub fn set(&mut self, t: usize, r: usize, v: f32) {
        assert!(
            t < self.tokens && r < self.rows,
            "panel output index out of range"
        );
        // SAFETY: inside the rectangle (checked above), which is valid and exclusive by the
        // constructors' contracts.
        unsafe { *self.ptr.add(t * self.stride + r) = v };
    }
}

/// Multiplies a weight panel by token groups `g0 .. g0 + ng` of an activation panel: token
/// `16(g − g0) + lane` × weight row `r` into `out` at (token `16(g − g0) + lane`, row `r`)
/// (`out`: `ng × 16` tokens × `rows`, fully overwritten; padding tokens included).
/// Implementations must perform exactly the float operations of [`panel_gemm_scalar`], in
/// its order.
pub type PanelGemmFn =
    fn(w: &WeightPanel<'_>, a: &ActPanel<'_>, g0: usize, ng: usize, out: PanelOut<'_>);

/// The scalar reference panel product (see the module documentation for the arithmetic).
pub fn panel_gemm_scalar(
    w: &WeightPanel<'_>,
    a: &ActPanel<'_>,
    g0: usize,
    ng: usize,
    mut out: PanelOut<'_>,
) {
    w.check();
    a.check();
    assert!(g0 + ng <= a.n_groups && a.n_blocks * PANEL_BLOCK == w.cols);
    out.check(ng, w.rows);
    let halves = PANEL_BLOCK / w.sub_len; // weight sub-blocks per activation block
    let k4_per_sub = w.sub_len / 4;
    let sb = a.scale_blocks == 8;
    for r in 0..w.rows {
        let codes = &w.codes[r * w.cols..(r + 1) * w.cols];
        for gi in 0..ng {
            let g = g0 + gi;
            for lane in 0..GROUP {
                let mut tot = 0.0f32;
                // The sum of the current run of 8 blocks (256 values): the super-block of
                // the k-quants (scale_blocks = 8), and a blocked summation for the formats
                // without offset.
                let mut x = 0.0f32;
                let blocked = !sb && !w.has_offset;
                for b in 0..a.n_blocks {
                    let cell = &a.lines[(g * a.n_blocks + b) * CELL_LINES..][..CELL_LINES];
                    let f = |line: usize| {
                        let l = &cell[line].0[lane * 4..lane * 4 + 4];
                        f32::from_ne_bytes([l[0], l[1], l[2], l[3]])
                    };
                    let dy = f(DY_LINE);
                    if sb && b % 8 == 0 {
                        x = 0.0;
                    }
                    for h in 0..halves {
                        let s = b * halves + h;
                        let mut acc = w.bias[s * w.rows + r];
                        for k4 in h * k4_per_sub..(h + 1) * k4_per_sub {
                            for i in 0..4 {
                                let wq = codes[b * PANEL_BLOCK + k4 * 4 + i] as i32;
                                acc += wq * cell[k4].0[lane * 4 + i] as i32;
                            }
                        }
                        if sb {
                            x = (acc as f32).mul_add(w.dw[s * w.rows + r], x);
                        } else {
                            let scale = w.dw[s * w.rows + r] * dy;
                            if blocked {
                                x = (acc as f32).mul_add(scale, x);
                            } else {
                                tot = (acc as f32).mul_add(scale, tot);
                            }
                        }
                    }
                    if w.has_offset {
                        if sb {
                            x = w.ow[b * w.rows + r].mul_add(f(SY_LINE), x);
                        } else {
                            tot = w.ow[b * w.rows + r].mul_add(f(SY_LINE), tot);
                        }
                    }
                    if blocked && (b % 8 == 7 || b + 1 == a.n_blocks) {
                        tot += x;
                        x = 0.0;
                    }
                    if sb && b % 8 == 7 {
                        tot = x.mul_add(dy, tot);
                    }
                }
                out.set(gi * GROUP + lane, r, tot);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// Scalar unpackers (the references for the SIMD ones).
// ----------------------------------------------------------------------------------------

/// Sum of a run of codes.
fn sum_codes(c: &[i8]) -> i32 {
    c.iter().map(|&v| v as i32).sum()
}

/// Fills `bias` from `codes` (`bias[j] = −128·Σ codes of sub-block j`).
fn fill_bias(codes: &[i8], sub_len: usize, bias: &mut [i32]) {
    for (j, b) in bias.iter_mut().enumerate() {
        *b = -128 * sum_codes(&codes[j * sub_len..(j + 1) * sub_len]);
    }
}

/// Reads a row's bytes as blocks (copying when misaligned).
fn row_blocks<B: Pod>(w: &[u8]) -> std::borrow::Cow<'_, [B]> {
    crate::simd::blocks_of::<B>(w)
}

/// Checks the lengths handed to an unpacker.
fn check_unpack(blocks: usize, block_elems: usize, sub_len: usize, codes: &[i8], dw: &[f32]) {
    assert_eq!(codes.len(), blocks * block_elems, "panel codes length");
    assert_eq!(dw.len(), codes.len() / sub_len, "panel scales length");
}

/// The 32 codes of a block made of 16 nibble bytes (+ optional 5th bits), minus `zero`.
fn nibble_codes(qs: &[u8; 16], qh: u32, zero: i32, out: &mut [i8]) {
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) as i32 | (((qh >> j) & 1) << 4) as i32;
        let hi = (qs[j] >> 4) as i32 | (((qh >> (j + 16)) & 1) << 4) as i32;
        out[j] = (lo - zero) as i8;
        out[j + 16] = (hi - zero) as i8;
    }
}

/// The shared loop of the 32-value formats' scalar unpackers: `block` writes a block's 32
/// codes and returns its `(dw, ow)`; the sub-block biases follow from the codes.
fn unpack_blocks32<B: Pod>(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
    block: impl Fn(&B, &mut [i8]) -> (f32, f32),
) {
    let blocks = row_blocks::<B>(w);
    check_unpack(blocks.len(), 32, 32, codes, dw);
    for (i, b) in blocks.iter().enumerate() {
        (dw[i], ow[i]) = block(b, &mut codes[32 * i..32 * i + 32]);
    }
    fill_bias(codes, 32, bias);
}

/// Scalar unpacker of Q4_0: `w = q − 8`, `dw = d`.
pub fn unpack_q4_0_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    unpack_blocks32(w, codes, dw, ow, bias, |b: &BlockQ4_0, out| {
        nibble_codes(&b.qs, 0, 8, out);
        (f16_to_f32(b.d), 0.0)
    });
}

/// Scalar unpacker of Q4_1: `w = q`, `dw = d`, `ow = m`.
pub fn unpack_q4_1_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    unpack_blocks32(w, codes, dw, ow, bias, |b: &BlockQ4_1, out| {
        nibble_codes(&b.qs, 0, 0, out);
        (f16_to_f32(b.d), f16_to_f32(b.m))
    });
}

/// Scalar unpacker of Q5_0: `w = q − 16`, `dw = d`.
pub fn unpack_q5_0_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    unpack_blocks32(w, codes, dw, ow, bias, |b: &BlockQ5_0, out| {
        nibble_codes(&b.qs, u32::from_le_bytes(b.qh), 16, out);
        (f16_to_f32(b.d), 0.0)
    });
}

/// Scalar unpacker of Q5_1: `w = q`, `dw = d`, `ow = m`.
pub fn unpack_q5_1_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    unpack_blocks32(w, codes, dw, ow, bias, |b: &BlockQ5_1, out| {
        nibble_codes(&b.qs, u32::from_le_bytes(b.qh), 0, out);
        (f16_to_f32(b.d), f16_to_f32(b.m))
    });
}

/// Scalar unpacker of Q8_0: `w = q`, `dw = d`.
pub fn unpack_q8_0_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    unpack_blocks32(w, codes, dw, ow, bias, |b: &BlockQ8_0, out| {
        out.copy_from_slice(&b.qs);
        (f16_to_f32(b.d), 0.0)
    });
}

/// Scalar unpacker of IQ4_NL: `w = table[q]`, `dw = d`.
pub fn unpack_iq4_nl_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    unpack_blocks32(w, codes, dw, ow, bias, |b: &BlockIQ4_NL, out| {
        for j in 0..16 {
            out[j] = IQ4NL_VALUES[(b.qs[j] & 0x0F) as usize];
            out[j + 16] = IQ4NL_VALUES[(b.qs[j] >> 4) as usize];
        }
        (f16_to_f32(b.d), 0.0)
    });
}

/// Q4_K/Q5_K: codes of super-block `b` (`qh` = the 5th bits, if any) and its scales.
#[allow(clippy::too_many_arguments)]
fn unpack_kx(
    d: u16,
    dmin: u16,
    scales: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = crate::formats::search::get_scale_min_k4(j, scales);
    }
    let (d, dmin) = (f16_to_f32(d), f16_to_f32(dmin));
    for c in 0..4 {
        for l in 0..32 {
            let q = qs[32 * c + l];
            let (h0, h1) = match qh {
                Some(h) => (
                    ((h[l] >> (2 * c)) & 1) << 4,
                    ((h[l] >> (2 * c + 1)) & 1) << 4,
                ),
                None => (0, 0),
            };
            codes[64 * c + l] = ((q & 0x0F) | h0) as i8;
            codes[64 * c + 32 + l] = ((q >> 4) | h1) as i8;
        }
    }
    for j in 0..8 {
        dw[j] = d * sc[j] as f32;
        ow[j] = -(dmin * m[j] as f32);
    }
}

/// Scalar unpacker of Q4_K: `w = q`, `dw = d·sc_j`, `ow = −dmin·m_j`.
pub fn unpack_q4_k_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    unpack_superblocks(w, codes, dw, ow, bias, |b: &BlockQ4_K, c, s, o| {
        unpack_kx(b.d, b.dmin, &b.scales, &b.qs, None, c, s, o)
    });
}

/// Scalar unpacker of Q5_K: as Q4_K with the 5th bits from `qh`.
pub fn unpack_q5_k_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    unpack_superblocks(w, codes, dw, ow, bias, |b: &BlockQ5_K, c, s, o| {
        unpack_kx(b.d, b.dmin, &b.scales, &b.qs, Some(&b.qh), c, s, o)
    });
}

/// The shared loop of the Q4_K/Q5_K scalar unpackers: `superblock` fills a super-block's 256
/// codes and its 8 sub-block scales and offsets.
fn unpack_superblocks<B: Pod>(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
    superblock: impl Fn(&B, &mut [i8], &mut [f32], &mut [f32]),
) {
    let blocks = row_blocks::<B>(w);
    check_unpack(blocks.len(), 256, 32, codes, dw);
    for (i, b) in blocks.iter().enumerate() {
        superblock(
            b,
            &mut codes[256 * i..][..256],
            &mut dw[8 * i..][..8],
            &mut ow[8 * i..][..8],
        );
    }
    fill_bias(codes, 32, bias);
}

/// Scalar unpacker of Q6_K (sub-blocks of 16 values).
pub fn unpack_q6_k_scalar(
    w: &[u8],
    codes: &mut [i8],
    dw: &mut [f32],
    ow: &mut [f32],
    bias: &mut [i32],
) {
    let blocks = row_blocks::<BlockQ6_K>(w);
    check_unpack(blocks.len(), 256, 16, codes, dw);
    for (i, b) in blocks.iter().enumerate() {
        let c = &mut codes[256 * i..][..256];
        for h in 0..2 {
            let (ql, qh) = (&b.ql[64 * h..64 * h + 64], &b.qh[32 * h..32 * h + 32]);
            for l in 0..32 {
                let v = [
                    (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for (k, &q) in v.iter().enumerate() {
                    c[128 * h + 32 * k + l] = q as i8 - 32;
                }
            }
        }
        let d = f16_to_f32(b.d);
        for j in 0..16 {
            dw[16 * i + j] = d * b.scales[j] as f32;
            ow[16 * i + j] = 0.0;
        }
    }
    fill_bias(codes, 16, bias);
}

/// The scalar panel format of weight type `ty` (`None`: no panel path for it).
pub fn scalar_format(ty: GgmlType) -> Option<PanelFormat> {
    let (unpack, sub_len, has_offset): (PanelUnpackFn, usize, bool) = match ty {
        GgmlType::Q4_0 => (unpack_q4_0_scalar, 32, false),
        GgmlType::Q4_1 => (unpack_q4_1_scalar, 32, true),
        GgmlType::Q5_0 => (unpack_q5_0_scalar, 32, false),
        GgmlType::Q5_1 => (unpack_q5_1_scalar, 32, true),
        GgmlType::Q8_0 => (unpack_q8_0_scalar, 32, false),
        GgmlType::IQ4_NL => (unpack_iq4_nl_scalar, 32, false),
        GgmlType::Q4_K => (unpack_q4_k_scalar, 32, true),
        GgmlType::Q5_K => (unpack_q5_k_scalar, 32, true),
        GgmlType::Q6_K => (unpack_q6_k_scalar, 16, false),
        _ => return None,
    };
    Some(PanelFormat {
        unpack,
        sub_len,
        has_offset,
    })
}

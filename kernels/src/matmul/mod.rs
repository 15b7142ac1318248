//! Matrix multiplication: quantized weights `[rows, cols]` × f32 activations `[n, cols]`
//! → f32 outputs `[n, rows]` (`y[t][r] = Σ_c W[r][c] · x[t][c]`), for both token generation
//! (`n = 1`) and prompt processing (`n > 1`).
//!
//! How it works, as in ggml:
//! 1. the activations are quantized **once** per matmul to the weight type's activation type
//!    (Q8_0 for Q4_0, Q8_K for Q4_K, …), into a reusable [`ActivationScratch`]. Weights are
//!    never dequantized: the dot products run on the packed blocks in integer arithmetic.
//!    When several matrices read the same input (Q/K/V, gate/up), quantize once with
//!    [`quantize_activations`] and multiply them all in one parallel region with
//!    [`matmul_prequantized_many`] (one fork-join instead of one per matrix);
//! 2. token generation (`n = 1`): the output rows (of all the matrices, back to back) are
//!    split into a few contiguous ranges per thread, processed in parallel by the persistent
//!    spinning pool [`crate::pool`] (not rayon: its workers sleep between the tiny products
//!    of a token), with one `vec_dot` per output;
//! 3. prompt processing (`n > 1`): the output `[n, rows]` is cut into a grid of work items
//!    (a block of weight rows × an L2-sized block of activation rows), processed in parallel;
//!    an item runs the table's register-tiled product ([`crate::dispatch::GemmFn`]) when it
//!    has one, which reuses each unpacked weight register for several activation rows and
//!    each activation register for several weight rows. When the table has a panel GEMM
//!    ([`crate::panel`], AVX-512 VNNI) and the format an unpacker, that path is taken
//!    instead: the activations are transposed once per call into a panel (in
//!    [`quantize_activations_with`]), and each work item (64 weight rows × a chunk of token
//!    groups) unpacks its weight rows to plain bytes once, into a per-thread buffer, then runs
//!    one int8 microkernel shared by all formats. The items are laid out so that each
//!    thread's contiguous share of them holds the same work (`ItemPlan`).
//!
//! Determinism: every output value `y[t][r]` is computed by one kernel call on weight row
//! `r` and activation row `t` in an order that depends on neither the tile it falls in nor
//! the other rows (see [`crate::dispatch::GemmFn`]), and nothing is summed across threads.
//! The result is therefore the same for any number of threads and any chunking. A token
//! alone (`n = 1`, `vec_dot`) and in a batch (panel or tiles) may differ by float rounding
//! (see `GEMV_USES_TILES` and [`crate::panel`]).

use std::fmt;

use grist_gguf::GgmlType;
use rayon::prelude::*;

use crate::dispatch::{kernels, KernelEntry, Kernels, QuantizeActFn};
use crate::formats::FormatError;

mod batch;
mod gated;
mod gemv;
mod out;

use batch::gemm_many;
use gemv::gemv_many;
pub use gemv::prefetch_gemv;
use out::DisjointOut;

pub use gated::{
    matmul_prequantized_gated, matmul_prequantized_gated_quantize,
    matmul_prequantized_gated_quantize_with, matmul_prequantized_gated_with, GluFn,
    QUANTIZED_ROWS_PER_ITEM,
};

/// Why a matmul (or building its operands) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatmulError {
    /// grist has no dot-product kernel for this weight type.
    Unsupported(GgmlType),
    /// The row length is not a whole number of the type's blocks.
    NotBlockMultiple {
        /// The weight (or activation) type.
        ty: GgmlType,
        /// The row length in values.
        cols: usize,
        /// Values per block of `ty`.
        block_elems: usize,
    },
    /// The weight data does not hold exactly `rows × row bytes`.
    DataSize {
        /// Bytes `rows × cols` values of the type need.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A buffer has the wrong length for the shapes involved.
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Its required length.
        expected: usize,
        /// Its actual length.
        actual: usize,
    },
    /// The scratch holds activations quantized for another weight type (or none).
    ActivationType {
        /// The activation type the weights need.
        expected: GgmlType,
        /// The type the scratch holds (`None` = nothing quantized yet).
        actual: Option<GgmlType>,
    },
    /// An interleaved matrix ([`GgmlType::interleaved`]) whose row count is not a whole
    /// number of its groups.
    PartialGroup {
        /// The interleaved type.
        ty: GgmlType,
        /// The matrix's rows.
        rows: usize,
        /// Rows per group of `ty`.
        group_rows: usize,
    },
    /// A size computation overflowed `usize`.
    Overflow,
}

impl fmt::Display for MatmulError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatmulError::Unsupported(ty) => {
                write!(f, "matrix multiplication of {ty} weights is not supported")
            }
            MatmulError::NotBlockMultiple {
                ty,
                cols,
                block_elems,
            } => write!(
                f,
                "row length {cols} is not a multiple of the {ty} block size {block_elems}"
            ),
            MatmulError::DataSize { expected, actual } => write!(
                f,
                "weight data holds {actual} bytes, the matrix shape needs {expected}"
            ),
            MatmulError::Shape {
                what,
                expected,
                actual,
            } => {
                write!(f, "{what} holds {actual} values, expected {expected}")
            }
            MatmulError::ActivationType { expected, actual } => match actual {
                Some(a) => write!(
                    f,
                    "activations are quantized to {a}, the weights need {expected}"
                ),
                None => write!(f, "no activations quantized (the weights need {expected})"),
            },
            MatmulError::PartialGroup {
                ty,
                rows,
                group_rows,
            } => write!(
                f,
                "a {ty} matrix needs a multiple of {group_rows} rows, this one has {rows}"
            ),
            MatmulError::Overflow => f.write_str("matrix size overflows"),
        }
    }
}

impl std::error::Error for MatmulError {}

/// Bytes one row of `cols` values of `ty` occupies, checking block divisibility.
fn row_bytes(ty: GgmlType, cols: usize) -> Result<usize, MatmulError> {
    let block_elems = ty.block_elems();
    if !cols.is_multiple_of(block_elems) {
        return Err(MatmulError::NotBlockMultiple {
            ty,
            cols,
            block_elems,
        });
    }
    (cols / block_elems)
        .checked_mul(ty.block_bytes())
        .ok_or(MatmulError::Overflow)
}

/// A weight matrix `[rows, cols]` of any supported type, borrowing its bytes (typically a
/// memory-mapped GGUF tensor): row `r` is bytes `r * row_bytes .. (r + 1) * row_bytes`, except
/// in an interleaved type ([`GgmlType::interleaved`]), where only whole groups of rows are
/// contiguous (rows `16k .. 16(k + 1)` are bytes `16k × row_bytes .. 16(k + 1) × row_bytes`).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    ty: GgmlType,
    data: &'a [u8],
    rows: usize,
    cols: usize,
    row_bytes: usize,
}

impl<'a> QMatrix<'a> {
    /// Wraps `data` as a `[rows, cols]` matrix of `ty`. Fails if the type has no kernels,
    /// `cols` is not a whole number of blocks, or `data.len() != rows × row bytes`.
    pub fn new(
        ty: GgmlType,
        data: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, MatmulError> {
        if !crate::dispatch::supports_weight_type(ty) {
            return Err(MatmulError::Unsupported(ty));
        }
        let row_bytes = row_bytes(ty, cols)?;
        if let Some((_, group_rows)) = ty.interleaved() {
            if !rows.is_multiple_of(group_rows) {
                return Err(MatmulError::PartialGroup {
                    ty,
                    rows,
                    group_rows,
                });
            }
        }
        let expected = rows.checked_mul(row_bytes).ok_or(MatmulError::Overflow)?;
        if data.len() != expected {
            return Err(MatmulError::DataSize {
                expected,
                actual: data.len(),
            });
        }
        Ok(QMatrix {
            ty,
            data,
            rows,
            cols,
            row_bytes,
        })
    }

    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (outputs per activation row).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (values per row, the input dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// All the matrix's bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The bytes of row `r` (panics if `r >= rows`, or if the type is interleaved: its rows
    /// are not contiguous, see [`QMatrix::rows_plain`]).
    pub fn row(&self, r: usize) -> &'a [u8] {
        assert!(
            self.ty.interleaved().is_none(),
            "row {r} of an interleaved {} matrix is not contiguous",
            self.ty
        );
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Rows per group of an interleaved type (1 for the plain layouts): work on this matrix
    /// is cut at multiples of it.
    pub fn group_rows(&self) -> usize {
        self.ty.interleaved().map_or(1, |(_, rows)| rows)
    }

    /// Calls `f` with rows `r0 .. r0 + nr` in the plain layout of the base type, row after
    /// row (`[nr, row_bytes]` bytes): the matrix's own bytes, or for an interleaved type a
    /// de-interleaved copy in a per-thread buffer (`r0` and `nr` must then be whole groups,
    /// or `nr` reach the last row). What every kernel except an interleaved gemv reads.
    pub fn rows_plain<R>(&self, r0: usize, nr: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let rb = self.row_bytes;
        let bytes = &self.data[r0 * rb..(r0 + nr) * rb];
        if self.ty.interleaved().is_none() {
            return f(bytes);
        }
        with_plain_buffer(bytes.len(), |plain| {
            crate::formats::interleaved::deinterleave(self.ty, bytes, rb, plain)
                .unwrap_or_else(|e| panic!("rows {r0}+{nr} of a {} matrix: {e}", self.ty));
            f(plain)
        })
    }

    /// Calls `f` with row `r` in the plain layout of the base type (`row_bytes` bytes): an
    /// embedding lookup. For an interleaved type, a copy gathered into a per-thread buffer.
    pub fn row_plain<R>(&self, r: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        if self.ty.interleaved().is_none() {
            return f(self.row(r));
        }
        with_plain_buffer(self.row_bytes, |plain| {
            crate::formats::interleaved::extract_row(self.ty, self.data, self.row_bytes, r, plain)
                .unwrap_or_else(|e| panic!("row {r} of a {} matrix: {e}", self.ty));
            f(plain)
        })
    }

    /// The activation type these weights multiply with (ggml's `vec_dot_type`).
    pub fn act_type(&self) -> GgmlType {
        crate::formats::activation_type(self.ty).unwrap_or(GgmlType::F32)
    }
}

/// Calls `f` with a per-thread buffer of `len` bytes (8-byte aligned, for the block casts of
/// the kernels), grown on first use and never shrunk: where [`QMatrix::rows_plain`] and
/// [`QMatrix::row_plain`] put de-interleaved rows, so the hot path does not allocate.
fn with_plain_buffer<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_local! {
        static PLAIN_ROWS: std::cell::RefCell<Vec<u64>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    PLAIN_ROWS.with(|cell| {
        let mut buf = cell.borrow_mut();
        let words = len.div_ceil(8);
        if buf.len() < words {
            buf.resize(words, 0);
        }
        f(&mut bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..len])
    })
}

/// Quantized activations `[n, cols]` of one activation type, in a buffer that is allocated
/// once and only grows. Create one per executor and reuse it for every matmul.
///
/// The buffer is made of `u64`s so every row starts 8-byte aligned (rows are whole blocks,
/// and every block's size is a multiple of its alignment), which lets the kernels view rows
/// as block structs without copying.
#[derive(Debug, Default)]
pub struct ActivationScratch {
    buf: Vec<u64>, // [n, row_bytes] bytes, rounded up to whole u64s
    act_type: Option<GgmlType>,
    n: usize,
    cols: usize,
    row_bytes: usize,
    /// The activation panel of the current rows ([`crate::panel`]), built when `n > 1` and
    /// the table has a panel GEMM; `panel_ready` says whether it matches the current rows.
    panel: Vec<crate::panel::Line>, // [groups, blocks, CELL_LINES] lines
    panel_ready: bool,
}

impl ActivationScratch {
    /// An empty scratch; the first quantization allocates.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scratch pre-sized for `n` rows of `cols` values of `act_type`, so the hot path never
    /// allocates.
    pub fn with_capacity(act_type: GgmlType, n: usize, cols: usize) -> Result<Self, MatmulError> {
        let mut s = Self::new();
        s.reserve(act_type, n, cols)?;
        Ok(s)
    }

    /// Grows the buffer (if needed) to hold `n` rows of `cols` values of `act_type`.
    pub fn reserve(
        &mut self,
        act_type: GgmlType,
        n: usize,
        cols: usize,
    ) -> Result<(), MatmulError> {
        let bytes = n
            .checked_mul(row_bytes(act_type, cols)?)
            .ok_or(MatmulError::Overflow)?;
        let words = bytes.div_ceil(8);
        if self.buf.len() < words {
            self.buf.resize(words, 0);
        }
        Ok(())
    }

    /// The activation type of the current contents (`None` before the first quantization).
    pub fn act_type(&self) -> Option<GgmlType> {
        self.act_type
    }

    /// Number of activation rows currently held.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Values per activation row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The quantized bytes of activation row `t` (panics if `t >= n`).
    pub fn row(&self, t: usize) -> &[u8] {
        assert!(
            t < self.n,
            "activation row {t} out of range (n = {})",
            self.n
        );
        &self.bytes()[t * self.row_bytes..(t + 1) * self.row_bytes]
    }

    /// The quantized bytes of activation rows `t0 .. t0 + count`, back to back.
    pub fn rows(&self, t0: usize, count: usize) -> &[u8] {
        assert!(
            t0 + count <= self.n,
            "activation rows {t0}+{count} out of range (n = {})",
            self.n
        );
        &self.bytes()[t0 * self.row_bytes..(t0 + count) * self.row_bytes]
    }

    /// Bytes per quantized activation row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The activation panel of the current rows, if one was built (see [`crate::panel`]).
    pub fn act_panel(&self) -> Option<crate::panel::ActPanel<'_>> {
        self.panel_ready.then(|| crate::panel::ActPanel {
            lines: &self.panel,
            n_groups: self.n.div_ceil(crate::panel::GROUP),
            n_blocks: self.cols / crate::panel::PANEL_BLOCK,
            scale_blocks: self.act_type.map_or(1, crate::panel::scale_blocks),
        })
    }

    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.buf)[..self.n * self.row_bytes]
    }

    /// The bytes of the current rows, to be written (`[n, row_bytes]`).
    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.n * self.row_bytes;
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.buf)[..len]
    }

    /// Makes the scratch hold `n` rows of `cols` values of `act_type` (growing it if
    /// needed), whose bytes the caller then writes; the activation panel is marked stale.
    /// Returns the bytes per row.
    fn set_rows(
        &mut self,
        act_type: GgmlType,
        n: usize,
        cols: usize,
    ) -> Result<usize, MatmulError> {
        let rb = row_bytes(act_type, cols)?;
        self.reserve(act_type, n, cols)?;
        self.act_type = Some(act_type);
        self.n = n;
        self.cols = cols;
        self.row_bytes = rb;
        self.panel_ready = false;
        Ok(rb)
    }

    /// Prompt processing with a panel GEMM: transposes the quantized rows (all written) once
    /// into the activation panel that every panel matmul of these activations reads. Does
    /// nothing for one row, or when no format of `table` would read the panel.
    fn build_panel(&mut self, table: &Kernels) {
        let Some(act_type) = self.act_type else {
            return;
        };
        if self.panel_wanted(table) {
            let (n, rb, cols) = (self.n, self.row_bytes, self.cols);
            let bytes = &bytemuck::cast_slice::<u64, u8>(&self.buf)[..n * rb];
            crate::panel::build_act_panel(
                table.act_panel_group(),
                act_type,
                bytes,
                rb,
                n,
                cols,
                &mut self.panel,
            );
            self.panel_ready = true;
        }
    }

    /// Whether the current rows get an activation panel: more than one row, a table with a
    /// panel GEMM, and some format of the table that reads this activation type from a panel.
    fn panel_wanted(&self, table: &Kernels) -> bool {
        let Some(act_type) = self.act_type else {
            return false;
        };
        self.n > 1
            && table.panel_gemm().is_some()
            && crate::panel::act_panel_supported(act_type)
            && self.cols.is_multiple_of(crate::panel::PANEL_BLOCK)
            && GgmlType::all().any(|ty| {
                table
                    .entry(ty)
                    .is_some_and(|e| e.act_type == act_type && e.panel.is_some())
            })
    }

    /// Quantizes the rows `x` (`[n, cols]`, as set by [`Self::set_rows`]) with `quantize`
    /// and builds their activation panel in **one** parallel region: a task quantizes the
    /// rows of one token group ([`crate::panel::GROUP`] rows) and builds that group's panel
    /// cells while the rows are still in its L1. The bytes are those of quantizing every row
    /// and then calling [`crate::panel::build_act_panel`] (a group's cells depend only on
    /// its own rows), in one region instead of two.
    fn quantize_with_panel(
        &mut self,
        table: &Kernels,
        quantize: QuantizeActFn,
        x: &[f32],
        map: Option<RowMap<'_>>,
    ) {
        use crate::panel::{act_panel_lines, Line, CELL_LINES, GROUP, PANEL_BLOCK};
        let (act_type, n, cols, rb) = (
            self.act_type.expect("set_rows chose the type"),
            self.n,
            self.cols,
            self.row_bytes,
        );
        let need = act_panel_lines(n, cols);
        if self.panel.len() < need {
            // Only grows, as in `build_act_panel`.
            self.panel.resize(need, Line([0; 64]));
        }
        let build = table.act_panel_group();
        let per_group = (cols / PANEL_BLOCK) * CELL_LINES; // lines of one group's cells
        let len = n * rb;
        let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.buf)[..len];
        self.panel[..need]
            .par_chunks_mut(per_group)
            .zip(bytes.par_chunks_mut(GROUP * rb))
            .zip(x.par_chunks(GROUP * cols))
            .for_each(|((cells, group), rows)| {
                for (out, row) in group.chunks_mut(rb).zip(rows.chunks(cols)) {
                    quantize_row_mapped(quantize, map, row, out);
                }
                // The group's rows alone: token 0 of `group` is token 16g of the batch.
                build(act_type, group, rb, group.len() / rb, 0, cells);
            });
        self.panel_ready = true;
    }
}

/// Quantizes `x` (`[n, cols]` f32, row-major) to `act_type` into `scratch`, with the global
/// kernel table. Rows are quantized in parallel when `n > 1` (each row independently, so the
/// bytes do not depend on the thread count), and transposed into the activation panel in the
/// same parallel region when a panel product of the table reads these activations.
pub fn quantize_activations(
    act_type: GgmlType,
    x: &[f32],
    n: usize,
    cols: usize,
    scratch: &mut ActivationScratch,
) -> Result<(), MatmulError> {
    quantize_activations_with(kernels(), act_type, x, n, cols, scratch)
}

/// [`quantize_activations`] with an explicit kernel table.
pub fn quantize_activations_with(
    table: &Kernels,
    act_type: GgmlType,
    x: &[f32],
    n: usize,
    cols: usize,
    scratch: &mut ActivationScratch,
) -> Result<(), MatmulError> {
    quantize_activations_mapped_with(table, act_type, x, n, cols, scratch, None)
}

/// A transform of one f32 activation row, `map(src, dst)` (`dst.len() == src.len()`),
/// applied as the rows are quantized: the executor's RMSNorm of a layer's input, so that
/// the normalized rows are quantized straight from the core that computed them and never
/// stored as f32 (one parallel region and one pass over the batch fewer).
pub type RowMap<'a> = &'a (dyn Fn(&[f32], &mut [f32]) + Sync);

/// [`quantize_activations`] of `map(x)` row by row (see [`RowMap`]): the same bytes as
/// applying `map` to every row of a copy of `x` and quantizing that, with the global kernel
/// table.
pub fn quantize_activations_mapped(
    act_type: GgmlType,
    x: &[f32],
    n: usize,
    cols: usize,
    scratch: &mut ActivationScratch,
    map: RowMap<'_>,
) -> Result<(), MatmulError> {
    quantize_activations_mapped_with(kernels(), act_type, x, n, cols, scratch, Some(map))
}

thread_local! {
    /// One mapped f32 row ([`RowMap`]) on its way to the quantizer, per thread; grown on first
    /// use, then reused.
    static MAPPED_ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Quantizes `row` into `out`, through `map` when there is one.
fn quantize_row_mapped(
    quantize: QuantizeActFn,
    map: Option<RowMap<'_>>,
    row: &[f32],
    out: &mut [u8],
) {
    let Some(map) = map else {
        return quantize(row, out);
    };
    MAPPED_ROW.with_borrow_mut(|buf| {
        if buf.len() < row.len() {
            buf.resize(row.len(), 0.0);
        }
        let mapped = &mut buf[..row.len()];
        map(row, mapped);
        quantize(mapped, out);
    });
}

/// [`quantize_activations_with`] with an optional [`RowMap`].
#[allow(clippy::too_many_arguments)]
pub fn quantize_activations_mapped_with(
    table: &Kernels,
    act_type: GgmlType,
    x: &[f32],
    n: usize,
    cols: usize,
    scratch: &mut ActivationScratch,
    map: Option<RowMap<'_>>,
) -> Result<(), MatmulError> {
    let quantize: QuantizeActFn = table
        .quantizer(act_type)
        .ok_or(MatmulError::Unsupported(act_type))?;
    let expected = n.checked_mul(cols).ok_or(MatmulError::Overflow)?;
    if x.len() != expected {
        return Err(MatmulError::Shape {
            what: "activations x",
            expected,
            actual: x.len(),
        });
    }
    let rb = scratch.set_rows(act_type, n, cols)?;
    if n == 0 || cols == 0 {
        return Ok(());
    }
    if n == 1 {
        quantize_row_mapped(quantize, map, x, scratch.bytes_mut());
    } else if scratch.panel_wanted(table) {
        scratch.quantize_with_panel(table, quantize, x, map);
    } else {
        scratch
            .bytes_mut()
            .par_chunks_mut(rb)
            .zip(x.par_chunks(cols))
            .for_each(|(out, row)| quantize_row_mapped(quantize, map, row, out));
    }
    Ok(())
}

/// `y = x · Wᵀ` with activations already quantized in `scratch` (`[n, cols]`), global
/// kernels. `y`: `[n, rows]`, fully overwritten.
pub fn matmul_prequantized(
    w: &QMatrix<'_>,
    scratch: &ActivationScratch,
    y: &mut [f32],
) -> Result<(), MatmulError> {
    matmul_prequantized_with(kernels(), w, scratch, y)
}

/// [`matmul_prequantized`] with an explicit kernel table.
pub fn matmul_prequantized_with(
    table: &Kernels,
    w: &QMatrix<'_>,
    scratch: &ActivationScratch,
    y: &mut [f32],
) -> Result<(), MatmulError> {
    matmul_prequantized_many_with(table, &mut [(*w, y)], scratch)
}

/// `y_i = x · W_iᵀ` for several matrices that read the same quantized activations `x`
/// (`[n, cols]` in `scratch`), e.g. Wq/Wk/Wv or Wgate/Wup, in **one** parallel region:
/// the rows of all the matrices are split across the threads together, so the fork-join
/// cost (several microseconds per region on a 2-vCPU machine, docs/PERFORMANCE.md) is paid
/// once instead of once per matrix. Each `y_i` (`[n, W_i.rows]`) is fully overwritten and
/// holds exactly the bits [`matmul_prequantized`] would give it.
pub fn matmul_prequantized_many(
    jobs: &mut [(QMatrix<'_>, &mut [f32])],
    scratch: &ActivationScratch,
) -> Result<(), MatmulError> {
    matmul_prequantized_many_with(kernels(), jobs, scratch)
}

/// Most matrices one [`matmul_prequantized_many`] call takes (Q/K/V is the largest group).
pub const MAX_FUSED_MATRICES: usize = 8;

/// Checks one product of activations already quantized in `scratch` with `w` into an
/// output of `out_len` values: `table` has kernels for `w`'s format, `scratch` holds that
/// format's activation type and row length, and the output is `[n, w.rows]`. Returns the
/// kernels.
fn check_job<'t>(
    table: &'t Kernels,
    w: &QMatrix<'_>,
    scratch: &ActivationScratch,
    out_len: usize,
) -> Result<&'t KernelEntry, MatmulError> {
    let entry = table.entry(w.ty).ok_or(MatmulError::Unsupported(w.ty))?;
    if scratch.act_type != Some(entry.act_type) {
        return Err(MatmulError::ActivationType {
            expected: entry.act_type,
            actual: scratch.act_type,
        });
    }
    if scratch.cols != w.cols {
        return Err(MatmulError::Shape {
            what: "activation row",
            expected: w.cols,
            actual: scratch.cols,
        });
    }
    let expected = scratch.n.checked_mul(w.rows).ok_or(MatmulError::Overflow)?;
    if out_len != expected {
        return Err(MatmulError::Shape {
            what: "output y",
            expected,
            actual: out_len,
        });
    }
    Ok(entry)
}

/// One matrix of a fused matmul, checked: its kernels, its weights, and where its output goes.
#[derive(Clone, Copy)]
struct FusedJob<'w> {
    /// The kernels for rows in the plain layout (an interleaved type's base type's).
    entry: KernelEntry,
    /// An interleaved type's own token-generation kernel, reading the interleaved bytes.
    native_gemv: Option<crate::dispatch::GemvFn>,
    /// An interleaved type's own panel unpacker, reading the interleaved bytes.
    native_panel_group: Option<crate::panel::PanelGroupUnpackFn>,
    w: QMatrix<'w>,
    out: DisjointOut, // [n, w.rows]
}

/// [`matmul_prequantized_many`] with an explicit kernel table.
pub fn matmul_prequantized_many_with(
    table: &Kernels,
    jobs: &mut [(QMatrix<'_>, &mut [f32])],
    scratch: &ActivationScratch,
) -> Result<(), MatmulError> {
    if jobs.len() > MAX_FUSED_MATRICES {
        return Err(MatmulError::Shape {
            what: "fused matrices",
            expected: MAX_FUSED_MATRICES,
            actual: jobs.len(),
        });
    }
    let n = scratch.n;
    // Validate every job before touching any output.
    let mut fused: [Option<FusedJob<'_>>; MAX_FUSED_MATRICES] = [None; MAX_FUSED_MATRICES];
    let mut n_fused = 0;
    for (w, y) in jobs.iter_mut() {
        let entry = check_job(table, w, scratch, y.len())?;
        if y.is_empty() {
            continue;
        }
        if w.cols == 0 {
            y.fill(0.0);
            continue;
        }
        // An interleaved type runs its base type's kernels on de-interleaved rows, except
        // for its own token-generation kernel (see `KernelEntry::gemv`).
        let (entry, native_gemv, native_panel_group) = match w.ty.interleaved() {
            Some((base, _)) => (
                *table.entry(base).ok_or(MatmulError::Unsupported(base))?,
                entry.gemv,
                entry.panel_group,
            ),
            None => (*entry, None, None),
        };
        fused[n_fused] = Some(FusedJob {
            entry,
            native_gemv,
            native_panel_group,
            w: *w,
            out: DisjointOut::new(y),
        });
        n_fused += 1;
    }
    let Some(first) = fused[0] else {
        return Ok(()); // every output is empty (or was zero-filled)
    };
    let fused: [FusedJob<'_>; MAX_FUSED_MATRICES] =
        std::array::from_fn(|i| fused[i].unwrap_or(first));
    let fused = &fused[..n_fused];
    // From here on the outputs are only written through `fused[i].out`, at ranges the work
    // items below own exclusively; `jobs` (which holds the `&mut` borrows) stays borrowed
    // until this function returns, so nothing else can read or write them meanwhile.

    if n == 1 {
        gemv_many(fused, scratch);
        return Ok(());
    }

    gemm_many(table, fused, scratch);
    Ok(())
}

/// `y = x · Wᵀ`: quantizes `x` (`[n, cols]`) into `scratch` (reused across calls) and
/// multiplies, with the global kernels. `y`: `[n, rows]`.
pub fn matmul(
    w: &QMatrix<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut ActivationScratch,
) -> Result<(), MatmulError> {
    matmul_with(kernels(), w, x, n, y, scratch)
}

/// [`matmul`] with an explicit kernel table (used to compare ISAs).
pub fn matmul_with(
    table: &Kernels,
    w: &QMatrix<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut ActivationScratch,
) -> Result<(), MatmulError> {
    let entry = table.entry(w.ty).ok_or(MatmulError::Unsupported(w.ty))?;
    quantize_activations_with(table, entry.act_type, x, n, w.cols, scratch)?;
    matmul_prequantized_with(table, w, scratch, y)
}

/// Dequantizes one row of type `ty` (its raw bytes) into `out` (`out.len()` values), e.g.
/// looking up a token embedding. Same as [`crate::formats::dequantize_row`].
pub fn dequantize_row_into(
    ty: GgmlType,
    row_bytes: &[u8],
    out: &mut [f32],
) -> Result<(), FormatError> {
    crate::formats::dequantize_row(ty, row_bytes, out)
}

#[cfg(test)]
mod tests {
    use super::gemv::{gemv_prefetch_ranges, padded_rows};
    use super::*;
    use crate::dispatch::{select, Isa};

    /// A batched kernel for Q8_0 made of the scalar `vec_dot`, run in reverse row order so a
    /// wrong row/output pairing would show.
    fn rows_by_loop(w: &[u8], acts: &[u8], rb: usize, out: &mut [f32]) {
        let vd = select(Isa::Scalar)
            .unwrap()
            .entry(GgmlType::Q8_0)
            .unwrap()
            .vec_dot;
        for t in (0..out.len()).rev() {
            out[t] = vd(w, &acts[t * rb..(t + 1) * rb]);
        }
    }

    /// Quantizing with the panel in one region gives the rows and the panel that quantizing
    /// every row and then building the panel over all of them gives, for every panel
    /// activation type, partial last groups and 1–3 threads; and through a [`RowMap`] (one
    /// row, the panel path and the path without a panel), the bytes of the mapped rows.
    #[test]
    fn one_region_quantize_and_panel_match_the_two_steps() {
        let Some(table) = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar]
            .into_iter()
            .filter_map(|isa| select(isa).ok())
            .find(|t| t.panel_gemm().is_some())
        else {
            return; // no panel GEMM on this CPU: the path never runs
        };
        for act_type in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
            let Some(quantize) = table.quantizer(act_type) else {
                continue;
            };
            let cols = 512;
            for n in [2, 15, 16, 17, 33, 100] {
                let mut state = 0x9E37_79B9u32 ^ (n as u32);
                let x: Vec<f32> = (0..n * cols)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        (state % 20001) as f32 / 1000.0 - 10.0
                    })
                    .collect();
                // The two steps, by hand.
                let rb = row_bytes(act_type, cols).unwrap();
                let mut bytes = vec![0u8; n * rb];
                for (out, row) in bytes.chunks_mut(rb).zip(x.chunks(cols)) {
                    quantize(row, out);
                }
                let mut lines = Vec::new();
                crate::panel::build_act_panel(
                    table.act_panel_group(),
                    act_type,
                    &bytes,
                    rb,
                    n,
                    cols,
                    &mut lines,
                );
                for threads in 1..=3 {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut scratch = ActivationScratch::new();
                    pool.install(|| {
                        quantize_activations_with(table, act_type, &x, n, cols, &mut scratch)
                    })
                    .unwrap();
                    let what = format!("{act_type} n {n} threads {threads}");
                    assert!(scratch.rows(0, n) == &bytes[..], "rows differ: {what}");
                    let panel = scratch.act_panel().expect("panel built");
                    let need = crate::panel::act_panel_lines(n, cols);
                    assert!(
                        panel.lines[..need]
                            .iter()
                            .zip(&lines[..need])
                            .all(|(a, b)| a.0 == b.0),
                        "panel differs: {what}"
                    );
                    // The same rows reached through a map (negation, exact) of -x.
                    let negated: Vec<f32> = x.iter().map(|v| -v).collect();
                    let negate = |src: &[f32], dst: &mut [f32]| {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = -s;
                        }
                    };
                    let mut mapped = ActivationScratch::new();
                    pool.install(|| {
                        let map: RowMap<'_> = &negate;
                        quantize_activations_mapped_with(
                            table,
                            act_type,
                            &negated,
                            n,
                            cols,
                            &mut mapped,
                            Some(map),
                        )
                    })
                    .unwrap();
                    assert!(mapped.rows(0, n) == &bytes[..], "mapped rows: {what}");
                    let panel = mapped.act_panel().expect("panel built");
                    assert!(
                        panel.lines[..need]
                            .iter()
                            .zip(&lines[..need])
                            .all(|(a, b)| a.0 == b.0),
                        "mapped panel: {what}"
                    );
                }
                // One row (generation) and the path without a panel (scalar table): mapped
                // rows quantize as the rows themselves.
                let scalar = select(Isa::Scalar).unwrap();
                for (t, rows) in [(table, 1), (scalar, n)] {
                    let (mut a, mut b) = (ActivationScratch::new(), ActivationScratch::new());
                    quantize_activations_with(t, act_type, &x[..rows * cols], rows, cols, &mut a)
                        .unwrap();
                    let negated: Vec<f32> = x[..rows * cols].iter().map(|v| -v).collect();
                    let negate = |src: &[f32], dst: &mut [f32]| {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = -s;
                        }
                    };
                    quantize_activations_mapped_with(
                        t,
                        act_type,
                        &negated,
                        rows,
                        cols,
                        &mut b,
                        Some(&negate),
                    )
                    .unwrap();
                    assert!(a.rows(0, rows) == b.rows(0, rows), "{act_type} {rows} rows");
                }
            }
        }
    }

    #[test]
    fn batched_kernel_path_gives_the_same_results() {
        let (rows, cols) = (13, 64);
        let mut data = vec![0u8; rows * 68];
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for r in 0..rows {
            crate::formats::quantize_row(
                GgmlType::Q8_0,
                &w[r * cols..(r + 1) * cols],
                &mut data[r * 68..(r + 1) * 68],
            )
            .unwrap();
        }
        let m = QMatrix::new(GgmlType::Q8_0, &data, rows, cols).unwrap();
        let plain = select(Isa::Scalar).unwrap();
        let mut batched = plain.clone();
        assert!(batched.set_vec_dot_rows(GgmlType::Q8_0, rows_by_loop));
        assert!(batched
            .entry(GgmlType::Q8_0)
            .unwrap()
            .vec_dot_rows
            .is_some());
        for n in [1usize, 2, 4, 5, 9] {
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
                .collect();
            let (mut y1, mut y2) = (vec![0.0; n * rows], vec![1.0; n * rows]);
            let mut s = ActivationScratch::new();
            matmul_with(plain, &m, &x, n, &mut y1, &mut s).unwrap();
            matmul_with(&batched, &m, &x, n, &mut y2, &mut s).unwrap();
            assert_eq!(y1, y2, "n = {n}");
        }
        // Replacing the single-row kernel drops the (now stale) batched one.
        let vd = plain.entry(GgmlType::Q8_0).unwrap().vec_dot;
        batched.set_vec_dot(GgmlType::Q8_0, vd);
        assert!(batched
            .entry(GgmlType::Q8_0)
            .unwrap()
            .vec_dot_rows
            .is_none());
    }

    /// `rows × cols` weights of `ty` from a deterministic pseudo-random stream.
    fn weights(ty: GgmlType, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let rb = row_bytes(ty, cols).unwrap();
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let mut data = vec![0u8; rows * rb];
        let mut row = vec![0.0f32; cols];
        for r in 0..rows {
            for v in row.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *v = (state % 2001) as f32 / 1000.0 - 1.0;
            }
            crate::formats::quantize_row(ty, &row, &mut data[r * rb..(r + 1) * rb]).unwrap();
        }
        data
    }

    /// Random `ty` weights for a fused group of matrices with `shapes[i]` rows each (matrix
    /// `i` seeded with `seed + i`).
    fn group_weights(ty: GgmlType, shapes: &[usize], cols: usize, seed: u32) -> Vec<Vec<u8>> {
        shapes
            .iter()
            .zip(seed..)
            .map(|(&rows, s)| weights(ty, rows, cols, s))
            .collect()
    }

    /// The kernels' views of [`group_weights`]' matrices.
    fn group_views<'a>(
        ty: GgmlType,
        shapes: &[usize],
        data: &'a [Vec<u8>],
        cols: usize,
    ) -> Vec<QMatrix<'a>> {
        shapes
            .iter()
            .zip(data)
            .map(|(&rows, d)| QMatrix::new(ty, d, rows, cols).unwrap())
            .collect()
    }

    /// The fused product of several matrices gives, for every matrix, exactly the bits of a
    /// separate product, for token generation and prompt processing, with any thread count.
    #[test]
    fn fused_matmuls_match_separate_ones_bit_for_bit() {
        let cols = 256;
        for isa in [Isa::Scalar, Isa::detect_best()] {
            let table = select(isa).unwrap();
            for ty in [
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
            ] {
                // Odd shapes: 100 rows (not a multiple of the 16-row task grain), 1 row, 0 rows.
                let shapes = [100usize, 48, 1, 0, 33];
                let data = group_weights(ty, &shapes, cols, 7);
                let mats = group_views(ty, &shapes, &data, cols);
                for n in [1usize, 3, 70] {
                    let x: Vec<f32> = (0..n * cols)
                        .map(|i| ((i * 29 % 97) as f32 - 48.0) / 19.0)
                        .collect();
                    let mut s = ActivationScratch::new();
                    let act = mats[0].act_type();
                    quantize_activations_with(table, act, &x, n, cols, &mut s).unwrap();
                    let separate: Vec<Vec<f32>> = mats
                        .iter()
                        .map(|m| {
                            let mut y = vec![f32::NAN; n * m.rows()];
                            matmul_prequantized_with(table, m, &s, &mut y).unwrap();
                            y
                        })
                        .collect();
                    if n == 1 {
                        // Token generation: each output is exactly one `vec_dot`.
                        let vec_dot = table.entry(ty).unwrap().vec_dot;
                        for (m, y) in mats.iter().zip(&separate) {
                            for (r, v) in y.iter().enumerate() {
                                assert_eq!(v.to_bits(), vec_dot(m.row(r), s.row(0)).to_bits());
                            }
                        }
                    }
                    for threads in [1usize, 2, 3] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let mut outs: Vec<Vec<f32>> =
                            mats.iter().map(|m| vec![f32::NAN; n * m.rows()]).collect();
                        let mut jobs: Vec<(QMatrix<'_>, &mut [f32])> = mats
                            .iter()
                            .copied()
                            .zip(outs.iter_mut().map(|o| o.as_mut_slice()))
                            .collect();
                        pool.install(|| matmul_prequantized_many_with(table, &mut jobs, &s))
                            .unwrap();
                        for (j, (a, b)) in outs.iter().zip(&separate).enumerate() {
                            let (a, b): (Vec<u32>, Vec<u32>) = (
                                a.iter().map(|v| v.to_bits()).collect(),
                                b.iter().map(|v| v.to_bits()).collect(),
                            );
                            assert_eq!(a, b, "{isa:?} {ty} n {n} threads {threads} matrix {j}");
                        }
                    }
                }
            }
        }
    }

    /// The prefetch plan of a fused group names, for the worker segments `1..threads` in
    /// order, whole rows that tile the concatenated rows from the end of the caller's share
    /// (segment 0, about `1/threads` of them, never prefetched) to the last row, without a
    /// gap or an overlap.
    #[test]
    fn prefetch_ranges_are_the_workers_share_of_the_rows() {
        let (ty, cols) = (GgmlType::Q4_K, 256);
        let shapes = [100usize, 48, 1, 0, 33, 1536];
        let data = group_weights(ty, &shapes, cols, 3);
        let ws = group_views(ty, &shapes, &data, cols);
        let rb = ws[0].row_bytes;
        for threads in 1..=4 {
            for n in 1..=ws.len() {
                let group = &ws[..n];
                let total: usize = group.iter().map(|w| w.rows).sum();
                let padded_total: usize = group.iter().map(|w| padded_rows(w.rows)).sum();
                let (ranges, k) = gemv_prefetch_ranges(group, threads);
                // Map each range back to concatenated rows (and the first one's start to the
                // split's coordinates, where every matrix takes `padded_rows`).
                let mut rows = Vec::new();
                let mut caller_end_padded = padded_total;
                for &(segment, bytes) in &ranges[..k] {
                    assert!((1..threads).contains(&segment), "segment {segment}");
                    let (i, w) = group
                        .iter()
                        .enumerate()
                        .find(|(_, w)| w.data.as_ptr_range().contains(&bytes.as_ptr()))
                        .expect("a range outside the group's weights");
                    let off = bytes.as_ptr() as usize - w.data.as_ptr() as usize;
                    assert_eq!((off % rb, bytes.len() % rb), (0, 0), "whole rows");
                    let base: usize = group[..i].iter().map(|w| w.rows).sum();
                    if rows.is_empty() {
                        let padded_base: usize =
                            group[..i].iter().map(|w| padded_rows(w.rows)).sum();
                        caller_end_padded = padded_base + off / rb;
                    }
                    rows.push((segment, base + off / rb, base + (off + bytes.len()) / rb));
                }
                let what = format!("{threads} threads, {n} matrices, {total} rows");
                let caller_end = rows.first().map_or(total, |r| r.1);
                if threads == 1 {
                    assert_eq!(k, 0, "{what}: one thread prefetches nothing");
                } else {
                    assert!(
                        caller_end_padded >= padded_total / threads,
                        "{what}: caller's share too small"
                    );
                }
                let mut next = caller_end;
                for (j, &(segment, r0, r1)) in rows.iter().enumerate() {
                    assert_eq!(r0, next, "{what}: gap or overlap");
                    assert!(
                        j == 0 || segment >= rows[j - 1].0,
                        "{what}: segments out of order"
                    );
                    next = r1;
                }
                assert_eq!(next, total, "{what}: rows left out");
            }
        }
    }

    #[test]
    fn fused_matmul_refuses_bad_jobs_before_writing() {
        let table = select(Isa::Scalar).unwrap();
        let cols = 256;
        let d0 = weights(GgmlType::Q8_0, 4, cols, 1);
        let dk = weights(GgmlType::Q4_K, 4, cols, 2);
        let w0 = QMatrix::new(GgmlType::Q8_0, &d0, 4, cols).unwrap();
        let wk = QMatrix::new(GgmlType::Q4_K, &dk, 4, cols).unwrap();
        let x = vec![0.5f32; cols];
        let mut s = ActivationScratch::new();
        quantize_activations_with(table, GgmlType::Q8_0, &x, 1, cols, &mut s).unwrap();
        let (mut y0, mut yk) = (vec![7.0f32; 4], vec![7.0f32; 4]);
        // A Q4_K matrix needs Q8_K activations: an error, and no output touched.
        let err = matmul_prequantized_many_with(table, &mut [(w0, &mut y0), (wk, &mut yk)], &s)
            .unwrap_err();
        assert!(matches!(err, MatmulError::ActivationType { .. }), "{err}");
        assert_eq!((y0.clone(), yk.clone()), (vec![7.0; 4], vec![7.0; 4]));
        // A wrong output length.
        let err = matmul_prequantized_many_with(table, &mut [(w0, &mut y0[..3])], &s).unwrap_err();
        assert!(matches!(err, MatmulError::Shape { .. }), "{err}");
        // Too many matrices.
        let mut outs = vec![vec![0.0f32; 4]; MAX_FUSED_MATRICES + 1];
        let mut jobs: Vec<(QMatrix<'_>, &mut [f32])> =
            outs.iter_mut().map(|o| (w0, o.as_mut_slice())).collect();
        assert!(matmul_prequantized_many_with(table, &mut jobs, &s).is_err());
        // No jobs at all is fine.
        matmul_prequantized_many_with(table, &mut [], &s).unwrap();
    }
}

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
use std::ops::Range;

use grist_gguf::GgmlType;
use rayon::prelude::*;

use crate::dispatch::{kernels, KernelEntry, Kernels, QuantizeActFn, MAX_ACT_ROWS_PER_CALL};
use crate::formats::FormatError;

mod gated;
pub use gated::{
    matmul_prequantized_gated, matmul_prequantized_gated_quantize,
    matmul_prequantized_gated_quantize_with, matmul_prequantized_gated_with, GluFn,
    QUANTIZED_ROWS_PER_ITEM,
};

/// Fewest weight rows per parallel task for token generation (`n = 1`), so tiny matrices
/// are not split below the cost of a task.
const ROWS_PER_TASK_GEMV: usize = 32;
/// Groups of an interleaved matrix de-interleaved at a time when the table has no
/// interleaved token-generation kernel (scalar, AVX2, NEON).
const INTERLEAVED_GEMV_GROUPS: usize = 4;
/// Rows every token-generation task boundary falls on (one 64-byte line of f32 outputs, and
/// a whole group of every interleaved type).
const GEMV_ROW_ALIGN: usize = 16;
/// Parallel tasks per thread for token generation (`n = 1`): the rows are cut into
/// `threads × GEMV_TASKS_PER_THREAD` contiguous ranges, which the threads of [`crate::pool`]
/// claim in turn (docs/PERFORMANCE.md, "Persistent worker pool").
const GEMV_TASKS_PER_THREAD: usize = 4;
/// Whether token generation (`n = 1`) uses the table's tiled product (with one activation
/// row) instead of `vec_dot`. `true` would make every result independent of the batch size (a
/// token giving the same bits alone or in a batch) for the formats whose tiles sum in another
/// order than `vec_dot` (the AVX-512 32-value formats, Q4_K, Q5_K); `false` runs `vec_dot`, measured 5–9 %
/// faster at batch 1 on SmolLM2/gemma (docs/PERFORMANCE.md). grist guarantees bit-identical
/// results for any thread count (each output is still one `vec_dot` in a fixed order), not
/// for any batch split — llama.cpp does not either — so generation takes the faster path.
const GEMV_USES_TILES: bool = false;
/// Weight rows per work item when `n > 1`.
const ROWS_PER_TASK_GEMM: usize = 32;
/// Most activation rows per work item when `n > 1`.
const MAX_TOKENS_PER_TASK: usize = 64;
/// Weight rows per panel work item (unpacked once per item, see [`crate::panel`]).
const PANEL_ROWS: usize = 64;
/// Panel work items per thread the driver aims for (token groups are split when there are
/// too few row blocks).
const PANEL_ITEMS_PER_THREAD: usize = 4;
/// Bytes of the activation panel one panel kernel call streams (L2-resident, reused by
/// every tile of weight rows).
const PANEL_ACT_BYTES: usize = 512 * 1024;
/// Bytes of quantized activations a work item aims to use (an L2-sized block that is reused
/// for all of the item's weight rows).
const ACT_BLOCK_BYTES: usize = 256 * 1024;

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
        let wanted = self.n > 1
            && table.panel_gemm().is_some()
            && crate::panel::act_panel_supported(act_type)
            && self.cols.is_multiple_of(crate::panel::PANEL_BLOCK)
            && GgmlType::all().any(|ty| {
                table
                    .entry(ty)
                    .is_some_and(|e| e.act_type == act_type && e.panel.is_some())
            });
        if wanted {
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
}

/// Quantizes `x` (`[n, cols]` f32, row-major) to `act_type` into `scratch`, with the global
/// kernel table. Rows are quantized in parallel when `n > 1` (each row independently, so the
/// bytes do not depend on the thread count).
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
    let bytes = scratch.bytes_mut();
    if n == 1 {
        quantize(x, bytes);
    } else {
        bytes
            .par_chunks_mut(rb)
            .zip(x.par_chunks(cols))
            .for_each(|(out, row)| quantize(row, out));
        scratch.build_panel(table);
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

    // Prompt processing: a grid of work items per matrix, so both threads are busy for any
    // shape (few weight rows and many tokens, or the reverse).
    // - Panel path (the table has a panel GEMM and the format an unpacker): an item is a block
    //   of PANEL_ROWS weight rows (unpacked once per item) × a chunk of token groups;
    // - otherwise: a block of up to ROWS_PER_TASK_GEMM weight rows × a block of activation
    //   rows sized to stay in L2.
    let panel = scratch.act_panel().zip(table.panel_gemm());
    let uses_panel = |job: &FusedJob<'_>| panel.is_some() && job.entry.panel.is_some();
    let tb = (ACT_BLOCK_BYTES / scratch.row_bytes.max(1))
        .clamp(1, MAX_TOKENS_PER_TASK)
        .min(n);
    let n_tb = n.div_ceil(tb);
    // The panel matrices' row blocks, numbered back to back over the matrices: matrix i owns
    // blocks first_block[i] .. first_block[i + 1] (none without the panel path). Their items
    // come first, laid out by an `ItemPlan`; then the other matrices' items, matrix j owning
    // first_item[j] .. first_item[j + 1] of those, row blocks outer and token blocks inner
    // (rayon hands each thread a contiguous run of items, i.e. its own weight rows).
    let mut first_block = [0usize; MAX_FUSED_MATRICES + 1];
    let mut first_item = [0usize; MAX_FUSED_MATRICES + 1];
    for (i, job) in fused.iter().enumerate() {
        let (blocks, items) = if uses_panel(job) {
            (job.w.rows.div_ceil(PANEL_ROWS), 0)
        } else {
            (0, job.w.rows.div_ceil(ROWS_PER_TASK_GEMM) * n_tb)
        };
        first_block[i + 1] = first_block[i] + blocks;
        first_item[i + 1] = first_item[i] + items;
    }
    let plan = ItemPlan::new(
        first_block[fused.len()],
        n_groups_of(n),
        rayon::current_num_threads(),
    );
    let n_items = plan.len() + first_item[fused.len()];
    (0..n_items).into_par_iter().for_each(|item| {
        if item < plan.len() {
            let (act, gemm) = panel.expect("only the panel path has panel row blocks");
            let (global, g0, ng) = plan.item(item);
            let i = first_block[1..=fused.len()].partition_point(|&end| end <= global);
            let job = &fused[i];
            let fmt = job
                .entry
                .panel
                .expect("only panel matrices have row blocks");
            let r0 = (global - first_block[i]) * PANEL_ROWS;
            let nr = PANEL_ROWS.min(job.w.rows - r0);
            panel_item(job, &fmt, gemm, &act, r0, nr, g0, ng, n);
            return;
        }
        let item = item - plan.len();
        let i = first_item[1..=fused.len()].partition_point(|&end| end <= item);
        let job = &fused[i];
        let w = &job.w;
        let local_item = item - first_item[i];
        let (block, t0) = (local_item / n_tb, (local_item % n_tb) * tb);
        let r0 = block * ROWS_PER_TASK_GEMM;
        let (nr, nt) = (ROWS_PER_TASK_GEMM.min(w.rows - r0), tb.min(n - t0));
        let mut local = [0.0f32; ROWS_PER_TASK_GEMM * MAX_TOKENS_PER_TASK];
        let local = &mut local[..nr * nt]; // [nt, nr]
        w.rows_plain(r0, nr, |w_rows| {
            gemm_block(&job.entry, w_rows, w.row_bytes, scratch, t0, nt, local)
        });
        for (t, vals) in local.chunks_exact(nr).enumerate() {
            // SAFETY: item (block, t0) is the only one writing rows r0..r0+nr of output rows
            // t0..t0+nt of matrix i: the items' rectangles tile each `y` without overlap.
            unsafe { job.out.write((t0 + t) * w.rows + r0, vals) };
        }
    });
    Ok(())
}

/// How the panel path cuts `n_groups` token groups into chunks, given `row_blocks` blocks of
/// weight rows in the call ([`ItemPlan`]): `(groups per chunk, chunks)`, enough items (row
/// blocks × chunks) for each of `threads` threads to get [`PANEL_ITEMS_PER_THREAD`] of them.
fn panel_group_chunks(row_blocks: usize, n_groups: usize, threads: usize) -> (usize, usize) {
    let n_gc = (PANEL_ITEMS_PER_THREAD * threads)
        .div_ceil(row_blocks.max(1))
        .clamp(1, n_groups);
    let gc = n_groups.div_ceil(n_gc); // groups per chunk
    (gc, n_groups.div_ceil(gc))
}

/// How the panel work items of a product are laid out: `row_blocks` blocks of weight rows
/// (the caller's block size: [`PANEL_ROWS`], or the gated product's 256) × `n_groups` token
/// groups, cut so that every thread's contiguous share of the item indices holds the same
/// work (rayon splits an index range in halves, so with 2 threads each runs one half unless
/// it steals).
///
/// The blocks are first cut into `n_gc` chunks of token groups ([`panel_group_chunks`]),
/// `units` equal pieces of work in all. When `units` is not a multiple of `threads`, the
/// `rem` last units are cut once more, into one piece per thread, and each thread's share
/// is `whole` units followed by one piece of each of those: 19 row blocks on 2 threads give
/// each thread 9 blocks and half of the 19th, where the plain cut gave one thread 10 blocks
/// and the other 9 (the region then lasted 10 blocks' time instead of 9.5: qwen2.5-0.5b's
/// gate/up product, 4864 rows in items of 256, see docs/PERFORMANCE.md, Round 20).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ItemPlan {
    /// Token groups of the product.
    n_groups: usize,
    /// Chunks of token groups per row block, and groups per chunk.
    n_gc: usize,
    gc: usize,
    /// Threads the shares are cut for (1 when the units divide evenly: no shares needed).
    shares: usize,
    /// Whole units per share.
    whole: usize,
    /// Units cut into one piece per share, at the end of every share.
    rem: usize,
}

impl ItemPlan {
    /// The plan for `row_blocks` × `n_groups` on `threads` threads.
    pub(crate) fn new(row_blocks: usize, n_groups: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        let (gc, n_gc) = panel_group_chunks(row_blocks, n_groups, threads);
        let units = row_blocks * n_gc;
        // A unit is cut only if each piece still gets a token group (the last chunk of a
        // block is the shortest).
        let last_chunk = n_groups.saturating_sub((n_gc - 1) * gc);
        let (shares, whole, rem) = if units.is_multiple_of(threads) || last_chunk < threads {
            (1, units, 0)
        } else {
            (threads, units / threads, units % threads)
        };
        ItemPlan {
            n_groups,
            n_gc,
            gc,
            shares,
            whole,
            rem,
        }
    }

    /// Number of items.
    pub(crate) fn len(&self) -> usize {
        self.shares * (self.whole + self.rem)
    }

    /// Item `i` (`< len()`): `(row block, first token group, token groups)`.
    pub(crate) fn item(&self, i: usize) -> (usize, usize, usize) {
        let unit = |u: usize| {
            let (block, chunk) = (u / self.n_gc, u % self.n_gc);
            let g0 = chunk * self.gc;
            (block, g0, self.gc.min(self.n_groups - g0))
        };
        let (share, j) = (i / (self.whole + self.rem), i % (self.whole + self.rem));
        if j < self.whole {
            return unit(share * self.whole + j);
        }
        // Piece `share` of one of the last `rem` units.
        let (block, g0, ng) = unit(self.shares * self.whole + (j - self.whole));
        let (a, b) = (share * ng / self.shares, (share + 1) * ng / self.shares);
        (block, g0 + a, b - a)
    }
}

/// Token groups per panel kernel call for weights of `cols` values and an item of `ng`
/// groups: as many as fit in [`PANEL_ACT_BYTES`] of activation panel (at least one).
fn panel_groups_per_call(cols: usize, ng: usize) -> usize {
    use crate::panel::{CELL_LINES, PANEL_BLOCK};
    let per_group = (cols / PANEL_BLOCK) * CELL_LINES * 64;
    (PANEL_ACT_BYTES / per_group.max(1)).clamp(1, ng)
}

/// Unpacks rows `r0 .. r0 + nr` of `w` into `buf` with the panel format `fmt`: an
/// interleaved type with a group unpacker `group` straight from its 16-row groups, any other
/// after [`QMatrix::rows_plain`] (which de-interleaves if need be). The same panel either way.
fn unpack_panel<'b>(
    w: &QMatrix<'_>,
    fmt: &crate::panel::PanelFormat,
    group: Option<crate::panel::PanelGroupUnpackFn>,
    r0: usize,
    nr: usize,
    buf: &'b mut crate::panel::WeightPanelBuf,
) -> crate::panel::WeightPanel<'b> {
    let rb = w.row_bytes;
    match group {
        // Panel items start at multiples of PANEL_ROWS, and an interleaved matrix has whole
        // groups: `nr` is a multiple of 16 (`unpack_groups` checks it).
        Some(group) if w.group_rows() > 1 => {
            let bytes = &w.data[r0 * rb..(r0 + nr) * rb];
            crate::panel::unpack_groups(group, fmt, bytes, rb, nr, w.cols, buf)
        }
        _ => w.rows_plain(r0, nr, |rows| {
            crate::panel::unpack_rows(fmt, rows, rb, nr, w.cols, buf)
        }),
    }
}

/// Token groups of `n` tokens.
fn n_groups_of(n: usize) -> usize {
    n.div_ceil(crate::panel::GROUP)
}

/// The weight bytes a panel work item's thread most likely reads next, for the kernel to
/// prefetch while it multiplies ([`crate::panel::WeightPanel::prefetch`]): the next block of
/// rows of `w` if this item (rows `r0 .. r0 + nr`) is the last token chunk of its row block
/// (rayon hands a thread consecutive items, so its next one starts the next row block), else
/// nothing (the next item reuses this block's rows).
fn next_item_weights<'w>(w: &QMatrix<'w>, r0: usize, nr: usize, last_chunk: bool) -> &'w [u8] {
    let next = r0 + nr;
    if !last_chunk || next >= w.rows {
        return &[];
    }
    let end = (next + PANEL_ROWS).min(w.rows);
    &w.data[next * w.row_bytes..end * w.row_bytes]
}

/// Per-thread buffers of the panel path, allocated on first use and only grown.
#[derive(Default)]
struct PanelScratch {
    weights: crate::panel::WeightPanelBuf,
    out: Vec<f32>, // [groups × 16, nr]
}

thread_local! {
    static PANEL_SCRATCH: std::cell::RefCell<PanelScratch> =
        std::cell::RefCell::new(PanelScratch::default());
}

/// One panel work item: unpacks weight rows `r0 .. r0 + nr` of `job` once, then multiplies
/// them by token groups `g0 .. g0 + ng` in L2-sized blocks of groups, and stores the outputs
/// of the real tokens (`< n`). Every output is computed by the panel kernel in its fixed
/// order, so the cut into items does not change any bit.
#[allow(clippy::too_many_arguments)]
fn panel_item(
    job: &FusedJob<'_>,
    fmt: &crate::panel::PanelFormat,
    gemm: crate::panel::PanelGemmFn,
    act: &crate::panel::ActPanel<'_>,
    r0: usize,
    nr: usize,
    g0: usize,
    ng: usize,
    n: usize,
) {
    use crate::panel::{PanelOut, GROUP};
    let w = &job.w;
    let gb = panel_groups_per_call(w.cols, ng);
    PANEL_SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        let PanelScratch { weights, out } = &mut *guard;
        let mut wp = unpack_panel(w, fmt, job.native_panel_group, r0, nr, weights);
        wp.prefetch = next_item_weights(w, r0, nr, g0 + ng == n_groups_of(n));
        if out.len() < nr * GROUP {
            out.resize(nr * GROUP, 0.0);
        }
        for gs in (g0..g0 + ng).step_by(gb) {
            let ngs = gb.min(g0 + ng - gs);
            let t0 = gs * GROUP;
            // The groups whose 16 tokens all exist are stored straight into `y`; a last,
            // partial group (its padding tokens have no line in `y`) goes through the tile
            // buffer. Splitting the call changes no bit (the kernel's order does not depend
            // on the tile shape).
            let full = ((n - t0) / GROUP).min(ngs);
            if full > 0 {
                // SAFETY: this item is the only one writing rows r0..r0+nr of the outputs of
                // tokens in groups g0..g0+ng of this matrix (items tile `y` without overlap).
                let o = unsafe { job.out.rect(w.rows, t0, full * GROUP, r0, nr) };
                gemm(&wp, act, gs, full, o);
            }
            if full < ngs {
                let o = &mut out[..nr * GROUP]; // [16, nr]: the last group
                gemm(&wp, act, gs + full, 1, PanelOut::dense(o, nr));
                let first = t0 + full * GROUP;
                for (lane, vals) in o.chunks_exact(nr).take(n - first).enumerate() {
                    // SAFETY: as above.
                    unsafe { job.out.write((first + lane) * w.rows + r0, vals) };
                }
            }
        }
    });
}

/// Token generation (`n = 1`) for a group of matrices: the rows of all of them, back to
/// back, are cut into [`gemv_tasks`] contiguous ranges processed in parallel by
/// [`crate::pool::run`]; each output is one `vec_dot` (or, with [`GEMV_USES_TILES`], the tiled
/// product), as in a separate call.
fn gemv_many(fused: &[FusedJob<'_>], scratch: &ActivationScratch) {
    let act = scratch.row(0);
    let total: usize = fused.iter().map(|j| padded_rows(j.w.rows)).sum();
    let split = GemvSplit::new(total, rayon::current_num_threads());
    let run = |task: usize| {
        for_each_part(
            fused.iter().map(|j| j.w.rows),
            split.task_rows(task),
            |i, rows| {
                let job = &fused[i];
                // SAFETY: this task is the only one covering these concatenated rows, i.e.
                // `rows` of this matrix's output (tasks' row ranges do not overlap).
                let out = unsafe { job.out.slice_mut(rows.start, rows.len()) };
                gemv_rows(job, rows.start, act, scratch.row_bytes, out);
            },
        );
    };
    // The persistent spinning pool, not rayon: its workers are awake between the ~150–210
    // products of a token (docs/PERFORMANCE.md, "Persistent worker pool").
    crate::pool::run(split.n_tasks, &run);
}

/// How [`gemv_many`] cuts the `total` rows of a fused group (its matrices' rows, back to
/// back, each matrix's count rounded up to [`GEMV_ROW_ALIGN`] by [`padded_rows`]) into
/// tasks: [`gemv_tasks`] of them, `rows_per_task` rows each (the last ones may be shorter or
/// empty). Every matrix thus starts, and every task boundary falls, on a multiple of 16
/// rows: one line of outputs, and a whole group of an interleaved matrix. [`prefetch_gemv`]
/// cuts the same way, so a worker prefetches exactly the rows it will be given.
#[derive(Clone, Copy)]
struct GemvSplit {
    total: usize,
    n_tasks: usize,
    /// A multiple of [`GEMV_ROW_ALIGN`] rows.
    rows_per_task: usize,
}

/// A matrix's row count as it takes room in a [`GemvSplit`]: rounded up to
/// [`GEMV_ROW_ALIGN`] (the padding rows belong to no matrix and are skipped).
fn padded_rows(rows: usize) -> usize {
    rows.next_multiple_of(GEMV_ROW_ALIGN)
}

impl GemvSplit {
    fn new(total: usize, threads: usize) -> GemvSplit {
        let n_tasks = gemv_tasks(total, threads);
        let rows_per_task = total.div_ceil(n_tasks).next_multiple_of(GEMV_ROW_ALIGN);
        GemvSplit {
            total,
            n_tasks,
            rows_per_task,
        }
    }

    /// The concatenated rows of tasks `tasks`.
    fn rows_of(&self, tasks: Range<usize>) -> Range<usize> {
        (tasks.start * self.rows_per_task).min(self.total)
            ..(tasks.end * self.rows_per_task).min(self.total)
    }

    /// The concatenated rows of task `task`.
    fn task_rows(&self, task: usize) -> Range<usize> {
        self.rows_of(task..task + 1)
    }
}

/// Calls `f(i, local)` for each matrix `i` of a fused group (`rows`: their row counts, the
/// rows back to back, each taking [`padded_rows`] of room) that the concatenated rows `span`
/// touch, `local` being its rows there.
fn for_each_part(
    rows: impl Iterator<Item = usize>,
    span: Range<usize>,
    mut f: impl FnMut(usize, Range<usize>),
) {
    let mut base = 0; // first concatenated row of matrix i
    for (i, n) in rows.enumerate() {
        let (r0, r1) = (span.start.max(base), span.end.min(base + n));
        if r0 < r1 {
            f(i, r0 - base..r1 - base);
        }
        base += padded_rows(n);
    }
}

/// Names the weights that the next token-generation (`n = 1`) product over `ws` (one fused
/// group, as [`matmul_prequantized_many`] gets it) will read, for
/// [`crate::pool::prefetch_while_idle`]: each worker's segment of the tasks, as
/// `gemv_many` will cut them. Call it right before the product that precedes `ws`; the
/// workers then stream these weights whenever they wait (docs/PERFORMANCE.md, "Token
/// generation, round 5"). The caller's own segment is left out: the lines a worker prefetches
/// land in that worker's caches, and the caller would fetch them from another core.
/// Results are unaffected (prefetches only move cache lines).
pub fn prefetch_gemv(ws: &[QMatrix<'_>]) {
    let (ranges, k) = gemv_prefetch_ranges(ws, rayon::current_num_threads());
    crate::pool::prefetch_while_idle(&ranges[..k]);
}

/// Up to [`crate::pool::MAX_PREFETCH_RANGES`] `(segment, bytes)` ranges, on the stack.
type PrefetchRanges<'a> = [(usize, &'a [u8]); crate::pool::MAX_PREFETCH_RANGES];

/// The `(segment, bytes)` ranges of [`prefetch_gemv`] on `threads` threads (the first `k`
/// of the array): for each worker segment `1..threads`, the weight rows of its tasks.
fn gemv_prefetch_ranges<'a>(ws: &[QMatrix<'a>], threads: usize) -> (PrefetchRanges<'a>, usize) {
    let split = GemvSplit::new(ws.iter().map(|w| padded_rows(w.rows)).sum(), threads);
    let mut ranges: PrefetchRanges<'a> = [(0, &[][..]); crate::pool::MAX_PREFETCH_RANGES];
    let mut k = 0;
    for segment in 1..threads {
        let tasks = crate::pool::segment_tasks(split.n_tasks, threads, segment);
        for_each_part(
            ws.iter().map(|w| w.rows),
            split.rows_of(tasks),
            |i, rows| {
                if k < ranges.len() {
                    let rb = ws[i].row_bytes;
                    ranges[k] = (segment, &ws[i].data[rows.start * rb..rows.end * rb]);
                    k += 1;
                }
            },
        );
    }
    (ranges, k)
}

/// `out[i] = W[r0 + i] · act` for one matrix (`out`: `[rows]`, a run of its output; for an
/// interleaved matrix `r0` and the length are whole groups, see [`GemvSplit`]).
fn gemv_rows(job: &FusedJob<'_>, r0: usize, act: &[u8], act_row_bytes: usize, out: &mut [f32]) {
    let w = &job.w;
    if w.ty.interleaved().is_some() {
        let rb = w.row_bytes;
        if let Some(gemv) = job.native_gemv {
            // The interleaved kernel reads the groups as they are stored.
            gemv(&w.data[r0 * rb..(r0 + out.len()) * rb], rb, act, out);
            return;
        }
        // No interleaved kernel in this table: the base type's product on de-interleaved
        // copies, a few groups at a time (per-thread buffer).
        let step = INTERLEAVED_GEMV_GROUPS * w.group_rows();
        for (c, o) in out.chunks_mut(step).enumerate() {
            let s = r0 + c * step;
            w.rows_plain(s, o.len(), |rows| {
                gemv_plain(&job.entry, rows, rb, act, act_row_bytes, o)
            });
        }
        return;
    }
    let rb = w.row_bytes;
    gemv_plain(
        &job.entry,
        &w.data[r0 * rb..(r0 + out.len()) * rb],
        rb,
        act,
        act_row_bytes,
        out,
    );
}

/// `out[i] = w_rows[i] · act` for `out.len()` plain rows of `rb` bytes.
fn gemv_plain(
    entry: &KernelEntry,
    w_rows: &[u8],
    rb: usize,
    act: &[u8],
    act_row_bytes: usize,
    out: &mut [f32],
) {
    if let Some(gemm) = entry.gemm.filter(|_| GEMV_USES_TILES) {
        // The tiled product with one activation row: several weight rows share each
        // activation load, and the result has the bits a batch would give this token.
        for (c, o) in out.chunks_mut(ROWS_PER_TASK_GEMV).enumerate() {
            let s = c * ROWS_PER_TASK_GEMV;
            gemm(
                &w_rows[s * rb..(s + o.len()) * rb],
                rb,
                act,
                act_row_bytes,
                o,
            );
        }
        return;
    }
    if let Some(gemv) = entry.gemv {
        gemv(w_rows, rb, act, out);
        return;
    }
    for (o, row) in out.iter_mut().zip(w_rows.chunks_exact(rb)) {
        *o = (entry.vec_dot)(row, act);
    }
}

/// How many parallel tasks a token-generation product over `rows` weight rows is cut into on
/// `threads` threads: [`GEMV_TASKS_PER_THREAD`] per thread (the pool's threads claim them in
/// turn, so a thread that arrives late still takes a share), but no task smaller than
/// [`ROWS_PER_TASK_GEMV`] rows.
fn gemv_tasks(rows: usize, threads: usize) -> usize {
    (threads * GEMV_TASKS_PER_THREAD)
        .min(rows.div_ceil(ROWS_PER_TASK_GEMV))
        .max(1)
}

/// The output `y` of one matmul (f32 values, or the next product's quantized bytes), shared
/// by its work items, each of which writes a distinct rectangle of it (so no two items touch
/// the same value).
#[derive(Clone, Copy)]
struct DisjointOut<T = f32> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the items only write disjoint ranges (see `write` and `slice_mut`), and `y`
// outlives the parallel loop (it stays borrowed mutably by the function that made this view
// until its parallel region ends).
unsafe impl<T: Send> Sync for DisjointOut<T> {}

impl<T: Copy> DisjointOut<T> {
    /// A view of `y` for the work items. From then on `y` is written only through it, until
    /// the caller's parallel region ends.
    fn new(y: &mut [T]) -> Self {
        DisjointOut {
            ptr: y.as_mut_ptr(),
            len: y.len(),
        }
    }

    /// Copies `vals` to `y[at .. at + vals.len()]`.
    ///
    /// # Safety
    /// No other thread reads or writes that range concurrently.
    unsafe fn write(&self, at: usize, vals: &[T]) {
        // SAFETY: exclusive (guaranteed by the caller); `slice_mut` checks the range.
        unsafe { self.slice_mut(at, vals.len()) }.copy_from_slice(vals);
    }

    /// `y[at .. at + len]` as a mutable slice.
    ///
    /// # Safety
    /// No other thread reads or writes that range while the slice lives.
    unsafe fn slice_mut<'s>(&self, at: usize, len: usize) -> &'s mut [T] {
        assert!(at + len <= self.len, "output range out of bounds");
        // SAFETY: in bounds (checked above), `y` outlives the parallel loop, and exclusive
        // (guaranteed by the caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }
}

impl DisjointOut<f32> {
    /// The rectangle of token lines `t0 .. t0 + tokens` × values `r0 .. r0 + rows` of `y`
    /// (`[_, stride]`), as a panel kernel's output.
    ///
    /// # Safety
    /// No other thread reads or writes the rectangle while the returned value lives.
    unsafe fn rect<'s>(
        &self,
        stride: usize,
        t0: usize,
        tokens: usize,
        r0: usize,
        rows: usize,
    ) -> crate::panel::PanelOut<'s> {
        assert!(
            tokens > 0 && r0 + rows <= stride && (t0 + tokens) * stride <= self.len,
            "output rectangle out of bounds"
        );
        // SAFETY: every line `t0 + t` (t < tokens) holds values r0 .. r0 + rows inside `y`
        // (checked above); `y` outlives the parallel loop; exclusive by the caller.
        unsafe {
            crate::panel::PanelOut::from_raw_parts(
                self.ptr.add(t0 * stride + r0),
                stride,
                tokens,
                rows,
            )
        }
    }
}

/// One prompt-processing work item: the `nr` weight rows `w_rows` (plain layout, `rb` bytes
/// each) times activation rows `t0 .. t0 + nt`, into `out[t · nr + r]` (`[nt, nr]`). Uses the
/// table's tiled product when it has one, else the batched (groups of up to
/// [`MAX_ACT_ROWS_PER_CALL`]) or single-row dot product; each returns the bits of `vec_dot`,
/// so the cut into items does not matter.
fn gemm_block(
    entry: &KernelEntry,
    w_rows: &[u8],
    rb: usize,
    scratch: &ActivationScratch,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    let nr = w_rows.len() / rb;
    if let Some(gemm) = entry.gemm {
        gemm(w_rows, rb, scratch.rows(t0, nt), scratch.row_bytes, out);
        return;
    }
    let mut group = [0.0f32; MAX_ACT_ROWS_PER_CALL];
    for i in 0..nr {
        let w_row = &w_rows[i * rb..(i + 1) * rb];
        match entry.vec_dot_rows {
            Some(rows_fn) => {
                for g0 in (0..nt).step_by(MAX_ACT_ROWS_PER_CALL) {
                    let len = MAX_ACT_ROWS_PER_CALL.min(nt - g0);
                    let res = &mut group[..len];
                    rows_fn(w_row, scratch.rows(t0 + g0, len), scratch.row_bytes, res);
                    for (k, &v) in res.iter().enumerate() {
                        out[(g0 + k) * nr + i] = v;
                    }
                }
            }
            None => {
                for t in 0..nt {
                    out[t * nr + i] = (entry.vec_dot)(w_row, scratch.row(t0 + t));
                }
            }
        }
    }
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

    /// Every (row block, token group) pair is in exactly one item, and when the plan cuts
    /// shares, every thread's share of the indices holds the same work.
    #[test]
    fn item_plans_cover_the_product_once_in_equal_shares() {
        for threads in 1..=4 {
            for row_blocks in 0..=40 {
                for n_groups in [1, 2, 3, 5, 8, 32, 33] {
                    let plan = ItemPlan::new(row_blocks, n_groups, threads);
                    let mut seen = vec![0u8; row_blocks * n_groups];
                    // Work per share, in (block, group) pairs.
                    let mut share_work = vec![0usize; plan.shares];
                    let share_len = plan.len() / plan.shares;
                    assert_eq!(share_len * plan.shares, plan.len());
                    for i in 0..plan.len() {
                        let (block, g0, ng) = plan.item(i);
                        assert!(ng > 0 && g0 + ng <= n_groups && block < row_blocks);
                        for g in g0..g0 + ng {
                            seen[block * n_groups + g] += 1;
                        }
                        share_work[i / share_len] += ng;
                    }
                    let case =
                        format!("{row_blocks} blocks × {n_groups} groups, {threads} threads");
                    assert!(seen.iter().all(|&c| c == 1), "{case}: not covered once");
                    // With chunks of equal size, shares differ only by the rounding of the
                    // pieces' cuts: at most one group per cut unit.
                    let (lo, hi) = (share_work.iter().min(), share_work.iter().max());
                    if n_groups.is_multiple_of(plan.gc) {
                        assert!(
                            hi.unwrap() - lo.unwrap() <= plan.rem,
                            "{case}: {share_work:?}"
                        );
                    }
                }
            }
        }
        // The case it was made for: 19 blocks of 32 groups on 2 threads.
        let plan = ItemPlan::new(19, 32, 2);
        assert_eq!(plan.len(), 20);
        assert_eq!(plan.item(9), (18, 0, 16));
        assert_eq!(plan.item(19), (18, 16, 16));
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

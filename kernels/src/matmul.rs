//! Matrix multiplication: quantized weights `[rows, cols]` × f32 activations `[n, cols]`
//! → f32 outputs `[n, rows]` (`y[t][r] = Σ_c W[r][c] · x[t][c]`), for both token generation
//! (`n = 1`) and prompt processing (`n > 1`).
//!
//! How it works, as in ggml:
//! 1. the activations are quantized **once** per matmul to the weight type's activation type
//!    (Q8_0 for Q4_0, Q8_K for Q4_K, …), into a reusable [`ActivationScratch`]. Weights are
//!    never dequantized: the dot products run on the packed blocks in integer arithmetic.
//!    When several matrices read the same input (Q/K/V, gate/up), quantize once with
//!    [`quantize_activations`] and call [`matmul_prequantized`] for each;
//! 2. token generation (`n = 1`): the output rows are split into fixed chunks of consecutive
//!    weight rows, processed in parallel with rayon, with the table's tiled product (one
//!    activation row) when it has one, else one `vec_dot` per output;
//! 3. prompt processing (`n > 1`): the output `[n, rows]` is cut into a grid of work items
//!    (a block of weight rows × an L2-sized block of activation rows), processed in parallel;
//!    an item runs the table's register-tiled product ([`crate::dispatch::GemmFn`]) when it
//!    has one, which reuses each unpacked weight register for several activation rows and
//!    each activation register for several weight rows.
//!
//! Determinism: every output value `y[t][r]` is computed by one kernel call on weight row
//! `r` and activation row `t` in an order that depends on neither the tile it falls in nor
//! the other rows (see [`crate::dispatch::GemmFn`]), and nothing is summed across threads.
//! The result is therefore the same for any number of threads, any chunking, and any batch
//! size: a token gives the same bits alone or in a batch.

use std::fmt;

use grist_gguf::GgmlType;
use rayon::prelude::*;

use crate::dispatch::{kernels, KernelEntry, Kernels, QuantizeActFn, MAX_ACT_ROWS_PER_CALL};
use crate::formats::FormatError;

/// Weight rows per parallel task for token generation (`n = 1`): large enough to amortise
/// task overhead, small enough to balance a 4096-row matrix over many threads.
const ROWS_PER_TASK_GEMV: usize = 32;
/// Whether token generation (`n = 1`) uses the table's tiled product (with one activation
/// row) instead of `vec_dot`. `true` would make every result independent of the batch size (a
/// token giving the same bits alone or in a batch) for the formats whose tiles sum in another
/// order than `vec_dot` (the AVX-512 32-value formats); `false` runs `vec_dot`, measured 5–9 %
/// faster at batch 1 on SmolLM2/gemma (docs/PERFORMANCE.md). grist guarantees bit-identical
/// results for any thread count (each output is still one `vec_dot` in a fixed order), not
/// for any batch split — llama.cpp does not either — so generation takes the faster path.
const GEMV_USES_TILES: bool = false;
/// Weight rows per work item when `n > 1`.
const ROWS_PER_TASK_GEMM: usize = 32;
/// Most activation rows per work item when `n > 1`.
const MAX_TOKENS_PER_TASK: usize = 64;
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
/// memory-mapped GGUF tensor): row `r` is bytes `r * row_bytes .. (r + 1) * row_bytes`.
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

    /// The bytes of row `r` (panics if `r >= rows`).
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The activation type these weights multiply with (ggml's `vec_dot_type`).
    pub fn act_type(&self) -> GgmlType {
        crate::formats::activation_type(self.ty).unwrap_or(GgmlType::F32)
    }
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

    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.buf)[..self.n * self.row_bytes]
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
    let rb = row_bytes(act_type, cols)?;
    scratch.reserve(act_type, n, cols)?;
    scratch.act_type = Some(act_type);
    scratch.n = n;
    scratch.cols = cols;
    scratch.row_bytes = rb;
    if n == 0 || cols == 0 {
        return Ok(());
    }
    let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut scratch.buf)[..n * rb];
    if n == 1 {
        quantize(x, bytes);
    } else {
        bytes
            .par_chunks_mut(rb)
            .zip(x.par_chunks(cols))
            .for_each(|(out, row)| quantize(row, out));
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
    let n = scratch.n;
    let expected = n.checked_mul(w.rows).ok_or(MatmulError::Overflow)?;
    if y.len() != expected {
        return Err(MatmulError::Shape {
            what: "output y",
            expected,
            actual: y.len(),
        });
    }
    if expected == 0 {
        return Ok(());
    }
    if w.cols == 0 {
        y.fill(0.0);
        return Ok(());
    }
    let vec_dot = entry.vec_dot;

    if n == 1 {
        // Token generation: y is one row [rows]; each task owns a contiguous run of it.
        let act = scratch.row(0);
        if let Some(gemm) = entry.gemm.filter(|_| GEMV_USES_TILES) {
            // The tiled product with one activation row: several weight rows share each
            // activation load, and the result has the bits a batch would give this token.
            let rb = w.row_bytes;
            y.par_chunks_mut(ROWS_PER_TASK_GEMV)
                .enumerate()
                .for_each(|(chunk, out)| {
                    let r0 = chunk * ROWS_PER_TASK_GEMV;
                    gemm(
                        &w.data[r0 * rb..(r0 + out.len()) * rb],
                        rb,
                        act,
                        scratch.row_bytes,
                        out,
                    );
                });
            return Ok(());
        }
        y.par_chunks_mut(ROWS_PER_TASK_GEMV)
            .enumerate()
            .for_each(|(chunk, out)| {
                let r0 = chunk * ROWS_PER_TASK_GEMV;
                for (i, o) in out.iter_mut().enumerate() {
                    *o = vec_dot(w.row(r0 + i), act);
                }
            });
        return Ok(());
    }

    // Prompt processing: a grid of work items, each a block of up to ROWS_PER_TASK_GEMM
    // weight rows × a block of activation rows sized to stay in L2, so both threads are busy
    // for any shape (few weight rows and many tokens, or the reverse).
    let tb = (ACT_BLOCK_BYTES / scratch.row_bytes.max(1))
        .clamp(1, MAX_TOKENS_PER_TASK)
        .min(n);
    let rb = ROWS_PER_TASK_GEMM.min(w.rows);
    let (n_rb, n_tb) = (w.rows.div_ceil(rb), n.div_ceil(tb));
    let entry = *entry;
    let out = DisjointOut {
        ptr: y.as_mut_ptr(),
        len: y.len(),
    };
    // Row blocks outer, token blocks inner: rayon hands each thread a contiguous run of
    // items, i.e. its own weight rows, which it reuses for every token block.
    (0..n_rb * n_tb).into_par_iter().for_each(|item| {
        let (r0, t0) = ((item / n_tb) * rb, (item % n_tb) * tb);
        let (nr, nt) = (rb.min(w.rows - r0), tb.min(n - t0));
        let mut local = [0.0f32; ROWS_PER_TASK_GEMM * MAX_TOKENS_PER_TASK];
        let local = &mut local[..nr * nt]; // [nt, nr]
        gemm_block(&entry, w, r0, nr, scratch, t0, nt, local);
        for (i, vals) in local.chunks_exact(nr).enumerate() {
            // SAFETY: item (r0, t0) is the only one writing rows r0..r0+nr of output rows
            // t0..t0+nt: the items' rectangles tile `y` without overlap.
            unsafe { out.write((t0 + i) * w.rows + r0, vals) };
        }
    });
    Ok(())
}

/// The output `y` of one matmul, shared by its work items, each of which writes a distinct
/// rectangle of it (so no two items touch the same value).
struct DisjointOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the items only write disjoint ranges (see `write`), and `y` outlives the parallel
// loop (it is borrowed mutably for the whole of `matmul_prequantized_with`).
unsafe impl Sync for DisjointOut {}

impl DisjointOut {
    /// Copies `vals` to `y[at .. at + vals.len()]`.
    ///
    /// # Safety
    /// No other thread reads or writes that range concurrently.
    unsafe fn write(&self, at: usize, vals: &[f32]) {
        assert!(at + vals.len() <= self.len, "output range out of bounds");
        // SAFETY: in bounds (checked above) and exclusive (guaranteed by the caller).
        unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), self.ptr.add(at), vals.len()) };
    }
}

/// One prompt-processing work item: weight rows `r0 .. r0 + nr` times activation rows
/// `t0 .. t0 + nt`, into `out[t · nr + r]` (`[nt, nr]`). Uses the table's tiled product when
/// it has one, else the batched (groups of up to [`MAX_ACT_ROWS_PER_CALL`]) or single-row dot
/// product; each returns the bits of `vec_dot`, so the cut into items does not matter.
#[allow(clippy::too_many_arguments)]
fn gemm_block(
    entry: &KernelEntry,
    w: &QMatrix<'_>,
    r0: usize,
    nr: usize,
    scratch: &ActivationScratch,
    t0: usize,
    nt: usize,
    out: &mut [f32],
) {
    let w_rows = &w.data[r0 * w.row_bytes..(r0 + nr) * w.row_bytes];
    if let Some(gemm) = entry.gemm {
        gemm(
            w_rows,
            w.row_bytes,
            scratch.rows(t0, nt),
            scratch.row_bytes,
            out,
        );
        return;
    }
    let mut group = [0.0f32; MAX_ACT_ROWS_PER_CALL];
    for i in 0..nr {
        let w_row = w.row(r0 + i);
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
}

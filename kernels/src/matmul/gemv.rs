//! Token generation (`n = 1`): one activation row times the rows of a fused group of
//! matrices. The rows of all the matrices, back to back, are cut into a few contiguous
//! ranges per thread ([`GemvSplit`]) and run on the persistent spinning pool
//! ([`crate::pool`], not rayon: its workers are awake between the ~150–210 small products of
//! a token), one `vec_dot` (or the table's row kernel) per output. [`prefetch_gemv`] names
//! the same ranges for the workers to pull into their caches while they wait.

use std::ops::Range;

use super::{ActivationScratch, FusedJob, QMatrix};
use crate::dispatch::KernelEntry;

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

/// Token generation (`n = 1`) for a group of matrices: the rows of all of them, back to
/// back, are cut into [`gemv_tasks`] contiguous ranges processed in parallel by
/// [`crate::pool::run`]; each output is one `vec_dot` (or, with [`GEMV_USES_TILES`], the tiled
/// product), as in a separate call.
pub(super) fn gemv_many(fused: &[FusedJob<'_>], scratch: &ActivationScratch) {
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
pub(super) fn padded_rows(rows: usize) -> usize {
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
/// group, as [`super::matmul_prequantized_many`] gets it) will read, for
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
pub(super) type PrefetchRanges<'a> = [(usize, &'a [u8]); crate::pool::MAX_PREFETCH_RANGES];

/// The `(segment, bytes)` ranges of [`prefetch_gemv`] on `threads` threads (the first `k`
/// of the array): for each worker segment `1..threads`, the weight rows of its tasks.
pub(super) fn gemv_prefetch_ranges<'a>(
    ws: &[QMatrix<'a>],
    threads: usize,
) -> (PrefetchRanges<'a>, usize) {
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

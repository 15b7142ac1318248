//! Prompt processing (`n > 1`): the output `[n, rows]` of a fused group of matrices cut
//! into a grid of work items, run in one rayon region.
//!
//! - Panel path (the table has a panel GEMM, [`crate::panel`], and the format an unpacker):
//!   an item is a block of [`PANEL_ROWS`] weight rows, unpacked to plain bytes once into a
//!   per-thread buffer, × a chunk of token groups, multiplied by the int8 microkernel shared
//!   by all formats ([`panel_item`]). The items are laid out by an [`ItemPlan`] so that each
//!   thread's contiguous share of them holds the same work.
//! - Otherwise: a block of up to [`ROWS_PER_TASK_GEMM`] weight rows × an L2-sized block of
//!   activation rows, through the table's register-tiled product or its dot products
//!   ([`gemm_block`]).
//!
//! Every output is computed by one kernel call in an order that depends on neither the item
//! nor the other rows, so the cut into items changes no bit.

use rayon::prelude::*;

use super::{ActivationScratch, FusedJob, QMatrix, MAX_FUSED_MATRICES};
use crate::dispatch::{KernelEntry, Kernels, MAX_ACT_ROWS_PER_CALL};

/// Weight rows per work item when `n > 1`.
const ROWS_PER_TASK_GEMM: usize = 32;
/// Most activation rows per work item when `n > 1`.
const MAX_TOKENS_PER_TASK: usize = 64;
/// Weight rows per panel work item (unpacked once per item, see [`crate::panel`]).
pub(super) const PANEL_ROWS: usize = 64;
/// Panel work items per thread the driver aims for (token groups are split when there are
/// too few row blocks).
const PANEL_ITEMS_PER_THREAD: usize = 4;
/// Bytes of the activation panel one panel kernel call streams (L2-resident, reused by
/// every tile of weight rows).
const PANEL_ACT_BYTES: usize = 512 * 1024;
/// Bytes of quantized activations a work item aims to use (an L2-sized block that is reused
/// for all of the item's weight rows).
const ACT_BLOCK_BYTES: usize = 256 * 1024;

/// The prompt-processing product of the checked, non-empty matrices `fused` (all reading the
/// activations in `scratch`, `n > 1` rows): every output written once, through `fused[i].out`.
pub(super) fn gemm_many(table: &Kernels, fused: &[FusedJob<'_>], scratch: &ActivationScratch) {
    let n = scratch.n;
    // A grid of work items per matrix, so both threads are busy for any
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
pub(super) struct ItemPlan {
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
    pub(super) fn new(row_blocks: usize, n_groups: usize, threads: usize) -> Self {
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
    pub(super) fn len(&self) -> usize {
        self.shares * (self.whole + self.rem)
    }

    /// Item `i` (`< len()`): `(row block, first token group, token groups)`.
    pub(super) fn item(&self, i: usize) -> (usize, usize, usize) {
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
pub(super) fn panel_groups_per_call(cols: usize, ng: usize) -> usize {
    use crate::panel::{CELL_LINES, PANEL_BLOCK};
    let per_group = (cols / PANEL_BLOCK) * CELL_LINES * 64;
    (PANEL_ACT_BYTES / per_group.max(1)).clamp(1, ng)
}

/// Unpacks rows `r0 .. r0 + nr` of `w` into `buf` with the panel format `fmt`: an
/// interleaved type with a group unpacker `group` straight from its 16-row groups, any other
/// after [`QMatrix::rows_plain`] (which de-interleaves if need be). The same panel either way.
pub(super) fn unpack_panel<'b>(
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
pub(super) fn n_groups_of(n: usize) -> usize {
    n.div_ceil(crate::panel::GROUP)
}

/// The weight bytes a panel work item's thread most likely reads next, for the kernel to
/// prefetch while it multiplies ([`crate::panel::WeightPanel::prefetch`]): the next block of
/// rows of `w` if this item (rows `r0 .. r0 + nr`) is the last token chunk of its row block
/// (rayon hands a thread consecutive items, so its next one starts the next row block), else
/// nothing (the next item reuses this block's rows).
pub(super) fn next_item_weights<'w>(
    w: &QMatrix<'w>,
    r0: usize,
    nr: usize,
    last_chunk: bool,
) -> &'w [u8] {
    let next = r0 + nr;
    if !last_chunk || next >= w.rows {
        return &[];
    }
    let end = (next + PANEL_ROWS).min(w.rows);
    &w.data[next * w.row_bytes..end * w.row_bytes]
}

/// Per-thread buffers of the panel path, allocated on first use and only grown.
#[derive(Default)]
pub(super) struct PanelScratch {
    pub(super) weights: crate::panel::WeightPanelBuf,
    pub(super) out: Vec<f32>, // [groups × 16, nr]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! The gated feed-forward input of prompt processing in one pass:
//! `out = glu(x·W_gateᵀ, x·W_upᵀ)` (SwiGLU, GeGLU), on the panel path.
//!
//! Run as two products and an activation, a 512-token prompt of qwen2.5-1.5b writes two
//! `[512, 8960]` f32 outputs (36 MB, far past the caches), then reads both back to write a
//! third. Here a work item unpacks the same block of [`PANEL_ROWS`] rows of both matrices,
//! runs the panel kernel on each into its own per-thread tile buffer, applies the activation
//! there, while the values are in L1/L2, and stores only the result: one output instead of
//! three passes over 18 MB each (docs/PERFORMANCE.md, "Round 8"). When the down product
//! follows, even that output is skipped: the items quantize their results straight into the
//! down product's activations ([`matmul_prequantized_gated_quantize_with`], "Round 18").
//!
//! Same bits as the unfused path: each product value comes from the same panel kernel in its
//! fixed order (the cut into items never changes a bit, see the parent module), and the
//! activation is element-wise, so applying it per tile instead of per row changes nothing.

use rayon::prelude::*;

use super::batch::{
    n_groups_of, next_item_weights, panel_groups_per_call, unpack_panel, ItemPlan, PanelScratch,
    PANEL_ROWS,
};
use super::out::DisjointOut;
use super::{check_job, MatmulError, QMatrix};
use crate::dispatch::{kernels, Kernels};
use crate::matmul::ActivationScratch;
use crate::panel::{ActPanel, PanelFormat, PanelGemmFn, PanelGroupUnpackFn, PanelOut, GROUP};

/// A gated activation applied in place, element by element: `gate[i] = act(gate[i]) · up[i]`
/// (`crate::ops::swiglu`, `crate::ops::geglu`). It must not depend on where a value sits in
/// the slice (the fused product calls it on tiles, the unfused one on whole rows).
pub type GluFn = fn(gate: &mut [f32], up: &[f32]);

/// [`matmul_prequantized_gated_with`] with the global kernel table.
pub fn matmul_prequantized_gated(
    gate: &QMatrix<'_>,
    up: &QMatrix<'_>,
    glu: GluFn,
    scratch: &ActivationScratch,
    out: &mut [f32],
) -> Result<bool, MatmulError> {
    matmul_prequantized_gated_with(kernels(), gate, up, glu, scratch, out)
}

/// [`matmul_prequantized_gated_quantize_with`] with the global kernel table.
pub fn matmul_prequantized_gated_quantize(
    gate: &QMatrix<'_>,
    up: &QMatrix<'_>,
    glu: GluFn,
    scratch: &ActivationScratch,
    act_type: grist_gguf::GgmlType,
    next: &mut ActivationScratch,
) -> Result<bool, MatmulError> {
    matmul_prequantized_gated_quantize_with(kernels(), gate, up, glu, scratch, act_type, next)
}

/// `out = glu(x·W_gateᵀ, x·W_upᵀ)` in one parallel region, with the activations `x`
/// (`[n, cols]`) already quantized in `scratch`; `out`: `[n, gate.rows]`.
///
/// Only prompt processing on the panel path is fused: when `n < 2`, the table has no panel
/// kernel, or either format no panel unpacker, it returns `Ok(false)` and touches nothing, and
/// the caller runs [`super::matmul_prequantized_many`] and `glu` itself. `Ok(true)`: `out`
/// holds exactly the bits of that unfused sequence.
pub fn matmul_prequantized_gated_with(
    table: &Kernels,
    gate: &QMatrix<'_>,
    up: &QMatrix<'_>,
    glu: GluFn,
    scratch: &ActivationScratch,
    out: &mut [f32],
) -> Result<bool, MatmulError> {
    let Some(job) = GatedJob::check(table, gate, up, glu, scratch, out.len())? else {
        return Ok(false);
    };
    // From here on `out` is only written through the sink, at the ranges the items own
    // exclusively; it stays mutably borrowed until this function returns.
    job.run(Sink::Values(DisjointOut::new(out)), PANEL_ROWS);
    Ok(true)
}

/// Rows per work item of [`matmul_prequantized_gated_quantize_with`]: the longest
/// activation block (Q8_K's 256 values), so that every block of a token's output lies in one
/// item, which quantizes it.
pub const QUANTIZED_ROWS_PER_ITEM: usize = 256;

/// [`matmul_prequantized_gated_with`] whose output goes straight to the next product's
/// activations: each work item applies `glu` to its tile and quantizes every token's
/// [`QUANTIZED_ROWS_PER_ITEM`] values to `act_type` into `next` (which then holds `[n,
/// gate.rows]` activations and their panel, as [`super::quantize_activations`] would have
/// made them from the f32 output: the same bytes, since every block is quantized alone).
/// The f32 output, `[n, gate.rows]` (10 MB for a 512-token prompt of qwen2.5-0.5b), is
/// never written and read back.
///
/// `Ok(false)` (nothing touched) when the fused product cannot run (see
/// [`matmul_prequantized_gated_with`]), when `gate.rows` is not a multiple of
/// [`QUANTIZED_ROWS_PER_ITEM`], or when `act_type`'s block does not divide it.
#[allow(clippy::too_many_arguments)]
pub fn matmul_prequantized_gated_quantize_with(
    table: &Kernels,
    gate: &QMatrix<'_>,
    up: &QMatrix<'_>,
    glu: GluFn,
    scratch: &ActivationScratch,
    act_type: grist_gguf::GgmlType,
    next: &mut ActivationScratch,
) -> Result<bool, MatmulError> {
    let len = scratch
        .n
        .checked_mul(gate.rows)
        .ok_or(MatmulError::Overflow)?;
    let Some(job) = GatedJob::check(table, gate, up, glu, scratch, len)? else {
        return Ok(false);
    };
    let Some(quantize) = table.quantizer(act_type) else {
        return Ok(false);
    };
    if !gate.rows.is_multiple_of(QUANTIZED_ROWS_PER_ITEM)
        || !QUANTIZED_ROWS_PER_ITEM.is_multiple_of(act_type.block_elems())
    {
        return Ok(false);
    }
    let row_bytes = next.set_rows(act_type, job.n, gate.rows)?;
    let sink = Sink::Quantized {
        item_bytes: super::row_bytes(act_type, QUANTIZED_ROWS_PER_ITEM)?,
        // `next`'s bytes are only written through the sink until the region ends.
        bytes: DisjointOut::new(next.bytes_mut()),
        row_bytes,
        quantize,
    };
    job.run(sink, QUANTIZED_ROWS_PER_ITEM);
    next.build_panel(table);
    Ok(true)
}

/// Most bytes of the gate and up tile buffers of one kernel call together (what 64 rows × 32
/// groups of 16 tokens take: the unfused path's largest call).
const TILE_BYTES: usize = 2 * 4 * 64 * 32 * GROUP;

thread_local! {
    /// Per-thread weight panels and tile outputs of the gate (0) and the up (1) matrix.
    static GATED_SCRATCH: std::cell::RefCell<[PanelScratch; 2]> =
        std::cell::RefCell::new(Default::default());
}

/// Where a gated work item puts its results.
#[derive(Clone, Copy)]
enum Sink {
    /// The f32 values, `[n, gate.rows]`.
    Values(DisjointOut),
    /// The next product's quantized activations, `[n, row_bytes]` bytes, of which an item
    /// writes `item_bytes` per token (its [`QUANTIZED_ROWS_PER_ITEM`] values).
    Quantized {
        bytes: DisjointOut<u8>,
        row_bytes: usize,
        item_bytes: usize,
        quantize: crate::dispatch::QuantizeActFn,
    },
}

/// One matrix of the pair: its weights, panel format and (interleaved types) group unpacker.
type GatedMatrix<'a, 'w> = (&'a QMatrix<'w>, PanelFormat, Option<PanelGroupUnpackFn>);

/// A checked gated product: everything its work items read.
struct GatedJob<'a, 'w> {
    gate: GatedMatrix<'a, 'w>,
    up: GatedMatrix<'a, 'w>,
    gemm: PanelGemmFn,
    glu: GluFn,
    act: ActPanel<'a>,
    n: usize,
}

impl<'a, 'w> GatedJob<'a, 'w> {
    /// `None` when the pair cannot run fused (see [`matmul_prequantized_gated_with`]);
    /// `out_len`: the length of the `[n, gate.rows]` output.
    fn check(
        table: &'a Kernels,
        gate: &'a QMatrix<'w>,
        up: &'a QMatrix<'w>,
        glu: GluFn,
        scratch: &'a ActivationScratch,
        out_len: usize,
    ) -> Result<Option<Self>, MatmulError> {
        let n = scratch.n;
        let (Some(act), Some(gemm)) = (scratch.act_panel(), table.panel_gemm()) else {
            return Ok(None);
        };
        if up.rows != gate.rows {
            return Err(MatmulError::Shape {
                what: "up rows (the gate's)",
                expected: gate.rows,
                actual: up.rows,
            });
        }
        // Both products write `out`'s shape (the up product only into the tiles).
        let gate_entry = *check_job(table, gate, scratch, out_len)?;
        let up_entry = *check_job(table, up, scratch, out_len)?;
        let (Some(gate_fmt), Some(up_fmt)) = (gate_entry.panel, up_entry.panel) else {
            return Ok(None);
        };
        if n < 2 {
            return Ok(None);
        }
        Ok(Some(GatedJob {
            gate: (gate, gate_fmt, gate_entry.panel_group),
            up: (up, up_fmt, up_entry.panel_group),
            gemm,
            glu,
            act,
            n,
        }))
    }

    /// Runs every work item (blocks of `rows_per_item` rows × chunks of token groups) in one
    /// parallel region, into `sink`.
    fn run(&self, sink: Sink, rows_per_item: usize) {
        let rows = self.gate.0.rows;
        let row_blocks = rows.div_ceil(rows_per_item);
        let n_groups = n_groups_of(self.n);
        // Each item does the work of two of the unfused path's; chunking on the row blocks of
        // one matrix keeps as many items per thread as that path has.
        let plan = ItemPlan::new(row_blocks, n_groups, rayon::current_num_threads());
        (0..plan.len()).into_par_iter().for_each(|item| {
            let (block, g0, ng) = plan.item(item);
            let r0 = block * rows_per_item;
            let nr = rows_per_item.min(rows - r0);
            self.item(sink, r0, nr, g0, ng);
        });
    }

    /// Rows `r0 .. r0 + nr` of both matrices × token groups `g0 .. g0 + ng`: unpacks both
    /// weight blocks once, then per L2-sized block of groups runs the panel kernel on each,
    /// applies `glu` to the tokens that exist and puts them into `sink`.
    fn item(&self, sink: Sink, r0: usize, nr: usize, g0: usize, ng: usize) {
        let (gate, up) = (self.gate.0, self.up.0);
        // Groups per kernel call: as the unfused path's, and few enough that the two tile
        // buffers stay within TILE_BYTES (they grow with the item's rows).
        let gb = panel_groups_per_call(gate.cols, ng)
            .min(TILE_BYTES / (2 * 4 * GROUP * nr))
            .max(1);
        GATED_SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let [g, u] = &mut *guard;
            let last_chunk = g0 + ng == n_groups_of(self.n);
            let unpack = |(w, fmt, group): GatedMatrix<'_, 'w>, buf| {
                let mut panel = unpack_panel(w, &fmt, group, r0, nr, buf);
                panel.prefetch = next_item_weights(w, r0, nr, last_chunk);
                panel
            };
            let gate_panel = unpack(self.gate, &mut g.weights);
            let up_panel = unpack(self.up, &mut u.weights);
            for o in [&mut g.out, &mut u.out] {
                if o.len() < nr * gb * GROUP {
                    o.resize(nr * gb * GROUP, 0.0);
                }
            }
            for gs in (g0..g0 + ng).step_by(gb) {
                let ngs = gb.min(g0 + ng - gs);
                let t0 = gs * GROUP;
                let valid = (ngs * GROUP).min(self.n - t0); // the padding tokens are dropped
                let og = &mut g.out[..ngs * GROUP * nr]; // [ngs × 16, nr]
                let ou = &mut u.out[..ngs * GROUP * nr]; // [ngs × 16, nr]
                (self.gemm)(&gate_panel, &self.act, gs, ngs, PanelOut::dense(og, nr));
                (self.gemm)(&up_panel, &self.act, gs, ngs, PanelOut::dense(ou, nr));
                (self.glu)(&mut og[..valid * nr], &ou[..valid * nr]);
                for (lane, vals) in og[..valid * nr].chunks_exact(nr).enumerate() {
                    let t = t0 + lane;
                    match sink {
                        // SAFETY (both arms): this item is the only one writing rows
                        // r0..r0+nr of tokens in groups g0..g0+ng (items tile the output
                        // without overlap), and nothing reads them during the region.
                        Sink::Values(y) => unsafe { y.write(t * up.rows + r0, vals) },
                        Sink::Quantized {
                            bytes,
                            row_bytes,
                            item_bytes,
                            quantize,
                        } => {
                            let at = t * row_bytes + r0 / QUANTIZED_ROWS_PER_ITEM * item_bytes;
                            // SAFETY: as for `Values` (`slice_mut` checks the range).
                            quantize(vals, unsafe { bytes.slice_mut(at, item_bytes) });
                        }
                    }
                }
            }
        });
    }
}

//! Causal multi-head attention with GQA and sliding windows over the f16 KV cache, mirroring
//! the paths of ggml-cpu's flash attention (`ggml_compute_forward_flash_attn_ext_f16`),
//! which produced the goldens:
//!
//! - batches of at least [`TILED_MIN_BATCH`] queries (prompt processing): the "tiled" path.
//!   Queries stay f32, cached keys/values are widened from f16 to f32, accumulation is f32,
//!   and keys are taken in tiles of 64: the scores of a tile first, then one update of the
//!   running maximum, then the tile's softmax numerators and values.
//! - smaller batches, in particular token generation: the "one chunk" path. The query is
//!   rounded to f16 (ggml converts Q to the K cache's dot-product type), and the running
//!   weighted sum of values is kept in f16 (`VKQ16`: every rescale and every
//!   multiply-add rounds back to f16).
//! - a single query over at least [`SPLIT_MIN_KEYS`] keys (generation at a long context), in
//!   a model with an odd number of KV heads: the split path, ggml's split-KV decoding. The
//!   keys are cut into chunks, each chunk runs the one-chunk path from a fresh state, and the
//!   partial results are merged in f32. Our chunks have a fixed length ([`SPLIT_CHUNK_KEYS`])
//!   where ggml cuts one per thread.
//!
//! Both compute the softmax online, in one pass over the keys: keep the running maximum `M`,
//! the running sum `S` and the running weighted sum of values `o`; a new maximum rescales `S`
//! and `o` by `exp(M_old - M_new)`.
//!
//! Speed: the query heads sharing a KV head (GQA) are processed together so each cached row
//! is read once for all of them. The tiled path first widens every visible key/value tile
//! of the cache to f32 once per call (keys transposed; `WideTiles`, shared by all tasks),
//! then works on a tile of `Q_TILE` queries × a tile of `KV_TILE` keys at a time: the
//! scores of every (query, head) row are one small GEMM, the softmax of the tile is
//! vectorised, and the values are accumulated by a second GEMM; tiles that the causal mask or
//! the sliding window hide entirely are skipped. The f16 path runs the fused kernel
//! [`OpKernels::attn_f16_acc`] per (query, group of heads).
//!
//! Determinism: every output row is computed by one sequence of operations that does not
//! depend on which other rows share its task, and the tasks are a fixed split of the rows
//! (and, on the split path, of the keys), so the result does not depend on the number of
//! threads.

use std::cell::RefCell;

use grist_kernels::ops::{GemmDims, KvRows, OpKernels};
use half::f16;
use rayon::prelude::*;

/// Largest head size the attention kernels accept (their per-task buffers live on the stack,
/// so nothing is allocated per call). Checked when hyperparameters are read.
pub const MAX_HEAD_DIM: usize = 512;

/// Keys per tile of the tiled path (`GGML_FA_TILE_KV`): the running maximum is updated once
/// per tile.
const KV_TILE: usize = 64;

/// Queries per task of the tiled path (the rows of one task share each widened key/value
/// tile).
const Q_TILE: usize = 32;

/// Queries per run of the tiled path's products: a run's score and value products cover
/// only the keys of a tile that one of its queries sees. Near the diagonal of a causal
/// prompt this skips most of the masked half of a tile (a 512-token prompt in tasks of 32
/// queries computes 10 % fewer (query, key) products than with whole tiles).
const TRIM_QUERIES: usize = 4;

/// Largest f16-path call, in (query head, key) pairs, run on the calling thread: below this,
/// a parallel region costs more than it saves. With rayon it was 768 (SmolLM2-135M tg128,
/// 2 threads: 9 heads × up to ~85 keys; docs/PERFORMANCE.md, "generation path, second
/// pass"); with the spinning [`grist_kernels::pool`] (~0.2–0.5 µs per region) it is a few
/// heads × a few keys (docs/PERFORMANCE.md, "Persistent worker pool").
const SERIAL_MAX_WORK: usize = 128;

/// Smallest batch for which ggml uses its tiled (f32) flash-attention path (`GGML_FA_TILE_Q`).
pub const TILED_MIN_BATCH: usize = 64;

/// Geometry of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Position of the chunk's first query.
    pub pos0: usize,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (divides `n_head`).
    pub n_head_kv: usize,
    /// Size of one head.
    pub head_dim: usize,
}

/// One attention call's inputs: a chunk of `n` queries and the cache they attend to.
#[derive(Clone, Copy)]
pub struct AttnInput<'a> {
    /// Queries, `[n, n_head * head_dim]` (RoPE applied).
    pub q: &'a [f32],
    /// Cached keys and values, `[pos0 + n, n_head_kv * head_dim]` each (the chunk's own
    /// already written).
    pub kv: (&'a [f16], &'a [f16]),
    /// Where the chunk starts and the heads' layout.
    pub shape: AttnShape,
    /// Multiplies the scores; positive (the executor's is 1 or `1/sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding-window length, for layers that have one.
    pub window: Option<usize>,
}

/// Causal multi-head attention with GQA over an f16 KV cache, for the queries `rows` of the
/// chunk `input.q` (all of them: `0..n`); `out`: `[rows.len(), n_head * head_dim]`.
///
/// Query `t` (position `p = pos0 + t`) of head `h` attends to the cached positions `j ≤ p`
/// (and `p - j < window` for sliding-window layers) of KV head `h / (n_head / n_head_kv)`.
/// The path (f32 or f16 accumulation) follows the chunk's number of queries `n`, see the
/// module documentation, and a row's result never depends on which other rows are computed:
/// the executor's last layer computes only the rows whose logits are wanted, with the bits
/// the whole chunk would give them.
pub fn attention(input: AttnInput<'_>, out: &mut [f32], rows: std::ops::Range<usize>) {
    let AttnInput {
        q,
        kv,
        shape,
        scale,
        window,
    } = input;
    let qd = shape.n_head * shape.head_dim;
    assert!(
        shape.head_dim <= MAX_HEAD_DIM,
        "head_dim {} > {MAX_HEAD_DIM} (checked at load)",
        shape.head_dim
    );
    let n = q.len() / qd;
    // The tiled path scales the scores inside the softmax pass, which needs a positive scale.
    assert!(scale > 0.0, "attention scale {scale} is not positive");
    assert!(
        rows.start <= rows.end && rows.end <= n && out.len() == rows.len() * qd,
        "attention rows {rows:?} of {n} queries into {} values",
        out.len()
    );
    if rows.is_empty() {
        return;
    }
    if n < TILED_MIN_BATCH {
        attention_f16_accum(input, out, rows);
    } else {
        let kern: &OpKernels = &grist_kernels::dispatch::kernels().ops;
        // Taken out of the thread-local for the parallel region, not borrowed across it: while
        // it waits, this thread may run other rayon jobs, even another attention call.
        let mut wide = WIDE_TILES.take();
        // Only the tiles the first computed query (and so every later one) can see.
        let from = AttnShape {
            pos0: shape.pos0 + rows.start,
            ..shape
        };
        let tiles = WideTiles::fill(kern, kv, from, window, &mut wide);
        // Largest tasks first: under the causal mask a task's work grows with its position,
        // and rayon's threads each run their range front to back and steal the back half of
        // another's, so in this order the last pieces left to share are the smallest ones.
        out.par_chunks_mut(Q_TILE * qd)
            .enumerate()
            .rev()
            .for_each(|(it, o)| {
                SCRATCH.with_borrow_mut(|buf| {
                    let rows = Rows {
                        t0: rows.start + it * Q_TILE,
                        n: o.len() / qd,
                    };
                    tiled_task(kern, q, &tiles, o, shape, rows, scale, window, buf)
                })
            });
        WIDE_TILES.set(wide);
    }
}

thread_local! {
    /// The calling thread's buffer of widened key/value tiles ([`WideTiles`]), grown on
    /// first use and when the context gets longer, then reused.
    static WIDE_TILES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The cached keys and values of one tiled-path call, widened from f16 to f32 once for all
/// of its tasks (each task would otherwise widen every tile it visits again: 72 tile
/// conversions instead of 8 for a 512-token prompt in tasks of 32 queries).
///
/// Tile `i` of KV head `kh` is `2 · head_dim · KV_TILE` consecutive values: the keys
/// transposed (`[head_dim, KV_TILE]`, `kt[d][j]`), then the values row by row
/// (`[KV_TILE, head_dim]`). Columns/rows past the keys of a partial last tile are never read.
struct WideTiles<'a> {
    /// `[n_head_kv, n_tiles, 2 · head_dim · KV_TILE]`.
    data: &'a [f32],
    /// Index of the first widened tile (tiles before it are hidden from every query).
    first_tile: usize,
    /// Tiles widened per KV head.
    n_tiles: usize,
    /// Size of one head.
    hd: usize,
    /// Cached keys (positions `0..n_keys`).
    n_keys: usize,
}

impl<'a> WideTiles<'a> {
    /// Widens, in parallel, every tile that some query of the call can see: from the tile
    /// holding the first visible key of the query at `shape.pos0` (sliding windows start
    /// later) to the last cached key.
    fn fill(
        kern: &OpKernels,
        (k_cache, v_cache): (&[f16], &[f16]),
        shape: AttnShape,
        window: Option<usize>,
        buf: &'a mut Vec<f32>,
    ) -> WideTiles<'a> {
        let (hd, n_head_kv) = (shape.head_dim, shape.n_head_kv);
        let kvd = n_head_kv * hd;
        let n_keys = k_cache.len() / kvd;
        let first_key = window.map_or(0, |w| (shape.pos0 + 1).saturating_sub(w));
        let first_tile = first_key / KV_TILE;
        let n_tiles = n_keys.div_ceil(KV_TILE).saturating_sub(first_tile);
        let per_tile = 2 * hd * KV_TILE;
        let len = n_head_kv * n_tiles * per_tile;
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        buf[..len]
            .par_chunks_mut(per_tile)
            .enumerate()
            .for_each(|(c, tile)| {
                let (kh, tile0) = (c / n_tiles, (first_tile + c % n_tiles) * KV_TILE);
                let nk = KV_TILE.min(n_keys - tile0);
                let (kt, vt) = tile.split_at_mut(hd * KV_TILE);
                for j in 0..nk {
                    let off = (tile0 + j) * kvd + kh * hd;
                    let vrow = &mut vt[j * hd..(j + 1) * hd];
                    (kern.f16_to_f32)(&k_cache[off..off + hd], vrow);
                    for (d, &x) in vrow.iter().enumerate() {
                        kt[d * KV_TILE + j] = x;
                    }
                    (kern.f16_to_f32)(&v_cache[off..off + hd], vrow);
                }
            });
        WideTiles {
            data: &buf[..len],
            first_tile,
            n_tiles,
            hd,
            n_keys,
        }
    }

    /// Keys (`[hd, KV_TILE]`, transposed) and values (`[KV_TILE, hd]`) of the tile starting
    /// at key `tile0` (a multiple of `KV_TILE`, at or after the first widened tile).
    fn tile(&self, kh: usize, tile0: usize) -> (&'a [f32], &'a [f32]) {
        let per_tile = 2 * self.hd * KV_TILE;
        let i = kh * self.n_tiles + tile0 / KV_TILE - self.first_tile;
        self.data[i * per_tile..(i + 1) * per_tile].split_at(self.hd * KV_TILE)
    }
}

thread_local! {
    /// Per-thread scratch of the attention tasks, grown on first use and then reused (no
    /// allocation per call once warm).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The queries `t0..t0 + n` of the batch handled by one task.
#[derive(Clone, Copy)]
struct Rows {
    t0: usize,
    n: usize,
}

/// Splits the front of `buf` into consecutive slices of the given lengths, growing it first
/// if needed.
fn carve<const N: usize>(buf: &mut Vec<f32>, lens: [usize; N]) -> [&mut [f32]; N] {
    let total: usize = lens.iter().sum();
    if buf.len() < total {
        buf.resize(total, 0.0);
    }
    let mut rest = &mut buf[..total];
    lens.map(|len| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        head
    })
}

/// The tiled path for the queries `rows` (all heads); `out`: `[rows.n, n_head * head_dim]`.
#[allow(clippy::too_many_arguments)]
fn tiled_task(
    kern: &OpKernels,
    q: &[f32],
    tiles: &WideTiles<'_>,
    out: &mut [f32],
    shape: AttnShape,
    rows: Rows,
    scale: f32,
    window: Option<usize>,
    buf: &mut Vec<f32>,
) {
    let AttnShape {
        pos0,
        n_head,
        n_head_kv,
        head_dim: hd,
    } = shape;
    let qd = n_head * hd;
    let group = n_head / n_head_kv;
    let n_keys = tiles.n_keys;
    let nr = rows.n * group; // (query, head) rows of one KV head, ordered [t][g]
    let [qs, os, sc, ms, sums] = carve(
        buf,
        [
            nr * hd,      // qs: [rows.n, group, hd] queries of this KV head's heads
            nr * hd,      // os: [rows.n, group, hd] running weighted sums of values
            nr * KV_TILE, // sc: [nr, KV_TILE] scores, then softmax numerators
            nr,           // ms: [nr] running maxima
            nr,           // sums: [nr] running sums
        ],
    );
    let pos = |t: usize| pos0 + rows.t0 + t; // position of local query t
    let first = |t: usize| window.map_or(0, |w| (pos(t) + 1).saturating_sub(w));
    for kh in 0..n_head_kv {
        let hq = kh * group * hd; // offset of this KV head's query heads in a row
        for t in 0..rows.n {
            let src = (rows.t0 + t) * qd + hq;
            qs[t * group * hd..(t + 1) * group * hd].copy_from_slice(&q[src..src + group * hd]);
        }
        os.fill(0.0);
        ms.fill(f32::NEG_INFINITY);
        sums.fill(0.0);
        // Tiles are aligned to multiples of KV_TILE from position 0, as in ggml; tiles that
        // are entirely masked for every query of the task are not visited.
        let last = pos(rows.n - 1);
        for tile0 in (first(0) / KV_TILE * KV_TILE..=last).step_by(KV_TILE) {
            let nk = KV_TILE.min(n_keys - tile0);
            let tile_end = tile0 + nk - 1;
            // Queries that see at least one key of the tile: a contiguous range, since both
            // ends of the visible window grow with the position.
            let ta = (0..rows.n).find(|&t| pos(t) >= tile0).unwrap_or(rows.n);
            let tb = (ta..rows.n)
                .find(|&t| first(t) > tile_end)
                .unwrap_or(rows.n);
            if ta >= tb {
                continue;
            }
            // The tile, widened: keys transposed (kt[d][j]), values row by row (vt[j][d]).
            let (kt, vt) = tiles.tile(kh, tile0);
            // Runs of TRIM_QUERIES queries: the products of a run span only the keys of the
            // tile that one of its queries sees (both ends grow with the position), so the
            // masked corner of a tile on the diagonal or a window's edge is not computed.
            for ca in (ta..tb).step_by(TRIM_QUERIES) {
                let cb = (ca + TRIM_QUERIES).min(tb);
                let klo = first(ca).max(tile0) - tile0;
                let khi = pos(cb - 1).min(tile_end) - tile0;
                let nkc = khi + 1 - klo;
                // Scores of the run's (query, head) rows, keys klo..=khi: sc = qs · kt.
                let (r0, r1) = (ca * group, cb * group);
                let sc = &mut sc[r0 * KV_TILE..r1 * KV_TILE];
                sc.fill(0.0);
                let dims = GemmDims {
                    m: r1 - r0,
                    n: nkc,
                    k: hd,
                    lda: hd,
                    ldb: KV_TILE,
                    ldc: KV_TILE,
                };
                (kern.gemm_acc_f32)(dims, &qs[r0 * hd..r1 * hd], &kt[klo..], &mut sc[klo..]);
                // Online softmax per row; masked keys get weight 0.
                for (i, s) in sc.chunks_exact_mut(KV_TILE).enumerate() {
                    let r = r0 + i;
                    let t = r / group;
                    let lo = first(t).max(tile0) - tile0;
                    let hi = pos(t).min(tile_end) - tile0;
                    let s = &mut s[..nk];
                    // The scores stay unscaled here: `exp_sub_sum` scales them in its pass,
                    // and the maximum of the scaled scores is the scaled maximum (rounding is
                    // monotonic and `scale > 0`), so the bits are those of scaling first.
                    s[..lo].fill(f32::NEG_INFINITY);
                    s[hi + 1..].fill(f32::NEG_INFINITY);
                    let tile_max = scale * (kern.max)(&s[lo..=hi]);
                    if tile_max > ms[r] {
                        // New running maximum: rescale what was accumulated so far. Before
                        // the row's first visible key nothing was (`os` and the sum are
                        // still exactly 0, which the factor 0 would leave as they are).
                        if ms[r] != f32::NEG_INFINITY {
                            let f = (ms[r] - tile_max).exp();
                            (kern.scale)(&mut os[r * hd..(r + 1) * hd], f);
                            sums[r] *= f;
                        }
                        ms[r] = tile_max;
                    }
                    if ms[r] == f32::NEG_INFINITY {
                        s.fill(0.0);
                        continue;
                    }
                    // Softmax numerators (summed in f64 like ggml_vec_soft_max_f32), over the
                    // whole tile so the sum's order does not depend on the run.
                    sums[r] += (kern.exp_sub_sum)(s, scale, ms[r]) as f32;
                }
                // os += P · V over keys klo..=khi: the keys left out have weight exactly 0
                // in every row of the run, and adding 0 · v changes no accumulator.
                let dims = GemmDims {
                    m: r1 - r0,
                    n: hd,
                    k: nkc,
                    lda: KV_TILE,
                    ldb: hd,
                    ldc: hd,
                };
                let v_rows = &vt[klo * hd..(khi + 1) * hd];
                (kern.gemm_acc_f32)(dims, &sc[klo..], v_rows, &mut os[r0 * hd..r1 * hd]);
            }
        }
        // out = os / S
        for (r, o) in os.chunks_exact(hd).enumerate() {
            let (t, g) = (r / group, r % group);
            let dst = &mut out[t * qd + hq + g * hd..t * qd + hq + (g + 1) * hd];
            dst.copy_from_slice(o);
            (kern.scale)(dst, if sums[r] == 0.0 { 0.0 } else { 1.0 / sums[r] });
        }
    }
}

/// The "one chunk" path: f16 query, f16 accumulator (see the module documentation). One task
/// per (query, group of heads sharing a KV head); the groups are split further when there are
/// too few tasks to keep the threads busy (token generation), which does not change any
/// result (each head is computed alone). Calls of at most [`SERIAL_MAX_WORK`] (head, key)
/// pairs run on the calling thread. A single query over at least [`SPLIT_MIN_KEYS`] keys, in
/// a model with an odd number of KV heads, takes the split path instead
/// ([`attention_split_keys`]). Computes the queries `rows` into `out` (`[rows.len(), q_dim]`);
/// which path runs follows the call's number of queries.
fn attention_f16_accum(call: AttnInput, out: &mut [f32], rows: std::ops::Range<usize>) {
    let AttnShape {
        pos0,
        n_head,
        n_head_kv,
        head_dim: hd,
    } = call.shape;
    let qd = n_head * hd;
    let n = call.q.len() / qd;
    if n == 1 && n_head_kv % 2 == 1 && visible_keys(pos0, call.window).len() >= SPLIT_MIN_KEYS {
        return attention_split_keys(call, out);
    }
    let group = n_head / n_head_kv;
    let kern: &OpKernels = &grist_kernels::dispatch::kernels().ops;
    // (query head, key) pairs of the call: small calls run on the calling thread, one kernel
    // call per (query, KV head).
    let work = rows.len() * n_head * (pos0 + n);
    let serial = work <= SERIAL_MAX_WORK;
    let sub = if serial {
        group
    } else {
        heads_per_task(group, rows.len() * n_head)
    };
    let task = |i: usize, o: &mut [f32]| {
        SCRATCH.with_borrow_mut(|buf| {
            let (t, h0) = (rows.start + i / (n_head / sub), i % (n_head / sub) * sub);
            let p = pos0 + t;
            let keys = visible_keys(p, call.window);
            let heads = HeadRun {
                q: &call.q[t * qd + h0 * hd..t * qd + (h0 + sub) * hd],
                kh: h0 / group,
            };
            let (acc, state) = heads.run(kern, call.kv, call.shape, keys, call.scale, buf);
            for ((oh, ah), st) in o
                .chunks_exact_mut(hd)
                .zip(acc.chunks_exact(hd))
                .zip(state.chunks_exact(2))
            {
                oh.copy_from_slice(ah);
                (kern.scale)(oh, if st[1] == 0.0 { 0.0 } else { 1.0 / st[1] });
            }
        })
    };
    if serial {
        for (i, o) in out.chunks_mut(sub * hd).enumerate() {
            task(i, o);
        }
    } else {
        // The persistent spinning pool (as the matmuls of generation), not rayon: its workers
        // are awake between the small regions of a token.
        grist_kernels::pool::run_chunks_mut(out, sub * hd, &task);
    }
}

/// Smallest number of visible keys for which one query's attention is split into chunks of
/// keys (ggml's `use_split_kv_path`: decoding with an f16 cache and at least 512 keys), for
/// models with an odd number of KV heads. Below it, and for an even number of KV heads,
/// every result is the one-chunk path's, bit for bit.
///
/// Why odd only: an even number of KV heads already shares out evenly over two threads
/// (this project's target machine), and there the chunks' restarts and their merge made
/// qwen2.5-coder's attention at a 2048-token context 0–11 % slower; with 1 or 3 KV heads
/// (gemma-3-270m, SmolLM2) one thread idled and the split saves 8–18 %
/// (docs/PERFORMANCE.md, "Round 9"). The rule depends on the model's shape only, never on
/// the thread count, so results stay independent of `-t`.
pub const SPLIT_MIN_KEYS: usize = 512;

/// Keys per chunk of the split path, at most: the visible keys are cut into
/// `ceil(keys / SPLIT_CHUNK_KEYS)` chunks of equal length (±1), up to [`MAX_SPLIT_CHUNKS`]. A
/// constant, not the thread count (ggml cuts one chunk per thread), so that the result does
/// not depend on the number of threads; short enough to balance a few KV heads over the
/// threads and to keep each chunk's f16 accumulator well below the length where it stops
/// counting (an f16 sum stalls once it is 2¹¹ times its increments: after ~2048 keys of equal
/// weight), long enough that the chunks' restarts and their merge stay a small cost (256
/// cost qwen 0.5b 4–8 % at a 2048-token context, docs/PERFORMANCE.md, "Round 9").
pub const SPLIT_CHUNK_KEYS: usize = 512;

/// Most chunks a split call makes: longer contexts get longer chunks (the merge keeps its
/// per-head list of partials on the stack).
pub const MAX_SPLIT_CHUNKS: usize = 256;

/// The (query, key) pairs a call of `n` queries from position `pos0` computes: each query
/// sees the cached positions up to its own, or the last `window` of them. The work measure
/// of `grist bench --profile` (attention does about `4 · head_dim` flops per pair and query
/// head: the score and the weighted value, a multiply and an add each).
pub fn visible_pairs(pos0: usize, n: usize, window: Option<usize>) -> u64 {
    (pos0..pos0 + n)
        .map(|p| visible_keys(p, window).len() as u64)
        .sum()
}

/// The keys query position `p` sees: all cached positions up to `p`, or the last `w` with
/// a sliding window of `w`.
fn visible_keys(p: usize, window: Option<usize>) -> std::ops::Range<usize> {
    window.map_or(0, |w| (p + 1).saturating_sub(w))..p + 1
}

/// Heads per task: the largest divisor of the GQA group leaving a task for every thread
/// (`tasks_per_head` tasks per head). The kernel interleaves a task's heads key by key, which
/// makes each head about 2× cheaper than alone (docs/PERFORMANCE.md, "Round 8"), more than
/// finer tasks gain in balance. Changes no result: every head is computed alone.
fn heads_per_task(group: usize, tasks_per_head: usize) -> usize {
    let want = rayon::current_num_threads();
    (1..=group)
        .rev()
        .find(|&g| group.is_multiple_of(g) && tasks_per_head / g >= want)
        .unwrap_or(1)
}

/// Some query heads of one KV head, run through [`OpKernels::attn_f16_acc`].
struct HeadRun<'a> {
    /// `[heads, head_dim]` queries (f32, RoPE applied).
    q: &'a [f32],
    /// Their KV head.
    kh: usize,
}

impl HeadRun<'_> {
    /// Runs the heads over the cached positions `keys` from a fresh state, in `buf`: returns
    /// the f16-valued accumulators `[heads, head_dim]` and the states `[heads, (M, S)]`.
    fn run<'b>(
        &self,
        kern: &OpKernels,
        (k_cache, v_cache): (&[f16], &[f16]),
        shape: AttnShape,
        keys: std::ops::Range<usize>,
        scale: f32,
        buf: &'b mut Vec<f32>,
    ) -> (&'b mut [f32], &'b mut [f32]) {
        let hd = shape.head_dim;
        let kvd = shape.n_head_kv * hd;
        let heads = self.q.len() / hd;
        // qr: [heads, hd] queries rounded to f16; acc: [heads, hd]; state: [heads, (M, S)].
        let [qr, acc, state] = carve(buf, [heads * hd, heads * hd, 2 * heads]);
        let mut stage = [f16::ZERO; MAX_HEAD_DIM]; // f16 staging of one head
        for (qh, x) in qr.chunks_exact_mut(hd).zip(self.q.chunks_exact(hd)) {
            (kern.f32_to_f16)(x, &mut stage[..hd]);
            (kern.f16_to_f32)(&stage[..hd], qh);
        }
        acc.fill(0.0);
        for st in state.chunks_exact_mut(2) {
            st.copy_from_slice(&[f32::NEG_INFINITY, 0.0]);
        }
        let off = keys.start * kvd + self.kh * hd;
        let kv = KvRows {
            keys: &k_cache[off..],
            values: &v_cache[off..],
            stride: kvd,
            count: keys.len(),
        };
        (kern.attn_f16_acc)(qr, kv, scale, state, acc);
        (acc, state)
    }
}

thread_local! {
    /// The calling thread's buffer of split-path partial results ([`attention_split_keys`]),
    /// grown on first use and when the context gets longer, then reused.
    static PARTIALS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The split path of one query (token generation over a long context), as ggml's
/// split-KV flash attention: the visible keys are cut into chunks ([`SPLIT_CHUNK_KEYS`]),
/// each chunk of each group of heads is a task that runs the one-chunk kernel from a fresh
/// state and records its partial result (f16-valued accumulator, `M`, `S`), and the calling
/// thread merges the partials per head in f32 ([`merge_partials`]).
///
/// Why: one query has only `n_head_kv` groups of heads to share out, so with fewer KV heads
/// than threads, or a count that does not divide evenly (SmolLM2: 3 on 2 threads), threads
/// idle while attention, most of a token at a long context, runs.
fn attention_split_keys(call: AttnInput, out: &mut [f32]) {
    let (q, shape) = (call.q, call.shape);
    let (hd, n_head) = (shape.head_dim, shape.n_head);
    let group = n_head / shape.n_head_kv;
    let kern: &OpKernels = &grist_kernels::dispatch::kernels().ops;
    let keys = visible_keys(shape.pos0, call.window);
    let n_chunks = keys.len().div_ceil(SPLIT_CHUNK_KEYS).min(MAX_SPLIT_CHUNKS);
    // Chunk c: keys[c·len/n_chunks .. (c+1)·len/n_chunks].
    let chunk_keys = |c: usize| {
        let at = |c: usize| keys.start + c * keys.len() / n_chunks;
        at(c)..at(c + 1)
    };
    let sub = heads_per_task(group, n_chunks * n_head);
    // One partial per (task, head): [acc (hd values) | M | S].
    let part = hd + 2;
    // partials: [n_head / sub, n_chunks, sub, part]; task i = (head group i / n_chunks,
    // chunk i % n_chunks).
    let mut partials = PARTIALS.take();
    let len = n_head * n_chunks * part;
    if partials.len() < len {
        partials.resize(len, 0.0);
    }
    let task = |i: usize, dst: &mut [f32]| {
        SCRATCH.with_borrow_mut(|buf| {
            let (h0, c) = (i / n_chunks * sub, i % n_chunks);
            let heads = HeadRun {
                q: &q[h0 * hd..(h0 + sub) * hd],
                kh: h0 / group,
            };
            let (acc, state) = heads.run(kern, call.kv, shape, chunk_keys(c), call.scale, buf);
            for ((d, a), st) in dst
                .chunks_exact_mut(part)
                .zip(acc.chunks_exact(hd))
                .zip(state.chunks_exact(2))
            {
                d[..hd].copy_from_slice(a);
                d[hd..].copy_from_slice(st);
            }
        })
    };
    grist_kernels::pool::run_chunks_mut(&mut partials[..len], sub * part, &task);
    let mut chunks: [&[f32]; MAX_SPLIT_CHUNKS] = [&[]; MAX_SPLIT_CHUNKS];
    for (h, o) in out.chunks_exact_mut(hd).enumerate() {
        for (c, slot) in chunks.iter_mut().enumerate().take(n_chunks) {
            let at = ((h / sub * n_chunks + c) * sub + h % sub) * part;
            *slot = &partials[at..at + part];
        }
        merge_partials(&chunks[..n_chunks], o);
    }
    PARTIALS.set(partials);
}

/// Merges one head's partial results `[acc | M | S]` (in chunk order) into `out`:
/// `M = max M_c`, `r_c = exp(M_c − M)`, `S = Σ S_c·r_c`, `out = Σ acc_c·r_c / S`, with
/// partials of `S_c = 0` (no key) left out. One exponential per chunk against the final
/// maximum (ggml's `ggml_flash_attn_ext_reduce_partials` rescales a running result at each
/// chunk instead: the same sum, other roundings); plain f32 operations, so the bits do not
/// depend on the instruction set.
fn merge_partials(partials: &[&[f32]], out: &mut [f32]) {
    let hd = out.len();
    let (m, s) = (hd, hd + 1); // where M and S sit in a partial
    let live = || partials.iter().filter(|p| p[s] != 0.0);
    let max = live().fold(f32::NEG_INFINITY, |acc, p| acc.max(p[m]));
    out.fill(0.0);
    let mut sum = 0.0f32;
    for p in live() {
        let r = (p[m] - max).exp();
        sum += p[s] * r;
        for (o, &a) in out.iter_mut().zip(&p[..hd]) {
            *o += a * r;
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|o| *o *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain attention in f64 (softmax over the visible keys), the definition both paths
    /// approximate. Returns `[n, n_head * hd]`.
    fn reference(
        q: &[f32],
        kc: &[f16],
        vc: &[f16],
        s: AttnShape,
        scale: f32,
        window: Option<usize>,
    ) -> Vec<f32> {
        let (qd, kvd, hd) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim, s.head_dim);
        let n = q.len() / qd;
        let mut out = vec![0.0f32; n * qd];
        for t in 0..n {
            let p = s.pos0 + t;
            let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
            for h in 0..s.n_head {
                let kh = h / (s.n_head / s.n_head_kv);
                let qv = &q[t * qd + h * hd..][..hd];
                let sc: Vec<f64> = (first..=p)
                    .map(|j| {
                        let k = &kc[j * kvd + kh * hd..][..hd];
                        let d: f64 = k.iter().zip(qv).map(|(a, b)| a.to_f64() * *b as f64).sum();
                        d * scale as f64
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = w.iter().sum();
                for d in 0..hd {
                    let v: f64 = (first..=p)
                        .zip(&w)
                        .map(|(j, wj)| wj * vc[j * kvd + kh * hd + d].to_f64())
                        .sum();
                    out[t * qd + h * hd + d] = (v / sum) as f32;
                }
            }
        }
        out
    }

    struct Case {
        shape: AttnShape,
        n: usize,
        q: Vec<f32>,
        kc: Vec<f16>,
        vc: Vec<f16>,
    }

    fn case(seed: u64, pos0: usize, n: usize, n_head: usize, n_head_kv: usize, hd: usize) -> Case {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        };
        let n_keys = pos0 + n;
        Case {
            shape: AttnShape {
                pos0,
                n_head,
                n_head_kv,
                head_dim: hd,
            },
            n,
            q: (0..n * n_head * hd).map(|_| 3.0 * next()).collect(),
            kc: (0..n_keys * n_head_kv * hd)
                .map(|_| f16::from_f32(next()))
                .collect(),
            vc: (0..n_keys * n_head_kv * hd)
                .map(|_| f16::from_f32(next()))
                .collect(),
        }
    }

    impl Case {
        fn input(&self, scale: f32, window: Option<usize>) -> AttnInput<'_> {
            AttnInput {
                q: &self.q,
                kv: (&self.kc, &self.vc),
                shape: self.shape,
                scale,
                window,
            }
        }
    }

    fn run(c: &Case, window: Option<usize>) -> Vec<f32> {
        let mut out = vec![f32::NAN; c.n * c.shape.n_head * c.shape.head_dim];
        attention(c.input(0.2, window), &mut out, 0..c.n);
        out
    }

    #[test]
    fn visible_pairs_count_the_causal_triangle_and_the_window() {
        // A 4-token prompt: 1 + 2 + 3 + 4 pairs; after 10 cached tokens: 11 + … + 14.
        assert_eq!(visible_pairs(0, 4, None), 10);
        assert_eq!(visible_pairs(10, 4, None), 50);
        // A window of 3: 1, 2, 3, 3, 3.
        assert_eq!(visible_pairs(0, 5, Some(3)), 12);
        assert_eq!(visible_pairs(7, 1, None), 8);
        assert_eq!(visible_pairs(0, 0, None), 0);
    }

    #[test]
    fn both_paths_match_the_definition() {
        // (pos0, n, n_head, n_head_kv, head_dim, window): tiled path (n ≥ 64) with partial
        // tiles, chunks after a cached prefix, windows smaller than a tile and spanning
        // tiles; f16 path for small batches and single tokens.
        let cases = [
            (0, 64, 4, 2, 64, None),
            (0, 100, 3, 1, 32, None),
            (37, 70, 6, 3, 16, Some(10)),
            (5, 130, 2, 2, 40, Some(90)),
            (0, 96, 9, 3, 64, Some(64)),
            (0, 1, 4, 2, 64, None),
            (50, 1, 9, 3, 64, Some(20)),
            (10, 13, 4, 1, 24, None),
            (3, 63, 2, 1, 128, Some(7)),
            // Windows that hide the first key tiles from every query (the widened tiles
            // start after tile 0).
            (150, 80, 4, 2, 32, Some(70)),
            (200, 64, 2, 1, 16, Some(30)),
            // Single queries over at least SPLIT_MIN_KEYS keys: the split path, with chunks
            // of unequal length, one KV head, and a window that starts mid-cache.
            (600, 1, 9, 3, 64, None),
            (1030, 1, 4, 1, 128, None),
            (SPLIT_MIN_KEYS - 1, 1, 2, 1, 16, None),
            (1500, 1, 6, 3, 32, Some(700)),
        ];
        for (i, &(pos0, n, nh, nkv, hd, window)) in cases.iter().enumerate() {
            let c = case(i as u64, pos0, n, nh, nkv, hd);
            let got = run(&c, window);
            let want = reference(&c.q, &c.kc, &c.vc, c.shape, 0.2, window);
            // f32 accumulation: ~1e-6; f16 accumulation: a few f16 ulps.
            let tol = if n >= TILED_MIN_BATCH { 1e-5 } else { 1e-2 };
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err <= tol, "case {i}: max|d| {err} > {tol}");
        }
    }

    #[test]
    fn some_rows_get_the_bits_of_the_whole_call() {
        // (pos0, n, n_head, n_head_kv, head_dim, window): both paths, windows, a cached
        // prefix; rows at the start, the end (the executor's last row), the middle, and
        // ranges that start inside a task of Q_TILE queries.
        let cases = [
            (0, 200, 4, 2, 64, None),
            (37, 130, 6, 3, 16, Some(40)),
            (0, 96, 2, 1, 256, None),
            (10, 40, 4, 1, 24, None),
            (300, 20, 9, 3, 32, Some(100)),
        ];
        for (i, &(pos0, n, nh, nkv, hd, window)) in cases.iter().enumerate() {
            let c = case(500 + i as u64, pos0, n, nh, nkv, hd);
            let qd = nh * hd;
            let whole = run(&c, window);
            for rows in [n - 1..n, 0..1, 5..n, 33.min(n)..71.min(n), 0..n, 7..7] {
                let mut out = vec![f32::NAN; rows.len() * qd];
                attention(c.input(0.2, window), &mut out, rows.clone());
                let want = &whole[rows.start * qd..rows.end * qd];
                assert!(
                    out.iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "case {i}, rows {rows:?}: differ from the whole call"
                );
            }
        }
    }

    /// Whether [`run`] gives the same bits on rayon pools of 1, 2 and 3 threads.
    fn same_bits_on_1_2_3_threads(c: &Case, window: Option<usize>) -> bool {
        let outs: Vec<Vec<f32>> = [1, 2, 3]
            .into_iter()
            .map(|threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| run(c, window))
            })
            .collect();
        outs[1..].iter().all(|o| {
            o.iter()
                .zip(&outs[0])
                .all(|(a, b)| a.to_bits() == b.to_bits())
        })
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        for (i, (pos0, n)) in [(0, 200), (7, 65), (20, 1), (3, 10)]
            .into_iter()
            .enumerate()
        {
            let c = case(100 + i as u64, pos0, n, 6, 2, 64);
            assert!(
                same_bits_on_1_2_3_threads(&c, Some(50)),
                "pos0 {pos0} n {n}: results differ with the thread count"
            );
        }
    }

    #[test]
    fn split_path_results_do_not_depend_on_the_thread_count() {
        // 3 KV heads over 2 threads, 1 KV head over 3: the heads per task and the task
        // order change with the thread count, the chunks do not.
        for (i, (pos0, n_head_kv)) in [(700, 3), (SPLIT_MIN_KEYS + 300, 1)]
            .into_iter()
            .enumerate()
        {
            let c = case(300 + i as u64, pos0, 1, 6, n_head_kv, 32);
            assert!(
                same_bits_on_1_2_3_threads(&c, None),
                "pos0 {pos0}: split results differ with the thread count"
            );
        }
    }

    #[test]
    fn split_path_keeps_long_sums_exact_where_one_f16_accumulator_stalls() {
        // Equal scores (q = 0) and v ≡ 1: the output is exactly 1 in every value. One f16
        // accumulator over all 3000 keys stops counting at 2048 (2048 + 1 rounds back to
        // 2048 in f16), which is what the one-chunk kernel gives; the split path's chunks of
        // at most SPLIT_CHUNK_KEYS keep every partial sum exact, and the f32 merge is exact.
        let (n_keys, hd) = (3000, 64);
        let shape = AttnShape {
            pos0: n_keys - 1,
            n_head: 2,
            n_head_kv: 1,
            head_dim: hd,
        };
        let q = vec![0.0f32; 2 * hd];
        let kc = vec![f16::from_f32(0.5); n_keys * hd];
        let vc = vec![f16::ONE; n_keys * hd];
        let mut out = vec![f32::NAN; 2 * hd];
        let input = AttnInput {
            q: &q,
            kv: (&kc, &vc),
            shape,
            scale: 0.125,
            window: None,
        };
        attention(input, &mut out, 0..1);
        assert!(out.iter().all(|&x| x == 1.0), "split path: {:?}", &out[..4]);

        let kern = &grist_kernels::dispatch::kernels().ops;
        let (mut acc, mut state) = (vec![0.0f32; hd], [f32::NEG_INFINITY, 0.0]);
        let kv = KvRows {
            keys: &kc,
            values: &vc,
            stride: hd,
            count: n_keys,
        };
        (kern.attn_f16_acc)(&q[..hd], kv, 0.125, &mut state, &mut acc);
        let one_chunk = acc[0] / state[1];
        assert_eq!(state[1], n_keys as f32);
        assert_eq!(acc[0], 2048.0, "one f16 accumulator stalls at 2048");
        assert!(one_chunk < 0.7, "one chunk: {one_chunk}");
    }

    #[test]
    fn concurrent_calls_from_rayon_jobs_agree_with_one_call() {
        // Sessions run from rayon jobs, several calls at once on a 2-thread pool: each call's
        // buffers are its own, whichever thread runs its tasks. (A thread waiting inside one
        // call's parallel region may also run another whole call, nested: the reason the
        // widened tiles are taken out of their thread-local rather than borrowed; that
        // interleaving depends on timing and is not forced here.)
        let cases: Vec<Case> = (0..8)
            .map(|i| case(200 + i, 10 * i as usize, 100 + 20 * i as usize, 6, 2, 32))
            .collect();
        let want: Vec<Vec<f32>> = cases.iter().map(|c| run(c, None)).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for _ in 0..5 {
            let got: Vec<Vec<f32>> =
                pool.install(|| cases.par_iter().map(|c| run(c, None)).collect());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "call {i} differs when run concurrently"
                );
            }
        }
    }
}

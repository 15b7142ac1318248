//! Cost of the generation attention kernel (`ops.attn_f16_acc`, the f16-accumulator online
//! softmax of one query over a cached KV head) in nanoseconds per (key, query head), one
//! thread, with the table of the best ISA.
//!
//! `cargo run --release -p grist-kernels --example attn_speed [-- HEAD_DIM KEYS STRIDE HEADS COPIES]`
//! (defaults: 64 2048 192 1 1: SmolLM2's head at a 2048-token context). `STRIDE` is the
//! distance between cached rows in f16 values (the model's KV heads × head dim); `HEADS`
//! query heads share the KV head (GQA), interleaved by the kernel; `COPIES` > 1 cycles
//! through that many separate caches, so the rows come from L3 or DRAM as in a real layer
//! loop instead of from L1/L2.
use grist_kernels::dispatch::kernels;
use grist_kernels::ops::KvRows;
use half::f16;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let hd = args.first().copied().unwrap_or(64);
    let n_keys = args.get(1).copied().unwrap_or(2048);
    let stride = args.get(2).copied().unwrap_or(3 * hd).max(hd);
    let heads = args.get(3).copied().unwrap_or(1).max(1);
    let copies = args.get(4).copied().unwrap_or(1).max(1);
    let ops = &kernels().ops;
    // [copies][n_keys, stride] cached rows (keys and values share them).
    let caches: Vec<Vec<f16>> = (0..copies)
        .map(|c| {
            (0..n_keys * stride)
                .map(|i| f16::from_f32(((i * 7 + c) % 13) as f32 / 13.0 - 0.5))
                .collect()
        })
        .collect();
    let q: Vec<f32> = (0..heads * hd)
        .map(|i| (i % 5) as f32 / 5.0 - 0.4)
        .collect(); // [heads, hd]
    let mut acc = vec![0.0f32; heads * hd]; // [heads, hd]
    let mut state = vec![0.0f32; 2 * heads]; // [heads, (max, sum)]
    let mut run = |c: usize| {
        for st in state.chunks_exact_mut(2) {
            st.copy_from_slice(&[f32::NEG_INFINITY, 0.0]);
        }
        acc.fill(0.0);
        let rows = KvRows {
            keys: &caches[c],
            values: &caches[c],
            stride,
            count: n_keys,
        };
        (ops.attn_f16_acc)(&q, rows, 0.125, &mut state, &mut acc);
    };
    for c in 0..copies {
        run(c); // warm-up
    }
    let calls = (20_000_000 / (n_keys * heads).max(1)).max(3);
    let t = Instant::now();
    for i in 0..calls {
        run(i % copies);
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / (calls * n_keys * heads) as f64;
    println!(
        "{} head_dim {hd} keys {n_keys} stride {stride} heads {heads} copies {copies}: {ns:.2} ns per (key, head)",
        kernels().isa().name()
    );
}

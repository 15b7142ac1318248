//! Wall time of one generation attention call (`grist_model::attention::attention`, one
//! query over a long cache, every head) on a given number of threads: what a layer of token
//! generation spends in attention at a long context, split path included.
//!
//! `cargo run --release -p grist-model --example attn_call [-- POS N_HEAD N_HEAD_KV HEAD_DIM THREADS COPIES]`
//! (defaults: 2063 9 3 64 2 60: SmolLM2-135M at `tg32 @ d2048`). The query sits at position
//! `POS`, so it attends to `POS + 1` cached keys. `COPIES` separate caches are cycled, so
//! the rows come from DRAM as in a real layer loop (60 copies of SmolLM2's cache: 95 MB).
use grist_model::attention::{attention, AttnInput, AttnShape};
use half::f16;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default).max(1);
    let (pos, n_head, n_head_kv, hd) = (arg(0, 2063), arg(1, 9), arg(2, 3), arg(3, 64));
    let (threads, copies) = (arg(4, 2), arg(5, 60));
    assert!(
        n_head.is_multiple_of(n_head_kv),
        "N_HEAD must be a multiple of N_HEAD_KV"
    );
    let n_keys = pos + 1;
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let q: Vec<f32> = (0..n_head * hd).map(|_| 3.0 * next()).collect(); // [n_head, hd]
                                                                        // [copies] × ([n_keys, n_head_kv · hd] keys, the same for values)
    let mut cache = || -> Vec<f16> {
        (0..n_keys * n_head_kv * hd)
            .map(|_| f16::from_f32(next()))
            .collect()
    };
    let caches: Vec<(Vec<f16>, Vec<f16>)> = (0..copies).map(|_| (cache(), cache())).collect();
    let mut out = vec![0.0f32; n_head * hd]; // [n_head, hd]
    let shape = AttnShape {
        pos0: pos,
        n_head,
        n_head_kv,
        head_dim: hd,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    pool.install(|| {
        let mut call = |c: &(Vec<f16>, Vec<f16>)| {
            let input = AttnInput {
                q: &q,
                kv: (&c.0, &c.1),
                shape,
                scale: 0.125,
                window: None,
            };
            attention(input, &mut out, 0..1);
        };
        caches.iter().for_each(&mut call); // warm-up
        let calls = (2_000_000_000 / (n_keys * n_head * hd)).clamp(10, 20_000);
        let t = Instant::now();
        for i in 0..calls {
            call(&caches[i % copies]);
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / calls as f64;
        println!(
            "pos {pos} heads {n_head}/{n_head_kv} head_dim {hd} threads {threads} copies \
             {copies}: {us:.1} µs per call, {:.2} ns per (key, head)",
            us * 1e3 / (n_keys * n_head) as f64
        );
    });
}

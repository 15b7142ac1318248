//! Per-operation profiler for a real forward pass (`grist bench --profile`).
//!
//! The executor wraps each operation in [`scope`], naming the operation ([`Op`]) and the bytes
//! of weights it streams and the floating-point (or integer) operations it performs. When
//! profiling is off (the default) a scope costs one relaxed atomic load and records nothing;
//! when on, it adds the elapsed wall time and the counts to global per-operation totals.
//!
//! Scopes are opened on the thread that drives the forward pass (around whole parallel
//! operations), so the totals are wall time, and their sum is the time of the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The operations a forward pass is broken down into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Looking up (dequantizing) token embeddings.
    Embedding,
    /// RMSNorm: the q/k norms and the norms after attention and feed-forward (gemma). The
    /// norm of a layer's input (and the output norm) runs inside `QuantizeAct`.
    Norm,
    /// Quantizing activations to the weights' activation format before matmuls, with the
    /// RMSNorm of a layer's input fused into it (`linear::Input::Normed`).
    QuantizeAct,
    /// Query projection.
    MatmulQ,
    /// Key projection.
    MatmulK,
    /// Value projection.
    MatmulV,
    /// Attention output projection.
    MatmulO,
    /// FFN gate projection.
    MatmulGate,
    /// FFN up projection.
    MatmulUp,
    /// FFN down projection.
    MatmulDown,
    /// Output (LM head) projection.
    MatmulOutput,
    /// Rotary position embedding.
    Rope,
    /// Attention scores, softmax and weighted values (incl. writing the KV cache).
    Attention,
    /// SiLU/GELU gating and element-wise products. In prompt processing on the panel path
    /// the gating runs inside the gate/up product (`linear::matmul_gated`), so its time is in
    /// the `MatmulGate`/`MatmulUp` rows.
    Activation,
    /// Residual additions, scaling, bias additions.
    Elementwise,
    /// Choosing the next token from the logits.
    Sampling,
}

impl Op {
    /// Every operation, in display order.
    pub const ALL: [Op; 16] = [
        Op::Embedding,
        Op::Norm,
        Op::QuantizeAct,
        Op::MatmulQ,
        Op::MatmulK,
        Op::MatmulV,
        Op::MatmulO,
        Op::MatmulGate,
        Op::MatmulUp,
        Op::MatmulDown,
        Op::MatmulOutput,
        Op::Rope,
        Op::Attention,
        Op::Activation,
        Op::Elementwise,
        Op::Sampling,
    ];

    /// Short name for tables (`matmul.q`, `attention`, …).
    pub fn name(self) -> &'static str {
        match self {
            Op::Embedding => "embedding",
            Op::Norm => "norm",
            Op::QuantizeAct => "quantize-act",
            Op::MatmulQ => "matmul.q",
            Op::MatmulK => "matmul.k",
            Op::MatmulV => "matmul.v",
            Op::MatmulO => "matmul.o",
            Op::MatmulGate => "matmul.gate",
            Op::MatmulUp => "matmul.up",
            Op::MatmulDown => "matmul.down",
            Op::MatmulOutput => "matmul.output",
            Op::Rope => "rope",
            Op::Attention => "attention",
            Op::Activation => "activation",
            Op::Elementwise => "elementwise",
            Op::Sampling => "sampling",
        }
    }

    fn index(self) -> usize {
        Op::ALL.iter().position(|&o| o == self).unwrap_or(0)
    }
}

const N_OPS: usize = Op::ALL.len();

struct Totals {
    nanos: [AtomicU64; N_OPS],
    calls: [AtomicU64; N_OPS],
    bytes: [AtomicU64; N_OPS],
    ops: [AtomicU64; N_OPS],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Totals = Totals {
    nanos: [ZERO; N_OPS],
    calls: [ZERO; N_OPS],
    bytes: [ZERO; N_OPS],
    ops: [ZERO; N_OPS],
};

/// Turns recording on or off (off by default).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether recording is on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Clears all totals.
pub fn reset() {
    for i in 0..N_OPS {
        TOTALS.nanos[i].store(0, Ordering::Relaxed);
        TOTALS.calls[i].store(0, Ordering::Relaxed);
        TOTALS.bytes[i].store(0, Ordering::Relaxed);
        TOTALS.ops[i].store(0, Ordering::Relaxed);
    }
}

/// An open measurement; records on drop.
#[must_use = "a profile scope measures until it is dropped"]
pub struct Scope {
    op: Op,
    start: Option<Instant>,
    bytes: u64,
    ops: u64,
}

/// Starts measuring `op`, which streams `bytes` of weights and performs `ops` arithmetic
/// operations (a multiply-add counts as two). Free when profiling is off.
#[inline]
pub fn scope(op: Op, bytes: u64, ops: u64) -> Scope {
    let start = if ENABLED.load(Ordering::Relaxed) {
        Some(Instant::now())
    } else {
        None
    };
    Scope {
        op,
        start,
        bytes,
        ops,
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let i = self.op.index();
            let ns = start.elapsed().as_nanos() as u64;
            TOTALS.nanos[i].fetch_add(ns, Ordering::Relaxed);
            TOTALS.calls[i].fetch_add(1, Ordering::Relaxed);
            TOTALS.bytes[i].fetch_add(self.bytes, Ordering::Relaxed);
            TOTALS.ops[i].fetch_add(self.ops, Ordering::Relaxed);
        }
    }
}

/// Records one call of `op` measured by the caller: `nanos` of wall time, `bytes` of weights,
/// `ops` arithmetic operations (used when several operations run in one fused parallel
/// region and share its time). Does nothing when profiling is off.
pub fn record(op: Op, nanos: u64, bytes: u64, ops: u64) {
    if ENABLED.load(Ordering::Relaxed) {
        let i = op.index();
        TOTALS.nanos[i].fetch_add(nanos, Ordering::Relaxed);
        TOTALS.calls[i].fetch_add(1, Ordering::Relaxed);
        TOTALS.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        TOTALS.ops[i].fetch_add(ops, Ordering::Relaxed);
    }
}

/// Accumulated figures of one operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpStats {
    /// The operation.
    pub op: Op,
    /// Wall time spent in it, seconds.
    pub seconds: f64,
    /// Number of scopes recorded.
    pub calls: u64,
    /// Weight bytes streamed.
    pub bytes: u64,
    /// Arithmetic operations performed.
    pub ops: u64,
}

impl OpStats {
    /// Achieved weight bandwidth, GB/s.
    pub fn gbps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds / 1e9
        } else {
            0.0
        }
    }

    /// Achieved arithmetic rate, GFLOP/s (or GOPS for integer kernels).
    pub fn gflops(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds / 1e9
        } else {
            0.0
        }
    }
}

/// The totals of every operation that recorded at least one scope.
pub fn snapshot() -> Vec<OpStats> {
    Op::ALL
        .iter()
        .map(|&op| {
            let i = op.index();
            OpStats {
                op,
                seconds: TOTALS.nanos[i].load(Ordering::Relaxed) as f64 / 1e9,
                calls: TOTALS.calls[i].load(Ordering::Relaxed),
                bytes: TOTALS.bytes[i].load(Ordering::Relaxed),
                ops: TOTALS.ops[i].load(Ordering::Relaxed),
            }
        })
        .filter(|s| s.calls > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_enabled() {
        reset();
        drop(scope(Op::Rope, 10, 20));
        assert!(snapshot().is_empty());
        set_enabled(true);
        drop(scope(Op::Rope, 10, 20));
        drop(scope(Op::Rope, 5, 1));
        set_enabled(false);
        let s = snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].op, s[0].calls, s[0].bytes, s[0].ops),
            (Op::Rope, 2, 15, 21)
        );
        reset();
    }
}

//! Shared helpers of the golden tests: locating files, reading llama.cpp goldens, and the
//! teacher-forced comparison of `tests/golden/compare.py` reimplemented in Rust.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use grist_model::{Model, Session};
use serde_json::Value;

/// The workspace root (`crates/model/../..`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A fixture model: `tests/fixtures/models/NAME.gguf`, else `../shared/fixtures/models/`.
pub fn fixture_model(name: &str) -> Option<PathBuf> {
    let file = format!("{name}.gguf");
    let local = root().join("tests/fixtures/models").join(&file);
    if local.exists() {
        return Some(local);
    }
    let shared = root().join("../shared/fixtures/models").join(&file);
    shared.exists().then_some(shared)
}

/// A real model in `$GRIST_MODELS` or `models/`.
pub fn real_model(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GRIST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    let p = dir.join(file);
    p.exists().then_some(p)
}

/// Thresholds of one class of compare.py: mean |d|, max |d|, top-1 agreement, margin above
/// which top-1 must agree.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub name: &'static str,
    pub mean: f64,
    pub max: Option<f64>,
    pub agree: f64,
    pub margin: f64,
}

pub const F32: Limits = Limits {
    name: "f32",
    mean: 0.005,
    max: Some(0.03),
    agree: 0.95,
    margin: 0.05,
};
pub const BF16: Limits = Limits {
    name: "bf16",
    mean: 0.015,
    max: Some(0.08),
    agree: 0.95,
    margin: 0.15,
};
pub const QUANT: Limits = Limits {
    name: "quant",
    mean: 0.10,
    max: Some(0.60),
    agree: 0.90,
    margin: 0.60,
};
pub const REAL: Limits = Limits {
    name: "real",
    mean: 0.50,
    max: None,
    agree: 0.92,
    margin: 2.50,
};

/// A llama.cpp golden: the ids to evaluate teacher-forced and the expected top-k per position.
pub struct Golden {
    pub tokens: Vec<u32>,
    pub generated: Vec<u32>,
    /// `[position][k] = (id, logit)`: `top` then `gen_top[1..len(generated)]`.
    pub expected: Vec<Vec<(u32, f64)>>,
}

impl Golden {
    pub fn load(path: &Path) -> Golden {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let ids = |k: &str| -> Vec<u32> {
            v.get(k).and_then(|a| a.as_array()).map_or(Vec::new(), |a| {
                a.iter().map(|x| x.as_u64().unwrap() as u32).collect()
            })
        };
        let tops = |k: &str| -> Vec<Vec<(u32, f64)>> {
            v.get(k).and_then(|a| a.as_array()).map_or(Vec::new(), |a| {
                a.iter()
                    .map(|pos| {
                        pos.as_array()
                            .unwrap()
                            .iter()
                            .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap()))
                            .collect()
                    })
                    .collect()
            })
        };
        let tokens = ids("tokens");
        let generated = ids("generated");
        let mut expected = tops("top");
        let gen_top = tops("gen_top");
        if !generated.is_empty() && !gen_top.is_empty() {
            expected.extend(gen_top.into_iter().take(generated.len()).skip(1));
        }
        Golden {
            tokens,
            generated,
            expected,
        }
    }

    /// `tokens + generated[:-1]`: the teacher-forced input.
    pub fn input(&self) -> Vec<u32> {
        let mut ids = self.tokens.clone();
        if !self.generated.is_empty() {
            ids.extend_from_slice(&self.generated[..self.generated.len() - 1]);
        }
        ids
    }
}

/// Figures of one comparison.
#[derive(Debug)]
pub struct Outcome {
    pub positions: usize,
    pub top1: f64,
    pub mean: f64,
    pub max: f64,
    pub forced_miss: usize,
    pub problems: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.problems.is_empty() {
            "ok".to_string()
        } else {
            format!("FAIL {}", self.problems.join("; "))
        };
        write!(
            f,
            "{verdict} | positions={} top1={:.1}% mean|d|={:.4} max|d|={:.4}",
            self.positions,
            self.top1 * 100.0,
            self.mean,
            self.max
        )
    }
}

/// compare.py's criteria, with our full logits `[positions, n_vocab]` (every golden id is
/// compared, a superset of compare.py's "ids in both top-k lists").
pub fn compare(g: &Golden, logits: &[f32], n_vocab: usize, lim: &Limits) -> Outcome {
    let n = g.expected.len();
    let mut problems = Vec::new();
    if logits.len() < n * n_vocab {
        problems.push(format!("only {} of {n} positions", logits.len() / n_vocab));
    }
    let (mut diffs_sum, mut diffs_n, mut max_d, mut agree, mut forced_miss) =
        (0.0f64, 0usize, 0.0f64, 0usize, 0usize);
    for (p, gt) in g.expected.iter().enumerate().take(logits.len() / n_vocab) {
        let row = &logits[p * n_vocab..(p + 1) * n_vocab];
        let ours_top = argmax(row);
        let same = ours_top == gt[0].0 as usize;
        agree += same as usize;
        let margin = if gt.len() > 1 { gt[0].1 - gt[1].1 } else { 1e9 };
        if !same && margin >= lim.margin {
            forced_miss += 1;
        }
        for &(id, lg) in gt {
            let d = (row[id as usize] as f64 - lg).abs();
            diffs_sum += d;
            diffs_n += 1;
            max_d = max_d.max(d);
        }
    }
    let mean = diffs_sum / diffs_n.max(1) as f64;
    let top1 = agree as f64 / n.max(1) as f64;
    if mean > lim.mean {
        problems.push(format!("mean|d| {mean:.4} > {}", lim.mean));
    }
    if let Some(m) = lim.max {
        if max_d > m {
            problems.push(format!("max|d| {max_d:.4} > {m}"));
        }
    }
    if top1 < lim.agree {
        problems.push(format!(
            "top-1 agreement {:.1}% < {:.0}%",
            top1 * 100.0,
            lim.agree * 100.0
        ));
    }
    if forced_miss > 0 {
        problems.push(format!(
            "{forced_miss} top-1 misses where the golden margin >= {}",
            lim.margin
        ));
    }
    Outcome {
        positions: n,
        top1,
        mean,
        max: max_d,
        forced_miss,
        problems,
    }
}

/// Index of the largest value (lowest index on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Evaluates the golden's teacher-forced input as one batch; all logits.
pub fn eval_teacher_forced(model: &Model, g: &Golden) -> Vec<f32> {
    let input = g.input();
    let mut s = Session::new(model, input.len().max(64)).unwrap();
    s.eval(&input, true).unwrap().to_vec()
}

/// The golden's input fed one token per step (generation's path: the token-generation
/// kernels, where [`eval_teacher_forced`] runs the batched ones): the logits of every
/// position, `[n, n_vocab]`.
pub fn eval_step_by_step(model: &Model, g: &Golden) -> Vec<f32> {
    let input = g.input();
    let mut s = Session::new(model, input.len().max(64)).unwrap();
    let mut logits = Vec::with_capacity(input.len() * model.n_vocab());
    for &token in &input {
        logits.extend_from_slice(s.eval(&[token], true).unwrap());
    }
    logits
}

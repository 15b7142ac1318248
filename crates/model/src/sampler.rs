//! Token sampling: turn one row of logits into the next token id.
//!
//! The chain is llama.cpp's default (`common/sampling.cpp`, default sampler order), restricted to
//! the stages grist implements, applied in this order:
//!
//! 1. **penalties** over the last `repeat_last_n` accepted tokens (`llama_sampler_init_penalties`):
//!    a token seen `c > 0` times has its logit divided by `repeat_penalty` when positive
//!    (multiplied when ≤ 0), then `c · frequency_penalty + presence_penalty` subtracted;
//! 2. **top-k**: keep the `k` largest logits (`k = 0` disables);
//! 3. **top-p** (nucleus): softmax at temperature 1, keep the smallest prefix (by descending
//!    logit) whose probability mass reaches `p` (`p = 1` disables);
//! 4. **min-p**: keep tokens whose probability is at least `min_p` times the largest one, i.e.
//!    `logit ≥ max_logit + ln(min_p)` (`min_p = 0` disables);
//! 5. **temperature**: divide the logits by `temp`;
//! 6. **dist**: softmax and draw one token with the seeded RNG.
//!
//! `temp ≤ 0` means greedy, as in llama.cpp (`llama_sampler_temp_impl` keeps only the largest
//! logit): the result is the arg-max of the *penalised* logits (top-k/top-p/min-p always keep the
//! maximum, so they cannot change it). Ties go to the lowest token id, so greedy decoding is
//! deterministic and independent of sort algorithms.
//!
//! Nothing is allocated per token: the candidate buffer (`n_vocab` entries), the penalty window
//! and its per-token counts are allocated once in [`Sampler::new`] and reused.
//!
//! The random numbers come from [`Xoshiro256`], a small, well-studied generator written here so
//! that a seed gives the same text on every platform (llama.cpp uses `std::mt19937` with
//! `std::discrete_distribution`, whose output is not specified across C++ libraries, so grist does
//! not try to reproduce llama.cpp's random draws — only its distribution).

use std::cmp::Ordering;
use std::fmt;

/// Sampling parameters. [`Default`] gives llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// Temperature; `≤ 0` selects greedy decoding. llama.cpp default 0.8.
    pub temp: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables. Default 40.
    pub top_k: usize,
    /// Nucleus sampling mass in `[0, 1]`; 1 disables. Default 0.95.
    pub top_p: f32,
    /// Minimum probability relative to the most likely token, in `[0, 1]`; 0 disables.
    /// Default 0.05.
    pub min_p: f32,
    /// Repetition penalty (> 0); 1 disables. Default 1.0 (off), as in current llama.cpp.
    pub repeat_penalty: f32,
    /// How many of the most recent accepted tokens the penalties look at; 0 disables them.
    /// Default 64.
    pub repeat_last_n: usize,
    /// Subtracted once from the logit of every token present in the window. Default 0.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window. Default 0.
    pub frequency_penalty: f32,
    /// RNG seed: the same seed, parameters and logits give the same tokens.
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplerParams {
    /// Greedy decoding (temperature 0, no penalties): always the most likely token.
    pub fn greedy() -> Self {
        SamplerParams {
            temp: 0.0,
            ..SamplerParams::default()
        }
    }

    /// True when these parameters select greedy decoding (`temp ≤ 0`).
    pub fn is_greedy(&self) -> bool {
        self.temp <= 0.0
    }

    /// Checks every parameter's range, naming the offending one (as its llama.cpp flag).
    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |name: &'static str, value: f32, expected: &'static str| {
            Err(SamplerError::InvalidParam {
                name,
                value: value.to_string(),
                expected,
            })
        };
        if !self.temp.is_finite() {
            return bad("--temp", self.temp, "a finite number (≤ 0 means greedy)");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("--top-p", self.top_p, "a number in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("--min-p", self.min_p, "a number in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(
                "--repeat-penalty",
                self.repeat_penalty,
                "a number > 0 (1 = off)",
            );
        }
        if !self.presence_penalty.is_finite() {
            return bad(
                "--presence-penalty",
                self.presence_penalty,
                "a finite number",
            );
        }
        if !self.frequency_penalty.is_finite() {
            return bad(
                "--frequency-penalty",
                self.frequency_penalty,
                "a finite number",
            );
        }
        Ok(())
    }

    fn penalties_active(&self) -> bool {
        self.repeat_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// What can go wrong when building or using a [`Sampler`].
#[derive(Clone, Debug, PartialEq)]
pub enum SamplerError {
    /// A parameter is out of range.
    InvalidParam {
        /// The parameter, spelled as its command-line flag.
        name: &'static str,
        /// The rejected value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The vocabulary is empty.
    EmptyVocab,
    /// `sample` got a logits row of the wrong length.
    LogitsLength {
        /// The sampler's vocabulary size.
        expected: usize,
        /// The length of the row it was given.
        got: usize,
    },
    /// `accept` got a token id outside the vocabulary.
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },
}

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerError::InvalidParam {
                name,
                value,
                expected,
            } => {
                write!(f, "invalid value {value} for {name}: expected {expected}")
            }
            SamplerError::EmptyVocab => write!(f, "cannot sample from an empty vocabulary"),
            SamplerError::LogitsLength { expected, got } => {
                write!(
                    f,
                    "logits row has {got} entries, expected n_vocab = {expected}"
                )
            }
            SamplerError::TokenOutOfRange { token, n_vocab } => {
                write!(
                    f,
                    "token id {token} is outside the vocabulary (n_vocab = {n_vocab})"
                )
            }
        }
    }
}

impl std::error::Error for SamplerError {}

/// One candidate token: its id, its (possibly penalised, scaled) logit, and its probability once
/// a softmax has run.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    id: u32,
    logit: f32,
    p: f32,
}

/// The order every stage sorts by: larger logit first, then lower id. A total order, so results
/// never depend on the sort algorithm.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// xoshiro256** (Blackman & Vigna, 2018): 256 bits of state, period 2^256 − 1, passes BigCrush,
/// four xors/shifts and a multiply per 64-bit output. Seeded through SplitMix64 as its authors
/// recommend, so that nearby seeds (0, 1, 2, …) give unrelated streams. Not cryptographic.
#[derive(Clone, Debug)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        // SplitMix64 expands one u64 into the four state words (never all zero).
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Xoshiro256 {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform `f64` in `[0, 1)` (the top 53 bits, so every value is exactly representable).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seeded sampler for one generation stream. Call [`Sampler::sample`] on each logits row and
/// [`Sampler::accept`] on every token that enters the sequence (the sampled ones and, if the
/// penalties should see them, the prompt's).
pub struct Sampler {
    params: SamplerParams,
    n_vocab: usize,
    rng: Xoshiro256,
    /// Working set, reused for every token. `[n_vocab]`; only `candidates[..n_cand]` is live.
    candidates: Vec<Candidate>,
    /// Ring buffer of the last `repeat_last_n` accepted tokens. `[repeat_last_n]`.
    window: Vec<u32>,
    /// Next write position in `window`, and how many entries are filled.
    window_pos: usize,
    window_len: usize,
    /// Occurrences of each token id in `window`. `[n_vocab]` (empty when penalties are off).
    counts: Vec<u32>,
}

impl Sampler {
    /// Builds a sampler for a vocabulary of `n_vocab` tokens, validating `params`.
    pub fn new(params: SamplerParams, n_vocab: usize) -> Result<Sampler, SamplerError> {
        params.validate()?;
        if n_vocab == 0 {
            return Err(SamplerError::EmptyVocab);
        }
        if n_vocab > u32::MAX as usize {
            return Err(SamplerError::InvalidParam {
                name: "n_vocab",
                value: n_vocab.to_string(),
                expected: "at most 2^32 - 1 tokens",
            });
        }
        let penalties = params.penalties_active();
        let window_cap = if penalties { params.repeat_last_n } else { 0 };
        Ok(Sampler {
            rng: Xoshiro256::new(params.seed),
            n_vocab,
            candidates: vec![
                Candidate {
                    id: 0,
                    logit: 0.0,
                    p: 0.0
                };
                n_vocab
            ],
            window: vec![0; window_cap],
            window_pos: 0,
            window_len: 0,
            counts: if penalties {
                vec![0; n_vocab]
            } else {
                Vec::new()
            },
            params,
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Forgets the penalty window and restarts the RNG from the seed.
    pub fn reset(&mut self) {
        self.window_pos = 0;
        self.window_len = 0;
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.rng = Xoshiro256::new(self.params.seed);
    }

    /// Records a token that entered the sequence, for the repetition penalties.
    pub fn accept(&mut self, token: u32) -> Result<(), SamplerError> {
        if token as usize >= self.n_vocab {
            return Err(SamplerError::TokenOutOfRange {
                token,
                n_vocab: self.n_vocab,
            });
        }
        let cap = self.window.len();
        if cap == 0 {
            return Ok(());
        }
        if self.window_len == cap {
            // Evict the oldest token (the one about to be overwritten).
            let old = self.window[self.window_pos] as usize;
            self.counts[old] -= 1;
        } else {
            self.window_len += 1;
        }
        self.window[self.window_pos] = token;
        self.counts[token as usize] += 1;
        self.window_pos = (self.window_pos + 1) % cap;
        Ok(())
    }

    /// Picks the next token from one row of logits (`[n_vocab]`). Does not [`accept`] it.
    ///
    /// [`accept`]: Sampler::accept
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if logits.len() != self.n_vocab {
            return Err(SamplerError::LogitsLength {
                expected: self.n_vocab,
                got: logits.len(),
            });
        }
        if self.params.is_greedy() && !self.penalises() {
            // No penalty changes a logit, so greedy picks straight from the row, in the order
            // of `argmax` (NaN as −∞, lowest id on ties), without filling the candidates.
            return Ok(grist_kernels::ops::argmax(logits) as u32);
        }
        self.load_candidates(logits);
        if self.params.is_greedy() {
            return Ok(self.argmax(self.n_vocab));
        }
        let mut n = self.n_vocab;
        let mut sorted = false;
        n = self.top_k(n, &mut sorted);
        n = self.top_p(n, &mut sorted);
        n = self.min_p(n, sorted);
        let inv_temp = 1.0 / self.params.temp;
        for c in &mut self.candidates[..n] {
            c.logit *= inv_temp;
        }
        Ok(self.draw(n))
    }

    /// True when the repetition penalties change some logit: they are enabled and the
    /// window holds at least one accepted token.
    fn penalises(&self) -> bool {
        !self.counts.is_empty() && self.window_len > 0
    }

    /// Copies the logits into the candidate buffer, applying the penalties on the way.
    /// NaN logits become −∞ so a broken row can never be sampled from its NaNs.
    fn load_candidates(&mut self, logits: &[f32]) {
        let penalise = self.penalises();
        let p = &self.params;
        for (i, (c, &l)) in self.candidates.iter_mut().zip(logits).enumerate() {
            let mut logit = if l.is_nan() { f32::NEG_INFINITY } else { l };
            if penalise {
                let count = self.counts[i];
                if count > 0 {
                    // llama.cpp: divide positive logits, multiply non-positive ones, so the
                    // penalty always makes the token less likely.
                    if logit <= 0.0 {
                        logit *= p.repeat_penalty;
                    } else {
                        logit /= p.repeat_penalty;
                    }
                    logit -= count as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
            *c = Candidate {
                id: i as u32,
                logit,
                p: 0.0,
            };
        }
    }

    /// Index-free arg-max over `candidates[..n]`, lowest id on ties.
    fn argmax(&self, n: usize) -> u32 {
        let mut best = self.candidates[0];
        for c in &self.candidates[1..n] {
            if by_logit_desc(c, &best) == Ordering::Less {
                best = *c;
            }
        }
        best.id
    }

    /// Keeps the `top_k` largest logits, leaving them sorted. Returns the new live length.
    fn top_k(&mut self, n: usize, sorted: &mut bool) -> usize {
        let k = self.params.top_k;
        if k == 0 || k >= n {
            return n;
        }
        let live = &mut self.candidates[..n];
        // Partition so the k best come first (O(n)), then sort just those (O(k log k)).
        live.select_nth_unstable_by(k - 1, by_logit_desc);
        live[..k].sort_unstable_by(by_logit_desc);
        *sorted = true;
        k
    }

    /// Softmax (temperature 1) over `candidates[..n]`, sorting them first if needed.
    fn softmax_sorted(&mut self, n: usize, sorted: &mut bool) {
        let live = &mut self.candidates[..n];
        if !*sorted {
            live.sort_unstable_by(by_logit_desc);
            *sorted = true;
        }
        softmax(live);
    }

    /// Nucleus truncation: the shortest prefix whose probability reaches `top_p`.
    fn top_p(&mut self, n: usize, sorted: &mut bool) -> usize {
        let top_p = self.params.top_p;
        if top_p >= 1.0 {
            return n;
        }
        self.softmax_sorted(n, sorted);
        let mut cum = 0.0f32;
        for (i, c) in self.candidates[..n].iter().enumerate() {
            cum += c.p;
            if cum >= top_p {
                return i + 1;
            }
        }
        n
    }

    /// Keeps tokens with `logit ≥ max_logit + ln(min_p)`, i.e. `p ≥ min_p · p_max`.
    fn min_p(&mut self, n: usize, sorted: bool) -> usize {
        let min_p = self.params.min_p;
        if min_p <= 0.0 {
            return n;
        }
        let live = &mut self.candidates[..n];
        if sorted {
            let threshold = live[0].logit + min_p.ln();
            // The first token always stays.
            1 + live[1..]
                .iter()
                .take_while(|c| c.logit >= threshold)
                .count()
        } else {
            let max = live
                .iter()
                .map(|c| c.logit)
                .fold(f32::NEG_INFINITY, f32::max);
            let threshold = max + min_p.ln();
            // In-place stable compaction: no allocation.
            let mut kept = 0;
            for i in 0..n {
                if live[i].logit >= threshold {
                    live[kept] = live[i];
                    kept += 1;
                }
            }
            kept.max(1)
        }
    }

    /// Softmax over `candidates[..n]` and one draw from it.
    fn draw(&mut self, n: usize) -> u32 {
        let live = &mut self.candidates[..n];
        softmax(live);
        let total: f64 = live.iter().map(|c| c.p as f64).sum();
        let mut u = self.rng.next_f64() * total;
        for c in live.iter() {
            u -= c.p as f64;
            if u < 0.0 {
                return c.id;
            }
        }
        // Rounding left a sliver of mass at the end: give it to the last token with p > 0.
        live.iter().rev().find(|c| c.p > 0.0).unwrap_or(&live[0]).id
    }
}

/// In-place softmax of the candidates' logits into their `p` (max-subtracted, as llama.cpp).
fn softmax(live: &mut [Candidate]) {
    let max = live
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // Every logit is −∞: fall back to uniform so the draw is still well defined.
        let p = 1.0 / live.len() as f32;
        live.iter_mut().for_each(|c| c.p = p);
        return;
    }
    let mut sum = 0.0f32;
    for c in live.iter_mut() {
        c.p = (c.logit - max).exp();
        sum += c.p;
    }
    for c in live.iter_mut() {
        c.p /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters with every stage disabled, temperature 1: a plain softmax draw.
    fn plain() -> SamplerParams {
        SamplerParams {
            temp: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 42,
        }
    }

    /// Runs the truncation stages (not the draw) and returns the surviving ids, sorted.
    fn survivors(params: SamplerParams, logits: &[f32]) -> Vec<u32> {
        let mut s = Sampler::new(params, logits.len()).unwrap();
        s.load_candidates(logits);
        let mut sorted = false;
        let mut n = logits.len();
        n = s.top_k(n, &mut sorted);
        n = s.top_p(n, &mut sorted);
        n = s.min_p(n, sorted);
        let mut ids: Vec<u32> = s.candidates[..n].iter().map(|c| c.id).collect();
        ids.sort();
        ids
    }

    /// Empirical frequency of each token over `draws` samples.
    fn histogram(params: SamplerParams, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut s = Sampler::new(params, logits.len()).unwrap();
        let mut h = vec![0.0; logits.len()];
        for _ in 0..draws {
            h[s.sample(logits).unwrap() as usize] += 1.0;
        }
        h.iter().map(|c| c / draws as f64).collect()
    }

    #[test]
    fn defaults_are_llama_cpp_defaults() {
        let d = SamplerParams::default();
        assert_eq!(
            (
                d.temp,
                d.top_k,
                d.top_p,
                d.min_p,
                d.repeat_penalty,
                d.repeat_last_n
            ),
            (0.8, 40, 0.95, 0.05, 1.0, 64)
        );
        assert_eq!((d.presence_penalty, d.frequency_penalty), (0.0, 0.0));
    }

    #[test]
    fn greedy_picks_max_and_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplerParams::greedy(), 5).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9, 0.0]).unwrap(), 1);
        assert_eq!(s.sample(&[1.0, 2.0, 5.0, 5.0, 5.0]).unwrap(), 2);
        assert_eq!(s.sample(&[7.0, 7.0, 7.0, 7.0, 7.0]).unwrap(), 0);
        // NaN never wins.
        assert_eq!(s.sample(&[f32::NAN, 0.0, 1.0, f32::NAN, 0.5]).unwrap(), 2);
    }

    #[test]
    fn temperature_zero_and_negative_are_greedy() {
        for temp in [0.0, -1.0] {
            let params = SamplerParams {
                temp,
                seed: 7,
                ..SamplerParams::default()
            };
            let mut s = Sampler::new(params, 4).unwrap();
            for _ in 0..100 {
                assert_eq!(s.sample(&[1.0, 1.5, 1.4, -3.0]).unwrap(), 1);
            }
        }
    }

    #[test]
    fn top_k_keeps_k_largest() {
        let logits = [0.0, 5.0, 1.0, 4.0, 3.0, 2.0];
        let p = SamplerParams {
            top_k: 3,
            ..plain()
        };
        assert_eq!(survivors(p, &logits), vec![1, 3, 4]);
        // Ties at the boundary go to the lower id.
        let p = SamplerParams {
            top_k: 2,
            ..plain()
        };
        assert_eq!(survivors(p, &[1.0, 2.0, 1.0, 1.0]), vec![0, 1]);
        // k ≥ n keeps everything.
        let p = SamplerParams {
            top_k: 10,
            ..plain()
        };
        assert_eq!(survivors(p, &logits).len(), 6);
    }

    #[test]
    fn top_p_keeps_smallest_prefix_reaching_p() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are their logs).
        let logits = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        // 0.5 < 0.6 ≤ 0.75: two tokens.
        assert_eq!(
            survivors(
                SamplerParams {
                    top_p: 0.6,
                    ..plain()
                },
                &logits
            ),
            vec![0, 1]
        );
        // 0.5 ≥ 0.5: one token.
        assert_eq!(
            survivors(
                SamplerParams {
                    top_p: 0.5,
                    ..plain()
                },
                &logits
            ),
            vec![0]
        );
        // 0.75 < 0.8 ≤ 0.875: three (the tie at 0.125 broken to the lower id).
        assert_eq!(
            survivors(
                SamplerParams {
                    top_p: 0.8,
                    ..plain()
                },
                &logits
            ),
            vec![0, 1, 2]
        );
        // p = 0 keeps exactly one.
        assert_eq!(
            survivors(
                SamplerParams {
                    top_p: 0.0,
                    ..plain()
                },
                &logits
            ),
            vec![0]
        );
    }

    #[test]
    fn min_p_keeps_tokens_above_fraction_of_max() {
        // Probabilities ∝ 1, 0.5, 0.1, 0.04.
        let logits = [0.0, 0.5f32.ln(), 0.1f32.ln(), 0.04f32.ln()];
        // Unsorted path (no top-k / top-p before it).
        assert_eq!(
            survivors(
                SamplerParams {
                    min_p: 0.05,
                    ..plain()
                },
                &logits
            ),
            vec![0, 1, 2]
        );
        assert_eq!(
            survivors(
                SamplerParams {
                    min_p: 0.3,
                    ..plain()
                },
                &logits
            ),
            vec![0, 1]
        );
        // Sorted path (after top-k) gives the same answer.
        let p = SamplerParams {
            min_p: 0.05,
            top_k: 4,
            ..plain()
        };
        assert_eq!(survivors(p, &logits), vec![0, 1, 2]);
        let p = SamplerParams {
            min_p: 0.3,
            top_k: 3,
            ..plain()
        };
        assert_eq!(survivors(p, &logits), vec![0, 1]);
    }

    #[test]
    fn chain_order_top_k_then_top_p_then_min_p() {
        // p ∝ 8, 4, 2, 1, 1 over ids 0..5. top-k 4 keeps 0..4 → renormalised 8/15, 4/15, 2/15,
        // 1/15; top-p 0.9: cum 0.533, 0.8, 0.933 → keeps 0, 1, 2; min-p 0.3 → 2/8 = 0.25 < 0.3
        // drops id 2.
        let logits = [8f32.ln(), 4f32.ln(), 2f32.ln(), 0.0, 0.0];
        let p = SamplerParams {
            top_k: 4,
            top_p: 0.9,
            min_p: 0.3,
            ..plain()
        };
        assert_eq!(survivors(p, &logits), vec![0, 1]);
    }

    #[test]
    fn repeat_penalty_divides_positive_multiplies_negative() {
        let p = SamplerParams {
            repeat_penalty: 2.0,
            ..plain()
        };
        let mut s = Sampler::new(p, 4).unwrap();
        s.accept(1).unwrap();
        s.accept(2).unwrap();
        s.accept(2).unwrap();
        s.load_candidates(&[1.0, 4.0, -3.0, 2.0]);
        let l: Vec<f32> = s.candidates.iter().map(|c| c.logit).collect();
        assert_eq!(l, vec![1.0, 2.0, -6.0, 2.0]);
    }

    #[test]
    fn frequency_and_presence_subtract() {
        let p = SamplerParams {
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..plain()
        };
        let mut s = Sampler::new(p, 4).unwrap();
        for t in [3, 3, 3, 0] {
            s.accept(t).unwrap();
        }
        s.load_candidates(&[1.0, 1.0, 1.0, 1.0]);
        let l: Vec<f32> = s.candidates.iter().map(|c| c.logit).collect();
        // id 0: 1 − 0.5 − 0.25; id 3: 1 − 1.5 − 0.25.
        assert_eq!(l, vec![0.25, 1.0, 1.0, -0.75]);
    }

    #[test]
    fn penalty_window_forgets_old_tokens() {
        let p = SamplerParams {
            repeat_penalty: 2.0,
            repeat_last_n: 2,
            ..plain()
        };
        let mut s = Sampler::new(p, 3).unwrap();
        for t in [0, 1, 2] {
            s.accept(t).unwrap();
        }
        // Window is [1, 2]: token 0 fell out.
        s.load_candidates(&[4.0, 4.0, 4.0]);
        let l: Vec<f32> = s.candidates.iter().map(|c| c.logit).collect();
        assert_eq!(l, vec![4.0, 2.0, 2.0]);
        // And the greedy choice follows the penalty.
        let p = SamplerParams {
            temp: 0.0,
            repeat_penalty: 2.0,
            repeat_last_n: 2,
            ..plain()
        };
        let mut s = Sampler::new(p, 3).unwrap();
        s.accept(0).unwrap();
        assert_eq!(s.sample(&[4.0, 3.0, 1.0]).unwrap(), 1);
        s.reset();
        assert_eq!(s.sample(&[4.0, 3.0, 1.0]).unwrap(), 0);
    }

    #[test]
    fn penalties_off_when_last_n_is_zero() {
        let p = SamplerParams {
            repeat_penalty: 2.0,
            repeat_last_n: 0,
            ..plain()
        };
        let mut s = Sampler::new(p, 2).unwrap();
        s.accept(0).unwrap();
        s.load_candidates(&[4.0, 1.0]);
        assert_eq!(s.candidates[0].logit, 4.0);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let run = |seed| {
            let p = SamplerParams {
                seed,
                ..SamplerParams::default()
            };
            let mut s = Sampler::new(p, logits.len()).unwrap();
            (0..200)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // reset() restarts the stream.
        let p = SamplerParams {
            seed: 9,
            ..SamplerParams::default()
        };
        let mut s = Sampler::new(p, logits.len()).unwrap();
        let a: Vec<u32> = (0..50).map(|_| s.sample(&logits).unwrap()).collect();
        s.reset();
        let b: Vec<u32> = (0..50).map(|_| s.sample(&logits).unwrap()).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn draws_follow_the_softmax() {
        // p = 0.5, 0.3, 0.2 at temperature 1.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let h = histogram(plain(), &logits, 100_000);
        for (got, want) in h.iter().zip([0.5, 0.3, 0.2]) {
            assert!((got - want).abs() < 0.01, "{h:?}");
        }
        // Temperature 2 flattens: p ∝ sqrt(0.5), sqrt(0.3), sqrt(0.2).
        let z = 0.5f64.sqrt() + 0.3f64.sqrt() + 0.2f64.sqrt();
        let want = [0.5f64.sqrt() / z, 0.3f64.sqrt() / z, 0.2f64.sqrt() / z];
        let h = histogram(
            SamplerParams {
                temp: 2.0,
                ..plain()
            },
            &logits,
            100_000,
        );
        for (got, want) in h.iter().zip(want) {
            assert!((got - want).abs() < 0.01, "{h:?}");
        }
        // Truncated tokens are never drawn; survivors are renormalised (top-k 2: 5/8, 3/8).
        let h = histogram(
            SamplerParams {
                top_k: 2,
                ..plain()
            },
            &logits,
            100_000,
        );
        assert_eq!(h[2], 0.0);
        assert!((h[0] - 0.625).abs() < 0.01, "{h:?}");
    }

    #[test]
    fn temperature_applies_after_truncation() {
        // With min-p 0.5 at temperature 1, p ∝ 1, 0.6, 0.4 keeps ids 0 and 1. A huge temperature
        // must not bring id 2 back (it would if temperature ran first and flattened it).
        let logits = [0.0, 0.6f32.ln(), 0.4f32.ln()];
        let h = histogram(
            SamplerParams {
                min_p: 0.5,
                temp: 100.0,
                ..plain()
            },
            &logits,
            20_000,
        );
        assert_eq!(h[2], 0.0);
        assert!((h[0] - 0.5).abs() < 0.02, "{h:?}");
    }

    #[test]
    fn bad_parameters_and_inputs_are_errors() {
        let bad = [
            SamplerParams {
                top_p: 2.0,
                ..plain()
            },
            SamplerParams {
                top_p: -0.1,
                ..plain()
            },
            SamplerParams {
                min_p: 1.5,
                ..plain()
            },
            SamplerParams {
                temp: f32::NAN,
                ..plain()
            },
            SamplerParams {
                repeat_penalty: 0.0,
                ..plain()
            },
            SamplerParams {
                presence_penalty: f32::INFINITY,
                ..plain()
            },
        ];
        for p in bad {
            let e = Sampler::new(p, 4).err().expect("should be rejected");
            assert!(matches!(e, SamplerError::InvalidParam { .. }), "{e}");
        }
        let e = Sampler::new(
            SamplerParams {
                top_p: 2.0,
                ..plain()
            },
            4,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("--top-p"), "{e}");
        assert_eq!(
            Sampler::new(plain(), 0).err(),
            Some(SamplerError::EmptyVocab)
        );
        let mut s = Sampler::new(plain(), 4).unwrap();
        assert!(matches!(
            s.sample(&[0.0; 3]),
            Err(SamplerError::LogitsLength { .. })
        ));
        assert!(matches!(
            s.accept(4),
            Err(SamplerError::TokenOutOfRange { .. })
        ));
    }

    #[test]
    fn all_negative_infinity_still_samples() {
        let mut s = Sampler::new(plain(), 3).unwrap();
        let t = s.sample(&[f32::NEG_INFINITY; 3]).unwrap();
        assert!(t < 3);
    }

    #[test]
    fn xoshiro_is_uniform_enough() {
        let mut r = Xoshiro256::new(0);
        let n = 100_000;
        let mean = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01);
        let mut r = Xoshiro256::new(0);
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.next_f64())));
    }
}

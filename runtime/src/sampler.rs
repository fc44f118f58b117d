//! Token sampling from logits, with llama.cpp's semantics and default order:
//! repetition penalties -> top-k -> top-p -> min-p -> temperature -> draw.
//!
//! Invariants:
//! - `temperature <= 0` is greedy: the highest logit after penalties wins and
//!   ties go to the lowest id (llama.cpp's argmax), with no randomness used.
//! - The same config (seed included) and the same sequence of logits and
//!   accepted tokens give the same tokens, on any machine: the RNG is
//!   ChaCha20 seeded from `seed`, and every float reduction runs in a fixed
//!   order. (llama.cpp uses mt19937, so *random* draws do not reproduce
//!   llama.cpp's own stream; greedy output does.)
//! - NaN logits are treated as -inf; a sampled id is always `< logits.len()`.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Sampling parameters; `Default` matches llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (`0` = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (`>= 1` = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` x the most likely one (`<= 0` = off).
    pub min_p: f32,
    /// Divide positive / multiply negative logits of recent tokens (`1` = off).
    pub repeat_penalty: f32,
    /// Subtract `frequency_penalty` x (occurrences in the window) (`0` = off).
    pub frequency_penalty: f32,
    /// Subtract `presence_penalty` from tokens seen in the window (`0` = off).
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at (`0` = off).
    pub repeat_last_n: usize,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Refuses parameters that would silently sample garbage: NaN or infinite values, a
    /// negative temperature, probabilities outside `[0, 1]`, a penalty `<= 0`. The message
    /// names the llama.cpp-style flag.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |flag: &str, v: f32, want: &str| Err(format!("--{flag} {v}: {want}"));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temp",
                self.temperature,
                "must be a finite number >= 0 (0 = greedy)",
            );
        }
        for (flag, v) in [("top-p", self.top_p), ("min-p", self.min_p)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return bad(flag, v, "must be a probability between 0 and 1");
            }
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(
                "repeat-penalty",
                self.repeat_penalty,
                "must be a finite number > 0 (1 = off)",
            );
        }
        for (flag, v) in [
            ("frequency-penalty", self.frequency_penalty),
            ("presence-penalty", self.presence_penalty),
        ] {
            if !v.is_finite() {
                return bad(flag, v, "must be a finite number");
            }
        }
        Ok(())
    }

    /// Greedy decoding (what the reference outputs use).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// A candidate token and its (possibly modified) logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// Stateful sampler: holds the RNG and the penalty window.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: ChaCha20Rng,
    history: VecDeque<u32>,
}

/// Index of the largest logit, lowest index on ties, NaN counted as -inf;
/// `None` only for an empty slice.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        let l = if l.is_nan() { f32::NEG_INFINITY } else { l };
        match best {
            Some((_, b)) if l <= b => {}
            _ => best = Some((i, l)),
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Descending logit, then ascending id: a total, deterministic order.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Softmax probabilities (f64) of candidates, in their current order.
fn softmax(c: &[Candidate]) -> Vec<f64> {
    let max = c.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max) as f64;
    if !max.is_finite() {
        // All -inf: uniform over the candidates.
        return vec![1.0 / c.len().max(1) as f64; c.len()];
    }
    let e: Vec<f64> = c.iter().map(|c| ((c.logit as f64) - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        let rng = ChaCha20Rng::seed_from_u64(cfg.seed);
        Self {
            cfg,
            rng,
            history: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Record a token for the repetition penalties (prompt tokens too, as
    /// llama.cpp's CLI does). `sample` does not do this by itself.
    pub fn accept(&mut self, id: u32) {
        if self.cfg.repeat_last_n == 0 {
            return;
        }
        self.history.push_back(id);
        while self.history.len() > self.cfg.repeat_last_n {
            self.history.pop_front();
        }
    }

    /// Forget the penalty window and re-seed the RNG.
    pub fn reset(&mut self) {
        self.history.clear();
        self.rng = ChaCha20Rng::seed_from_u64(self.cfg.seed);
    }

    /// Recent tokens the penalties apply to, oldest first.
    pub fn history(&self) -> impl Iterator<Item = u32> + '_ {
        self.history.iter().copied()
    }

    /// Choose the next token; `None` only when `logits` is empty.
    pub fn sample(&mut self, logits: &[f32]) -> Option<u32> {
        if logits.is_empty() {
            return None;
        }
        let mut cands: Vec<Candidate> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| Candidate {
                id: i as u32,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
            })
            .collect();
        self.apply_penalties(&mut cands);
        if self.cfg.temperature <= 0.0 {
            return argmax(&cands.iter().map(|c| c.logit).collect::<Vec<_>>());
        }
        self.truncate(&mut cands);
        for c in cands.iter_mut() {
            c.logit /= self.cfg.temperature;
        }
        let probs = softmax(&cands);
        let u: f64 = self.rng.gen::<f64>();
        let mut acc = 0.0;
        for (c, p) in cands.iter().zip(&probs) {
            acc += p;
            if u < acc {
                return Some(c.id);
            }
        }
        // Rounding left `acc` a hair below 1: take the last candidate.
        cands.last().map(|c| c.id)
    }

    /// llama.cpp's penalties sampler over the recent-token window.
    pub fn apply_penalties(&self, cands: &mut [Candidate]) {
        let c = &self.cfg;
        if self.history.is_empty()
            || (c.repeat_penalty == 1.0 && c.frequency_penalty == 0.0 && c.presence_penalty == 0.0)
        {
            return;
        }
        let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        for &t in &self.history {
            *counts.entry(t).or_insert(0) += 1;
        }
        for cand in cands.iter_mut() {
            let Some(&n) = counts.get(&cand.id) else {
                continue;
            };
            // Dividing a negative logit would make it *more* likely.
            if cand.logit <= 0.0 {
                cand.logit *= c.repeat_penalty;
            } else {
                cand.logit /= c.repeat_penalty;
            }
            cand.logit -= n as f32 * c.frequency_penalty + c.presence_penalty;
        }
    }

    /// top-k, top-p, min-p in llama.cpp's order; leaves candidates sorted by
    /// descending logit and never empties the set.
    pub fn truncate(&self, cands: &mut Vec<Candidate>) {
        let c = &self.cfg;
        if c.top_k > 0 && c.top_k < cands.len() {
            cands.select_nth_unstable_by(c.top_k - 1, by_logit_desc);
            cands.truncate(c.top_k);
        }
        cands.sort_by(by_logit_desc);
        if c.top_p < 1.0 {
            let probs = softmax(cands);
            let mut cum = 0.0;
            let mut keep = cands.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= c.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep.max(1));
        }
        if c.min_p > 0.0 {
            if let Some(max) = cands.first().map(|c| c.logit) {
                // p_i >= min_p * p_max  <=>  logit_i >= logit_max + ln(min_p)
                let min_logit = max + c.min_p.ln();
                let keep = cands.iter().take_while(|x| x.logit >= min_logit).count();
                cands.truncate(keep.max(1));
            }
        }
    }
}

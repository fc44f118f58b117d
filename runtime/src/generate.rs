//! The generation loop: prompt → forward → sample → stream, over any [`Forward`] backend.
//!
//! The loop owns no model state: the backend holds the KV cache, so a prompt is decoded as
//! one batch (prefill) and every generated token is one decode step (S = 1).

use std::time::{Duration, Instant};

use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// One forward pass over new tokens, returning the logits of the last position.
pub trait Forward {
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, String>;
    /// Forget the KV cache.
    fn reset(&mut self);
    /// Tokens in the KV cache.
    fn past(&self) -> u64;
    /// Maximum tokens the cache holds.
    fn capacity(&self) -> u64;
    /// A short name for statistics (`interp`, `jit`).
    fn name(&self) -> &'static str;
}

/// The reference interpreter as a backend.
pub struct InterpForward<'g, 'w> {
    it: lpuc_ir::interp::Interpreter<'g, 'w>,
    cap: u64,
}

impl<'g, 'w> InterpForward<'g, 'w> {
    pub fn new(
        g: &'g lpuc_ir::Graph,
        w: &'w dyn lpuc_ir::weights::WeightStore,
    ) -> Result<Self, String> {
        let cap = g.syms.bound(lpuc_ir::Sym::P).unwrap_or(u64::MAX);
        Ok(InterpForward {
            it: lpuc_ir::interp::Interpreter::new(g, w).map_err(|e| e.to_string())?,
            cap,
        })
    }
}

impl Forward for InterpForward<'_, '_> {
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, String> {
        let t = self.it.run_tokens(tokens).map_err(|e| e.to_string())?;
        let rows = t.numel() / t.shape.last().copied().unwrap_or(1).max(1);
        Ok(t.row(rows - 1).to_vec())
    }
    fn reset(&mut self) {
        self.it.reset()
    }
    fn past(&self) -> u64 {
        self.it.past()
    }
    fn capacity(&self) -> u64 {
        self.cap
    }
    fn name(&self) -> &'static str {
        "interp"
    }
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Tokens to generate.
    pub n_predict: usize,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    pub sampler: SamplerConfig,
}

#[derive(Clone, Debug, Default)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    /// All logits at the first generated position.
    pub first_logits: Vec<f32>,
    pub prompt_time: Duration,
    pub gen_time: Duration,
    /// Why generation stopped.
    pub stop: StopReason,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopReason {
    #[default]
    Length,
    EndOfGeneration,
    ContextFull,
}

/// The `k` highest `(id, logit)` pairs, ties broken by the lower id.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return vec![];
    }
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, logits[i as usize])).collect()
}

/// Refuses logits with no finite value: sampling them would "choose" token 0 (NaN counts
/// as -inf) and stream garbage as if nothing were wrong.
fn check_logits(logits: &[f32], step: usize, past: u64) -> Result<(), String> {
    if logits.iter().any(|x| x.is_finite()) {
        return Ok(());
    }
    let what = if logits.iter().all(|x| x.is_nan()) {
        "every logit is NaN"
    } else {
        "no logit is finite"
    };
    Err(format!(
        "generation step {step} (after {past} tokens{}): {what}; the weights or the backend \
         produced invalid numbers (try `--backend interp` to compare)",
        if step == 0 {
            ", the prompt's logits"
        } else {
            ""
        }
    ))
}

/// Runs the prompt, then samples up to `n_predict` tokens; `on_text` receives the streamed
/// text as complete UTF-8 pieces. The backend's cache must be empty or hold a prefix of
/// the prompt that the caller accounted for (`prompt_ids` are the *new* tokens).
pub fn generate(
    fwd: &mut dyn Forward,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, String> {
    if prompt_ids.is_empty() {
        return Err("the prompt is empty: give at least one token".into());
    }
    opts.sampler.validate()?;
    let mut out = Generation {
        prompt_ids: prompt_ids.to_vec(),
        ..Default::default()
    };
    if fwd.past() + prompt_ids.len() as u64 > fwd.capacity() {
        return Err(format!(
            "the prompt has {} tokens; with {} cached that exceeds the context of {} (raise it with -c)",
            prompt_ids.len(),
            fwd.past(),
            fwd.capacity()
        ));
    }
    let t0 = Instant::now();
    let mut logits = fwd.forward(prompt_ids)?;
    out.prompt_time = t0.elapsed();
    out.first_logits = logits.clone();
    let mut sampler = Sampler::new(opts.sampler.clone());
    let mut stream = StreamDecoder::new(false);
    let t1 = Instant::now();
    for i in 0..opts.n_predict {
        check_logits(&logits, i, fwd.past())?;
        let id = sampler
            .sample(&logits)
            .ok_or("no token to sample (empty or all-NaN logits)")?;
        if tok.is_eog(id) && !opts.ignore_eos {
            out.stop = StopReason::EndOfGeneration;
            break;
        }
        out.ids.push(id);
        let piece = stream.push(tok, id);
        if !piece.is_empty() {
            on_text(&piece);
            out.text.push_str(&piece);
        }
        if i + 1 == opts.n_predict {
            break;
        }
        if fwd.past() + 1 > fwd.capacity() {
            out.stop = StopReason::ContextFull;
            break;
        }
        logits = fwd.forward(&[id])?;
    }
    let rest = stream.finish();
    if !rest.is_empty() {
        on_text(&rest);
        out.text.push_str(&rest);
    }
    out.gen_time = t1.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_finite_logits_are_an_error_naming_the_step() {
        let e = super::check_logits(&[f32::NAN; 8], 0, 4).unwrap_err();
        assert!(e.contains("step 0") && e.contains("NaN"), "{e}");
        let e = super::check_logits(&[f32::NEG_INFINITY, f32::NAN], 3, 7).unwrap_err();
        assert!(e.contains("step 3") && e.contains("after 7 tokens"), "{e}");
        assert!(super::check_logits(&[f32::NAN, 1.0], 0, 0).is_ok());
    }

    #[test]
    fn sampler_config_refuses_nan_and_out_of_range() {
        use crate::sampler::SamplerConfig;
        assert!(SamplerConfig::default().validate().is_ok());
        for c in [
            SamplerConfig {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplerConfig {
                temperature: -1.0,
                ..Default::default()
            },
            SamplerConfig {
                top_p: 1.5,
                ..Default::default()
            },
            SamplerConfig {
                min_p: f32::NAN,
                ..Default::default()
            },
            SamplerConfig {
                repeat_penalty: 0.0,
                ..Default::default()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_id() {
        let l = [1.0, 3.0, 3.0, -1.0, 2.0];
        assert_eq!(super::top_k(&l, 3), vec![(1, 3.0), (2, 3.0), (4, 2.0)]);
        assert_eq!(super::top_k(&l, 10).len(), 5);
        assert!(super::top_k(&l, 0).is_empty());
    }
}

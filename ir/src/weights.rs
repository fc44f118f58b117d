//! Weight stores: where a program's named weights come from when it runs.
//!
//! A store hands out zero-copy views (`dtype`, row-major `shape`, raw GGUF-layout bytes).
//! [`RandomWeights`] makes every tensor deterministically from `(seed, name)`, so a weight-less
//! `.ir` file with `weights random(seed = N)` is a runnable program, and a single tensor can be
//! regenerated without the others.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

use crate::dtype::DType;
use crate::graph::Graph;
use crate::op::Op;

/// A borrowed weight tensor.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub dtype: DType,
    pub shape: &'a [u64],
    pub bytes: &'a [u8],
}

pub trait WeightStore: Sync {
    fn get(&self, name: &str) -> Option<WeightView<'_>>;
}

/// Owned tensors, e.g. random weights or test fixtures.
#[derive(Default, Debug, Clone)]
pub struct MemWeights {
    map: HashMap<String, (DType, Vec<u64>, Vec<u8>)>,
}

impl MemWeights {
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<u64>,
        bytes: Vec<u8>,
    ) {
        self.map.insert(name.into(), (dtype, shape, bytes));
    }

    /// Quantizes `values` into `dtype` and stores them.
    pub fn insert_f32(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<u64>,
        values: &[f32],
    ) -> Result<(), String> {
        let bytes = crate::quant::quantize(dtype, values).map_err(|e| e.to_string())?;
        self.insert(name, dtype, shape, bytes);
        Ok(())
    }

    pub fn total_bytes(&self) -> usize {
        self.map.values().map(|(_, _, b)| b.len()).sum()
    }
}

impl WeightStore for MemWeights {
    fn get(&self, name: &str) -> Option<WeightView<'_>> {
        self.map.get(name).map(|(dtype, shape, bytes)| WeightView {
            dtype: *dtype,
            shape,
            bytes,
        })
    }
}

/// FNV-1a: a hash whose value never changes across Rust or crate versions, so random weights
/// stay the same for the same `(seed, name)` forever.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The values the random store gives tensor `name` of `shape` (before quantization).
///
/// Norm scales are near 1 (`1 ± 0.1`); matrices `[out, in]` are uniform with variance
/// `1/in`, so activations keep unit scale through every layer; embeddings are uniform ±1.
pub fn random_values(seed: u64, name: &str, shape: &[u64]) -> Vec<f32> {
    let n: u64 = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name));
    let fan_in = shape.last().copied().unwrap_or(1).max(1) as f32;
    if name.contains("norm") {
        (0..n).map(|_| 1.0 + rng.gen_range(-0.1f32..0.1)).collect()
    } else if name.starts_with("token_embd") {
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    } else {
        let a = (3.0 / fan_in).sqrt();
        (0..n).map(|_| rng.gen_range(-a..a)).collect()
    }
}

/// Random weights for every `weight` of a graph.
pub fn random_weights(g: &Graph, seed: u64) -> Result<MemWeights, String> {
    let mut w = MemWeights::default();
    for v in g.weights() {
        let Op::Weight { name } = g.op(v) else {
            continue;
        };
        let t = g.ty(v);
        let shape: Vec<u64> = t
            .shape
            .iter()
            .map(|d| {
                d.as_const()
                    .ok_or_else(|| format!("weight \"{name}\" has a symbolic shape {t}"))
            })
            .collect::<Result<_, _>>()?;
        let n = shape
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(*d))
            .ok_or("weight too large")?;
        if n > (1 << 31) {
            return Err(format!("weight \"{name}\" has {n} elements: too large for random weights (use shapes only)"));
        }
        let values = random_values(seed, name, &shape);
        w.insert_f32(name.clone(), t.dtype, shape, &values)?;
    }
    Ok(w)
}

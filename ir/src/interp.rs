//! The reference interpreter: the oracle every pass, the JIT and the LPU simulator are
//! checked against.
//!
//! It is slow on purpose and obviously correct: every op is a direct loop over its
//! definition in [`crate::op`]; weights are dequantized exactly as GGUF defines the blocks;
//! dot products, norms and softmax accumulate in f64. The only liberties taken are ones that
//! cannot change results: matmul rows run in parallel (each row is still one sequential f64
//! sum), and dequantized weights are cached across calls.
//!
//! State: the KV caches live here between calls. A call with `S` new tokens sees `P` rows
//! already cached, appends, and on success advances `P` by `S`; on any error the caches are
//! rolled back to `P`, so a failed call leaves the state as it was.

use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

use crate::graph::{Graph, Value};
use crate::op::{Op, RopeStyle};
use crate::types::{Bindings, Dim, Sym};
use crate::weights::WeightStore;

/// A dense f32 tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The last-axis row `i` (for logits `[B, S, V]`, row `b·S + s`).
    pub fn row(&self, i: usize) -> &[f32] {
        let w = *self.shape.last().unwrap_or(&1);
        &self.data[i * w..(i + 1) * w]
    }
}

/// An i32 input tensor (token ids).
#[derive(Clone, Debug, PartialEq)]
pub struct IntTensor {
    pub shape: Vec<usize>,
    pub data: Vec<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("the graph is not well formed:\n{0}")]
    Invalid(#[from] crate::verify::VerifyErrors),
    #[error("missing input \"{0}\"")]
    MissingInput(String),
    #[error("input \"{name}\": {msg}")]
    BadInput { name: String, msg: String },
    #[error("weight \"{name}\": {msg}")]
    Weight { name: String, msg: String },
    #[error("context full: {past} cached + {new} new tokens exceed the capacity of {cap} (the bound of P)")]
    ContextFull { past: u64, new: u64, cap: u64 },
    #[error("%{value} = {op}: {msg}")]
    Op {
        value: usize,
        op: &'static str,
        msg: String,
    },
}

/// One KV cache: rows along the state's `P` axis, stored per outer index so appends are
/// cheap. `outer` = product of dims before the `P` axis, `inner` = product after.
#[derive(Clone, Debug)]
struct Cache {
    outer: usize,
    inner: usize,
    rows: Vec<Vec<f32>>,
}

#[derive(Clone)]
enum Val {
    F(Arc<Tensor>),
    I(Arc<IntTensor>),
    /// A weight: looked up in the store by name when used.
    W(String),
}

pub struct Interpreter<'g, 'w> {
    g: &'g Graph,
    order: Vec<Value>,
    num: HashMap<Value, usize>,
    weights: &'w dyn WeightStore,
    caches: HashMap<String, Cache>,
    past: u64,
    batch: Option<u64>,
    dequant_cache: HashMap<String, Arc<Tensor>>,
}

impl<'g, 'w> Interpreter<'g, 'w> {
    /// Verifies the graph and prepares empty caches.
    pub fn new(g: &'g Graph, weights: &'w dyn WeightStore) -> Result<Self, InterpError> {
        crate::verify::verify(g)?;
        let order = g.topo_order().map_err(|_| unreachable_cycle())?;
        Ok(Interpreter {
            g,
            order,
            num: g.numbering(),
            weights,
            caches: HashMap::new(),
            past: 0,
            batch: None,
            dequant_cache: HashMap::new(),
        })
    }

    /// Tokens already in the KV cache (`P`).
    pub fn past(&self) -> u64 {
        self.past
    }

    /// Forgets the KV cache.
    pub fn reset(&mut self) {
        self.caches.clear();
        self.past = 0;
        self.batch = None;
    }

    /// Runs one batch of one sequence (`B = 1`): `tokens` are the `S` new ids. Returns the
    /// `logits` output (or the first output if there is none by that name).
    pub fn run_tokens(&mut self, tokens: &[u32]) -> Result<Tensor, InterpError> {
        let data = tokens
            .iter()
            .map(|&t| {
                i32::try_from(t).map_err(|_| InterpError::BadInput {
                    name: "tokens".into(),
                    msg: format!("id {t} too large"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let input = IntTensor {
            shape: vec![1, tokens.len()],
            data,
        };
        let mut outs = self.run(&[("tokens", input)])?;
        let key = if outs.contains_key("logits") {
            "logits".to_string()
        } else {
            outs.keys()
                .min()
                .cloned()
                .ok_or_else(|| InterpError::MissingInput("an output".into()))?
        };
        Ok(outs.remove(&key).expect("key taken from the map"))
    }

    /// Runs the program once. Inputs are bound by name; `B` and `S` are read from the input
    /// shapes, `P` from the cache.
    pub fn run(
        &mut self,
        inputs: &[(&str, IntTensor)],
    ) -> Result<HashMap<String, Tensor>, InterpError> {
        let before: HashMap<String, usize> = self
            .caches
            .iter()
            .map(|(k, c)| (k.clone(), c.rows.first().map_or(0, |r| r.len())))
            .collect();
        let r = self.run_inner(inputs);
        if r.is_err() {
            // Roll back partial appends so a failed call changes nothing.
            for (k, c) in self.caches.iter_mut() {
                let n = before.get(k).copied().unwrap_or(0);
                c.rows.iter_mut().for_each(|r| r.truncate(n));
            }
        }
        r
    }

    fn run_inner(
        &mut self,
        inputs: &[(&str, IntTensor)],
    ) -> Result<HashMap<String, Tensor>, InterpError> {
        let g = self.g;
        let mut bind = Bindings {
            b: 0,
            p: self.past,
            s: 0,
        };
        let mut bound = [false, true, false];
        let mut vals: HashMap<Value, Val> = HashMap::new();
        // Bind inputs and solve B, S from their declared shapes.
        for v in &self.order {
            let Op::Input { name } = g.op(*v) else {
                continue;
            };
            let t = inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| InterpError::MissingInput(name.clone()))?;
            let decl = &g.ty(*v).shape;
            let bad = |msg: String| InterpError::BadInput {
                name: name.clone(),
                msg,
            };
            if decl.len() != t.shape.len() || t.data.len() != t.shape.iter().product::<usize>() {
                return Err(bad(format!(
                    "shape {:?} does not match {}",
                    t.shape,
                    g.ty(*v)
                )));
            }
            for (d, &n) in decl.iter().zip(&t.shape) {
                for s in Sym::ALL {
                    if *d == Dim::sym(s) {
                        if bound[s as usize] && bind.get(s) != n as u64 {
                            return Err(bad(format!(
                                "{} = {n} conflicts with {} = {}",
                                s.name(),
                                s.name(),
                                bind.get(s)
                            )));
                        }
                        match s {
                            Sym::B => bind.b = n as u64,
                            Sym::S => bind.s = n as u64,
                            Sym::P => {}
                        }
                        bound[s as usize] = true;
                    }
                }
            }
            vals.insert(*v, Val::I(Arc::new(t.clone())));
        }
        if bind.s == 0 {
            return Err(InterpError::BadInput {
                name: "tokens".into(),
                msg: "no new tokens (S = 0)".into(),
            });
        }
        for v in &self.order {
            if let Op::Input { .. } = g.op(*v) {
                let shape = g.ty(*v).eval_shape(&bind).unwrap_or_default();
                if let Some(Val::I(t)) = vals.get(v) {
                    if t.shape != shape {
                        return Err(InterpError::BadInput {
                            name: "input".into(),
                            msg: format!("shape {:?}, expected {:?}", t.shape, shape),
                        });
                    }
                }
            }
        }
        let cap = g.syms.bound(Sym::P).unwrap_or(u64::MAX);
        if bind.p + bind.s > cap {
            return Err(InterpError::ContextFull {
                past: bind.p,
                new: bind.s,
                cap,
            });
        }
        if let Some(bmax) = g.syms.bound(Sym::B) {
            if bind.b > bmax {
                return Err(InterpError::BadInput {
                    name: "tokens".into(),
                    msg: format!("batch {} exceeds the bound {bmax} of B", bind.b),
                });
            }
        }
        if let Some(b0) = self.batch {
            if b0 != bind.b && self.past > 0 {
                return Err(InterpError::BadInput {
                    name: "tokens".into(),
                    msg: format!(
                        "batch changed from {b0} to {} with tokens cached; reset first",
                        bind.b
                    ),
                });
            }
        }
        self.batch = Some(bind.b);

        let mut outputs = HashMap::new();
        for &v in &self.order.clone() {
            let op = g.op(v);
            if matches!(op, Op::Input { .. }) {
                continue;
            }
            let r = self.eval(v, &bind, &vals).map_err(|msg| InterpError::Op {
                value: self.num[&v],
                op: op.name(),
                msg,
            })?;
            if let Op::Output { name } = op {
                if let Val::F(t) = &r {
                    outputs.insert(name.clone(), (**t).clone());
                }
            }
            // Free values whose users are all done would save memory; the oracle keeps it
            // simple and keeps them (graphs it runs are small or run once per token).
            vals.insert(v, r);
        }
        self.past += bind.s;
        Ok(outputs)
    }

    fn weight_f32(&mut self, name: &str) -> Result<Arc<Tensor>, String> {
        if let Some(t) = self.dequant_cache.get(name) {
            return Ok(t.clone());
        }
        let w = self
            .weights
            .get(name)
            .ok_or_else(|| format!("weight \"{name}\" is not in the weight store"))?;
        let n: u64 = w.shape.iter().product();
        let mut out = vec![0f32; n as usize];
        crate::quant::dequantize(w.dtype, w.bytes, &mut out)
            .map_err(|e| format!("weight \"{name}\": {e}"))?;
        let t = Arc::new(Tensor::new(
            w.shape.iter().map(|&d| d as usize).collect(),
            out,
        ));
        self.dequant_cache.insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn f(&mut self, vals: &HashMap<Value, Val>, v: Value) -> Result<Arc<Tensor>, String> {
        match vals.get(&v) {
            Some(Val::F(t)) => Ok(t.clone()),
            Some(Val::W(name)) => self.weight_f32(&name.clone()),
            Some(Val::I(_)) => Err("expected an f32 operand, found an integer tensor".into()),
            None => Err("operand not computed (interpreter bug)".into()),
        }
    }

    fn eval(
        &mut self,
        v: Value,
        bind: &Bindings,
        vals: &HashMap<Value, Val>,
    ) -> Result<Val, String> {
        let g = self.g;
        let ops = g.operands(v);
        let out_shape = g.ty(v).eval_shape(bind).ok_or("result shape overflows")?;
        let r = match g.op(v).clone() {
            Op::Input { .. } => unreachable!("bound before evaluation"),
            Op::Weight { name } => {
                let w = self
                    .weights
                    .get(&name)
                    .ok_or_else(|| format!("weight \"{name}\" is not in the weight store"))?;
                let want: Vec<u64> = out_shape.iter().map(|&d| d as u64).collect();
                if w.dtype != g.ty(v).dtype || w.shape != want.as_slice() {
                    return Err(format!(
                        "weight \"{name}\": the store has {}{:?}, the graph declares {}",
                        w.dtype,
                        w.shape,
                        g.ty(v)
                    ));
                }
                Val::W(name)
            }
            Op::Output { .. } => match vals.get(&ops[0]) {
                Some(Val::W(n)) => Val::F(self.weight_f32(&n.clone())?),
                Some(x) => x.clone(),
                None => return Err("operand not computed".into()),
            },
            Op::Embedding => {
                let ids = match vals.get(&ops[1]) {
                    Some(Val::I(t)) => t.clone(),
                    _ => return Err("ids must be an integer input".into()),
                };
                let d = *out_shape.last().ok_or("rank 0")?;
                let mut out = vec![0f32; ids.data.len() * d];
                match vals.get(&ops[0]) {
                    Some(Val::W(name)) => {
                        let w = self.weights.get(name).ok_or("table missing")?;
                        let row_bytes =
                            w.dtype.bytes_for(d as u64).ok_or("row not whole blocks")? as usize;
                        let vocab = w.shape[0] as usize;
                        for (i, &id) in ids.data.iter().enumerate() {
                            let id = usize::try_from(id)
                                .ok()
                                .filter(|&i| i < vocab)
                                .ok_or_else(|| format!("token id {id} out of range 0..{vocab}"))?;
                            crate::quant::dequantize(
                                w.dtype,
                                &w.bytes[id * row_bytes..(id + 1) * row_bytes],
                                &mut out[i * d..(i + 1) * d],
                            )
                            .map_err(|e| e.to_string())?;
                        }
                    }
                    _ => {
                        let t = self.f(vals, ops[0])?;
                        let vocab = t.shape[0];
                        for (i, &id) in ids.data.iter().enumerate() {
                            let id = usize::try_from(id)
                                .ok()
                                .filter(|&i| i < vocab)
                                .ok_or_else(|| format!("token id {id} out of range 0..{vocab}"))?;
                            out[i * d..(i + 1) * d].copy_from_slice(&t.data[id * d..(id + 1) * d]);
                        }
                    }
                }
                Val::F(Arc::new(Tensor::new(out_shape, out)))
            }
            Op::RmsNorm { eps } => {
                let x = self.f(vals, ops[0])?;
                let w = match ops.get(1) {
                    Some(o) => Some(self.f(vals, *o)?),
                    None => None,
                };
                let d = *x.shape.last().ok_or("rank 0")?;
                let mut out = x.data.clone();
                for row in out.chunks_mut(d) {
                    let ms = row
                        .iter()
                        .map(|&a| f64::from(a) * f64::from(a))
                        .sum::<f64>()
                        / d as f64;
                    let r = 1.0 / (ms + f64::from(eps)).sqrt();
                    for (i, a) in row.iter_mut().enumerate() {
                        let s = w.as_ref().map_or(1.0, |w| f64::from(w.data[i]));
                        *a = (f64::from(*a) * r * s) as f32;
                    }
                }
                Val::F(Arc::new(Tensor::new(out_shape, out)))
            }
            Op::Matmul => {
                let a = self.f(vals, ops[0])?;
                let b = self.f(vals, ops[1])?;
                Val::F(Arc::new(matmul(&a, &b, out_shape)))
            }
            Op::QMatmul => {
                let mut a = self.f(vals, ops[0])?;
                if g.ty(ops[1]).dtype.is_quantized() {
                    a = Arc::new(quantize_activations(&a)?);
                }
                let b = self.f(vals, ops[1])?;
                Val::F(Arc::new(matmul(&a, &b, out_shape)))
            }
            Op::Dequant => match vals.get(&ops[0]) {
                Some(Val::W(n)) => Val::F(self.weight_f32(&n.clone())?),
                _ => Val::F(self.f(vals, ops[0])?),
            },
            Op::Rope { theta, dims, style } => {
                let x = self.f(vals, ops[0])?;
                let (s_len, h, d) = (x.shape[1], x.shape[2], x.shape[3]);
                let mut out = x.data.clone();
                let half = dims as usize / 2;
                for (ri, row) in out.chunks_mut(d).enumerate() {
                    let s = (ri / h) % s_len;
                    let pos = (bind.p + s as u64) as f64;
                    for i in 0..half {
                        let freq = f64::from(theta).powf(-2.0 * i as f64 / f64::from(dims));
                        let (sin, cos) = (pos * freq).sin_cos();
                        let (i0, i1) = match style {
                            RopeStyle::Normal => (2 * i, 2 * i + 1),
                            RopeStyle::Neox => (i, i + half),
                        };
                        let (x0, x1) = (f64::from(row[i0]), f64::from(row[i1]));
                        row[i0] = (x0 * cos - x1 * sin) as f32;
                        row[i1] = (x0 * sin + x1 * cos) as f32;
                    }
                }
                Val::F(Arc::new(Tensor::new(out_shape, out)))
            }
            Op::Reshape => {
                let x = self.f(vals, ops[0])?;
                Val::F(Arc::new(Tensor::new(out_shape, x.data.clone())))
            }
            Op::Transpose { perm } => {
                let x = self.f(vals, ops[0])?;
                Val::F(Arc::new(transpose(&x, &perm)))
            }
            Op::RepeatKv { n_rep } => {
                let x = self.f(vals, ops[0])?;
                let (b, kvh) = (x.shape[0], x.shape[1]);
                let inner: usize = x.shape[2..].iter().product();
                let n = n_rep as usize;
                let mut out = Vec::with_capacity(x.numel() * n);
                for bi in 0..b {
                    for hh in 0..kvh * n {
                        let src = (bi * kvh + hh / n) * inner;
                        out.extend_from_slice(&x.data[src..src + inner]);
                    }
                }
                Val::F(Arc::new(Tensor::new(out_shape, out)))
            }
            Op::KvAppend { cache } => {
                let x = self.f(vals, ops[0])?;
                let st = g.state(&cache).ok_or("undeclared state")?;
                let pax = crate::verify::state_p_axis(&st.ty)?;
                let outer: usize = x.shape[..pax].iter().product();
                let inner: usize = x.shape[pax + 1..].iter().product();
                let c = self.caches.entry(cache.clone()).or_insert_with(|| Cache {
                    outer,
                    inner,
                    rows: vec![Vec::new(); outer],
                });
                if c.outer != outer || c.inner != inner {
                    return Err(format!(
                        "cache \"{cache}\" was created with another shape; reset first"
                    ));
                }
                let s = x.shape[pax];
                let p = bind.p as usize;
                for (o, rows) in c.rows.iter_mut().enumerate() {
                    if rows.len() != p * inner {
                        return Err(format!(
                            "cache \"{cache}\" holds {} rows, expected P = {p}",
                            rows.len() / inner.max(1)
                        ));
                    }
                    let new = &x.data[o * s * inner..(o + 1) * s * inner];
                    if st.ty.dtype == crate::DType::F16 {
                        // The state's dtype: rows are rounded as they are stored.
                        rows.extend(new.iter().map(|&v| half::f16::from_f32(v).to_f32()));
                    } else {
                        rows.extend_from_slice(new);
                    }
                }
                let mut out = Vec::with_capacity(outer * (p + s) * inner);
                for rows in &c.rows {
                    out.extend_from_slice(rows);
                }
                Val::F(Arc::new(Tensor::new(out_shape, out)))
            }
            Op::Scale { factor } => {
                let x = self.f(vals, ops[0])?;
                Val::F(Arc::new(Tensor::new(
                    out_shape,
                    x.data.iter().map(|a| a * factor).collect(),
                )))
            }
            Op::CausalMask => {
                let (s, t) = (out_shape[0], out_shape[1]);
                let p = bind.p as usize;
                let mut out = vec![0f32; s * t];
                for i in 0..s {
                    for j in 0..t {
                        if j > p + i {
                            out[i * t + j] = f32::NEG_INFINITY;
                        }
                    }
                }
                Val::F(Arc::new(Tensor::new(out_shape, out)))
            }
            Op::Softmax => {
                let x = self.f(vals, ops[0])?;
                let d = *x.shape.last().ok_or("rank 0")?;
                let mut out = x.data.clone();
                for row in out.chunks_mut(d) {
                    softmax_row(row);
                }
                Val::F(Arc::new(Tensor::new(out_shape, out)))
            }
            Op::Silu => {
                let x = self.f(vals, ops[0])?;
                Val::F(Arc::new(Tensor::new(
                    out_shape,
                    x.data.iter().map(|&a| silu(a)).collect(),
                )))
            }
            Op::Mul | Op::Add | Op::SwiGlu => {
                let a = self.f(vals, ops[0])?;
                let b = self.f(vals, ops[1])?;
                let f: fn(f32, f32) -> f32 = match g.op(v) {
                    Op::Mul => |x, y| x * y,
                    Op::Add => |x, y| x + y,
                    _ => |x, y| silu(x) * y,
                };
                Val::F(Arc::new(broadcast_binary(&a, &b, out_shape, f)))
            }
            Op::TakeLast => {
                let x = self.f(vals, ops[0])?;
                let (b, s, d) = (x.shape[0], x.shape[1], x.shape[2]);
                let mut out = Vec::with_capacity(b * d);
                for bi in 0..b {
                    let r = (bi * s + s - 1) * d;
                    out.extend_from_slice(&x.data[r..r + d]);
                }
                Val::F(Arc::new(Tensor::new(out_shape, out)))
            }
            Op::FlashAttention { scale, .. } => {
                let q = self.f(vals, ops[0])?;
                let k = self.f(vals, ops[1])?;
                let vv = self.f(vals, ops[2])?;
                Val::F(Arc::new(attention(&q, &k, &vv, scale)))
            }
        };
        Ok(r)
    }
}

fn unreachable_cycle() -> InterpError {
    InterpError::Invalid(crate::verify::VerifyErrors(vec![
        crate::verify::VerifyError {
            at: crate::verify::At::Graph,
            message: "graph has a cycle".into(),
        },
    ]))
}

/// The activation side of `qmatmul` against a block-quantized weight: every row is rounded
/// to 8-bit blocks of 32 (a per-block f16 scale `d = max|x| / 127`, `q = round(x / d)`),
/// exactly as llama.cpp's `quantize_row_q8_0`/`q8_1` do before their integer dot products.
/// The dot product itself is then exact.
pub fn quantize_activations(a: &Tensor) -> Result<Tensor, String> {
    let q = crate::quant::quantize(crate::DType::Q8_0, &a.data)
        .map_err(|e| format!("activations: {e}"))?;
    let mut d = vec![0f32; a.data.len()];
    crate::quant::dequantize(crate::DType::Q8_0, &q, &mut d)
        .map_err(|e| format!("activations: {e}"))?;
    Ok(Tensor::new(a.shape.clone(), d))
}

pub fn silu(x: f32) -> f32 {
    let x = f64::from(x);
    (x / (1.0 + (-x).exp())) as f32
}

/// In-place softmax of one row, f64 accumulation.
pub fn softmax_row(row: &mut [f32]) {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0f64;
    let e: Vec<f64> = row
        .iter()
        .map(|&x| {
            let v = if x == f32::NEG_INFINITY {
                0.0
            } else {
                (f64::from(x) - f64::from(m)).exp()
            };
            sum += v;
            v
        })
        .collect();
    for (r, v) in row.iter_mut().zip(e) {
        *r = (v / sum) as f32;
    }
}

/// `a · bᵀ` with batch dims; `b` is `[N, K]` (shared) or has `a`'s batch dims.
pub fn matmul(a: &Tensor, b: &Tensor, out_shape: Vec<usize>) -> Tensor {
    let k = *a.shape.last().unwrap_or(&1);
    let m = a.shape[a.shape.len() - 2];
    let n = b.shape[b.shape.len() - 2];
    let batches: usize = a.shape[..a.shape.len() - 2].iter().product();
    let shared = b.shape.len() == 2;
    let mut out = vec![0f32; batches * m * n];
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(row, o)| {
            let bi = row / m.max(1);
            let ar = &a.data[row * k..(row + 1) * k];
            let boff = if shared { 0 } else { bi * n * k };
            for (j, oj) in o.iter_mut().enumerate() {
                let br = &b.data[boff + j * k..boff + (j + 1) * k];
                *oj = ar
                    .iter()
                    .zip(br)
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum::<f64>() as f32;
            }
        });
    Tensor::new(out_shape, out)
}

pub fn transpose(x: &Tensor, perm: &[u32]) -> Tensor {
    let r = x.shape.len();
    let mut strides = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * x.shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p as usize]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| strides[p as usize]).collect();
    let n = x.numel();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let off: usize = idx.iter().zip(&src_strides).map(|(i, s)| i * s).sum();
        out.push(x.data[off]);
        for ax in (0..r).rev() {
            idx[ax] += 1;
            if idx[ax] < out_shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Tensor::new(out_shape, out)
}

fn broadcast_binary(
    a: &Tensor,
    b: &Tensor,
    out_shape: Vec<usize>,
    f: fn(f32, f32) -> f32,
) -> Tensor {
    if a.shape == b.shape {
        return Tensor::new(
            out_shape,
            a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect(),
        );
    }
    let r = out_shape.len();
    let strides_for = |s: &[usize]| {
        let mut st = vec![0usize; r];
        let mut acc = 1;
        for i in (0..s.len()).rev() {
            let oi = r - s.len() + i;
            st[oi] = if s[i] == 1 { 0 } else { acc };
            acc *= s[i];
        }
        st
    };
    let (sa, sb) = (strides_for(&a.shape), strides_for(&b.shape));
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let (mut oa, mut ob) = (0, 0);
        for ax in 0..r {
            oa += idx[ax] * sa[ax];
            ob += idx[ax] * sb[ax];
        }
        out.push(f(a.data[oa], b.data[ob]));
        for ax in (0..r).rev() {
            idx[ax] += 1;
            if idx[ax] < out_shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Tensor::new(out_shape, out)
}

/// Causal grouped-query attention, written the plain way (full softmax per query row):
/// the meaning of `flash_attention`, whatever its block size.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Tensor {
    let (h, s, d) = (q.shape[1], q.shape[2], q.shape[3]);
    let (kvh, t) = (k.shape[1], k.shape[2]);
    let group = h / kvh;
    let p = t - s;
    let mut out = vec![0f32; q.numel()];
    out.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let si = row % s;
        let hi = (row / s) % h;
        let bi = row / (s * h);
        let kv = bi * kvh + hi / group;
        let qr = &q.data[row * d..(row + 1) * d];
        let n = p + si + 1;
        let mut sc: Vec<f64> = (0..n)
            .map(|j| {
                let kr = &k.data[(kv * t + j) * d..(kv * t + j + 1) * d];
                qr.iter()
                    .zip(kr)
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum::<f64>()
                    * f64::from(scale)
            })
            .collect();
        let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for x in sc.iter_mut() {
            *x = (*x - m).exp();
            sum += *x;
        }
        for (e, oe) in o.iter_mut().enumerate() {
            let mut acc = 0f64;
            for (j, w) in sc.iter().enumerate() {
                acc += w * f64::from(v.data[(kv * t + j) * d + e]);
            }
            *oe = (acc / sum) as f32;
        }
    });
    Tensor::new(q.shape.clone(), out)
}

/// Max |a − b| over two equally long slices, and the index where it occurs.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    a.iter()
        .zip(b)
        .enumerate()
        .fold((0f32, 0), |(m, mi), (i, (x, y))| {
            let d = (x - y).abs();
            if d > m || d.is_nan() {
                (d, i)
            } else {
                (m, mi)
            }
        })
}

//! Lowering, step 1: an IR graph → LPU **macro-ops** grouped in blocks.
//!
//! The LPU works on 320-lane vectors streamed between functional slices, not on N-d
//! tensors, so this step keeps only what the hardware needs: every activation becomes a
//! row matrix `[rows × cols]` (rows = token rows `B·S`, or sequences after `take_last`),
//! and the IR's views (`reshape`, head-first `transpose`, `repeat_kv`) disappear into
//! the ops that need a head structure (`Rope`, `Attention`, `KvAppend`).
//!
//! Both graph forms are accepted and lower to the same macro-ops:
//!
//! | primitive form (what `build_llama` emits)                     | fused form (passes)           | macro-op    |
//! |---------------------------------------------------------------|-------------------------------|-------------|
//! | `matmul(x, dequant(w))`, `matmul(x, w:f32)`                   | `qmatmul(x, w)`               | `Linear`    |
//! | `mul(rms_norm(x), w)`                                         | `rms_norm(x, w)`              | `Norm`      |
//! | `mul(silu(a), b)`                                             | `swiglu(a, b)`                | `SwiGlu`    |
//! | `softmax(scale·matmul(q, repeat_kv(k)) + mask)·transpose(v)`  | `flash_attention(q, k, v)`    | `Attention` |
//!
//! `tile.*` annotations are accepted and ignored: on the LPU the tile is fixed by the
//! MXM plane (320×320) and the vector (320 lanes).
//!
//! Blocks: ops that touch a `blk.N.*` weight or cache belong to layer N; ops that only
//! depend on earlier layers belong to the layer they extend (residual adds); ops with a
//! non-layer weight belong to the head (before any layer) or the tail (after). Layers
//! with equal [`Block::signature`] are scheduled once and replicated.
//!
//! Invariant: every op of the graph is either lowered or rejected with a
//! [`LowerError`] naming the value (`%N` as printed) and why.

use std::collections::HashMap;

use lpuc_ir::graph::Graph;
use lpuc_ir::op::{Op, RopeStyle};
use lpuc_ir::types::{Dim, Sym};
use lpuc_ir::{DType, Value};
use serde::{Deserialize, Serialize};

/// An activation tensor id (index into [`LoweredModel::tensors`]).
pub type TId = u32;
/// A weight id (index into [`LoweredModel::weights`]).
pub type WId = u32;
/// A KV-cache id (index into [`LoweredModel::caches`]).
pub type CId = u32;

/// What the rows of an activation count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rows {
    /// One row per token of this call (`B·S`).
    Tokens,
    /// One row per sequence (`B`), after `take_last`.
    Seqs,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub rows: Rows,
    pub cols: u64,
}

/// A weight as the graph declares it. Matrices are `[N, K]` (`[out, in]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
}

impl WeightInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A KV cache: `kv_heads × head_dim` per row, `P` rows per sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheInfo {
    pub name: String,
    pub kv_heads: u64,
    pub head_dim: u64,
}

/// A macro-op: one unit of work the code generator knows how to map to LPU slices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MOp {
    /// Row lookup of token ids into `table[V, D]`.
    Embed {
        table: WId,
        out: TId,
    },
    /// RMS norm of each row, optionally times a `[D]` scale.
    Norm {
        x: TId,
        w: Option<WId>,
        eps: f32,
        out: TId,
    },
    /// `x · wᵀ`, `w: [N, K]`. `act_q8`: the graph's op was `qmatmul` on a
    /// block-quantized weight, whose meaning (the CPU int4 path, see the interpreter)
    /// rounds activations to 8-bit blocks of 32 first.
    Linear {
        x: TId,
        w: WId,
        out: TId,
        act_q8: bool,
    },
    /// Rotary embedding of `heads` heads of `head_dim` (cols = heads·head_dim).
    Rope {
        x: TId,
        heads: u64,
        head_dim: u64,
        dims: u32,
        theta: f32,
        style: RopeStyle,
        out: TId,
    },
    /// Append rows `x` (`kv_heads·head_dim` cols) to a cache at positions `P..P+S`.
    KvAppend {
        x: TId,
        cache: CId,
    },
    /// Causal grouped-query attention of `q` (`heads·head_dim` cols) over caches.
    Attention {
        q: TId,
        k: CId,
        v: CId,
        heads: u64,
        kv_heads: u64,
        head_dim: u64,
        scale: f32,
        out: TId,
    },
    SwiGlu {
        gate: TId,
        up: TId,
        out: TId,
    },
    Add {
        a: TId,
        b: TId,
        out: TId,
    },
    Mul {
        a: TId,
        b: TId,
        out: TId,
    },
    Silu {
        x: TId,
        out: TId,
    },
    Scale {
        x: TId,
        factor: f32,
        out: TId,
    },
    /// Keep the last token row of each sequence.
    TakeLast {
        x: TId,
        out: TId,
    },
    Output {
        x: TId,
        name: String,
    },
}

impl MOp {
    pub fn name(&self) -> &'static str {
        match self {
            MOp::Embed { .. } => "embed",
            MOp::Norm { .. } => "norm",
            MOp::Linear { .. } => "linear",
            MOp::Rope { .. } => "rope",
            MOp::KvAppend { .. } => "kv_append",
            MOp::Attention { .. } => "attention",
            MOp::SwiGlu { .. } => "swiglu",
            MOp::Add { .. } => "add",
            MOp::Mul { .. } => "mul",
            MOp::Silu { .. } => "silu",
            MOp::Scale { .. } => "scale",
            MOp::TakeLast { .. } => "take_last",
            MOp::Output { .. } => "output",
        }
    }

    /// Activation operands.
    pub fn inputs(&self) -> Vec<TId> {
        match self {
            MOp::Embed { .. } => vec![],
            MOp::Norm { x, .. }
            | MOp::Linear { x, .. }
            | MOp::Rope { x, .. }
            | MOp::KvAppend { x, .. }
            | MOp::Silu { x, .. }
            | MOp::Scale { x, .. }
            | MOp::TakeLast { x, .. }
            | MOp::Output { x, .. } => vec![*x],
            MOp::Attention { q, .. } => vec![*q],
            MOp::SwiGlu { gate, up, .. } => vec![*gate, *up],
            MOp::Add { a, b, .. } | MOp::Mul { a, b, .. } => vec![*a, *b],
        }
    }

    pub fn output(&self) -> Option<TId> {
        match self {
            MOp::Embed { out, .. }
            | MOp::Norm { out, .. }
            | MOp::Linear { out, .. }
            | MOp::Rope { out, .. }
            | MOp::Attention { out, .. }
            | MOp::SwiGlu { out, .. }
            | MOp::Add { out, .. }
            | MOp::Mul { out, .. }
            | MOp::Silu { out, .. }
            | MOp::Scale { out, .. }
            | MOp::TakeLast { out, .. } => Some(*out),
            MOp::KvAppend { .. } | MOp::Output { .. } => None,
        }
    }

    pub fn weights(&self) -> Vec<WId> {
        match self {
            MOp::Embed { table, .. } => vec![*table],
            MOp::Norm { w, .. } => w.iter().copied().collect(),
            MOp::Linear { w, .. } => vec![*w],
            _ => vec![],
        }
    }

    pub fn caches(&self) -> Vec<CId> {
        match self {
            MOp::KvAppend { cache, .. } => vec![*cache],
            MOp::Attention { k, v, .. } => vec![*k, *v],
            _ => vec![],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockKind {
    Head,
    Layer(u32),
    Tail,
}

/// A run of macro-ops executed on one pipeline stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub kind: BlockKind,
    pub ops: Vec<MOp>,
    /// Activations read from earlier blocks (in first-use order).
    pub inputs: Vec<TId>,
    /// Activations later blocks read (in definition order).
    pub outputs: Vec<TId>,
}

impl Block {
    /// A structural fingerprint: equal for blocks that differ only in which weights,
    /// caches and tensors they name (so one schedule serves all of them).
    pub fn signature(&self, m: &LoweredModel) -> String {
        let mut local: HashMap<TId, usize> = HashMap::new();
        for (i, t) in self.inputs.iter().enumerate() {
            local.insert(*t, i);
        }
        let mut s = String::new();
        let id = |t: TId, local: &mut HashMap<TId, usize>| {
            let n = local.len();
            *local.entry(t).or_insert(n)
        };
        for op in &self.ops {
            s.push_str(op.name());
            for t in op.inputs() {
                let i = id(t, &mut local);
                let ti = &m.tensors[t as usize];
                s.push_str(&format!(" t{i}:{:?}x{}", ti.rows, ti.cols));
            }
            for w in op.weights() {
                let wi = &m.weights[w as usize];
                s.push_str(&format!(" w:{}{:?}", wi.dtype, wi.shape));
            }
            for c in op.caches() {
                let ci = &m.caches[c as usize];
                s.push_str(&format!(" c:{}x{}", ci.kv_heads, ci.head_dim));
            }
            if let Some(o) = op.output() {
                let i = id(o, &mut local);
                s.push_str(&format!(" -> t{i}"));
            }
            match op {
                MOp::Norm { eps, .. } => s.push_str(&format!(" eps={eps}")),
                MOp::Rope {
                    dims, theta, style, ..
                } => s.push_str(&format!(" rope={dims},{theta},{style:?}")),
                MOp::Attention { scale, .. } => s.push_str(&format!(" scale={scale}")),
                MOp::Scale { factor, .. } => s.push_str(&format!(" f={factor}")),
                MOp::Linear { act_q8: true, .. } => s.push_str(" q8"),
                MOp::Output { name, .. } => s.push_str(&format!(" {name}")),
                _ => {}
            }
            s.push(';');
        }
        s
    }
}

/// The model as the Groq code generator sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoweredModel {
    pub name: String,
    pub tensors: Vec<TensorInfo>,
    pub weights: Vec<WeightInfo>,
    pub caches: Vec<CacheInfo>,
    pub blocks: Vec<Block>,
    /// The graph's bounds: batch `B`, context `P`.
    pub max_batch: Option<u64>,
    pub max_ctx: Option<u64>,
}

impl LoweredModel {
    pub fn layer_count(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| matches!(b.kind, BlockKind::Layer(_)))
            .count()
    }

    /// Total weight elements.
    pub fn param_count(&self) -> u64 {
        self.weights.iter().map(|w| w.numel()).sum()
    }
}

/// Why a graph cannot be lowered to the LPU.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("%{value} = {op}: {msg}")]
pub struct LowerError {
    /// The value's printed number.
    pub value: usize,
    pub op: &'static str,
    pub msg: String,
}

/// How an IR value is represented while lowering.
#[derive(Clone, Debug)]
enum L {
    Tokens,
    /// An activation, viewed as the IR shape says (`heads` > 0: a `[.., H, D]` view;
    /// `heads_first`: the `[B, H, S, D]` order).
    Act {
        t: TId,
        heads: u64,
        head_dim: u64,
        heads_first: bool,
    },
    Weight(WId),
    Dequant(WId),
    Mask,
    /// `kv_append` result (optionally repeated, optionally with the last two axes swapped).
    Cache {
        c: CId,
        rep: u64,
        transposed: bool,
    },
    /// `rms_norm(x)` without a scale, not yet used.
    Norm0 {
        x: TId,
        eps: f32,
    },
    /// `silu(x)`, not yet used.
    Silu0 {
        x: TId,
    },
    /// Attention in progress: `q·kᵀ`, then scaled, masked, softmaxed.
    Scores {
        q: TId,
        heads: u64,
        head_dim: u64,
        k: CId,
        scale: f32,
        masked: bool,
        softmaxed: bool,
    },
}

struct Lowerer<'g> {
    g: &'g Graph,
    num: HashMap<Value, usize>,
    m: LoweredModel,
    vals: HashMap<Value, L>,
    /// Block of every macro-op, and per tensor the op index that defined it.
    op_block: Vec<BlockKind>,
    ops: Vec<MOp>,
    t_block: Vec<BlockKind>,
    weight_ids: HashMap<String, WId>,
    cache_ids: HashMap<String, CId>,
    any_layer: bool,
}

/// Lowers a verified graph. The graph's weights may be absent (shapes only).
pub fn lower(g: &Graph) -> Result<LoweredModel, LowerError> {
    let order = g.topo_order().map_err(|cyc| LowerError {
        value: 0,
        op: "graph",
        msg: format!("the graph has a cycle through {} values", cyc.len()),
    })?;
    let mut l = Lowerer {
        g,
        num: g.numbering(),
        m: LoweredModel {
            name: g.name.clone(),
            tensors: Vec::new(),
            weights: Vec::new(),
            caches: Vec::new(),
            blocks: Vec::new(),
            max_batch: g.syms.bound(Sym::B),
            max_ctx: g.syms.bound(Sym::P),
        },
        vals: HashMap::new(),
        op_block: Vec::new(),
        ops: Vec::new(),
        t_block: Vec::new(),
        weight_ids: HashMap::new(),
        cache_ids: HashMap::new(),
        any_layer: false,
    };
    for v in order {
        l.visit(v)?;
    }
    l.finish()
}

/// `blk.N.` prefix → N.
fn layer_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("blk.")?;
    let n = rest.split('.').next()?;
    n.parse().ok()
}

impl<'g> Lowerer<'g> {
    fn err(&self, v: Value, msg: impl Into<String>) -> LowerError {
        LowerError {
            value: self.num.get(&v).copied().unwrap_or(0),
            op: self.g.op(v).name(),
            msg: msg.into(),
        }
    }

    fn get(&self, v: Value) -> L {
        self.vals
            .get(&v)
            .cloned()
            .expect("operands are visited before users (topological order)")
    }

    fn new_tensor(&mut self, rows: Rows, cols: u64, block: BlockKind) -> TId {
        self.m.tensors.push(TensorInfo { rows, cols });
        self.t_block.push(block);
        (self.m.tensors.len() - 1) as TId
    }

    fn weight(&mut self, name: &str, dtype: DType, shape: Vec<u64>) -> WId {
        if let Some(id) = self.weight_ids.get(name) {
            return *id;
        }
        self.m.weights.push(WeightInfo {
            name: name.to_string(),
            dtype,
            shape,
        });
        let id = (self.m.weights.len() - 1) as WId;
        self.weight_ids.insert(name.to_string(), id);
        id
    }

    /// The block an op goes to: the layer of its weights/caches, else the latest block
    /// among its inputs; non-layer weights go to the head or the tail.
    fn block_for(&self, inputs: &[TId], weights: &[WId], caches: &[CId]) -> BlockKind {
        let mut layer: Option<u32> = None;
        let mut non_layer_weight = false;
        for w in weights {
            match layer_of(&self.m.weights[*w as usize].name) {
                Some(n) => layer = Some(layer.map_or(n, |l| l.max(n))),
                None => non_layer_weight = true,
            }
        }
        for c in caches {
            if let Some(n) = layer_of(&self.m.caches[*c as usize].name) {
                layer = Some(layer.map_or(n, |l| l.max(n)));
            }
        }
        if let Some(n) = layer {
            return BlockKind::Layer(n);
        }
        let latest = inputs
            .iter()
            .map(|t| self.t_block[*t as usize])
            .max_by_key(|b| block_rank(*b));
        if non_layer_weight {
            return match latest {
                Some(BlockKind::Layer(_)) | Some(BlockKind::Tail) => BlockKind::Tail,
                _ if self.any_layer => BlockKind::Tail,
                _ => BlockKind::Head,
            };
        }
        latest.unwrap_or(BlockKind::Head)
    }

    fn push(&mut self, op: MOp) -> Option<TId> {
        let b = self.block_for(&op.inputs(), &op.weights(), &op.caches());
        if matches!(b, BlockKind::Layer(_)) {
            self.any_layer = true;
        }
        let out = op.output();
        if let Some(o) = out {
            self.t_block[o as usize] = b;
        }
        self.ops.push(op);
        self.op_block.push(b);
        out
    }

    fn rows_of(&self, v: Value, x: TId) -> Result<Rows, LowerError> {
        let _ = v;
        Ok(self.m.tensors[x as usize].rows)
    }

    /// Materializes a pending value as an activation.
    fn act(&mut self, v: Value, of: Value) -> Result<TId, LowerError> {
        match self.get(of) {
            L::Act { t, .. } => Ok(t),
            L::Norm0 { x, eps } => {
                let rows = self.rows_of(v, x)?;
                let cols = self.m.tensors[x as usize].cols;
                let out = self.new_tensor(rows, cols, BlockKind::Head);
                self.push(MOp::Norm {
                    x,
                    w: None,
                    eps,
                    out,
                });
                self.vals.insert(of, act(out));
                Ok(out)
            }
            L::Silu0 { x } => {
                let rows = self.rows_of(v, x)?;
                let cols = self.m.tensors[x as usize].cols;
                let out = self.new_tensor(rows, cols, BlockKind::Head);
                self.push(MOp::Silu { x, out });
                self.vals.insert(of, act(out));
                Ok(out)
            }
            other => Err(self.err(
                v,
                format!(
                    "operand %{} is {}, where the Groq lowering needs an activation",
                    self.num.get(&of).copied().unwrap_or(0),
                    describe(&other)
                ),
            )),
        }
    }

    fn const_shape(&self, v: Value) -> Result<Vec<u64>, LowerError> {
        self.g
            .ty(v)
            .shape
            .iter()
            .map(|d| {
                d.as_const().ok_or_else(|| {
                    self.err(v, format!("weight shape {} must be constant", self.g.ty(v)))
                })
            })
            .collect()
    }

    /// Columns of an activation type `[.., cols]` with constant last dims; rows are
    /// `B·S` (tokens) or `B` (when the token axis is the constant 1 after take_last).
    fn visit(&mut self, v: Value) -> Result<(), LowerError> {
        let g = self.g;
        let ops = g.operands(v);
        let op = g.op(v).clone();
        let r = match &op {
            Op::Input { name } => {
                if name != "tokens" {
                    return Err(self.err(
                        v,
                        format!("input \"{name}\": the Groq target takes only \"tokens\""),
                    ));
                }
                L::Tokens
            }
            Op::Weight { name } => {
                let shape = self.const_shape(v)?;
                L::Weight(self.weight(name, g.ty(v).dtype, shape))
            }
            Op::Output { name } => {
                let x = self.act(v, ops[0])?;
                self.push(MOp::Output {
                    x,
                    name: name.clone(),
                });
                return Ok(());
            }
            Op::Dequant => match self.get(ops[0]) {
                L::Weight(w) => L::Dequant(w),
                _ => return Err(self.err(v, "dequant of a computed value is not supported")),
            },
            Op::Embedding => {
                let (L::Weight(table), L::Tokens) = (self.get(ops[0]), self.get(ops[1])) else {
                    return Err(self.err(v, "embedding needs a weight table and the token ids"));
                };
                let cols = self.m.weights[table as usize].shape[1];
                let out = self.new_tensor(Rows::Tokens, cols, BlockKind::Head);
                self.push(MOp::Embed { table, out });
                act(out)
            }
            Op::CausalMask => L::Mask,
            Op::RmsNorm { eps } => {
                let x = self.act(v, ops[0])?;
                match ops.get(1) {
                    None => L::Norm0 { x, eps: *eps },
                    Some(w) => {
                        let L::Weight(w) = self.get(*w) else {
                            return Err(self.err(v, "the norm scale must be a weight"));
                        };
                        let t = &self.m.tensors[x as usize];
                        let out = self.new_tensor(t.rows, t.cols, BlockKind::Head);
                        self.push(MOp::Norm {
                            x,
                            w: Some(w),
                            eps: *eps,
                            out,
                        });
                        act(out)
                    }
                }
            }
            Op::Matmul | Op::QMatmul => self.matmul(v, &op, &ops)?,
            Op::Reshape => self.reshape(v, ops[0])?,
            Op::Transpose { perm } => self.transpose(v, ops[0], perm)?,
            Op::RepeatKv { n_rep } => match self.get(ops[0]) {
                L::Cache { c, rep, transposed } => L::Cache {
                    c,
                    rep: rep * u64::from(*n_rep),
                    transposed,
                },
                _ => return Err(self.err(v, "repeat_kv is supported only on a KV cache")),
            },
            Op::KvAppend { cache } => {
                let L::Act {
                    t,
                    heads,
                    head_dim,
                    heads_first: true,
                } = self.get(ops[0])
                else {
                    return Err(self.err(
                        v,
                        "kv_append needs heads-first rows [B, KVH, S, D] of a projection",
                    ));
                };
                let c = match self.cache_ids.get(cache) {
                    Some(c) => *c,
                    None => {
                        self.m.caches.push(CacheInfo {
                            name: cache.clone(),
                            kv_heads: heads,
                            head_dim,
                        });
                        let c = (self.m.caches.len() - 1) as CId;
                        self.cache_ids.insert(cache.clone(), c);
                        c
                    }
                };
                self.push(MOp::KvAppend { x: t, cache: c });
                L::Cache {
                    c,
                    rep: 1,
                    transposed: false,
                }
            }
            Op::Scale { factor } => match self.get(ops[0]) {
                L::Scores {
                    q,
                    heads,
                    head_dim,
                    k,
                    scale,
                    masked: false,
                    softmaxed: false,
                } => L::Scores {
                    q,
                    heads,
                    head_dim,
                    k,
                    scale: scale * factor,
                    masked: false,
                    softmaxed: false,
                },
                _ => {
                    let x = self.act(v, ops[0])?;
                    let t = self.m.tensors[x as usize].clone();
                    let out = self.new_tensor(t.rows, t.cols, BlockKind::Head);
                    self.push(MOp::Scale {
                        x,
                        factor: *factor,
                        out,
                    });
                    self.keep_view(ops[0], out)
                }
            },
            Op::Softmax => match self.get(ops[0]) {
                L::Scores {
                    q,
                    heads,
                    head_dim,
                    k,
                    scale,
                    masked: true,
                    softmaxed: false,
                } => L::Scores {
                    q,
                    heads,
                    head_dim,
                    k,
                    scale,
                    masked: true,
                    softmaxed: true,
                },
                L::Scores { masked: false, .. } => return Err(self.err(
                    v,
                    "attention without the causal mask is not supported (add tensor.causal_mask)",
                )),
                _ => {
                    return Err(self.err(
                        v,
                        "softmax is supported only inside attention (softmax(scale·q·kᵀ + mask)·v)",
                    ))
                }
            },
            Op::Silu => {
                let x = self.act(v, ops[0])?;
                L::Silu0 { x }
            }
            Op::Mul => self.mul(v, ops[0], ops[1])?,
            Op::Add => self.add(v, ops[0], ops[1])?,
            Op::SwiGlu => {
                let gate = self.act(v, ops[0])?;
                let up = self.act(v, ops[1])?;
                let t = self.m.tensors[gate as usize].clone();
                let out = self.new_tensor(t.rows, t.cols, BlockKind::Head);
                self.push(MOp::SwiGlu { gate, up, out });
                act(out)
            }
            Op::TakeLast => {
                let x = self.act(v, ops[0])?;
                let cols = self.m.tensors[x as usize].cols;
                let out = self.new_tensor(Rows::Seqs, cols, BlockKind::Head);
                self.push(MOp::TakeLast { x, out });
                act(out)
            }
            Op::Rope { theta, dims, style } => {
                let L::Act {
                    t,
                    heads,
                    head_dim,
                    heads_first: false,
                } = self.get(ops[0])
                else {
                    return Err(self.err(v, "rope needs rows split into heads [B, S, H, D]"));
                };
                if heads == 0 {
                    return Err(self.err(v, "rope needs rows split into heads [B, S, H, D]"));
                }
                let ti = self.m.tensors[t as usize].clone();
                let out = self.new_tensor(ti.rows, ti.cols, BlockKind::Head);
                self.push(MOp::Rope {
                    x: t,
                    heads,
                    head_dim,
                    dims: *dims,
                    theta: *theta,
                    style: *style,
                    out,
                });
                L::Act {
                    t: out,
                    heads,
                    head_dim,
                    heads_first: false,
                }
            }
            Op::FlashAttention { scale, .. } => {
                let L::Act {
                    t: q,
                    heads,
                    head_dim,
                    heads_first: true,
                } = self.get(ops[0])
                else {
                    return Err(self.err(v, "flash_attention needs heads-first q [B, H, S, D]"));
                };
                let (
                    L::Cache {
                        c: k,
                        rep: 1,
                        transposed: false,
                    },
                    L::Cache {
                        c: vc,
                        rep: 1,
                        transposed: false,
                    },
                ) = (self.get(ops[1]), self.get(ops[2]))
                else {
                    return Err(
                        self.err(v, "flash_attention needs the kv_append results as k and v")
                    );
                };
                self.attention(v, q, heads, head_dim, k, vc, *scale)?
            }
        };
        self.vals.insert(v, r);
        Ok(())
    }

    fn keep_view(&self, of: Value, t: TId) -> L {
        match self.get(of) {
            L::Act {
                heads,
                head_dim,
                heads_first,
                ..
            } => L::Act {
                t,
                heads,
                head_dim,
                heads_first,
            },
            _ => act(t),
        }
    }

    fn attention(
        &mut self,
        v: Value,
        q: TId,
        heads: u64,
        head_dim: u64,
        k: CId,
        vc: CId,
        scale: f32,
    ) -> Result<L, LowerError> {
        let kvh = self.m.caches[k as usize].kv_heads;
        if self.m.caches[vc as usize].kv_heads != kvh
            || self.m.caches[k as usize].head_dim != head_dim
        {
            return Err(self.err(v, "k and v caches disagree with q in heads or head dim"));
        }
        if kvh == 0 || heads % kvh != 0 {
            return Err(self.err(
                v,
                format!("{heads} query heads are not a multiple of {kvh} KV heads"),
            ));
        }
        let rows = self.m.tensors[q as usize].rows;
        let out = self.new_tensor(rows, heads * head_dim, BlockKind::Head);
        self.push(MOp::Attention {
            q,
            k,
            v: vc,
            heads,
            kv_heads: kvh,
            head_dim,
            scale,
            out,
        });
        Ok(L::Act {
            t: out,
            heads,
            head_dim,
            heads_first: true,
        })
    }

    fn matmul(&mut self, v: Value, op: &Op, ops: &[Value]) -> Result<L, LowerError> {
        let (a, b) = (self.get(ops[0]), self.get(ops[1]));
        let w = match (op, &b) {
            (Op::Matmul, L::Dequant(w)) => Some(*w),
            (Op::QMatmul, L::Weight(w)) => Some(*w),
            (Op::Matmul, L::Weight(w)) if self.m.weights[*w as usize].dtype == DType::F32 => {
                Some(*w)
            }
            _ => None,
        };
        if let Some(w) = w {
            if self.m.weights[w as usize].shape.len() != 2 {
                return Err(self.err(v, "the weight of a matmul must be a matrix [N, K]"));
            }
            let x = self.act(v, ops[0])?;
            let (n, k) = {
                let s = &self.m.weights[w as usize].shape;
                (s[0], s[1])
            };
            if self.m.tensors[x as usize].cols != k {
                return Err(self.err(v, "matmul inner dimensions disagree"));
            }
            let rows = self.m.tensors[x as usize].rows;
            let out = self.new_tensor(rows, n, BlockKind::Head);
            let act_q8 = *op == Op::QMatmul && self.m.weights[w as usize].dtype.is_quantized();
            self.push(MOp::Linear { x, w, out, act_q8 });
            return Ok(act(out));
        }
        // Attention: q·kᵀ, then probs·vᵀᵀ.
        match (a, b) {
            (
                L::Act {
                    t: q,
                    heads,
                    head_dim,
                    heads_first: true,
                },
                L::Cache {
                    c,
                    rep,
                    transposed: false,
                },
            ) if op == &Op::Matmul && self.m.caches[c as usize].kv_heads * rep == heads => {
                Ok(L::Scores {
                    q,
                    heads,
                    head_dim,
                    k: c,
                    scale: 1.0,
                    masked: false,
                    softmaxed: false,
                })
            }
            (
                L::Scores {
                    q,
                    heads,
                    head_dim,
                    k,
                    scale,
                    masked: true,
                    softmaxed: true,
                },
                L::Cache {
                    c,
                    rep,
                    transposed: true,
                },
            ) if op == &Op::Matmul && self.m.caches[c as usize].kv_heads * rep == heads => {
                self.attention(v, q, heads, head_dim, k, c, scale)
            }
            (L::Scores { softmaxed: false, .. }, _) => Err(self.err(
                v,
                "attention scores must go through scale, the causal mask and softmax before multiplying by v",
            )),
            _ => Err(self.err(
                v,
                "only x·wᵀ with a weight (matmul(x, dequant(w)), qmatmul) and attention (q·kᵀ, probs·v) are supported",
            )),
        }
    }

    fn reshape(&mut self, v: Value, x: Value) -> Result<L, LowerError> {
        let shape = &self.g.ty(v).shape;
        let src = self.get(x);
        let L::Act { t, .. } = src else {
            return Err(self.err(v, "reshape is supported only on activations"));
        };
        let cols = self.m.tensors[t as usize].cols;
        // [B, S, H, D] from [B, S, H·D]: a head view.
        if shape.len() == 4 && shape[0] == Dim::B {
            if let (Some(h), Some(d)) = (shape[2].as_const(), shape[3].as_const()) {
                if h * d == cols
                    && !matches!(
                        src,
                        L::Act {
                            heads_first: true,
                            ..
                        }
                    )
                {
                    return Ok(L::Act {
                        t,
                        heads: h,
                        head_dim: d,
                        heads_first: false,
                    });
                }
            }
        }
        // [B, S, C] from a [B, S, H, D] view: back to plain rows.
        if shape.len() == 3 && shape[2].as_const() == Some(cols) {
            if let L::Act {
                heads_first: false, ..
            } = src
            {
                return Ok(act(t));
            }
        }
        Err(self.err(
            v,
            format!(
                "reshape to {} is not a head split/merge of rows with {cols} columns",
                self.g.ty(v)
            ),
        ))
    }

    fn transpose(&mut self, v: Value, x: Value, perm: &[u32]) -> Result<L, LowerError> {
        match (self.get(x), perm) {
            (
                L::Act {
                    t,
                    heads,
                    head_dim,
                    heads_first,
                },
                [0, 2, 1, 3],
            ) if heads > 0 => Ok(L::Act {
                t,
                heads,
                head_dim,
                heads_first: !heads_first,
            }),
            (
                L::Cache {
                    c,
                    rep,
                    transposed: false,
                },
                [0, 1, 3, 2],
            ) => Ok(L::Cache {
                c,
                rep,
                transposed: true,
            }),
            _ => Err(self.err(
                v,
                format!(
                    "transpose {perm:?} is supported only as the head-first view [0, 2, 1, 3] of split rows, or [0, 1, 3, 2] of a KV cache"
                ),
            )),
        }
    }

    fn mul(&mut self, v: Value, a: Value, b: Value) -> Result<L, LowerError> {
        match (self.get(a), self.get(b)) {
            (L::Norm0 { x, eps }, L::Weight(w)) | (L::Weight(w), L::Norm0 { x, eps }) => {
                let wi = &self.m.weights[w as usize];
                let cols = self.m.tensors[x as usize].cols;
                if wi.dtype != DType::F32 || wi.shape != [cols] {
                    return Err(self.err(v, format!("the norm scale must be f32[{cols}]")));
                }
                let rows = self.m.tensors[x as usize].rows;
                let out = self.new_tensor(rows, cols, BlockKind::Head);
                self.push(MOp::Norm {
                    x,
                    w: Some(w),
                    eps,
                    out,
                });
                Ok(act(out))
            }
            (L::Silu0 { x: gate }, _) => {
                let up = self.act(v, b)?;
                self.same_shape(v, gate, up)?;
                let t = self.m.tensors[gate as usize].clone();
                let out = self.new_tensor(t.rows, t.cols, BlockKind::Head);
                self.push(MOp::SwiGlu { gate, up, out });
                Ok(act(out))
            }
            (_, L::Silu0 { x: gate }) => {
                let up = self.act(v, a)?;
                self.same_shape(v, gate, up)?;
                let t = self.m.tensors[gate as usize].clone();
                let out = self.new_tensor(t.rows, t.cols, BlockKind::Head);
                self.push(MOp::SwiGlu { gate, up, out });
                Ok(act(out))
            }
            _ => {
                let x = self.act(v, a)?;
                let y = self.act(v, b)?;
                self.same_shape(v, x, y)?;
                let t = self.m.tensors[x as usize].clone();
                let out = self.new_tensor(t.rows, t.cols, BlockKind::Head);
                self.push(MOp::Mul { a: x, b: y, out });
                Ok(self.keep_view(a, out))
            }
        }
    }

    fn add(&mut self, v: Value, a: Value, b: Value) -> Result<L, LowerError> {
        match (self.get(a), self.get(b)) {
            (L::Scores { .. }, L::Mask) | (L::Mask, L::Scores { .. }) => {
                let s = if matches!(self.get(a), L::Scores { .. }) {
                    a
                } else {
                    b
                };
                let L::Scores {
                    q,
                    heads,
                    head_dim,
                    k,
                    scale,
                    masked: false,
                    softmaxed: false,
                } = self.get(s)
                else {
                    return Err(self.err(v, "the causal mask must be added once, before softmax"));
                };
                Ok(L::Scores {
                    q,
                    heads,
                    head_dim,
                    k,
                    scale,
                    masked: true,
                    softmaxed: false,
                })
            }
            _ => {
                let x = self.act(v, a)?;
                let y = self.act(v, b)?;
                self.same_shape(v, x, y)?;
                let t = self.m.tensors[x as usize].clone();
                let out = self.new_tensor(t.rows, t.cols, BlockKind::Head);
                self.push(MOp::Add { a: x, b: y, out });
                Ok(self.keep_view(a, out))
            }
        }
    }

    fn same_shape(&self, v: Value, a: TId, b: TId) -> Result<(), LowerError> {
        let (x, y) = (&self.m.tensors[a as usize], &self.m.tensors[b as usize]);
        if x != y {
            return Err(self.err(
                v,
                format!(
                    "elementwise operands must have the same rows and columns (no broadcasting on the LPU lowering): {:?}×{} vs {:?}×{}",
                    x.rows, x.cols, y.rows, y.cols
                ),
            ));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<LoweredModel, LowerError> {
        // Group ops into blocks in order: head, layers by index, tail.
        let mut kinds: Vec<BlockKind> = self.op_block.clone();
        kinds.sort_by_key(|b| block_rank(*b));
        kinds.dedup();
        let mut blocks: Vec<Block> = kinds
            .iter()
            .map(|k| Block {
                kind: *k,
                ops: Vec::new(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            })
            .collect();
        let index: HashMap<BlockKind, usize> =
            kinds.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let ops = std::mem::take(&mut self.ops);
        for (op, b) in ops.into_iter().zip(&self.op_block) {
            blocks[index[b]].ops.push(op);
        }
        // Block interfaces: tensors defined in one block and used in a later one.
        let mut def: HashMap<TId, usize> = HashMap::new();
        for (bi, b) in blocks.iter().enumerate() {
            for op in &b.ops {
                if let Some(o) = op.output() {
                    def.insert(o, bi);
                }
            }
        }
        let mut uses: Vec<(usize, TId)> = Vec::new();
        for (bi, b) in blocks.iter().enumerate() {
            for op in &b.ops {
                for t in op.inputs() {
                    let d = def.get(&t).copied().unwrap_or(0);
                    if d != bi {
                        if d > bi {
                            return Err(LowerError {
                                value: 0,
                                op: op.name(),
                                msg: format!(
                                    "block {:?} uses a value that block {:?} defines later",
                                    b.kind, blocks[d].kind
                                ),
                            });
                        }
                        uses.push((bi, t));
                    }
                }
            }
        }
        for (bi, t) in uses {
            if !blocks[bi].inputs.contains(&t) {
                blocks[bi].inputs.push(t);
            }
            let d = def.get(&t).copied().unwrap_or(0);
            if !blocks[d].outputs.contains(&t) {
                blocks[d].outputs.push(t);
            }
        }
        // A value used two or more blocks later would have to be carried through the
        // stages in between; LLaMA graphs never do that (the residual passes each layer).
        for b in &blocks {
            for t in &b.inputs {
                let d = def.get(t).copied().unwrap_or(0);
                let here = blocks.iter().position(|x| std::ptr::eq(x, b)).unwrap_or(0);
                if d + 1 != here {
                    return Err(LowerError {
                        value: 0,
                        op: "block",
                        msg: format!(
                            "block {:?} reads an activation from block {:?}, which is not the block before it",
                            b.kind, blocks[d].kind
                        ),
                    });
                }
            }
        }
        if blocks.is_empty() {
            return Err(LowerError {
                value: 0,
                op: "graph",
                msg: "the graph has no ops to lower".into(),
            });
        }
        self.m.blocks = blocks;
        Ok(self.m)
    }
}

fn act(t: TId) -> L {
    L::Act {
        t,
        heads: 0,
        head_dim: 0,
        heads_first: false,
    }
}

fn block_rank(b: BlockKind) -> (u8, u32) {
    match b {
        BlockKind::Head => (0, 0),
        BlockKind::Layer(n) => (1, n),
        BlockKind::Tail => (2, 0),
    }
}

fn describe(l: &L) -> &'static str {
    match l {
        L::Tokens => "the token ids",
        L::Act { .. } => "an activation",
        L::Weight(_) => "a weight",
        L::Dequant(_) => "a dequantized weight",
        L::Mask => "the causal mask",
        L::Cache { .. } => "a KV cache",
        L::Norm0 { .. } => "a norm",
        L::Silu0 { .. } => "a silu",
        L::Scores { .. } => "attention scores",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpuc_ir::builder::{build_llama, LlamaConfig};
    use lpuc_ir::graph::WeightSource;

    #[test]
    fn tiny_lowers_to_head_layers_tail() {
        let c = LlamaConfig::preset("tiny").unwrap();
        let g = build_llama(&c, WeightSource::None).unwrap();
        let m = lower(&g).unwrap();
        let kinds: Vec<BlockKind> = m.blocks.iter().map(|b| b.kind).collect();
        assert_eq!(
            kinds,
            vec![
                BlockKind::Head,
                BlockKind::Layer(0),
                BlockKind::Layer(1),
                BlockKind::Tail
            ]
        );
        assert_eq!(
            m.blocks[1].signature(&m),
            m.blocks[2].signature(&m),
            "identical layers share one schedule"
        );
        let names: Vec<&str> = m.blocks[1].ops.iter().map(|o| o.name()).collect();
        assert_eq!(
            names,
            [
                "norm",
                "linear",
                "linear",
                "linear",
                "rope",
                "rope",
                "kv_append",
                "kv_append",
                "attention",
                "linear",
                "add",
                "norm",
                "linear",
                "linear",
                "swiglu",
                "linear",
                "add"
            ]
        );
        assert_eq!(m.param_count(), g.param_count());
    }
}

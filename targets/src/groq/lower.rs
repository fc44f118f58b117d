//! Lowering, step 1: the Groq pass pipeline's output → LPU **macro-ops** grouped in blocks.
//!
//! The LPU works on 320-lane vectors streamed between functional slices, not on N-d
//! tensors, so this step keeps only what the hardware needs: every activation becomes a
//! row matrix `[rows × cols]` (rows = token rows `B·S`, or sequences after `take_last`),
//! and the IR's views (`reshape`, the head-first `transpose`) disappear into the ops that
//! need a head structure (`Rope`, `Attention`, `KvAppend`).
//!
//! The input is what `lpuc_passes::pipeline::GROQ_PIPELINE` produces; [`lower`] checks
//! the phase "lowerable for groq" ([`lpuc_passes::lowerable::check`]) first, so every
//! primitive form (`matmul(x, dequant(w))`, `mul(rms_norm(x), w)`, `mul(silu(a), b)`, the
//! softmax attention chain) is refused there, naming the op, the value and the pass that
//! fuses it. Nothing here recognizes a pattern: each accepted op maps to one macro-op.
//!
//! | op (the pipeline's output)                 | macro-op    |
//! |--------------------------------------------|-------------|
//! | `qmatmul(x, w)`, `matmul(x, w)` (float w)  | `Linear`    |
//! | `rms_norm(x)`, `rms_norm(x, w)`            | `Norm`      |
//! | `swiglu(a, b)`                             | `SwiGlu`    |
//! | `flash_attention(q, k, v)`                 | `Attention` |
//! | `rope`, `kv_append`, `add`, `take_last`, `embedding`, `output` | the same |
//! | `reshape` (head split/merge), `transpose [0, 2, 1, 3]` | a view, no op |
//!
//! `tile.*` and `mem.*` annotations are accepted and ignored: on the LPU the tile is fixed
//! by the MXM plane (320×320) and the vector (320 lanes), and SRAM is placed per chip by
//! the code generator.
//!
//! **Order.** Macro-ops are emitted in a *structural* order (levels, ties depth-first
//! from the outputs; see `structural_order`), never in node-creation order, which
//! passes change freely (egg extraction, CSE). So two layers with one structure always
//! get one op order (and share one schedule), and a rewrite that only renumbers nodes
//! cannot change a schedule.
//!
//! Blocks: ops that touch a `blk.N.*` weight or cache belong to layer N
//! ([`lpuc_ir::names::block_layer`]); ops that only depend on earlier layers belong to
//! the layer they extend (residual adds); ops with a non-layer weight belong to the head
//! (before any layer) or the tail (after). Layers with equal [`Block::signature`] are
//! scheduled once and replicated.
//!
//! Invariant: every op of the graph is either lowered or rejected with a
//! [`LowerError`] naming the value (`%N` as printed) and why.

use std::collections::{HashMap, HashSet};

use lpuc_ir::graph::Graph;
use lpuc_ir::names::block_layer;
use lpuc_ir::op::Op;
use lpuc_ir::types::{Dim, Sym};
use lpuc_ir::{DType, Value};
use lpuc_passes::lowerable::{self, NotLowerable};
use lpuc_passes::TargetKind;

use super::mops::{
    Block, BlockKind, CId, CacheInfo, LoweredModel, MOp, Rows, TId, TensorInfo, WId, WeightInfo,
};

/// Why a graph cannot be lowered to the LPU.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    /// The graph is not in the phase "lowerable for groq": an op the pipeline should
    /// have fused (the message names the op, the value and the pass).
    #[error(transparent)]
    NotLowerable(#[from] NotLowerable),
    /// An op of the phase used in a way the LPU mapping does not cover.
    #[error("%{value} = {op}: {msg}")]
    Op {
        /// The value's printed number.
        value: usize,
        op: &'static str,
        msg: String,
    },
    /// A property of the whole graph (a cycle, the block order).
    #[error("{0}")]
    Graph(String),
}

impl LowerError {
    fn graph(msg: impl Into<String>) -> LowerError {
        LowerError::Graph(msg.into())
    }
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
    /// A `kv_append` result: the cache with every row so far.
    Cache(CId),
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

/// Lowers the Groq pipeline's output (see [`lpuc_passes::pipeline::GROQ_PIPELINE`]); a
/// graph outside the phase "lowerable for groq" is refused. Weights may be absent
/// (shapes only).
pub fn lower(g: &Graph) -> Result<LoweredModel, LowerError> {
    if let Err(cyc) = g.topo_order() {
        return Err(LowerError::graph(format!(
            "the graph has a cycle through {} values",
            cyc.len()
        )));
    }
    lowerable::check(g, TargetKind::Groq)?;
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
    for v in structural_order(g) {
        l.visit(v)?;
    }
    l.finish()
}

/// Every value once, operands before users, in an order fixed by the graph's structure
/// alone (never by node ids, so not by the order in which passes created nodes):
///
/// 1. **Level**: an op's level is the longest chain of macro-ops below it (views,
///    weights and inputs add nothing). Ops of one level are independent, so emitting
///    them together lets the list scheduler overlap them.
/// 2. A `kv_append` (the one state write; only attention reads its result) **sinks** to
///    the level just below its first reader: it runs on the SXM and MEM, so the VXM work
///    of its level (RoPE) goes first. This is also the order `build_llama` writes a
///    layer in, which keeps the predictions made from it (README-groq.md).
/// 3. Ties: depth-first post-order from the outputs (in printed order), operands in
///    operand order — q before k before v, gate before up.
fn structural_order(g: &Graph) -> Vec<Value> {
    let dfs = dfs_post_order(g);
    let index: HashMap<Value, usize> = dfs.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    let mut level: HashMap<Value, usize> = HashMap::new();
    for v in &dfs {
        let below = g.operands(*v).iter().map(|o| level[o]).max().unwrap_or(0);
        let view = matches!(
            g.op(*v),
            Op::Reshape | Op::Transpose { .. } | Op::Weight { .. } | Op::Input { .. }
        );
        level.insert(*v, below + usize::from(!view));
    }
    let key = |v: &Value| -> (usize, usize) {
        let own = level[v];
        let sunk = match g.op(*v) {
            Op::KvAppend { .. } => g
                .users(*v)
                .iter()
                .map(|u| level[u])
                .min()
                .map_or(own, |first| own.max(first - 1)),
            _ => own,
        };
        (sunk, index[v])
    };
    let mut order = dfs.clone();
    order.sort_by_key(key);
    order
}

/// Depth-first post-order from the outputs (in printed order), operands in operand order,
/// then whatever the outputs do not reach.
fn dfs_post_order(g: &Graph) -> Vec<Value> {
    let printed = g.sorted_values();
    let (outputs, rest): (Vec<Value>, Vec<Value>) = printed
        .iter()
        .partition(|v| matches!(g.op(**v), Op::Output { .. }));
    let mut done: HashSet<Value> = HashSet::new();
    let mut order = Vec::with_capacity(printed.len());
    // Iterative: an 80-layer model is thousands of values deep.
    let mut stack: Vec<(Value, usize)> = Vec::new();
    for root in outputs.into_iter().chain(rest) {
        if done.contains(&root) {
            continue;
        }
        stack.push((root, 0));
        while let Some((v, i)) = stack.pop() {
            match g.operands(v).get(i) {
                Some(&o) => {
                    stack.push((v, i + 1));
                    if !done.contains(&o) {
                        stack.push((o, 0));
                    }
                }
                None => {
                    if done.insert(v) {
                        order.push(v);
                    }
                }
            }
        }
    }
    order
}

impl<'g> Lowerer<'g> {
    fn err(&self, v: Value, msg: impl Into<String>) -> LowerError {
        LowerError::Op {
            value: self.num.get(&v).copied().unwrap_or(0),
            op: self.g.op(v).name(),
            msg: msg.into(),
        }
    }

    fn get(&self, v: Value) -> L {
        self.vals
            .get(&v)
            .cloned()
            .expect("operands are visited before users (structural order)")
    }

    fn new_tensor(&mut self, rows: Rows, cols: u64) -> TId {
        self.m.tensors.push(TensorInfo { rows, cols });
        // Overwritten by `push` with the block of the op that defines it.
        self.t_block.push(BlockKind::Head);
        (self.m.tensors.len() - 1) as TId
    }

    /// A tensor shaped like `x`.
    fn like(&mut self, x: TId) -> TId {
        let t = self.m.tensors[x as usize].clone();
        self.new_tensor(t.rows, t.cols)
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
            match block_layer(&self.m.weights[*w as usize].name) {
                Some(n) => layer = Some(layer.map_or(n, |l| l.max(n))),
                None => non_layer_weight = true,
            }
        }
        for c in caches {
            if let Some(n) = block_layer(&self.m.caches[*c as usize].name) {
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

    fn push(&mut self, op: MOp) {
        let b = self.block_for(&op.inputs(), &op.weights(), &op.caches());
        if matches!(b, BlockKind::Layer(_)) {
            self.any_layer = true;
        }
        if let Some(o) = op.output() {
            self.t_block[o as usize] = b;
        }
        self.ops.push(op);
        self.op_block.push(b);
    }

    /// The activation operand `of` of `v`.
    fn act(&self, v: Value, of: Value) -> Result<TId, LowerError> {
        match self.get(of) {
            L::Act { t, .. } => Ok(t),
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

    /// One op of the phase → at most one macro-op (views produce none).
    fn visit(&mut self, v: Value) -> Result<(), LowerError> {
        let g = self.g;
        let ops = g.operands(v);
        let op = g.op(v).clone();
        let r = match &op {
            Op::Input { .. } => L::Tokens,
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
            Op::Embedding => {
                let (L::Weight(table), L::Tokens) = (self.get(ops[0]), self.get(ops[1])) else {
                    return Err(self.err(v, "embedding needs a weight table and the token ids"));
                };
                let cols = self.m.weights[table as usize].shape[1];
                let out = self.new_tensor(Rows::Tokens, cols);
                self.push(MOp::Embed { table, out });
                act(out)
            }
            Op::RmsNorm { eps } => {
                let x = self.act(v, ops[0])?;
                let w = match ops.get(1).map(|w| self.get(*w)) {
                    None => None,
                    Some(L::Weight(w)) => Some(w),
                    Some(_) => return Err(self.err(v, "the norm scale must be a weight")),
                };
                if let Some(w) = w {
                    let wi = &self.m.weights[w as usize];
                    let cols = self.m.tensors[x as usize].cols;
                    if wi.dtype != DType::F32 || wi.shape != [cols] {
                        return Err(self.err(v, format!("the norm scale must be f32[{cols}]")));
                    }
                }
                let out = self.like(x);
                self.push(MOp::Norm {
                    x,
                    w,
                    eps: *eps,
                    out,
                });
                act(out)
            }
            Op::Matmul | Op::QMatmul => self.linear(v, &op, &ops)?,
            Op::Reshape => self.reshape(v, ops[0])?,
            Op::Transpose { perm } => self.transpose(v, ops[0], perm)?,
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
                L::Cache(c)
            }
            Op::Add => {
                let (a, b) = (self.act(v, ops[0])?, self.act(v, ops[1])?);
                self.same_shape(v, a, b)?;
                let out = self.like(a);
                self.push(MOp::Add { a, b, out });
                self.keep_view(ops[0], out)
            }
            Op::SwiGlu => {
                let (gate, up) = (self.act(v, ops[0])?, self.act(v, ops[1])?);
                self.same_shape(v, gate, up)?;
                let out = self.like(gate);
                self.push(MOp::SwiGlu { gate, up, out });
                act(out)
            }
            Op::TakeLast => {
                let x = self.act(v, ops[0])?;
                let cols = self.m.tensors[x as usize].cols;
                let out = self.new_tensor(Rows::Seqs, cols);
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
                let out = self.like(t);
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
            Op::FlashAttention { scale, .. } => self.attention(v, &ops, *scale)?,
            // Refused by `lowerable::check` before lowering starts; kept as an error, not
            // a panic, so a gap between the phase and this match names the op.
            Op::Dequant
            | Op::Softmax
            | Op::Scale { .. }
            | Op::CausalMask
            | Op::RepeatKv { .. }
            | Op::Silu
            | Op::Mul => {
                return Err(self.err(
                    v,
                    "not in the phase \"lowerable for groq\" (lpuc_passes::lowerable)",
                ))
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

    /// `flash_attention(q, k, v)`: heads-first queries over two `kv_append` results.
    fn attention(&mut self, v: Value, ops: &[Value], scale: f32) -> Result<L, LowerError> {
        let L::Act {
            t: q,
            heads,
            head_dim,
            heads_first: true,
        } = self.get(ops[0])
        else {
            return Err(self.err(v, "flash_attention needs heads-first q [B, H, S, D]"));
        };
        let (L::Cache(k), L::Cache(vc)) = (self.get(ops[1]), self.get(ops[2])) else {
            return Err(self.err(v, "flash_attention needs the kv_append results as k and v"));
        };
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
        let out = self.new_tensor(rows, heads * head_dim);
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

    /// `qmatmul(x, w)` or `matmul(x, w)` with a float weight `w: [N, K]`.
    fn linear(&mut self, v: Value, op: &Op, ops: &[Value]) -> Result<L, LowerError> {
        let L::Weight(w) = self.get(ops[1]) else {
            return Err(self.err(v, "the second operand of a projection must be a weight"));
        };
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
        let out = self.new_tensor(rows, n);
        let act_q8 = *op == Op::QMatmul && self.m.weights[w as usize].dtype.is_quantized();
        self.push(MOp::Linear { x, w, out, act_q8 });
        Ok(act(out))
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
            (other, _) => Err(self.err(
                v,
                format!(
                    "transpose {perm:?} of {} is not the head-first view [0, 2, 1, 3] of rows split into heads",
                    describe(&other)
                ),
            )),
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
                            // Name the producer: its weights carry the `blk.N` that put it
                            // in the later block.
                            let producer = blocks[d].ops.iter().find(|p| p.output() == Some(t));
                            let names: Vec<&str> = producer
                                .map(|p| p.weights())
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|w| self.m.weights.get(*w as usize))
                                .map(|w| w.name.as_str())
                                .collect();
                            return Err(LowerError::graph(format!(
                                "the {} of {} (weights: {}) feeds the {} of {}, an earlier \
                                 block: blocks are ordered by the `blk.N` in weight and cache \
                                 names, so a weight or cache named for another layer than the \
                                 one it is used in (a renamed tensor?) breaks the order",
                                producer.map_or("op", |p| p.name()),
                                blocks[d].kind.name(),
                                if names.is_empty() {
                                    "none".to_string()
                                } else {
                                    names.join(", ")
                                },
                                op.name(),
                                b.kind.name(),
                            )));
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
        for (here, b) in blocks.iter().enumerate() {
            for t in &b.inputs {
                let d = def.get(t).copied().unwrap_or(0);
                if d + 1 != here {
                    return Err(LowerError::Op {
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
            return Err(LowerError::graph("the graph has no ops to lower"));
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
        L::Cache(_) => "a KV cache",
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
        let g = crate::groq::pipeline_output(g).unwrap();
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

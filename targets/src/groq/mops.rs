//! The **macro-op program**: what lowering produces and every later step reads — a model
//! as activations (row matrices), weights, KV caches and blocks of macro-ops (one unit of
//! work the code generator maps to LPU slices). Plain serde data; it depends on nothing
//! of the target but the IR's dtypes and RoPE style.

use std::collections::HashMap;

use lpuc_ir::op::RopeStyle;
use lpuc_ir::DType;
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
            | MOp::TakeLast { x, .. }
            | MOp::Output { x, .. } => vec![*x],
            MOp::Attention { q, .. } => vec![*q],
            MOp::SwiGlu { gate, up, .. } => vec![*gate, *up],
            MOp::Add { a, b, .. } => vec![*a, *b],
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

impl BlockKind {
    /// As messages name it: "the head", "layer 3", "the tail".
    pub fn name(self) -> String {
        match self {
            BlockKind::Head => "the head".into(),
            BlockKind::Layer(n) => format!("layer {n}"),
            BlockKind::Tail => "the tail".into(),
        }
    }
}

impl Block {
    /// Ids of the weight and cache slots the block's ops use, in op order (instances of
    /// one signature list theirs in the same order, so position `i` of one instance is
    /// position `i` of another). The embedding table is host-side, not a slot.
    pub fn slots(&self) -> (Vec<WId>, Vec<CId>) {
        let mut ws = Vec::new();
        let mut cs = Vec::new();
        for op in &self.ops {
            for w in op.weights() {
                if !ws.contains(&w) && !matches!(op, MOp::Embed { .. }) {
                    ws.push(w);
                }
            }
            for c in op.caches() {
                if !cs.contains(&c) {
                    cs.push(c);
                }
            }
        }
        (ws, cs)
    }

    /// Whether the block runs on the chips at all (the head's embedding is host-side).
    pub fn on_chip(&self) -> bool {
        !matches!(self.kind, BlockKind::Head)
            || self.ops.iter().any(|o| !matches!(o, MOp::Embed { .. }))
    }
}

//! Cutting a graph into bounded, pure islands: one decoder block each.
//!
//! A node's *layer* is the largest `blk.N.` weight it depends on (`-1` for none), so a
//! block's projections, attention and FFN share one layer. The one thing that rule gets
//! wrong is the start of a block: `rms_norm(x)` of the residual stream depends only on the
//! previous block, yet belongs with the `mul` by this block's norm weight. So a node that
//! reads no layer weight itself and has a single user in a later layer moves to that
//! layer (walking backwards, so chains move together).
//!
//! Members are pure ops with operands; weights, inputs, zero-operand ops (`causal_mask`),
//! `kv_append` and outputs are never members. A value a member reads from outside its
//! island is a *leaf*; zero-operand pure ops are *constant* leaves, which the e-graph sees
//! as their op (so a pattern can ask for `tensor.causal_mask`).
//!
//! An island has at most [`MAX_ISLAND_NODES`] members: a larger group (a graph that is not
//! a stack of decoder blocks, e.g. a long chain of elementwise ops) is cut into consecutive
//! chunks in topological order, values of earlier chunks becoming leaves of later ones.
//! egg's extractor iterates to a fixpoint over all classes in hash order, which is
//! quadratic in the island's size (`lpuc opt` took 31 s on a 5k-op chain, 76 s on 10k);
//! bounded islands keep every pass linear in the graph. Rewrites that would span a cut are
//! not found, which only matters for graphs that have no block structure anyway.
//!
//! Each island has a structural *key* (ops, attributes, types, operand wiring, leaf types
//! — not weight names), so the 80 identical blocks of a 70B model share one key and one
//! equality-saturation run.

use lpuc_ir::op::Op;
use lpuc_ir::{Graph, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Members per island. A decoder block is ~60 ops (the largest preset's, llama3-70b's, is
/// under 100), so real models are never cut; at this size one saturation plus extraction
/// takes milliseconds.
pub const MAX_ISLAND_NODES: usize = 256;

#[derive(Clone, Debug)]
pub struct Island {
    pub layer: i64,
    /// Members in topological order.
    pub nodes: Vec<Value>,
    /// Values read from outside, in first-use order.
    pub leaves: Vec<Value>,
    /// Whether leaf `j` is a zero-operand pure op (seen as its op, not as a leaf).
    pub const_leaf: Vec<bool>,
    /// Local indices of members used outside the island.
    pub roots: Vec<usize>,
    pub key: String,
}

/// `blk.N.` → N (the one parser, [`lpuc_ir::names::block_layer`]).
pub fn blk_layer(name: &str) -> Option<i64> {
    lpuc_ir::names::block_layer(name).map(i64::from)
}

pub fn is_member(g: &Graph, v: Value) -> bool {
    let op = g.op(v);
    op.is_pure()
        && !matches!(op, Op::Input { .. } | Op::Weight { .. })
        && !matches!(op.arity(), lpuc_ir::op::Arity::Exactly(0))
}

fn weight_layer(g: &Graph, v: Value) -> Option<i64> {
    match g.op(v) {
        Op::Weight { name } => blk_layer(name),
        _ => None,
    }
}

pub fn partition(g: &Graph) -> Vec<Island> {
    let order = g.sorted_values();
    let mut layer: HashMap<Value, i64> = HashMap::with_capacity(order.len());
    let mut operands: HashMap<Value, Vec<Value>> = HashMap::with_capacity(order.len());
    for &v in &order {
        let ops = g.operands(v);
        let l = match weight_layer(g, v) {
            Some(l) => l,
            None => ops.iter().map(|o| layer[o]).max().unwrap_or(-1),
        };
        layer.insert(v, l);
        operands.insert(v, ops);
    }
    for &v in order.iter().rev() {
        if !is_member(g, v) || operands[&v].iter().any(|o| weight_layer(g, *o).is_some()) {
            continue;
        }
        let users = g.users(v);
        if let [u] = users[..] {
            if is_member(g, u) && layer[&u] > layer[&v] {
                layer.insert(v, layer[&u]);
            }
        }
    }
    let mut groups: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for &v in &order {
        if is_member(g, v) {
            groups.entry(layer[&v]).or_default().push(v);
        }
    }
    let mut islands: Vec<Island> = groups
        .into_iter()
        .flat_map(|(l, nodes)| {
            nodes
                .chunks(MAX_ISLAND_NODES)
                .map(|c| build(g, l, c.to_vec(), &operands))
                .collect::<Vec<_>>()
        })
        .collect();
    let pos: HashMap<Value, usize> = order.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    islands.sort_by_key(|i| pos[&i.nodes[0]]);
    islands
}

fn build(
    g: &Graph,
    layer: i64,
    nodes: Vec<Value>,
    operands: &HashMap<Value, Vec<Value>>,
) -> Island {
    let local: HashMap<Value, usize> = nodes.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    let mut leaves = Vec::new();
    let mut leaf_ix: HashMap<Value, usize> = HashMap::new();
    let mut key = String::new();
    let mut body = String::new();
    let mut roots = Vec::new();
    for (i, &v) in nodes.iter().enumerate() {
        let n = g.node(v);
        let _ = write!(body, "{}", n.op.name());
        for (k, a) in n.op.attrs() {
            let _ = write!(body, " {k}={a}");
        }
        let _ = write!(body, " :{}(", n.ty);
        for o in &operands[&v] {
            match local.get(o) {
                Some(j) => {
                    let _ = write!(body, "n{j} ");
                }
                None => {
                    let next = leaves.len();
                    let j = *leaf_ix.entry(*o).or_insert_with(|| {
                        leaves.push(*o);
                        next
                    });
                    let _ = write!(body, "l{j} ");
                }
            }
        }
        let is_root = {
            let us = g.users(v);
            us.is_empty() || us.iter().any(|u| !local.contains_key(u))
        };
        if is_root {
            roots.push(i);
            body.push_str(") root\n");
        } else {
            body.push_str(")\n");
        }
    }
    let const_leaf: Vec<bool> = leaves
        .iter()
        .map(|l| {
            g.op(*l).is_pure()
                && g.operands(*l).is_empty()
                && !matches!(g.op(*l), Op::Input { .. } | Op::Weight { .. })
        })
        .collect();
    for (j, l) in leaves.iter().enumerate() {
        if const_leaf[j] {
            let _ = writeln!(key, "l{j} const {} : {}", g.op(*l).name(), g.ty(*l));
        } else {
            let _ = writeln!(key, "l{j} : {}", g.ty(*l));
        }
    }
    key.push_str(&body);
    Island {
        layer,
        nodes,
        leaves,
        const_leaf,
        roots,
        key,
    }
}

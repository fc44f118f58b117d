//! The dataflow graph.
//!
//! Nodes are ops with exactly one result, so a node *is* a [`Value`]. Edges run from an
//! operand to its user and carry the operand's position. The petgraph `StableDiGraph` keeps
//! ids valid across removals, which lets passes hold `Value`s while they rewrite; no
//! `NodeIndex` appears in this API.
//!
//! Invariants this module maintains by construction (the verifier checks the rest):
//! - every node's operand positions are exactly `0..n` (one edge per position);
//! - [`Graph::replace_all_uses`] rewires every use, so no pass threads id maps around.

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::op::{Attr, Op};
use crate::types::{SymTable, TensorType};

/// A value (equivalently, the node that defines it). Prints as `%<internal id>`; the text
/// printer renumbers values in topological order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Value(u32);

impl Value {
    fn ix(self) -> NodeIndex<u32> {
        NodeIndex::new(self.0 as usize)
    }
    fn of(ix: NodeIndex<u32>) -> Value {
        Value(ix.index() as u32)
    }
    /// The internal id (stable for the graph's lifetime, not across printing).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// A byte range in the source text a node was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Loc {
    pub offset: usize,
    pub len: usize,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    /// The result type (declared in text, inferred when built in code; the verifier
    /// checks the two agree).
    pub ty: TensorType,
    /// Discardable annotations from passes; keys contain a `.` (`tile.sizes`).
    pub annot: BTreeMap<String, Attr>,
    /// Where the node came from, if it was parsed.
    pub loc: Option<Loc>,
}

impl Node {
    pub fn new(op: Op, ty: TensorType) -> Node {
        Node {
            op,
            ty,
            annot: BTreeMap::new(),
            loc: None,
        }
    }
}

impl PartialEq for Node {
    fn eq(&self, o: &Node) -> bool {
        self.op == o.op && self.ty == o.ty && self.annot == o.annot
    }
}

/// A KV-cache state the program reads and appends to. Its shape names the row axis with
/// `P` (capacity is the bound of `P`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateDecl {
    pub name: String,
    pub ty: TensorType,
    #[serde(skip)]
    pub loc: Option<Loc>,
}

/// Where a program's weights come from when it is run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightSource {
    /// Shapes only: the program can be compiled and simulated, not run.
    None,
    /// Deterministic random weights: each tensor from (seed, name).
    Random { seed: u64 },
    /// A GGUF file (path as written).
    Gguf { path: String },
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub syms: SymTable,
    pub weights: WeightSource,
    pub states: Vec<StateDecl>,
    g: StableDiGraph<Node, u32, u32>,
}

impl PartialEq for Graph {
    /// Structural equality: same header and the same nodes in the same canonical order.
    fn eq(&self, o: &Graph) -> bool {
        crate::text::print(self) == crate::text::print(o)
    }
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            syms: SymTable::default(),
            weights: WeightSource::None,
            states: Vec::new(),
            g: StableDiGraph::default(),
        }
    }

    /// Adds a node with the given operands and a result type the caller asserts.
    pub fn add(&mut self, op: Op, operands: &[Value], ty: TensorType) -> Value {
        self.add_node(Node::new(op, ty), operands)
    }

    pub fn add_node(&mut self, node: Node, operands: &[Value]) -> Value {
        let ix = self.g.add_node(node);
        for (i, o) in operands.iter().enumerate() {
            self.g.add_edge(o.ix(), ix, i as u32);
        }
        Value::of(ix)
    }

    /// Adds a node whose result type is inferred from its operands.
    pub fn add_inferred(&mut self, op: Op, operands: &[Value]) -> Result<Value, String> {
        let tys: Vec<&TensorType> = operands.iter().map(|v| &self.node(*v).ty).collect();
        let ty = crate::verify::infer_type(&op, &tys, self)?;
        Ok(self.add(op, operands, ty))
    }

    pub fn contains(&self, v: Value) -> bool {
        self.g.contains_node(v.ix())
    }

    /// The node of a value. Panics if `v` was removed: holding a dead `Value` is a bug in the
    /// pass holding it, not a user error.
    pub fn node(&self, v: Value) -> &Node {
        &self.g[v.ix()]
    }

    pub fn node_mut(&mut self, v: Value) -> &mut Node {
        &mut self.g[v.ix()]
    }

    pub fn op(&self, v: Value) -> &Op {
        &self.node(v).op
    }

    pub fn ty(&self, v: Value) -> &TensorType {
        &self.node(v).ty
    }

    /// Operands in position order.
    pub fn operands(&self, v: Value) -> Vec<Value> {
        let mut es: Vec<(u32, Value)> = self
            .g
            .edges_directed(v.ix(), Direction::Incoming)
            .map(|e| (*e.weight(), Value::of(e.source())))
            .collect();
        es.sort_unstable();
        es.into_iter().map(|(_, v)| v).collect()
    }

    pub fn operand(&self, v: Value, i: usize) -> Option<Value> {
        self.g
            .edges_directed(v.ix(), Direction::Incoming)
            .find(|e| *e.weight() as usize == i)
            .map(|e| Value::of(e.source()))
    }

    /// Distinct users of `v`, in id order.
    pub fn users(&self, v: Value) -> Vec<Value> {
        let mut us: Vec<Value> = self
            .g
            .edges_directed(v.ix(), Direction::Outgoing)
            .map(|e| Value::of(e.target()))
            .collect();
        us.sort_unstable();
        us.dedup();
        us
    }

    pub fn num_uses(&self, v: Value) -> usize {
        self.g.edges_directed(v.ix(), Direction::Outgoing).count()
    }

    /// Every use of `old` becomes a use of `new`.
    pub fn replace_all_uses(&mut self, old: Value, new: Value) {
        if old == new {
            return;
        }
        let uses: Vec<(petgraph::stable_graph::EdgeIndex<u32>, NodeIndex<u32>, u32)> = self
            .g
            .edges_directed(old.ix(), Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (e, target, pos) in uses {
            self.g.remove_edge(e);
            self.g.add_edge(new.ix(), target, pos);
        }
    }

    /// Replaces the operand list of `v`.
    pub fn set_operands(&mut self, v: Value, operands: &[Value]) {
        let old: Vec<_> = self
            .g
            .edges_directed(v.ix(), Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        for (i, o) in operands.iter().enumerate() {
            self.g.add_edge(o.ix(), v.ix(), i as u32);
        }
    }

    /// Removes a node and its edges.
    pub fn remove(&mut self, v: Value) -> Option<Node> {
        self.g.remove_node(v.ix())
    }

    /// All values in internal id order.
    pub fn values(&self) -> Vec<Value> {
        self.g.node_indices().map(Value::of).collect()
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// Topological order, ties broken by internal id, or `Err(values on a cycle)`.
    /// Deterministic, so printed numbering is stable.
    pub fn topo_order(&self) -> Result<Vec<Value>, Vec<Value>> {
        let mut indeg: HashMap<NodeIndex<u32>, usize> = HashMap::new();
        for n in self.g.node_indices() {
            indeg.insert(n, self.g.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<u32>> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| std::cmp::Reverse(n.index() as u32))
            .collect();
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(std::cmp::Reverse(i)) = ready.pop() {
            let n = NodeIndex::new(i as usize);
            order.push(Value::of(n));
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(std::cmp::Reverse(e.target().index() as u32));
                }
            }
        }
        if order.len() == self.g.node_count() {
            Ok(order)
        } else {
            let done: std::collections::HashSet<Value> = order.into_iter().collect();
            let mut rest: Vec<Value> = self
                .values()
                .into_iter()
                .filter(|v| !done.contains(v))
                .collect();
            rest.sort_unstable();
            Err(rest)
        }
    }

    /// Printed numbering (`%N`) of every value: its position in [`Graph::topo_order`].
    /// On a cyclic graph, cyclic values are numbered after the rest in id order.
    pub fn numbering(&self) -> HashMap<Value, usize> {
        let order = match self.topo_order() {
            Ok(o) => o,
            Err(cyc) => {
                let cycset: std::collections::HashSet<Value> = cyc.iter().copied().collect();
                let mut o: Vec<Value> = self
                    .values()
                    .into_iter()
                    .filter(|v| !cycset.contains(v))
                    .collect();
                o.extend(cyc);
                o
            }
        };
        order.into_iter().enumerate().map(|(i, v)| (v, i)).collect()
    }

    /// Values whose op is `output`, in topological order.
    pub fn outputs(&self) -> Vec<Value> {
        self.sorted_values()
            .into_iter()
            .filter(|v| matches!(self.op(*v), Op::Output { .. }))
            .collect()
    }

    /// Topological order if acyclic, else id order; for passes that must not fail.
    pub fn sorted_values(&self) -> Vec<Value> {
        self.topo_order().unwrap_or_else(|_| self.values())
    }

    pub fn find_input(&self, name: &str) -> Option<Value> {
        self.values()
            .into_iter()
            .find(|v| matches!(self.op(*v), Op::Input { name: n } if n == name))
    }

    pub fn find_output(&self, name: &str) -> Option<Value> {
        self.values()
            .into_iter()
            .find(|v| matches!(self.op(*v), Op::Output { name: n } if n == name))
    }

    pub fn state(&self, name: &str) -> Option<&StateDecl> {
        self.states.iter().find(|s| s.name == name)
    }

    /// Weight nodes in topological order.
    pub fn weights(&self) -> Vec<Value> {
        self.sorted_values()
            .into_iter()
            .filter(|v| matches!(self.op(*v), Op::Weight { .. }))
            .collect()
    }

    /// Total elements in weights with constant shapes (the parameter count).
    pub fn param_count(&self) -> u64 {
        self.weights()
            .iter()
            .filter_map(|w| self.ty(*w).const_numel())
            .sum()
    }

    /// Total bytes of the weights in their stored dtypes.
    pub fn weight_bytes(&self) -> u64 {
        self.weights()
            .iter()
            .filter_map(|w| {
                let t = self.ty(*w);
                t.dtype.bytes_for(t.const_numel()?)
            })
            .sum()
    }

    /// Removes nodes no output or state effect depends on. Returns how many were removed.
    pub fn dead_code_elim(&mut self) -> usize {
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<Value> = self
            .values()
            .into_iter()
            .filter(|v| !self.op(*v).is_pure())
            .collect();
        while let Some(v) = stack.pop() {
            if live.insert(v) {
                stack.extend(self.operands(v));
            }
        }
        let dead: Vec<Value> = self
            .values()
            .into_iter()
            .filter(|v| !live.contains(v))
            .collect();
        for v in &dead {
            self.remove(*v);
        }
        dead.len()
    }
}

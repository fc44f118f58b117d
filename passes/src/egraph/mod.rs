//! Equality saturation on bounded, pure islands.
//!
//! [`run_rules`] cuts the graph into islands ([`island`]: one decoder block each), runs
//! egg once per *distinct* island shape (the 80 identical blocks of a 70B model share one
//! run), extracts the cheapest form under the target's [`cost::CostModel`], and applies the
//! result to every island of that shape. Nothing ever saturates the whole model.
//!
//! Invariants:
//! - an island is replaced only if the extracted DAG is strictly cheaper than the original
//!   (each node counted once), so no rule set can make the graph worse;
//! - nodes that extraction leaves as they were are reused, not copied, so their
//!   annotations survive and an unchanged graph prints identically;
//! - every run is bounded by [`ITER_LIMIT`], [`NODE_LIMIT`] and [`TIME_LIMIT`], and its
//!   stop reason is logged (`tracing`, target `lpuc::egg`); a limit hit is reported in the
//!   [`Outcome`] (and a test fails if one is hit on the presets).

pub mod cost;
pub mod island;
pub mod lang;
pub mod rules;

use egg::{CostFunction, Extractor, Id, Language, Runner, SimpleScheduler, StopReason};
use lpuc_ir::op::Op;
use lpuc_ir::types::TensorType;
use lpuc_ir::{Graph, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use cost::CostModel;
use island::Island;
use lang::{op_of_node, Data, LeafId, Node, TypeAnalysis};
use rules::{Eg, Rw};

/// Iterations per run. The longest chain of dependent rewrites in our rule sets is short
/// (a fusion never enables another fusion of the same set more than a few levels deep);
/// 30 leaves an order of magnitude of headroom and still bounds a buggy rule.
pub const ITER_LIMIT: usize = 30;
/// E-nodes per run. A decoder block is ~60 ops plus ~20 attribute nodes; without
/// commutativity/associativity no rule set here more than doubles that. 20 000 is two
/// orders of magnitude of headroom and still only a few MB.
pub const NODE_LIMIT: usize = 20_000;
/// Wall time per run. Saturating one block takes well under a millisecond; a second
/// means something is wrong, and the pass must still finish (luminal's unbounded
/// saturation took an hour for 24 layers).
pub const TIME_LIMIT: Duration = Duration::from_secs(1);

/// What one [`run_rules`] call did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub islands: usize,
    pub unique: usize,
    /// Islands whose nodes were replaced.
    pub changed: usize,
    /// Rule applications in the e-graphs, weighted by how many islands share the run.
    pub applied: BTreeMap<String, usize>,
    /// Stop reasons other than saturation, one line each.
    pub limit_hits: Vec<String>,
}

/// One operand of a template node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TRef {
    Leaf(usize),
    /// An original member, reused unchanged.
    Orig(usize),
    New(usize),
}

#[derive(Clone, Debug)]
struct TNode {
    op: Op,
    ty: TensorType,
    args: Vec<TRef>,
}

/// The extracted form of an island shape, in island-local terms.
#[derive(Clone, Debug)]
struct Template {
    news: Vec<TNode>,
    /// For each root (local index): what replaces it.
    roots: Vec<(usize, TRef)>,
}

struct EggCost<'a> {
    eg: &'a Eg,
    model: &'a CostModel,
}

impl CostFunction<Node> for EggCost<'_> {
    type Cost = f64;
    fn cost<C: FnMut(Id) -> f64>(&mut self, n: &Node, mut costs: C) -> f64 {
        let own = node_cost(self.eg, self.model, n);
        n.fold(own, |acc, c| acc + costs(c))
    }
}

fn node_cost(eg: &Eg, model: &CostModel, n: &Node) -> f64 {
    if matches!(n, Node::Attr(_) | Node::Leaf(_)) {
        return 0.0;
    }
    let attr = |id: Id| match &eg[id].data {
        Data::Attr(a) => Some(a.clone()),
        _ => None,
    };
    let Some((op, xs, _)) = op_of_node(n, attr) else {
        return f64::INFINITY;
    };
    let Data::Ty(ty) = lang::infer_node(n, |id| eg[id].data.clone(), &Graph::new("")) else {
        return f64::INFINITY;
    };
    let tys: Option<Vec<&TensorType>> = xs.iter().map(|x| eg[*x].data.ty()).collect();
    match tys {
        Some(tys) => model.op_cost(&op, &ty, &tys),
        None => f64::INFINITY,
    }
}

/// Runs `rules` on every island of `g` and applies the improvements.
pub fn run_rules(g: &mut Graph, rules: &[Rw], model: &CostModel) -> Outcome {
    let islands = island::partition(g);
    let mut out = Outcome {
        islands: islands.len(),
        ..Outcome::default()
    };
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    let mut templates: Vec<Option<Template>> = Vec::new();
    let mut count: Vec<usize> = Vec::new();
    let mut tpl_of: Vec<usize> = Vec::with_capacity(islands.len());
    let mut applied_once: Vec<BTreeMap<String, usize>> = Vec::new();
    for isl in &islands {
        let k = match by_key.get(isl.key.as_str()) {
            Some(k) => *k,
            None => {
                let k = templates.len();
                let (tpl, applied, stop) = saturate(g, isl, rules, model);
                let msg = format!(
                    "island layer {} ({} nodes, {} like it): {stop}",
                    isl.layer,
                    isl.nodes.len(),
                    islands.iter().filter(|o| o.key == isl.key).count()
                );
                if stop.starts_with("saturated") {
                    tracing::debug!(target: "lpuc::egg", "{msg}");
                } else {
                    tracing::warn!(target: "lpuc::egg", "limit hit: {msg}");
                    out.limit_hits.push(msg);
                }
                templates.push(tpl);
                applied_once.push(applied);
                count.push(0);
                by_key.insert(isl.key.as_str(), k);
                k
            }
        };
        count[k] += 1;
        tpl_of.push(k);
    }
    out.unique = templates.len();
    for (k, applied) in applied_once.iter().enumerate() {
        for (r, n) in applied {
            *out.applied.entry(r.clone()).or_default() += n * count[k];
        }
    }
    let mut replaced: HashMap<Value, Value> = HashMap::new();
    for (isl, k) in islands.iter().zip(tpl_of) {
        if let Some(t) = &templates[k] {
            if instantiate(g, isl, t, &mut replaced) {
                out.changed += 1;
            }
        }
    }
    out
}

fn resolve(map: &HashMap<Value, Value>, mut v: Value) -> Value {
    while let Some(n) = map.get(&v) {
        v = *n;
    }
    v
}

/// Saturates one island; returns the template (if strictly cheaper), rule counts and the
/// stop reason as text.
fn saturate(
    g: &Graph,
    isl: &Island,
    rules: &[Rw],
    model: &CostModel,
) -> (Option<Template>, BTreeMap<String, usize>, String) {
    let leaf_tys: Vec<TensorType> = isl.leaves.iter().map(|l| g.ty(*l).clone()).collect();
    let mut eg: Eg = egg::EGraph::new(TypeAnalysis::new(leaf_tys));
    let mut ids: HashMap<Value, Id> = HashMap::new();
    let mut const_class: HashMap<Id, usize> = HashMap::new();
    for (j, l) in isl.leaves.iter().enumerate() {
        let id = if isl.const_leaf[j] {
            match lang::node_of_op(g.op(*l), g.ty(*l), &[], |_| Id::from(0usize)) {
                Some(n) => eg.add(n),
                None => eg.add(Node::Leaf(LeafId(j as u32))),
            }
        } else {
            eg.add(Node::Leaf(LeafId(j as u32)))
        };
        if isl.const_leaf[j] {
            const_class.insert(id, j);
        }
        ids.insert(*l, id);
    }
    let mut orig: Vec<Option<Node>> = Vec::with_capacity(isl.nodes.len());
    for &v in &isl.nodes {
        let xs: Vec<Id> = g.operands(v).iter().map(|o| ids[o]).collect();
        let n = lang::node_of_op(g.op(v), g.ty(v), &xs, |a| eg.add(Node::Attr(a)));
        let id = match &n {
            Some(n) => eg.add(n.clone()),
            // cannot happen for members; keep the node opaque rather than fail
            None => eg.add(Node::Leaf(LeafId(u32::MAX))),
        };
        orig.push(n);
        ids.insert(v, id);
    }
    let runner: Runner<Node, TypeAnalysis, ()> = Runner::new(TypeAnalysis::new(vec![]))
        .with_egraph(eg)
        .with_iter_limit(ITER_LIMIT)
        .with_node_limit(NODE_LIMIT)
        .with_time_limit(TIME_LIMIT)
        .with_scheduler(SimpleScheduler)
        .run(rules);
    let stop = match &runner.stop_reason {
        Some(StopReason::Saturated) => "saturated".to_string(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n}, ITER_LIMIT)"),
        Some(StopReason::NodeLimit(n)) => format!("e-node limit ({n}, NODE_LIMIT)"),
        Some(StopReason::TimeLimit(s)) => format!("time limit ({s:.3} s, TIME_LIMIT)"),
        Some(StopReason::Other(s)) => format!("stopped: {s}"),
        None => "not run".to_string(),
    };
    let stop = format!(
        "{stop} after {} iterations, {} e-nodes in {} classes",
        runner.iterations.len(),
        runner.egraph.total_number_of_nodes(),
        runner.egraph.number_of_classes()
    );
    let mut applied = BTreeMap::new();
    for it in &runner.iterations {
        for (r, n) in &it.applied {
            *applied.entry(r.to_string()).or_default() += n;
        }
    }
    let eg = &runner.egraph;
    let const_class: HashMap<Id, usize> = const_class
        .into_iter()
        .map(|(c, j)| (eg.find(c), j))
        .collect();
    let local: HashMap<Value, usize> = isl.nodes.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    let leaf_ix: HashMap<Value, usize> = isl
        .leaves
        .iter()
        .enumerate()
        .map(|(j, v)| (*v, j))
        .collect();
    let oref = |o: &Value| match local.get(o) {
        Some(i) => TRef::Orig(*i),
        None => TRef::Leaf(leaf_ix[o]),
    };
    let orig_args: Vec<Vec<TRef>> = isl
        .nodes
        .iter()
        .map(|v| g.operands(*v).iter().map(oref).collect())
        .collect();
    let mut by_class: HashMap<Id, Vec<usize>> = HashMap::new();
    let orig_canon: Vec<Option<Node>> = orig
        .iter()
        .enumerate()
        .map(|(i, n)| {
            by_class
                .entry(eg.find(ids[&isl.nodes[i]]))
                .or_default()
                .push(i);
            n.clone().map(|n| n.map_children(|c| eg.find(c)))
        })
        .collect();
    let ext = Extractor::new(eg, EggCost { eg, model });
    let mut b = TemplateBuilder {
        eg,
        ext: &ext,
        const_class: &const_class,
        by_class: &by_class,
        orig_canon: &orig_canon,
        orig_args: &orig_args,
        memo: HashMap::new(),
        news: Vec::new(),
    };
    let mut roots = Vec::new();
    for &r in &isl.roots {
        match b.build(ids[&isl.nodes[r]]) {
            Some(t) => roots.push((r, t)),
            None => return (None, applied, stop),
        }
    }
    let tpl = Template {
        news: b.news,
        roots,
    };
    // Cost of the original island vs. the extracted DAG, each node counted once.
    let orig_cost = |i: usize| {
        let v = isl.nodes[i];
        let ops = g.operands(v);
        let tys: Vec<&TensorType> = ops.iter().map(|o| g.ty(*o)).collect();
        model.op_cost(g.op(v), g.ty(v), &tys)
    };
    let old: f64 = (0..isl.nodes.len()).map(orig_cost).sum();
    let ty_of = |r: TRef| -> TensorType {
        match r {
            TRef::Leaf(j) => g.ty(isl.leaves[j]).clone(),
            TRef::Orig(i) => g.ty(isl.nodes[i]).clone(),
            TRef::New(k) => tpl.news[k].ty.clone(),
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<TRef> = tpl.roots.iter().map(|(_, t)| *t).collect();
    let mut new = 0.0;
    while let Some(r) = stack.pop() {
        if !seen.insert(r) {
            continue;
        }
        match r {
            TRef::Leaf(_) => {}
            TRef::Orig(i) => {
                new += orig_cost(i);
                stack.extend(orig_args[i].iter().copied());
            }
            TRef::New(k) => {
                let n = &tpl.news[k];
                let tys: Vec<TensorType> = n.args.iter().map(|a| ty_of(*a)).collect();
                let refs: Vec<&TensorType> = tys.iter().collect();
                new += model.op_cost(&n.op, &n.ty, &refs);
                stack.extend(n.args.iter().copied());
            }
        }
    }
    let better = new < old * (1.0 - 1e-9);
    tracing::trace!(target: "lpuc::egg", old, new, better, "island cost");
    (better.then_some(tpl), applied, stop)
}

struct TemplateBuilder<'a, 'e> {
    eg: &'a Eg,
    ext: &'a Extractor<'e, EggCost<'e>, Node, TypeAnalysis>,
    const_class: &'a HashMap<Id, usize>,
    by_class: &'a HashMap<Id, Vec<usize>>,
    orig_canon: &'a [Option<Node>],
    orig_args: &'a [Vec<TRef>],
    memo: HashMap<Id, TRef>,
    news: Vec<TNode>,
}

impl TemplateBuilder<'_, '_> {
    fn build(&mut self, c: Id) -> Option<TRef> {
        let c = self.eg.find(c);
        if let Some(r) = self.memo.get(&c) {
            return Some(*r);
        }
        let node = self.ext.find_best_node(c).clone();
        let r = match &node {
            Node::Leaf(l) => TRef::Leaf(l.0 as usize),
            _ if self.const_class.contains_key(&c) && node.is_leaf() => {
                TRef::Leaf(self.const_class[&c])
            }
            _ => {
                let eg = self.eg;
                let attr = |id: Id| match &eg[id].data {
                    Data::Attr(a) => Some(a.clone()),
                    _ => None,
                };
                let (op, xs, _) = op_of_node(&node, attr)?;
                let args = xs
                    .iter()
                    .map(|x| self.build(*x))
                    .collect::<Option<Vec<_>>>()?;
                let reuse = self.by_class.get(&c).and_then(|cands| {
                    cands
                        .iter()
                        .find(|&&i| {
                            self.orig_canon[i].as_ref() == Some(&node) && self.orig_args[i] == args
                        })
                        .copied()
                });
                match reuse {
                    Some(i) => TRef::Orig(i),
                    None => {
                        let ty = self.eg[c].data.ty()?.clone();
                        self.news.push(TNode { op, ty, args });
                        TRef::New(self.news.len() - 1)
                    }
                }
            }
        };
        self.memo.insert(c, r);
        Some(r)
    }
}

/// Applies a template to one island; returns whether anything changed.
fn instantiate(
    g: &mut Graph,
    isl: &Island,
    t: &Template,
    replaced: &mut HashMap<Value, Value>,
) -> bool {
    let mut news: Vec<Value> = Vec::with_capacity(t.news.len());
    let val = |r: TRef, news: &[Value], replaced: &HashMap<Value, Value>| match r {
        TRef::Leaf(j) => resolve(replaced, isl.leaves[j]),
        TRef::Orig(i) => isl.nodes[i],
        TRef::New(k) => news[k],
    };
    for n in &t.news {
        let args: Vec<Value> = n.args.iter().map(|a| val(*a, &news, replaced)).collect();
        news.push(g.add(n.op.clone(), &args, n.ty.clone()));
    }
    let mut changed = false;
    for (r, tr) in &t.roots {
        let old = isl.nodes[*r];
        let new = val(*tr, &news, replaced);
        if new != old {
            g.replace_all_uses(old, new);
            replaced.insert(old, new);
            changed = true;
        }
    }
    if changed {
        // Reverse topological order: users go before their operands.
        for &v in isl.nodes.iter().rev() {
            if g.contains(v) && g.num_uses(v) == 0 {
                g.remove(v);
            }
        }
        // a constant leaf (causal_mask) the rewrite no longer reads
        for (j, &l) in isl.leaves.iter().enumerate() {
            if isl.const_leaf[j] && g.contains(l) && g.num_uses(l) == 0 {
                g.remove(l);
            }
        }
    }
    changed
}

/// Histogram of op names, for "what did this pass form/remove" statistics.
pub fn op_histogram(g: &Graph) -> BTreeMap<&'static str, i64> {
    let mut h = BTreeMap::new();
    for v in g.values() {
        *h.entry(g.op(v).name()).or_default() += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{TargetKind, TileTarget};
    use lpuc_ir::builder::{build_llama, LlamaConfig};
    use lpuc_ir::graph::WeightSource;

    fn graph(name: &str) -> Graph {
        build_llama(&LlamaConfig::preset(name).unwrap(), WeightSource::None).unwrap()
    }

    fn total_cost(g: &Graph, m: &CostModel) -> f64 {
        g.values()
            .into_iter()
            .filter(|v| island::is_member(g, *v))
            .map(|v| {
                let ops = g.operands(v);
                let tys: Vec<&TensorType> = ops.iter().map(|o| g.ty(*o)).collect();
                m.op_cost(g.op(v), g.ty(v), &tys)
            })
            .sum()
    }

    /// An `.ir` chain of `n` elementwise ops on one activation (`silu`, `add` of the two
    /// previous values, `mul` by the embedding), the shape that made `opt` quadratic.
    pub(crate) fn chain_ir(n: usize) -> String {
        use std::fmt::Write as _;
        let mut s = String::from(
            "graph \"chain\" {\n  sym B <= 1\n  sym P <= 16\n  sym S <= 16\n  weights random(seed = 1)\n  \
             %tok = input \"tokens\" : i32[B, S]\n  %emb = weight \"token_embd.weight\" : q8_0[64, 32]\n  \
             %v0 = tensor.embedding(%emb, %tok) : f32[B, S, 32]\n",
        );
        for i in 1..=n {
            let _ = match i % 3 {
                0 => writeln!(s, "  %v{i} = tensor.silu(%v{}) : f32[B, S, 32]", i - 1),
                1 => writeln!(
                    s,
                    "  %v{i} = tensor.add(%v{}, %v{}) : f32[B, S, 32]",
                    i - 1,
                    i.saturating_sub(2)
                ),
                _ => writeln!(s, "  %v{i} = tensor.mul(%v{}, %v0) : f32[B, S, 32]", i - 1),
            };
        }
        let _ = writeln!(s, "  %out = output \"logits\"(%v{n}) : f32[B, S, 32]\n}}");
        s
    }

    #[test]
    fn a_long_chain_is_cut_into_bounded_islands() {
        let g0 = lpuc_ir::text::parse_and_verify(&chain_ir(5000), "chain.ir").unwrap();
        let isl = island::partition(&g0);
        assert!(
            isl.len() >= 5000 / island::MAX_ISLAND_NODES,
            "{} islands",
            isl.len()
        );
        assert!(isl
            .iter()
            .all(|i| i.nodes.len() <= island::MAX_ISLAND_NODES));
        assert_eq!(isl.iter().map(|i| i.nodes.len()).sum::<usize>(), 5001);
        let m = CostModel::for_target(&TileTarget::of(TargetKind::Cpu));
        for set in [rules::algebra(), rules::dequant_fusion()] {
            let mut g = g0.clone();
            let out = run_rules(&mut g, &set, &m);
            assert!(out.limit_hits.is_empty(), "{:?}", out.limit_hits);
            // Chunks of one chain share shapes: far fewer egg runs than islands.
            assert!(
                out.unique < out.islands,
                "{} of {}",
                out.unique,
                out.islands
            );
            lpuc_ir::verify::verify(&g).unwrap();
        }
    }

    #[test]
    fn identical_blocks_share_one_island_key() {
        let g = graph("llama3-70b");
        let isl = island::partition(&g);
        let mut keys: Vec<&str> = isl.iter().map(|i| i.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(isl.len(), 81, "80 blocks and the embedding");
        assert!(keys.len() <= 3, "{} distinct island shapes", keys.len());
        assert!(
            isl.iter().all(|i| i.nodes.len() < 80),
            "islands stay block-sized"
        );
    }

    #[test]
    fn every_rule_set_lowers_the_cost_on_both_targets() {
        for t in [TargetKind::Cpu, TargetKind::Groq] {
            let m = CostModel::for_target(&TileTarget::of(t));
            let mut g = graph("tiny");
            for set in [
                rules::algebra(),
                rules::dequant_fusion(),
                rules::norm(),
                rules::swiglu(),
                rules::attention(64),
            ] {
                let before = total_cost(&g, &m);
                let out = run_rules(&mut g, &set, &m);
                assert!(out.limit_hits.is_empty(), "{:?}", out.limit_hits);
                g.dead_code_elim();
                let after = total_cost(&g, &m);
                assert!(after <= before, "{t}: {before} -> {after}");
                assert_eq!(after < before, out.changed > 0);
            }
        }
    }
}

//! `plan-buffers`: an execution order, buffer lifetimes over it, and arena offsets.
//!
//! Every non-weight node gets `mem.step` (its position in the chosen order). Every value
//! that needs memory gets `mem.offset` and `mem.size` (bytes, 64-byte aligned) in one arena;
//! `reshape` and `output` alias their operand (same placement, the operand's lifetime
//! extends over their uses), `kv_append` results live in their state (`mem.state`), and
//! weights stay in the weight store.
//!
//! **What the CPU backend needs** (with `target = cpu`; the JIT places every buffer where
//! this plan says and plans nothing itself):
//! - *views*: a `transpose [0, 2, 1, 3]` (the head view of a projection, or the token view
//!   of an attention result) is a strided view for every CPU kernel, so it gets
//!   `mem.view = 1` and aliases its operand like `reshape` does;
//! - *quantized activations*: a buffer read by a `qmatmul` against a block-quantized
//!   weight also holds its q8 form (int8 values, per-32 f32 scales, per-32 sums, each
//!   64-byte aligned) after its f32 rows; `mem.size` covers both and
//!   `mem.q8 = [values, scales, sums]` gives the three offsets. Its lifetime is the f32
//!   buffer's, which already ends at the last `qmatmul` reading it;
//! - *the K-cache layout*: a `kv_append` whose result a `flash_attention` reads as K gets
//!   `mem.layout = k_tiles16` (`[KVH, P/16, D, 16]`, 16 keys' scores are one FMA chain);
//!   a cache read both as K and as V is refused;
//! - *one section per shared input*: `qmatmul`s reading the same activation are scheduled
//!   back to back (Q/K/V, gate/up), so a backend runs them as one parallel section over
//!   one quantized input.
//!
//! **Sizes and symbols.** Sizes are evaluated at one binding of `B`, `P`, `S`: by default
//! each symbol's bound (a plan valid for every call), or what the options say:
//! `plan-buffers{s=1}` plans a decode program, `plan-buffers{s=512}` a prefill of up to 512
//! tokens. Because every size is non-decreasing in every symbol, a plan made at `S = s` is
//! valid for any call with `S <= s` (each buffer has room for its largest case, and the
//! offsets do not move). A runtime checks a call against the plan by evaluating each
//! buffer's type and comparing with `mem.size`. `P` defaults to its bound even with `s`
//! given, so a plan never depends on how full the cache is.
//!
//! **Order.** Three schedules are tried and the lowest peak is kept: the topological order
//! the printer uses, a depth-first post-order from the outputs (finishes one chain before
//! starting the next), and a greedy list schedule that always runs the ready node that
//! grows live memory least (frees the most). Ties prefer the most recently readied node.
//!
//! **Offsets.** For each order two first-fit placements are tried — largest buffer first
//! (the "greedy by size" of Pisarchyk & Lee 2020, TFLite's planner) and earliest start
//! first — and the lower peak is kept.
//!
//! **Report.** The peak is reported beside the naive sum (every buffer its own memory) and
//! the max-live lower bound of the chosen order (the most bytes live at any one step: no
//! placement can do better for that order).

use lpuc_ir::op::{Attr, Op};
use lpuc_ir::types::{Bindings, Sym};
use lpuc_ir::{Graph, Value};
use std::collections::{HashMap, HashSet};

use crate::pass::{Pass, PassContext};
use crate::phase::{alias_root, Phase};

/// Buffers start on cache-line (and AVX-512 vector) boundaries.
pub const ALIGN: u64 = 64;

pub struct PlanBuffers {
    pub b: Option<u64>,
    pub p: Option<u64>,
    pub s: Option<u64>,
}

/// A memory plan for one graph.
#[derive(Clone, Debug)]
pub struct Plan {
    pub order_name: &'static str,
    pub order: Vec<Value>,
    /// Buffer root → (offset, size).
    pub place: HashMap<Value, (u64, u64)>,
    /// Buffer root → absolute offsets of its q8 companion `[values, scales, sums]`.
    pub q8: HashMap<Value, [u64; 3]>,
    pub peak: u64,
    pub naive: u64,
    pub lower_bound: u64,
    pub binding: Bindings,
}

/// The binding a plan is made for; errors name the missing bound or the bad option.
pub fn binding(
    g: &Graph,
    b: Option<u64>,
    p: Option<u64>,
    s: Option<u64>,
) -> Result<Bindings, String> {
    let pick = |sym: Sym, given: Option<u64>| -> Result<u64, String> {
        let bound = g.syms.bound(sym);
        let n = sym.name();
        let opt = n.to_lowercase();
        match (given, bound) {
            (Some(x), Some(bd)) if x > bd => Err(format!("`{opt}={x}` exceeds the bound of {n} ({bd})")),
            (Some(x), _) => Ok(x),
            (None, Some(bd)) => Ok(bd),
            (None, None) => Err(format!(
                "symbol {n} has no bound: give it one in the graph (`sym {n} <= N`) or plan for a size (`plan-buffers{{{opt}=N}}`)"
            )),
        }
    };
    Ok(Bindings {
        b: pick(Sym::B, b)?,
        p: pick(Sym::P, p)?,
        s: pick(Sym::S, s)?,
    })
}

/// Bytes of the q8 form of `rows` rows of `k` f32: values, scales, sums (64-byte aligned).
pub fn q8_parts(rows: u64, k: u64) -> Option<[u64; 3]> {
    let al = |x: u64| x.checked_add(ALIGN - 1).map(|y| y / ALIGN * ALIGN);
    let vals = al(rows.checked_mul(k)?)?;
    let scales = al(rows.checked_mul(k / 32)?.checked_mul(4)?)?;
    Some([vals, scales, scales])
}

/// Whether `v`'s activation operand is quantized to q8 by the CPU backend.
fn reads_q8(g: &Graph, v: Value) -> bool {
    matches!(g.op(v), Op::QMatmul)
        && g.operand(v, 1)
            .is_some_and(|w| g.ty(w).dtype.is_quantized())
}

struct Problem {
    /// Non-weight nodes in topological order.
    nodes: Vec<Value>,
    root: HashMap<Value, Value>,
    /// Arena buffers (roots) and their sizes.
    size: HashMap<Value, u64>,
    /// Buffer roots each node reads (distinct).
    reads: HashMap<Value, Vec<Value>>,
    /// Buffers an output aliases: live to the end.
    pinned: HashSet<Value>,
    /// Buffer roots with a q8 companion: (f32 bytes, [values, scales, sums] bytes).
    q8: HashMap<Value, (u64, [u64; 3])>,
}

fn problem(g: &Graph, bind: &Bindings, cpu: bool) -> Result<Problem, String> {
    let nodes: Vec<Value> = g
        .sorted_values()
        .into_iter()
        .filter(|v| !matches!(g.op(*v), Op::Weight { .. }))
        .collect();
    let mut root = HashMap::new();
    let mut size = HashMap::new();
    let mut reads = HashMap::new();
    let mut pinned = HashSet::new();
    let mut q8 = HashMap::new();
    let num = g.numbering();
    for &v in &nodes {
        let r = alias_root(g, v);
        root.insert(v, r);
        if r == v && !matches!(g.op(v), Op::KvAppend { .. }) {
            let t = g.ty(v);
            let n = t
                .eval_shape(bind)
                .and_then(|s| s.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)))
                .ok_or_else(|| format!("%{}: size of {t} overflows", num[&v]))?;
            let bytes = t.dtype.bytes_for(n).ok_or_else(|| {
                format!(
                    "%{}: {t} is not a whole number of {} blocks",
                    num[&v], t.dtype
                )
            })?;
            let mut bytes = bytes
                .max(1)
                .div_ceil(ALIGN)
                .checked_mul(ALIGN)
                .ok_or("buffer size overflows")?;
            // The row width a qmatmul reads this buffer with (through its views).
            let q8_k = if cpu {
                std::iter::once(v)
                    .chain(aliases_of(g, v))
                    .flat_map(|a| g.users(a).into_iter().map(move |u| (a, u)))
                    .find(|&(a, u)| reads_q8(g, u) && g.operand(u, 0) == Some(a))
                    .map(|(a, _)| g.ty(a).shape.last().and_then(|d| d.as_const()).unwrap_or(0))
            } else {
                None
            };
            if let Some(k) = q8_k {
                if k == 0 || k % 32 != 0 {
                    return Err(format!(
                        "%{}: a qmatmul input row of {k} is not a whole number of 32-element q8 blocks",
                        num[&v]
                    ));
                }
                let parts = q8_parts(n / k, k).ok_or("buffer size overflows")?;
                let f32_bytes = bytes;
                bytes = parts
                    .iter()
                    .try_fold(bytes, |a, &b| a.checked_add(b))
                    .ok_or("buffer size overflows")?;
                q8.insert(v, (f32_bytes, parts));
            }
            size.insert(v, bytes);
        }
        if matches!(g.op(v), Op::Output { .. }) {
            pinned.insert(r);
        }
        let mut rs: Vec<Value> = g.operands(v).iter().map(|o| alias_root(g, *o)).collect();
        rs.sort_unstable();
        rs.dedup();
        reads.insert(v, rs);
    }
    Ok(Problem {
        nodes,
        root,
        size,
        reads,
        pinned,
        q8,
    })
}

/// Every value whose buffer is `v`'s (transitively through views).
fn aliases_of(g: &Graph, v: Value) -> Vec<Value> {
    let mut out = vec![];
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        for u in g.users(x) {
            if alias_root(g, u) == v && !out.contains(&u) {
                out.push(u);
                stack.push(u);
            }
        }
    }
    out
}

/// Moves every `qmatmul` that reads the same activation as an earlier one to right after
/// it (valid: its only non-weight operand is already computed there), so a backend runs
/// them as one section.
fn group_siblings(g: &Graph, order: Vec<Value>) -> Vec<Value> {
    // The qmatmuls of each activation, in schedule order (weights are their only other
    // operands, so any of them may run as soon as the first one can).
    let mut siblings: HashMap<Value, Vec<Value>> = HashMap::new();
    for &v in &order {
        let weight_only = g
            .operands(v)
            .iter()
            .skip(1)
            .all(|o| matches!(g.op(*o), Op::Weight { .. }));
        if let (Op::QMatmul, true, Some(x)) = (g.op(v), weight_only, g.operand(v, 0)) {
            siblings.entry(x).or_default().push(v);
        }
    }
    let mut placed: HashSet<Value> = HashSet::new();
    let mut out = Vec::with_capacity(order.len());
    for v in order {
        if !placed.insert(v) {
            continue;
        }
        out.push(v);
        let group = g.operand(v, 0).and_then(|x| siblings.get(&x));
        if let Some(group) = group.filter(|gr| gr.first() == Some(&v)) {
            for &u in &group[1..] {
                if placed.insert(u) {
                    out.push(u);
                }
            }
        }
    }
    out
}

fn dfs_order(g: &Graph, p: &Problem) -> Vec<Value> {
    let member: HashSet<Value> = p.nodes.iter().copied().collect();
    let mut done: HashSet<Value> = HashSet::new();
    let mut order = Vec::with_capacity(p.nodes.len());
    let starts: Vec<Value> = p
        .nodes
        .iter()
        .copied()
        .filter(|v| matches!(g.op(*v), Op::Output { .. }))
        .chain(p.nodes.iter().copied())
        .collect();
    for s in starts {
        if done.contains(&s) {
            continue;
        }
        // iterative post-order: (node, next operand index)
        let mut stack: Vec<(Value, usize)> = vec![(s, 0)];
        let mut on_stack: HashSet<Value> = HashSet::from([s]);
        while let Some((v, i)) = stack.pop() {
            let ops = g.operands(v);
            match ops.get(i) {
                Some(&o) => {
                    stack.push((v, i + 1));
                    if member.contains(&o) && !done.contains(&o) && on_stack.insert(o) {
                        stack.push((o, 0));
                    }
                }
                None => {
                    done.insert(v);
                    order.push(v);
                }
            }
        }
    }
    order
}

fn greedy_order(g: &Graph, p: &Problem) -> Vec<Value> {
    let pos: HashMap<Value, usize> = p.nodes.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    let mut waiting: HashMap<Value, usize> = HashMap::new();
    let mut users: HashMap<Value, Vec<Value>> = HashMap::new();
    for &v in &p.nodes {
        let mut ops: Vec<Value> = g
            .operands(v)
            .into_iter()
            .filter(|o| pos.contains_key(o))
            .collect();
        ops.sort_unstable();
        ops.dedup();
        waiting.insert(v, ops.len());
        for o in ops {
            users.entry(o).or_default().push(v);
        }
    }
    let mut remaining: HashMap<Value, usize> = HashMap::new();
    for &v in &p.nodes {
        for r in &p.reads[&v] {
            *remaining.entry(*r).or_default() += 1;
        }
    }
    // ready nodes with the tick they became ready
    let mut ready: Vec<(Value, usize)> = p
        .nodes
        .iter()
        .filter(|v| waiting[v] == 0)
        .map(|v| (*v, 0))
        .collect();
    let mut order = Vec::with_capacity(p.nodes.len());
    let mut tick = 0;
    while !ready.is_empty() {
        let score = |v: Value| -> i128 {
            let alloc = if p.root[&v] == v {
                p.size.get(&v).copied().unwrap_or(0)
            } else {
                0
            } as i128;
            let freed: i128 = p.reads[&v]
                .iter()
                .filter(|r| remaining.get(r) == Some(&1) && !p.pinned.contains(r))
                .map(|r| p.size.get(r).copied().unwrap_or(0) as i128)
                .sum();
            alloc - freed
        };
        let (bi, _) = ready
            .iter()
            .enumerate()
            .min_by_key(|(_, (v, t))| (score(*v), std::cmp::Reverse(*t), pos[v]))
            .expect("ready is not empty");
        let (v, _) = ready.swap_remove(bi);
        order.push(v);
        tick += 1;
        for r in &p.reads[&v] {
            if let Some(c) = remaining.get_mut(r) {
                *c -= 1;
            }
        }
        if let Some(us) = users.get(&v) {
            for u in us {
                let w = waiting.get_mut(u).expect("user is a node");
                *w -= 1;
                if *w == 0 {
                    ready.push((*u, tick));
                }
            }
        }
    }
    order
}

/// Live ranges `[first step, last step]` of every arena buffer under `order`.
fn live_ranges(p: &Problem, order: &[Value]) -> HashMap<Value, (usize, usize)> {
    let end = order.len();
    let mut live: HashMap<Value, (usize, usize)> = HashMap::new();
    for (t, v) in order.iter().enumerate() {
        let r = p.root[v];
        if p.size.contains_key(&r) {
            let e = live.entry(r).or_insert((t, t));
            e.1 = e.1.max(t);
        }
        for r in &p.reads[v] {
            if let Some(e) = live.get_mut(r) {
                e.1 = e.1.max(t);
            }
        }
    }
    for r in &p.pinned {
        if let Some(e) = live.get_mut(r) {
            e.1 = end;
        }
    }
    live
}

fn lower_bound(p: &Problem, live: &HashMap<Value, (usize, usize)>, steps: usize) -> u64 {
    let mut delta = vec![0i128; steps + 2];
    for (r, (a, b)) in live {
        let s = p.size[r] as i128;
        delta[*a] += s;
        delta[*b + 1] -= s;
    }
    let mut cur = 0i128;
    let mut best = 0i128;
    for d in delta {
        cur += d;
        best = best.max(cur);
    }
    best as u64
}

/// First-fit placement in the given buffer order; returns offsets and the peak.
fn place(
    p: &Problem,
    live: &HashMap<Value, (usize, usize)>,
    bufs: &[Value],
) -> (HashMap<Value, u64>, u64) {
    let mut placed: Vec<(usize, usize, u64, u64)> = Vec::with_capacity(bufs.len());
    let mut off_of = HashMap::with_capacity(bufs.len());
    let mut peak = 0;
    for &b in bufs {
        let (s, e) = live[&b];
        let size = p.size[&b];
        let mut conflicts: Vec<(u64, u64)> = placed
            .iter()
            .filter(|x| x.0 <= e && s <= x.1)
            .map(|x| (x.2, x.3))
            .collect();
        conflicts.sort_unstable();
        let mut off = 0u64;
        for (o, sz) in conflicts {
            if off + size <= o {
                break;
            }
            off = off.max(o + sz);
        }
        placed.push((s, e, off, size));
        off_of.insert(b, off);
        peak = peak.max(off + size);
    }
    (off_of, peak)
}

/// Plans `g` at `bind` for a target that is not the CPU: the best of three orders × two
/// placements.
pub fn plan(g: &Graph, bind: Bindings) -> Result<Plan, String> {
    plan_for(g, bind, false)
}

/// Plans `g` at `bind`; with `cpu`, with what the CPU backend needs (module header).
pub fn plan_for(g: &Graph, bind: Bindings, cpu: bool) -> Result<Plan, String> {
    let p = problem(g, &bind, cpu)?;
    let naive: u64 = p.size.values().sum();
    let orders: [(&'static str, Vec<Value>); 3] = [
        ("topological", p.nodes.clone()),
        ("depth-first", dfs_order(g, &p)),
        ("greedy-min-live", greedy_order(g, &p)),
    ];
    let mut best: Option<Plan> = None;
    for (name, order) in orders {
        let order = group_siblings(g, order);
        if order.len() != p.nodes.len() {
            return Err(format!(
                "the {name} schedule covers {} of {} nodes (a cycle?)",
                order.len(),
                p.nodes.len()
            ));
        }
        let live = live_ranges(&p, &order);
        let lb = lower_bound(&p, &live, order.len());
        let mut by_size: Vec<Value> = live.keys().copied().collect();
        by_size.sort_by_key(|b| (std::cmp::Reverse(p.size[b]), live[b].0, b.index()));
        let mut by_start: Vec<Value> = live.keys().copied().collect();
        by_start.sort_by_key(|b| (live[b].0, std::cmp::Reverse(p.size[b]), b.index()));
        for bufs in [by_size, by_start] {
            let (offs, peak) = place(&p, &live, &bufs);
            if best.as_ref().map_or(true, |b| peak < b.peak) {
                best = Some(Plan {
                    order_name: name,
                    order: order.clone(),
                    place: offs.iter().map(|(b, o)| (*b, (*o, p.size[b]))).collect(),
                    q8: p
                        .q8
                        .iter()
                        .filter_map(|(b, (f, parts))| {
                            let o = offs.get(b)? + f;
                            Some((*b, [o, o + parts[0], o + parts[0] + parts[1]]))
                        })
                        .collect(),
                    peak,
                    naive,
                    lower_bound: lb,
                    binding: bind,
                });
            }
        }
    }
    best.ok_or_else(|| "nothing to plan".to_string())
}

/// Removes every `mem.*` annotation (an earlier plan).
pub fn clear(g: &mut Graph) {
    for v in g.values() {
        g.node_mut(v).annot.retain(|k, _| !k.starts_with("mem."));
    }
}

/// Marks the CPU backend's views and K-cache layouts (module header); errors name a cache
/// read both as K and as V.
pub fn mark_cpu_layouts(g: &mut Graph) -> Result<(), String> {
    let num = g.numbering();
    for v in g.sorted_values() {
        if matches!(g.op(v), Op::Transpose { perm } if perm == &[0, 2, 1, 3]) {
            g.node_mut(v).annot.insert("mem.view".into(), Attr::Int(1));
        }
    }
    let (mut as_k, mut as_v) = (HashSet::new(), HashSet::new());
    for v in g.sorted_values() {
        if let Op::FlashAttention { .. } = g.op(v) {
            as_k.extend(g.operand(v, 1));
            as_v.extend(g.operand(v, 2));
        }
    }
    for k in &as_k {
        if as_v.contains(k) {
            return Err(format!(
                "%{}: cache read both as K and as V by flash_attention (one cache has one layout)",
                num[k]
            ));
        }
        if matches!(g.op(*k), Op::KvAppend { .. }) {
            g.node_mut(*k)
                .annot
                .insert("mem.layout".into(), Attr::Ident("k_tiles16".into()));
        }
    }
    Ok(())
}

/// Writes a plan into the graph's annotations (after [`clear`]).
pub fn annotate(g: &mut Graph, plan: &Plan) {
    for (t, &v) in plan.order.iter().enumerate() {
        let r = alias_root(g, v);
        let state = match g.op(r) {
            Op::KvAppend { cache } => Some(cache.clone()),
            _ => None,
        };
        let pl = plan.place.get(&r).copied();
        let q8 = (r == v).then(|| plan.q8.get(&r).copied()).flatten();
        let is_input = matches!(g.op(v), Op::Input { .. });
        let a = &mut g.node_mut(v).annot;
        if is_input {
            // The binding the sizes hold for: a backend serves calls up to these sizes.
            let b = &plan.binding;
            a.insert(
                "mem.bind".into(),
                Attr::Ints(vec![b.b as i64, b.p as i64, b.s as i64]),
            );
        }
        if let Some(q) = q8 {
            a.insert(
                "mem.q8".into(),
                Attr::Ints(q.iter().map(|&x| x as i64).collect()),
            );
        }
        a.insert("mem.step".into(), Attr::Int(t as i64));
        if let Some(c) = state {
            a.insert("mem.state".into(), Attr::Str(c));
        } else if let Some((off, size)) = pl {
            a.insert("mem.offset".into(), Attr::Int(off as i64));
            a.insert("mem.size".into(), Attr::Int(size as i64));
        }
    }
}

fn mb(x: u64) -> String {
    format!("{:.3} MiB", x as f64 / (1u64 << 20) as f64)
}

impl Pass for PlanBuffers {
    fn name(&self) -> &'static str {
        "plan-buffers"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        let bind = binding(g, self.b, self.p, self.s)?;
        let before = g.clone();
        clear(g);
        let cpu = cx.target == crate::target::TargetKind::Cpu;
        if cpu {
            mark_cpu_layouts(g)?;
        }
        let plan = plan_for(g, bind, cpu)?;
        annotate(g, &plan);
        cx.stat("buffers", plan.place.len() as i64);
        cx.stat("peak bytes", plan.peak as i64);
        cx.stat("naive bytes (sum of all buffers)", plan.naive as i64);
        cx.stat("max-live lower bound bytes", plan.lower_bound as i64);
        cx.stat(&format!("order chosen: {}", plan.order_name), 1);
        let ratio = plan.peak as f64 / plan.lower_bound.max(1) as f64;
        cx.notes.insert(
            "plan-buffers".into(),
            format!(
                "at B={} P={} S={}: peak {} = {ratio:.4} × max-live lower bound {}; naive sum {} ({} buffers, {} order)",
                bind.b,
                bind.p,
                bind.s,
                mb(plan.peak),
                mb(plan.lower_bound),
                mb(plan.naive),
                plan.place.len(),
                plan.order_name
            ),
        );
        tracing::info!(target: "lpuc::plan", peak = plan.peak, lower_bound = plan.lower_bound, naive = plan.naive, order = plan.order_name, "memory plan");
        Ok(*g != before)
    }
    fn establishes(&self) -> Option<Phase> {
        Some(Phase::Planned)
    }
}

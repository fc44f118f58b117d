//! Phase invariants: what must hold once a phase-establishing pass has run.
//!
//! - [`Phase::Tiled`] (after `tile`): every `matmul`, `qmatmul` and `flash_attention`
//!   carries `tile.sizes` (`[m, n, k]` for matmuls, `[q_rows, kv_rows]` for attention) of
//!   positive integers; a `qmatmul`'s `k` tile is a whole number of its weight's quant
//!   blocks; a `flash_attention`'s `block` equals its key tile.
//! - [`Phase::Planned`] (after `plan-buffers`): every non-weight node has a distinct
//!   `mem.step`, and steps follow dependencies; every non-weight value has
//!   `mem.offset`/`mem.size` or lives in a state (`mem.state`); aliases (`reshape`,
//!   `output`) share their operand's placement; and no two buffers that are live at the
//!   same step overlap in the arena.
//!
//! Errors name the value; the manager turns them into
//! `broken graph after pass #N NAME at %V: …`.

use lpuc_ir::op::{Attr, Op};
use lpuc_ir::{Graph, Value};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Tiled,
    Planned,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Tiled => "tiled",
            Phase::Planned => "memory-planned",
        }
    }

    pub fn check(self, g: &Graph) -> Result<(), (Option<Value>, String)> {
        match self {
            Phase::Tiled => check_tiled(g),
            Phase::Planned => check_planned(g),
        }
    }
}

fn ints(g: &Graph, v: Value, key: &str) -> Option<Vec<i64>> {
    match g.node(v).annot.get(key) {
        Some(Attr::Ints(x)) => Some(x.clone()),
        _ => None,
    }
}

fn int(g: &Graph, v: Value, key: &str) -> Option<i64> {
    match g.node(v).annot.get(key) {
        Some(Attr::Int(x)) => Some(*x),
        _ => None,
    }
}

fn check_tiled(g: &Graph) -> Result<(), (Option<Value>, String)> {
    for v in g.sorted_values() {
        let op = g.op(v);
        let want = match op {
            Op::Matmul | Op::QMatmul => 3,
            Op::FlashAttention { .. } => 2,
            _ => continue,
        };
        let name = op.name();
        let t = ints(g, v, "tile.sizes")
            .ok_or_else(|| (Some(v), format!("{name} is not tiled (no `tile.sizes`)")))?;
        if t.len() != want || t.iter().any(|&x| x <= 0) {
            return Err((
                Some(v),
                format!(
                    "{name} has `tile.sizes = {}`; expected {want} positive sizes",
                    Attr::Ints(t)
                ),
            ));
        }
        if let Op::QMatmul = op {
            let w = g.operand(v, 1).map(|w| g.ty(w).dtype);
            if let (Some(dt), Some(Attr::Ident(tgt))) = (w, g.node(v).annot.get("tile.target")) {
                if tgt == "cpu" && t[2] as u64 % dt.block_elems() != 0 {
                    return Err((
                        Some(v),
                        format!(
                            "qmatmul k tile {} is not a whole number of {dt} blocks ({})",
                            t[2],
                            dt.block_elems()
                        ),
                    ));
                }
            }
        }
        if let Op::FlashAttention { block, .. } = op {
            if i64::from(*block) != t[1] {
                return Err((
                    Some(v),
                    format!(
                        "flash_attention block {block} differs from its key tile {}",
                        t[1]
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The value whose buffer `v` uses: `reshape`, `output` and nodes marked `mem.view` (the
/// CPU backend's strided views, see `plan-buffers`) alias their operand.
pub fn alias_root(g: &Graph, mut v: Value) -> Value {
    while matches!(g.op(v), Op::Reshape | Op::Output { .. })
        || g.node(v).annot.contains_key("mem.view")
    {
        match g.operand(v, 0) {
            Some(o) => v = o,
            None => break,
        }
    }
    v
}

fn check_planned(g: &Graph) -> Result<(), (Option<Value>, String)> {
    let order = g.sorted_values();
    let mut step: HashMap<Value, i64> = HashMap::new();
    let mut by_step: HashMap<i64, Value> = HashMap::new();
    for &v in &order {
        if matches!(g.op(v), Op::Weight { .. }) {
            continue;
        }
        let s = int(g, v, "mem.step")
            .ok_or_else(|| (Some(v), format!("{} has no `mem.step`", g.op(v).name())))?;
        if let Some(_other) = by_step.insert(s, v) {
            return Err((Some(v), format!("`mem.step = {s}` is used twice")));
        }
        step.insert(v, s);
    }
    for &v in &order {
        let Some(&s) = step.get(&v) else { continue };
        for o in g.operands(v) {
            if let Some(&so) = step.get(&o) {
                if so >= s {
                    return Err((
                        Some(v),
                        format!("runs at step {s} but its operand runs at step {so}"),
                    ));
                }
            }
        }
    }
    // placement of every buffer root, and its live range [def, last use]
    let n_steps = step.values().max().copied().unwrap_or(0) + 1;
    let mut live: HashMap<Value, (i64, i64)> = HashMap::new();
    for &v in &order {
        let Some(&s) = step.get(&v) else { continue };
        let r = alias_root(g, v);
        if matches!(g.op(r), Op::Weight { .. }) {
            continue;
        }
        let e = live.entry(r).or_insert((s, s));
        e.0 = e.0.min(s);
        e.1 = e.1.max(s);
        if matches!(g.op(v), Op::Output { .. }) {
            e.1 = n_steps;
        }
        for o in g.operands(v) {
            let ro = alias_root(g, o);
            if let Some(e) = live.get_mut(&ro) {
                e.1 = e.1.max(s);
            }
        }
    }
    let mut bufs: Vec<(i64, i64, i64, i64, Value)> = Vec::new();
    for &v in &order {
        if matches!(g.op(v), Op::Weight { .. }) {
            continue;
        }
        let r = alias_root(g, v);
        if matches!(g.op(r), Op::Weight { .. }) {
            continue;
        }
        if g.node(v).annot.contains_key("mem.state") {
            continue;
        }
        let off = int(g, v, "mem.offset");
        let size = int(g, v, "mem.size");
        let (Some(off), Some(size)) = (off, size) else {
            return Err((
                Some(v),
                format!(
                    "{} has no `mem.offset`/`mem.size` (nor `mem.state`)",
                    g.op(v).name()
                ),
            ));
        };
        if off < 0 || size <= 0 {
            return Err((Some(v), format!("bad placement offset {off}, size {size}")));
        }
        if r != v {
            if (int(g, r, "mem.offset"), int(g, r, "mem.size")) != (Some(off), Some(size)) {
                return Err((
                    Some(v),
                    format!(
                        "{} aliases its operand but is placed elsewhere",
                        g.op(v).name()
                    ),
                ));
            }
            continue;
        }
        let (a, b) = live[&r];
        bufs.push((a, b, off, size, v));
    }
    // sweep: buffers sorted by start; compare each with the ones still live
    bufs.sort();
    let mut active: Vec<(i64, i64, i64, i64, Value)> = Vec::new();
    for b in bufs {
        active.retain(|x| x.1 >= b.0);
        for x in &active {
            if x.2 < b.2 + b.3 && b.2 < x.2 + x.3 {
                let num = g.numbering();
                return Err((
                    Some(b.4),
                    format!(
                        "its buffer [{}, {}) overlaps the buffer [{}, {}) of %{}, and both are live at step {}",
                        b.2,
                        b.2 + b.3,
                        x.2,
                        x.2 + x.3,
                        num[&x.4],
                        b.0
                    ),
                ));
            }
        }
        active.push(b);
    }
    Ok(())
}

//! The verifier: shape and dtype inference, and every structural invariant of a graph.
//!
//! A graph is well formed when all of these hold (each has a negative test):
//! 1. **acyclic** — values on a cycle are reported;
//! 2. **arity** — every op has the number of operands its definition takes;
//! 3. **types** — every node's declared result type equals the type inferred from its
//!    operands (`reshape` keeps dtype and element count, checked as polynomials in `B,P,S`);
//!    operand dtypes and shapes satisfy the op's rule (see [`infer_type`]);
//! 4. **names** — `input`, `weight` and `output` names are unique per kind; there is at least
//!    one `output`; nothing uses an `output`;
//! 5. **weights** — constant shapes, and quantized weights have an innermost dim that is a
//!    whole number of blocks;
//! 6. **state** — each declared state has a float dtype and exactly one `P` axis, its other
//!    dims free of `P` and `S`; each is appended by exactly one `kv_append`, and every
//!    `kv_append` names a declared state;
//! 7. **annotations** — annotation keys are dialect-qualified (contain a `.`);
//! 8. **symbol bounds** — bounds of `P` and `S` are at most [`crate::builder::MAX_CTX`], of
//!    `B` at most [`crate::builder::MAX_BATCH`] (so every size derived from them fits 64 bits).
//!
//! Errors name the value (in printed numbering) and its op.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::dtype::DType;
use crate::graph::{Graph, Value};
use crate::op::Op;
use crate::types::{Dim, Sym, TensorType};

/// What an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum At {
    Value(Value),
    State(String),
    Graph,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    pub at: At,
    /// Fully formatted, e.g. `%12 = tensor.matmul: contraction dims differ: 576 vs 192`.
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for VerifyError {}

/// All errors of one verification, `Display`ed one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyErrors {}

fn f32_only(what: &str, t: &TensorType) -> Result<(), String> {
    if t.dtype == DType::F32 {
        Ok(())
    } else {
        Err(format!("{what} must be f32, found {t}"))
    }
}

fn rank_at_least(what: &str, t: &TensorType, r: usize) -> Result<(), String> {
    if t.rank() >= r {
        Ok(())
    } else {
        Err(format!("{what} must have rank >= {r}, found {t}"))
    }
}

fn rank_exactly(what: &str, t: &TensorType, r: usize) -> Result<(), String> {
    if t.rank() == r {
        Ok(())
    } else {
        Err(format!("{what} must have rank {r}, found {t}"))
    }
}

/// Numpy-style broadcast of two shapes (a dim broadcasts only if it is the constant 1).
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    let mut out = vec![Dim::c(1); n];
    for i in 0..n {
        let da = if i < n - a.len() {
            Dim::c(1)
        } else {
            a[i - (n - a.len())]
        };
        let db = if i < n - b.len() {
            Dim::c(1)
        } else {
            b[i - (n - b.len())]
        };
        out[i] = if da == db {
            da
        } else if da == Dim::c(1) {
            db
        } else if db == Dim::c(1) {
            da
        } else {
            return None;
        };
    }
    Some(out)
}

fn matmul_type(a: &TensorType, b: &TensorType, bname: &str) -> Result<TensorType, String> {
    rank_at_least("lhs", a, 2)?;
    if b.rank() != 2 && b.rank() != a.rank() {
        return Err(format!(
            "{bname} must have rank 2 or the lhs rank {}, found {b}",
            a.rank()
        ));
    }
    let k = a.shape[a.rank() - 1];
    let kb = b.shape[b.rank() - 1];
    if k != kb {
        return Err(format!("contraction dims differ: lhs {a} has K = {k}, {bname} {b} has K = {kb} (matmul is a·bᵀ)"));
    }
    if b.rank() == a.rank() && a.shape[..a.rank() - 2] != b.shape[..b.rank() - 2] {
        return Err(format!("batch dims differ: {a} vs {b}"));
    }
    let mut shape = a.shape[..a.rank() - 1].to_vec();
    shape.push(b.shape[b.rank() - 2]);
    Ok(TensorType::new(DType::F32, shape))
}

/// The result type of `op` applied to operands of types `ops`, or why it is ill-typed.
/// `Ok(None)` for ops whose result type is declared rather than inferred (`input`, `weight`,
/// `reshape`); [`verify`] checks those separately.
pub fn infer_type(op: &Op, ops: &[&TensorType], g: &Graph) -> Result<TensorType, String> {
    infer_opt(op, ops, g)?
        .ok_or_else(|| format!("`{}` has a declared type, not an inferred one", op.name()))
}

pub fn infer_opt(op: &Op, ops: &[&TensorType], g: &Graph) -> Result<Option<TensorType>, String> {
    if !op.arity().accepts(ops.len()) {
        return Err(format!(
            "takes {} operand(s), found {}",
            op.arity(),
            ops.len()
        ));
    }
    let t = match op {
        Op::Input { .. } | Op::Weight { .. } | Op::Reshape => return Ok(None),
        Op::Output { .. } => ops[0].clone(),
        Op::Embedding => {
            let (table, ids) = (ops[0], ops[1]);
            rank_exactly("the table", table, 2)?;
            if ids.dtype != DType::I32 {
                return Err(format!("ids must be i32, found {ids}"));
            }
            let mut shape = ids.shape.clone();
            shape.push(table.shape[1]);
            TensorType::new(DType::F32, shape)
        }
        Op::RmsNorm { eps } => {
            let x = ops[0];
            f32_only("input", x)?;
            rank_at_least("input", x, 1)?;
            if !(eps.is_finite() && *eps >= 0.0) {
                return Err(format!("eps must be finite and >= 0, found {eps}"));
            }
            if let Some(w) = ops.get(1) {
                f32_only("scale", w)?;
                if w.shape.len() != 1 || w.shape[0] != x.shape[x.rank() - 1] {
                    return Err(format!(
                        "scale must be [{}], found {w}",
                        x.shape[x.rank() - 1]
                    ));
                }
            }
            x.clone()
        }
        Op::Matmul => {
            f32_only("lhs", ops[0])?;
            // An f16 rhs (an f16 KV cache read by attention) widens exactly.
            if ops[1].dtype != DType::F16 {
                f32_only("rhs", ops[1])?;
            }
            matmul_type(ops[0], ops[1], "rhs")?
        }
        Op::QMatmul => {
            f32_only("lhs", ops[0])?;
            let w = ops[1];
            if w.dtype.is_int() {
                return Err(format!(
                    "weight must be a float or quantized dtype, found {w}"
                ));
            }
            rank_exactly("weight", w, 2)?;
            matmul_type(ops[0], w, "weight")?
        }
        Op::Dequant => ops[0].with_dtype(DType::F32),
        Op::Rope { theta, dims, .. } => {
            let x = ops[0];
            f32_only("input", x)?;
            rank_exactly("input [B, S, H, D]", x, 4)?;
            let d = x.shape[3]
                .as_const()
                .ok_or_else(|| format!("head dim must be constant, found {x}"))?;
            if *dims == 0 || dims % 2 != 0 || u64::from(*dims) > d {
                return Err(format!(
                    "rotary dims must be even and in 2..={d}, found {dims}"
                ));
            }
            if !(theta.is_finite() && *theta > 0.0) {
                return Err(format!("theta must be finite and > 0, found {theta}"));
            }
            x.clone()
        }
        Op::Transpose { perm } => {
            let x = ops[0];
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank() {
                return Err(format!(
                    "perm {perm:?} has {} entries for rank {}",
                    perm.len(),
                    x.rank()
                ));
            }
            for &p in perm {
                match seen.get_mut(p as usize) {
                    Some(s) if !*s => *s = true,
                    _ => {
                        return Err(format!(
                            "perm {perm:?} is not a permutation of 0..{}",
                            x.rank()
                        ))
                    }
                }
            }
            TensorType::new(x.dtype, perm.iter().map(|&p| x.shape[p as usize]).collect())
        }
        Op::RepeatKv { n_rep } => {
            let x = ops[0];
            rank_exactly("input [B, KVH, T, D]", x, 4)?;
            if *n_rep == 0 {
                return Err("n_rep must be >= 1".into());
            }
            let mut shape = x.shape.clone();
            shape[1] = shape[1]
                .checked_scale(u64::from(*n_rep))
                .ok_or("head count overflows")?;
            TensorType::new(x.dtype, shape)
        }
        Op::KvAppend { cache } => {
            let x = ops[0];
            let st = g.state(cache).ok_or_else(|| {
                let hint =
                    crate::text::did_you_mean(cache, g.states.iter().map(|s| s.name.as_str()))
                        .map(|h| format!("; did you mean \"{h}\"?"))
                        .unwrap_or_default();
                format!("no state named \"{cache}\" is declared{hint}")
            })?;
            let pax = state_p_axis(&st.ty).map_err(|m| format!("state \"{cache}\": {m}"))?;
            if !matches!(st.ty.dtype, DType::F32 | DType::F16) {
                return Err(format!("state \"{cache}\" : {} must be f32 or f16", st.ty));
            }
            // f32 rows are rounded to an f16 state as they are stored.
            let fits =
                x.dtype == st.ty.dtype || (x.dtype == DType::F32 && st.ty.dtype == DType::F16);
            if !fits || x.rank() != st.ty.rank() {
                return Err(format!(
                    "appended {x} does not match state \"{cache}\" : {}",
                    st.ty
                ));
            }
            for (i, (a, b)) in x.shape.iter().zip(&st.ty.shape).enumerate() {
                let ok = if i == pax { *a == Dim::S } else { a == b };
                if !ok {
                    return Err(format!(
                        "appended {x} does not match state \"{cache}\" : {} (the new rows must be `S` on axis {pax}, the other dims equal)",
                        st.ty
                    ));
                }
            }
            let mut shape = st.ty.shape.clone();
            shape[pax] = Dim::P.checked_add(&Dim::S).ok_or("overflow")?;
            TensorType::new(st.ty.dtype, shape)
        }
        Op::Scale { factor } => {
            f32_only("input", ops[0])?;
            if !factor.is_finite() {
                return Err(format!("factor must be finite, found {factor}"));
            }
            ops[0].clone()
        }
        Op::CausalMask => TensorType::new(
            DType::F32,
            vec![Dim::S, Dim::P.checked_add(&Dim::S).ok_or("overflow")?],
        ),
        Op::Softmax | Op::Silu => {
            f32_only("input", ops[0])?;
            rank_at_least("input", ops[0], 1)?;
            ops[0].clone()
        }
        Op::Mul | Op::Add => {
            f32_only("lhs", ops[0])?;
            f32_only("rhs", ops[1])?;
            let shape = broadcast(&ops[0].shape, &ops[1].shape)
                .ok_or_else(|| format!("shapes do not broadcast: {} vs {}", ops[0], ops[1]))?;
            TensorType::new(DType::F32, shape)
        }
        Op::SwiGlu => {
            f32_only("gate", ops[0])?;
            f32_only("up", ops[1])?;
            if ops[0].shape != ops[1].shape {
                return Err(format!(
                    "gate and up shapes differ: {} vs {}",
                    ops[0], ops[1]
                ));
            }
            ops[0].clone()
        }
        Op::TakeLast => {
            let x = ops[0];
            rank_exactly("input [B, S, D]", x, 3)?;
            TensorType::new(x.dtype, vec![x.shape[0], Dim::c(1), x.shape[2]])
        }
        Op::FlashAttention { scale, block } => {
            let (q, k, v) = (ops[0], ops[1], ops[2]);
            for (n, t) in [("q", q), ("k", k), ("v", v)] {
                if n == "q" || t.dtype != DType::F16 {
                    f32_only(n, t)?;
                }
                rank_exactly(n, t, 4)?;
            }
            if k.shape != v.shape {
                return Err(format!("k and v shapes differ: {k} vs {v}"));
            }
            if q.shape[0] != k.shape[0] || q.shape[3] != k.shape[3] {
                return Err(format!("q {q} and k {k} differ in batch or head dim"));
            }
            match (q.shape[1].as_const(), k.shape[1].as_const()) {
                (Some(h), Some(kvh)) if kvh == 0 || h % kvh != 0 => {
                    return Err(format!(
                        "query heads {h} are not a multiple of KV heads {kvh}"
                    ))
                }
                (Some(_), Some(_)) => {}
                _ => return Err("head counts must be constant".into()),
            }
            if *block == 0 || !scale.is_finite() {
                return Err(format!(
                    "block must be >= 1 and scale finite, found block {block}, scale {scale}"
                ));
            }
            q.clone()
        }
    };
    Ok(Some(t))
}

/// The axis of a state type that is exactly `P`.
pub fn state_p_axis(t: &TensorType) -> Result<usize, String> {
    let axes: Vec<usize> = (0..t.rank()).filter(|&i| t.shape[i] == Dim::P).collect();
    if axes.len() != 1 {
        return Err(format!(
            "needs exactly one axis that is `P` (its rows), found {t}"
        ));
    }
    for (i, d) in t.shape.iter().enumerate() {
        if i != axes[0] && (d.mentions(Sym::P) || d.mentions(Sym::S)) {
            return Err(format!("axis {i} ({d}) must not depend on `P` or `S`"));
        }
    }
    if !t.dtype.is_float() {
        return Err(format!("must have a float dtype, found {}", t.dtype));
    }
    Ok(axes[0])
}

/// Checks every invariant in the module header; returns all errors found.
pub fn verify(g: &Graph) -> Result<(), VerifyErrors> {
    let mut errs = Vec::new();
    let num = g.numbering();
    let name = |v: Value| format!("%{} = {}", num[&v], g.op(v).name());
    let mut err = |at: At, message: String| errs.push(VerifyError { at, message });

    if let Err(cyc) = g.topo_order() {
        let list: Vec<String> = cyc.iter().map(|v| format!("%{}", num[v])).collect();
        err(
            At::Value(cyc[0]),
            format!(
                "{}: is on a cycle (values on cycles: {})",
                name(cyc[0]),
                list.join(", ")
            ),
        );
    }

    for (sym, max) in [
        (Sym::B, crate::builder::MAX_BATCH),
        (Sym::P, crate::builder::MAX_CTX),
        (Sym::S, crate::builder::MAX_CTX),
    ] {
        if let Some(b) = g.syms.bound(sym).filter(|b| *b > max) {
            err(
                At::Graph,
                format!(
                    "sym {} <= {b}: the bound is too large (at most {max})",
                    sym.name()
                ),
            );
        }
    }

    let mut names: [HashSet<&str>; 3] = Default::default();
    let mut appends: HashMap<&str, usize> = HashMap::new();
    let mut n_outputs = 0;
    for v in g.sorted_values() {
        let node = g.node(v);
        let operands = g.operands(v);
        let tys: Vec<&TensorType> = operands.iter().map(|o| g.ty(*o)).collect();
        for k in node.annot.keys() {
            if !k.contains('.') {
                err(
                    At::Value(v),
                    format!(
                        "{}: annotation `{k}` must be dialect-qualified (`tile.{k}`)",
                        name(v)
                    ),
                );
            }
        }
        for o in &operands {
            if matches!(g.op(*o), Op::Output { .. }) {
                err(
                    At::Value(v),
                    format!(
                        "{}: uses the output %{}, which has no users by definition",
                        name(v),
                        num[o]
                    ),
                );
            }
        }
        match infer_opt(&node.op, &tys, g) {
            Err(m) => err(At::Value(v), format!("{}: {m}", name(v))),
            Ok(Some(t)) if t != node.ty => err(
                At::Value(v),
                format!(
                    "{}: declared type {} but the operands give {t}",
                    name(v),
                    node.ty
                ),
            ),
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Op::Reshape = node.op {
                    let x = tys[0];
                    if x.dtype != node.ty.dtype {
                        err(
                            At::Value(v),
                            format!(
                                "{}: reshape cannot change dtype ({x} to {})",
                                name(v),
                                node.ty
                            ),
                        );
                    } else if x.numel_poly() != node.ty.numel_poly() || x.numel_poly().is_none() {
                        err(
                            At::Value(v),
                            format!(
                                "{}: reshape from {x} to {} changes the element count",
                                name(v),
                                node.ty
                            ),
                        );
                    }
                }
            }
        }
        match &node.op {
            Op::Input { name: n } | Op::Weight { name: n } | Op::Output { name: n } => {
                let kind = match node.op {
                    Op::Input { .. } => 0,
                    Op::Weight { .. } => 1,
                    _ => 2,
                };
                if !names[kind].insert(n.as_str()) {
                    err(
                        At::Value(v),
                        format!("{}: the name \"{n}\" is used twice", name(v)),
                    );
                }
            }
            _ => {}
        }
        match &node.op {
            Op::Output { .. } => n_outputs += 1,
            Op::Weight { name: wn } => {
                let t = &node.ty;
                if t.const_numel().is_none() {
                    err(
                        At::Value(v),
                        format!(
                            "{}: weight \"{wn}\" must have a constant shape, found {t}",
                            name(v)
                        ),
                    );
                } else if t.dtype.is_quantized() {
                    let inner = t.shape.last().and_then(|d| d.as_const()).unwrap_or(0);
                    if inner % t.dtype.block_elems() != 0 || t.rank() == 0 {
                        err(
                            At::Value(v),
                            format!(
                                "{}: weight \"{wn}\" : {t}: innermost dim {inner} is not a multiple of the {} block size {}",
                                name(v),
                                t.dtype,
                                t.dtype.block_elems()
                            ),
                        );
                    }
                }
            }
            Op::KvAppend { cache } => *appends.entry(cache.as_str()).or_default() += 1,
            _ => {}
        }
    }
    if n_outputs == 0 {
        err(At::Graph, "the graph has no `output`".into());
    }
    for st in &g.states {
        if let Err(m) = state_p_axis(&st.ty) {
            err(
                At::State(st.name.clone()),
                format!("state \"{}\": {m}", st.name),
            );
        }
        match appends.get(st.name.as_str()).copied().unwrap_or(0) {
            1 => {}
            0 => err(
                At::State(st.name.clone()),
                format!("state \"{}\" is never appended to", st.name),
            ),
            n => err(
                At::State(st.name.clone()),
                format!(
                    "state \"{}\" is appended to {n} times (must be once)",
                    st.name
                ),
            ),
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors(errs))
    }
}

//! The last phase: "lowerable for target T" — the closed set of ops a backend accepts.
//!
//! A backend consumes only what its target's pipeline produces. This module is the one
//! definition of that contract: [`check`] walks the graph and refuses the first op that a
//! backend would otherwise have to re-recognize, naming the op, the value and the pass that
//! should have removed it (`tensor.softmax at %57: the cpu backend takes attention only as
//! flash_attention (pass flash-attention)`). Both backends call it on entry, and the driver
//! calls it after the pipeline, so a graph outside the phase is never run wrongly.
//!
//! | op | cpu | groq |
//! |---|---|---|
//! | `input "tokens"`, `weight`, `output` | yes | yes |
//! | `embedding`, `rms_norm` (scale folded or none), `rope`, `kv_append`, `add`, `take_last`, `reshape` | yes | yes |
//! | `transpose [0,2,1,3]` (the head view of a projection or of an attention result) | yes | yes |
//! | `qmatmul` | yes | yes |
//! | `matmul(x, weight)` (an f32/f16 weight: nothing to fuse) | no (no float-weight kernel yet) | yes |
//! | `swiglu`, `flash_attention` | yes | yes |
//! | `matmul` of two activations, `softmax`, `scale`, `causal_mask`, `repeat_kv` (attention parts) | no: `flash-attention` | no: `flash-attention` |
//! | `dequant` | no: `fuse-int4-dequant` | no: `fuse-int4-dequant` |
//! | `silu`, `mul` | no: `fuse-swiglu` / `fold-rms-norm-scale` | no: same |
//!
//! The CPU backend also needs the `tiled` and `memory-planned` phases ([`crate::phase`]):
//! it reads `tile.sizes` and places every buffer at its `mem.offset`.

use lpuc_ir::op::Op;
use lpuc_ir::{Graph, Value};
use std::fmt;

use crate::phase::Phase;
use crate::target::TargetKind;

/// Why a graph is not lowerable for a target: the op, the value as printed, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLowerable {
    pub value: Option<Value>,
    /// `%N` as the printer numbers it.
    pub num: Option<usize>,
    pub op: &'static str,
    pub msg: String,
    /// How many other ops are refused, and the passes their refusals name (in order of
    /// first appearance), so one error tells the whole story of a short pipeline.
    pub more: usize,
    pub also_missing: Vec<String>,
}

impl fmt::Display for NotLowerable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.num {
            Some(n) => write!(f, "{} at %{n}: {}", self.op, self.msg)?,
            None => write!(f, "{}", self.msg)?,
        }
        if self.more > 0 {
            write!(f, "; {} more ops are refused", self.more)?;
            if !self.also_missing.is_empty() {
                write!(
                    f,
                    ", naming also pass {}",
                    self.also_missing.join(", pass ")
                )?;
            }
        }
        Ok(())
    }
}

/// The pass a refusal names (`… (pass NAME)` or `(pass NAME, then …)`).
fn named_pass(msg: &str) -> Option<&str> {
    let i = msg.rfind("(pass ")?;
    let rest = &msg[i + 6..];
    let end = rest.find([',', ')', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

impl std::error::Error for NotLowerable {}

/// What a backend says about an op it refuses: the reason and the pass that fixes it.
fn refusal(g: &Graph, v: Value, t: TargetKind) -> Option<String> {
    let op = g.op(v);
    let is_weight = |i: usize| {
        g.operand(v, i)
            .is_some_and(|w| matches!(g.op(w), Op::Weight { .. }))
    };
    let attention = |what: &str| {
        format!("the {t} backend takes attention only as flash_attention, not {what} (pass flash-attention)")
    };
    match op {
        Op::Input { name } if name != "tokens" => Some(format!(
            "the {t} backend binds only the input \"tokens\", not \"{name}\""
        )),
        Op::Input { .. }
        | Op::Weight { .. }
        | Op::Output { .. }
        | Op::Embedding
        | Op::Rope { .. }
        | Op::KvAppend { .. }
        | Op::Add
        | Op::TakeLast
        | Op::Reshape
        | Op::QMatmul
        | Op::SwiGlu
        | Op::FlashAttention { .. } => None,
        Op::RmsNorm { .. } => {
            // A bare rms_norm whose only user multiplies it by a weight is an unfolded scale.
            let unfolded =
                g.operands(v).len() == 1 && g.users(v).iter().any(|u| matches!(g.op(*u), Op::Mul));
            unfolded.then(|| {
                format!("the {t} backend takes rms_norm with its scale folded in, not followed by tensor.mul (pass fold-rms-norm-scale)")
            })
        }
        Op::Transpose { perm } => {
            if perm == &[0, 2, 1, 3] {
                None
            } else {
                Some(attention(&format!("a transpose {perm:?} of its parts")))
            }
        }
        Op::Matmul => {
            if is_weight(1) {
                match t {
                    TargetKind::Groq => None,
                    TargetKind::Cpu => Some(format!(
                        "the cpu backend has no kernel for a matmul with a {} weight (only block-quantized weights, as tensor.qmatmul)",
                        g.operand(v, 1).map(|w| g.ty(w).dtype.to_string()).unwrap_or_default()
                    )),
                }
            } else if g
                .operand(v, 1)
                .is_some_and(|w| matches!(g.op(w), Op::Dequant))
            {
                Some(format!(
                    "the {t} backend takes weights packed, as tensor.qmatmul, not matmul(x, dequant(w)) (pass fuse-int4-dequant)"
                ))
            } else {
                Some(attention("a matmul of two activations"))
            }
        }
        Op::Dequant => Some(format!(
            "the {t} backend never expands weights to f32 (pass fuse-int4-dequant, then dce)"
        )),
        Op::Softmax | Op::Scale { .. } | Op::CausalMask | Op::RepeatKv { .. } => {
            Some(attention(op.name()))
        }
        Op::Silu => Some(format!(
            "the {t} backend takes silu only inside swiglu (pass fuse-swiglu)"
        )),
        Op::Mul => {
            // Name the pass that would have taken this mul: the one its operands point at.
            let feeds = |want: fn(&Op) -> bool| g.operands(v).iter().any(|o| want(g.op(*o)));
            Some(if feeds(|o| matches!(o, Op::Silu)) {
                format!("the {t} backend takes silu·b only as swiglu (pass fuse-swiglu)")
            } else if feeds(|o| matches!(o, Op::RmsNorm { .. })) {
                format!("the {t} backend takes rms_norm(x)·w only with the scale folded in (pass fold-rms-norm-scale)")
            } else {
                format!(
                    "the {t} backend takes tensor.mul only as swiglu or as an rms_norm scale (passes fuse-swiglu, fold-rms-norm-scale)"
                )
            })
        }
    }
}

/// Every op of `g` outside the phase "lowerable for `t`", in printed order.
pub fn refusals(g: &Graph, t: TargetKind) -> Vec<NotLowerable> {
    let num = g.numbering();
    g.sorted_values()
        .into_iter()
        .filter_map(|v| {
            refusal(g, v, t).map(|msg| NotLowerable {
                value: Some(v),
                num: num.get(&v).copied(),
                op: g.op(v).name(),
                msg,
                more: 0,
                also_missing: vec![],
            })
        })
        .collect()
}

/// Checks that `g` is in the phase "lowerable for `t`"; the error names the first op (in
/// printed order) outside it.
pub fn check(g: &Graph, t: TargetKind) -> Result<(), NotLowerable> {
    let num = g.numbering();
    let all = refusals(g, t);
    if let Some(first) = all.first() {
        let mut e = first.clone();
        e.more = all.len() - 1;
        let own = named_pass(&first.msg);
        for r in &all[1..] {
            if let Some(p) = named_pass(&r.msg) {
                if Some(p) != own && !e.also_missing.iter().any(|x| x == p) {
                    e.also_missing.push(p.to_string());
                }
            }
        }
        return Err(e);
    }
    if t == TargetKind::Cpu {
        for (ph, pass) in [(Phase::Tiled, "tile"), (Phase::Planned, "plan-buffers")] {
            ph.check(g).map_err(|(v, m)| NotLowerable {
                value: v,
                num: v.and_then(|v| num.get(&v).copied()),
                op: v.map_or("graph", |v| g.op(v).name()),
                msg: format!(
                    "the cpu backend needs the `{}` phase (pass {pass}): {m}",
                    ph.name()
                ),
                more: 0,
                also_missing: vec![],
            })?;
        }
    }
    Ok(())
}

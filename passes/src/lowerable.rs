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
    /// The pass that would have removed the op, when one would.
    pub pass: Option<&'static str>,
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

impl std::error::Error for NotLowerable {}

/// What a backend says about an op it refuses: the reason, and the pass that fixes it
/// (also kept as data, for the summary of a whole pipeline's gaps).
struct Refusal {
    why: String,
    pass: Option<&'static str>,
    /// What to run after the pass, if anything (`then dce`).
    then: Option<&'static str>,
}

impl Refusal {
    fn text(&self) -> String {
        match (self.pass, self.then) {
            (Some(p), Some(t)) => format!("{} (pass {p}, then {t})", self.why),
            (Some(p), None) => format!("{} (pass {p})", self.why),
            (None, _) => self.why.clone(),
        }
    }
}

fn refusal(g: &Graph, v: Value, t: TargetKind) -> Option<Refusal> {
    let op = g.op(v);
    let is_weight = |i: usize| {
        g.operand(v, i)
            .is_some_and(|w| matches!(g.op(w), Op::Weight { .. }))
    };
    let by = |pass: &'static str, why: String| Refusal {
        why,
        pass: Some(pass),
        then: None,
    };
    let attention = |what: &str| {
        by(
            "flash-attention",
            format!("the {t} backend takes attention only as flash_attention, not {what}"),
        )
    };
    let plain = |why: String| Refusal {
        why,
        pass: None,
        then: None,
    };
    match op {
        Op::Input { name } if name != "tokens" => Some(plain(format!(
            "the {t} backend binds only the input \"tokens\", not \"{name}\""
        ))),
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
                by("fold-rms-norm-scale", format!("the {t} backend takes rms_norm with its scale folded in, not followed by tensor.mul"))
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
                    TargetKind::Cpu => Some(plain(format!(
                        "the cpu backend has no kernel for a matmul with a {} weight (only block-quantized weights, as tensor.qmatmul)",
                        g.operand(v, 1).map(|w| g.ty(w).dtype.to_string()).unwrap_or_default()
                    ))),
                }
            } else if g
                .operand(v, 1)
                .is_some_and(|w| matches!(g.op(w), Op::Dequant))
            {
                Some(by("fuse-int4-dequant", format!(
                    "the {t} backend takes weights packed, as tensor.qmatmul, not matmul(x, dequant(w))"
                )))
            } else {
                Some(attention("a matmul of two activations"))
            }
        }
        Op::Dequant => Some(Refusal {
            then: Some("dce"),
            ..by(
                "fuse-int4-dequant",
                format!("the {t} backend never expands weights to f32"),
            )
        }),
        Op::Softmax | Op::Scale { .. } | Op::CausalMask | Op::RepeatKv { .. } => {
            Some(attention(op.name()))
        }
        Op::Silu => Some(by(
            "fuse-swiglu",
            format!("the {t} backend takes silu only inside swiglu"),
        )),
        Op::Mul => {
            // Name the pass that would have taken this mul: the one its operands point at.
            let feeds = |want: fn(&Op) -> bool| g.operands(v).iter().any(|o| want(g.op(*o)));
            Some(if feeds(|o| matches!(o, Op::Silu)) {
                by(
                    "fuse-swiglu",
                    format!("the {t} backend takes silu·b only as swiglu"),
                )
            } else if feeds(|o| matches!(o, Op::RmsNorm { .. })) {
                by(
                    "fold-rms-norm-scale",
                    format!("the {t} backend takes rms_norm(x)·w only with the scale folded in"),
                )
            } else {
                plain(format!(
                    "the {t} backend takes tensor.mul only as swiglu or as an rms_norm scale (passes fuse-swiglu, fold-rms-norm-scale)"
                ))
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
            refusal(g, v, t).map(|r| NotLowerable {
                value: Some(v),
                num: num.get(&v).copied(),
                op: g.op(v).name(),
                msg: r.text(),
                pass: r.pass,
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
        for p in all[1..].iter().filter_map(|r| r.pass) {
            if Some(p) != first.pass && !e.also_missing.iter().any(|x| x == p) {
                e.also_missing.push(p.to_string());
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
                pass: Some(pass),
                more: 0,
                also_missing: vec![],
            })?;
        }
    }
    Ok(())
}

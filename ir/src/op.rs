//! The op set.
//!
//! Ops are dialect-prefixed so a dump shows its phase at a glance: structural ops (`input`,
//! `weight`, `output`) have no prefix; `tensor.*` are the primitives a model import produces;
//! fused ops that passes introduce (`tensor.qmatmul`, `tensor.flash_attention`,
//! `tensor.swiglu`) are also `tensor.*` because they keep tensor semantics and the reference
//! interpreter runs them. Every op has exactly one result.
//!
//! Conventions (fixed here, relied on everywhere):
//! - `matmul(a, b)` is `a · bᵀ`: `a: [..., M, K]`, `b: [..., N, K]` or `[N, K]`, result
//!   `[..., M, N]`. This is the layout GGUF stores weights in (`[out, in]`, rows contiguous),
//!   and it makes `Q·Kᵀ` a plain `matmul(q, k)`.
//! - `rope` rotates position `P + s` for row `s`: positions are implied by the KV-cache
//!   length, so a program needs no position input.
//! - `kv_append(x)` writes `x: [B, KVH, S, D]` at rows `P..P+S` of its cache and yields rows
//!   `0..P+S`; the interpreter/runtime advance `P` by `S` after the whole call.
//! - Elementwise binary ops broadcast numpy-style (trailing dims aligned; a dim broadcasts
//!   only if it is the constant 1).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Which pairs `rope` rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: GGUF `llama` (its Q/K weights are permuted for this).
    Normal,
    /// Halves `(i, i + d/2)`: GPT-NeoX / HF layout.
    Neox,
}

impl RopeStyle {
    pub fn name(self) -> &'static str {
        match self {
            RopeStyle::Normal => "normal",
            RopeStyle::Neox => "neox",
        }
    }
}

/// An attribute value as written in the text form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Str(String),
    Ident(String),
    Ints(Vec<i64>),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(i) => write!(f, "{i}"),
            Attr::Float(x) => write!(f, "{x}"),
            Attr::Str(s) => write!(f, "{}", crate::text::quote(s)),
            Attr::Ident(s) => f.write_str(s),
            Attr::Ints(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The op of a node. Attributes specific to an op are typed fields; discardable annotations
/// that passes attach (`tile.sizes`, `mem.offset`, …) live on the node instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A program input, bound by name at run time (`tokens`: `i32[B, S]`).
    Input {
        name: String,
    },
    /// A named weight from the weight store; its type is its dtype and shape.
    Weight {
        name: String,
    },
    /// A named program result.
    Output {
        name: String,
    },
    /// `embedding(table[V, D], ids[...]) -> f32[..., D]`: row lookup, dequantizing the rows.
    Embedding,
    /// `rms_norm(x[..., D]) = x / sqrt(mean(x²) + eps)`; with a second operand `w[D]`
    /// (after scale folding) the result is also multiplied by `w`.
    RmsNorm {
        eps: f32,
    },
    /// `matmul(a[..., M, K], b[..., N, K] | b[N, K]) -> [..., M, N]` = a·bᵀ, f32.
    Matmul,
    /// `dequant(w)`: any dtype to f32, same shape. Exact GGUF block semantics.
    Dequant,
    /// Fused `matmul(a, dequant(w))` with `w[N, K]` kept packed. Against a block-quantized
    /// `w` its numerics are those of every int4 CPU kernel worth using (llama.cpp's too):
    /// each row of `a` is rounded to 8-bit blocks of 32 with an f16 scale, then the dot
    /// product is exact. So `fuse-int4-dequant` changes results by activation-rounding noise
    /// (|Δ| ≈ 2⁻⁸ relative per block), which differential tests allow for.
    QMatmul,
    /// Rotary embedding on `x[B, S, H, D]` at positions `P + s`; the first `dims` of each
    /// head rotate, the rest pass through.
    Rope {
        theta: f32,
        dims: u32,
        style: RopeStyle,
    },
    /// Same elements, new shape (the result type carries it).
    Reshape,
    /// Permute axes: result axis `i` is operand axis `perm[i]`.
    Transpose {
        perm: Vec<u32>,
    },
    /// Grouped-query broadcast on axis 1: `[B, KVH, T, D] -> [B, KVH·n_rep, T, D]`, result
    /// head `h` is operand head `h / n_rep`.
    RepeatKv {
        n_rep: u32,
    },
    /// Append `x[B, KVH, S, D]` to the named cache state; yields its rows `0..P+S`.
    KvAppend {
        cache: String,
    },
    /// `x · factor`.
    Scale {
        factor: f32,
    },
    /// `() -> f32[S, P+S]`: 0 where key `j <= P + i`, −∞ elsewhere.
    CausalMask,
    /// Softmax over the last axis.
    Softmax,
    /// `x · sigmoid(x)`.
    Silu,
    Mul,
    Add,
    /// `[B, S, D] -> [B, 1, D]`: keep the last new position (logits only for the next token).
    TakeLast,
    /// `swiglu(a, b) = silu(a) · b`.
    SwiGlu,
    /// Fused attention with online softmax over key blocks of `block` rows:
    /// `(q[B, H, S, D], k[B, KVH, T, D], v[B, KVH, T, D]) -> [B, H, S, D]`, head `h` reads KV
    /// head `h / (H/KVH)`, scores scaled by `scale`, causal with the offset `T − S`.
    FlashAttention {
        scale: f32,
        block: u32,
    },
}

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    Range(usize, usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::Range(a, b) => (a..=b).contains(&n),
        }
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arity::Exactly(k) => write!(f, "{k}"),
            Arity::Range(a, b) => write!(f, "{a} to {b}"),
        }
    }
}

/// Every op name the text form knows, for "did you mean" and docs.
pub const OP_NAMES: &[&str] = &[
    "input",
    "weight",
    "output",
    "tensor.embedding",
    "tensor.rms_norm",
    "tensor.matmul",
    "tensor.dequant",
    "tensor.qmatmul",
    "tensor.rope",
    "tensor.reshape",
    "tensor.transpose",
    "tensor.repeat_kv",
    "tensor.kv_append",
    "tensor.scale",
    "tensor.causal_mask",
    "tensor.softmax",
    "tensor.silu",
    "tensor.mul",
    "tensor.add",
    "tensor.take_last",
    "tensor.swiglu",
    "tensor.flash_attention",
];

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::Output { .. } => "output",
            Op::Embedding => "tensor.embedding",
            Op::RmsNorm { .. } => "tensor.rms_norm",
            Op::Matmul => "tensor.matmul",
            Op::Dequant => "tensor.dequant",
            Op::QMatmul => "tensor.qmatmul",
            Op::Rope { .. } => "tensor.rope",
            Op::Reshape => "tensor.reshape",
            Op::Transpose { .. } => "tensor.transpose",
            Op::RepeatKv { .. } => "tensor.repeat_kv",
            Op::KvAppend { .. } => "tensor.kv_append",
            Op::Scale { .. } => "tensor.scale",
            Op::CausalMask => "tensor.causal_mask",
            Op::Softmax => "tensor.softmax",
            Op::Silu => "tensor.silu",
            Op::Mul => "tensor.mul",
            Op::Add => "tensor.add",
            Op::TakeLast => "tensor.take_last",
            Op::SwiGlu => "tensor.swiglu",
            Op::FlashAttention { .. } => "tensor.flash_attention",
        }
    }

    pub fn arity(&self) -> Arity {
        use Arity::*;
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::CausalMask => Exactly(0),
            Op::Output { .. }
            | Op::Dequant
            | Op::Rope { .. }
            | Op::Reshape
            | Op::Transpose { .. }
            | Op::RepeatKv { .. }
            | Op::KvAppend { .. }
            | Op::Scale { .. }
            | Op::Softmax
            | Op::Silu
            | Op::TakeLast => Exactly(1),
            Op::RmsNorm { .. } => Range(1, 2),
            Op::Embedding | Op::Matmul | Op::QMatmul | Op::Mul | Op::Add | Op::SwiGlu => Exactly(2),
            Op::FlashAttention { .. } => Exactly(3),
        }
    }

    /// The quoted label some structural ops carry (`input "tokens"`).
    pub fn label(&self) -> Option<&str> {
        match self {
            Op::Input { name } | Op::Weight { name } | Op::Output { name } => Some(name),
            _ => None,
        }
    }

    /// True for ops without side effects on state (everything but `kv_append`/`output`).
    pub fn is_pure(&self) -> bool {
        !matches!(self, Op::KvAppend { .. } | Op::Output { .. })
    }

    /// Op-specific attributes in print order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        match self {
            Op::RmsNorm { eps } => vec![("eps", Attr::Float(*eps))],
            Op::Rope { theta, dims, style } => vec![
                ("theta", Attr::Float(*theta)),
                ("dims", Attr::Int(*dims as i64)),
                ("style", Attr::Ident(style.name().into())),
            ],
            Op::Transpose { perm } => {
                vec![("perm", Attr::Ints(perm.iter().map(|&p| p as i64).collect()))]
            }
            Op::RepeatKv { n_rep } => vec![("n_rep", Attr::Int(*n_rep as i64))],
            Op::KvAppend { cache } => vec![("cache", Attr::Str(cache.clone()))],
            Op::Scale { factor } => vec![("factor", Attr::Float(*factor))],
            Op::FlashAttention { scale, block } => vec![
                ("scale", Attr::Float(*scale)),
                ("block", Attr::Int(*block as i64)),
            ],
            _ => vec![],
        }
    }

    /// Builds an op from its text-form parts. `attrs` holds the op-specific attributes
    /// (annotation keys with a `.` were already taken out); every key must be consumed.
    pub fn from_parts(
        name: &str,
        label: Option<String>,
        attrs: &mut BTreeMap<String, Attr>,
    ) -> Result<Op, String> {
        let needs_label = matches!(name, "input" | "weight" | "output");
        if needs_label && label.is_none() {
            return Err(format!("`{name}` needs a quoted name, e.g. `{name} \"x\"`"));
        }
        if !needs_label && label.is_some() {
            return Err(format!("`{name}` takes no quoted name"));
        }
        let label = label.unwrap_or_default();
        let op = match name {
            "input" => Op::Input { name: label },
            "weight" => Op::Weight { name: label },
            "output" => Op::Output { name: label },
            "tensor.embedding" => Op::Embedding,
            "tensor.rms_norm" => Op::RmsNorm {
                eps: take_f32(attrs, "eps")?,
            },
            "tensor.matmul" => Op::Matmul,
            "tensor.dequant" => Op::Dequant,
            "tensor.qmatmul" => Op::QMatmul,
            "tensor.rope" => {
                let theta = take_f32(attrs, "theta")?;
                let dims = take_u32(attrs, "dims")?;
                let style = match attrs.remove("style") {
                    Some(Attr::Ident(s)) if s == "normal" => RopeStyle::Normal,
                    Some(Attr::Ident(s)) if s == "neox" => RopeStyle::Neox,
                    Some(other) => {
                        return Err(format!(
                            "attribute `style` must be `normal` or `neox`, found `{other}`"
                        ))
                    }
                    None => return Err("missing attribute `style` (`normal` or `neox`)".into()),
                };
                Op::Rope { theta, dims, style }
            }
            "tensor.reshape" => Op::Reshape,
            "tensor.transpose" => {
                let perm = match attrs.remove("perm") {
                    Some(Attr::Ints(v)) => v
                        .into_iter()
                        .map(|x| {
                            u32::try_from(x)
                                .map_err(|_| format!("`perm` entry {x} is negative or too large"))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    Some(other) => {
                        return Err(format!(
                            "attribute `perm` must be a list of integers, found `{other}`"
                        ))
                    }
                    None => return Err("missing attribute `perm`".into()),
                };
                Op::Transpose { perm }
            }
            "tensor.repeat_kv" => Op::RepeatKv {
                n_rep: take_u32(attrs, "n_rep")?,
            },
            "tensor.kv_append" => match attrs.remove("cache") {
                Some(Attr::Str(s)) => Op::KvAppend { cache: s },
                Some(other) => {
                    return Err(format!(
                        "attribute `cache` must be a string, found `{other}`"
                    ))
                }
                None => return Err("missing attribute `cache`".into()),
            },
            "tensor.scale" => Op::Scale {
                factor: take_f32(attrs, "factor")?,
            },
            "tensor.causal_mask" => Op::CausalMask,
            "tensor.softmax" => Op::Softmax,
            "tensor.silu" => Op::Silu,
            "tensor.mul" => Op::Mul,
            "tensor.add" => Op::Add,
            "tensor.take_last" => Op::TakeLast,
            "tensor.swiglu" => Op::SwiGlu,
            "tensor.flash_attention" => Op::FlashAttention {
                scale: take_f32(attrs, "scale")?,
                block: take_u32(attrs, "block")?,
            },
            _ => {
                let hint = crate::text::did_you_mean(name, OP_NAMES.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(format!("unknown op `{name}`{hint}"));
            }
        };
        if let Some(k) = attrs.keys().next() {
            let known: Vec<&str> = op.attrs().iter().map(|(k, _)| *k).collect();
            let hint = crate::text::did_you_mean(k, known.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(format!("`{name}` has no attribute `{k}`{hint}"));
        }
        Ok(op)
    }
}

fn take_f32(attrs: &mut BTreeMap<String, Attr>, key: &str) -> Result<f32, String> {
    match attrs.remove(key) {
        Some(Attr::Float(x)) => Ok(x),
        Some(Attr::Int(i)) => Ok(i as f32),
        Some(other) => Err(format!(
            "attribute `{key}` must be a number, found `{other}`"
        )),
        None => Err(format!("missing attribute `{key}`")),
    }
}

fn take_u32(attrs: &mut BTreeMap<String, Attr>, key: &str) -> Result<u32, String> {
    match attrs.remove(key) {
        Some(Attr::Int(i)) => {
            u32::try_from(i).map_err(|_| format!("attribute `{key}` = {i} is out of range"))
        }
        Some(other) => Err(format!(
            "attribute `{key}` must be an integer, found `{other}`"
        )),
        None => Err(format!("missing attribute `{key}`")),
    }
}

//! The rewrite rules, grouped by topic. Each rule carries its algebra in a one-line
//! comment. No rule is a general commutativity or associativity law: where an op is
//! commutative (`mul`, `add`) the mirrored pattern is spelled out as its own rule, so the
//! e-graph stays the size of the island.
//!
//! Every rule goes through [`Checked`]: its right-hand side must have exactly the type of
//! the class it joins (types come from the IR's own inference), so side conditions such as
//! "the weight is a rank-2 `[out, in]` matrix" or "the reshape is to the same shape" are
//! checked by the type system rather than restated per rule.

use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use lpuc_ir::types::Dim;

use super::lang::{AttrVal, Data, Node, TypeAnalysis};

pub type Eg = EGraph<Node, TypeAnalysis>;
pub type Rw = Rewrite<Node, TypeAnalysis>;
type Build = dyn Fn(&mut Eg, &Subst) -> Option<Id> + Send + Sync;

enum Rhs {
    Pat(Pattern<Node>),
    Build(Box<Build>),
}

/// An applier that unions its right-hand side with the matched class only if both have
/// the same tensor type.
pub struct Checked {
    rhs: Rhs,
}

impl Applier<Node, TypeAnalysis> for Checked {
    fn apply_one(
        &self,
        eg: &mut Eg,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<Node>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        let new = match &self.rhs {
            Rhs::Pat(p) => eg.add_instantiation(&p.ast, subst),
            Rhs::Build(f) => match f(eg, subst) {
                Some(id) => id,
                None => return vec![],
            },
        };
        let same =
            matches!((&eg[new].data, &eg[eclass].data), (Data::Ty(a), Data::Ty(b)) if a == b);
        if same && eg.union(new, eclass) {
            vec![new]
        } else {
            vec![]
        }
    }
}

fn pat(s: &str) -> Pattern<Node> {
    s.parse()
        .unwrap_or_else(|e| panic!("rule pattern `{s}` does not parse: {e}"))
}

fn var(s: &str) -> Var {
    s.parse()
        .unwrap_or_else(|e| panic!("`{s}` is not a pattern variable: {e}"))
}

/// A rule whose right-hand side is a pattern.
fn rule(name: &str, lhs: &str, rhs: &str) -> Rw {
    Rewrite::new(
        name,
        pat(lhs),
        Checked {
            rhs: Rhs::Pat(pat(rhs)),
        },
    )
    .unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

/// A rule whose right-hand side is computed (new attribute values, side conditions);
/// `None` declines the match.
fn rule_fn(
    name: &str,
    lhs: &str,
    build: impl Fn(&mut Eg, &Subst) -> Option<Id> + Send + Sync + 'static,
) -> Rw {
    Rewrite::new(
        name,
        pat(lhs),
        Checked {
            rhs: Rhs::Build(Box::new(build)),
        },
    )
    .unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

fn attr(eg: &Eg, id: Id) -> Option<AttrVal> {
    match &eg[id].data {
        Data::Attr(a) => Some(a.clone()),
        _ => None,
    }
}

/// Algebraic identities (`canonicalize`): each removes an op, none adds one.
pub fn algebra() -> Vec<Rw> {
    let (a, b, p, q, x) = (var("?a"), var("?b"), var("?p"), var("?q"), var("?x"));
    vec![
        // scale₁(x) => x
        rule("scale-one", "(tensor.scale #f1 ?x)", "?x"),
        // scale_a(scale_b(x)) => scale_{a·b}(x)
        rule_fn(
            "scale-scale",
            "(tensor.scale ?a (tensor.scale ?b ?x))",
            move |eg, s| {
                let f = attr(eg, s[a])?.as_f32()? * attr(eg, s[b])?.as_f32()?;
                let f = eg.add(Node::Attr(AttrVal::f32(f)));
                Some(eg.add(Node::Scale([f, s[x]])))
            },
        ),
        // transpose_id(x) => x
        rule_fn("transpose-id", "(tensor.transpose ?p ?x)", move |eg, s| {
            let perm = attr(eg, s[p])?;
            let id = perm
                .as_ints()?
                .iter()
                .enumerate()
                .all(|(i, &v)| v == i as i64);
            id.then_some(s[x])
        }),
        // transpose_p(transpose_q(x)) => transpose_{q∘p}(x)       (r[i] = q[p[i]])
        rule_fn(
            "transpose-transpose",
            "(tensor.transpose ?p (tensor.transpose ?q ?x))",
            move |eg, s| {
                let (pv, qv) = (attr(eg, s[p])?, attr(eg, s[q])?);
                let (pv, qv) = (pv.as_ints()?, qv.as_ints()?);
                let r = pv
                    .iter()
                    .map(|&i| usize::try_from(i).ok().and_then(|i| qv.get(i).copied()))
                    .collect::<Option<Vec<i64>>>()?;
                let r = eg.add(Node::Attr(AttrVal::Ints(r)));
                Some(eg.add(Node::Transpose([r, s[x]])))
            },
        ),
        // reshape_s(reshape_t(x)) => reshape_s(x)
        rule(
            "reshape-reshape",
            "(tensor.reshape ?s (tensor.reshape ?t ?x))",
            "(tensor.reshape ?s ?x)",
        ),
        // reshape_s(x) => x                                        (x already has shape s)
        rule("reshape-id", "(tensor.reshape ?s ?x)", "?x"),
        // dequant(x : f32) => x
        rule("dequant-f32", "(tensor.dequant ?x)", "?x"),
        // repeat_kv₁(x) => x
        rule("repeat-kv-one", "(tensor.repeat_kv #i1 ?x)", "?x"),
    ]
}

/// Dequant fusion (`fuse-int4-dequant`): a quantized weight is read packed by its user.
pub fn dequant_fusion() -> Vec<Rw> {
    vec![
        // matmul(x, dequant(w)) => qmatmul(x, w)                  (w : [N, K], any weight dtype)
        rule(
            "qmatmul",
            "(tensor.matmul ?x (tensor.dequant ?w))",
            "(tensor.qmatmul ?x ?w)",
        ),
        // embedding(dequant(t), ids) => embedding(t, ids)         (rows dequantized as read)
        rule(
            "embedding-packed",
            "(tensor.embedding (tensor.dequant ?t) ?ids)",
            "(tensor.embedding ?t ?ids)",
        ),
    ]
}

/// RMSNorm scale folding (`fold-rms-norm-scale`).
pub fn norm() -> Vec<Rw> {
    vec![
        // rms_norm(x) · w => rms_norm(x, w)                        (w : [D])
        rule(
            "rms-norm-scale",
            "(tensor.mul (tensor.rms_norm ?e ?x) ?w)",
            "(tensor.rms_norm ?e ?x ?w)",
        ),
        // w · rms_norm(x) => rms_norm(x, w)
        rule(
            "rms-norm-scale-mirrored",
            "(tensor.mul ?w (tensor.rms_norm ?e ?x))",
            "(tensor.rms_norm ?e ?x ?w)",
        ),
    ]
}

/// SwiGLU (`fuse-swiglu`).
pub fn swiglu() -> Vec<Rw> {
    vec![
        // silu(a) · b => swiglu(a, b)                              (same shapes, no broadcast)
        rule(
            "swiglu",
            "(tensor.mul (tensor.silu ?a) ?b)",
            "(tensor.swiglu ?a ?b)",
        ),
        // b · silu(a) => swiglu(a, b)
        rule(
            "swiglu-mirrored",
            "(tensor.mul ?b (tensor.silu ?a))",
            "(tensor.swiglu ?a ?b)",
        ),
    ]
}

/// Attention (`flash-attention`): `block` is the key-block size of the fused op.
///
/// The match is exact: a constant `scale` of `Q·Kᵀ`, plus the `causal_mask` op (either
/// side of the `add`), a last-axis `softmax`, and `V` transposed by `[0, 1, 3, 2]` so that
/// `matmul(P, Vᵀ)` is `P·V`; grouped-query heads appear as the same `repeat_kv` on K and
/// V, or not at all. The side condition checks the mask's meaning: queries on axis 2 are
/// the `S` new rows and keys are the `P+S` cached rows, so "key `j` visible to query `i`
/// iff `j <= P + i`" is the fused op's "causal with offset `T − S`".
pub fn attention(block: u32) -> Vec<Rw> {
    let spell = |scores: &str, mask_first: bool, v: &str| {
        let masked = if mask_first {
            format!("(tensor.add tensor.causal_mask {scores})")
        } else {
            format!("(tensor.add {scores} tensor.causal_mask)")
        };
        format!("(tensor.matmul (tensor.softmax {masked}) (tensor.transpose #ints:0,1,3,2 {v}))")
    };
    let gqa_scores = "(tensor.scale ?f (tensor.matmul ?q (tensor.repeat_kv ?n ?k)))";
    let mha_scores = "(tensor.scale ?f (tensor.matmul ?q ?k))";
    let (f, q, k, v) = (var("?f"), var("?q"), var("?k"), var("?v"));
    let fuse = move |eg: &mut Eg, s: &Subst| -> Option<Id> {
        let qt = eg[s[q]].data.ty()?.clone();
        let kt = eg[s[k]].data.ty()?.clone();
        let causal = qt.rank() == 4
            && kt.rank() == 4
            && qt.shape[2] == Dim::S
            && Some(kt.shape[2]) == Dim::P.checked_add(&Dim::S);
        if !causal {
            return None;
        }
        let b = eg.add(Node::Attr(AttrVal::Int(i64::from(block))));
        Some(eg.add(Node::FlashAttention([s[f], b, s[q], s[k], s[v]])))
    };
    vec![
        // softmax(f·Q·rep(K)ᵀ + causal)·rep(V) => flash_attention_f(Q, K, V)
        rule_fn(
            "flash-attention-gqa",
            &spell(gqa_scores, false, "(tensor.repeat_kv ?n ?v)"),
            fuse,
        ),
        // softmax(causal + f·Q·rep(K)ᵀ)·rep(V) => flash_attention_f(Q, K, V)
        rule_fn(
            "flash-attention-gqa-mask-first",
            &spell(gqa_scores, true, "(tensor.repeat_kv ?n ?v)"),
            fuse,
        ),
        // softmax(f·Q·Kᵀ + causal)·V => flash_attention_f(Q, K, V)
        rule_fn("flash-attention-mha", &spell(mha_scores, false, "?v"), fuse),
        // softmax(causal + f·Q·Kᵀ)·V => flash_attention_f(Q, K, V)
        rule_fn(
            "flash-attention-mha-mask-first",
            &spell(mha_scores, true, "?v"),
            fuse,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_set_builds() {
        assert_eq!(algebra().len(), 8);
        assert_eq!(dequant_fusion().len(), 2);
        assert_eq!(norm().len(), 2);
        assert_eq!(swiglu().len(), 2);
        assert_eq!(attention(64).len(), 4);
    }
}

//! The e-graph language of pure islands, and the analysis that types every e-class.
//!
//! One e-node per IR op. Op attributes become leaf children ([`Node::Attr`]) so patterns
//! can bind them like operands (`(tensor.scale ?f ?x)`) or ground them
//! (`(tensor.transpose #ints:0,1,3,2 ?v)`); values from outside the island are opaque
//! [`Node::Leaf`]s numbered in first-use order. The analysis gives every e-class its tensor
//! type (or attribute value) using the IR's own inference, so a rule can never disagree
//! with the verifier about what is well typed: [`super::rules`] refuses any rewrite whose
//! right-hand side has another type than the class it joins.

use egg::{define_language, Analysis, DidMerge, EGraph, Id};
use lpuc_ir::op::{Op, RopeStyle};
use lpuc_ir::types::{Dim, TensorType};
use lpuc_ir::Graph;
use std::fmt;
use std::str::FromStr;

/// An attribute as an e-node payload. Floats are kept as bits so equality is exact and
/// hashing is possible.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrVal {
    F32(u32),
    Int(i64),
    Ints(Vec<i64>),
    /// `(konst, coef[B], coef[P], coef[S])` per dim.
    Shape(Vec<[u64; 4]>),
    Rope {
        theta: u32,
        dims: u32,
        neox: bool,
    },
}

impl AttrVal {
    pub fn f32(x: f32) -> AttrVal {
        AttrVal::F32(x.to_bits())
    }
    pub fn as_f32(&self) -> Option<f32> {
        match self {
            AttrVal::F32(b) => Some(f32::from_bits(*b)),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrVal::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_ints(&self) -> Option<&[i64]> {
        match self {
            AttrVal::Ints(v) => Some(v),
            _ => None,
        }
    }
    pub fn shape(dims: &[Dim]) -> AttrVal {
        AttrVal::Shape(
            dims.iter()
                .map(|d| [d.konst, d.coef[0], d.coef[1], d.coef[2]])
                .collect(),
        )
    }
    pub fn as_shape(&self) -> Option<Vec<Dim>> {
        match self {
            AttrVal::Shape(v) => Some(
                v.iter()
                    .map(|a| Dim {
                        konst: a[0],
                        coef: [a[1], a[2], a[3]],
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

fn join<T: fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for AttrVal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrVal::F32(b) => write!(f, "#f{}", f32::from_bits(*b)),
            AttrVal::Int(i) => write!(f, "#i{i}"),
            AttrVal::Ints(v) => write!(f, "#ints:{}", join(v)),
            AttrVal::Shape(_) => {
                let dims = self.as_shape().unwrap_or_default();
                write!(f, "#shape:{}", join(&dims))
            }
            AttrVal::Rope { theta, dims, neox } => write!(
                f,
                "#rope:{}:{dims}:{}",
                f32::from_bits(*theta),
                if *neox { "neox" } else { "normal" }
            ),
        }
    }
}

fn parse_dim(s: &str) -> Result<Dim, String> {
    let mut d = Dim::c(0);
    for term in s.split('+') {
        let (k, sym) = match term.split_once('*') {
            Some((k, sym)) => (k.parse::<u64>().map_err(|e| e.to_string())?, Some(sym)),
            None => match term.parse::<u64>() {
                Ok(k) => (k, None),
                Err(_) => (1, Some(term)),
            },
        };
        match sym {
            None => d.konst += k,
            Some(sym) => {
                let s = lpuc_ir::Sym::from_name(sym).ok_or_else(|| format!("bad dim `{term}`"))?;
                d.coef[s as usize] += k;
            }
        }
    }
    Ok(d)
}

impl FromStr for AttrVal {
    type Err = String;
    fn from_str(s: &str) -> Result<AttrVal, String> {
        let e = |m: &dyn fmt::Display| format!("bad attribute `{s}`: {m}");
        if let Some(r) = s.strip_prefix("#ints:") {
            let v = if r.is_empty() {
                vec![]
            } else {
                r.split(',')
                    .map(|x| x.parse::<i64>().map_err(|m| e(&m)))
                    .collect::<Result<_, _>>()?
            };
            Ok(AttrVal::Ints(v))
        } else if let Some(r) = s.strip_prefix("#shape:") {
            let dims = if r.is_empty() {
                vec![]
            } else {
                r.split(',').map(parse_dim).collect::<Result<Vec<_>, _>>()?
            };
            Ok(AttrVal::shape(&dims))
        } else if let Some(r) = s.strip_prefix("#rope:") {
            let p: Vec<&str> = r.split(':').collect();
            if p.len() != 3 {
                return Err(e(&"expected #rope:THETA:DIMS:STYLE"));
            }
            Ok(AttrVal::Rope {
                theta: p[0].parse::<f32>().map_err(|m| e(&m))?.to_bits(),
                dims: p[1].parse::<u32>().map_err(|m| e(&m))?,
                neox: p[2] == "neox",
            })
        } else if let Some(r) = s.strip_prefix("#f") {
            Ok(AttrVal::f32(r.parse::<f32>().map_err(|m| e(&m))?))
        } else if let Some(r) = s.strip_prefix("#i") {
            Ok(AttrVal::Int(r.parse::<i64>().map_err(|m| e(&m))?))
        } else {
            Err(e(&"not an attribute"))
        }
    }
}

/// A value from outside the island, by first-use position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeafId(pub u32);

impl fmt::Display for LeafId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

impl FromStr for LeafId {
    type Err = String;
    fn from_str(s: &str) -> Result<LeafId, String> {
        s.strip_prefix('$')
            .and_then(|r| r.parse().ok())
            .map(LeafId)
            .ok_or_else(|| format!("bad leaf `{s}`"))
    }
}

define_language! {
    /// The op set of pure islands. Attribute children come first: `(tensor.scale #f0.25 ?x)`.
    pub enum Node {
        "tensor.causal_mask" = CausalMask,
        "tensor.embedding" = Embedding([Id; 2]),
        "tensor.rms_norm" = RmsNorm([Id; 2]),
        "tensor.rms_norm" = RmsNormScaled([Id; 3]),
        "tensor.matmul" = Matmul([Id; 2]),
        "tensor.dequant" = Dequant(Id),
        "tensor.qmatmul" = QMatmul([Id; 2]),
        "tensor.rope" = Rope([Id; 2]),
        "tensor.reshape" = Reshape([Id; 2]),
        "tensor.transpose" = Transpose([Id; 2]),
        "tensor.repeat_kv" = RepeatKv([Id; 2]),
        "tensor.scale" = Scale([Id; 2]),
        "tensor.softmax" = Softmax(Id),
        "tensor.silu" = Silu(Id),
        "tensor.mul" = Mul([Id; 2]),
        "tensor.add" = Add([Id; 2]),
        "tensor.take_last" = TakeLast(Id),
        "tensor.swiglu" = SwiGlu([Id; 2]),
        "tensor.flash_attention" = FlashAttention([Id; 5]),
        Attr(AttrVal),
        Leaf(LeafId),
    }
}

/// Builds the e-node of an IR op: `attr` adds an attribute node, `xs` are the operand
/// classes. `None` for ops that never sit inside an island (structural and stateful ops).
pub fn node_of_op(
    op: &Op,
    ty: &TensorType,
    xs: &[Id],
    mut attr: impl FnMut(AttrVal) -> Id,
) -> Option<Node> {
    let x0 = xs.first().copied();
    let two = || -> Option<[Id; 2]> { Some([*xs.first()?, *xs.get(1)?]) };
    Some(match op {
        Op::CausalMask => Node::CausalMask,
        Op::Embedding => Node::Embedding(two()?),
        Op::RmsNorm { eps } => {
            let e = attr(AttrVal::f32(*eps));
            match xs {
                [x] => Node::RmsNorm([e, *x]),
                [x, w] => Node::RmsNormScaled([e, *x, *w]),
                _ => return None,
            }
        }
        Op::Matmul => Node::Matmul(two()?),
        Op::Dequant => Node::Dequant(x0?),
        Op::QMatmul => Node::QMatmul(two()?),
        Op::Rope { theta, dims, style } => Node::Rope([
            attr(AttrVal::Rope {
                theta: theta.to_bits(),
                dims: *dims,
                neox: *style == RopeStyle::Neox,
            }),
            x0?,
        ]),
        Op::Reshape => Node::Reshape([attr(AttrVal::shape(&ty.shape)), x0?]),
        Op::Transpose { perm } => Node::Transpose([
            attr(AttrVal::Ints(perm.iter().map(|&p| i64::from(p)).collect())),
            x0?,
        ]),
        Op::RepeatKv { n_rep } => Node::RepeatKv([attr(AttrVal::Int(i64::from(*n_rep))), x0?]),
        Op::Scale { factor } => Node::Scale([attr(AttrVal::f32(*factor)), x0?]),
        Op::Softmax => Node::Softmax(x0?),
        Op::Silu => Node::Silu(x0?),
        Op::Mul => Node::Mul(two()?),
        Op::Add => Node::Add(two()?),
        Op::TakeLast => Node::TakeLast(x0?),
        Op::SwiGlu => Node::SwiGlu(two()?),
        Op::FlashAttention { scale, block } => {
            let s = attr(AttrVal::f32(*scale));
            let b = attr(AttrVal::Int(i64::from(*block)));
            let [q, k, v] = [*xs.first()?, *xs.get(1)?, *xs.get(2)?];
            Node::FlashAttention([s, b, q, k, v])
        }
        Op::Input { .. } | Op::Weight { .. } | Op::Output { .. } | Op::KvAppend { .. } => {
            return None
        }
    })
}

/// The IR op of an e-node and its tensor operands; for `reshape` also the result shape.
/// `None` for attribute and leaf nodes, or if an attribute child is malformed.
pub fn op_of_node(
    n: &Node,
    attr: impl Fn(Id) -> Option<AttrVal>,
) -> Option<(Op, Vec<Id>, Option<Vec<Dim>>)> {
    let f = |id: Id| attr(id).and_then(|a| a.as_f32());
    let u = |id: Id| {
        attr(id)
            .and_then(|a| a.as_int())
            .and_then(|i| u32::try_from(i).ok())
    };
    Some(match n {
        Node::CausalMask => (Op::CausalMask, vec![], None),
        Node::Embedding(c) => (Op::Embedding, c.to_vec(), None),
        Node::RmsNorm([e, x]) => (Op::RmsNorm { eps: f(*e)? }, vec![*x], None),
        Node::RmsNormScaled([e, x, w]) => (Op::RmsNorm { eps: f(*e)? }, vec![*x, *w], None),
        Node::Matmul(c) => (Op::Matmul, c.to_vec(), None),
        Node::Dequant(x) => (Op::Dequant, vec![*x], None),
        Node::QMatmul(c) => (Op::QMatmul, c.to_vec(), None),
        Node::Rope([a, x]) => match attr(*a)? {
            AttrVal::Rope { theta, dims, neox } => (
                Op::Rope {
                    theta: f32::from_bits(theta),
                    dims,
                    style: if neox {
                        RopeStyle::Neox
                    } else {
                        RopeStyle::Normal
                    },
                },
                vec![*x],
                None,
            ),
            _ => return None,
        },
        Node::Reshape([s, x]) => (Op::Reshape, vec![*x], Some(attr(*s)?.as_shape()?)),
        Node::Transpose([p, x]) => {
            let perm = attr(*p)?
                .as_ints()?
                .iter()
                .map(|&i| u32::try_from(i).ok())
                .collect::<Option<Vec<u32>>>()?;
            (Op::Transpose { perm }, vec![*x], None)
        }
        Node::RepeatKv([n, x]) => (Op::RepeatKv { n_rep: u(*n)? }, vec![*x], None),
        Node::Scale([a, x]) => (Op::Scale { factor: f(*a)? }, vec![*x], None),
        Node::Softmax(x) => (Op::Softmax, vec![*x], None),
        Node::Silu(x) => (Op::Silu, vec![*x], None),
        Node::Mul(c) => (Op::Mul, c.to_vec(), None),
        Node::Add(c) => (Op::Add, c.to_vec(), None),
        Node::TakeLast(x) => (Op::TakeLast, vec![*x], None),
        Node::SwiGlu(c) => (Op::SwiGlu, c.to_vec(), None),
        Node::FlashAttention([s, b, q, k, v]) => (
            Op::FlashAttention {
                scale: f(*s)?,
                block: u(*b)?,
            },
            vec![*q, *k, *v],
            None,
        ),
        Node::Attr(_) | Node::Leaf(_) => return None,
    })
}

/// What an e-class is: an attribute, a well-typed tensor, or an ill-typed term some rule
/// proposed (never unioned with a typed class, so never extracted).
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Attr(AttrVal),
    Ty(TensorType),
    Bad(String),
}

impl Data {
    pub fn ty(&self) -> Option<&TensorType> {
        match self {
            Data::Ty(t) => Some(t),
            _ => None,
        }
    }
}

/// Types e-classes; holds the island's leaf types.
pub struct TypeAnalysis {
    pub leaves: Vec<TensorType>,
    /// `infer_type` wants a graph for `kv_append` (never in an island); an empty one serves.
    empty: Graph,
}

impl TypeAnalysis {
    pub fn new(leaves: Vec<TensorType>) -> TypeAnalysis {
        TypeAnalysis {
            leaves,
            empty: Graph::new(""),
        }
    }
}

/// The type an e-node produces given its children's data.
pub fn infer_node(n: &Node, data: impl Fn(Id) -> Data, empty: &Graph) -> Data {
    match n {
        Node::Attr(a) => return Data::Attr(a.clone()),
        Node::Leaf(_) => return Data::Bad("leaf typed by the analysis".into()),
        _ => {}
    }
    let attr = |id: Id| match data(id) {
        Data::Attr(a) => Some(a),
        _ => None,
    };
    let Some((op, xs, shape)) = op_of_node(n, attr) else {
        return Data::Bad(format!("malformed attributes on {n}"));
    };
    let mut tys = Vec::with_capacity(xs.len());
    for x in &xs {
        match data(*x) {
            Data::Ty(t) => tys.push(t),
            other => return Data::Bad(format!("operand is not a tensor: {other:?}")),
        }
    }
    if let Some(shape) = shape {
        let t = TensorType::new(tys[0].dtype, shape);
        return if t.numel_poly().is_some() && t.numel_poly() == tys[0].numel_poly() {
            Data::Ty(t)
        } else {
            Data::Bad("reshape changes the element count".into())
        };
    }
    let refs: Vec<&TensorType> = tys.iter().collect();
    match lpuc_ir::verify::infer_opt(&op, &refs, empty) {
        Ok(Some(t)) => Data::Ty(t),
        Ok(None) => Data::Bad("no inferred type".into()),
        Err(m) => Data::Bad(m),
    }
}

impl Analysis<Node> for TypeAnalysis {
    type Data = Data;

    fn make(eg: &mut EGraph<Node, Self>, n: &Node, _id: Id) -> Data {
        if let Node::Leaf(l) = n {
            return match eg.analysis.leaves.get(l.0 as usize) {
                Some(t) => Data::Ty(t.clone()),
                None => Data::Bad(format!("unknown leaf {l}")),
            };
        }
        infer_node(n, |id| eg[id].data.clone(), &eg.analysis.empty)
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        // Rules only union classes of equal type (see `rules::Checked`), so the two agree;
        // a `Bad` class that somehow joins a typed one takes the type.
        match (&*a, &b) {
            (Data::Bad(_), Data::Ty(_)) => {
                *a = b;
                DidMerge(true, false)
            }
            (x, y) if x == y => DidMerge(false, false),
            _ => DidMerge(false, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_text_round_trips() {
        for s in [
            "#f0.25",
            "#i2",
            "#ints:0,1,3,2",
            "#shape:B,S,4,16",
            "#shape:B,P+S,2*S+1",
            "#rope:10000:16:normal",
        ] {
            let a: AttrVal = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert!("#q".parse::<AttrVal>().is_err());
    }
}

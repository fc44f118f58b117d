//! Binary artifacts. The one place that knows the binary encoding: bincode (its serde
//! integration) today. bincode's maintainers have stopped and the RustSec advisory database
//! flags it as unmaintained, so nothing else in lpuc names it: swapping the format means
//! changing this file only. Every artifact starts with a magic and a format version so a
//! stale or foreign file is rejected with a clear error instead of misparsed.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::graph::{Graph, Loc, Node, StateDecl, Value, WeightSource};
use crate::op::{Attr, Op};
use crate::types::{SymTable, TensorType};

const MAGIC: &[u8; 8] = b"LPUCART\0";
const VERSION: u32 = 1;
/// Refuse to decode artifacts claiming to be larger than this (no allocation driven by an
/// unchecked length field).
const LIMIT: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("not an lpuc artifact (bad magic at byte 0)")]
    BadMagic,
    #[error("artifact kind \"{found}\" where \"{expected}\" was expected")]
    WrongKind { expected: String, found: String },
    #[error("artifact format version {found}, this lpuc reads version {VERSION}")]
    Version { found: u32 },
    #[error("corrupt artifact: {0}")]
    Decode(String),
    #[error("cannot encode artifact: {0}")]
    Encode(String),
    #[error("artifact holds an invalid graph: {0}")]
    Graph(String),
}

/// bincode's errors `Display` as Rust debug structs (`Utf8 { inner: … }`); this says what
/// is wrong with the file in words.
fn describe(e: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError as E;
    match e {
        E::UnexpectedEnd { additional } => {
            format!(
                "the file ends early (at least {additional} more bytes expected); it is truncated"
            )
        }
        E::LimitExceeded => {
            format!("a length field claims more than the {LIMIT}-byte limit; the file is corrupt")
        }
        E::Utf8 { inner } => format!("a string is not valid UTF-8 ({inner})"),
        E::InvalidCharEncoding(b) => format!("a character is not valid UTF-8 (bytes {b:02x?})"),
        E::InvalidBooleanValue(v) => format!("a boolean byte is {v}, not 0 or 1"),
        E::UnexpectedVariant {
            type_name, found, ..
        } => format!("unknown {} variant {found}", short_type(type_name)),
        E::OutsideUsizeRange(v) => format!("a length of {v} does not fit this machine"),
        E::EmptyEnum { type_name } => {
            format!("a value of the empty type {}", short_type(type_name))
        }
        E::InvalidIntegerType { expected, found } => {
            format!("an integer of type {found:?} where {expected:?} was expected")
        }
        E::ArrayLengthMismatch { required, found } => {
            format!("an array has {found} elements, {required} expected")
        }
        E::Io { inner, .. } => format!("read error: {inner}"),
        E::Other(s) => s.to_string(),
        E::OtherString(s) => s.clone(),
        E::Serde(s) => format!("the data does not match the expected structure ({s:?})"),
        _ => "malformed data".to_string(),
    }
}

/// `lpuc_ir::op::Op` → `Op`.
fn short_type(t: &str) -> &str {
    t.rsplit("::").next().unwrap_or(t)
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Encodes any serde value as a tagged artifact of `kind`.
pub fn encode<T: Serialize>(kind: &str, value: &T) -> Result<Vec<u8>, ArtifactError> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    for part in [
        bincode::serde::encode_to_vec(kind, config()),
        bincode::serde::encode_to_vec(value, config()),
    ] {
        out.extend_from_slice(&part.map_err(|e| ArtifactError::Encode(e.to_string()))?);
    }
    Ok(out)
}

/// Decodes a tagged artifact of `kind`.
pub fn decode<T: DeserializeOwned>(kind: &str, bytes: &[u8]) -> Result<T, ArtifactError> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(ArtifactError::BadMagic);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(ArtifactError::Version { found: version });
    }
    let (found, used): (String, usize) = bincode::serde::decode_from_slice(&bytes[12..], config())
        .map_err(|e| ArtifactError::Decode(describe(&e)))?;
    if found != kind {
        return Err(ArtifactError::WrongKind {
            expected: kind.into(),
            found,
        });
    }
    let body = &bytes[12 + used..];
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| ArtifactError::Decode(describe(&e)))?;
    if used != body.len() {
        return Err(ArtifactError::Decode(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    Ok(value)
}

/// The serialized form of a graph: nodes in printed (topological) order, operands by
/// position in that order. Independent of petgraph's internal layout.
#[derive(Serialize, Deserialize)]
struct GraphDef {
    name: String,
    syms: SymTable,
    weights: WeightSource,
    states: Vec<StateDecl>,
    nodes: Vec<NodeDef>,
}

#[derive(Serialize, Deserialize)]
struct NodeDef {
    op: Op,
    ty: TensorType,
    operands: Vec<u32>,
    annot: Vec<(String, Attr)>,
}

impl Serialize for Graph {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let num = self.numbering();
        let mut order = self.values();
        order.sort_by_key(|v| num[v]);
        let nodes = order
            .iter()
            .map(|v| {
                let n = self.node(*v);
                NodeDef {
                    op: n.op.clone(),
                    ty: n.ty.clone(),
                    operands: self.operands(*v).iter().map(|o| num[o] as u32).collect(),
                    annot: n
                        .annot
                        .iter()
                        .map(|(k, a)| (k.clone(), a.clone()))
                        .collect(),
                }
            })
            .collect();
        GraphDef {
            name: self.name.clone(),
            syms: self.syms.clone(),
            weights: self.weights.clone(),
            states: self.states.clone(),
            nodes,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Graph {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Graph, D::Error> {
        let def = GraphDef::deserialize(d)?;
        let mut g = Graph::new(def.name);
        g.syms = def.syms;
        g.weights = def.weights;
        g.states = def.states;
        let ids: Vec<Value> = def
            .nodes
            .iter()
            .map(|n| {
                let mut node = Node::new(n.op.clone(), n.ty.clone());
                node.annot = n.annot.iter().cloned().collect();
                node.loc = None::<Loc>;
                g.add_node(node, &[])
            })
            .collect();
        for (n, v) in def.nodes.iter().zip(&ids) {
            let ops = n
                .operands
                .iter()
                .map(|&i| {
                    ids.get(i as usize).copied().ok_or_else(|| {
                        serde::de::Error::custom(format!("operand index {i} out of range"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            g.set_operands(*v, &ops);
        }
        Ok(g)
    }
}

pub fn graph_to_bytes(g: &Graph) -> Result<Vec<u8>, ArtifactError> {
    encode("graph", g)
}

pub fn graph_from_bytes(bytes: &[u8]) -> Result<Graph, ArtifactError> {
    decode("graph", bytes)
}

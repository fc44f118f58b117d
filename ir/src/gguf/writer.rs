//! A GGUF v3 writer, for tests, fuzz seeds and tools that emit small models.
//!
//! Invariants: the output follows the layout the reader expects (header, kvs, tensor
//! infos, zero padding to the alignment, then each tensor's bytes padded to the
//! alignment), with tensors placed in the order they were added. The writer does *not*
//! validate its input: duplicate keys, data of the wrong length and the like are written
//! as given, because tests build malformed files with it. [`GgufWriter::to_bytes_with_layout`]
//! reports where every field landed so a test can corrupt one precisely.

use super::parse::{ggml_type_id, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC};
use super::value::{MetaArray, MetaValue};
use crate::dtype::DType;

/// Byte positions of one key/value pair in the written file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvLayout {
    /// The key's u64 length prefix.
    pub key_at: u64,
    /// The u32 value type.
    pub type_at: u64,
    /// The value itself (for arrays: the element type u32, then the u64 length).
    pub value_at: u64,
}

/// Byte positions of one tensor's info fields and data in the written file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorLayout {
    pub info_at: u64,
    pub n_dims_at: u64,
    pub dims_at: u64,
    pub type_at: u64,
    /// The u64 data offset (relative to the data section).
    pub offset_at: u64,
    /// Absolute position of the first data byte.
    pub data_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufLayout {
    pub kvs: Vec<KvLayout>,
    pub tensors: Vec<TensorLayout>,
    pub data_offset: u64,
    pub alignment: u64,
}

#[derive(Clone, Debug)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    bytes: Vec<u8>,
}

/// Builds a GGUF file in memory.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend_from_slice(&a.elem_type_id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        MetaArray::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        MetaArray::Str(v) => v.iter().for_each(|s| put_str(out, s)),
        MetaArray::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        MetaArray::Array(v) => v.iter().for_each(|a| put_array(out, a)),
    }
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::Str(s) => put_str(out, s),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(a) => put_array(out, a),
    }
}

fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    while out.len() as u64 % alignment != 0 {
        out.push(0);
    }
}

impl GgufWriter {
    /// An empty GGUF v3 file.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Write another version number in the header (v2 has the same layout as v3).
    pub fn set_version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    pub fn add_metadata(&mut self, key: impl Into<String>, value: MetaValue) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a tensor; `dims` in GGUF order (innermost first). `bytes` is written as given.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        dtype: DType,
        bytes: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.add_tensor_raw(name, dims, ggml_type_id(dtype), bytes)
    }

    /// Like [`add_tensor`](Self::add_tensor) with a raw ggml type id (to write types lpuc
    /// cannot represent, for tests).
    pub fn add_tensor_raw(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        type_id: u32,
        bytes: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.into(),
            dims: dims.to_vec(),
            type_id,
            bytes: bytes.into(),
        });
        self
    }

    /// The alignment the file will use: a valid `general.alignment` u32, else 32.
    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .rev()
            .find(|(k, _)| k == ALIGNMENT_KEY)
            .and_then(|(_, v)| match v {
                MetaValue::U32(a) if a.is_power_of_two() => Some(*a as u64),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_with_layout().0
    }

    pub fn to_bytes_with_layout(&self) -> (Vec<u8>, GgufLayout) {
        let alignment = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());

        let mut kvs = Vec::with_capacity(self.metadata.len());
        for (k, v) in &self.metadata {
            let key_at = out.len() as u64;
            put_str(&mut out, k);
            let type_at = out.len() as u64;
            out.extend_from_slice(&v.type_id().to_le_bytes());
            let value_at = out.len() as u64;
            put_value(&mut out, v);
            kvs.push(KvLayout {
                key_at,
                type_at,
                value_at,
            });
        }

        // Relative data offsets: each tensor starts aligned, in the order added.
        let mut rel = Vec::with_capacity(self.tensors.len());
        let mut next = 0u64;
        for t in &self.tensors {
            rel.push(next);
            next = (next + t.bytes.len() as u64).div_ceil(alignment) * alignment;
        }

        let mut tensors = Vec::with_capacity(self.tensors.len());
        for (t, &off) in self.tensors.iter().zip(&rel) {
            let info_at = out.len() as u64;
            put_str(&mut out, &t.name);
            let n_dims_at = out.len() as u64;
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            let dims_at = out.len() as u64;
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            let type_at = out.len() as u64;
            out.extend_from_slice(&t.type_id.to_le_bytes());
            let offset_at = out.len() as u64;
            out.extend_from_slice(&off.to_le_bytes());
            tensors.push(TensorLayout {
                info_at,
                n_dims_at,
                dims_at,
                type_at,
                offset_at,
                data_at: 0,
            });
        }

        pad_to(&mut out, alignment);
        let data_offset = out.len() as u64;
        for (t, l) in self.tensors.iter().zip(&mut tensors) {
            l.data_at = out.len() as u64;
            out.extend_from_slice(&t.bytes);
            pad_to(&mut out, alignment);
        }
        (
            out,
            GgufLayout {
                kvs,
                tensors,
                data_offset,
                alignment,
            },
        )
    }
}

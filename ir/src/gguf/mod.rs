//! GGUF container reader (versions 2 and 3, little-endian) and a small writer.
//!
//! A [`GgufFile`] owns the file's bytes (a read-only memory map from [`GgufFile::open`],
//! or a `Vec` from [`GgufFile::from_bytes`]) and the parsed metadata and tensor table.
//! Tensor data is never copied: [`GgufFile::tensor_data`] is a slice of the map.
//!
//! Invariants a successfully constructed `GgufFile` keeps (checked once, in `parse`):
//! - metadata keys and tensor names are unique and valid UTF-8, in file order;
//! - every tensor has 0..=4 dims, none 0, an element count that fits `i64`, a supported
//!   dtype whose block size divides the innermost dim, and `size == dtype.bytes_for(n)`;
//! - every tensor's data `[offset, offset + size)` is absolute, aligned to the file's
//!   alignment relative to the data section, inside the file, and disjoint from the others.
//!
//! So accessors never fail or panic on a tensor of this file. The parser treats the input
//! as hostile: see `parse.rs` for how allocation and recursion are bounded.
//!
//! Dims are kept in GGUF order (`ne[0]` first, innermost); [`TensorInfo::shape`] gives the
//! row-major shape the rest of lpuc uses.

mod error;
mod parse;
mod value;
mod writer;

pub use error::GgufError;
pub use parse::{
    dtype_from_ggml, ggml_type_id, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, MAX_NAME_LEN,
    MAX_NESTING,
};
pub use value::{type_id as value_type_id, type_name as value_type_name};
pub use value::{MetaArray, MetaValue, StrArray};
pub use writer::{GgufLayout, GgufWriter, KvLayout, TensorLayout};

use crate::dtype::DType;
use crate::quant;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

/// One tensor's entry in the tensor table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is `ne[0]`, the innermost (contiguous) axis.
    pub dims: Vec<u64>,
    pub dtype: DType,
    /// Absolute file offset of the first data byte.
    pub offset: u64,
    /// Data size in bytes (`dtype.bytes_for(n_elems)`).
    pub size: u64,
}

impl TensorInfo {
    /// Row-major shape (dims reversed): a weight with `ne = [576, 1536]` is `[1536, 576]`.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Number of elements (1 for a 0-dim tensor). Cannot overflow for a parsed tensor.
    pub fn n_elems(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file and its bytes.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    info_offsets: Vec<u64>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("len", &self.len())
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::other(
                "it is a directory; give the path of the .gguf file inside it",
            )));
        }
        if !meta.is_file() {
            // A device or pipe cannot be mapped, and its length says nothing.
            return Err(io(std::io::Error::other(
                "it is not a regular file (a device or a pipe); give a .gguf file",
            )));
        }
        let file = File::open(path).map_err(io)?;
        let len = meta.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; the parser reports it better.
            return Self::from_storage(Storage::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and private to this process. As with every mmap
        // reader, another process truncating or rewriting the file while it is mapped is
        // undefined behaviour; model files are treated as immutable while lpuc runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_storage(Storage::Mmap(map))
    }

    /// Parses an in-memory file (tests, fuzzing, generated files).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let p = parse::parse(storage.bytes())?;
        Ok(GgufFile {
            storage,
            version: p.version,
            metadata: p.metadata,
            meta_index: p.meta_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
            info_offsets: p.info_offsets,
            alignment: p.alignment,
            data_offset: p.data_offset,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// File size in bytes.
    pub fn len(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Tensor data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Any integer type whose value fits u32.
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key)?.as_u32()
    }

    /// Any integer type whose value fits u64.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any integer type whose value fits i64.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// f32, or f64 narrowed to f32.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    pub fn get_array(&self, key: &str) -> Option<&MetaArray> {
        self.get(key)?.as_array()
    }

    /// A string array as borrowed strings (e.g. `tokenizer.ggml.tokens`, `merges`).
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        Some(self.get_str_array_packed(key)?.iter().collect())
    }

    /// A string array in its packed form, without building a vector.
    pub fn get_str_array_packed(&self, key: &str) -> Option<&StrArray> {
        self.get_array(key)?.as_str_array()
    }

    /// An integer array of any element type whose values all fit i32
    /// (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get_array(key)?.to_i32_vec()
    }

    /// An f32 (or f64) array (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get_array(key)?.to_f32_vec()
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Byte offset of the tensor's info record (for messages).
    pub fn tensor_info_offset(&self, name: &str) -> Option<u64> {
        self.tensor_index.get(name).map(|&i| self.info_offsets[i])
    }

    /// The tensor's raw bytes, zero-copy. For a `TensorInfo` of this file this is exactly
    /// `size` bytes; for a foreign one whose range is not inside the file it is empty.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let bytes = self.storage.bytes();
        usize::try_from(t.offset)
            .ok()
            .zip(usize::try_from(t.size).ok())
            .and_then(|(start, size)| bytes.get(start..start.checked_add(size)?))
            .unwrap_or(&[])
    }

    /// The tensor dequantized to f32, in storage order (row-major over [`TensorInfo::shape`]).
    pub fn tensor_f32(&self, t: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let err = |source| GgufError::Dequantize {
            tensor: t.name.clone(),
            offset: self.tensor_info_offset(&t.name).unwrap_or(0),
            source,
        };
        let data = self.tensor_data(t);
        // Check the length before allocating the output, in case `t` is not ours.
        let expected = t.dtype.bytes_for(t.n_elems());
        if expected != Some(data.len() as u64) {
            return Err(err(quant::QuantError::LengthMismatch {
                dtype: t.dtype,
                n: t.n_elems(),
                expected: expected.unwrap_or(u64::MAX),
                got: data.len() as u64,
            }));
        }
        quant::dequantize_to_vec(t.dtype, data).map_err(err)
    }
}

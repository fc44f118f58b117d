//! Errors from reading a GGUF file.
//!
//! Invariant: every parse error names *what* was being read (the header field, the key,
//! the tensor) and the absolute byte offset where that item starts, so a hex dump of the
//! file is enough to see the problem. One variant per class of malformation, so tests and
//! callers can match on the class rather than on message text.

use crate::dtype::DType;
use crate::quant::QuantError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error, miette::Diagnostic)]
pub enum GgufError {
    #[error("cannot read GGUF file '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("byte 0: bad magic {found:02x?} ({shown:?}); a GGUF file starts with \"GGUF\"")]
    BadMagic { found: [u8; 4], shown: String },

    #[error(
        "byte {offset}: {detail}; the file looks big-endian, and only little-endian GGUF is supported"
    )]
    BigEndian { offset: u64, detail: String },

    #[error("byte 4: GGUF version {version} is not supported (lpuc reads versions 2 and 3){hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },

    #[error(
        "{what} at byte {offset}: needs {need} bytes but only {available} remain (file is {file_len} bytes)"
    )]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        available: u64,
        file_len: u64,
    },

    #[error(
        "{what} at byte {offset}: count {count} is impossible, at {min_each} bytes each it needs more than the {available} bytes left in the file"
    )]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        min_each: u64,
        available: u64,
    },

    #[error("{what} at byte {offset}: not valid UTF-8 ({reason})")]
    BadUtf8 {
        what: String,
        offset: u64,
        reason: String,
    },

    #[error("{what} at byte {offset}: unknown metadata value type id {type_id} (valid: 0..=12)")]
    UnknownValueType {
        what: String,
        offset: u64,
        type_id: u32,
    },

    #[error("{what} at byte {offset}: bool byte is {value}, must be 0 or 1")]
    BadBool {
        what: String,
        offset: u64,
        value: u8,
    },

    #[error("{what} at byte {offset}: arrays nested deeper than {max} levels")]
    NestingTooDeep { what: String, offset: u64, max: u32 },

    #[error("key '{key}' at byte {offset}: duplicate key (first defined at byte {first})")]
    DuplicateKey {
        key: String,
        offset: u64,
        first: u64,
    },

    #[error("key 'general.alignment' at byte {offset}: {detail}")]
    BadAlignment { offset: u64, detail: String },

    #[error(
        "tensor '{tensor}' (info at byte {offset}): name is {len} bytes, over GGUF's limit of 64"
    )]
    NameTooLong {
        tensor: String,
        offset: u64,
        len: u64,
    },

    #[error("tensor '{tensor}' (info at byte {offset}): {n_dims} dimensions, at most 4 allowed")]
    TooManyDims {
        tensor: String,
        offset: u64,
        n_dims: u32,
    },

    #[error("tensor '{tensor}' (info at byte {offset}): dimension {axis} is 0 (dims {dims:?})")]
    ZeroDim {
        tensor: String,
        offset: u64,
        axis: usize,
        dims: Vec<u64>,
    },

    #[error(
        "tensor '{tensor}' (info at byte {offset}): dims {dims:?} overflow the element or byte count"
    )]
    ShapeOverflow {
        tensor: String,
        offset: u64,
        dims: Vec<u64>,
    },

    #[error("tensor '{tensor}' (info at byte {offset}): unknown ggml type id {type_id}")]
    UnknownTensorType {
        tensor: String,
        offset: u64,
        type_id: u32,
    },

    #[error(
        "tensor '{tensor}' (info at byte {offset}): ggml type {ggml_name} (id {type_id}) is not supported by lpuc"
    )]
    UnsupportedTensorType {
        tensor: String,
        offset: u64,
        type_id: u32,
        ggml_name: &'static str,
    },

    #[error(
        "tensor '{tensor}' (info at byte {offset}): innermost dimension {ne0} is not a multiple of the {dtype} block size {block}"
    )]
    NotBlockMultiple {
        tensor: String,
        offset: u64,
        ne0: u64,
        dtype: DType,
        block: u64,
    },

    #[error(
        "tensor '{tensor}' (info at byte {offset}): duplicate tensor name (first at byte {first})"
    )]
    DuplicateTensor {
        tensor: String,
        offset: u64,
        first: u64,
    },

    #[error(
        "tensor '{tensor}' (info at byte {offset}): data offset {data_offset} (relative to the data section) is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        data_offset: u64,
        alignment: u64,
    },

    #[error(
        "tensor '{tensor}' (info at byte {offset}): data [offset {start}, +{size}) runs past end of file ({file_len} bytes)"
    )]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        start: u64,
        size: u64,
        file_len: u64,
    },

    #[error(
        "tensor '{tensor}' (info at byte {offset}): data [{start}, {end}) overlaps tensor '{other}' (info at byte {other_offset}) data [{other_start}, {other_end})"
    )]
    OverlappingTensors {
        tensor: String,
        offset: u64,
        start: u64,
        end: u64,
        other: String,
        other_offset: u64,
        other_start: u64,
        other_end: u64,
    },

    #[error("tensor '{tensor}' (info at byte {offset}): {source}")]
    Dequantize {
        tensor: String,
        offset: u64,
        #[source]
        source: QuantError,
    },
}

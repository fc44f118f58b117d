//! GGUF metadata values: the 13 value types, typed arrays, and a packed string array.
//!
//! Invariants: arrays are homogeneous by construction (one Rust vector per element type),
//! so a value read from a file and written back has the same type ids. String arrays are
//! packed into one buffer plus end offsets, so a 49k-entry vocabulary costs two
//! allocations instead of 49k.

use std::fmt;

/// GGUF metadata value type ids (`gguf_type` in ggml).
pub mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STR: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Display name of a value type id, for messages.
pub fn type_name(id: u32) -> &'static str {
    match id {
        type_id::U8 => "u8",
        type_id::I8 => "i8",
        type_id::U16 => "u16",
        type_id::I16 => "i16",
        type_id::U32 => "u32",
        type_id::I32 => "i32",
        type_id::F32 => "f32",
        type_id::BOOL => "bool",
        type_id::STR => "string",
        type_id::ARRAY => "array",
        type_id::U64 => "u64",
        type_id::I64 => "i64",
        type_id::F64 => "f64",
        _ => "unknown",
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(MetaArray),
}

/// A homogeneous array value. `Array` holds arrays of arrays; each inner array carries its
/// own element type, as in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(StrArray),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Array(Vec<MetaArray>),
}

/// An array of strings stored back to back in one `String`; `ends[i]` is the byte offset
/// where string `i` ends. Each element is valid UTF-8 on its own (checked when read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StrArray {
    data: String,
    ends: Vec<usize>,
}

impl StrArray {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        StrArray {
            data: String::new(),
            ends: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, s: &str) {
        self.data.push_str(s);
        self.ends.push(self.data.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.data.get(start..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(move |i| self.get(i).unwrap_or(""))
    }

    /// Total bytes of string data (without length prefixes).
    pub fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl std::ops::Index<usize> for StrArray {
    type Output = str;

    /// Panics on an out-of-range index, like slice indexing.
    fn index(&self, i: usize) -> &str {
        match self.get(i) {
            Some(s) => s,
            None => panic!("StrArray index {i} out of range (len {})", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a StrArray {
    type Item = &'a str;
    type IntoIter = Box<dyn ExactSizeIterator<Item = &'a str> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<'a> FromIterator<&'a str> for StrArray {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut a = StrArray::new();
        for s in iter {
            a.push(s);
        }
        a
    }
}

impl MetaValue {
    /// The GGUF value type id.
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => type_id::U8,
            MetaValue::I8(_) => type_id::I8,
            MetaValue::U16(_) => type_id::U16,
            MetaValue::I16(_) => type_id::I16,
            MetaValue::U32(_) => type_id::U32,
            MetaValue::I32(_) => type_id::I32,
            MetaValue::F32(_) => type_id::F32,
            MetaValue::Bool(_) => type_id::BOOL,
            MetaValue::Str(_) => type_id::STR,
            MetaValue::U64(_) => type_id::U64,
            MetaValue::I64(_) => type_id::I64,
            MetaValue::F64(_) => type_id::F64,
            MetaValue::Array(_) => type_id::ARRAY,
        }
    }

    /// "u32", "string", "array of i32", ...
    pub fn type_name(&self) -> String {
        match self {
            MetaValue::Array(a) => format!("array of {}", type_name(a.elem_type_id())),
            v => type_name(v.type_id()).to_string(),
        }
    }

    /// Any integer value, widened; `None` for non-integers.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v as i128,
            MetaValue::I8(v) => v as i128,
            MetaValue::U16(v) => v as i128,
            MetaValue::I16(v) => v as i128,
            MetaValue::U32(v) => v as i128,
            MetaValue::I32(v) => v as i128,
            MetaValue::U64(v) => v as i128,
            MetaValue::I64(v) => v as i128,
            _ => return None,
        })
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    pub fn as_u32(&self) -> Option<u32> {
        self.as_i128().and_then(|v| u32::try_from(v).ok())
    }

    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// f32 as is; f64 narrowed (metadata floats are hyperparameters, where f32 suffices).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl MetaArray {
    /// The GGUF type id of the elements.
    pub fn elem_type_id(&self) -> u32 {
        match self {
            MetaArray::U8(_) => type_id::U8,
            MetaArray::I8(_) => type_id::I8,
            MetaArray::U16(_) => type_id::U16,
            MetaArray::I16(_) => type_id::I16,
            MetaArray::U32(_) => type_id::U32,
            MetaArray::I32(_) => type_id::I32,
            MetaArray::F32(_) => type_id::F32,
            MetaArray::Bool(_) => type_id::BOOL,
            MetaArray::Str(_) => type_id::STR,
            MetaArray::U64(_) => type_id::U64,
            MetaArray::I64(_) => type_id::I64,
            MetaArray::F64(_) => type_id::F64,
            MetaArray::Array(_) => type_id::ARRAY,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::Str(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Integer arrays of any element type, each element converted to i32 if it fits.
    pub fn to_i32_vec(&self) -> Option<Vec<i32>> {
        fn conv<T: Copy>(v: &[T]) -> Option<Vec<i32>>
        where
            i32: TryFrom<T>,
        {
            v.iter().map(|&x| i32::try_from(x).ok()).collect()
        }
        match self {
            MetaArray::U8(v) => conv(v),
            MetaArray::I8(v) => conv(v),
            MetaArray::U16(v) => conv(v),
            MetaArray::I16(v) => conv(v),
            MetaArray::U32(v) => conv(v),
            MetaArray::I32(v) => Some(v.clone()),
            MetaArray::U64(v) => conv(v),
            MetaArray::I64(v) => conv(v),
            _ => None,
        }
    }

    /// Float arrays (f32 as is, f64 narrowed).
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        match self {
            MetaArray::F32(v) => Some(v.clone()),
            MetaArray::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            _ => None,
        }
    }

    pub fn as_str_array(&self) -> Option<&StrArray> {
        match self {
            MetaArray::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for MetaValue {
    /// Short human form; long arrays are summarised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::Str(v) => write!(f, "{v:?}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::Array(a) => write!(f, "[{} x {}]", a.len(), type_name(a.elem_type_id())),
        }
    }
}

//! The GGUF parser: header, metadata, tensor infos, then whole-file checks on the tensors.
//!
//! Invariants, all of which exist because the input may be hostile:
//! - Every read goes through [`Cursor`], which checks the remaining length first, so the
//!   parser cannot index out of bounds.
//! - No allocation is sized by a header field until that field has been checked against
//!   the bytes left: a count of `n` items that each take at least `k` bytes must satisfy
//!   `n * k <= remaining`. Memory is therefore O(file size) and every loop is bounded by
//!   the file size, so there is no hang either.
//! - Nested arrays are limited to [`MAX_NESTING`] levels so recursion cannot overflow the
//!   stack.
//! - Arithmetic on offsets and sizes is checked; overflow is reported, never wrapped.

use super::error::GgufError;
use super::value::{type_id as vt, MetaArray, MetaValue, StrArray};
use super::TensorInfo;
use crate::dtype::DType;
use std::collections::HashMap;

pub const MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// GGUF's limit on tensor name length.
pub const MAX_NAME_LEN: u64 = 64;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// Deepest array-of-array nesting accepted. Real files use none; the bound keeps the
/// recursive reader's stack use small.
pub const MAX_NESTING: u32 = 8;

/// The lpuc dtype for a ggml type id, or why there is none: `Err(Some(name))` for a ggml
/// type lpuc does not support, `Err(None)` for an id ggml does not define.
pub fn dtype_from_ggml(id: u32) -> Result<DType, Option<&'static str>> {
    Ok(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        8 => DType::Q8_0,
        12 => DType::Q4K,
        14 => DType::Q6K,
        24 => DType::I8,
        26 => DType::I32,
        30 => DType::BF16,
        _ => {
            return Err(Some(match id {
                4 => "Q4_2 (removed from ggml)",
                5 => "Q4_3 (removed from ggml)",
                6 => "Q5_0",
                7 => "Q5_1",
                9 => "Q8_1",
                10 => "Q2_K",
                11 => "Q3_K",
                13 => "Q5_K",
                15 => "Q8_K",
                16 => "IQ2_XXS",
                17 => "IQ2_XS",
                18 => "IQ3_XXS",
                19 => "IQ1_S",
                20 => "IQ4_NL",
                21 => "IQ3_S",
                22 => "IQ2_S",
                23 => "IQ4_XS",
                25 => "I16",
                27 => "I64",
                28 => "F64",
                29 => "IQ1_M",
                31 => "Q4_0_4_4 (removed from ggml)",
                32 => "Q4_0_4_8 (removed from ggml)",
                33 => "Q4_0_8_8 (removed from ggml)",
                34 => "TQ1_0",
                35 => "TQ2_0",
                36 => "IQ4_NL_4_4 (removed from ggml)",
                37 => "IQ4_NL_4_8 (removed from ggml)",
                38 => "IQ4_NL_8_8 (removed from ggml)",
                39 => "MXFP4",
                40 => "NVFP4",
                41 => "Q1_0",
                _ => return Err(None),
            }))
        }
    })
}

/// The ggml type id of an lpuc dtype (inverse of [`dtype_from_ggml`]).
pub fn ggml_type_id(dtype: DType) -> u32 {
    match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 8,
        DType::Q4K => 12,
        DType::Q6K => 14,
        DType::I8 => 24,
        DType::I32 => 26,
        DType::BF16 => 30,
    }
}

/// Bounds-checked little-endian reader over the whole file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let avail = self.remaining();
        if n > avail {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                available: avail,
                file_len: self.buf.len() as u64,
            });
        }
        // n <= avail <= usize::MAX, so the cast and the slice are in range.
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Rejects `count` items of at least `min_each` bytes that cannot fit in what is
    /// left; called before any allocation sized by `count`.
    fn check_count(
        &self,
        count: u64,
        min_each: u64,
        at: usize,
        what: &dyn Fn() -> String,
    ) -> Result<usize, GgufError> {
        let fits = count
            .checked_mul(min_each)
            .is_some_and(|b| b <= self.remaining());
        match usize::try_from(count) {
            Ok(n) if fits => Ok(n),
            _ => Err(GgufError::CountTooLarge {
                what: what(),
                offset: at as u64,
                count,
                min_each,
                available: self.remaining(),
            }),
        }
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes (no terminator).
    fn str_bytes(&mut self, what: &dyn Fn() -> String) -> Result<(&'a str, u64), GgufError> {
        let at = self.pos as u64;
        let len = self.u64(&|| format!("{} (string length)", what()))?;
        let bytes = self.take(len, &|| format!("{} (string of {len} bytes)", what()))?;
        let s = std::str::from_utf8(bytes).map_err(|e| GgufError::BadUtf8 {
            what: what(),
            offset: at,
            reason: e.to_string(),
        })?;
        Ok((s, at))
    }
}

/// Minimum encoded size of one array element of value type `ty`, or `None` if `ty` is
/// not a GGUF value type. Strings need their 8-byte length, nested arrays their 12-byte
/// type and length.
fn min_elem_size(ty: u32) -> Option<u64> {
    Some(match ty {
        vt::U8 | vt::I8 | vt::BOOL => 1,
        vt::U16 | vt::I16 => 2,
        vt::U32 | vt::I32 | vt::F32 => 4,
        vt::U64 | vt::I64 | vt::F64 | vt::STR => 8,
        vt::ARRAY => 12,
        _ => return None,
    })
}

fn fixed<const N: usize, T>(
    cur: &mut Cursor<'_>,
    n: usize,
    what: &dyn Fn() -> String,
    conv: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    // The caller has checked n * N <= remaining, so this take succeeds and the vector is
    // sized by bytes that exist.
    let bytes = cur.take((n * N) as u64, what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            conv(a)
        })
        .collect())
}

fn read_bool(cur: &mut Cursor<'_>, what: &dyn Fn() -> String) -> Result<bool, GgufError> {
    let at = cur.pos as u64;
    match cur.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(GgufError::BadBool {
            what: what(),
            offset: at,
            value,
        }),
    }
}

fn read_value(
    cur: &mut Cursor<'_>,
    ty: u32,
    ty_at: usize,
    what: &dyn Fn() -> String,
) -> Result<MetaValue, GgufError> {
    Ok(match ty {
        vt::U8 => MetaValue::U8(cur.u8(what)?),
        vt::I8 => MetaValue::I8(cur.u8(what)? as i8),
        vt::U16 => MetaValue::U16(u16::from_le_bytes(cur.array(what)?)),
        vt::I16 => MetaValue::I16(i16::from_le_bytes(cur.array(what)?)),
        vt::U32 => MetaValue::U32(cur.u32(what)?),
        vt::I32 => MetaValue::I32(i32::from_le_bytes(cur.array(what)?)),
        vt::F32 => MetaValue::F32(f32::from_le_bytes(cur.array(what)?)),
        vt::BOOL => MetaValue::Bool(read_bool(cur, what)?),
        vt::STR => MetaValue::Str(cur.str_bytes(what)?.0.to_owned()),
        vt::U64 => MetaValue::U64(cur.u64(what)?),
        vt::I64 => MetaValue::I64(i64::from_le_bytes(cur.array(what)?)),
        vt::F64 => MetaValue::F64(f64::from_le_bytes(cur.array(what)?)),
        vt::ARRAY => MetaValue::Array(read_array(cur, what, 1)?),
        type_id => {
            return Err(GgufError::UnknownValueType {
                what: what(),
                offset: ty_at as u64,
                type_id,
            })
        }
    })
}

/// An array value: u32 element type, u64 count, then the elements.
fn read_array(
    cur: &mut Cursor<'_>,
    what: &dyn Fn() -> String,
    depth: u32,
) -> Result<MetaArray, GgufError> {
    let at = cur.pos;
    if depth > MAX_NESTING {
        return Err(GgufError::NestingTooDeep {
            what: what(),
            offset: at as u64,
            max: MAX_NESTING,
        });
    }
    let ty = cur.u32(&|| format!("{} (array element type)", what()))?;
    let min = min_elem_size(ty).ok_or_else(|| GgufError::UnknownValueType {
        what: format!("{} (array element type)", what()),
        offset: at as u64,
        type_id: ty,
    })?;
    let count = cur.u64(&|| format!("{} (array length)", what()))?;
    let n = cur.check_count(count, min, at, &|| {
        format!("{} (array of {})", what(), super::value::type_name(ty))
    })?;
    let elems = &|| format!("{} (array elements)", what());
    Ok(match ty {
        vt::U8 => MetaArray::U8(fixed::<1, _>(cur, n, elems, |b| b[0])?),
        vt::I8 => MetaArray::I8(fixed::<1, _>(cur, n, elems, |b| b[0] as i8)?),
        vt::U16 => MetaArray::U16(fixed(cur, n, elems, u16::from_le_bytes)?),
        vt::I16 => MetaArray::I16(fixed(cur, n, elems, i16::from_le_bytes)?),
        vt::U32 => MetaArray::U32(fixed(cur, n, elems, u32::from_le_bytes)?),
        vt::I32 => MetaArray::I32(fixed(cur, n, elems, i32::from_le_bytes)?),
        vt::F32 => MetaArray::F32(fixed(cur, n, elems, f32::from_le_bytes)?),
        vt::U64 => MetaArray::U64(fixed(cur, n, elems, u64::from_le_bytes)?),
        vt::I64 => MetaArray::I64(fixed(cur, n, elems, i64::from_le_bytes)?),
        vt::F64 => MetaArray::F64(fixed(cur, n, elems, f64::from_le_bytes)?),
        vt::BOOL => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(read_bool(cur, &|| format!("{} element #{i}", what()))?);
            }
            MetaArray::Bool(v)
        }
        vt::STR => {
            let mut v = StrArray::with_capacity(n);
            for i in 0..n {
                v.push(cur.str_bytes(&|| format!("{} element #{i}", what()))?.0);
            }
            MetaArray::Str(v)
        }
        // vt::ARRAY; min_elem_size has already rejected unknown ids.
        _ => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(read_array(
                    cur,
                    &|| format!("{} element #{i}", what()),
                    depth + 1,
                )?);
            }
            MetaArray::Array(v)
        }
    })
}

/// Everything the parser learned; `GgufFile` wraps it with the storage.
pub(super) struct Parsed {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub meta_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    /// Where each tensor's info record starts, for error messages after parsing.
    pub info_offsets: Vec<u64>,
    pub alignment: u64,
    pub data_offset: u64,
}

pub(super) fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor { buf, pos: 0 };
    let file_len = buf.len() as u64;

    // --- Header -------------------------------------------------------------------------
    let magic = cur.array::<4>(&|| "header: magic".to_string())?;
    if magic != MAGIC {
        let mut rev = magic;
        rev.reverse();
        if rev == MAGIC {
            return Err(GgufError::BigEndian {
                offset: 0,
                detail: "magic reads \"FUGG\" (\"GGUF\" byte-swapped)".into(),
            });
        }
        return Err(GgufError::BadMagic {
            found: magic,
            shown: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let version = cur.u32(&|| "header: version".to_string())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(GgufError::UnsupportedVersion {
                version,
                hint: "; version 1 used 32-bit counts and lengths, re-convert the model",
            })
        }
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(GgufError::BigEndian {
                offset: 4,
                detail: format!(
                    "version reads {v:#010x}, which is version {} byte-swapped",
                    v.swap_bytes()
                ),
            })
        }
        _ => return Err(GgufError::UnsupportedVersion { version, hint: "" }),
    }
    let n_tensors_at = cur.pos;
    let n_tensors = cur.u64(&|| "header: tensor_count".to_string())?;
    let n_kv_at = cur.pos;
    let n_kv = cur.u64(&|| "header: metadata_kv_count".to_string())?;
    // A kv takes at least 8 (key length) + 4 (type) + 1 (smallest value) bytes; a tensor
    // info at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
    let n_kv = cur.check_count(n_kv, 13, n_kv_at, &|| "header: metadata_kv_count".into())?;
    let n_tensors = cur.check_count(n_tensors, 24, n_tensors_at, &|| {
        "header: tensor_count".into()
    })?;

    // --- Metadata -----------------------------------------------------------------------
    let mut metadata = Vec::with_capacity(n_kv);
    let mut meta_index: HashMap<String, usize> = HashMap::with_capacity(n_kv);
    let mut key_offsets = Vec::with_capacity(n_kv);
    for i in 0..n_kv {
        let (key, key_at) = cur.str_bytes(&|| format!("metadata key #{i}"))?;
        if let Some(&first) = meta_index.get(key) {
            return Err(GgufError::DuplicateKey {
                key: key.to_owned(),
                offset: key_at,
                first: key_offsets[first],
            });
        }
        let what = || format!("value of key '{key}'");
        let ty_at = cur.pos;
        let ty = cur.u32(&|| format!("value type of key '{key}'"))?;
        let value = read_value(&mut cur, ty, ty_at, &what)?;
        meta_index.insert(key.to_owned(), metadata.len());
        key_offsets.push(key_at);
        metadata.push((key.to_owned(), value));
    }

    let alignment = match meta_index.get(ALIGNMENT_KEY).map(|&i| (&metadata[i].1, i)) {
        None => DEFAULT_ALIGNMENT,
        Some((MetaValue::U32(a), _)) if a.is_power_of_two() => *a as u64,
        Some((MetaValue::U32(a), i)) => {
            return Err(GgufError::BadAlignment {
                offset: key_offsets[i],
                detail: format!("alignment {a} is not a power of two"),
            })
        }
        Some((v, i)) => {
            return Err(GgufError::BadAlignment {
                offset: key_offsets[i],
                detail: format!("has type {}, expected u32", v.type_name()),
            })
        }
    };

    // --- Tensor infos -------------------------------------------------------------------
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors);
    let mut tensor_index: HashMap<String, usize> = HashMap::with_capacity(n_tensors);
    let mut info_offsets = Vec::with_capacity(n_tensors);
    // Offsets relative to the data section; made absolute once its start is known.
    let mut rel_offsets = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let info_at = cur.pos as u64;
        let (name, _) = cur.str_bytes(&|| format!("tensor info #{i} name"))?;
        let tensor = || name.to_owned();
        let what = || format!("tensor '{name}' (info at byte {info_at})");
        if name.len() as u64 > MAX_NAME_LEN {
            return Err(GgufError::NameTooLong {
                tensor: tensor(),
                offset: info_at,
                len: name.len() as u64,
            });
        }
        if let Some(&first) = tensor_index.get(name) {
            return Err(GgufError::DuplicateTensor {
                tensor: tensor(),
                offset: info_at,
                first: info_offsets[first],
            });
        }
        let n_dims = cur.u32(&|| format!("{}: n_dims", what()))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: tensor(),
                offset: info_at,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(cur.u64(&|| format!("{}: dims", what()))?);
        }
        if let Some(axis) = dims.iter().position(|&d| d == 0) {
            return Err(GgufError::ZeroDim {
                tensor: tensor(),
                offset: info_at,
                axis,
                dims,
            });
        }
        let type_id = cur.u32(&|| format!("{}: type", what()))?;
        let data_offset = cur.u64(&|| format!("{}: offset", what()))?;

        // ggml keeps element counts in int64_t; anything beyond that is corrupt.
        let n_elems = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64);
        let Some(n_elems) = n_elems else {
            return Err(GgufError::ShapeOverflow {
                tensor: tensor(),
                offset: info_at,
                dims,
            });
        };
        let dtype = dtype_from_ggml(type_id).map_err(|name| match name {
            Some(ggml_name) => GgufError::UnsupportedTensorType {
                tensor: tensor(),
                offset: info_at,
                type_id,
                ggml_name,
            },
            None => GgufError::UnknownTensorType {
                tensor: tensor(),
                offset: info_at,
                type_id,
            },
        })?;
        // Blocks run along the innermost axis, so it (not just the total) must divide.
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % dtype.block_elems() != 0 {
            return Err(GgufError::NotBlockMultiple {
                tensor: tensor(),
                offset: info_at,
                ne0,
                dtype,
                block: dtype.block_elems(),
            });
        }
        let Some(size) = dtype.bytes_for(n_elems) else {
            return Err(GgufError::ShapeOverflow {
                tensor: tensor(),
                offset: info_at,
                dims,
            });
        };
        if data_offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: tensor(),
                offset: info_at,
                data_offset,
                alignment,
            });
        }
        tensor_index.insert(name.to_owned(), tensors.len());
        info_offsets.push(info_at);
        rel_offsets.push(data_offset);
        tensors.push(TensorInfo {
            name: name.to_owned(),
            dims,
            dtype,
            offset: 0,
            size,
        });
    }

    // --- Data section -------------------------------------------------------------------
    // The data section starts at the next multiple of the alignment after the infos.
    let end_of_infos = cur.pos as u64;
    // Saturating: an end so close to u64::MAX is impossible for a real buffer, and a
    // saturated start then fails the bounds check below instead of wrapping.
    let data_offset = end_of_infos.div_ceil(alignment).saturating_mul(alignment);
    for ((t, &rel), &info_at) in tensors.iter_mut().zip(&rel_offsets).zip(&info_offsets) {
        let start = data_offset.checked_add(rel);
        match start.and_then(|s| s.checked_add(t.size)) {
            Some(end) if end <= file_len => t.offset = data_offset + rel,
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    offset: info_at,
                    start: start.unwrap_or(u64::MAX),
                    size: t.size,
                    file_len,
                })
            }
        }
    }
    // Overlap: sort by start; each tensor must end before the next one starts.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].offset, i));
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.size > b.offset {
            // Report the later one in file order as the culprit.
            let (x, y) = if w[0] < w[1] {
                (w[1], w[0])
            } else {
                (w[0], w[1])
            };
            let (tx, ty) = (&tensors[x], &tensors[y]);
            return Err(GgufError::OverlappingTensors {
                tensor: tx.name.clone(),
                offset: info_offsets[x],
                start: tx.offset,
                end: tx.offset + tx.size,
                other: ty.name.clone(),
                other_offset: info_offsets[y],
                other_start: ty.offset,
                other_end: ty.offset + ty.size,
            });
        }
    }

    Ok(Parsed {
        version,
        metadata,
        meta_index,
        tensors,
        tensor_index,
        info_offsets,
        alignment,
        data_offset,
    })
}

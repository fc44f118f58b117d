//! Minimal reader for the metadata (key/value) section of a GGUF file,
//! enough to build a [`VocabData`](super::VocabData). It reads only the header, never tensors.
//!
//! Stop-gap until the workspace GGUF reader (`lpuc_ir::gguf`) is available to
//! this crate; it validates every length against the file size so a corrupt
//! file yields an error, not a panic or a huge allocation.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use super::TokenizerError;

#[derive(Debug, Clone)]
pub(crate) enum Meta {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Arr(Vec<Meta>),
}

struct Rd<R: Read> {
    r: R,
    left: u64,
}

fn bad(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Gguf(msg.into())
}

impl<R: Read> Rd<R> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, TokenizerError> {
        if n > self.left {
            return Err(bad("truncated metadata"));
        }
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| bad(format!("read: {e}")))?;
        self.left -= n;
        Ok(b)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], TokenizerError> {
        let v = self.bytes(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, TokenizerError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, TokenizerError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn string(&mut self) -> Result<String, TokenizerError> {
        let n = self.u64()?;
        let b = self.bytes(n)?;
        // Invalid UTF-8 in a token text cannot be matched anyway; keep it visible.
        Ok(String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Meta, TokenizerError> {
        Ok(match ty {
            0 => Meta::UInt(self.arr::<1>()?[0] as u64),
            1 => Meta::Int(self.arr::<1>()?[0] as i8 as i64),
            2 => Meta::UInt(u16::from_le_bytes(self.arr()?) as u64),
            3 => Meta::Int(i16::from_le_bytes(self.arr()?) as i64),
            4 => Meta::UInt(self.u32()? as u64),
            5 => Meta::Int(i32::from_le_bytes(self.arr()?) as i64),
            6 => Meta::Float(f32::from_le_bytes(self.arr()?) as f64),
            7 => Meta::Bool(self.arr::<1>()?[0] != 0),
            8 => Meta::Str(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(bad("arrays nested too deep"));
                }
                let ety = self.u32()?;
                let n = self.u64()?;
                // every element takes at least one byte
                if n > self.left {
                    return Err(bad("array longer than the file"));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                Meta::Arr(v)
            }
            10 => Meta::UInt(self.u64()?),
            11 => Meta::Int(i64::from_le_bytes(self.arr()?)),
            12 => Meta::Float(f64::from_le_bytes(self.arr()?)),
            t => return Err(bad(format!("unknown value type {t}"))),
        })
    }
}

/// All metadata key/values of a GGUF file.
pub(crate) fn read_metadata(path: &Path) -> Result<MetaMap, TokenizerError> {
    let f = std::fs::File::open(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let len = f
        .metadata()
        .map_err(|e| bad(format!("{}: {e}", path.display())))?
        .len();
    let mut r = Rd {
        r: BufReader::with_capacity(1 << 20, f),
        left: len,
    };
    if &r.arr::<4>()? != b"GGUF" {
        return Err(bad(format!("{} is not a GGUF file", path.display())));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(bad(format!("unsupported GGUF version {version}")));
    }
    let _n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    let mut kv = HashMap::new();
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let v = r.value(ty, 0)?;
        kv.insert(key, v);
    }
    Ok(MetaMap(kv))
}

/// The metadata of a GGUF file as read by [`read_metadata`].
pub(crate) struct MetaMap(pub HashMap<String, Meta>);

impl super::VocabMetadata for MetaMap {
    fn meta_str(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(Meta::Str(s)) => Some(s),
            _ => None,
        }
    }
    fn meta_u32(&self, key: &str) -> Option<u32> {
        match *self.0.get(key)? {
            Meta::UInt(v) => u32::try_from(v).ok(),
            Meta::Int(v) => u32::try_from(v).ok(),
            _ => None,
        }
    }
    fn meta_bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key) {
            Some(Meta::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    fn meta_str_array(&self, key: &str) -> Option<Vec<&str>> {
        match self.0.get(key) {
            Some(Meta::Arr(a)) => a
                .iter()
                .map(|m| match m {
                    Meta::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
    fn meta_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        match self.0.get(key) {
            Some(Meta::Arr(a)) => a
                .iter()
                .map(|m| match *m {
                    Meta::Int(v) => i32::try_from(v).ok(),
                    Meta::UInt(v) => i32::try_from(v).ok(),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
    fn meta_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        match self.0.get(key) {
            Some(Meta::Arr(a)) => a
                .iter()
                .map(|m| match *m {
                    Meta::Float(v) => Some(v as f32),
                    Meta::Int(v) => Some(v as f32),
                    Meta::UInt(v) => Some(v as f32),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

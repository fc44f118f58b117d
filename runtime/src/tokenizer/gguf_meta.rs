//! Minimal reader for the metadata (key/value) section of a GGUF file,
//! enough to build a [`VocabData`]. It reads only the header, never tensors.
//!
//! Stop-gap until the workspace GGUF reader (`lpuc_ir::gguf`) is available to
//! this crate; it validates every length against the file size so a corrupt
//! file yields an error, not a panic or a huge allocation.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use super::{TokenizerError, VocabData};

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
pub(crate) fn read_metadata(path: &Path) -> Result<HashMap<String, Meta>, TokenizerError> {
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
    Ok(kv)
}

fn as_u32(m: &Meta) -> Option<u32> {
    match *m {
        Meta::UInt(v) => u32::try_from(v).ok(),
        Meta::Int(v) => u32::try_from(v).ok(),
        _ => None,
    }
}

/// Build [`VocabData`] from metadata key/values.
pub(crate) fn vocab_from_meta(kv: &HashMap<String, Meta>) -> Result<VocabData, TokenizerError> {
    let s = |k: &str| match kv.get(k) {
        Some(Meta::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let u = |k: &str| kv.get(k).and_then(as_u32);
    let b = |k: &str| match kv.get(k) {
        Some(Meta::Bool(b)) => Some(*b),
        _ => None,
    };
    let arr = |k: &str| match kv.get(k) {
        Some(Meta::Arr(a)) => Some(a),
        _ => None,
    };
    let model = s("tokenizer.ggml.model").ok_or_else(|| bad("no tokenizer.ggml.model"))?;
    let tokens = arr("tokenizer.ggml.tokens")
        .ok_or_else(|| bad("no tokenizer.ggml.tokens"))?
        .iter()
        .map(|m| match m {
            Meta::Str(s) => Ok(s.clone()),
            _ => Err(bad("tokenizer.ggml.tokens holds a non-string")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let token_types = match arr("tokenizer.ggml.token_type") {
        Some(a) => a
            .iter()
            .map(|m| match *m {
                Meta::Int(v) => Ok(v as i32),
                Meta::UInt(v) => Ok(v as i32),
                _ => Err(bad("tokenizer.ggml.token_type holds a non-integer")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let scores = match arr("tokenizer.ggml.scores") {
        Some(a) => a
            .iter()
            .map(|m| match *m {
                Meta::Float(v) => Ok(v as f32),
                Meta::Int(v) => Ok(v as f32),
                Meta::UInt(v) => Ok(v as f32),
                _ => Err(bad("tokenizer.ggml.scores holds a non-number")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let merges = match arr("tokenizer.ggml.merges") {
        Some(a) => a
            .iter()
            .map(|m| match m {
                Meta::Str(s) => Ok(s.clone()),
                _ => Err(bad("tokenizer.ggml.merges holds a non-string")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(VocabData {
        model,
        pre: s("tokenizer.ggml.pre"),
        tokens,
        token_types,
        scores,
        merges,
        bos: u("tokenizer.ggml.bos_token_id"),
        eos: u("tokenizer.ggml.eos_token_id"),
        eot: u("tokenizer.ggml.eot_token_id"),
        eom: u("tokenizer.ggml.eom_token_id"),
        unk: u("tokenizer.ggml.unknown_token_id"),
        pad: u("tokenizer.ggml.padding_token_id"),
        add_bos: b("tokenizer.ggml.add_bos_token"),
        add_eos: b("tokenizer.ggml.add_eos_token"),
        add_space_prefix: b("tokenizer.ggml.add_space_prefix"),
        chat_template: s("tokenizer.chat_template"),
    })
}

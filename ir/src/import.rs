//! Model import: a GGUF file's `llama.*` metadata becomes a [`LlamaConfig`], the builder makes
//! the graph, and every weight node takes the dtype the file actually stores (files mix
//! formats: Q4_K_M keeps some matrices in Q6_K, norms in F32). Weights stay in the file and are
//! referenced by tensor name; [`GgufWeights`] serves them zero-copy from the memory map.
//!
//! Invariant: an imported graph verifies, and every weight it names exists in the file with
//! exactly the shape the graph declares (checked here, reported by tensor name).

use std::collections::HashMap;
use std::path::Path;

use crate::builder::{build_llama, LlamaConfig};
use crate::dtype::DType;
use crate::gguf::{GgufError, GgufFile};
use crate::graph::{Graph, WeightSource};
use crate::op::Op;
use crate::weights::{WeightStore, WeightView};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture \"{0}\" (lpuc imports \"llama\")")]
    Architecture(String),
    #[error("the file has no `general.architecture` key")]
    NoArchitecture,
    #[error("missing metadata key `{0}`")]
    MissingKey(String),
    #[error("metadata `{key}` has the wrong type: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("metadata `{key}` = {value}: {msg}")]
    BadValue {
        key: String,
        value: String,
        msg: String,
    },
    #[error("tensor `{name}` is missing from the file")]
    MissingTensor { name: String },
    #[error("tensor `{name}` (info at byte {offset}): shape {got:?} in the file, {want:?} expected from the metadata")]
    Shape {
        name: String,
        offset: u64,
        got: Vec<u64>,
        want: Vec<u64>,
    },
    #[error(
        "tensor `{name}` (info at byte {offset}) has dtype {dtype}, which a {role} cannot use"
    )]
    DType {
        name: String,
        offset: u64,
        dtype: DType,
        role: &'static str,
    },
    #[error("cannot form a graph from this file's metadata: {0}")]
    Config(String),
}

/// A short rendering of a metadata value for an error message.
fn shown(v: &crate::gguf::MetaValue) -> String {
    let mut t = v.to_string();
    if t.len() > 60 {
        let mut cut = 60;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t.push('…');
    }
    format!("{} {t}", v.type_name())
}

/// An optional unsigned-integer key: absent is `None`; present with another type (or a
/// negative value) is an error naming the expected and the found type, never a silent
/// default.
fn opt_u64(f: &GgufFile, key: &str) -> Result<Option<u64>, ImportError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ImportError::WrongType {
            key: key.into(),
            expected: "an unsigned integer",
            found: shown(v),
        }),
    }
}

/// An optional float key (f32 or f64), as [`opt_u64`].
fn opt_f32(f: &GgufFile, key: &str) -> Result<Option<f32>, ImportError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v.as_f32().map(Some).ok_or_else(|| ImportError::WrongType {
            key: key.into(),
            expected: "a float (f32 or f64)",
            found: shown(v),
        }),
    }
}

fn req_u64(f: &GgufFile, key: &str) -> Result<u64, ImportError> {
    opt_u64(f, key)?.ok_or_else(|| ImportError::MissingKey(key.into()))
}

/// Reads the model shape from `llama.*` metadata (and the tensor table where metadata is
/// optional: vocab size from `token_embd.weight`, tied head from the absence of `output.weight`).
pub fn config_from_gguf(f: &GgufFile, name: &str) -> Result<LlamaConfig, ImportError> {
    let arch = match f.get("general.architecture") {
        None => return Err(ImportError::NoArchitecture),
        Some(v) => v.as_str().ok_or_else(|| ImportError::WrongType {
            key: "general.architecture".into(),
            expected: "a string",
            found: shown(v),
        })?,
    };
    if arch != "llama" {
        return Err(ImportError::Architecture(arch.to_string()));
    }
    let n_layers = req_u64(f, "llama.block_count")?;
    let dim = req_u64(f, "llama.embedding_length")?;
    let ffn_dim = req_u64(f, "llama.feed_forward_length")?;
    let n_heads = req_u64(f, "llama.attention.head_count")?;
    let n_kv_heads = opt_u64(f, "llama.attention.head_count_kv")?.unwrap_or(n_heads);
    if n_heads == 0 || dim % n_heads != 0 {
        return Err(ImportError::BadValue {
            key: "llama.attention.head_count".into(),
            value: n_heads.to_string(),
            msg: format!("does not divide llama.embedding_length = {dim}"),
        });
    }
    let head_dim = opt_u64(f, "llama.attention.key_length")?.unwrap_or(dim / n_heads);
    let rope_dims = opt_u64(f, "llama.rope.dimension_count")?.unwrap_or(head_dim);
    let embd = f
        .tensor("token_embd.weight")
        .ok_or_else(|| ImportError::MissingTensor {
            name: "token_embd.weight".into(),
        })?;
    let vocab = opt_u64(f, "llama.vocab_size")?
        .unwrap_or_else(|| embd.shape().first().copied().unwrap_or(0));
    let rope_theta = opt_f32(f, "llama.rope.freq_base")?.unwrap_or(10000.0);
    let norm_eps = opt_f32(f, "llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5);
    let max_ctx = opt_u64(f, "llama.context_length")?.unwrap_or(4096);
    let out = f.tensor("output.weight");
    let matrix_dtype = f
        .tensor("blk.0.attn_q.weight")
        .map(|t| t.dtype)
        .unwrap_or(DType::F32);
    let check = |key: &str, v: u64, max: u64| -> Result<u32, ImportError> {
        if v == 0 || v > max {
            return Err(ImportError::BadValue {
                key: key.into(),
                value: v.to_string(),
                msg: format!("must be in 1..={max}"),
            });
        }
        Ok(v as u32)
    };
    let cfg = LlamaConfig {
        name: name.to_string(),
        n_layers: check("llama.block_count", n_layers, 4096)?,
        dim,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_dim,
        vocab,
        rope_theta,
        rope_dims: check("llama.rope.dimension_count", rope_dims, 1 << 16)?,
        norm_eps,
        tied_embeddings: out.is_none(),
        max_ctx,
        max_batch: 1,
        weight_dtype: matrix_dtype,
        embed_dtype: embd.dtype,
        output_dtype: out.map(|t| t.dtype).unwrap_or(embd.dtype),
        all_logits: false,
        cache_k_dtype: DType::F32,
        cache_v_dtype: DType::F32,
    };
    if !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(ImportError::BadValue {
            key: "llama.rope.freq_base".into(),
            value: rope_theta.to_string(),
            msg: "must be finite and > 0".into(),
        });
    }
    if !(norm_eps.is_finite() && norm_eps >= 0.0) {
        return Err(ImportError::BadValue {
            key: "llama.attention.layer_norm_rms_epsilon".into(),
            value: norm_eps.to_string(),
            msg: "must be finite and >= 0".into(),
        });
    }
    Ok(cfg)
}

/// Options for [`import_gguf`].
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Context length (bound of `P` and `S`); the file's `llama.context_length` if unset.
    pub max_ctx: Option<u64>,
    /// Logits for every new position instead of only the last.
    pub all_logits: bool,
    /// K and V cache dtypes (`f32` when unset; `lpuc run` asks for `f16`, llama.cpp's
    /// default).
    pub cache_k: Option<DType>,
    pub cache_v: Option<DType>,
}

/// Builds the graph for a GGUF file and checks every weight against the file.
pub fn import_gguf(
    f: &GgufFile,
    path: &Path,
    opts: &ImportOptions,
) -> Result<(Graph, LlamaConfig), ImportError> {
    let name = f
        .get_str("general.name")
        .map(str::to_string)
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        });
    let mut cfg = config_from_gguf(f, &name)?;
    match opts.max_ctx {
        Some(c) => cfg.max_ctx = c,
        // A file may claim a longer context than a graph can bound; without an explicit
        // size, plan for the longest one supported instead of refusing the file.
        None => cfg.max_ctx = cfg.max_ctx.min(crate::builder::MAX_CTX),
    }
    cfg.all_logits = opts.all_logits;
    cfg.cache_k_dtype = opts.cache_k.unwrap_or(DType::F32);
    cfg.cache_v_dtype = opts.cache_v.unwrap_or(DType::F32);
    // Build with f32 weights (so the builder adds no dequant), then give every weight the
    // dtype the file stores, with a dequant in front of each f32 consumer.
    let mut build_cfg = cfg.clone();
    build_cfg.weight_dtype = DType::F32;
    build_cfg.embed_dtype = DType::F32;
    build_cfg.output_dtype = DType::F32;
    let mut g = build_llama(
        &build_cfg,
        WeightSource::Gguf {
            path: path.display().to_string(),
        },
    )
    .map_err(ImportError::Config)?;
    for w in g.weights() {
        let Op::Weight { name } = g.op(w).clone() else {
            continue;
        };
        let t = f
            .tensor(&name)
            .ok_or_else(|| ImportError::MissingTensor { name: name.clone() })?;
        let offset = f.tensor_info_offset(&name).unwrap_or(0);
        let want: Vec<u64> = g.ty(w).shape.iter().filter_map(|d| d.as_const()).collect();
        if t.shape() != want {
            return Err(ImportError::Shape {
                name,
                offset,
                got: t.shape(),
                want,
            });
        }
        if t.dtype.is_int() {
            return Err(ImportError::DType {
                name,
                offset,
                dtype: t.dtype,
                role: "weight",
            });
        }
        g.node_mut(w).ty.dtype = t.dtype;
        if t.dtype != DType::F32 {
            // Ops other than dequant/embedding read f32: put a dequant in front of them.
            let users: Vec<_> = g
                .users(w)
                .into_iter()
                .filter(|u| !matches!(g.op(*u), Op::Dequant | Op::Embedding | Op::QMatmul))
                .collect();
            if !users.is_empty() {
                let dq = g
                    .add_inferred(Op::Dequant, &[w])
                    .map_err(ImportError::Config)?;
                for u in users {
                    let ops: Vec<_> = g
                        .operands(u)
                        .into_iter()
                        .map(|o| if o == w { dq } else { o })
                        .collect();
                    g.set_operands(u, &ops);
                }
            }
        }
    }
    crate::verify::verify(&g).map_err(|e| ImportError::Config(e.to_string()))?;
    Ok((g, cfg))
}

/// Weights served from a memory-mapped GGUF file.
pub struct GgufWeights {
    pub file: GgufFile,
    shapes: HashMap<String, (usize, Vec<u64>)>,
}

impl std::fmt::Debug for GgufWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufWeights({} tensors)", self.shapes.len())
    }
}

impl GgufWeights {
    pub fn new(file: GgufFile) -> GgufWeights {
        let shapes = file
            .tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), (i, t.shape())))
            .collect();
        GgufWeights { file, shapes }
    }

    pub fn open(path: &Path) -> Result<GgufWeights, GgufError> {
        Ok(GgufWeights::new(GgufFile::open(path)?))
    }
}

impl WeightStore for GgufWeights {
    fn get(&self, name: &str) -> Option<WeightView<'_>> {
        let (i, shape) = self.shapes.get(name)?;
        let t = &self.file.tensors()[*i];
        Some(WeightView {
            dtype: t.dtype,
            shape,
            bytes: self.file.tensor_data(t),
        })
    }
}

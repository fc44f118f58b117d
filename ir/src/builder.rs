//! LLaMA forward-pass graphs from a [`LlamaConfig`].
//!
//! The graph is written with primitives only (attention is `matmul`/`softmax`/…; fusing
//! it is a pass's job), in the layout GGUF `llama` files use: weights `[out, in]`, Q/K
//! permuted for adjacent-pair RoPE (`style = normal`), tensor names as in llama.cpp
//! (`blk.N.attn_q.weight`, …). Presets carry published shapes; weights may be absent
//! (shapes only) or deterministic random (see [`crate::weights::RandomWeights`]).

use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::graph::{Graph, StateDecl, Value, WeightSource};
use crate::op::{Op, RopeStyle};
use crate::types::{Dim, Sym, TensorType};

/// The largest context (bound of `P` and `S`) a graph may declare: 16 Mi tokens, above every
/// published trained context (the longest are ~10 M), and small enough that positions,
/// KV-cache row counts and the kernels' `kv_heads × capacity × head_dim × 4` byte offsets
/// stay far from 2^63 for any shape the builder accepts.
pub const MAX_CTX: u64 = 1 << 24;

/// The largest batch (bound of `B`): 64 Ki sequences, so batch × context products fit in
/// 64 bits and a batch always fits a `u32` (the Groq partitioner's fields).
pub const MAX_BATCH: u64 = 1 << 16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub name: String,
    pub n_layers: u32,
    pub dim: u64,
    pub n_heads: u64,
    pub n_kv_heads: u64,
    pub head_dim: u64,
    pub ffn_dim: u64,
    pub vocab: u64,
    pub rope_theta: f32,
    /// Rotary dims per head (usually `head_dim`).
    pub rope_dims: u32,
    pub norm_eps: f32,
    /// Output head shares the token embedding.
    pub tied_embeddings: bool,
    /// Context length: bound of `P` and `S`.
    pub max_ctx: u64,
    /// Bound of `B`.
    pub max_batch: u64,
    /// dtype of the projection/FFN matrices.
    pub weight_dtype: DType,
    pub embed_dtype: DType,
    /// dtype of `output.weight` when not tied.
    pub output_dtype: DType,
    /// Logits for every new position (`true`) or only the last (`false`, the default: what
    /// generation needs, and it saves the vocab-sized matmul for all but one row).
    pub all_logits: bool,
    /// dtype of the K and V cache states (`f32`, or `f16` as llama.cpp keeps them): a
    /// `kv_append` rounds what it stores to it, on every backend alike.
    pub cache_k_dtype: DType,
    pub cache_v_dtype: DType,
}

pub const PRESETS: &[&str] = &[
    "tiny",
    "smollm2-135m",
    "llama2-7b",
    "llama2-70b",
    "llama3-8b",
    "llama3-70b",
];

impl LlamaConfig {
    /// A published shape by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Option<LlamaConfig> {
        // Published shapes: SmolLM2-135M (HF config.json), Llama-2 7B/70B (Touvron et al.
        // 2023, HF configs), Llama-3 8B/70B (Meta model cards, HF configs).
        let base = LlamaConfig {
            name: name.to_string(),
            n_layers: 0,
            dim: 0,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            ffn_dim: 0,
            vocab: 0,
            rope_theta: 10000.0,
            rope_dims: 0,
            norm_eps: 1e-5,
            tied_embeddings: false,
            max_ctx: 4096,
            max_batch: 1,
            weight_dtype: DType::Q4_0,
            embed_dtype: DType::Q4_0,
            output_dtype: DType::Q4_0,
            all_logits: false,
            cache_k_dtype: DType::F32,
            cache_v_dtype: DType::F32,
        };
        let c = match name {
            // Small enough for the interpreter in unit tests, with every feature SmolLM2 has:
            // GQA (4 heads on 2 KV heads), tied Q8_0 embedding, Q4_1 matrices.
            "tiny" => LlamaConfig {
                n_layers: 2,
                dim: 64,
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 16,
                ffn_dim: 128,
                vocab: 256,
                rope_dims: 16,
                tied_embeddings: true,
                max_ctx: 128,
                weight_dtype: DType::Q4_1,
                embed_dtype: DType::Q8_0,
                output_dtype: DType::Q8_0,
                ..base
            },
            "smollm2-135m" => LlamaConfig {
                n_layers: 30,
                dim: 576,
                n_heads: 9,
                n_kv_heads: 3,
                head_dim: 64,
                ffn_dim: 1536,
                vocab: 49152,
                rope_theta: 100000.0,
                rope_dims: 64,
                tied_embeddings: true,
                max_ctx: 8192,
                weight_dtype: DType::Q4_1,
                embed_dtype: DType::Q8_0,
                output_dtype: DType::Q8_0,
                ..base
            },
            "llama2-7b" => LlamaConfig {
                n_layers: 32,
                dim: 4096,
                n_heads: 32,
                n_kv_heads: 32,
                head_dim: 128,
                ffn_dim: 11008,
                vocab: 32000,
                rope_dims: 128,
                max_ctx: 4096,
                ..base
            },
            "llama2-70b" => LlamaConfig {
                n_layers: 80,
                dim: 8192,
                n_heads: 64,
                n_kv_heads: 8,
                head_dim: 128,
                ffn_dim: 28672,
                vocab: 32000,
                rope_dims: 128,
                max_ctx: 4096,
                ..base
            },
            "llama3-8b" => LlamaConfig {
                n_layers: 32,
                dim: 4096,
                n_heads: 32,
                n_kv_heads: 8,
                head_dim: 128,
                ffn_dim: 14336,
                vocab: 128256,
                rope_theta: 500000.0,
                rope_dims: 128,
                max_ctx: 8192,
                ..base
            },
            "llama3-70b" => LlamaConfig {
                n_layers: 80,
                dim: 8192,
                n_heads: 64,
                n_kv_heads: 8,
                head_dim: 128,
                ffn_dim: 28672,
                vocab: 128256,
                rope_theta: 500000.0,
                rope_dims: 128,
                max_ctx: 8192,
                ..base
            },
            _ => return None,
        };
        Some(c)
    }

    /// Parameters the graph will hold (weights' element count).
    pub fn param_count(&self) -> u64 {
        let q = self.n_heads * self.head_dim;
        let kv = self.n_kv_heads * self.head_dim;
        let per_layer = 2 * self.dim
            + self.dim * q
            + 2 * self.dim * kv
            + q * self.dim
            + 3 * self.dim * self.ffn_dim;
        let embed = self.vocab * self.dim;
        let out = if self.tied_embeddings {
            0
        } else {
            self.vocab * self.dim
        };
        u64::from(self.n_layers) * per_layer + embed + out + self.dim
    }

    /// Checks the config can form a graph; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let nz = [
            ("n_layers", u64::from(self.n_layers)),
            ("dim", self.dim),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("ffn_dim", self.ffn_dim),
            ("vocab", self.vocab),
            ("max_ctx", self.max_ctx),
            ("max_batch", self.max_batch),
        ];
        for (n, v) in nz {
            if v == 0 {
                return Err(format!("{n} must be > 0"));
            }
        }
        if self.max_ctx > MAX_CTX {
            return Err(format!(
                "max_ctx {} is too large (at most {MAX_CTX} tokens)",
                self.max_ctx
            ));
        }
        if self.max_batch > MAX_BATCH {
            return Err(format!(
                "max_batch {} is too large (at most {MAX_BATCH})",
                self.max_batch
            ));
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return Err(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.rope_dims == 0
            || self.rope_dims % 2 != 0
            || u64::from(self.rope_dims) > self.head_dim
        {
            return Err(format!(
                "rope_dims {} must be even and <= head_dim {}",
                self.rope_dims, self.head_dim
            ));
        }
        for (n, dt, k) in [
            ("weight_dtype", self.weight_dtype, self.dim),
            ("weight_dtype (ffn_down)", self.weight_dtype, self.ffn_dim),
            (
                "weight_dtype (attn_output)",
                self.weight_dtype,
                self.n_heads * self.head_dim,
            ),
            ("embed_dtype", self.embed_dtype, self.dim),
            ("output_dtype", self.output_dtype, self.dim),
        ] {
            if dt.is_int() {
                return Err(format!("{n} {dt} is not a weight format"));
            }
            if k % dt.block_elems() != 0 {
                return Err(format!(
                    "{n} {dt}: rows of {k} are not a whole number of {}-element blocks",
                    dt.block_elems()
                ));
            }
        }
        Ok(())
    }
}

/// Builds the forward-pass graph. `weights` says where the weights come from.
pub fn build_llama(c: &LlamaConfig, weights: WeightSource) -> Result<Graph, String> {
    c.validate()?;
    let mut g = Graph::new(c.name.clone());
    g.syms.set_bound(Sym::B, Some(c.max_batch));
    g.syms.set_bound(Sym::P, Some(c.max_ctx));
    g.syms.set_bound(Sym::S, Some(c.max_ctx));
    g.weights = weights;
    let mut b = Builder { g, c };
    b.build()?;
    Ok(b.g)
}

struct Builder<'a> {
    g: Graph,
    c: &'a LlamaConfig,
}

fn ty(dtype: DType, shape: Vec<Dim>) -> TensorType {
    TensorType::new(dtype, shape)
}

impl Builder<'_> {
    fn op(&mut self, op: Op, args: &[Value]) -> Result<Value, String> {
        let name = op.name();
        self.g
            .add_inferred(op, args)
            .map_err(|m| format!("building {name}: {m}"))
    }

    fn weight(&mut self, name: String, dtype: DType, shape: Vec<u64>) -> Value {
        self.g.add(
            Op::Weight { name },
            &[],
            ty(dtype, shape.into_iter().map(Dim::c).collect()),
        )
    }

    /// `x · Wᵀ` for a weight `[out, in]`, written as `matmul(x, dequant(w))` unless `w` is
    /// already f32.
    fn linear(&mut self, x: Value, w: Value) -> Result<Value, String> {
        let w = if self.g.ty(w).dtype == DType::F32 {
            w
        } else {
            self.op(Op::Dequant, &[w])?
        };
        self.op(Op::Matmul, &[x, w])
    }

    fn reshape(&mut self, x: Value, shape: Vec<Dim>) -> Value {
        let dt = self.g.ty(x).dtype;
        self.g.add(Op::Reshape, &[x], ty(dt, shape))
    }

    fn norm(&mut self, x: Value, wname: String) -> Result<Value, String> {
        let w = self.weight(wname, DType::F32, vec![self.c.dim]);
        let n = self.op(
            Op::RmsNorm {
                eps: self.c.norm_eps,
            },
            &[x],
        )?;
        self.op(Op::Mul, &[n, w])
    }

    fn build(&mut self) -> Result<(), String> {
        let c = self.c.clone();
        let (b, s) = (Dim::B, Dim::S);
        let tokens = self.g.add(
            Op::Input {
                name: "tokens".into(),
            },
            &[],
            ty(DType::I32, vec![b, s]),
        );
        let embd = self.weight(
            "token_embd.weight".into(),
            c.embed_dtype,
            vec![c.vocab, c.dim],
        );
        let mut x = self.op(Op::Embedding, &[embd, tokens])?;
        let (h, kvh, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let rope = Op::Rope {
            theta: c.rope_theta,
            dims: c.rope_dims,
            style: RopeStyle::Normal,
        };
        let mask = self.op(Op::CausalMask, &[])?;
        for l in 0..c.n_layers {
            let p = |n: &str| format!("blk.{l}.{n}.weight");
            // attention
            let hn = self.norm(x, p("attn_norm"))?;
            let wq = self.weight(p("attn_q"), c.weight_dtype, vec![h * hd, c.dim]);
            let wk = self.weight(p("attn_k"), c.weight_dtype, vec![kvh * hd, c.dim]);
            let wv = self.weight(p("attn_v"), c.weight_dtype, vec![kvh * hd, c.dim]);
            let q = self.linear(hn, wq)?;
            let k = self.linear(hn, wk)?;
            let v = self.linear(hn, wv)?;
            let q = self.reshape(q, vec![b, s, Dim::c(h), Dim::c(hd)]);
            let k = self.reshape(k, vec![b, s, Dim::c(kvh), Dim::c(hd)]);
            let v = self.reshape(v, vec![b, s, Dim::c(kvh), Dim::c(hd)]);
            let q = self.op(rope.clone(), &[q])?;
            let k = self.op(rope.clone(), &[k])?;
            let heads_first = Op::Transpose {
                perm: vec![0, 2, 1, 3],
            };
            let q = self.op(heads_first.clone(), &[q])?;
            let k = self.op(heads_first.clone(), &[k])?;
            let v = self.op(heads_first.clone(), &[v])?;
            for (kind, dt) in [("k", c.cache_k_dtype), ("v", c.cache_v_dtype)] {
                self.g.states.push(StateDecl {
                    name: format!("blk.{l}.{kind}"),
                    ty: ty(dt, vec![b, Dim::c(kvh), Dim::P, Dim::c(hd)]),
                    loc: None,
                });
            }
            let kall = self.op(
                Op::KvAppend {
                    cache: format!("blk.{l}.k"),
                },
                &[k],
            )?;
            let vall = self.op(
                Op::KvAppend {
                    cache: format!("blk.{l}.v"),
                },
                &[v],
            )?;
            let (kall, vall) = if h == kvh {
                (kall, vall)
            } else {
                let rep = Op::RepeatKv {
                    n_rep: (h / kvh) as u32,
                };
                (self.op(rep.clone(), &[kall])?, self.op(rep, &[vall])?)
            };
            let scores = self.op(Op::Matmul, &[q, kall])?;
            let scores = self.op(
                Op::Scale {
                    factor: 1.0 / (hd as f32).sqrt(),
                },
                &[scores],
            )?;
            let scores = self.op(Op::Add, &[scores, mask])?;
            let probs = self.op(Op::Softmax, &[scores])?;
            let vt = self.op(
                Op::Transpose {
                    perm: vec![0, 1, 3, 2],
                },
                &[vall],
            )?;
            let o = self.op(Op::Matmul, &[probs, vt])?;
            let o = self.op(heads_first, &[o])?;
            let o = self.reshape(o, vec![b, s, Dim::c(h * hd)]);
            let wo = self.weight(p("attn_output"), c.weight_dtype, vec![c.dim, h * hd]);
            let o = self.linear(o, wo)?;
            x = self.op(Op::Add, &[x, o])?;
            // feed-forward (SwiGLU)
            let hn = self.norm(x, p("ffn_norm"))?;
            let wg = self.weight(p("ffn_gate"), c.weight_dtype, vec![c.ffn_dim, c.dim]);
            let wu = self.weight(p("ffn_up"), c.weight_dtype, vec![c.ffn_dim, c.dim]);
            let wd = self.weight(p("ffn_down"), c.weight_dtype, vec![c.dim, c.ffn_dim]);
            let gt = self.linear(hn, wg)?;
            let up = self.linear(hn, wu)?;
            let gt = self.op(Op::Silu, &[gt])?;
            let f = self.op(Op::Mul, &[gt, up])?;
            let d = self.linear(f, wd)?;
            x = self.op(Op::Add, &[x, d])?;
        }
        let mut hn = self.norm(x, "output_norm.weight".into())?;
        if !c.all_logits {
            hn = self.op(Op::TakeLast, &[hn])?;
        }
        let out_w = if c.tied_embeddings {
            embd
        } else {
            self.weight("output.weight".into(), c.output_dtype, vec![c.vocab, c.dim])
        };
        let logits = self.linear(hn, out_w)?;
        self.op(
            Op::Output {
                name: "logits".into(),
            },
            &[logits],
        )?;
        Ok(())
    }
}

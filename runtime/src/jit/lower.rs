//! Lowering a (possibly partly fused) LLaMA graph to a flat list of kernel steps.
//!
//! Accepted forms: the primitive graph `import_gguf`/`build_llama` produce *and* the fused
//! ops the pass pipeline introduces, so the JIT never waits on a pass:
//!
//! ```text
//! matmul(x, dequant(w))  | qmatmul(x, w)            => quantize(x) once per x; qmatmul
//! mul(rms_norm(x), w)    | rms_norm(x, w)           => rms_norm with scale
//! mul(silu(a), b)        | swiglu(a, b)             => swiglu
//! softmax(scale·matmul(q, repeat_kv(kv_append(k))) + causal_mask)
//!     · transpose(repeat_kv(kv_append(v)))          => attention (online softmax)
//! flash_attention(q, k, v)                          => attention
//! reshape / transpose(0,2,1,3) / take_last          => views, no code
//! ```
//!
//! Every activation is a row-major `[rows, width]` f32 buffer where `rows` is `S` (or 1
//! after `take_last`); attention reads and writes `[S, heads, head_dim]` in place of the
//! graph's transposes, and the V caches are `[kv_heads, capacity, head_dim]`, the K caches
//! in transposed 16-key tiles `[kv_heads, capacity / 16, head_dim, 16]` (16 keys' scores
//! are one vector FMA chain over one 4 KiB tile, with no horizontal sums; a new token
//! touches one tile). Anything
//! else is refused with the op and value named, never run wrongly.

use std::collections::{HashMap, HashSet};

use lpuc_codegen::kernels::KernelSpec;
use lpuc_codegen::pack;
use lpuc_ir::dtype::DType;
use lpuc_ir::graph::{Graph, Value};
use lpuc_ir::op::{Op, RopeStyle};
use lpuc_ir::types::{Dim, Sym};

/// Buffer rows: the number of new tokens, or one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    S,
    One,
}

#[derive(Clone, Debug)]
pub struct BufDef {
    pub row_bytes: usize,
    pub rows: Rows,
}

/// An activation: a buffer (all rows, or only its last row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Act {
    pub buf: usize,
    pub last: bool,
    /// f32 elements per row.
    pub width: usize,
}

#[derive(Clone, Debug)]
pub struct QIn {
    pub xq: usize,
    pub dx: usize,
    pub sx: usize,
}

#[derive(Clone, Debug)]
pub struct Mat {
    pub kern: usize,
    /// Index into the packed weights.
    pub w: usize,
    pub out: Act,
    pub groups: usize,
}

#[derive(Clone, Debug)]
pub enum Step {
    Embed {
        kern: Option<usize>,
        table: String,
        dtype: DType,
        vocab: usize,
        out: Act,
    },
    RopeTab {
        kern: usize,
        tab: usize,
    },
    Quant {
        kern: usize,
        x: Act,
        q: QIn,
        k: usize,
    },
    QMatmul {
        x: Act,
        q: QIn,
        mats: Vec<Mat>,
    },
    RmsNorm {
        kern: usize,
        x: Act,
        w: Option<usize>,
        y: Act,
    },
    Rope {
        kern: usize,
        x: Act,
        y: Act,
        tab: usize,
    },
    KvAppend {
        kern: usize,
        src: Act,
        cache: usize,
    },
    Attention {
        kern: usize,
        q: Act,
        k: usize,
        v: usize,
        o: Act,
        heads: usize,
    },
    SwiGlu {
        kern: usize,
        a: Act,
        b: Act,
        y: Act,
    },
    Add {
        kern: usize,
        a: Act,
        b: Act,
        y: Act,
    },
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Embed { .. } => "embedding",
            Step::RopeTab { .. } => "rope_table",
            Step::Quant { .. } => "quantize",
            Step::QMatmul { .. } => "qmatmul",
            Step::RmsNorm { .. } => "rms_norm",
            Step::Rope { .. } => "rope",
            Step::KvAppend { .. } => "kv_append",
            Step::Attention { .. } => "attention",
            Step::SwiGlu { .. } => "swiglu",
            Step::Add { .. } => "add",
        }
    }

    /// Buffers read and written (for liveness).
    pub fn bufs(&self) -> (Vec<usize>, Vec<usize>) {
        match self {
            Step::Embed { out, .. } => (vec![], vec![out.buf]),
            Step::RopeTab { tab, .. } => (vec![], vec![*tab]),
            Step::Quant { x, q, .. } => (vec![x.buf], vec![q.xq, q.dx, q.sx]),
            Step::QMatmul { q, mats, .. } => (
                vec![q.xq, q.dx, q.sx],
                mats.iter().map(|m| m.out.buf).collect(),
            ),
            Step::RmsNorm { x, y, .. } => (vec![x.buf], vec![y.buf]),
            Step::Rope { x, y, tab, .. } => (vec![x.buf, *tab], vec![y.buf]),
            Step::KvAppend { src, .. } => (vec![src.buf], vec![]),
            Step::Attention { q, o, .. } => (vec![q.buf], vec![o.buf]),
            Step::SwiGlu { a, b, y, .. } | Step::Add { a, b, y, .. } => {
                (vec![a.buf, b.buf], vec![y.buf])
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct CacheDef {
    pub name: String,
    pub kvh: usize,
    pub d: usize,
}

/// A weight to pack at load time.
#[derive(Clone, Debug)]
pub struct PackDef {
    pub name: String,
    pub dtype: DType,
    pub n: usize,
    pub k: usize,
}

pub struct Plan {
    pub steps: Vec<Step>,
    pub bufs: Vec<BufDef>,
    pub specs: Vec<KernelSpec>,
    pub packs: Vec<PackDef>,
    pub norms: Vec<String>,
    pub caches: Vec<CacheDef>,
    pub cap: usize,
    pub output: Act,
    /// Buffers that must survive to the end (the output).
    pub keep: Vec<usize>,
}

#[derive(Clone, Debug)]
enum V {
    Tokens,
    W(String),
    Deq(String),
    A(Act),
    /// `[B, H, S, D]` view of an `[S, H·D]` activation.
    Heads(Act, usize, usize),
    /// A KV cache's rows `0..P+S` (GQA-broadcast or not).
    Cache(usize),
    CacheT(usize),
    Mask,
    Scores {
        q: Act,
        heads: usize,
        k: usize,
        scale: f32,
        masked: bool,
    },
    Probs {
        q: Act,
        heads: usize,
        k: usize,
        scale: f32,
    },
    /// `[B, H, S, D]` view of an attention result stored `[S, H·D]`.
    AttnHeads(Act),
    /// `silu(a)` waiting for its `mul`.
    SiluOf(Act),
}

struct Lower<'g> {
    g: &'g Graph,
    num: HashMap<Value, usize>,
    vals: HashMap<Value, V>,
    done: HashSet<Value>,
    p: Plan,
    kerns: HashMap<String, usize>,
    packs: HashMap<String, usize>,
    norms: HashMap<String, usize>,
    quantized: HashMap<Act, QIn>,
    ropetabs: HashMap<String, usize>,
    vnni: bool,
}

pub fn lower(g: &Graph, vnni: bool) -> Result<Plan, String> {
    lpuc_ir::verify::verify(g).map_err(|e| format!("the graph does not verify:\n{e}"))?;
    if g.syms.bound(Sym::B).unwrap_or(1) != 1 {
        return Err("the JIT backend runs one sequence at a time (bound of B must be 1)".into());
    }
    let cap = g
        .syms
        .bound(Sym::P)
        .ok_or("the graph gives P no bound: the KV cache capacity is unknown")?
        as usize;
    let mut l = Lower {
        g,
        num: g.numbering(),
        vals: HashMap::new(),
        done: HashSet::new(),
        p: Plan {
            steps: vec![],
            bufs: vec![],
            specs: vec![],
            packs: vec![],
            norms: vec![],
            caches: vec![],
            cap,
            output: Act {
                buf: 0,
                last: false,
                width: 0,
            },
            keep: vec![],
        },
        kerns: HashMap::new(),
        packs: HashMap::new(),
        norms: HashMap::new(),
        quantized: HashMap::new(),
        ropetabs: HashMap::new(),
        vnni,
    };
    let order = g
        .topo_order()
        .map_err(|_| "the graph has a cycle".to_string())?;
    let mut have_out = false;
    for v in order {
        if l.done.contains(&v) {
            continue;
        }
        let r = l
            .node(v)
            .map_err(|m| format!("%{} = {}: {m}", l.num[&v], g.op(v).name()))?;
        if let Some(x) = r {
            l.vals.insert(v, x);
        }
        if let Op::Output { .. } = g.op(v) {
            have_out = true;
        }
    }
    if !have_out {
        return Err("the graph has no output".into());
    }
    l.transpose_k_caches()?;
    Ok(l.p)
}

fn consts(g: &Graph, v: Value) -> Result<Vec<usize>, String> {
    g.ty(v)
        .shape
        .iter()
        .map(|d| {
            d.as_const()
                .map(|x| x as usize)
                .ok_or_else(|| format!("symbolic dim in {}", g.ty(v)))
        })
        .collect()
}

impl<'g> Lower<'g> {
    /// The attention kernel reads K transposed (`[kvh, d, cap]`): the appends into every
    /// cache that some attention uses as K write that layout. A cache used both as K and
    /// as V cannot have one layout, so it is refused.
    fn transpose_k_caches(&mut self) -> Result<(), String> {
        let mut k = HashSet::new();
        let mut v = HashSet::new();
        for st in &self.p.steps {
            if let Step::Attention { k: kc, v: vc, .. } = st {
                k.insert(*kc);
                v.insert(*vc);
            }
        }
        if let Some(c) = k.intersection(&v).next() {
            return Err(format!(
                "cache \"{}\" is read both as K and as V",
                self.p.caches[*c].name
            ));
        }
        let cap = self.p.cap;
        for i in 0..self.p.steps.len() {
            let Step::KvAppend { cache, .. } = &self.p.steps[i] else {
                continue;
            };
            if !k.contains(cache) {
                continue;
            }
            let (kvh, d) = (self.p.caches[*cache].kvh, self.p.caches[*cache].d);
            let kern = self.kern(KernelSpec::KvAppend {
                kvh,
                d,
                cap,
                transposed: true,
            });
            if let Step::KvAppend { kern: kk, .. } = &mut self.p.steps[i] {
                *kk = kern;
            }
        }
        Ok(())
    }

    fn kern(&mut self, s: KernelSpec) -> usize {
        let sym = s.symbol();
        if let Some(&i) = self.kerns.get(&sym) {
            return i;
        }
        let i = self.p.specs.len();
        self.p.specs.push(s);
        self.kerns.insert(sym, i);
        i
    }

    fn buf(&mut self, row_bytes: usize, rows: Rows) -> usize {
        self.p.bufs.push(BufDef { row_bytes, rows });
        self.p.bufs.len() - 1
    }

    fn act(&mut self, width: usize, rows: Rows) -> Act {
        Act {
            buf: self.buf(width * 4, rows),
            last: false,
            width,
        }
    }

    fn rows_of(&self, a: Act) -> Rows {
        if a.last {
            Rows::One
        } else {
            self.p.bufs[a.buf].rows
        }
    }

    fn val(&self, v: Value) -> Result<V, String> {
        self.vals.get(&v).cloned().ok_or_else(|| {
            format!(
                "operand %{} has no JIT lowering",
                self.num.get(&v).copied().unwrap_or(0)
            )
        })
    }

    fn a(&self, v: Value) -> Result<Act, String> {
        match self.val(v)? {
            V::A(a) => Ok(a),
            other => Err(format!("expected an activation operand, found {other:?}")),
        }
    }

    /// Checks an activation type is `[B, S|1, ...]` and returns the row width.
    fn width(&self, v: Value) -> Result<usize, String> {
        let sh = &self.g.ty(v).shape;
        if sh.len() < 2 || sh[0] != Dim::B {
            return Err(format!(
                "expected a [B, S, ...] activation, found {}",
                self.g.ty(v)
            ));
        }
        sh[2..]
            .iter()
            .map(|d| d.as_const().map(|x| x as usize))
            .product::<Option<usize>>()
            .ok_or_else(|| format!("symbolic inner dims in {}", self.g.ty(v)))
    }

    fn single_user(&self, v: Value) -> Option<Value> {
        let us = self.g.users(v);
        (us.len() == 1 && self.g.num_uses(v) == 1).then(|| us[0])
    }

    fn norm_weight(&mut self, v: Value, d: usize) -> Option<usize> {
        let Op::Weight { name } = self.g.op(v) else {
            return None;
        };
        let t = self.g.ty(v);
        if t.dtype != DType::F32 || t.shape != vec![Dim::c(d as u64)] {
            return None;
        }
        if let Some(&i) = self.norms.get(name) {
            return Some(i);
        }
        self.p.norms.push(name.clone());
        self.norms.insert(name.clone(), self.p.norms.len() - 1);
        Some(self.p.norms.len() - 1)
    }

    fn quantize(&mut self, x: Act) -> Result<QIn, String> {
        if let Some(q) = self.quantized.get(&x) {
            return Ok(q.clone());
        }
        let k = x.width;
        if k % 32 != 0 {
            return Err(format!("row width {k} is not a multiple of 32"));
        }
        let rows = self.rows_of(x);
        let q = QIn {
            xq: self.buf(k, rows),
            dx: self.buf(k / 32 * 4, rows),
            sx: self.buf(k / 32 * 4, rows),
        };
        let kern = self.kern(KernelSpec::Quantize { k });
        self.p.steps.push(Step::Quant {
            kern,
            x,
            q: q.clone(),
            k,
        });
        self.quantized.insert(x, q.clone());
        Ok(q)
    }

    fn qmatmul(&mut self, v: Value, x: Act, wname: &str) -> Result<V, String> {
        let wv = self
            .g
            .weights()
            .into_iter()
            .find(|w| matches!(self.g.op(*w), Op::Weight { name } if name == wname))
            .ok_or("weight node not found")?;
        let t = self.g.ty(wv);
        let sh = consts(self.g, wv)?;
        if sh.len() != 2 || sh[1] != x.width {
            return Err(format!(
                "weight {wname} {t} does not match an input row of {}",
                x.width
            ));
        }
        let (n, k) = (sh[0], sh[1]);
        let bits =
            pack::check_packable(t.dtype, n, k).map_err(|e| format!("weight \"{wname}\": {e}"))?;
        let w = match self.packs.get(wname) {
            Some(&i) => i,
            None => {
                self.p.packs.push(PackDef {
                    name: wname.to_string(),
                    dtype: t.dtype,
                    n,
                    k,
                });
                self.packs.insert(wname.to_string(), self.p.packs.len() - 1);
                self.p.packs.len() - 1
            }
        };
        let q = self.quantize(x)?;
        let kern = self.kern(KernelSpec::QMatmul {
            n,
            k,
            bits,
            vnni: self.vnni,
        });
        let rows = self.rows_of(x);
        let out = self.act(n, rows);
        let _ = v;
        let mat = Mat {
            kern,
            w,
            out,
            groups: n / pack::GROUP,
        };
        // Matmuls reading the same quantized input run as one parallel section.
        if let Some(Step::QMatmul { x: x0, mats, .. }) = self.p.steps.last_mut() {
            if *x0 == x {
                mats.push(mat);
                return Ok(V::A(out));
            }
        }
        self.p.steps.push(Step::QMatmul {
            x,
            q,
            mats: vec![mat],
        });
        Ok(V::A(out))
    }

    fn attention(
        &mut self,
        q: Act,
        heads: usize,
        k: usize,
        vc: usize,
        scale: f32,
        block: usize,
    ) -> Result<V, String> {
        let (kvh, d) = (self.p.caches[k].kvh, self.p.caches[k].d);
        if heads % kvh != 0 || self.p.caches[vc].kvh != kvh || self.p.caches[vc].d != d {
            return Err("attention: K/V caches and query heads do not line up".into());
        }
        let kern = self.kern(KernelSpec::Attention {
            h: heads,
            kvh,
            d,
            cap: self.p.cap,
            block,
            scale,
        });
        let rows = self.rows_of(q);
        if rows != Rows::S || q.last {
            return Err("attention on a single kept row is not supported".into());
        }
        let o = self.act(heads * d, rows);
        self.p.steps.push(Step::Attention {
            kern,
            q,
            k,
            v: vc,
            o,
            heads,
        });
        Ok(V::AttnHeads(o))
    }

    fn node(&mut self, v: Value) -> Result<Option<V>, String> {
        let g = self.g;
        let ops = g.operands(v);
        let r = match g.op(v).clone() {
            Op::Input { name } => {
                if name != "tokens" || g.ty(v).shape != vec![Dim::B, Dim::S] {
                    return Err(format!(
                        "input \"{name}\" {}: only `tokens: i32[B, S]` is supported",
                        g.ty(v)
                    ));
                }
                V::Tokens
            }
            Op::Weight { name } => V::W(name),
            Op::Dequant => match self.val(ops[0])? {
                V::W(n) => V::Deq(n),
                _ => return Err("dequant of a non-weight".into()),
            },
            Op::Embedding => {
                let (V::W(table), V::Tokens) = (self.val(ops[0])?, self.val(ops[1])?) else {
                    return Err("embedding must read a weight table with the token ids".into());
                };
                let sh = consts(g, ops[0])?;
                let (vocab, d) = (sh[0], sh[1]);
                let dtype = g.ty(ops[0]).dtype;
                let kern = (dtype == DType::Q8_0).then(|| self.kern(KernelSpec::EmbedQ8 { d }));
                let out = self.act(d, Rows::S);
                self.p.steps.push(Step::Embed {
                    kern,
                    table,
                    dtype,
                    vocab,
                    out,
                });
                V::A(out)
            }
            Op::RmsNorm { eps } => {
                let x = self.a(ops[0])?;
                let d = x.width;
                let mut w = match ops.get(1) {
                    Some(o) => Some(
                        self.norm_weight(*o, d)
                            .ok_or("rms_norm scale must be an f32 weight [D]")?,
                    ),
                    None => None,
                };
                let mut result_for = v;
                if w.is_none() {
                    // mul(rms_norm(x), w) => rms_norm(x, w)
                    if let Some(u) = self.single_user(v) {
                        if let Op::Mul = g.op(u) {
                            let uo = g.operands(u);
                            let other = if uo[0] == v { uo[1] } else { uo[0] };
                            if let Some(wi) = self.norm_weight(other, d) {
                                w = Some(wi);
                                result_for = u;
                            }
                        }
                    }
                }
                let kern = self.kern(KernelSpec::RmsNorm {
                    d,
                    eps,
                    scaled: w.is_some(),
                });
                let y = self.act(d, self.rows_of(x));
                self.p.steps.push(Step::RmsNorm { kern, x, w, y });
                if result_for != v {
                    self.vals.insert(result_for, V::A(y));
                    self.done.insert(result_for);
                    return Ok(None);
                }
                V::A(y)
            }
            Op::Matmul | Op::QMatmul => match (self.val(ops[0])?, self.val(ops[1])?) {
                (V::A(x), V::Deq(w)) | (V::A(x), V::W(w)) => {
                    if matches!(g.op(v), Op::Matmul) && matches!(self.val(ops[1])?, V::W(_)) {
                        return Err(
                            "matmul with an f32 weight: the JIT runs quantized weights only".into(),
                        );
                    }
                    self.qmatmul(v, x, &w)?
                }
                (V::Heads(q, heads, _), V::Cache(k)) => V::Scores {
                    q,
                    heads,
                    k,
                    scale: 1.0,
                    masked: false,
                },
                (V::Probs { q, heads, k, scale }, V::CacheT(vc)) => {
                    self.attention(q, heads, k, vc, scale, 64)?
                }
                (a, b) => return Err(format!("unsupported matmul operands {a:?} × {b:?}")),
            },
            Op::Reshape => {
                let w = self.width(v)?;
                match self.val(ops[0])? {
                    V::A(a) if a.width == w => V::A(a),
                    other => return Err(format!("unsupported reshape of {other:?}")),
                }
            }
            Op::Transpose { perm } => match (perm.as_slice(), self.val(ops[0])?) {
                ([0, 2, 1, 3], V::A(a)) => {
                    let sh = &g.ty(ops[0]).shape;
                    let heads = sh[2].as_const().ok_or("symbolic heads")? as usize;
                    V::Heads(a, heads, a.width / heads)
                }
                ([0, 2, 1, 3], V::AttnHeads(a)) => V::A(a),
                ([0, 1, 3, 2], V::Cache(c)) => V::CacheT(c),
                (p, other) => return Err(format!("unsupported transpose {p:?} of {other:?}")),
            },
            Op::Rope { theta, dims, style } => {
                let x = self.a(ops[0])?;
                let sh = consts_tail(g, ops[0])?;
                let (heads, hd) = (sh[0], sh[1]);
                let key = format!("{dims}/{theta}");
                let tab = match self.ropetabs.get(&key) {
                    Some(&t) => t,
                    None => {
                        let t = self.buf(dims as usize * 4, Rows::S);
                        let kern = self.kern(KernelSpec::RopeTable { dims, theta });
                        // The table is computed before the first step that could need it.
                        self.p.steps.insert(0, Step::RopeTab { kern, tab: t });
                        self.ropetabs.insert(key, t);
                        t
                    }
                };
                let kern = self.kern(KernelSpec::Rope {
                    heads,
                    hd,
                    dims,
                    neox: style == RopeStyle::Neox,
                });
                if self.rows_of(x) != Rows::S || x.last {
                    return Err("rope on a kept row is not supported".into());
                }
                // In place when nothing else reads the input.
                let y = if g.num_uses(ops[0]) == 1
                    && self.g.num_uses(v) >= 1
                    && single_reader(self, ops[0])
                {
                    x
                } else {
                    self.act(x.width, Rows::S)
                };
                self.p.steps.push(Step::Rope { kern, x, y, tab });
                V::A(y)
            }
            Op::KvAppend { cache } => {
                let V::Heads(src, kvh, d) = self.val(ops[0])? else {
                    return Err("kv_append expects the [B, KVH, S, D] view of a projection".into());
                };
                let st = g.state(&cache).ok_or("undeclared state")?;
                if st.ty.shape != vec![Dim::B, Dim::c(kvh as u64), Dim::P, Dim::c(d as u64)] {
                    return Err(format!(
                        "cache \"{cache}\" must be [B, KVH, P, D], found {}",
                        st.ty
                    ));
                }
                let ci = self.p.caches.len();
                self.p.caches.push(CacheDef {
                    name: cache,
                    kvh,
                    d,
                });
                // Row-major until an attention reads it as K (`transpose_k_caches`).
                let kern = self.kern(KernelSpec::KvAppend {
                    kvh,
                    d,
                    cap: self.p.cap,
                    transposed: false,
                });
                self.p.steps.push(Step::KvAppend {
                    kern,
                    src,
                    cache: ci,
                });
                V::Cache(ci)
            }
            Op::RepeatKv { .. } => match self.val(ops[0])? {
                V::Cache(c) => V::Cache(c),
                other => return Err(format!("repeat_kv of {other:?}")),
            },
            Op::Scale { factor } => match self.val(ops[0])? {
                V::Scores {
                    q,
                    heads,
                    k,
                    scale,
                    masked: false,
                } => V::Scores {
                    q,
                    heads,
                    k,
                    scale: scale * factor,
                    masked: false,
                },
                other => return Err(format!("scale of {other:?} is not supported")),
            },
            Op::CausalMask => V::Mask,
            Op::Softmax => match self.val(ops[0])? {
                V::Scores {
                    q,
                    heads,
                    k,
                    scale,
                    masked: true,
                } => V::Probs { q, heads, k, scale },
                other => {
                    return Err(format!(
                        "softmax of {other:?}: only masked attention scores are supported"
                    ))
                }
            },
            Op::Add => match (self.val(ops[0])?, self.val(ops[1])?) {
                (
                    V::Scores {
                        q,
                        heads,
                        k,
                        scale,
                        masked: false,
                    },
                    V::Mask,
                )
                | (
                    V::Mask,
                    V::Scores {
                        q,
                        heads,
                        k,
                        scale,
                        masked: false,
                    },
                ) => V::Scores {
                    q,
                    heads,
                    k,
                    scale,
                    masked: true,
                },
                (V::A(a), V::A(b)) if a.width == b.width && self.rows_of(a) == self.rows_of(b) => {
                    let kern = self.kern(KernelSpec::Add);
                    let y = self.act(a.width, self.rows_of(a));
                    self.p.steps.push(Step::Add { kern, a, b, y });
                    V::A(y)
                }
                (a, b) => return Err(format!("unsupported add of {a:?} and {b:?}")),
            },
            Op::Silu => {
                // mul(silu(a), b) => swiglu(a, b), emitted at the mul (b may come later).
                let a = self.a(ops[0])?;
                match self.single_user(v).map(|u| g.op(u)) {
                    Some(Op::Mul) => V::SiluOf(a),
                    _ => return Err("silu must feed exactly one mul (swiglu)".into()),
                }
            }
            Op::SwiGlu => {
                let (a, b) = (self.a(ops[0])?, self.a(ops[1])?);
                V::A(self.swiglu(a, b)?)
            }
            Op::Mul => match (self.val(ops[0])?, self.val(ops[1])?) {
                (V::SiluOf(a), V::A(b)) | (V::A(b), V::SiluOf(a)) => V::A(self.swiglu(a, b)?),
                _ => return Err("mul outside rms_norm scaling and swiglu is not supported".into()),
            },
            Op::TakeLast => {
                let a = self.a(ops[0])?;
                V::A(Act { last: true, ..a })
            }
            Op::FlashAttention { scale, block } => {
                let (V::Heads(q, heads, _), V::Cache(k), V::Cache(vc)) =
                    (self.val(ops[0])?, self.val(ops[1])?, self.val(ops[2])?)
                else {
                    return Err("flash_attention expects (q view, K cache, V cache)".into());
                };
                self.attention(q, heads, k, vc, scale, block.clamp(1, 256) as usize)?
            }
            Op::Output { .. } => {
                let a = self.a(ops[0])?;
                self.p.output = a;
                self.p.keep.push(a.buf);
                return Ok(None);
            }
        };
        Ok(Some(r))
    }

    fn swiglu(&mut self, a: Act, b: Act) -> Result<Act, String> {
        if a.width != b.width || self.rows_of(a) != self.rows_of(b) {
            return Err("swiglu operands differ in shape".into());
        }
        let kern = self.kern(KernelSpec::SwiGlu);
        let y = self.act(a.width, self.rows_of(a));
        self.p.steps.push(Step::SwiGlu { kern, a, b, y });
        Ok(y)
    }
}

/// `[.., H, D]` of a rope operand `[B, S, H, D]`.
fn consts_tail(g: &Graph, v: Value) -> Result<Vec<usize>, String> {
    let sh = &g.ty(v).shape;
    if sh.len() != 4 {
        return Err(format!("rope expects [B, S, H, D], found {}", g.ty(v)));
    }
    Ok(vec![
        sh[2].as_const().ok_or("symbolic heads")? as usize,
        sh[3].as_const().ok_or("symbolic head dim")? as usize,
    ])
}

/// True if the activation behind `v` is read only through `v` (a reshape chain ending in
/// one reader), so an in-place update cannot clobber another reader.
fn single_reader(l: &Lower, v: Value) -> bool {
    let g = l.g;
    let mut cur = v;
    loop {
        let ops = g.operands(cur);
        match g.op(cur) {
            Op::Reshape if ops.len() == 1 => {
                if g.num_uses(ops[0]) != 1 {
                    return false;
                }
                cur = ops[0];
            }
            _ => return true,
        }
    }
}

//! Lowering the CPU pipeline's output to a flat list of kernel steps: one op, one step.
//!
//! The input is a graph in the phase "lowerable for cpu" (`lpuc_passes::lowerable`: fused
//! ops only, tiled, memory-planned); [`lower`] checks that phase first and refuses anything
//! else with the op, the value and the pass that should have removed it. Nothing here
//! recognizes a primitive pattern. Each op maps to one step, in the plan's `mem.step`
//! order:
//!
//! | op | step |
//! |---|---|
//! | `embedding(table, tokens)` | `Embed` (q8_0 kernel, else GGUF dequantization per row) |
//! | `rms_norm(x[, w])` | `RmsNorm` |
//! | `qmatmul(x, w)` | `QMatmul` (after one `Quant` of `x` into its planned `mem.q8` companion; consecutive qmatmuls of one `x` — the plan schedules them so — are one parallel section) |
//! | `rope(x)` | `Rope` (cos/sin table per `(dims, theta)`, computed once per call) |
//! | `kv_append(x)` | `KvAppend`, in the layout `mem.layout` names |
//! | `flash_attention(q, k, v)` | `Attention`, key block = `tile.sizes[1]` |
//! | `swiglu(a, b)`, `add(a, b)` | `SwiGlu`, `Add` |
//! | `take_last(x)` | `TakeLast` (copies the last row) |
//! | `reshape`, `transpose [0,2,1,3]` (`mem.view`), `output` | no step: views of the operand's buffer |
//!
//! Memory: every activation is a row-major `[rows, width]` f32 buffer at the plan's
//! `mem.offset` in one arena (rows: `S`, or 1 after `take_last`); a head-first view
//! `[B, H, S, D]` of such a buffer keeps its `[S, H, D]` layout (attention reads and writes
//! that layout), so the plan marks those transposes as views. The plan is made at one
//! binding of `S` (`mem.bind` on the `tokens` input): longer calls run in chunks of at most
//! that many tokens. The V caches are `[kv_heads, capacity, head_dim]`, the K caches (planned
//! `mem.layout = k_tiles16`) `[kv_heads, capacity / 16, head_dim, 16]`.

use std::collections::HashMap;

use lpuc_codegen::kernels::KernelSpec;
use lpuc_codegen::pack;
use lpuc_ir::dtype::DType;
use lpuc_ir::graph::{Graph, Value};
use lpuc_ir::op::{Attr, Op, RopeStyle};
use lpuc_ir::types::{Dim, Sym};
use lpuc_passes::phase::alias_root;
use lpuc_passes::TargetKind;

/// Buffer rows: the number of new tokens, or one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rows {
    S,
    One,
}

/// An activation: `rows × width` f32 at an arena offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Act {
    pub off: usize,
    pub rows: Rows,
    /// f32 elements per row.
    pub width: usize,
}

/// A quantized activation: arena offsets of its values, scales and sums.
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
    TakeLast {
        x: Act,
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
            Step::TakeLast { .. } => "take_last",
        }
    }
}

#[derive(Clone, Debug)]
pub struct CacheDef {
    pub name: String,
    pub kvh: usize,
    pub d: usize,
    /// Bytes per element: 4 (f32) or 2 (f16, the state's dtype).
    pub elem_bytes: usize,
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
    pub specs: Vec<KernelSpec>,
    pub packs: Vec<PackDef>,
    pub norms: Vec<String>,
    pub caches: Vec<CacheDef>,
    /// Rope tables: f32 elements per token row (`dims`), one buffer each.
    pub ropetabs: Vec<usize>,
    /// KV-cache capacity (the bound of `P`).
    pub cap: usize,
    /// Tokens the memory plan serves per call (`S` of its binding).
    pub max_s: usize,
    /// Arena bytes (the plan's peak).
    pub arena_bytes: usize,
    pub output: Act,
}

#[derive(Clone, Debug)]
enum V {
    Tokens,
    W,
    A(Act),
    /// `[B, H, S, D]` view of an `[S, H·D]` activation.
    Heads(Act, usize, usize),
    /// A KV cache's rows `0..P+S`.
    Cache(usize),
    /// `[B, H, S, D]` attention result stored `[S, H·D]`.
    AttnHeads(Act),
}

struct Lower<'g> {
    g: &'g Graph,
    num: HashMap<Value, usize>,
    vals: HashMap<Value, V>,
    p: Plan,
    kerns: HashMap<String, usize>,
    packs: HashMap<String, usize>,
    norms: HashMap<String, usize>,
    quantized: HashMap<Value, QIn>,
    ropetabs: HashMap<String, usize>,
    vnni: bool,
}

fn int(g: &Graph, v: Value, key: &str) -> Option<i64> {
    match g.node(v).annot.get(key) {
        Some(Attr::Int(x)) => Some(*x),
        _ => None,
    }
}

fn ints(g: &Graph, v: Value, key: &str) -> Option<Vec<i64>> {
    match g.node(v).annot.get(key) {
        Some(Attr::Ints(x)) => Some(x.clone()),
        _ => None,
    }
}

/// Lowers a graph in the phase "lowerable for cpu"; `vnni` picks the AVX-512 VNNI kernels.
pub fn lower(g: &Graph, vnni: bool) -> Result<Plan, String> {
    lpuc_ir::verify::verify(g).map_err(|e| format!("the graph does not verify:\n{e}"))?;
    lpuc_passes::lowerable::check(g, TargetKind::Cpu).map_err(|e| e.to_string())?;
    if g.syms.bound(Sym::B).unwrap_or(1) != 1 {
        return Err("the cpu backend runs one sequence at a time (bound of B must be 1)".into());
    }
    let cap = g
        .syms
        .bound(Sym::P)
        .ok_or("the graph gives P no bound: the KV cache capacity is unknown")?
        as usize;
    let num = g.numbering();
    // The plan's binding, and its execution order.
    let mut order: Vec<(i64, Value)> = vec![];
    let mut max_s = None;
    let mut arena = 0usize;
    for v in g.sorted_values() {
        if let Some(st) = int(g, v, "mem.step") {
            order.push((st, v));
        }
        if let Op::Input { .. } = g.op(v) {
            if let Some(b) = ints(g, v, "mem.bind") {
                max_s = b.get(2).map(|&s| s.max(1) as usize);
            }
        }
        if let (Some(o), Some(s)) = (int(g, v, "mem.offset"), int(g, v, "mem.size")) {
            arena = arena.max((o + s) as usize);
        }
    }
    order.sort_unstable();
    let max_s = max_s.ok_or("the memory plan does not record its binding (`mem.bind` on the tokens input): re-run plan-buffers")?;
    let mut l = Lower {
        g,
        num,
        vals: HashMap::new(),
        p: Plan {
            steps: vec![],
            specs: vec![],
            packs: vec![],
            norms: vec![],
            caches: vec![],
            ropetabs: vec![],
            cap,
            max_s,
            arena_bytes: arena,
            output: Act {
                off: 0,
                rows: Rows::One,
                width: 0,
            },
        },
        kerns: HashMap::new(),
        packs: HashMap::new(),
        norms: HashMap::new(),
        quantized: HashMap::new(),
        ropetabs: HashMap::new(),
        vnni,
    };
    for w in g.weights() {
        l.vals.insert(w, V::W);
    }
    let mut have_out = false;
    for (_, v) in order {
        let r = l
            .node(v)
            .map_err(|m| format!("{} at %{}: {m}", g.op(v).name(), l.num[&v]))?;
        if let Some(x) = r {
            l.vals.insert(v, x);
        }
        have_out |= matches!(g.op(v), Op::Output { .. });
    }
    if !have_out {
        return Err("the graph has no output".into());
    }
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

    fn val(&self, v: Value) -> Result<V, String> {
        self.vals.get(&v).cloned().ok_or_else(|| {
            format!(
                "operand %{} has no cpu lowering",
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

    /// The activation `v` defines: `[B, S|1, ...]` f32 at its planned offset.
    fn new_act(&self, v: Value) -> Result<Act, String> {
        let g = self.g;
        let t = g.ty(v);
        let sh = &t.shape;
        if t.dtype != DType::F32 || sh.len() < 2 || sh[0] != Dim::B {
            return Err(format!("expected an f32 [B, S, ...] activation, found {t}"));
        }
        let rows = match sh[1] {
            Dim::S => Rows::S,
            d if d.as_const() == Some(1) => Rows::One,
            _ => return Err(format!("rows of {t} are neither S nor 1")),
        };
        let width = sh[2..]
            .iter()
            .map(|d| d.as_const().map(|x| x as usize))
            .product::<Option<usize>>()
            .ok_or_else(|| format!("symbolic inner dims in {t}"))?;
        let r = alias_root(g, v);
        let off = int(g, r, "mem.offset").ok_or("no `mem.offset` (pass plan-buffers)")?;
        Ok(Act {
            off: off as usize,
            rows,
            width,
        })
    }

    fn norm_weight(&mut self, v: Value, d: usize) -> Result<usize, String> {
        let Op::Weight { name } = self.g.op(v) else {
            return Err("rms_norm scale must be a weight".into());
        };
        let t = self.g.ty(v);
        if t.dtype != DType::F32 || t.shape != vec![Dim::c(d as u64)] {
            return Err(format!(
                "rms_norm scale \"{name}\" must be f32[{d}], found {t}"
            ));
        }
        if let Some(&i) = self.norms.get(name) {
            return Ok(i);
        }
        self.p.norms.push(name.clone());
        self.norms.insert(name.clone(), self.p.norms.len() - 1);
        Ok(self.p.norms.len() - 1)
    }

    /// `x`'s q8 companion, quantized once (the plan placed it: `mem.q8` on `x`'s buffer).
    fn quantize(&mut self, xv: Value, x: Act) -> Result<QIn, String> {
        let root = alias_root(self.g, xv);
        if let Some(q) = self.quantized.get(&root) {
            return Ok(q.clone());
        }
        let k = x.width;
        if k % 32 != 0 {
            return Err(format!("row width {k} is not a multiple of 32"));
        }
        let q8 = ints(self.g, root, "mem.q8")
            .filter(|q| q.len() == 3)
            .ok_or(
            "its input has no planned q8 companion (`mem.q8`; pass plan-buffers for target cpu)",
        )?;
        let q = QIn {
            xq: q8[0] as usize,
            dx: q8[1] as usize,
            sx: q8[2] as usize,
        };
        let kern = self.kern(KernelSpec::Quantize { k });
        self.p.steps.push(Step::Quant {
            kern,
            x,
            q: q.clone(),
            k,
        });
        self.quantized.insert(root, q.clone());
        Ok(q)
    }

    fn qmatmul(&mut self, v: Value) -> Result<V, String> {
        let g = self.g;
        let (xv, wv) = (g.operands(v)[0], g.operands(v)[1]);
        let x = self.a(xv)?;
        let Op::Weight { name: wname } = g.op(wv) else {
            return Err("the weight operand is not a weight".into());
        };
        let t = g.ty(wv);
        let sh = consts(g, wv)?;
        if sh.len() != 2 || sh[1] != x.width {
            return Err(format!(
                "weight {wname} {t} does not match an input row of {}",
                x.width
            ));
        }
        let (n, k) = (sh[0], sh[1]);
        let tile = ints(g, v, "tile.sizes").ok_or("not tiled (pass tile)")?;
        if tile.len() != 3 || tile[1] as usize != pack::GROUP || tile[2] as usize != k {
            return Err(format!(
                "tile {tile:?}: the cpu kernels take [m, {}, K] (one packed group of {} rows, whole rows)",
                pack::GROUP,
                pack::GROUP
            ));
        }
        let m_tile = tile[0].clamp(1, 16) as usize;
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
        let q = self.quantize(xv, x)?;
        let kern = self.kern(KernelSpec::QMatmul {
            n,
            k,
            bits,
            vnni: self.vnni,
            m_tile,
        });
        let out = self.new_act(v)?;
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

    fn cache(&mut self, cache: &str, kvh: usize, d: usize) -> Result<usize, String> {
        let st = self.g.state(cache).ok_or("undeclared state")?;
        if st.ty.shape != vec![Dim::B, Dim::c(kvh as u64), Dim::P, Dim::c(d as u64)]
            || !matches!(st.ty.dtype, DType::F32 | DType::F16)
        {
            return Err(format!(
                "cache \"{cache}\" must be f32 or f16 [B, {kvh}, P, {d}], found {}",
                st.ty
            ));
        }
        self.p.caches.push(CacheDef {
            name: cache.to_string(),
            kvh,
            d,
            elem_bytes: if st.ty.dtype == DType::F16 { 2 } else { 4 },
        });
        Ok(self.p.caches.len() - 1)
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
            Op::Weight { .. } => V::W,
            Op::Embedding => {
                let (V::W, V::Tokens) = (self.val(ops[0])?, self.val(ops[1])?) else {
                    return Err("embedding must read a weight table with the token ids".into());
                };
                let Op::Weight { name: table } = g.op(ops[0]).clone() else {
                    unreachable!("V::W is a weight")
                };
                let sh = consts(g, ops[0])?;
                let vocab = sh[0];
                let dtype = g.ty(ops[0]).dtype;
                let out = self.new_act(v)?;
                let kern =
                    (dtype == DType::Q8_0).then(|| self.kern(KernelSpec::EmbedQ8 { d: out.width }));
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
                let w = match ops.get(1) {
                    Some(o) => Some(self.norm_weight(*o, d)?),
                    None => None,
                };
                let kern = self.kern(KernelSpec::RmsNorm {
                    d,
                    eps,
                    scaled: w.is_some(),
                });
                let y = self.new_act(v)?;
                self.p.steps.push(Step::RmsNorm { kern, x, w, y });
                V::A(y)
            }
            Op::QMatmul => self.qmatmul(v)?,
            Op::Reshape => {
                let w = self.new_act(v)?.width;
                match self.val(ops[0])? {
                    V::A(a) if a.width == w => V::A(a),
                    other => return Err(format!("a reshape that changes rows of {other:?}")),
                }
            }
            Op::Transpose { .. } => {
                if int(g, v, "mem.view").is_none() {
                    return Err("a transpose the memory plan did not mark as a view".into());
                }
                match self.val(ops[0])? {
                    V::A(a) => {
                        let sh = consts_tail(g, ops[0])?;
                        V::Heads(a, sh[0], sh[1])
                    }
                    V::AttnHeads(a) => V::A(a),
                    other => return Err(format!("a transpose of {other:?}")),
                }
            }
            Op::Rope { theta, dims, style } => {
                let x = self.a(ops[0])?;
                let sh = consts_tail(g, ops[0])?;
                let (heads, hd) = (sh[0], sh[1]);
                let key = format!("{dims}/{theta}");
                let tab = match self.ropetabs.get(&key) {
                    Some(&t) => t,
                    None => {
                        let t = self.p.ropetabs.len();
                        self.p.ropetabs.push(dims as usize);
                        let kern = self.kern(KernelSpec::RopeTable { dims, theta });
                        // Computed before the first step that could need it.
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
                if x.rows != Rows::S {
                    return Err("rope on a kept row is not supported".into());
                }
                let y = self.new_act(v)?;
                self.p.steps.push(Step::Rope { kern, x, y, tab });
                V::A(y)
            }
            Op::KvAppend { cache } => {
                let V::Heads(src, kvh, d) = self.val(ops[0])? else {
                    return Err("kv_append expects the [B, KVH, S, D] view of a projection".into());
                };
                let ci = self.cache(&cache, kvh, d)?;
                let tiled = match g.node(v).annot.get("mem.layout") {
                    Some(Attr::Ident(l)) if l == "k_tiles16" => true,
                    None => false,
                    Some(other) => return Err(format!("unknown cache layout {other}")),
                };
                let kern = self.kern(KernelSpec::KvAppend {
                    kvh,
                    d,
                    transposed: tiled,
                    f16: self.p.caches[ci].elem_bytes == 2,
                });
                self.p.steps.push(Step::KvAppend {
                    kern,
                    src,
                    cache: ci,
                });
                V::Cache(ci)
            }
            Op::FlashAttention { scale, block } => {
                let (V::Heads(q, heads, _), V::Cache(k), V::Cache(vc)) =
                    (self.val(ops[0])?, self.val(ops[1])?, self.val(ops[2])?)
                else {
                    return Err("flash_attention expects (q view, K cache, V cache)".into());
                };
                if g.node(ops[1]).annot.get("mem.layout") != Some(&Attr::Ident("k_tiles16".into()))
                {
                    return Err("its K cache is not planned in the k_tiles16 layout".into());
                }
                let tile = ints(g, v, "tile.sizes").ok_or("not tiled (pass tile)")?;
                if tile.len() != 2 || tile[1] != i64::from(block) {
                    return Err(format!("tile {tile:?} disagrees with block {block}"));
                }
                let (kvh, d) = (self.p.caches[k].kvh, self.p.caches[k].d);
                if heads % kvh != 0 || self.p.caches[vc].kvh != kvh || self.p.caches[vc].d != d {
                    return Err("K/V caches and query heads do not line up".into());
                }
                if q.rows != Rows::S {
                    return Err("attention on a single kept row is not supported".into());
                }
                let kern = self.kern(KernelSpec::Attention {
                    h: heads,
                    kvh,
                    d,
                    block: block.clamp(1, 256) as usize,
                    scale,
                    k_f16: self.p.caches[k].elem_bytes == 2,
                    v_f16: self.p.caches[vc].elem_bytes == 2,
                });
                let ty = g.ty(v);
                let o = Act {
                    off: int(g, v, "mem.offset").ok_or("no `mem.offset` (pass plan-buffers)")?
                        as usize,
                    rows: Rows::S,
                    width: heads * d,
                };
                if ty.shape.len() != 4 {
                    return Err(format!("expected [B, H, S, D], found {ty}"));
                }
                self.p.steps.push(Step::Attention {
                    kern,
                    q,
                    k,
                    v: vc,
                    o,
                    heads,
                });
                V::AttnHeads(o)
            }
            Op::SwiGlu | Op::Add => {
                let (a, b) = (self.a(ops[0])?, self.a(ops[1])?);
                if a.width != b.width || a.rows != b.rows {
                    return Err("operands differ in shape (no broadcasting on cpu)".into());
                }
                let y = self.new_act(v)?;
                let step = if matches!(g.op(v), Op::Add) {
                    Step::Add {
                        kern: self.kern(KernelSpec::Add),
                        a,
                        b,
                        y,
                    }
                } else {
                    Step::SwiGlu {
                        kern: self.kern(KernelSpec::SwiGlu),
                        a,
                        b,
                        y,
                    }
                };
                self.p.steps.push(step);
                V::A(y)
            }
            Op::TakeLast => {
                let x = self.a(ops[0])?;
                let y = self.new_act(v)?;
                self.p.steps.push(Step::TakeLast { x, y });
                V::A(y)
            }
            Op::Output { .. } => {
                self.p.output = self.a(ops[0])?;
                return Ok(None);
            }
            other => {
                // `lowerable::check` refused these already; never run them wrongly.
                return Err(format!(
                    "{} is outside the cpu backend's op set",
                    other.name()
                ));
            }
        };
        Ok(Some(r))
    }
}

/// `[.., H, D]` of an operand `[B, S, H, D]`.
fn consts_tail(g: &Graph, v: Value) -> Result<Vec<usize>, String> {
    let sh = &g.ty(v).shape;
    if sh.len() != 4 {
        return Err(format!("expected [B, S, H, D], found {}", g.ty(v)));
    }
    Ok(vec![
        sh[2].as_const().ok_or("symbolic heads")? as usize,
        sh[3].as_const().ok_or("symbolic head dim")? as usize,
    ])
}

//! Kernel specifications and their LLVM IR generators.
//!
//! A [`KernelSpec`] names one kernel with every shape and constant baked in; equal specs
//! are one function, so a 30-layer model needs a dozen kernels, not hundreds. Each
//! generator writes IR text for an exact computation documented on its variant; the
//! scalar references in [`crate::pack`] and the tests in `codegen/tests` pin the meaning.
//!
//! Signatures are C ABI, all pointers plus `i64` counts. Kernels that can be split across
//! threads take a half-open range of work items (`lo`, `hi`) and touch only that range.

use crate::irtext::{f32c, f64c, splat, Fb, ModuleText};
use crate::pack::{block_bytes, GROUP, QK};

/// The measured token-tile height of the prefill (GEMM) path of `qmatmul`: the 16-row
/// weight block is unpacked once per tile and reused for `QMM_TILE` tokens (8 accumulators
/// + 8 unpacked weight registers + scales fit the 32 zmm registers). The tiler's CPU
/// description (`mr`) says the same; the backend compiles what the `tile.sizes` annotation
/// says (`KernelSpec::QMatmul::m_tile`).
pub const QMM_TILE: usize = 4;

#[derive(Clone, Debug, PartialEq)]
pub enum KernelSpec {
    /// `fn(w, xq, dx, sx, y, m, g_lo, g_hi)`: `y[m, n] = x[m, k] · Wᵀ` over packed weights
    /// (see [`crate::pack`]) and quantized activations, for row groups `g_lo..g_hi`.
    QMatmul {
        n: usize,
        k: usize,
        bits: u32,
        vnni: bool,
        /// Tokens one unpacked 16-row weight block is reused for (the `m` of the op's
        /// `tile.sizes`); [`QMM_TILE`] is the measured choice.
        m_tile: usize,
    },
    /// `fn(x, xq, dx, sx, r_lo, r_hi)`: rows of `k` f32 to q8 blocks with sums (see
    /// [`crate::pack::quantize_ref`]).
    Quantize { k: usize },
    /// `fn(x, w, y, r_lo, r_hi)`: `y = x / sqrt(mean(x²) + eps) (· w)`, rows of `d`.
    RmsNorm { d: usize, eps: f32, scaled: bool },
    /// `fn(tab, s, p)`: `tab[s][i] = (cos, sin)((p + s) · theta^(−2i/dims))`, `i < dims/2`.
    RopeTable { dims: u32, theta: f32 },
    /// `fn(x, y, tab, s)`: rotary embedding of `x[s, heads, hd]` (normal = adjacent pairs,
    /// neox = halves) with the table above.
    Rope {
        heads: usize,
        hd: usize,
        dims: u32,
        neox: bool,
    },
    /// `fn(src, cache, s, p, cap)`: `cache[kvh][p + i][d] = src[i][kvh][d]`, or with
    /// `transposed` (the K cache) in 16-key tiles, `cache[kvh][j / 16][d][j % 16] =
    /// src[i][kvh][d]` for `j = p + i` (see [`k_tile_offset`]).
    KvAppend {
        kvh: usize,
        d: usize,
        transposed: bool,
        /// The cache holds f16 (rounded to nearest even on store, as `half` and the
        /// interpreter round), else f32.
        f16: bool,
    },
    /// `fn(q, kc, vc, o, s, p, r_lo, r_hi, cap)`: causal GQA attention with online softmax over
    /// key blocks of `block` (rounded up to a multiple of 16). `q`, `o`: `[s, h, d]`; the K
    /// cache in transposed 16-key tiles (`KvAppend { transposed: true }`: the scores of 16
    /// keys are 16-wide FMAs over one 4 KiB tile, with no horizontal sums, and a new token
    /// touches one tile, not a page per dimension), the V cache `[kvh, cap, d]`; work item
    /// `r = head · s + row`.
    Attention {
        h: usize,
        kvh: usize,
        d: usize,
        block: usize,
        scale: f32,
        /// The K / V caches hold f16 (widened exactly as they are read).
        k_f16: bool,
        v_f16: bool,
    },
    /// `fn(a, b, y, lo, hi)`: `y = silu(a) · b`.
    SwiGlu,
    /// `fn(a, b, y, lo, hi)`: `y = a + b`.
    Add,
    /// `fn(table, ids, out, n)`: q8_0 embedding rows of `d`.
    EmbedQ8 { d: usize },
}

fn fkey(x: f32) -> String {
    format!("{:08x}", x.to_bits())
}

impl KernelSpec {
    /// The function's symbol: every baked parameter is in it, so equal names mean equal code.
    pub fn symbol(&self) -> String {
        match self {
            KernelSpec::QMatmul {
                n,
                k,
                bits,
                vnni,
                m_tile,
            } => {
                format!(
                    "lpuc_qmm_{n}x{k}_b{bits}_m{m_tile}_{}",
                    if *vnni { "vnni" } else { "gen" }
                )
            }
            KernelSpec::Quantize { k } => format!("lpuc_quant_{k}"),
            KernelSpec::RmsNorm { d, eps, scaled } => {
                format!("lpuc_rmsnorm_{d}_{}_{}", fkey(*eps), *scaled as u8)
            }
            KernelSpec::RopeTable { dims, theta } => {
                format!("lpuc_ropetab_{dims}_{}", fkey(*theta))
            }
            KernelSpec::Rope {
                heads,
                hd,
                dims,
                neox,
            } => {
                format!("lpuc_rope_{heads}_{hd}_{dims}_{}", *neox as u8)
            }
            KernelSpec::KvAppend {
                kvh,
                d,
                transposed,
                f16,
            } => format!(
                "lpuc_kvapp_{kvh}_{d}{}{}",
                if *transposed { "_t" } else { "" },
                if *f16 { "_h" } else { "" }
            ),
            KernelSpec::Attention {
                h,
                kvh,
                d,
                block,
                scale,
                k_f16,
                v_f16,
            } => format!(
                "lpuc_attn_{h}_{kvh}_{d}_{block}_{}{}{}",
                fkey(*scale),
                if *k_f16 { "_kh" } else { "" },
                if *v_f16 { "_vh" } else { "" }
            ),
            KernelSpec::SwiGlu => "lpuc_swiglu".into(),
            KernelSpec::Add => "lpuc_add".into(),
            KernelSpec::EmbedQ8 { d } => format!("lpuc_embq8_{d}"),
        }
    }

    pub fn emit(&self, m: &mut ModuleText) {
        let name = self.symbol();
        match self {
            KernelSpec::QMatmul {
                n,
                k,
                bits,
                vnni,
                m_tile,
            } => emit_qmm(m, &name, *n, *k, *bits, *vnni, *m_tile),
            KernelSpec::Quantize { k } => emit_quant(m, &name, *k),
            KernelSpec::RmsNorm { d, eps, scaled } => emit_rmsnorm(m, &name, *d, *eps, *scaled),
            KernelSpec::RopeTable { dims, theta } => emit_ropetab(m, &name, *dims, *theta),
            KernelSpec::Rope {
                heads,
                hd,
                dims,
                neox,
            } => emit_rope(m, &name, *heads, *hd, *dims, *neox),
            KernelSpec::KvAppend {
                kvh,
                d,
                transposed,
                f16,
            } => emit_kvapp(m, &name, *kvh, *d, *transposed, *f16),
            KernelSpec::Attention {
                h,
                kvh,
                d,
                block,
                scale,
                k_f16,
                v_f16,
            } => emit_attn(m, &name, *h, *kvh, *d, *block, *scale, *k_f16, *v_f16),
            KernelSpec::SwiGlu => emit_binary(m, &name, true),
            KernelSpec::Add => emit_binary(m, &name, false),
            KernelSpec::EmbedQ8 { d } => emit_embq8(m, &name, *d),
        }
    }
}

/// Builds one module holding every distinct spec (duplicates are emitted once).
pub fn module_for(specs: &[KernelSpec]) -> ModuleText {
    let mut m = ModuleText::default();
    emit_exp(&mut m);
    let mut seen = std::collections::BTreeSet::new();
    for s in specs {
        if seen.insert(s.symbol()) {
            s.emit(&mut m);
        }
    }
    m
}

const VPDPBUSD: &str =
    "declare <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32>, <16 x i32>, <16 x i32>)";
const FMA16: &str =
    "declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)";

/// `exp` for f32: Cephes' polynomial after range reduction by ln 2, with the input clamped to
/// the normal range. Relative error ~2 ulp; vectorizes because it is plain arithmetic.
fn emit_exp(m: &mut ModuleText) {
    m.declare("declare float @llvm.maxnum.f32(float, float)");
    m.declare("declare float @llvm.minnum.f32(float, float)");
    m.declare("declare float @llvm.rint.f32(float)");
    m.declare("declare float @llvm.fma.f32(float, float, float)");
    let mut f = Fb::new("internal float @lpuc_exp(float %x)", 1);
    let a = f.v(format!(
        "call float @llvm.maxnum.f32(float %x, float {})",
        f32c(-87.3)
    ));
    let c = f.v(format!(
        "call float @llvm.minnum.f32(float {a}, float {})",
        f32c(88.3)
    ));
    let t = f.v(format!(
        "fmul float {c}, {}",
        f32c(std::f32::consts::LOG2_E)
    ));
    let n = f.v(format!("call float @llvm.rint.f32(float {t})"));
    let r1 = f.v(format!(
        "call float @llvm.fma.f32(float {n}, float {}, float {c})",
        f32c(-0.693_359_4)
    ));
    let r = f.v(format!(
        "call float @llvm.fma.f32(float {n}, float {}, float {r1})",
        f32c(2.121_944_4e-4)
    ));
    let coef = [
        1.987_569_1e-4f32,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5.000_000_1e-1,
    ];
    let mut p = f32c(coef[0]);
    for c in &coef[1..] {
        p = f.v(format!(
            "call float @llvm.fma.f32(float {p}, float {r}, float {})",
            f32c(*c)
        ));
    }
    let r2 = f.v(format!("fmul float {r}, {r}"));
    let q = f.v(format!(
        "call float @llvm.fma.f32(float {p}, float {r2}, float {r})"
    ));
    let q1 = f.v(format!("fadd float {q}, 1.0"));
    let ni = f.v(format!("fptosi float {n} to i32"));
    let e = f.v(format!("add i32 {ni}, 127"));
    let sh = f.v(format!("shl i32 {e}, 23"));
    let sc = f.v(format!("bitcast i32 {sh} to float"));
    let out = f.v(format!("fmul float {q1}, {sc}"));
    f.i(format!("ret float {out}"));
    m.push_fn(f);
}

/// One token tile of `qmatmul`: 16 rows × `t` tokens over all blocks.
fn emit_qmm_tile(
    m: &mut ModuleText,
    name: &str,
    n: usize,
    k: usize,
    bits: u32,
    t: usize,
    vnni: bool,
) {
    let nb = k / QK;
    let bb = block_bytes(bits);
    let chunks = if bits == 4 { 4 } else { 8 };
    let qbytes = chunks * 64;
    let dot = if vnni {
        "@llvm.x86.avx512.vpdpbusd.512"
    } else {
        "@lpuc_dp4"
    };
    let mut f = Fb::new(
        &format!("internal void @{name}(ptr noalias %wg, ptr noalias %xq, ptr noalias %dx, ptr noalias %sx, ptr noalias %y)"),
        0,
    );
    f.i("br label %loop");
    f.label("loop");
    f.i("%b = phi i64 [0, %entry], [%bn, %loop]");
    for i in 0..t {
        f.i(format!(
            "%acc{i} = phi <16 x float> [zeroinitializer, %entry], [%accn{i}, %loop]"
        ));
    }
    f.i(format!("%boff = mul nsw i64 %b, {bb}"));
    f.i("%wb = getelementptr inbounds i8, ptr %wg, i64 %boff");
    let pf = prefetch_distance();
    if t == 1 && pf > 0 {
        // The weight stream is the whole cost of a GEMV: keep more cache-line requests in
        // flight than the hardware prefetcher does (it stops at 4 KiB page boundaries).
        for line in (0..bb).step_by(64) {
            let p = f.v(format!("getelementptr i8, ptr %wb, i64 {}", pf + line));
            f.i(format!(
                "call void @llvm.prefetch.p0(ptr {p}, i32 0, i32 3, i32 1)"
            ));
        }
    }
    // (weight operand, activation byte offset within the block)
    let mut ops: Vec<(String, usize)> = Vec::new();
    let s15 = splat(64, "i8", "15");
    let s4 = splat(64, "i8", "4");
    for c in 0..chunks {
        let p = f.gep("i8", "%wb", &(64 * c).to_string());
        let w = f.v(format!("load <64 x i8>, ptr {p}, align 1"));
        if bits == 4 {
            let lo = f.v(format!("and <64 x i8> {w}, {s15}"));
            let hi = f.v(format!("lshr <64 x i8> {w}, {s4}"));
            let loi = f.v(format!("bitcast <64 x i8> {lo} to <16 x i32>"));
            let hii = f.v(format!("bitcast <64 x i8> {hi} to <16 x i32>"));
            ops.push((loi, 4 * c));
            ops.push((hii, 16 + 4 * c));
        } else {
            let wi = f.v(format!("bitcast <64 x i8> {w} to <16 x i32>"));
            ops.push((wi, 4 * c));
        }
    }
    let dp = f.gep("i8", "%wb", &qbytes.to_string());
    let dh = f.v(format!("load <16 x half>, ptr {dp}, align 1"));
    let d = f.v(format!("fpext <16 x half> {dh} to <16 x float>"));
    let mp = f.gep("i8", "%wb", &(qbytes + 32).to_string());
    let mh = f.v(format!("load <16 x half>, ptr {mp}, align 1"));
    let mw = f.v(format!("fpext <16 x half> {mh} to <16 x float>"));
    f.i("%xb = mul nsw i64 %b, 32");
    for i in 0..t {
        let xo = f.v(format!("add nsw i64 %xb, {}", i * k));
        let xp = f.gep("i8", "%xq", &xo);
        // Two independent chains halve the vpdpbusd latency chain at t = 1.
        let mut chain = ["zeroinitializer".to_string(), "zeroinitializer".to_string()];
        for (j, (w, off)) in ops.iter().enumerate() {
            let ap = f.gep("i8", &xp, &off.to_string());
            let xv = f.v(format!("load i32, ptr {ap}, align 1"));
            let xs = f.splat_v(16, "i32", &xv);
            let prev = chain[j % 2].clone();
            chain[j % 2] = f.v(format!(
                "call <16 x i32> {dot}(<16 x i32> {prev}, <16 x i32> {w}, <16 x i32> {xs})"
            ));
        }
        let is = f.v(format!("add <16 x i32> {}, {}", chain[0], chain[1]));
        let fl = f.v(format!("sitofp <16 x i32> {is} to <16 x float>"));
        let bi = f.v(format!("add nsw i64 %b, {}", i * nb));
        let dxp = f.gep("float", "%dx", &bi);
        let dxv = f.v(format!("load float, ptr {dxp}, align 4"));
        let sxp = f.gep("float", "%sx", &bi);
        let sxv = f.v(format!("load float, ptr {sxp}, align 4"));
        let dxs = f.splat_v(16, "float", &dxv);
        let sxs = f.splat_v(16, "float", &sxv);
        let sc = f.v(format!("fmul <16 x float> {d}, {dxs}"));
        let a1 = f.v(format!(
            "call <16 x float> @llvm.fma.v16f32(<16 x float> {fl}, <16 x float> {sc}, <16 x float> %acc{i})"
        ));
        f.i(format!(
            "%accn{i} = call <16 x float> @llvm.fma.v16f32(<16 x float> {mw}, <16 x float> {sxs}, <16 x float> {a1})"
        ));
    }
    f.i("%bn = add nsw i64 %b, 1");
    f.i(format!("%done = icmp eq i64 %bn, {nb}"));
    f.i("br i1 %done, label %exit, label %loop");
    f.label("exit");
    for i in 0..t {
        let yp = f.gep("float", "%y", &(i * n).to_string());
        f.i(format!("store <16 x float> %accn{i}, ptr {yp}, align 4"));
    }
    f.i("ret void");
    m.push_fn(f);
}

/// Portable stand-in for `vpdpbusd` (u8 × i8, groups of 4 summed into i32 lanes).
fn emit_dp4(m: &mut ModuleText) {
    let mut f = Fb::new(
        "internal <16 x i32> @lpuc_dp4(<16 x i32> %acc, <16 x i32> %a, <16 x i32> %b)",
        1,
    );
    f.i("%a8 = bitcast <16 x i32> %a to <64 x i8>");
    f.i("%b8 = bitcast <16 x i32> %b to <64 x i8>");
    f.i("%az = zext <64 x i8> %a8 to <64 x i32>");
    f.i("%bs = sext <64 x i8> %b8 to <64 x i32>");
    f.i("%p = mul <64 x i32> %az, %bs");
    let mut s = "%acc".to_string();
    for lane in 0..4 {
        let idx: Vec<String> = (0..16).map(|i| format!("i32 {}", 4 * i + lane)).collect();
        let sh = f.v(format!(
            "shufflevector <64 x i32> %p, <64 x i32> poison, <16 x i32> <{}>",
            idx.join(", ")
        ));
        s = f.v(format!("add <16 x i32> {s}, {sh}"));
    }
    f.i(format!("ret <16 x i32> {s}"));
    m.push_fn(f);
}

/// Bytes ahead of the current weight block that the GEMV (`t = 1`) prefetches into L1.
/// Measured on SmolLM2-135M Q4_1 decode (`lpuc bench -p 0 -n 128`, interleaved A/B on a
/// quiet machine): 0 → 4096 bytes took 1 thread from ≈ 57–80 to 79–113 tok/s and 2 threads
/// from ≈ 116–129 to 244–288 tok/s; 2048 was worse and 8192 no better than 4096.
const GEMV_PREFETCH: usize = 4096;

fn prefetch_distance() -> usize {
    GEMV_PREFETCH
}

fn emit_qmm(
    m: &mut ModuleText,
    name: &str,
    n: usize,
    k: usize,
    bits: u32,
    vnni: bool,
    m_tile: usize,
) {
    m.declare(FMA16);
    m.declare("declare void @llvm.prefetch.p0(ptr, i32, i32, i32)");
    if vnni {
        m.declare(VPDPBUSD);
    } else if !m_has(m, "lpuc_dp4") {
        emit_dp4(m);
    }
    let nb = k / QK;
    let gbytes = nb * block_bytes(bits);
    let t = m_tile.max(1);
    emit_qmm_tile(m, &format!("{name}_t{t}"), n, k, bits, t, vnni);
    emit_qmm_tile(m, &format!("{name}_t1"), n, k, bits, 1, vnni);
    let mut f = Fb::new(
        &format!("void @{name}(ptr noalias %w, ptr noalias %xq, ptr noalias %dx, ptr noalias %sx, ptr noalias %y, i64 %m, i64 %g0, i64 %g1)"),
        0,
    );
    f.i("%e0 = icmp sge i64 %g0, %g1");
    f.i("br i1 %e0, label %exit, label %gl");
    f.label("gl");
    f.i("%g = phi i64 [%g0, %entry], [%gn, %gend]");
    f.i(format!("%woff = mul nsw i64 %g, {gbytes}"));
    f.i("%wg = getelementptr inbounds i8, ptr %w, i64 %woff");
    f.i(format!("%yoff = mul nsw i64 %g, {GROUP}"));
    f.i("%yg = getelementptr inbounds float, ptr %y, i64 %yoff");
    f.i("br label %ml");
    f.label("ml");
    f.i("%m0 = phi i64 [0, %gl], [%m0n, %tb]");
    f.i("%rem = sub nsw i64 %m, %m0");
    f.i(format!("%full = icmp sge i64 %rem, {t}"));
    f.i("br i1 %full, label %tb, label %r1");
    f.label("tb");
    let call = |f: &mut Fb, mv: &str, tile: usize| {
        let xo = f.v(format!("mul nsw i64 {mv}, {k}"));
        let xp = f.gep("i8", "%xq", &xo);
        let so = f.v(format!("mul nsw i64 {mv}, {nb}"));
        let dxp = f.gep("float", "%dx", &so);
        let sxp = f.gep("float", "%sx", &so);
        let yo = f.v(format!("mul nsw i64 {mv}, {n}"));
        let yp = f.gep("float", "%yg", &yo);
        f.i(format!(
            "call void @{name}_t{tile}(ptr %wg, ptr {xp}, ptr {dxp}, ptr {sxp}, ptr {yp})"
        ));
    };
    call(&mut f, "%m0", t);
    f.i(format!("%m0n = add nsw i64 %m0, {t}"));
    f.i("br label %ml");
    f.label("r1");
    f.i("%m1 = phi i64 [%m0, %ml], [%m1n, %r1b]");
    f.i("%more = icmp slt i64 %m1, %m");
    f.i("br i1 %more, label %r1b, label %gend");
    f.label("r1b");
    call(&mut f, "%m1", 1);
    f.i("%m1n = add nsw i64 %m1, 1");
    f.i("br label %r1");
    f.label("gend");
    f.i("%gn = add nsw i64 %g, 1");
    f.i("%gdone = icmp sge i64 %gn, %g1");
    f.i("br i1 %gdone, label %exit, label %gl");
    f.label("exit");
    f.i("ret void");
    m.push_fn(f);
}

fn m_has(m: &ModuleText, _sym: &str) -> bool {
    m.has_fn(_sym)
}

fn emit_quant(m: &mut ModuleText, name: &str, k: usize) {
    m.declare("declare <32 x float> @llvm.fabs.v32f32(<32 x float>)");
    m.declare("declare float @llvm.vector.reduce.fmax.v32f32(<32 x float>)");
    m.declare("declare <32 x float> @llvm.round.v32f32(<32 x float>)");
    m.declare("declare i32 @llvm.vector.reduce.add.v32i32(<32 x i32>)");
    let nb = k / QK;
    let mut f = Fb::new(
        &format!("void @{name}(ptr noalias %x, ptr noalias %xq, ptr noalias %dx, ptr noalias %sx, i64 %r0, i64 %r1)"),
        0,
    );
    let b0 = f.v(format!("mul nsw i64 %r0, {nb}"));
    let b1 = f.v(format!("mul nsw i64 %r1, {nb}"));
    f.for_loop(&b0, &b1, &[], |f, i| {
        let xo = f.v(format!("mul nsw i64 {i}, 32"));
        let xp = f.gep("float", "%x", &xo);
        let v = f.v(format!("load <32 x float>, ptr {xp}, align 4"));
        let a = f.v(format!(
            "call <32 x float> @llvm.fabs.v32f32(<32 x float> {v})"
        ));
        let amax = f.v(format!(
            "call float @llvm.vector.reduce.fmax.v32f32(<32 x float> {a})"
        ));
        let d = f.v(format!("fdiv float {amax}, {}", f32c(127.0)));
        let nz = f.v(format!("fcmp une float {d}, 0.0"));
        let inv = f.v(format!("fdiv float 1.0, {d}"));
        let id = f.v(format!("select i1 {nz}, float {inv}, float 0.0"));
        let ids = f.splat_v(32, "float", &id);
        let sc = f.v(format!("fmul <32 x float> {v}, {ids}"));
        // Round half away from zero (`llvm.round`), as the reference quantizer
        // (`pack::quantize_ref`), the interpreter (`lpuc_ir::quant`) and the LPU simulator
        // do — llama.cpp's scalar reference rounds so too (its SIMD paths round to even);
        // one rule everywhere keeps the JIT bit-identical to its oracle on exact ties.
        let r = f.v(format!(
            "call <32 x float> @llvm.round.v32f32(<32 x float> {sc})"
        ));
        let qi = f.v(format!("fptosi <32 x float> {r} to <32 x i32>"));
        let q8 = f.v(format!("trunc <32 x i32> {qi} to <32 x i8>"));
        let qp = f.gep("i8", "%xq", &xo);
        f.i(format!("store <32 x i8> {q8}, ptr {qp}, align 1"));
        let s = f.v(format!(
            "call i32 @llvm.vector.reduce.add.v32i32(<32 x i32> {qi})"
        ));
        let sf = f.v(format!("sitofp i32 {s} to float"));
        // The stored scale is f16, as in ggml's q8_0/q8_1 blocks (q used the f32 one).
        let dh = f.v(format!("fptrunc float {d} to half"));
        let d16 = f.v(format!("fpext half {dh} to float"));
        let sxv = f.v(format!("fmul float {d16}, {sf}"));
        let dxp = f.gep("float", "%dx", i);
        f.i(format!("store float {d16}, ptr {dxp}, align 4"));
        let sxp = f.gep("float", "%sx", i);
        f.i(format!("store float {sxv}, ptr {sxp}, align 4"));
    });
    f.i("ret void");
    m.push_fn(f);
}

const RED: &str = "reassoc nsz contract";

fn emit_rmsnorm(m: &mut ModuleText, name: &str, d: usize, eps: f32, scaled: bool) {
    m.declare("declare float @llvm.sqrt.f32(float)");
    let mut f = Fb::new(
        &format!("void @{name}(ptr noalias %x, ptr noalias %w, ptr noalias %y, i64 %r0, i64 %r1)"),
        0,
    );
    f.for_loop("%r0", "%r1", &[], |f, r| {
        let ro = f.v(format!("mul nsw i64 {r}, {d}"));
        let xr = f.gep("float", "%x", &ro);
        let yr = f.gep("float", "%y", &ro);
        f.for_loop("0", &d.to_string(), &[("ss", "float", "0.0")], |f, j| {
            let p = f.gep("float", &xr, j);
            let v = f.v(format!("load float, ptr {p}, align 4"));
            let sq = f.v(format!("fmul {RED} float {v}, {v}"));
            f.i(format!("%ss.n = fadd {RED} float %ss, {sq}"));
        });
        let mean = f.v(format!("fdiv float %ss, {}", f32c(d as f32)));
        let me = f.v(format!("fadd float {mean}, {}", f32c(eps)));
        let sq = f.v(format!("call float @llvm.sqrt.f32(float {me})"));
        let rs = f.v(format!("fdiv float 1.0, {sq}"));
        f.for_loop("0", &d.to_string(), &[], |f, j| {
            let p = f.gep("float", &xr, j);
            let v = f.v(format!("load float, ptr {p}, align 4"));
            let mut a = f.v(format!("fmul float {v}, {rs}"));
            if scaled {
                let wp = f.gep("float", "%w", j);
                let wv = f.v(format!("load float, ptr {wp}, align 4"));
                a = f.v(format!("fmul float {a}, {wv}"));
            }
            let yp = f.gep("float", &yr, j);
            f.i(format!("store float {a}, ptr {yp}, align 4"));
        });
    });
    f.i("ret void");
    m.push_fn(f);
}

/// Frequencies `theta^(−2i/dims)` computed exactly as the reference interpreter does.
pub fn rope_freqs(dims: u32, theta: f32) -> Vec<f64> {
    (0..dims as usize / 2)
        .map(|i| f64::from(theta).powf(-2.0 * i as f64 / f64::from(dims)))
        .collect()
}

fn emit_ropetab(m: &mut ModuleText, name: &str, dims: u32, theta: f32) {
    m.declare("declare double @llvm.sin.f64(double)");
    m.declare("declare double @llvm.cos.f64(double)");
    let half = dims as usize / 2;
    let fr: Vec<String> = rope_freqs(dims, theta)
        .iter()
        .map(|x| format!("double {}", f64c(*x)))
        .collect();
    m.push_raw(&format!(
        "@{name}.freq = private unnamed_addr constant [{half} x double] [{}]\n\n",
        fr.join(", ")
    ));
    let mut f = Fb::new(
        &format!("void @{name}(ptr noalias %tab, i64 %s, i64 %p)"),
        0,
    );
    f.for_loop("0", "%s", &[], |f, si| {
        let pos = f.v(format!("add nsw i64 %p, {si}"));
        let pf = f.v(format!("sitofp i64 {pos} to double"));
        f.for_loop("0", &half.to_string(), &[], |f, i| {
            let fp = f.gep("double", &format!("@{name}.freq"), i);
            let fq = f.v(format!("load double, ptr {fp}, align 8"));
            let ang = f.v(format!("fmul double {pf}, {fq}"));
            let c = f.v(format!("call double @llvm.cos.f64(double {ang})"));
            let s = f.v(format!("call double @llvm.sin.f64(double {ang})"));
            let cf = f.v(format!("fptrunc double {c} to float"));
            let sf = f.v(format!("fptrunc double {s} to float"));
            let row = f.v(format!("mul nsw i64 {si}, {half}"));
            let ix = f.v(format!("add nsw i64 {row}, {i}"));
            let o = f.v(format!("mul nsw i64 {ix}, 2"));
            let cp = f.gep("float", "%tab", &o);
            f.i(format!("store float {cf}, ptr {cp}, align 4"));
            let sp = f.gep("float", &cp, "1");
            f.i(format!("store float {sf}, ptr {sp}, align 4"));
        });
    });
    f.i("ret void");
    m.push_fn(f);
}

fn emit_rope(m: &mut ModuleText, name: &str, heads: usize, hd: usize, dims: u32, neox: bool) {
    let half = dims as usize / 2;
    let mut f = Fb::new(
        &format!("void @{name}(ptr %x, ptr %y, ptr noalias %tab, i64 %s)"),
        0,
    );
    let rows = f.v(format!("mul nsw i64 %s, {heads}"));
    f.for_loop("0", &rows, &[], |f, r| {
        let si = f.v(format!("sdiv i64 {r}, {heads}"));
        let ro = f.v(format!("mul nsw i64 {r}, {hd}"));
        let xr = f.gep("float", "%x", &ro);
        let yr = f.gep("float", "%y", &ro);
        let tr = f.v(format!("mul nsw i64 {si}, {}", 2 * half));
        let tb = f.gep("float", "%tab", &tr);
        // Pass-through dims first (in place they are a no-op copy).
        if (dims as usize) < hd {
            f.for_loop(&dims.to_string(), &hd.to_string(), &[], |f, j| {
                let p = f.gep("float", &xr, j);
                let v = f.v(format!("load float, ptr {p}, align 4"));
                let q = f.gep("float", &yr, j);
                f.i(format!("store float {v}, ptr {q}, align 4"));
            });
        }
        f.for_loop("0", &half.to_string(), &[], |f, i| {
            let (i0, i1) = if neox {
                let i1 = f.v(format!("add nsw i64 {i}, {half}"));
                (i.to_string(), i1)
            } else {
                let i0 = f.v(format!("mul nsw i64 {i}, 2"));
                let i1 = f.v(format!("add nsw i64 {i0}, 1"));
                (i0, i1)
            };
            let p0 = f.gep("float", &xr, &i0);
            let p1 = f.gep("float", &xr, &i1);
            let x0 = f.v(format!("load float, ptr {p0}, align 4"));
            let x1 = f.v(format!("load float, ptr {p1}, align 4"));
            let ti = f.v(format!("mul nsw i64 {i}, 2"));
            let cp = f.gep("float", &tb, &ti);
            let c = f.v(format!("load float, ptr {cp}, align 4"));
            let sp = f.gep("float", &cp, "1");
            let s = f.v(format!("load float, ptr {sp}, align 4"));
            let a = f.v(format!("fmul float {x0}, {c}"));
            let b = f.v(format!("fmul float {x1}, {s}"));
            let y0 = f.v(format!("fsub float {a}, {b}"));
            let cc = f.v(format!("fmul float {x0}, {s}"));
            let dd = f.v(format!("fmul float {x1}, {c}"));
            let y1 = f.v(format!("fadd float {cc}, {dd}"));
            let q0 = f.gep("float", &yr, &i0);
            let q1 = f.gep("float", &yr, &i1);
            f.i(format!("store float {y0}, ptr {q0}, align 4"));
            f.i(format!("store float {y1}, ptr {q1}, align 4"));
        });
    });
    f.i("ret void");
    m.push_fn(f);
}

/// Element offset of key `j`, dimension `dd` of KV head `h` in a tiled K cache of capacity
/// `cap` (rounded up to whole tiles): `[kvh][cap / 16][d][16]`.
pub fn k_tile_offset(h: usize, j: usize, dd: usize, d: usize, cap: usize) -> usize {
    h * cap.div_ceil(16) * 16 * d + (j / 16) * 16 * d + dd * 16 + j % 16
}

/// Elements of one KV head's tiled K cache.
fn emit_kvapp(m: &mut ModuleText, name: &str, kvh: usize, d: usize, transposed: bool, f16: bool) {
    let el = if f16 { "half" } else { "float" };
    // The capacity is an argument, not baked in: one compiled module serves every `-c`
    // (and every sequence's cache), so the kernel cache does not grow per context size.
    let mut f = Fb::new(
        &format!("void @{name}(ptr noalias %src, ptr noalias %cache, i64 %s, i64 %p, i64 %cap)"),
        0,
    );
    let c15 = f.v("add nsw i64 %cap, 15");
    let cap16 = f.v(format!("and i64 {c15}, -16"));
    let khead = f.v(format!("mul nsw i64 {cap16}, {d}"));
    f.for_loop("0", "%s", &[], |f, si| {
        f.for_loop("0", &kvh.to_string(), &[], |f, h| {
            // The source row src[si][h][..].
            let a = f.v(format!("mul nsw i64 {si}, {kvh}"));
            let a2 = f.v(format!("add nsw i64 {a}, {h}"));
            let so = f.v(format!("mul nsw i64 {a2}, {d}"));
            let sp = f.gep("float", "%src", &so);
            let j = f.v(format!("add nsw i64 %p, {si}"));
            if transposed {
                // k_tile_offset(h, j, dd) = h·head + (j / 16)·16·d + dd·16 + j % 16
                let jt = f.v(format!("udiv i64 {j}, 16"));
                let jl = f.v(format!("urem i64 {j}, 16"));
                let c0 = f.v(format!("mul nsw i64 {h}, {khead}"));
                let c1 = f.v(format!("mul nsw i64 {jt}, {}", 16 * d));
                let c2 = f.v(format!("add nsw i64 {c0}, {c1}"));
                let tile = f.v(format!("add nsw i64 {c2}, {jl}"));
                f.for_loop("0", &d.to_string(), &[], |f, dd| {
                    let xp = f.gep("float", &sp, dd);
                    let x = f.v(format!("load float, ptr {xp}, align 4"));
                    let x = if f16 {
                        f.v(format!("fptrunc float {x} to half"))
                    } else {
                        x
                    };
                    let c4 = f.v(format!("mul nsw i64 {dd}, 16"));
                    let co = f.v(format!("add nsw i64 {tile}, {c4}"));
                    let cp = f.gep(el, "%cache", &co);
                    f.i(format!("store {el} {x}, ptr {cp}, align 2"));
                });
            } else {
                // cache[h][j][..]
                let c0 = f.v(format!("mul nsw i64 {h}, %cap"));
                let c1 = f.v(format!("add nsw i64 {c0}, {j}"));
                let co = f.v(format!("mul nsw i64 {c1}, {d}"));
                let cp = f.gep(el, "%cache", &co);
                let v = f.v(format!("load <{d} x float>, ptr {sp}, align 4"));
                let v = if f16 {
                    f.v(format!("fptrunc <{d} x float> {v} to <{d} x half>"))
                } else {
                    v
                };
                f.i(format!("store <{d} x {el}> {v}, ptr {cp}, align 2"));
            }
        });
    });
    f.i("ret void");
    m.push_fn(f);
}

#[allow(clippy::too_many_arguments)]
fn emit_attn(
    m: &mut ModuleText,
    name: &str,
    h: usize,
    kvh: usize,
    d: usize,
    block: usize,
    scale: f32,
    k_f16: bool,
    v_f16: bool,
) {
    let (kel, vel) = (
        if k_f16 { "half" } else { "float" },
        if v_f16 { "half" } else { "float" },
    );
    // Key blocks start on K tiles (online softmax is exact for any blocking).
    let block = block.div_ceil(16) * 16;
    let vt = format!("<{d} x float>");
    m.declare(&format!(
        "declare float @llvm.vector.reduce.fadd.v{d}f32(float, {vt})"
    ));
    m.declare(&format!("declare {vt} @llvm.fma.v{d}f32({vt}, {vt}, {vt})"));
    let group = h / kvh;
    let mut f = Fb::new(
        &format!("void @{name}(ptr noalias %q, ptr noalias %kc, ptr noalias %vc, ptr noalias %o, i64 %s, i64 %p, i64 %r0, i64 %r1, i64 %cap)"),
        0,
    );
    m.declare(FMA16);
    m.declare("declare <16 x float> @llvm.maxnum.v16f32(<16 x float>, <16 x float>)");
    m.declare("declare float @llvm.vector.reduce.fmax.v16f32(<16 x float>)");
    f.i(format!(
        "%sc = alloca [{} x float], align 64",
        block.div_ceil(16) * 16
    ));
    f.for_loop("%r0", "%r1", &[], |f, r| {
        let hh = f.v(format!("sdiv i64 {r}, %s"));
        let si = f.v(format!("srem i64 {r}, %s"));
        let kh = f.v(format!("sdiv i64 {hh}, {group}"));
        let qa = f.v(format!("mul nsw i64 {si}, {h}"));
        let qb = f.v(format!("add nsw i64 {qa}, {hh}"));
        let qo = f.v(format!("mul nsw i64 {qb}, {d}"));
        let qp = f.gep("float", "%q", &qo);
        let qv = f.v(format!("load {vt}, ptr {qp}, align 4"));
        let vhead = f.v(format!("mul nsw i64 %cap, {d}"));
        let kvo = f.v(format!("mul nsw i64 {kh}, {vhead}"));
        let c15 = f.v("add nsw i64 %cap, 15");
        let cap16 = f.v(format!("and i64 {c15}, -16"));
        let khead = f.v(format!("mul nsw i64 {cap16}, {d}"));
        let kto = f.v(format!("mul nsw i64 {kh}, {khead}"));
        let kb = f.gep(kel, "%kc", &kto);
        let vb = f.gep(vel, "%vc", &kvo);
        let n0 = f.v(format!("add nsw i64 %p, {si}"));
        let n = f.v(format!("add nsw i64 {n0}, 1"));
        let nbm = f.v(format!("add nsw i64 {n}, {}", block - 1));
        let nblk = f.v(format!("sdiv i64 {nbm}, {block}"));
        let ninf = "0xFFF0000000000000";
        f.for_loop(
            "0",
            &nblk,
            &[("mx", "float", ninf), ("l", "float", "0.0"), ("acc", &vt, "zeroinitializer")],
            |f, bi| {
                let j0 = f.v(format!("mul nsw i64 {bi}, {block}"));
                let rem = f.v(format!("sub nsw i64 {n}, {j0}"));
                let lt = f.v(format!("icmp slt i64 {rem}, {block}"));
                let jn = f.v(format!("select i1 {lt}, i64 {rem}, i64 {block}"));
                // Scores of 16 keys at a time from the transposed K cache: q[dd] broadcast
                // times K[dd][j..j + 16], four accumulators; lanes past the block are -inf.
                let ng = f.v(format!("add nsw i64 {jn}, 15"));
                let ngr = f.v(format!("sdiv i64 {ng}, 16"));
                f.for_loop("0", &ngr, &[("bm", "<16 x float>", &splat(16, "float", ninf))], |f, gi| {
                    let jj0 = f.v(format!("mul nsw i64 {gi}, 16"));
                    let jb = f.v(format!("add nsw i64 {j0}, {jj0}"));
                    // `jb` is a multiple of 16 (blocks are), so the group is one tile.
                    let tb = f.v(format!("mul nsw i64 {jb}, {d}"));
                    let mut accs: Vec<String> = vec!["zeroinitializer".into(); 4];
                    for dd in 0..d {
                        let ko = f.v(format!("add nsw i64 {tb}, {}", dd * 16));
                        let kp = f.gep(kel, &kb, &ko);
                        let kv = f.v(format!("load <16 x {kel}>, ptr {kp}, align 2"));
                        let kv = if k_f16 {
                            f.v(format!("fpext <16 x half> {kv} to <16 x float>"))
                        } else {
                            kv
                        };
                        let qd = f.v(format!("extractelement {vt} {qv}, i64 {dd}"));
                        let qs = f.splat_v(16, "float", &qd);
                        let a = accs[dd % 4].clone();
                        accs[dd % 4] = f.v(format!(
                            "call <16 x float> @llvm.fma.v16f32(<16 x float> {qs}, <16 x float> {kv}, <16 x float> {a})"
                        ));
                    }
                    let s01 = f.v(format!("fadd <16 x float> {}, {}", accs[0], accs[1]));
                    let s23 = f.v(format!("fadd <16 x float> {}, {}", accs[2], accs[3]));
                    let sum = f.v(format!("fadd <16 x float> {s01}, {s23}"));
                    let sv = f.v(format!("fmul <16 x float> {sum}, {}", splat(16, "float", &f32c(scale))));
                    let lanes: Vec<String> = (0..16).map(|i| format!("i64 {i}")).collect();
                    let jjs = f.splat_v(16, "i64", &jj0);
                    let idx = f.v(format!("add <16 x i64> {jjs}, <{}>", lanes.join(", ")));
                    let jns = f.splat_v(16, "i64", &jn);
                    let live = f.v(format!("icmp slt <16 x i64> {idx}, {jns}"));
                    let masked = f.v(format!(
                        "select <16 x i1> {live}, <16 x float> {sv}, <16 x float> {}",
                        splat(16, "float", ninf)
                    ));
                    let sp = f.gep("float", "%sc", &jj0);
                    f.i(format!("store <16 x float> {masked}, ptr {sp}, align 4"));
                    f.i(format!(
                        "%bm.n = call <16 x float> @llvm.maxnum.v16f32(<16 x float> %bm, <16 x float> {masked})"
                    ));
                });
                let bms = f.v("call float @llvm.vector.reduce.fmax.v16f32(<16 x float> %bm)");
                let mn = f.v(format!("call float @llvm.maxnum.f32(float %mx, float {bms})"));
                let dm = f.v(format!("fsub float %mx, {mn}"));
                let alpha = f.v(format!("call float @lpuc_exp(float {dm})"));
                let l1 = f.v(format!("fmul float %l, {alpha}"));
                let als = f.splat_v(d, "float", &alpha);
                let acc1 = f.v(format!("fmul {vt} %acc, {als}"));
                // Probabilities in place: a loop of its own (no vector carried through
                // it), so LLVM vectorizes the inlined `exp` 16 keys at a time.
                f.for_loop("0", &jn, &[("l2", "float", &l1)], |f, jj| {
                    let sp = f.gep("float", "%sc", jj);
                    let sv = f.v(format!("load float, ptr {sp}, align 4"));
                    let ds = f.v(format!("fsub float {sv}, {mn}"));
                    let pv = f.v(format!("call float @lpuc_exp(float {ds})"));
                    f.i(format!("store float {pv}, ptr {sp}, align 4"));
                    f.i(format!("%l2.n = fadd {RED} float %l2, {pv}"));
                });
                let lsum = f.v("fadd float %l2, 0.0");
                f.for_loop("0", &jn, &[("acc2", &vt, &acc1)], |f, jj| {
                    let sp = f.gep("float", "%sc", jj);
                    let pv = f.v(format!("load float, ptr {sp}, align 4"));
                    let j = f.v(format!("add nsw i64 {j0}, {jj}"));
                    let vo = f.v(format!("mul nsw i64 {j}, {d}"));
                    let vp = f.gep(vel, &vb, &vo);
                    let vv = f.v(format!("load <{d} x {vel}>, ptr {vp}, align 2"));
                    let vv = if v_f16 {
                        f.v(format!("fpext <{d} x half> {vv} to {vt}"))
                    } else {
                        vv
                    };
                    let ps = f.splat_v(d, "float", &pv);
                    f.i(format!("%acc2.n = call {vt} @llvm.fma.v{d}f32({vt} {vv}, {vt} {ps}, {vt} %acc2)"));
                });
                f.i(format!("%mx.n = fadd float {mn}, 0.0"));
                f.i(format!("%l.n = fadd float {lsum}, 0.0"));
                f.i(format!("%acc.n = fadd {vt} %acc2, zeroinitializer"));
            },
        );
        let inv = f.v("fdiv float 1.0, %l");
        let invs = f.splat_v(d, "float", &inv);
        let out = f.v(format!("fmul {vt} %acc, {invs}"));
        let op = f.gep("float", "%o", &qo);
        f.i(format!("store {vt} {out}, ptr {op}, align 4"));
    });
    f.i("ret void");
    m.push_fn(f);
}

fn emit_binary(m: &mut ModuleText, name: &str, swiglu: bool) {
    let mut f = Fb::new(
        &format!("void @{name}(ptr %a, ptr %b, ptr %y, i64 %lo, i64 %hi)"),
        0,
    );
    f.for_loop("%lo", "%hi", &[], |f, i| {
        let ap = f.gep("float", "%a", i);
        let bp = f.gep("float", "%b", i);
        let a = f.v(format!("load float, ptr {ap}, align 4"));
        let b = f.v(format!("load float, ptr {bp}, align 4"));
        let r = if swiglu {
            let na = f.v(format!("fneg float {a}"));
            let e = f.v(format!("call float @lpuc_exp(float {na})"));
            let den = f.v(format!("fadd float {e}, 1.0"));
            let s = f.v(format!("fdiv float {a}, {den}"));
            f.v(format!("fmul float {s}, {b}"))
        } else {
            f.v(format!("fadd float {a}, {b}"))
        };
        let yp = f.gep("float", "%y", i);
        f.i(format!("store float {r}, ptr {yp}, align 4"));
    });
    f.i("ret void");
    m.push_fn(f);
}

fn emit_embq8(m: &mut ModuleText, name: &str, d: usize) {
    let nb = d / QK;
    let rb = nb * 34;
    let mut f = Fb::new(
        &format!("void @{name}(ptr noalias %tab, ptr noalias %ids, ptr noalias %out, i64 %n)"),
        0,
    );
    f.for_loop("0", "%n", &[], |f, i| {
        let ip = f.gep("i32", "%ids", i);
        let id = f.v(format!("load i32, ptr {ip}, align 4"));
        let idl = f.v(format!("sext i32 {id} to i64"));
        let ro = f.v(format!("mul nsw i64 {idl}, {rb}"));
        let row = f.gep("i8", "%tab", &ro);
        let oo = f.v(format!("mul nsw i64 {i}, {d}"));
        let orow = f.gep("float", "%out", &oo);
        f.for_loop("0", &nb.to_string(), &[], |f, b| {
            let bo = f.v(format!("mul nsw i64 {b}, 34"));
            let bp = f.gep("i8", &row, &bo);
            let dh = f.v(format!("load half, ptr {bp}, align 1"));
            let dv = f.v(format!("fpext half {dh} to float"));
            let qp = f.gep("i8", &bp, "2");
            let q = f.v(format!("load <32 x i8>, ptr {qp}, align 1"));
            let qf = f.v(format!("sitofp <32 x i8> {q} to <32 x float>"));
            let ds = f.splat_v(32, "float", &dv);
            let r = f.v(format!("fmul <32 x float> {ds}, {qf}"));
            let o2 = f.v(format!("mul nsw i64 {b}, 32"));
            let op = f.gep("float", &orow, &o2);
            f.i(format!("store <32 x float> {r}, ptr {op}, align 4"));
        });
    });
    f.i("ret void");
    m.push_fn(f);
}

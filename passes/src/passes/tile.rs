//! `tile`: target-parameterized tile sizes, recorded as annotations.
//!
//! Every `matmul`/`qmatmul` gets `tile.sizes = [m, n, k]` (for the innermost `[M, K]·[N, K]ᵀ`
//! product) and every `flash_attention` gets `tile.sizes = [q_rows, kv_rows]` with its
//! `block` set to `kv_rows`; each tiled op also gets `tile.target`.
//!
//! CPU `qmatmul`: the kernels' blocking, which the CPU backend compiles from the annotation
//! (`[mr, group_rows, K]`: tokens per unpacked weight group, rows per packed group, whole
//! rows; see [`cpu_qmatmul_tiles`]).
//!
//! CPU float `matmul` (the BLIS analytic model, Low et al. 2016, for a `mr × nr` register
//! micro-kernel with `nr = 2·lanes`):
//! - `k`: a `k × nr` panel of the weight fills half of L1 (the other half streams the
//!   activations), in the weight's stored bytes per element, so packed int4 gets a
//!   deeper `k`; rounded down to whole quant blocks and clipped to `K`;
//! - `m`: an `m × k` block of f32 activations fills half of L2; a multiple of `mr`;
//! - `n`: a `k × n` slab of weights fills a 32 MiB slice of L3; a multiple of `nr`, clipped
//!   to `N`.
//!
//! Symbolic dims (`S`, `P+S`) are not clipped: the tile is an upper block size and the
//! kernel handles the remainder.
//!
//! Attention on CPU: one query row per work item; a key block of K and V rows
//! (`2·kv·D·4` bytes) fills half of L1, a power of two in 16..=256.
//!
//! Groq: the MXM holds a 320×320 weight tile and streams 320-element vectors, so matmuls
//! are `[320, 320, 320]` and attention `[320, 320]` whatever the shapes (smaller operands
//! are padded by the hardware's view).

use lpuc_ir::op::{Attr, Op};
use lpuc_ir::types::TensorType;
use lpuc_ir::Graph;

use crate::pass::{Pass, PassContext};
use crate::phase::Phase;
use crate::registry::Options;
use crate::target::{CpuDesc, TargetKind, TileTarget};

pub struct Tile {
    /// `None`: the pipeline's target.
    pub target: Option<TargetKind>,
    /// Overrides of the pipeline's CPU description (`tile{l1=…, l2=…, lanes=…}`).
    pub l1: Option<u64>,
    pub l2: Option<u64>,
    pub lanes: Option<u64>,
}

impl Tile {
    pub fn from_options(o: &Options) -> Result<Tile, String> {
        let t = Tile {
            target: o.target()?,
            l1: o.u64("l1")?,
            l2: o.u64("l2")?,
            lanes: o.u64("lanes")?,
        };
        t.cpu(&CpuDesc::default())?;
        Ok(t)
    }

    /// The pipeline's CPU description with this pass's overrides.
    pub fn cpu(&self, base: &CpuDesc) -> Result<CpuDesc, String> {
        let mut cpu = base.clone();
        if let Some(x) = self.l1 {
            cpu.l1_bytes = x;
        }
        if let Some(x) = self.l2 {
            cpu.l2_bytes = x;
        }
        if let Some(x) = self.lanes {
            cpu.lanes = x;
        }
        if cpu.l1_bytes < 1024 || cpu.l2_bytes < cpu.l1_bytes || cpu.lanes == 0 {
            return Err(format!(
                "`tile` needs l1 >= 1024, l2 >= l1 and lanes >= 1 (got l1={}, l2={}, lanes={})",
                cpu.l1_bytes, cpu.l2_bytes, cpu.lanes
            ));
        }
        Ok(cpu)
    }
}

fn round_down(x: u64, m: u64) -> u64 {
    (x / m.max(1)) * m.max(1)
}

fn pow2_floor(x: u64) -> u64 {
    if x == 0 {
        0
    } else {
        1 << (63 - x.leading_zeros())
    }
}

/// `[m, n, k]` for a matmul with activations `a : [..., M, K]` and `b : [..., N, K]`.
pub fn cpu_matmul_tiles(c: &CpuDesc, a: &TensorType, b: &TensorType) -> [u64; 3] {
    let nr = 2 * c.lanes;
    let wt = b.dtype;
    let (qb, bytes_per_elem) = (
        wt.block_elems().max(c.lanes),
        wt.block_bytes() as f64 / wt.block_elems() as f64,
    );
    let kdim = a.shape.last().and_then(|d| d.as_const());
    let ndim = b
        .shape
        .get(b.rank().wrapping_sub(2))
        .and_then(|d| d.as_const());
    let mdim = a
        .shape
        .get(a.rank().wrapping_sub(2))
        .and_then(|d| d.as_const());
    let mut k = round_down(
        ((c.l1_bytes / 2) as f64 / (nr as f64 * bytes_per_elem)) as u64,
        qb,
    )
    .max(qb);
    if let Some(kd) = kdim {
        k = k.min(kd).max(1);
    }
    let mut m = round_down((c.l2_bytes / 2) / (k * 4), c.mr).max(c.mr);
    if let Some(md) = mdim {
        m = m.min(md).max(1);
    }
    let mut n = round_down((c.l3_bytes as f64 / (k as f64 * bytes_per_elem)) as u64, nr).max(nr);
    if let Some(nd) = ndim {
        n = n.min(nd).max(1);
    }
    [m, n, k]
}

/// `[m, n, k]` of a `qmatmul` against `w : [N, K]`: the kernels' own blocking, which the
/// CPU backend compiles from these numbers. `n` is one packed weight group
/// (`group_rows`), `k` the whole row (a 16 × K group of 4-bit weights is a few KiB: it
/// stays in L1 while it is reused), `m` the tokens one unpacked group serves (`mr`).
pub fn cpu_qmatmul_tiles(c: &CpuDesc, w: &TensorType) -> [u64; 3] {
    let k = w
        .shape
        .last()
        .and_then(|d| d.as_const())
        .unwrap_or(1)
        .max(1);
    [c.mr, c.group_rows, k]
}

/// `[q_rows, kv_rows]` for attention with head dim `d`: the CPU kernel's work item is one
/// query row of one head (so `q_rows = 1`); a key block of K and V rows (`2·kv·D·4`
/// bytes) fills half of L1, a power of two in 16..=256 (the K cache is stored in 16-key
/// tiles).
pub fn cpu_attention_tiles(c: &CpuDesc, d: u64) -> [u64; 2] {
    let d = d.max(1);
    let kv = pow2_floor((c.l1_bytes / 2) / (2 * d * 4)).clamp(16, 256);
    [1, kv]
}

/// Annotates every matmul-like op; returns how many were tiled.
pub fn tile(g: &mut Graph, t: &TileTarget) -> usize {
    let mut n = 0;
    for v in g.sorted_values() {
        let ops = g.operands(v);
        let sizes: Vec<u64> = match (g.op(v), t) {
            (Op::QMatmul, TileTarget::Cpu(c)) => cpu_qmatmul_tiles(c, g.ty(ops[1])).to_vec(),
            (Op::Matmul, TileTarget::Cpu(c)) => {
                cpu_matmul_tiles(c, g.ty(ops[0]), g.ty(ops[1])).to_vec()
            }
            (Op::Matmul | Op::QMatmul, TileTarget::Groq(q)) => vec![q.mxm, q.mxm, q.mxm],
            (Op::FlashAttention { .. }, TileTarget::Cpu(c)) => {
                let d = g
                    .ty(v)
                    .shape
                    .last()
                    .and_then(|d| d.as_const())
                    .unwrap_or(64);
                cpu_attention_tiles(c, d).to_vec()
            }
            (Op::FlashAttention { .. }, TileTarget::Groq(q)) => vec![q.lanes, q.lanes],
            _ => continue,
        };
        let node = g.node_mut(v);
        if let Op::FlashAttention { block, .. } = &mut node.op {
            *block = sizes[1] as u32;
        }
        node.annot.insert(
            "tile.sizes".into(),
            Attr::Ints(sizes.iter().map(|&x| x as i64).collect()),
        );
        node.annot
            .insert("tile.target".into(), Attr::Ident(t.kind().name().into()));
        n += 1;
    }
    n
}

impl Pass for Tile {
    fn name(&self) -> &'static str {
        "tile"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        let kind = self.target.unwrap_or(cx.target);
        let t = match kind {
            TargetKind::Cpu => TileTarget::Cpu(self.cpu(&cx.cpu)?),
            TargetKind::Groq => TileTarget::of(TargetKind::Groq),
        };
        let before = g.clone();
        let n = tile(g, &t);
        cx.stat("ops tiled", n as i64);
        Ok(*g != before)
    }
    fn establishes(&self) -> Option<Phase> {
        Some(Phase::Tiled)
    }
}

//! Lowering, step 2: one block's macro-ops → scheduled LPU instructions on one chip.
//!
//! Mapping (all numbers from the machine model, nothing added here):
//!
//! * **Weights** sit in SRAM in the MXM's install layout: each 320×320 tile striped over
//!   16 MEM slices of its plane's home set (even/odd slices of the plane's hemisphere),
//!   so an install reads 16 rows per cycle — the free parameter
//!   `install_rows_per_cycle_per_plane`. int8 tiles stream straight into the plane;
//!   int4 tiles (the GGUF block layout: nibbles + block scales, plus one requantization
//!   factor per row) pass through the VXM, which unpacks, scales and requantizes them
//!   to int8 on the way (the MXM takes no int4).
//! * **Matmuls** are weight-stationary: for each 320-wide output tile, the K tiles are
//!   installed one after another (double-buffered: the next install overlaps the
//!   current matmul) and the int8 activation rows stream through, accumulating in the
//!   plane's int32 accumulators; the last K tile drains to the VXM, which applies the
//!   activation row scale and the weight row scale (fp32). Output tiles go to the least
//!   loaded plane.
//! * **Activations** are fp32 rows in the innermost MEM slices (four byte-plane slices
//!   per vector); before a matmul each row is quantized to int8 with its own scale
//!   (absmax / 127) — a row reduction (VXM partial, SXM lane tree, VXM finish).
//! * **Norms, RoPE, softmax, SiLU, residual adds** run on the VXM in fp32; row
//!   reductions use the SXM lane tree.
//! * **KV cache** is fp16, one cache per (sequence, KV head), every tile of it in one
//!   16-slice group (so the append's slice is static, only its address depends on the
//!   position). The attention mapping is chosen by cost (see [`choose_attention`]):
//!   kv-stationary installs K (stored transposed; the SXM transposes each appended
//!   key) and V tiles and streams the queries; q-stationary would install the queries.
//! * **Collectives** (row-parallel matmul outputs under tensor parallelism) are the
//!   all-reduce `cost::allreduce` picks, lowered to sends/receives over one C2C link per
//!   peer, with fp16 partial sums on the wire.
//! * **Embedding** is a host-side row gather sent with the tokens (one row per token;
//!   a 128K-row table on chip would cost several chips' SRAM for a lookup).
//!
//! # Structure
//!
//! | module | does |
//! |---|---|
//! | this one | [`generate`]: the block's inputs, one macro-op at a time, the outputs; the chain-building helpers every selector shares (reads, writes, VXM nodes, element-wise and row-reduction chains, activation tensors) |
//! | `alloc` | SRAM allocation: slice groups per tensor kind, bump-allocated per bank |
//! | `isel_linear` | `Linear`: weight tiles, installs, int8 matmuls, per-row quantization |
//! | `isel_attention` | `KvAppend`, `Attention`, and the choice of attention mapping |
//! | `isel_vector` | norms, RoPE, SwiGLU, adds, take-last, embedding, sampling |
//! | `collectives` | all-reduce and all-gather over the C2C links |
//! | `place` | the one place-and-repair loop every chain goes through (returns `Result`) |

mod alloc;
mod collectives;
mod isel_attention;
mod isel_linear;
mod isel_vector;
mod place;

pub use isel_attention::choose_attention;
pub use isel_linear::is_4bit;

use std::collections::HashMap;

use super::cost::Cycles;
use super::isa::{Elem, Finish, Floorplan, MemAt, Op, Queue, Reduce, Region, SxmFn, VxmFn};
use super::model::MachineModel;
use super::mops::{Block, LoweredModel, MOp, Rows, TId, WId};
use super::program::{BlockProgram, GenConfig, Placement, TensorDecl, TensorKind, Work};
use super::sched::{Chain, Node, QSel, Scheduler};
use alloc::Alloc;

/// Why a block cannot be generated for a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenError {
    #[error("{what} does not divide over {tp} chips of tensor parallelism")]
    Split { what: String, tp: u32 },
    #[error("SRAM full on one chip while placing {what} ({need} vectors of 320 B per slice); use more chips")]
    Full { what: String, need: u64 },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Sched(#[from] super::sched::SchedError),
}

/// How an activation is distributed over the tensor-parallel group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shard {
    /// Every chip holds all columns.
    Rep,
    /// Each chip holds its `cols / tp` block (heads, FFN features, vocab).
    Cols,
}

/// The state of generating one block on one chip: the tensors declared so far, the SRAM
/// allocator, the scheduler holding the placed chains, and the per-block work counters.
/// Instruction selection (`isel_*`, [`collectives`]) builds chains; [`place`] places
/// them.
struct Gen<'a> {
    m: &'a MachineModel,
    fp: &'a Floorplan,
    model: &'a LoweredModel,
    cfg: GenConfig,
    sched: Scheduler<'a>,
    tensors: Vec<TensorDecl>,
    alloc: Alloc,
    work: Work,
    acts: HashMap<TId, (u32, Shard)>,
    quant: HashMap<(u32, bool), (u32, u32)>,
    plane_load: Vec<Cycles>,
    weight_slots: Vec<WId>,
    cache_slots: Vec<u32>,
    tables: HashMap<(u32, u32, bool), u32>,
    rows: u32,
    seq_rows: u32,
    logits: Option<u32>,
}

/// Element vectors covering columns `[c0, c0 + n)` of a row.
fn vec_cols(c0: u32, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    (c0 + n).div_ceil(320) - c0 / 320
}

/// Generates and schedules one block for one chip of a tensor-parallel group.
pub fn generate(
    m: &MachineModel,
    fp: &Floorplan,
    model: &LoweredModel,
    block: &Block,
    cfg: &GenConfig,
) -> Result<BlockProgram, GenError> {
    let steps = (m.lanes() as f64).log2().ceil() as u64;
    let mut g = Gen {
        m,
        fp,
        model,
        cfg: cfg.clone(),
        sched: Scheduler::new(fp, steps, m.sxm.transpose_block.get()),
        tensors: Vec::new(),
        alloc: Alloc::new(m, fp),
        work: Work {
            install_cycles: vec![0; fp.planes()],
            mxm_cycles: vec![0; fp.planes()],
            ..Work::default()
        },
        acts: HashMap::new(),
        quant: HashMap::new(),
        plane_load: vec![0; fp.planes()],
        weight_slots: Vec::new(),
        cache_slots: Vec::new(),
        tables: HashMap::new(),
        rows: cfg.seqs * cfg.new_tokens,
        seq_rows: cfg.seqs,
        logits: None,
    };
    let mut inputs = Vec::new();
    for t in &block.inputs {
        let ti = &model.tensors[*t as usize];
        let rows = g.rows_of(ti.rows);
        let local = g.act_tensor(
            format!("in.t{t}"),
            TensorKind::Io { t: *t },
            Elem::F32,
            rows,
            ti.cols as u32,
        )?;
        let r = g.whole(local);
        g.sched.preset_written(r, 0);
        g.acts.insert(*t, (local, Shard::Rep));
        inputs.push((*t, local));
    }
    let mut op_starts = Vec::new();
    for op in &block.ops {
        op_starts.push((op.name().to_string(), g.sched.instrs.len() as u32));
        g.op(op).map_err(|e| match e {
            // A scheduling failure names the op and block it happened in.
            GenError::Sched(e) => {
                GenError::Unsupported(format!("{} ({}): {e}", op.name(), block.kind.name()))
            }
            e => e,
        })?;
    }
    let mut outputs = Vec::new();
    for t in &block.outputs {
        let (local, shard) = g.acts[t];
        if shard != Shard::Rep {
            return Err(GenError::Unsupported(format!(
                "block output t{t} is split over chips; only replicated activations cross stages"
            )));
        }
        if let TensorKind::Temp = g.tensors[local as usize].kind {
            g.tensors[local as usize].kind = TensorKind::Io { t: *t };
        }
        outputs.push((*t, local));
    }
    let instrs = g.sched.finish();
    let makespan = instrs.iter().map(|i| i.done()).max().unwrap_or(0);
    Ok(BlockProgram {
        kind: block.kind,
        config: cfg.clone(),
        tensors: g.tensors,
        instrs,
        makespan,
        work: g.work,
        weight_slots: g.weight_slots,
        cache_slots: g.cache_slots,
        inputs,
        outputs,
        logits: g.logits,
        op_starts,
    })
}

impl<'a> Gen<'a> {
    fn rows_of(&self, r: Rows) -> u32 {
        match r {
            Rows::Tokens => self.rows,
            Rows::Seqs => self.seq_rows,
        }
    }

    fn tp(&self) -> u32 {
        self.cfg.tp
    }

    fn whole(&self, t: u32) -> Region {
        let d = &self.tensors[t as usize];
        Region::rows(t, 0, d.rows, 0, d.cols)
    }

    fn full(&self, what: &str, need: u64) -> GenError {
        GenError::Full {
            what: what.to_string(),
            need,
        }
    }

    /// An activation-like tensor on a group of `elem.bytes()` slices (one per byte
    /// plane). Resident kinds go to the weight slices, activations to the innermost
    /// slices, avoiding the slices of `self.avoid`.
    fn act_tensor(
        &mut self,
        name: String,
        kind: TensorKind,
        elem: Elem,
        rows: u32,
        cols: u32,
    ) -> Result<u32, GenError> {
        let width = elem.bytes() as usize;
        let vectors = rows.max(1) * cols.div_ceil(320).max(1);
        let resident = !matches!(kind, TensorKind::Io { .. } | TensorKind::Temp);
        let got = if resident {
            self.alloc.small_group(self.fp, width, vectors)
        } else {
            self.alloc.act_group(self.fp, width, vectors, &[])
        };
        let at = got.ok_or_else(|| self.full(&name, u64::from(vectors)))?;
        Ok(self.push_placed(name, kind, elem, rows, cols, at, vectors))
    }

    /// Declares a tensor held whole in one placement at `(slices, bank, addr)`.
    #[allow(clippy::too_many_arguments)]
    fn push_placed(
        &mut self,
        name: String,
        kind: TensorKind,
        elem: Elem,
        rows: u32,
        cols: u32,
        (slices, bank, addr): (Vec<u16>, u8, u32),
        vectors: u32,
    ) -> u32 {
        let id = self.tensors.len() as u32;
        self.tensors.push(TensorDecl {
            name,
            kind,
            elem,
            rows,
            cols,
            place: vec![Placement {
                region: Region::rows(id, 0, rows, 0, cols),
                at: MemAt {
                    slices,
                    bank,
                    addr,
                    partner: 0,
                },
                vectors,
            }],
        });
        id
    }

    fn temp(&mut self, name: &str, elem: Elem, rows: u32, cols: u32) -> Result<u32, GenError> {
        self.act_tensor(name.to_string(), TensorKind::Temp, elem, rows, cols)
    }

    /// Where a region of a single-placement tensor is read from.
    fn at_of(&self, r: &Region, partner: u32) -> (MemAt, Elem) {
        let d = &self.tensors[r.tensor as usize];
        let p = d
            .place
            .iter()
            .find(|p| {
                p.region.row0 <= r.row0
                    && r.row0 + r.step * r.rows.saturating_sub(1) < p.region.row0 + p.region.rows
                    && p.region.col0 <= r.col0
                    && r.col0 + r.cols <= p.region.col0 + p.region.cols
            })
            .unwrap_or(&d.place[0]);
        let mut at = p.at.clone();
        at.partner = partner;
        // First vector of the region: row-major within the placement.
        let per_row = p.region.cols.div_ceil(320).max(1);
        at.addr = p.at.addr
            + (r.row0.saturating_sub(p.region.row0)) * per_row
            + (r.col0.saturating_sub(p.region.col0)) / 320;
        (at, d.elem)
    }

    /// Element vectors a row region streams.
    fn vectors(r: &Region) -> Cycles {
        u64::from(r.rows.max(1)) * u64::from(vec_cols(r.col0, r.cols).max(1))
    }

    fn read(&self, r: Region, partner: u32) -> Node {
        let (at, _) = self.at_of(&r, partner);
        let occ = Self::vectors(&r);
        Node::new(
            QSel::Fixed(Queue::Mem(at.slices[0])),
            Op::MemRead {
                at,
                data: r,
                peer_block: None,
            },
            occ,
        )
    }

    fn width(&self, t: u32) -> u8 {
        self.tensors[t as usize].elem.bytes() as u8
    }

    fn write(&self, r: Region, partner: u32) -> Node {
        let (at, _) = self.at_of(&r, partner);
        let occ = Self::vectors(&r);
        Node::new(
            QSel::Fixed(Queue::Mem(at.slices[0])),
            Op::MemWrite {
                at,
                data: r,
                peer_block: None,
            },
            occ,
        )
    }

    fn vxm(&mut self, f: VxmFn, vectors: Cycles) -> Node {
        let ops = f.ops(self.m);
        let max = self.fp.vxm_alus;
        let (alus, occ) = if matches!(f, VxmFn::Unpack4) {
            (max, (vectors * ops).div_ceil(max))
        } else if ops <= max {
            (ops, vectors)
        } else {
            (max, (vectors * ops).div_ceil(max))
        };
        self.work.vxm_alu_cycles += alus * occ;
        Node::new(
            QSel::Vxm,
            Op::Vxm {
                f,
                alus: alus as u8,
            },
            occ,
        )
    }

    fn new_act(&mut self, t: TId, name: &str, shard: Shard) -> Result<u32, GenError> {
        let ti = &self.model.tensors[t as usize];
        let rows = self.rows_of(ti.rows);
        let cols = match shard {
            Shard::Rep => ti.cols as u32,
            Shard::Cols => (ti.cols / u64::from(self.tp())) as u32,
        };
        let id = self.act_tensor(
            format!("{name}.t{t}"),
            TensorKind::Temp,
            Elem::F32,
            rows,
            cols,
        )?;
        self.acts.insert(t, (id, shard));
        Ok(id)
    }

    fn get(&self, t: TId) -> Result<(u32, Shard), GenError> {
        self.acts.get(&t).copied().ok_or_else(|| {
            GenError::Unsupported(format!("activation t{t} is used before it is defined"))
        })
    }

    fn split_check(&self, what: &str, n: u64) -> Result<(), GenError> {
        if n % u64::from(self.tp()) != 0 {
            return Err(GenError::Split {
                what: what.to_string(),
                tp: self.tp(),
            });
        }
        Ok(())
    }

    /// `reads → f → write`, all on the VXM.
    fn ew(&mut self, f: VxmFn, ins: &[Region], out: Region) -> Result<(), GenError> {
        let vx = self.fp.vxm_pos;
        let mut c = Chain::default();
        let vectors = Self::vectors(&out);
        let v = self.vxm(f, vectors);
        let vi = c.push(v);
        for r in ins {
            let w = self.width(r.tensor);
            let ri = c.push(self.read(*r, vx));
            c.link(ri, vi, w);
        }
        let w = self.write(out, vx);
        let wi = c.push(w);
        let ow = self.width(out.tensor);
        c.link(vi, wi, ow);
        self.place(c)
    }

    /// Row reduction `x → partial → lane tree → finish → out[rows × 1]`.
    fn reduce(
        &mut self,
        x: Region,
        partial: Reduce,
        tree: Reduce,
        finish: Finish,
        out: Region,
    ) -> Result<(), GenError> {
        let vx = self.fp.vxm_pos;
        let mut c = Chain::default();
        let xi = c.push(self.read(x, vx));
        let p = self.vxm(VxmFn::Partial(partial), Self::vectors(&x));
        let pi = c.push(p);
        c.link(xi, pi, self.width(x.tensor));
        let east = self.alloc.act_rr % 2 == 1;
        let mut t = Node::new(
            QSel::Sxm { east },
            Op::Sxm {
                f: SxmFn::LaneTree(tree),
            },
            u64::from(x.rows.max(1)),
        );
        t.paced = true;
        self.work.vxm_alu_cycles += u64::from(x.rows.max(1));
        let ti = c.push(t);
        c.link(pi, ti, 4);
        let f = self.vxm(VxmFn::Finish(finish), u64::from(x.rows.max(1)));
        let fi = c.push(f);
        c.link(ti, fi, 4);
        let wi = c.push(self.write(out, vx));
        c.link(fi, wi, 4);
        self.place(c)
    }

    /// Instruction selection: one macro-op → chains, by op family.
    fn op(&mut self, op: &MOp) -> Result<(), GenError> {
        match op {
            MOp::Embed { out, .. } => self.embed(*out),
            MOp::Norm { x, w, eps, out } => self.norm(*x, *w, *eps, *out),
            MOp::Linear { x, w, out, act_q8 } => self.linear(*x, *w, *out, *act_q8),
            MOp::Rope {
                x,
                heads,
                head_dim,
                dims,
                theta,
                style,
                out,
            } => self.rope(*x, *heads, *head_dim, *dims, *theta, *style, *out),
            MOp::KvAppend { x, cache } => self.kv_append(*x, *cache),
            MOp::Attention {
                q,
                k,
                v,
                heads,
                kv_heads,
                head_dim,
                scale,
                out,
            } => self.attention(*q, *k, *v, *heads, *kv_heads, *head_dim, *scale, *out),
            MOp::SwiGlu { gate, up, out } => self.binary(VxmFn::SwiGlu, *gate, *up, *out),
            MOp::Add { a, b, out } => self.binary(VxmFn::Add, *a, *b, *out),
            MOp::TakeLast { x, out } => self.take_last(*x, *out),
            MOp::Output { x, .. } => self.output(*x),
        }
    }
}

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

use std::collections::HashMap;

use super::cost::{self, AllReduceAlgo, Cycles};
use super::isa::{
    Elem, Finish, Floorplan, GatherBy, MemAt, MxmType, Op, Queue, Reduce, Region, SxmFn, VxmFn,
};
use super::model::MachineModel;
use super::mops::{Block, BlockKind, LoweredModel, MOp, Rows, TId, WId};
use super::program::{
    AttnMap, BlockProgram, GenConfig, Placement, Split, TensorDecl, TensorKind, Work,
};
use super::sched::{Chain, Node, QSel, Scheduler};

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

/// Bytes of an int4 tile in SRAM per weight element: the source block format's bits.
fn int4_bits(src: lpuc_ir::DType) -> f64 {
    match src {
        lpuc_ir::DType::Q4_0 | lpuc_ir::DType::Q4_1 | lpuc_ir::DType::Q4K => src.bits_per_elem(),
        // A wider source stored as int4 is requantized to Q4_0-like blocks.
        _ => lpuc_ir::DType::Q4_0.bits_per_elem(),
    }
}

/// Whether a weight's source is a 4-bit format (only those are ever kept int4: storing
/// an 8-bit or float weight as int4 would change the model, not just its speed).
pub fn is_4bit(d: lpuc_ir::DType) -> bool {
    matches!(
        d,
        lpuc_ir::DType::Q4_0 | lpuc_ir::DType::Q4_1 | lpuc_ir::DType::Q4K
    )
}

/// SRAM per-bank, per-slice bump allocator.
#[derive(Clone, Debug)]
struct Alloc {
    cap: u32,
    used: Vec<[u32; 2]>,
    act: Vec<Vec<u16>>,
    home: Vec<Vec<u16>>,
    act_rr: usize,
    small_rr: usize,
    home_rr: Vec<usize>,
}

impl Alloc {
    fn new(m: &MachineModel, fp: &Floorplan) -> Alloc {
        let cap = (m.sram.slice_bytes.get()
            / m.sram.banks_per_slice.get()
            / m.sram.bank_access_bytes.get()) as u32;
        let per = fp.mem_per_side;
        let act_per_side = 8.min(per / 4).max(1);
        let planes_per_side = fp.planes() / 2;
        let mut act = vec![Vec::new(), Vec::new()];
        let mut home = vec![Vec::new(); fp.planes()];
        for side in 0..2u16 {
            for i in 0..per {
                let id = side * per + i;
                if i >= per - act_per_side {
                    act[side as usize].push(id);
                } else {
                    let p = side as usize * planes_per_side + (i as usize % planes_per_side);
                    home[p].push(id);
                }
            }
        }
        Alloc {
            cap,
            used: vec![[0, 0]; fp.mem_slices()],
            act,
            home,
            act_rr: 0,
            small_rr: 0,
            home_rr: vec![0; fp.planes()],
        }
    }

    /// Same address on every slice of `slices`, in `bank` (or the other bank).
    fn take(&mut self, slices: &[u16], bank: u8, vectors: u32) -> Option<(u8, u32)> {
        for b in [bank, 1 - bank] {
            let addr = slices
                .iter()
                .map(|s| self.used[*s as usize][b as usize])
                .max()
                .unwrap_or(0);
            if u64::from(addr) + u64::from(vectors) <= u64::from(self.cap) {
                for s in slices {
                    self.used[*s as usize][b as usize] = addr + vectors;
                }
                return Some((b, addr));
            }
        }
        None
    }

    fn free(&self, s: u16) -> u32 {
        let u = self.used[s as usize];
        (self.cap - u[0]) + (self.cap - u[1])
    }

    /// `n` slices from `set` with room for `vectors` each, preferring the rotation.
    fn group_from(
        &mut self,
        set: &[u16],
        rr: usize,
        n: usize,
        bank: u8,
        vectors: u32,
    ) -> Option<(Vec<u16>, u8, u32)> {
        if set.len() >= n {
            for k in 0..set.len() {
                let start = (rr + k * n) % set.len();
                let slices: Vec<u16> = (0..n).map(|j| set[(start + j) % set.len()]).collect();
                if let Some((b, a)) = self.take(&slices, bank, vectors) {
                    return Some((slices, b, a));
                }
            }
        }
        None
    }

    /// Fallback: the `n` slices of `side_set` with the most room.
    fn roomiest(
        &mut self,
        side_set: &[u16],
        n: usize,
        bank: u8,
        vectors: u32,
    ) -> Option<(Vec<u16>, u8, u32)> {
        let mut by: Vec<u16> = side_set.to_vec();
        by.sort_by_key(|s| (std::cmp::Reverse(self.free(*s)), *s));
        by.truncate(n);
        if by.len() < n {
            return None;
        }
        by.sort();
        self.take(&by, bank, vectors).map(|(b, a)| (by, b, a))
    }

    fn weight_group(
        &mut self,
        fp: &Floorplan,
        plane: usize,
        n: usize,
        vectors: u32,
    ) -> Option<(Vec<u16>, u8, u32)> {
        let set = self.home[plane].clone();
        let rr = self.home_rr[plane];
        self.home_rr[plane] += n;
        if let Some(g) = self.group_from(&set, rr, n, 0, vectors) {
            return Some(g);
        }
        let east = fp.plane_east[plane];
        let side: Vec<u16> = (0..fp.mem_slices() as u16)
            .filter(|s| fp.mem_east[*s as usize] == east)
            .collect();
        if let Some(g) = self.roomiest(&side, n, 0, vectors) {
            return Some(g);
        }
        let all: Vec<u16> = (0..fp.mem_slices() as u16).collect();
        // Any slices, but all on one side of the plane: a plane sits at the edge, so
        // every slice is on the same side of it.
        self.roomiest(&all, n, 0, vectors)
    }

    /// A group for an activation: innermost slices, alternating sides, never one of
    /// `avoid` (slices of tensors it will be read or written together with).
    fn act_group(
        &mut self,
        fp: &Floorplan,
        n: usize,
        vectors: u32,
        avoid: &[u16],
    ) -> Option<(Vec<u16>, u8, u32)> {
        let first = self.act_rr % 2;
        self.act_rr += 1;
        for side in [first, 1 - first] {
            let set: Vec<u16> = self.act[side]
                .iter()
                .copied()
                .filter(|s| !avoid.contains(s))
                .collect();
            let rr = (self.act_rr / 2) * n;
            if let Some(g) = self.group_from(&set, rr, n, 1, vectors) {
                return Some(g);
            }
        }
        for side in [first, 1 - first] {
            let side_set: Vec<u16> = (0..fp.mem_slices() as u16)
                .filter(|s| fp.mem_east[*s as usize] == (side == 1) && !avoid.contains(s))
                .collect();
            if let Some(g) = self.roomiest(&side_set, n, 1, vectors) {
                return Some(g);
            }
        }
        None
    }

    /// A group for a small resident tensor (scales, norm weights, tables): the weight
    /// slices, rotating, so they never share a slice with activations.
    fn small_group(
        &mut self,
        fp: &Floorplan,
        n: usize,
        vectors: u32,
    ) -> Option<(Vec<u16>, u8, u32)> {
        let side = self.act_rr % 2;
        self.act_rr += 1;
        for side in [side, 1 - side] {
            let set: Vec<u16> = self
                .home
                .iter()
                .enumerate()
                .filter(|(p, _)| fp.plane_east[*p] == (side == 1))
                .flat_map(|(_, h)| h.iter().copied())
                .collect::<std::collections::BTreeSet<u16>>()
                .into_iter()
                .collect();
            let rr = self.small_rr;
            self.small_rr += n;
            if let Some(g) = self.group_from(&set, rr, n, 1, vectors) {
                return Some(g);
            }
        }
        let all: Vec<u16> = (0..fp.mem_slices() as u16).collect();
        self.roomiest(&all, n, 1, vectors)
    }
}

/// Estimated cycles of one K-tile step on a plane (for balancing planes).
fn tile_cost(m: &MachineModel, rows: u64, int4: bool, fp16: bool) -> Cycles {
    let install = cost::weight_install(
        m,
        m.mxm.plane_rows.get(),
        m.mxm.plane_cols.get(),
        if fp16 {
            cost::MxmDtype::Fp16
        } else {
            cost::MxmDtype::Int8
        },
    )
    .map(|c| c.occupancy)
    .unwrap_or(40);
    let stream = if fp16 {
        rows * m.mxm.fp16_rate_divisor.get()
    } else {
        rows
    };
    let unpack = if int4 {
        cost::int4_unpack(m, 320 * 160, true).occupancy
    } else {
        0
    };
    install.max(stream).max(unpack)
}

/// Costs of the two attention mappings for one (sequence, KV head) and the choice.
pub fn choose_attention(
    m: &MachineModel,
    group_rows: u64,
    keys: u64,
    head_dim: u64,
) -> (AttnMap, Cycles, Cycles) {
    use cost::{mxm_matmul, MatmulShape, MxmDtype};
    let planes = 1;
    let c = |shape: MatmulShape| {
        mxm_matmul(m, shape, MxmDtype::Fp16, planes)
            .map(|x| x.cost.latency)
            .unwrap_or(Cycles::MAX / 4)
    };
    // kv-stationary: S = q·Kᵀ (K installed), O = P·V (V installed); queries stream.
    let ks = c(MatmulShape {
        m: group_rows,
        k: head_dim,
        n: keys,
    }) + c(MatmulShape {
        m: group_rows,
        k: keys,
        n: head_dim,
    });
    // q-stationary: Sᵀ = K·qᵀ (q installed, keys stream), Oᵀ = Vᵀ·Pᵀ (P installed,
    // V's columns stream).
    let qs = c(MatmulShape {
        m: keys,
        k: head_dim,
        n: group_rows,
    }) + c(MatmulShape {
        m: head_dim,
        k: keys,
        n: group_rows,
    });
    if qs < ks {
        (AttnMap::QStationary, ks, qs)
    } else {
        (AttnMap::KvStationary, ks, qs)
    }
}

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
    failed: Option<super::sched::SchedError>,
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
        failed: None,
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
        g.op(op)?;
        if let Some(e) = g.failed.take() {
            return Err(GenError::Unsupported(format!(
                "{} ({}): {e}",
                op.name(),
                block_label(block)
            )));
        }
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
        let (slices, bank, addr) = got.ok_or_else(|| self.full(&name, u64::from(vectors)))?;
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
        Ok(id)
    }

    /// Slices of every MEM node of a chain except node `skip`.
    fn chain_slices(c: &Chain, skip: usize) -> Vec<u16> {
        let mut v = Vec::new();
        for (k, n) in c.nodes.iter().enumerate() {
            if k != skip {
                if let Some(at) = n.op.mem_at() {
                    v.extend(at.slices.iter().copied());
                }
            }
        }
        v
    }

    /// Re-points every node of `c` that touches `tensor` at its current placement.
    fn refresh(&self, c: &mut Chain, tensor: u32, to: u32) {
        for n in c.nodes.iter_mut() {
            let (at, data) = match &mut n.op {
                Op::MemRead { at, data, .. }
                | Op::MemWrite { at, data, .. }
                | Op::MemGather { at, data, .. }
                | Op::MemScatter { at, data, .. } => (at, data),
                _ => continue,
            };
            if data.tensor == tensor {
                data.tensor = to;
                let (new, _) = self.at_of(data, at.partner);
                *at = new;
            }
        }
    }

    /// Resolves a conflict between nodes `i` and `j` of a chain: re-place a written
    /// tensor that holds nothing yet, else copy a read operand to fresh slices.
    fn relocate(
        &mut self,
        c: &mut Chain,
        i: usize,
        j: usize,
        after: &mut Vec<(Region, Region)>,
    ) -> bool {
        for k in [j, i] {
            let Op::MemWrite { data, .. } = &c.nodes[k].op else {
                continue;
            };
            let t = data.tensor;
            let d = &self.tensors[t as usize];
            if d.place.len() != 1 || d.is_resident() || self.sched.written(t) {
                continue;
            }
            let avoid = Self::chain_slices(c, k);
            let (width, vectors) = (d.place[0].at.slices.len(), d.place[0].vectors);
            let Some((slices, bank, addr)) = self.alloc.act_group(self.fp, width, vectors, &avoid)
            else {
                continue;
            };
            let p = &mut self.tensors[t as usize].place[0];
            p.at.slices = slices;
            p.at.bank = bank;
            p.at.addr = addr;
            self.refresh(c, t, t);
            return true;
        }
        for k in [j, i] {
            let Op::MemRead { data, .. } = &c.nodes[k].op else {
                continue;
            };
            let t = data.tensor;
            let d = self.tensors[t as usize].clone();
            if d.place.len() != 1 {
                continue;
            }
            // Not on the chain's other slices, nor on the source's own (the copy
            // reads one while it writes the other).
            let mut avoid = Self::chain_slices(c, k);
            avoid.extend(d.place[0].at.slices.iter().copied());
            let vectors = d.place[0].vectors;
            let Some(id) = self.temp_off(&d, "copy", d.rows, d.cols, vectors, &avoid) else {
                continue;
            };
            let (src, dst) = (self.whole(t), self.whole(id));
            let vx = self.fp.vxm_pos;
            let mut cc = Chain::default();
            let v = self.vxm(VxmFn::Copy, Self::vectors(&src));
            let vi = cc.push(v);
            let w = d.elem.bytes() as u8;
            let ri = cc.push(self.read(src, vx));
            cc.link(ri, vi, w);
            let wi = cc.push(self.write(dst, vx));
            cc.link(vi, wi, w);
            if let Err(e) = self.sched.place(cc, 0) {
                self.failed = Some(e);
                return false;
            }
            // Only this node reads the copy (others of the chain keep the original).
            let Op::MemRead { at, data, .. } = &mut c.nodes[k].op else {
                return false;
            };
            data.tensor = id;
            let (new, _) = self.at_of(data, at.partner);
            *at = new;
            return true;
        }
        // A write into a tensor that already holds data: write to a fresh temporary
        // instead and copy it into place afterwards.
        for k in [j, i] {
            let Op::MemWrite {
                data,
                peer_block: None,
                ..
            } = &c.nodes[k].op
            else {
                continue;
            };
            let data = *data;
            let d = self.tensors[data.tensor as usize].clone();
            let mut avoid = Self::chain_slices(c, k);
            avoid.extend(d.place.iter().flat_map(|p| p.at.slices.iter().copied()));
            let vectors = data.rows.max(1) * data.cols.div_ceil(320).max(1);
            let Some(id) = self.temp_off(&d, "staged", data.rows, data.cols, vectors, &avoid)
            else {
                continue;
            };
            let staged = Region::rows(id, 0, data.rows, 0, data.cols);
            let Op::MemWrite { at, data: dd, .. } = &mut c.nodes[k].op else {
                return false;
            };
            *dd = staged;
            let (new, _) = self.at_of(&staged, at.partner);
            *at = new;
            after.push((staged, data));
            return true;
        }
        false
    }

    /// A temporary `rows × cols` like `like` (named `<like>.<suffix>`), placed on slices
    /// outside `avoid`; `None` when no such group is free.
    fn temp_off(
        &mut self,
        like: &TensorDecl,
        suffix: &str,
        rows: u32,
        cols: u32,
        vectors: u32,
        avoid: &[u16],
    ) -> Option<u32> {
        let (slices, bank, addr) =
            self.alloc
                .act_group(self.fp, like.elem.bytes() as usize, vectors, avoid)?;
        let id = self.tensors.len() as u32;
        self.tensors.push(TensorDecl {
            name: format!("{}.{suffix}", like.name),
            kind: TensorKind::Temp,
            elem: like.elem,
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
        Some(id)
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

    /// Places a chain; returns its first instruction index. The first failure is kept
    /// and returned by [`generate`] (so helpers need not thread results).
    fn place(&mut self, mut c: Chain) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        // Operands of one rigid chain meet at one time: two of them on one slice (or a
        // read and a write on one slice and bank) can never be placed. Move one.
        c.nodes = super::sched::topo(std::mem::take(&mut c.nodes));
        // Copies to place once the chain is placed (redirected writes).
        let mut after: Vec<(Region, Region)> = Vec::new();
        for _ in 0..16 {
            let solved = self.sched.solve(c.clone());
            let Some(conf) = super::sched::self_conflict(self.fp, &solved) else {
                break;
            };
            let Some((i, j)) = conf.nodes else {
                break;
            };
            if !self.relocate(&mut c, i, j, &mut after) {
                break;
            }
        }
        let first = match self.sched.place(c, 0) {
            Ok(i) => i,
            Err(e) => {
                self.failed = Some(e);
                return 0;
            }
        };
        for (from, to) in after {
            let vx = self.fp.vxm_pos;
            let mut cc = Chain::default();
            let w = self.width(from.tensor);
            let ri = cc.push(self.read(from, vx));
            let v = self.vxm(VxmFn::Copy, Self::vectors(&from));
            let vi = cc.push(v);
            cc.link(ri, vi, w);
            let wi = cc.push(self.write(to, vx));
            cc.link(vi, wi, self.width(to.tensor));
            if let Err(e) = self.sched.place(cc, 0) {
                self.failed = Some(e);
            }
        }
        first
    }

    /// `reads → f → write`, all on the VXM.
    fn ew(&mut self, f: VxmFn, ins: &[Region], out: Region) {
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
        self.place(c);
    }

    /// Row reduction `x → partial → lane tree → finish → out[rows × 1]`.
    fn reduce(&mut self, x: Region, partial: Reduce, tree: Reduce, finish: Finish, out: Region) {
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
        self.place(c);
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

    fn op(&mut self, op: &MOp) -> Result<(), GenError> {
        match op {
            MOp::Embed { out, .. } => {
                // Host-side gather: the rows arrive with the tokens (see module docs).
                let id = self.new_act(*out, "embed", Shard::Rep)?;
                self.tensors[id as usize].kind = TensorKind::Io { t: *out };
                let r = self.whole(id);
                self.sched.preset_written(r, 0);
            }
            MOp::Norm { x, w, eps, out } => {
                let (xl, sh) = self.get(*x)?;
                if sh != Shard::Rep {
                    return Err(GenError::Unsupported("norm of a split activation".into()));
                }
                let cols = self.tensors[xl as usize].cols;
                let rows = self.tensors[xl as usize].rows;
                let r = self.temp("rms", Elem::F32, rows, 1)?;
                let xr = self.whole(xl);
                let rr = self.whole(r);
                self.reduce(
                    xr,
                    Reduce::SumSq,
                    Reduce::Sum,
                    Finish::RmsRecip { n: cols, eps: *eps },
                    rr,
                );
                let y = self.new_act(*out, "norm", Shard::Rep)?;
                let mut ins = vec![xr, rr];
                if let Some(w) = w {
                    let wl = self.vector_weight(*w, cols)?;
                    ins.push(Region {
                        step: 0,
                        ..Region::rows(wl, 0, rows, 0, cols)
                    });
                }
                let yr = self.whole(y);
                self.ew(VxmFn::NormApply { has_w: w.is_some() }, &ins, yr);
            }
            MOp::Linear { x, w, out, act_q8 } => self.linear(*x, *w, *out, *act_q8)?,
            MOp::Rope {
                x,
                heads,
                head_dim,
                dims,
                theta,
                style,
                out,
            } => {
                let (xl, sh) = self.get(*x)?;
                let local_heads = match sh {
                    Shard::Rep => *heads,
                    Shard::Cols => {
                        self.split_check("rotary heads", *heads)?;
                        heads / u64::from(self.tp())
                    }
                };
                let neox = *style == lpuc_ir::op::RopeStyle::Neox;
                let table = self.rope_table(*dims, *theta, neox)?;
                let y = self.new_act(*out, "rope", sh)?;
                let rows = self.tensors[xl as usize].rows;
                let vx = self.fp.vxm_pos;
                let mut c = Chain::default();
                let xr = self.whole(xl);
                let xi = c.push(self.read(xr, vx));
                let f = VxmFn::Rope {
                    heads: local_heads as u32,
                    head_dim: *head_dim as u32,
                    dims: *dims,
                    theta: *theta,
                    neox,
                };
                let v = self.vxm(f, Self::vectors(&xr));
                let vi = c.push(v);
                c.link(xi, vi, 4);
                // cos/sin rows of each row's position, spread over the row's lanes.
                let tr = Region::rows(table, 0, rows, 0, *dims);
                let (at, _) = self.at_of(&tr, self.fp.sxm_pos[0]);
                let gi = c.push(Node::new(
                    QSel::Fixed(Queue::Mem(at.slices[0])),
                    Op::MemGather {
                        at,
                        data: tr,
                        by: GatherBy::Positions,
                    },
                    u64::from(rows),
                ));
                let si = c.push(Node::new(
                    QSel::Sxm { east: false },
                    Op::Sxm {
                        f: SxmFn::Distribute,
                    },
                    u64::from(rows),
                ));
                c.link(gi, si, 4);
                c.link(si, vi, 4);
                let yr = self.whole(y);
                let wi = c.push(self.write(yr, vx));
                c.link(vi, wi, 4);
                self.place(c);
            }
            MOp::KvAppend { x, cache } => self.kv_append(*x, *cache)?,
            MOp::Attention {
                q,
                k,
                v,
                heads,
                kv_heads,
                head_dim,
                scale,
                out,
            } => self.attention(*q, *k, *v, *heads, *kv_heads, *head_dim, *scale, *out)?,
            MOp::SwiGlu { gate, up, out } => self.binary(VxmFn::SwiGlu, *gate, *up, *out)?,
            MOp::Add { a, b, out } => self.binary(VxmFn::Add, *a, *b, *out)?,
            MOp::TakeLast { x, out } => {
                let (xl, sh) = self.get(*x)?;
                let y = self.new_act(*out, "last", sh)?;
                let s = self.cfg.new_tokens;
                let cols = self.tensors[xl as usize].cols;
                let src = Region {
                    tensor: xl,
                    row0: s - 1,
                    rows: self.seq_rows,
                    step: s,
                    col0: 0,
                    cols,
                };
                let yr = self.whole(y);
                self.ew(VxmFn::Copy, &[src], yr);
            }
            MOp::Output { x, .. } => {
                let (xl, sh) = self.get(*x)?;
                self.logits = Some(xl);
                // Greedy sampling on chip: each chip's argmax over its vocabulary shard,
                // then the (value, index) pairs are gathered like any small all-gather.
                let rows = self.tensors[xl as usize].rows;
                let tok = self.temp("argmax", Elem::F32, rows, 1)?;
                let xr = self.whole(xl);
                let tr = self.whole(tok);
                self.reduce(xr, Reduce::Max, Reduce::Max, Finish::Identity, tr);
                if sh == Shard::Cols && self.tp() > 1 {
                    let all = self.temp("argmax.all", Elem::F32, rows, self.tp())?;
                    self.all_gather(tok, all)?;
                }
            }
        }
        Ok(())
    }

    fn binary(&mut self, f: VxmFn, a: TId, b: TId, out: TId) -> Result<(), GenError> {
        let (al, sa) = self.get(a)?;
        let (bl, sb) = self.get(b)?;
        if sa != sb {
            return Err(GenError::Unsupported(format!(
                "{} of a split and a replicated activation",
                f.name()
            )));
        }
        let y = self.new_act(out, f.name(), sa)?;
        let (ar, br, yr) = (self.whole(al), self.whole(bl), self.whole(y));
        self.ew(f, &[ar, br], yr);
        Ok(())
    }

    fn vector_weight(&mut self, w: WId, cols: u32) -> Result<u32, GenError> {
        if let Some(i) = self
            .tensors
            .iter()
            .position(|t| matches!(t.kind, TensorKind::Vector { w: x, .. } if x == w))
        {
            return Ok(i as u32);
        }
        self.weight_slots.push(w);
        let name = self.model.weights[w as usize].name.clone();
        let id = self.act_tensor(
            name,
            TensorKind::Vector {
                w,
                split: Split::None,
            },
            Elem::F32,
            1,
            cols,
        )?;
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        Ok(id)
    }

    fn rope_table(&mut self, dims: u32, theta: f32, neox: bool) -> Result<u32, GenError> {
        let key = (dims, theta.to_bits(), neox);
        if let Some(t) = self.tables.get(&key) {
            return Ok(*t);
        }
        let keys = self.cfg.keys.max(1);
        let id = self.act_tensor(
            format!("rope.table.{dims}"),
            TensorKind::RopeTable { dims, theta, neox },
            Elem::F32,
            keys,
            dims,
        )?;
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        self.tables.insert(key, id);
        Ok(id)
    }

    /// Row-quantized int8 copy of an activation (shared by every matmul reading it).
    fn quantized(&mut self, xl: u32, ref_q8: bool) -> Result<(u32, u32), GenError> {
        if let Some(q) = self.quant.get(&(xl, ref_q8)) {
            return Ok(*q);
        }
        let (rows, cols) = {
            let d = &self.tensors[xl as usize];
            (d.rows, d.cols)
        };
        let a = self.temp("qscale", Elem::F32, rows, 1)?;
        let x8 = self.temp("q8", Elem::I8, rows, cols)?;
        let (xr, ar, qr) = (self.whole(xl), self.whole(a), self.whole(x8));
        self.reduce(xr, Reduce::AbsMax, Reduce::Max, Finish::Int8Scale, ar);
        self.ew(VxmFn::Quantize { ref_q8 }, &[xr, ar], qr);
        self.quant.insert((xl, ref_q8), (x8, a));
        Ok((x8, a))
    }

    /// A weight matrix shard in install layout, tile by tile on its plane's slices.
    /// Returns the tensor and, per output tile, its plane.
    fn weight_tiles(
        &mut self,
        w: WId,
        split: Split,
        n: u32,
        k: u32,
        int4: bool,
    ) -> Result<(u32, u32, Vec<Vec<usize>>), GenError> {
        let info = self.model.weights[w as usize].clone();
        self.weight_slots.push(w);
        let id = self.tensors.len() as u32;
        let elem = if int4 { Elem::I4 } else { Elem::I8 };
        self.tensors.push(TensorDecl {
            name: info.name.clone(),
            kind: TensorKind::Weight { w, split },
            elem,
            rows: n,
            cols: k,
            place: Vec::new(),
        });
        let nt = n.div_ceil(320);
        let kt = k.div_ceil(320);
        let rows = self.rows.max(1);
        let step = tile_cost(self.m, u64::from(rows), int4, false);
        // Each output tile's K steps accumulate on one plane; an output narrower than
        // the planes (a K or V projection under tensor parallelism) splits its K steps
        // over several planes instead, and the VXM adds the partial sums.
        let np = self.fp.planes() as u32;
        let parts = if nt < np { (np / nt).clamp(1, kt) } else { 1 };
        let mut planes = Vec::new();
        for j in 0..nt {
            let mut per_i = vec![0usize; kt as usize];
            for part in 0..parts {
                let (a, b) = (part * kt / parts, (part + 1) * kt / parts);
                let p = (0..self.fp.planes())
                    .min_by_key(|p| (self.plane_load[*p], *p))
                    .unwrap_or(0);
                self.plane_load[p] += step * u64::from(b - a);
                for x in &mut per_i[a as usize..b as usize] {
                    *x = p;
                }
            }
            planes.push(per_i.clone());
            for i in 0..kt {
                let nn = (n - j * 320).min(320);
                let kk = (k - i * 320).min(320);
                let vectors = if int4 {
                    let bytes = (f64::from(nn) * f64::from(kk) * int4_bits(info.dtype) / 8.0).ceil()
                        as u64
                        + 4 * u64::from(nn);
                    bytes.div_ceil(320)
                } else {
                    u64::from(kk) * u64::from(nn).div_ceil(320)
                };
                let per = vectors.div_ceil(16) as u32;
                let (slices, bank, addr) = self
                    .alloc
                    .weight_group(self.fp, per_i[i as usize], 16, per)
                    .ok_or_else(|| self.full(&info.name, u64::from(per)))?;
                self.tensors[id as usize].place.push(Placement {
                    region: Region::rows(id, j * 320, nn, i * 320, kk),
                    at: MemAt {
                        slices,
                        bank,
                        addr,
                        partner: 0,
                    },
                    vectors: per,
                });
            }
        }
        // Per-row scales of the (requantized) int8 weights.
        let s = self.act_tensor(
            format!("{}.scale", info.name),
            TensorKind::WeightScale { w, split },
            Elem::F32,
            1,
            n,
        )?;
        let r = self.whole(s);
        self.sched.preset_written(r, 0);
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        Ok((id, s, planes))
    }

    /// The install chain head for tile `idx` of `wt` on `plane`/`buf`: returns the
    /// install node index within `c`.
    fn install(
        &mut self,
        c: &mut Chain,
        wt: u32,
        idx: usize,
        plane: usize,
        buf: u8,
        ty: MxmType,
        transpose: bool,
    ) -> usize {
        let p = self.tensors[wt as usize].place[idx].clone();
        let elem = self.tensors[wt as usize].elem;
        let ppos = self.fp.plane_pos[plane];
        let int4 = elem == Elem::I4;
        let partner = if int4 { self.fp.vxm_pos } else { ppos };
        let mut at = p.at.clone();
        at.partner = partner;
        let width = at.slices.len() as u8;
        let ri = c.push(Node::new(
            QSel::Fixed(Queue::Mem(at.slices[0])),
            Op::MemRead {
                at,
                data: p.region,
                peer_block: None,
            },
            u64::from(p.vectors),
        ));
        // Install vectors: plane rows (K) × vectors per row (N · bytes / 320).
        let (nn, kk) = if transpose {
            (p.region.cols, p.region.rows)
        } else {
            (p.region.rows, p.region.cols)
        };
        let eb = if ty == MxmType::Fp16 { 2 } else { 1 };
        let bv = u64::from(kk) * (u64::from(nn) * eb).div_ceil(320);
        let occ = bv.div_ceil(self.m.free.install_rows_per_cycle_per_plane.get());
        let ii = c.push(Node::new(
            QSel::Fixed(Queue::MxmInstall(plane as u8)),
            Op::Install {
                plane: plane as u8,
                buf,
                ty,
                transpose,
            },
            occ,
        ));
        if int4 {
            let packed = u64::from(p.vectors) * 16;
            let u = self.vxm(VxmFn::Unpack4, packed);
            let ui = c.push(u);
            c.link(ri, ui, width);
            c.link(ui, ii, 16);
        } else {
            c.link(ri, ii, width);
        }
        // Install queue held for the full install (see cost::weight_install).
        let hold = occ - 1 + self.fp.skew;
        self.work.install_cycles[plane] += hold;
        self.work.tiles += 1;
        ii
    }

    fn linear(&mut self, x: TId, w: WId, out: TId, act_q8: bool) -> Result<(), GenError> {
        let (xl, sh) = self.get(x)?;
        let info = self.model.weights[w as usize].clone();
        let (n_full, k_full) = (info.shape[0], info.shape[1]);
        let tp = u64::from(self.tp());
        let (split, n, k, out_shard, reduce) = match (sh, tp) {
            (_, 1) => (Split::None, n_full, k_full, Shard::Rep, false),
            (Shard::Rep, _) => {
                self.split_check(&format!("{} rows", info.name), n_full)?;
                (Split::Rows, n_full / tp, k_full, Shard::Cols, false)
            }
            (Shard::Cols, _) => {
                self.split_check(&format!("{} columns", info.name), k_full)?;
                (Split::Cols, n_full, k_full / tp, Shard::Rep, true)
            }
        };
        let int4 = self.cfg.int4 && is_4bit(info.dtype);
        let (x8, a) = self.quantized(xl, act_q8)?;
        let (wt, ws, planes) = self.weight_tiles(w, split, n as u32, k as u32, int4)?;
        let y = if reduce {
            let rows = self.tensors[xl as usize].rows;
            self.temp("partial", Elem::F32, rows, n as u32)?
        } else {
            self.new_act(out, "linear", out_shard)?
        };
        let rows = self.tensors[xl as usize].rows;
        let kt = (k as u32).div_ceil(320) as usize;
        // Units: (output tile, K range) accumulated on one plane.
        let mut units: Vec<(usize, usize, usize, usize)> = Vec::new(); // (j, i0, i1, plane)
        for (j, per_i) in planes.iter().enumerate() {
            let mut a = 0;
            for i in 1..=kt {
                if i == kt || per_i[i] != per_i[a] {
                    units.push((j, a, i, per_i[a]));
                    a = i;
                }
            }
        }
        let parts_of = |j: usize| units.iter().filter(|u| u.0 == j).count();
        // Emit K steps interleaved over planes so the planes start together.
        let mut order: Vec<(usize, usize)> = Vec::new(); // (unit, i)
        for (u, unit) in units.iter().enumerate() {
            for i in unit.1..unit.2 {
                order.push((u, i));
            }
        }
        order.sort_by_key(|&(u, i)| {
            let p = units[u].3;
            let before: usize = units[..u]
                .iter()
                .filter(|x| x.3 == p)
                .map(|x| x.2 - x.1)
                .sum();
            (before + i - units[u].1, p)
        });
        let mut partials: HashMap<usize, Vec<Region>> = HashMap::new();
        let mut buf = vec![0u8; self.fp.planes()];
        for (u, i) in order {
            let (j, i0, i1, p) = units[u];
            let b = buf[p];
            buf[p] ^= 1;
            let idx = j * kt + i;
            let mut c = Chain::default();
            let ii = self.install(&mut c, wt, idx, p, b, MxmType::Int8, false);
            let ppos = self.fp.plane_pos[p];
            let xr = Region::rows(
                x8,
                0,
                rows,
                (i * 320) as u32,
                (k as u32 - i as u32 * 320).min(320),
            );
            let xi = c.push(self.read(xr, ppos));
            let mut mm = Node::new(
                QSel::Fixed(Queue::MxmCompute(p as u8)),
                Op::MatMul {
                    plane: p as u8,
                    buf: b,
                    ty: MxmType::Int8,
                    first: i == i0,
                    last: i + 1 == i1,
                    install: 0,
                },
                u64::from(rows),
            );
            mm.after.push((ii, 0));
            let mi = c.push(mm);
            c.link(xi, mi, 1);
            self.work.mxm_cycles[p] += u64::from(rows);
            if i + 1 == i1 {
                let vx = self.fp.vxm_pos;
                let nn = (n as u32 - j as u32 * 320).min(320);
                let dq = self.vxm(VxmFn::Dequant, u64::from(rows));
                let di = c.push(dq);
                c.link(mi, di, 4);
                let ar = self.whole(a);
                let ai = c.push(self.read(ar, vx));
                c.link(ai, di, 4);
                let sr = Region::rows(ws, 0, 1, j as u32 * 320, nn);
                let si = c.push(self.read(sr, vx));
                c.link(si, di, 4);
                let yr = if parts_of(j) > 1 {
                    let t = self.temp("kpart", Elem::F32, rows, nn)?;
                    let r = self.whole(t);
                    partials.entry(j).or_default().push(r);
                    r
                } else {
                    Region::rows(y, 0, rows, j as u32 * 320, nn)
                };
                let wi = c.push(self.write(yr, vx));
                c.link(di, wi, 4);
                self.place(c);
                // All K ranges of this output tile done: add the partial sums.
                if partials.get(&j).is_some_and(|v| v.len() == parts_of(j)) {
                    let ins = partials.remove(&j).unwrap_or_default();
                    let yr = Region::rows(y, 0, rows, j as u32 * 320, nn);
                    self.ew(VxmFn::AddN(ins.len() as u32), &ins, yr);
                }
            } else {
                self.place(c);
            }
        }
        if reduce {
            let yo = self.new_act(out, "allreduce", Shard::Rep)?;
            self.all_reduce(y, yo)?;
        }
        Ok(())
    }

    /// The next C2C link index of a peer offset (one link per peer in a node).
    fn link_of(&self, offset: u32) -> u8 {
        ((offset - 1) as u64 % self.fp.links) as u8
    }

    /// Sends `src` to the chip `o` ranks ahead and receives what the chip `o` ranks back
    /// sent into `dst`. `src_block`: read the column block of rank + o; `dst_block`:
    /// write the column block of rank − o.
    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        src: Region,
        dst: Region,
        o: u32,
        src_block: bool,
        dst_block: bool,
        bytes: u64,
    ) {
        let link = self.link_of(o);
        let lpos = self.fp.queue_pos(Queue::LinkTx(link));
        let occ = (bytes as f64 / self.m.link_bytes_per_cycle())
            .ceil()
            .max(1.0) as Cycles;
        let mut c = Chain::default();
        let mut rd = self.read(src, self.fp.vxm_pos);
        if let Op::MemRead { peer_block, .. } = &mut rd.op {
            *peer_block = src_block.then_some(o as u8);
        }
        let ri = c.push(rd);
        let v = self.vxm(VxmFn::ToF16, Self::vectors(&src));
        let vi = c.push(v);
        c.link(ri, vi, self.width(src.tensor));
        let mut s = Node::new(
            QSel::Fixed(Queue::LinkTx(link)),
            Op::Send {
                link,
                peer: o as u8,
            },
            occ,
        );
        s.paced = false;
        let si = c.push(s);
        c.link(vi, si, 2);
        let mut r = Node::new(
            QSel::Fixed(Queue::LinkRx(link)),
            Op::Recv {
                link,
                peer: o as u8,
                send: 0,
            },
            occ,
        );
        r.paced = false;
        r.exact = Some((si, cost::hop_cycles(self.m)));
        let rcv = c.push(r);
        let mut w = self.write(dst, lpos);
        if let Op::MemWrite { peer_block, .. } = &mut w.op {
            *peer_block = dst_block.then_some(o as u8);
        }
        w.occ = occ;
        w.paced = false;
        let wi = c.push(w);
        c.link(rcv, wi, 2);
        self.work.c2c_bytes += bytes;
        self.place(c);
    }

    /// All-reduce (sum) of a partial `[rows × n]` over the group into `out` (replicated).
    fn all_reduce(&mut self, partial: u32, out: u32) -> Result<(), GenError> {
        let t = self.tp();
        let (rows, n) = {
            let d = &self.tensors[partial as usize];
            (d.rows, d.cols)
        };
        let bytes = u64::from(rows) * u64::from(n) * 2;
        let ar = cost::allreduce(self.m, bytes, u64::from(t), 2)
            .map_err(|e| GenError::Unsupported(e.to_string()))?;
        let pr = self.whole(partial);
        let two_phase = ar.algo != AllReduceAlgo::OneShot && n % t == 0;
        // Every peer's data lands in its own tensor (own slices): receives arrive at
        // link pace, so sharing a slice's write port would serialize them.
        if !two_phase {
            // Everyone sends everything to everyone; each chip sums all t copies in rank
            // order (so every chip gets bit-identical results).
            let mut ins = vec![pr];
            for o in 1..t {
                let inbox = self.temp("inbox", Elem::F16, rows, n)?;
                let dst = self.whole(inbox);
                self.exchange(pr, dst, o, false, false, bytes);
                ins.push(dst);
            }
            let or = self.whole(out);
            self.ew(VxmFn::Sum(t), &ins, or);
            self.work.c2c_hops += 1;
            return Ok(());
        }
        // Two-phase: reduce-scatter (block b of every partial goes to chip b), sum the
        // own block, all-gather the sums. Blocks are `n / t` columns.
        let bn = n / t;
        let shard_bytes = bytes / u64::from(t);
        let block0 = Region::rows(partial, 0, rows, 0, bn);
        let mut inboxes = Vec::new();
        for o in 1..t {
            let inbox = self.temp("rs.inbox", Elem::F16, rows, bn)?;
            let dst = self.whole(inbox);
            self.exchange(block0, dst, o, true, false, shard_bytes);
            inboxes.push(dst);
        }
        let mine = self.temp("rs.sum", Elem::F32, rows, bn)?;
        {
            let vx = self.fp.vxm_pos;
            let mut c = Chain::default();
            let v = self.vxm(VxmFn::Sum(t), Self::vectors(&block0));
            let vi = c.push(v);
            let mut own = self.read(block0, vx);
            if let Op::MemRead { peer_block, .. } = &mut own.op {
                *peer_block = Some(0);
            }
            let oi = c.push(own);
            c.link(oi, vi, 4);
            for r in &inboxes {
                let ri = c.push(self.read(*r, vx));
                c.link(ri, vi, 2);
            }
            let mr = self.whole(mine);
            let wi = c.push(self.write(mr, vx));
            c.link(vi, wi, 4);
            self.place(c);
        }
        // All-gather: every peer's sum lands in its own tensor, then each block is
        // copied into its place (own block: rank; from peer o: rank − o).
        let mr = self.whole(mine);
        let mut landed = vec![(mr, 0u32)];
        for o in 1..t {
            let land = self.temp("ag.inbox", Elem::F16, rows, bn)?;
            let dst = self.whole(land);
            self.exchange(mr, dst, o, false, false, shard_bytes);
            landed.push((dst, o));
        }
        for (src, o) in landed {
            let vx = self.fp.vxm_pos;
            let mut c = Chain::default();
            let ri = c.push(self.read(src, vx));
            let v = self.vxm(VxmFn::Copy, Self::vectors(&src));
            let vi = c.push(v);
            c.link(ri, vi, self.width(src.tensor));
            let mut w = self.write(Region::rows(out, 0, rows, 0, bn), vx);
            if let Op::MemWrite { peer_block, .. } = &mut w.op {
                *peer_block = Some(o as u8);
            }
            let wi = c.push(w);
            c.link(vi, wi, 4);
            self.place(c);
        }
        self.work.c2c_hops += 2;
        Ok(())
    }

    /// All-gather of `[rows × 1]` per chip into `[rows × t]` (own column first).
    fn all_gather(&mut self, part: u32, all: u32) -> Result<(), GenError> {
        let rows = self.tensors[part as usize].rows;
        let pr = self.whole(part);
        for o in 1..self.tp() {
            let dst = Region::rows(all, 0, rows, o, 1);
            self.exchange(pr, dst, o, false, false, u64::from(rows) * 4);
        }
        let dst = Region::rows(all, 0, rows, 0, 1);
        self.ew(VxmFn::Copy, &[pr], dst);
        Ok(())
    }

    fn cache_tensor(
        &mut self,
        c: u32,
        seq: u32,
        head: u32,
        transposed: bool,
        plane: usize,
    ) -> Result<u32, GenError> {
        if let Some(i) = self.tensors.iter().position(|t| {
            matches!(t.kind, TensorKind::Cache { c: x, seq: s, head: h, .. } if x == c && s == seq && h == head)
        }) {
            return Ok(i as u32);
        }
        if !self.cache_slots.contains(&c) {
            self.cache_slots.push(c);
        }
        let info = self.model.caches[c as usize].clone();
        let keys = self.cfg.keys.max(1);
        let d = info.head_dim as u32;
        let id = self.tensors.len() as u32;
        // Every tile of one cache in one 16-slice group (static slices, dynamic address).
        let tiles = keys.div_ceil(320);
        let per_tile_bv = if transposed {
            u64::from(d) * 2 // Kᵀ: D rows of 320 fp16 keys (two byte vectors)
        } else {
            320 * (u64::from(d) * 2).div_ceil(320) // V: 320 key rows of D fp16
        };
        let per_tile = per_tile_bv.div_ceil(16) as u32;
        let (slices, bank, addr) = self
            .alloc
            .weight_group(self.fp, plane, 16, per_tile * tiles)
            .ok_or_else(|| self.full(&info.name, u64::from(per_tile * tiles)))?;
        let mut place = Vec::new();
        for i in 0..tiles {
            let kk = (keys - i * 320).min(320);
            place.push(Placement {
                region: Region::rows(id, i * 320, kk, 0, d),
                at: MemAt {
                    slices: slices.clone(),
                    bank,
                    addr: addr + i * per_tile,
                    partner: 0,
                },
                vectors: per_tile,
            });
        }
        self.tensors.push(TensorDecl {
            name: format!("{}[s{seq},h{head}]", info.name),
            kind: TensorKind::Cache {
                c,
                seq,
                head,
                transposed,
            },
            elem: Elem::F16,
            rows: keys,
            cols: d,
            place,
        });
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        Ok(id)
    }

    /// Plane of the attention work of (sequence, local KV head).
    fn attn_plane(&mut self, seq: u32, head: u32, heads_local: u32) -> usize {
        ((seq * heads_local + head) as usize) % self.fp.planes()
    }

    fn kv_append(&mut self, x: TId, cache: u32) -> Result<(), GenError> {
        let (xl, sh) = self.get(x)?;
        let info = self.model.caches[cache as usize].clone();
        let kvh = match sh {
            Shard::Rep => info.kv_heads,
            Shard::Cols => {
                self.split_check("KV heads", info.kv_heads)?;
                info.kv_heads / u64::from(self.tp())
            }
        } as u32;
        let d = info.head_dim as u32;
        // K is stored transposed under kv-stationary attention (installed as Kᵀ), V under
        // q-stationary. Which cache is K: the lowering names them `.k` / `.v`; without
        // names, the first cache of a pair is K.
        let is_k = !info.name.ends_with(".v");
        let map = self.cfg.attn;
        let transposed = match map {
            AttnMap::KvStationary => is_k,
            AttnMap::QStationary => !is_k,
        };
        let s = self.cfg.new_tokens;
        let vx = self.fp.vxm_pos;
        for b in 0..self.cfg.seqs {
            for h in 0..kvh {
                let plane = self.attn_plane(b, h, kvh);
                let ct = self.cache_tensor(cache, b, h, transposed, plane)?;
                let mut c = Chain::default();
                let xr = Region::rows(xl, b * s, s, h * d, d);
                let xi = c.push(self.read(xr, vx));
                let v = self.vxm(VxmFn::ToF16, Self::vectors(&xr));
                let vi = c.push(v);
                c.link(xi, vi, 4);
                let (at, _) = self.at_of(&Region::rows(ct, 0, 1, 0, d), 0);
                let mut prev = vi;
                let mut partner = vx;
                let occ = if transposed {
                    // Each new key becomes one lane of each of the D row vectors.
                    let east = self.fp.plane_east[plane];
                    let t = Node::new(
                        QSel::Sxm { east },
                        Op::Sxm {
                            f: SxmFn::Transpose,
                        },
                        u64::from(d),
                    );
                    let ti = c.push(t);
                    c.link(vi, ti, 2);
                    prev = ti;
                    partner = self.fp.sxm_pos[usize::from(east)];
                    u64::from(d) * 2 / 16
                } else {
                    u64::from(s)
                };
                let mut at = at;
                at.partner = partner;
                let w = Node::new(
                    QSel::Fixed(Queue::Mem(at.slices[0])),
                    Op::MemScatter {
                        at,
                        data: Region::rows(ct, 0, s, 0, d),
                        seq: b,
                    },
                    occ.max(1),
                );
                let wi = c.push(w);
                c.link(prev, wi, 2);
                self.place(c);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        q: TId,
        k: u32,
        v: u32,
        heads: u64,
        kvh: u64,
        d: u64,
        scale: f32,
        out: TId,
    ) -> Result<(), GenError> {
        let (ql, sh) = self.get(q)?;
        let (hl, kvl) = match sh {
            Shard::Rep => (heads, kvh),
            Shard::Cols => {
                self.split_check("attention heads", heads)?;
                self.split_check("KV heads", kvh)?;
                (heads / u64::from(self.tp()), kvh / u64::from(self.tp()))
            }
        };
        if self.cfg.attn == AttnMap::QStationary {
            return Err(GenError::Unsupported(
                "the q-stationary attention mapping is costed but not yet lowered".into(),
            ));
        }
        let y = self.new_act(out, "attn", sh)?;
        let g = (hl / kvl) as u32;
        let d = d as u32;
        let s = self.cfg.new_tokens;
        let keys = self.cfg.keys.max(1);
        let gr = g * s; // query rows per (sequence, KV head)
        let kt = keys.div_ceil(320);
        let vx = self.fp.vxm_pos;
        let fp16_rate = self.m.mxm.fp16_rate_divisor.get();
        // Phases over all (sequence, KV head) groups, so that each plane's in-order
        // queues run every group's q·Kᵀ before any group waits on its softmax.
        struct Grp {
            b: u32,
            h: u32,
            plane: usize,
            kc: u32,
            vc: u32,
            q16: u32,
            scores: u32,
            p16: u32,
            o: u32,
        }
        let mut groups = Vec::new();
        for b in 0..self.cfg.seqs {
            for h in 0..kvl as u32 {
                let plane = self.attn_plane(b, h, kvl as u32);
                let kc = self.cache_tensor(k, b, h, true, plane)?;
                let vc = self.cache_tensor(v, b, h, false, plane)?;
                let q16 = self.temp("q16", Elem::F16, gr, d)?;
                let scores = self.temp("scores", Elem::F32, gr, keys)?;
                let p16 = self.temp("probs", Elem::F16, gr, keys)?;
                let o = self.temp("attn.o", Elem::F32, gr, d)?;
                groups.push(Grp {
                    b,
                    h,
                    plane,
                    kc,
                    vc,
                    q16,
                    scores,
                    p16,
                    o,
                });
            }
        }
        let mut buf = vec![0u8; self.fp.planes()];
        // 1. q rows of each group as [g·s × d] fp16, one row per head.
        for gp in &groups {
            let mut c = Chain::default();
            let qr = Region::rows(ql, gp.b * s, s, gp.h * g * d, g * d);
            let qi = c.push(self.read(qr, vx));
            let f = self.vxm(VxmFn::ToF16, Self::vectors(&qr));
            let fi = c.push(f);
            c.link(qi, fi, 4);
            let east = self.fp.plane_east[gp.plane];
            let t = Node::new(
                QSel::Sxm { east },
                Op::Sxm {
                    f: SxmFn::HeadRows { g, d },
                },
                u64::from(gr),
            );
            let ti = c.push(t);
            c.link(fi, ti, 2);
            let w = self.write(self.whole(gp.q16), self.fp.sxm_pos[usize::from(east)]);
            let wi = c.push(w);
            c.link(ti, wi, 2);
            self.place(c);
        }
        // 2. S = q·Kᵀ, K tiles stationary; scaled and masked on the way out.
        for i in 0..kt {
            for gp in &groups {
                let plane = gp.plane;
                let ppos = self.fp.plane_pos[plane];
                let mut c = Chain::default();
                let bf = buf[plane];
                buf[plane] ^= 1;
                let ii = self.install(&mut c, gp.kc, i as usize, plane, bf, MxmType::Fp16, false);
                let q16r = self.whole(gp.q16);
                let xi = c.push(self.read(q16r, ppos));
                let mut mm = Node::new(
                    QSel::Fixed(Queue::MxmCompute(plane as u8)),
                    Op::MatMul {
                        plane: plane as u8,
                        buf: bf,
                        ty: MxmType::Fp16,
                        first: true,
                        last: true,
                        install: 0,
                    },
                    u64::from(gr) * fp16_rate,
                );
                mm.after.push((ii, 0));
                let mi = c.push(mm);
                c.link(xi, mi, 2);
                self.work.mxm_cycles[plane] += u64::from(gr) * fp16_rate;
                let kk = (keys - i * 320).min(320);
                let sm = self.vxm(
                    VxmFn::ScaleMask {
                        scale,
                        key0: i * 320,
                        seq: gp.b,
                        rows_per_head: s,
                    },
                    u64::from(gr),
                );
                let smi = c.push(sm);
                c.link(mi, smi, 4);
                let sr = Region::rows(gp.scores, 0, gr, i * 320, kk);
                let wi = c.push(self.write(sr, vx));
                c.link(smi, wi, 4);
                self.place(c);
            }
        }
        // 3. Softmax over each row (keys) in fp32; probabilities to fp16.
        for gp in &groups {
            let mx = self.temp("rowmax", Elem::F32, gr, 1)?;
            let e = self.temp("exp", Elem::F32, gr, keys)?;
            let rs = self.temp("rowsum", Elem::F32, gr, 1)?;
            let (sr, mr, er, rr, pr) = (
                self.whole(gp.scores),
                self.whole(mx),
                self.whole(e),
                self.whole(rs),
                self.whole(gp.p16),
            );
            self.reduce(sr, Reduce::Max, Reduce::Max, Finish::Identity, mr);
            self.ew(VxmFn::ExpSub, &[sr, mr], er);
            self.reduce(er, Reduce::Sum, Reduce::Sum, Finish::Recip, rr);
            self.ew(VxmFn::MulRow { to_f16: true }, &[er, rr], pr);
        }
        // 4. O = P·V: V tiles stationary, accumulated over key tiles.
        for gp in &groups {
            let plane = gp.plane;
            let ppos = self.fp.plane_pos[plane];
            for i in 0..kt {
                let mut c = Chain::default();
                let bf = buf[plane];
                buf[plane] ^= 1;
                let ii = self.install(&mut c, gp.vc, i as usize, plane, bf, MxmType::Fp16, true);
                let kk = (keys - i * 320).min(320);
                let pr = Region::rows(gp.p16, 0, gr, i * 320, kk);
                let xi = c.push(self.read(pr, ppos));
                let mut mm = Node::new(
                    QSel::Fixed(Queue::MxmCompute(plane as u8)),
                    Op::MatMul {
                        plane: plane as u8,
                        buf: bf,
                        ty: MxmType::Fp16,
                        first: i == 0,
                        last: i + 1 == kt,
                        install: 0,
                    },
                    u64::from(gr) * fp16_rate,
                );
                mm.after.push((ii, 0));
                let mi = c.push(mm);
                c.link(xi, mi, 2);
                self.work.mxm_cycles[plane] += u64::from(gr) * fp16_rate;
                if i + 1 == kt {
                    let or = self.whole(gp.o);
                    let wi = c.push(self.write(or, ppos));
                    c.link(mi, wi, 4);
                }
                self.place(c);
            }
        }
        // 5. Back to row layout: [g·s × d] → rows of sequence b, columns of group h.
        for gp in &groups {
            let mut c = Chain::default();
            let orr = self.whole(gp.o);
            let east = self.fp.plane_east[gp.plane];
            let spos = self.fp.sxm_pos[usize::from(east)];
            let oi = c.push(self.read(orr, spos));
            let t = Node::new(
                QSel::Sxm { east },
                Op::Sxm {
                    f: SxmFn::HeadCols { g, d },
                },
                u64::from(gr),
            );
            let ti = c.push(t);
            c.link(oi, ti, 4);
            let yr = Region::rows(y, gp.b * s, s, gp.h * g * d, g * d);
            let wi = c.push(self.write(yr, spos));
            c.link(ti, wi, 4);
            self.place(c);
        }
        Ok(())
    }
}

fn block_label(b: &Block) -> String {
    match b.kind {
        BlockKind::Head => "head".into(),
        BlockKind::Layer(n) => format!("layer {n}"),
        BlockKind::Tail => "tail".into(),
    }
}

//! The LPU instruction set as lpuc models it, and the resources each instruction holds.
//!
//! One chip is a row of functional slices (west edge → east edge, from the profile's
//! layout); a [`Floorplan`] gives every slice its position, so the stream distance δ of
//! ISCA'20 Eq. 4 is `|pos(a) − pos(b)| · stream_hop_cycles`.
//!
//! An [`Instr`] issues on one [`Queue`] at a cycle, streams `occ` vectors (one per
//! cycle) and has its last result ready `lat` cycles after issue (`occ − 1 + N + d_func`,
//! see `cost.rs`). Instructions pass data on **streams**: a consumer names its producer
//! in [`Src`], and the timing law is exact — there is no buffering on a stream, so the
//! consumer must issue exactly when the first vector arrives:
//!
//! ```text
//!     consumer.issue = producer.issue + d_func(producer) + δ(producer, consumer)
//! ```
//!
//! and the two stream at the same pace (`occ` equal). Data that goes through SRAM
//! instead (a `MemWrite`, later a `MemRead`) must be fully written first:
//! `read.issue ≥ write.issue + write.occ + d_func`.
//!
//! Multi-slice memory instructions (a weight tile striped over 16 slices, an fp32 vector
//! over 4 byte-plane slices) are one instruction issued in lock step on each slice's
//! queue, each slice offset so that all data meets at the partner slice at once (reads:
//! farthest slice first; writes: nearest first) — see [`Instr::slice_issues`].
//!
//! Resources ([`Resource`]) an instruction holds, derived here and nowhere else so that
//! the scheduler and the checker cannot disagree: its queue; MEM read/write ports and
//! banks; MXM weight buffers; VXM ALUs (16 per lane, shared); streams (32 per direction,
//! as space-time bands); C2C links.

use serde::{Deserialize, Serialize};

use super::cost::Cycles;
use super::model::{MachineModel, Side, SliceKind};

/// Which way a stream flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dir {
    East,
    West,
}

/// Element types on the LPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Elem {
    I4,
    I8,
    F16,
    I32,
    F32,
}

impl Elem {
    /// Bytes per element (int4: half, rounded up per vector by the caller).
    pub fn bytes(self) -> u64 {
        match self {
            Elem::I4 | Elem::I8 => 1,
            Elem::F16 => 2,
            Elem::I32 | Elem::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Elem::I4 => "i4",
            Elem::I8 => "i8",
            Elem::F16 => "f16",
            Elem::I32 => "i32",
            Elem::F32 => "f32",
        }
    }
}

/// An instruction queue. MEM queues are per slice; each MXM plane has an install queue
/// and a compute queue; VXM and SXM queues are interchangeable within their unit (SXM
/// queues `0..n/2` are west, the rest east); C2C links have a transmit and a receive side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Queue {
    Mem(u16),
    MxmInstall(u8),
    MxmCompute(u8),
    Vxm(u8),
    Sxm(u8),
    LinkTx(u8),
    LinkRx(u8),
}

impl Queue {
    /// Short name for listings and traces (`MEM W12`, `MXM2.cmp`, `VXM q3`).
    pub fn label(self, fp: &Floorplan) -> String {
        match self {
            Queue::Mem(s) => fp.mem_label(s),
            Queue::MxmInstall(p) => format!("MXM{p}.install"),
            Queue::MxmCompute(p) => format!("MXM{p}.compute"),
            Queue::Vxm(q) => format!("VXM q{q}"),
            Queue::Sxm(q) => {
                let side = if u64::from(q) < fp.sxm_queues / 2 {
                    "W"
                } else {
                    "E"
                };
                format!("SXM{side} q{q}")
            }
            Queue::LinkTx(l) => format!("C2C{l}.tx"),
            Queue::LinkRx(l) => format!("C2C{l}.rx"),
        }
    }
}

/// Positions of every functional slice, from the profile's layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Floorplan {
    /// Position of MEM slice `i`: west slices `0..n` counted from the west edge's
    /// outermost MEM slice inwards, then east slices the same way from the east edge.
    pub mem_pos: Vec<u32>,
    /// Side of each MEM slice (false = west).
    pub mem_east: Vec<bool>,
    /// Position of MXM plane `p` (west planes outside-in, then east planes outside-in).
    pub plane_pos: Vec<u32>,
    pub plane_east: Vec<bool>,
    pub vxm_pos: u32,
    /// West and east SXM positions.
    pub sxm_pos: [u32; 2],
    /// The centre position: streams crossing it use both hemispheres' stream registers.
    pub center: u32,
    pub mem_per_side: u16,
    pub sxm_queues: u64,
    pub vxm_queues: u64,
    pub vxm_alus: u64,
    pub streams_per_direction: u64,
    pub links: u64,
    pub d_func: Cycles,
    pub skew: Cycles,
    pub hop: Cycles,
}

/// The floorplan cannot support the code generator's mapping.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("machine profile `{profile}`: {msg}")]
pub struct FloorplanError {
    pub profile: String,
    pub msg: String,
}

impl Floorplan {
    pub fn new(m: &MachineModel) -> Result<Floorplan, FloorplanError> {
        let err = |msg: String| FloorplanError {
            profile: m.profile.name.clone(),
            msg,
        };
        let slices = m.slices_west_to_east();
        let mut west_mem = Vec::new();
        let mut east_mem = Vec::new();
        let mut west_mxm = Vec::new();
        let mut east_mxm = Vec::new();
        let mut vxm = None;
        let mut sxm = [None, None];
        for (pos, s) in slices.iter().enumerate() {
            let pos = pos as u32;
            match (s.kind, s.side) {
                (SliceKind::Mem, Side::West) => west_mem.push((s.index, pos)),
                (SliceKind::Mem, Side::East) => east_mem.push((s.index, pos)),
                (SliceKind::Mxm, Side::West) => west_mxm.push((s.index, pos)),
                (SliceKind::Mxm, Side::East) => east_mxm.push((s.index, pos)),
                (SliceKind::Vxm, _) => vxm = vxm.or(Some(pos)),
                (SliceKind::Sxm, Side::West) => sxm[0] = sxm[0].or(Some(pos)),
                (SliceKind::Sxm, Side::East) => sxm[1] = sxm[1].or(Some(pos)),
                (SliceKind::Sxm, Side::Center) => {
                    sxm[0] = sxm[0].or(Some(pos));
                    sxm[1] = sxm[1].or(Some(pos));
                }
                (SliceKind::Mem | SliceKind::Mxm, Side::Center) => {
                    return Err(err("MEM/MXM slices in the centre are not modelled".into()))
                }
            }
        }
        for v in [&mut west_mem, &mut east_mem, &mut west_mxm, &mut east_mxm] {
            v.sort();
        }
        let vxm_pos = vxm.ok_or_else(|| err("the layout has no VXM".into()))?;
        let sxm_pos = match sxm {
            [Some(w), Some(e)] => [w, e],
            _ => return Err(err("the code generator needs an SXM on each side".into())),
        };
        if west_mem.len() != east_mem.len() || west_mem.is_empty() {
            return Err(err("MEM slices must be mirrored and present".into()));
        }
        if west_mxm.is_empty() || west_mxm.len() != east_mxm.len() {
            return Err(err("MXM planes must be mirrored and present".into()));
        }
        let mxm_queues = m.queues.mxm.get();
        let planes = (west_mxm.len() + east_mxm.len()) as u64;
        if mxm_queues < 2 * planes {
            return Err(err(format!(
                "each MXM plane needs an install and a compute queue: {planes} planes, {mxm_queues} MXM queues"
            )));
        }
        if m.queues.sxm.get() < 2 {
            return Err(err(
                "the code generator needs SXM queues on both sides".into()
            ));
        }
        let mut mem_pos = Vec::new();
        let mut mem_east = Vec::new();
        for (_, p) in &west_mem {
            mem_pos.push(*p);
            mem_east.push(false);
        }
        for (_, p) in &east_mem {
            mem_pos.push(*p);
            mem_east.push(true);
        }
        let mut plane_pos = Vec::new();
        let mut plane_east = Vec::new();
        for (_, p) in &west_mxm {
            plane_pos.push(*p);
            plane_east.push(false);
        }
        for (_, p) in &east_mxm {
            plane_pos.push(*p);
            plane_east.push(true);
        }
        Ok(Floorplan {
            mem_pos,
            mem_east,
            plane_pos,
            plane_east,
            vxm_pos,
            sxm_pos,
            center: vxm_pos,
            mem_per_side: west_mem.len() as u16,
            sxm_queues: m.queues.sxm.get(),
            vxm_queues: m.queues.vxm.get(),
            vxm_alus: m.vxm.alus_per_lane.get(),
            streams_per_direction: m.chip.streams_per_direction.get(),
            links: m.c2c.links.get(),
            d_func: m.free.d_func_cycles.get(),
            skew: m.skew_cycles(),
            hop: m.chip.stream_hop_cycles.get(),
        })
    }

    pub fn planes(&self) -> usize {
        self.plane_pos.len()
    }

    pub fn mem_slices(&self) -> usize {
        self.mem_pos.len()
    }

    pub fn mem_label(&self, s: u16) -> String {
        if s < self.mem_per_side {
            format!("MEM W{s}")
        } else {
            format!("MEM E{}", s - self.mem_per_side)
        }
    }

    /// δ between two positions.
    pub fn delta(&self, a: u32, b: u32) -> Cycles {
        u64::from(a.abs_diff(b)) * self.hop
    }

    /// Position of the unit a queue feeds.
    pub fn queue_pos(&self, q: Queue) -> u32 {
        match q {
            Queue::Mem(s) => self.mem_pos[s as usize],
            Queue::MxmInstall(p) | Queue::MxmCompute(p) => self.plane_pos[p as usize],
            Queue::Vxm(_) => self.vxm_pos,
            Queue::Sxm(q) => {
                if u64::from(q) < self.sxm_queues / 2 {
                    self.sxm_pos[0]
                } else {
                    self.sxm_pos[1]
                }
            }
            // C2C ports sit at the chip edge next to the SXM (the chip is its own switch).
            Queue::LinkTx(l) | Queue::LinkRx(l) => {
                if u64::from(l) < self.links / 2 {
                    self.sxm_pos[0]
                } else {
                    self.sxm_pos[1]
                }
            }
        }
    }

    /// SXM queues of the side nearest to `pos`.
    pub fn sxm_queue_range(&self, east: bool) -> std::ops::Range<u8> {
        let half = (self.sxm_queues / 2) as u8;
        if east {
            half..self.sxm_queues as u8
        } else {
            0..half
        }
    }
}

/// A rectangle of a logical tensor: rows `row0, row0+step, …` (`rows` of them; step 0
/// repeats one row) and columns `col0..col0+cols`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Region {
    pub tensor: u32,
    pub row0: u32,
    pub rows: u32,
    pub step: u32,
    pub col0: u32,
    pub cols: u32,
}

impl Region {
    pub fn rows(tensor: u32, row0: u32, rows: u32, col0: u32, cols: u32) -> Region {
        Region {
            tensor,
            row0,
            rows,
            step: 1,
            col0,
            cols,
        }
    }
}

/// Where in SRAM a memory instruction works: slices (lock step), bank, first vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemAt {
    pub slices: Vec<u16>,
    pub bank: u8,
    pub addr: u32,
    /// Position of the slice the stream comes from or goes to.
    pub partner: u32,
}

/// What indexes a gather.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatherBy {
    /// Token ids of the step's rows.
    Tokens,
    /// Position of each row (sequence position + row within the sequence).
    Positions,
}

/// VXM functions. Each has an ALU-op count per element (for its cost) and a meaning the
/// functional simulator executes; see `functional.rs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum VxmFn {
    /// int4 weight tile → int8 (unpack nibbles, apply block scale, requantize per row).
    Unpack4,
    /// int32 accumulators × activation row scale × weight column scale → fp32; with
    /// `parts > 1`, first sums `parts` partial accumulators.
    Dequant,
    /// Lane-wise partial reduction of each row's vectors (first step of a row reduce).
    Partial(Reduce),
    /// After the lane tree: turn the row's reduced scalar into what the next op needs.
    Finish(Finish),
    /// fp32 row → int8 with the row's scale. `ref_q8` records that the graph's own
    /// meaning rounds these activations to 8-bit blocks of 32 (used by the functional
    /// simulator's exact mode only; the LPU quantizes per row either way).
    Quantize {
        ref_q8: bool,
    },
    /// `x · r · w` (RMS norm apply; `w` optional).
    NormApply {
        has_w: bool,
    },
    /// Rotary embedding at each row's position (cos/sin gathered from a table).
    Rope {
        heads: u32,
        head_dim: u32,
        dims: u32,
        theta: f32,
        neox: bool,
    },
    /// Scores × scale; key `key0 + lane` masked to −∞ past the position of the row
    /// (row `r` of sequence `seq` is new token `r mod rows_per_head`).
    ScaleMask {
        scale: f32,
        key0: u32,
        seq: u32,
        rows_per_head: u32,
    },
    /// `exp(x − rowmax)`.
    ExpSub,
    /// `x · rowscalar`, optionally rounded to fp16.
    MulRow {
        to_f16: bool,
    },
    SwiGlu,
    Add,
    Mul,
    Silu,
    Scale(f32),
    /// Round to fp16 (KV cache, attention operands, collectives).
    ToF16,
    /// Sum of `n` inputs (all-reduce; fp16 payloads, summed in rank order).
    Sum(u32),
    /// Sum of `n` fp32 partial results (a matmul's K ranges split over planes).
    AddN(u32),
    /// int8 rows with a per-row scale → fp32 (embedding rows).
    DequantRows,
    /// Pass-through (a copy through the VXM).
    Copy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reduce {
    Sum,
    SumSq,
    AbsMax,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Finish {
    /// `1 / sqrt(x / n + eps)`.
    RmsRecip { n: u32, eps: f32 },
    /// `x / 127` (an int8 scale from an absmax; 1 if x = 0).
    Int8Scale,
    /// `1 / x`.
    Recip,
    /// `x`.
    Identity,
}

impl VxmFn {
    /// ALU ops per element (per output element; int4 unpack per packed byte).
    pub fn ops(&self, m: &MachineModel) -> u64 {
        match self {
            VxmFn::Unpack4 => {
                m.vxm.int4_unpack_ops_per_packed_byte.get() + 2 * m.vxm.scale_ops_per_element.get()
            }
            VxmFn::Dequant => 2,
            VxmFn::Partial(_) => 2,
            VxmFn::Finish(_) => 2,
            VxmFn::Quantize { .. } => 3,
            VxmFn::NormApply { .. } => 2,
            VxmFn::Rope { .. } => 4,
            VxmFn::ScaleMask { .. } => 3,
            VxmFn::ExpSub => 2,
            VxmFn::MulRow { .. } => 1,
            VxmFn::SwiGlu => 4,
            VxmFn::Add | VxmFn::Mul | VxmFn::Scale(_) | VxmFn::ToF16 | VxmFn::Copy => 1,
            VxmFn::Silu => 3,
            VxmFn::Sum(n) | VxmFn::AddN(n) => u64::from(n.saturating_sub(1).max(1)),
            VxmFn::DequantRows => 1,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            VxmFn::Unpack4 => "unpack4",
            VxmFn::Dequant => "dequant",
            VxmFn::Partial(_) => "partial",
            VxmFn::Finish(_) => "finish",
            VxmFn::Quantize { .. } => "quantize",
            VxmFn::NormApply { .. } => "norm",
            VxmFn::Rope { .. } => "rope",
            VxmFn::ScaleMask { .. } => "scale_mask",
            VxmFn::ExpSub => "exp_sub",
            VxmFn::MulRow { .. } => "mul_row",
            VxmFn::SwiGlu => "swiglu",
            VxmFn::Add => "add",
            VxmFn::Mul => "mul",
            VxmFn::Silu => "silu",
            VxmFn::Scale(_) => "scale",
            VxmFn::ToF16 => "to_f16",
            VxmFn::Sum(_) => "sum",
            VxmFn::AddN(_) => "add_n",
            VxmFn::DequantRows => "dequant_rows",
            VxmFn::Copy => "copy",
        }
    }
}

/// SXM functions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SxmFn {
    /// Cross-lane reduction tree (shift + combine, `⌈log2 lanes⌉` steps through the VXM).
    LaneTree(Reduce),
    /// 16×16-block transpose (K cache column append, small operand transposes).
    Transpose,
    /// Spread each incoming vector's lanes over the lanes of a wider row (rotary
    /// cos/sin of one head to every head of a row).
    Distribute,
    /// `[s × g·d]` rows → `[g·s × d]` rows (one row per head; lane shifts).
    HeadRows { g: u32, d: u32 },
    /// The inverse of `HeadRows`.
    HeadCols { g: u32, d: u32 },
}

/// Which MXM input type a matmul uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MxmType {
    Int8,
    Fp16,
}

/// An instruction's operation and operands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Read `region` (stored at `at`) onto a stream. With `peer_block: Some(o)` the
    /// columns read are the block of the chip `o` ranks ahead (same slices, address
    /// offset by rank).
    MemRead {
        at: MemAt,
        data: Region,
        peer_block: Option<u8>,
    },
    /// Read the rows of `data.tensor` named by this step's indices (token ids for an
    /// embedding, positions for a rotary table; the index vector is host-written and
    /// read by the gather itself): `data.rows` rows, `data.row0` ignored.
    MemGather {
        at: MemAt,
        data: Region,
        by: GatherBy,
    },
    /// Write the incoming stream to `region` at `at`. With `peer_block: Some(o)`, the
    /// column block written is that of the chip `o` ranks back (collectives: the same
    /// program on every chip, the address offset by rank).
    MemWrite {
        at: MemAt,
        data: Region,
        peer_block: Option<u8>,
    },
    /// Write the incoming rows at the current position of sequence `seq` (KV append):
    /// `data.row0` is relative to that position.
    MemScatter {
        at: MemAt,
        data: Region,
        seq: u32,
    },
    /// Install the incoming weight stream into `buf` of `plane`. The stream carries a
    /// logical `W[n × k]` (y = x·Wᵀ), or `Wᵀ` when `transpose` (a V cache tile).
    Install {
        plane: u8,
        buf: u8,
        ty: MxmType,
        transpose: bool,
    },
    /// Stream activation rows through the weights in `buf`, accumulating; `first` clears
    /// the accumulators, `last` emits them on a stream.
    MatMul {
        plane: u8,
        buf: u8,
        ty: MxmType,
        first: bool,
        last: bool,
        /// The install (program index) whose weights this matmul uses.
        install: u32,
    },
    Vxm {
        f: VxmFn,
        alus: u8,
    },
    Sxm {
        f: SxmFn,
    },
    /// Send the incoming stream to the chip `peer` ranks away (mod the group).
    Send {
        link: u8,
        peer: u8,
    },
    /// Receive what the chip `peer` ranks back sent on its matching `Send`.
    Recv {
        link: u8,
        peer: u8,
        send: u32,
    },
}

impl Op {
    pub fn mnemonic(&self) -> String {
        match self {
            Op::MemRead { .. } => "read".into(),
            Op::MemGather { .. } => "gather".into(),
            Op::MemWrite { .. } => "write".into(),
            Op::MemScatter { .. } => "scatter".into(),
            Op::Install { .. } => "install".into(),
            Op::MatMul { first, last, .. } => match (first, last) {
                (true, true) => "mm".into(),
                (true, false) => "mm.first".into(),
                (false, true) => "mm.last".into(),
                (false, false) => "mm.acc".into(),
            },
            Op::Vxm { f, .. } => f.name().into(),
            Op::Sxm { f } => match f {
                SxmFn::LaneTree(_) => "lane_tree".into(),
                SxmFn::Transpose => "transpose".into(),
                SxmFn::Distribute => "distribute".into(),
                SxmFn::HeadRows { .. } => "head_rows".into(),
                SxmFn::HeadCols { .. } => "head_cols".into(),
            },
            Op::Send { .. } => "send".into(),
            Op::Recv { .. } => "recv".into(),
        }
    }
}

/// A stream operand: produced by instruction `from` (index in the program), carried on
/// the streams `streams` (one per byte plane / per slice of a multi-slice memory
/// instruction, in slice order), flowing `dir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Src {
    pub from: u32,
    pub dir: Dir,
    pub streams: Vec<u8>,
}

/// One scheduled instruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instr {
    pub queue: Queue,
    pub issue: Cycles,
    /// Cycles the queue (and the unit's ports/ALUs) is busy.
    pub occ: Cycles,
    /// Issue → last result available.
    pub lat: Cycles,
    pub op: Op,
    pub srcs: Vec<Src>,
    /// Width in streams of what this instruction emits (0: nothing).
    pub out_width: u8,
}

/// A resource an instruction holds over `[start, end)` cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Exclusive use of a queue. A MEM queue is held for the issue cycle only (the
    /// ports below carry the streaming); an MXM install queue for the whole install
    /// (cost.rs: back-to-back fills are not overlapped); others while they stream.
    Queue(Queue),
    MemRead(u16),
    MemWrite(u16),
    /// A bank of a slice being accessed (a read and a write in one cycle must differ).
    Bank(u16, u8),
    /// One weight buffer of a plane, from its install until its matmul has streamed
    /// (claimed per install/matmul pair by the scheduler and the checker).
    MxmBuf(u8, u8),
    /// The transmit side of a C2C link.
    Link(u8),
}

impl Op {
    /// The memory location of a MEM instruction.
    pub fn mem_at(&self) -> Option<&MemAt> {
        match self {
            Op::MemRead { at, .. }
            | Op::MemGather { at, .. }
            | Op::MemWrite { at, .. }
            | Op::MemScatter { at, .. } => Some(at),
            _ => None,
        }
    }

    pub fn is_mem_read(&self) -> bool {
        matches!(self, Op::MemRead { .. } | Op::MemGather { .. })
    }

    pub fn is_mem_write(&self) -> bool {
        matches!(self, Op::MemWrite { .. } | Op::MemScatter { .. })
    }
}

impl Instr {
    /// `(slice, issue cycle on that slice)` for memory instructions: reads issue the
    /// farthest slice at `issue` and nearer ones later so that all data meets at the
    /// partner; writes issue the nearest slice at `issue` and farther ones as data
    /// arrives.
    pub fn slice_issues(&self, fp: &Floorplan) -> Vec<(u16, Cycles)> {
        let Some(at) = self.op.mem_at() else {
            return Vec::new();
        };
        let d: Vec<Cycles> = at
            .slices
            .iter()
            .map(|s| fp.delta(fp.mem_pos[*s as usize], at.partner))
            .collect();
        if self.op.is_mem_read() {
            let far = d.iter().copied().max().unwrap_or(0);
            at.slices
                .iter()
                .zip(&d)
                .map(|(s, d)| (*s, self.issue + (far - d)))
                .collect()
        } else {
            let near = d.iter().copied().min().unwrap_or(0);
            at.slices
                .iter()
                .zip(&d)
                .map(|(s, d)| (*s, self.issue + (d - near)))
                .collect()
        }
    }

    /// Position where this instruction's output is available: for reads the partner
    /// (where every slice's data meets), else the unit's own position.
    pub fn out_pos(&self, fp: &Floorplan) -> u32 {
        match &self.op {
            Op::MemRead { at, .. } | Op::MemGather { at, .. } => at.partner,
            _ => fp.queue_pos(self.queue),
        }
    }

    /// Cycles from issue until the first output vector is at [`Self::out_pos`]:
    /// `d_func` (reads: plus the farthest slice's distance; installs: none).
    pub fn out_delay(&self, fp: &Floorplan) -> Cycles {
        out_delay_of(fp, &self.op)
    }

    /// Position where this instruction takes its stream input (writes: the slice
    /// nearest the partner, which issues first).
    pub fn in_pos(&self, fp: &Floorplan) -> u32 {
        in_pos_of(fp, &self.op, fp.queue_pos(self.queue))
    }

    /// Exclusive resources held, as `(resource, start, end)` (MXM buffers excepted:
    /// they span an install and its matmul, see [`Resource::MxmBuf`]).
    pub fn resources(&self, fp: &Floorplan) -> Vec<(Resource, Cycles, Cycles)> {
        let mut r = Vec::new();
        match &self.op {
            Op::MemRead { at, .. } | Op::MemGather { at, .. } => {
                for (s, t) in self.slice_issues(fp) {
                    r.push((Resource::Queue(Queue::Mem(s)), t, t + 1));
                    r.push((Resource::MemRead(s), t, t + self.occ));
                    r.push((Resource::Bank(s, at.bank), t, t + self.occ));
                }
            }
            Op::MemWrite { at, .. } | Op::MemScatter { at, .. } => {
                for (s, t) in self.slice_issues(fp) {
                    r.push((Resource::Queue(Queue::Mem(s)), t, t + 1));
                    r.push((Resource::MemWrite(s), t, t + self.occ));
                    r.push((Resource::Bank(s, at.bank), t, t + self.occ));
                }
            }
            Op::Install { .. } => r.push((
                Resource::Queue(self.queue),
                self.issue,
                self.issue + self.lat.max(self.occ),
            )),
            Op::Send { link, .. } => {
                r.push((
                    Resource::Queue(self.queue),
                    self.issue,
                    self.issue + self.occ,
                ));
                r.push((Resource::Link(*link), self.issue, self.issue + self.occ));
            }
            _ => r.push((
                Resource::Queue(self.queue),
                self.issue,
                self.issue + self.occ,
            )),
        }
        r
    }

    /// VXM ALUs per lane held over `[issue, issue + occ)`.
    pub fn alus(&self) -> u64 {
        match &self.op {
            Op::Vxm { alus, .. } => u64::from(*alus),
            // The combine half of each tree step runs on the VXM: one ALU.
            Op::Sxm {
                f: SxmFn::LaneTree(_),
            } => 1,
            _ => 0,
        }
    }

    /// Cycle of the last result: `issue + lat`.
    pub fn done(&self) -> Cycles {
        self.issue + self.lat
    }
}

/// See [`Instr::out_delay`].
pub fn out_delay_of(fp: &Floorplan, op: &Op) -> Cycles {
    match op {
        Op::MemRead { at, .. } | Op::MemGather { at, .. } => {
            fp.d_func
                + at.slices
                    .iter()
                    .map(|s| fp.delta(fp.mem_pos[*s as usize], at.partner))
                    .max()
                    .unwrap_or(0)
        }
        Op::Install { .. } => 0,
        _ => fp.d_func,
    }
}

/// See [`Instr::in_pos`]; `own` is the position of the instruction's queue.
pub fn in_pos_of(fp: &Floorplan, op: &Op, own: u32) -> u32 {
    match op {
        Op::MemWrite { at, .. } | Op::MemScatter { at, .. } => at
            .slices
            .iter()
            .map(|s| fp.mem_pos[*s as usize])
            .min_by_key(|p| p.abs_diff(at.partner))
            .unwrap_or(at.partner),
        _ => own,
    }
}

/// A stream band: stream `idx` flowing `dir` is busy at every position in `[lo, hi]`
/// during `[u0, u1)` of "wave time" — `t − pos` for eastward streams, `t + pos` for
/// westward ones. A value moving one position per cycle keeps its wave time, so two
/// transfers on one stream collide iff their position ranges and wave-time ranges
/// overlap. (Every superlane sees the same band shifted by its skew, so checking one
/// superlane checks all.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Band {
    pub dir: Dir,
    pub idx: u8,
    pub lo: u32,
    pub hi: u32,
    pub u0: i64,
    pub u1: i64,
}

impl Band {
    pub fn collides(&self, o: &Band) -> bool {
        self.dir == o.dir
            && self.idx == o.idx
            && self.lo <= o.hi
            && o.lo <= self.hi
            && self.u0 < o.u1
            && o.u0 < self.u1
    }
}

/// The bands of one stream operand: stream `j` runs from the producer's output (for a
/// multi-slice read: its `j`-th slice, leaving when that slice issues) to the
/// consumer's input (for a multi-slice write: its `j`-th slice), for as long as the
/// slower side streams.
pub fn src_bands(fp: &Floorplan, prod: &Instr, cons: &Instr, s: &Src) -> Vec<Band> {
    let prod_slices = if prod.op.is_mem_read() {
        prod.slice_issues(fp)
    } else {
        Vec::new()
    };
    let cons_slices: Vec<u16> = if cons.op.is_mem_write() {
        cons.op
            .mem_at()
            .map(|a| a.slices.clone())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let len = prod.occ.max(cons.occ) as i64;
    s.streams
        .iter()
        .enumerate()
        .map(|(j, idx)| {
            let (from, leave) = match prod_slices.get(j) {
                Some((slice, t)) => (fp.mem_pos[*slice as usize], t + fp.d_func),
                None => (prod.out_pos(fp), prod.issue + prod.out_delay(fp)),
            };
            let to = match cons_slices.get(j) {
                Some(slice) => fp.mem_pos[*slice as usize],
                None => cons.in_pos(fp),
            };
            let leave = leave as i64;
            let u0 = match s.dir {
                Dir::East => leave - i64::from(from),
                Dir::West => leave + i64::from(from),
            };
            Band {
                dir: s.dir,
                idx: *idx,
                lo: from.min(to),
                hi: from.max(to),
                u0,
                u1: u0 + len,
            }
        })
        .collect()
}

/// The direction data must flow from position `a` to `b` (equal positions: east).
pub fn dir_between(a: u32, b: u32) -> Dir {
    if b < a {
        Dir::West
    } else {
        Dir::East
    }
}

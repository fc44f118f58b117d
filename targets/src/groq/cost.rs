//! Chip-level cost primitives: pure functions of a [`MachineModel`].
//!
//! Every on-chip primitive follows the timing law of ISCA'20 Eq. 4, extended from one
//! vector to a stream of `v` vectors issued one per cycle:
//!
//! ```text
//!     T = (v − 1) + N + d_func + δ(j, i)
//! ```
//!
//! * `v − 1`: the issue cycles after the first vector (the unit takes one per cycle);
//! * `N`: the superlane skew — an instruction reaches superlane *k* at cycle *k*, so the
//!   last vector is complete only `N` = 20 cycles after it entered superlane 0;
//! * `d_func`: the unit's own latency (free parameter, see `groq` module docs);
//! * `δ(j, i)`: stream distance between the producing and consuming slices. The
//!   primitives here exclude it because it depends on placement; add
//!   [`stream_distance`] once the scheduler has chosen slices.
//!
//! Each primitive returns a [`Cost`] with two numbers, because a static scheduler needs
//! both: how long the resource is busy (`occupancy`: when the next op may issue on it)
//! and when the result is ready (`latency`). Primitives that take resource counts check
//! them against the model and return [`CostError`] rather than inventing hardware.

use super::model::{MachineModel, SliceId};

/// Chip clock cycles.
pub type Cycles = u64;

/// What an operation costs on its resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Cycles the resource is busy; the next op on it may issue this many cycles later.
    pub occupancy: Cycles,
    /// Cycles from issue until the last result is available (δ excluded).
    pub latency: Cycles,
}

impl Cost {
    pub const ZERO: Cost = Cost {
        occupancy: 0,
        latency: 0,
    };
}

/// A request the modelled hardware cannot serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("{what} must be in {min}..={max}, got {got}")]
    OutOfRange {
        what: &'static str,
        got: u64,
        min: u64,
        max: u64,
    },
    #[error("a {rows}×{cols} weight tile does not fit a {max_rows}×{max_cols} MXM plane")]
    TileTooLarge {
        rows: u64,
        cols: u64,
        max_rows: u64,
        max_cols: u64,
    },
    #[error("slice {0:?} is not on this chip")]
    NoSuchSlice(SliceId),
}

fn in_range(what: &'static str, got: u64, min: u64, max: u64) -> Result<u64, CostError> {
    if (min..=max).contains(&got) {
        Ok(got)
    } else {
        Err(CostError::OutOfRange {
            what,
            got,
            min,
            max,
        })
    }
}

/// The input types the MXM accepts. There is no int4: see [`int4_unpack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MxmDtype {
    Int8,
    Fp16,
}

impl MxmDtype {
    pub fn bytes(self) -> u64 {
        match self {
            MxmDtype::Int8 => 1,
            MxmDtype::Fp16 => 2,
        }
    }
}

/// Eq. 4 for a unit that takes `issue` cycles to accept its vectors.
fn streamed(m: &MachineModel, issue: Cycles, d_func: Cycles) -> Cost {
    if issue == 0 {
        return Cost::ZERO;
    }
    Cost {
        occupancy: issue,
        latency: issue - 1 + m.skew_cycles() + d_func,
    }
}

fn d_func(m: &MachineModel) -> Cycles {
    m.free.d_func_cycles.get()
}

// ---- MXM ----------------------------------------------------------------------------

/// Install a `rows × cols` weight tile into one MXM plane.
///
/// Law: the tile is `rows × ⌈cols·bytes / 320⌉` stream vectors; a plane accepts
/// `r = free.install_rows_per_cycle_per_plane` of them per cycle, so
/// `latency = ⌈vectors / r⌉ − 1 + N` with no `d_func`: the published "all 409,600
/// weights installed in < 40 cycles" leaves none (20 issue cycles − 1 + 20 skew = 39).
/// All planes install at once (each on its own `r` streams), so this is also the time
/// to fill the whole chip.
///
/// `occupancy = latency` — deliberately conservative: whether back-to-back installs
/// into one plane may overlap their superlane fill is not published. Counting the fill
/// per install gives 409,600 B / 39 cycles ≈ 10,503 B/cycle sustained, MACHINE.md's
/// "≈ 10,240 B/cycle (≈ 9.2 TB/s)"; overlapping fills would double it (20,480 B/cycle,
/// [`Peaks::install_stream_bytes_per_cycle`]). Double buffering overlaps installs with
/// *compute*, which [`mxm_matmul`] models.
///
/// fp16 weights take twice the stream vectors (two bytes each) for the same tile.
pub fn weight_install(
    m: &MachineModel,
    rows: u64,
    cols: u64,
    dtype: MxmDtype,
) -> Result<Cost, CostError> {
    let (max_rows, max_cols) = (m.mxm.plane_rows.get(), m.mxm.plane_cols.get());
    if rows > max_rows || cols > max_cols {
        return Err(CostError::TileTooLarge {
            rows,
            cols,
            max_rows,
            max_cols,
        });
    }
    let vectors = rows * (cols * dtype.bytes()).div_ceil(m.chip.vector_bytes.get());
    let issue = vectors.div_ceil(m.free.install_rows_per_cycle_per_plane.get());
    let c = streamed(m, issue, 0);
    Ok(Cost {
        occupancy: c.latency,
        latency: c.latency,
    })
}

/// Stream `vectors` activation vectors through one plane whose weights are installed
/// (weight-stationary): one vector per cycle for int8 ([U]), `fp16_rate_divisor` (4)
/// cycles per vector for fp16 — the published ¼ rate; how the hardware achieves it is
/// not published, only the ratio is modelled.
pub fn mxm_stream(m: &MachineModel, vectors: u64, dtype: MxmDtype) -> Cost {
    let per_vector = match dtype {
        MxmDtype::Int8 => 1,
        MxmDtype::Fp16 => m.mxm.fp16_rate_divisor.get(),
    };
    let issue = (vectors * per_vector).div_ceil(m.mxm.activation_vectors_per_cycle.get());
    streamed(m, issue, d_func(m))
}

/// `[M×K]·[K×N]` as MXM work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub m: u64,
    pub k: u64,
    pub n: u64,
}

/// The cost of a matmul on the MXM and how it was laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulCost {
    pub cost: Cost,
    /// 320-wide tiles along K (accumulated inside the MXM) and along N.
    pub k_tiles: u64,
    pub n_tiles: u64,
    /// Planes that received work, and the weight tiles each of them installs.
    pub planes_used: u64,
    pub tiles_per_plane: u64,
}

/// `[M×K]·[K×N]` on up to `planes` MXM planes, weight-stationary, K accumulated in the
/// MXM's int32/fp32 accumulators.
///
/// Layout rule: each N tile stays on one plane for all its K tiles, so partial sums
/// never leave the MXM (splitting K across planes would cost a VXM add per output; the
/// scheduler may still do that for very narrow N). Planes work in parallel; each plane
/// runs `tiles_per_plane` install→compute steps. With double buffering the install of
/// tile t+1 overlaps the compute of tile t, so the step period is
/// `max(install occupancy, compute occupancy)`:
///
/// ```text
///     T = install.latency + (tiles − 1)·period + compute.latency
/// ```
///
/// With a single weight buffer the next install waits for the compute to drain, so the
/// period becomes `install.occupancy + compute.latency`. Every tile is costed as a full
/// `min(K,320) × min(N,320)` tile, a slight overestimate on ragged edges. Feeding the
/// weights from MEM is a separate resource ([`mem_read`]) the scheduler must also book.
pub fn mxm_matmul(
    m: &MachineModel,
    shape: MatmulShape,
    dtype: MxmDtype,
    planes: u64,
) -> Result<MatmulCost, CostError> {
    let planes = in_range("MXM planes", planes, 1, m.mxm_planes())?;
    let (rows, cols) = (m.mxm.plane_rows.get(), m.mxm.plane_cols.get());
    let k_tiles = shape.k.div_ceil(rows);
    let n_tiles = shape.n.div_ceil(cols);
    if shape.m == 0 || k_tiles == 0 || n_tiles == 0 {
        return Ok(MatmulCost {
            cost: Cost::ZERO,
            k_tiles,
            n_tiles,
            planes_used: 0,
            tiles_per_plane: 0,
        });
    }
    let planes_used = planes.min(n_tiles);
    let tiles_per_plane = n_tiles.div_ceil(planes_used) * k_tiles;
    let install = weight_install(m, shape.k.min(rows), shape.n.min(cols), dtype)?;
    let compute = mxm_stream(m, shape.m, dtype);
    let period = if m.mxm.weight_buffers.get() >= 2 {
        install.occupancy.max(compute.occupancy)
    } else {
        install.occupancy + compute.latency
    };
    let total = install.latency + (tiles_per_plane - 1) * period + compute.latency;
    Ok(MatmulCost {
        cost: Cost {
            occupancy: total,
            latency: total,
        },
        k_tiles,
        n_tiles,
        planes_used,
        tiles_per_plane,
    })
}

// ---- VXM ----------------------------------------------------------------------------

/// An elementwise VXM op over `elements` values needing `ops_per_element` ALU ops each,
/// spread over all ALUs of every lane.
///
/// Elements map one per lane per vector (an fp32 value uses four byte-streams of the
/// same lane), so `vectors = ⌈elements / 320⌉` whatever the width; each lane's ALUs
/// are fully pipelined, so `issue = ⌈vectors · ops / alus_per_lane⌉`.
pub fn vxm_elementwise(m: &MachineModel, elements: u64, ops_per_element: u64) -> Cost {
    let alus = m.vxm.alus_per_lane.get();
    // Cannot fail: `alus` is the model's own maximum and validated ≥ 1.
    vxm_elementwise_on(m, elements, ops_per_element, alus).unwrap_or(Cost::ZERO)
}

/// [`vxm_elementwise`] restricted to `alus` ALUs per lane (1..=16 on v1), for when the
/// scheduler shares the VXM between ops.
pub fn vxm_elementwise_on(
    m: &MachineModel,
    elements: u64,
    ops_per_element: u64,
    alus: u64,
) -> Result<Cost, CostError> {
    let alus = in_range("VXM ALUs per lane", alus, 1, m.vxm.alus_per_lane.get())?;
    let vectors = elements.div_ceil(m.lanes());
    let issue = (vectors * ops_per_element).div_ceil(alus);
    Ok(streamed(m, issue, d_func(m)))
}

/// Unpack `packed_bytes` of int4 weights (two per byte) to int8 on the VXM, optionally
/// applying a group scale: `int4_unpack_ops_per_packed_byte` (≈ 3, [D/U]) ALU ops per
/// packed byte, plus `scale_ops_per_element` per unpacked value (2 per byte) if scaled.
/// The MXM takes no int4, so this is the price of keeping weights packed in SRAM.
pub fn int4_unpack(m: &MachineModel, packed_bytes: u64, scale: bool) -> Cost {
    let mut ops = m.vxm.int4_unpack_ops_per_packed_byte.get();
    if scale {
        ops += 2 * m.vxm.scale_ops_per_element.get();
    }
    // One packed byte per lane per vector: the same law as any elementwise op.
    vxm_elementwise(m, packed_bytes, ops)
}

// ---- SXM ----------------------------------------------------------------------------

/// Lane shift, permute, distribute or rotate of `vectors` vectors: a streaming op at
/// `sxm.vectors_per_cycle` (assumed 1).
pub fn sxm_shift(m: &MachineModel, vectors: u64) -> Cost {
    let issue = vectors.div_ceil(m.sxm.vectors_per_cycle.get());
    streamed(m, issue, d_func(m))
}

/// Transpose a `rows × cols` byte matrix held as `rows` vectors (each `cols` ≤ 320
/// bytes, longer rows span several vectors) with the SXM's 16×16 transposer.
///
/// Rows are padded to whole 16-row blocks, and a block's first output needs all 16 of
/// its inputs, so the latency carries `block − 1` extra cycles (assumption: the
/// transposer's internals are not published beyond "16×16 transpose").
pub fn sxm_transpose(m: &MachineModel, rows: u64, cols: u64) -> Cost {
    let block = m.sxm.transpose_block.get();
    let vectors = rows.next_multiple_of(block) * cols.div_ceil(m.chip.vector_bytes.get());
    let c = sxm_shift(m, vectors);
    if c == Cost::ZERO {
        return c;
    }
    Cost {
        occupancy: c.occupancy,
        latency: c.latency + block - 1,
    }
}

// ---- MEM and streams ----------------------------------------------------------------

/// Read `bytes` spread over `slices` MEM slices: each slice reads one 320-byte vector per
/// cycle (its second bank port is the write port), so
/// `issue = ⌈bytes / (slices · 320)⌉`. Stream and bank conflicts between concurrent
/// ops are the scheduler's to check.
pub fn mem_read(m: &MachineModel, bytes: u64, slices: u64) -> Result<Cost, CostError> {
    mem_access(m, bytes, slices, m.sram.reads_per_slice_per_cycle.get())
}

/// Write `bytes` spread over `slices` MEM slices (one vector per slice per cycle, on the
/// bank the same cycle's read does not use).
pub fn mem_write(m: &MachineModel, bytes: u64, slices: u64) -> Result<Cost, CostError> {
    mem_access(m, bytes, slices, m.sram.writes_per_slice_per_cycle.get())
}

fn mem_access(
    m: &MachineModel,
    bytes: u64,
    slices: u64,
    per_slice: u64,
) -> Result<Cost, CostError> {
    let slices = in_range("MEM slices", slices, 1, m.sram_slices())?;
    let per_cycle = slices * per_slice * m.sram.bank_access_bytes.get();
    Ok(streamed(m, bytes.div_ceil(per_cycle), d_func(m)))
}

/// δ(j, i) of Eq. 4: cycles for a stream value to travel between two slices.
pub fn stream_distance(m: &MachineModel, from: SliceId, to: SliceId) -> Result<Cycles, CostError> {
    let a = m.slice_position(from).ok_or(CostError::NoSuchSlice(from))?;
    let b = m.slice_position(to).ok_or(CostError::NoSuchSlice(to))?;
    Ok(a.abs_diff(b) * m.chip.stream_hop_cycles.get())
}

// ---- chip to chip -------------------------------------------------------------------

/// Latency of one C2C hop (216 cycles ≈ 240 ns on v1).
pub fn hop_cycles(m: &MachineModel) -> Cycles {
    m.c2c.hop_latency_cycles.get()
}

/// Send `bytes` over `links` parallel links along a path of `hops` hops.
///
/// `occupancy = ⌈bytes / (links · link_bytes_per_cycle)⌉` (14.625 GB/s per link per
/// direction on v1: 4 lanes × 30 Gb/s less the scheduled network's 2.5 %), and
/// `latency = hops · hop + occupancy`: forwarding chips cut through ([D]: the network
/// is compiler-scheduled with no buffering or back-pressure, so a relaying chip
/// forwards as data arrives), hence serialization is paid once.
pub fn c2c_transfer(
    m: &MachineModel,
    bytes: u64,
    links: u64,
    hops: u64,
) -> Result<Cost, CostError> {
    let links = in_range("C2C links", links, 1, m.c2c.links.get())?;
    let hops = in_range("C2C hops", hops, 1, m.system.max_hops.get())?;
    let per_cycle = links as f64 * m.link_bytes_per_cycle();
    let occupancy = (bytes as f64 / per_cycle).ceil() as Cycles;
    Ok(Cost {
        occupancy,
        latency: hops * hop_cycles(m) + occupancy,
    })
}

/// Hand a pipeline stage's output (`bytes`) to the next stage `hops` hops away, over the
/// single direct link between the two chips (in a fully connected node there is exactly
/// one per pair; spreading over two-hop detours would add a hop to save bandwidth,
/// which the latency-bound decode case never wants).
pub fn stage_handoff(m: &MachineModel, bytes: u64, hops: u64) -> Result<Cost, CostError> {
    c2c_transfer(m, bytes, 1, hops)
}

/// All-reduce strategies inside one fully connected node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllReduceAlgo {
    /// Reduce-scatter then all-gather around a ring: 2(k−1) steps of n/k bytes on one link.
    Ring,
    /// Direct reduce-scatter then direct all-gather: each chip sends its k−1 shards of n/k
    /// bytes to their owners at once (one link per peer), reduces, and sends back.
    TwoPhase,
    /// Every chip sends all n bytes to every peer at once and reduces locally: one hop,
    /// k−1 times the bytes per link.
    OneShot,
}

/// The chosen all-reduce and what each candidate would have cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllReduce {
    pub algo: AllReduceAlgo,
    pub cost: Cost,
    pub candidates: Vec<(AllReduceAlgo, Cost)>,
}

/// All-reduce `bytes` (of `elem_bytes`-wide values) across `chips` chips of one fully
/// connected node, choosing the cheapest algorithm by latency (ties: fewer link bytes).
///
/// In a fully connected node a ring never wins — TwoPhase moves the same bytes per link
/// in 2 hops instead of 2(k−1) — but it is costed so the report can show why. OneShot
/// wins for small messages (one hop instead of two: decode's activations), TwoPhase for
/// large ones (n/k per link instead of n). Each reduce step is a VXM add of the incoming
/// shards.
pub fn allreduce(
    m: &MachineModel,
    bytes: u64,
    chips: u64,
    elem_bytes: u64,
) -> Result<AllReduce, CostError> {
    let k = in_range("all-reduce chips", chips, 1, m.system.node_chips.get())?;
    let elem_bytes = in_range("element bytes", elem_bytes, 1, 8)?;
    if k == 1 || bytes == 0 {
        return Ok(AllReduce {
            algo: AllReduceAlgo::OneShot,
            cost: Cost::ZERO,
            candidates: Vec::new(),
        });
    }
    let shard = bytes.div_ceil(k);
    let elems = |b: u64| b.div_ceil(elem_bytes);

    let ring = {
        let step = c2c_transfer(m, shard, 1, 1)?;
        let add = vxm_elementwise(m, elems(shard), 1);
        let t = 2 * (k - 1) * step.latency + (k - 1) * add.latency;
        Cost {
            occupancy: t,
            latency: t,
        }
    };
    let two_phase = {
        let step = c2c_transfer(m, shard, 1, 1)?;
        let add = vxm_elementwise(m, elems(shard), k - 1);
        let t = 2 * step.latency + add.latency;
        Cost {
            occupancy: t,
            latency: t,
        }
    };
    let one_shot = {
        let step = c2c_transfer(m, bytes, 1, 1)?;
        let add = vxm_elementwise(m, elems(bytes), k - 1);
        let t = step.latency + add.latency;
        Cost {
            occupancy: t,
            latency: t,
        }
    };
    let candidates = vec![
        (AllReduceAlgo::TwoPhase, two_phase),
        (AllReduceAlgo::OneShot, one_shot),
        (AllReduceAlgo::Ring, ring),
    ];
    // Listed in order of link bytes, so `min_by_key` (first minimum) breaks ties well.
    let (algo, cost) = candidates
        .iter()
        .copied()
        .min_by_key(|(_, c)| c.latency)
        .unwrap_or((AllReduceAlgo::TwoPhase, two_phase));
    Ok(AllReduce {
        algo,
        cost,
        candidates,
    })
}

// ---- host ---------------------------------------------------------------------------

/// One host↔chip PCIe transfer of `bytes`: `bytes / 24 GB/s + 10 µs` ([P] GroqFlow),
/// in chip cycles.
pub fn host_transfer(m: &MachineModel, bytes: u64) -> Cost {
    let seconds = bytes as f64 / m.host.pcie_bytes_per_s.get() + m.host.pcie_latency_s.get();
    let c = m.cycles_from_seconds(seconds);
    Cost {
        occupancy: c,
        latency: c,
    }
}

// ---- peaks --------------------------------------------------------------------------

/// Chip-level peak rates and capacities, all derived from the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Peaks {
    /// 409,600 MACs × 2 ops × 900 MHz = 737.28 TOPS on v1.
    pub mxm_int8_ops_per_s: f64,
    /// ¼ of int8: 184.32 TFLOPS on v1.
    pub mxm_fp16_flops_per_s: f64,
    pub vxm_alu_ops_per_s: f64,
    pub sram_capacity_bytes: u64,
    pub sram_usable_bytes: u64,
    /// Reads + writes: 56,320 B/cycle on v1.
    pub sram_bytes_per_cycle: u64,
    pub sram_bytes_per_s: f64,
    /// Install rate while streaming, fills overlapped: planes × r × 320 = 20,480 B/cycle.
    pub install_stream_bytes_per_cycle: u64,
    /// Whole-chip install as modelled (fill counted per install): 409,600 / 39 B/cycle.
    pub install_sustained_bytes_per_cycle: f64,
    /// One full-chip int8 install (39 cycles on v1; published < 40).
    pub full_install_cycles: Cycles,
    pub c2c_link_bytes_per_s: f64,
    /// All links, both directions.
    pub c2c_chip_bytes_per_s: f64,
    pub host_bytes_per_s: f64,
}

/// The peaks of `m`.
pub fn peaks(m: &MachineModel) -> Peaks {
    let clock = m.clock_hz();
    let int8 = (m.mxm_macs() * m.mxm.ops_per_mac.get()) as f64 * clock;
    let rows = m.mxm.plane_rows.get();
    let cols = m.mxm.plane_cols.get();
    // A full tile always fits the plane it is sized from, so this cannot fail.
    let full_install = weight_install(m, rows, cols, MxmDtype::Int8)
        .map(|c| c.latency)
        .unwrap_or(0);
    let install_bytes = (m.mxm_macs()) as f64; // one int8 weight per MAC
    Peaks {
        mxm_int8_ops_per_s: int8,
        mxm_fp16_flops_per_s: int8 / m.mxm.fp16_rate_divisor.get() as f64,
        vxm_alu_ops_per_s: m.vxm_alus() as f64 * clock,
        sram_capacity_bytes: m.sram_capacity_bytes(),
        sram_usable_bytes: m.sram_usable_bytes(),
        sram_bytes_per_cycle: m.sram_bandwidth_bytes_per_cycle(),
        sram_bytes_per_s: m.sram_bandwidth_bytes_per_cycle() as f64 * clock,
        install_stream_bytes_per_cycle: m.mxm_planes()
            * m.free.install_rows_per_cycle_per_plane.get()
            * m.chip.vector_bytes.get(),
        install_sustained_bytes_per_cycle: if full_install == 0 {
            0.0
        } else {
            install_bytes / full_install as f64
        },
        full_install_cycles: full_install,
        c2c_link_bytes_per_s: m.link_bytes_per_s(),
        c2c_chip_bytes_per_s: m.link_bytes_per_s() * m.c2c.links.get() as f64 * 2.0,
        host_bytes_per_s: m.host.pcie_bytes_per_s.get(),
    }
}

//! Scheduled programs: what `lpuc compile --target groq` writes and `lpuc sim` reads.
//!
//! A [`BlockProgram`] is the schedule of one block (a decoder layer, the head or the
//! tail) on one chip of a tensor-parallel group. All chips of a group run the same
//! program on their own weight shards (the program is symmetric; collectives name peers
//! by rank offset), and every layer of a model with the same structure runs the same
//! program on its own weights — so an 80-layer model on hundreds of chips has a handful
//! of distinct programs. [`LpuProgram`] adds the partition (which blocks run on which
//! stage, the batch, the weight format per block) and the lowered model the functional
//! simulator binds weights through.

use serde::{Deserialize, Serialize};

use super::cost::Cycles;
use super::isa::{Elem, Floorplan, Instr, MemAt, Region};
use super::model::MachineModel;
use super::mops::{BlockKind, CId, LoweredModel, TId, WId};

/// What a tensor of a block program holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TensorKind {
    /// This chip's shard of a weight matrix `[N, K]` (`rows` × `cols`), rows `n0..` and
    /// columns `k0..` of the full weight (the shard of rank r starts at `r·rows` or
    /// `r·cols` along the split axis, see `split`).
    Weight {
        w: WId,
        split: Split,
    },
    /// Per output row scale of a weight matrix shard (`1 × rows`).
    WeightScale {
        w: WId,
        split: Split,
    },
    /// A `[1, D]` (or shard) f32 vector weight (norm scales).
    Vector {
        w: WId,
        split: Split,
    },
    /// Embedding table shard `[V, D/t]` (int8) and its per-row scales `[V, 1]`.
    Table {
        w: WId,
        split: Split,
    },
    TableScale {
        w: WId,
    },
    /// A cache of sequence `seq`, local KV head `head`, `[C, D]` (fp16).
    Cache {
        c: CId,
        seq: u32,
        head: u32,
        transposed: bool,
    },
    /// cos/sin of each position for rotary embeddings `[C, dims]`.
    RopeTable {
        dims: u32,
        theta: f32,
        neox: bool,
    },
    /// A block input or output activation (model tensor id).
    Io {
        t: TId,
    },
    /// A temporary.
    Temp,
}

/// How a weight is split over the tensor-parallel group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Split {
    /// Every chip holds the whole tensor.
    None,
    /// Rows (output features) split: rank r holds rows `r·n..(r+1)·n`.
    Rows,
    /// Columns (input features) split.
    Cols,
}

/// One stored piece of a tensor: a rectangle and where its vectors live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub region: Region,
    pub at: MemAt,
    /// Vectors per slice (each slice holds this many 320-byte vectors of the piece).
    pub vectors: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorDecl {
    pub name: String,
    pub kind: TensorKind,
    pub elem: Elem,
    pub rows: u32,
    pub cols: u32,
    pub place: Vec<Placement>,
}

impl TensorDecl {
    /// SRAM bytes the tensor's placements reserve.
    pub fn bytes(&self, vector_bytes: u64) -> u64 {
        self.place
            .iter()
            .map(|p| u64::from(p.vectors) * p.at.slices.len() as u64 * vector_bytes)
            .sum()
    }

    /// Whether a weight or cache (held for the whole run) rather than an activation.
    pub fn is_resident(&self) -> bool {
        !matches!(self.kind, TensorKind::Io { .. } | TensorKind::Temp)
    }
}

/// How a block was generated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GenConfig {
    /// Chips in the tensor-parallel group.
    pub tp: u32,
    /// Sequences in the microbatch.
    pub seqs: u32,
    /// New tokens per sequence (1 = decode).
    pub new_tokens: u32,
    /// Keys each attention covers (the context the program is built for).
    pub keys: u32,
    /// Store 4-bit weights as int4 (unpacked on the VXM) instead of int8.
    pub int4: bool,
    pub attn: AttnMap,
}

/// Which attention operand stays in the MXM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttnMap {
    /// Keys and values are the stationary operands (installed tile by tile); queries
    /// stream. K is stored transposed (appended through the SXM).
    KvStationary,
    /// Queries (then probabilities) are stationary; keys and values stream.
    /// V is stored transposed.
    QStationary,
}

impl AttnMap {
    pub fn name(self) -> &'static str {
        match self {
            AttnMap::KvStationary => "kv-stationary",
            AttnMap::QStationary => "q-stationary",
        }
    }
}

/// Work counted while generating, for the lower bound and utilization.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// Install-queue cycles (the full install occupancy of every tile), per plane.
    pub install_cycles: Vec<Cycles>,
    /// MXM streaming cycles, per plane.
    pub mxm_cycles: Vec<Cycles>,
    /// VXM ALU-cycles (ALUs × cycles).
    pub vxm_alu_cycles: Cycles,
    /// C2C bytes sent per chip.
    pub c2c_bytes: u64,
    /// Dependent C2C hops on the critical path (two per all-reduce of two-phase, …).
    pub c2c_hops: u64,
    pub tiles: u64,
}

/// One scheduled block on one chip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockProgram {
    pub kind: BlockKind,
    pub config: GenConfig,
    pub tensors: Vec<TensorDecl>,
    /// In program order (the order the scheduler placed them; queues execute their
    /// instructions in issue order).
    pub instrs: Vec<Instr>,
    /// Last result of the block: `max(issue + lat)`.
    pub makespan: Cycles,
    pub work: Work,
    /// Model weights and caches the program names, in the order the block's ops use
    /// them (instances of the same signature bind theirs in the same order).
    pub weight_slots: Vec<WId>,
    pub cache_slots: Vec<CId>,
    /// Block inputs/outputs: model tensor → local tensor.
    pub inputs: Vec<(TId, u32)>,
    pub outputs: Vec<(TId, u32)>,
    /// Local tensor that receives the logits (tail only).
    pub logits: Option<u32>,
    /// Per macro-op of the block: its name and the first instruction it emitted
    /// (instructions up to the next entry belong to it).
    pub op_starts: Vec<(String, u32)>,
}

impl BlockProgram {
    /// SRAM bytes of resident tensors (weights, caches, tables) and of activations.
    pub fn sram_bytes(&self, vector_bytes: u64) -> (u64, u64) {
        let mut res = 0;
        let mut act = 0;
        for t in &self.tensors {
            if t.is_resident() {
                res += t.bytes(vector_bytes);
            } else {
                act += t.bytes(vector_bytes);
            }
        }
        (res, act)
    }
}

/// Weight storage choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeightMode {
    Int4,
    Int8,
    Auto,
}

impl WeightMode {
    pub fn name(self) -> &'static str {
        match self {
            WeightMode::Int4 => "int4",
            WeightMode::Int8 => "int8",
            WeightMode::Auto => "auto",
        }
    }
}

/// One pipeline stage: a tensor-parallel group running a run of blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Indices into [`LoweredModel::blocks`].
    pub blocks: Vec<usize>,
    /// Per block: index into [`LpuProgram::programs`].
    pub programs: Vec<usize>,
    /// Per block: stored int4 (else int8).
    pub int4: Vec<bool>,
    /// SRAM bytes on each chip of the stage.
    pub sram_bytes: u64,
    pub resident_bytes: u64,
    pub activation_bytes: u64,
}

/// Options the compile was asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompileOptions {
    pub chips: Option<u64>,
    /// Force this tensor-parallel degree (otherwise the partitioner chooses).
    pub tp: Option<u32>,
    pub batch: u64,
    pub context: u64,
    pub weights: WeightMode,
    pub prompt: u64,
}

/// The machine model travels in the artifact as its profile text: the binary encoding
/// cannot carry the profile's optional fields, and reloading re-validates it.
mod machine_as_toml {
    use super::MachineModel;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &MachineModel, s: S) -> Result<S::Ok, S::Error> {
        m.to_toml_string()
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MachineModel, D::Error> {
        let text = String::deserialize(d)?;
        MachineModel::from_toml_str(&text, "the artifact's machine profile")
            .map_err(serde::de::Error::custom)
    }
}

/// The `.lpu` artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LpuProgram {
    #[serde(with = "machine_as_toml")]
    pub machine: MachineModel,
    pub floorplan: Floorplan,
    pub model: LoweredModel,
    /// The source graph (the functional simulator's reference runs it).
    pub graph: lpuc_ir::Graph,
    /// The source graph's weights (`None`: shapes only; `Random`: reproducible).
    pub weight_source: lpuc_ir::graph::WeightSource,
    pub options: CompileOptions,
    pub tp: u32,
    /// Sequences per microbatch and microbatches in flight (`seqs × groups ≥ batch`).
    pub microbatch: u32,
    pub groups: u32,
    pub stages: Vec<Stage>,
    /// Distinct decode block programs.
    pub programs: Vec<BlockProgram>,
    /// Prefill chunk programs, parallel to `programs` (same blocks, `chunk` new tokens).
    pub prefill: Vec<BlockProgram>,
    pub prefill_chunk: u32,
    /// Why the partitioner chose this configuration (one line per decision).
    pub decisions: Vec<String>,
}

impl LpuProgram {
    pub fn chips(&self) -> u64 {
        self.stages.len() as u64 * u64::from(self.tp)
    }
}

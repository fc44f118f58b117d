//! The small target description passes need: cache and vector sizes for tiling, and the
//! bandwidth/compute figures the egg cost model weighs rewrites with.
//!
//! The full target crate (`lpuc-targets`) depends on this crate, not the reverse, so the
//! passes keep their own minimal view of a machine here.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Cpu,
    Groq,
}

impl TargetKind {
    pub const NAMES: &'static [&'static str] = &["cpu", "groq"];

    pub fn parse(s: &str) -> Result<TargetKind, String> {
        match s {
            "cpu" => Ok(TargetKind::Cpu),
            "groq" => Ok(TargetKind::Groq),
            _ => {
                let hint = lpuc_ir::text::did_you_mean(s, Self::NAMES.iter().copied())
                    .map(|h| format!("; did you mean `{h}`?"))
                    .unwrap_or_default();
                Err(format!("unknown target `{s}` (targets: cpu, groq){hint}"))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Cpu => "cpu",
            TargetKind::Groq => "groq",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A CPU as the tiler sees it (per core).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuDesc {
    pub l1_bytes: u64,
    pub l2_bytes: u64,
    pub l3_bytes: u64,
    /// f32 lanes of the widest vector register the kernels use (16 with AVX-512, 8 with
    /// AVX2).
    pub lanes: u64,
    /// Register micro-tile rows (`mr`): for a float `matmul` the BLIS micro-kernel's rows
    /// (columns are `2 · lanes`); for `qmatmul` the tokens one unpacked weight group is
    /// reused for (`m` of its tile).
    pub mr: u64,
    /// Output rows of one packed weight group: the unit of work of every `qmatmul`
    /// kernel tier (16 int32 lanes of one AVX-512 register, two AVX2 registers), and so
    /// the `n` of its tile.
    pub group_rows: u64,
    /// Sustained DRAM bandwidth, bytes/ns (= GB/s).
    pub mem_bytes_per_ns: f64,
    /// Peak f32 FMA throughput, flop/ns (= GFLOP/s).
    pub flops_per_ns: f64,
}

impl Default for CpuDesc {
    /// A fixed reference machine, so filetests do not depend on the host they run on: the
    /// development Xeon (`lscpu`: AVX-512, 48 KiB L1d and 2 MiB L2 per core, a large shared
    /// L3 of which we assume a 32 MiB slice). Commands that compile for the machine they run
    /// on use [`CpuDesc::host`]. `mr = 4`: the qmatmul micro-kernel keeps 4 tokens × 16
    /// rows of int32 sums and the 16-row unpacked weight block in registers (8 + 8 of 32
    /// zmm; measured in `codegen/src/kernels.rs` as `QMM_TILE`). Bandwidth and flops are
    /// round numbers for two cores; only their ratio matters (the egg cost model).
    fn default() -> Self {
        CpuDesc {
            l1_bytes: 48 << 10,
            l2_bytes: 2 << 20,
            l3_bytes: 32 << 20,
            lanes: 16,
            mr: 4,
            group_rows: 16,
            mem_bytes_per_ns: 20.0,
            flops_per_ns: 100.0,
        }
    }
}

impl CpuDesc {
    /// The CPU this process runs on (`lpuc-host`: CPUID features, sysfs cache sizes; the
    /// reference machine's figure where the system does not say).
    pub fn host() -> CpuDesc {
        let d = CpuDesc::default();
        let f = lpuc_host::Features::detect();
        let c = lpuc_host::Caches::detect();
        CpuDesc {
            l1_bytes: c.l1d.unwrap_or(d.l1_bytes),
            l2_bytes: c.l2.unwrap_or(d.l2_bytes),
            l3_bytes: c.l3.map_or(d.l3_bytes, |l3| l3.min(d.l3_bytes)),
            lanes: f.f32_lanes(),
            ..d
        }
    }
}

/// The Groq LPU as the tiler sees it (see `shared/groq/MACHINE.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct GroqDesc {
    /// MXM weight tile: 320 × 320.
    pub mxm: u64,
    /// Vector length of streams and of the VXM: 320 lanes.
    pub lanes: u64,
    /// On-chip SRAM bandwidth, bytes/ns (80 TB/s).
    pub mem_bytes_per_ns: f64,
    /// MXM throughput, flop/ns (188 TFLOP/s fp16).
    pub flops_per_ns: f64,
}

impl Default for GroqDesc {
    fn default() -> Self {
        GroqDesc {
            mxm: 320,
            lanes: 320,
            mem_bytes_per_ns: 80_000.0,
            flops_per_ns: 188_000.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum TileTarget {
    Cpu(CpuDesc),
    Groq(GroqDesc),
}

impl TileTarget {
    pub fn of(kind: TargetKind) -> TileTarget {
        match kind {
            TargetKind::Cpu => TileTarget::Cpu(CpuDesc::default()),
            TargetKind::Groq => TileTarget::Groq(GroqDesc::default()),
        }
    }

    pub fn kind(&self) -> TargetKind {
        match self {
            TileTarget::Cpu(_) => TargetKind::Cpu,
            TileTarget::Groq(_) => TargetKind::Groq,
        }
    }
}

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
    /// f32 lanes of one vector register (8 for AVX2).
    pub lanes: u64,
    /// Register micro-tile rows (`mr`); columns are `2 · lanes` (`nr`).
    pub mr: u64,
    /// Sustained DRAM bandwidth, bytes/ns (= GB/s).
    pub mem_bytes_per_ns: f64,
    /// Peak f32 FMA throughput, flop/ns (= GFLOP/s).
    pub flops_per_ns: f64,
}

impl Default for CpuDesc {
    /// The development machine (`lscpu`: Xeon with AVX2, 48 KiB L1d and 2 MiB L2 per core,
    /// a large shared L3 of which we assume a 32 MiB slice). `mr = 6` with `nr = 16` is the
    /// classic AVX2 micro-kernel: 12 accumulator registers of 16 (BLIS, Low et al. 2016).
    /// Bandwidth and flops are round numbers for two cores; only their ratio matters.
    fn default() -> Self {
        CpuDesc {
            l1_bytes: 48 << 10,
            l2_bytes: 2 << 20,
            l3_bytes: 32 << 20,
            lanes: 8,
            mr: 6,
            mem_bytes_per_ns: 20.0,
            flops_per_ns: 100.0,
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

//! `lpuc-driver`: the one way from a model graph to a backend.
//!
//! Every command that executes or compiles a model (`lpuc run`, `bench`, `eval`,
//! `compile`) comes through here: [`lower`] runs the target's default pass pipeline (or
//! the one given with `--passes=`) under the verifier, then checks the last phase,
//! "lowerable for target T" ([`lpuc_passes::lowerable`]), and only then hands the graph to
//! a backend ([`jit`], [`groq`]). The backends take nothing else — they re-check the phase
//! on entry and refuse an op outside it, naming the op, the value and the pass that should
//! have removed it — so a new fused form is a pass and a filetest, never a matcher in a
//! backend.
//!
//! ```text
//! Graph ──pipeline (passes, verify-each)──▶ Graph in phase lowerable(T) ──▶ backend
//!                                                                  cpu: runtime::jit (kernels, arena = the plan)
//!                                                                  groq: targets::groq::compile
//! ```
//!
//! The interpreter is the oracle: it runs the graph as written (or after `--passes=` when
//! given), so `lpuc eval`/`run --backend interp` check the pipeline rather than trust it.

use std::io::Write;

use lpuc_ir::{Graph, Sym};
use lpuc_passes::manager::Report;
use lpuc_passes::target::CpuDesc;
use lpuc_passes::{PassManager, PipelineError, TargetKind};

/// The pipeline flags `lpuc opt` has, with the same meaning on `run`, `bench`, `compile`.
#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Pipeline text (`--passes=`); `None`: the target's default.
    pub passes: Option<String>,
    pub time_passes: bool,
    pub print_ir_after_all: bool,
    pub print_ir_after: Vec<String>,
    pub print_ir_after_change: bool,
    pub verify_each: bool,
    pub opt_bisect_limit: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The pipeline's output is not in the phase the backend takes.
    #[error(transparent)]
    NotLowerable(#[from] lpuc_passes::lowerable::NotLowerable),
    #[error("{0}")]
    Backend(String),
}

/// The tokens one CPU call runs at most (`-ub`, llama.cpp's `n_ubatch`): the memory plan
/// is made for this many, and longer prompts prefill in chunks of it.
pub const DEFAULT_UBATCH: u64 = 512;

/// The pass manager for `target` with `o`'s pipeline and instruments. For the CPU, the
/// target description is the host's (`CpuDesc::host`).
pub fn pass_manager(target: TargetKind, o: &PipelineOptions) -> Result<PassManager, DriverError> {
    let mut pm = match &o.passes {
        Some(text) => PassManager::parse(text, target)?,
        None => PassManager::default_for(target),
    };
    if target == TargetKind::Cpu {
        pm.cpu = CpuDesc::host();
    }
    pm.set_print_ir_after(o.print_ir_after.clone())?;
    let ins = &mut pm.instruments;
    ins.print_ir_after_all = o.print_ir_after_all;
    ins.print_ir_after_change = o.print_ir_after_change;
    ins.time_passes = o.time_passes;
    ins.verify_each |= o.verify_each;
    ins.opt_bisect_limit = o.opt_bisect_limit;
    Ok(pm)
}

/// A graph the pipeline lowered for a target, with what the pipeline reported.
pub struct Lowered {
    pub graph: Graph,
    pub report: Report,
}

/// Runs `target`'s pipeline on `g` (IR dumps, bisect notes and the `--time-passes` table go
/// to `log`) and checks that the result is lowerable for `target`.
pub fn lower(
    mut g: Graph,
    target: TargetKind,
    o: &PipelineOptions,
    log: &mut dyn Write,
) -> Result<Lowered, DriverError> {
    let pm = pass_manager(target, o)?;
    let report = pm.run(&mut g, log)?;
    if o.time_passes {
        let _ = write!(log, "{}", report.timing_table(&[]));
    }
    lpuc_passes::lowerable::check(&g, target)?;
    Ok(Lowered { graph: g, report })
}

/// [`lower`] for the CPU: `S` is bounded by `ubatch` first (the plan's largest call).
pub fn lower_cpu(
    mut g: Graph,
    ubatch: u64,
    o: &PipelineOptions,
    log: &mut dyn Write,
) -> Result<Lowered, DriverError> {
    if ubatch == 0 {
        return Err(DriverError::Backend(
            "the micro-batch (-ub) must be at least 1".into(),
        ));
    }
    let s = g.syms.bound(Sym::S).map_or(ubatch, |b| b.min(ubatch));
    g.syms.set_bound(Sym::S, Some(s));
    lower(g, TargetKind::Cpu, o, log)
}

/// The CPU JIT for `g` through the CPU pipeline; `gguf` memory-maps and releases packed
/// tensors (see `JitForward::from_gguf`).
pub fn jit<'w>(
    g: Graph,
    weights: &'w lpuc_ir::import::GgufWeights,
    threads: usize,
    ubatch: u64,
    host: lpuc_codegen::Host,
    o: &PipelineOptions,
    log: &mut dyn Write,
) -> Result<(lpuc_runtime::jit::JitForward<'w>, Lowered), DriverError> {
    let l = lower_cpu(g, ubatch, o, log)?;
    let j = jit_from(&l, weights, threads, host)?;
    Ok((j, l))
}

/// The CPU JIT for a graph [`lower_cpu`] already lowered (one lowering, several thread
/// counts: `lpuc bench -t 1,2`).
pub fn jit_from<'w>(
    l: &Lowered,
    weights: &'w lpuc_ir::import::GgufWeights,
    threads: usize,
    host: lpuc_codegen::Host,
) -> Result<lpuc_runtime::jit::JitForward<'w>, DriverError> {
    lpuc_runtime::jit::JitForward::from_gguf_on(&l.graph, weights, threads, host)
        .map_err(DriverError::Backend)
}

/// The CPU JIT for `g` over any weight store (tests, random weights).
pub fn jit_store<'w>(
    g: Graph,
    weights: &'w dyn lpuc_ir::weights::WeightStore,
    threads: usize,
    o: &PipelineOptions,
) -> Result<lpuc_runtime::jit::JitForward<'w>, DriverError> {
    let host = lpuc_codegen::Host::select(None).map_err(DriverError::Backend)?;
    jit_store_on(g, weights, threads, host, o)
}

/// [`jit_store`] at an explicit kernel tier (tests run every tier the host can execute).
pub fn jit_store_on<'w>(
    g: Graph,
    weights: &'w dyn lpuc_ir::weights::WeightStore,
    threads: usize,
    host: lpuc_codegen::Host,
    o: &PipelineOptions,
) -> Result<lpuc_runtime::jit::JitForward<'w>, DriverError> {
    let l = lower_cpu(g, DEFAULT_UBATCH, o, &mut std::io::sink())?;
    lpuc_runtime::jit::JitForward::new_on(&l.graph, weights, threads, host)
        .map_err(DriverError::Backend)
}

/// The Groq program for `g` through the Groq pipeline.
pub fn groq(
    g: Graph,
    machine: &lpuc_targets::groq::MachineModel,
    copts: &lpuc_targets::groq::program::CompileOptions,
    o: &PipelineOptions,
    log: &mut dyn Write,
) -> Result<lpuc_targets::groq::program::LpuProgram, DriverError> {
    let l = lower(g, TargetKind::Groq, o, log)?;
    lpuc_targets::groq::compile::compile(&l.graph, machine, copts)
        .map_err(|e| DriverError::Backend(e.to_string()))
}

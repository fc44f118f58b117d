//! The compile driver and multi-chip partitioner: graph + options → [`LpuProgram`].
//!
//! The partitioner decides, in this order:
//!
//! 1. **Tensor parallelism** `t` inside a node (1, 2, 4, … up to the node size): every
//!    block must shard (heads, KV heads, FFN features, vocabulary divisible by `t`).
//! 2. **Pipeline stages** `S` (each a group of `t` chips) and which contiguous blocks
//!    each stage runs: a dynamic program minimizing the slowest stage under each chip's
//!    SRAM budget (`usable_sram_fraction` × capacity — the phase-1 free parameter, which
//!    is exactly the margin for alignment and fragmentation).
//! 3. **Weight format per block** (`--weights auto`): int8 installs straight into the
//!    MXM (fast) but takes twice the SRAM of int4, which the VXM must unpack (slow); a
//!    stage keeps as many blocks int8 as fit, switching the rest to int4.
//! 4. **Batching**: `B` sequences run as `g` microbatches of `m` sequences; with
//!    `g ≥ S` every stage is busy with some microbatch (`m = ⌈B / min(B, S)⌉`).
//!
//! Every number comes from **scheduled** block programs (`codegen` + `sched`), not
//! from a separate estimate: each candidate's blocks are generated and scheduled
//! (memoized by block structure and configuration), and the pipeline period is then
//! computed by `sim::pipeline`. Candidate stage counts are the balanced ones
//! (`⌈blocks / k⌉` for k = 1, 2, …) and the largest the chip budget allows.

use std::collections::HashMap;

use lpuc_ir::graph::Graph;
use lpuc_ir::types::Sym;

use super::codegen::{self, is_4bit, GenError};
use super::isa::{Floorplan, FloorplanError};
use super::lower::{self, LowerError};
use super::model::MachineModel;
use super::mops::{LoweredModel, MOp};
use super::program::{
    AttnMap, BlockProgram, CompileOptions, GenConfig, LpuProgram, Stage, TensorKind, WeightMode,
};
use super::sim;

/// Prompt tokens per prefill chunk (fewer if a chunk's activations do not place).
pub const PREFILL_CHUNK: u64 = 32;

/// Why a model cannot be compiled for the Groq target (every variant is a user-facing
/// message; tests pin them).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Lower(#[from] LowerError),
    #[error("{0}")]
    Floorplan(#[from] FloorplanError),
    #[error("--batch must be at least 1")]
    ZeroBatch,
    #[error("{flag} {got} is too large (at most {max}; for --batch, the schedule's compile time grows faster than linearly with it)")]
    TooLarge {
        flag: &'static str,
        got: u64,
        max: u64,
    },
    #[error("--context must be at least 1")]
    ZeroContext,
    #[error("--context {got} exceeds the model's context bound P <= {bound}")]
    ContextTooLong { got: u64, bound: u64 },
    #[error("--prompt {prompt} exceeds --context {context}")]
    PromptTooLong { prompt: u64, context: u64 },
    #[error("--chips {got}: at least 1 chip is needed")]
    ZeroChips { got: u64 },
    #[error("--chips {got} exceeds the largest system the profile describes ({max} chips)")]
    TooManyChips { got: u64, max: u64 },
    #[error("no tensor-parallel degree up to {node} chips shards this model: {why}")]
    NoShard { node: u64, why: String },
    #[error("{model} does not fit {chips} with --weights {weights}, --batch {batch}, --context {context}: {why}")]
    DoesNotFit {
        model: String,
        /// "N chips", or with `--chips auto` the profile's largest system.
        chips: String,
        weights: &'static str,
        batch: u64,
        context: u64,
        why: String,
    },
    #[error("code generation failed for {block} (tensor parallelism {tp}): {err}")]
    Gen {
        block: String,
        tp: u32,
        err: GenError,
    },
}

/// The pieces of one block's schedule the partitioner needs.
#[derive(Clone, Debug)]
struct Variant {
    int4: bool,
    program: usize,
    cycles: u64,
    weights: u64,
    cache: u64,
    act: u64,
    /// Per-chip tables (RoPE cos/sin): identical for every block, stored once.
    table: u64,
}

/// Schedules block programs on demand, one per distinct (structure, configuration).
struct Programs<'a> {
    m: &'a MachineModel,
    fp: &'a Floorplan,
    model: &'a LoweredModel,
    sigs: Vec<String>,
    /// Successes and failures alike (a block that does not place on one chip fails
    /// the same way for every identical layer).
    memo: HashMap<(String, GenConfig), Result<usize, GenError>>,
    list: Vec<BlockProgram>,
}

impl<'a> Programs<'a> {
    fn get(&mut self, block: usize, cfg: &GenConfig) -> Result<usize, CompileError> {
        let key = (self.sigs[block].clone(), cfg.clone());
        if let Some(r) = self.memo.get(&key) {
            return r.clone().map_err(|err| CompileError::Gen {
                block: self.model.blocks[block].kind.name(),
                tp: cfg.tp,
                err,
            });
        }
        let b = &self.model.blocks[block];
        let t0 = std::time::Instant::now();
        let r = codegen::generate(self.m, self.fp, self.model, b, cfg);
        if std::env::var_os("LPUC_GROQ_TIME").is_some() {
            eprintln!(
                "groq: {} tp{} m{} s{} keys{} {}: {} in {:.2?}",
                b.kind.name(),
                cfg.tp,
                cfg.seqs,
                cfg.new_tokens,
                cfg.keys,
                if cfg.int4 { "int4" } else { "int8" },
                match &r {
                    Ok(p) => format!("{} instrs, {} cycles", p.instrs.len(), p.makespan),
                    Err(e) => format!("failed ({e})"),
                },
                t0.elapsed()
            );
        }
        match r {
            Ok(p) => {
                self.list.push(p);
                let i = self.list.len() - 1;
                self.memo.insert(key, Ok(i));
                Ok(i)
            }
            Err(err) => {
                self.memo.insert(key, Err(err.clone()));
                Err(CompileError::Gen {
                    block: b.kind.name(),
                    tp: cfg.tp,
                    err,
                })
            }
        }
    }

    fn variant(&mut self, block: usize, cfg: &GenConfig) -> Result<Variant, CompileError> {
        let i = self.get(block, cfg)?;
        let p = &self.list[i];
        let vb = self.m.sram.bank_access_bytes.get();
        let mut weights = 0;
        let mut cache = 0;
        let mut act = 0;
        let mut table = 0;
        for t in &p.tensors {
            let b = t.bytes(vb);
            match t.kind {
                TensorKind::Cache { .. } => cache += b,
                TensorKind::Io { .. } | TensorKind::Temp => act += b,
                TensorKind::RopeTable { .. } => table += b,
                _ => weights += b,
            }
        }
        Ok(Variant {
            int4: cfg.int4,
            program: i,
            cycles: p.makespan,
            weights,
            cache,
            act,
            table,
        })
    }
}

/// A candidate configuration, fully scheduled.
#[derive(Clone, Debug)]
struct Plan {
    tp: u32,
    m: u32,
    g: u32,
    stages: Vec<(Vec<usize>, Vec<Variant>)>,
    period: f64,
}

/// The largest batch a compile takes. The scheduler's time grows faster than linearly with
/// the batch (measured on `tiny`: 5 s at 64, 12 s at 96, 27 s at 128, over 100 s at 256,
/// mostly in `Scheduler::place`), so a larger batch would look like a hang.
pub const MAX_BATCH: u64 = 128;

/// Compiles a verified graph for the Groq target.
pub fn compile(
    g: &Graph,
    m: &MachineModel,
    opts: &CompileOptions,
) -> Result<LpuProgram, CompileError> {
    if opts.batch == 0 {
        return Err(CompileError::ZeroBatch);
    }
    // Every size below becomes a u32 cycle or row count: refuse what would not fit rather
    // than truncate it (a truncated batch once divided by zero).
    for (flag, got, max) in [
        ("--batch", opts.batch, MAX_BATCH),
        ("--context", opts.context, u64::from(u32::MAX)),
        ("--prompt", opts.prompt, u64::from(u32::MAX)),
    ] {
        if got > max {
            return Err(CompileError::TooLarge { flag, got, max });
        }
    }
    if opts.context == 0 {
        return Err(CompileError::ZeroContext);
    }
    if let Some(bound) = g.syms.bound(Sym::P) {
        if opts.context > bound {
            return Err(CompileError::ContextTooLong {
                got: opts.context,
                bound,
            });
        }
    }
    if opts.prompt > opts.context {
        return Err(CompileError::PromptTooLong {
            prompt: opts.prompt,
            context: opts.context,
        });
    }
    if let Some(n) = opts.chips {
        if n == 0 {
            return Err(CompileError::ZeroChips { got: n });
        }
        if n > m.system.max_chips.get() {
            return Err(CompileError::TooManyChips {
                got: n,
                max: m.system.max_chips.get(),
            });
        }
    }
    let fp = Floorplan::new(m)?;
    let model = lower::lower(g)?;
    let mut decisions = Vec::new();
    if let Some(bound) = g.syms.bound(Sym::B) {
        if opts.batch > bound {
            decisions.push(format!(
                "batch {} exceeds the graph's planning bound B <= {bound}; the LPU program sizes its own buffers for {}",
                opts.batch, opts.batch
            ));
        }
    }
    let chip_blocks: Vec<usize> = (0..model.blocks.len())
        .filter(|i| model.blocks[*i].on_chip())
        .collect();
    let sigs = model.blocks.iter().map(|b| b.signature(&model)).collect();
    let mut progs = Programs {
        m,
        fp: &fp,
        model: &model,
        sigs,
        memo: HashMap::new(),
        list: Vec::new(),
    };
    let usable = m.sram_usable_bytes();
    let node = m.system.node_chips.get();
    // Tensor-parallel degrees that shard every block.
    let mut tps = Vec::new();
    let mut why = String::new();
    let candidates: Vec<u64> = match opts.tp {
        Some(t) => vec![u64::from(t)],
        None => std::iter::successors(Some(1u64), |t| Some(t * 2))
            .take_while(|t| *t <= node)
            .collect(),
    };
    for t in candidates {
        if t == 0 || t > node {
            why = format!("--tp {t} must be between 1 and the node size {node}");
            continue;
        }
        match shardable(&model, t as u32) {
            Ok(()) => tps.push(t as u32),
            Err(e) => why = e,
        }
    }
    if tps.is_empty() {
        return Err(CompileError::NoShard { node, why });
    }
    let keys = opts.context as u32;
    let attn = attention_map(m, &model, 1, keys);
    let weights_mode = opts.weights;
    let has4 = model.weights.iter().any(|w| is_4bit(w.dtype));
    if weights_mode == WeightMode::Int4 && !has4 {
        decisions.push(
            "--weights int4: the model has no 4-bit weights; 8-bit and float weights are stored int8"
                .into(),
        );
    }
    let n = chip_blocks.len() as u64;
    let mut best: Option<Plan> = None;
    let mut fit_why = String::from("no configuration was tried");
    let mut most_stages = 0u64;
    for &tp in &tps {
        // Skip degrees where one layer cannot fit even alone and as int4 (analytic
        // bytes; saves scheduling hopeless candidates).
        if !one_block_fits(m, &model, &chip_blocks, tp, weights_mode, usable) {
            fit_why = format!(
                "a single block does not fit one stage of {tp} chip(s) even with int4 weights"
            );
            continue;
        }
        let max_stages = match opts.chips {
            Some(c) => (c / u64::from(tp)).min(n),
            None => n,
        };
        if max_stages == 0 {
            fit_why = format!(
                "{} chips are fewer than one stage of {tp}",
                opts.chips.unwrap_or(0)
            );
            continue;
        }
        let mut cands: Vec<u64> = (1..=n).map(|k| n.div_ceil(k)).collect();
        cands.push(max_stages);
        cands.retain(|s| *s <= max_stages);
        cands.sort_unstable();
        cands.dedup();
        cands.reverse();
        // `--chips auto`: the fewest stages that fit; otherwise the largest few.
        let chosen: Vec<u64> = if opts.chips.is_none() {
            cands.iter().rev().copied().collect()
        } else {
            cands.iter().copied().take(4).collect()
        };
        for s in chosen {
            let mb = (opts.batch.div_ceil(opts.batch.min(s))) as u32;
            let groups = opts.batch.div_ceil(u64::from(mb)) as u32;
            match plan(
                m,
                &mut progs,
                &chip_blocks,
                tp,
                s as usize,
                mb,
                groups,
                keys,
                attn,
                weights_mode,
                usable,
                opts,
            )? {
                Ok(p) => {
                    let better = match &best {
                        None => true,
                        Some(b) => {
                            if opts.chips.is_none() {
                                let (pc, bc) =
                                    (p.stages.len() as u32 * p.tp, b.stages.len() as u32 * b.tp);
                                pc < bc || (pc == bc && p.period < b.period)
                            } else {
                                p.period < b.period * (1.0 - 1e-9)
                                    || (p.period <= b.period * (1.0 + 1e-9)
                                        && p.stages.len() as u32 * p.tp
                                            < b.stages.len() as u32 * b.tp)
                            }
                        }
                    };
                    if better {
                        best = Some(p);
                    }
                    if opts.chips.is_none() {
                        break; // the fewest stages that fit, for this degree
                    }
                }
                Err(w) => {
                    // Keep the most telling failure: the most stages tried.
                    if s >= most_stages {
                        most_stages = s;
                        fit_why = w;
                    }
                }
            }
        }
    }
    let Some(best) = best else {
        return Err(CompileError::DoesNotFit {
            model: model.name.clone(),
            chips: match opts.chips {
                Some(c) => format!("{c} chips"),
                None => format!(
                    "any system of this profile (--chips auto, up to {} chips)",
                    m.system.max_chips.get()
                ),
            },
            weights: weights_mode.name(),
            batch: opts.batch,
            context: opts.context,
            why: fit_why,
        });
    };
    decisions.push(format!(
        "tensor parallelism {} within a node, {} pipeline stage(s): {} chips",
        best.tp,
        best.stages.len(),
        best.tp as usize * best.stages.len()
    ));
    decisions.push(format!(
        "batch {} as {} microbatch(es) of {} sequence(s)",
        opts.batch, best.g, best.m
    ));
    let (_, ks, qs) = codegen::choose_attention(
        m,
        attention_rows(&model, best.m),
        u64::from(keys),
        head_dim(&model),
    );
    let (_, pks, pqs) = codegen::choose_attention(
        m,
        attention_rows(&model, opts.prompt.clamp(1, PREFILL_CHUNK) as u32),
        opts.prompt.max(1),
        head_dim(&model),
    );
    decisions.push(format!(
        "attention mapping {} by decode cost per (sequence, KV head) at {keys} keys: kv-stationary {ks} cycles, q-stationary {qs} cycles (prefill chunk: {pks} vs {pqs}; the cache layout is shared, so prefill uses the same mapping)",
        attn.name(),
    ));
    let n4: usize = best
        .stages
        .iter()
        .map(|(_, v)| v.iter().filter(|x| x.int4).count())
        .sum();
    let nb: usize = best.stages.iter().map(|(b, _)| b.len()).sum();
    decisions.push(format!(
        "weights ({}): {} of {} blocks int4, the rest int8",
        weights_mode.name(),
        n4,
        nb
    ));
    // Keep only the programs the plan uses, renumbered.
    let mut keep: Vec<usize> = Vec::new();
    let mut stages = Vec::new();
    for (blocks, vars) in &best.stages {
        let mut programs = Vec::new();
        for v in vars {
            let i = match keep.iter().position(|k| *k == v.program) {
                Some(i) => i,
                None => {
                    keep.push(v.program);
                    keep.len() - 1
                }
            };
            programs.push(i);
        }
        let resident: u64 = vars
            .iter()
            .map(|v| v.weights + v.cache * u64::from(best.g))
            .sum();
        let act = vars.iter().map(|v| v.act).max().unwrap_or(0)
            + vars.iter().map(|v| v.table).max().unwrap_or(0);
        stages.push(Stage {
            blocks: blocks.clone(),
            programs,
            int4: vars.iter().map(|v| v.int4).collect(),
            sram_bytes: resident + act,
            resident_bytes: resident,
            activation_bytes: act,
        });
    }
    // Prefill variants of the same blocks (time to first token), in chunks of up to
    // PREFILL_CHUNK prompt tokens; a chunk whose activations do not place is halved.
    let prompt_keys = opts.prompt.max(1) as u32;
    let mut chunk = opts.prompt.clamp(1, PREFILL_CHUNK) as u32;
    let prefill = loop {
        let mut out = Vec::new();
        let mut full = None;
        for k in &keep {
            let p = &progs.list[*k];
            let block = model
                .blocks
                .iter()
                .position(|b| b.kind == p.kind)
                .unwrap_or(0);
            let cfg = GenConfig {
                tp: best.tp,
                seqs: 1,
                new_tokens: chunk,
                keys: prompt_keys,
                int4: p.config.int4,
                // The KV cache layout follows the mapping, and prefill fills the cache
                // that decode reads: one mapping per program, chosen on decode cost.
                attn,
            };
            match progs.get(block, &cfg) {
                Ok(i) => out.push(progs.list[i].clone()),
                // Too large a chunk fills SRAM or crowds slices: halve it.
                Err(CompileError::Gen { err, .. }) => {
                    full = Some(match err {
                        GenError::Full { what, .. } => what,
                        e => e.to_string(),
                    });
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        match full {
            None => break out,
            Some(what) if chunk == 1 => {
                return Err(CompileError::DoesNotFit {
                    model: model.name.clone(),
                    chips: format!("{} chips", best.tp as u64 * best.stages.len() as u64),
                    weights: weights_mode.name(),
                    batch: opts.batch,
                    context: opts.context,
                    why: format!("even a one-token prefill does not place ({what})"),
                })
            }
            Some(_) => chunk /= 2,
        }
    };
    decisions.push(format!(
        "prefill in chunks of {chunk} token(s) for the time to first token"
    ));
    let programs: Vec<BlockProgram> = keep.iter().map(|k| progs.list[*k].clone()).collect();
    Ok(LpuProgram {
        machine: m.clone(),
        floorplan: fp,
        model,
        graph: g.clone(),
        weight_source: g.weights.clone(),
        options: opts.clone(),
        tp: best.tp,
        microbatch: best.m,
        groups: best.g,
        stages,
        programs,
        prefill,
        prefill_chunk: chunk,
        decisions,
    })
}

fn head_dim(model: &LoweredModel) -> u64 {
    model.caches.first().map_or(1, |c| c.head_dim)
}

/// Query rows per (sequence, KV head) for `s` new tokens.
fn attention_rows(model: &LoweredModel, s: u32) -> u64 {
    for b in &model.blocks {
        for op in &b.ops {
            if let MOp::Attention {
                heads, kv_heads, ..
            } = op
            {
                return heads / kv_heads * u64::from(s);
            }
        }
    }
    u64::from(s)
}

fn attention_map(m: &MachineModel, model: &LoweredModel, s: u32, keys: u32) -> AttnMap {
    codegen::choose_attention(
        m,
        attention_rows(model, s),
        u64::from(keys),
        head_dim(model),
    )
    .0
}

/// Whether every block shards over `t` chips (mirrors the code generator's rules).
pub fn shardable(model: &LoweredModel, t: u32) -> Result<(), String> {
    if t == 1 {
        return Ok(());
    }
    let t = u64::from(t);
    let mut split: HashMap<u32, bool> = HashMap::new();
    for b in &model.blocks {
        for op in &b.ops {
            let s = |x: &u32| split.get(x).copied().unwrap_or(false);
            match op {
                MOp::Linear { x, w, out, .. } => {
                    let shape = &model.weights[*w as usize].shape;
                    if s(x) {
                        if shape[1] % t != 0 {
                            return Err(format!(
                                "{} has {} input features, not divisible by {t}",
                                model.weights[*w as usize].name, shape[1]
                            ));
                        }
                        split.insert(*out, false);
                    } else {
                        if shape[0] % t != 0 {
                            return Err(format!(
                                "{} has {} output features, not divisible by {t}",
                                model.weights[*w as usize].name, shape[0]
                            ));
                        }
                        split.insert(*out, true);
                    }
                }
                MOp::Attention {
                    q,
                    heads,
                    kv_heads,
                    out,
                    ..
                } => {
                    if s(q) && (heads % t != 0 || kv_heads % t != 0) {
                        return Err(format!(
                            "{heads} heads / {kv_heads} KV heads are not divisible by {t}"
                        ));
                    }
                    split.insert(*out, s(q));
                }
                MOp::Rope { x, heads, out, .. } => {
                    if s(x) && heads % t != 0 {
                        return Err(format!("{heads} rotary heads are not divisible by {t}"));
                    }
                    split.insert(*out, s(x));
                }
                MOp::KvAppend { x, cache } => {
                    let c = &model.caches[*cache as usize];
                    if s(x) && c.kv_heads % t != 0 {
                        return Err(format!("{} KV heads are not divisible by {t}", c.kv_heads));
                    }
                }
                MOp::Norm { x, out, .. } => {
                    if s(x) {
                        return Err("a norm reads a split activation".into());
                    }
                    split.insert(*out, false);
                }
                other => {
                    let ins = other.inputs();
                    let any = ins.iter().any(s);
                    if any && !ins.iter().all(s) {
                        return Err(format!(
                            "{} mixes split and replicated operands",
                            other.name()
                        ));
                    }
                    if let Some(o) = other.output() {
                        split.insert(o, any);
                    }
                }
            }
        }
    }
    Ok(())
}

fn fmts_last(f: &[bool]) -> &bool {
    f.last().unwrap_or(&false)
}

/// Analytic weight bytes of a block's largest possible footprint per chip.
fn one_block_fits(
    m: &MachineModel,
    model: &LoweredModel,
    blocks: &[usize],
    tp: u32,
    mode: WeightMode,
    usable: u64,
) -> bool {
    let _ = m;
    blocks.iter().all(|b| {
        let bytes: f64 = model.blocks[*b]
            .ops
            .iter()
            .flat_map(|o| o.weights())
            .map(|w| {
                let wi = &model.weights[w as usize];
                let bits = if mode != WeightMode::Int8 && is_4bit(wi.dtype) {
                    wi.dtype.bits_per_elem()
                } else {
                    8.0
                };
                wi.numel() as f64 * bits / 8.0 / f64::from(tp)
            })
            .sum();
        bytes <= usable as f64
    })
}

/// Schedules every block needed for `s` stages of `tp` chips with microbatch `mb`,
/// partitions them, and computes the period. `Ok(Err(why))`: does not fit.
#[allow(clippy::too_many_arguments)]
fn plan(
    m: &MachineModel,
    progs: &mut Programs,
    blocks: &[usize],
    tp: u32,
    s: usize,
    mb: u32,
    groups: u32,
    keys: u32,
    attn: AttnMap,
    mode: WeightMode,
    usable: u64,
    opts: &CompileOptions,
) -> Result<Result<Plan, String>, CompileError> {
    // Variants per block (int4 and/or int8).
    let mut vars: Vec<Vec<Variant>> = Vec::new();
    for &b in blocks {
        let has4 = progs.model.blocks[b]
            .ops
            .iter()
            .flat_map(|o| o.weights())
            .any(|w| is_4bit(progs.model.weights[w as usize].dtype));
        let mut fmts = Vec::new();
        match mode {
            WeightMode::Int8 => fmts.push(false),
            WeightMode::Int4 => fmts.push(has4),
            WeightMode::Auto => {
                fmts.push(false);
                if has4 {
                    fmts.push(true);
                }
            }
        }
        let mut v = Vec::new();
        for &int4 in &fmts {
            let cfg = GenConfig {
                tp,
                seqs: mb,
                new_tokens: 1,
                keys,
                int4,
                attn,
            };
            match progs.variant(b, &cfg) {
                Ok(x) => v.push(x),
                // This candidate cannot generate the block (it does not place on one
                // chip, or cannot be scheduled): try the other format; if none works,
                // the candidate is out and the search goes on.
                Err(CompileError::Gen { err, .. }) => {
                    if v.is_empty() && int4 == *fmts_last(&fmts) {
                        let why = match err {
                            GenError::Full { what, .. } => format!("SRAM full placing {what}"),
                            e => e.to_string(),
                        };
                        return Ok(Err(format!(
                            "{} does not place on one chip of {tp} ({why})",
                            progs.model.blocks[b].kind.name()
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if v.is_empty() {
            return Ok(Err(format!(
                "{} does not place on one chip of {tp}",
                progs.model.blocks[b].kind.name()
            )));
        }
        vars.push(v);
    }
    let g = u64::from(groups);
    // Cost of a run of blocks on one stage: the fastest formats that fit. Start with
    // every block's fastest variant; if the stage is over budget, switch blocks to
    // their smaller variant in order of bytes saved per cycle lost (for identical
    // layers this is a count, so the order is by score then position).
    let run = |i: usize, j: usize| -> Option<(u64, Vec<usize>, u64)> {
        let mut pick: Vec<usize> = vars[i..j]
            .iter()
            .map(|v| (0..v.len()).min_by_key(|x| v[*x].cycles).unwrap_or(0))
            .collect();
        let res = |k: usize, x: usize| {
            let v = &vars[i + k][x];
            v.weights + v.cache * g
        };
        // Activations are reused block after block; tables are shared: the largest.
        let act = |pick: &[usize]| {
            let a = pick
                .iter()
                .enumerate()
                .map(|(k, p)| vars[i + k][*p].act)
                .max()
                .unwrap_or(0);
            let t = pick
                .iter()
                .enumerate()
                .map(|(k, p)| vars[i + k][*p].table)
                .max()
                .unwrap_or(0);
            a + t
        };
        let mut bytes: u64 = pick.iter().enumerate().map(|(k, p)| res(k, *p)).sum();
        if bytes + act(&pick) > usable {
            // Each block's best switch: (score, k, variant).
            let mut switches: Vec<(f64, usize, usize)> = Vec::new();
            for (k, p) in pick.iter().enumerate() {
                let cur = res(k, *p);
                let best = (0..vars[i + k].len())
                    .filter(|x| res(k, *x) < cur)
                    .map(|x| {
                        let saved = (cur - res(k, x)) as f64;
                        let lost = vars[i + k][x]
                            .cycles
                            .saturating_sub(vars[i + k][*p].cycles)
                            .max(1) as f64;
                        (saved / lost, x)
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                if let Some((score, x)) = best {
                    switches.push((score, k, x));
                }
            }
            switches.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (_, k, x) in switches {
                bytes = bytes - res(k, pick[k]) + res(k, x);
                pick[k] = x;
                if bytes + act(&pick) <= usable {
                    break;
                }
            }
        }
        let total = bytes + act(&pick);
        if total > usable {
            return None;
        }
        let cycles = pick
            .iter()
            .enumerate()
            .map(|(k, p)| vars[i + k][*p].cycles)
            .sum();
        Some((cycles, pick, total))
    };
    let n = blocks.len();
    // dp[k][j]: best bottleneck for the first j blocks on k stages.
    let inf = u64::MAX;
    let mut memo: HashMap<(usize, usize), Option<u64>> = HashMap::new();
    let mut cost = |i: usize, j: usize| -> Option<u64> {
        *memo.entry((i, j)).or_insert_with(|| run(i, j).map(|x| x.0))
    };
    let s = s.min(n);
    let mut dp = vec![vec![inf; n + 1]; s + 1];
    let mut cut = vec![vec![0usize; n + 1]; s + 1];
    dp[0][0] = 0;
    for k in 1..=s {
        for j in k..=n {
            for i in (k - 1)..j {
                if dp[k - 1][i] == inf {
                    continue;
                }
                let Some(c) = cost(i, j) else {
                    continue;
                };
                let v = dp[k - 1][i].max(c);
                if v < dp[k][j] {
                    dp[k][j] = v;
                    cut[k][j] = i;
                }
            }
        }
    }
    if dp[s][n] == inf {
        return Ok(Err(format!(
            "{n} blocks do not fit {s} stage(s) of {tp} chip(s) ({:.1} MB usable per chip; KV cache for {} sequences of {keys} tokens)",
            usable as f64 / 1e6,
            u64::from(groups) * u64::from(mb)
        )));
    }
    let mut bounds = Vec::new();
    let mut j = n;
    for k in (1..=s).rev() {
        let i = cut[k][j];
        bounds.push((i, j));
        j = i;
    }
    bounds.reverse();
    let mut stages = Vec::new();
    for (i, j) in bounds {
        let Some((_, pick, bytes)) = run(i, j) else {
            return Ok(Err(
                "internal: a stage the partition kept does not fit".into()
            ));
        };
        let _ = bytes;
        let chosen: Vec<Variant> = pick
            .iter()
            .enumerate()
            .map(|(k, p)| vars[i + k][*p].clone())
            .collect();
        stages.push((blocks[i..j].to_vec(), chosen));
    }
    let times: Vec<u64> = stages
        .iter()
        .map(|(_, v)| v.iter().map(|x| x.cycles).sum())
        .collect();
    let width = progs.model.blocks.iter().find_map(|b| {
        b.inputs
            .first()
            .map(|t| progs.model.tensors[*t as usize].cols)
    });
    let pipe = sim::pipeline(m, tp, &times, mb, groups, width.unwrap_or(1), opts.batch);
    Ok(Ok(Plan {
        tp,
        m: mb,
        g: groups,
        stages,
        period: pipe.period_cycles as f64,
    }))
}

//! The simulator, timing half: checks every program, then times the pipeline.
//!
//! Per chip, a block's time is its **schedule's makespan** — every instruction placed
//! by the static scheduler and re-checked by `check.rs` (a schedule with any conflict
//! or late operand is rejected, never timed). Above the chip:
//!
//! * a stage runs its blocks one after another: `τ_s = Σ makespans`;
//! * a microbatch's activations (`m` rows × width, fp32) go to the next stage over the
//!   C2C network (`cost::c2c_transfer`: one local link inside a node; the global links
//!   between nodes; one hop inside a rack, two between racks — an assumption, ISCA'22
//!   only bounds the system at ≤ 5 hops);
//! * the token loop: the last stage's greedy token ids go to the host and the next
//!   step's embedding rows come back over PCIe (`cost::host_transfer`, both ways);
//! * `B` sequences in `g` microbatches: one sequence's token period is
//!   `max(latency through all stages + loop, g · slowest stage)` — the pipeline either
//!   waits for the loop or is full.
//!
//! The **lower bound** replaces each block's makespan with the larger of its busiest
//! resource's total work (install queue, matmul streaming, VXM ALU-cycles, MEM ports,
//! links) plus one hop per dependent collective phase; dependencies and the timing law
//! are what the schedule adds on top, so `lower bound / period` is the schedule's
//! efficiency.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check::{self, Violation};
use super::cost;
use super::isa::{Op, Queue};
use super::model::MachineModel;
use super::program::{BlockProgram, LpuProgram};

/// The pipeline's timing for one configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pipeline {
    /// One token's time through every stage, handoffs and the host loop.
    pub latency_cycles: u64,
    /// Time between consecutive tokens of one sequence.
    pub period_cycles: u64,
    pub slowest_stage_cycles: u64,
    pub handoff_cycles: u64,
    pub loop_cycles: u64,
}

/// Hops and links between the chips of stage `a` and stage `a + 1`.
fn handoff(m: &MachineModel, tp: u32, stage: usize, bytes: u64) -> u64 {
    let node = m.system.node_chips.get();
    let rack = (m.system.rack_nodes.get() - m.system.rack_spare_nodes.get()) * node;
    let a = stage as u64 * u64::from(tp);
    let b = a + u64::from(tp);
    let (links, hops) = if a / node == b / node {
        (1, 1)
    } else if a / rack == b / rack {
        (m.system.global_links_per_chip.get().max(1), 1)
    } else {
        (m.system.global_links_per_chip.get().max(1), 2)
    };
    cost::c2c_transfer(m, bytes, links, hops.min(m.system.max_hops.get()))
        .map(|c| c.latency)
        .unwrap_or(0)
}

/// Pipeline timing from stage times (cycles per microbatch).
pub fn pipeline(
    m: &MachineModel,
    tp: u32,
    stage_cycles: &[u64],
    microbatch: u32,
    groups: u32,
    width: u64,
    _batch: u64,
) -> Pipeline {
    let rows = u64::from(microbatch);
    let bytes = rows * width * 4;
    let mut handoffs = 0;
    let mut slowest = 0;
    for (s, t) in stage_cycles.iter().enumerate() {
        let h = if s + 1 < stage_cycles.len() {
            handoff(m, tp, s, bytes)
        } else {
            0
        };
        handoffs += h;
        // A stage sends while it starts the next microbatch: its link is busy for the
        // transfer, its units for the blocks.
        slowest = slowest.max(*t);
    }
    let loop_cycles =
        cost::host_transfer(m, rows * 4).latency + cost::host_transfer(m, bytes).latency;
    let latency = stage_cycles.iter().sum::<u64>() + handoffs + loop_cycles;
    let period = latency.max(u64::from(groups) * slowest);
    Pipeline {
        latency_cycles: latency,
        period_cycles: period,
        slowest_stage_cycles: slowest,
        handoff_cycles: handoffs,
        loop_cycles,
    }
}

/// Busy cycles per resource class in one program (for utilization and the bound).
#[derive(Clone, Debug, Default)]
struct Busy {
    install: Vec<u64>,
    compute: Vec<u64>,
    vxm_alu: u64,
    mem: BTreeMap<u16, u64>,
    sxm: u64,
    link: BTreeMap<u8, u64>,
}

fn busy(p: &BlockProgram, planes: usize) -> Busy {
    let mut b = Busy {
        install: vec![0; planes],
        compute: vec![0; planes],
        ..Busy::default()
    };
    for i in &p.instrs {
        match &i.op {
            Op::Install { plane, .. } => b.install[*plane as usize] += i.lat.max(i.occ),
            Op::MatMul { plane, .. } => b.compute[*plane as usize] += i.occ,
            Op::Sxm { .. } => b.sxm += i.occ,
            Op::Send { link, .. } => *b.link.entry(*link).or_default() += i.occ,
            _ => {}
        }
        b.vxm_alu += i.alus() * i.occ;
        if let Some(at) = i.op.mem_at() {
            for s in &at.slices {
                *b.mem.entry(*s).or_default() += i.occ;
            }
        }
        let _ = Queue::Vxm(0);
    }
    b
}

/// Per-resource work of one program (cycles on its busiest unit of each kind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Busiest MXM plane's install queue (installs are serial per plane).
    pub install: u64,
    /// Busiest plane's matmul streaming.
    pub compute: u64,
    /// VXM ALU-cycles / ALUs per lane.
    pub vxm: u64,
    /// Busiest MEM slice (read + write port cycles).
    pub mem: u64,
    /// Busiest C2C link.
    pub link: u64,
    /// Dependent C2C hops (collective phases) × hop latency.
    pub hops: u64,
}

impl Bounds {
    /// The largest resource term plus the unavoidable hop latency.
    pub fn total(&self) -> u64 {
        [self.install, self.compute, self.vxm, self.mem, self.link]
            .into_iter()
            .max()
            .unwrap_or(0)
            + self.hops
    }

    /// Name of the largest resource term.
    pub fn binding(&self) -> &'static str {
        let terms = [
            (self.install, "MXM weight install"),
            (self.compute, "MXM streaming"),
            (self.vxm, "VXM ALUs"),
            (self.mem, "MEM ports"),
            (self.link, "C2C links"),
        ];
        terms
            .iter()
            .max_by_key(|(c, _)| *c)
            .map_or("none", |(_, n)| *n)
    }
}

/// The resource bounds of one program.
pub fn bounds(m: &MachineModel, p: &BlockProgram, planes: usize) -> Bounds {
    let b = busy(p, planes);
    let alus = m.vxm.alus_per_lane.get().max(1);
    Bounds {
        install: b.install.iter().copied().max().unwrap_or(0),
        compute: b.compute.iter().copied().max().unwrap_or(0),
        vxm: b.vxm_alu.div_ceil(alus),
        mem: b.mem.values().copied().max().unwrap_or(0),
        link: b.link.values().copied().max().unwrap_or(0),
        hops: p.work.c2c_hops * cost::hop_cycles(m),
    }
}

/// The program's resource lower bound (cycles).
pub fn lower_bound(m: &MachineModel, p: &BlockProgram, planes: usize) -> u64 {
    bounds(m, p, planes).total()
}

/// Why the simulator refuses a program.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("inconsistent artifact: {0}")]
    Corrupt(String),
    #[error("schedule rejected: {program} has {} violation(s); first: {}", violations.len(), violations.first().map(|v| v.to_string()).unwrap_or_default())]
    Rejected {
        program: String,
        violations: Vec<Violation>,
    },
}

/// The report `lpuc sim` prints (`--json` keys are these field names).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimReport {
    pub model: String,
    pub profile: String,
    pub profile_status: String,
    pub chips: u64,
    pub tensor_parallel: u32,
    pub stages: usize,
    pub batch: u64,
    pub microbatch: u32,
    pub microbatches: u32,
    pub weights: String,
    pub int4_blocks: usize,
    pub int8_blocks: usize,
    pub context: u64,
    pub prompt: u64,
    pub cycles_per_token: u64,
    pub us_per_token: f64,
    pub tokens_per_s_per_user: f64,
    pub tokens_per_s_aggregate: f64,
    pub lower_bound_us_per_token: f64,
    pub schedule_efficiency: f64,
    /// The resource that bounds the slowest stage's largest block.
    pub binding_resource: String,
    pub ttft_us: f64,
    pub latency_us: f64,
    pub slowest_stage_us: f64,
    pub handoff_us: f64,
    pub host_loop_us: f64,
    pub sram_bytes_per_chip_max: u64,
    pub sram_usable_bytes_per_chip: u64,
    pub sram_capacity_bytes_per_chip: u64,
    pub utilization: BTreeMap<String, f64>,
    pub programs: usize,
    pub instructions: usize,
    pub decisions: Vec<String>,
}

/// Structural consistency of an artifact (it is user input: indices must be in range
/// before anything indexes with them).
pub fn validate(p: &LpuProgram) -> Result<(), SimError> {
    let bad = |m: String| Err(SimError::Corrupt(m));
    if p.stages.is_empty() {
        return bad("no stages".into());
    }
    if p.prefill.len() != p.programs.len() {
        return bad("prefill and decode programs differ in number".into());
    }
    if p.microbatch == 0 || p.groups == 0 || p.tp == 0 {
        return bad("zero microbatch, groups or tensor parallelism".into());
    }
    for (i, s) in p.stages.iter().enumerate() {
        if s.blocks.len() != s.programs.len() || s.int4.len() != s.blocks.len() {
            return bad(format!(
                "stage {i}: blocks, programs and formats differ in number"
            ));
        }
        if let Some(b) = s.blocks.iter().find(|b| **b >= p.model.blocks.len()) {
            return bad(format!("stage {i} names block {b}, which does not exist"));
        }
        if let Some(q) = s.programs.iter().find(|q| **q >= p.programs.len()) {
            return bad(format!("stage {i} names program {q}, which does not exist"));
        }
    }
    for (i, prog) in p.programs.iter().chain(&p.prefill).enumerate() {
        let n = prog.tensors.len() as u32;
        if prog
            .inputs
            .iter()
            .chain(&prog.outputs)
            .any(|(_, l)| *l >= n)
            || prog.logits.is_some_and(|l| l >= n)
        {
            return bad(format!("program {i} names a tensor that does not exist"));
        }
        for (k, ins) in prog.instrs.iter().enumerate() {
            if ins.srcs.iter().any(|s| s.from as usize >= k) {
                return bad(format!(
                    "program {i}, instruction {k}: operand from a later instruction"
                ));
            }
        }
    }
    Ok(())
}

/// Checks every program of the artifact; the first rejected one is an error.
pub fn check_all(p: &LpuProgram) -> Result<usize, SimError> {
    validate(p)?;
    let mut n = 0;
    for (what, list) in [("decode", &p.programs), ("prefill", &p.prefill)] {
        for (i, prog) in list.iter().enumerate() {
            match check::check(&p.machine, &p.floorplan, prog) {
                Ok(s) => n += s.instrs,
                Err(v) => {
                    return Err(SimError::Rejected {
                        program: format!("{what} program {i} ({:?})", prog.kind),
                        violations: v,
                    })
                }
            }
        }
    }
    Ok(n)
}

fn width(p: &LpuProgram) -> u64 {
    p.model
        .blocks
        .iter()
        .find_map(|b| b.inputs.first().map(|t| p.model.tensors[*t as usize].cols))
        .unwrap_or(1)
}

/// Checks and times an artifact.
pub fn simulate(p: &LpuProgram) -> Result<SimReport, SimError> {
    let instructions = check_all(p)?;
    let m = &p.machine;
    let planes = p.floorplan.planes();
    let us = |c: u64| m.seconds(c) * 1e6;
    let stage_times: Vec<u64> = p
        .stages
        .iter()
        .map(|s| s.programs.iter().map(|i| p.programs[*i].makespan).sum())
        .collect();
    let w = width(p);
    let pipe = pipeline(
        m,
        p.tp,
        &stage_times,
        p.microbatch,
        p.groups,
        w,
        p.options.batch,
    );
    let lb_stage: Vec<u64> = p
        .stages
        .iter()
        .map(|s| {
            s.programs
                .iter()
                .map(|i| lower_bound(m, &p.programs[*i], planes))
                .sum()
        })
        .collect();
    let lb = pipeline(
        m,
        p.tp,
        &lb_stage,
        p.microbatch,
        p.groups,
        w,
        p.options.batch,
    );
    // Time to first token: the prompt in chunks, pipelined over the stages.
    let pre_times: Vec<u64> = p
        .stages
        .iter()
        .map(|s| s.programs.iter().map(|i| p.prefill[*i].makespan).sum())
        .collect();
    let chunks = p
        .options
        .prompt
        .max(1)
        .div_ceil(u64::from(p.prefill_chunk.max(1)));
    let pre = pipeline(m, p.tp, &pre_times, p.prefill_chunk, 1, w, 1);
    let ttft = pre.latency_cycles + (chunks - 1) * pre.slowest_stage_cycles;
    // Utilization over one period, averaged over every chip.
    let mut util: BTreeMap<String, f64> = BTreeMap::new();
    let period = pipe.period_cycles.max(1) as f64;
    let stages = p.stages.len() as f64;
    let per_period = f64::from(p.groups);
    let mut acc = [0f64; 6];
    for s in &p.stages {
        for i in &s.programs {
            let b = busy(&p.programs[*i], planes);
            acc[0] += b.compute.iter().sum::<u64>() as f64;
            acc[1] += b.install.iter().sum::<u64>() as f64;
            acc[2] += b.vxm_alu as f64;
            acc[3] += b.mem.values().sum::<u64>() as f64;
            acc[4] += b.sxm as f64;
            acc[5] += b.link.values().sum::<u64>() as f64;
        }
    }
    let counts = [
        planes as f64,
        planes as f64,
        m.vxm.alus_per_lane.get() as f64,
        // Each slice has a read and a write port.
        2.0 * p.floorplan.mem_slices() as f64,
        p.floorplan.sxm_queues as f64,
        p.floorplan.links as f64,
    ];
    for (k, name) in [
        "mxm_compute",
        "mxm_install",
        "vxm_alu",
        "mem_ports",
        "sxm",
        "c2c_links",
    ]
    .iter()
    .enumerate()
    {
        let v = acc[k] * per_period / (stages * counts[k] * period);
        util.insert((*name).to_string(), (v * 1e4).round() / 1e4);
    }
    let binding = p
        .stages
        .iter()
        .zip(&stage_times)
        .max_by_key(|(_, t)| **t)
        .and_then(|(s, _)| {
            s.programs
                .iter()
                .max_by_key(|i| p.programs[**i].makespan)
                .map(|i| bounds(m, &p.programs[*i], planes).binding().to_string())
        })
        .unwrap_or_default();
    let int4 = p
        .stages
        .iter()
        .flat_map(|s| &s.int4)
        .filter(|x| **x)
        .count();
    let nblocks: usize = p.stages.iter().map(|s| s.blocks.len()).sum();
    let tok_user = 1e6 / us(pipe.period_cycles).max(1e-12);
    Ok(SimReport {
        model: p.model.name.clone(),
        profile: m.profile.name.clone(),
        profile_status: format!("{:?}", m.profile.status).to_lowercase(),
        chips: p.chips(),
        tensor_parallel: p.tp,
        stages: p.stages.len(),
        batch: p.options.batch,
        microbatch: p.microbatch,
        microbatches: p.groups,
        weights: p.options.weights.name().to_string(),
        int4_blocks: int4,
        int8_blocks: nblocks - int4,
        context: p.options.context,
        prompt: p.options.prompt,
        cycles_per_token: pipe.period_cycles,
        us_per_token: us(pipe.period_cycles),
        tokens_per_s_per_user: tok_user,
        tokens_per_s_aggregate: tok_user * p.options.batch as f64,
        lower_bound_us_per_token: us(lb.period_cycles),
        schedule_efficiency: lb.period_cycles as f64 / pipe.period_cycles.max(1) as f64,
        binding_resource: binding,
        ttft_us: us(ttft),
        latency_us: us(pipe.latency_cycles),
        slowest_stage_us: us(pipe.slowest_stage_cycles),
        handoff_us: us(pipe.handoff_cycles),
        host_loop_us: us(pipe.loop_cycles),
        sram_bytes_per_chip_max: p.stages.iter().map(|s| s.sram_bytes).max().unwrap_or(0),
        sram_usable_bytes_per_chip: m.sram_usable_bytes(),
        sram_capacity_bytes_per_chip: m.sram_capacity_bytes(),
        utilization: util,
        programs: p.programs.len() + p.prefill.len(),
        instructions,
        decisions: p.decisions.clone(),
    })
}

/// The human-readable report.
pub fn render(r: &SimReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} on {} × GroqChip ({} profile, {}): TP {} × {} stage(s)",
        r.model, r.chips, r.profile, r.profile_status, r.tensor_parallel, r.stages
    );
    let _ = writeln!(
        s,
        "batch {} = {} microbatch(es) × {}; weights {} ({} int4 / {} int8 blocks); context {}",
        r.batch, r.microbatches, r.microbatch, r.weights, r.int4_blocks, r.int8_blocks, r.context
    );
    let _ = writeln!(
        s,
        "per token: {:.2} µs ({} cycles) → {:.1} tok/s per user, {:.1} tok/s aggregate",
        r.us_per_token, r.cycles_per_token, r.tokens_per_s_per_user, r.tokens_per_s_aggregate
    );
    let _ = writeln!(
        s,
        "lower bound: {:.2} µs per token (schedule efficiency {:.0} %); the slowest stage is bound by {}",
        r.lower_bound_us_per_token,
        r.schedule_efficiency * 100.0,
        r.binding_resource
    );
    let _ = writeln!(
        s,
        "latency through the pipeline {:.2} µs (slowest stage {:.2} µs, handoffs {:.2} µs, host loop {:.2} µs)",
        r.latency_us, r.slowest_stage_us, r.handoff_us, r.host_loop_us
    );
    let _ = writeln!(
        s,
        "time to first token, {}-token prompt: {:.1} µs",
        r.prompt, r.ttft_us
    );
    let _ = writeln!(
        s,
        "SRAM per chip: {:.1} MB max (usable {:.1} MB of {:.1} MB)",
        r.sram_bytes_per_chip_max as f64 / 1e6,
        r.sram_usable_bytes_per_chip as f64 / 1e6,
        r.sram_capacity_bytes_per_chip as f64 / 1e6
    );
    let u: Vec<String> = r
        .utilization
        .iter()
        .map(|(k, v)| format!("{k} {:.1} %", v * 100.0))
        .collect();
    let _ = writeln!(s, "utilization: {}", u.join(", "));
    let _ = writeln!(
        s,
        "schedule: {} distinct programs, {} instructions, all checked (no conflicts, no late operands)",
        r.programs, r.instructions
    );
    for d in &r.decisions {
        let _ = writeln!(s, "  - {d}");
    }
    s
}

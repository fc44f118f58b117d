//! The pass manager: runs a pipeline with the self-help instruments.
//!
//! - `--verify-each` (default in debug builds and tests): the IR verifier after every pass,
//!   naming the pass that broke the graph: `broken graph after pass #3 fuse-int4-dequant
//!   at %17: …`;
//! - phase invariants ([`crate::phase`]) right after the pass that establishes them, and
//!   with `--verify-each` after every later pass too;
//! - `--print-ir-after-all`, `--print-ir-after=NAME`, `--print-ir-after-change`;
//! - `--time-passes` (a table), pass statistics (`--stats`);
//! - `--opt-bisect-limit=N`: run only passes `#1..=N` (LLVM's `-opt-bisect-limit`), to
//!   find the pass that breaks a model.

use lpuc_ir::verify::At;
use lpuc_ir::Graph;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::pass::{Pass, PassContext, Stats};
use crate::phase::Phase;
use crate::pipeline::{self, PassSpec};
use crate::registry;
use crate::target::TargetKind;

#[derive(Clone, Debug)]
pub struct Instruments {
    pub print_ir_after_all: bool,
    pub print_ir_after: Vec<String>,
    pub print_ir_after_change: bool,
    pub time_passes: bool,
    pub verify_each: bool,
    pub opt_bisect_limit: Option<usize>,
}

impl Default for Instruments {
    fn default() -> Self {
        Instruments {
            print_ir_after_all: false,
            print_ir_after: vec![],
            print_ir_after_change: false,
            time_passes: false,
            verify_each: cfg!(debug_assertions),
            opt_bisect_limit: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PipelineError {
    #[error("bad pipeline: {0}")]
    Parse(String),
    #[error("{0}")]
    Spec(String),
    #[error("pass #{index} {name} failed: {msg}")]
    Failed {
        index: usize,
        name: String,
        msg: String,
    },
    #[error("broken graph after pass #{index} {name}{at}: {msg}")]
    Broken {
        index: usize,
        name: String,
        at: String,
        msg: String,
    },
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Per pass (in order): name, wall time, whether it changed the graph (`None`: skipped
    /// by the bisect limit).
    pub passes: Vec<(String, Duration, Option<bool>)>,
    pub verify: Duration,
    pub stats: Stats,
    pub notes: Vec<(String, String)>,
}

impl Report {
    /// The `--time-passes` table; `extra` rows (parse, print) come from the caller.
    pub fn timing_table(&self, extra: &[(&str, Duration)]) -> String {
        let mut rows: Vec<(String, Duration)> = self
            .passes
            .iter()
            .map(|(n, d, _)| (n.clone(), *d))
            .collect();
        rows.push(("verifier".into(), self.verify));
        rows.extend(extra.iter().map(|(n, d)| (n.to_string(), *d)));
        let total: Duration = rows.iter().map(|r| r.1).sum();
        let t = total.as_secs_f64().max(1e-12);
        let mut o = String::new();
        o.push_str(
            "===-------------------------------------------------------------------------===\n",
        );
        o.push_str("                      ... Pass execution timing report ...\n");
        o.push_str(
            "===-------------------------------------------------------------------------===\n",
        );
        o.push_str(&format!(
            "  Total Execution Time: {:.4} seconds\n\n",
            total.as_secs_f64()
        ));
        o.push_str("   ---Wall Time---  --- Name ---\n");
        for (n, d) in &rows {
            o.push_str(&format!(
                "   {:.4} ({:>5.1}%)  {n}\n",
                d.as_secs_f64(),
                100.0 * d.as_secs_f64() / t
            ));
        }
        o.push_str(&format!("   {:.4} (100.0%)  Total\n", total.as_secs_f64()));
        o
    }
}

pub struct PassManager {
    specs: Vec<PassSpec>,
    passes: Vec<Box<dyn Pass>>,
    pub instruments: Instruments,
    pub target: TargetKind,
    /// What `target = cpu` means for target-parameterized passes (`tile`): the reference
    /// machine by default, [`crate::target::CpuDesc::host`] when compiling for this host.
    pub cpu: crate::target::CpuDesc,
}

impl PassManager {
    /// Parses and resolves pipeline text (see [`crate::pipeline`]).
    pub fn parse(text: &str, target: TargetKind) -> Result<PassManager, PipelineError> {
        let specs = pipeline::parse(text).map_err(PipelineError::Parse)?;
        let passes = specs
            .iter()
            .map(registry::create)
            .collect::<Result<Vec<_>, _>>()
            .map_err(PipelineError::Spec)?;
        Ok(PassManager {
            specs,
            passes,
            instruments: Instruments::default(),
            target,
            cpu: crate::target::CpuDesc::default(),
        })
    }

    /// Appends a pass that is not in the registry (tests, embedders).
    pub fn push(&mut self, pass: Box<dyn Pass>) {
        self.specs.push(PassSpec {
            name: pass.name().to_string(),
            options: vec![],
        });
        self.passes.push(pass);
    }

    /// The target's default pipeline.
    pub fn default_for(target: TargetKind) -> PassManager {
        PassManager::parse(default_pipeline(target), target)
            .expect("the default pipelines parse (tested)")
    }

    /// The pipeline in its one-line canonical form (what `--print-pipeline` shows).
    pub fn pipeline_text(&self) -> String {
        pipeline::print(&self.specs)
    }

    /// Checks `--print-ir-after` names against the registry.
    pub fn set_print_ir_after(&mut self, names: Vec<String>) -> Result<(), PipelineError> {
        for n in &names {
            registry::lookup(n)
                .map_err(|m| PipelineError::Spec(format!("--print-ir-after: {m}")))?;
        }
        self.instruments.print_ir_after = names;
        Ok(())
    }

    /// Runs the pipeline on `g`; IR dumps and bisect notes go to `log`.
    pub fn run(&self, g: &mut Graph, log: &mut dyn Write) -> Result<Report, PipelineError> {
        let ins = &self.instruments;
        let mut cx = PassContext::new(self.target);
        cx.cpu = self.cpu.clone();
        let mut report = Report::default();
        let mut phases: Vec<(Phase, usize, &'static str)> = Vec::new();
        for (i, pass) in self.passes.iter().enumerate() {
            let index = i + 1;
            let name = pass.name();
            if let Some(limit) = ins.opt_bisect_limit {
                if index > limit {
                    let _ = writeln!(log, "BISECT: NOT running pass ({index}) {name}");
                    report.passes.push((name.to_string(), Duration::ZERO, None));
                    continue;
                }
                let _ = writeln!(log, "BISECT: running pass ({index}) {name}");
            }
            let before = ins.print_ir_after_change.then(|| lpuc_ir::text::print(g));
            cx.current = name;
            let t0 = Instant::now();
            let changed = pass.run(g, &mut cx).map_err(|msg| PipelineError::Failed {
                index,
                name: name.to_string(),
                msg,
            })?;
            let dt = t0.elapsed();
            report.passes.push((name.to_string(), dt, Some(changed)));
            let t1 = Instant::now();
            if ins.verify_each {
                verify(g, index, name)?;
            }
            if let Some(ph) = pass.establishes() {
                phases.push((ph, index, name));
                check_phase(g, ph, index, name, index, name)?;
            } else if ins.verify_each {
                for &(ph, pi, pn) in &phases {
                    check_phase(g, ph, index, name, pi, pn)?;
                }
            }
            report.verify += t1.elapsed();
            let print = ins.print_ir_after_all
                || ins.print_ir_after.iter().any(|n| n == name)
                || before
                    .as_ref()
                    .is_some_and(|b| *b != lpuc_ir::text::print(g));
            if print {
                let _ = writeln!(log, "// -----// IR Dump After {name} (#{index}) //----- //");
                let _ = write!(log, "{}", lpuc_ir::text::print(g));
            }
        }
        report.stats = cx.stats;
        report.notes = cx.notes.into_iter().collect();
        Ok(report)
    }
}

pub fn default_pipeline(target: TargetKind) -> &'static str {
    match target {
        TargetKind::Cpu => pipeline::CPU_PIPELINE,
        TargetKind::Groq => pipeline::GROQ_PIPELINE,
    }
}

fn verify(g: &Graph, index: usize, name: &str) -> Result<(), PipelineError> {
    let Err(errs) = lpuc_ir::verify::verify(g) else {
        return Ok(());
    };
    let e = errs.0.first().cloned();
    let (at, msg) = match e {
        Some(e) => match e.at {
            At::Value(v) => {
                let n = g.numbering().get(&v).copied().unwrap_or(usize::MAX);
                let prefix = format!("%{n} = ");
                let msg = e
                    .message
                    .strip_prefix(&prefix)
                    .unwrap_or(&e.message)
                    .to_string();
                (format!(" at %{n}"), msg)
            }
            _ => (String::new(), e.message),
        },
        None => (String::new(), "verifier failed".into()),
    };
    let more = errs.0.len().saturating_sub(1);
    let msg = if more > 0 {
        format!("{msg} (and {more} more)")
    } else {
        msg
    };
    Err(PipelineError::Broken {
        index,
        name: name.to_string(),
        at,
        msg,
    })
}

fn check_phase(
    g: &Graph,
    ph: Phase,
    index: usize,
    name: &str,
    by: usize,
    by_name: &str,
) -> Result<(), PipelineError> {
    ph.check(g).map_err(|(v, msg)| {
        let at = v
            .and_then(|v| g.numbering().get(&v).copied())
            .map(|n| format!(" at %{n}"))
            .unwrap_or_default();
        PipelineError::Broken {
            index,
            name: name.to_string(),
            at,
            msg: format!(
                "{msg} (phase `{}` holds since pass #{by} {by_name})",
                ph.name()
            ),
        }
    })
}

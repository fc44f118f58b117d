//! The `Pass` trait and what a pass sees while it runs.
//!
//! A pass is a thin wrapper around a free function: a name, a one-line summary (in the
//! registry), and `run`. Passes report what they did through [`PassContext::stat`]
//! (printed by `--stats`) and return whether the graph changed.

use lpuc_ir::Graph;
use std::collections::BTreeMap;

use crate::phase::Phase;
use crate::target::{TargetKind, TileTarget};

pub trait Pass {
    fn name(&self) -> &'static str;

    /// Rewrites `g`. Returns whether anything changed; an `Err` is a message for the user
    /// (the pass manager adds the pass's name and position).
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String>;

    /// The invariant this pass establishes for the rest of the pipeline, checked right
    /// after it and (with `--verify-each`) after every later pass.
    fn establishes(&self) -> Option<Phase> {
        None
    }
}

/// Counters per pass: `(pass, counter) -> value`, in pipeline order of first report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub entries: Vec<(String, String, i64)>,
}

impl Stats {
    pub fn add(&mut self, pass: &str, key: &str, n: i64) {
        match self
            .entries
            .iter_mut()
            .find(|(p, k, _)| p == pass && k == key)
        {
            Some(e) => e.2 += n,
            None => self.entries.push((pass.to_string(), key.to_string(), n)),
        }
    }

    pub fn get(&self, pass: &str, key: &str) -> Option<i64> {
        self.entries
            .iter()
            .find(|(p, k, _)| p == pass && k == key)
            .map(|e| e.2)
    }

    /// The `--stats` table (LLVM's `-stats` layout).
    pub fn table(&self) -> String {
        let mut o = String::new();
        o.push_str(
            "===-------------------------------------------------------------------------===\n",
        );
        o.push_str("                          ... Statistics Collected ...\n");
        o.push_str(
            "===-------------------------------------------------------------------------===\n\n",
        );
        let w = self
            .entries
            .iter()
            .map(|e| e.2.to_string().len())
            .max()
            .unwrap_or(1);
        for (p, k, n) in &self.entries {
            o.push_str(&format!("{n:>w$} {p} - {k}\n"));
        }
        o
    }
}

/// What a running pass may read and report.
pub struct PassContext {
    /// The target the pipeline compiles for (`lpuc opt --target`); passes with their own
    /// `target` option override it.
    pub target: TargetKind,
    /// The CPU that `target = cpu` describes (the reference machine unless the caller,
    /// e.g. the driver, gives the host's).
    pub cpu: crate::target::CpuDesc,
    pub stats: Stats,
    /// Name of the pass running now (set by the manager).
    pub current: &'static str,
    /// Free-form notes a pass wants shown to the user (e.g. the memory plan summary).
    pub notes: BTreeMap<String, String>,
}

impl PassContext {
    pub fn new(target: TargetKind) -> PassContext {
        PassContext {
            target,
            cpu: crate::target::CpuDesc::default(),
            stats: Stats::default(),
            current: "",
            notes: BTreeMap::new(),
        }
    }

    pub fn stat(&mut self, key: &str, n: i64) {
        let p = self.current;
        self.stats.add(p, key, n);
    }

    pub fn tile_target(&self) -> TileTarget {
        TileTarget::of(self.target)
    }
}

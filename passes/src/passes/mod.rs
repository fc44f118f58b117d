//! One file per pass. Each file's module doc states the pass's algebra; the algorithm is a
//! free function and the `Pass` impl a thin wrapper.

pub mod canonicalize;
pub mod cse;
pub mod dce;
pub mod flash_attention;
pub mod fold_rms_norm_scale;
pub mod fuse_int4_dequant;
pub mod fuse_swiglu;
pub mod plan_buffers;
pub mod tile;

use lpuc_ir::Graph;

use crate::egraph::{self, cost::CostModel, rules::Rw};
use crate::pass::PassContext;

/// Runs an egg rule set with the context's target cost model and reports statistics:
/// islands, egg runs, rule applications, ops formed/removed, limit hits.
pub(crate) fn run_egg(g: &mut Graph, cx: &mut PassContext, rules: &[Rw]) -> Result<bool, String> {
    let before = egraph::op_histogram(g);
    let model = CostModel::for_target(&cx.tile_target());
    let out = egraph::run_rules(g, rules, &model);
    let after = egraph::op_histogram(g);
    cx.stat("islands", out.islands as i64);
    cx.stat("egg runs (distinct islands)", out.unique as i64);
    cx.stat("islands rewritten", out.changed as i64);
    for (r, n) in &out.applied {
        cx.stat(&format!("applications of rule {r}"), *n as i64);
    }
    let mut names: Vec<&str> = before.keys().chain(after.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    for n in names {
        let d = after.get(n).copied().unwrap_or(0) - before.get(n).copied().unwrap_or(0);
        if d != 0 {
            cx.stat(&format!("{n} ops added (removed if negative)"), d);
        }
    }
    if !out.limit_hits.is_empty() {
        cx.stat("egg limit hits", out.limit_hits.len() as i64);
        let key = format!("{}: egg limits", cx.current);
        cx.notes.insert(key, out.limit_hits.join("; "));
    }
    Ok(out.changed > 0)
}

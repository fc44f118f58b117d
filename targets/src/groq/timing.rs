//! Facts of the timing law and of regions that both the scheduler (which plans with them)
//! and the checker (which re-derives every fact from finished instructions) need. They
//! live here, below both, so the checker trusts nothing the scheduler computed: it only
//! shares the definitions.

use super::cost::Cycles;
use super::isa::{Floorplan, Instr, Region};

/// Cycle at which a written region can be read (all vectors in SRAM).
pub fn write_ready(fp: &Floorplan, ins: &Instr) -> Cycles {
    let last = ins
        .slice_issues(fp)
        .iter()
        .map(|(_, t)| *t)
        .max()
        .unwrap_or(ins.issue);
    last + ins.occ + fp.d_func
}

/// Whether two regions of one tensor overlap (row steps are bounded by their span).
pub fn overlaps(a: &Region, b: &Region) -> bool {
    let span = |r: &Region| {
        let last = r.row0 + r.step * r.rows.saturating_sub(1);
        (r.row0, last + 1)
    };
    let (a0, a1) = span(a);
    let (b0, b1) = span(b);
    a.tensor == b.tensor
        && a0 < b1
        && b0 < a1
        && a.col0 < b.col0 + b.cols
        && b.col0 < a.col0 + a.cols
}

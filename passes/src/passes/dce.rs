//! `dce`: removes nodes that no output and no state update (`kv_append`) depends on.
//!
//! Unused weights go too, so a fused-away `dequant` leaves no trace.

use lpuc_ir::Graph;

use crate::pass::{Pass, PassContext};

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        let n = g.dead_code_elim();
        cx.stat("nodes removed", n as i64);
        Ok(n > 0)
    }
}

//! `cse`: common subexpression elimination over the whole graph.
//!
//! Two pure nodes with the same op (attributes included), the same operands, the same
//! type and the same annotations compute the same value; the later one is replaced by the
//! earlier. Inputs and weights are unique by name already; `kv_append` and `output` are
//! effects and never merge. One walk in topological order suffices because operands are
//! merged before their users are keyed.

use lpuc_ir::op::Op;
use lpuc_ir::{Graph, Value};
use std::collections::HashMap;

use crate::pass::{Pass, PassContext};

pub struct Cse;

/// Returns how many nodes were merged away.
pub fn cse(g: &mut Graph) -> usize {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut merged = 0;
    for v in g.sorted_values() {
        let op = g.op(v);
        if !op.is_pure() || matches!(op, Op::Input { .. } | Op::Weight { .. }) {
            continue;
        }
        let n = g.node(v);
        let key = format!("{:?}|{:?}|{}|{:?}", n.op, g.operands(v), n.ty, n.annot);
        match seen.get(&key) {
            Some(&first) => {
                g.replace_all_uses(v, first);
                g.remove(v);
                merged += 1;
            }
            None => {
                seen.insert(key, v);
            }
        }
    }
    merged
}

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        let n = cse(g);
        cx.stat("nodes merged", n as i64);
        Ok(n > 0)
    }
}

//! Graphviz export: one box per value (`%N = op : type`), edges labelled with operand
//! positions when an op has more than one operand. Numbering matches the text form.

use std::fmt::Write as _;

use crate::graph::Graph;
use crate::op::Op;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn to_dot(g: &Graph) -> String {
    let num = g.numbering();
    let mut o = String::new();
    let _ = writeln!(o, "digraph \"{}\" {{", esc(&g.name));
    o.push_str("  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    for v in g.sorted_values() {
        let n = g.node(v);
        let label = match n.op.label() {
            Some(l) => format!("%{} = {} \"{}\"\\n{}", num[&v], n.op.name(), esc(l), n.ty),
            None => format!("%{} = {}\\n{}", num[&v], n.op.name(), n.ty),
        };
        let style = match n.op {
            Op::Weight { .. } => ", style=filled, fillcolor=\"#e8f0ff\"",
            Op::Input { .. } | Op::Output { .. } => ", style=filled, fillcolor=\"#e8ffe8\"",
            Op::KvAppend { .. } => ", style=filled, fillcolor=\"#fff0e0\"",
            _ => "",
        };
        let _ = writeln!(o, "  v{} [label=\"{}\"{}];", num[&v], label, style);
    }
    for v in g.sorted_values() {
        let ops = g.operands(v);
        for (i, a) in ops.iter().enumerate() {
            if ops.len() > 1 {
                let _ = writeln!(o, "  v{} -> v{} [label=\"{}\"];", num[a], num[&v], i);
            } else {
                let _ = writeln!(o, "  v{} -> v{};", num[a], num[&v]);
            }
        }
    }
    o.push_str("}\n");
    o
}

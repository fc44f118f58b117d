//! Per-target cost model for extraction: a roofline estimate of an op's time.
//!
//! `cost = bytes moved / bandwidth + flops / throughput + fixed per-op overhead` (ns), with
//! weights counted in their stored (packed) size. Every fusion rule removes at least one
//! materialized intermediate (a write and a read) and one op, so it lowers this cost on
//! every target; that is what "rules never make the graph worse" means here, and the
//! engine enforces it per island by keeping the original when the extracted DAG is not
//! strictly cheaper (see [`super::run_rules`]).
//!
//! Symbolic dims are evaluated at [`COST_BINDING`].

use lpuc_ir::op::Op;
use lpuc_ir::types::{Bindings, TensorType};

use crate::target::TileTarget;

/// A short prefill against a half-full cache. Every rule here lowers the cost at every
/// binding, so this only decides ties between equally good alternatives.
pub const COST_BINDING: Bindings = Bindings {
    b: 1,
    p: 512,
    s: 16,
};

#[derive(Clone, Debug)]
pub struct CostModel {
    pub bytes_per_ns: f64,
    pub flops_per_ns: f64,
    /// Fixed cost of one op (a kernel call on CPU, an instruction issue on the LPU); makes
    /// a fusion that moves no fewer bytes (a reshape) still cheaper.
    pub op_ns: f64,
}

impl CostModel {
    pub fn for_target(t: &TileTarget) -> CostModel {
        match t {
            TileTarget::Cpu(c) => CostModel {
                bytes_per_ns: c.mem_bytes_per_ns,
                flops_per_ns: c.flops_per_ns,
                op_ns: 100.0,
            },
            TileTarget::Groq(g) => CostModel {
                bytes_per_ns: g.mem_bytes_per_ns,
                flops_per_ns: g.flops_per_ns,
                op_ns: 5.0,
            },
        }
    }

    /// Estimated time of one op, ns.
    pub fn op_cost(&self, op: &Op, result: &TensorType, operands: &[&TensorType]) -> f64 {
        let numel = |t: &TensorType| -> f64 {
            t.eval_shape(&COST_BINDING)
                .map(|s| s.iter().product::<usize>() as f64)
                .unwrap_or(f64::INFINITY)
        };
        let bytes =
            |t: &TensorType| numel(t) * t.dtype.block_bytes() as f64 / t.dtype.block_elems() as f64;
        if matches!(op, Op::Reshape) {
            // a view: no data moves
            return 0.1 * self.op_ns;
        }
        let moved: f64 = bytes(result) + operands.iter().map(|t| bytes(t)).sum::<f64>();
        let flops = match op {
            Op::Matmul | Op::QMatmul => {
                let k = operands[0]
                    .eval_shape(&COST_BINDING)
                    .and_then(|s| s.last().copied())
                    .unwrap_or(1) as f64;
                2.0 * numel(result) * k
            }
            Op::FlashAttention { .. } => {
                let t = operands[1]
                    .eval_shape(&COST_BINDING)
                    .and_then(|s| s.get(2).copied())
                    .unwrap_or(1) as f64;
                4.0 * numel(result) * t
            }
            _ => numel(result),
        };
        moved / self.bytes_per_ns + flops / self.flops_per_ns + self.op_ns
    }
}

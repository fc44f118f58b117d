//! `canonicalize`: algebraic identities, by equality saturation on each island.
//!
//! ```text
//! scale₁(x)                  = x
//! scale_a(scale_b(x))        = scale_{a·b}(x)
//! transpose_id(x)            = x
//! transpose_p(transpose_q(x)) = transpose_{q∘p}(x)       r[i] = q[p[i]]
//! reshape_s(reshape_t(x))    = reshape_s(x)
//! reshape_s(x : s)           = x
//! dequant(x : f32)           = x
//! repeat_kv₁(x)              = x
//! ```
//! Each identity removes an op; none adds one. Runs first so every fusion pattern sees
//! one spelling of its input.

use lpuc_ir::Graph;

use crate::egraph::rules;
use crate::pass::{Pass, PassContext};

pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        super::run_egg(g, cx, &rules::algebra())
    }
}

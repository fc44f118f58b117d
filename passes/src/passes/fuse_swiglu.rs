//! `fuse-swiglu`: the gated FFN activation as one op.
//!
//! ```text
//! mul(silu(a), b) = swiglu(a, b)      a, b of one shape (no broadcast)
//! mul(b, silu(a)) = swiglu(a, b)
//! ```

use lpuc_ir::Graph;

use crate::egraph::rules;
use crate::pass::{Pass, PassContext};

pub struct FuseSwiglu;

impl Pass for FuseSwiglu {
    fn name(&self) -> &'static str {
        "fuse-swiglu"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        super::run_egg(g, cx, &rules::swiglu())
    }
}

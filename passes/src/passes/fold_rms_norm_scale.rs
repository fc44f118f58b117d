//! `fold-rms-norm-scale`: the norm weight becomes the norm's second operand.
//!
//! ```text
//! mul(rms_norm(x), w) = rms_norm(x, w)       w : [D], D the last dim of x
//! mul(w, rms_norm(x)) = rms_norm(x, w)
//! ```
//! One pass over the row instead of two (a CPU kernel and an LPU VXM chain both scale
//! while they normalize).

use lpuc_ir::Graph;

use crate::egraph::rules;
use crate::pass::{Pass, PassContext};

pub struct FoldRmsNormScale;

impl Pass for FoldRmsNormScale {
    fn name(&self) -> &'static str {
        "fold-rms-norm-scale"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        super::run_egg(g, cx, &rules::norm())
    }
}

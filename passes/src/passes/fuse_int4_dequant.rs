//! `fuse-int4-dequant`: weights stay packed.
//!
//! ```text
//! matmul(x, dequant(w))       = qmatmul(x, w)          w : [N, K] in q4_0, q4_1, q8_0, q4_k, q6_k, f16, …
//! embedding(dequant(t), ids)  = embedding(t, ids)      rows are dequantized as they are read
//! ```
//! After it nothing materializes an f32 copy of a weight that feeds a matmul or an
//! embedding. A tied output head (`token_embd.weight` read by the embedding and by the
//! last matmul) fuses like any other weight: the embedding already reads packed rows, and
//! the head becomes `qmatmul(x, token_embd.weight)`.

use lpuc_ir::Graph;

use crate::egraph::rules;
use crate::pass::{Pass, PassContext};

pub struct FuseInt4Dequant;

impl Pass for FuseInt4Dequant {
    fn name(&self) -> &'static str {
        "fuse-int4-dequant"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        super::run_egg(g, cx, &rules::dequant_fusion())
    }
}

//! `flash-attention`: causal grouped-query attention as one op with an online softmax.
//!
//! ```text
//! matmul(softmax(scale_f(matmul(Q, repeat_kv_n(K))) + causal_mask),
//!        transpose_[0,1,3,2](repeat_kv_n(V)))
//!   = flash_attention_{f, block}(Q, K, V)
//! ```
//! with `Q : [B, H, S, D]`, `K, V : [B, KVH, P+S, D]` (the `kv_append` results), `H = n·KVH`;
//! also without `repeat_kv` (`H = KVH`) and with the mask on the left of the `add`. The
//! fused op reads each KV head once for its `n` query heads (no `repeat_kv` copies) and
//! never materializes the `[B, H, S, P+S]` scores: keys are visited in blocks of `block`
//! rows with a running max and sum (Dao et al. 2022).
//!
//! It does not fire on near misses: no mask or another mask, a scale that is not the
//! constant `scale` op (a `mul` by a tensor), softmax over another axis (a transpose around
//! it), V not transposed by `[0, 1, 3, 2]`, or queries/keys whose row dims are not `S` and
//! `P+S` (the mask would mean something else). See `tests/filetests/flash-attention/negative_*`.

use lpuc_ir::Graph;

use crate::egraph::rules;
use crate::pass::{Pass, PassContext};

pub struct FlashAttention {
    pub block: u32,
}

impl Pass for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool, String> {
        super::run_egg(g, cx, &rules::attention(self.block))
    }
}

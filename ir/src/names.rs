//! Tensor and state naming conventions shared by every consumer of a graph.
//!
//! GGUF (and so `import`/`build_llama`) names a decoder block's tensors `blk.N.*` and
//! lpuc names its KV-cache states `blk.N.k` / `blk.N.v`. Passes (egg islands), the Groq
//! lowering and the CPU backend all need "which layer is this?": this is the one parser.

/// The layer of a `blk.N.…` name: `blk.12.attn_q.weight` → 12; anything else → `None`.
pub fn block_layer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("blk.")?;
    rest.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::block_layer;

    #[test]
    fn layers() {
        assert_eq!(block_layer("blk.0.attn_q.weight"), Some(0));
        assert_eq!(block_layer("blk.29.k"), Some(29));
        assert_eq!(block_layer("blk.x.k"), None);
        assert_eq!(block_layer("output.weight"), None);
        assert_eq!(block_layer("blk."), None);
        assert_eq!(block_layer("blk.99999999999.k"), None);
    }
}

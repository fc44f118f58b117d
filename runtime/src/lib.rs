//! `lpuc-runtime`: runs compiled programs. Weights (mmap), KV cache, threads; the tokenizer,
//! the sampler and the generation loop; fetching the default model.

pub mod fetch;
pub mod jit;

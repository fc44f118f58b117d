//! lpuc-runtime (see ARCHITECTURE.md).

pub mod chat;
pub mod sampler;
pub mod tokenizer;

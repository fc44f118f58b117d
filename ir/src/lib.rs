//! `lpuc-ir`: the dataflow IR every other part of lpuc reads and writes.
//!
//! Reading order follows the data: [`dtype`] and [`types`] (element types, symbolic
//! shapes), [`op`] (the op set), [`graph`] (the petgraph-backed graph behind typed
//! [`Value`] ids), [`text`] (printer and parser of the `.ir` form), [`verify`] (every
//! invariant a well-formed graph keeps), [`interp`] (the slow, obviously-correct reference
//! interpreter), [`builder`] (LLaMA graphs from a [`builder::LlamaConfig`]), [`gguf`] and
//! [`quant`] (the GGUF container and its block formats), [`artifact`] (binary form).

pub mod dtype;
pub mod gguf;
pub mod quant;

pub use dtype::DType;

//! `lpuc-ir`: the dataflow IR every other part of lpuc reads and writes.
//!
//! Reading order follows the data: [`dtype`] and [`types`] (element types, symbolic
//! shapes), [`op`] (the op set and its conventions), [`graph`] (the petgraph-backed graph
//! behind typed [`Value`] ids), [`text`] (printer and parser of the `.ir` form), [`verify`]
//! (every invariant a well-formed graph keeps), [`interp`] (the slow, obviously-correct
//! reference interpreter), [`builder`] (LLaMA graphs from a [`builder::LlamaConfig`]),
//! [`weights`] (weight stores), [`gguf`] and [`quant`] (the GGUF container and its block
//! formats), [`names`] (the `blk.N` naming convention), [`artifact`] (the binary form, behind one module).
//!
//! ```
//! use lpuc_ir::{builder::{build_llama, LlamaConfig}, graph::WeightSource, text, verify};
//! let cfg = LlamaConfig::preset("tiny").unwrap();
//! let g = build_llama(&cfg, WeightSource::Random { seed: 1 }).unwrap();
//! verify::verify(&g).unwrap();
//! let t = text::print(&g);
//! assert_eq!(text::print(&text::parse(&t, "tiny.ir").unwrap()), t);
//! ```

pub mod artifact;
pub mod builder;
pub mod dot;
pub mod dtype;
pub mod fsio;
pub mod gguf;
pub mod graph;
pub mod import;
pub mod interp;
pub mod names;
pub mod op;
pub mod quant;
pub mod text;
pub mod types;
pub mod verify;
pub mod weights;

pub use dtype::DType;
pub use graph::{Graph, Value};
pub use op::Op;
pub use types::{Dim, Sym, TensorType};

//! `lpuc-codegen`: CPU kernels generated as LLVM IR, specialised to the model's shapes,
//! optimised for the host and JIT-compiled (with an on-disk cache).
//!
//! Reading order: [`pack`] (the packed weight and quantized activation formats, and scalar
//! references that define the kernels' results), [`irtext`] (the IR text writer),
//! [`kernels`] (one generator per [`kernels::KernelSpec`]), [`jit`] (compile, cache, load).

pub mod irtext;
pub mod jit;
pub mod kernels;
pub mod pack;

pub use jit::{Host, Kernels};
pub use kernels::{module_for, KernelSpec};

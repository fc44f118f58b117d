//! `lpuc-codegen`: CPU kernels generated as LLVM IR text, specialised to the model's
//! shapes, and loaded from an on-disk cache of shared objects. This crate does not link
//! LLVM: on a cache miss [`jit`] runs the separate `lpuc-kernelc` binary (crate `kernelc/`),
//! which optimises the text for the host CPU and links the shared object.
//!
//! Reading order: [`pack`] (the packed weight and quantized activation formats, and scalar
//! references that define the kernels' results), [`irtext`] (the IR text writer),
//! [`kernels`] (one generator per [`kernels::KernelSpec`]), [`jit`] (host detection, cache
//! key, running the compiler, loading).

pub mod irtext;
pub mod jit;
pub mod kernels;
pub mod pack;

pub use jit::{Host, Kernelc, Kernels};
pub use kernels::{module_for, KernelSpec};

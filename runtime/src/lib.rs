//! `lpuc-runtime`: runs compiled programs. Model loading (`model`), the default-model fetch
//! (`fetch`), the tokenizer, sampler and chat templates, and the generation loop over any
//! [`generate::Forward`] backend.

pub mod chat;
pub mod fetch;
pub mod generate;
pub mod jit;
pub mod model;
pub mod npy;
pub mod sampler;
pub mod tokenizer;

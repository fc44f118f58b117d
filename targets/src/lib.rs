//! lpuc-targets (see ARCHITECTURE.md).

pub mod groq;

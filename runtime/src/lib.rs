//! lpuc-runtime (see ARCHITECTURE.md).

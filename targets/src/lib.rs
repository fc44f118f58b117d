//! lpuc-targets (see ARCHITECTURE.md).

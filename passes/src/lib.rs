//! lpuc-passes (see ARCHITECTURE.md).

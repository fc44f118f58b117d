//! lpuc-codegen (see ARCHITECTURE.md).

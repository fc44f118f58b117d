//! GGUF container reader (placeholder until the GGUF work lands).

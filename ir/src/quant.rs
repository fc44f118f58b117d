//! GGUF block formats: reference quantizers and dequantizers (placeholder until the GGUF work lands).

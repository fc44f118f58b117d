//! Element types, including GGUF's quantized block formats as first-class dtypes.
//!
//! A quantized dtype describes a *block* layout along the innermost (contiguous) axis:
//! `block_elems` values are stored in `block_bytes` bytes. The layouts are GGUF's, bit for bit
//! (see `quant.rs` for the exact structs and the reference (de)quantizers). A tensor of a
//! quantized dtype must have an innermost dimension that is a multiple of `block_elems`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An element type. The `Display` form is the one the text IR uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
    BF16,
    I8,
    I32,
    /// GGUF Q4_0: 32 weights, f16 scale `d`, 16 bytes of nibbles; w = d · (q − 8).
    Q4_0,
    /// GGUF Q4_1: 32 weights, f16 scale `d` and min `m`, 16 bytes of nibbles; w = d · q + m.
    Q4_1,
    /// GGUF Q8_0: 32 weights, f16 scale `d`, 32 signed bytes; w = d · q.
    Q8_0,
    /// GGUF Q4_K: super-blocks of 256 weights (8 sub-blocks of 32, 6-bit scales and mins).
    Q4K,
    /// GGUF Q6_K: super-blocks of 256 weights (16 sub-blocks of 16, 8-bit scales).
    Q6K,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::I32,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4K,
        DType::Q6K,
    ];

    /// The spelling in the text IR.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q8_0 => "q8_0",
            DType::Q4K => "q4_k",
            DType::Q6K => "q6_k",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.name() == s)
    }

    /// Number of elements in one storage block (1 for plain scalar types).
    pub fn block_elems(self) -> u64 {
        match self {
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => 32,
            DType::Q4K | DType::Q6K => 256,
            _ => 1,
        }
    }

    /// Number of bytes one storage block takes.
    pub fn block_bytes(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 => 1,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q8_0 => 34,
            DType::Q4K => 144,
            DType::Q6K => 210,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I8 | DType::I32)
    }

    /// Bytes needed for `n` elements, or `None` if `n` is not a whole number of blocks
    /// (or the byte count overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        if n % self.block_elems() != 0 {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// Bits per weight, for reports.
    pub fn bits_per_elem(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_elems() as f64
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::from_name("q5_0"), None);
    }

    #[test]
    fn gguf_block_sizes() {
        // ggml's type_traits: blck_size / type_size.
        assert_eq!(
            (DType::Q4_0.block_elems(), DType::Q4_0.block_bytes()),
            (32, 18)
        );
        assert_eq!(
            (DType::Q4_1.block_elems(), DType::Q4_1.block_bytes()),
            (32, 20)
        );
        assert_eq!(
            (DType::Q8_0.block_elems(), DType::Q8_0.block_bytes()),
            (32, 34)
        );
        assert_eq!(
            (DType::Q4K.block_elems(), DType::Q4K.block_bytes()),
            (256, 144)
        );
        assert_eq!(
            (DType::Q6K.block_elems(), DType::Q6K.block_bytes()),
            (256, 210)
        );
        assert_eq!(DType::Q4_1.bytes_for(576), Some(18 * 20));
        assert_eq!(DType::Q4_1.bytes_for(33), None);
        assert!((DType::Q4_0.bits_per_elem() - 4.5).abs() < 1e-9);
    }
}

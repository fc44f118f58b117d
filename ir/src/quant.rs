//! GGUF's element encodings: plain types and ggml's quantized block formats, with the
//! reference dequantizers and (for the simple formats) the reference quantizers.
//!
//! Invariants this module keeps:
//! - Every block layout is ggml's, byte for byte (little-endian, no padding); each block
//!   struct below documents its fields in storage order.
//! - [`dequantize`] reproduces ggml's `dequantize_row_*` results bit for bit: it does the
//!   same f32 operations in the same order (that order is why some expressions below are
//!   written the long way round).
//! - [`quantize`] for q4_0, q4_1 and q8_0 reproduces ggml's `quantize_row_*_ref` bit for
//!   bit on finite input, including its truncating `(int8_t)(x + 0.5f)` rounding.
//!   f16 rounds to nearest even; bf16 uses ggml's `ggml_compute_fp32_to_bf16` (round to
//!   nearest even, NaN forced quiet). K-quants are read-only here.
//! - Nothing panics on any input: lengths are checked up front and every block is handled
//!   through fixed-size arrays.

use crate::dtype::DType;
use half::f16;
use thiserror::Error;

/// Why a (de)quantization request was refused.
#[derive(Debug, Clone, PartialEq, Error, miette::Diagnostic)]
pub enum QuantError {
    #[error("{dtype}: {n} elements is not a whole number of {block}-element blocks")]
    NotBlockMultiple { dtype: DType, n: u64, block: u64 },
    #[error(
        "{dtype}: {n} elements are stored in {expected} bytes, but the source has {got} bytes"
    )]
    LengthMismatch {
        dtype: DType,
        n: u64,
        expected: u64,
        got: u64,
    },
    #[error("{dtype}: a source of {got} bytes is not a whole number of {block_bytes}-byte blocks")]
    RaggedSource {
        dtype: DType,
        got: u64,
        block_bytes: u64,
    },
    #[error("quantize to {dtype}: element {index} is {value}; block quantizers need finite input")]
    NonFinite {
        dtype: DType,
        index: usize,
        value: f32,
    },
    #[error("quantize to {dtype}: element {index} is {value}, not an integer in [{min}, {max}]")]
    NotRepresentable {
        dtype: DType,
        index: usize,
        value: f32,
        min: i64,
        max: i64,
    },
    #[error("quantize to {dtype}: lpuc has no reference quantizer for it (dequantization only)")]
    Unsupported { dtype: DType },
}

// ---------------------------------------------------------------------------------------
// Block structs. Each is parsed from / written to its exact byte image; no transmutes, so
// alignment and endianness never matter.
// ---------------------------------------------------------------------------------------

/// Elements per q4_0 / q4_1 / q8_0 block (ggml's `QK4_0`, `QK4_1`, `QK8_0`).
pub const QK: usize = 32;
/// Elements per K-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

fn f16_at(b: &[u8], i: usize) -> f16 {
    f16::from_le_bytes([b[i], b[i + 1]])
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// q4_0, 18 bytes: `d: f16` (scale), `qs: [u8; 16]`. Byte `j` of `qs` holds weight `j` in
/// its low nibble and weight `j + 16` in its high nibble; `w = d * (q - 8)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// q4_1, 20 bytes: `d: f16` (scale), `m: f16` (minimum), `qs: [u8; 16]` nibbles laid out
/// as in q4_0; `w = d * q + m`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// q8_0, 34 bytes: `d: f16` (scale), `qs: [i8; 32]`; `w = d * q`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// q4_K, 144 bytes: `d: f16` (super-scale of the sub-block scales), `dmin: f16`
/// (super-scale of the sub-block mins), `scales: [u8; 12]` (eight 6-bit scales and eight
/// 6-bit mins, packed as in [`q4k_scale_min`]), `qs: [u8; 128]`. The 256 weights form four
/// groups of 64; group `g` uses `qs[32g..32g+32]`, low nibbles for its first 32 weights
/// (sub-block `2g`), high nibbles for the next 32 (sub-block `2g+1`).
/// `w = d * scale[s] * q - dmin * min[s]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

/// q6_K, 210 bytes: `ql: [u8; 128]` (low 4 bits), `qh: [u8; 64]` (high 2 bits),
/// `scales: [i8; 16]` (one per 16 weights), `d: f16` (super-scale), in that order.
/// Each half of 128 weights uses 64 bytes of `ql` and 32 of `qh`; see
/// [`BlockQ6K::dequantize`] for the bit positions. `w = d * scale[s] * (q - 32)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

impl BlockQ4_0 {
    pub const BYTES: usize = 18;

    pub fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        BlockQ4_0 {
            d: f16_at(b, 0),
            qs: array(b, 2),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..2].copy_from_slice(&self.d.to_le_bytes());
        b[2..].copy_from_slice(&self.qs);
        b
    }

    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            // ggml: (int)(q & 0xF) - 8, then a float multiply.
            out[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            out[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }

    /// ggml's `quantize_row_q4_0_ref` for one block. The scale comes from the value with
    /// the largest magnitude (the first one on ties) so that it maps exactly to -8.
    pub fn quantize(x: &[f32; QK]) -> Self {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            // `(int8_t)(x + 8.5f)` truncates toward zero, then MIN(15, ..). Rust's `as`
            // truncates the same way (and saturates where C would be undefined).
            let lo = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let hi = ((x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            *q = lo | (hi << 4);
        }
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs,
        }
    }
}

impl BlockQ4_1 {
    pub const BYTES: usize = 20;

    pub fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        BlockQ4_1 {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qs: array(b, 4),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..2].copy_from_slice(&self.d.to_le_bytes());
        b[2..4].copy_from_slice(&self.m.to_le_bytes());
        b[4..].copy_from_slice(&self.qs);
        b
    }

    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (q & 0x0F) as f32 * d + m;
            out[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }

    /// ggml's `quantize_row_q4_1_ref` for one block: min and max span 16 levels.
    pub fn quantize(x: &[f32; QK]) -> Self {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let lo = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let hi = (((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            *q = lo | (hi << 4);
        }
        BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qs,
        }
    }
}

impl BlockQ8_0 {
    pub const BYTES: usize = 34;

    pub fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        let mut qs = [0i8; QK];
        for (q, &byte) in qs.iter_mut().zip(&b[2..]) {
            *q = byte as i8;
        }
        BlockQ8_0 {
            d: f16_at(b, 0),
            qs,
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..2].copy_from_slice(&self.d.to_le_bytes());
        for (byte, &q) in b[2..].iter_mut().zip(&self.qs) {
            *byte = q as u8;
        }
        b
    }

    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }

    /// ggml's `quantize_row_q8_0_ref` for one block: symmetric, `roundf` (half away from
    /// zero, which is what `f32::round` does).
    pub fn quantize(x: &[f32; QK]) -> Self {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    }
}

/// ggml's `get_scale_min_k4`: sub-block `j` (0..8) of a q4_K block's packed `scales`.
/// Sub-blocks 0..4 keep their 6-bit scale and min in the low 6 bits of bytes `j` and
/// `j + 4`; sub-blocks 4..8 keep their low 4 bits in the nibbles of byte `j + 4` and their
/// top 2 bits in the spare top bits of bytes `j - 4` (scale) and `j` (min).
pub fn q4k_scale_min(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

impl BlockQ4K {
    pub const BYTES: usize = 144;

    pub fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        BlockQ4K {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            scales: array(b, 4),
            qs: array(b, 16),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..2].copy_from_slice(&self.d.to_le_bytes());
        b[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        b[4..16].copy_from_slice(&self.scales);
        b[16..].copy_from_slice(&self.qs);
        b
    }

    /// ggml's `dequantize_row_q4_K` for one block.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for g in 0..4 {
            let (sc1, m1) = q4k_scale_min(2 * g, &self.scales);
            let (sc2, m2) = q4k_scale_min(2 * g + 1, &self.scales);
            // Same association as ggml: (d * sc) * q - (min * m).
            let (d1, mm1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, mm2) = (d * sc2 as f32, min * m2 as f32);
            let qs = &self.qs[32 * g..32 * g + 32];
            for (l, &q) in qs.iter().enumerate() {
                out[64 * g + l] = d1 * (q & 0x0F) as f32 - mm1;
                out[64 * g + 32 + l] = d2 * (q >> 4) as f32 - mm2;
            }
        }
    }
}

impl BlockQ6K {
    pub const BYTES: usize = 210;

    pub fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        let mut scales = [0i8; QK_K / 16];
        for (s, &byte) in scales.iter_mut().zip(&b[192..208]) {
            *s = byte as i8;
        }
        BlockQ6K {
            ql: array(b, 0),
            qh: array(b, 128),
            scales,
            d: f16_at(b, 208),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..128].copy_from_slice(&self.ql);
        b[128..192].copy_from_slice(&self.qh);
        for (byte, &s) in b[192..208].iter_mut().zip(&self.scales) {
            *byte = s as u8;
        }
        b[208..].copy_from_slice(&self.d.to_le_bytes());
        b
    }

    /// ggml's `dequantize_row_q6_K` for one block. In each 128-weight half `h`, position
    /// `l` (0..32) yields four weights `l`, `l+32`, `l+64`, `l+96`: low bits from the low
    /// and high nibbles of `ql[l]` and `ql[l+32]`, high bits from successive bit pairs of
    /// `qh[l]`.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for h in 0..2 {
            let ql = &self.ql[64 * h..64 * h + 64];
            let qh = &self.qh[32 * h..32 * h + 32];
            let sc = &self.scales[8 * h..8 * h + 8];
            let y = &mut out[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                // ggml: d * sc[is] * q, evaluated left to right in f32.
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plain types.
// ---------------------------------------------------------------------------------------

/// ggml's `ggml_compute_fp32_to_bf16`: round to nearest even; NaN stays NaN (made quiet)
/// rather than rounding into infinity.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

/// bf16 is the top half of an f32, so widening is exact.
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

// ---------------------------------------------------------------------------------------
// Row entry points.
// ---------------------------------------------------------------------------------------

/// Visits `src` as `B`-byte blocks and `out` as `E`-element blocks, in lockstep. Callers
/// have checked that both hold the same number of whole blocks.
fn each_block<const B: usize, const E: usize>(
    src: &[u8],
    out: &mut [f32],
    mut f: impl FnMut(&[u8; B], &mut [f32; E]),
) {
    for (s, o) in src.chunks_exact(B).zip(out.chunks_exact_mut(E)) {
        if let (Ok(s), Ok(o)) = (<&[u8; B]>::try_from(s), <&mut [f32; E]>::try_from(o)) {
            f(s, o);
        }
    }
}

/// Dequantize whole blocks: `src.len()` must equal `dtype.bytes_for(out.len())`.
///
/// Plain types convert exactly (f16/bf16 widen; i8/i32 are little-endian integers, read as
/// their f32 value, so i32 beyond 2^24 rounds).
pub fn dequantize(dtype: DType, src: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let n = out.len() as u64;
    let expected = dtype.bytes_for(n).ok_or(QuantError::NotBlockMultiple {
        dtype,
        n,
        block: dtype.block_elems(),
    })?;
    if src.len() as u64 != expected {
        return Err(QuantError::LengthMismatch {
            dtype,
            n,
            expected,
            got: src.len() as u64,
        });
    }
    match dtype {
        DType::F32 => each_block::<4, 1>(src, out, |s, o| o[0] = f32::from_le_bytes(*s)),
        DType::F16 => each_block::<2, 1>(src, out, |s, o| o[0] = f16::from_le_bytes(*s).to_f32()),
        DType::BF16 => each_block::<2, 1>(src, out, |s, o| {
            o[0] = bf16_bits_to_f32(u16::from_le_bytes(*s))
        }),
        DType::I8 => each_block::<1, 1>(src, out, |s, o| o[0] = s[0] as i8 as f32),
        DType::I32 => each_block::<4, 1>(src, out, |s, o| o[0] = i32::from_le_bytes(*s) as f32),
        DType::Q4_0 => {
            each_block::<18, 32>(src, out, |s, o| BlockQ4_0::from_bytes(s).dequantize(o))
        }
        DType::Q4_1 => {
            each_block::<20, 32>(src, out, |s, o| BlockQ4_1::from_bytes(s).dequantize(o))
        }
        DType::Q8_0 => {
            each_block::<34, 32>(src, out, |s, o| BlockQ8_0::from_bytes(s).dequantize(o))
        }
        DType::Q4K => {
            each_block::<144, 256>(src, out, |s, o| BlockQ4K::from_bytes(s).dequantize(o))
        }
        DType::Q6K => {
            each_block::<210, 256>(src, out, |s, o| BlockQ6K::from_bytes(s).dequantize(o))
        }
    }
    Ok(())
}

/// Dequantize a byte buffer holding whole blocks into a fresh vector. The output size is
/// derived from `src.len()`, so it is bounded by data that actually exists.
pub fn dequantize_to_vec(dtype: DType, src: &[u8]) -> Result<Vec<f32>, QuantError> {
    let bb = dtype.block_bytes();
    let got = src.len() as u64;
    if got % bb != 0 {
        return Err(QuantError::RaggedSource {
            dtype,
            got,
            block_bytes: bb,
        });
    }
    let n =
        usize::try_from(got / bb * dtype.block_elems()).map_err(|_| QuantError::RaggedSource {
            dtype,
            got,
            block_bytes: bb,
        })?;
    let mut out = vec![0.0f32; n];
    dequantize(dtype, src, &mut out)?;
    Ok(out)
}

fn quantize_blocks<const B: usize>(src: &[f32], f: impl Fn(&[f32; QK]) -> [u8; B]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() / QK * B);
    for chunk in src.chunks_exact(QK) {
        if let Ok(x) = <&[f32; QK]>::try_from(chunk) {
            out.extend_from_slice(&f(x));
        }
    }
    out
}

fn to_int(dtype: DType, src: &[f32], min: i64, max: i64) -> Result<Vec<i64>, QuantError> {
    src.iter()
        .enumerate()
        .map(|(index, &value)| {
            if value.fract() == 0.0 && value >= min as f32 && value <= max as f32 {
                Ok(value as i64)
            } else {
                Err(QuantError::NotRepresentable {
                    dtype,
                    index,
                    value,
                    min,
                    max,
                })
            }
        })
        .collect()
}

/// Reference quantizers: bit-identical to ggml's `quantize_row_*_ref` for q4_0, q4_1 and
/// q8_0 (on finite input; non-finite input is refused, since ggml's result for it is
/// undefined behaviour). f16 and bf16 round to nearest even; i8 and i32 accept only exact
/// integers in range. K-quants are not supported ([`QuantError::Unsupported`]).
pub fn quantize(dtype: DType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let n = src.len() as u64;
    if dtype.bytes_for(n).is_none() {
        return Err(QuantError::NotBlockMultiple {
            dtype,
            n,
            block: dtype.block_elems(),
        });
    }
    if dtype.is_quantized() {
        if let Some((index, &value)) = src.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(QuantError::NonFinite {
                dtype,
                index,
                value,
            });
        }
    }
    Ok(match dtype {
        DType::F32 => src.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => src
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => src
            .iter()
            .flat_map(|&v| f32_to_bf16_bits(v).to_le_bytes())
            .collect(),
        DType::I8 => to_int(dtype, src, i8::MIN as i64, i8::MAX as i64)?
            .into_iter()
            .map(|v| v as i8 as u8)
            .collect(),
        DType::I32 => to_int(dtype, src, i32::MIN as i64, i32::MAX as i64)?
            .into_iter()
            .flat_map(|v| (v as i32).to_le_bytes())
            .collect(),
        DType::Q4_0 => quantize_blocks(src, |x| BlockQ4_0::quantize(x).to_bytes()),
        DType::Q4_1 => quantize_blocks(src, |x| BlockQ4_1::quantize(x).to_bytes()),
        DType::Q8_0 => quantize_blocks(src, |x| BlockQ8_0::quantize(x).to_bytes()),
        DType::Q4K | DType::Q6K => return Err(QuantError::Unsupported { dtype }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_dtype() {
        assert_eq!(BlockQ4_0::BYTES as u64, DType::Q4_0.block_bytes());
        assert_eq!(BlockQ4_1::BYTES as u64, DType::Q4_1.block_bytes());
        assert_eq!(BlockQ8_0::BYTES as u64, DType::Q8_0.block_bytes());
        assert_eq!(BlockQ4K::BYTES as u64, DType::Q4K.block_bytes());
        assert_eq!(BlockQ6K::BYTES as u64, DType::Q6K.block_bytes());
    }

    #[test]
    fn block_bytes_round_trip() {
        let mut b = [0u8; 210];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i * 37 + 11) as u8;
        }
        assert_eq!(BlockQ6K::from_bytes(&b).to_bytes(), b);
        let b4: [u8; 144] = array(&b, 0);
        assert_eq!(BlockQ4K::from_bytes(&b4).to_bytes(), b4);
        let b8: [u8; 34] = array(&b, 0);
        assert_eq!(BlockQ8_0::from_bytes(&b8).to_bytes(), b8);
    }
}

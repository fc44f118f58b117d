//! GGUF block formats (interim: q4_0, q4_1, q8_0 and plain types; the full set lands with the
//! GGUF reader).

use crate::dtype::DType;
use half::{bf16, f16};

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{dtype}: {n} values are not a whole number of {block}-element blocks")]
    NotWholeBlocks { dtype: DType, n: usize, block: u64 },
    #[error("{dtype}: {got} bytes given, {want} needed for {n} values")]
    WrongLength {
        dtype: DType,
        got: usize,
        want: u64,
        n: usize,
    },
    #[error("{0} is not supported here")]
    Unsupported(DType),
}

pub fn dequantize(dtype: DType, src: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let n = out.len();
    let want = dtype
        .bytes_for(n as u64)
        .ok_or(QuantError::NotWholeBlocks {
            dtype,
            n,
            block: dtype.block_elems(),
        })?;
    if src.len() as u64 != want {
        return Err(QuantError::WrongLength {
            dtype,
            got: src.len(),
            want,
            n,
        });
    }
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    match dtype {
        DType::F32 => out
            .iter_mut()
            .zip(src.chunks_exact(4))
            .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::F16 => out
            .iter_mut()
            .zip(src.chunks_exact(2))
            .for_each(|(o, b)| *o = h(b)),
        DType::BF16 => out
            .iter_mut()
            .zip(src.chunks_exact(2))
            .for_each(|(o, b)| *o = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        DType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(18)) {
                let d = h(&b[0..2]);
                for j in 0..16 {
                    o[j] = ((b[2 + j] & 0xF) as i32 - 8) as f32 * d;
                    o[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        DType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(20)) {
                let (d, m) = (h(&b[0..2]), h(&b[2..4]));
                for j in 0..16 {
                    o[j] = (b[4 + j] & 0xF) as f32 * d + m;
                    o[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
                }
            }
        }
        DType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
                let d = h(&b[0..2]);
                for j in 0..32 {
                    o[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

pub fn quantize(dtype: DType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let n = src.len();
    let want = dtype
        .bytes_for(n as u64)
        .ok_or(QuantError::NotWholeBlocks {
            dtype,
            n,
            block: dtype.block_elems(),
        })?;
    let mut o = Vec::with_capacity(want as usize);
    match dtype {
        DType::F32 => src
            .iter()
            .for_each(|x| o.extend_from_slice(&x.to_le_bytes())),
        DType::F16 => src
            .iter()
            .for_each(|x| o.extend_from_slice(&f16::from_f32(*x).to_le_bytes())),
        DType::BF16 => src
            .iter()
            .for_each(|x| o.extend_from_slice(&bf16::from_f32(*x).to_le_bytes())),
        DType::Q4_0 => {
            for x in src.chunks_exact(32) {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in x {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                o.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                for j in 0..16 {
                    let a = ((x[j] * id + 8.5) as i8).min(15) as u8;
                    let b = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
                    o.push(a | (b << 4));
                }
            }
        }
        DType::Q4_1 => {
            for x in src.chunks_exact(32) {
                let min = x.iter().copied().fold(f32::MAX, f32::min);
                let max = x.iter().copied().fold(f32::MIN, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                o.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                o.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                for j in 0..16 {
                    let a = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
                    let b = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
                    o.push(a | (b << 4));
                }
            }
        }
        DType::Q8_0 => {
            for x in src.chunks_exact(32) {
                let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                o.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                for &v in x {
                    o.push((v * id).round() as i8 as u8);
                }
            }
        }
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(o)
}

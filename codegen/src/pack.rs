//! The packed weight and activation formats the generated kernels read, their packers, and
//! scalar reference kernels that define what the generated code must compute.
//!
//! **Packed weights ("row-interleaved by 16").** A weight `[N, K]` in q4_0, q4_1 or q8_0
//! (`N % 16 == 0`, `K % 32 == 0`) becomes groups of 16 rows; each group holds its `K/32`
//! blocks in order, and each block is
//!
//! ```text
//!   qs: C chunks of 64 bytes   chunk t, bytes 4r..4r+4 = row r's storage bytes 4t..4t+4
//!   d:  16 × f16               per-row scale
//!   m:  16 × f16               per-row offset: w = d·q + m
//! ```
//!
//! with `C = 4` for 4-bit formats (a storage byte `j` holds weight `j` in its low nibble and
//! weight `j + 16` in its high nibble, exactly as GGUF stores it) and `C = 8` for q8_0, whose
//! signed bytes are stored `+ 128` so that every weight byte is unsigned. The three GGUF
//! formats then share one kernel: q4_0 has `m = −8·d`, q8_0 has `m = −128·d`, both exact in
//! f16. One 64-byte chunk feeds one AVX-512 VNNI `vpdpbusd` that multiplies 4 weights of 16
//! rows by 4 broadcast activation bytes, so the GEMV's 16 lanes are 16 output rows and need
//! no horizontal reduction. A packed 4-bit block is 20 bytes per row, as in GGUF (q4_1).
//!
//! **Quantized activations (q8_1-style).** A row `x[K]` becomes `xq: i8[K]` plus per block
//! of 32 `dx = max|x|/127` and `sx = dx·Σq` (the block sum that the `m` term needs), as
//! ggml's `quantize_row_q8_1` does. Then for a block, `Σ w·x ≈ d·dx·Σ q·xq + m·sx`.

use half::f16;
use lpuc_ir::dtype::DType;

pub const GROUP: usize = 16;
pub const QK: usize = 32;

/// Bits per stored weight of a packable dtype (4 or 8), or `None`.
pub fn packed_bits(dt: DType) -> Option<u32> {
    match dt {
        DType::Q4_0 | DType::Q4_1 => Some(4),
        DType::Q8_0 => Some(8),
        _ => None,
    }
}

/// Bytes of one packed 16-row block.
pub fn block_bytes(bits: u32) -> usize {
    let qs = if bits == 4 { 256 } else { 512 };
    qs + 64
}

/// Bytes of a packed `[n, k]` weight.
pub fn packed_len(bits: u32, n: usize, k: usize) -> usize {
    n / GROUP * (k / QK) * block_bytes(bits)
}

/// Why a weight cannot be packed.
pub fn check_packable(dt: DType, n: usize, k: usize) -> Result<u32, String> {
    let bits = packed_bits(dt)
        .ok_or_else(|| format!("dtype {dt} has no JIT kernel (supported: q4_0, q4_1, q8_0)"))?;
    if n % GROUP != 0 || k % QK != 0 {
        return Err(format!(
            "shape [{n}, {k}]: the JIT kernels need rows % {GROUP} == 0 and columns % {QK} == 0"
        ));
    }
    Ok(bits)
}

/// Packs GGUF bytes of a `[n, k]` weight into `out` (`packed_len` bytes), rows `[r0, r1)`
/// only (a multiple of 16 each), so packing can be split across threads.
pub fn pack_rows(
    dt: DType,
    src: &[u8],
    n: usize,
    k: usize,
    out: &mut [u8],
    groups: std::ops::Range<usize>,
) -> Result<(), String> {
    let bits = check_packable(dt, n, k)?;
    let nb = k / QK;
    let sbb = dt.block_bytes() as usize;
    if src.len() != n * nb * sbb {
        return Err(format!(
            "weight bytes {} != {} expected for {dt} [{n}, {k}]",
            src.len(),
            n * nb * sbb
        ));
    }
    let bb = block_bytes(bits);
    let chunks = if bits == 4 { 4 } else { 8 };
    let base = groups.start * nb * bb;
    for g in groups {
        for b in 0..nb {
            let o = &mut out[g * nb * bb + b * bb - base..][..bb];
            for r in 0..GROUP {
                let blk = &src[((g * GROUP + r) * nb + b) * sbb..][..sbb];
                let d = f16::from_le_bytes([blk[0], blk[1]]);
                let (m, qs): (f16, &[u8]) = match dt {
                    DType::Q4_1 => (f16::from_le_bytes([blk[2], blk[3]]), &blk[4..20]),
                    DType::Q4_0 => (f16::from_f32(-8.0 * d.to_f32()), &blk[2..18]),
                    _ => (f16::from_f32(-128.0 * d.to_f32()), &blk[2..34]),
                };
                for t in 0..chunks {
                    for j in 0..4 {
                        let v = qs[4 * t + j];
                        o[t * 64 + 4 * r + j] = if bits == 8 { v ^ 0x80 } else { v };
                    }
                }
                let q = chunks * 64;
                o[q + 2 * r..q + 2 * r + 2].copy_from_slice(&d.to_le_bytes());
                o[q + 32 + 2 * r..q + 32 + 2 * r + 2].copy_from_slice(&m.to_le_bytes());
            }
        }
    }
    Ok(())
}

/// Packs a whole weight.
pub fn pack(dt: DType, src: &[u8], n: usize, k: usize) -> Result<Vec<u8>, String> {
    let bits = check_packable(dt, n, k)?;
    let mut out = vec![0u8; packed_len(bits, n, k)];
    pack_rows(dt, src, n, k, &mut out, 0..n / GROUP)?;
    Ok(out)
}

/// Reference activation quantizer (what the `quant` kernel computes): rows of `k`.
pub fn quantize_ref(x: &[f32], k: usize, xq: &mut [i8], dx: &mut [f32], sx: &mut [f32]) {
    for (bi, blk) in x.chunks(QK).enumerate() {
        let amax = blk.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut s = 0i32;
        for (j, &v) in blk.iter().enumerate() {
            let q = (v * id).round_ties_even() as i32;
            xq[bi * QK + j] = q as i8;
            s += q;
        }
        dx[bi] = d;
        sx[bi] = d * s as f32;
    }
    let _ = k;
}

/// Reference packed matmul: `y[m, n] = Σ_b d·dx·Σ q·xq + m·sx`, f64 accumulation.
pub fn qmatmul_ref(
    bits: u32,
    packed: &[u8],
    n: usize,
    k: usize,
    xq: &[i8],
    dx: &[f32],
    sx: &[f32],
    rows: usize,
    y: &mut [f32],
) {
    let nb = k / QK;
    let bb = block_bytes(bits);
    let chunks = if bits == 4 { 4 } else { 8 };
    for i in 0..rows {
        for row in 0..n {
            let (g, r) = (row / GROUP, row % GROUP);
            let mut acc = 0f64;
            for b in 0..nb {
                let o = &packed[(g * nb + b) * bb..][..bb];
                let mut isum = 0i64;
                for t in 0..chunks {
                    for j in 0..4 {
                        let byte = o[t * 64 + 4 * r + j];
                        let x = &xq[i * k + b * QK..];
                        if bits == 4 {
                            isum += i64::from(byte & 15) * i64::from(x[4 * t + j]);
                            isum += i64::from(byte >> 4) * i64::from(x[16 + 4 * t + j]);
                        } else {
                            isum += i64::from(byte) * i64::from(x[4 * t + j]);
                        }
                    }
                }
                let q = chunks * 64;
                let d = f16::from_le_bytes([o[q + 2 * r], o[q + 2 * r + 1]]).to_f32();
                let m = f16::from_le_bytes([o[q + 32 + 2 * r], o[q + 33 + 2 * r]]).to_f32();
                acc += f64::from(d) * f64::from(dx[i * nb + b]) * isum as f64
                    + f64::from(m) * f64::from(sx[i * nb + b]);
            }
            y[i * n + row] = acc as f32;
        }
    }
}

//! Minimal `.npy` (NumPy format v1.0) for 1-D float32 arrays: what `--logits-out` writes and
//! what the llama.cpp reference logits are stored as.

use std::path::Path;

pub fn write_f32(path: &Path, data: &[f32]) -> std::io::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        data.len()
    );
    // Magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    // Atomically: a failure midway (full disk, kill) leaves any old file as it was.
    lpuc_ir::fsio::write_atomic(path, |w| w.write_all(&out))
}

/// Reads a little-endian float32 array (any shape, C order), flattened.
pub fn read_f32(path: &Path) -> Result<Vec<f32>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(format!("{}: not a .npy file", path.display()));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("{}: unsupported .npy version {v}", path.display())),
    };
    let header = b
        .get(start..start + hlen)
        .ok_or_else(|| format!("{}: truncated header", path.display()))?;
    let header = String::from_utf8_lossy(header);
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(format!(
            "{}: expected little-endian float32 in C order, header {header}",
            path.display()
        ));
    }
    let body = &b[start + hlen..];
    if body.len() % 4 != 0 {
        return Err(format!(
            "{}: data is not a whole number of float32",
            path.display()
        ));
    }
    Ok(body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let p = std::env::temp_dir().join(format!("lpuc-npy-{}.npy", std::process::id()));
        let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 3.0).collect();
        super::write_f32(&p, &data).unwrap();
        let b = std::fs::read(&p).unwrap();
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(super::read_f32(&p).unwrap(), data);
        std::fs::remove_file(&p).unwrap();
    }
}

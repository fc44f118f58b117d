//! The functional simulator's data: dense matrices on streams and in SRAM, regions of
//! them, head re-layouts, and each chip's int8 weight shards (with the one requantization
//! formula load-time conversion and the VXM's int4 unpack share).

use half::f16;
use lpuc_ir::weights::WeightStore;

use super::super::isa::Region;
use super::super::program::Split;
use super::FuncError;

/// A dense row-major matrix flowing on a stream or held in SRAM.
#[derive(Clone, Debug, Default)]
pub(super) struct Mat {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) data: Vec<f32>,
    /// Row reciprocal scales of the weight tile this stream carries (int4 unpack).
    pub(super) inv: Option<Vec<f32>>,
}

impl Mat {
    pub(super) fn new(rows: usize, cols: usize) -> Mat {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
            inv: None,
        }
    }
    pub(super) fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }
}

pub(super) fn to_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Reference values of one chip's weight shard and its int8 form.
#[derive(Clone, Debug)]
pub(super) struct Shard {
    /// `[n × k]` dequantized source values.
    pub(super) w: Vec<f32>,
    pub(super) n: usize,
    pub(super) k: usize,
    /// Per row: scale (`max |w| / 127`) and its reciprocal.
    pub(super) scale: Vec<f32>,
    pub(super) inv: Vec<f32>,
}

/// `round(w · inv)` clamped to the int8 range: the one requantization formula used by
/// the load-time int8 conversion and by the VXM's int4 unpack alike.
pub(super) fn requant(w: f32, inv: f32) -> f32 {
    (w * inv).round().clamp(-127.0, 127.0)
}

pub(super) fn shard_of(
    store: &dyn WeightStore,
    name: &str,
    split: Split,
    rank: usize,
    t: usize,
) -> Result<Shard, FuncError> {
    let v = store.get(name).ok_or_else(|| {
        FuncError::Weights(format!("weight \"{name}\" is not in the weight store"))
    })?;
    let numel: u64 = v.shape.iter().product();
    let mut all = vec![0f32; numel as usize];
    lpuc_ir::quant::dequantize(v.dtype, v.bytes, &mut all)
        .map_err(|e| FuncError::Weights(format!("weight \"{name}\": {e}")))?;
    let (n, k) = match v.shape {
        [n, k] => (*n as usize, *k as usize),
        [k] => (1, *k as usize),
        _ => {
            return Err(FuncError::Weights(format!(
                "weight \"{name}\" is not a matrix or vector"
            )))
        }
    };
    let (r0, nr, c0, nc) = match split {
        Split::None => (0, n, 0, k),
        Split::Rows => (rank * n / t, n / t, 0, k),
        Split::Cols => (0, n, rank * k / t, k / t),
    };
    let mut w = Vec::with_capacity(nr * nc);
    for r in r0..r0 + nr {
        w.extend_from_slice(&all[r * k + c0..r * k + c0 + nc]);
    }
    let mut scale = Vec::with_capacity(nr);
    let mut inv = Vec::with_capacity(nr);
    for r in 0..nr {
        let m = w[r * nc..(r + 1) * nc]
            .iter()
            .fold(0f32, |a, x| a.max(x.abs()));
        let s = if m > 0.0 { m / 127.0 } else { 1.0 };
        scale.push(s);
        inv.push(1.0 / s);
    }
    Ok(Shard {
        w,
        n: nr,
        k: nc,
        scale,
        inv,
    })
}

pub(super) fn read_region(m: &Mat, r: &Region) -> Result<Mat, String> {
    let rows = r.rows as usize;
    let cols = r.cols as usize;
    let mut v = Mat::new(rows, cols);
    for i in 0..rows {
        let row = r.row0 as usize + i * r.step as usize;
        if row >= m.rows || r.col0 as usize + cols > m.cols {
            return Err(format!(
                "reads rows {row} / cols {}..{} outside a {}×{} tensor",
                r.col0,
                r.col0 as usize + cols,
                m.rows,
                m.cols
            ));
        }
        v.data[i * cols..(i + 1) * cols].copy_from_slice(
            &m.data[row * m.cols + r.col0 as usize..row * m.cols + r.col0 as usize + cols],
        );
    }
    Ok(v)
}

pub(super) fn write_region(m: &mut Mat, r: &Region, v: &Mat) -> Result<(), String> {
    let rows = r.rows as usize;
    let cols = r.cols as usize;
    if v.rows * v.cols != rows * cols {
        return Err(format!(
            "writes a {}×{} stream into a {rows}×{cols} region",
            v.rows, v.cols
        ));
    }
    for i in 0..rows {
        let row = r.row0 as usize + i * r.step as usize;
        if row >= m.rows || r.col0 as usize + cols > m.cols {
            return Err(format!(
                "writes row {row} outside a {}×{} tensor",
                m.rows, m.cols
            ));
        }
        for j in 0..cols {
            m.data[row * m.cols + r.col0 as usize + j] = v.data[i * cols + j];
        }
    }
    Ok(())
}

pub(super) fn transpose_mat(x: &Mat) -> Mat {
    let mut m = Mat::new(x.cols, x.rows);
    for r in 0..x.rows {
        for c in 0..x.cols {
            m.data[c * x.rows + r] = x.at(r, c);
        }
    }
    m
}

/// `[s × g·d]` → `[g·s × d]`: row `i·s + r` is head `i` of row `r`.
pub(super) fn head_rows(x: &Mat, g: usize, d: usize) -> Mat {
    let s = x.rows;
    let mut m = Mat::new(g * s, d);
    for r in 0..s {
        for i in 0..g {
            for j in 0..d {
                m.data[(i * s + r) * d + j] = x.at(r, i * d + j);
            }
        }
    }
    m
}

pub(super) fn head_cols(x: &Mat, g: usize, d: usize) -> Mat {
    let s = x.rows / g.max(1);
    let mut m = Mat::new(s, g * d);
    for r in 0..s {
        for i in 0..g {
            for j in 0..d {
                m.data[r * g * d + i * d + j] = x.at(i * s + r, j);
            }
        }
    }
    m
}

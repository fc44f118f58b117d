//! The VXM's and the SXM lane tree's arithmetic in the functional simulator: every
//! `VxmFn` in the LPU's numerics (or exactly, `Numerics::Exact`).

use super::super::isa::{Finish, Reduce, VxmFn};
use super::data::{requant, to_f16, Mat};
use super::Runner;

impl<'a> Runner<'a> {
    pub(super) fn vxm(
        &self,
        f: &VxmFn,
        s: &[Mat],
        pos: &[u64],
        rank: usize,
        t: usize,
        exact: bool,
    ) -> Result<Mat, String> {
        let need = |n: usize| {
            if s.len() < n {
                Err(format!("{} needs {n} operands, has {}", f.name(), s.len()))
            } else {
                Ok(())
            }
        };
        need(1)?;
        let x = &s[0];
        let map = |g: &dyn Fn(f32) -> f32| Mat {
            rows: x.rows,
            cols: x.cols,
            data: x.data.iter().map(|v| g(*v)).collect(),
            inv: None,
        };
        let row_scalar = |m: &Mat, r: usize| m.data[r.min(m.rows.saturating_sub(1)) * m.cols];
        Ok(match f {
            VxmFn::Unpack4 => {
                // The tile's rows are rows of a weight shard: requantize each with its
                // row's scale, exactly as the load-time int8 conversion does.
                let Some(inv) = &x.inv else {
                    return Err("unpack of a stream that is not a weight tile".into());
                };
                if exact {
                    x.clone()
                } else {
                    let mut m = x.clone();
                    for r in 0..m.rows {
                        for c in 0..m.cols {
                            m.data[r * m.cols + c] = requant(x.at(r, c), inv[r]);
                        }
                    }
                    m.inv = None;
                    m
                }
            }
            VxmFn::Dequant => {
                need(3)?;
                let (a, sc) = (&s[1], &s[2]);
                let mut m = Mat::new(x.rows, x.cols);
                for r in 0..x.rows {
                    let ar = if exact { 1.0 } else { row_scalar(a, r) };
                    for c in 0..x.cols {
                        let sv = if exact { 1.0 } else { sc.data[c] };
                        m.data[r * x.cols + c] = x.at(r, c) * (ar * sv);
                    }
                }
                m
            }
            VxmFn::Partial(op) => {
                let mut m = Mat::new(x.rows, 320);
                for r in 0..x.rows {
                    let mut lanes = vec![ident(*op); 320];
                    for c in 0..x.cols {
                        let v = x.at(r, c);
                        let v = match op {
                            Reduce::SumSq => v * v,
                            Reduce::AbsMax => v.abs(),
                            _ => v,
                        };
                        let l = c % 320;
                        lanes[l] = combine(*op, lanes[l], v);
                    }
                    m.data[r * 320..(r + 1) * 320].copy_from_slice(&lanes);
                }
                m
            }
            VxmFn::Finish(fin) => {
                let mut m = Mat::new(x.rows, 1);
                for r in 0..x.rows {
                    let v = row_scalar(x, r);
                    m.data[r] = match fin {
                        Finish::RmsRecip { n, eps } => 1.0 / (v / *n as f32 + eps).sqrt(),
                        Finish::Int8Scale => {
                            if exact {
                                1.0
                            } else if v > 0.0 {
                                v / 127.0
                            } else {
                                1.0
                            }
                        }
                        Finish::Recip => 1.0 / v,
                        Finish::Identity => v,
                    };
                }
                m
            }
            VxmFn::Quantize { ref_q8 } => {
                need(2)?;
                if exact {
                    // The graph's own meaning: exact, or (qmatmul) 8-bit blocks of 32.
                    if *ref_q8 && x.cols % 32 == 0 {
                        let t = lpuc_ir::interp::Tensor::new(vec![x.rows, x.cols], x.data.clone());
                        let q = lpuc_ir::interp::quantize_activations(&t)?;
                        return Ok(Mat {
                            rows: x.rows,
                            cols: x.cols,
                            data: q.data,
                            inv: None,
                        });
                    }
                    return Ok(x.clone());
                }
                let mut m = Mat::new(x.rows, x.cols);
                for r in 0..x.rows {
                    let a = row_scalar(&s[1], r);
                    for c in 0..x.cols {
                        m.data[r * x.cols + c] = (x.at(r, c) / a).round().clamp(-127.0, 127.0);
                    }
                }
                m
            }
            VxmFn::NormApply { has_w } => {
                need(if *has_w { 3 } else { 2 })?;
                let mut m = Mat::new(x.rows, x.cols);
                for r in 0..x.rows {
                    let rr = row_scalar(&s[1], r);
                    for c in 0..x.cols {
                        let w = if *has_w { s[2].data[c] } else { 1.0 };
                        m.data[r * x.cols + c] = x.at(r, c) * rr * w;
                    }
                }
                m
            }
            VxmFn::Rope {
                heads,
                head_dim,
                dims,
                neox,
                ..
            } => {
                need(2)?;
                let trig = &s[1];
                let mut m = x.clone();
                m.inv = None;
                let (hd, half) = (*head_dim as usize, *dims as usize / 2);
                for r in 0..x.rows {
                    for h in 0..*heads as usize {
                        for i in 0..half {
                            let (i0, i1) = if *neox {
                                (i, i + half)
                            } else {
                                (2 * i, 2 * i + 1)
                            };
                            let (c0, c1) = (h * hd + i0, h * hd + i1);
                            let (co, si) = (trig.at(r, 2 * i), trig.at(r, 2 * i + 1));
                            let (a, b) = (x.at(r, c0), x.at(r, c1));
                            m.data[r * x.cols + c0] = a * co - b * si;
                            m.data[r * x.cols + c1] = a * si + b * co;
                        }
                    }
                }
                m
            }
            VxmFn::ScaleMask {
                scale,
                key0,
                seq,
                rows_per_head,
            } => {
                let p0 = pos.get(*seq as usize).copied().unwrap_or(0);
                let mut m = Mat::new(x.rows, x.cols);
                for r in 0..x.rows {
                    let limit = p0 + (r % *rows_per_head as usize) as u64;
                    for c in 0..x.cols {
                        let key = u64::from(*key0) + c as u64;
                        m.data[r * x.cols + c] = if key > limit {
                            f32::NEG_INFINITY
                        } else {
                            x.at(r, c) * scale
                        };
                    }
                }
                m
            }
            VxmFn::ExpSub => {
                need(2)?;
                let mut m = Mat::new(x.rows, x.cols);
                for r in 0..x.rows {
                    let mx = row_scalar(&s[1], r);
                    for c in 0..x.cols {
                        let v = x.at(r, c);
                        m.data[r * x.cols + c] = if v == f32::NEG_INFINITY {
                            0.0
                        } else {
                            (v - mx).exp()
                        };
                    }
                }
                m
            }
            VxmFn::MulRow { to_f16: half } => {
                need(2)?;
                let mut m = Mat::new(x.rows, x.cols);
                for r in 0..x.rows {
                    let k = row_scalar(&s[1], r);
                    for c in 0..x.cols {
                        let v = x.at(r, c) * k;
                        m.data[r * x.cols + c] = if *half && !exact { to_f16(v) } else { v };
                    }
                }
                m
            }
            VxmFn::SwiGlu => {
                need(2)?;
                let mut m = Mat::new(x.rows, x.cols);
                for (i, (a, b)) in x.data.iter().zip(&s[1].data).enumerate() {
                    m.data[i] = a / (1.0 + (-a).exp()) * b;
                }
                m
            }
            VxmFn::Add | VxmFn::Mul => {
                need(2)?;
                let mut m = Mat::new(x.rows, x.cols);
                for (i, (a, b)) in x.data.iter().zip(&s[1].data).enumerate() {
                    m.data[i] = if matches!(f, VxmFn::Add) {
                        a + b
                    } else {
                        a * b
                    };
                }
                m
            }
            VxmFn::Silu => map(&|a| a / (1.0 + (-a).exp())),
            VxmFn::Scale(k) => map(&|a| a * k),
            VxmFn::ToF16 => {
                if exact {
                    map(&|a| a)
                } else {
                    map(&to_f16)
                }
            }
            VxmFn::Copy | VxmFn::DequantRows => map(&|a| a),
            VxmFn::AddN(n) => {
                need(*n as usize)?;
                let mut m = Mat::new(x.rows, x.cols);
                for part in &s[..*n as usize] {
                    for (i, v) in part.data.iter().enumerate() {
                        m.data[i] += v;
                    }
                }
                m
            }
            VxmFn::Sum(n) => {
                let n = *n as usize;
                need(n)?;
                // Input o came from rank − o; sum in rank order so every chip agrees.
                let mut order: Vec<(usize, &Mat)> =
                    (0..n).map(|o| ((rank + t - o % t) % t, &s[o])).collect();
                order.sort_by_key(|(r, _)| *r);
                let mut m = Mat::new(x.rows, x.cols);
                for (_, part) in order {
                    for (i, v) in part.data.iter().enumerate() {
                        let v = if exact { *v } else { to_f16(*v) };
                        m.data[i] += v;
                    }
                }
                m
            }
        })
    }
}

pub(super) fn ident(op: Reduce) -> f32 {
    match op {
        Reduce::Sum | Reduce::SumSq | Reduce::AbsMax => 0.0,
        Reduce::Max => f32::NEG_INFINITY,
    }
}

pub(super) fn combine(op: Reduce, a: f32, b: f32) -> f32 {
    match op {
        Reduce::Sum | Reduce::SumSq => a + b,
        Reduce::AbsMax | Reduce::Max => a.max(b),
    }
}

/// Binary tree over 320 lanes (padded to 512 with the identity), halving each step.
pub(super) fn lane_tree(x: &Mat, op: Reduce) -> Mat {
    let mut m = Mat::new(x.rows, 1);
    for r in 0..x.rows {
        let mut v = vec![ident(op); 512];
        v[..x.cols.min(512)].copy_from_slice(&x.data[r * x.cols..r * x.cols + x.cols.min(512)]);
        let mut half = 256;
        while half >= 1 {
            for i in 0..half {
                v[i] = combine(op, v[i], v[i + half]);
            }
            half /= 2;
        }
        m.data[r] = v[0];
    }
    m
}

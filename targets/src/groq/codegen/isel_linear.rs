//! Instruction selection for `Linear`: weight-stationary 320×320 tiles on the MXM planes,
//! double-buffered installs (int4 tiles unpacked and requantized on the VXM on their way),
//! activations quantized to int8 per row first, K accumulated in the plane's int32
//! accumulators (a narrow output splits its K steps over planes and the VXM adds the
//! parts), and the all-reduce of a row-parallel output.

use std::collections::HashMap;

use super::super::cost::{self, Cycles};
use super::super::isa::{Elem, Finish, MemAt, MxmType, Op, Queue, Reduce, Region, VxmFn};
use super::super::model::MachineModel;
use super::super::mops::{TId, WId};
use super::super::program::{Placement, Split, TensorDecl, TensorKind};
use super::super::sched::{Chain, Node, QSel};
use super::{Gen, GenError, Shard};

/// Bytes of an int4 tile in SRAM per weight element: the source block format's bits.
pub(super) fn int4_bits(src: lpuc_ir::DType) -> f64 {
    match src {
        lpuc_ir::DType::Q4_0 | lpuc_ir::DType::Q4_1 | lpuc_ir::DType::Q4K => src.bits_per_elem(),
        // A wider source stored as int4 is requantized to Q4_0-like blocks.
        _ => lpuc_ir::DType::Q4_0.bits_per_elem(),
    }
}

/// Whether a weight's source is a 4-bit format (only those are ever kept int4: storing
/// an 8-bit or float weight as int4 would change the model, not just its speed).
pub fn is_4bit(d: lpuc_ir::DType) -> bool {
    matches!(
        d,
        lpuc_ir::DType::Q4_0 | lpuc_ir::DType::Q4_1 | lpuc_ir::DType::Q4K
    )
}

/// Estimated cycles of one K-tile step on a plane (for balancing planes).
fn tile_cost(m: &MachineModel, rows: u64, int4: bool, fp16: bool) -> Cycles {
    let install = cost::weight_install(
        m,
        m.mxm.plane_rows.get(),
        m.mxm.plane_cols.get(),
        if fp16 {
            cost::MxmDtype::Fp16
        } else {
            cost::MxmDtype::Int8
        },
    )
    .map(|c| c.occupancy)
    .unwrap_or(40);
    let stream = if fp16 {
        rows * m.mxm.fp16_rate_divisor.get()
    } else {
        rows
    };
    let unpack = if int4 {
        cost::int4_unpack(m, 320 * 160, true).occupancy
    } else {
        0
    };
    install.max(stream).max(unpack)
}

impl<'a> Gen<'a> {
    /// Row-quantized int8 copy of an activation (shared by every matmul reading it).
    pub(super) fn quantized(&mut self, xl: u32, ref_q8: bool) -> Result<(u32, u32), GenError> {
        if let Some(q) = self.quant.get(&(xl, ref_q8)) {
            return Ok(*q);
        }
        let (rows, cols) = {
            let d = &self.tensors[xl as usize];
            (d.rows, d.cols)
        };
        let a = self.temp("qscale", Elem::F32, rows, 1)?;
        let x8 = self.temp("q8", Elem::I8, rows, cols)?;
        let (xr, ar, qr) = (self.whole(xl), self.whole(a), self.whole(x8));
        self.reduce(xr, Reduce::AbsMax, Reduce::Max, Finish::Int8Scale, ar)?;
        self.ew(VxmFn::Quantize { ref_q8 }, &[xr, ar], qr)?;
        self.quant.insert((xl, ref_q8), (x8, a));
        Ok((x8, a))
    }

    /// A weight matrix shard in install layout, tile by tile on its plane's slices.
    /// Returns the tensor and, per output tile, its plane.
    pub(super) fn weight_tiles(
        &mut self,
        w: WId,
        split: Split,
        n: u32,
        k: u32,
        int4: bool,
    ) -> Result<(u32, u32, Vec<Vec<usize>>), GenError> {
        let info = self.model.weights[w as usize].clone();
        self.weight_slots.push(w);
        let id = self.tensors.len() as u32;
        let elem = if int4 { Elem::I4 } else { Elem::I8 };
        self.tensors.push(TensorDecl {
            name: info.name.clone(),
            kind: TensorKind::Weight { w, split },
            elem,
            rows: n,
            cols: k,
            place: Vec::new(),
        });
        let nt = n.div_ceil(320);
        let kt = k.div_ceil(320);
        let rows = self.rows.max(1);
        let step = tile_cost(self.m, u64::from(rows), int4, false);
        // Each output tile's K steps accumulate on one plane; an output narrower than
        // the planes (a K or V projection under tensor parallelism) splits its K steps
        // over several planes instead, and the VXM adds the partial sums.
        let np = self.fp.planes() as u32;
        let parts = if nt < np { (np / nt).clamp(1, kt) } else { 1 };
        let mut planes = Vec::new();
        for j in 0..nt {
            let mut per_i = vec![0usize; kt as usize];
            for part in 0..parts {
                let (a, b) = (part * kt / parts, (part + 1) * kt / parts);
                let p = (0..self.fp.planes())
                    .min_by_key(|p| (self.plane_load[*p], *p))
                    .unwrap_or(0);
                self.plane_load[p] += step * u64::from(b - a);
                for x in &mut per_i[a as usize..b as usize] {
                    *x = p;
                }
            }
            planes.push(per_i.clone());
            for i in 0..kt {
                let nn = (n - j * 320).min(320);
                let kk = (k - i * 320).min(320);
                let vectors = if int4 {
                    let bytes = (f64::from(nn) * f64::from(kk) * int4_bits(info.dtype) / 8.0).ceil()
                        as u64
                        + 4 * u64::from(nn);
                    bytes.div_ceil(320)
                } else {
                    u64::from(kk) * u64::from(nn).div_ceil(320)
                };
                let per = vectors.div_ceil(16) as u32;
                let (slices, bank, addr) = self
                    .alloc
                    .weight_group(self.fp, per_i[i as usize], 16, per)
                    .ok_or_else(|| self.full(&info.name, u64::from(per)))?;
                self.tensors[id as usize].place.push(Placement {
                    region: Region::rows(id, j * 320, nn, i * 320, kk),
                    at: MemAt {
                        slices,
                        bank,
                        addr,
                        partner: 0,
                    },
                    vectors: per,
                });
            }
        }
        // Per-row scales of the (requantized) int8 weights.
        let s = self.act_tensor(
            format!("{}.scale", info.name),
            TensorKind::WeightScale { w, split },
            Elem::F32,
            1,
            n,
        )?;
        let r = self.whole(s);
        self.sched.preset_written(r, 0);
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        Ok((id, s, planes))
    }

    /// The install chain head for tile `idx` of `wt` on `plane`/`buf`: returns the
    /// install node index within `c`.
    pub(super) fn install(
        &mut self,
        c: &mut Chain,
        wt: u32,
        idx: usize,
        plane: usize,
        buf: u8,
        ty: MxmType,
        transpose: bool,
    ) -> usize {
        let p = self.tensors[wt as usize].place[idx].clone();
        let elem = self.tensors[wt as usize].elem;
        let ppos = self.fp.plane_pos[plane];
        let int4 = elem == Elem::I4;
        let partner = if int4 { self.fp.vxm_pos } else { ppos };
        let mut at = p.at.clone();
        at.partner = partner;
        let width = at.slices.len() as u8;
        let ri = c.push(Node::new(
            QSel::Fixed(Queue::Mem(at.slices[0])),
            Op::MemRead {
                at,
                data: p.region,
                peer_block: None,
            },
            u64::from(p.vectors),
        ));
        // Install vectors: plane rows (K) × vectors per row (N · bytes / 320).
        let (nn, kk) = if transpose {
            (p.region.cols, p.region.rows)
        } else {
            (p.region.rows, p.region.cols)
        };
        let eb = if ty == MxmType::Fp16 { 2 } else { 1 };
        let bv = u64::from(kk) * (u64::from(nn) * eb).div_ceil(320);
        let occ = bv.div_ceil(self.m.free.install_rows_per_cycle_per_plane.get());
        let ii = c.push(Node::new(
            QSel::Fixed(Queue::MxmInstall(plane as u8)),
            Op::Install {
                plane: plane as u8,
                buf,
                ty,
                transpose,
            },
            occ,
        ));
        if int4 {
            let packed = u64::from(p.vectors) * 16;
            let u = self.vxm(VxmFn::Unpack4, packed);
            let ui = c.push(u);
            c.link(ri, ui, width);
            c.link(ui, ii, 16);
        } else {
            c.link(ri, ii, width);
        }
        // Install queue held for the full install (see cost::weight_install).
        let hold = occ - 1 + self.fp.skew;
        self.work.install_cycles[plane] += hold;
        self.work.tiles += 1;
        ii
    }

    pub(super) fn linear(
        &mut self,
        x: TId,
        w: WId,
        out: TId,
        act_q8: bool,
    ) -> Result<(), GenError> {
        let (xl, sh) = self.get(x)?;
        let info = self.model.weights[w as usize].clone();
        let (n_full, k_full) = (info.shape[0], info.shape[1]);
        let tp = u64::from(self.tp());
        let (split, n, k, out_shard, reduce) = match (sh, tp) {
            (_, 1) => (Split::None, n_full, k_full, Shard::Rep, false),
            (Shard::Rep, _) => {
                self.split_check(&format!("{} rows", info.name), n_full)?;
                (Split::Rows, n_full / tp, k_full, Shard::Cols, false)
            }
            (Shard::Cols, _) => {
                self.split_check(&format!("{} columns", info.name), k_full)?;
                (Split::Cols, n_full, k_full / tp, Shard::Rep, true)
            }
        };
        let int4 = self.cfg.int4 && is_4bit(info.dtype);
        let (x8, a) = self.quantized(xl, act_q8)?;
        let (wt, ws, planes) = self.weight_tiles(w, split, n as u32, k as u32, int4)?;
        let y = if reduce {
            let rows = self.tensors[xl as usize].rows;
            self.temp("partial", Elem::F32, rows, n as u32)?
        } else {
            self.new_act(out, "linear", out_shard)?
        };
        let rows = self.tensors[xl as usize].rows;
        let kt = (k as u32).div_ceil(320) as usize;
        // Units: (output tile, K range) accumulated on one plane.
        let mut units: Vec<(usize, usize, usize, usize)> = Vec::new(); // (j, i0, i1, plane)
        for (j, per_i) in planes.iter().enumerate() {
            let mut a = 0;
            for i in 1..=kt {
                if i == kt || per_i[i] != per_i[a] {
                    units.push((j, a, i, per_i[a]));
                    a = i;
                }
            }
        }
        let parts_of = |j: usize| units.iter().filter(|u| u.0 == j).count();
        // Emit K steps interleaved over planes so the planes start together.
        let mut order: Vec<(usize, usize)> = Vec::new(); // (unit, i)
        for (u, unit) in units.iter().enumerate() {
            for i in unit.1..unit.2 {
                order.push((u, i));
            }
        }
        order.sort_by_key(|&(u, i)| {
            let p = units[u].3;
            let before: usize = units[..u]
                .iter()
                .filter(|x| x.3 == p)
                .map(|x| x.2 - x.1)
                .sum();
            (before + i - units[u].1, p)
        });
        let mut partials: HashMap<usize, Vec<Region>> = HashMap::new();
        let mut buf = vec![0u8; self.fp.planes()];
        for (u, i) in order {
            let (j, i0, i1, p) = units[u];
            let b = buf[p];
            buf[p] ^= 1;
            let idx = j * kt + i;
            let mut c = Chain::default();
            let ii = self.install(&mut c, wt, idx, p, b, MxmType::Int8, false);
            let ppos = self.fp.plane_pos[p];
            let xr = Region::rows(
                x8,
                0,
                rows,
                (i * 320) as u32,
                (k as u32 - i as u32 * 320).min(320),
            );
            let xi = c.push(self.read(xr, ppos));
            let mut mm = Node::new(
                QSel::Fixed(Queue::MxmCompute(p as u8)),
                Op::MatMul {
                    plane: p as u8,
                    buf: b,
                    ty: MxmType::Int8,
                    first: i == i0,
                    last: i + 1 == i1,
                    install: 0,
                },
                u64::from(rows),
            );
            mm.after.push((ii, 0));
            let mi = c.push(mm);
            c.link(xi, mi, 1);
            self.work.mxm_cycles[p] += u64::from(rows);
            if i + 1 == i1 {
                let vx = self.fp.vxm_pos;
                let nn = (n as u32 - j as u32 * 320).min(320);
                let dq = self.vxm(VxmFn::Dequant, u64::from(rows));
                let di = c.push(dq);
                c.link(mi, di, 4);
                let ar = self.whole(a);
                let ai = c.push(self.read(ar, vx));
                c.link(ai, di, 4);
                let sr = Region::rows(ws, 0, 1, j as u32 * 320, nn);
                let si = c.push(self.read(sr, vx));
                c.link(si, di, 4);
                let yr = if parts_of(j) > 1 {
                    let t = self.temp("kpart", Elem::F32, rows, nn)?;
                    let r = self.whole(t);
                    partials.entry(j).or_default().push(r);
                    r
                } else {
                    Region::rows(y, 0, rows, j as u32 * 320, nn)
                };
                let wi = c.push(self.write(yr, vx));
                c.link(di, wi, 4);
                self.place(c)?;
                // All K ranges of this output tile done: add the partial sums.
                if partials.get(&j).is_some_and(|v| v.len() == parts_of(j)) {
                    let ins = partials.remove(&j).unwrap_or_default();
                    let yr = Region::rows(y, 0, rows, j as u32 * 320, nn);
                    self.ew(VxmFn::AddN(ins.len() as u32), &ins, yr)?;
                }
            } else {
                self.place(c)?;
            }
        }
        if reduce {
            let yo = self.new_act(out, "allreduce", Shard::Rep)?;
            self.all_reduce(y, yo)?;
        }
        Ok(())
    }
}

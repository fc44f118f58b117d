//! Instruction selection for `KvAppend` and `Attention`: the fp16 KV cache, one cache per
//! (sequence, KV head) in one 16-slice group (static slices, dynamic address), and
//! attention kv-stationary (K and V tiles installed, queries streamed), the mapping chosen
//! by cost against q-stationary ([`choose_attention`]).

use super::super::cost::Cycles;
use super::super::isa::{Elem, Finish, MemAt, MxmType, Op, Queue, Reduce, Region, SxmFn, VxmFn};
use super::super::model::MachineModel;
use super::super::mops::TId;
use super::super::program::{AttnMap, Placement, TensorDecl, TensorKind};
use super::super::sched::{Chain, Node, QSel};
use super::{Gen, GenError, Shard};

/// Costs of the two attention mappings for one (sequence, KV head) and the choice.
pub fn choose_attention(
    m: &MachineModel,
    group_rows: u64,
    keys: u64,
    head_dim: u64,
) -> (AttnMap, Cycles, Cycles) {
    use super::super::cost::{mxm_matmul, MatmulShape, MxmDtype};
    let planes = 1;
    let c = |shape: MatmulShape| {
        mxm_matmul(m, shape, MxmDtype::Fp16, planes)
            .map(|x| x.cost.latency)
            .unwrap_or(Cycles::MAX / 4)
    };
    // kv-stationary: S = q·Kᵀ (K installed), O = P·V (V installed); queries stream.
    let ks = c(MatmulShape {
        m: group_rows,
        k: head_dim,
        n: keys,
    }) + c(MatmulShape {
        m: group_rows,
        k: keys,
        n: head_dim,
    });
    // q-stationary: Sᵀ = K·qᵀ (q installed, keys stream), Oᵀ = Vᵀ·Pᵀ (P installed,
    // V's columns stream).
    let qs = c(MatmulShape {
        m: keys,
        k: head_dim,
        n: group_rows,
    }) + c(MatmulShape {
        m: head_dim,
        k: keys,
        n: group_rows,
    });
    if qs < ks {
        (AttnMap::QStationary, ks, qs)
    } else {
        (AttnMap::KvStationary, ks, qs)
    }
}

impl<'a> Gen<'a> {
    pub(super) fn cache_tensor(
        &mut self,
        c: u32,
        seq: u32,
        head: u32,
        transposed: bool,
        plane: usize,
    ) -> Result<u32, GenError> {
        if let Some(i) = self.tensors.iter().position(|t| {
            matches!(t.kind, TensorKind::Cache { c: x, seq: s, head: h, .. } if x == c && s == seq && h == head)
        }) {
            return Ok(i as u32);
        }
        if !self.cache_slots.contains(&c) {
            self.cache_slots.push(c);
        }
        let info = self.model.caches[c as usize].clone();
        let keys = self.cfg.keys.max(1);
        let d = info.head_dim as u32;
        let id = self.tensors.len() as u32;
        // Every tile of one cache in one 16-slice group (static slices, dynamic address).
        let tiles = keys.div_ceil(320);
        let per_tile_bv = if transposed {
            u64::from(d) * 2 // Kᵀ: D rows of 320 fp16 keys (two byte vectors)
        } else {
            320 * (u64::from(d) * 2).div_ceil(320) // V: 320 key rows of D fp16
        };
        let per_tile = per_tile_bv.div_ceil(16) as u32;
        let (slices, bank, addr) = self
            .alloc
            .weight_group(self.fp, plane, 16, per_tile * tiles)
            .ok_or_else(|| self.full(&info.name, u64::from(per_tile * tiles)))?;
        let mut place = Vec::new();
        for i in 0..tiles {
            let kk = (keys - i * 320).min(320);
            place.push(Placement {
                region: Region::rows(id, i * 320, kk, 0, d),
                at: MemAt {
                    slices: slices.clone(),
                    bank,
                    addr: addr + i * per_tile,
                    partner: 0,
                },
                vectors: per_tile,
            });
        }
        self.tensors.push(TensorDecl {
            name: format!("{}[s{seq},h{head}]", info.name),
            kind: TensorKind::Cache {
                c,
                seq,
                head,
                transposed,
            },
            elem: Elem::F16,
            rows: keys,
            cols: d,
            place,
        });
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        Ok(id)
    }

    /// Plane of the attention work of (sequence, local KV head).
    pub(super) fn attn_plane(&mut self, seq: u32, head: u32, heads_local: u32) -> usize {
        ((seq * heads_local + head) as usize) % self.fp.planes()
    }

    pub(super) fn kv_append(&mut self, x: TId, cache: u32) -> Result<(), GenError> {
        let (xl, sh) = self.get(x)?;
        let info = self.model.caches[cache as usize].clone();
        let kvh = match sh {
            Shard::Rep => info.kv_heads,
            Shard::Cols => {
                self.split_check("KV heads", info.kv_heads)?;
                info.kv_heads / u64::from(self.tp())
            }
        } as u32;
        let d = info.head_dim as u32;
        // K is stored transposed under kv-stationary attention (installed as Kᵀ), V under
        // q-stationary. Which cache is K: the lowering names them `.k` / `.v`; without
        // names, the first cache of a pair is K.
        let is_k = !info.name.ends_with(".v");
        let map = self.cfg.attn;
        let transposed = match map {
            AttnMap::KvStationary => is_k,
            AttnMap::QStationary => !is_k,
        };
        let s = self.cfg.new_tokens;
        let vx = self.fp.vxm_pos;
        for b in 0..self.cfg.seqs {
            for h in 0..kvh {
                let plane = self.attn_plane(b, h, kvh);
                let ct = self.cache_tensor(cache, b, h, transposed, plane)?;
                let mut c = Chain::default();
                let xr = Region::rows(xl, b * s, s, h * d, d);
                let xi = c.push(self.read(xr, vx));
                let v = self.vxm(VxmFn::ToF16, Self::vectors(&xr));
                let vi = c.push(v);
                c.link(xi, vi, 4);
                let (at, _) = self.at_of(&Region::rows(ct, 0, 1, 0, d), 0);
                let mut prev = vi;
                let mut partner = vx;
                let occ = if transposed {
                    // Each new key becomes one lane of each of the D row vectors.
                    let east = self.fp.plane_east[plane];
                    let t = Node::new(
                        QSel::Sxm { east },
                        Op::Sxm {
                            f: SxmFn::Transpose,
                        },
                        u64::from(d),
                    );
                    let ti = c.push(t);
                    c.link(vi, ti, 2);
                    prev = ti;
                    partner = self.fp.sxm_pos[usize::from(east)];
                    u64::from(d) * 2 / 16
                } else {
                    u64::from(s)
                };
                let mut at = at;
                at.partner = partner;
                let w = Node::new(
                    QSel::Fixed(Queue::Mem(at.slices[0])),
                    Op::MemScatter {
                        at,
                        data: Region::rows(ct, 0, s, 0, d),
                        seq: b,
                    },
                    occ.max(1),
                );
                let wi = c.push(w);
                c.link(prev, wi, 2);
                self.place(c)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention(
        &mut self,
        q: TId,
        k: u32,
        v: u32,
        heads: u64,
        kvh: u64,
        d: u64,
        scale: f32,
        out: TId,
    ) -> Result<(), GenError> {
        let (ql, sh) = self.get(q)?;
        let (hl, kvl) = match sh {
            Shard::Rep => (heads, kvh),
            Shard::Cols => {
                self.split_check("attention heads", heads)?;
                self.split_check("KV heads", kvh)?;
                (heads / u64::from(self.tp()), kvh / u64::from(self.tp()))
            }
        };
        if self.cfg.attn == AttnMap::QStationary {
            return Err(GenError::Unsupported(
                "the q-stationary attention mapping is costed but not yet lowered".into(),
            ));
        }
        let y = self.new_act(out, "attn", sh)?;
        let g = (hl / kvl) as u32;
        let d = d as u32;
        let s = self.cfg.new_tokens;
        let keys = self.cfg.keys.max(1);
        let gr = g * s; // query rows per (sequence, KV head)
        let kt = keys.div_ceil(320);
        let vx = self.fp.vxm_pos;
        let fp16_rate = self.m.mxm.fp16_rate_divisor.get();
        // Phases over all (sequence, KV head) groups, so that each plane's in-order
        // queues run every group's q·Kᵀ before any group waits on its softmax.
        struct Grp {
            b: u32,
            h: u32,
            plane: usize,
            kc: u32,
            vc: u32,
            q16: u32,
            scores: u32,
            p16: u32,
            o: u32,
        }
        let mut groups = Vec::new();
        for b in 0..self.cfg.seqs {
            for h in 0..kvl as u32 {
                let plane = self.attn_plane(b, h, kvl as u32);
                let kc = self.cache_tensor(k, b, h, true, plane)?;
                let vc = self.cache_tensor(v, b, h, false, plane)?;
                let q16 = self.temp("q16", Elem::F16, gr, d)?;
                let scores = self.temp("scores", Elem::F32, gr, keys)?;
                let p16 = self.temp("probs", Elem::F16, gr, keys)?;
                let o = self.temp("attn.o", Elem::F32, gr, d)?;
                groups.push(Grp {
                    b,
                    h,
                    plane,
                    kc,
                    vc,
                    q16,
                    scores,
                    p16,
                    o,
                });
            }
        }
        let mut buf = vec![0u8; self.fp.planes()];
        // 1. q rows of each group as [g·s × d] fp16, one row per head.
        for gp in &groups {
            let mut c = Chain::default();
            let qr = Region::rows(ql, gp.b * s, s, gp.h * g * d, g * d);
            let qi = c.push(self.read(qr, vx));
            let f = self.vxm(VxmFn::ToF16, Self::vectors(&qr));
            let fi = c.push(f);
            c.link(qi, fi, 4);
            let east = self.fp.plane_east[gp.plane];
            let t = Node::new(
                QSel::Sxm { east },
                Op::Sxm {
                    f: SxmFn::HeadRows { g, d },
                },
                u64::from(gr),
            );
            let ti = c.push(t);
            c.link(fi, ti, 2);
            let w = self.write(self.whole(gp.q16), self.fp.sxm_pos[usize::from(east)]);
            let wi = c.push(w);
            c.link(ti, wi, 2);
            self.place(c)?;
        }
        // 2. S = q·Kᵀ, K tiles stationary; scaled and masked on the way out.
        for i in 0..kt {
            for gp in &groups {
                let plane = gp.plane;
                let ppos = self.fp.plane_pos[plane];
                let mut c = Chain::default();
                let bf = buf[plane];
                buf[plane] ^= 1;
                let ii = self.install(&mut c, gp.kc, i as usize, plane, bf, MxmType::Fp16, false);
                let q16r = self.whole(gp.q16);
                let xi = c.push(self.read(q16r, ppos));
                let mut mm = Node::new(
                    QSel::Fixed(Queue::MxmCompute(plane as u8)),
                    Op::MatMul {
                        plane: plane as u8,
                        buf: bf,
                        ty: MxmType::Fp16,
                        first: true,
                        last: true,
                        install: 0,
                    },
                    u64::from(gr) * fp16_rate,
                );
                mm.after.push((ii, 0));
                let mi = c.push(mm);
                c.link(xi, mi, 2);
                self.work.mxm_cycles[plane] += u64::from(gr) * fp16_rate;
                let kk = (keys - i * 320).min(320);
                let sm = self.vxm(
                    VxmFn::ScaleMask {
                        scale,
                        key0: i * 320,
                        seq: gp.b,
                        rows_per_head: s,
                    },
                    u64::from(gr),
                );
                let smi = c.push(sm);
                c.link(mi, smi, 4);
                let sr = Region::rows(gp.scores, 0, gr, i * 320, kk);
                let wi = c.push(self.write(sr, vx));
                c.link(smi, wi, 4);
                self.place(c)?;
            }
        }
        // 3. Softmax over each row (keys) in fp32; probabilities to fp16.
        for gp in &groups {
            let mx = self.temp("rowmax", Elem::F32, gr, 1)?;
            let e = self.temp("exp", Elem::F32, gr, keys)?;
            let rs = self.temp("rowsum", Elem::F32, gr, 1)?;
            let (sr, mr, er, rr, pr) = (
                self.whole(gp.scores),
                self.whole(mx),
                self.whole(e),
                self.whole(rs),
                self.whole(gp.p16),
            );
            self.reduce(sr, Reduce::Max, Reduce::Max, Finish::Identity, mr)?;
            self.ew(VxmFn::ExpSub, &[sr, mr], er)?;
            self.reduce(er, Reduce::Sum, Reduce::Sum, Finish::Recip, rr)?;
            self.ew(VxmFn::MulRow { to_f16: true }, &[er, rr], pr)?;
        }
        // 4. O = P·V: V tiles stationary, accumulated over key tiles.
        for gp in &groups {
            let plane = gp.plane;
            let ppos = self.fp.plane_pos[plane];
            for i in 0..kt {
                let mut c = Chain::default();
                let bf = buf[plane];
                buf[plane] ^= 1;
                let ii = self.install(&mut c, gp.vc, i as usize, plane, bf, MxmType::Fp16, true);
                let kk = (keys - i * 320).min(320);
                let pr = Region::rows(gp.p16, 0, gr, i * 320, kk);
                let xi = c.push(self.read(pr, ppos));
                let mut mm = Node::new(
                    QSel::Fixed(Queue::MxmCompute(plane as u8)),
                    Op::MatMul {
                        plane: plane as u8,
                        buf: bf,
                        ty: MxmType::Fp16,
                        first: i == 0,
                        last: i + 1 == kt,
                        install: 0,
                    },
                    u64::from(gr) * fp16_rate,
                );
                mm.after.push((ii, 0));
                let mi = c.push(mm);
                c.link(xi, mi, 2);
                self.work.mxm_cycles[plane] += u64::from(gr) * fp16_rate;
                if i + 1 == kt {
                    let or = self.whole(gp.o);
                    let wi = c.push(self.write(or, ppos));
                    c.link(mi, wi, 4);
                }
                self.place(c)?;
            }
        }
        // 5. Back to row layout: [g·s × d] → rows of sequence b, columns of group h.
        for gp in &groups {
            let mut c = Chain::default();
            let orr = self.whole(gp.o);
            let east = self.fp.plane_east[gp.plane];
            let spos = self.fp.sxm_pos[usize::from(east)];
            let oi = c.push(self.read(orr, spos));
            let t = Node::new(
                QSel::Sxm { east },
                Op::Sxm {
                    f: SxmFn::HeadCols { g, d },
                },
                u64::from(gr),
            );
            let ti = c.push(t);
            c.link(oi, ti, 4);
            let yr = Region::rows(y, gp.b * s, s, gp.h * g * d, g * d);
            let wi = c.push(self.write(yr, spos));
            c.link(ti, wi, 4);
            self.place(c)?;
        }
        Ok(())
    }
}

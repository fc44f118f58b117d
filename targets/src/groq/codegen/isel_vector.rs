//! Instruction selection for the vector ops: norms, RoPE, SwiGLU, residual adds and the
//! last-token pick in fp32 on the VXM (row reductions as an SXM lane tree), the host-side
//! embedding, and greedy sampling (a per-chip argmax, gathered under tensor parallelism).

use lpuc_ir::op::RopeStyle;

use super::super::isa::{Elem, Finish, GatherBy, Op, Queue, Reduce, Region, SxmFn, VxmFn};
use super::super::mops::{TId, WId};
use super::super::program::{Split, TensorKind};
use super::super::sched::{Chain, Node, QSel};
use super::{Gen, GenError, Shard};

impl<'a> Gen<'a> {
    /// Host-side gather: the rows arrive with the tokens (see the module docs of
    /// [`super`]).
    pub(super) fn embed(&mut self, out: TId) -> Result<(), GenError> {
        let id = self.new_act(out, "embed", Shard::Rep)?;
        self.tensors[id as usize].kind = TensorKind::Io { t: out };
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        Ok(())
    }

    /// RMS norm: the sum of squares as a row reduction, then `x · rms⁻¹ (· w)`.
    pub(super) fn norm(
        &mut self,
        x: TId,
        w: Option<WId>,
        eps: f32,
        out: TId,
    ) -> Result<(), GenError> {
        let (xl, sh) = self.get(x)?;
        if sh != Shard::Rep {
            return Err(GenError::Unsupported("norm of a split activation".into()));
        }
        let cols = self.tensors[xl as usize].cols;
        let rows = self.tensors[xl as usize].rows;
        let r = self.temp("rms", Elem::F32, rows, 1)?;
        let xr = self.whole(xl);
        let rr = self.whole(r);
        self.reduce(
            xr,
            Reduce::SumSq,
            Reduce::Sum,
            Finish::RmsRecip { n: cols, eps },
            rr,
        )?;
        let y = self.new_act(out, "norm", Shard::Rep)?;
        let mut ins = vec![xr, rr];
        if let Some(w) = w {
            let wl = self.vector_weight(w, cols)?;
            ins.push(Region {
                step: 0,
                ..Region::rows(wl, 0, rows, 0, cols)
            });
        }
        let yr = self.whole(y);
        self.ew(VxmFn::NormApply { has_w: w.is_some() }, &ins, yr)
    }

    /// RoPE on the VXM, with each row's cos/sin gathered by position and spread over the
    /// row's lanes by the SXM.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope(
        &mut self,
        x: TId,
        heads: u64,
        head_dim: u64,
        dims: u32,
        theta: f32,
        style: RopeStyle,
        out: TId,
    ) -> Result<(), GenError> {
        let (xl, sh) = self.get(x)?;
        let local_heads = match sh {
            Shard::Rep => heads,
            Shard::Cols => {
                self.split_check("rotary heads", heads)?;
                heads / u64::from(self.tp())
            }
        };
        let neox = style == RopeStyle::Neox;
        let table = self.rope_table(dims, theta, neox)?;
        let y = self.new_act(out, "rope", sh)?;
        let rows = self.tensors[xl as usize].rows;
        let vx = self.fp.vxm_pos;
        let mut c = Chain::default();
        let xr = self.whole(xl);
        let xi = c.push(self.read(xr, vx));
        let f = VxmFn::Rope {
            heads: local_heads as u32,
            head_dim: head_dim as u32,
            dims,
            theta,
            neox,
        };
        let v = self.vxm(f, Self::vectors(&xr));
        let vi = c.push(v);
        c.link(xi, vi, 4);
        // cos/sin rows of each row's position, spread over the row's lanes.
        let tr = Region::rows(table, 0, rows, 0, dims);
        let (at, _) = self.at_of(&tr, self.fp.sxm_pos[0]);
        let gi = c.push(Node::new(
            QSel::Fixed(Queue::Mem(at.slices[0])),
            Op::MemGather {
                at,
                data: tr,
                by: GatherBy::Positions,
            },
            u64::from(rows),
        ));
        let si = c.push(Node::new(
            QSel::Sxm { east: false },
            Op::Sxm {
                f: SxmFn::Distribute,
            },
            u64::from(rows),
        ));
        c.link(gi, si, 4);
        c.link(si, vi, 4);
        let yr = self.whole(y);
        let wi = c.push(self.write(yr, vx));
        c.link(vi, wi, 4);
        self.place(c)
    }

    /// The last token row of each sequence (a strided copy).
    pub(super) fn take_last(&mut self, x: TId, out: TId) -> Result<(), GenError> {
        let (xl, sh) = self.get(x)?;
        let y = self.new_act(out, "last", sh)?;
        let s = self.cfg.new_tokens;
        let cols = self.tensors[xl as usize].cols;
        let src = Region {
            tensor: xl,
            row0: s - 1,
            rows: self.seq_rows,
            step: s,
            col0: 0,
            cols,
        };
        let yr = self.whole(y);
        self.ew(VxmFn::Copy, &[src], yr)
    }

    /// The logits, and greedy sampling on chip: each chip's argmax over its vocabulary
    /// shard, then the (value, index) pairs are gathered like any small all-gather.
    pub(super) fn output(&mut self, x: TId) -> Result<(), GenError> {
        let (xl, sh) = self.get(x)?;
        self.logits = Some(xl);
        let rows = self.tensors[xl as usize].rows;
        let tok = self.temp("argmax", Elem::F32, rows, 1)?;
        let xr = self.whole(xl);
        let tr = self.whole(tok);
        self.reduce(xr, Reduce::Max, Reduce::Max, Finish::Identity, tr)?;
        if sh == Shard::Cols && self.tp() > 1 {
            let all = self.temp("argmax.all", Elem::F32, rows, self.tp())?;
            self.all_gather(tok, all)?;
        }
        Ok(())
    }

    pub(super) fn binary(&mut self, f: VxmFn, a: TId, b: TId, out: TId) -> Result<(), GenError> {
        let (al, sa) = self.get(a)?;
        let (bl, sb) = self.get(b)?;
        if sa != sb {
            return Err(GenError::Unsupported(format!(
                "{} of a split and a replicated activation",
                f.name()
            )));
        }
        let y = self.new_act(out, f.name(), sa)?;
        let (ar, br, yr) = (self.whole(al), self.whole(bl), self.whole(y));
        self.ew(f, &[ar, br], yr)?;
        Ok(())
    }

    pub(super) fn vector_weight(&mut self, w: WId, cols: u32) -> Result<u32, GenError> {
        if let Some(i) = self
            .tensors
            .iter()
            .position(|t| matches!(t.kind, TensorKind::Vector { w: x, .. } if x == w))
        {
            return Ok(i as u32);
        }
        self.weight_slots.push(w);
        let name = self.model.weights[w as usize].name.clone();
        let id = self.act_tensor(
            name,
            TensorKind::Vector {
                w,
                split: Split::None,
            },
            Elem::F32,
            1,
            cols,
        )?;
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        Ok(id)
    }

    pub(super) fn rope_table(
        &mut self,
        dims: u32,
        theta: f32,
        neox: bool,
    ) -> Result<u32, GenError> {
        let key = (dims, theta.to_bits(), neox);
        if let Some(t) = self.tables.get(&key) {
            return Ok(*t);
        }
        let keys = self.cfg.keys.max(1);
        let id = self.act_tensor(
            format!("rope.table.{dims}"),
            TensorKind::RopeTable { dims, theta, neox },
            Elem::F32,
            keys,
            dims,
        )?;
        let r = self.whole(id);
        self.sched.preset_written(r, 0);
        self.tables.insert(key, id);
        Ok(id)
    }
}

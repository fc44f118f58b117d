//! The one place-and-repair loop: every chain the instruction selectors build is placed
//! here. A rigid chain's operands meet at fixed offsets, so two operands on one slice
//! (or a read and a write on one slice and bank) can never be scheduled; the loop finds
//! such a self-conflict, repairs it (re-places a written tensor that holds nothing yet,
//! copies a read operand to fresh slices, or stages a write and copies it into place
//! afterwards) and retries, then hands the chain to the scheduler. Errors are `Result`s.

use super::super::isa::{Finish, MemAt, Op, Reduce, Region, SxmFn, VxmFn};
use super::super::program::{Placement, TensorDecl, TensorKind};
use super::super::sched::{self, Chain, Node, QSel};
use super::{Gen, GenError};

/// Repairs tried on one chain before it is refused. Each repair moves one MEM operand of
/// the chain onto slices no other operand of the chain uses, so a chain needs at most one
/// repair per MEM operand; the widest chain is the two-phase all-reduce's sum over 8
/// chips (its own block, 7 inboxes and the result: 9 MEM operands), and the presets need
/// at most 3 (measured over llama3-70b/8b, smollm2-135m and tiny). 16 leaves room for
/// that bound with margin; reaching it means a repair re-created a conflict, a bug to
/// report rather than a schedule to emit.
const REPAIR_LIMIT: usize = 16;

impl<'a> Gen<'a> {
    /// Slices of every MEM node of a chain except node `skip`.
    pub(super) fn chain_slices(c: &Chain, skip: usize) -> Vec<u16> {
        let mut v = Vec::new();
        for (k, n) in c.nodes.iter().enumerate() {
            if k != skip {
                if let Some(at) = n.op.mem_at() {
                    v.extend(at.slices.iter().copied());
                }
            }
        }
        v
    }

    /// Re-points every node of `c` that touches `tensor` at its current placement.
    pub(super) fn refresh(&self, c: &mut Chain, tensor: u32, to: u32) {
        for n in c.nodes.iter_mut() {
            let (at, data) = match &mut n.op {
                Op::MemRead { at, data, .. }
                | Op::MemWrite { at, data, .. }
                | Op::MemGather { at, data, .. }
                | Op::MemScatter { at, data, .. } => (at, data),
                _ => continue,
            };
            if data.tensor == tensor {
                data.tensor = to;
                let (new, _) = self.at_of(data, at.partner);
                *at = new;
            }
        }
    }

    /// Resolves a conflict between nodes `i` and `j` of a chain: re-place a written
    /// tensor that holds nothing yet, else copy a read operand to fresh slices.
    pub(super) fn relocate(
        &mut self,
        c: &mut Chain,
        i: usize,
        j: usize,
        after: &mut Vec<(Region, Region)>,
    ) -> Result<bool, GenError> {
        for k in [j, i] {
            let Op::MemWrite { data, .. } = &c.nodes[k].op else {
                continue;
            };
            let t = data.tensor;
            let d = &self.tensors[t as usize];
            if d.place.len() != 1 || d.is_resident() || self.sched.written(t) {
                continue;
            }
            let avoid = Self::chain_slices(c, k);
            let (width, vectors) = (d.place[0].at.slices.len(), d.place[0].vectors);
            let Some((slices, bank, addr)) = self.alloc.act_group(self.fp, width, vectors, &avoid)
            else {
                continue;
            };
            let p = &mut self.tensors[t as usize].place[0];
            p.at.slices = slices;
            p.at.bank = bank;
            p.at.addr = addr;
            self.refresh(c, t, t);
            return Ok(true);
        }
        for k in [j, i] {
            let Op::MemRead { data, .. } = &c.nodes[k].op else {
                continue;
            };
            let t = data.tensor;
            let d = self.tensors[t as usize].clone();
            if d.place.len() != 1 {
                continue;
            }
            // Not on the chain's other slices, nor on the source's own (the copy
            // reads one while it writes the other).
            let mut avoid = Self::chain_slices(c, k);
            avoid.extend(d.place[0].at.slices.iter().copied());
            let vectors = d.place[0].vectors;
            let Some(id) = self.temp_off(&d, "copy", d.rows, d.cols, vectors, &avoid) else {
                continue;
            };
            let (src, dst) = (self.whole(t), self.whole(id));
            let vx = self.fp.vxm_pos;
            let mut cc = Chain::default();
            let v = self.vxm(VxmFn::Copy, Self::vectors(&src));
            let vi = cc.push(v);
            let w = d.elem.bytes() as u8;
            let ri = cc.push(self.read(src, vx));
            cc.link(ri, vi, w);
            let wi = cc.push(self.write(dst, vx));
            cc.link(vi, wi, w);
            self.sched.place(cc, 0)?;
            // Only this node reads the copy (others of the chain keep the original).
            let Op::MemRead { at, data, .. } = &mut c.nodes[k].op else {
                return Ok(false);
            };
            data.tensor = id;
            let (new, _) = self.at_of(data, at.partner);
            *at = new;
            return Ok(true);
        }
        // A write into a tensor that already holds data: write to a fresh temporary
        // instead and copy it into place afterwards.
        for k in [j, i] {
            let Op::MemWrite {
                data,
                peer_block: None,
                ..
            } = &c.nodes[k].op
            else {
                continue;
            };
            let data = *data;
            let d = self.tensors[data.tensor as usize].clone();
            let mut avoid = Self::chain_slices(c, k);
            avoid.extend(d.place.iter().flat_map(|p| p.at.slices.iter().copied()));
            let vectors = data.rows.max(1) * data.cols.div_ceil(320).max(1);
            let Some(id) = self.temp_off(&d, "staged", data.rows, data.cols, vectors, &avoid)
            else {
                continue;
            };
            let staged = Region::rows(id, 0, data.rows, 0, data.cols);
            let Op::MemWrite { at, data: dd, .. } = &mut c.nodes[k].op else {
                return Ok(false);
            };
            *dd = staged;
            let (new, _) = self.at_of(&staged, at.partner);
            *at = new;
            after.push((staged, data));
            return Ok(true);
        }
        Ok(false)
    }

    /// A temporary `rows × cols` like `like` (named `<like>.<suffix>`), placed on slices
    /// outside `avoid`; `None` when no such group is free.
    pub(super) fn temp_off(
        &mut self,
        like: &TensorDecl,
        suffix: &str,
        rows: u32,
        cols: u32,
        vectors: u32,
        avoid: &[u16],
    ) -> Option<u32> {
        let (slices, bank, addr) =
            self.alloc
                .act_group(self.fp, like.elem.bytes() as usize, vectors, avoid)?;
        let id = self.tensors.len() as u32;
        self.tensors.push(TensorDecl {
            name: format!("{}.{suffix}", like.name),
            kind: TensorKind::Temp,
            elem: like.elem,
            rows,
            cols,
            place: vec![Placement {
                region: Region::rows(id, 0, rows, 0, cols),
                at: MemAt {
                    slices,
                    bank,
                    addr,
                    partner: 0,
                },
                vectors,
            }],
        });
        Some(id)
    }

    /// Places a chain: repairs its self-conflicts (at most [`REPAIR_LIMIT`]), hands it to
    /// the scheduler, then places the copies that staged writes need.
    pub(super) fn place(&mut self, mut c: Chain) -> Result<(), GenError> {
        c.nodes = sched::topo(std::mem::take(&mut c.nodes));
        // Copies to place once the chain is placed (redirected writes).
        let mut after: Vec<(Region, Region)> = Vec::new();
        let mut repairs = 0;
        loop {
            let solved = self.sched.solve(c.clone());
            let Some(conf) = sched::self_conflict(self.fp, &solved) else {
                break;
            };
            let Some((i, j)) = conf.nodes else {
                break;
            };
            if repairs == REPAIR_LIMIT {
                return Err(GenError::Unsupported(format!(
                    "a chain still conflicts with itself after {REPAIR_LIMIT} repairs: {}",
                    conf.why
                )));
            }
            // No repair possible: the scheduler places the chain as it is or says why not.
            if !self.relocate(&mut c, i, j, &mut after)? {
                break;
            }
            repairs += 1;
        }
        self.sched.place(c, 0)?;
        for (from, to) in after {
            let vx = self.fp.vxm_pos;
            let mut cc = Chain::default();
            let w = self.width(from.tensor);
            let ri = cc.push(self.read(from, vx));
            let v = self.vxm(VxmFn::Copy, Self::vectors(&from));
            let vi = cc.push(v);
            cc.link(ri, vi, w);
            let wi = cc.push(self.write(to, vx));
            cc.link(vi, wi, self.width(to.tensor));
            self.sched.place(cc, 0)?;
        }
        Ok(())
    }

    /// `reads → f → write`, all on the VXM.
    pub(super) fn ew(&mut self, f: VxmFn, ins: &[Region], out: Region) -> Result<(), GenError> {
        let vx = self.fp.vxm_pos;
        let mut c = Chain::default();
        let vectors = Self::vectors(&out);
        let v = self.vxm(f, vectors);
        let vi = c.push(v);
        for r in ins {
            let w = self.width(r.tensor);
            let ri = c.push(self.read(*r, vx));
            c.link(ri, vi, w);
        }
        let w = self.write(out, vx);
        let wi = c.push(w);
        let ow = self.width(out.tensor);
        c.link(vi, wi, ow);
        self.place(c)
    }

    /// Row reduction `x → partial → lane tree → finish → out[rows × 1]`.
    pub(super) fn reduce(
        &mut self,
        x: Region,
        partial: Reduce,
        tree: Reduce,
        finish: Finish,
        out: Region,
    ) -> Result<(), GenError> {
        let vx = self.fp.vxm_pos;
        let mut c = Chain::default();
        let xi = c.push(self.read(x, vx));
        let p = self.vxm(VxmFn::Partial(partial), Self::vectors(&x));
        let pi = c.push(p);
        c.link(xi, pi, self.width(x.tensor));
        let east = self.alloc.act_rr % 2 == 1;
        let mut t = Node::new(
            QSel::Sxm { east },
            Op::Sxm {
                f: SxmFn::LaneTree(tree),
            },
            u64::from(x.rows.max(1)),
        );
        t.paced = true;
        self.work.vxm_alu_cycles += u64::from(x.rows.max(1));
        let ti = c.push(t);
        c.link(pi, ti, 4);
        let f = self.vxm(VxmFn::Finish(finish), u64::from(x.rows.max(1)));
        let fi = c.push(f);
        c.link(ti, fi, 4);
        let wi = c.push(self.write(out, vx));
        c.link(fi, wi, 4);
        self.place(c)
    }
}

//! The one place-and-repair loop: every chain the instruction selectors build is placed
//! here. A rigid chain's operands meet at fixed offsets, so two operands on one slice
//! (or a read and a write on one slice and bank) can never be scheduled; the loop finds
//! such a self-conflict, repairs it (re-places a written tensor that holds nothing yet,
//! copies a read operand to fresh slices, or stages a write and copies it into place
//! afterwards) and retries, then hands the chain to the scheduler. Errors are `Result`s.

use super::super::isa::{Op, Region, VxmFn};
use super::super::program::{TensorDecl, TensorKind};
use super::super::sched::{self, Chain};
use super::{Gen, GenError};

/// Repairs tried on one chain before it is refused. Each repair moves one MEM operand of
/// the chain onto slices no other operand of the chain uses, so repairs do not undo each
/// other and a chain should need about one per MEM operand at worst. The widest chains
/// have 9 MEM operands (an all-reduce's sum over 8 chips: 8 reads and the result), and
/// the presets need at most 3 (measured over llama3-70b/8b, smollm2-135m and tiny, every
/// configuration of `targets/tests/groq_predictions.rs`). 16 covers the widest chain
/// with margin; reaching it means repairs keep re-creating a conflict — a bug to report
/// (the error names the conflict), not a schedule to emit.
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
        let at = self
            .alloc
            .act_group(self.fp, like.elem.bytes() as usize, vectors, avoid)?;
        Some(self.push_placed(
            format!("{}.{suffix}", like.name),
            TensorKind::Temp,
            like.elem,
            rows,
            cols,
            at,
            vectors,
        ))
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
}

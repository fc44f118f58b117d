//! Collectives under tensor parallelism: the all-reduce `cost::allreduce` picks (one-shot,
//! or two-phase reduce-scatter + all-gather) and the small all-gather of the sampler,
//! lowered to sends and receives over one C2C link per peer with fp16 payloads.

use super::super::cost::{self, AllReduceAlgo, Cycles};
use super::super::isa::{Elem, Op, Queue, Region, VxmFn};
use super::super::sched::{Chain, Node, QSel};
use super::{Gen, GenError};

impl<'a> Gen<'a> {
    /// The next C2C link index of a peer offset (one link per peer in a node).
    pub(super) fn link_of(&self, offset: u32) -> u8 {
        ((offset - 1) as u64 % self.fp.links) as u8
    }

    /// Sends `src` to the chip `o` ranks ahead and receives what the chip `o` ranks back
    /// sent into `dst`. `src_block`: read the column block of rank + o; `dst_block`:
    /// write the column block of rank − o.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn exchange(
        &mut self,
        src: Region,
        dst: Region,
        o: u32,
        src_block: bool,
        dst_block: bool,
        bytes: u64,
    ) -> Result<(), GenError> {
        let link = self.link_of(o);
        let lpos = self.fp.queue_pos(Queue::LinkTx(link));
        let occ = (bytes as f64 / self.m.link_bytes_per_cycle())
            .ceil()
            .max(1.0) as Cycles;
        let mut c = Chain::default();
        let mut rd = self.read(src, self.fp.vxm_pos);
        if let Op::MemRead { peer_block, .. } = &mut rd.op {
            *peer_block = src_block.then_some(o as u8);
        }
        let ri = c.push(rd);
        let v = self.vxm(VxmFn::ToF16, Self::vectors(&src));
        let vi = c.push(v);
        c.link(ri, vi, self.width(src.tensor));
        let mut s = Node::new(
            QSel::Fixed(Queue::LinkTx(link)),
            Op::Send {
                link,
                peer: o as u8,
            },
            occ,
        );
        s.paced = false;
        let si = c.push(s);
        c.link(vi, si, 2);
        let mut r = Node::new(
            QSel::Fixed(Queue::LinkRx(link)),
            Op::Recv {
                link,
                peer: o as u8,
                send: 0,
            },
            occ,
        );
        r.paced = false;
        r.exact = Some((si, cost::hop_cycles(self.m)));
        let rcv = c.push(r);
        let mut w = self.write(dst, lpos);
        if let Op::MemWrite { peer_block, .. } = &mut w.op {
            *peer_block = dst_block.then_some(o as u8);
        }
        w.occ = occ;
        w.paced = false;
        let wi = c.push(w);
        c.link(rcv, wi, 2);
        self.work.c2c_bytes += bytes;
        self.place(c)
    }

    /// All-reduce (sum) of a partial `[rows × n]` over the group into `out` (replicated).
    pub(super) fn all_reduce(&mut self, partial: u32, out: u32) -> Result<(), GenError> {
        let t = self.tp();
        let (rows, n) = {
            let d = &self.tensors[partial as usize];
            (d.rows, d.cols)
        };
        let bytes = u64::from(rows) * u64::from(n) * 2;
        let ar = cost::allreduce(self.m, bytes, u64::from(t), 2)
            .map_err(|e| GenError::Unsupported(e.to_string()))?;
        let pr = self.whole(partial);
        let two_phase = ar.algo != AllReduceAlgo::OneShot && n % t == 0;
        // Every peer's data lands in its own tensor (own slices): receives arrive at
        // link pace, so sharing a slice's write port would serialize them.
        if !two_phase {
            // Everyone sends everything to everyone; each chip sums all t copies in rank
            // order (so every chip gets bit-identical results).
            let mut ins = vec![pr];
            for o in 1..t {
                let inbox = self.temp("inbox", Elem::F16, rows, n)?;
                let dst = self.whole(inbox);
                self.exchange(pr, dst, o, false, false, bytes)?;
                ins.push(dst);
            }
            let or = self.whole(out);
            self.ew(VxmFn::Sum(t), &ins, or)?;
            self.work.c2c_hops += 1;
            return Ok(());
        }
        // Two-phase: reduce-scatter (block b of every partial goes to chip b), sum the
        // own block, all-gather the sums. Blocks are `n / t` columns.
        let bn = n / t;
        let shard_bytes = bytes / u64::from(t);
        let block0 = Region::rows(partial, 0, rows, 0, bn);
        let mut inboxes = Vec::new();
        for o in 1..t {
            let inbox = self.temp("rs.inbox", Elem::F16, rows, bn)?;
            let dst = self.whole(inbox);
            self.exchange(block0, dst, o, true, false, shard_bytes)?;
            inboxes.push(dst);
        }
        let mine = self.temp("rs.sum", Elem::F32, rows, bn)?;
        {
            let vx = self.fp.vxm_pos;
            let mut c = Chain::default();
            let v = self.vxm(VxmFn::Sum(t), Self::vectors(&block0));
            let vi = c.push(v);
            let mut own = self.read(block0, vx);
            if let Op::MemRead { peer_block, .. } = &mut own.op {
                *peer_block = Some(0);
            }
            let oi = c.push(own);
            c.link(oi, vi, 4);
            for r in &inboxes {
                let ri = c.push(self.read(*r, vx));
                c.link(ri, vi, 2);
            }
            let mr = self.whole(mine);
            let wi = c.push(self.write(mr, vx));
            c.link(vi, wi, 4);
            self.place(c)?;
        }
        // All-gather: every peer's sum lands in its own tensor, then each block is
        // copied into its place (own block: rank; from peer o: rank − o).
        let mr = self.whole(mine);
        let mut landed = vec![(mr, 0u32)];
        for o in 1..t {
            let land = self.temp("ag.inbox", Elem::F16, rows, bn)?;
            let dst = self.whole(land);
            self.exchange(mr, dst, o, false, false, shard_bytes)?;
            landed.push((dst, o));
        }
        for (src, o) in landed {
            let vx = self.fp.vxm_pos;
            let mut c = Chain::default();
            let ri = c.push(self.read(src, vx));
            let v = self.vxm(VxmFn::Copy, Self::vectors(&src));
            let vi = c.push(v);
            c.link(ri, vi, self.width(src.tensor));
            let mut w = self.write(Region::rows(out, 0, rows, 0, bn), vx);
            if let Op::MemWrite { peer_block, .. } = &mut w.op {
                *peer_block = Some(o as u8);
            }
            let wi = c.push(w);
            c.link(vi, wi, 4);
            self.place(c)?;
        }
        self.work.c2c_hops += 2;
        Ok(())
    }

    /// All-gather of `[rows × 1]` per chip into `[rows × t]` (own column first).
    pub(super) fn all_gather(&mut self, part: u32, all: u32) -> Result<(), GenError> {
        let rows = self.tensors[part as usize].rows;
        let pr = self.whole(part);
        for o in 1..self.tp() {
            let dst = Region::rows(all, 0, rows, o, 1);
            self.exchange(pr, dst, o, false, false, u64::from(rows) * 4)?;
        }
        let dst = Region::rows(all, 0, rows, 0, 1);
        self.ew(VxmFn::Copy, &[pr], dst)?;
        Ok(())
    }
}

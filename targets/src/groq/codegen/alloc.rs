//! SRAM allocation for one block on one chip: a bump allocator per (slice, bank) over
//! three slice sets — the innermost slices per side for activations, each MXM plane's
//! home set (even/odd slices of its hemisphere) for its weight tiles and caches, and the
//! weight slices again (rotating) for small resident tensors, so residents never share a
//! slice with activations. Tensors of one chain must sit on distinct slices; callers pass
//! the slices to avoid.

use super::super::isa::Floorplan;
use super::super::model::MachineModel;

/// SRAM per-bank, per-slice bump allocator.
#[derive(Clone, Debug)]
pub(super) struct Alloc {
    pub(super) cap: u32,
    pub(super) used: Vec<[u32; 2]>,
    pub(super) act: Vec<Vec<u16>>,
    pub(super) home: Vec<Vec<u16>>,
    pub(super) act_rr: usize,
    pub(super) small_rr: usize,
    pub(super) home_rr: Vec<usize>,
}

impl Alloc {
    pub(super) fn new(m: &MachineModel, fp: &Floorplan) -> Alloc {
        let cap = (m.sram.slice_bytes.get()
            / m.sram.banks_per_slice.get()
            / m.sram.bank_access_bytes.get()) as u32;
        let per = fp.mem_per_side;
        let act_per_side = 8.min(per / 4).max(1);
        let planes_per_side = fp.planes() / 2;
        let mut act = vec![Vec::new(), Vec::new()];
        let mut home = vec![Vec::new(); fp.planes()];
        for side in 0..2u16 {
            for i in 0..per {
                let id = side * per + i;
                if i >= per - act_per_side {
                    act[side as usize].push(id);
                } else {
                    let p = side as usize * planes_per_side + (i as usize % planes_per_side);
                    home[p].push(id);
                }
            }
        }
        Alloc {
            cap,
            used: vec![[0, 0]; fp.mem_slices()],
            act,
            home,
            act_rr: 0,
            small_rr: 0,
            home_rr: vec![0; fp.planes()],
        }
    }

    /// Same address on every slice of `slices`, in `bank` (or the other bank).
    pub(super) fn take(&mut self, slices: &[u16], bank: u8, vectors: u32) -> Option<(u8, u32)> {
        for b in [bank, 1 - bank] {
            let addr = slices
                .iter()
                .map(|s| self.used[*s as usize][b as usize])
                .max()
                .unwrap_or(0);
            if u64::from(addr) + u64::from(vectors) <= u64::from(self.cap) {
                for s in slices {
                    self.used[*s as usize][b as usize] = addr + vectors;
                }
                return Some((b, addr));
            }
        }
        None
    }

    pub(super) fn free(&self, s: u16) -> u32 {
        let u = self.used[s as usize];
        (self.cap - u[0]) + (self.cap - u[1])
    }

    /// `n` slices from `set` with room for `vectors` each, preferring the rotation.
    pub(super) fn group_from(
        &mut self,
        set: &[u16],
        rr: usize,
        n: usize,
        bank: u8,
        vectors: u32,
    ) -> Option<(Vec<u16>, u8, u32)> {
        if set.len() >= n {
            for k in 0..set.len() {
                let start = (rr + k * n) % set.len();
                let slices: Vec<u16> = (0..n).map(|j| set[(start + j) % set.len()]).collect();
                if let Some((b, a)) = self.take(&slices, bank, vectors) {
                    return Some((slices, b, a));
                }
            }
        }
        None
    }

    /// Fallback: the `n` slices of `side_set` with the most room.
    pub(super) fn roomiest(
        &mut self,
        side_set: &[u16],
        n: usize,
        bank: u8,
        vectors: u32,
    ) -> Option<(Vec<u16>, u8, u32)> {
        let mut by: Vec<u16> = side_set.to_vec();
        by.sort_by_key(|s| (std::cmp::Reverse(self.free(*s)), *s));
        by.truncate(n);
        if by.len() < n {
            return None;
        }
        by.sort();
        self.take(&by, bank, vectors).map(|(b, a)| (by, b, a))
    }

    pub(super) fn weight_group(
        &mut self,
        fp: &Floorplan,
        plane: usize,
        n: usize,
        vectors: u32,
    ) -> Option<(Vec<u16>, u8, u32)> {
        let set = self.home[plane].clone();
        let rr = self.home_rr[plane];
        self.home_rr[plane] += n;
        if let Some(g) = self.group_from(&set, rr, n, 0, vectors) {
            return Some(g);
        }
        let east = fp.plane_east[plane];
        let side: Vec<u16> = (0..fp.mem_slices() as u16)
            .filter(|s| fp.mem_east[*s as usize] == east)
            .collect();
        if let Some(g) = self.roomiest(&side, n, 0, vectors) {
            return Some(g);
        }
        let all: Vec<u16> = (0..fp.mem_slices() as u16).collect();
        // Any slices, but all on one side of the plane: a plane sits at the edge, so
        // every slice is on the same side of it.
        self.roomiest(&all, n, 0, vectors)
    }

    /// A group for an activation: innermost slices, alternating sides, never one of
    /// `avoid` (slices of tensors it will be read or written together with).
    pub(super) fn act_group(
        &mut self,
        fp: &Floorplan,
        n: usize,
        vectors: u32,
        avoid: &[u16],
    ) -> Option<(Vec<u16>, u8, u32)> {
        let first = self.act_rr % 2;
        self.act_rr += 1;
        for side in [first, 1 - first] {
            let set: Vec<u16> = self.act[side]
                .iter()
                .copied()
                .filter(|s| !avoid.contains(s))
                .collect();
            let rr = (self.act_rr / 2) * n;
            if let Some(g) = self.group_from(&set, rr, n, 1, vectors) {
                return Some(g);
            }
        }
        for side in [first, 1 - first] {
            let side_set: Vec<u16> = (0..fp.mem_slices() as u16)
                .filter(|s| fp.mem_east[*s as usize] == (side == 1) && !avoid.contains(s))
                .collect();
            if let Some(g) = self.roomiest(&side_set, n, 1, vectors) {
                return Some(g);
            }
        }
        None
    }

    /// A group for a small resident tensor (scales, norm weights, tables): the weight
    /// slices, rotating, so they never share a slice with activations.
    pub(super) fn small_group(
        &mut self,
        fp: &Floorplan,
        n: usize,
        vectors: u32,
    ) -> Option<(Vec<u16>, u8, u32)> {
        let side = self.act_rr % 2;
        self.act_rr += 1;
        for side in [side, 1 - side] {
            let set: Vec<u16> = self
                .home
                .iter()
                .enumerate()
                .filter(|(p, _)| fp.plane_east[*p] == (side == 1))
                .flat_map(|(_, h)| h.iter().copied())
                .collect::<std::collections::BTreeSet<u16>>()
                .into_iter()
                .collect();
            let rr = self.small_rr;
            self.small_rr += n;
            if let Some(g) = self.group_from(&set, rr, n, 1, vectors) {
                return Some(g);
            }
        }
        let all: Vec<u16> = (0..fp.mem_slices() as u16).collect();
        self.roomiest(&all, n, 1, vectors)
    }
}

//! The static scheduler: assigns every instruction a queue and a cycle.
//!
//! The code generator hands over **chains**: small groups of instructions joined by
//! streams (a MEM read feeding an MXM install, an accumulator drain feeding a VXM
//! dequant feeding a MEM write). On the TSP nothing buffers a stream, so inside a chain
//! the relative timing is fixed by the timing law (ISCA'20 Eq. 4): a consumer issues
//! exactly `d_func + δ` after its producer, and both stream at the pace of the slower
//! one. The scheduler solves those offsets once per chain ([`solve`]) and then slides the
//! rigid chain to the earliest cycle at which
//!
//! * every operand it reads from SRAM has been fully written,
//! * in-order MXM queues have finished their previous instruction (install and compute
//!   queues never backfill, which also keeps each plane's accumulation order),
//! * every resource it needs is free: queues, MEM read/write ports and banks, MXM weight
//!   buffers, VXM ALUs (capacity per lane), stream bands, C2C links.
//!
//! A conflict always names the cycle at which it ends, so the search jumps instead of
//! stepping. Chains are placed in program order with backfilling on MEM, VXM and SXM
//! queues; all tables are ordered maps, so the result is deterministic.
//!
//! The scheduler's word is not trusted: `check.rs` re-derives every resource and timing
//! fact from the finished instructions.

use std::collections::{BTreeMap, HashMap};

use super::cost::Cycles;
use super::isa::{
    dir_between, in_pos_of, out_delay_of, src_bands, Band, Dir, Floorplan, Instr, Op, Queue,
    Region, Resource, Src, SxmFn,
};
use super::timing::{overlaps, write_ready};

/// Which queue a chain node may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QSel {
    Fixed(Queue),
    /// Any VXM queue.
    Vxm,
    /// Any SXM queue on that side.
    Sxm {
        east: bool,
    },
}

/// One instruction of a chain, before scheduling.
#[derive(Clone, Debug)]
pub struct Node {
    pub q: QSel,
    pub op: Op,
    /// Vectors this instruction streams at its own pace (cycles if alone).
    pub occ: Cycles,
    /// Stream operands: earlier nodes of the chain and the stream width.
    pub srcs: Vec<(usize, u8)>,
    /// `issue ≥ nodes[i].issue + nodes[i].lat + gap` (a matmul after its weights'
    /// install has completed).
    pub after: Vec<(usize, Cycles)>,
    /// `issue = nodes[i].issue + gap` (a C2C receive after its send).
    pub exact: Option<(usize, Cycles)>,
    pub out_width: u8,
    /// Whether this node's pace follows its stream neighbours'.
    pub paced: bool,
}

impl Node {
    pub fn new(q: QSel, op: Op, occ: Cycles) -> Node {
        Node {
            q,
            op,
            occ: occ.max(1),
            srcs: Vec::new(),
            after: Vec::new(),
            exact: None,
            out_width: 0,
            paced: true,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub nodes: Vec<Node>,
}

impl Chain {
    pub fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    /// Adds a stream operand `from → to` of `width` streams; sets `from`'s output width.
    pub fn link(&mut self, from: usize, to: usize, width: u8) {
        self.nodes[from].out_width = width;
        self.nodes[to].srcs.push((from, width));
    }
}

/// Per-node latency (issue → last result), from the timing law.
pub fn latency(fp: &Floorplan, lane_tree_steps: u64, transpose_block: u64, n: &Node) -> Cycles {
    let base = n.occ - 1 + fp.skew;
    match &n.op {
        Op::Install { .. } => base,
        Op::Send { .. } => n.occ,
        Op::Recv { .. } => n.occ + fp.d_func,
        Op::Sxm {
            f: SxmFn::LaneTree(_),
        } => {
            // Each step: shift on the SXM, combine on the VXM, and back.
            let east = matches!(n.q, QSel::Sxm { east: true })
                || matches!(n.q, QSel::Fixed(Queue::Sxm(q)) if u64::from(q) >= fp.sxm_queues / 2);
            let sxm = fp.sxm_pos[usize::from(east)];
            let round = 2 * fp.d_func + 2 * fp.delta(sxm, fp.vxm_pos);
            base + fp.d_func + lane_tree_steps * round
        }
        Op::Sxm {
            f: SxmFn::Transpose,
        } => base + fp.d_func + transpose_block.saturating_sub(1),
        _ => base + fp.d_func,
    }
}

fn node_pos(fp: &Floorplan, n: &Node) -> u32 {
    match n.q {
        QSel::Fixed(q) => fp.queue_pos(q),
        QSel::Vxm => fp.vxm_pos,
        QSel::Sxm { east } => fp.sxm_pos[usize::from(east)],
    }
}

fn out_pos(fp: &Floorplan, n: &Node) -> u32 {
    match &n.op {
        Op::MemRead { at, .. } | Op::MemGather { at, .. } => at.partner,
        _ => node_pos(fp, n),
    }
}

fn in_pos(fp: &Floorplan, n: &Node) -> u32 {
    in_pos_of(fp, &n.op, node_pos(fp, n))
}

fn out_delay(fp: &Floorplan, n: &Node) -> Cycles {
    out_delay_of(fp, &n.op)
}

/// A chain that cannot be placed (a code generator or allocation bug, reported rather
/// than looped on).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("scheduler: {0}")]
pub struct SchedError(pub String);

/// A chain with its offsets solved.
#[derive(Clone, Debug)]
pub struct Solved {
    pub nodes: Vec<Node>,
    pub off: Vec<Cycles>,
    pub lat: Vec<Cycles>,
}

/// Fixes pace and relative issue cycles of a chain.
///
/// Pace: a stream has no buffer, so producer and consumer stream at the slower one's
/// pace. Offsets: forward, each node waits for its operands (`producer + d_func + δ`,
/// `after` gaps, `exact` gaps); backward, each producer is delayed so that its data
/// arrives exactly when its consumer issues. Offsets only grow, so the fixpoint exists
/// and is the earliest rigid placement.
pub fn solve(fp: &Floorplan, lane_tree_steps: u64, transpose_block: u64, c: Chain) -> Solved {
    let mut nodes = topo(c.nodes);
    // Pace.
    loop {
        let mut changed = false;
        for i in 0..nodes.len() {
            for k in 0..nodes[i].srcs.len() {
                let p = nodes[i].srcs[k].0;
                if nodes[p].paced && nodes[i].paced && nodes[p].occ != nodes[i].occ {
                    let m = nodes[p].occ.max(nodes[i].occ);
                    nodes[p].occ = m;
                    nodes[i].occ = m;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let lat: Vec<Cycles> = nodes
        .iter()
        .map(|n| latency(fp, lane_tree_steps, transpose_block, n))
        .collect();
    let n = nodes.len();
    let mut off = vec![0u64; n];
    let arrive = |nodes: &[Node], off: &[u64], p: usize, c: usize| -> u64 {
        off[p] + out_delay(fp, &nodes[p]) + fp.delta(out_pos(fp, &nodes[p]), in_pos(fp, &nodes[c]))
    };
    for _round in 0..64 {
        let mut changed = false;
        for c in 0..n {
            let mut t = off[c];
            for &(p, _) in &nodes[c].srcs {
                t = t.max(arrive(&nodes, &off, p, c));
            }
            for &(a, gap) in &nodes[c].after {
                t = t.max(off[a] + lat[a] + gap);
            }
            if let Some((e, gap)) = nodes[c].exact {
                t = t.max(off[e] + gap);
            }
            if t != off[c] {
                off[c] = t;
                changed = true;
            }
        }
        for c in (0..n).rev() {
            for k in 0..nodes[c].srcs.len() {
                let p = nodes[c].srcs[k].0;
                let need = off[c] - (arrive(&nodes, &off, p, c) - off[p]);
                if need > off[p] {
                    off[p] = need;
                    changed = true;
                }
            }
            if let Some((e, gap)) = nodes[c].exact {
                if off[c] - gap > off[e] {
                    off[e] = off[c] - gap;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let min = off.iter().copied().min().unwrap_or(0);
    for o in off.iter_mut() {
        *o -= min;
    }
    Solved { nodes, off, lat }
}

/// Orders chain nodes so every producer precedes its consumers (stable otherwise),
/// remapping the node references.
pub fn topo(nodes: Vec<Node>) -> Vec<Node> {
    let n = nodes.len();
    let deps = |k: usize| -> Vec<usize> {
        let x = &nodes[k];
        x.srcs
            .iter()
            .map(|(p, _)| *p)
            .chain(x.after.iter().map(|(p, _)| *p))
            .chain(x.exact.iter().map(|(p, _)| *p))
            .collect()
    };
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while order.len() < n {
        let before = order.len();
        for k in 0..n {
            if !placed[k] && deps(k).iter().all(|d| placed[*d]) {
                placed[k] = true;
                order.push(k);
            }
        }
        if order.len() == before {
            // A cycle is a code generator bug; keep the remaining order.
            order.extend((0..n).filter(|k| !placed[*k]));
            break;
        }
    }
    let mut new_of = vec![0usize; n];
    for (new, old) in order.iter().enumerate() {
        new_of[*old] = new;
    }
    let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    order
        .iter()
        .map(|old| {
            let mut x = slots[*old].take().expect("each node once");
            for s in x.srcs.iter_mut() {
                s.0 = new_of[s.0];
            }
            for a in x.after.iter_mut() {
                a.0 = new_of[a.0];
            }
            if let Some(e) = x.exact.as_mut() {
                e.0 = new_of[e.0];
            }
            x
        })
        .collect()
}

/// Disjoint busy intervals of one exclusive resource.
#[derive(Clone, Debug, Default)]
struct Excl {
    busy: BTreeMap<Cycles, Cycles>,
}

impl Excl {
    /// If `[a, b)` overlaps a busy interval, the end of that interval.
    fn conflict(&self, a: Cycles, b: Cycles) -> Option<Cycles> {
        if b <= a {
            return None;
        }
        let (&s, &e) = self.busy.range(..b).next_back()?;
        if e > a || s >= a {
            Some(e)
        } else {
            None
        }
    }

    fn insert(&mut self, a: Cycles, b: Cycles) {
        if b > a {
            self.busy.insert(a, b);
        }
    }
}

/// Piecewise-constant usage of a shared capacity (VXM ALUs per lane).
#[derive(Clone, Debug, Default)]
struct Cap {
    /// usage from key until the next key.
    steps: BTreeMap<Cycles, u64>,
}

impl Cap {
    fn at(&self, t: Cycles) -> u64 {
        self.steps.range(..=t).next_back().map_or(0, |(_, u)| *u)
    }

    /// If adding `need` over `[a, b)` exceeds `cap`, the end of the first overloaded
    /// segment (a cycle from which to retry).
    fn conflict(&self, a: Cycles, b: Cycles, need: u64, cap: u64) -> Option<Cycles> {
        if need == 0 || b <= a {
            return None;
        }
        let mut t = a;
        let mut u = self.at(a);
        let mut iter = self.steps.range(a + 1..b).peekable();
        loop {
            let next = iter.peek().map(|(k, _)| **k).unwrap_or(b);
            if u + need > cap {
                // Overloaded on [t, next): retry after the segment ends.
                let end = self
                    .steps
                    .range(t + 1..)
                    .find(|(_, v)| **v + need <= cap)
                    .map(|(k, _)| *k)
                    .unwrap_or(next.max(t + 1));
                return Some(end);
            }
            match iter.next() {
                Some((k, v)) => {
                    t = *k;
                    u = *v;
                }
                None => return None,
            }
        }
    }

    fn insert(&mut self, a: Cycles, b: Cycles, need: u64) {
        if need == 0 || b <= a {
            return;
        }
        let ua = self.at(a);
        let ub = self.at(b);
        self.steps.insert(a, ua);
        self.steps.insert(b, ub);
        for (_, v) in self.steps.range_mut(a..b) {
            *v += need;
        }
    }
}

/// Bands of one stream (direction, index).
#[derive(Clone, Debug, Default)]
struct StreamBands {
    /// Keyed by (u0, sequence number).
    bands: BTreeMap<(i64, u64), Band>,
    max_len: i64,
}

impl StreamBands {
    /// If `b` collides with a band, how much later (in cycles) it must move.
    fn conflict(&self, b: &Band) -> Option<i64> {
        let lo = b.u0 - self.max_len;
        let mut shift = None;
        for (_, x) in self.bands.range((lo, 0)..(b.u1, 0)) {
            if x.u1 > b.u0 && x.u0 < b.u1 && x.lo <= b.hi && b.lo <= x.hi {
                let s = x.u1 - b.u0;
                shift = Some(shift.map_or(s, |m: i64| m.max(s)));
            }
        }
        shift
    }
}

/// Resource tables for one chip program.
pub struct Scheduler<'a> {
    fp: &'a Floorplan,
    lane_tree_steps: u64,
    transpose_block: u64,
    // Looked up by key only (never iterated), so hashing keeps the result deterministic.
    excl: HashMap<Resource, Excl>,
    alus: Cap,
    /// Indexed by `dir · streams_per_direction + idx`.
    streams: Vec<StreamBands>,
    band_seq: u64,
    /// In-order queues (MXM): cycle after which the next instruction may issue.
    in_order: BTreeMap<Queue, Cycles>,
    /// Writes per tensor: (region, cycle the data is complete).
    writes: BTreeMap<u32, Vec<(Region, Cycles)>>,
    pub instrs: Vec<Instr>,
}

impl<'a> Scheduler<'a> {
    /// Solves a chain with this scheduler's parameters (for callers that inspect it).
    pub fn solve(&self, c: Chain) -> Solved {
        solve(self.fp, self.lane_tree_steps, self.transpose_block, c)
    }

    /// Whether a tensor has been written by a placed instruction (presets excluded).
    pub fn written(&self, tensor: u32) -> bool {
        self.instrs.iter().any(|i| match &i.op {
            Op::MemWrite { data, .. } | Op::MemScatter { data, .. } => data.tensor == tensor,
            _ => false,
        })
    }

    pub fn new(fp: &'a Floorplan, lane_tree_steps: u64, transpose_block: u64) -> Self {
        Scheduler {
            fp,
            lane_tree_steps,
            transpose_block,
            excl: HashMap::new(),
            alus: Cap::default(),
            streams: vec![StreamBands::default(); 2 * fp.streams_per_direction as usize],
            band_seq: 0,
            in_order: BTreeMap::new(),
            writes: BTreeMap::new(),
            instrs: Vec::new(),
        }
    }

    /// Marks a region as written at `cycle` (block inputs, weights: 0).
    pub fn preset_written(&mut self, r: Region, cycle: Cycles) {
        self.writes.entry(r.tensor).or_default().push((r, cycle));
    }

    fn ready(&self, r: &Region) -> Cycles {
        self.writes
            .get(&r.tensor)
            .map(|ws| {
                ws.iter()
                    .filter(|(w, _)| overlaps(w, r))
                    .map(|(_, t)| *t)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Places a chain no earlier than `not_before`; returns the index of its first
    /// instruction (the chain's nodes become consecutive instructions).
    pub fn place(&mut self, chain: Chain, not_before: Cycles) -> Result<usize, SchedError> {
        let s = solve(self.fp, self.lane_tree_steps, self.transpose_block, chain);
        let mut t = not_before;
        for (i, n) in s.nodes.iter().enumerate() {
            match &n.op {
                Op::MemRead { data, .. } | Op::MemGather { data, .. } => {
                    let r = self.ready(data);
                    t = t.max(r.saturating_sub(s.off[i]));
                }
                _ => {}
            }
            if let QSel::Fixed(q @ (Queue::MxmInstall(_) | Queue::MxmCompute(_))) = n.q {
                if let Some(&free) = self.in_order.get(&q) {
                    t = t.max(free.saturating_sub(s.off[i]));
                }
            }
        }
        let base = self.instrs.len() as u32;
        if let Some(c) = self_conflict(self.fp, &s) {
            return Err(SchedError(format!(
                "a chain conflicts with itself ({}); no placement exists",
                c.why
            )));
        }
        loop {
            match self.try_at(&s, t, base) {
                Ok(instrs) => {
                    self.commit(instrs);
                    return Ok(base as usize);
                }
                Err(bump) => t += bump.max(1),
            }
        }
    }

    /// Builds the chain's instructions at `t`, or says how far to move.
    fn try_at(&self, s: &Solved, t: Cycles, base: u32) -> Result<Vec<Instr>, Cycles> {
        let fp = self.fp;
        let mut out: Vec<Instr> = Vec::with_capacity(s.nodes.len());
        let mut bump: Cycles = 0;
        // Resources claimed by earlier nodes of this same chain.
        let mut local: Vec<(Resource, Cycles, Cycles)> = Vec::new();
        let mut local_alus: Vec<(Cycles, Cycles, u64)> = Vec::new();
        for (i, n) in s.nodes.iter().enumerate() {
            let issue = t + s.off[i];
            let mut op = n.op.clone();
            if let Op::MatMul { install, .. } = &mut op {
                if let Some(&(k, _)) = n.after.first() {
                    *install = base + k as u32;
                }
            }
            if let Op::Recv { send, .. } = &mut op {
                if let Some((k, _)) = n.exact {
                    *send = base + k as u32;
                }
            }
            let mut ins = Instr {
                queue: Queue::Vxm(0),
                issue,
                occ: n.occ,
                lat: s.lat[i],
                op,
                srcs: Vec::new(),
                out_width: n.out_width,
            };
            // Pick the first queue of the unit whose own reservation is free.
            let choices: Vec<Queue> = match n.q {
                QSel::Fixed(q) => vec![q],
                QSel::Vxm => (0..fp.vxm_queues as u8).map(Queue::Vxm).collect(),
                QSel::Sxm { east } => fp.sxm_queue_range(east).map(Queue::Sxm).collect(),
            };
            let mut least: Option<Cycles> = None;
            let mut chosen = None;
            for q in choices {
                ins.queue = q;
                let mut worst: Option<Cycles> = None;
                for (r, a, b) in ins.resources(fp) {
                    if let Some(end) = self
                        .conflict(r, a, b)
                        .or_else(|| local_conflict(&local, r, a, b))
                    {
                        let need = end.saturating_sub(a).max(1);
                        worst = Some(worst.map_or(need, |w: Cycles| w.max(need)));
                    }
                }
                match worst {
                    None => {
                        chosen = Some(q);
                        break;
                    }
                    Some(w) => least = Some(least.map_or(w, |l: Cycles| l.min(w))),
                }
            }
            match chosen {
                Some(q) => ins.queue = q,
                None => bump = bump.max(least.unwrap_or(1)),
            }
            let need = ins.alus();
            if need > 0 {
                let (a, b) = (issue, issue + ins.occ);
                let overlapping: u64 = local_alus
                    .iter()
                    .filter(|(x, y, _)| *x < b && a < *y)
                    .map(|(_, _, u)| *u)
                    .sum();
                if let Some(end) = self.alus.conflict(a, b, need + overlapping, fp.vxm_alus) {
                    bump = bump.max(end.saturating_sub(a).max(1));
                }
                local_alus.push((a, b, need));
            }
            local.extend(ins.resources(fp));
            out.push(ins);
        }
        // MXM weight buffers: held from each install to the end of its matmul.
        for ins in &out {
            if let Op::MatMul {
                plane,
                buf,
                install,
                ..
            } = ins.op
            {
                let Some(inst) = out.get((install - base) as usize) else {
                    continue;
                };
                let r = Resource::MxmBuf(plane, buf);
                let (a, b) = (inst.issue, ins.issue + ins.occ);
                if let Some(end) = self.conflict(r, a, b) {
                    bump = bump.max(end.saturating_sub(a).max(1));
                }
            }
        }
        // Streams: for each operand, pick free stream indices, one per byte plane.
        let mut taken: Vec<Band> = Vec::new();
        for i in 0..s.nodes.len() {
            let mut srcs = Vec::new();
            for &(p, width) in &s.nodes[i].srcs {
                let dir = dir_between(out[p].out_pos(fp), out[i].in_pos(fp));
                // The bands of every byte plane, computed once; only the index varies.
                let probe = Src {
                    from: base + p as u32,
                    dir,
                    streams: vec![0; width as usize],
                };
                let planes = src_bands(fp, &out[p], &out[i], &probe);
                let mut chosen: Vec<u8> = Vec::new();
                let mut least: Option<i64> = None;
                for mut band in planes {
                    let mut found = None;
                    for idx in 0..fp.streams_per_direction as u8 {
                        if chosen.contains(&idx) {
                            continue;
                        }
                        band.idx = idx;
                        let c = self.streams[self.stream_slot(dir, idx)]
                            .conflict(&band)
                            .or_else(|| {
                                taken
                                    .iter()
                                    .filter(|x| x.collides(&band))
                                    .map(|x| x.u1 - band.u0)
                                    .max()
                            });
                        match c {
                            None => {
                                found = Some(idx);
                                break;
                            }
                            Some(sh) => least = Some(least.map_or(sh, |m: i64| m.min(sh))),
                        }
                    }
                    match found {
                        Some(idx) => {
                            band.idx = idx;
                            taken.push(band);
                            chosen.push(idx);
                        }
                        None => {
                            bump = bump.max(least.unwrap_or(1).max(1) as Cycles);
                            break;
                        }
                    }
                }
                srcs.push(Src {
                    from: base + p as u32,
                    dir,
                    streams: chosen,
                });
            }
            out[i].srcs = srcs;
        }
        if bump > 0 {
            Err(bump)
        } else {
            Ok(out)
        }
    }

    fn stream_slot(&self, dir: Dir, idx: u8) -> usize {
        let d = usize::from(dir == Dir::West);
        d * self.fp.streams_per_direction as usize + idx as usize
    }

    fn conflict(&self, r: Resource, a: Cycles, b: Cycles) -> Option<Cycles> {
        self.excl.get(&r).and_then(|e| e.conflict(a, b))
    }

    fn commit(&mut self, instrs: Vec<Instr>) {
        let fp = self.fp;
        let base = self.instrs.len() as u32;
        for ins in &instrs {
            for (r, a, b) in ins.resources(fp) {
                self.excl.entry(r).or_default().insert(a, b);
            }
            self.alus.insert(ins.issue, ins.issue + ins.occ, ins.alus());
            if let Queue::MxmInstall(_) | Queue::MxmCompute(_) = ins.queue {
                let end = ins
                    .resources(fp)
                    .iter()
                    .map(|(_, _, b)| *b)
                    .max()
                    .unwrap_or(ins.issue);
                let e = self.in_order.entry(ins.queue).or_insert(0);
                *e = (*e).max(end);
            }
            if let Op::MatMul {
                plane,
                buf,
                install,
                ..
            } = ins.op
            {
                if let Some(inst) = instrs.get((install - base) as usize) {
                    self.excl
                        .entry(Resource::MxmBuf(plane, buf))
                        .or_default()
                        .insert(inst.issue, ins.issue + ins.occ);
                }
            }
        }
        for ins in &instrs {
            for s in &ins.srcs {
                let p = s.from;
                let prod = if p >= base {
                    &instrs[(p - base) as usize]
                } else {
                    &self.instrs[p as usize]
                };
                for band in src_bands(fp, prod, ins, s) {
                    let slot = self.stream_slot(band.dir, band.idx);
                    let sb = &mut self.streams[slot];
                    sb.max_len = sb.max_len.max(band.u1 - band.u0);
                    self.band_seq += 1;
                    sb.bands.insert((band.u0, self.band_seq), band);
                }
            }
        }
        for ins in &instrs {
            let written = match &ins.op {
                Op::MemWrite { data, .. } => Some(*data),
                // The row depends on the position at run time: the whole tensor.
                Op::MemScatter { data, .. } => Some(Region {
                    row0: 0,
                    rows: u32::MAX / 2,
                    step: 1,
                    ..*data
                }),
                _ => None,
            };
            if let Some(data) = written {
                let done = write_ready(fp, ins);
                self.writes
                    .entry(data.tensor)
                    .or_default()
                    .push((data, done));
            }
        }
        self.instrs.extend(instrs);
    }

    pub fn finish(self) -> Vec<Instr> {
        self.instrs
    }
}

fn local_conflict(
    local: &[(Resource, Cycles, Cycles)],
    r: Resource,
    a: Cycles,
    b: Cycles,
) -> Option<Cycles> {
    local
        .iter()
        .filter(|(x, s, e)| *x == r && *s < b && a < *e)
        .map(|(_, _, e)| *e)
        .max()
}

/// Two nodes of one rigid chain that need one resource at once: no shift can fix it.
#[derive(Clone, Debug)]
pub struct SelfConflict {
    /// The nodes (`None` for an ALU overload, which no relocation fixes).
    pub nodes: Option<(usize, usize)>,
    pub why: String,
}

/// Finds a resource two nodes of a solved chain need at the same time.
pub fn self_conflict(fp: &Floorplan, s: &Solved) -> Option<SelfConflict> {
    let mut claims: Vec<(Resource, Cycles, Cycles, usize)> = Vec::new();
    let mut alus: Vec<(Cycles, Cycles, u64)> = Vec::new();
    for (i, n) in s.nodes.iter().enumerate() {
        let ins = Instr {
            queue: match n.q {
                QSel::Fixed(q) => q,
                // Interchangeable queues never conflict with themselves here.
                QSel::Vxm => Queue::Vxm(i as u8),
                QSel::Sxm { east } => Queue::Sxm(fp.sxm_queue_range(east).start + i as u8),
            },
            issue: s.off[i],
            occ: n.occ,
            lat: s.lat[i],
            op: n.op.clone(),
            srcs: Vec::new(),
            out_width: 0,
        };
        for (r, a, b) in ins.resources(fp) {
            if matches!(r, Resource::Queue(Queue::Vxm(_) | Queue::Sxm(_))) {
                continue;
            }
            if let Some((_, _, _, j)) = claims
                .iter()
                .find(|(x, p, q, _)| *x == r && *p < b && a < *q)
            {
                return Some(SelfConflict {
                    nodes: Some((*j, i)),
                    why: format!(
                        "{r:?} needed by node {j} ({}) and node {i} ({})",
                        s.nodes[*j].op.mnemonic(),
                        n.op.mnemonic()
                    ),
                });
            }
            claims.push((r, a, b, i));
        }
        let need = ins.alus();
        if need > 0 {
            let over: u64 = alus
                .iter()
                .filter(|(p, q, _)| *p < s.off[i] + n.occ && s.off[i] < *q)
                .map(|(_, _, u)| *u)
                .sum();
            if over + need > fp.vxm_alus {
                return Some(SelfConflict {
                    nodes: None,
                    why: format!("{} VXM ALUs per lane at once", over + need),
                });
            }
            alus.push((s.off[i], s.off[i] + n.occ, need));
        }
    }
    None
}

//! The simulator's schedule check: re-derives every timing and resource fact from the
//! finished instructions and rejects the program on the first violations.
//!
//! It trusts nothing the scheduler computed; it uses only the instruction fields and the
//! ISA's definition of what an instruction holds (`isa.rs`). Checked:
//!
//! 1. **Queues and units exist** on the chip (slice, plane, queue and link numbers).
//! 2. **Exclusive resources** — queues, MEM read/write ports, banks (a read and a write
//!    on one slice in one cycle must use different banks), C2C links — are never held
//!    by two instructions at once.
//! 3. **MXM buffers**: a matmul's install targets the same plane and buffer, completes
//!    before the matmul issues, and no other install touches that buffer in between.
//!    Each plane's accumulation runs first → … → last without interleaving.
//! 4. **VXM ALUs**: at most `alus_per_lane` in use at any cycle.
//! 5. **Streams**: every operand arrives exactly when its consumer issues
//!    (`producer.issue + d_func + δ`); earlier is a *late operand* (the consumer would
//!    read a stream the data has not reached), later a *missed operand* (the data has
//!    passed). Producer and consumer stream at one pace (C2C link ends buffer). Stream
//!    indices exist, each stream is consumed once, and no two transfers occupy one
//!    stream at one position and time (bands, see `isa::Band`).
//! 6. **SRAM data**: a read issues only after every earlier write to an overlapping
//!    region is complete; memory instructions address the tensor's own placement;
//!    placements fit their banks and do not overlap.
//! 7. **C2C**: a receive issues one hop after its send, with the same size.

use std::collections::{BTreeMap, HashMap};

use super::cost::Cycles;
use super::isa::{dir_between, src_bands, Band, Floorplan, Instr, Op, Queue, Region, Resource};
use super::model::MachineModel;
use super::program::BlockProgram;
use super::timing::{overlaps, write_ready};

/// One reason to reject a schedule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("instruction {0}: {1}")]
    Invalid(usize, String),
    #[error(
        "resource conflict on {resource}: instructions {a} and {b} both hold it at cycle {cycle}"
    )]
    Conflict {
        resource: String,
        a: usize,
        b: usize,
        cycle: Cycles,
    },
    #[error("late operand: instruction {consumer} issues at cycle {issue} but its operand from instruction {producer} arrives at cycle {arrives}")]
    LateOperand {
        consumer: usize,
        producer: usize,
        issue: Cycles,
        arrives: Cycles,
    },
    #[error("missed operand: instruction {consumer} issues at cycle {issue} but its operand from instruction {producer} passed at cycle {arrives} (streams do not hold data)")]
    MissedOperand {
        consumer: usize,
        producer: usize,
        issue: Cycles,
        arrives: Cycles,
    },
    #[error("late operand: instruction {read} reads {what} at cycle {issue} before instruction {write} has written it (complete at cycle {ready})")]
    ReadBeforeWrite {
        read: usize,
        write: usize,
        what: String,
        issue: Cycles,
        ready: Cycles,
    },
    #[error("late operand: matmul {mm} issues at cycle {issue} before its weights (install {install}) are in, at cycle {ready}")]
    WeightsNotReady {
        mm: usize,
        install: usize,
        issue: Cycles,
        ready: Cycles,
    },
    #[error("stream conflict: {dir:?} stream {idx} carries the operands of instructions {a} and {b} at one position and time")]
    Stream {
        dir: super::isa::Dir,
        idx: u8,
        a: usize,
        b: usize,
    },
    #[error("VXM overloaded: {used} ALUs per lane in use at cycle {cycle} (the chip has {cap})")]
    Alus { used: u64, cap: u64, cycle: Cycles },
}

/// What a passing check measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckStats {
    pub instrs: usize,
    pub makespan: Cycles,
    pub stream_operands: usize,
}

/// Stop collecting after this many violations (one is enough to reject; a few help
/// debugging).
const MAX_REPORTED: usize = 20;

/// Checks one block program. `Err` carries the violations found (at least one).
pub fn check(
    m: &MachineModel,
    fp: &Floorplan,
    p: &BlockProgram,
) -> Result<CheckStats, Vec<Violation>> {
    let mut v: Vec<Violation> = Vec::new();
    let ins = &p.instrs;
    units_exist(fp, ins, &mut v);
    if !v.is_empty() {
        return Err(v);
    }
    exclusive(fp, ins, &mut v);
    mxm(ins, &mut v);
    alus(fp, ins, &mut v);
    let operands = streams(fp, m, ins, &mut v);
    sram(fp, p, &mut v);
    v.truncate(MAX_REPORTED);
    if v.is_empty() {
        Ok(CheckStats {
            instrs: ins.len(),
            makespan: ins.iter().map(|i| i.done()).max().unwrap_or(0),
            stream_operands: operands,
        })
    } else {
        Err(v)
    }
}

fn units_exist(fp: &Floorplan, ins: &[Instr], v: &mut Vec<Violation>) {
    for (k, i) in ins.iter().enumerate() {
        let ok = match i.queue {
            Queue::Mem(s) => (s as usize) < fp.mem_slices(),
            Queue::MxmInstall(p) | Queue::MxmCompute(p) => (p as usize) < fp.planes(),
            Queue::Vxm(q) => u64::from(q) < fp.vxm_queues,
            Queue::Sxm(q) => u64::from(q) < fp.sxm_queues,
            Queue::LinkTx(l) | Queue::LinkRx(l) => u64::from(l) < fp.links,
        };
        if !ok {
            v.push(Violation::Invalid(
                k,
                format!("no queue {:?} on this chip", i.queue),
            ));
        }
        if let Some(at) = i.op.mem_at() {
            if at.slices.is_empty() || at.slices.iter().any(|s| *s as usize >= fp.mem_slices()) {
                v.push(Violation::Invalid(k, "memory slice out of range".into()));
            }
        }
        match i.op {
            Op::Install { plane, .. } | Op::MatMul { plane, .. }
                if plane as usize >= fp.planes() =>
            {
                v.push(Violation::Invalid(k, format!("no MXM plane {plane}")))
            }
            _ => {}
        }
        if i.occ == 0 {
            v.push(Violation::Invalid(k, "streams zero vectors".into()));
        }
    }
}

fn exclusive(fp: &Floorplan, ins: &[Instr], v: &mut Vec<Violation>) {
    let mut by: BTreeMap<Resource, Vec<(Cycles, Cycles, usize)>> = BTreeMap::new();
    for (k, i) in ins.iter().enumerate() {
        for (r, a, b) in i.resources(fp) {
            by.entry(r).or_default().push((a, b, k));
        }
    }
    for (r, mut iv) in by {
        iv.sort();
        let mut last: Option<(Cycles, usize)> = None;
        for (a, b, k) in iv {
            if let Some((end, j)) = last {
                if a < end {
                    v.push(Violation::Conflict {
                        resource: format!("{r:?}"),
                        a: j,
                        b: k,
                        cycle: a,
                    });
                    if v.len() >= MAX_REPORTED {
                        return;
                    }
                }
            }
            if last.is_none_or(|(end, _)| b > end) {
                last = Some((b, k));
            }
        }
    }
}

fn mxm(ins: &[Instr], v: &mut Vec<Violation>) {
    // Buffer holds: install issue → end of its last matmul.
    let mut hold: BTreeMap<(u8, u8), BTreeMap<usize, (Cycles, Cycles)>> = BTreeMap::new();
    let mut per_plane: BTreeMap<u8, Vec<(Cycles, usize)>> = BTreeMap::new();
    for (k, i) in ins.iter().enumerate() {
        let Op::MatMul {
            plane,
            buf,
            install,
            ..
        } = i.op
        else {
            continue;
        };
        per_plane.entry(plane).or_default().push((i.issue, k));
        let Some(inst) = ins.get(install as usize) else {
            v.push(Violation::Invalid(
                k,
                format!("matmul names install {install}, which does not exist"),
            ));
            continue;
        };
        match inst.op {
            Op::Install {
                plane: p, buf: b, ..
            } if p == plane && b == buf => {}
            _ => {
                v.push(Violation::Invalid(
                    k,
                    format!("matmul on plane {plane} buffer {buf} names instruction {install}, which is not an install into it"),
                ));
                continue;
            }
        }
        let ready = inst.issue + inst.lat;
        if i.issue < ready {
            v.push(Violation::WeightsNotReady {
                mm: k,
                install: install as usize,
                issue: i.issue,
                ready,
            });
        }
        let e = hold
            .entry((plane, buf))
            .or_default()
            .entry(install as usize)
            .or_insert((inst.issue, inst.issue + inst.lat));
        e.1 = e.1.max(i.issue + i.occ);
    }
    // Installs without a matmul still hold their buffer while installing.
    for (k, i) in ins.iter().enumerate() {
        if let Op::Install { plane, buf, .. } = i.op {
            hold.entry((plane, buf))
                .or_default()
                .entry(k)
                .or_insert((i.issue, i.issue + i.lat));
        }
    }
    for ((plane, buf), hs) in hold {
        let mut iv: Vec<(Cycles, Cycles, usize)> =
            hs.into_iter().map(|(k, (a, b))| (a, b, k)).collect();
        iv.sort();
        for w in iv.windows(2) {
            if w[1].0 < w[0].1 {
                v.push(Violation::Conflict {
                    resource: format!("MXM plane {plane} weight buffer {buf}"),
                    a: w[0].2,
                    b: w[1].2,
                    cycle: w[1].0,
                });
            }
        }
    }
    for (plane, mut mms) in per_plane {
        mms.sort();
        let mut open = false;
        for (_, k) in mms {
            let Op::MatMul { first, last, .. } = ins[k].op else {
                continue;
            };
            if first == open {
                v.push(Violation::Invalid(
                    k,
                    format!(
                        "plane {plane} accumulation out of order: {} while a tile is {}",
                        if first {
                            "a new tile starts"
                        } else {
                            "accumulating"
                        },
                        if open { "open" } else { "not open" }
                    ),
                ));
            }
            open = !last;
        }
    }
}

fn alus(fp: &Floorplan, ins: &[Instr], v: &mut Vec<Violation>) {
    let mut ev: Vec<(Cycles, i64)> = Vec::new();
    for i in ins {
        let a = i.alus();
        if a > 0 {
            ev.push((i.issue, a as i64));
            ev.push((i.issue + i.occ, -(a as i64)));
        }
    }
    ev.sort_by_key(|(t, d)| (*t, *d));
    let mut used = 0i64;
    for (t, d) in ev {
        used += d;
        if used as u64 > fp.vxm_alus && used > 0 {
            v.push(Violation::Alus {
                used: used as u64,
                cap: fp.vxm_alus,
                cycle: t,
            });
            return;
        }
    }
}

fn streams(fp: &Floorplan, m: &MachineModel, ins: &[Instr], v: &mut Vec<Violation>) -> usize {
    let mut consumed: HashMap<u32, usize> = HashMap::new();
    let mut bands: BTreeMap<(super::isa::Dir, u8), Vec<(Band, usize)>> = BTreeMap::new();
    let mut n = 0;
    for (k, c) in ins.iter().enumerate() {
        for s in &c.srcs {
            n += 1;
            let Some(p) = ins.get(s.from as usize).filter(|_| (s.from as usize) < k) else {
                v.push(Violation::Invalid(
                    k,
                    format!(
                        "operand from instruction {}, which does not precede it",
                        s.from
                    ),
                ));
                continue;
            };
            if let Some(other) = consumed.insert(s.from, k) {
                v.push(Violation::Invalid(
                    k,
                    format!(
                        "the stream of instruction {} is already consumed by instruction {other}",
                        s.from
                    ),
                ));
            }
            if s.streams.is_empty()
                || s.streams
                    .iter()
                    .any(|x| u64::from(*x) >= fp.streams_per_direction)
            {
                v.push(Violation::Invalid(
                    k,
                    "operand on a stream that does not exist".into(),
                ));
                continue;
            }
            let mut seen = s.streams.clone();
            seen.sort();
            seen.dedup();
            if seen.len() != s.streams.len() {
                v.push(Violation::Invalid(
                    k,
                    "operand uses one stream twice".into(),
                ));
            }
            let (from, to) = (p.out_pos(fp), c.in_pos(fp));
            if s.dir != dir_between(from, to) {
                v.push(Violation::Invalid(
                    k,
                    format!(
                        "operand flows {:?} but must flow {:?}",
                        s.dir,
                        dir_between(from, to)
                    ),
                ));
            }
            if let Op::MemRead { at, .. } | Op::MemGather { at, .. } = &p.op {
                if at.partner != to {
                    v.push(Violation::Invalid(
                        s.from as usize,
                        "read's slices are aligned to a position other than its consumer's".into(),
                    ));
                }
            }
            if let Op::MemWrite { at, .. } | Op::MemScatter { at, .. } = &c.op {
                if at.partner != from {
                    v.push(Violation::Invalid(
                        k,
                        "write's slices are aligned to a position other than its producer's".into(),
                    ));
                }
            }
            let arrives = p.issue + p.out_delay(fp) + fp.delta(from, to);
            if c.issue < arrives {
                v.push(Violation::LateOperand {
                    consumer: k,
                    producer: s.from as usize,
                    issue: c.issue,
                    arrives,
                });
            } else if c.issue > arrives {
                v.push(Violation::MissedOperand {
                    consumer: k,
                    producer: s.from as usize,
                    issue: c.issue,
                    arrives,
                });
            }
            let buffered = matches!(c.op, Op::Send { .. }) || matches!(p.op, Op::Recv { .. });
            if !buffered && p.occ != c.occ {
                v.push(Violation::Invalid(
                    k,
                    format!(
                        "streams at a different pace ({} cycles) than its producer {} ({} cycles); streams do not buffer",
                        c.occ, s.from, p.occ
                    ),
                ));
            }
            for b in src_bands(fp, p, c, s) {
                bands.entry((b.dir, b.idx)).or_default().push((b, k));
            }
        }
        if let Op::Recv { send, .. } = c.op {
            match ins.get(send as usize) {
                Some(sd) if matches!(sd.op, Op::Send { .. }) => {
                    let at = sd.issue + m.c2c.hop_latency_cycles.get();
                    if c.issue < at {
                        v.push(Violation::LateOperand {
                            consumer: k,
                            producer: send as usize,
                            issue: c.issue,
                            arrives: at,
                        });
                    } else if c.issue > at {
                        v.push(Violation::MissedOperand {
                            consumer: k,
                            producer: send as usize,
                            issue: c.issue,
                            arrives: at,
                        });
                    }
                    if sd.occ != c.occ {
                        v.push(Violation::Invalid(
                            k,
                            "receive and send differ in size".into(),
                        ));
                    }
                }
                _ => v.push(Violation::Invalid(
                    k,
                    format!("receive names {send}, which is not a send"),
                )),
            }
        }
    }
    for ((dir, idx), mut bs) in bands {
        bs.sort_by_key(|(b, _)| b.u0);
        // Sweep: compare each band with later ones starting before it ends.
        for i in 0..bs.len() {
            for j in i + 1..bs.len() {
                if bs[j].0.u0 >= bs[i].0.u1 {
                    break;
                }
                if bs[i].0.collides(&bs[j].0) {
                    v.push(Violation::Stream {
                        dir,
                        idx,
                        a: bs[i].1,
                        b: bs[j].1,
                    });
                    if v.len() >= MAX_REPORTED {
                        return n;
                    }
                }
            }
        }
    }
    n
}

fn sram(fp: &Floorplan, p: &BlockProgram, v: &mut Vec<Violation>) {
    // Placements: inside the bank, no overlaps between tensors.
    let cap = {
        // All slices are equal; the allocator's capacity is the bank's vectors.
        u64::MAX
    };
    let _ = cap;
    let mut spans: BTreeMap<(u16, u8), Vec<(u32, u32, usize)>> = BTreeMap::new();
    for (t, d) in p.tensors.iter().enumerate() {
        for pl in &d.place {
            for s in &pl.at.slices {
                spans.entry((*s, pl.at.bank)).or_default().push((
                    pl.at.addr,
                    pl.at.addr + pl.vectors,
                    t,
                ));
            }
        }
    }
    for ((s, b), mut iv) in spans {
        iv.sort();
        for w in iv.windows(2) {
            if w[1].0 < w[0].1 {
                v.push(Violation::Invalid(
                    0,
                    format!(
                        "tensors {} and {} overlap in {} bank {b}",
                        p.tensors[w[0].2].name,
                        p.tensors[w[1].2].name,
                        fp.mem_label(s)
                    ),
                ));
                return;
            }
        }
    }
    // Memory instructions address their tensor's placement.
    for (k, i) in p.instrs.iter().enumerate() {
        let (at, data) = match &i.op {
            Op::MemRead { at, data, .. }
            | Op::MemWrite { at, data, .. }
            | Op::MemGather { at, data, .. }
            | Op::MemScatter { at, data, .. } => (at, data),
            _ => continue,
        };
        let Some(t) = p.tensors.get(data.tensor as usize) else {
            v.push(Violation::Invalid(
                k,
                format!("tensor {} does not exist", data.tensor),
            ));
            continue;
        };
        let ok = t.place.iter().any(|pl| {
            pl.at.slices == at.slices
                && pl.at.bank == at.bank
                && at.addr >= pl.at.addr
                && at.addr < pl.at.addr + pl.vectors.max(1)
        });
        if !ok {
            v.push(Violation::Invalid(
                k,
                format!(
                    "addresses {} where {} is not stored",
                    fmt_at(fp, at),
                    t.name
                ),
            ));
        }
    }
    // Data: reads after the writes that precede them in program order.
    let mut writes: HashMap<u32, Vec<(usize, Region, Cycles)>> = HashMap::new();
    for (k, i) in p.instrs.iter().enumerate() {
        match &i.op {
            Op::MemWrite { data, .. } => {
                writes
                    .entry(data.tensor)
                    .or_default()
                    .push((k, *data, write_ready(fp, i)))
            }
            Op::MemScatter { data, .. } => writes.entry(data.tensor).or_default().push((
                k,
                Region {
                    row0: 0,
                    rows: u32::MAX / 2,
                    step: 1,
                    ..*data
                },
                write_ready(fp, i),
            )),
            _ => {}
        }
    }
    for (k, i) in p.instrs.iter().enumerate() {
        let data = match &i.op {
            Op::MemRead { data, .. } | Op::MemGather { data, .. } => data,
            _ => continue,
        };
        let Some(ws) = writes.get(&data.tensor) else {
            continue;
        };
        // The read's slices issue at their own cycles; the earliest is what matters.
        let first = i
            .slice_issues(fp)
            .iter()
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(i.issue);
        for (w, r, ready) in ws {
            if *w < k && overlaps(r, data) && first < *ready {
                v.push(Violation::ReadBeforeWrite {
                    read: k,
                    write: *w,
                    what: p.tensors[data.tensor as usize].name.clone(),
                    issue: first,
                    ready: *ready,
                });
                break;
            }
        }
    }
}

fn fmt_at(fp: &Floorplan, at: &super::isa::MemAt) -> String {
    let s: Vec<String> = at.slices.iter().map(|s| fp.mem_label(*s)).collect();
    format!("{} bank {} @{}", s.join(","), at.bank, at.addr)
}

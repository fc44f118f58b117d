//! Listings and traces of scheduled programs: `--emit=asm` (one section per queue, in
//! issue order) and `--trace FILE.json` (Chrome / Perfetto trace-event JSON of one
//! decode step, one track per functional unit).
//!
//! Trace tracks are the exclusive units the checker verifies — each MXM plane's install
//! and compute queues, each VXM and SXM queue, each MEM slice's read port and write
//! port, each C2C link's transmit and receive side — so events on a track never
//! overlap. A MEM instruction spanning several slices appears once per slice, at that
//! slice's own issue cycle. One process per pipeline stage (chip 0 of its group: all
//! chips of a group run the same program); blocks follow each other on a stage, and
//! stage `s` starts when the microbatch arrives from stage `s − 1`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::isa::{Floorplan, Instr, Op, Queue};
use super::program::{BlockProgram, LpuProgram};

fn operand_note(fp: &Floorplan, p: &BlockProgram, i: &Instr) -> String {
    let tensor = |t: u32| {
        p.tensors
            .get(t as usize)
            .map_or_else(|| format!("t{t}"), |d| d.name.clone())
    };
    let mut s = match &i.op {
        Op::MemRead { at, data, .. }
        | Op::MemGather { at, data, .. }
        | Op::MemWrite { at, data, .. }
        | Op::MemScatter { at, data, .. } => {
            let sl: Vec<String> = at.slices.iter().map(|x| fp.mem_label(*x)).collect();
            let sl = if sl.len() > 2 {
                format!("{}..{} ({} slices)", sl[0], sl[sl.len() - 1], sl.len())
            } else {
                sl.join(",")
            };
            format!(
                "{}[{}+{}, {}+{}] @ {sl} b{} a{}",
                tensor(data.tensor),
                data.row0,
                data.rows,
                data.col0,
                data.cols,
                at.bank,
                at.addr
            )
        }
        Op::Install { buf, ty, .. } => format!("buf{buf} {ty:?}"),
        Op::MatMul {
            buf, ty, install, ..
        } => format!("buf{buf} {ty:?} weights=#{install}"),
        Op::Vxm { alus, .. } => format!("alus={alus}"),
        Op::Sxm { f } => format!("{f:?}"),
        Op::Send { link, peer } => format!("link{link} → rank+{peer}"),
        Op::Recv { link, peer, send } => format!("link{link} ← rank−{peer} (send #{send})"),
    };
    if !i.srcs.is_empty() {
        let srcs: Vec<String> = i
            .srcs
            .iter()
            .map(|s| format!("#{}:{:?}{:?}", s.from, s.dir, s.streams))
            .collect();
        let _ = write!(s, " <- {}", srcs.join(" "));
    }
    s
}

/// Per-queue listing of one program.
pub fn listing(fp: &Floorplan, p: &BlockProgram, title: &str) -> String {
    let mut by: BTreeMap<Queue, Vec<usize>> = BTreeMap::new();
    for (k, i) in p.instrs.iter().enumerate() {
        match i.op.mem_at() {
            Some(at) => {
                for s in &at.slices {
                    by.entry(Queue::Mem(*s)).or_default().push(k);
                }
            }
            None => by.entry(i.queue).or_default().push(k),
        }
    }
    let mut out = String::new();
    let c = &p.config;
    let _ = writeln!(
        out,
        "; {title}: {} — tp {}, {} seq × {} token(s), {} keys, {} — {} instructions, makespan {} cycles",
        p.kind.name(),
        c.tp,
        c.seqs,
        c.new_tokens,
        c.keys,
        if c.int4 { "int4" } else { "int8" },
        p.instrs.len(),
        p.makespan
    );
    for (q, mut ks) in by {
        let issue_on = |k: usize| -> u64 {
            let i = &p.instrs[k];
            match (q, i.op.mem_at()) {
                (Queue::Mem(s), Some(_)) => i
                    .slice_issues(fp)
                    .iter()
                    .find(|(x, _)| *x == s)
                    .map_or(i.issue, |(_, t)| *t),
                _ => i.issue,
            }
        };
        ks.sort_by_key(|k| (issue_on(*k), *k));
        let _ = writeln!(out, "{}:", q.label(fp));
        for k in ks {
            let i = &p.instrs[k];
            let _ = writeln!(
                out,
                "  {:>9}  #{:<6} {:<10} x{:<5} {}",
                issue_on(k),
                k,
                i.op.mnemonic(),
                i.occ,
                operand_note(fp, p, i)
            );
        }
    }
    out
}

/// `--emit=asm` for a whole artifact: every distinct program.
pub fn listing_all(p: &LpuProgram) -> String {
    let mut s = String::new();
    for (i, prog) in p.programs.iter().enumerate() {
        s.push_str(&listing(&p.floorplan, prog, &format!("decode program {i}")));
        s.push('\n');
    }
    s
}

/// The track an instruction's slice occupies (MEM ops: per slice and port).
fn tracks(fp: &Floorplan, i: &Instr) -> Vec<(String, u64, u64)> {
    match i.op.mem_at() {
        Some(_) => {
            let port = if i.op.is_mem_read() { "read" } else { "write" };
            i.slice_issues(fp)
                .into_iter()
                .map(|(s, t)| (format!("{} {port}", fp.mem_label(s)), t, i.occ))
                .collect()
        }
        None => {
            let dur = match i.op {
                Op::Install { .. } => i.lat.max(i.occ),
                _ => i.occ,
            };
            vec![(i.queue.label(fp), i.issue, dur)]
        }
    }
}

/// Chrome/Perfetto trace of one decode step of the whole pipeline.
pub fn trace_json(p: &LpuProgram) -> Value {
    let fp = &p.floorplan;
    let us = |c: u64| p.machine.seconds(c) * 1e6;
    let mut events: Vec<Value> = Vec::new();
    let mut start = 0u64;
    for (si, stage) in p.stages.iter().enumerate() {
        let pid = si as u64;
        events.push(
            json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
            "args": {"name": format!("stage {si} (chip {} of {} in its group)", 0, p.tp)}}),
        );
        let mut tids: BTreeMap<String, u64> = BTreeMap::new();
        let mut offset = start;
        for (bi, pi) in stage.programs.iter().enumerate() {
            let prog = &p.programs[*pi];
            let block = p.model.blocks[stage.blocks[bi]].kind;
            let mut labels: Vec<(u32, &str)> = prog
                .op_starts
                .iter()
                .map(|(n, s)| (*s, n.as_str()))
                .collect();
            labels.sort();
            for (k, i) in prog.instrs.iter().enumerate() {
                let op = labels
                    .iter()
                    .rev()
                    .find(|(s, _)| *s as usize <= k)
                    .map_or("", |(_, n)| *n);
                for (track, t, dur) in tracks(fp, i) {
                    let n = tids.len() as u64 + 1;
                    let tid = *tids.entry(track).or_insert(n);
                    events.push(json!({
                        "name": i.op.mnemonic(),
                        "cat": op,
                        "ph": "X",
                        "pid": pid,
                        "tid": tid,
                        "ts": us(offset + t),
                        "dur": us(dur),
                        "args": {"instr": k, "block": block.name(), "op": op, "cycle": offset + t}
                    }));
                }
            }
            offset += prog.makespan;
        }
        for (name, tid) in &tids {
            events.push(
                json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": name}}),
            );
        }
        start = offset;
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "model": p.model.name,
            "profile": p.machine.profile.name,
            "what": "one decode step; one process per pipeline stage, one track per unit",
        }
    })
}

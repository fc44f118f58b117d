//! The simulator, functional half: executes the scheduled instructions on data and
//! compares the logits with the reference interpreter.
//!
//! Execution follows the **schedule**, not the graph: each chip's instructions run in
//! the order of the cycle at which they act (issue; a memory write when its data is
//! complete), streams hand each producer's value to its consumer, SRAM holds tensors,
//! each MXM plane holds two weight buffers and its accumulators. All chips of a
//! tensor-parallel group run the same program in lock step; a receive takes what the
//! peer's send sent. A schedule that read a stream or a tensor before it was produced
//! would compute with stale data here and fail the comparison.
//!
//! Arithmetic is the LPU's (`Numerics::Lpu`):
//!
//! * weights as int8 with one scale per output row (`max |w| / 127` over the chip's
//!   shard of the row), from the exactly dequantized source weights; int4 storage is
//!   unpacked on the VXM with the very same arithmetic, so int4 and int8 storage give
//!   identical results — the format is a speed/space trade only;
//! * activations quantized to int8 per row (`max |x| / 127`) before every matmul; the
//!   MXM multiplies int8 × int8 and accumulates exactly (int32); the VXM dequantizes in
//!   fp32;
//! * the KV cache, attention operands (q, probabilities) and collective payloads in
//!   fp16; the MXM accumulates fp16 products in fp32;
//! * norms, RoPE, softmax, SiLU, residuals in fp32 on the VXM; row reductions as a
//!   lane-wise partial then a binary tree over the 320 lanes.
//!
//! The reference interpreter computes in f32/f64 without quantization, so the logits
//! differ by the quantization error — reported, with a tolerance the tests pin.
//! `Numerics::Exact` runs the same schedule with every rounding removed (a debugging
//! mode, not hardware): it isolates the schedule's dataflow from the quantization error.
//!
//! Here: the runner (instructions of a block in cycle order on every chip, streams, SRAM,
//! MXM buffers and accumulators, collectives) and the comparison; `vxm`: the arithmetic
//! of every VXM function and of the SXM lane tree; `data`: matrices, regions, weight
//! shards.

use std::collections::HashMap;

use lpuc_ir::graph::WeightSource;
use lpuc_ir::interp::Interpreter;
use lpuc_ir::weights::WeightStore;
use serde::Serialize;

mod data;
mod vxm;

use super::isa::{GatherBy, Op, Region, SxmFn};
use super::mops::{MOp, TId};
use super::program::{BlockProgram, LpuProgram, Split, TensorKind};
use super::timing::write_ready;
use data::{
    head_cols, head_rows, read_region, requant, shard_of, transpose_mat, write_region, Mat, Shard,
};
use vxm::lane_tree;

/// Arithmetic of the functional simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Numerics {
    /// The LPU's: int8 matmuls, fp16 KV cache and attention, fp32 VXM.
    Lpu,
    /// The same schedule with all rounding removed (debugging the dataflow).
    Exact,
}

#[derive(Debug, thiserror::Error)]
pub enum FuncError {
    #[error("functional simulation needs weights: the source graph has `weights none`; build it with `--random-weights SEED`")]
    NoWeights,
    #[error(
        "functional simulation of GGUF weights ({0}) is not supported; use `--random-weights SEED`"
    )]
    Gguf(String),
    #[error("{0}")]
    Weights(String),
    #[error("reference interpreter: {0}")]
    Interp(String),
    #[error("instruction {instr} of {block}: {msg}")]
    Exec {
        block: String,
        instr: usize,
        msg: String,
    },
}

/// Per-step comparison of one sequence's logits.
#[derive(Clone, Debug, Serialize)]
pub struct StepDiff {
    pub step: u32,
    pub seq: u32,
    pub token: u32,
    pub max_abs_diff: f32,
    pub max_abs_logit: f32,
    pub rel_diff: f32,
    pub top1_lpu: u32,
    pub top1_ref: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct FuncReport {
    pub numerics: Numerics,
    pub chips_per_stage: u32,
    pub stages: usize,
    pub sequences: u32,
    pub steps: u32,
    pub max_abs_diff: f32,
    /// `max |Δ| / max |logit|` over all steps.
    pub max_rel_diff: f32,
    pub top1_agreement: f32,
    /// The same schedule with rounding removed: isolates the dataflow.
    pub exact_max_abs_diff: f32,
    pub exact_max_rel_diff: f32,
    pub diffs: Vec<StepDiff>,
}

/// One block instance on one chip: its persistent caches.
type Caches = HashMap<(usize, usize, u32, u32, u32), Vec<f32>>;

struct Runner<'a> {
    p: &'a LpuProgram,
    store: &'a dyn WeightStore,
    num: Numerics,
    shards: HashMap<(usize, String, usize), Shard>,
    caches: Caches,
}

impl<'a> Runner<'a> {
    /// The instance weight id for a template weight id of a program run as `block`.
    fn instance_weight(&self, prog: &BlockProgram, block: usize, w: u32) -> u32 {
        self.instance_slot(prog, block, w, |slots| &slots.0)
    }

    fn instance_cache(&self, prog: &BlockProgram, block: usize, c: u32) -> u32 {
        self.instance_slot(prog, block, c, |slots| &slots.1)
    }

    /// Maps `id` from the program's template block to `block` through the slot list
    /// `pick` selects from `Block::slots` (same position, other block); unmapped ids stay.
    fn instance_slot(
        &self,
        prog: &BlockProgram,
        block: usize,
        id: u32,
        pick: impl Fn(&(Vec<u32>, Vec<u32>)) -> &Vec<u32>,
    ) -> u32 {
        let blocks = &self.p.model.blocks;
        let template = blocks
            .iter()
            .position(|b| b.kind == prog.kind)
            .unwrap_or(block);
        let (t, i) = (blocks[template].slots(), blocks[block].slots());
        let pos = pick(&t).iter().position(|x| *x == id);
        pos.and_then(|k| pick(&i).get(k).copied()).unwrap_or(id)
    }

    fn shard(&mut self, w: u32, split: Split, rank: usize) -> Result<&Shard, FuncError> {
        let name = self.p.model.weights[w as usize].name.clone();
        let key = (rank, name.clone(), split as usize);
        if !self.shards.contains_key(&key) {
            let s = shard_of(self.store, &name, split, rank, self.p.tp as usize)?;
            self.shards.insert(key.clone(), s);
        }
        Ok(&self.shards[&key])
    }

    /// Runs one block on every chip of the group. `inputs`: model tensor → value
    /// (replicated). Returns the block's outputs and, for the tail, the gathered logits.
    fn block(
        &mut self,
        prog: &BlockProgram,
        block: usize,
        inputs: &HashMap<TId, Mat>,
        pos: &[u64],
        tokens_per_seq: u32,
    ) -> Result<(HashMap<TId, Mat>, Option<Mat>), FuncError> {
        let t = self.p.tp as usize;
        let exact = self.num == Numerics::Exact;
        let label = format!("{:?}", self.p.model.blocks[block].kind);
        let err = |k: usize, msg: String| FuncError::Exec {
            block: label.clone(),
            instr: k,
            msg,
        };
        // Memory of each chip: local tensor → matrix.
        let mut mem: Vec<HashMap<u32, Mat>> = vec![HashMap::new(); t];
        let mut invs: HashMap<(usize, u32), Vec<f32>> = HashMap::new();
        for rank in 0..t {
            for (li, d) in prog.tensors.iter().enumerate() {
                let li = li as u32;
                let (r, c) = (d.rows as usize, d.cols as usize);
                let m = match &d.kind {
                    TensorKind::Weight { w, split } => {
                        let iw = self.instance_weight(prog, block, *w);
                        let int4 = d.elem == super::isa::Elem::I4;
                        let sh = self.shard(iw, *split, rank)?;
                        if int4 {
                            invs.insert((rank, li), sh.inv.clone());
                        }
                        let mut m = Mat::new(r, c);
                        for i in 0..r.min(sh.n) {
                            for j in 0..c.min(sh.k) {
                                let w = sh.w[i * sh.k + j];
                                // int8 storage holds the requantized values; int4
                                // storage the source values the VXM will unpack.
                                m.data[i * c + j] = if exact || int4 {
                                    w
                                } else {
                                    requant(w, sh.inv[i])
                                };
                            }
                        }
                        m
                    }
                    TensorKind::WeightScale { w, split } => {
                        let iw = self.instance_weight(prog, block, *w);
                        let sh = self.shard(iw, *split, rank)?;
                        let mut m = Mat::new(1, c);
                        for j in 0..c.min(sh.n) {
                            m.data[j] = if exact { 1.0 } else { sh.scale[j] };
                        }
                        m
                    }
                    TensorKind::Vector { w, .. } => {
                        let iw = self.instance_weight(prog, block, *w);
                        let sh = self.shard(iw, Split::None, rank)?;
                        Mat {
                            rows: 1,
                            cols: c,
                            data: sh.w.clone(),
                            inv: None,
                        }
                    }
                    TensorKind::Cache {
                        c: cid, seq, head, ..
                    } => {
                        let ic = self.instance_cache(prog, block, *cid);
                        let key = (block, rank, ic, *seq, *head);
                        let data = self
                            .caches
                            .entry(key)
                            .or_insert_with(|| vec![0.0; r * c])
                            .clone();
                        Mat {
                            rows: r,
                            cols: c,
                            data,
                            inv: None,
                        }
                    }
                    TensorKind::RopeTable { dims, theta, .. } => {
                        let mut m = Mat::new(r, c);
                        let half = *dims as usize / 2;
                        for p in 0..r {
                            for i in 0..half {
                                let freq =
                                    f64::from(*theta).powf(-2.0 * i as f64 / f64::from(*dims));
                                let (s, co) = (p as f64 * freq).sin_cos();
                                m.data[p * c + 2 * i] = co as f32;
                                m.data[p * c + 2 * i + 1] = s as f32;
                            }
                        }
                        m
                    }
                    TensorKind::Io { .. }
                    | TensorKind::Temp
                    | TensorKind::Table { .. }
                    | TensorKind::TableScale { .. } => Mat::new(r, c),
                };
                mem[rank].insert(li, m);
            }
            for (mt, lt) in &prog.inputs {
                if let Some(v) = inputs.get(mt) {
                    mem[rank].insert(*lt, v.clone());
                }
            }
            // Host-side embedding rows arrive as inputs too (head outputs).
        }
        // Event order: issue, except memory writes at completion.
        let fp = &self.p.floorplan;
        let mut order: Vec<(u64, usize)> = prog
            .instrs
            .iter()
            .enumerate()
            .map(|(k, i)| {
                let t = if i.op.is_mem_write() {
                    write_ready(fp, i)
                } else {
                    i.issue
                };
                (t, k)
            })
            .collect();
        order.sort();
        let mut out: Vec<HashMap<usize, Mat>> = vec![HashMap::new(); t];
        let mut bufs: Vec<HashMap<(u8, u8), Mat>> = vec![HashMap::new(); t];
        let mut acc: Vec<HashMap<u8, Mat>> = vec![HashMap::new(); t];
        for (_, k) in order {
            let ins = &prog.instrs[k];
            for rank in 0..t {
                let srcs: Vec<Mat> = ins
                    .srcs
                    .iter()
                    .map(|s| {
                        out[rank].get(&(s.from as usize)).cloned().ok_or_else(|| {
                            err(k, format!("operand from #{} not produced yet", s.from))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let val: Option<Mat> = match &ins.op {
                    Op::MemRead {
                        data, peer_block, ..
                    } => {
                        let mut r = *data;
                        if let Some(o) = peer_block {
                            r.col0 += ((rank + *o as usize) % t) as u32 * r.cols;
                        }
                        let m = mem[rank]
                            .get(&r.tensor)
                            .ok_or_else(|| err(k, "reads a tensor that does not exist".into()))?;
                        let mut v = read_region(m, &r).map_err(|e| err(k, e))?;
                        if let Some(inv) = invs.get(&(rank, r.tensor)) {
                            let a = r.row0 as usize;
                            v.inv = inv.get(a..a + v.rows).map(|x| x.to_vec());
                        }
                        Some(v)
                    }
                    Op::MemGather { data, by, .. } => {
                        let m = &mem[rank][&data.tensor];
                        let rows = data.rows as usize;
                        let mut v = Mat::new(rows, data.cols as usize);
                        for r in 0..rows {
                            let (seq, i) =
                                (r / tokens_per_seq as usize, r % tokens_per_seq as usize);
                            let row = match by {
                                GatherBy::Positions => {
                                    pos.get(seq).copied().unwrap_or(0) as usize + i
                                }
                                GatherBy::Tokens => 0,
                            };
                            if row >= m.rows {
                                return Err(err(k, format!("gathers row {row} of {}", m.rows)));
                            }
                            for c in 0..v.cols {
                                v.data[r * v.cols + c] = m.at(row, data.col0 as usize + c);
                            }
                        }
                        Some(v)
                    }
                    Op::MemWrite {
                        data, peer_block, ..
                    } => {
                        let mut r = *data;
                        if let Some(o) = peer_block {
                            r.col0 += ((rank + t - *o as usize % t) % t) as u32 * r.cols;
                        }
                        let m = mem[rank]
                            .get_mut(&r.tensor)
                            .ok_or_else(|| err(k, "writes a tensor that does not exist".into()))?;
                        write_region(m, &r, &srcs[0]).map_err(|e| err(k, e))?;
                        None
                    }
                    Op::MemScatter { data, seq, .. } => {
                        let p0 = pos.get(*seq as usize).copied().unwrap_or(0) as u32;
                        let r = Region {
                            row0: p0 + data.row0,
                            ..*data
                        };
                        let m = mem[rank]
                            .get_mut(&r.tensor)
                            .ok_or_else(|| err(k, "no cache".into()))?;
                        write_region(m, &r, &srcs[0]).map_err(|e| err(k, e))?;
                        None
                    }
                    Op::Install {
                        plane,
                        buf,
                        transpose,
                        ..
                    } => {
                        let s = &srcs[0];
                        let w = if *transpose {
                            transpose_mat(s)
                        } else {
                            s.clone()
                        };
                        bufs[rank].insert((*plane, *buf), w);
                        None
                    }
                    Op::MatMul {
                        plane,
                        buf,
                        ty,
                        first,
                        last,
                        ..
                    } => {
                        let w = bufs[rank]
                            .get(&(*plane, *buf))
                            .ok_or_else(|| err(k, "matmul on an empty weight buffer".into()))?;
                        let x = &srcs[0];
                        if x.cols != w.cols {
                            return Err(err(
                                k,
                                format!("streams {} lanes into a tile of {}", x.cols, w.cols),
                            ));
                        }
                        let a = acc[rank]
                            .entry(*plane)
                            .or_insert_with(|| Mat::new(x.rows, w.rows));
                        if *first {
                            *a = Mat::new(x.rows, w.rows);
                        }
                        if a.rows != x.rows || a.cols != w.rows {
                            return Err(err(k, "accumulates into a tile of another shape".into()));
                        }
                        let int = *ty == super::isa::MxmType::Int8 && !exact;
                        for r in 0..x.rows {
                            for n in 0..w.rows {
                                let xr = &x.data[r * x.cols..(r + 1) * x.cols];
                                let wr = &w.data[n * w.cols..(n + 1) * w.cols];
                                let d = if int || exact {
                                    // int32 (exact in f64) / exact mode.
                                    xr.iter()
                                        .zip(wr)
                                        .map(|(p, q)| f64::from(*p) * f64::from(*q))
                                        .sum::<f64>() as f32
                                } else {
                                    xr.iter().zip(wr).fold(0f32, |s, (p, q)| s + p * q)
                                };
                                a.data[r * a.cols + n] = if int {
                                    (f64::from(a.data[r * a.cols + n]) + f64::from(d)) as f32
                                } else {
                                    a.data[r * a.cols + n] + d
                                };
                            }
                        }
                        if *last {
                            Some(a.clone())
                        } else {
                            None
                        }
                    }
                    Op::Vxm { f, .. } => Some(
                        self.vxm(f, &srcs, pos, rank, t, exact)
                            .map_err(|e| err(k, e))?,
                    ),
                    Op::Sxm { f } => Some(match f {
                        SxmFn::LaneTree(op) => lane_tree(&srcs[0], *op),
                        SxmFn::Transpose | SxmFn::Distribute => srcs[0].clone(),
                        SxmFn::HeadRows { g, d } => head_rows(&srcs[0], *g as usize, *d as usize),
                        SxmFn::HeadCols { g, d } => head_cols(&srcs[0], *g as usize, *d as usize),
                    }),
                    Op::Send { .. } => Some(srcs[0].clone()),
                    Op::Recv { peer, send, .. } => {
                        let from = (rank + t - *peer as usize % t) % t;
                        Some(
                            out[from].get(&(*send as usize)).cloned().ok_or_else(|| {
                                err(k, format!("receives before rank {from} sent"))
                            })?,
                        )
                    }
                };
                if let Some(v) = val {
                    out[rank].insert(k, v);
                }
            }
        }
        // Persist caches, collect outputs (chip 0: replicated) and logits (gathered).
        for rank in 0..t {
            for (li, d) in prog.tensors.iter().enumerate() {
                if let TensorKind::Cache { c, seq, head, .. } = d.kind {
                    let ic = self.instance_cache(prog, block, c);
                    if let Some(m) = mem[rank].get(&(li as u32)) {
                        self.caches
                            .insert((block, rank, ic, seq, head), m.data.clone());
                    }
                }
            }
        }
        let mut outs = HashMap::new();
        for (mt, lt) in &prog.outputs {
            if let Some(m) = mem[0].get(lt) {
                outs.insert(*mt, m.clone());
            }
        }
        let logits = match prog.logits {
            None => None,
            Some(l) => {
                let parts: Vec<&Mat> = (0..t).filter_map(|r| mem[r].get(&l)).collect();
                let split = self.p.model.blocks[block]
                    .ops
                    .iter()
                    .any(|o| matches!(o, MOp::Output { .. }))
                    && t > 1
                    && parts.first().is_some_and(|m| {
                        // The vocabulary is split when the shard is narrower than the head.
                        self.p
                            .model
                            .weights
                            .iter()
                            .any(|w| w.shape.len() == 2 && w.shape[0] as usize == m.cols * t)
                    });
                if split {
                    let (r, c) = (parts[0].rows, parts[0].cols);
                    let mut m = Mat::new(r, c * t);
                    for (ri, part) in parts.iter().enumerate() {
                        for i in 0..r {
                            for j in 0..c {
                                m.data[i * c * t + ri * c + j] = part.at(i, j);
                            }
                        }
                    }
                    Some(m)
                } else {
                    parts.first().map(|m| (*m).clone())
                }
            }
        };
        Ok((outs, logits))
    }
}

/// Logits per step, per sequence.
type Logits = Vec<Vec<Vec<f32>>>;

/// The token sequence `b` sees at step `i` (deterministic, spread over the vocabulary).
fn token(i: u32, b: u32, vocab: u64) -> u32 {
    ((3 + 7 * u64::from(i) + 11 * u64::from(b)) % vocab.max(1)) as u32
}

fn vocab(p: &LpuProgram) -> u64 {
    p.model
        .blocks
        .iter()
        .flat_map(|b| &b.ops)
        .find_map(|o| match o {
            MOp::Embed { table, .. } => Some(p.model.weights[*table as usize].shape[0]),
            _ => None,
        })
        .unwrap_or(1)
}

/// Runs `steps` decode steps of one microbatch through every stage.
fn run(
    p: &LpuProgram,
    store: &dyn WeightStore,
    num: Numerics,
    steps: u32,
) -> Result<Logits, FuncError> {
    let seqs = p.microbatch.max(1);
    let v = vocab(p);
    let mut r = Runner {
        p,
        store,
        num,
        shards: HashMap::new(),
        caches: HashMap::new(),
    };
    let mut all = Vec::new();
    for i in 0..steps {
        let pos: Vec<u64> = vec![u64::from(i); seqs as usize];
        let mut vals: HashMap<TId, Mat> = HashMap::new();
        // Host: embedding rows of this step's tokens (exact dequantization).
        for b in &p.model.blocks {
            for op in &b.ops {
                if let MOp::Embed { table, out } = op {
                    let name = &p.model.weights[*table as usize].name;
                    let w = store.get(name).ok_or_else(|| {
                        FuncError::Weights(format!("weight \"{name}\" is not in the weight store"))
                    })?;
                    let d = w.shape[1] as usize;
                    let row_bytes = w.dtype.bytes_for(d as u64).ok_or_else(|| {
                        FuncError::Weights(format!("{name}: rows are not whole blocks"))
                    })? as usize;
                    let mut m = Mat::new(seqs as usize, d);
                    for s in 0..seqs {
                        let tok = token(i, s, v) as usize;
                        lpuc_ir::quant::dequantize(
                            w.dtype,
                            &w.bytes[tok * row_bytes..(tok + 1) * row_bytes],
                            &mut m.data[s as usize * d..(s as usize + 1) * d],
                        )
                        .map_err(|e| FuncError::Weights(e.to_string()))?;
                    }
                    vals.insert(*out, m);
                }
            }
        }
        let mut logits = None;
        for st in &p.stages {
            for (bi, pi) in st.blocks.iter().zip(&st.programs) {
                let prog = &p.programs[*pi];
                let inst = &p.model.blocks[*bi];
                let template = p
                    .model
                    .blocks
                    .iter()
                    .find(|b| b.kind == prog.kind)
                    .unwrap_or(inst);
                // Template tensor ids → this instance's.
                let mut inputs = HashMap::new();
                for (tt, it) in template.inputs.iter().zip(&inst.inputs) {
                    if let Some(m) = vals.get(it) {
                        inputs.insert(*tt, m.clone());
                    }
                }
                let (outs, lg) = r.block(prog, *bi, &inputs, &pos, 1)?;
                for (tt, it) in template.outputs.iter().zip(&inst.outputs) {
                    if let Some(m) = outs.get(tt) {
                        vals.insert(*it, m.clone());
                    }
                }
                if lg.is_some() {
                    logits = lg;
                }
            }
        }
        let lg = logits.ok_or_else(|| FuncError::Exec {
            block: "tail".into(),
            instr: 0,
            msg: "the program produced no logits".into(),
        })?;
        all.push(
            (0..seqs as usize)
                .map(|s| lg.data[s * lg.cols..(s + 1) * lg.cols].to_vec())
                .collect(),
        );
    }
    Ok(all)
}

fn reference(p: &LpuProgram, store: &dyn WeightStore, steps: u32) -> Result<Logits, FuncError> {
    let seqs = p.microbatch.max(1);
    let v = vocab(p);
    let mut per_seq = Vec::new();
    for s in 0..seqs {
        let mut it =
            Interpreter::new(&p.graph, store).map_err(|e| FuncError::Interp(e.to_string()))?;
        let mut rows = Vec::new();
        for i in 0..steps {
            let l = it
                .run_tokens(&[token(i, s, v)])
                .map_err(|e| FuncError::Interp(e.to_string()))?;
            rows.push(l.data.clone());
        }
        per_seq.push(rows);
    }
    Ok((0..steps as usize)
        .map(|i| per_seq.iter().map(|r| r[i].clone()).collect())
        .collect())
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Executes the schedule (LPU numerics and exact numerics) and compares with the
/// reference interpreter on the same random weights, `steps` decode steps from an empty
/// cache, every sequence of one microbatch.
pub fn compare(p: &LpuProgram, steps: u32) -> Result<FuncReport, FuncError> {
    let store = match &p.weight_source {
        WeightSource::Random { seed } => {
            lpuc_ir::weights::random_weights(&p.graph, *seed).map_err(FuncError::Weights)?
        }
        WeightSource::None => return Err(FuncError::NoWeights),
        WeightSource::Gguf { path } => return Err(FuncError::Gguf(path.clone())),
    };
    super::sim::validate(p).map_err(|e| FuncError::Weights(e.to_string()))?;
    let steps = steps.max(1).min(p.options.context as u32);
    let lpu = run(p, &store, Numerics::Lpu, steps)?;
    let exact = run(p, &store, Numerics::Exact, steps)?;
    let reference = reference(p, &store, steps)?;
    let v = vocab(p);
    let mut diffs = Vec::new();
    let (mut max_abs, mut max_rel, mut agree, mut n) = (0f32, 0f32, 0u32, 0u32);
    let (mut ex_abs, mut ex_rel) = (0f32, 0f32);
    for (i, (step, refs)) in lpu.iter().zip(&reference).enumerate() {
        for (s, (a, b)) in step.iter().zip(refs).enumerate() {
            let (d, _) = lpuc_ir::interp::max_abs_diff(a, b);
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
            let (de, _) = lpuc_ir::interp::max_abs_diff(&exact[i][s], b);
            let (ta, tb) = (argmax(a), argmax(b));
            max_abs = max_abs.max(d);
            max_rel = max_rel.max(d / scale);
            ex_abs = ex_abs.max(de);
            ex_rel = ex_rel.max(de / scale);
            agree += u32::from(ta == tb);
            n += 1;
            diffs.push(StepDiff {
                step: i as u32,
                seq: s as u32,
                token: token(i as u32, s as u32, v),
                max_abs_diff: d,
                max_abs_logit: scale,
                rel_diff: d / scale,
                top1_lpu: ta,
                top1_ref: tb,
            });
        }
    }
    Ok(FuncReport {
        numerics: Numerics::Lpu,
        chips_per_stage: p.tp,
        stages: p.stages.len(),
        sequences: p.microbatch.max(1),
        steps,
        max_abs_diff: max_abs,
        max_rel_diff: max_rel,
        top1_agreement: if n == 0 { 0.0 } else { agree as f32 / n as f32 },
        exact_max_abs_diff: ex_abs,
        exact_max_rel_diff: ex_rel,
        diffs,
    })
}

pub fn render(r: &FuncReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "functional: {} step(s) × {} sequence(s) on {} stage(s) × {} chip(s), against the reference interpreter:",
        r.steps, r.sequences, r.stages, r.chips_per_stage
    );
    let _ = writeln!(
        s,
        "  LPU numerics (int8 matmuls, fp16 KV/attention): max |Δlogit| {:.4} ({:.2} % of max |logit|), top-1 agreement {:.0} %",
        r.max_abs_diff,
        r.max_rel_diff * 100.0,
        r.top1_agreement * 100.0
    );
    let _ = writeln!(
        s,
        "  same schedule, rounding removed: max |Δlogit| {:.2e} ({:.2e} relative) — the dataflow is exact",
        r.exact_max_abs_diff, r.exact_max_rel_diff
    );
    s
}

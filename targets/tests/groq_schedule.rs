//! The static schedule and the simulator's check: generated schedules pass; a schedule
//! with a planted conflict or late operand is rejected, and the rejection names it.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::WeightSource;
use lpuc_targets::groq::check::{check, Violation};
use lpuc_targets::groq::isa::{Op, Queue};
use lpuc_targets::groq::program::{BlockProgram, CompileOptions, LpuProgram, WeightMode};
use lpuc_targets::groq::{compile, pipeline_output, sim, MachineModel};

fn program(tp: u32, weights: WeightMode) -> LpuProgram {
    let c = LlamaConfig::preset("tiny").unwrap();
    let g = pipeline_output(build_llama(&c, WeightSource::Random { seed: 1 }).unwrap()).unwrap();
    let o = CompileOptions {
        chips: None,
        tp: Some(tp),
        batch: 1,
        context: 128,
        weights,
        prompt: 8,
    };
    compile::compile(&g, &MachineModel::v1(), &o).unwrap()
}

fn layer(p: &LpuProgram) -> BlockProgram {
    p.programs[0].clone()
}

fn violations(p: &LpuProgram, b: &BlockProgram) -> Vec<Violation> {
    check(&p.machine, &p.floorplan, b).err().unwrap_or_default()
}

#[test]
fn generated_schedules_pass_the_check() {
    for (tp, w) in [(1, WeightMode::Int8), (2, WeightMode::Int4)] {
        let p = program(tp, w);
        for b in p.programs.iter().chain(&p.prefill) {
            let s = check(&p.machine, &p.floorplan, b).unwrap();
            assert!(s.instrs > 20 && s.stream_operands > 20, "{s:?}");
        }
        let s = check(&p.machine, &p.floorplan, &p.programs[0]).unwrap();
        assert!(s.instrs > 150, "a tiny layer is {} instructions", s.instrs);
    }
}

#[test]
fn compiling_twice_gives_the_same_artifact() {
    let a = lpuc_ir::artifact::encode("groq-program", &program(2, WeightMode::Auto)).unwrap();
    let b = lpuc_ir::artifact::encode("groq-program", &program(2, WeightMode::Auto)).unwrap();
    assert!(a == b, "the schedule is deterministic");
}

/// The first instruction (after `after`) that consumes a stream.
fn consumer(b: &BlockProgram, pred: impl Fn(&Op) -> bool) -> usize {
    b.instrs
        .iter()
        .position(|i| !i.srcs.is_empty() && pred(&i.op))
        .unwrap()
}

#[test]
fn a_consumer_issued_one_cycle_early_is_a_late_operand() {
    let p = program(1, WeightMode::Int8);
    let mut b = layer(&p);
    let k = consumer(&b, |o| matches!(o, Op::Vxm { .. }));
    b.instrs[k].issue -= 1;
    let v = violations(&p, &b);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::LateOperand { consumer, .. } if *consumer == k)),
        "{v:?}"
    );
    assert!(v
        .iter()
        .any(|x| x.to_string().starts_with("late operand: instruction")));
}

#[test]
fn a_consumer_issued_one_cycle_late_misses_its_operand() {
    let p = program(1, WeightMode::Int8);
    let mut b = layer(&p);
    let k = consumer(&b, |o| matches!(o, Op::Vxm { .. }));
    b.instrs[k].issue += 1;
    let v = violations(&p, &b);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::MissedOperand { consumer, .. } if *consumer == k)),
        "{v:?}"
    );
}

#[test]
fn a_read_moved_before_its_write_is_rejected() {
    let p = program(1, WeightMode::Int8);
    let mut b = layer(&p);
    // A read of a tensor an earlier instruction writes: move it (and so its chain's
    // timing) 2,000 cycles earlier than written data allows.
    let k = b
        .instrs
        .iter()
        .enumerate()
        .position(|(k, i)| {
            let Op::MemRead { data, .. } = &i.op else {
                return false;
            };
            b.instrs[..k]
                .iter()
                .any(|w| matches!(&w.op, Op::MemWrite { data: d, .. } if d.tensor == data.tensor))
        })
        .unwrap();
    let w = b.instrs[k].issue.min(2000);
    b.instrs[k].issue -= w;
    let v = violations(&p, &b);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::ReadBeforeWrite { read, .. } if *read == k)),
        "{v:?}"
    );
}

#[test]
fn a_matmul_before_its_install_completes_is_rejected() {
    let p = program(1, WeightMode::Int8);
    let mut b = layer(&p);
    let k = b
        .instrs
        .iter()
        .position(|i| matches!(i.op, Op::MatMul { .. }))
        .unwrap();
    let Op::MatMul { install, .. } = b.instrs[k].op else {
        unreachable!()
    };
    b.instrs[install as usize].issue += 5;
    let v = violations(&p, &b);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::WeightsNotReady { mm, .. } if *mm == k)),
        "{v:?}"
    );
}

#[test]
fn two_instructions_on_one_queue_at_once_conflict() {
    let p = program(1, WeightMode::Int8);
    let mut b = layer(&p);
    // Put a second VXM instruction on the queue and cycle of the first one.
    let vx: Vec<usize> = b
        .instrs
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i.op, Op::Vxm { .. }))
        .map(|(k, _)| k)
        .collect();
    let (a, c) = (vx[0], vx[1]);
    b.instrs[c].queue = b.instrs[a].queue;
    b.instrs[c].issue = b.instrs[a].issue;
    let v = violations(&p, &b);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::Conflict { resource, .. } if resource.contains("Vxm"))),
        "{v:?}"
    );
    let s = v
        .iter()
        .find(|x| matches!(x, Violation::Conflict { .. }))
        .unwrap()
        .to_string();
    assert!(s.starts_with("resource conflict on Queue(Vxm("), "{s}");
}

#[test]
fn two_reads_on_one_slice_port_conflict() {
    let p = program(1, WeightMode::Int8);
    let mut b = layer(&p);
    let reads: Vec<usize> = b
        .instrs
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(&i.op, Op::MemRead { at, .. } if at.slices.len() == 1))
        .map(|(k, _)| k)
        .collect();
    let (a, c) = (reads[0], reads[1]);
    let at = match &b.instrs[a].op {
        Op::MemRead { at, .. } => at.clone(),
        _ => unreachable!(),
    };
    if let Op::MemRead { at: x, .. } = &mut b.instrs[c].op {
        x.slices = at.slices.clone();
    }
    b.instrs[c].queue = Queue::Mem(at.slices[0]);
    b.instrs[c].issue = b.instrs[a].issue;
    let v = violations(&p, &b);
    assert!(
        v.iter().any(|x| matches!(x, Violation::Conflict { resource, .. } if resource.starts_with("MemRead") || resource.starts_with("Queue(Mem"))),
        "{v:?}"
    );
}

#[test]
fn two_operands_on_one_stream_at_once_conflict() {
    let p = program(1, WeightMode::Int8);
    let mut b = layer(&p);
    // Find two operands flowing the same way whose transfers overlap, and put the
    // second on the first's stream.
    let fp = &p.floorplan;
    let mut found = None;
    'o: for (i, x) in b.instrs.iter().enumerate() {
        for s in &x.srcs {
            for (j, y) in b.instrs.iter().enumerate().skip(i + 1) {
                for (n, t) in y.srcs.iter().enumerate() {
                    if t.dir != s.dir || t.streams[0] == s.streams[0] {
                        continue;
                    }
                    let ba =
                        lpuc_targets::groq::isa::src_bands(fp, &b.instrs[s.from as usize], x, s)[0];
                    let mut bb =
                        lpuc_targets::groq::isa::src_bands(fp, &b.instrs[t.from as usize], y, t)[0];
                    bb.idx = ba.idx;
                    if ba.collides(&bb) {
                        found = Some((j, n, s.streams[0]));
                        break 'o;
                    }
                }
            }
        }
    }
    let (j, n, idx) = found.expect("two overlapping transfers in one direction");
    b.instrs[j].srcs[n].streams[0] = idx;
    let v = violations(&p, &b);
    assert!(
        v.iter().any(|x| matches!(x, Violation::Stream { .. })),
        "{v:?}"
    );
}

#[test]
fn too_many_vxm_alus_at_once_is_rejected() {
    let p = program(1, WeightMode::Int8);
    let mut b = layer(&p);
    let k = b
        .instrs
        .iter()
        .position(|i| matches!(i.op, Op::Vxm { .. }))
        .unwrap();
    if let Op::Vxm { alus, .. } = &mut b.instrs[k].op {
        *alus = 17;
    }
    let v = violations(&p, &b);
    assert!(
        v.iter().any(|x| matches!(x, Violation::Alus { .. })),
        "{v:?}"
    );
}

#[test]
fn the_simulator_refuses_to_time_a_rejected_schedule() {
    let mut p = program(1, WeightMode::Int8);
    assert!(sim::simulate(&p).is_ok());
    let k = consumer(&p.programs[0], |o| matches!(o, Op::Vxm { .. }));
    p.programs[0].instrs[k].issue -= 1;
    let e = sim::simulate(&p).unwrap_err().to_string();
    assert!(
        e.starts_with("schedule rejected: decode program 0 (Layer(0)) has"),
        "{e}"
    );
    assert!(e.contains("late operand"), "{e}");
}

#[test]
fn an_inconsistent_artifact_is_refused_not_indexed() {
    let mut p = program(1, WeightMode::Int8);
    p.stages[0].programs[0] = 99;
    let e = sim::simulate(&p).unwrap_err().to_string();
    assert_eq!(
        e,
        "inconsistent artifact: stage 0 names program 99, which does not exist"
    );
}

//! MACHINE.md's "What limits decode", checked against lpuc's own schedules of a
//! LLaMA-3-70B decoder layer (tensor parallel over one node of 8 chips, batch 1,
//! 2,048 cached tokens) — the schedule, not the prose, is the evidence.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::WeightSource;
use lpuc_targets::groq::isa::{Floorplan, Op, VxmFn};
use lpuc_targets::groq::program::{AttnMap, BlockProgram, GenConfig};
use lpuc_targets::groq::{codegen, lower, pipeline_output, sim, MachineModel};

fn layer(int4: bool) -> (MachineModel, BlockProgram) {
    let c = LlamaConfig::preset("llama3-70b").unwrap();
    let g = pipeline_output(build_llama(&c, WeightSource::None).unwrap()).unwrap();
    let lm = lower::lower(&g).unwrap();
    let m = MachineModel::v1();
    let fp = Floorplan::new(&m).unwrap();
    let cfg = GenConfig {
        tp: 8,
        seqs: 1,
        new_tokens: 1,
        keys: 2048,
        int4,
        attn: AttnMap::KvStationary,
    };
    let p = codegen::generate(&m, &fp, &lm, &lm.blocks[1], &cfg).unwrap();
    (m, p)
}

/// "Batch-1 decode re-installs every weight into the MXM for every token, so the
/// binding on-chip rate is weight install, not SRAM bandwidth."
#[test]
fn int8_decode_is_bound_by_weight_install() {
    let (m, p) = layer(false);
    let b = sim::bounds(&m, &p, 4);
    assert_eq!(b.binding(), "MXM weight install", "{b:?}");
    // SRAM is not the limit: the busiest slice's ports are busy about half as long as
    // the busiest plane installs (16 slices feed a plane; 88 slices feed 4 planes).
    assert!(b.mem * 3 < b.install * 2, "{b:?}");
    // The whole layer's int8 weights (~107 MB per chip) go through the planes once.
    let installs = p
        .instrs
        .iter()
        .filter(|i| matches!(i.op, Op::Install { .. }))
        .count();
    assert!(installs > 1100, "{installs} tiles");
    // The schedule adds the dependencies the bound ignores, but not more than it.
    assert!(
        p.makespan > b.total() && p.makespan < 2 * b.total(),
        "{} vs {b:?}",
        p.makespan
    );
}

/// "INT4 saves SRAM (fewer chips) but costs VXM unpack time."
#[test]
fn int4_halves_sram_and_is_bound_by_the_vxm_unpack() {
    let (m, p8) = layer(false);
    let (_, p4) = layer(true);
    let (r4, _) = p4.sram_bytes(320);
    let (r8, _) = p8.sram_bytes(320);
    assert!(r4 * 10 < r8 * 6, "int4 {r4} vs int8 {r8} bytes");
    let b = sim::bounds(&m, &p4, 4);
    assert_eq!(b.binding(), "VXM ALUs", "{b:?}");
    assert!(
        p4.makespan > 3 * p8.makespan,
        "{} vs {}",
        p4.makespan,
        p8.makespan
    );
    assert!(p4.instrs.iter().any(|i| matches!(
        &i.op,
        Op::Vxm {
            f: VxmFn::Unpack4,
            ..
        }
    )));
}

/// "… plus ≥ 2 collectives per layer under tensor parallelism at ~216 cycles per hop."
#[test]
fn a_tensor_parallel_layer_pays_two_all_reduces() {
    let (m, p) = layer(false);
    let sums = p
        .instrs
        .iter()
        .filter(|i| {
            matches!(
                &i.op,
                Op::Vxm {
                    f: VxmFn::Sum(8),
                    ..
                }
            )
        })
        .count();
    assert_eq!(sums, 2, "attention output and FFN down projection");
    assert!(p.work.c2c_hops >= 2);
    assert_eq!(sim::bounds(&m, &p, 4).hops, p.work.c2c_hops * 216);
}

//! The multi-chip partitioner and the compile driver: capacity, stage balance, the
//! weight-format choice, batching, and every user-facing error message.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::{Graph, WeightSource};
use lpuc_targets::groq::program::{CompileOptions, WeightMode};
use lpuc_targets::groq::{compile, pipeline_output, sim, MachineModel};

fn graph(preset: &str) -> Graph {
    let c = LlamaConfig::preset(preset).unwrap();
    pipeline_output(build_llama(&c, WeightSource::None).unwrap()).unwrap()
}

fn opts(chips: Option<u64>, batch: u64, weights: WeightMode, context: u64) -> CompileOptions {
    CompileOptions {
        chips,
        tp: None,
        batch,
        context,
        weights,
        prompt: 16,
    }
}

fn err(g: &Graph, o: CompileOptions) -> String {
    compile::compile(g, &MachineModel::v1(), &o)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "compiled".into())
}

#[test]
fn user_errors_name_the_option() {
    let g = graph("tiny");
    assert_eq!(
        err(&g, opts(None, 0, WeightMode::Auto, 128)),
        "--batch must be at least 1"
    );
    assert_eq!(
        err(&g, opts(None, 1, WeightMode::Auto, 0)),
        "--context must be at least 1"
    );
    assert_eq!(
        err(&g, opts(None, 1, WeightMode::Auto, 4096)),
        "--context 4096 exceeds the model's context bound P <= 128"
    );
    let mut o = opts(None, 1, WeightMode::Auto, 64);
    o.prompt = 100;
    assert_eq!(err(&g, o), "--prompt 100 exceeds --context 64");
    assert_eq!(
        err(&g, opts(Some(0), 1, WeightMode::Auto, 128)),
        "--chips 0: at least 1 chip is needed"
    );
    assert_eq!(
        err(&g, opts(Some(20_000), 1, WeightMode::Auto, 128)),
        "--chips 20000 exceeds the largest system the profile describes (10440 chips)"
    );
    let mut o = opts(None, 1, WeightMode::Auto, 128);
    o.tp = Some(3);
    assert_eq!(
        err(&g, o),
        "no tensor-parallel degree up to 8 chips shards this model: blk.0.attn_q.weight has 64 output features, not divisible by 3"
    );
}

#[test]
fn a_model_that_does_not_fit_says_why() {
    // LLaMA-2-7B int4 is ~3.8 GB: far more than four chips' SRAM.
    let g = graph("llama2-7b");
    let e = err(&g, opts(Some(4), 1, WeightMode::Int4, 1024));
    assert!(
        e.starts_with(
            "llama2-7b does not fit 4 chips with --weights int4, --batch 1, --context 1024: "
        ),
        "{e}"
    );
}

#[test]
fn auto_chips_is_the_capacity_minimum_and_int4_needs_fewer() {
    let g = graph("smollm2-135m");
    let m = MachineModel::v1();
    let p4 = compile::compile(&g, &m, &opts(None, 1, WeightMode::Int4, 512)).unwrap();
    let p8 = compile::compile(&g, &m, &opts(None, 1, WeightMode::Int8, 512)).unwrap();
    assert_eq!(p4.chips(), 1, "SmolLM2-135M fits one chip");
    let r4 = sim::simulate(&p4).unwrap();
    let r8 = sim::simulate(&p8).unwrap();
    assert!(r4.sram_bytes_per_chip_max < r8.sram_bytes_per_chip_max);
    // int8 installs straight into the MXM; int4 goes through the VXM unpack.
    assert!(r8.us_per_token < r4.us_per_token);
    for r in [&r4, &r8] {
        assert!(r.sram_bytes_per_chip_max <= m.sram_usable_bytes());
        assert!(r.lower_bound_us_per_token <= r.us_per_token);
        assert!(r.tokens_per_s_per_user > 0.0);
    }
}

#[test]
fn stages_are_balanced_and_batches_fill_the_pipeline() {
    // 30 SmolLM2 layers + the LM head over 4 single-chip stages.
    let g = graph("smollm2-135m");
    let m = MachineModel::v1();
    let mut o = opts(Some(4), 8, WeightMode::Int8, 512);
    o.tp = Some(1);
    let p = compile::compile(&g, &m, &o).unwrap();
    assert_eq!(p.stages.len(), 4);
    let sizes: Vec<usize> = p.stages.iter().map(|s| s.blocks.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 31, "{sizes:?}");
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 2,
        "{sizes:?}"
    );
    // 8 sequences over 4 stages: 4 microbatches of 2 keep every stage busy.
    assert_eq!((p.groups, p.microbatch), (4, 2));
    let r = sim::simulate(&p).unwrap();
    assert!((r.tokens_per_s_aggregate - 8.0 * r.tokens_per_s_per_user).abs() < 1e-6);
    // Batching raises aggregate throughput over batch 1 on the same chips.
    let mut o1 = o.clone();
    o1.batch = 1;
    let r1 = sim::simulate(&compile::compile(&g, &m, &o1).unwrap()).unwrap();
    assert!(r.tokens_per_s_aggregate > 3.0 * r1.tokens_per_s_aggregate);
}

#[test]
fn auto_weights_mix_formats_only_when_int8_does_not_fit() {
    let g = graph("smollm2-135m");
    let m = MachineModel::v1();
    // One chip, four sequences of 256 tokens: the KV cache leaves no room for all-int8.
    let mut o = opts(Some(1), 4, WeightMode::Auto, 256);
    o.tp = Some(1);
    let p = compile::compile(&g, &m, &o).unwrap();
    let int4 = p.stages[0].int4.iter().filter(|x| **x).count();
    assert!(
        int4 > 0 && int4 < p.stages[0].int4.len(),
        "{:?}",
        p.stages[0].int4
    );
    let mut roomy = opts(Some(1), 1, WeightMode::Auto, 256);
    roomy.tp = Some(1);
    let p = compile::compile(&g, &m, &roomy).unwrap();
    assert!(
        p.stages[0].int4.iter().all(|x| !*x),
        "int8 everywhere when it fits"
    );
}

/// Regression: a 7B layer's prefill chunk once needed a copy whose own slices collided
/// (the relocation now avoids the slices it copies from), and a failing candidate
/// aborted the search instead of being dropped.
#[test]
fn llama2_7b_compiles_for_every_weight_mode() {
    let g = graph("llama2-7b");
    let m = MachineModel::v1();
    for w in [WeightMode::Int4, WeightMode::Int8, WeightMode::Auto] {
        let p = compile::compile(&g, &m, &opts(None, 1, w, 2048)).unwrap();
        sim::simulate(&p).unwrap();
    }
}

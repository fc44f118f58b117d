//! The predictions the README quotes, from the pass pipeline's output (what
//! `lpuc compile --target groq` runs): `build_llama` → `GROQ_PIPELINE` → compile → sim.
//! The numbers are pinned so a change to the pipeline, the lowering or the scheduler
//! that moves them is seen and explained (README-groq.md's table is regenerated from
//! the same commands by `targets/groq-sweep.py`).

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::WeightSource;
use lpuc_targets::groq::program::{CompileOptions, WeightMode};
use lpuc_targets::groq::sim::SimReport;
use lpuc_targets::groq::{compile, pipeline_output, sim, MachineModel};

fn predict(preset: &str, o: CompileOptions) -> SimReport {
    let c = LlamaConfig::preset(preset).unwrap();
    let g = pipeline_output(build_llama(&c, WeightSource::None).unwrap()).unwrap();
    let p = compile::compile(&g, &MachineModel::v1(), &o).unwrap();
    let r = sim::simulate(&p).unwrap();
    // `cargo test -- --nocapture` prints the `lpuc sim --json` report of each case.
    println!(
        "{preset} {o:?}\n{}",
        serde_json::to_string_pretty(&r).unwrap()
    );
    r
}

fn opts(chips: Option<u64>, batch: u64, weights: WeightMode, context: u64) -> CompileOptions {
    CompileOptions {
        chips,
        tp: None,
        batch,
        context,
        weights,
        prompt: 128,
    }
}

/// README: "LLaMA-70B at 3,100 tok/s" — the context-2048 row.
#[test]
fn llama3_70b_int4_on_576_chips_at_batch_16() {
    let r = predict("llama3-70b", opts(Some(576), 16, WeightMode::Int4, 2048));
    assert_eq!((r.chips, r.tensor_parallel, r.stages), (328, 8, 41));
    assert_eq!(r.tokens_per_s_aggregate.round(), 2298.0);
    assert_eq!(r.sram_bytes_per_chip_max, 174_197_760);
}

/// One user on LLaMA-3-8B with int8 weights: the per-user rate of the sweep's 8B rows.
#[test]
fn llama3_8b_int8_on_72_chips_at_batch_1() {
    let r = predict("llama3-8b", opts(Some(72), 1, WeightMode::Int8, 2048));
    assert_eq!((r.chips, r.tensor_parallel, r.stages), (56, 8, 7));
    assert_eq!(r.tokens_per_s_per_user.round(), 3346.0);
    assert_eq!(r.sram_bytes_per_chip_max, 165_722_240);
}

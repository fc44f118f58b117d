//! The phase "lowerable for target T": each refusal names the op, the value and the pass
//! that should have removed it, for both backends, and the backends refuse on their own
//! when handed a graph outside it (they never re-recognize the primitive graph).

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::WeightSource;
use lpuc_ir::Graph;
use lpuc_passes::{lowerable, PassManager, TargetKind};

fn tiny() -> Graph {
    let cfg = LlamaConfig::preset("tiny").unwrap();
    build_llama(&cfg, WeightSource::Random { seed: 3 }).unwrap()
}

fn after(pipeline: &str, t: TargetKind) -> Graph {
    let mut g = tiny();
    PassManager::parse(pipeline, t)
        .unwrap()
        .run(&mut g, &mut std::io::sink())
        .unwrap();
    g
}

fn refusal(pipeline: &str, t: TargetKind) -> String {
    lowerable::check(&after(pipeline, t), t)
        .expect_err("must be refused")
        .to_string()
}

/// Every default pipeline's output is lowerable for its target.
#[test]
fn default_pipelines_produce_the_phase() {
    for t in [TargetKind::Cpu, TargetKind::Groq] {
        let mut g = tiny();
        PassManager::default_for(t)
            .run(&mut g, &mut std::io::sink())
            .unwrap();
        lowerable::check(&g, t).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
}

#[test]
fn each_missing_fusion_is_named() {
    for t in [TargetKind::Cpu, TargetKind::Groq] {
        // Nothing fused: the first refusal (the causal mask, first in printed order) and
        // every other pass the refusals name.
        let e = refusal("canonicalize,dce,tile,plan-buffers", t);
        assert!(
            e.starts_with("tensor.causal_mask at %") && e.contains("(pass flash-attention)"),
            "{t}: {e}"
        );
        for p in ["fuse-int4-dequant", "fold-rms-norm-scale", "fuse-swiglu"] {
            assert!(
                e.contains(&format!("pass {p}")),
                "{t}: {p} not named in {e}"
            );
        }
        let e = refusal(
            "fold-rms-norm-scale,fuse-swiglu,flash-attention,dce,tile,plan-buffers",
            t,
        );
        assert!(
            e.starts_with("tensor.dequant at %") || e.starts_with("tensor.matmul at %"),
            "{t}: {e}"
        );
        assert!(e.contains("(pass fuse-int4-dequant"), "{t}: {e}");
        assert!(!e.contains("flash-attention"), "{t}: {e}");
        let e = refusal("fuse-int4-dequant,flash-attention,dce,tile,plan-buffers", t);
        assert!(
            e.starts_with("tensor.rms_norm at %") && e.contains("(pass fold-rms-norm-scale)"),
            "{t}: {e}"
        );
        let e = refusal(
            "fuse-int4-dequant,fold-rms-norm-scale,fuse-swiglu,dce,tile,plan-buffers",
            t,
        );
        assert!(
            e.contains("attention only as flash_attention") && e.contains("(pass flash-attention)"),
            "{t}: {e}"
        );
        let e = refusal(
            "fuse-int4-dequant,fold-rms-norm-scale,flash-attention,dce,tile,plan-buffers",
            t,
        );
        assert!(
            e.starts_with("tensor.silu at %") && e.contains("(pass fuse-swiglu)"),
            "{t}: {e}"
        );
    }
}

/// The example: a softmax names flash-attention.
#[test]
fn softmax_names_flash_attention() {
    let g = after(
        "fuse-int4-dequant,fold-rms-norm-scale,fuse-swiglu,dce",
        TargetKind::Cpu,
    );
    let num = g.numbering();
    let sm = g
        .sorted_values()
        .into_iter()
        .find(|v| g.op(*v).name() == "tensor.softmax")
        .unwrap();
    let msg = format!(
        "tensor.softmax at %{}: the cpu backend takes attention only as flash_attention, not tensor.softmax (pass flash-attention)",
        num[&sm]
    );
    let all: Vec<String> = lowerable::refusals(&g, TargetKind::Cpu)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(all.contains(&msg), "{msg} not among {all:#?}");
}

#[test]
fn cpu_needs_tiles_and_a_plan() {
    let e = refusal(
        "canonicalize,fuse-int4-dequant,fold-rms-norm-scale,fuse-swiglu,flash-attention,cse,dce,plan-buffers",
        TargetKind::Cpu,
    );
    assert!(e.contains("needs the `tiled` phase (pass tile)"), "{e}");
    let e = refusal(
        "canonicalize,fuse-int4-dequant,fold-rms-norm-scale,fuse-swiglu,flash-attention,cse,dce,tile",
        TargetKind::Cpu,
    );
    assert!(
        e.contains("needs the `memory-planned` phase (pass plan-buffers)"),
        "{e}"
    );
}

/// Handed the primitive graph directly, the JIT refuses it (it has no matcher to fall
/// back on), naming the op and the pass.
#[test]
fn the_jit_refuses_the_primitive_graph() {
    let g = tiny();
    let w = lpuc_ir::weights::random_weights(&g, 3).unwrap();
    let e = lpuc_runtime::jit::JitForward::new(&g, &w, 1)
        .err()
        .expect("refused");
    assert!(e.contains(" at %"), "{e}");
    assert!(e.contains("pass fuse-int4-dequant"), "{e}");
}

/// A float-weight matmul has no CPU kernel yet: refused with the dtype named (the Groq
/// target takes it).
#[test]
fn float_weight_matmul_is_refused_on_cpu_only() {
    let mut cfg = LlamaConfig::preset("tiny").unwrap();
    cfg.weight_dtype = lpuc_ir::DType::F32;
    let mut g = build_llama(&cfg, WeightSource::None).unwrap();
    PassManager::default_for(TargetKind::Cpu)
        .run(&mut g, &mut std::io::sink())
        .unwrap();
    let e = lowerable::check(&g, TargetKind::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no kernel for a matmul with a f32 weight"),
        "{e}"
    );
}

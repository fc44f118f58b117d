//! Lowering takes only the Groq pass pipeline's output (`qmatmul`, `rms_norm` with a
//! scale, `swiglu`, `flash_attention`, `tile.*` and `mem.*` annotations). A primitive
//! graph — or one a pipeline left half-fused — is refused at entry by the phase
//! "lowerable for groq", with a message naming the op, the value and the missing pass;
//! each refusal has a test here. Ops of the phase used in a way the LPU mapping does not
//! cover are rejected naming the value.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::{Graph, WeightSource};
use lpuc_ir::op::Op;
use lpuc_ir::types::{Dim, TensorType};
use lpuc_ir::DType;
use lpuc_passes::{PassManager, TargetKind};
use lpuc_targets::groq::lower::{lower, LowerError};
use lpuc_targets::groq::mops::MOp;
use lpuc_targets::groq::program::{CompileOptions, WeightMode};
use lpuc_targets::groq::{compile, functional, pipeline_output, MachineModel};

fn tiny() -> Graph {
    let c = LlamaConfig::preset("tiny").unwrap();
    build_llama(&c, WeightSource::Random { seed: 3 }).unwrap()
}

/// `tiny` after the pipeline `passes` (a text `--passes=` accepts).
fn after(passes: &str) -> Graph {
    let mut g = tiny();
    PassManager::parse(passes, TargetKind::Groq)
        .unwrap()
        .run(&mut g, &mut std::io::sink())
        .unwrap();
    g
}

fn err_of(g: &Graph) -> String {
    lower(g).unwrap_err().to_string()
}

/// The printed text parsed back creates every node in printed order — not the order
/// the passes created them in — and lowers to the same model: the macro-op order is
/// structural.
#[test]
fn lowering_does_not_depend_on_node_creation_order() {
    let g = pipeline_output(tiny()).unwrap();
    let text = lpuc_ir::text::print(&g);
    let h = lpuc_ir::text::parse(&text, "tiny.ir").unwrap();
    let (a, b) = (lower(&g).unwrap(), lower(&h).unwrap());
    assert_eq!(a, b);
    assert_eq!(a.blocks[1].signature(&a), a.blocks[2].signature(&a));
}

#[test]
fn the_primitive_graph_is_refused_naming_the_first_unfused_op() {
    let e = lower(&tiny()).unwrap_err();
    assert!(matches!(e, LowerError::NotLowerable(_)), "{e:?}");
    assert_eq!(e.to_string(), "tensor.causal_mask at %3: the groq backend takes attention only as flash_attention, not tensor.causal_mask (pass flash-attention); 58 more ops are refused, naming also pass fold-rms-norm-scale, pass fuse-int4-dequant, pass fuse-swiglu");
}

#[test]
fn each_missing_fusion_is_refused_naming_its_pass() {
    // Every pipeline here is the Groq pipeline minus one fusion.
    let cases = [
        (
            "canonicalize,fold-rms-norm-scale,fuse-swiglu,flash-attention,cse,dce",
            "tensor.dequant at %7: the groq backend never expands weights to f32 (pass fuse-int4-dequant, then dce); 29 more ops are refused",
        ),
        (
            "canonicalize,fuse-int4-dequant,fuse-swiglu,flash-attention,cse,dce",
            "tensor.rms_norm at %4: the groq backend takes rms_norm with its scale folded in, not followed by tensor.mul (pass fold-rms-norm-scale); 9 more ops are refused",
        ),
        (
            "canonicalize,fuse-int4-dequant,fold-rms-norm-scale,flash-attention,cse,dce",
            "tensor.silu at %37: the groq backend takes silu only inside swiglu (pass fuse-swiglu); 3 more ops are refused",
        ),
        (
            "canonicalize,fuse-int4-dequant,fold-rms-norm-scale,fuse-swiglu,cse,dce",
            "tensor.causal_mask at %3: the groq backend takes attention only as flash_attention, not tensor.causal_mask (pass flash-attention); 14 more ops are refused",
        ),
    ];
    let got: Vec<String> = cases.iter().map(|(p, _)| err_of(&after(p))).collect();
    let want: Vec<&str> = cases.iter().map(|(_, m)| *m).collect();
    assert_eq!(got, want);
}

/// tokens → embedding(table) → `op(e, …)` → output "logits": one op outside the phase
/// (every operand the embedding).
fn one_op(op: Op, out: TensorType) -> Graph {
    let mut g = Graph::new("t");
    let ty = TensorType::new(DType::F32, vec![Dim::B, Dim::S, Dim::c(8)]);
    let x = g.add(
        Op::Input {
            name: "tokens".into(),
        },
        &[],
        TensorType::new(DType::I32, vec![Dim::B, Dim::S]),
    );
    let t = g.add(
        Op::Weight {
            name: "token_embd.weight".into(),
        },
        &[],
        TensorType::new(DType::F32, vec![Dim::c(16), Dim::c(8)]),
    );
    let e = g.add(Op::Embedding, &[t, x], ty);
    let operands = vec![e; if op == Op::Mul { 2 } else { 1 }];
    let s = g.add(op, &operands, out.clone());
    g.add(
        Op::Output {
            name: "logits".into(),
        },
        &[s],
        out,
    );
    g
}

#[test]
fn ops_outside_the_phase_are_refused_with_the_value() {
    let ty = TensorType::new(DType::F32, vec![Dim::B, Dim::S, Dim::c(8)]);
    // A softmax outside attention.
    assert_eq!(err_of(&one_op(Op::Softmax, ty.clone())), "tensor.softmax at %3: the groq backend takes attention only as flash_attention, not tensor.softmax (pass flash-attention)");
    // A transpose that is not a head view.
    let tt = TensorType::new(DType::F32, vec![Dim::B, Dim::c(8), Dim::S]);
    assert_eq!(
        [
            err_of(&one_op(Op::Silu, ty.clone())),
            err_of(&one_op(Op::Mul, ty.clone())),
            err_of(&one_op(Op::Scale { factor: 2.0 }, ty.clone())),
            err_of(&one_op(Op::Transpose { perm: vec![0, 2, 1] }, tt)),
        ],
        ["tensor.silu at %3: the groq backend takes silu only inside swiglu (pass fuse-swiglu)", "tensor.mul at %3: the groq backend takes tensor.mul only as swiglu or as an rms_norm scale (passes fuse-swiglu, fold-rms-norm-scale)", "tensor.scale at %3: the groq backend takes attention only as flash_attention, not tensor.scale (pass flash-attention)", "tensor.transpose at %3: the groq backend takes attention only as flash_attention, not a transpose [0, 2, 1] of its parts (pass flash-attention)"]
    );
    // An input other than the tokens.
    let mut g = Graph::new("t");
    g.add(
        Op::Input {
            name: "pixels".into(),
        },
        &[],
        ty,
    );
    assert_eq!(
        err_of(&g),
        "input at %0: the groq backend binds only the input \"tokens\", not \"pixels\""
    );
}

/// Ops of the phase the LPU mapping does not cover are rejected by the lowering itself.
#[test]
fn unmappable_uses_of_phase_ops_name_the_value() {
    // A reshape that is not a head split or merge.
    let tt = TensorType::new(
        DType::F32,
        vec![Dim::B, Dim::S, Dim::c(2), Dim::c(2), Dim::c(2)],
    );
    let e = lower(&one_op(Op::Reshape, tt)).unwrap_err();
    assert!(matches!(e, LowerError::Op { value: 3, .. }), "{e:?}");
    assert_eq!(e.to_string(), "%3 = tensor.reshape: reshape to f32[B, S, 2, 2, 2] is not a head split/merge of rows with 8 columns");
}

#[test]
fn layers_share_one_signature_and_name_their_weights() {
    let c = LlamaConfig::preset("llama3-70b").unwrap();
    let g = pipeline_output(build_llama(&c, WeightSource::None).unwrap()).unwrap();
    let m = lower(&g).unwrap();
    assert_eq!(m.layer_count(), 80);
    let sig = m.blocks[1].signature(&m);
    assert!(m.blocks[1..81].iter().all(|b| b.signature(&m) == sig));
    let lin = m.blocks[1]
        .ops
        .iter()
        .filter(|o| matches!(o, MOp::Linear { .. }))
        .count();
    assert_eq!(lin, 7, "q, k, v, o, gate, up, down");
}

/// The pass pipeline's own `--target groq` output (qmatmul, rms_norm with a scale,
/// swiglu, flash_attention, `tile.*` and `mem.*` annotations) compiles, and its
/// schedule computes the graph's meaning: in the exact mode bit for bit (the graph's
/// qmatmul rounds activations to 8-bit blocks, which the exact mode reproduces), and
/// within the quantization tolerance with the LPU's numerics.
#[test]
fn the_groq_pass_pipeline_output_compiles_and_matches() {
    let g = pipeline_output(tiny()).unwrap();
    let names: Vec<&str> = g.values().iter().map(|v| g.op(*v).name()).collect();
    assert!(names.contains(&"tensor.flash_attention") && names.contains(&"tensor.qmatmul"));
    let o = CompileOptions {
        chips: None,
        tp: Some(2),
        batch: 2,
        context: 128,
        weights: WeightMode::Auto,
        prompt: 8,
    };
    let p = compile::compile(&g, &MachineModel::v1(), &o).unwrap();
    let r = functional::compare(&p, 4).unwrap();
    assert_eq!(r.exact_max_abs_diff, 0.0, "{r:?}");
    assert!(r.max_rel_diff <= 0.05, "{}", r.max_rel_diff);
    assert!(r.top1_agreement >= 0.99);
}

/// A weight renamed into another layer breaks the block order; the error names the op, its
/// weights and the likely cause instead of two block kinds.
#[test]
fn a_weight_named_for_another_layer_is_explained() {
    let fused = pipeline_output(tiny()).unwrap();
    let text = lpuc_ir::text::print(&fused).replace("blk.0.attn_q.weight", "blk.5.attn_q.weight");
    let g = lpuc_ir::text::parse_and_verify(&text, "renamed.ir").unwrap();
    let e = lower(&g).unwrap_err().to_string();
    assert!(e.contains("of layer 5") && e.contains("of layer 0"), "{e}");
    assert!(e.contains("renamed tensor"), "{e}");
}

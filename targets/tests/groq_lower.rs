//! Lowering accepts both graph forms: the primitives `build_llama` emits and the fused
//! ops the pass pipeline will produce (`qmatmul`, `rms_norm` with a scale, `swiglu`,
//! `flash_attention`, `tile.sizes` annotations) — and they lower to the same program.
//! Unsupported graphs are rejected with a message naming the value.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::{Graph, WeightSource};
use lpuc_ir::op::{Attr, Op};
use lpuc_ir::{DType, Value};
use lpuc_targets::groq::lower::{lower, MOp};
use lpuc_targets::groq::program::{CompileOptions, WeightMode};
use lpuc_targets::groq::{compile, functional, MachineModel};

fn tiny() -> Graph {
    let c = LlamaConfig::preset("tiny").unwrap();
    build_llama(&c, WeightSource::Random { seed: 3 }).unwrap()
}

fn only(g: &Graph, v: Value) -> Value {
    let u = g.users(v);
    assert_eq!(u.len(), 1);
    u[0]
}

/// Rewrites the primitive graph into the fused forms by hand (what the passes will do):
/// `matmul(x, dequant(w)) → qmatmul(x, w)`, `mul(rms_norm(x), w) → rms_norm(x, w)`,
/// `mul(silu(a), b) → swiglu(a, b)`, the attention chain → `flash_attention(q, k, v)`,
/// and a `tile.sizes` annotation on every fused matmul.
fn fuse(mut g: Graph) -> Graph {
    for v in g.values() {
        if !g.contains(v) {
            continue;
        }
        let ops = g.operands(v);
        match g.op(v).clone() {
            Op::Matmul => {
                if let Op::Dequant = g.op(ops[1]) {
                    let w = g.operand(ops[1], 0).unwrap();
                    let ty = g.ty(v).clone();
                    let q = g.add(Op::QMatmul, &[ops[0], w], ty);
                    g.node_mut(q)
                        .annot
                        .insert("tile.sizes".into(), Attr::Ints(vec![320, 320]));
                    g.replace_all_uses(v, q);
                }
            }
            Op::RmsNorm { eps } if ops.len() == 1 => {
                let m = only(&g, v);
                if let Op::Mul = g.op(m) {
                    let w = g.operands(m).into_iter().find(|x| *x != v).unwrap();
                    let ty = g.ty(m).clone();
                    let n = g.add(Op::RmsNorm { eps }, &[ops[0], w], ty);
                    g.replace_all_uses(m, n);
                }
            }
            Op::Silu => {
                let m = only(&g, v);
                let up = g.operands(m).into_iter().find(|x| *x != v).unwrap();
                let ty = g.ty(m).clone();
                let s = g.add(Op::SwiGlu, &[ops[0], up], ty);
                g.replace_all_uses(m, s);
            }
            Op::Softmax => {
                // softmax(add(scale(matmul(q, repeat(k))), mask)) · transpose(repeat(v))
                let add = ops[0];
                let scale = g.operand(add, 0).unwrap();
                let Op::Scale { factor } = g.op(scale).clone() else {
                    continue;
                };
                let qk = g.operand(scale, 0).unwrap();
                let (q, krep) = (g.operand(qk, 0).unwrap(), g.operand(qk, 1).unwrap());
                let k = g.operand(krep, 0).unwrap();
                let pv = only(&g, v);
                let vt = g.operand(pv, 1).unwrap();
                let vrep = g.operand(vt, 0).unwrap();
                let vv = g.operand(vrep, 0).unwrap();
                let ty = g.ty(pv).clone();
                let f = g.add(
                    Op::FlashAttention {
                        scale: factor,
                        block: 64,
                    },
                    &[q, k, vv],
                    ty,
                );
                g.replace_all_uses(pv, f);
            }
            _ => {}
        }
    }
    g.dead_code_elim();
    lpuc_ir::verify::verify(&g).unwrap();
    g
}

#[test]
fn fused_and_primitive_forms_lower_to_the_same_blocks() {
    let g = tiny();
    let f = fuse(g.clone());
    let names =
        |g: &Graph| -> Vec<&'static str> { g.values().iter().map(|v| g.op(*v).name()).collect() };
    for op in ["tensor.qmatmul", "tensor.swiglu", "tensor.flash_attention"] {
        assert!(names(&f).contains(&op), "fused graph has {op}");
    }
    assert!(!names(&f).contains(&"tensor.softmax"));
    let (a, b) = (lower(&g).unwrap(), lower(&f).unwrap());
    assert_eq!(a.blocks.len(), b.blocks.len());
    // The same macro-ops with the same weights; their order may differ (new nodes
    // break topological ties differently), which any valid order schedules alike.
    let ops = |m: &lpuc_targets::groq::lower::LoweredModel, i: usize| {
        let mut v: Vec<String> = m.blocks[i]
            .ops
            .iter()
            .map(|o| {
                let ws: Vec<String> = o
                    .weights()
                    .iter()
                    .map(|w| m.weights[*w as usize].name.clone())
                    .collect();
                format!("{} {ws:?} {}", o.name(), o.caches().len())
            })
            .collect();
        v.sort();
        v
    };
    for i in 0..a.blocks.len() {
        assert_eq!(a.blocks[i].kind, b.blocks[i].kind);
        assert_eq!(ops(&a, i), ops(&b, i), "{:?}", a.blocks[i].kind);
    }
}

#[test]
fn fused_form_runs_and_matches_the_interpreter() {
    let f = fuse(tiny());
    let o = CompileOptions {
        chips: None,
        tp: Some(2),
        batch: 1,
        context: 128,
        weights: WeightMode::Int4,
        prompt: 8,
    };
    let p = compile::compile(&f, &MachineModel::v1(), &o).unwrap();
    let r = functional::compare(&p, 4).unwrap();
    // On the fused form the interpreter's `qmatmul` rounds activations to 8-bit blocks
    // (llama.cpp's numerics), which the simulator's exact mode does not: both modes then sit
    // within activation-rounding noise of the interpreter, not at f32 ulps.
    assert!(r.exact_max_rel_diff <= 0.05, "{}", r.exact_max_rel_diff);
    assert!(r.max_rel_diff <= 0.05, "{}", r.max_rel_diff);
}

#[test]
fn layers_share_one_signature_and_name_their_weights() {
    let c = LlamaConfig::preset("llama3-70b").unwrap();
    let g = build_llama(&c, WeightSource::None).unwrap();
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

fn err_of(g: &Graph) -> String {
    lower(g).unwrap_err().to_string()
}

#[test]
fn unsupported_forms_are_rejected_with_the_value() {
    use lpuc_ir::types::{Dim, TensorType};
    // A softmax outside attention.
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
    let e = g.add(Op::Embedding, &[t, x], ty.clone());
    let s = g.add(Op::Softmax, &[e], ty.clone());
    g.add(
        Op::Output {
            name: "logits".into(),
        },
        &[s],
        ty.clone(),
    );
    assert_eq!(
        err_of(&g),
        "%3 = tensor.softmax: softmax is supported only inside attention (softmax(scale·q·kᵀ + mask)·v)"
    );
    // An input other than the tokens.
    let mut g = Graph::new("t");
    g.add(
        Op::Input {
            name: "pixels".into(),
        },
        &[],
        ty.clone(),
    );
    assert_eq!(
        err_of(&g),
        "%0 = input: input \"pixels\": the Groq target takes only \"tokens\""
    );
    // A transpose that is not a head view.
    let mut g = Graph::new("t");
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
    let e = g.add(Op::Embedding, &[t, x], ty.clone());
    let p = g.add(
        Op::Transpose {
            perm: vec![0, 2, 1],
        },
        &[e],
        TensorType::new(DType::F32, vec![Dim::B, Dim::c(8), Dim::S]),
    );
    g.add(
        Op::Output {
            name: "logits".into(),
        },
        &[p],
        ty,
    );
    assert_eq!(
        err_of(&g),
        "%3 = tensor.transpose: transpose [0, 2, 1] is supported only as the head-first view [0, 2, 1, 3] of split rows, or [0, 1, 3, 2] of a KV cache"
    );
}

/// The pass pipeline's own `--target groq` output (qmatmul, rms_norm with a scale,
/// swiglu, flash_attention, `tile.*` and `mem.*` annotations) compiles, and its
/// schedule computes the graph's meaning: in the exact mode bit for bit (the graph's
/// qmatmul rounds activations to 8-bit blocks, which the exact mode reproduces), and
/// within the quantization tolerance with the LPU's numerics.
#[test]
fn the_groq_pass_pipeline_output_compiles_and_matches() {
    let mut g = tiny();
    let pm = lpuc_passes::PassManager::default_for(lpuc_passes::TargetKind::Groq);
    pm.run(&mut g, &mut std::io::sink()).unwrap();
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

//! The reference interpreter: prefill ≡ decode, GQA attention against naive loops.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::{Graph, WeightSource};
use lpuc_ir::interp::{max_abs_diff, IntTensor, Interpreter};
use lpuc_ir::op::Op;
use lpuc_ir::weights::{random_weights, MemWeights};
use lpuc_ir::{DType, Dim, TensorType};

fn tiny(all_logits: bool) -> Graph {
    let mut cfg = LlamaConfig::preset("tiny").unwrap();
    cfg.all_logits = all_logits;
    build_llama(&cfg, WeightSource::Random { seed: 7 }).unwrap()
}

#[test]
fn prefill_equals_token_by_token_decode() {
    let g = tiny(true);
    let w = random_weights(&g, 7).unwrap();
    let tokens = [3u32, 141, 59, 26, 5, 35, 89, 200];
    let mut it = Interpreter::new(&g, &w).unwrap();
    let pre = it.run_tokens(&tokens).unwrap();
    assert_eq!(pre.shape, vec![1, tokens.len(), 256]);
    assert_eq!(it.past(), tokens.len() as u64);
    assert!(pre.data.iter().all(|x| x.is_finite()));
    it.reset();
    let mut worst = 0f32;
    for (i, t) in tokens.iter().enumerate() {
        let step = it.run_tokens(&[*t]).unwrap();
        assert_eq!(step.shape, vec![1, 1, 256]);
        let (d, _) = max_abs_diff(step.row(0), pre.row(i));
        worst = worst.max(d);
    }
    assert!(worst <= 1e-4, "prefill vs decode max |Δ logit| = {worst}");
    // Split prefill (4 + 4) agrees too.
    it.reset();
    let a = it.run_tokens(&tokens[..4]).unwrap();
    let b = it.run_tokens(&tokens[4..]).unwrap();
    for i in 0..4 {
        assert!(max_abs_diff(a.row(i), pre.row(i)).0 <= 1e-4);
        assert!(max_abs_diff(b.row(i), pre.row(4 + i)).0 <= 1e-4);
    }
}

#[test]
fn last_logits_graph_matches_all_logits_graph() {
    let (ga, gl) = (tiny(true), tiny(false));
    let w = random_weights(&ga, 7).unwrap();
    let tokens = [1u32, 2, 3, 4, 5];
    let all = Interpreter::new(&ga, &w)
        .unwrap()
        .run_tokens(&tokens)
        .unwrap();
    let last = Interpreter::new(&gl, &w)
        .unwrap()
        .run_tokens(&tokens)
        .unwrap();
    assert_eq!(last.shape, vec![1, 1, 256]);
    assert!(max_abs_diff(last.row(0), all.row(4)).0 <= 1e-5);
}

#[test]
fn errors_leave_the_cache_untouched() {
    let g = tiny(false);
    let w = random_weights(&g, 7).unwrap();
    let mut it = Interpreter::new(&g, &w).unwrap();
    let first = it.run_tokens(&[1, 2]).unwrap();
    let e = it.run_tokens(&[3, 999]).unwrap_err();
    assert!(
        e.to_string().contains("token id 999 out of range 0..256"),
        "{e}"
    );
    assert_eq!(it.past(), 2);
    let e = it.run_tokens(&vec![1; 200]).unwrap_err();
    assert!(
        e.to_string()
            .contains("context full: 2 cached + 200 new tokens exceed the capacity of 128"),
        "{e}"
    );
    // The state is as before the failures: continuing gives what a fresh run gives.
    let next = it.run_tokens(&[3]).unwrap();
    let mut fresh = Interpreter::new(&g, &w).unwrap();
    fresh.run_tokens(&[1, 2]).unwrap();
    assert_eq!(fresh.run_tokens(&[3]).unwrap(), next);
    assert!(first.data.iter().all(|x| x.is_finite()));
}

#[test]
fn missing_weight_is_a_clear_error() {
    let g = tiny(false);
    let w = MemWeights::default();
    let mut it = Interpreter::new(&g, &w).unwrap();
    let e = it.run_tokens(&[1]).unwrap_err().to_string();
    assert!(
        e.contains("weight \"token_embd.weight\" is not in the weight store"),
        "{e}"
    );
}

/// Deterministic pseudo-random data for hand-made tensors.
fn data(n: usize, salt: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(salt) >> 8) % 2001) as f32 / 1000.0
                - 1.0
        })
        .collect()
}

/// Naive causal GQA attention, written independently of the interpreter.
fn naive(q: &[f32], k: &[f32], v: &[f32], h: usize, kvh: usize, s: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; h * s * d];
    for hi in 0..h {
        let kv = hi / (h / kvh);
        for i in 0..s {
            let mut sc = vec![f32::NEG_INFINITY; s];
            for (j, scj) in sc.iter_mut().enumerate().take(i + 1) {
                let mut dot = 0f32;
                for e in 0..d {
                    dot += q[(hi * s + i) * d + e] * k[(kv * s + j) * d + e];
                }
                *scj = dot / (d as f32).sqrt();
            }
            let m = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = sc.iter().map(|x| (x - m).exp()).sum();
            for e in 0..d {
                out[(hi * s + i) * d + e] = (0..s)
                    .map(|j| (sc[j] - m).exp() / z * v[(kv * s + j) * d + e])
                    .sum();
            }
        }
    }
    out
}

/// q, k, v come from f32 "embedding" tables indexed by the token ids 0..S, so the graph has
/// the symbolic shapes of a real model while the data is hand-made.
#[test]
fn gqa_attention_matches_naive_loops() {
    let (h, kvh, s, d) = (6usize, 2usize, 5usize, 8usize);
    let c = |n: usize| Dim::c(n as u64);
    let mut g = Graph::new("attn");
    g.syms.set_bound(lpuc_ir::Sym::P, Some(16));
    g.states.push(lpuc_ir::graph::StateDecl {
        name: "k".into(),
        ty: TensorType::new(DType::F32, vec![Dim::B, c(kvh), Dim::P, c(d)]),
        loc: None,
    });
    g.states.push(lpuc_ir::graph::StateDecl {
        name: "v".into(),
        ty: TensorType::new(DType::F32, vec![Dim::B, c(kvh), Dim::P, c(d)]),
        loc: None,
    });
    let tokens = g.add(
        Op::Input {
            name: "tokens".into(),
        },
        &[],
        TensorType::new(DType::I32, vec![Dim::B, Dim::S]),
    );
    let heads = |g: &mut Graph, name: &str, n: usize| {
        let t = g.add(
            Op::Weight { name: name.into() },
            &[],
            TensorType::new(DType::F32, vec![c(s), c(n * d)]),
        );
        let x = g.add_inferred(Op::Embedding, &[t, tokens]).unwrap();
        let x = g.add(
            Op::Reshape,
            &[x],
            TensorType::new(DType::F32, vec![Dim::B, Dim::S, c(n), c(d)]),
        );
        g.add_inferred(
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[x],
        )
        .unwrap()
    };
    let q = heads(&mut g, "q", h);
    let k = heads(&mut g, "k", kvh);
    let v = heads(&mut g, "v", kvh);
    let kall = g
        .add_inferred(Op::KvAppend { cache: "k".into() }, &[k])
        .unwrap();
    let vall = g
        .add_inferred(Op::KvAppend { cache: "v".into() }, &[v])
        .unwrap();
    let kr = g
        .add_inferred(
            Op::RepeatKv {
                n_rep: (h / kvh) as u32,
            },
            &[kall],
        )
        .unwrap();
    let vr = g
        .add_inferred(
            Op::RepeatKv {
                n_rep: (h / kvh) as u32,
            },
            &[vall],
        )
        .unwrap();
    let sc = g.add_inferred(Op::Matmul, &[q, kr]).unwrap();
    let sc = g
        .add_inferred(
            Op::Scale {
                factor: 1.0 / (d as f32).sqrt(),
            },
            &[sc],
        )
        .unwrap();
    let mask = g.add_inferred(Op::CausalMask, &[]).unwrap();
    let sc = g.add_inferred(Op::Add, &[sc, mask]).unwrap();
    let p = g.add_inferred(Op::Softmax, &[sc]).unwrap();
    let vt = g
        .add_inferred(
            Op::Transpose {
                perm: vec![0, 1, 3, 2],
            },
            &[vr],
        )
        .unwrap();
    let o = g.add_inferred(Op::Matmul, &[p, vt]).unwrap();
    g.add_inferred(
        Op::Output {
            name: "primitive".into(),
        },
        &[o],
    )
    .unwrap();
    let f = g
        .add_inferred(
            Op::FlashAttention {
                scale: 1.0 / (d as f32).sqrt(),
                block: 2,
            },
            &[q, kall, vall],
        )
        .unwrap();
    g.add_inferred(
        Op::Output {
            name: "flash".into(),
        },
        &[f],
    )
    .unwrap();
    lpuc_ir::verify::verify(&g).unwrap();

    // Head-major data for the naive loops; the tables hold it token-major.
    let (qd, kd, vd) = (
        data(h * s * d, 1),
        data(kvh * s * d, 2),
        data(kvh * s * d, 3),
    );
    let table = |x: &[f32], n: usize| {
        let mut t = vec![0f32; x.len()];
        for hi in 0..n {
            for i in 0..s {
                for e in 0..d {
                    t[i * n * d + hi * d + e] = x[(hi * s + i) * d + e];
                }
            }
        }
        t
    };
    let mut w = MemWeights::default();
    w.insert_f32(
        "q",
        DType::F32,
        vec![s as u64, (h * d) as u64],
        &table(&qd, h),
    )
    .unwrap();
    w.insert_f32(
        "k",
        DType::F32,
        vec![s as u64, (kvh * d) as u64],
        &table(&kd, kvh),
    )
    .unwrap();
    w.insert_f32(
        "v",
        DType::F32,
        vec![s as u64, (kvh * d) as u64],
        &table(&vd, kvh),
    )
    .unwrap();
    let want = naive(&qd, &kd, &vd, h, kvh, s, d);
    let ids: Vec<i32> = (0..s as i32).collect();

    let mut it = Interpreter::new(&g, &w).unwrap();
    let out = it
        .run(&[(
            "tokens",
            IntTensor {
                shape: vec![1, s],
                data: ids.clone(),
            },
        )])
        .unwrap();
    for name in ["primitive", "flash"] {
        let (diff, at) = max_abs_diff(&out[name].data, &want);
        assert!(diff < 1e-5, "{name} vs naive: {diff} at {at}");
    }
    // Token by token through the cache gives the same rows.
    it.reset();
    for i in 0..s {
        let out = it
            .run(&[(
                "tokens",
                IntTensor {
                    shape: vec![1, 1],
                    data: vec![ids[i]],
                },
            )])
            .unwrap();
        for hi in 0..h {
            let got = &out["primitive"].data[hi * d..(hi + 1) * d];
            let exp = &want[(hi * s + i) * d..(hi * s + i + 1) * d];
            assert!(max_abs_diff(got, exp).0 < 1e-5, "decode step {i} head {hi}");
        }
    }
}

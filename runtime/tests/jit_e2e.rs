//! The JIT backend against the reference interpreter, end to end.
//!
//! Tolerance: the JIT quantizes activations to 8-bit blocks inside every matmul (as
//! llama.cpp does), the interpreter does not. `tiny`'s random tied head has logits of
//! scale ~15; rounding its 64-wide input alone to q8 moves a logit by ~0.03 (σ), and the
//! two layers add their share: measured max |Δ| is 1.2–2.4 % of max |logit|. The bound is
//! 4 % of max |logit|; a layout or indexing bug moves logits by O(100 %). Prefill and
//! token-by-token decode do the same arithmetic per row, so they must agree exactly.
//! The real-model test compares with llama.cpp's reference logits (max |Δ| ≤ 1.0, the
//! bound `shared/reference/README.md` justifies) and greedy tokens step by step.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::WeightSource;
use lpuc_ir::interp::{max_abs_diff, Interpreter};
use lpuc_ir::weights::random_weights;
use lpuc_runtime::jit::JitForward;

/// The JIT for `g` the one way there is: through the CPU pipeline (`lpuc-driver`).
fn jit<'w>(
    g: &lpuc_ir::Graph,
    w: &'w dyn lpuc_ir::weights::WeightStore,
    threads: usize,
) -> JitForward<'w> {
    lpuc_driver::jit_store(g.clone(), w, threads, &Default::default()).unwrap()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn tol(reference: &[f32]) -> f32 {
    0.04 * reference.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn tiny(all_logits: bool) -> (lpuc_ir::Graph, lpuc_ir::weights::MemWeights) {
    let mut cfg = LlamaConfig::preset("tiny").unwrap();
    cfg.all_logits = all_logits;
    let g = build_llama(&cfg, WeightSource::Random { seed: 7 }).unwrap();
    let w = random_weights(&g, 7).unwrap();
    (g, w)
}

#[test]
fn tiny_prefill_then_decode_matches_interpreter() {
    let (g, w) = tiny(false);
    for threads in [1, 2] {
        let mut it = Interpreter::new(&g, &w).unwrap();
        let mut jit = jit(&g, &w, threads);
        let prompt: Vec<u32> = vec![1, 17, 200, 3, 99, 45, 7, 128, 5];
        let a = it.run_tokens(&prompt).unwrap();
        let b = jit.forward(&prompt).unwrap();
        let (d, at) = max_abs_diff(&a.data, &b);
        assert!(
            d < tol(&a.data),
            "prefill logits differ by {d} at {at} (threads {threads})"
        );
        let mut next = argmax(&b) as u32;
        assert_eq!(argmax(&a.data), next as usize, "prefill argmax");
        for step in 0..12 {
            let a = it.run_tokens(&[next]).unwrap();
            let b = jit.forward(&[next]).unwrap();
            let (d, at) = max_abs_diff(&a.data, &b);
            assert!(
                d < tol(&a.data),
                "decode step {step}: logits differ by {d} at {at}"
            );
            assert_eq!(
                argmax(&a.data),
                argmax(&b),
                "decode step {step}: greedy token"
            );
            next = argmax(&b) as u32;
        }
        assert_eq!(jit.past(), prompt.len() + 12);
    }
}

#[test]
fn tiny_all_logits_graph_and_reset() {
    let (g, w) = tiny(true);
    let mut it = Interpreter::new(&g, &w).unwrap();
    let mut jit = jit(&g, &w, 2);
    let a = it.run_tokens(&[4, 5, 6]).unwrap();
    let b = jit.forward(&[4, 5, 6]).unwrap();
    let (d, _) = max_abs_diff(a.row(2), &b);
    assert!(d < tol(a.row(2)), "last row differs by {d}");
    jit.reset();
    assert_eq!(jit.past(), 0);
    let c = jit.forward(&[4, 5, 6]).unwrap();
    assert_eq!(b, c, "reset then the same prompt gives the same logits");
}

#[test]
fn errors_are_reported_not_panicked() {
    let (g, w) = tiny(false);
    let mut jit = jit(&g, &w, 1);
    let e = jit.forward(&[1000]).unwrap_err();
    assert!(e.contains("out of range"), "{e}");
    assert!(jit.forward(&[]).unwrap_err().contains("S = 0"));
    let long = vec![1u32; jit.capacity() + 1];
    assert!(jit.forward(&long).unwrap_err().contains("context full"));
    assert_eq!(jit.past(), 0, "a refused call leaves the state alone");
}

#[test]
fn prefill_equals_token_by_token_decode() {
    let (g, w) = tiny(false);
    let prompt = [1u32, 17, 200, 3, 99, 45, 7, 128, 5];
    let mut a = jit(&g, &w, 2);
    let la = a.forward(&prompt).unwrap();
    let mut b = jit(&g, &w, 2);
    let mut lb = vec![];
    for t in prompt {
        lb = b.forward(&[t]).unwrap();
    }
    assert_eq!(
        la, lb,
        "the GEMM tile path and attention over many rows equal the GEMV path"
    );
}

/// `matmul(x, dequant(w)) => qmatmul(x, w)`, as the `fuse-int4-dequant` pass does, so the
/// interpreter rounds activations to 8-bit blocks exactly like the JIT.
fn fuse_qmatmul(g: &mut lpuc_ir::Graph) {
    use lpuc_ir::op::Op;
    for v in g.values() {
        if !matches!(g.op(v), Op::Matmul) {
            continue;
        }
        let ops = g.operands(v);
        if !matches!(g.op(ops[1]), Op::Dequant) {
            continue;
        }
        let w = g.operands(ops[1])[0];
        let ty = g.ty(v).clone();
        let q = g.add(Op::QMatmul, &[ops[0], w], ty);
        g.replace_all_uses(v, q);
        g.remove(v);
        if g.num_uses(ops[1]) == 0 {
            g.remove(ops[1]);
        }
    }
}

#[test]
fn tiny_fused_graph_matches_interpreter_closely() {
    // With the interpreter rounding activations the same way, what remains is f32 vs f64
    // accumulation order and the polynomial exp: 1e-3 of the logit scale.
    let (mut g, w) = tiny(false);
    fuse_qmatmul(&mut g);
    lpuc_ir::verify::verify(&g).unwrap();
    let mut it = Interpreter::new(&g, &w).unwrap();
    let mut jit = jit(&g, &w, 2);
    let prompt = [9u32, 8, 7, 250, 1, 2];
    let a = it.run_tokens(&prompt).unwrap();
    let b = jit.forward(&prompt).unwrap();
    let (d, at) = max_abs_diff(&a.data, &b);
    assert!(
        d < tol(&a.data) / 40.0,
        "fused graph: logits differ by {d} at {at}"
    );
    let a = it.run_tokens(&[argmax(&b) as u32]).unwrap();
    let b = jit.forward(&[argmax(&b) as u32]).unwrap();
    let (d, at) = max_abs_diff(&a.data, &b);
    assert!(
        d < tol(&a.data) / 40.0,
        "fused graph decode: logits differ by {d} at {at}"
    );
}

/// The tiny model on every kernel tier this host can execute matches the interpreter (a
/// tier it cannot execute is reported as skipped).
#[test]
fn tiny_matches_interpreter_on_every_tier() {
    let (g, w) = tiny(false);
    let f = lpuc_host::Features::detect();
    let prompt: Vec<u32> = vec![3, 141, 59, 26, 5];
    let mut it = Interpreter::new(&g, &w).unwrap();
    let a = it.run_tokens(&prompt).unwrap();
    for tier in lpuc_host::Tier::ALL {
        if !tier.runs_on(&f) {
            eprintln!("skipped: tier {}: this host cannot execute it", tier.name());
            continue;
        }
        let host = lpuc_codegen::Host::at(tier);
        let mut jit =
            lpuc_driver::jit_store_on(g.clone(), &w, 2, host, &Default::default()).unwrap();
        assert_eq!(jit.tier, tier);
        let b = jit.forward(&prompt).unwrap();
        let (d, at) = max_abs_diff(&a.data, &b);
        assert!(
            d < tol(&a.data),
            "tier {}: logits differ by {d} at {at}",
            tier.name()
        );
        assert_eq!(argmax(&a.data), argmax(&b), "tier {}", tier.name());
    }
}

/// A prompt longer than the memory plan's `S` (`-ub`) prefills in chunks, and every row is
/// computed exactly as in one call (per-row quantization, causal attention over the same
/// keys), so the logits are bit-identical.
#[test]
fn chunked_prefill_equals_one_call() {
    let (g, w) = tiny(false);
    let prompt: Vec<u32> = vec![1, 17, 200, 3, 99, 45, 7, 128, 5, 66, 12];
    let whole = {
        let mut j = lpuc_driver::jit_store(g.clone(), &w, 2, &Default::default()).unwrap();
        j.forward(&prompt).unwrap()
    };
    for ub in [1u64, 4, 5] {
        let l = lpuc_driver::lower_cpu(g.clone(), ub, &Default::default(), &mut std::io::sink())
            .unwrap();
        let mut j = JitForward::new(&l.graph, &w, 2).unwrap();
        let chunked = j.forward(&prompt).unwrap();
        assert_eq!(chunked, whole, "-ub {ub}");
        assert_eq!(j.past(), prompt.len());
    }
}

//! The whole pass pipeline: snapshot and numerics on `tiny`, the "done" invariants on
//! SmolLM2-135M and Llama-3-70B shapes, the memory-plan goal, and every user-facing error
//! of the pass manager and `lpuc opt`.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::graph::WeightSource;
use lpuc_ir::interp::{max_abs_diff, Interpreter};
use lpuc_ir::op::Op;
use lpuc_ir::Graph;
use lpuc_passes::pass::{Pass, PassContext};
use lpuc_passes::passes::plan_buffers;
use lpuc_passes::phase::Phase;
use lpuc_passes::{PassManager, PipelineError, TargetKind};

fn preset(name: &str, weights: WeightSource) -> Graph {
    build_llama(&LlamaConfig::preset(name).expect("preset"), weights).expect("builds")
}

fn run(g: &mut Graph, pipeline: Option<&str>, target: TargetKind) -> lpuc_passes::manager::Report {
    let mut pm = match pipeline {
        Some(p) => PassManager::parse(p, target).expect("pipeline parses"),
        None => PassManager::default_for(target),
    };
    pm.instruments.verify_each = true;
    pm.run(g, &mut std::io::sink()).expect("pipeline runs")
}

fn count(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.values().into_iter().filter(|v| f(g.op(*v))).count()
}

/// The default CPU pipeline without the one rewrite that changes numerics by more than
/// rounding.
const WITHOUT_DEQUANT_FUSION: &str =
    "canonicalize,fold-rms-norm-scale,fuse-swiglu,flash-attention,cse,dce,tile{target=cpu},plan-buffers";

/// How far the logits of two graphs may differ.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tol {
    /// Only f32 re-association: fused ops accumulate in f64 inside and skip one f32
    /// rounding between ops. max |Δ| <= 2e-4 · max |logit|.
    F32,
    /// `qmatmul` against a block-quantized weight rounds its activations to q8_0 blocks
    /// (each element within 2⁻⁸ of its block's max, see `Op::QMatmul`), and the rounding
    /// compounds over the layers: ‖Δ‖₂ <= 8% ‖logits‖₂ (measured: 1.6% on tiny, 2.4% on
    /// SmolLM2 shapes with random weights, 4.9% on the real SmolLM2 Q4_1 model).
    Q8Activations,
}

/// Logits of a prefill then decode steps of two graphs on their weight stores; returns
/// (max |Δ|, ‖Δ‖₂ / ‖ref‖₂) over all calls, asserting the tolerance.
fn logits_delta_with(
    a: &Graph,
    wa: &dyn lpuc_ir::weights::WeightStore,
    b: &Graph,
    wb: &dyn lpuc_ir::weights::WeightStore,
    calls: &[&[u32]],
    tol: Tol,
) -> (f32, f64) {
    let mut ia = Interpreter::new(a, wa).expect("interp");
    let mut ib = Interpreter::new(b, wb).expect("interp");
    let (mut worst, mut worst_rel) = (0f32, 0f64);
    for toks in calls {
        let la = ia.run_tokens(toks).expect("runs before");
        let lb = ib.run_tokens(toks).expect("runs after");
        assert_eq!(la.shape, lb.shape);
        let scale = la.data.iter().fold(0f32, |m, x| m.max(x.abs()));
        let (d, i) = max_abs_diff(&la.data, &lb.data);
        let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
        let rel = norm(&mut la.data.iter().zip(&lb.data).map(|(x, y)| f64::from(x - y)))
            / norm(&mut la.data.iter().map(|x| f64::from(*x))).max(1e-30);
        match tol {
            Tol::F32 => assert!(
                d <= 2e-4 * scale,
                "logit {i} differs by {d} (max |logit| {scale})"
            ),
            Tol::Q8Activations => assert!(rel <= 0.08, "‖Δ‖/‖logits‖ = {rel} (max |Δ| {d} at {i})"),
        }
        worst = worst.max(d);
        worst_rel = worst_rel.max(rel);
    }
    (worst, worst_rel)
}

fn logits_delta(a: &Graph, b: &Graph, seed: u64, calls: &[&[u32]], tol: Tol) -> (f32, f64) {
    let wa = lpuc_ir::weights::random_weights(a, seed).expect("weights");
    let wb = lpuc_ir::weights::random_weights(b, seed).expect("weights");
    logits_delta_with(a, &wa, b, &wb, calls, tol)
}

/// The numeric check of a pipeline, in two parts: every pass but `fuse-int4-dequant` is
/// exact up to f32 re-association, and the whole pipeline (whose `qmatmul`s round their
/// activations to q8_0, which can flip a rounding step wherever an earlier pass changed an
/// ulp) agrees within activation-rounding noise.
fn check_pipeline_numerics(g0: &Graph, g: &Graph, seed: u64, calls: &[&[u32]], what: &str) {
    let mut rest = g0.clone();
    run(&mut rest, Some(WITHOUT_DEQUANT_FUSION), TargetKind::Cpu);
    let (dr, _) = logits_delta(g0, &rest, seed, calls, Tol::F32);
    let (d, rel) = logits_delta(g0, g, seed, calls, Tol::Q8Activations);
    eprintln!(
        "{what}: without fuse-int4-dequant max |Δ logits| = {dr:e}; whole pipeline (q8 activations) max |Δ| {d:e}, ‖Δ‖/‖logits‖ {rel:.2e}"
    );
}

#[test]
fn default_cpu_pipeline_on_tiny_snapshot() {
    let mut g = preset("tiny", WeightSource::Random { seed: 1 });
    run(&mut g, None, TargetKind::Cpu);
    insta::assert_snapshot!("tiny_default_cpu_pipeline", lpuc_ir::text::print(&g));
}

#[test]
fn default_pipelines_keep_tiny_logits_prefill_and_decode() {
    let g0 = preset("tiny", WeightSource::Random { seed: 1 });
    for target in [TargetKind::Cpu, TargetKind::Groq] {
        let mut g = g0.clone();
        run(&mut g, None, target);
        check_pipeline_numerics(
            &g0,
            &g,
            1,
            &[&[1, 2, 3, 4, 5, 6, 7], &[8], &[9]],
            &format!("tiny, {target} default pipeline"),
        );
    }
    // all positions' logits, so every row of the prefill is compared
    let mut cfg = LlamaConfig::preset("tiny").expect("preset");
    cfg.all_logits = true;
    let g0 = build_llama(&cfg, WeightSource::Random { seed: 5 }).expect("builds");
    let mut g = g0.clone();
    run(&mut g, None, TargetKind::Cpu);
    check_pipeline_numerics(
        &g0,
        &g,
        5,
        &[&[3, 1, 4, 1, 5, 9, 2, 6], &[5]],
        "tiny (all logits), cpu default pipeline",
    );
}

/// The "done" invariants after a target's default pipeline.
fn assert_done(g: &Graph, layers: usize, report: &lpuc_passes::manager::Report) {
    for v in g.values() {
        if let Op::Matmul | Op::QMatmul | Op::Embedding = g.op(v) {
            for o in g.operands(v) {
                assert!(
                    !matches!(g.op(o), Op::Dequant),
                    "a dequant feeds {}",
                    g.op(v).name()
                );
            }
        }
    }
    assert_eq!(
        count(g, |o| matches!(o, Op::Dequant)),
        0,
        "no dequant is left at all"
    );
    assert_eq!(count(g, |o| matches!(o, Op::FlashAttention { .. })), layers);
    assert_eq!(
        count(g, |o| matches!(
            o,
            Op::Softmax | Op::CausalMask | Op::RepeatKv { .. }
        )),
        0
    );
    assert_eq!(
        count(g, |o| matches!(o, Op::Matmul)),
        0,
        "every matmul reads a packed weight"
    );
    Phase::Tiled
        .check(g)
        .expect("every matmul, qmatmul and attention is tiled");
    Phase::Planned
        .check(g)
        .expect("every buffer has an offset and none overlap");
    let hits: Vec<_> = report
        .stats
        .entries
        .iter()
        .filter(|e| e.1 == "egg limit hits")
        .collect();
    assert!(
        hits.is_empty(),
        "an egg limit was hit: {hits:?} {:?}",
        report.notes
    );
}

#[test]
fn smollm2_default_pipelines_reach_the_done_state() {
    let g0 = preset("smollm2-135m", WeightSource::None);
    for target in [TargetKind::Cpu, TargetKind::Groq] {
        let mut g = g0.clone();
        let r = run(&mut g, None, target);
        assert_done(&g, 30, &r);
        // one egg run per distinct island shape, not per layer
        let runs = r
            .stats
            .get("fuse-int4-dequant", "egg runs (distinct islands)")
            .expect("stat");
        assert!(runs <= 4, "{runs} egg runs for 30 layers");
    }
}

#[test]
fn llama3_70b_default_pipeline_reaches_the_done_state() {
    let mut g = preset("llama3-70b", WeightSource::None);
    let r = run(&mut g, None, TargetKind::Cpu);
    assert_done(&g, 80, &r);
}

#[test]
fn smollm2_memory_plan_is_within_5_percent_of_the_max_live_bound() {
    let mut g = preset("smollm2-135m", WeightSource::None);
    run(&mut g, Some("canonicalize,fuse-int4-dequant,fold-rms-norm-scale,fuse-swiglu,flash-attention,cse,dce"), TargetKind::Cpu);
    for s in [1, 512] {
        let bind = plan_buffers::binding(&g, None, None, Some(s)).expect("binding");
        let p = plan_buffers::plan(&g, bind).expect("plans");
        let ratio = p.peak as f64 / p.lower_bound as f64;
        eprintln!(
            "smollm2-135m S={s}: peak {} B, max-live bound {} B ({ratio:.4}×), naive {} B, order {}",
            p.peak, p.lower_bound, p.naive, p.order_name
        );
        assert!(
            ratio <= 1.05,
            "S={s}: peak {} is {ratio:.3}× the bound {}",
            p.peak,
            p.lower_bound
        );
        assert!(p.peak < p.naive);
    }
}

// ---------------------------------------------------------------------------------------
// User-facing errors of the pass manager.

fn parse_err(text: &str) -> String {
    match PassManager::parse(text, TargetKind::Cpu) {
        Ok(_) => panic!("`{text}` parsed"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn pipeline_errors_name_the_problem() {
    assert_eq!(
        parse_err("canonicalize,fuse-int4-dequnt"),
        "unknown pass `fuse-int4-dequnt`; did you mean `fuse-int4-dequant`? (`lpuc passes --list` shows them all)"
    );
    assert_eq!(
        parse_err("tile{targt=cpu}"),
        "pass `tile` has no option `targt`; did you mean `target`? (options: target, l1, l2, lanes)"
    );
    assert_eq!(
        parse_err("dce{x=1}"),
        "pass `dce` has no option `x` (it takes none)"
    );
    assert_eq!(
        parse_err("tile{target=gpu}"),
        "option `target` of `tile`: unknown target `gpu` (targets: cpu, groq); did you mean `cpu`?"
    );
    assert_eq!(
        parse_err("plan-buffers{s=many}"),
        "option `s` of `plan-buffers` must be a non-negative integer, found `many`"
    );
    assert_eq!(
        parse_err("flash-attention{block=0}"),
        "option `block` of `flash-attention` must be in 1..=4294967295, found 0"
    );
    assert_eq!(
        parse_err("tile{l1=10}"),
        "`tile` needs l1 >= 1024, l2 >= l1 and lanes >= 1 (got l1=10, l2=2097152, lanes=16)"
    );
    assert_eq!(
        parse_err("dce dce"),
        "bad pipeline: expected `,` between passes at column 5, found `d`"
    );
    let mut pm = PassManager::parse("dce", TargetKind::Cpu).expect("parses");
    assert_eq!(
        pm.set_print_ir_after(vec!["tiel".into()]).unwrap_err().to_string(),
        "--print-ir-after: unknown pass `tiel`; did you mean `tile`? (`lpuc passes --list` shows them all)"
    );
}

/// A pass that breaks the graph on purpose: declares a wrong type on the first matmul.
struct Corrupt;
impl Pass for Corrupt {
    fn name(&self) -> &'static str {
        "corrupt"
    }
    fn run(&self, g: &mut Graph, _: &mut PassContext) -> Result<bool, String> {
        let v = g
            .sorted_values()
            .into_iter()
            .find(|v| matches!(g.op(*v), Op::QMatmul))
            .expect("a qmatmul");
        g.node_mut(v).ty.shape.pop();
        Ok(true)
    }
}

/// A pass that adds an untiled matmul after tiling (a phase violation, not a type error).
struct AddUntiled;
impl Pass for AddUntiled {
    fn name(&self) -> &'static str {
        "add-untiled"
    }
    fn run(&self, g: &mut Graph, _: &mut PassContext) -> Result<bool, String> {
        let v = g
            .sorted_values()
            .into_iter()
            .find(|v| matches!(g.op(*v), Op::QMatmul))
            .expect("a qmatmul");
        let node = g.node(v).clone();
        let ops = g.operands(v);
        let mut n2 = lpuc_ir::graph::Node::new(Op::QMatmul, node.ty);
        n2.annot.clear();
        let w = g.add_node(n2, &ops);
        g.replace_all_uses(v, w);
        Ok(true)
    }
}

#[test]
fn verify_each_names_the_pass_that_broke_the_graph() {
    let mut g = preset("tiny", WeightSource::None);
    let mut pm =
        PassManager::parse("canonicalize,fuse-int4-dequant", TargetKind::Cpu).expect("parses");
    pm.push(Box::new(Corrupt));
    pm.instruments.verify_each = true;
    let e = pm
        .run(&mut g, &mut std::io::sink())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("broken graph after pass #3 corrupt at %"),
        "{e}"
    );
    assert!(
        e.ends_with(": tensor.qmatmul: declared type f32[B, S] but the operands give f32[B, S, 32] (and 1 more)"),
        "{e}"
    );

    let mut g = preset("tiny", WeightSource::None);
    let mut pm = PassManager::parse("fuse-int4-dequant,tile", TargetKind::Cpu).expect("parses");
    pm.push(Box::new(AddUntiled));
    pm.instruments.verify_each = true;
    let e = pm.run(&mut g, &mut std::io::sink()).unwrap_err();
    let PipelineError::Broken {
        index, name, msg, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((*index, name.as_str()), (3, "add-untiled"));
    assert_eq!(
        msg,
        "tensor.qmatmul is not tiled (no `tile.sizes`) (phase `tiled` holds since pass #2 tile)"
    );
}

#[test]
fn plan_buffers_errors_and_bisect() {
    let mut g = preset("tiny", WeightSource::None);
    g.syms.set_bound(lpuc_ir::Sym::S, None);
    let pm = PassManager::parse("plan-buffers", TargetKind::Cpu).expect("parses");
    assert_eq!(
        pm.run(&mut g.clone(), &mut std::io::sink()).unwrap_err().to_string(),
        "pass #1 plan-buffers failed: symbol S has no bound: give it one in the graph (`sym S <= N`) or plan for a size (`plan-buffers{s=N}`)"
    );
    let pm = PassManager::parse("plan-buffers{s=4096}", TargetKind::Cpu).expect("parses");
    let mut g2 = preset("tiny", WeightSource::None);
    assert_eq!(
        pm.run(&mut g2, &mut std::io::sink())
            .unwrap_err()
            .to_string(),
        "pass #1 plan-buffers failed: `s=4096` exceeds the bound of S (128)"
    );
    let mut pm =
        PassManager::parse("canonicalize,fuse-int4-dequant,dce", TargetKind::Cpu).expect("parses");
    pm.instruments.opt_bisect_limit = Some(1);
    let mut log = Vec::new();
    let r = pm.run(&mut g, &mut log).expect("runs");
    assert_eq!(
        String::from_utf8(log).expect("utf8"),
        "BISECT: running pass (1) canonicalize\nBISECT: NOT running pass (2) fuse-int4-dequant\nBISECT: NOT running pass (3) dce\n"
    );
    assert_eq!(r.passes[1].2, None);
}

#[test]
fn print_ir_after_change_prints_only_changing_passes() {
    let mut g = preset("tiny", WeightSource::None);
    let mut pm = PassManager::parse("canonicalize,fuse-swiglu", TargetKind::Cpu).expect("parses");
    pm.instruments.print_ir_after_change = true;
    let mut log = Vec::new();
    pm.run(&mut g, &mut log).expect("runs");
    let log = String::from_utf8(log).expect("utf8");
    assert!(
        !log.contains("After canonicalize"),
        "canonicalize changes nothing on the builder's graph"
    );
    assert!(log.starts_with("// -----// IR Dump After fuse-swiglu (#2) //----- //\ngraph \"tiny\""));

    let mut g = preset("tiny", WeightSource::None);
    let mut pm = PassManager::parse("canonicalize,dce,cse", TargetKind::Cpu).expect("parses");
    pm.set_print_ir_after(vec!["dce".into()])
        .expect("known pass");
    let mut log = Vec::new();
    pm.run(&mut g, &mut log).expect("runs");
    let log = String::from_utf8(log).expect("utf8");
    assert_eq!(log.matches("IR Dump After").count(), 1);
    assert!(log.starts_with("// -----// IR Dump After dce (#2) //----- //"));

    let mut pm = PassManager::parse("canonicalize,dce,cse", TargetKind::Cpu).expect("parses");
    pm.instruments.print_ir_after_all = true;
    let mut log = Vec::new();
    pm.run(&mut g, &mut log).expect("runs");
    assert_eq!(
        String::from_utf8(log)
            .expect("utf8")
            .matches("IR Dump After")
            .count(),
        3
    );
}

// ---------------------------------------------------------------------------------------
// The command line.

fn lpuc(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lpuc"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_passes_list_and_print_pipeline() {
    let (ok, out, _) = lpuc(&["passes", "--list"]);
    assert!(ok);
    for p in lpuc_passes::registry::PASSES {
        assert!(
            out.lines().any(|l| l.starts_with(p.name)),
            "{} missing from:\n{out}",
            p.name
        );
    }
    let (ok, out, _) = lpuc(&["opt", "--print-pipeline"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        "canonicalize,fuse-int4-dequant,fold-rms-norm-scale,fuse-swiglu,flash-attention,cse,dce,tile{target=cpu},plan-buffers"
    );
    let (_, groq, _) = lpuc(&["opt", "--target", "groq", "--print-pipeline"]);
    assert!(groq.contains("tile{target=groq}"));
}

#[test]
fn cli_opt_runs_and_reports_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inp = dir.path().join("tiny.ir");
    let outp = dir.path().join("tiny.opt.ir");
    let g = preset("tiny", WeightSource::Random { seed: 2 });
    std::fs::write(&inp, lpuc_ir::text::print(&g)).expect("write");
    let (i, o) = (inp.to_str().expect("utf8"), outp.to_str().expect("utf8"));
    let (ok, _, err) = lpuc(&["opt", i, "-o", o, "--time-passes", "--stats"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("Pass execution timing report") && err.contains("plan-buffers - peak bytes"),
        "{err}"
    );
    let text = std::fs::read_to_string(&outp).expect("output");
    assert!(text.contains("tensor.flash_attention") && text.contains("mem.offset"));

    let (ok, _, err) = lpuc(&["opt", i, "--target", "gpu"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: unknown target `gpu` (targets: cpu, groq); did you mean `cpu`?"
    );
    let (ok, _, err) = lpuc(&["opt", i, "--passes=canonicalize,dcee"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: unknown pass `dcee`; did you mean `dce`? (`lpuc passes --list` shows them all)"
    );
    let (ok, _, err) = lpuc(&["opt"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: no input file (usage: lpuc opt IN.ir [--passes=…] [-o OUT.ir])"
    );
    let (ok, _, err) = lpuc(&["opt", i, "--passes=dce", "--print-ir-after=dcx"]);
    assert!(!ok);
    assert_eq!(err.trim(), "error: --print-ir-after: unknown pass `dcx`; did you mean `dce`? (`lpuc passes --list` shows them all)");
}

/// SmolLM2-135M shapes with random weights through the default pipeline on the reference
/// interpreter (about 20 s in a debug build, a few in release).
#[test]
fn smollm2_random_weights_logits_match() {
    let g0 = preset("smollm2-135m", WeightSource::Random { seed: 3 });
    let mut g = g0.clone();
    run(&mut g, None, TargetKind::Cpu);
    check_pipeline_numerics(
        &g0,
        &g,
        3,
        &[&[1, 17, 230, 4000, 12], &[77]],
        "smollm2-135m random weights, cpu default pipeline",
    );
}

/// The real SmolLM2-135M-Instruct (Q4_1 GGUF) through the default CPU pipeline: the same
/// logits before and after on the reference interpreter (prefill, then decode steps).
/// Skipped, with a note, when the model file is not in the cache.
#[test]
fn smollm2_gguf_model_logits_match_after_the_default_pipeline() {
    let path = lpuc_runtime::fetch::default_model_path();
    if !path.exists() {
        eprintln!(
            "skipped: {} is not there (`lpuc fetch` downloads it)",
            path.display()
        );
        return;
    }
    let file = lpuc_ir::gguf::GgufFile::open(&path).expect("opens");
    let opts = lpuc_ir::import::ImportOptions {
        max_ctx: Some(256),
        all_logits: false,
        ..Default::default()
    };
    let (g0, _) = lpuc_ir::import::import_gguf(&file, &path, &opts).expect("imports");
    let mut g = g0.clone();
    let r = run(&mut g, None, TargetKind::Cpu);
    assert_done(&g, 30, &r);
    let store = lpuc_ir::import::GgufWeights::new(file);
    let calls: [&[u32]; 3] = [&[1, 9690, 28, 314, 253], &[2830], &[28]];
    let mut rest = g0.clone();
    run(&mut rest, Some(WITHOUT_DEQUANT_FUSION), TargetKind::Cpu);
    let (dr, _) = logits_delta_with(&g0, &store, &rest, &store, &calls, Tol::F32);
    let (d, rel) = logits_delta_with(&g0, &store, &g, &store, &calls, Tol::Q8Activations);
    // the model's next-token choice survives activation rounding
    let mut ia = Interpreter::new(&g0, &store).expect("interp");
    let mut ib = Interpreter::new(&g, &store).expect("interp");
    let argmax = |t: &lpuc_ir::interp::Tensor| {
        t.data
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    for toks in calls {
        let (la, lb) = (
            ia.run_tokens(toks).expect("before"),
            ib.run_tokens(toks).expect("after"),
        );
        assert_eq!(argmax(&la), argmax(&lb), "next token after {toks:?}");
    }
    eprintln!(
        "SmolLM2-135M-Instruct Q4_1 GGUF: without fuse-int4-dequant max |Δ logits| = {dr:e}; whole cpu pipeline (q8 activations) max |Δ| {d:e}, ‖Δ‖/‖logits‖ {rel:.2e}"
    );
}

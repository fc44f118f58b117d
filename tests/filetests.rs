//! Filetests: `tests/filetests/<pass>/*.ir`, one folder per pass.
//!
//! Header comments pick what runs and how it is checked:
//! - `// run: PIPELINE` (required): pipeline text, e.g. `fuse-int4-dequant` or
//!   `tile{target=groq}`;
//! - `// tokens: 1,2,3 | 4` (optional, this is the default): interpreter calls, a prefill
//!   of `1,2,3` then a decode step of `4`;
//! - `// snapshot: diff|full` (optional): a before→after unified diff (default for
//!   rewrites) or the full output (default for the lowering passes `tile`, `plan-buffers`).
//!
//! A `negative_` file must come out unchanged. Every file with `weights random(seed = N)`
//! is also run on the reference interpreter before and after, every output compared with a
//! dtype-aware tolerance that reports where and by how much it differs. The verifier runs
//! after every pass. Snapshots live in `tests/snapshots/` (`INSTA_UPDATE=always` or
//! `cargo insta review` to bless).

use lpuc_ir::graph::WeightSource;
use lpuc_ir::interp::{IntTensor, Interpreter};
use lpuc_ir::{DType, Graph};
use lpuc_passes::{PassManager, TargetKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Header {
    run: String,
    calls: Vec<Vec<u32>>,
    full: Option<bool>,
}

fn header(src: &str, path: &Path) -> Result<Header, String> {
    let mut run = None;
    let mut calls = vec![vec![1, 2, 3], vec![4]];
    let mut full = None;
    for line in src.lines() {
        let Some(c) = line.trim().strip_prefix("//") else {
            continue;
        };
        let c = c.trim();
        if let Some(r) = c.strip_prefix("run:") {
            run = Some(r.trim().to_string());
        } else if let Some(t) = c.strip_prefix("tokens:") {
            calls = t
                .split('|')
                .map(|call| {
                    call.split(',')
                        .map(|x| x.trim().parse::<u32>().map_err(|e| format!("tokens: {e}")))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<_, _>>()?;
        } else if let Some(s) = c.strip_prefix("snapshot:") {
            full = Some(s.trim() == "full");
        }
    }
    let run = run.ok_or_else(|| format!("{}: no `// run: PIPELINE` header", path.display()))?;
    Ok(Header { run, calls, full })
}

/// Tolerance, relative to the largest |output|, by what the rewrite does to element types:
/// - f32 only: fusions change the order and precision of f32 arithmetic (f64 accumulation
///   inside fused ops, one f32 rounding less between ops): 2e-4;
/// - f16/bf16 outputs: 1e-2;
/// - a rewrite that makes a `qmatmul` read a block-quantized weight: that op rounds its
///   activations to q8_0 blocks (each element within 2⁻⁸ of its block's max; see
///   `Op::QMatmul`), so outputs of these shallow graphs move by up to ~1%: 2e-2.
fn rel_tolerance(dt: DType, q8_activations: bool) -> f32 {
    match dt {
        _ if q8_activations => 2e-2,
        DType::F16 | DType::BF16 => 1e-2,
        _ => 2e-4,
    }
}

/// `qmatmul`s whose weight is block-quantized (their activations are rounded to q8_0).
fn q8_qmatmuls(g: &Graph) -> usize {
    g.values()
        .into_iter()
        .filter(|v| matches!(g.op(*v), lpuc_ir::Op::QMatmul))
        .filter(|v| {
            g.operand(*v, 1)
                .is_some_and(|w| g.ty(w).dtype.is_quantized())
        })
        .count()
}

/// Runs `g` on the interpreter for each call; every output, per call.
fn run_all(
    g: &Graph,
    calls: &[Vec<u32>],
) -> Result<Vec<BTreeMap<String, lpuc_ir::interp::Tensor>>, String> {
    let WeightSource::Random { seed } = g.weights else {
        return Ok(vec![]);
    };
    let store = lpuc_ir::weights::random_weights(g, seed)?;
    let mut it = Interpreter::new(g, &store).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for toks in calls {
        let input = IntTensor {
            shape: vec![1, toks.len()],
            data: toks.iter().map(|&t| t as i32).collect(),
        };
        let r = it.run(&[("tokens", input)]).map_err(|e| e.to_string())?;
        out.push(r.into_iter().collect());
    }
    Ok(out)
}

/// Compares before/after outputs; returns the largest |Δ| seen.
pub fn compare(
    before: &[BTreeMap<String, lpuc_ir::interp::Tensor>],
    after: &[BTreeMap<String, lpuc_ir::interp::Tensor>],
    dt: DType,
    q8: bool,
) -> Result<f32, String> {
    let mut worst = 0f32;
    for (call, (b, a)) in before.iter().zip(after).enumerate() {
        if b.keys().ne(a.keys()) {
            return Err(format!(
                "call {call}: outputs {:?} became {:?}",
                b.keys(),
                a.keys()
            ));
        }
        for (name, tb) in b {
            let ta = &a[name];
            if tb.shape != ta.shape {
                return Err(format!(
                    "call {call}: output {name} shape {:?} became {:?}",
                    tb.shape, ta.shape
                ));
            }
            let scale = tb.data.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
            let tol = rel_tolerance(dt, q8) * scale;
            let (d, i) = lpuc_ir::interp::max_abs_diff(&tb.data, &ta.data);
            worst = worst.max(d);
            if !(d <= tol) {
                return Err(format!(
                    "call {call}: output {name} differs at element {i}: before {} after {} (|Δ| = {d:e} > tolerance {tol:e} = {} × max|before| {scale:e})",
                    tb.data[i],
                    ta.data[i],
                    rel_tolerance(dt, q8)
                ));
            }
        }
    }
    Ok(worst)
}

fn diff(before: &str, after: &str) -> String {
    let d = similar::TextDiff::from_lines(before, after);
    let s = d
        .unified_diff()
        .context_radius(2)
        .header("before", "after")
        .to_string();
    if s.is_empty() {
        "(no change)\n".to_string()
    } else {
        s
    }
}

fn check(path: &Path) -> Result<(), String> {
    let src = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let h = header(&src, path)?;
    let file = path.display().to_string();
    let g0 = lpuc_ir::text::parse_and_verify(&src, &file).map_err(|es| {
        es.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let mut g = g0.clone();
    let mut pm = PassManager::parse(&h.run, TargetKind::Cpu).map_err(|e| e.to_string())?;
    pm.instruments.verify_each = true;
    pm.run(&mut g, &mut std::io::sink())
        .map_err(|e| e.to_string())?;
    let (before, after) = (lpuc_ir::text::print(&g0), lpuc_ir::text::print(&g));
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
    let dir = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str())
        .unwrap_or("?");
    if name.starts_with("negative_") && before != after {
        return Err(format!(
            "a negative test changed:\n{}",
            diff(&before, &after)
        ));
    }
    let lowering = matches!(dir, "tile" | "plan-buffers");
    let content = if h.full.unwrap_or(lowering) {
        format!("// run: {}\n{after}", h.run)
    } else {
        format!("// run: {}\n{}", h.run, diff(&before, &after))
    };
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_input_file(path);
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(format!("{dir}__{name}"), content));
    let b = run_all(&g0, &h.calls)?;
    let a = run_all(&g, &h.calls)?;
    compare(&b, &a, DType::F32, q8_qmatmuls(&g) > q8_qmatmuls(&g0)).map(|_| ())
}

fn files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let mut out = Vec::new();
    for d in std::fs::read_dir(&root)
        .expect("tests/filetests exists")
        .flatten()
    {
        if d.path().is_dir() {
            for f in std::fs::read_dir(d.path()).expect("readable").flatten() {
                if f.path().extension().is_some_and(|e| e == "ir") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn filetests() {
    let mut failures = Vec::new();
    let files = files();
    for f in &files {
        let r = std::panic::catch_unwind(|| check(f));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(m)) => failures.push(format!("{}: {m}", f.display())),
            Err(_) => failures.push(format!("{}: snapshot mismatch (see above)", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} filetests failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_registered_pass_has_filetests_including_a_negative_one() {
    let files = files();
    for p in lpuc_passes::registry::PASSES {
        let mine: Vec<&PathBuf> = files
            .iter()
            .filter(|f| {
                f.parent()
                    .and_then(|d| d.file_name())
                    .is_some_and(|d| d == p.name)
            })
            .collect();
        assert!(
            !mine.is_empty(),
            "pass {} has no filetests in tests/filetests/{}/",
            p.name,
            p.name
        );
        assert!(
            mine.iter().any(|f| f
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("negative_"))),
            "pass {} has no negative_ filetest",
            p.name
        );
    }
}

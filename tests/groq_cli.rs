//! `lpuc compile --target groq` and `lpuc sim` end to end: the artifact, the report and
//! its JSON keys, the functional run, the listing, the Perfetto trace, and every
//! command-line error.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

fn lpuc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lpuc"))
        .args(args)
        .output()
        .expect("run lpuc")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn p(&self, f: &str) -> String {
        self.0.path().join(f).display().to_string()
    }
}

fn tiny(d: &Dir, weights: bool) -> String {
    let ir = d.p(if weights { "tiny.ir" } else { "shapes.ir" });
    let mut args = vec!["build", "--preset", "tiny", "-o", &ir];
    if weights {
        args.extend(["--random-weights", "5"]);
    }
    let o = lpuc(&args);
    assert!(o.status.success(), "{}", err(&o));
    ir
}

#[test]
fn compile_then_sim_prints_the_report_and_json() {
    let d = Dir::new();
    let ir = tiny(&d, false);
    let lpu = d.p("tiny.lpu");
    let o = lpuc(&[
        "compile", &ir, "--target", "groq", "--batch", "2", "-o", &lpu,
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let o = lpuc(&["sim", &lpu]);
    assert!(o.status.success(), "{}", err(&o));
    let s = out(&o);
    assert!(s.contains("tok/s per user"), "{s}");
    assert!(
        s.contains("all checked (no conflicts, no late operands)"),
        "{s}"
    );
    let o = lpuc(&["sim", &lpu, "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    for k in [
        "chips",
        "batch",
        "tokens_per_s_per_user",
        "tokens_per_s_aggregate",
        "us_per_token",
        "lower_bound_us_per_token",
        "sram_bytes_per_chip_max",
        "utilization",
    ] {
        assert!(v.get(k).is_some(), "--json lacks `{k}`: {v}");
    }
    assert_eq!(v["batch"], 2);
    assert!(v["utilization"]["mxm_install"].as_f64().unwrap() > 0.0);
    let lb = v["lower_bound_us_per_token"].as_f64().unwrap();
    assert!(lb > 0.0 && lb <= v["us_per_token"].as_f64().unwrap());
}

#[test]
fn sim_functional_compares_with_the_interpreter() {
    let d = Dir::new();
    let ir = tiny(&d, true);
    let lpu = d.p("tiny.lpu");
    let o = lpuc(&["compile", &ir, "--target", "groq", "--tp", "2", "-o", &lpu]);
    assert!(o.status.success(), "{}", err(&o));
    let o = lpuc(&["sim", &lpu, "--functional", "--steps", "3", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let f = &v["functional"];
    assert_eq!(f["steps"], 3);
    assert!(f["exact_max_rel_diff"].as_f64().unwrap() < 1e-5, "{f}");
    assert!(f["max_rel_diff"].as_f64().unwrap() < 0.05, "{f}");
    let o = lpuc(&["sim", &lpu, "--functional", "--steps", "2"]);
    assert!(out(&o).contains("the dataflow is exact"), "{}", out(&o));
}

#[test]
fn emit_asm_lists_every_queue_in_issue_order() {
    let d = Dir::new();
    let ir = tiny(&d, false);
    let o = lpuc(&["compile", &ir, "--target", "groq", "--emit=asm"]);
    assert!(o.status.success(), "{}", err(&o));
    let s = out(&o);
    assert!(
        s.starts_with("; decode program 0: layer 0"),
        "{}",
        &s[..200.min(s.len())]
    );
    for q in ["MXM0.install:", "MXM0.compute:", "VXM q0:", "MEM W36:"] {
        assert!(s.contains(q), "listing lacks {q}");
    }
    // Within a queue, issue cycles never decrease.
    let mut last: Option<u64> = None;
    for line in s.lines() {
        if line.ends_with(':') || line.starts_with(';') || line.is_empty() {
            last = None;
            continue;
        }
        let c: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(last.is_none_or(|l| c >= l), "{line}");
        last = Some(c);
    }
}

/// The trace of one decode step of `tiny`: valid JSON with `traceEvents`, one named
/// track per functional unit, and no two events overlapping on a track.
#[test]
fn trace_is_valid_perfetto_json_with_one_track_per_unit() {
    let d = Dir::new();
    let ir = tiny(&d, false);
    let tr = d.p("tiny.json");
    let o = lpuc(&["compile", &ir, "--target", "groq", "--trace", &tr]);
    assert!(o.status.success(), "{}", err(&o));
    let text = std::fs::read_to_string(&tr).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).expect("the trace is JSON");
    let events = v["traceEvents"]
        .as_array()
        .expect("traceEvents is an array");
    let mut names: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut spans: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for e in events {
        let pid = e["pid"].as_u64().unwrap();
        let tid = e["tid"].as_u64().unwrap();
        match e["ph"].as_str().unwrap() {
            "M" if e["name"] == "thread_name" => {
                let n = e["args"]["name"].as_str().unwrap().to_string();
                assert!(
                    names.insert((pid, tid), n).is_none(),
                    "track {tid} named twice"
                );
            }
            "M" => {}
            "X" => {
                let ts = e["ts"].as_f64().unwrap();
                let dur = e["dur"].as_f64().unwrap();
                assert!(ts >= 0.0 && dur > 0.0, "{e}");
                assert!(e["name"].is_string());
                spans.entry((pid, tid)).or_default().push((ts, ts + dur));
            }
            other => panic!("unexpected phase {other}"),
        }
    }
    // One track per unit: every event's track is named, names are unique per process.
    for k in spans.keys() {
        assert!(names.contains_key(k), "track {k:?} has no name");
    }
    let mut per_pid: BTreeMap<u64, BTreeSet<&String>> = BTreeMap::new();
    for ((pid, _), n) in &names {
        assert!(
            per_pid.entry(*pid).or_default().insert(n),
            "two tracks named {n}"
        );
    }
    let all: BTreeSet<&str> = names.values().map(|s| s.as_str()).collect();
    for unit in ["MXM0.install", "MXM0.compute", "VXM q0"] {
        assert!(all.contains(unit), "no {unit} track in {all:?}");
    }
    assert!(all
        .iter()
        .any(|n| n.starts_with("MEM ") && n.ends_with(" read")));
    assert!(all
        .iter()
        .any(|n| n.starts_with("MEM ") && n.ends_with(" write")));
    // Non-overlapping per track (1e-6 µs: float rounding of cycle → µs).
    for (k, mut s) in spans {
        s.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in s.windows(2) {
            assert!(w[1].0 + 1e-6 >= w[0].1, "overlap on {:?}: {w:?}", names[&k]);
        }
    }
}

#[test]
fn compile_errors_are_clear() {
    let d = Dir::new();
    let ir = tiny(&d, false);
    let lpu = d.p("x.lpu");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--target", "cpu", "-o", &lpu],
            "error: `lpuc compile --target cpu` is not available: use `lpuc run`/`lpuc opt --target cpu`",
        ),
        (
            &["--target", "tpu", "-o", &lpu],
            "error: unknown target `tpu` (known: groq, cpu)",
        ),
        (
            &["--target", "groq", "--chips", "many", "-o", &lpu],
            "error: `--chips many`: expected a number of chips or `auto`",
        ),
        (
            &["--target", "groq", "--weights", "int3", "-o", &lpu],
            "error: `--weights int3`: expected `int4`, `int8` or `auto`",
        ),
        (
            &["--target", "groq", "--emit=ir", "-o", &lpu],
            "error: `--emit ir`: the Groq target emits `asm`",
        ),
        (
            &["--target", "groq"],
            "error: nothing to write: give `-o MODEL.lpu`, `--emit=asm` or `--trace FILE.json`",
        ),
        (
            &["--target", "groq", "--profile", "v9", "-o", &lpu],
            "error: unknown built-in machine profile `v9` (known: v1, v2-whatif)",
        ),
        (
            &["--target", "groq", "--batch", "0", "-o", &lpu],
            "--batch must be at least 1",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["compile", ir.as_str()];
        a.extend_from_slice(args);
        let o = lpuc(&a);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err(&o).contains(want), "{args:?}: {}", err(&o));
    }
}

#[test]
fn sim_errors_are_clear() {
    let d = Dir::new();
    let ir = tiny(&d, false);
    // Not an artifact at all.
    let o = lpuc(&["sim", &ir]);
    assert!(
        err(&o).contains("not an lpuc artifact (bad magic at byte 0)"),
        "{}",
        err(&o)
    );
    // A graph artifact, not a Groq program.
    let bin = d.p("tiny.bin");
    assert!(lpuc(&["build", "--preset", "tiny", "-o", &bin])
        .status
        .success());
    let o = lpuc(&["sim", &bin]);
    assert!(
        err(&o).contains("artifact kind \"graph\" where \"groq-program\" was expected"),
        "{}",
        err(&o)
    );
    // Functional simulation of a shapes-only model.
    let lpu = d.p("s.lpu");
    assert!(lpuc(&["compile", &ir, "--target", "groq", "-o", &lpu])
        .status
        .success());
    let o = lpuc(&["sim", &lpu, "--functional"]);
    assert!(
        err(&o).contains("functional simulation needs weights: the source graph has `weights none`; build it with `--random-weights SEED`"),
        "{}",
        err(&o)
    );
    // A missing file.
    let o = lpuc(&["sim", &d.p("nope.lpu")]);
    assert!(err(&o).contains("cannot read"), "{}", err(&o));
}

#[test]
fn sim_machine_prints_the_model_with_sources() {
    let o = lpuc(&["sim", "--machine"]);
    assert!(o.status.success(), "{}", err(&o));
    let s = out(&o);
    assert!(s.contains("machine profile v1"), "{s}");
    assert!(s.contains("737.28 TOPS"), "{s}");
    let o = lpuc(&["sim", "--machine", "--profile", "v2-whatif"]);
    assert!(out(&o).contains("WHAT-IF"), "{}", out(&o));
    // Without --machine an artifact is required.
    let o = lpuc(&["sim"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("<FILE>"), "{}", err(&o));
}

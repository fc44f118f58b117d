//! The `lpuc` binary end to end: the issue-given commands and their error behaviour.

use std::path::Path;
use std::process::{Command, Output};

fn lpuc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lpuc"))
        .args(args)
        .output()
        .expect("run lpuc")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn path(d: &tempfile::TempDir, f: &str) -> String {
    d.path().join(f).display().to_string()
}

#[test]
fn build_verify_fmt_dot_eval() {
    let d = tmp();
    let ir = path(&d, "tiny.ir");
    let o = lpuc(&[
        "build",
        "--preset",
        "tiny",
        "--random-weights",
        "42",
        "-o",
        &ir,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lpuc(&["verify", &ir]);
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(
        s.contains("ok: graph \"tiny\": 91 ops, 113 values, 20 weights, 90432 parameters"),
        "{s}"
    );
    let o = lpuc(&["fmt", &ir]);
    assert_eq!(
        stdout(&o),
        std::fs::read_to_string(&ir).unwrap(),
        "fmt of canonical text is identity"
    );
    let dot = path(&d, "tiny.dot");
    assert!(lpuc(&["dot", &ir, "-o", &dot]).status.success());
    let dt = std::fs::read_to_string(&dot).unwrap();
    assert!(dt.starts_with("digraph \"tiny\"") && dt.contains("tensor.kv_append"));
    let o = lpuc(&["eval", &ir, "--tokens", "1,2,3", "--json", "--top", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["shape"], serde_json::json!([1, 1, 256]));
    assert_eq!(v["top_logits"].as_array().unwrap().len(), 3);
    // Same seed, same logits: the weights are a function of (seed, name).
    let o2 = lpuc(&["eval", &ir, "--tokens", "1,2,3", "--json", "--top", "3"]);
    assert_eq!(stdout(&o), stdout(&o2));
}

#[test]
fn binary_artifact_round_trips_through_the_cli() {
    let d = tmp();
    let bin = path(&d, "tiny.bin");
    assert!(lpuc(&["build", "--preset", "tiny", "-o", &bin])
        .status
        .success());
    assert!(std::fs::read(&bin).unwrap().starts_with(b"LPUCART\0"));
    let ir = path(&d, "tiny.ir");
    assert!(lpuc(&["build", "--preset", "tiny", "-o", &ir])
        .status
        .success());
    assert_eq!(
        stdout(&lpuc(&["fmt", &bin])),
        std::fs::read_to_string(&ir).unwrap()
    );
}

#[test]
fn malformed_input_gives_located_error_and_nonzero_exit() {
    let d = tmp();
    let f = path(&d, "bad.ir");
    std::fs::write(
        &f,
        "graph \"x\" {\n  %0 = input \"t\" : i32[B, S]\n  %1 = tensor.silu(%9) : f32[B, S]\n}\n",
    )
    .unwrap();
    for cmd in ["verify", "fmt"] {
        let o = lpuc(&[cmd, &f]);
        assert_eq!(o.status.code(), Some(1));
        let e = stderr(&o);
        assert!(
            e.contains("bad.ir:3:20: use of undefined value `%9`"),
            "{e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
}

#[test]
fn user_errors_are_messages_not_panics() {
    let d = tmp();
    let missing = path(&d, "nope.ir");
    let o = lpuc(&["verify", &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));

    let o = lpuc(&["build", "--preset", "smollm-135m", "-o", &path(&d, "x.ir")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown preset `smollm-135m` (did you mean `smollm2-135m`?)"),
        "{}",
        stderr(&o)
    );

    let bin = path(&d, "bin.ir");
    std::fs::write(&bin, [0xffu8, 0xfe, 0x00]).unwrap();
    let o = lpuc(&["verify", &bin]);
    assert!(
        stderr(&o).contains("not UTF-8 text (invalid byte at offset 0)"),
        "{}",
        stderr(&o)
    );

    let shapes = path(&d, "shapes.ir");
    assert!(lpuc(&["build", "--preset", "tiny", "-o", &shapes])
        .status
        .success());
    let o = lpuc(&["eval", &shapes, "--tokens", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no weights"), "{}", stderr(&o));

    let rnd = path(&d, "rnd.ir");
    assert!(lpuc(&[
        "build",
        "--preset",
        "tiny",
        "--random-weights",
        "1",
        "-o",
        &rnd
    ])
    .status
    .success());
    let o = lpuc(&["eval", &rnd, "--tokens", "1,99999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("token id 99999 out of range 0..256"),
        "{}",
        stderr(&o)
    );
    assert!(Path::new(&rnd).exists());
}

/// The runtime never maps libLLVM (~45 MB of RSS): kernels are compiled by the separate
/// `lpuc-kernelc` binary on a cache miss.
#[test]
fn lpuc_does_not_link_llvm() {
    // ldd ships with glibc (Debian's libc-bin): its absence is a broken machine, not a
    // reason to check nothing.
    let o = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_lpuc"))
        .output()
        .expect("ldd (glibc's libc-bin) is needed to check what lpuc links");
    let libs = stdout(&o);
    assert!(!libs.to_lowercase().contains("llvm"), "{libs}");
}

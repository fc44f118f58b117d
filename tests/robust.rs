//! Hostile input, end to end (issue 15): every case here once crashed, hung, blew up memory,
//! destroyed a file or answered unclearly. Each now must exit with a status (no signal) and
//! a message naming the flag, file or key — or behave correctly.
//!
//! Tests that need the real model or the kernel compiler print "skipped: why" when it is
//! missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lpuc_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lpuc"));
    c.args(args);
    c
}

fn lpuc(args: &[&str]) -> Output {
    lpuc_cmd(args).output().expect("run lpuc")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails unless `o` is a clean error exit (status 1, not a signal or panic) whose stderr
/// contains every one of `want`.
#[track_caller]
fn refused(o: &Output, want: &[&str]) {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "not a clean error exit: {:?}\n{e}",
        o.status
    );
    assert!(!e.contains("panicked"), "panic: {e}");
    for w in want {
        assert!(e.contains(w), "stderr lacks {w:?}:\n{e}");
    }
}

fn model() -> Option<String> {
    let p = lpuc_runtime::fetch::default_model_path();
    if p.is_file() {
        Some(p.display().to_string())
    } else {
        eprintln!(
            "skipped: the real model is missing at {} (run `lpuc fetch`)",
            p.display()
        );
        None
    }
}

/// The kernel compiler next to the test's `lpuc`, if built.
fn kernelc() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_BIN_EXE_lpuc")).with_file_name("lpuc-kernelc");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipped: lpuc-kernelc is not built (cargo build --release --workspace)");
        None
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn p(d: &tempfile::TempDir, f: &str) -> String {
    d.path().join(f).display().to_string()
}

fn build_tiny(d: &tempfile::TempDir) -> String {
    let ir = p(d, "tiny.ir");
    let o = lpuc(&[
        "build",
        "--preset",
        "tiny",
        "--random-weights",
        "1",
        "-o",
        &ir,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    ir
}

// --- 1. sizes ------------------------------------------------------------------------------

#[test]
fn run_context_sizes_are_checked_before_allocating() {
    let Some(m) = model() else { return };
    for (c, want) in [
        ("10000000", "the KV cache would need"),
        ("9223372036854775808", "is too large"),
        ("4611686018427387904", "is too large"),
        ("18446744073709551615", "is too large"),
        ("16777216", "the KV cache would need"),
        ("0", "at least 1"),
    ] {
        let o = lpuc(&["run", "-m", &m, "-p", "hi", "-n", "1", "-c", c]);
        refused(&o, &["-c", want]);
    }
}

#[test]
fn build_refuses_a_context_the_verifier_would_reject() {
    let d = tmp();
    let ir = p(&d, "big.ir");
    for (flag, v) in [
        ("--max-ctx", "9223372036854775808"),
        ("--max-ctx", "0"),
        ("--batch", "4294967296"),
    ] {
        let o = lpuc(&["build", "--preset", "tiny", flag, v, "-o", &ir]);
        refused(&o, &[flag]);
        assert!(!Path::new(&ir).exists(), "{flag} {v} wrote a file");
    }
    // A hand-written bound that large is a verifier error, located.
    let t = p(&d, "t.ir");
    let o = lpuc(&["build", "--preset", "tiny", "-o", &t]);
    assert!(o.status.success());
    let text = std::fs::read_to_string(&t).unwrap().replacen(
        "sym P <= 128",
        "sym P <= 4611686018427387904",
        1,
    );
    assert!(text.contains("4611686018427387904"), "preset bound changed");
    std::fs::write(&t, text).unwrap();
    refused(
        &lpuc(&["verify", &t]),
        &["sym P <= 4611686018427387904", "too large"],
    );
}

#[test]
fn compile_flags_that_would_truncate_are_refused() {
    let d = tmp();
    let ir = build_tiny(&d);
    let lpu = p(&d, "x.lpu");
    for (flag, v) in [
        ("--batch", "4294967296"),
        ("--batch", "18446744073709551615"),
        ("--chips", "4294967296"),
        ("--chips", "0"),
        ("--tp", "0"),
        ("--context", "9223372036854775808"),
        ("--prompt", "18446744073709551615"),
    ] {
        let o = lpuc(&["compile", &ir, "--target", "groq", flag, v, "-o", &lpu]);
        refused(&o, &[flag]);
    }
    // A batch the scheduler would take minutes over is refused at once, with the reason.
    let o = lpuc(&[
        "compile", &ir, "--target", "groq", "--batch", "1000", "-o", &lpu,
    ]);
    refused(&o, &["--batch 1000", "compile time"]);
}

// --- 2. resources --------------------------------------------------------------------------

#[test]
fn threads_are_capped_with_a_message() {
    let Some(m) = model() else { return };
    let o = lpuc(&[
        "run", "-m", &m, "-p", "hi", "-n", "1", "--temp", "0", "-t", "100000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("-t 100000 is more than"),
        "{}",
        stderr(&o)
    );
    refused(
        &lpuc(&["run", "-m", &m, "-p", "hi", "-t", "0"]),
        &["-t must be at least 1"],
    );
}

#[test]
fn eval_of_a_70b_graph_is_refused_with_the_memory_it_needs() {
    let d = tmp();
    let ir = p(&d, "70b.ir");
    let o = lpuc(&[
        "build",
        "--preset",
        "llama3-70b",
        "--random-weights",
        "1",
        "-o",
        &ir,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lpuc(&["eval", &ir, "--tokens", "1,2"]);
    refused(&o, &["would need", "GiB", "70b.ir"]);
}

#[test]
fn devices_directories_and_models_are_not_read_as_ir() {
    refused(&lpuc(&["verify", "/dev/zero"]), &["/dev/zero is a device"]);
    refused(&lpuc(&["sim", "/dev/zero"]), &["/dev/zero is a device"]);
    refused(
        &lpuc(&["run", "-m", "/dev/zero", "-p", "hi"]),
        &["not a regular file"],
    );
    let d = tmp();
    refused(
        &lpuc(&["verify", d.path().to_str().unwrap()]),
        &["is a directory"],
    );
    // A GGUF where an .ir is expected says what it is and which command takes it.
    let g = p(&d, "m.gguf");
    let mut bytes = b"GGUF\x03\0\0\0".to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    std::fs::write(&g, bytes).unwrap();
    for cmd in ["verify", "opt", "fmt"] {
        refused(
            &lpuc(&[cmd, &g]),
            &["is a GGUF model file", "lpuc run -m", "lpuc import"],
        );
    }
}

#[test]
fn a_kernel_compiler_that_never_exits_is_killed() {
    let Some(m) = model() else { return };
    let d = tmp();
    let kc = d.path().join("stuck-kernelc");
    std::fs::write(&kc, "#!/bin/sh\nsleep 1000\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kc, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = lpuc_cmd(&["run", "-m", &m, "-p", "hi", "-n", "1", "--backend", "jit"])
        .env("LPUC_KERNEL_CACHE", "off")
        .env("LPUC_KERNELC", &kc)
        .env("LPUC_KERNELC_TIMEOUT", "1")
        .output()
        .unwrap();
    refused(
        &o,
        &[
            "did not finish within 1 s and was killed",
            "LPUC_KERNELC_TIMEOUT",
        ],
    );
}

// --- 3. the kernel cache -------------------------------------------------------------------

/// Runs the model once on the JIT with kernels cached in `cache`.
fn jit_run(m: &str, cache: &Path) -> Output {
    lpuc_cmd(&[
        "run",
        "-m",
        m,
        "-p",
        "hi",
        "-n",
        "2",
        "--temp",
        "0",
        "--backend",
        "jit",
        "--json",
    ])
    .env("LPUC_KERNEL_CACHE", cache)
    .output()
    .unwrap()
}

fn cached_so(cache: &Path) -> PathBuf {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "so"))
        .expect("a cached module")
}

#[test]
fn a_truncated_or_corrupt_cache_entry_is_recompiled() {
    let (Some(m), Some(_)) = (model(), kernelc()) else {
        return;
    };
    let d = tmp();
    let cache = d.path().join("kernels");
    let first = jit_run(&m, &cache);
    assert!(first.status.success(), "{}", stderr(&first));
    let so = cached_so(&cache);
    let good = std::fs::read(&so).unwrap();
    assert!(Path::new(&format!("{}.sha256", so.display())).is_file());
    // Truncated: used to be SIGBUS inside dlopen.
    std::fs::write(&so, &good[..good.len() / 3]).unwrap();
    let o = jit_run(&m, &cache);
    assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    assert_eq!(o.stdout, first.stdout);
    assert_eq!(std::fs::read(&so).unwrap().len(), good.len());
    // Corrupt code: used to be SIGSEGV in the first kernel call.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid..mid + 256].fill(0xff);
    std::fs::write(&so, &bad).unwrap();
    let o = jit_run(&m, &cache);
    assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    assert_eq!(o.stdout, first.stdout);
}

#[test]
fn an_unwritable_cache_compiles_privately() {
    let (Some(m), Some(_)) = (model(), kernelc()) else {
        return;
    };
    let d = tmp();
    // A cache path under a regular file can never be created (root ignores permissions, so
    // a read-only directory would not do).
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let o = jit_run(&m, &file.join("kernels"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("interpreter"), "{}", stderr(&o));
}

// --- 4. files ------------------------------------------------------------------------------

#[test]
fn no_command_overwrites_its_input() {
    let d = tmp();
    let ir = build_tiny(&d);
    let before = std::fs::read(&ir).unwrap();
    let link = p(&d, "link.ir");
    std::os::unix::fs::symlink(&ir, &link).unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["dot", &ir, "-o", &ir],
        vec!["dot", &ir, "-o", &link],
        vec!["fmt", &ir, "-o", &ir],
        vec!["opt", &ir, "-o", &ir],
        vec!["compile", &ir, "--target", "groq", "-o", &ir],
        vec!["compile", &ir, "--target", "groq", "--trace", &ir],
    ];
    for c in cases {
        let o = lpuc(&c);
        refused(&o, &["is the input", "would destroy"]);
        assert_eq!(
            std::fs::read(&ir).unwrap(),
            before,
            "{c:?} changed the input"
        );
    }
}

#[test]
fn import_and_logits_out_do_not_overwrite_the_model() {
    let Some(m) = model() else { return };
    let d = tmp();
    let v = p(&d, "v.gguf");
    std::os::unix::fs::symlink(&m, &v).unwrap();
    let len = std::fs::metadata(&m).unwrap().len();
    refused(&lpuc(&["import", &v, "-o", &v]), &["-o", "is the input"]);
    refused(
        &lpuc(&["run", "-m", &v, "-p", "hi", "-n", "1", "--logits-out", &m]),
        &["--logits-out", "is the input"],
    );
    assert_eq!(std::fs::metadata(&m).unwrap().len(), len);
}

#[test]
fn a_write_killed_midway_leaves_the_old_file() {
    let d = tmp();
    let out = p(&d, "out.ir");
    std::fs::write(&out, b"the old contents\n").unwrap();
    // The file-size limit kills lpuc (SIGXFSZ) partway through a ~90 KB write.
    let script = format!(
        "ulimit -f 8; exec '{}' build --preset smollm2-135m -o '{out}'",
        env!("CARGO_BIN_EXE_lpuc")
    );
    let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(!o.status.success(), "the write was not cut short");
    assert_eq!(std::fs::read(&out).unwrap(), b"the old contents\n");
    // And when it can finish, the new file replaces the old one whole.
    let o = lpuc(&["build", "--preset", "smollm2-135m", "-o", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("graph"));
}

// --- 5. scaling of the passes ------------------------------------------------------------

#[test]
fn opt_on_a_long_chain_finishes_with_bounded_islands() {
    // 5k elementwise ops on one activation: one 5k-node island made egg's extraction
    // quadratic (31 s). Now it is cut into bounded islands that share egg runs.
    let d = tmp();
    let mut s = String::from(
        "graph \"chain\" {\n  sym B <= 1\n  sym P <= 16\n  sym S <= 16\n  weights random(seed = 1)\n  \
         %tok = input \"tokens\" : i32[B, S]\n  %emb = weight \"token_embd.weight\" : q8_0[64, 32]\n  \
         %v0 = tensor.embedding(%emb, %tok) : f32[B, S, 32]\n",
    );
    let n = 5000;
    for i in 1..=n {
        s += &match i % 3 {
            0 => format!("  %v{i} = tensor.silu(%v{}) : f32[B, S, 32]\n", i - 1),
            1 => format!(
                "  %v{i} = tensor.add(%v{}, %v{}) : f32[B, S, 32]\n",
                i - 1,
                i - 1
            ),
            _ => format!("  %v{i} = tensor.mul(%v{}, %v0) : f32[B, S, 32]\n", i - 1),
        };
    }
    s += &format!("  %out = output \"logits\"(%v{n}) : f32[B, S, 32]\n}}\n");
    let ir = p(&d, "chain.ir");
    std::fs::write(&ir, s).unwrap();
    let out = p(&d, "out.ir");
    let o = lpuc(&["opt", &ir, "-o", &out, "--stats"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let islands: usize = e
        .lines()
        .find(|l| l.contains("canonicalize - islands") && !l.contains("rewritten"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no island count in:\n{e}"));
    assert!(islands >= n / 256, "{islands} islands for {n} ops:\n{e}");
    assert!(lpuc(&["verify", &out]).status.success());
}

// --- 6. clear errors -----------------------------------------------------------------------

#[test]
fn a_directory_as_model_says_so() {
    let d = tmp();
    let o = lpuc(&["run", "-m", d.path().to_str().unwrap(), "-p", "hi"]);
    refused(&o, &["is a directory"]);
    assert!(!stderr(&o).contains("os error 19"), "{}", stderr(&o));
}

#[test]
fn a_corrupt_artifact_error_is_words_not_debug_structs() {
    let d = tmp();
    let bin = p(&d, "t.bin");
    let o = lpuc(&["build", "--preset", "tiny", "-o", &bin]);
    assert!(o.status.success());
    let good = std::fs::read(&bin).unwrap();
    let mut b = good.clone();
    // The graph name's bytes: invalid UTF-8 there was `Utf8 { inner: … }`.
    let at = b.windows(4).position(|w| w == b"tiny").unwrap();
    b[at] = 0xff;
    std::fs::write(&bin, &b).unwrap();
    let o = lpuc(&["verify", &bin]);
    refused(&o, &["corrupt artifact", "UTF-8"]);
    assert!(!stderr(&o).contains("inner:"), "{}", stderr(&o));
    let cut = p(&d, "cut.bin");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let o = lpuc(&["verify", &cut]);
    refused(&o, &["corrupt artifact", "truncated"]);
}

// --- model files with one thing changed ---------------------------------------------------

/// A copy of the real model in `d` with metadata edited by `meta` (return `None` to drop a
/// key) and tensor bytes by `tensor`.
fn edited_model(
    m: &str,
    d: &tempfile::TempDir,
    meta: impl Fn(&str, &lpuc_ir::gguf::MetaValue) -> Option<lpuc_ir::gguf::MetaValue>,
    tensor: impl Fn(&str, &mut Vec<u8>),
) -> String {
    let f = lpuc_ir::gguf::GgufFile::open(Path::new(m)).unwrap();
    let mut w = lpuc_ir::gguf::GgufWriter::new();
    for (k, v) in f.metadata() {
        if let Some(v) = meta(k, v) {
            w.add_metadata(k.clone(), v);
        }
    }
    for t in f.tensors() {
        let mut b = f.tensor_data(t).to_vec();
        tensor(&t.name, &mut b);
        w.add_tensor(t.name.clone(), &t.dims, t.dtype, b);
    }
    let out = p(d, "edited.gguf");
    std::fs::write(&out, w.to_bytes()).unwrap();
    out
}

#[test]
fn a_metadata_key_of_the_wrong_type_is_named() {
    use lpuc_ir::gguf::MetaValue;
    let Some(m) = model() else { return };
    let d = tmp();
    let e = edited_model(
        &m,
        &d,
        |k, v| {
            Some(if k == "llama.context_length" {
                MetaValue::Str("8192".into())
            } else {
                v.clone()
            })
        },
        |_, _| {},
    );
    refused(
        &lpuc(&["run", "-m", &e, "-p", "hi"]),
        &[
            "llama.context_length",
            "expected an unsigned integer, found string",
        ],
    );
}

#[test]
fn a_chat_template_that_never_ends_is_an_error() {
    use lpuc_ir::gguf::MetaValue;
    let Some(m) = model() else { return };
    let d = tmp();
    for (tmpl, want) in [
        // Nested loops: used to hang.
        (
            "{% for a in range(99999) %}{% for b in range(99999) %}{% for c in range(99999) %}x{% endfor %}{% endfor %}{% endfor %}",
            "budget",
        ),
        // A string doubled 64 times: used to abort at 6.3 GB.
        (
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
            "chat template",
        ),
    ] {
        let e = edited_model(
            &m,
            &d,
            |k, v| {
                Some(if k == "tokenizer.chat_template" {
                    MetaValue::Str(tmpl.into())
                } else {
                    v.clone()
                })
            },
            |_, _| {},
        );
        let o = lpuc(&["run", "-m", &e, "--chat", "-p", "hi", "-n", "1"]);
        refused(&o, &["chat template", want]);
    }
}

#[test]
fn nan_logits_are_an_error_naming_the_step() {
    let Some(m) = model() else { return };
    let d = tmp();
    let e = edited_model(
        &m,
        &d,
        |_, v| Some(v.clone()),
        |name, b| {
            if name == "output_norm.weight" {
                for c in b.chunks_exact_mut(4) {
                    c.copy_from_slice(&f32::NAN.to_le_bytes());
                }
            }
        },
    );
    for backend in ["jit", "interp"] {
        let o = lpuc(&[
            "run",
            "-m",
            &e,
            "-p",
            "hi",
            "-n",
            "2",
            "--backend",
            backend,
            "--temp",
            "0",
        ]);
        refused(&o, &["generation step 0", "NaN"]);
    }
}

#[test]
fn a_tokenizer_smaller_than_the_embedding_table_warns() {
    use lpuc_ir::gguf::{MetaArray, MetaValue, StrArray};
    let Some(m) = model() else { return };
    let d = tmp();
    const KEEP: usize = 49_000;
    let e = edited_model(
        &m,
        &d,
        |k, v| match (k, v) {
            ("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::Str(a))) => {
                let mut t = StrArray::new();
                for s in a.iter().take(KEEP) {
                    t.push(s);
                }
                Some(MetaValue::Array(MetaArray::Str(t)))
            }
            ("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(a))) => {
                Some(MetaValue::Array(MetaArray::I32(a[..KEEP].to_vec())))
            }
            ("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(a))) => {
                Some(MetaValue::Array(MetaArray::F32(a[..KEEP].to_vec())))
            }
            _ => Some(v.clone()),
        },
        |_, _| {},
    );
    let o = lpuc(&["run", "-m", &e, "-p", "hi", "-n", "1", "--temp", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "the tokenizer has 49000 tokens, fewer than the embedding table's 49152 rows"
        ),
        "{}",
        stderr(&o)
    );
}

// --- 7. accepted without complaint ----------------------------------------------------------

#[test]
fn sampling_flags_refuse_nan_and_out_of_range() {
    // Parsed before any model is loaded, so no model is needed.
    for (flag, v) in [
        ("--temp", "nan"),
        ("--temp", "-1"),
        ("--temp", "inf"),
        ("--top-p", "nan"),
        ("--top-p", "1.5"),
        ("--min-p", "-0.5"),
        ("--repeat-penalty", "nan"),
        ("--repeat-penalty", "0"),
    ] {
        let arg = format!("{flag}={v}");
        let o = lpuc(&["run", "-m", "/nonexistent.gguf", "-p", "hi", &arg]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{arg}: {e}");
        assert!(e.contains(flag), "{arg}: {e}");
    }
}

#[test]
fn a_context_above_the_trained_one_warns() {
    let Some(m) = model() else { return };
    let o = lpuc(&[
        "run", "-m", &m, "-p", "hi", "-n", "1", "--temp", "0", "-c", "9000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("-c 9000 exceeds the model's trained context of 8192"),
        "{}",
        stderr(&o)
    );
}

//! Loading compiled kernel modules: the on-disk cache, and the out-of-process compiler.
//!
//! This crate never links LLVM. A module's text (every kernel specialised to its shapes,
//! with placeholders for the host CPU, see [`ModuleText::render_for_host`]) is hashed with
//! a fingerprint of the host CPU and the compiler's identity ([`compiler_id`]: its version,
//! LLVM's major version, the pass pipeline); a shared object under that key in the cache is
//! simply `dlopen`ed, so a warm start hashes text and maps a file. On a miss the separate
//! `lpuc-kernelc` binary (crate `kernelc/`, the only one that links libLLVM) is run with the
//! text on stdin: it fills in LLVM's host CPU name and features, optimises with
//! [`PIPELINE`], emits an object, links it with `cc -shared` and publishes the `.so` into
//! the cache atomically; then it is `dlopen`ed here. Out of process because loading
//! libLLVM costs ~45 MB of resident memory that the runtime would then carry for its whole
//! life, and because a crash inside LLVM must not take the runtime down with it.
//!
//! Set `LPUC_KERNEL_CACHE=off` to compile into a private temp dir every time, or
//! `LPUC_KERNEL_CACHE=<dir>` to choose the cache directory (default `~/.cache/lpuc/kernels`).
//! `LPUC_KERNELC=<path>` names the compiler binary; by default it is looked for next to the
//! running executable, in that directory's parent (cargo's test binaries live in
//! `target/<profile>/deps/`), then on `PATH`.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::irtext::ModuleText;

/// The LLVM major version `lpuc-kernelc` is built against (it checks at start-up).
pub const LLVM_MAJOR: u32 = 19;

/// The new pass manager pipeline `lpuc-kernelc` runs.
pub const PIPELINE: &str = "default<O3>";

/// Everything about the compiler, other than the module text and the host, that changes
/// the code it produces. Part of the cache key; `lpuc-kernelc` refuses to run for a caller
/// built with a different id (a stale binary from another build). Change the trailing tag
/// when `lpuc-kernelc`'s target machine options or linking change.
pub fn compiler_id() -> String {
    format!(
        "lpuc-kernelc {} llvm{LLVM_MAJOR} {PIPELINE} cpu=host pic O3 cc-shared-lm",
        env!("CARGO_PKG_VERSION")
    )
}

/// The compiler binary's file name.
pub const KERNELC: &str = "lpuc-kernelc";

/// The host, as far as the runtime needs to know it without LLVM: which kernel variants to
/// generate, and a fingerprint of the CPU for the cache key. (The exact CPU name and
/// feature string LLVM compiles for are filled in by `lpuc-kernelc`; they are a function of
/// what the fingerprint covers.)
#[derive(Clone, Debug)]
pub struct Host {
    /// CPU vendor, family/model/stepping, model name and feature flags.
    pub fingerprint: String,
    vnni512: bool,
}

impl Host {
    pub fn detect() -> Host {
        Host {
            fingerprint: fingerprint(),
            vnni512: lpuc_host::Features::detect().vnni512(),
        }
    }

    /// AVX-512 VNNI (`vpdpbusd` on zmm) with BW for byte ops: the fast int8 path.
    pub fn vnni512(&self) -> bool {
        self.vnni512
    }
}

/// The first processor's identity and flags from `/proc/cpuinfo` (every field LLVM's host
/// CPU name and feature detection depend on: vendor, family, model, stepping, CPUID feature
/// bits as the kernel enables them); elsewhere, the features std detects.
fn fingerprint() -> String {
    let mut fp = format!("{}\n", std::env::consts::ARCH);
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let block = info.split("\n\n").next().unwrap_or("");
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let k = k.trim();
            if matches!(
                k,
                "vendor_id" | "cpu family" | "model" | "model name" | "stepping" | "flags"
            ) {
                fp.push_str(k);
                fp.push('=');
                fp.push_str(v.trim());
                fp.push('\n');
            }
        }
        if fp.contains("flags=") {
            return fp;
        }
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        macro_rules! feats {
            ($($f:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($f) {
                    fp.push_str($f);
                    fp.push(' ');
                })*
            };
        }
        feats!(
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "bmi1",
            "bmi2",
            "lzcnt",
            "movbe",
            "avx512f",
            "avx512cd",
            "avx512bw",
            "avx512dq",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avx512fp16",
            "avxvnni"
        );
    }
    fp
}

/// How a module was obtained.
#[derive(Clone, Debug, Default)]
pub struct CompileStats {
    /// The shared object was already in the cache (no compiler ran).
    pub cache_hit: bool,
    /// Wall time from the module text to resolved symbols, compiling included on a miss.
    pub seconds: f64,
    /// The shared object.
    pub path: Option<PathBuf>,
    /// The `lpuc-kernelc` binary that compiled it, on a miss.
    pub compiler: Option<PathBuf>,
}

/// A loaded kernel library: symbol → address.
pub struct Kernels {
    _lib: libloading::Library,
    syms: HashMap<String, usize>,
    pub stats: CompileStats,
}

impl Kernels {
    /// The address of a kernel; panics on an unknown symbol (the caller asked for a module
    /// with that symbol, so absence is a bug).
    pub fn addr(&self, sym: &str) -> usize {
        *self
            .syms
            .get(sym)
            .unwrap_or_else(|| panic!("kernel `{sym}` not in the compiled module"))
    }
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var("LPUC_KERNEL_CACHE") {
        Ok(v) if v == "off" || v == "0" => None,
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => dirs::cache_dir().map(|d| d.join("lpuc").join("kernels")),
    }
}

/// The cache key of a module's text (as [`ModuleText::render_for_host`] writes it) for a
/// host: the text, the host fingerprint and [`compiler_id`].
pub fn cache_key(text: &str, host: &Host) -> String {
    let mut h = Sha256::new();
    h.update(b"lpuc-kernels-v2\0");
    h.update(compiler_id().as_bytes());
    h.update(b"\0");
    h.update(host.fingerprint.as_bytes());
    h.update(b"\0");
    h.update(text.as_bytes());
    let d = h.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// The `lpuc-kernelc` binary.
#[derive(Clone, Debug)]
pub struct Kernelc {
    pub path: PathBuf,
}

impl Kernelc {
    /// `$LPUC_KERNELC` if set; else next to the running executable, else in its parent
    /// directory, else on `PATH`.
    pub fn find() -> Result<Kernelc, String> {
        let name = format!("{KERNELC}{}", std::env::consts::EXE_SUFFIX);
        if let Some(p) = std::env::var_os("LPUC_KERNELC").filter(|v| !v.is_empty()) {
            let path = PathBuf::from(p);
            return if path.is_file() {
                Ok(Kernelc { path })
            } else {
                Err(format!(
                    "LPUC_KERNELC={} is not a file: point it at the `{KERNELC}` binary \
                     (built by `cargo build --release --workspace`) or unset it",
                    path.display()
                ))
            };
        }
        let mut looked = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            let mut d = Some(dir.as_path());
            for _ in 0..2 {
                let Some(here) = d else { break };
                let c = here.join(&name);
                if c.is_file() {
                    return Ok(Kernelc { path: c });
                }
                looked.push(here.display().to_string());
                d = here.parent();
            }
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let c = dir.join(&name);
                if c.is_file() {
                    return Ok(Kernelc { path: c });
                }
            }
        }
        looked.push("PATH".into());
        Err(format!(
            "the kernel compiler `{KERNELC}` was not found (looked in {}). Build it with \
             `cargo build --release --workspace` (it is placed next to `lpuc`), or set \
             LPUC_KERNELC to its path",
            looked.join(", ")
        ))
    }

    /// Compiles a module's text (placeholders for the host allowed) into the shared object
    /// `out`, which appears atomically (concurrent compilers of one module both succeed).
    pub fn compile(&self, text: &str, out: &Path) -> Result<(), String> {
        self.run(&["-o".into(), out.into()], text)
    }

    /// Writes `kernels.ll` (the text for this host), `kernels.opt.ll` (after the pipeline)
    /// and `kernels.o` into `dir`.
    pub fn dump(&self, text: &str, dir: &Path) -> Result<(), String> {
        self.run(&["--dump-dir".into(), dir.into()], text)
    }

    fn run(&self, args: &[OsString], text: &str) -> Result<(), String> {
        let mut child = Command::new(&self.path)
            .arg("--expect-id")
            .arg(compiler_id())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run the kernel compiler {}: {e} (rebuild it with \
                     `cargo build --release --workspace`, or set LPUC_KERNELC)",
                    self.path.display()
                )
            })?;
        // A writer thread: the compiler may fail (and write to stderr) before reading all
        // of its input; a failed write shows up as its exit status.
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = text.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().map_err(|e| {
            format!(
                "waiting for the kernel compiler {}: {e}",
                self.path.display()
            )
        })?;
        let _ = writer.join();
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut tail = stderr.trim_end();
        const MAX: usize = 8000;
        if tail.len() > MAX {
            let mut cut = tail.len() - MAX;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail = &tail[cut..];
        }
        let how = match out.status.code() {
            Some(c) => format!("failed (exit status {c})"),
            None => format!("crashed ({})", out.status),
        };
        Err(format!(
            "the kernel compiler {} {how}{}{tail}",
            self.path.display(),
            if tail.is_empty() {
                " without a message"
            } else {
                ":\n"
            }
        ))
    }
}

/// Removes a private compile directory when dropped (the mapping of a loaded library stays
/// valid after its file is unlinked).
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads a module from the cache, or compiles it with `lpuc-kernelc` first, and resolves
/// `symbols`.
pub fn load(m: &ModuleText, host: &Host, symbols: &[String]) -> Result<Kernels, String> {
    let t0 = Instant::now();
    let text = m.render_for_host();
    let key = cache_key(&text, host);
    let (path, tmp) = match cache_dir() {
        Some(d) => (d.join(format!("{key}.so")), None),
        None => {
            let d = std::env::temp_dir().join(format!(
                "lpuc-kernels-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            (d.join(format!("{key}.so")), Some(TmpDir(d)))
        }
    };
    let mut hit = path.exists();
    let lib = if hit {
        // A truncated or foreign file falls through to a recompile.
        unsafe { libloading::Library::new(&path) }.ok()
    } else {
        None
    };
    let mut compiler = None;
    let lib = match lib {
        Some(l) => l,
        None => {
            hit = false;
            let kc = Kernelc::find().map_err(|e| match &tmp {
                Some(_) => format!("LPUC_KERNEL_CACHE=off: the kernels must be compiled, but {e}"),
                None => format!(
                    "the kernels for this model are not in the cache ({}) and must be \
                     compiled, but {e}",
                    path.parent().unwrap_or(Path::new(".")).display()
                ),
            })?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            kc.compile(&text, &path)?;
            compiler = Some(kc.path);
            unsafe { libloading::Library::new(&path) }
                .map_err(|e| format!("loading {}: {e}", path.display()))?
        }
    };
    let mut syms = HashMap::new();
    for s in symbols {
        let a = unsafe { lib.get::<*const ()>(s.as_bytes()) }
            .map_err(|e| format!("kernel `{s}` missing from {}: {e}", path.display()))?;
        syms.insert(s.clone(), *a as usize);
    }
    Ok(Kernels {
        _lib: lib,
        syms,
        stats: CompileStats {
            cache_hit: hit,
            seconds: t0.elapsed().as_secs_f64(),
            path: Some(path),
            compiler,
        },
    })
}

/// Writes a module's LLVM IR for this host, its optimised IR and its object file into
/// `dir` (`kernels.ll`, `kernels.opt.ll`, `kernels.o`), compiled by `lpuc-kernelc` exactly
/// as [`load`] would compile it.
pub fn dump(m: &ModuleText, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Kernelc::find()?.dump(&m.render_for_host(), dir)
}

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
//!
//! The cache does not trust its files. Each `KEY.so` is published with a `KEY.so.sha256`
//! sidecar holding its SHA-256; the sidecar is written before the `.so` is renamed into
//! place, so every visible entry has one. A hit is hashed and compared before `dlopen`
//! (a truncated `.so` is SIGBUS inside the loader, a corrupt `.text` a SIGSEGV later): a
//! missing or mismatching sidecar removes the entry and recompiles. A cache directory that
//! cannot be written (read-only, not a directory) compiles into a private temp dir instead.
//! The cache keeps at most [`MAX_CACHE_ENTRIES`] modules, evicting the least recently used
//! (the key covers the module text, which specialises kernels to the context size, so each
//! distinct `-c` is an entry). A compile that runs longer than [`compile_timeout`] is killed.
//! `LPUC_KERNELC=<path>` names the compiler binary; by default it is looked for next to the
//! running executable, in that directory's parent (cargo's test binaries live in
//! `target/<profile>/deps/`), then on `PATH`.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Modules kept in the cache directory; publishing one more evicts the least recently used
/// (by modification time, which a hit refreshes). A SmolLM2 module is ~40 KB, so the cache
/// stays small however many context sizes are run.
pub const MAX_CACHE_ENTRIES: usize = 32;

/// The default limit on one `lpuc-kernelc` run. A cold compile of SmolLM2-135M's module
/// takes ~1 s (one kernel per op kind and shape, so larger models are not much slower); a
/// minute means the compiler is stuck (or waiting on something that will never come), and
/// waiting longer only hides it.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one compile may take: `$LPUC_KERNELC_TIMEOUT` seconds, else
/// [`DEFAULT_COMPILE_TIMEOUT`].
pub fn compile_timeout() -> Duration {
    std::env::var("LPUC_KERNELC_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e7)))
        .unwrap_or(DEFAULT_COMPILE_TIMEOUT)
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
    /// The kernel tier compiled for (part of the cache key, passed to `lpuc-kernelc`).
    pub tier: lpuc_host::Tier,
}

impl Host {
    /// The host at its best tier, or at `$LPUC_ISA` when set and runnable (a bad
    /// `$LPUC_ISA` falls back to the best tier here; [`Host::select`] reports it).
    pub fn detect() -> Host {
        let f = lpuc_host::Features::detect();
        let tier = lpuc_host::Tier::select(None)
            .ok()
            .or_else(|| lpuc_host::Tier::best(&f))
            .unwrap_or(lpuc_host::Tier::Avx2);
        Host {
            fingerprint: fingerprint(),
            tier,
        }
    }

    /// The host at the tier `--isa` (or else `$LPUC_ISA`) asks for; an error names a tier
    /// this CPU cannot run.
    pub fn select(isa: Option<&str>) -> Result<Host, String> {
        Ok(Host {
            fingerprint: fingerprint(),
            tier: lpuc_host::Tier::select(isa)?,
        })
    }

    /// The host at an explicit tier (tests run every tier the host can execute).
    pub fn at(tier: lpuc_host::Tier) -> Host {
        Host {
            fingerprint: fingerprint(),
            tier,
        }
    }

    /// AVX-512 VNNI (`vpdpbusd` on zmm) with BW for byte ops: the fast int8 path.
    pub fn vnni512(&self) -> bool {
        self.tier == lpuc_host::Tier::Avx512Vnni
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
    h.update(host.tier.name().as_bytes());
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
    /// The tier to compile for (`--isa`); `None`: the host's own CPU and features.
    pub isa: Option<lpuc_host::Tier>,
}

impl Kernelc {
    /// `$LPUC_KERNELC` if set; else next to the running executable, else in its parent
    /// directory, else on `PATH`.
    pub fn find() -> Result<Kernelc, String> {
        let name = format!("{KERNELC}{}", std::env::consts::EXE_SUFFIX);
        if let Some(p) = std::env::var_os("LPUC_KERNELC").filter(|v| !v.is_empty()) {
            let path = PathBuf::from(p);
            return if path.is_file() {
                Ok(Kernelc { path, isa: None })
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
                    return Ok(Kernelc { path: c, isa: None });
                }
                looked.push(here.display().to_string());
                d = here.parent();
            }
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let c = dir.join(&name);
                if c.is_file() {
                    return Ok(Kernelc { path: c, isa: None });
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
        let mut cmd = Command::new(&self.path);
        cmd.arg("--expect-id").arg(compiler_id());
        if let Some(t) = self.isa {
            cmd.arg("--isa").arg(t.name());
        }
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so a timeout kills whatever it started too (a wrapper
        // script's children would otherwise keep the pipes open).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot run the kernel compiler {}: {e} (rebuild it with \
                 `cargo build --release --workspace`, or set LPUC_KERNELC)",
                self.path.display()
            )
        })?;
        // A writer thread: the compiler may fail (and write to stderr) before reading all
        // of its input; a failed write shows up as its exit status. Reader threads drain
        // stdout and stderr so a chatty compiler never blocks on a full pipe.
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = text.to_owned();
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = std::io::Read::read_to_end(&mut r, &mut buf);
                }
                let _ = tx.send(buf);
            });
            rx
        };
        let out_t = drain(child.stdout.take().map(|s| Box::new(s) as _));
        let err_t = drain(child.stderr.take().map(|s| Box::new(s) as _));
        let limit = compile_timeout();
        let t0 = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if t0.elapsed() >= limit => {
                    // Not reaped yet, so the group id is still this child's.
                    kill_group(&mut child);
                    let _ = child.wait();
                    return Err(format!(
                        "the kernel compiler {} did not finish within {:.0} s and was killed \
                         (set LPUC_KERNELC_TIMEOUT=SECONDS to allow longer, or check that \
                         LPUC_KERNELC names `{KERNELC}`)",
                        self.path.display(),
                        limit.as_secs_f64()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    kill_group(&mut child);
                    return Err(format!(
                        "waiting for the kernel compiler {}: {e}",
                        self.path.display()
                    ));
                }
            }
        };
        // The compiler exited. Something it started may still hold the pipes open: wait
        // for its output only briefly (the group is not signalled after the child was
        // reaped, since its id may then belong to someone else).
        let grace = Duration::from_secs(5);
        let _ = out_t.recv_timeout(grace);
        let stderr_bytes = err_t.recv_timeout(grace).unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&stderr_bytes);
        let mut tail = stderr.trim_end();
        const MAX: usize = 8000;
        if tail.len() > MAX {
            let mut cut = tail.len() - MAX;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail = &tail[cut..];
        }
        let how = match status.code() {
            Some(c) => format!("failed (exit status {c})"),
            None => format!("crashed ({status})"),
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

/// Kills the compiler's process group (it was started as its leader), or just the child
/// where process groups do not exist.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: signalling the process group this process created for the child.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            return;
        }
    }
    let _ = child.kill();
}

/// Removes a private compile directory when dropped (the mapping of a loaded library stays
/// valid after its file is unlinked).
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_private_dir(base: &Path) -> std::io::Result<PathBuf> {
    let d = base.join(format!(
        "lpuc-kernels-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The SHA-256 of a file, hex.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn sidecar(so: &Path) -> PathBuf {
    let mut s = so.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Whether a cached `.so` matches the hash recorded when it was published.
fn entry_is_intact(so: &Path) -> bool {
    let Ok(want) = std::fs::read_to_string(sidecar(so)) else {
        return false;
    };
    matches!(file_sha256(so), Ok(got) if got == want.trim())
}

fn remove_entry(so: &Path) {
    let _ = std::fs::remove_file(so);
    let _ = std::fs::remove_file(sidecar(so));
}

/// Keeps the newest [`MAX_CACHE_ENTRIES`] modules of a cache directory.
fn prune(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let p = e.path();
            if p.extension()? != "so" {
                return None;
            }
            Some((e.metadata().ok()?.modified().ok()?, p))
        })
        .collect();
    if entries.len() <= keep {
        return;
    }
    entries.sort();
    let excess = entries.len() - keep;
    for (_, p) in entries.into_iter().take(excess) {
        remove_entry(&p);
    }
}

/// Compiles `text` in a private directory under `work`, records its hash and, when
/// `publish` names a cache path, moves it there (sidecar first, so a visible `.so` always
/// has one). Returns the loaded library: it is opened from the private file before the
/// move, so no other process's eviction or repair can pull it away between the two.
fn compile_and_open(
    kc: &Kernelc,
    text: &str,
    key: &str,
    work: &Path,
    publish: Option<&Path>,
) -> Result<(libloading::Library, PathBuf), String> {
    let priv_dir = new_private_dir(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let _cleanup = TmpDir(priv_dir.clone());
    let so = priv_dir.join(format!("{key}.so"));
    kc.compile(text, &so)?;
    let hash = file_sha256(&so).map_err(|e| format!("{}: {e}", so.display()))?;
    let lib = unsafe { libloading::Library::new(&so) }
        .map_err(|e| format!("loading {}: {e}", so.display()))?;
    let Some(dest) = publish else {
        return Ok((lib, so));
    };
    let side_tmp = priv_dir.join("sha256");
    let published = std::fs::write(&side_tmp, format!("{hash}\n"))
        .and_then(|_| std::fs::rename(&side_tmp, sidecar(dest)))
        .and_then(|_| std::fs::rename(&so, dest));
    match published {
        Ok(()) => Ok((lib, dest.to_path_buf())),
        // Not fatal: the module is loaded; the next run compiles again.
        Err(_) => Ok((lib, so)),
    }
}

/// Loads a module from the cache, or compiles it with `lpuc-kernelc` first, and resolves
/// `symbols`.
pub fn load(m: &ModuleText, host: &Host, symbols: &[String]) -> Result<Kernels, String> {
    let t0 = Instant::now();
    let text = m.render_for_host();
    let key = cache_key(&text, host);
    // The cache directory, if it exists or can be made; else compile privately.
    let cache = cache_dir();
    let writable = cache
        .as_ref()
        .filter(|d| std::fs::create_dir_all(d).is_ok() && dir_is_writable(d));
    let mut hit = false;
    let mut lib = None;
    let mut path = None;
    if let Some(d) = &cache {
        let p = d.join(format!("{key}.so"));
        if p.exists() {
            if entry_is_intact(&p) {
                lib = unsafe { libloading::Library::new(&p) }.ok();
                if lib.is_some() {
                    hit = true;
                    // Least-recently-used eviction goes by modification time.
                    if let Ok(f) = std::fs::File::options().append(true).open(&p) {
                        let _ = f.set_modified(std::time::SystemTime::now());
                    }
                }
            }
            if lib.is_none() && writable.is_some() {
                // Truncated, corrupt, unverifiable or foreign: never dlopen it again.
                remove_entry(&p);
            }
        }
        path = Some(p);
    }
    let mut compiler = None;
    let (lib, path) = match lib {
        Some(l) => (l, path.unwrap_or_default()),
        None => {
            let mut kc = Kernelc::find().map_err(|e| match &cache {
                None => format!("LPUC_KERNEL_CACHE=off: the kernels must be compiled, but {e}"),
                Some(d) => format!(
                    "the kernels for this model are not in the cache ({}) and must be \
                     compiled, but {e}",
                    d.display()
                ),
            })?;
            kc.isa = Some(host.tier);
            let tmp = std::env::temp_dir();
            let (work, publish) = match (writable, &path) {
                (Some(d), Some(p)) => (d.as_path(), Some(p.as_path())),
                _ => (tmp.as_path(), None),
            };
            let r = compile_and_open(&kc, &text, &key, work, publish)?;
            compiler = Some(kc.path);
            if let Some(d) = writable {
                prune(d, MAX_CACHE_ENTRIES);
            }
            r
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

/// Whether files can be created in `d` (permissions alone do not say: root ignores them,
/// and a read-only mount refuses everyone).
fn dir_is_writable(d: &Path) -> bool {
    let probe = d.join(format!(
        ".lpuc-probe-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// Writes a module's LLVM IR for this host, its optimised IR and its object file into
/// `dir` (`kernels.ll`, `kernels.opt.ll`, `kernels.o`), compiled by `lpuc-kernelc` exactly
/// as [`load`] would compile it.
pub fn dump(m: &ModuleText, host: &Host, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut kc = Kernelc::find()?;
    kc.isa = Some(host.tier);
    kc.dump(&m.render_for_host(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "lpuc-jit-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_entry_is_intact_only_with_a_matching_sidecar() {
        let d = tmp();
        let so = d.join("k.so");
        std::fs::write(&so, b"module bytes").unwrap();
        assert!(!entry_is_intact(&so), "no sidecar");
        std::fs::write(sidecar(&so), file_sha256(&so).unwrap() + "\n").unwrap();
        assert!(entry_is_intact(&so));
        std::fs::write(&so, b"module byte").unwrap();
        assert!(!entry_is_intact(&so), "truncated");
        remove_entry(&so);
        assert!(!so.exists() && !sidecar(&so).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn prune_keeps_the_most_recently_used() {
        let d = tmp();
        let t0 = std::time::SystemTime::now();
        for i in 0..10u64 {
            let so = d.join(format!("{i}.so"));
            std::fs::write(&so, b"x").unwrap();
            std::fs::write(sidecar(&so), b"h").unwrap();
            let f = std::fs::File::options().append(true).open(&so).unwrap();
            f.set_modified(t0 - Duration::from_secs(100 - i)).unwrap();
        }
        prune(&d, 4);
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "6.so",
                "6.so.sha256",
                "7.so",
                "7.so.sha256",
                "8.so",
                "8.so.sha256",
                "9.so",
                "9.so.sha256"
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_timeout_comes_from_the_environment_or_the_default() {
        // Parsing only; the kill is tested end to end in tests/robust.rs.
        assert_eq!(DEFAULT_COMPILE_TIMEOUT, Duration::from_secs(60));
        assert!(compile_timeout() > Duration::ZERO);
    }
}

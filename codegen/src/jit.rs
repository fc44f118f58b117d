//! Compiling kernel modules for the host and caching them on disk.
//!
//! The module text (every kernel specialised to its shapes) is parsed by LLVM, optimised
//! with the new pass manager's `default<O3>` for the host CPU (its name and features are
//! on every function as attributes *and* on the target machine, otherwise LLVM codegens
//! for baseline x86-64), emitted as an object file and linked into a shared object that
//! is `dlopen`ed. The shared object is cached under a hash of the module text, the host
//! CPU and features and the LLVM version, so a warm start only hashes text and maps a
//! file. Set `LPUC_KERNEL_CACHE=off` to compile into a private temp dir every time, or
//! `LPUC_KERNEL_CACHE=<dir>` to choose the cache directory (default
//! `~/.cache/lpuc/kernels`).

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use inkwell::OptimizationLevel;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::irtext::ModuleText;

/// The host as LLVM sees it.
#[derive(Clone, Debug)]
pub struct Host {
    pub cpu: String,
    pub features: String,
}

impl Host {
    pub fn detect() -> Host {
        Host {
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        }
    }

    pub fn has(&self, feat: &str) -> bool {
        self.features.split(',').any(|f| f == format!("+{feat}"))
    }

    /// AVX-512 VNNI (`vpdpbusd` on zmm) with BW for byte ops: the fast int8 path.
    pub fn vnni512(&self) -> bool {
        self.has("avx512vnni") && self.has("avx512bw") && self.has("avx512f")
    }
}

/// How a module was obtained.
#[derive(Clone, Debug, Default)]
pub struct CompileStats {
    pub cache_hit: bool,
    pub seconds: f64,
    pub path: Option<PathBuf>,
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

fn target_machine(host: &Host) -> Result<TargetMachine, String> {
    Target::initialize_native(&InitializationConfig::default())?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| e.to_string())?;
    target
        .create_target_machine(
            &triple,
            &host.cpu,
            &host.features,
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| "LLVM could not create a target machine for the host".to_string())
}

/// Parses, verifies and optimises `text`; returns the object file bytes and, if asked, the
/// optimised IR.
pub fn compile_object(
    text: &str,
    host: &Host,
    want_ir: bool,
) -> Result<(Vec<u8>, Option<String>), String> {
    let ctx = Context::create();
    let buf = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), "lpuc_kernels");
    let module = ctx
        .create_module_from_ir(buf)
        .map_err(|e| format!("generated IR does not parse: {}", e.to_string()))?;
    module
        .verify()
        .map_err(|e| format!("generated IR does not verify: {}", e.to_string()))?;
    let tm = target_machine(host)?;
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
        .run_passes("default<O3>", &tm, PassBuilderOptions::create())
        .map_err(|e| format!("LLVM passes failed: {}", e.to_string()))?;
    let ir = want_ir.then(|| module.print_to_string().to_string());
    let obj = tm
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| format!("LLVM codegen failed: {}", e.to_string()))?;
    Ok((obj.as_slice().to_vec(), ir))
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var("LPUC_KERNEL_CACHE") {
        Ok(v) if v == "off" || v == "0" => None,
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => dirs::cache_dir().map(|d| d.join("lpuc").join("kernels")),
    }
}

/// The cache key of a module for a host.
pub fn cache_key(text: &str, host: &Host) -> String {
    let mut h = Sha256::new();
    h.update(b"lpuc-kernels-v1\0llvm19\0");
    h.update(host.cpu.as_bytes());
    h.update(b"\0");
    h.update(host.features.as_bytes());
    h.update(b"\0");
    h.update(text.as_bytes());
    let d = h.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn link(obj: &[u8], out: &Path) -> Result<(), String> {
    let dir = out.parent().ok_or("cache path has no parent")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tag = format!("{}.{}", std::process::id(), rand_suffix());
    let o = dir.join(format!("tmp-{tag}.o"));
    let so = dir.join(format!("tmp-{tag}.so"));
    std::fs::write(&o, obj).map_err(|e| format!("{}: {e}", o.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let r = std::process::Command::new(&cc)
        .args(["-shared", "-o"])
        .arg(&so)
        .arg(&o)
        .arg("-lm")
        .output();
    let _ = std::fs::remove_file(&o);
    match r {
        Ok(r) if r.status.success() => {}
        Ok(r) => {
            return Err(format!(
                "linking kernels with `{cc}` failed: {}",
                String::from_utf8_lossy(&r.stderr)
            ))
        }
        Err(e) => return Err(format!("cannot run the linker `{cc}` (set CC): {e}")),
    }
    // Atomic publish: concurrent compilers of the same module both succeed.
    std::fs::rename(&so, out).map_err(|e| format!("{}: {e}", out.display()))
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// Compiles (or loads from the cache) a module and resolves `symbols`.
pub fn load(m: &ModuleText, host: &Host, symbols: &[String]) -> Result<Kernels, String> {
    let t0 = Instant::now();
    let text = m.render(&host.cpu, &host.features);
    let key = cache_key(&text, host);
    let (path, _tmp) = match cache_dir() {
        Some(d) => (d.join(format!("{key}.so")), None),
        None => {
            let d = std::env::temp_dir().join(format!(
                "lpuc-kernels-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            (d.join(format!("{key}.so")), Some(d))
        }
    };
    let mut hit = path.exists();
    let lib = if hit {
        // A truncated or foreign file falls through to a recompile.
        unsafe { libloading::Library::new(&path) }.ok()
    } else {
        None
    };
    let lib = match lib {
        Some(l) => l,
        None => {
            hit = false;
            let (obj, _) = compile_object(&text, host, false)?;
            link(&obj, &path)?;
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
    if let Some(d) = _tmp {
        // The mapping stays valid after unlinking.
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(Kernels {
        _lib: lib,
        syms,
        stats: CompileStats {
            cache_hit: hit,
            seconds: t0.elapsed().as_secs_f64(),
            path: Some(path),
        },
    })
}

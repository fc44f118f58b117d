//! `lpuc-kernelc`: compiles a kernel module's LLVM IR text for the host CPU and links it
//! into a shared object. The only crate of lpuc that links libLLVM; the runtime runs its
//! binary on a kernel-cache miss (see `lpuc_codegen::jit`), so the `lpuc` process never
//! maps LLVM (~45 MB of resident memory) and a crash inside LLVM cannot take it down.
//!
//! The module text is parsed, verified and optimised with the new pass manager's
//! [`PIPELINE`] for the host CPU: its name and features are on every function as
//! attributes (the text's placeholders, see `ModuleText::render_for_host`) *and* on the
//! target machine, otherwise LLVM codegens for baseline x86-64. The object is linked with
//! `cc -shared` (or `$CC`) and published by an atomic rename.

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use inkwell::OptimizationLevel;
use std::path::Path;

use lpuc_codegen::irtext::resolve_host;
pub use lpuc_codegen::jit::{compiler_id, LLVM_MAJOR, PIPELINE};

/// The host as LLVM sees it. Any change to the target machine options below must change
/// the tag in [`compiler_id`] (it is part of the kernel cache key).
#[derive(Clone, Debug)]
pub struct LlvmHost {
    pub cpu: String,
    pub features: String,
}

impl LlvmHost {
    pub fn detect() -> LlvmHost {
        LlvmHost {
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        }
    }

    /// The target a kernel tier compiles for: the host's own CPU and features at the top
    /// tier, the generic x86-64-v3 machine (plus the tier's features) below it.
    pub fn for_tier(t: lpuc_host::Tier) -> LlvmHost {
        match t.llvm_target() {
            None => LlvmHost::detect(),
            Some((cpu, features)) => LlvmHost {
                cpu: cpu.to_string(),
                features: features.to_string(),
            },
        }
    }

    pub fn has(&self, feat: &str) -> bool {
        self.features.split(',').any(|f| f == format!("+{feat}"))
    }

    /// A module's text with the host placeholders filled in.
    pub fn resolve(&self, text: &str) -> String {
        resolve_host(text, &self.cpu, &self.features)
    }
}

/// Refuses an LLVM other than the one [`compiler_id`] (the cache key) names.
pub fn check_llvm_version() -> Result<(), String> {
    let (major, minor, patch) = inkwell::support::get_llvm_version();
    if major != LLVM_MAJOR {
        return Err(format!(
            "linked against LLVM {major}.{minor}.{patch}, but the kernel cache key assumes \
             LLVM {LLVM_MAJOR}"
        ));
    }
    Ok(())
}

fn target_machine(host: &LlvmHost) -> Result<TargetMachine, String> {
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

/// Parses, verifies and optimises `text` (host placeholders are filled in from `host`);
/// returns the object file bytes and, if asked, the optimised IR.
pub fn compile_object(
    text: &str,
    host: &LlvmHost,
    want_ir: bool,
) -> Result<(Vec<u8>, Option<String>), String> {
    let text = host.resolve(text);
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
        .run_passes(PIPELINE, &tm, PassBuilderOptions::create())
        .map_err(|e| format!("LLVM passes failed: {}", e.to_string()))?;
    let ir = want_ir.then(|| module.print_to_string().to_string());
    let obj = tm
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| format!("LLVM codegen failed: {}", e.to_string()))?;
    Ok((obj.as_slice().to_vec(), ir))
}

/// Links an object file into the shared object `out` with `cc -shared … -lm` (`$CC` if
/// set), through a temporary name in the same directory and an atomic rename, so
/// concurrent compilers of the same module both succeed and no reader sees a partial file.
pub fn link(obj: &[u8], out: &Path) -> Result<(), String> {
    let dir = out.parent().ok_or("output path has no parent")?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
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
            let _ = std::fs::remove_file(&so);
            return Err(format!(
                "linking kernels with `{cc}` failed: {}",
                String::from_utf8_lossy(&r.stderr)
            ));
        }
        Err(e) => return Err(format!("cannot run the linker `{cc}` (set CC): {e}")),
    }
    std::fs::rename(&so, out).map_err(|e| {
        let _ = std::fs::remove_file(&so);
        format!("{}: {e}", out.display())
    })
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

//! The compiler binary end to end (the protocol `lpuc_codegen::jit` speaks), and the
//! machine code of the hot kernel.

use lpuc_codegen::irtext::{HOST_CPU, HOST_FEATURES};
use lpuc_codegen::jit::{compiler_id, Kernelc};
use lpuc_codegen::kernels::{module_for, KernelSpec};
use lpuc_kernelc::{compile_object, LlvmHost};
use std::path::PathBuf;

fn kernelc() -> Kernelc {
    Kernelc {
        path: PathBuf::from(env!("CARGO_BIN_EXE_lpuc-kernelc")),
        isa: None,
    }
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lpuc-kernelc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

type Bin = extern "C" fn(*const f32, *const f32, *mut f32, i64, i64);

/// Text with host placeholders in, a shared object out whose kernel runs.
#[test]
fn compiles_a_module_into_a_loadable_shared_object() {
    let dir = scratch("so");
    let out = dir.join("k.so");
    let spec = KernelSpec::Add;
    let text = module_for(std::slice::from_ref(&spec)).render_for_host();
    assert!(text.contains(HOST_CPU) && text.contains(HOST_FEATURES));
    kernelc().compile(&text, &out).unwrap();
    assert!(out.is_file());
    // Only the published file is left: temporaries are renamed or removed.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let lib = unsafe { libloading::Library::new(&out) }.unwrap();
    let f: libloading::Symbol<Bin> = unsafe { lib.get(spec.symbol().as_bytes()) }.unwrap();
    let (a, b) = ([1f32, 2., 3., 4.], [10f32, 20., 30., 40.]);
    let mut y = [0f32; 4];
    f(a.as_ptr(), b.as_ptr(), y.as_mut_ptr(), 0, 4);
    assert_eq!(y, [11., 22., 33., 44.]);
    drop(lib);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--dump-dir` writes the text with LLVM's host CPU and features in every attribute.
#[test]
fn dump_dir_has_the_host_rendered_in() {
    let dir = scratch("dump");
    let text = module_for(&[KernelSpec::SwiGlu]).render_for_host();
    kernelc().dump(&text, &dir).unwrap();
    let ll = std::fs::read_to_string(dir.join("kernels.ll")).unwrap();
    let host = LlvmHost::detect();
    assert!(!ll.contains(HOST_CPU) && !ll.contains(HOST_FEATURES));
    assert!(ll.contains(&format!("\"target-cpu\"=\"{}\"", host.cpu)));
    assert!(ll.contains(&format!("\"target-features\"=\"{}\"", host.features)));
    let opt = std::fs::read_to_string(dir.join("kernels.opt.ll")).unwrap();
    assert!(opt.contains("define"), "no optimised IR:\n{opt}");
    assert!(std::fs::metadata(dir.join("kernels.o")).unwrap().len() > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Failures come back as errors carrying the compiler's message; nothing is published.
#[test]
fn bad_input_is_a_clear_error() {
    let dir = scratch("bad");
    let out = dir.join("k.so");
    let e = kernelc().compile("define void @f( {\n", &out).unwrap_err();
    assert!(e.contains("failed") && e.contains("does not parse"), "{e}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A binary from another build (another compiler id) refuses to compile.
#[test]
fn a_foreign_caller_id_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lpuc-kernelc"))
        .args([
            "--expect-id",
            "lpuc-kernelc 0.0.0 llvm1",
            "-o",
            "/nonexistent/x.so",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("different build"), "{err}");
    let id = std::process::Command::new(env!("CARGO_BIN_EXE_lpuc-kernelc"))
        .arg("--id")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), compiler_id());
}

/// The one host detection (`lpuc-host`, std's CPUID view) agrees with the features LLVM
/// compiles for, or a kernel tier chosen at run time could use instructions LLVM was not
/// allowed to emit (or the reverse).
#[test]
fn std_and_llvm_agree_on_features() {
    let f = lpuc_host::Features::detect();
    let llvm = LlvmHost::detect();
    for (name, std_has) in [
        ("avx2", f.avx2),
        ("fma", f.fma),
        ("f16c", f.f16c),
        ("avx512f", f.avx512f),
        ("avx512bw", f.avx512bw),
        ("avx512vnni", f.avx512vnni),
        ("avxvnni", f.avxvnni),
    ] {
        assert_eq!(std_has, llvm.has(name), "feature {name}: std vs LLVM");
    }
}

/// The hot loop must use the host's vector ISA: AVX-512 VNNI `vpdpbusd` on zmm registers
/// and FMA. Reproduce by hand with `lpuc bench --dump-kernels DIR` + `objdump -d`.
#[test]
fn qmatmul_disassembly_uses_vnni_and_fma() {
    if !lpuc_host::Features::detect().vnni512() {
        eprintln!(
            "skipped: the host lacks AVX-512 VNNI, so the VNNI kernel cannot be checked here"
        );
        return;
    }
    let host = LlvmHost::detect();
    let spec = KernelSpec::QMatmul {
        n: 576,
        k: 576,
        bits: 4,
        vnni: true,
        m_tile: lpuc_codegen::kernels::QMM_TILE,
    };
    let text = module_for(std::slice::from_ref(&spec)).render_for_host();
    let (obj, _) = compile_object(&text, &host, false).unwrap();
    let dir = std::env::temp_dir().join(format!("lpuc-disasm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("qmm.o");
    std::fs::write(&p, &obj).unwrap();
    // objdump comes with binutils, which the linker step (`cc -shared`) needs anyway.
    let out = std::process::Command::new("objdump")
        .arg("-d")
        .arg(&p)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .expect("objdump (binutils) is needed for this check");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.contains("vpdpbusd") && out.contains("zmm"),
        "no zmm vpdpbusd in:\n{out}"
    );
    assert!(out.contains("vfmadd"), "no FMA in the qmatmul kernel");
    assert!(
        out.contains("vcvtph2ps"),
        "f16 scales should convert with vcvtph2ps"
    );
}

/// A lower tier compiled on an AVX-512 host must not use AVX-512: no zmm registers, no
/// mask registers, no EVEX-only registers (xmm/ymm 16–31).
#[test]
fn avx2_tier_emits_no_avx512() {
    let spec = KernelSpec::QMatmul {
        n: 64,
        k: 64,
        bits: 4,
        vnni: false,
        m_tile: lpuc_codegen::kernels::QMM_TILE,
    };
    for tier in [lpuc_host::Tier::Avx2, lpuc_host::Tier::AvxVnni] {
        let host = LlvmHost::for_tier(tier);
        let text = module_for(&[spec.clone(), KernelSpec::Quantize { k: 64 }]).render_for_host();
        let (obj, _) = compile_object(&text, &host, false).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "lpuc-disasm-{}-{}",
            tier.name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.o");
        std::fs::write(&p, &obj).unwrap();
        let out = std::process::Command::new("objdump")
            .arg("-d")
            .arg(&p)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let _ = std::fs::remove_dir_all(&dir);
        let Ok(out) = out else {
            panic!("objdump is needed for this check (binutils)");
        };
        assert!(
            out.contains("vfmadd") || out.contains("vpmadd"),
            "{}: no AVX2 code:\n{out}",
            tier.name()
        );
        for bad in [
            "zmm", "%k1", "%k2", "xmm16", "ymm16", "ymm17", "ymm31", "{evex}",
        ] {
            assert!(!out.contains(bad), "{}: `{bad}` in:\n{out}", tier.name());
        }
    }
}

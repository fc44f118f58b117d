//! `lpuc-kernelc`: the out-of-process kernel compiler `lpuc` runs on a kernel-cache miss.
//! See the library docs and `lpuc_codegen::jit` for the protocol.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use lpuc_kernelc::{check_llvm_version, compile_object, compiler_id, link, LlvmHost};

const USAGE: &str = "\
usage: lpuc-kernelc [--expect-id ID] [--isa TIER] [-i IN.ll] [-o OUT.so] [--dump-dir DIR]
       lpuc-kernelc --host | --id | --version

Compiles LLVM IR kernel text (from IN.ll, or stdin) for this host CPU with default<O3>.
  -o OUT.so        link a shared object with `cc -shared` (or $CC); OUT.so appears atomically
  --dump-dir DIR   write DIR/kernels.ll (text for this host), DIR/kernels.opt.ll (optimised)
                   and DIR/kernels.o
  --isa TIER       avx2 | avxvnni (the generic x86-64-v3 CPU with that tier's features: no
                   AVX-512, no EVEX) | avx512vnni (the host's own CPU); default: the host's
  --expect-id ID   fail unless ID is this compiler's id (lpuc passes its own; a mismatch
                   means lpuc and lpuc-kernelc come from different builds)
  --host           print LLVM's host CPU name and feature string
  --id             print this compiler's id (part of lpuc's kernel cache key)
";

struct Args {
    expect_id: Option<String>,
    isa: Option<lpuc_host::Tier>,
    input: Option<PathBuf>,
    out: Option<PathBuf>,
    dump_dir: Option<PathBuf>,
}

enum Mode {
    Compile(Args),
    Host,
    Id,
    Version,
    Help,
}

fn parse() -> Result<Mode, String> {
    let mut a = Args {
        expect_id: None,
        isa: None,
        input: None,
        out: None,
        dump_dir: None,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy().into_owned();
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))
                .map(PathBuf::from)
        };
        match arg.as_str() {
            "--expect-id" => {
                a.expect_id = Some(value("--expect-id")?.to_string_lossy().into_owned())
            }
            "-i" => a.input = Some(value("-i")?),
            "-o" => a.out = Some(value("-o")?),
            "--dump-dir" => a.dump_dir = Some(value("--dump-dir")?),
            "--isa" => {
                let v = value("--isa")?.to_string_lossy().into_owned();
                a.isa = Some(lpuc_host::Tier::parse(&v)?);
            }
            "--host" => return Ok(Mode::Host),
            "--id" => return Ok(Mode::Id),
            "-V" | "--version" => return Ok(Mode::Version),
            "-h" | "--help" => return Ok(Mode::Help),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if a.out.is_none() && a.dump_dir.is_none() {
        return Err("nothing to do: give -o OUT.so and/or --dump-dir DIR".into());
    }
    Ok(Mode::Compile(a))
}

fn compile(a: Args) -> Result<(), String> {
    let id = compiler_id();
    if let Some(want) = &a.expect_id {
        if *want != id {
            return Err(format!(
                "this lpuc-kernelc is from a different build than its caller (its id is \
                 `{id}`, the caller expects `{want}`): rebuild both with \
                 `cargo build --release --workspace`, or set LPUC_KERNELC to the matching binary"
            ));
        }
    }
    check_llvm_version()?;
    let text = match &a.input {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("reading the module from stdin: {e}"))?;
            s
        }
    };
    let host = match a.isa {
        Some(t) => LlvmHost::for_tier(t),
        None => LlvmHost::detect(),
    };
    let (obj, ir) = compile_object(&text, &host, a.dump_dir.is_some())?;
    if let Some(dir) = &a.dump_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))
        };
        write("kernels.ll", host.resolve(&text).as_bytes())?;
        write("kernels.opt.ll", ir.unwrap_or_default().as_bytes())?;
        write("kernels.o", &obj)?;
    }
    if let Some(out) = &a.out {
        link(&obj, out)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let mode = match parse() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("lpuc-kernelc: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match mode {
        Mode::Compile(a) => compile(a),
        Mode::Host => {
            let h = LlvmHost::detect();
            println!("cpu: {}\nfeatures: {}", h.cpu, h.features);
            Ok(())
        }
        Mode::Id => {
            println!("{}", compiler_id());
            Ok(())
        }
        Mode::Version => {
            let (ma, mi, pa) = inkwell::support::get_llvm_version();
            println!(
                "lpuc-kernelc {} (LLVM {ma}.{mi}.{pa})",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Mode::Help => {
            print!("{USAGE}");
            Ok(())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lpuc-kernelc: {e}");
            ExitCode::FAILURE
        }
    }
}

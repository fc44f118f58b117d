//! A small writer for LLVM IR text: a module (declarations + functions) and a function
//! builder with fresh temporaries and counted loops with carried values. Kernels are
//! generated as text because specialised straight-line vector code reads far better as IR
//! than as a chain of builder calls; `lpuc-kernelc` parses, verifies and optimises it.

use std::collections::BTreeSet;
use std::fmt::Write;

/// An f32 constant in the hex form LLVM IR requires for values that are not exact decimals.
pub fn f32c(x: f32) -> String {
    format!("0x{:016X}", f64::from(x).to_bits())
}

pub fn f64c(x: f64) -> String {
    format!("0x{:016X}", x.to_bits())
}

/// `<n x ty> <ty v, ty v, ...>` splat constant.
pub fn splat(n: usize, ty: &str, v: &str) -> String {
    let e: Vec<String> = (0..n).map(|_| format!("{ty} {v}")).collect();
    format!("<{}>", e.join(", "))
}

/// Stands for the host CPU name (LLVM's `-mcpu`) in [`ModuleText::render_for_host`]'s text;
/// `lpuc-kernelc` substitutes LLVM's answer (see [`resolve_host`]).
pub const HOST_CPU: &str = "@lpuc.host.cpu@";
/// Stands for the host feature string (LLVM's `-mattr`), like [`HOST_CPU`].
pub const HOST_FEATURES: &str = "@lpuc.host.features@";

/// Replaces the [`HOST_CPU`]/[`HOST_FEATURES`] placeholders of a module's text.
pub fn resolve_host(text: &str, cpu: &str, features: &str) -> String {
    text.replace(HOST_CPU, cpu).replace(HOST_FEATURES, features)
}

#[derive(Default)]
pub struct ModuleText {
    decls: BTreeSet<String>,
    funcs: String,
}

impl ModuleText {
    pub fn declare(&mut self, d: &str) {
        self.decls.insert(d.to_string());
    }

    pub fn push_fn(&mut self, f: Fb) {
        self.funcs.push_str(&f.s);
        self.funcs.push_str("}\n\n");
    }

    pub fn has_fn(&self, sym: &str) -> bool {
        self.funcs.contains(&format!("@{sym}("))
    }

    pub fn push_raw(&mut self, s: &str) {
        self.funcs.push_str(s);
    }

    /// The complete module; `cpu`/`features` become every function's attributes (without
    /// them LLVM compiles for a generic x86-64 and ignores AVX2/AVX-512).
    pub fn render(&self, cpu: &str, features: &str) -> String {
        let mut s = String::new();
        s.push_str("; lpuc generated kernels\n");
        for d in &self.decls {
            s.push_str(d);
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.funcs);
        let _ = writeln!(
            s,
            "attributes #0 = {{ nounwind \"target-cpu\"=\"{cpu}\" \"target-features\"=\"{features}\" \"prefer-vector-width\"=\"512\" \"min-legal-vector-width\"=\"512\" }}"
        );
        let _ = writeln!(
            s,
            "attributes #1 = {{ alwaysinline nounwind \"target-cpu\"=\"{cpu}\" \"target-features\"=\"{features}\" \"prefer-vector-width\"=\"512\" \"min-legal-vector-width\"=\"512\" }}"
        );
        s
    }

    /// The complete module for "the host", whatever LLVM will say it is: the attributes
    /// carry the [`HOST_CPU`]/[`HOST_FEATURES`] placeholders, which the compiler process
    /// (the only one that links LLVM) replaces with LLVM's host CPU name and features.
    pub fn render_for_host(&self) -> String {
        self.render(HOST_CPU, HOST_FEATURES)
    }
}

/// Function builder. `cur` is the label of the block being written.
pub struct Fb {
    pub s: String,
    pub cur: String,
    n: usize,
}

impl Fb {
    /// `define <sig> #0 {` (or `#1` for inline helpers) and an `entry` block.
    pub fn new(sig: &str, attr: u8) -> Fb {
        Fb {
            s: format!("define {sig} #{attr} {{\nentry:\n"),
            cur: "entry".into(),
            n: 0,
        }
    }

    /// A fresh temporary name (`%tN`).
    pub fn t(&mut self) -> String {
        self.n += 1;
        format!("%t{}", self.n)
    }

    /// A fresh label stem.
    pub fn id(&mut self, stem: &str) -> String {
        self.n += 1;
        format!("{stem}{}", self.n)
    }

    /// One instruction line.
    pub fn i(&mut self, line: impl AsRef<str>) {
        self.s.push_str("  ");
        self.s.push_str(line.as_ref());
        self.s.push('\n');
    }

    /// `%r = <rhs>` with a fresh `%r`, returned.
    pub fn v(&mut self, rhs: impl AsRef<str>) -> String {
        let t = self.t();
        self.i(format!("{t} = {}", rhs.as_ref()));
        t
    }

    pub fn label(&mut self, l: &str) {
        let _ = writeln!(self.s, "{l}:");
        self.cur = l.to_string();
    }

    /// `getelementptr` of `elem` type.
    pub fn gep(&mut self, elem: &str, base: &str, idx: &str) -> String {
        self.v(format!(
            "getelementptr inbounds {elem}, ptr {base}, i64 {idx}"
        ))
    }

    /// A splat of a scalar SSA value to `<n x ty>`.
    pub fn splat_v(&mut self, n: usize, ty: &str, v: &str) -> String {
        let a = self.v(format!(
            "insertelement <{n} x {ty}> poison, {ty} {v}, i64 0"
        ));
        self.v(format!(
            "shufflevector <{n} x {ty}> {a}, <{n} x {ty}> poison, <{n} x i32> zeroinitializer"
        ))
    }

    /// Counted loop `for iv in start..end` (i64, step 1). `carried` are `(name, type, init)`;
    /// the body must define `%<name>.n` for each; after the loop `%<name>` holds the final
    /// value. The body receives the builder and the induction variable's name.
    pub fn for_loop(
        &mut self,
        start: &str,
        end: &str,
        carried: &[(&str, &str, &str)],
        body: impl FnOnce(&mut Fb, &str),
    ) {
        let id = self.id("L");
        let iv = format!("%{id}.i");
        let pre = self.cur.clone();
        self.i(format!("br label %{id}.h"));
        self.label(&format!("{id}.h"));
        self.i(format!(
            "{iv} = phi i64 [{start}, %{pre}], [{iv}.n, %{id}.latch]"
        ));
        for (name, ty, init) in carried {
            self.i(format!(
                "%{name} = phi {ty} [{init}, %{pre}], [%{name}.n, %{id}.latch]"
            ));
        }
        self.i(format!("%{id}.c = icmp slt i64 {iv}, {end}"));
        self.i(format!("br i1 %{id}.c, label %{id}.b, label %{id}.x"));
        self.label(&format!("{id}.b"));
        body(self, &iv);
        self.i(format!("br label %{id}.latch"));
        self.label(&format!("{id}.latch"));
        self.i(format!("{iv}.n = add nsw i64 {iv}, 1"));
        self.i(format!("br label %{id}.h"));
        self.label(&format!("{id}.x"));
    }
}

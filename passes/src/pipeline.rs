//! Pipeline text: `canonicalize,fuse-int4-dequant,tile{target=cpu},plan-buffers{s=512}`.
//!
//! Grammar: passes separated by `,`; a pass is a name with optional `{key=value, …}`
//! (options separated by `,` or spaces). Whitespace, newlines and `//` comments are
//! ignored, so the default pipelines below are written in exactly the form `--passes=`
//! accepts, comments included.

use std::fmt;

/// The default CPU pipeline. Order matters; each line says why it is where it is.
pub const CPU_PIPELINE: &str = "
    canonicalize,          // identities first (repeat_kv{1}, transpose∘transpose, …) so each fusion
                           // pattern sees one spelling of its input
    fuse-int4-dequant,     // weights stay packed: matmul(x, dequant(w)) -> qmatmul(x, w)
    fold-rms-norm-scale,   // rms_norm(x)·w -> rms_norm(x, w)
    fuse-swiglu,           // silu(a)·b -> swiglu(a, b)
    flash-attention,       // softmax(scale·QKᵀ + causal)·V -> flash_attention; after canonicalize
    cse,                   // the fusions leave equal subterms across islands (one causal_mask)
    dce,                   // drop what the fusions orphaned (dequants, masks)
    tile{target=cpu},      // after every fusion: tiles are chosen for the final op set
    plan-buffers           // last: any later rewrite would invalidate lifetimes and offsets
";

/// The default Groq pipeline: the same fusions, LPU tiles (320×320 MXM, 320 lanes).
pub const GROQ_PIPELINE: &str = "
    canonicalize,          // identities first, as on CPU
    fuse-int4-dequant,     // int4 is unpacked on the VXM as it streams into the MXM
    fold-rms-norm-scale,
    fuse-swiglu,
    flash-attention,
    cse,
    dce,
    tile{target=groq},     // 320×320 weight tiles, 320-lane vectors
    plan-buffers           // last, as on CPU
";

/// One pass with its options, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassSpec {
    pub name: String,
    pub options: Vec<(String, String)>,
}

impl fmt::Display for PassSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.options.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.options.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// Prints a pipeline in its one-line canonical form.
pub fn print(specs: &[PassSpec]) -> String {
    specs
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Parses pipeline text. Errors say what was expected and where (a character column of
/// the comment-stripped text).
pub fn parse(text: &str) -> Result<Vec<PassSpec>, String> {
    let src = strip_comments(text);
    let cs: Vec<char> = src.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < cs.len() && cs[*i].is_whitespace() {
            *i += 1;
        }
    };
    let word = |i: &mut usize, stop: &dyn Fn(char) -> bool| {
        let s = *i;
        while *i < cs.len() && !stop(cs[*i]) {
            *i += 1;
        }
        cs[s..*i].iter().collect::<String>()
    };
    let mut out = Vec::new();
    skip_ws(&mut i);
    if i == cs.len() {
        return Err("empty pipeline".into());
    }
    loop {
        skip_ws(&mut i);
        let name = word(&mut i, &|c| !is_name_char(c));
        if name.is_empty() {
            let found = cs
                .get(i)
                .map_or("end of input".to_string(), |c| format!("`{c}`"));
            return Err(format!(
                "expected a pass name at column {}, found {found}",
                i + 1
            ));
        }
        let mut spec = PassSpec {
            name,
            options: vec![],
        };
        skip_ws(&mut i);
        if cs.get(i) == Some(&'{') {
            i += 1;
            loop {
                skip_ws(&mut i);
                match cs.get(i) {
                    Some('}') => {
                        i += 1;
                        break;
                    }
                    Some(',') => {
                        i += 1;
                        continue;
                    }
                    None => return Err(format!("unclosed `{{` in the options of `{}`", spec.name)),
                    _ => {}
                }
                let key = word(&mut i, &|c| !is_name_char(c));
                if key.is_empty() {
                    return Err(format!(
                        "expected an option name in `{}{{…}}` at column {}",
                        spec.name,
                        i + 1
                    ));
                }
                skip_ws(&mut i);
                if cs.get(i) != Some(&'=') {
                    return Err(format!(
                        "option `{key}` of `{}` needs a value: `{key}=…`",
                        spec.name
                    ));
                }
                i += 1;
                skip_ws(&mut i);
                let val = word(&mut i, &|c| c == ',' || c == '}' || c.is_whitespace());
                if val.is_empty() {
                    return Err(format!(
                        "option `{key}` of `{}` has an empty value",
                        spec.name
                    ));
                }
                spec.options.push((key, val));
            }
        }
        out.push(spec);
        skip_ws(&mut i);
        match cs.get(i) {
            None => break,
            Some(',') => {
                i += 1;
                skip_ws(&mut i);
                if i == cs.len() {
                    break; // a trailing comma is fine
                }
            }
            Some(c) => {
                return Err(format!(
                    "expected `,` between passes at column {}, found `{c}`",
                    i + 1
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_comments() {
        let p = parse("canonicalize, tile{target=groq}, plan-buffers{s=512 b=1}").unwrap();
        assert_eq!(
            print(&p),
            "canonicalize,tile{target=groq},plan-buffers{s=512,b=1}"
        );
        let cpu = parse(CPU_PIPELINE).unwrap();
        assert_eq!(parse(&print(&cpu)).unwrap(), cpu);
        assert_eq!(cpu.last().unwrap().name, "plan-buffers");
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(parse("").unwrap_err(), "empty pipeline");
        assert_eq!(
            parse("a b").unwrap_err(),
            "expected `,` between passes at column 3, found `b`"
        );
        assert_eq!(
            parse("tile{target}").unwrap_err(),
            "option `target` of `tile` needs a value: `target=…`"
        );
        assert_eq!(
            parse("tile{target=cpu").unwrap_err(),
            "unclosed `{` in the options of `tile`"
        );
        assert_eq!(
            parse("a,,b").unwrap_err(),
            "expected a pass name at column 3, found `,`"
        );
    }
}

//! Every pass by name: what `lpuc passes --list` prints and what pipeline text resolves to.

use crate::pass::Pass;
use crate::passes;
use crate::pipeline::PassSpec;
use crate::target::TargetKind;

/// One option a pass accepts.
pub struct OptInfo {
    pub name: &'static str,
    pub help: &'static str,
}

pub struct PassInfo {
    pub name: &'static str,
    /// One line, printed by `lpuc passes --list`.
    pub summary: &'static str,
    pub options: &'static [OptInfo],
    pub create: fn(&Options) -> Result<Box<dyn Pass>, String>,
}

/// The options given to one pass, already checked against its [`PassInfo::options`].
pub struct Options {
    pub pass: String,
    pub items: Vec<(String, String)>,
}

impl Options {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.items
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    format!(
                        "option `{key}` of `{}` must be a non-negative integer, found `{v}`",
                        self.pass
                    )
                })
            })
            .transpose()
    }

    pub fn target(&self) -> Result<Option<TargetKind>, String> {
        self.get("target")
            .map(|v| {
                TargetKind::parse(v).map_err(|m| format!("option `target` of `{}`: {m}", self.pass))
            })
            .transpose()
    }
}

macro_rules! opts {
    ($($n:literal : $h:literal),* $(,)?) => { &[$(OptInfo { name: $n, help: $h }),*] };
}

/// The registry, in the order the default pipeline uses them.
pub static PASSES: &[PassInfo] = &[
    PassInfo {
        name: "canonicalize",
        summary: "algebraic identities by egg: scale₁, scale∘scale, transpose∘transpose, reshape∘reshape, dequant(f32), repeat_kv₁",
        options: &[],
        create: |_| Ok(Box::new(passes::canonicalize::Canonicalize)),
    },
    PassInfo {
        name: "dce",
        summary: "remove nodes no output or state update depends on",
        options: &[],
        create: |_| Ok(Box::new(passes::dce::Dce)),
    },
    PassInfo {
        name: "cse",
        summary: "merge pure nodes with the same op, operands, type and annotations",
        options: &[],
        create: |_| Ok(Box::new(passes::cse::Cse)),
    },
    PassInfo {
        name: "fuse-int4-dequant",
        summary: "matmul(x, dequant(w)) -> qmatmul(x, w) for every weight format; embeddings read packed rows",
        options: &[],
        create: |_| Ok(Box::new(passes::fuse_int4_dequant::FuseInt4Dequant)),
    },
    PassInfo {
        name: "fold-rms-norm-scale",
        summary: "mul(rms_norm(x), w) -> rms_norm(x, w)",
        options: &[],
        create: |_| Ok(Box::new(passes::fold_rms_norm_scale::FoldRmsNormScale)),
    },
    PassInfo {
        name: "fuse-swiglu",
        summary: "mul(silu(a), b) -> swiglu(a, b)",
        options: &[],
        create: |_| Ok(Box::new(passes::fuse_swiglu::FuseSwiglu)),
    },
    PassInfo {
        name: "flash-attention",
        summary: "softmax(scale·Q·Kᵀ + causal mask)·V (GQA, KV cache) -> one flash_attention",
        options: opts!["block": "key-block size of the fused op (default 64; `tile` refines it)"],
        create: |o| {
            let block = o.u64("block")?.unwrap_or(64);
            let block = u32::try_from(block).ok().filter(|b| *b > 0).ok_or_else(|| {
                format!("option `block` of `flash-attention` must be in 1..=4294967295, found {block}")
            })?;
            Ok(Box::new(passes::flash_attention::FlashAttention { block }))
        },
    },
    PassInfo {
        name: "tile",
        summary: "tile sizes on matmul/qmatmul/flash_attention from a target description (cpu: caches; groq: 320×320 MXM)",
        options: opts![
            "target": "cpu or groq (default: the pipeline's target)",
            "l1": "cpu L1d bytes per core",
            "l2": "cpu L2 bytes per core",
            "lanes": "cpu f32 lanes per vector register",
        ],
        create: |o| passes::tile::Tile::from_options(o).map(|t| Box::new(t) as Box<dyn Pass>),
    },
    PassInfo {
        name: "plan-buffers",
        summary: "execution order + liveness -> arena offsets (mem.step/offset/size); peak vs naive vs max-live bound",
        options: opts![
            "b": "plan for batch B (default: its bound)",
            "p": "plan for P cached tokens (default: its bound)",
            "s": "plan for S new tokens (default: its bound); e.g. s=1 decode, s=512 prefill",
        ],
        create: |o| {
            Ok(Box::new(passes::plan_buffers::PlanBuffers {
                b: o.u64("b")?,
                p: o.u64("p")?,
                s: o.u64("s")?,
            }))
        },
    },
];

pub fn lookup(name: &str) -> Result<&'static PassInfo, String> {
    PASSES.iter().find(|p| p.name == name).ok_or_else(|| {
        let hint = lpuc_ir::text::did_you_mean(name, PASSES.iter().map(|p| p.name))
            .map(|h| format!("; did you mean `{h}`?"))
            .unwrap_or_default();
        format!("unknown pass `{name}`{hint} (`lpuc passes --list` shows them all)")
    })
}

/// Resolves one spec to a pass, checking option names.
pub fn create(spec: &PassSpec) -> Result<Box<dyn Pass>, String> {
    let info = lookup(&spec.name)?;
    for (k, _) in &spec.options {
        if !info.options.iter().any(|o| o.name == k) {
            let hint = lpuc_ir::text::did_you_mean(k, info.options.iter().map(|o| o.name))
                .map(|h| format!("; did you mean `{h}`?"))
                .unwrap_or_default();
            let known = if info.options.is_empty() {
                " (it takes none)".to_string()
            } else {
                format!(
                    " (options: {})",
                    info.options
                        .iter()
                        .map(|o| o.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(format!(
                "pass `{}` has no option `{k}`{hint}{known}",
                spec.name
            ));
        }
    }
    (info.create)(&Options {
        pass: spec.name.clone(),
        items: spec.options.clone(),
    })
}

/// The `lpuc passes --list` text.
pub fn list() -> String {
    let w = PASSES.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let mut o = String::new();
    for p in PASSES {
        o.push_str(&format!("{:<w$}  {}\n", p.name, p.summary));
        for opt in p.options {
            o.push_str(&format!("{:<w$}    {{{}=…}} {}\n", "", opt.name, opt.help));
        }
    }
    o
}

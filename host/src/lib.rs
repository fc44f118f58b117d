//! `lpuc-host`: the one place lpuc asks what CPU it is running on.
//!
//! The tiler (`passes`), kernel selection (`codegen`) and the kernel compiler (`kernelc`)
//! all need the same answers — which vector ISA, how wide, how big the caches are — and
//! must not disagree, so they come from here. Detection uses `std::arch` (CPUID) and
//! Linux sysfs; nothing here links LLVM.

/// The x86-64 vector features lpuc's kernels choose between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vnni: bool,
    /// 256-bit VEX `vpdpbusd` (Alder Lake and later, Zen 4 client).
    pub avxvnni: bool,
}

impl Features {
    #[cfg(target_arch = "x86_64")]
    pub fn detect() -> Features {
        use std::arch::is_x86_feature_detected as has;
        Features {
            avx2: has!("avx2"),
            fma: has!("fma"),
            f16c: has!("f16c"),
            avx512f: has!("avx512f"),
            avx512bw: has!("avx512bw"),
            avx512vnni: has!("avx512vnni"),
            avxvnni: has!("avxvnni"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn detect() -> Features {
        Features::default()
    }

    /// AVX-512 VNNI (`vpdpbusd` on zmm) with BW for byte ops: the fast int8 path.
    pub fn vnni512(&self) -> bool {
        self.avx512vnni && self.avx512bw && self.avx512f
    }

    /// f32 lanes of the widest vector register the kernels use.
    pub fn f32_lanes(&self) -> u64 {
        if self.avx512f {
            16
        } else if self.avx2 {
            8
        } else {
            4
        }
    }
}

/// Per-core data cache sizes in bytes, from sysfs (`/sys/devices/system/cpu/cpu0/cache`);
/// `None` where the system does not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caches {
    pub l1d: Option<u64>,
    pub l2: Option<u64>,
    pub l3: Option<u64>,
}

impl Caches {
    pub fn detect() -> Caches {
        let mut c = Caches::default();
        let base = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
        let Ok(rd) = std::fs::read_dir(base) else {
            return c;
        };
        for e in rd.flatten() {
            let p = e.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
            else {
                continue;
            };
            let Some(bytes) = parse_size(size.trim()) else {
                continue;
            };
            match (level.trim(), kind.trim()) {
                ("1", "Data") => c.l1d = Some(bytes),
                ("2", "Unified" | "Data") => c.l2 = Some(bytes),
                ("3", "Unified") => c.l3 = Some(bytes),
                _ => {}
            }
        }
        c
    }
}

/// `48K`, `2048K`, `260M` → bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("2048K"), Some(2 << 20));
        assert_eq!(parse_size("260M"), Some(260 << 20));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn lanes_follow_features() {
        let f = Features {
            avx2: true,
            ..Features::default()
        };
        assert_eq!(f.f32_lanes(), 8);
        assert!(!f.vnni512());
        let f = Features {
            avx512f: true,
            avx512bw: true,
            avx512vnni: true,
            ..f
        };
        assert_eq!(f.f32_lanes(), 16);
        assert!(f.vnni512());
    }
}

/// A kernel tier: the instruction set the CPU kernels are compiled for. Ordered: a tier
/// runs on every host that has the features of the tiers above it in this list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// 256-bit AVX2 + FMA + F16C (x86-64-v3): every x86-64 CPU since Haswell / Zen 1.
    Avx2,
    /// AVX2 plus 256-bit VEX `vpdpbusd` (Alder Lake and later, Zen 5).
    AvxVnni,
    /// AVX-512 F/BW with VNNI (`vpdpbusd` on zmm): Ice Lake server and later, Zen 4.
    Avx512Vnni,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Avx2, Tier::AvxVnni, Tier::Avx512Vnni];
    pub const NAMES: [&'static str; 3] = ["avx2", "avxvnni", "avx512vnni"];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Avx2 => "avx2",
            Tier::AvxVnni => "avxvnni",
            Tier::Avx512Vnni => "avx512vnni",
        }
    }

    pub fn parse(s: &str) -> Result<Tier, String> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown ISA tier `{s}` (tiers: avx2, avxvnni, avx512vnni)"))
    }

    /// Whether a host with `f` can execute this tier's code.
    pub fn runs_on(self, f: &Features) -> bool {
        let base = f.avx2 && f.fma && f.f16c;
        match self {
            Tier::Avx2 => base,
            Tier::AvxVnni => base && f.avxvnni,
            Tier::Avx512Vnni => base && f.vnni512(),
        }
    }

    /// The highest tier the host runs (`None`: not even AVX2).
    pub fn best(f: &Features) -> Option<Tier> {
        Tier::ALL.into_iter().rev().find(|t| t.runs_on(f))
    }

    /// Every tier the host runs, lowest first.
    pub fn runnable(f: &Features) -> Vec<Tier> {
        Tier::ALL.into_iter().filter(|t| t.runs_on(f)).collect()
    }

    /// The tier to compile for: `requested` (a `--isa` flag), else `$LPUC_ISA`, else the
    /// host's best; an explicit tier the host cannot run is an error naming what it lacks.
    pub fn select(requested: Option<&str>) -> Result<Tier, String> {
        let f = Features::detect();
        let env = std::env::var("LPUC_ISA").ok().filter(|s| !s.is_empty());
        let (src, name) = match (requested, env.as_deref()) {
            (Some(r), _) => ("--isa", r.to_string()),
            (None, Some(e)) => ("LPUC_ISA", e.to_string()),
            (None, None) => {
                return Tier::best(&f).ok_or_else(|| {
                    "this CPU lacks AVX2/FMA/F16C, the lowest kernel tier lpuc has".to_string()
                })
            }
        };
        let t = Tier::parse(&name).map_err(|e| format!("{src}: {e}"))?;
        if !t.runs_on(&f) {
            return Err(format!(
                "{src} {name}: this CPU cannot run that tier (it runs: {})",
                Tier::runnable(&f)
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(t)
    }

    /// LLVM's target CPU and feature string for this tier, or `None` for "the host's" (the
    /// top tier is compiled for the exact host CPU). Lower tiers are the generic x86-64-v3
    /// machine, so an AVX-512 host compiling them emits no zmm and no EVEX encoding.
    pub fn llvm_target(self) -> Option<(&'static str, &'static str)> {
        match self {
            Tier::Avx2 => Some(("x86-64-v3", "+avx2,+fma,+f16c")),
            Tier::AvxVnni => Some(("x86-64-v3", "+avx2,+fma,+f16c,+avxvnni")),
            Tier::Avx512Vnni => None,
        }
    }
}

#[cfg(test)]
mod tier_tests {
    use super::*;

    #[test]
    fn tiers_order_and_parse() {
        for t in Tier::ALL {
            assert_eq!(Tier::parse(t.name()), Ok(t));
        }
        assert!(Tier::parse("sse2").is_err());
        let avx2 = Features {
            avx2: true,
            fma: true,
            f16c: true,
            ..Features::default()
        };
        assert_eq!(Tier::best(&avx2), Some(Tier::Avx2));
        assert_eq!(Tier::runnable(&avx2), vec![Tier::Avx2]);
        let zen4 = Features {
            avx512f: true,
            avx512bw: true,
            avx512vnni: true,
            ..avx2
        };
        assert_eq!(Tier::best(&zen4), Some(Tier::Avx512Vnni));
        assert!(!Tier::AvxVnni.runs_on(&zen4));
        assert_eq!(Tier::best(&Features::default()), None);
    }
}

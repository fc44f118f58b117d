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

//! Which processor this is: vendor, brand string, family / model / stepping and, where the
//! numbers are known, the microarchitecture.
//!
//! Kernel speed depends on the core, not only on the instruction set it supports: an AMD
//! Zen 4 and a Zen 5 both run grist's AVX-512 kernels, but Zen 4 executes a 512-bit
//! instruction as two 256-bit halves, so its `vpdpbusd zmm` peak per clock is half of Zen 5's
//! (docs/PERFORMANCE.md, "Round 12"). A virtual machine often shows only a generic brand
//! string ("AMD EPYC"), so `grist bench` prints the family and model numbers and the name
//! they imply next to every result: figures from two hosts are then comparable, or visibly
//! not.

use std::fmt;
use std::sync::OnceLock;

/// The identity of the CPU running this program (see [`CpuIdentity::detect`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuIdentity {
    /// Vendor, e.g. `AuthenticAMD`, `GenuineIntel` (x86 `cpuid` leaf 0); on other
    /// architectures the implementer from `/proc/cpuinfo`, or empty.
    pub vendor: String,
    /// Brand string, e.g. `AMD EPYC 9654 96-Core Processor` (x86 leaves 0x8000_0002..4);
    /// elsewhere `/proc/cpuinfo`'s `model name`, or empty.
    pub brand: String,
    /// Display family (x86: base family plus extended family when the base is 15), e.g. 25
    /// (0x19) for AMD Zen 3 / Zen 4. 0 where unknown.
    pub family: u32,
    /// Display model (x86: extended model in the high nibble for families 6 and ≥ 15).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
}

impl CpuIdentity {
    /// The CPU running this program, read once and cached.
    pub fn detect() -> &'static CpuIdentity {
        static DETECTED: OnceLock<CpuIdentity> = OnceLock::new();
        DETECTED.get_or_init(Self::detect_uncached)
    }

    #[cfg(target_arch = "x86_64")]
    fn detect_uncached() -> CpuIdentity {
        use std::arch::x86_64::{__cpuid, CpuidResult};
        // `__cpuid` is a safe function in newer Rust versions and `unsafe` in older ones.
        #[allow(unused_unsafe)]
        // SAFETY: every x86-64 CPU implements `cpuid`; leaves above the maximum the CPU
        // reports are not queried.
        let cpuid = |leaf: u32| -> CpuidResult { unsafe { __cpuid(leaf) } };
        let bytes =
            |regs: &[u32]| -> Vec<u8> { regs.iter().flat_map(|r| r.to_le_bytes()).collect() };
        let leaf0 = cpuid(0);
        let vendor = bytes(&[leaf0.ebx, leaf0.edx, leaf0.ecx]);
        let (family, model, stepping) = if leaf0.eax >= 1 {
            decode_signature(cpuid(1).eax)
        } else {
            (0, 0, 0)
        };
        let brand = if cpuid(0x8000_0000).eax >= 0x8000_0004 {
            let regs: Vec<u32> = (0x8000_0002..=0x8000_0004)
                .map(cpuid)
                .flat_map(|r| [r.eax, r.ebx, r.ecx, r.edx])
                .collect();
            bytes(&regs)
        } else {
            Vec::new()
        };
        CpuIdentity {
            vendor: clean(&vendor),
            brand: clean(&brand),
            family,
            model,
            stepping,
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn detect_uncached() -> CpuIdentity {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        CpuIdentity::from_proc_cpuinfo(&text)
    }

    /// The identity as Linux's `/proc/cpuinfo` describes the first processor (used where
    /// there is no `cpuid`; on aarch64 the brand is built from the implementer and part
    /// numbers, which identify the core design).
    pub fn from_proc_cpuinfo(text: &str) -> CpuIdentity {
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let number = |name: &str| {
            field(name).and_then(|v| match v.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            })
        };
        let implementer = field("CPU implementer");
        let brand = field("model name").or_else(|| {
            let part = field("CPU part")?;
            Some(format!(
                "implementer {} part {part}",
                implementer.as_deref().unwrap_or("?")
            ))
        });
        CpuIdentity {
            vendor: field("vendor_id").or(implementer).unwrap_or_default(),
            brand: brand.unwrap_or_default(),
            family: number("cpu family").unwrap_or(0),
            model: number("model").or_else(|| number("CPU part")).unwrap_or(0),
            stepping: number("stepping")
                .or_else(|| number("CPU revision"))
                .unwrap_or(0),
        }
    }

    /// The microarchitecture the vendor / family / model numbers name, where grist knows
    /// them (AMD Zen generations; see [`microarchitecture`]).
    pub fn microarchitecture(&self) -> Option<&'static str> {
        microarchitecture(&self.vendor, self.family, self.model)
    }
}

/// `cpuid` leaf 1's `eax` → (display family, display model, stepping), as the Intel and AMD
/// manuals define them: the extended family is added when the base family is 15, and the
/// extended model becomes the high nibble for base families 6 and 15.
pub fn decode_signature(eax: u32) -> (u32, u32, u32) {
    let stepping = eax & 0xF;
    let base_model = (eax >> 4) & 0xF;
    let base_family = (eax >> 8) & 0xF;
    let ext_model = (eax >> 16) & 0xF;
    let ext_family = (eax >> 20) & 0xFF;
    let family = if base_family == 15 {
        base_family + ext_family
    } else {
        base_family
    };
    let model = if base_family == 6 || base_family == 15 {
        ext_model << 4 | base_model
    } else {
        base_model
    };
    (family, model, stepping)
}

/// The AMD Zen generation of a family / model pair (from AMD's published model ranges), or
/// `None` for other vendors and for numbers grist does not know. Zen 4 executes AVX-512 on a
/// 256-bit datapath; Zen 5's desktop and server parts on a 512-bit one.
pub fn microarchitecture(vendor: &str, family: u32, model: u32) -> Option<&'static str> {
    if vendor != "AuthenticAMD" {
        return None;
    }
    match (family, model) {
        (0x17, 0x00..=0x2F) => Some("Zen / Zen+"),
        (0x17, 0x30..=0xAF) => Some("Zen 2"),
        (0x19, 0x00..=0x0F | 0x20..=0x5F) => Some("Zen 3"),
        (0x19, 0x10..=0x1F | 0x60..=0xAF) => Some("Zen 4"),
        (0x1A, 0x00..=0x7F) => Some("Zen 5"),
        _ => None,
    }
}

/// Trims the NUL padding and blanks `cpuid` leaves its strings with.
#[cfg(target_arch = "x86_64")]
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string()
}

impl fmt::Display for CpuIdentity {
    /// `AMD EPYC (family 25 model 17 stepping 1: Zen 4)`: brand, then the numbers and the
    /// name they imply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let brand = match (self.brand.as_str(), self.vendor.as_str()) {
            ("", "") => "unknown CPU",
            ("", vendor) => vendor,
            (brand, _) => brand,
        };
        write!(
            f,
            "{brand} (family {} model {} stepping {}",
            self.family, self.model, self.stepping
        )?;
        if let Some(name) = self.microarchitecture() {
            write!(f, ": {name}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_decode_as_the_manuals_define() {
        // This host's `cpuid` leaf 1 (AMD EPYC, Zen 4 "Genoa"): family 0xF + 0xA, model 0x11.
        assert_eq!(decode_signature(0x00A1_0F11), (25, 17, 1));
        // AMD Zen 5 "Turin" (family 0x1A, model 0x02).
        assert_eq!(decode_signature(0x00B0_0F20), (26, 2, 0));
        // Intel Sapphire Rapids (family 6, model 0x8F, stepping 8): extended model used.
        assert_eq!(decode_signature(0x0008_06F8), (6, 0x8F, 8));
        // A base family other than 6 and 15 ignores both extended fields.
        assert_eq!(decode_signature(0x0FF0_0543), (5, 4, 3));
    }

    #[test]
    fn zen_generations_by_family_and_model() {
        let amd = "AuthenticAMD";
        assert_eq!(microarchitecture(amd, 25, 17), Some("Zen 4")); // Genoa
        assert_eq!(microarchitecture(amd, 25, 0x61), Some("Zen 4")); // Raphael
        assert_eq!(microarchitecture(amd, 25, 0x01), Some("Zen 3")); // Milan
        assert_eq!(microarchitecture(amd, 25, 0x21), Some("Zen 3")); // Vermeer
        assert_eq!(microarchitecture(amd, 26, 0x02), Some("Zen 5")); // Turin
        assert_eq!(microarchitecture(amd, 23, 0x31), Some("Zen 2")); // Rome
        assert_eq!(microarchitecture(amd, 26, 0xC0), None); // not a known range
        assert_eq!(microarchitecture("GenuineIntel", 25, 17), None);
    }

    #[test]
    fn display_names_the_numbers_and_the_generation() {
        let id = CpuIdentity {
            vendor: "AuthenticAMD".into(),
            brand: "AMD EPYC".into(),
            family: 25,
            model: 17,
            stepping: 1,
        };
        assert_eq!(
            id.to_string(),
            "AMD EPYC (family 25 model 17 stepping 1: Zen 4)"
        );
        let bare = CpuIdentity::default();
        assert_eq!(
            bare.to_string(),
            "unknown CPU (family 0 model 0 stepping 0)"
        );
    }

    #[test]
    fn proc_cpuinfo_of_x86_and_aarch64() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
                   model name\t: AMD EPYC\nstepping\t: 1\nprocessor\t: 1\nmodel\t\t: 99\n";
        let id = CpuIdentity::from_proc_cpuinfo(x86);
        assert_eq!((id.family, id.model, id.stepping), (25, 17, 1));
        assert_eq!(
            (id.vendor.as_str(), id.brand.as_str()),
            ("AuthenticAMD", "AMD EPYC")
        );
        assert_eq!(id.microarchitecture(), Some("Zen 4"));

        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n\
                   CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd0c\nCPU revision\t: 1\n";
        let id = CpuIdentity::from_proc_cpuinfo(arm);
        assert_eq!(id.brand, "implementer 0x41 part 0xd0c");
        assert_eq!((id.model, id.stepping), (0xd0c, 1));
        assert_eq!(id.microarchitecture(), None);

        assert_eq!(CpuIdentity::from_proc_cpuinfo(""), CpuIdentity::default());
    }

    #[test]
    fn this_cpu_is_identified() {
        let id = CpuIdentity::detect();
        #[cfg(target_arch = "x86_64")]
        {
            assert!(!id.vendor.is_empty(), "cpuid gave no vendor: {id:?}");
            assert!(id.family > 0, "cpuid gave no family: {id:?}");
        }
        assert!(!id.to_string().is_empty());
    }
}

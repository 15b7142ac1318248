//! Run-time kernel dispatch: detect the CPU's features once, pick an instruction set ([`Isa`])
//! and hand out a table of function pointers ([`Kernels`]) built for it.
//!
//! One binary runs on every x86-64 and aarch64 CPU: no kernel is compiled with a global
//! `target-cpu`; SIMD kernels are `#[target_feature]` functions that are only reachable through
//! a table whose ISA the running CPU was checked to support. So a CPU without AVX2 never
//! executes an AVX2 instruction (no SIGILL), it gets the scalar table.
//!
//! How a table is built (see [`select`]):
//! 1. start from the scalar table: every entry is the scalar reference from [`crate::formats`]
//!    (the definition of each format) and [`crate::ops`];
//! 2. for `Avx2`: the x86 module's `install_avx2` overrides the entries it accelerates;
//! 3. for `Avx512`: the AVX2 install runs first, then `install_avx512` overrides further entries;
//! 4. for `Neon`: the aarch64 module's `install` overrides entries.
//!
//! Each table is built once (lazily) and lives for the whole program (`&'static Kernels`).
//!
//! Which table [`kernels`] returns: the environment variable `GRIST_ISA`
//! (`scalar|avx2|avx512|neon`, case-insensitive) forces one, for A/B profiling; otherwise the
//! best the CPU supports. Asking for an ISA the CPU lacks, or an unknown name, is an error from
//! [`try_kernels`]: binaries should call [`try_kernels`] (or [`init`] for a command-line flag)
//! at start-up and report the error. Library code calls [`kernels`], which never panics: on a
//! bad `GRIST_ISA` it prints one warning to stderr and falls back to the best ISA.

use std::fmt;
use std::sync::OnceLock;

use grist_gguf::GgmlType;

use crate::formats::BlockFormat;

/// An instruction set grist has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable scalar Rust: the reference implementations. Runs everywhere.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (Haswell, Zen 1 and later).
    Avx2,
    /// x86-64 with AVX-512 F, BW, VL and VNNI (Ice Lake, Zen 4 and later), plus everything
    /// [`Isa::Avx2`] needs.
    Avx512,
    /// aarch64 Advanced SIMD (every aarch64 CPU). The NEON kernels choose between `sdot`
    /// (feature `dotprod`) and plain NEON themselves, see [`CpuFeatures::dotprod`].
    Neon,
}

/// The CPU features dispatch looks at. Plain data so the decision logic
/// ([`Isa::missing_features`], [`Isa::best_for`]) is a pure function that tests can feed any
/// feature set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// x86: AVX2.
    pub avx2: bool,
    /// x86: fused multiply-add (FMA3).
    pub fma: bool,
    /// x86: f16 ↔ f32 conversion instructions.
    pub f16c: bool,
    /// x86: AVX-512 Foundation.
    pub avx512f: bool,
    /// x86: AVX-512 byte and word instructions.
    pub avx512bw: bool,
    /// x86: AVX-512 vector-length extensions (512-bit instructions on 128/256-bit registers).
    pub avx512vl: bool,
    /// x86: AVX-512 VNNI (`vpdpbusd`, u8×i8 dot products accumulated into i32).
    pub avx512vnni: bool,
    /// x86: AVX-512 BF16 (informational; no kernel requires it yet).
    pub avx512bf16: bool,
    /// x86: Galois-field byte instructions. Optional for [`Isa::Avx512`]: when present, the
    /// Q4_K/Q5_K kernels split nibbles with one `vgf2p8affineqb` instead of a shift and a mask.
    pub gfni: bool,
    /// x86: AVX-VNNI, the VEX-encoded 256-bit `vpdpbusd` (informational).
    pub avxvnni: bool,
    /// aarch64: Advanced SIMD.
    pub neon: bool,
    /// aarch64: `sdot`/`udot` (Armv8.2 dot product), used by the NEON kernels when present.
    pub dotprod: bool,
}

impl CpuFeatures {
    /// The features of the CPU running this program (detected with `std`'s run-time macros;
    /// the result is computed once and cached).
    pub fn detect() -> CpuFeatures {
        static DETECTED: OnceLock<CpuFeatures> = OnceLock::new();
        *DETECTED.get_or_init(Self::detect_uncached)
    }

    #[cfg(target_arch = "x86_64")]
    fn detect_uncached() -> CpuFeatures {
        use std::arch::is_x86_feature_detected as has;
        CpuFeatures {
            avx2: has!("avx2"),
            fma: has!("fma"),
            f16c: has!("f16c"),
            avx512f: has!("avx512f"),
            avx512bw: has!("avx512bw"),
            avx512vl: has!("avx512vl"),
            avx512vnni: has!("avx512vnni"),
            avx512bf16: has!("avx512bf16"),
            gfni: has!("gfni"),
            avxvnni: has!("avxvnni"),
            ..CpuFeatures::default()
        }
    }

    #[cfg(target_arch = "aarch64")]
    fn detect_uncached() -> CpuFeatures {
        use std::arch::is_aarch64_feature_detected as has;
        CpuFeatures {
            neon: has!("neon"),
            dotprod: has!("dotprod"),
            ..CpuFeatures::default()
        }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn detect_uncached() -> CpuFeatures {
        CpuFeatures::default()
    }

    /// Names of the features that are present, for `grist inspect`-style reports
    /// (e.g. `["avx2", "fma", "f16c", "avx512f", …]`).
    pub fn present(&self) -> Vec<&'static str> {
        self.list()
            .into_iter()
            .filter(|f| f.1)
            .map(|f| f.0)
            .collect()
    }

    fn list(&self) -> [(&'static str, bool); 12] {
        [
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("f16c", self.f16c),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512vl", self.avx512vl),
            ("avx512vnni", self.avx512vnni),
            ("avx512bf16", self.avx512bf16),
            ("gfni", self.gfni),
            ("avxvnni", self.avxvnni),
            ("neon", self.neon),
            ("dotprod", self.dotprod),
        ]
    }
}

impl Isa {
    /// Every ISA, from the most portable to the most specialised.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The lower-case name used by `GRIST_ISA` and reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a name as accepted by `GRIST_ISA` (case-insensitive, surrounding blanks ignored;
    /// `avx-512`/`avx512f` spellings are not accepted, to keep one name per ISA).
    pub fn parse(name: &str) -> Result<Isa, DispatchError> {
        let wanted = name.trim();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| DispatchError::UnknownIsa(name.to_string()))
    }

    /// The ISA named by the environment variable `GRIST_ISA`: `Ok(None)` when it is unset or
    /// empty, an error when it names no ISA. Does not check that the CPU supports it.
    pub fn from_env() -> Result<Option<Isa>, DispatchError> {
        match std::env::var("GRIST_ISA") {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => Isa::parse(&value).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(raw)) => Err(DispatchError::UnknownIsa(
                raw.to_string_lossy().into_owned(),
            )),
        }
    }

    /// CPU features this ISA's kernels need that `features` lacks (empty = usable).
    pub fn missing_features(self, features: &CpuFeatures) -> Vec<&'static str> {
        let needed: &[(&'static str, bool)] = match self {
            Isa::Scalar => &[],
            Isa::Avx2 => &[
                ("avx2", features.avx2),
                ("fma", features.fma),
                ("f16c", features.f16c),
            ],
            Isa::Avx512 => &[
                ("avx2", features.avx2),
                ("fma", features.fma),
                ("f16c", features.f16c),
                ("avx512f", features.avx512f),
                ("avx512bw", features.avx512bw),
                ("avx512vl", features.avx512vl),
                ("avx512vnni", features.avx512vnni),
            ],
            Isa::Neon => &[("neon", features.neon)],
        };
        let mut missing: Vec<&'static str> = needed.iter().filter(|f| !f.1).map(|f| f.0).collect();
        // The SIMD kernels of an ISA are only compiled for their own architecture.
        let compiled = match self {
            Isa::Scalar => true,
            Isa::Avx2 | Isa::Avx512 => cfg!(target_arch = "x86_64"),
            Isa::Neon => cfg!(target_arch = "aarch64"),
        };
        if !compiled && missing.is_empty() {
            missing.push(self.arch_name());
        }
        missing
    }

    fn arch_name(self) -> &'static str {
        match self {
            Isa::Scalar => "any",
            Isa::Avx2 | Isa::Avx512 => "x86_64",
            Isa::Neon => "aarch64",
        }
    }

    /// Whether a CPU with `features` can run this ISA's kernels.
    pub fn supported_by(self, features: &CpuFeatures) -> bool {
        self.missing_features(features).is_empty()
    }

    /// Whether the CPU running this program can run this ISA's kernels.
    pub fn available(self) -> bool {
        self.supported_by(&CpuFeatures::detect())
    }

    /// The fastest ISA a CPU with `features` supports.
    pub fn best_for(features: &CpuFeatures) -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|isa| isa.supported_by(features))
            .unwrap_or(Isa::Scalar)
    }

    /// The fastest ISA the CPU running this program supports.
    pub fn detect_best() -> Isa {
        Isa::best_for(&CpuFeatures::detect())
    }

    /// Checks that a CPU with `features` can run this ISA; the error names what is missing.
    pub fn check(self, features: &CpuFeatures) -> Result<(), DispatchError> {
        let missing = self.missing_features(features);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DispatchError::Unavailable { isa: self, missing })
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a kernel table could not be selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DispatchError {
    /// `GRIST_ISA` (or a flag) named no known ISA.
    UnknownIsa(String),
    /// The CPU (or the architecture this binary was compiled for) lacks features the ISA needs.
    Unavailable {
        /// The ISA that was asked for.
        isa: Isa,
        /// The missing CPU features (or the required architecture's name).
        missing: Vec<&'static str>,
    },
    /// [`init`] was called after the global table had already been chosen differently.
    AlreadyInitialized {
        /// The ISA of the table already in use.
        current: Isa,
        /// The ISA [`init`] asked for.
        requested: Isa,
    },
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::UnknownIsa(name) => write!(
                f,
                "unknown instruction set {name:?} (GRIST_ISA): expected one of scalar, avx2, \
                 avx512, neon"
            ),
            DispatchError::Unavailable { isa, missing } => {
                let best = Isa::detect_best();
                write!(
                    f,
                    "instruction set {isa} is not available on this CPU: missing {} \
                     (the best available is {best})",
                    missing.join(", ")
                )
            }
            DispatchError::AlreadyInitialized { current, requested } => write!(
                f,
                "cannot switch kernels to {requested}: {current} is already in use"
            ),
        }
    }
}

impl std::error::Error for DispatchError {}

/// Dot product of one weight row with one quantized activation row, both given as the raw
/// bytes of whole blocks (weights in the weight type, activations in its
/// [`KernelEntry::act_type`], the same number of values). Returns the f32 result.
///
/// Callers ([`crate::matmul`]) guarantee the lengths match; a mismatch is a programming error
/// and panics.
pub type VecDotFn = fn(w_row: &[u8], act_row: &[u8]) -> f32;

/// Token generation's product: `out.len()` consecutive weight rows (`w`, `w_row_bytes` each)
/// times one quantized activation row: `out[r] = w[r] · act`. A kernel that computes the
/// activation's share of the work (scale conversions, code loads) once for all rows. Must
/// return exactly [`KernelEntry::vec_dot`]'s bits for every row (tested in
/// `kernels/tests/gemv.rs`), so the matrix-vector driver may cut rows anywhere.
pub type GemvFn = fn(w: &[u8], w_row_bytes: usize, act: &[u8], out: &mut [f32]);

/// Quantizes one f32 activation row (`x.len()` a multiple of the block size) into the raw
/// bytes of whole blocks of an activation type (`out.len()` = blocks × block bytes).
pub type QuantizeActFn = fn(x: &[f32], out: &mut [u8]);

/// Most activation rows a [`VecDotRowsFn`] is handed at once.
pub const MAX_ACT_ROWS_PER_CALL: usize = 4;

/// Dot products of one weight row with `out.len()` activation rows (`1 ..=`
/// [`MAX_ACT_ROWS_PER_CALL`]) stored back to back in `acts` (`out.len() × act_row_bytes`
/// bytes): `out[t] = w_row · acts[t]`. Used by the matmul driver for `n > 1`.
pub type VecDotRowsFn = fn(w_row: &[u8], acts: &[u8], act_row_bytes: usize, out: &mut [f32]);

/// Tiled matrix product of a block of weight rows with a block of activation rows:
/// `w` holds `n_w = w.len() / w_row_bytes` weight rows, `acts` holds
/// `n_a = acts.len() / act_row_bytes` quantized activation rows, and
/// `out[t · n_w + r] = w_r · acts_t` (`out`: `[n_a, n_w]`, fully overwritten).
///
/// Kernels behind this hook reuse each unpacked weight register across several activation
/// rows and each activation register across several weight rows. Each output must be
/// computed in one fixed order that depends on neither its position in the tile nor the
/// other rows, so results do not depend on how the matmul driver cuts the work (a token gives
/// the same bits alone or in a batch, with any thread count). The matmul driver uses this
/// hook for every `n`, including `n = 1`, when it is present. The result must equal
/// [`KernelEntry::vec_dot`]'s up to float rounding (the Q6_K tile is even
/// bit-identical to it). Tested in `kernels/tests/gemm_avx512.rs`.
pub type GemmFn =
    fn(w: &[u8], w_row_bytes: usize, acts: &[u8], act_row_bytes: usize, out: &mut [f32]);

/// How to multiply weights of one type: the activation format, how to quantize activations
/// to it, and the row dot product.
#[derive(Clone, Copy)]
pub struct KernelEntry {
    /// The type activations are quantized to (ggml's `vec_dot_type`).
    pub act_type: GgmlType,
    /// f32 row → `act_type` blocks.
    pub quantize_act: QuantizeActFn,
    /// Weight row · activation row.
    pub vec_dot: VecDotFn,
    /// Optional many-rows product for token generation (`n = 1`), see [`GemvFn`]. `None` =
    /// the matrix-vector driver calls [`KernelEntry::vec_dot`] per row.
    ///
    /// For an interleaved type ([`GgmlType::interleaved`], e.g. Q4_K_R16) this is the one
    /// field that reads the interleaved bytes (16-row-aligned ranges of rows, which are
    /// contiguous); it must equal the base type's `vec_dot` on the de-interleaved rows up
    /// to float rounding (tested in `kernels/tests/interleaved.rs`). Every other field of
    /// such an entry is the base type's and takes de-interleaved rows: the matmul driver
    /// de-interleaves a work item's rows before calling them.
    pub gemv: Option<GemvFn>,
    /// Optional batched dot product: one weight row against several consecutive activation
    /// rows (reusing the weight row's unpacked blocks across them, for prompt processing).
    /// `None` = the matmul driver calls [`KernelEntry::vec_dot`] per activation row.
    pub vec_dot_rows: Option<VecDotRowsFn>,
    /// Optional tiled product for prompt processing (`n > 1`), see [`GemmFn`]. `None` = the
    /// matmul driver falls back to [`KernelEntry::vec_dot_rows`] / [`KernelEntry::vec_dot`].
    pub gemm: Option<GemmFn>,
    /// Optional unpacker to the panel layout ([`crate::panel`]): when present and the table
    /// has a [`Kernels::panel_gemm`], prompt processing (`n > 1`) uses the panel GEMM, which
    /// takes precedence over [`KernelEntry::gemm`].
    pub panel: Option<crate::panel::PanelFormat>,
    /// For an interleaved type only, optional: unpacks a group of 16 rows straight from the
    /// interleaved bytes into the panel layout of [`KernelEntry::panel`] (the base type's
    /// format), instead of de-interleaving the rows first; it must give exactly the panel of
    /// the de-interleaved rows (tested in `kernels/tests/panel.rs`).
    pub panel_group: Option<crate::panel::PanelGroupUnpackFn>,
}

impl fmt::Debug for KernelEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelEntry")
            .field("act_type", &self.act_type)
            .finish_non_exhaustive()
    }
}

/// Number of slots in the per-type table: one per type, indexed by [`GgmlType::index`].
const TYPE_SLOTS: usize = GgmlType::COUNT;

/// A complete set of kernels for one ISA: per weight type a [`KernelEntry`], plus the f32
/// operations of [`crate::ops`]. Obtained from [`select`] or [`kernels`]; SIMD modules modify
/// a table only while it is being built (a clone can be modified freely, e.g. in tests).
#[derive(Clone)]
pub struct Kernels {
    isa: Isa,
    features: CpuFeatures,
    entries: [Option<KernelEntry>; TYPE_SLOTS],
    panel_gemm: Option<crate::panel::PanelGemmFn>,
    act_panel_group: crate::panel::ActGroupFn,
    /// The f32 operations (RMSNorm, softmax, activations, f16 KV-cache helpers).
    pub ops: crate::ops::OpKernels,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels")
            .field("isa", &self.isa)
            .field("types", &self.supported_types())
            .finish_non_exhaustive()
    }
}

impl Kernels {
    /// The ISA this table was built for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The CPU features seen when the table was built (SIMD installers may consult them,
    /// e.g. NEON's `dotprod`).
    pub fn features(&self) -> &CpuFeatures {
        &self.features
    }

    /// The kernels for weights of type `ty`, or `None` if grist cannot multiply that type.
    pub fn entry(&self, ty: GgmlType) -> Option<&KernelEntry> {
        self.entries.get(ty.index()).and_then(Option::as_ref)
    }

    /// The quantizer to `act_type` (the one every entry with that activation type uses), or
    /// `None` if no weight type of this table multiplies with `act_type`.
    pub fn quantizer(&self, act_type: GgmlType) -> Option<QuantizeActFn> {
        self.entries
            .iter()
            .flatten()
            .find(|e| e.act_type == act_type)
            .map(|e| e.quantize_act)
    }

    /// Every weight type this table can multiply, in id order.
    pub fn supported_types(&self) -> Vec<GgmlType> {
        GgmlType::all()
            .filter(|&t| self.entry(t).is_some())
            .collect()
    }

    /// Applies `change` to the entry of weight type `ty`; `false` (and nothing changed) if the
    /// table has no entry for `ty`. The shared body of the `set_*` installers.
    fn modify_entry(&mut self, ty: GgmlType, change: impl FnOnce(&mut KernelEntry)) -> bool {
        self.entries[ty.index()].as_mut().map(change).is_some()
    }

    /// Sets the full entry for weight type `ty` (used while building a table).
    pub fn set_entry(&mut self, ty: GgmlType, entry: KernelEntry) {
        self.entries[ty.index()] = Some(entry);
    }

    /// Replaces the dot product for weights of type `ty`. The activation type stays the same,
    /// so the new function must take the same activation format. Ignored (returns `false`) if
    /// the scalar table has no entry for `ty`.
    pub fn set_vec_dot(&mut self, ty: GgmlType, vec_dot: VecDotFn) -> bool {
        self.modify_entry(ty, |entry| {
            entry.vec_dot = vec_dot;
            // A batched kernel of a lower layer must not outlive the faster single-row one.
            entry.gemv = None;
            entry.vec_dot_rows = None;
            entry.gemm = None;
        })
    }

    /// Installs a many-rows product for token generation for weights of type `ty` (call
    /// after [`Kernels::set_vec_dot`], which clears it; it must give `vec_dot`'s bits, see
    /// [`GemvFn`]). Returns `false` if `ty` has no entry.
    pub fn set_gemv(&mut self, ty: GgmlType, gemv: GemvFn) -> bool {
        self.modify_entry(ty, |entry| {
            entry.gemv = Some(gemv);
        })
    }

    /// Installs a batched dot product for weights of type `ty` (call after
    /// [`Kernels::set_vec_dot`], which clears it). Returns `false` if `ty` has no entry.
    pub fn set_vec_dot_rows(&mut self, ty: GgmlType, vec_dot_rows: VecDotRowsFn) -> bool {
        self.modify_entry(ty, |entry| {
            entry.vec_dot_rows = Some(vec_dot_rows);
        })
    }

    /// Installs a tiled product for weights of type `ty` (call after [`Kernels::set_vec_dot`],
    /// which clears it; see [`GemmFn`] for its contract). Returns `false` if `ty` has no
    /// entry.
    pub fn set_gemm(&mut self, ty: GgmlType, gemm: GemmFn) -> bool {
        self.modify_entry(ty, |entry| {
            entry.gemm = Some(gemm);
        })
    }

    /// The panel microkernel ([`crate::panel`]) of this table, if it has one (AVX-512 VNNI).
    pub fn panel_gemm(&self) -> Option<crate::panel::PanelGemmFn> {
        self.panel_gemm
    }

    /// Installs (or, with `None`, removes) the panel microkernel. The panel path runs for
    /// the weight types whose entry has a [`KernelEntry::panel`] format.
    pub fn set_panel_gemm(&mut self, gemm: Option<crate::panel::PanelGemmFn>) {
        self.panel_gemm = gemm;
    }

    /// How this table builds a token group of the activation panel (the scalar
    /// [`crate::panel::build_group_scalar`] unless a SIMD module installed its own).
    pub fn act_panel_group(&self) -> crate::panel::ActGroupFn {
        self.act_panel_group
    }

    /// Installs the activation-panel group builder (it must write the scalar one's bytes).
    pub fn set_act_panel_group(&mut self, build: crate::panel::ActGroupFn) {
        self.act_panel_group = build;
    }

    /// Sets (or clears) the panel format of weight type `ty`. Returns `false` if `ty` has no
    /// entry.
    pub fn set_panel(&mut self, ty: GgmlType, panel: Option<crate::panel::PanelFormat>) -> bool {
        self.modify_entry(ty, |entry| {
            entry.panel = panel;
        })
    }

    /// Installs the panel group unpacker of interleaved type `ty` (see
    /// [`KernelEntry::panel_group`]). Returns `false` if `ty` has no entry.
    pub fn set_panel_group(
        &mut self,
        ty: GgmlType,
        unpack: crate::panel::PanelGroupUnpackFn,
    ) -> bool {
        self.modify_entry(ty, |entry| {
            entry.panel_group = Some(unpack);
        })
    }

    /// Replaces the activation quantizer of every entry whose activation type is `act_type`
    /// (e.g. a SIMD f32 → Q8_0 quantizer serves Q4_0, Q5_0, Q8_0 and IQ4_NL weights).
    pub fn set_quantize_act(&mut self, act_type: GgmlType, quantize_act: QuantizeActFn) {
        for entry in self.entries.iter_mut().flatten() {
            if entry.act_type == act_type {
                entry.quantize_act = quantize_act;
            }
        }
    }

    /// The scalar reference table: every format's reference functions and scalar ops.
    fn scalar(features: CpuFeatures) -> Kernels {
        let mut table = Kernels {
            isa: Isa::Scalar,
            features,
            entries: [None; TYPE_SLOTS],
            panel_gemm: None,
            act_panel_group: crate::panel::build_group_scalar,
            ops: crate::ops::OpKernels::scalar(),
        };
        install_scalar_formats(&mut table);
        table.derive_interleaved();
        table
    }

    /// Makes each interleaved type's entry its base type's entry (the kernels the driver
    /// runs on de-interleaved rows), keeping the interleaved type's own token-generation
    /// kernel and panel group unpacker if a SIMD module installed them. Runs after every
    /// installer.
    fn derive_interleaved(&mut self) {
        for ty in GgmlType::all() {
            let Some((base, _)) = ty.interleaved() else {
                continue;
            };
            let own = self.entry(ty);
            let (gemv, panel_group) = (own.and_then(|e| e.gemv), own.and_then(|e| e.panel_group));
            self.entries[ty.index()] = self.entry(base).map(|&e| KernelEntry {
                gemv,
                panel_group,
                ..e
            });
        }
    }

    /// Builds the table for `isa`. The caller has checked that the CPU supports `isa`.
    fn build(isa: Isa, features: CpuFeatures) -> Kernels {
        let mut table = Kernels::scalar(features);
        table.isa = isa;
        match isa {
            Isa::Scalar => {}
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::simd::install_avx2(&mut table),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                crate::simd::install_avx2(&mut table);
                crate::simd::install_avx512(&mut table);
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => crate::simd::install_neon(&mut table),
            // `check` rejects ISAs of another architecture before a table is built.
            #[allow(unreachable_patterns)]
            _ => {}
        }
        table.derive_interleaved();
        table
    }
}

/// Reads a whole-block byte slice as blocks. Rows handed to kernels come from the matmul
/// driver (aligned scratch) or from GGUF tensor data (aligned to ≥ 32 bytes with whole-block
/// rows), so the cast succeeds; a misaligned slice is copied instead of failing.
fn blocks_of<B: BlockFormat>(bytes: &[u8]) -> std::borrow::Cow<'_, [B]> {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(blocks) => std::borrow::Cow::Borrowed(blocks),
        Err(_) => {
            let size = std::mem::size_of::<B>();
            assert!(
                bytes.len().is_multiple_of(size),
                "row of {} bytes is not a whole number of {}-byte blocks",
                bytes.len(),
                size
            );
            std::borrow::Cow::Owned(
                bytes
                    .chunks_exact(size)
                    .map(bytemuck::pod_read_unaligned)
                    .collect(),
            )
        }
    }
}

/// Scalar adapter: the reference `vec_dot` of weight format `W` on raw bytes.
fn scalar_vec_dot<W: BlockFormat>(w: &[u8], a: &[u8]) -> f32 {
    let w = blocks_of::<W>(w);
    let a = blocks_of::<W::Activation>(a);
    W::vec_dot(&w, &a)
}

/// Scalar adapter: the reference quantizer of activation format `A` on raw bytes.
fn scalar_quantize<A: BlockFormat>(x: &[f32], out: &mut [u8]) {
    match bytemuck::try_cast_slice_mut::<u8, A>(out) {
        Ok(blocks) => A::quantize(x, blocks),
        Err(_) => {
            let size = std::mem::size_of::<A>();
            let mut blocks = vec![A::zeroed(); out.len() / size];
            A::quantize(x, &mut blocks);
            out.copy_from_slice(bytemuck::cast_slice(&blocks));
        }
    }
}

/// The scalar entry of weight format `W`.
fn scalar_entry<W: BlockFormat>() -> KernelEntry {
    KernelEntry {
        act_type: <W::Activation as BlockFormat>::TYPE,
        quantize_act: scalar_quantize::<W::Activation>,
        vec_dot: scalar_vec_dot::<W>,
        gemv: None,
        vec_dot_rows: None,
        gemm: None,
        panel: None,
        panel_group: None,
    }
}

/// Fills the scalar table with every format [`crate::formats`] implements.
fn install_scalar_formats(table: &mut Kernels) {
    use crate::blocks::*;
    macro_rules! add {
        ($($w:ty),* $(,)?) => {
            $( table.set_entry(<$w as BlockFormat>::TYPE, scalar_entry::<$w>()); )*
        };
    }
    add!(
        f32,
        half::f16,
        half::bf16,
        BlockQ4_0,
        BlockQ4_1,
        BlockQ5_0,
        BlockQ5_1,
        BlockQ8_0,
        BlockQ2_K,
        BlockQ3_K,
        BlockQ4_K,
        BlockQ5_K,
        BlockQ6_K,
        BlockIQ4_NL,
        BlockIQ4_XS,
    );
}

/// Whether grist has matmul kernels for weights of type `ty` (the same set for every ISA:
/// SIMD tables only replace entries of the scalar table).
pub fn supports_weight_type(ty: GgmlType) -> bool {
    scalar_table().entry(ty).is_some()
}

/// The kernel table for `isa`, or an error if this CPU cannot run it. Tables are built once
/// and cached; calling this repeatedly is cheap.
pub fn select(isa: Isa) -> Result<&'static Kernels, DispatchError> {
    select_with(isa, &CpuFeatures::detect())
}

/// [`select`] against an explicit feature set, so the error path is testable on any machine.
/// Never builds a table the real CPU cannot run: a table is only built when both `features`
/// and the detected CPU support `isa`.
pub fn select_with(isa: Isa, features: &CpuFeatures) -> Result<&'static Kernels, DispatchError> {
    isa.check(features)?;
    let detected = CpuFeatures::detect();
    isa.check(&detected)?;
    static TABLES: [OnceLock<Kernels>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let slot = Isa::ALL.iter().position(|&i| i == isa).unwrap_or(0);
    Ok(TABLES[slot].get_or_init(|| Kernels::build(isa, detected)))
}

static GLOBAL: OnceLock<&'static Kernels> = OnceLock::new();

/// Chooses the global table explicitly (for a command-line flag such as `--isa`). Must run
/// before the first [`kernels`] call; choosing the ISA already in use is fine.
pub fn init(isa: Isa) -> Result<&'static Kernels, DispatchError> {
    let table = select(isa)?;
    let chosen = *GLOBAL.get_or_init(|| table);
    if chosen.isa() == isa {
        Ok(chosen)
    } else {
        Err(DispatchError::AlreadyInitialized {
            current: chosen.isa(),
            requested: isa,
        })
    }
}

/// The global kernel table: the one chosen by [`init`], else the ISA named by `GRIST_ISA`,
/// else the best the CPU supports. Errors on an unknown or unavailable `GRIST_ISA` (nothing
/// is cached then, so [`kernels`] can still fall back).
pub fn try_kernels() -> Result<&'static Kernels, DispatchError> {
    if let Some(table) = GLOBAL.get() {
        return Ok(table);
    }
    let isa = Isa::from_env()?.unwrap_or_else(Isa::detect_best);
    let table = select(isa)?;
    Ok(*GLOBAL.get_or_init(|| table))
}

/// The global kernel table (see [`try_kernels`]). Never panics: if `GRIST_ISA` is invalid it
/// warns once on stderr and uses the best ISA the CPU supports.
pub fn kernels() -> &'static Kernels {
    if let Some(table) = GLOBAL.get() {
        return table;
    }
    match try_kernels() {
        Ok(table) => table,
        Err(err) => {
            let best = Isa::detect_best();
            let table = select(best).unwrap_or_else(|_| scalar_table());
            let chosen = *GLOBAL.get_or_init(|| {
                eprintln!("grist: warning: {err}; using {}", table.isa());
                table
            });
            chosen
        }
    }
}

/// The scalar table (always available).
fn scalar_table() -> &'static Kernels {
    static SCALAR: OnceLock<Kernels> = OnceLock::new();
    SCALAR.get_or_init(|| Kernels::scalar(CpuFeatures::detect()))
}

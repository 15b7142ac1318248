//! Dispatch: ISA names, the pure feature-set → ISA decision, and table selection.

use grist_gguf::GgmlType;
use grist_kernels::dispatch::{self, CpuFeatures, DispatchError, Isa};

fn zen5() -> CpuFeatures {
    CpuFeatures {
        avx2: true,
        fma: true,
        f16c: true,
        avx512f: true,
        avx512bw: true,
        avx512vl: true,
        avx512vnni: true,
        avx512bf16: true,
        avxvnni: true,
        ..CpuFeatures::default()
    }
}

fn haswell() -> CpuFeatures {
    CpuFeatures {
        avx2: true,
        fma: true,
        f16c: true,
        ..CpuFeatures::default()
    }
}

#[test]
fn parses_isa_names() {
    for isa in Isa::ALL {
        assert_eq!(Isa::parse(isa.name()), Ok(isa));
        assert_eq!(Isa::parse(&isa.name().to_uppercase()), Ok(isa));
    }
    assert_eq!(Isa::parse(" avx2\n"), Ok(Isa::Avx2));
    for bad in ["", "sse4", "avx-512", "avx512f", "neon2"] {
        let err = Isa::parse(bad).unwrap_err();
        assert_eq!(err, DispatchError::UnknownIsa(bad.to_string()));
        assert!(
            err.to_string().contains("scalar, avx2, avx512, neon"),
            "{err}"
        );
    }
}

#[test]
fn best_isa_follows_features() {
    if cfg!(target_arch = "x86_64") {
        assert_eq!(Isa::best_for(&zen5()), Isa::Avx512);
        assert_eq!(Isa::best_for(&haswell()), Isa::Avx2);
        // AVX2 without FMA (e.g. a hypervisor hiding it) is not enough.
        let no_fma = CpuFeatures {
            fma: false,
            ..haswell()
        };
        assert_eq!(Isa::best_for(&no_fma), Isa::Scalar);
        // AVX-512 without VNNI (Skylake-X) gets the AVX2 table.
        let skx = CpuFeatures {
            avx512vnni: false,
            ..zen5()
        };
        assert_eq!(Isa::best_for(&skx), Isa::Avx2);
    }
    assert_eq!(Isa::best_for(&CpuFeatures::default()), Isa::Scalar);
}

#[test]
fn asking_for_a_missing_isa_is_an_error() {
    let err = Isa::Avx512.check(&haswell()).unwrap_err();
    match &err {
        DispatchError::Unavailable { isa, missing } => {
            assert_eq!(*isa, Isa::Avx512);
            if cfg!(target_arch = "x86_64") {
                assert_eq!(missing, &["avx512f", "avx512bw", "avx512vl", "avx512vnni"]);
            }
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("avx512 is not available") && msg.contains("avx512vnni"),
        "{msg}"
    );
    // The same through table selection, whatever the real CPU has.
    assert!(dispatch::select_with(Isa::Avx512, &haswell()).is_err());
    assert!(dispatch::select_with(Isa::Avx2, &CpuFeatures::default()).is_err());
    assert!(Isa::Scalar.check(&CpuFeatures::default()).is_ok());
    // NEON is never available on x86 (and AVX on aarch64), even with the flag set.
    let neon = CpuFeatures {
        neon: true,
        dotprod: true,
        ..CpuFeatures::default()
    };
    if cfg!(target_arch = "x86_64") {
        assert!(Isa::Neon.check(&neon).is_err());
        assert!(!Isa::Neon.available());
    } else if cfg!(target_arch = "aarch64") {
        assert!(Isa::Avx2.check(&zen5()).is_err());
        assert_eq!(Isa::best_for(&neon), Isa::Neon);
    }
}

#[test]
fn every_available_isa_has_a_complete_table() {
    let features = CpuFeatures::detect();
    eprintln!(
        "CPU features: {:?}; best ISA: {}",
        features.present(),
        Isa::detect_best()
    );
    let scalar = dispatch::select(Isa::Scalar).expect("scalar is always available");
    let expected = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
    ];
    for ty in expected {
        assert!(dispatch::supports_weight_type(ty), "{ty}");
    }
    assert!(!dispatch::supports_weight_type(GgmlType::IQ2_XXS));
    for isa in Isa::ALL {
        match dispatch::select(isa) {
            Ok(table) => {
                assert!(isa.available());
                assert_eq!(table.isa(), isa);
                assert_eq!(table.supported_types(), scalar.supported_types());
                for ty in table.supported_types() {
                    let (e, s) = (table.entry(ty).unwrap(), scalar.entry(ty).unwrap());
                    assert_eq!(e.act_type, s.act_type, "{isa} {ty}");
                }
                // Selecting again returns the same cached table.
                assert!(std::ptr::eq(table, dispatch::select(isa).unwrap()));
            }
            Err(err) => {
                assert!(!isa.available(), "{isa}: {err}");
                eprintln!("SKIPPED: {isa} not available here: {err}");
            }
        }
    }
    assert!(dispatch::select(Isa::detect_best()).is_ok());
}

#[test]
fn activation_types_match_ggml() {
    let t = dispatch::select(Isa::Scalar).unwrap();
    let act = |ty| t.entry(ty).unwrap().act_type;
    assert_eq!(act(GgmlType::Q4_0), GgmlType::Q8_0);
    assert_eq!(act(GgmlType::IQ4_NL), GgmlType::Q8_0);
    assert_eq!(act(GgmlType::Q4_1), GgmlType::Q8_1);
    assert_eq!(act(GgmlType::Q5_1), GgmlType::Q8_1);
    assert_eq!(act(GgmlType::Q4_K), GgmlType::Q8_K);
    assert_eq!(act(GgmlType::IQ4_XS), GgmlType::Q8_K);
    assert_eq!(act(GgmlType::F16), GgmlType::F16);
    assert_eq!(act(GgmlType::BF16), GgmlType::BF16);
    assert_eq!(act(GgmlType::F32), GgmlType::F32);
}

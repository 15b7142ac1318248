//! `GRIST_ISA` handling of the global table. One test only: it changes the process
//! environment, and the global table is chosen once per process.

use grist_kernels::dispatch::{self, DispatchError, Isa};

#[test]
fn grist_isa_override_and_fallback() {
    std::env::remove_var("GRIST_ISA");
    assert_eq!(Isa::from_env(), Ok(None));
    std::env::set_var("GRIST_ISA", "  ");
    assert_eq!(Isa::from_env(), Ok(None));
    std::env::set_var("GRIST_ISA", "Scalar");
    assert_eq!(Isa::from_env(), Ok(Some(Isa::Scalar)));
    std::env::set_var("GRIST_ISA", "AVX512");
    assert_eq!(Isa::from_env(), Ok(Some(Isa::Avx512)));

    // A bad value: try_kernels reports it, kernels() falls back to the best ISA (no panic).
    std::env::set_var("GRIST_ISA", "avx1024");
    assert_eq!(
        dispatch::try_kernels().unwrap_err(),
        DispatchError::UnknownIsa("avx1024".into())
    );
    let table = dispatch::kernels();
    assert_eq!(table.isa(), Isa::detect_best());
    // From now on the choice is fixed.
    assert!(dispatch::try_kernels().is_ok());
    assert!(dispatch::init(Isa::detect_best()).is_ok());
    if Isa::detect_best() != Isa::Scalar {
        assert!(matches!(
            dispatch::init(Isa::Scalar),
            Err(DispatchError::AlreadyInitialized { .. })
        ));
    }
    std::env::remove_var("GRIST_ISA");
}

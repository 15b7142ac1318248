//! Cache hints shared by the code that streams weights ahead of use: the pool's idle-time
//! prefetch ([`crate::pool::prefetch_while_idle`]) and the DRAM probe
//! ([`crate::probe::read_bandwidth`]). A hint never faults and never changes a result; it only
//! moves a line closer to the core before a load needs it.

/// Asks the CPU to bring the cache line holding address `addr` into this core's caches.
#[inline(always)]
pub(crate) fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` only hints the cache hierarchy: it never faults, whatever the
    // address (mapped or not), and changes no architectural state. SSE, which provides it,
    // is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` only hints the cache hierarchy: it never faults, whatever the address,
    // and changes no register, flag or memory.
    unsafe {
        std::arch::asm!(
            "prfm pldl1keep, [{addr}]",
            addr = in(reg) addr,
            options(nostack, readonly, preserves_flags)
        )
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = addr;
}

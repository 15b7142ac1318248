//! What limits the panel microkernel on this core: the `vpdpbusd` rate of its instruction
//! mix, measured in a register-only loop (no caches, no driver, no tile edges) with and
//! without each kind of per-block float work, and the rate of `vdpbf16ps` against
//! `vfmadd231ps` (the two products an attention GEMM could use).
//!
//! Each loop body is one 32-value block of a 4-row × 3-group tile, as
//! `simd::x86::panel_avx512::tile` runs it: 12 accumulators set from a broadcast bias, then
//! 8 steps of 3 activation loads, 4 weight broadcasts and 12 `vpdpbusd`, then the block's
//! float work on the 12 accumulators:
//!
//! | mix | per accumulator and block | the formats that run it |
//! | --- | --- | --- |
//! | `int only` | nothing | (a bound) |
//! | `cvt` | `vcvtdq2ps` | |
//! | `cvt fma` | `vcvtdq2ps`, `vfmadd` by a broadcast scale | a k-quant fold without its offset |
//! | `cvt mul fma` | `vcvtdq2ps`, `vmulps` (`dw·dy`), `vfmadd` | Q4_0, Q5_0, Q8_0, IQ4_NL; as many multiplies as Q4_K/Q5_K (offset `fma`) and Q6_K (two sub-blocks) |
//! | `int add` | `vpaddd` | (what an integer-only fold would cost) |
//! | `mulld add` | `vpmulld` (an integer sub-block scale), `vpaddd` | a k-quant fold in ggml's integer order |
//! | `maddwd add` | `vpmaddwd`, `vpaddd` | the same with 16-bit scales |
//!
//! `cargo run --release -p grist-kernels --example pipe_mix` (x86-64 with AVX-512 VNNI and
//! BF16; one thread; figures in G instructions per second of wall time, so run it on an idle
//! core). Results and what they mean: docs/PERFORMANCE.md, "Round 17" and "Round 19".

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::time::Instant;

    /// Activation and weight bytes the loops read (always L1-resident).
    #[repr(align(64))]
    struct Bytes([u8; 4096]);
    static DATA: Bytes = Bytes([1; 4096]);
    /// A float operand that keeps every float register normal (no denormal slow paths).
    static ONE: f32 = 1.0;

    /// One step: 3 activation registers, then per row a weight broadcast and 3 `vpdpbusd`.
    macro_rules! step {
        () => {
            concat!(
                "vmovdqa64 zmm12, [{a}]\n",
                "vmovdqa64 zmm13, [{a} + 64]\n",
                "vmovdqa64 zmm14, [{a} + 128]\n",
                "vpbroadcastd zmm15, dword ptr [{a} + 1024]\n",
                "vpdpbusd zmm0, zmm12, zmm15\n",
                "vpdpbusd zmm1, zmm13, zmm15\n",
                "vpdpbusd zmm2, zmm14, zmm15\n",
                "vpbroadcastd zmm15, dword ptr [{a} + 1028]\n",
                "vpdpbusd zmm3, zmm12, zmm15\n",
                "vpdpbusd zmm4, zmm13, zmm15\n",
                "vpdpbusd zmm5, zmm14, zmm15\n",
                "vpbroadcastd zmm15, dword ptr [{a} + 1032]\n",
                "vpdpbusd zmm6, zmm12, zmm15\n",
                "vpdpbusd zmm7, zmm13, zmm15\n",
                "vpdpbusd zmm8, zmm14, zmm15\n",
                "vpbroadcastd zmm15, dword ptr [{a} + 1036]\n",
                "vpdpbusd zmm9, zmm12, zmm15\n",
                "vpdpbusd zmm10, zmm13, zmm15\n",
                "vpdpbusd zmm11, zmm14, zmm15\n",
            )
        };
    }

    /// The block's float work on accumulator `$i` (into sum `$s`), for each mix.
    macro_rules! fold {
        (int_only, $i:literal, $s:literal) => {
            ""
        };
        (cvt, $i:literal, $s:literal) => {
            concat!("vcvtdq2ps zmm", $i, ", zmm", $i, "\n")
        };
        (cvt_fma, $i:literal, $s:literal) => {
            concat!(fold!(cvt, $i, $s), fold!(fma, $i, $s, "zmm30"))
        };
        (cvt_mul_fma, $i:literal, $s:literal) => {
            concat!(
                "vmulps zmm31, zmm30, zmm28\n",
                fold!(cvt, $i, $s),
                fold!(fma, $i, $s, "zmm31")
            )
        };
        // `sum += f32(acc) · scale` (a building block of the mixes above).
        (fma, $i:literal, $s:literal, $scale:literal) => {
            concat!("vfmadd231ps zmm", $s, ", zmm", $i, ", ", $scale, "\n")
        };
        (int_add, $i:literal, $s:literal) => {
            concat!("vpaddd zmm", $s, ", zmm", $s, ", zmm", $i, "\n")
        };
        (mulld_add, $i:literal, $s:literal) => {
            concat!(
                "vpmulld zmm",
                $i,
                ", zmm",
                $i,
                ", zmm29\n",
                fold!(int_add, $i, $s)
            )
        };
        (maddwd_add, $i:literal, $s:literal) => {
            concat!(
                "vpmaddwd zmm",
                $i,
                ", zmm",
                $i,
                ", zmm29\n",
                fold!(int_add, $i, $s)
            )
        };
    }

    /// A loop of `iters` blocks with the float work `$mix`.
    macro_rules! block_loop {
        ($name:ident, $mix:ident) => {
            /// `iters` blocks of the tile with this mix (see the module documentation).
            ///
            /// # Safety
            /// The CPU has AVX-512 F and VNNI.
            #[target_feature(enable = "avx512f,avx512vnni")]
            unsafe fn $name(iters: usize) {
                // SAFETY: reads only `DATA` (4096 bytes; offsets ≤ 1040) and `ONE`; writes
                // only `rcx` and vector registers, all of which `clobber_abi("C")` declares.
                unsafe {
                    asm!(
                        "vxorps xmm16, xmm16, xmm16",
                        "vmovaps zmm17, zmm16", "vmovaps zmm18, zmm16", "vmovaps zmm19, zmm16",
                        "vmovaps zmm20, zmm16", "vmovaps zmm21, zmm16", "vmovaps zmm22, zmm16",
                        "vmovaps zmm23, zmm16", "vmovaps zmm24, zmm16", "vmovaps zmm25, zmm16",
                        "vmovaps zmm26, zmm16", "vmovaps zmm27, zmm16",
                        "vbroadcastss zmm28, dword ptr [{one}]",
                        "vbroadcastss zmm30, dword ptr [{one}]",
                        "2:",
                        // The bias into the 12 accumulators.
                        "vpbroadcastd zmm29, dword ptr [{a} + 2048]",
                        "vmovdqa64 zmm0, zmm29", "vmovdqa64 zmm1, zmm29", "vmovdqa64 zmm2, zmm29",
                        "vmovdqa64 zmm3, zmm29", "vmovdqa64 zmm4, zmm29", "vmovdqa64 zmm5, zmm29",
                        "vmovdqa64 zmm6, zmm29", "vmovdqa64 zmm7, zmm29", "vmovdqa64 zmm8, zmm29",
                        "vmovdqa64 zmm9, zmm29", "vmovdqa64 zmm10, zmm29", "vmovdqa64 zmm11, zmm29",
                        step!(), step!(), step!(), step!(), step!(), step!(), step!(), step!(),
                        fold!($mix, 0, 16), fold!($mix, 1, 17), fold!($mix, 2, 18),
                        fold!($mix, 3, 19), fold!($mix, 4, 20), fold!($mix, 5, 21),
                        fold!($mix, 6, 22), fold!($mix, 7, 23), fold!($mix, 8, 24),
                        fold!($mix, 9, 25), fold!($mix, 10, 26), fold!($mix, 11, 27),
                        "dec rcx",
                        "jnz 2b",
                        a = in(reg) DATA.0.as_ptr(),
                        one = in(reg) &ONE,
                        inout("rcx") iters.max(1) => _,
                        clobber_abi("C"),
                        options(nostack, readonly),
                    );
                }
            }
        };
    }

    block_loop!(int_only, int_only);
    block_loop!(cvt, cvt);
    block_loop!(cvt_fma, cvt_fma);
    block_loop!(cvt_mul_fma, cvt_mul_fma);
    block_loop!(int_add, int_add);
    block_loop!(mulld_add, mulld_add);
    block_loop!(maddwd_add, maddwd_add);

    /// `iters` × 12 independent `$op`s (12 chains, so latency never limits).
    macro_rules! op_loop {
        ($name:ident, $op:literal, $feature:literal) => {
            /// `iters` × 12 independent instructions of one kind.
            ///
            /// # Safety
            /// The CPU has the instruction's feature.
            #[target_feature(enable = $feature)]
            unsafe fn $name(iters: usize) {
                // SAFETY: reads only `ONE`; writes only `rcx` and vector registers, all of
                // which `clobber_abi("C")` declares.
                unsafe {
                    asm!(
                        "vbroadcastss zmm12, dword ptr [{one}]",
                        "vmovaps zmm13, zmm12",
                        "vxorps xmm0, xmm0, xmm0",
                        "vmovaps zmm1, zmm0", "vmovaps zmm2, zmm0", "vmovaps zmm3, zmm0",
                        "vmovaps zmm4, zmm0", "vmovaps zmm5, zmm0", "vmovaps zmm6, zmm0",
                        "vmovaps zmm7, zmm0", "vmovaps zmm8, zmm0", "vmovaps zmm9, zmm0",
                        "vmovaps zmm10, zmm0", "vmovaps zmm11, zmm0",
                        "2:",
                        concat!($op, " zmm0, zmm12, zmm13"), concat!($op, " zmm1, zmm12, zmm13"),
                        concat!($op, " zmm2, zmm12, zmm13"), concat!($op, " zmm3, zmm12, zmm13"),
                        concat!($op, " zmm4, zmm12, zmm13"), concat!($op, " zmm5, zmm12, zmm13"),
                        concat!($op, " zmm6, zmm12, zmm13"), concat!($op, " zmm7, zmm12, zmm13"),
                        concat!($op, " zmm8, zmm12, zmm13"), concat!($op, " zmm9, zmm12, zmm13"),
                        concat!($op, " zmm10, zmm12, zmm13"), concat!($op, " zmm11, zmm12, zmm13"),
                        "dec rcx",
                        "jnz 2b",
                        one = in(reg) &ONE,
                        inout("rcx") iters.max(1) => _,
                        clobber_abi("C"),
                        options(nostack, readonly),
                    );
                }
            }
        };
    }

    op_loop!(fma_only, "vfmadd231ps", "avx512f");
    op_loop!(dpbf16_only, "vdpbf16ps", "avx512f,avx512bf16");
    op_loop!(dpbusd_only, "vpdpbusd", "avx512f,avx512vnni");

    /// A timed loop: runs its body `iters` times.
    type Loop = unsafe fn(usize);

    /// Best of 5 rates of `f`, in G of `per_iter` instructions per second.
    fn rate(f: Loop, per_iter: f64) -> f64 {
        let iters = 2_000_000;
        (0..5)
            .map(|_| {
                let t = Instant::now();
                // SAFETY: `main` checked the CPU features before calling.
                unsafe { f(iters) };
                per_iter * iters as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    }

    pub fn main() {
        let has = |f| std::is_x86_feature_detected!("avx512f") && f;
        if !has(std::is_x86_feature_detected!("avx512vnni")) {
            println!("SKIPPED: no AVX-512 VNNI on this CPU");
            return;
        }
        let peak = rate(dpbusd_only, 12.0);
        println!("vpdpbusd zmm alone: {peak:.2} G/s");
        println!("panel block (96 vpdpbusd) + per-accumulator float work, vpdpbusd rate:");
        let mixes: [(&str, Loop); 7] = [
            ("int only", int_only),
            ("cvt", cvt),
            ("cvt fma", cvt_fma),
            ("cvt mul fma", cvt_mul_fma),
            ("int add", int_add),
            ("mulld add", mulld_add),
            ("maddwd add", maddwd_add),
        ];
        for (name, f) in mixes {
            let r = rate(f, 96.0);
            println!(
                "  {name:<12} {r:.2} G/s ({:.0} % of alone)",
                100.0 * r / peak
            );
        }
        let fma = rate(fma_only, 12.0);
        println!("vfmadd231ps zmm alone: {fma:.2} G/s (16 f32 products each)");
        if has(std::is_x86_feature_detected!("avx512bf16")) {
            let bf = rate(dpbf16_only, 12.0);
            println!("vdpbf16ps zmm alone: {bf:.2} G/s (32 bf16 products each)");
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("SKIPPED: x86-64 only");
}

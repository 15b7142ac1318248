//! Prints this machine's measured DRAM read bandwidth and int8 peak per available ISA
//! (the figures `grist bench` reports against). `cargo run --release -p grist-kernels --example roofline`
use grist_kernels::dispatch::{select, Isa};
use grist_kernels::probe::{int8_peak, read_bandwidth};

fn main() {
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let bw = read_bandwidth(1 << 30, 5);
            println!("threads={threads} DRAM read: {bw:.1} GB/s");
            for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
                if let Ok(k) = select(isa) {
                    println!(
                        "threads={threads} int8 peak {}: {:.1} GOPS",
                        isa.name(),
                        int8_peak(k, 3)
                    );
                }
            }
        });
    }
}

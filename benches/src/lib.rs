//! Shared helpers for the criterion benchmarks in `benches/benches/`.

#![warn(missing_docs)]

pub mod weights;

//! Benchmarks run by `tandem bench`.

mod kernels;

pub use kernels::run_kernels;

//! Benchmarks run by `tandem bench`.

mod distill;
mod kernels;

pub use distill::{run_distill_bench, DistillBenchArgs};
pub use kernels::run_kernels;

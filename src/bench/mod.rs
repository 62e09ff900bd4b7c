//! Benchmarks run by `tandem bench`.

mod distill;
mod embed;
mod kernels;
mod machine;
mod python;

pub use distill::{run_distill_bench, DistillBenchArgs};
pub use embed::{run_embed_bench, EmbedBenchArgs};
pub use kernels::run_kernels;
pub use machine::Machine;

//! Benchmarks run by `tandem bench`.

mod diffusion;
mod distill;
mod embed;
mod embed_speed;
mod kernels;
mod machine;
mod python;
mod serve;
mod serve_breakdown;
mod serve_layers;
mod serve_load;
mod serve_process;

pub use diffusion::{run_diffusion_bench, DiffusionBenchArgs};
pub use distill::{run_distill_bench, DistillBenchArgs};
pub use embed::{run_embed_bench, EmbedBenchArgs};
pub use embed_speed::{run_embed_speed, EmbedSpeedArgs};
pub use kernels::run_kernels;
pub use machine::Machine;
pub use serve::{run_serve_bench, ServeBenchArgs};
pub use serve_process::run_http_floor;

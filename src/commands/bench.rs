//! `tandem bench`: benchmarks that print the BENCHMARKS.md figures.

use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Convolution, GEMM and whole-CNN speed against candle's built-ins and ONNX Runtime.
    Kernels {
        /// Print the headline figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Kernels { json } => crate::bench::run_kernels(json),
    }
}

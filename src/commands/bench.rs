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
        /// Skip ONNX Runtime (otherwise a missing Python package is an error naming the install command).
        #[arg(long)]
        no_ort: bool,
    },
    /// The compact-student table: every method on every dataset over several seeds, with test
    /// accuracy, parameters and training time. Hours of CPU at the defaults; restartable.
    Distill(Box<crate::bench::DistillBenchArgs>),
    /// Sentence-embedding speed (all-MiniLM-L6-v2 by default): Tandem in-process, raw
    /// candle-transformers and ONNX Runtime at batch 1, 8 and 32 on short and long texts, and
    /// served throughput over HTTP with 16 and 64 concurrent clients.
    Embed(Box<crate::bench::EmbedBenchArgs>),
    /// Sentences/s of several embedder bundles (a teacher and its students) on the same WordNet
    /// definitions, taking turns in one process, with each one's ratio to the first.
    EmbedSpeed(Box<crate::bench::EmbedSpeedArgs>),
    /// Diffusion sampling: FID-CNN, classifier accuracy, MSE to a many-step reference and images/s
    /// for every solver with and without DualFast over a list of NFE, and consistency students.
    Diffusion(Box<crate::bench::DiffusionBenchArgs>),
    /// Served classify throughput and latency at 1 to 256 clients (wrk): batching off, batching
    /// on, cache hits, against the model alone in-process and a minimal axum handler, with plots.
    Serve(Box<crate::bench::ServeBenchArgs>),
    /// The minimal axum server `bench serve` measures as the HTTP ceiling (runs until SIGTERM).
    #[command(hide = true)]
    HttpFloor {
        #[arg(long)]
        port: u16,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Kernels { json, no_ort } => crate::bench::run_kernels(json, no_ort),
        BenchCommand::Distill(args) => crate::bench::run_distill_bench(*args),
        BenchCommand::Embed(args) => crate::bench::run_embed_bench(*args),
        BenchCommand::EmbedSpeed(args) => crate::bench::run_embed_speed(*args),
        BenchCommand::Diffusion(args) => crate::bench::run_diffusion_bench(*args),
        BenchCommand::Serve(args) => crate::bench::run_serve_bench(*args),
        BenchCommand::HttpFloor { port } => crate::bench::run_http_floor(port),
    }
}

//! `tandem`: train compact students from bigger teachers and serve them, from one binary.
//!
//! This file only parses arguments and dispatches; each subcommand lives in `commands/`.

mod bench;
mod commands;
mod settings;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Train compact student models from bigger teachers and serve them over HTTP"
)]
struct Cli {
    /// Log lines as human-readable text or as one JSON object per line.
    #[arg(long, global = true, env = "TANDEM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What `tandem --version` prints after the name: the version, the git revision it was built
/// from, the compiled features, and the kernel instruction set this CPU will run.
fn long_version() -> String {
    let cuda = if cfg!(feature = "cuda") { "cuda" } else { "none (CPU only)" };
    format!(
        "{}\nrevision: {}\nfeatures: {cuda}\nkernel isa: {}",
        env!("CARGO_PKG_VERSION"),
        env!("TANDEM_GIT_REVISION"),
        tandem_runtime::kernels::isa_name()
    )
}

#[derive(Subcommand)]
enum Command {
    /// Train a teacher and distill a student on the embedded digits, then serve both.
    Quickstart(commands::quickstart::Args),
    /// Fetch and verify datasets and pretrained models.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Train a model without a teacher: supervised, PS-KD or dual-input-output.
    Train(commands::train::TrainArgs),
    /// Distill a student from a teacher bundle.
    Distill(commands::train::DistillArgs),
    /// Train a class-conditional DDPM teacher (a `diffusion` bundle).
    TrainDiffusion(commands::diffusion::TrainDiffusionArgs),
    /// Train a consistency model (a `consistency` bundle): iCT, or CD from a diffusion bundle.
    TrainConsistency(commands::consistency::TrainConsistencyArgs),
    /// Fine-tune an embedder bundle on WordNet retrieval pairs with in-batch negatives.
    TrainEmbedder(commands::train_embedder::TrainEmbedderArgs),
    /// Distil a smaller embedder from an embedder bundle: some of its layers, a cut vocabulary.
    DistillEmbedder(commands::distill_embedder::DistillEmbedderArgs),
    /// Train a retriever (embedder) and a ranker (cross-encoder) in alternation, AR2-style.
    TrainAr2(commands::train_ar2::TrainAr2Args),
    /// Train a cross-encoder reranker (a `cross_encoder` bundle) from an embedder bundle's BERT,
    /// on WordNet retrieval pairs against hard negatives a bi-encoder mines.
    TrainCrossEncoder(commands::train_cross_encoder::TrainCrossEncoderArgs),
    /// Train an image tokenizer (an `image_tokenizer` bundle): DualToken or a single-codebook baseline.
    TrainTokenizer(commands::train_tokenizer::TrainTokenizerArgs),
    /// Train an image-text dual encoder (an `image_text` bundle) on a dataset's images and the
    /// captions of its classes.
    TrainImageText(commands::train_image_text::TrainImageTextArgs),
    /// Average the weights of bundles fine-tuned from one start into one bundle ("model soup").
    Average(commands::average::AverageArgs),
    /// Import a model from another format as a bundle.
    #[command(subcommand)]
    Import(commands::import::ImportCommand),
    /// Measure a classifier on a dataset split, an embedder (or BM25) on WordNet retrieval, or an
    /// image-text dual encoder's retrieval and zero-shot figures.
    Eval(commands::eval::Args),
    /// Generate images with a diffusion or consistency bundle and write them as one grid PNG.
    Sample(commands::sample::Args),
    /// Turn images into discrete tokens with an image tokenizer bundle.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Decode pixel tokens (a JSON file) into a PNG with an image tokenizer bundle.
    Detokenize(commands::tokenize::DetokenizeArgs),
    /// Serve bundles over HTTP.
    Serve(commands::serve::Args),
    /// Run benchmarks.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Print the OpenAPI spec of the HTTP API.
    Openapi,
}

fn main() -> anyhow::Result<()> {
    limit_candle_elementwise_threads();
    // Training frees and reallocates activation-sized buffers every step; keeping them mapped
    // removes a page fault per 4 KiB of fresh memory (15-20% of a small CNN's step).
    tandem_runtime::kernels::keep_freed_memory();
    let version: &'static str = Box::leak(long_version().into_boxed_str());
    let cli = Cli::from_arg_matches(&Cli::command().long_version(version).get_matches())?;
    init_logging(cli.log_format);
    if !matches!(cli.command, Command::Serve(_) | Command::Bench(_) | Command::Quickstart(_)) {
        end_quietly_when_stdout_closes();
    }
    match cli.command {
        Command::Quickstart(args) => commands::quickstart::run(args),
        Command::Data(cmd) => commands::data::run(cmd),
        Command::Train(args) => commands::train::run_train(args),
        Command::Distill(args) => commands::train::run_distill(args),
        Command::TrainDiffusion(args) => commands::diffusion::run(args),
        Command::TrainConsistency(args) => commands::consistency::run(args),
        Command::TrainTokenizer(args) => commands::train_tokenizer::run(args),
        Command::TrainImageText(args) => commands::train_image_text::run(args),
        Command::TrainEmbedder(args) => commands::train_embedder::run(args),
        Command::DistillEmbedder(args) => commands::distill_embedder::run(args),
        Command::TrainAr2(args) => commands::train_ar2::run(args),
        Command::TrainCrossEncoder(args) => commands::train_cross_encoder::run(args),
        Command::Average(args) => commands::average::run(args),
        Command::Import(cmd) => commands::import::run(cmd),
        Command::Eval(args) => commands::eval::run(args),
        Command::Sample(args) => commands::sample::run(args),
        Command::Tokenize(args) => commands::tokenize::run_tokenize(args),
        Command::Detokenize(args) => commands::tokenize::run_detokenize(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Bench(cmd) => commands::bench::run(cmd),
        Command::Openapi => {
            println!("{}", tandem_server::openapi_json());
            Ok(())
        }
    }
}

/// Lets a command whose output goes into a pipe that closes early (`tandem openapi | head`) end
/// as other Unix tools do, by SIGPIPE, instead of panicking in `println!`.
///
/// Rust starts programs with SIGPIPE ignored so that a socket its peer closed is an error rather
/// than the end of the process; the commands that serve or talk HTTP (`serve`, `bench`,
/// `quickstart`) keep that, since a client that hangs up must not stop a server.
fn end_quietly_when_stdout_closes() {
    #[cfg(unix)]
    // SAFETY: `signal` with SIG_DFL installs no handler code; it runs before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Logs to stderr at the level of `TANDEM_LOG` (default `info`), as text or JSON lines.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

/// candle's element-wise pool spins on a barrier and, beside the rayon pool that runs GEMM and the
/// convolution kernels, oversubscribes small machines: training on 2 cores ran 6x slower. Setting
/// `CANDLE_NUM_THREADS=1` keeps element-wise ops on the calling thread; an explicit value wins.
///
/// `RAYON_NUM_THREADS` is pinned to the available parallelism for another reason: without it,
/// candle's CPU matmul reads `/proc/cpuinfo` to count threads on every call, about 4,000 reads per
/// training step of the smallest diffusion UNet (5-10% of the step).
fn limit_candle_elementwise_threads() {
    // Safe here: no other thread exists yet this early in `main`.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

//! `tandem train-tokenizer`: a DualToken image tokenizer, or one of its single-codebook baselines,
//! exported as an `image_tokenizer` bundle.

use std::path::PathBuf;

use tandem_runtime::models::image_tokenizer::{ImageTokenizerConfig, TokenizerLayout};
use tandem_training::data::DatasetName;
use tandem_training::families::tokenizer::{self, LossWeights, TokenizerConfig};

/// Arguments of `tandem train-tokenizer`.
#[derive(clap::Args)]
pub struct TrainTokenizerArgs {
    /// Dataset to tokenize (28×28 grayscale: fashion-mnist or mnist).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: DatasetName,
    /// dual (a pixel and a semantic codebook), pixel_only (one codebook, reconstruction only) or
    /// unified (one codebook that both the decoder and the head read).
    #[arg(long, default_value = "dual")]
    pub layout: String,
    /// Codes per position in each stream [default: 2 for dual, 4 for the single-codebook layouts,
    /// so that every layout spends the same number of codes per image].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Entries per codebook.
    #[arg(long, default_value_t = 512)]
    pub codebook_size: usize,
    /// Width of a code vector.
    #[arg(long, default_value_t = 16)]
    pub code_dim: usize,
    /// Epochs that first train the encoder as a classifier: the frozen semantic teacher.
    #[arg(long, default_value_t = 3)]
    pub teacher_epochs: usize,
    /// A teacher saved by an earlier run (`<out>.teacher.safetensors`), instead of the teacher stage.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Epochs of tokenizer training.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate (the teacher stage runs at half of it).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight of the pixel MSE.
    #[arg(long, default_value_t = 5.0)]
    pub reconstruction_weight: f64,
    /// Weight of the distance in the teacher's features.
    #[arg(long, default_value_t = 1.0)]
    pub perceptual_weight: f64,
    /// Weight of each stream's commitment loss.
    #[arg(long, default_value_t = 5.0)]
    pub commitment_weight: f64,
    /// Weight of the semantic alignment.
    #[arg(long, default_value_t = 1.0)]
    pub semantic_weight: f64,
    /// Only the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Validation images measured per epoch.
    #[arg(long, default_value_t = 1000)]
    pub val_images: usize,
    /// Test images measured on the exported bundle [default: the whole split].
    #[arg(long)]
    pub test_images: Option<usize>,
    #[command(flatten)]
    pub bundle: super::bundle_args::BundleArgs,
}

/// The layout a command-line name selects.
pub fn layout(name: &str) -> anyhow::Result<TokenizerLayout> {
    [TokenizerLayout::Dual, TokenizerLayout::PixelOnly, TokenizerLayout::Unified]
        .into_iter()
        .find(|l| l.name() == name)
        .ok_or_else(|| anyhow::anyhow!("unknown --layout {name:?}: expected dual, pixel_only or unified"))
}

pub fn run(args: TrainTokenizerArgs) -> anyhow::Result<()> {
    let layout = layout(&args.layout)?;
    let side = if args.dataset == DatasetName::Digits { 8 } else { 28 };
    let mut arch = ImageTokenizerConfig::small([1, side, side], 10, layout);
    arch.depth = args.depth.unwrap_or(if layout == TokenizerLayout::Dual { 2 } else { 4 });
    (arch.codebook_size, arch.code_dim) = (args.codebook_size, args.code_dim);
    let out = &args.bundle;
    let mut cfg = TokenizerConfig::new(arch, args.dataset, out.data_dir(), out.target.out.clone());
    (cfg.common.name, cfg.common.version) = (out.bundle_name(), out.target.version.clone());
    (cfg.teacher_epochs, cfg.teacher, cfg.common.epochs) = (args.teacher_epochs, args.teacher.clone(), args.epochs);
    (cfg.common.batch_size, cfg.common.seed, cfg.train_limit) = (args.batch_size, args.seed, args.train_limit);
    (cfg.val_images, cfg.test_images) = (args.val_images, args.test_images);
    cfg.common.optim.lr = args.lr;
    cfg.losses = LossWeights {
        reconstruction: args.reconstruction_weight,
        perceptual: args.perceptual_weight,
        commitment: args.commitment_weight,
        semantic: args.semantic_weight,
    };
    (cfg.common.resume, cfg.common.progress) = (out.resume, !out.quiet);
    if !out.json {
        let params = tandem_runtime::models::image_tokenizer::parameter_count(&cfg.arch)?;
        eprintln!("{}: {} tokenizer on {side}x{side}, {params} parameters", cfg.common.name, layout.name());
    }
    let summary = tokenizer::train(&cfg)?;
    super::train::print_summary(&summary, out.json);
    Ok(())
}

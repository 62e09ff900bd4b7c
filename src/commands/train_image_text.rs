//! `tandem train-image-text`: a CLIP-style image–text dual encoder trained from scratch on a
//! dataset's images and the fixed captions of its classes, exported as an `image_text` bundle.

use std::path::PathBuf;

use tandem_training::arch;
use tandem_training::data::{self, DatasetName, ModelName};
use tandem_training::families::image_text::{self, CprdSettings, ImageTextTrainConfig, TextTower};

/// Arguments of `tandem train-image-text`.
#[derive(clap::Args)]
pub struct TrainImageTextArgs {
    /// Images to train on: fashion-mnist (captions from WordNet), or digits and mnist (captions
    /// from the templates alone).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: DatasetName,
    /// The image tower: an architecture preset (`tandem train --help` lists them) or a JSON
    /// `CnnConfig`, with the shared width as its classes.
    #[arg(long, default_value = "student")]
    pub image_arch: String,
    /// Width of the shared space.
    #[arg(long, default_value_t = 64)]
    pub embed_dim: usize,
    /// The `tokenizer.json` (WordPiece) cut to the captions' tokens [default: all-MiniLM-L6-v2's,
    /// from `tandem data fetch minilm`].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// WordNet's `data.*` files, read from here instead of the fetched copy.
    #[arg(long)]
    pub wordnet_dir: Option<PathBuf>,
    /// Width of the text tower.
    #[arg(long, default_value_t = 128)]
    pub text_hidden: usize,
    /// Layers of the text tower.
    #[arg(long, default_value_t = 2)]
    pub text_layers: usize,
    /// Attention heads of the text tower.
    #[arg(long, default_value_t = 4)]
    pub text_heads: usize,
    /// Longest caption or label in tokens.
    #[arg(long, default_value_t = 64)]
    pub max_seq_length: usize,
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Validation images measured per epoch.
    #[arg(long, default_value_t = 1000)]
    pub val_images: usize,
    /// Test images measured on the exported bundle [default: the whole split].
    #[arg(long)]
    pub test_images: Option<usize>,
    /// Largest random shift of a training image, in pixels.
    #[arg(long, default_value_t = 2)]
    pub augment_shift: usize,
    /// Also distil the rankings of an image-text matcher (a cross-encoder reading each image and
    /// caption jointly), trained first in the same run: CPRD, on top of the contrastive loss.
    #[arg(long)]
    pub cprd: bool,
    /// CPRD: the matcher's image tower, a preset or a JSON `CnnConfig` (its classes `--embed-dim`).
    #[arg(long, default_value = "teacher", requires = "cprd")]
    pub teacher_arch: String,
    /// CPRD: width of the matcher's MLP over the two towers' features.
    #[arg(long, default_value_t = 128, requires = "cprd")]
    pub teacher_hidden: usize,
    /// CPRD: epochs that train the matcher first, at the peak rate.
    #[arg(long, default_value_t = 2, requires = "cprd")]
    pub teacher_epochs: usize,
    /// CPRD: a matcher saved by an earlier run (`<out>.teacher.safetensors`, same tokenizer and
    /// towers), instead of the matcher stage.
    #[arg(long, requires = "cprd")]
    pub teacher: Option<PathBuf>,
    /// CPRD: hard negatives per image, the batch's other-class captions the student ranks highest.
    #[arg(long, default_value_t = 8, requires = "cprd")]
    pub cprd_negatives: usize,
    /// CPRD: weight of the distillation term.
    #[arg(long, default_value_t = 0.5, requires = "cprd")]
    pub cprd_beta: f64,
    #[command(flatten)]
    pub bundle: super::bundle_args::BundleArgs,
}

pub fn run(args: TrainImageTextArgs) -> anyhow::Result<()> {
    let out = &args.bundle;
    let data_dir = out.data_dir();
    let tokenizer = match &args.tokenizer {
        Some(path) => path.clone(),
        None => data::installed_dir(ModelName::MiniLm, &data_dir)?.join("tokenizer.json"),
    };
    let side = if args.dataset == DatasetName::Digits { 8 } else { 28 };
    let image_arch = arch::resolve(&args.image_arch, side, args.embed_dim)?;
    let mut cfg = ImageTextTrainConfig::new(args.dataset, data_dir, tokenizer, image_arch, out.target.out.clone());
    (cfg.common.name, cfg.common.version, cfg.wordnet_dir) =
        (out.bundle_name(), out.target.version.clone(), args.wordnet_dir.clone());
    cfg.text = TextTower {
        hidden: args.text_hidden,
        layers: args.text_layers,
        heads: args.text_heads,
        intermediate: 4 * args.text_hidden,
    };
    (cfg.max_seq_length, cfg.common.epochs, cfg.common.batch_size, cfg.common.seed) =
        (args.max_seq_length, args.epochs, args.batch_size, args.seed);
    (cfg.train_limit, cfg.val_images, cfg.test_images) = (args.train_limit, args.val_images, args.test_images);
    cfg.augment.max_shift = args.augment_shift;
    if args.cprd {
        cfg.cprd = Some(CprdSettings {
            teacher_arch: arch::resolve(&args.teacher_arch, side, args.embed_dim)?,
            teacher_hidden: args.teacher_hidden,
            teacher_epochs: args.teacher_epochs,
            teacher: args.teacher.clone(),
            negatives: args.cprd_negatives,
            beta: args.cprd_beta,
        });
    }
    cfg.common.optim.lr = args.lr;
    (cfg.common.resume, cfg.common.progress) = (out.resume, !out.quiet);
    if !out.json {
        eprintln!(
            "{}: image-text dual encoder on {}, image tower {} into {} dimensions, text tower {}x{}",
            cfg.common.name, args.dataset, args.image_arch, args.embed_dim, args.text_layers, args.text_hidden
        );
    }
    let summary = image_text::train(&cfg)?;
    super::train::print_summary(&summary, out.json);
    Ok(())
}

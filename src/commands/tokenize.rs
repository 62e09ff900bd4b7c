//! `tandem tokenize` and `tandem detokenize`: an `image_tokenizer` bundle run in-process, exactly
//! as `POST /v1/models/{id}/tokenize` and `/detokenize` run it, reading and writing the routes'
//! JSON shapes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tandem_runtime::image::GrayImage;
use tandem_runtime::{BatchConfig, ModelInfo, Runtime, RuntimeConfig};
use tandem_server::wire::image_tokenizer::{DetokenizeRequest, TokenizeResponse};

/// The kind both commands need.
const KIND: &str = "image_tokenizer";

/// Arguments of `tandem tokenize`.
#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// An `image_tokenizer` bundle directory.
    #[arg(long)]
    model: PathBuf,
    /// PNG or JPEG files; colour is converted to grayscale, and other sizes are resized to the
    /// model's input.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print one JSON object in the shape of `POST /v1/models/{id}/tokenize`'s answer, whose
    /// entries `tandem detokenize` reads back.
    #[arg(long)]
    json: bool,
}

/// Arguments of `tandem detokenize`.
#[derive(clap::Args)]
pub struct DetokenizeArgs {
    /// An `image_tokenizer` bundle directory.
    #[arg(long)]
    model: PathBuf,
    /// A JSON file: `{"pixel_tokens": [...], "shape": {"height", "width", "depth"}}` (the body of
    /// `POST /v1/models/{id}/detokenize`), or a whole tokenize answer, whose first entry is decoded.
    tokens: PathBuf,
    /// Where to write the PNG.
    #[arg(long)]
    out: PathBuf,
}

pub fn run_tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let images = args
        .images
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            GrayImage::decode(&bytes).with_context(|| format!("{} is not a PNG or JPEG image", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (runtime, info) = load(&args.model, images.len())?;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let res = TokenizeResponse::from(tokio.block_on(runtime.tokenize(&info.id, images))?);
    if args.json {
        println!("{}", serde_json::to_string(&res)?);
        return Ok(());
    }
    for (path, entry) in args.images.iter().zip(&res.tokens) {
        let shape = entry.shape;
        println!("{}: {}x{}x{} tokens of {}", path.display(), shape.height, shape.width, shape.depth, res.model);
        println!("  pixel: {}", ids(&entry.pixel_tokens));
        if let Some(semantic) = &entry.semantic_tokens {
            println!("  semantic: {}", ids(semantic));
        }
    }
    Ok(())
}

pub fn run_detokenize(args: DetokenizeArgs) -> anyhow::Result<()> {
    let request = read_request(&args.tokens)?;
    let (runtime, info) = load(&args.model, 1)?;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let res = tokio
        .block_on(runtime.detokenize(&info.id, &request.pixel_tokens, request.shape.into()))
        .with_context(|| format!("cannot decode the tokens of {}", args.tokens.display()))?;
    tandem_runtime::fs::atomic_write(&args.out, &res.image.png)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("wrote a {}x{} image of {} to {}", res.image.width, res.image.height, res.model, args.out.display());
    Ok(())
}

/// The runtime with the bundle loaded, refused unless it is a tokenizer. One batch holds every
/// item, and nothing has a deadline: a command line waits as long as it takes.
fn load(bundle: &Path, n: usize) -> anyhow::Result<(Runtime, ModelInfo)> {
    let batch = BatchConfig {
        max_batch_size: n.max(1),
        max_batch_delay: Duration::ZERO,
        request_timeout: Duration::from_secs(365 * 24 * 3600),
        ..BatchConfig::default()
    };
    let runtime = Runtime::new(RuntimeConfig { batch, cache_capacity: 0 });
    let info = runtime.load(bundle).with_context(|| format!("cannot load {}", bundle.display()))?;
    if info.kind != KIND {
        bail!("{} is a `{}` bundle; this command needs an `{KIND}` bundle", bundle.display(), info.kind);
    }
    Ok((runtime, info))
}

/// The detokenize request in `path`: the route's body, or a tokenize answer's first entry.
fn read_request(path: &Path) -> anyhow::Result<DetokenizeRequest> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let entry = match value.get("tokens") {
        Some(tokens) => {
            tokens.get(0).cloned().ok_or_else(|| anyhow!("{}: `tokens` is not a non-empty list", path.display()))?
        }
        None => value,
    };
    serde_json::from_value(entry).with_context(|| {
        format!(
            "{} holds neither {{\"pixel_tokens\": [...], \"shape\": {{\"height\", \"width\", \"depth\"}}}} nor a \
             tokenize answer",
            path.display()
        )
    })
}

/// Ids separated by spaces.
fn ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

//! Tandem's embeddable model runtime.
//!
//! It loads model bundles (a `manifest.json` plus `model.safetensors`), builds the architecture they
//! name, and answers requests through a per-model dynamic batcher with a result cache. Nothing here
//! knows about HTTP: a Rust program can embed it directly.
//!
//! ```no_run
//! # async fn demo() -> tandem_runtime::Result<()> {
//! use tandem_runtime::{image::GrayImage, ClassifyRequest, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::default());
//! let info = runtime.load("models/mnist-student".as_ref())?;
//! let image = GrayImage::decode(&std::fs::read("seven.png").unwrap())?;
//! let res = runtime.classify(&info.id, ClassifyRequest { images: vec![image], top_k: 3 }).await?;
//! println!("{}: {}", res.predictions[0][0].label, res.predictions[0][0].score);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod batch_delay;
pub mod batcher;
pub mod bundle;
pub mod cache;
pub mod device;
pub mod diffusion;
mod error;
pub mod families;
pub mod family;
pub mod fs;
pub mod hf;
pub mod image;
pub mod import;
mod infer;
pub mod kernels;
pub mod layers;
pub mod models;
pub mod registry;
pub mod repository;
mod runtime;
pub mod telemetry;
pub mod testing;
pub mod testing_bits;
pub mod testing_text;
pub mod text;
pub mod timing;

pub use batch_delay::DelayPolicy;
pub use batcher::BatchConfig;
pub use cache::CacheStats;
pub use error::{Error, Result};
pub use families::classifier::{ClassifyRequest, ClassifyResponse, Prediction, Probabilities};
pub use families::embedder::{
    EmbedRequest, EmbedResponse, Ranked, RerankRequest, RerankResponse, SimilarityResponse, TextUsage,
};
pub use families::generator::{GenerateRequest, GenerateResponse, GeneratedImage};
pub use families::image_text::{ImageTextEmbedRequest, ImageTextInput, ZeroShotRequest};
pub use families::image_tokenizer::{DetokenizeResponse, ImageTokens, TokenGrid, TokenizeResponse};
pub use infer::INLINE_PREPARE_UNITS;
pub use runtime::{ModelInfo, Runtime, RuntimeConfig, StagedModel};
pub use telemetry::describe_metrics;

/// Re-exported so that downstream crates build tensors with the exact candle version used here.
pub use candle_core;
/// Re-exported for the same reason as [`candle_core`].
pub use candle_nn;

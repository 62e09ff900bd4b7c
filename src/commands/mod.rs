//! One module per subcommand.

pub mod average;
pub mod bench;
pub mod bundle_args;
pub mod consistency;
pub mod data;
pub mod diffusion;
pub mod distill_embedder;
pub mod eval;
pub mod import;
pub mod quickstart;
pub mod retrieval_args;
pub mod sample;
pub mod serve;
pub mod tokenize;
pub mod train;
pub mod train_ar2;
pub mod train_cross_encoder;
pub mod train_embedder;
pub mod train_image_text;
pub mod train_tokenizer;

//! The model families training knows, one module each, mirroring the runtime's families.
//!
//! Each implements [`crate::trainer::Family`]: it supplies its data, its model and the loss of a
//! batch, and the shared loop does the rest.

pub mod classifier;
pub mod common_run;
pub mod consistency;
pub mod cross_encoder;
pub mod diffusion;
pub mod embedder;
pub mod image_generation;
pub mod image_text;
pub mod text_run;
pub mod tokenizer;

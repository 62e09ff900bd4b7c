//! The training crate's integration tests, linked as one binary.

mod average;
mod cross_encoder;
mod diffusion;
mod embedder;
mod image_text;
mod methods;
mod reproduction;
mod tokenizer;

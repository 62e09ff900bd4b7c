//! Model architectures, each defined once and shared by training and serving.

pub mod cnn;
pub mod sentence_encoder;

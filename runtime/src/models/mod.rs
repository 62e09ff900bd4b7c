//! Model architectures, each defined once and shared by training and serving.

pub mod bert_config;
pub mod bert_inference;
pub mod cnn;
pub mod consistency;
pub mod cross_encoder;
pub mod image_text;
pub mod image_text_matcher;
pub mod image_tokenizer;
pub mod rvq;
pub mod sentence_encoder;
pub mod served_bert;
pub mod trainable_bert;
pub mod unet;
pub mod vit;

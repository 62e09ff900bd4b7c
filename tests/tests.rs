//! End-to-end tests: the real `tandem` binary, real processes and real sockets on 127.0.0.1.

mod cli;
mod common;
mod cross_encoder;
mod deploy;
mod distill_embedder;
mod embedder;
mod errors;
mod generate;
mod http;
mod image_text;
mod kserve;
mod lifecycle;
mod openapi_fuzz;
mod resume;
mod retrieval;
mod settings;
mod shipped;
mod tokenize;

//! HTTP tests of the server crate: in-process router tests, real-socket tests and the OpenAPI
//! contract, in one test binary so that it links once.

mod common;
mod contract;
mod cross_encoder;
mod embedder;
mod image_text;
mod image_tokenizer;
mod kserve;
mod lifecycle;
mod router;
mod socket;

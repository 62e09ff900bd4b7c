//! The training crate's integration tests, linked as one binary.

mod methods;
mod reproduction;

//! Model families, one module each.

pub mod classifier;

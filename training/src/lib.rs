//! Tandem's training side: datasets, losses, distillation methods and training loops.
//!
//! The networks themselves live in the runtime crate, so what is trained here is exactly what is
//! served; this crate adds only what serving never needs.

pub mod arch;
pub mod augment;
pub mod checkpoint;
pub mod data;
mod error;
pub mod eval;
pub mod init;
pub mod losses;
pub mod methods;
pub mod optim;
pub mod plot;
pub mod report;
pub mod retrieval;
pub mod sampling;
pub mod trainer;

pub use error::{Error, Result};
pub use methods::Method;
pub use trainer::{train, TrainConfig};

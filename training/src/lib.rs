//! Tandem's training side: datasets, losses, distillation methods and the training loop.
//!
//! The networks themselves live in the runtime crate, so what is trained here is exactly what is
//! served; this crate adds only what serving never needs. One loop ([`trainer`]) trains every
//! model family ([`families`]); each family supplies its data, model and loss, and each of its
//! methods ([`methods`]) owns its loss and state.

pub mod arch;
pub mod augment;
pub mod average;
pub mod checkpoint;
pub mod data;
mod error;
pub mod eval;
pub mod families;
pub mod fid;
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
pub use families::classifier::{train, TrainConfig};
pub use methods::Method;

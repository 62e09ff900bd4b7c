//! Device selection: CPU by default, CUDA when built with the `cuda` feature and a GPU is present.

use candle_core::Device;

/// The device models run on: one per process, chosen on first use.
///
/// The choice is made once here so that training and serving agree on it. It is also made
/// *once* because candle tells CUDA devices apart by the handle that `Device::new_cuda`
/// returns, not by the ordinal: two calls give two devices, and an op between a teacher's
/// tensor and a student's would fail with a device mismatch although both live on GPU 0.
/// Clones of one handle share its stream and compare equal.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
        DEVICE
            .get_or_init(|| match Device::new_cuda(0) {
                Ok(dev) => dev,
                Err(err) => {
                    // candle appends a backtrace when RUST_BACKTRACE is set; the first line is the reason.
                    let reason = err.to_string();
                    tracing::info!(
                        reason = reason.lines().next().unwrap_or_default(),
                        "no CUDA device; running on the CPU"
                    );
                    Device::Cpu
                }
            })
            .clone()
    }
    #[cfg(not(feature = "cuda"))]
    Device::Cpu
}

/// Only a `cuda` build can hand out two different devices; on the CPU every call is `Device::Cpu`.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;

    #[test]
    fn every_call_returns_the_same_device() {
        assert!(default_device().same_device(&default_device()));
    }
}

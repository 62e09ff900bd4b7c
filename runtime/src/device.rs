//! Device selection: CPU by default, CUDA when built with the `cuda` feature and a GPU is present.

use candle_core::Device;

/// The device models run on.
///
/// The choice is made once here so that training and serving agree on it.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(dev) = Device::new_cuda(0) {
            return dev;
        }
    }
    Device::Cpu
}

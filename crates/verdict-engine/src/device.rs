//! Picking the device and the dtype that goes with it.

use candle_core::{DType, Device};

use crate::error::{EngineError, Result};

/// `cpu`, `cuda` or `cuda:N`. CUDA needs a binary built with the `cuda` feature.
pub fn pick(spec: &str) -> Result<(Device, DType)> {
    match spec {
        "cpu" => Ok((Device::Cpu, DType::F32)),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s.strip_prefix("cuda:").map(str::parse::<usize>).transpose().map_err(|_| {
                EngineError::Device(format!("bad device {s:?}: expected cuda:N"))
            })?;
            let dev = Device::new_cuda(ordinal.unwrap_or(0)).map_err(|source| EngineError::Compute { step: "opening the CUDA device", source })?;
            Ok((dev, DType::BF16))
        }
        other => Err(EngineError::Device(format!("unknown device {other:?}: expected cpu, cuda or cuda:N"))),
    }
}

/// Free device memory in bytes, on CUDA; `None` on the CPU (batches there are sized by the
/// user, not by memory).
pub fn free_memory(device: &Device) -> Option<usize> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        return dev.cuda_stream().context().mem_get_info().ok().map(|(free, _total)| free);
    }
    let _ = device;
    None
}

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

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
            Ok((open_cuda(ordinal.unwrap_or(0))?, DType::BF16))
        }
        other => Err(EngineError::Device(format!("unknown device {other:?}: expected cpu, cuda or cuda:N"))),
    }
}

/// The device on a stream of its own (not the per-thread default stream: decode steps are
/// captured into CUDA graphs, crate::engine::graphs), without cudarc's per-tensor event
/// tracking, which only matters across streams and is not allowed during a capture.
#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    let dev = candle_core::CudaDevice::new_with_stream(ordinal).map_err(|source| EngineError::Compute { step: "opening the CUDA device", source })?;
    // SAFETY: everything the engine does on this device runs on its one stream, so no tensor
    // is used on another stream before its allocation or after its free.
    unsafe { dev.disable_event_tracking() };
    keep_freed_memory(&dev)?;
    Ok(Device::Cuda(dev))
}

/// Tensors are allocated from the device's default memory pool (stream-ordered), whose
/// release threshold is 0: at every synchronization (once a decode step, when the sampled
/// tokens come back) it hands all freed memory back to the driver, and the next step maps
/// it again — a gigabyte of logits at batch 1,024. Keep it instead: the engine sizes its
/// batches against the memory free after loading, so what the pool keeps is what it reuses.
#[cfg(feature = "cuda")]
fn keep_freed_memory(dev: &candle_core::CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    let fail = |what: &str, r: sys::CUresult| EngineError::Device(format!("{what} of the CUDA memory pool: {r:?}"));
    ctx.bind_to_thread().map_err(|e| EngineError::Device(format!("binding the CUDA context: {e}")))?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut keep: u64 = u64::MAX;
    // SAFETY: plain driver calls on this context's device, with pointers to live locals.
    unsafe {
        let r = sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device());
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(fail("getting the default", r));
        }
        let r = sys::cuMemPoolSetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, (&mut keep as *mut u64).cast());
        if r != sys::CUresult::CUDA_SUCCESS {
            return Err(fail("setting the release threshold", r));
        }
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|source| EngineError::Compute { step: "opening the CUDA device", source })
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

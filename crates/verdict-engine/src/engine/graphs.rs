//! A decode step's device inputs, and CUDA graphs of decode steps.
//!
//! Why graphs: a small batch's step is a few hundred kernel launches of a few microseconds
//! of GPU work each, so the host's launching, not the GPU, sets its pace (3.7 ms a step at
//! batch 8 for a 0.5B model, for about 0.3 ms of GPU work). A graph replays the whole step
//! in one launch.
//!
//! What makes a step replayable: every input it reads sits in a device buffer that stays
//! put — the tokens, the positions, the own-cache slot where keys and values are written
//! (read on the device, `KvCache::write_indexed`), and the attention plan padded to a fixed
//! size (`Plan::padded`: a fixed grid over fixed tables) — and the logits land in a buffer
//! that stays put too. Steps run at a few bucketed batch sizes: a step of n rows runs in
//! the smallest bucket ≥ n, its extra rows free (no plan group reads them, nothing reads
//! what they write). A bucket is captured the first time a step needs it, and again, with
//! room to spare, when a step's plan outgrows the captured tables.

use candle_core::{Device, Tensor};

use crate::segmented::{DevicePlan, Plan};

/// One decode step's inputs as the host has them: `b` rows' tokens and positions, the own
/// slot every row writes, and the attention plan over the `b` rows.
pub struct StepInputs<'a> {
    pub tokens: &'a [u32],
    pub positions: &'a [u32],
    pub slot: u32,
    pub plan: Plan,
}

/// The same on the device: what the model reads.
pub struct DeviceInputs {
    pub tokens: Tensor,
    pub positions: Tensor,
    /// u32 `[1, 1, 1, 1]` (crate::model::Step::slot).
    pub slot: Tensor,
    pub plan: DevicePlan,
}

impl DeviceInputs {
    pub fn upload(inputs: StepInputs<'_>, device: &Device) -> candle_core::Result<Self> {
        let b = inputs.tokens.len();
        Ok(Self {
            tokens: Tensor::from_slice(inputs.tokens, (b, 1), device)?,
            positions: Tensor::from_slice(inputs.positions, (b, 1), device)?,
            slot: Tensor::from_slice(&[inputs.slot], (1, 1, 1, 1), device)?,
            plan: inputs.plan.upload(device)?,
        })
    }

    /// Put another step's inputs (of the same batch and plan size) in these buffers.
    #[cfg(feature = "cuda")]
    fn overwrite(&mut self, inputs: StepInputs<'_>) -> candle_core::Result<()> {
        use crate::kernels::cuda::overwrite;
        if inputs.tokens.len() != self.tokens.dim(0)? || inputs.positions.len() != inputs.tokens.len() {
            candle_core::bail!("a step of {} rows cannot replay a graph of {}", inputs.tokens.len(), self.tokens.dim(0)?);
        }
        overwrite(&self.tokens, inputs.tokens)?;
        overwrite(&self.positions, inputs.positions)?;
        overwrite(&self.slot, &[inputs.slot])?;
        self.plan.overwrite(inputs.plan)
    }
}

/// Bucketed batch sizes a graph is captured for. Past the largest, a step's GPU work
/// outlasts its launches and graphs buy little (and each bucket holds its own logits).
pub const BUCKETS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// The smallest table size a captured plan gets (each table is rounded up to a power of
/// two at least this big), so the first few steps' growth does not recapture.
#[cfg(feature = "cuda")]
const MIN_TABLE: usize = 64;

#[cfg(feature = "cuda")]
pub use captured::DecodeGraphs;

#[cfg(feature = "cuda")]
mod captured {
    use std::collections::{BTreeSet, HashMap};

    use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaDevice, Device, Tensor};

    use super::{DeviceInputs, StepInputs, BUCKETS, MIN_TABLE};
    use crate::segmented::PlanSize;

    /// One bucket's graph, the buffers it reads and the logits it writes.
    struct Captured {
        inputs: DeviceInputs,
        size: PlanSize,
        logits: Tensor,
        graph: CudaGraph,
    }

    /// The decode graphs of one runner (they address its caches, which never move).
    pub struct DecodeGraphs {
        graphs: HashMap<usize, Captured>,
        /// Buckets whose capture failed: their steps run eagerly.
        broken: BTreeSet<usize>,
        max_rows: usize,
        /// Times a bucket was captured.
        pub captures: usize,
        /// Steps replayed from a graph.
        pub replays: usize,
    }

    impl DecodeGraphs {
        /// Graphs for steps of up to `max_rows` rows (the runner's).
        pub fn new(max_rows: usize) -> Self {
            Self { graphs: HashMap::new(), broken: BTreeSet::new(), max_rows, captures: 0, replays: 0 }
        }

        /// The rows a step of `n` rows runs over in a graph, if a bucket takes it.
        pub fn bucket(&self, n: usize) -> Option<usize> {
            BUCKETS.iter().copied().find(|&b| b >= n && b <= self.max_rows && !self.broken.contains(&b))
        }

        /// Run one step of `inputs.tokens.len()` rows (a bucket) through its graph and return
        /// its logits, `[b, V]` f32: a buffer the next replay of the bucket overwrites. The
        /// first step of a bucket, or one whose plan outgrew the bucket's tables, runs
        /// `forward` eagerly (that is the step) and is then captured for the steps to come.
        pub fn run(
            &mut self,
            device: &Device,
            inputs: StepInputs<'_>,
            mut forward: impl FnMut(&DeviceInputs) -> candle_core::Result<Tensor>,
        ) -> candle_core::Result<Tensor> {
            let b = inputs.tokens.len();
            let need = inputs.plan.size();
            if let Some(c) = self.graphs.get_mut(&b) {
                if let Some(plan) = inputs.plan.padded(c.size) {
                    crate::profile::time("decode", "graph inputs", device, || c.inputs.overwrite(StepInputs { plan, ..inputs }))?;
                    crate::profile::time("decode", "graph replay", device, || c.graph.launch()).w()?;
                    self.replays += 1;
                    return Ok(c.logits.clone());
                }
            }
            let Device::Cuda(cuda) = device else { candle_core::bail!("CUDA graphs need a CUDA device") };
            let size = need.room(MIN_TABLE, self.graphs.get(&b).map(|c| c.size).unwrap_or_default());
            self.graphs.remove(&b);
            let plan = inputs.plan.padded(size).ok_or_else(|| candle_core::Error::Msg("a plan did not pad to its own room".into()))?;
            // The buffers are uploaded before the upload cache is on: they must be the
            // graph's own, not cached copies shared with whoever uploaded the same bytes.
            let dev_inputs = DeviceInputs::upload(StepInputs { plan, ..inputs }, device)?;
            let (logits, graph) = capture(cuda, &dev_inputs, &mut forward)?;
            self.captures += 1;
            match graph {
                Some(graph) => {
                    self.graphs.insert(b, Captured { inputs: dev_inputs, size, logits: logits.clone(), graph });
                }
                None => {
                    self.broken.insert(b);
                }
            }
            Ok(logits)
        }
    }

    /// Run the step eagerly (its result, and the warm-up that loads every kernel and caches
    /// every small upload candle makes for layouts), then capture the same work, writing its
    /// logits into the eager run's. A capture that fails leaves a valid eager result and no
    /// graph (the bucket then runs eagerly): the reason is logged.
    fn capture(
        cuda: &CudaDevice,
        inputs: &DeviceInputs,
        forward: &mut impl FnMut(&DeviceInputs) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<(Tensor, Option<CudaGraph>)> {
        // While capturing, candle serves its small host-to-device uploads (shapes and
        // strides for strided kernels) from copies the eager run made: a capture may not copy
        // from the host.
        let _cache = cuda.enable_cuda_graph_htod_cache();
        let _untimed = crate::profile::suspend();
        let logits = forward(inputs)?;
        let stream = cuda.cuda_stream();
        stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED).w()?;
        // Every tensor the captured work makes is dropped inside the capture (its free is
        // part of the graph), the logits' copy included.
        let work = forward(inputs).and_then(|l| logits.slice_set(&l, 0, 0));
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
        match (work, graph) {
            (Ok(()), Ok(Some(graph))) => Ok((logits, Some(graph))),
            (work, graph) => {
                let why = match (work, graph) {
                    (Err(e), _) => e.to_string(),
                    (_, Err(e)) => e.to_string(),
                    _ => "the capture recorded nothing".to_string(),
                };
                tracing::warn!(rows = inputs.tokens.dims()[0], error = %why, "could not capture a decode step in a CUDA graph; its batch size runs without one");
                Ok((logits, None))
            }
        }
    }
}

//! Verdict's GRM engine: loads a judge (and optionally a meta reward model) from a local
//! Hugging Face folder with candle, and samples k judgements per item in batches.
//!
//! Layout, top-down:
//! - [`judge`]: the entry point. `Prompter` (a judge before its weights: `prepare` renders,
//!   tokenizes and length-checks an item's k prompts), `Judge::load` and `judge` (batched sampling, parsing, meta RM, aggregation).
//! - [`session`]: items in, verdicts out, over one [`engine`]: the scheduler (admission of
//!   waiting samples into freed rows: continuous batching), the model runner (KV cache,
//!   one prefill per distinct prompt shared by its samples) and the sampling stage
//!   (per-sequence RNGs, stop tokens, the constrained score block of [`constraint`], forced
//!   scores); [`sampler`]: temperature / top-p, the same algorithm the CUDA sampling kernel
//!   runs.
//! - [`kernels`]: our CUDA kernels (`kernels/verdict.cu`): device sampling, fused RMSNorm and
//!   gated activation, attention softmax with the mask built in, one-kernel decode attention.
//! - [`segmented`]: decode attention over shared segments (a prompt's keys read once for
//!   every row that continues it), on the CPU and in our CUDA kernels.
//! - [`profile`]: `VERDICT_PROFILE=1` phase timings.
//! - [`model`]: the decoder forward (Qwen2, Qwen3, Llama 3, Gemma 2) over a preallocated KV
//!   cache, with per-sequence positions and padding masks.
//! - [`folder`], [`config`], [`tokenizer`], [`chat`]: reading a model folder;
//!   [`fingerprint`]: the content hash that names its weights.
//! - [`meta_rm`]: the sequence-classification meta reward model.
//! - [`synth`]: `verdict model init`, random-weight model folders for tests and demos.
//! - [`device`]: picking CPU or CUDA.

pub mod chat;
pub mod config;
pub mod constraint;
pub mod device;
pub mod engine;
pub mod error;
pub mod fingerprint;
pub mod folder;
pub mod judge;
pub mod kernels;
pub mod meta_rm;
pub mod model;
pub mod probe;
pub mod profile;
pub mod sampler;
pub mod segmented;
pub mod session;
pub mod synth;
pub mod tokenizer;

pub use config::{Arch, ModelConfig};
pub use error::EngineError;
pub use fingerprint::DigestCache;
pub use judge::{EngineOptions, Judge, PreparedItem, Prompter};
pub use session::Session;

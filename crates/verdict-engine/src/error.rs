//! The engine's errors. Each variant names the step that failed and the file or item it
//! failed on, so a user can fix the input without reading a backtrace.

use std::path::PathBuf;

use verdict_core::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model folder {path}: {problem}")]
    Folder { path: PathBuf, problem: String },
    #[error("{path}: {problem}")]
    Config { path: PathBuf, problem: String },
    #[error("{path}: cannot load the tokenizer: {problem}")]
    Tokenizer { path: PathBuf, problem: String },
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("{path}: weights do not match config.json: {source}")]
    Weights { path: PathBuf, source: candle_core::Error },
    #[error("{0}")]
    Spec(String),
    #[error("item {id}: {error}")]
    Item { id: String, error: FieldError },
    #[error("{step} failed: {source}")]
    Compute { step: &'static str, source: candle_core::Error },
    #[error("tokenizer failed on {what}: {problem}")]
    Encode { what: String, problem: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("device: {0}")]
    Device(String),
    #[error("model init: {0}")]
    Synth(String),
}

impl EngineError {
    pub(crate) fn folder(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        EngineError::Folder { path: path.into(), problem: problem.into() }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        EngineError::Config { path: path.into(), problem: problem.into() }
    }
}

/// Tag a candle error with the step it happened in.
pub(crate) trait ComputeContext<T> {
    fn step(self, step: &'static str) -> Result<T, EngineError>;
}

impl<T> ComputeContext<T> for candle_core::Result<T> {
    fn step(self, step: &'static str) -> Result<T, EngineError> {
        self.map_err(|source| EngineError::Compute { step, source })
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

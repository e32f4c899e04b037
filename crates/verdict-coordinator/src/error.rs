//! The coordinator's errors and their one mapping to gRPC status codes. Internal failures
//! are logged in full and shown to clients as generic text.

use verdict_proto::ConvertError;
use verdict_queue::QueueError;
use verdict_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Precondition(String),
}

impl From<ConvertError> for CoordinatorError {
    fn from(e: ConvertError) -> Self {
        CoordinatorError::Invalid(e.to_string())
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::Invalid(m) => tonic::Status::invalid_argument(m),
            CoordinatorError::Precondition(m) => tonic::Status::failed_precondition(m),
            CoordinatorError::Store(StoreError::NotFound(what)) => tonic::Status::not_found(format!("{what} not found")),
            CoordinatorError::Store(StoreError::Conflict(m)) => tonic::Status::failed_precondition(m),
            CoordinatorError::Queue(QueueError::BadJudge(j)) => {
                tonic::Status::invalid_argument(QueueError::BadJudge(j).to_string())
            }
            // Data the database refuses is the caller's problem, and retrying would not help.
            CoordinatorError::Store(StoreError::Db(sqlx_err)) if data_error(&sqlx_err) => {
                tracing::error!(error = %sqlx_err, "the store refused the data");
                tonic::Status::invalid_argument(format!("the store refused the data: {sqlx_err}"))
            }
            CoordinatorError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                tonic::Status::unavailable("the store is unavailable; retry")
            }
            CoordinatorError::Queue(e) => {
                tracing::error!(error = %e, "queue failure");
                tonic::Status::unavailable("the queue is unavailable; retry")
            }
        }
    }
}

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

/// Parse a job id from the wire.
pub fn job_id(s: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(s.trim()).map_err(|_| CoordinatorError::Invalid(format!("job_id {s:?} is not a job id (a UUID)")))
}

/// Whether the database refused the data itself (SQLSTATE classes 22 data exception, 23
/// integrity violation, 54 program limit such as an index row too large): the same request
/// would fail again.
pub fn data_error(e: &verdict_store::sqlx::Error) -> bool {
    match e {
        verdict_store::sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
        _ => false,
    }
}

//! Key names. Every key of one judge carries the hash tag `{judge}` so that scripts touching
//! several of them run on one Redis Cluster slot.

use crate::QueueError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub items: String,
    pub dead: String,
    pub cancelled: String,
    /// Sorted set of the judge's workers by the time of their last heartbeat.
    pub workers: String,
    worker_prefix: String,
}

/// Judge names become part of key names: keep them to a safe alphabet.
pub fn valid_judge_name(judge: &str) -> bool {
    !judge.is_empty()
        && judge.len() <= 128
        && judge.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '/' | ':'))
}

impl Keys {
    pub fn new(prefix: &str, judge: &str) -> Result<Self, QueueError> {
        if !valid_judge_name(judge) {
            return Err(QueueError::BadJudge(judge.to_string()));
        }
        Ok(Self {
            items: format!("{prefix}:{{{judge}}}:items"),
            dead: format!("{prefix}:{{{judge}}}:dead"),
            cancelled: format!("{prefix}:{{{judge}}}:cancelled"),
            workers: format!("{prefix}:{{{judge}}}:workers"),
            worker_prefix: format!("{prefix}:{{{judge}}}:worker:"),
        })
    }

    /// A worker's heartbeat record (expires with its TTL).
    pub fn worker(&self, id: &str) -> String {
        format!("{}{id}", self.worker_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag() {
        let k = Keys::new("verdict", "qwen-7b").unwrap();
        assert_eq!(k.items, "verdict:{qwen-7b}:items");
        assert_eq!(k.dead, "verdict:{qwen-7b}:dead");
        assert!(Keys::new("verdict", "a{b}").is_err());
        assert!(Keys::new("verdict", "").is_err());
    }
}

//! Cancelled jobs: a set per judge that heartbeats hand to workers, which then drop the
//! job's items instead of judging them.

use redis::AsyncCommands;

use crate::{Queue, Result};

impl Queue {
    pub async fn cancel(&self, judge: &str, job_id: &str) -> Result<()> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let _: u64 = c.sadd(&k.cancelled, job_id).await?;
        Ok(())
    }

    pub async fn cancelled_jobs(&self, judge: &str) -> Result<Vec<String>> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        Ok(c.smembers(&k.cancelled).await?)
    }
}

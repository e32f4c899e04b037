//! The judge's stream itself: its consumer group, appending items, whether entries are
//! still there, and its lengths.

use redis::Value;

use crate::{QueueError, QueueStats, QueuedItem, Queue, Result, StreamEntry, FIELD};

impl Queue {
    /// Create the consumer group (and the stream) if missing. Also needed after a Redis
    /// restart that lost them.
    pub async fn ensure_group(&self, judge: &str) -> Result<()> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&k.items)
            .arg(&self.cfg.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Append items; returns their entry ids in order.
    pub async fn enqueue(&self, judge: &str, items: &[QueuedItem]) -> Result<Vec<String>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        self.ensure_group(judge).await?;
        let k = self.keys(judge)?;
        let mut pipe = redis::pipe();
        for it in items {
            let payload = serde_json::to_string(it).map_err(|e| QueueError::BadEntry {
                stream: k.items.clone(),
                id: "(new)".into(),
                problem: e.to_string(),
            })?;
            // The job and item ids beside the payload let a report be checked against its
            // entry without decoding the item.
            pipe.cmd("XADD").arg(&k.items).arg("*").arg(FIELD).arg(payload).arg("job").arg(&it.job_id).arg("id").arg(&it.item.id);
        }
        let mut c = self.conn.clone();
        Ok(pipe.query_async(&mut c).await?)
    }

    /// Whether entries still exist in the stream (waiting or leased): an entry absent from
    /// the stream was acknowledged, dead-lettered, or lost with a Redis restart.
    pub async fn exists(&self, judge: &str, ids: &[String]) -> Result<Vec<bool>> {
        let k = self.keys(judge)?;
        Ok(self.entries_by_id(&k.items, ids).await?.iter().map(Option::is_some).collect())
    }

    /// The entries of `stream` with these ids, in one round trip (`None` where one is gone).
    pub(crate) async fn entries_by_id(&self, stream: &str, ids: &[String]) -> Result<Vec<Option<StreamEntry>>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XRANGE").arg(stream).arg(id).arg(id);
        }
        let mut c = self.conn.clone();
        // One XRANGE reply per id: its entries (none or one), each (id, field/value pairs).
        let found: Vec<Vec<StreamEntry>> = pipe.query_async(&mut c).await?;
        Ok(found.into_iter().map(|v| v.into_iter().next()).collect())
    }

    pub async fn stats(&self, judge: &str) -> Result<QueueStats> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let (length, dead): (u64, u64) = redis::pipe().cmd("XLEN").arg(&k.items).cmd("XLEN").arg(&k.dead).query_async(&mut c).await?;
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING").arg(&k.items).arg(&self.cfg.group).query_async(&mut c).await;
        let pending = match pending {
            Ok(Value::Array(v)) => match v.first() {
                Some(Value::Int(n)) => *n as u64,
                _ => 0,
            },
            Err(e) if e.code() == Some("NOGROUP") => 0,
            Err(e) => return Err(e.into()),
            Ok(_) => 0,
        };
        Ok(QueueStats { length, pending, dead })
    }

    /// What an autoscaler reads: the stream's lengths, and how long its oldest waiting
    /// (never delivered) entry has waited, from its id's time (`None` when nothing waits).
    pub async fn backlog(&self, judge: &str, now_ms: u64) -> Result<Backlog> {
        let stats = self.stats(judge).await?;
        let waiting = stats.length.saturating_sub(stats.pending);
        let mut oldest_waiting_ms = None;
        if waiting > 0 {
            let k = self.keys(judge)?;
            let mut c = self.conn.clone();
            // The group's last delivered id: entries after it have never been leased.
            let groups: Vec<std::collections::HashMap<String, Value>> = redis::cmd("XINFO").arg("GROUPS").arg(&k.items).query_async(&mut c).await?;
            let last = groups
                .iter()
                .find(|g| matches!(g.get("name"), Some(Value::BulkString(n)) if n.as_slice() == self.cfg.group.as_bytes()))
                .and_then(|g| match g.get("last-delivered-id") {
                    Some(Value::BulkString(id)) => Some(String::from_utf8_lossy(id).into_owned()),
                    _ => None,
                })
                .unwrap_or_else(|| "0-0".into());
            let next: Vec<StreamEntry> = redis::cmd("XRANGE").arg(&k.items).arg(format!("({last}")).arg("+").arg("COUNT").arg(1).query_async(&mut c).await?;
            oldest_waiting_ms = next.first().and_then(|(id, _)| id.split('-').next()?.parse::<u64>().ok()).map(|t| now_ms.saturating_sub(t));
        }
        Ok(Backlog { waiting, in_flight: stats.pending, dead: stats.dead, oldest_waiting_ms })
    }
}

/// A judge's queue as an autoscaler sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Entries never leased.
    pub waiting: u64,
    /// Leased and not yet acknowledged.
    pub in_flight: u64,
    pub dead: u64,
    /// How long the oldest waiting entry has waited, in milliseconds.
    pub oldest_waiting_ms: Option<u64>,
}

//! Dead letters: entries delivered too often, or that do not decode, moved aside with their
//! reason and payload; listed, read by id, and put back on the queue.

use crate::{Queue, Result, StreamEntry, FIELD};

impl Queue {
    /// Move an entry to the dead letters with its reason (after the item is marked dead in
    /// the store). Returns false if it was already gone.
    pub async fn dead_letter(&self, judge: &str, entry_id: &str, job_id: &str, item_id: &str, reason: &str, deliveries: u64) -> Result<bool> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let n: u64 = self
            .dead
            .key(&k.items)
            .key(&k.dead)
            .arg(&self.cfg.group)
            .arg(entry_id)
            .arg(job_id)
            .arg(item_id)
            .arg(reason)
            .arg(deliveries)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Dead letters, oldest first, after the dead letter `after` (exclusive) if given.
    pub async fn dead_letters(&self, judge: &str, after: Option<&str>, count: usize) -> Result<Vec<DeadLetter>> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let start = after.map(|a| format!("({a}")).unwrap_or_else(|| "-".into());
        let entries: Vec<StreamEntry> = redis::cmd("XRANGE").arg(&k.dead).arg(start).arg("+").arg("COUNT").arg(count).query_async(&mut c).await?;
        Ok(entries.into_iter().map(DeadLetter::from_fields).collect())
    }

    /// The dead letters with these ids (`None` for one that does not exist).
    pub async fn dead_letters_by_id(&self, judge: &str, ids: &[String]) -> Result<Vec<Option<DeadLetter>>> {
        let k = self.keys(judge)?;
        let found = self.entries_by_id(&k.dead, ids).await?;
        Ok(found.into_iter().map(|e| e.map(DeadLetter::from_fields)).collect())
    }

    /// Put a dead item back on the queue as a new entry (its deliveries start again) and
    /// drop its dead letter. `payload` is what the entry carried. Returns the new entry id.
    pub async fn requeue_dead(&self, judge: &str, dead_id: &str, payload: &str, job_id: &str, item_id: &str) -> Result<String> {
        self.ensure_group(judge).await?;
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let (entry, _): (String, u64) = redis::pipe()
            .cmd("XADD").arg(&k.items).arg("*").arg(FIELD).arg(payload).arg("job").arg(job_id).arg("id").arg(item_id)
            .cmd("XDEL").arg(&k.dead).arg(dead_id)
            .atomic()
            .query_async(&mut c)
            .await?;
        Ok(entry)
    }
}

/// An entry moved to the dead letters, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's own id in the dead-letter stream.
    pub id: String,
    /// The queue entry that died.
    pub entry: String,
    /// Empty for an entry that did not decode.
    pub job: String,
    pub item: String,
    pub reason: String,
    pub deliveries: u64,
    /// What the entry carried (empty for dead letters written before payloads were kept).
    pub payload: String,
}

impl DeadLetter {
    fn from_fields((id, fields): StreamEntry) -> Self {
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        DeadLetter {
            entry: get("entry"),
            job: get("job"),
            item: get("item"),
            reason: get("reason"),
            deliveries: get("deliveries").parse().unwrap_or(0),
            payload: get("payload"),
            id,
        }
    }
}


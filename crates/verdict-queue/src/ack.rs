//! Reports: whether the reporting worker holds each entry it reports (checked in one script
//! per 500 entries), and acknowledging entries once their results are committed.

use crate::{Holding, Queue, Result};

impl Queue {
    /// For each (entry id, job id, item id) a worker reports, whether that worker holds the
    /// entry and it carries that item.
    pub async fn held(&self, judge: &str, consumer: &str, entries: &[(&str, &str, &str)]) -> Result<Vec<Holding>> {
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let mut out = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(500) {
            let mut inv = self.held.key(&k.items);
            inv.arg(&self.cfg.group).arg(consumer);
            for (id, job, item) in chunk {
                inv.arg(*id).arg(*job).arg(*item);
            }
            let codes: Vec<i64> = inv.invoke_async(&mut c).await?;
            out.extend(codes.into_iter().map(|code| match code {
                1 => Holding::Held,
                -1 => Holding::Mismatch,
                _ => Holding::NotHeld,
            }));
        }
        Ok(out)
    }

    /// Acknowledge and delete entries whose results are committed. Returns how many were
    /// still pending (a second acknowledgement of the same entry counts 0).
    pub async fn ack(&self, judge: &str, ids: &[String]) -> Result<u64> {
        let k = self.keys(judge)?;
        let mut total = 0;
        let mut c = self.conn.clone();
        for chunk in ids.chunks(1000) {
            let n: u64 = self.ack.key(&k.items).arg(&self.cfg.group).arg(chunk).invoke_async(&mut c).await?;
            total += n;
        }
        Ok(total)
    }
}

//! Leases: a worker takes new entries (XREADGROUP on a connection of its own), takes over
//! entries idle past the lease timeout (XAUTOCLAIM, which counts a delivery), keeps the ones
//! it still holds alive and hands back what it will not finish (neither counts a delivery).

use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::Value;

use crate::{conn, parse_entry, Entry, Keys, LeaseConnection, Queue, Result};

impl Queue {
    /// Lease up to `count` new entries for `consumer`, waiting up to `block` for some.
    /// Uses its own connection: a blocking read would stall every other command sharing one.
    pub async fn lease(&self, judge: &str, consumer: &str, count: usize, block: Duration, conn: &mut LeaseConnection) -> Result<Vec<Entry>> {
        let k = self.keys(judge)?;
        let read = || {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.cfg.group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&k.items)
                .arg(">")
                .clone()
        };
        let reply: redis::RedisResult<Option<StreamReadReply>> = read().query_async(&mut conn.0).await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group(judge).await?;
                read().query_async(&mut conn.0).await?
            }
            other => other?,
        };
        let fresh: Vec<(StreamId, u64)> = reply.map(|r| r.keys).unwrap_or_default().into_iter().flat_map(|key| key.ids).map(|e| (e, 1)).collect();
        self.decode_or_bury(judge, &k, fresh).await
    }

    /// Decode leased entries; one that is not a Verdict item goes to the dead letters with
    /// its reason (its item, if Postgres has it, is queued again by the sweeper).
    async fn decode_or_bury(&self, judge: &str, k: &Keys, leased: Vec<(StreamId, u64)>) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(leased.len());
        for (e, deliveries) in &leased {
            match parse_entry(&k.items, e, *deliveries) {
                Ok(entry) => out.push(entry),
                Err(bad) => {
                    let field = |name: &str| match e.map.get(name) {
                        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                        _ => String::new(),
                    };
                    tracing::error!(stream = %k.items, entry = %e.id, error = %bad, "undecodable queue entry moved to the dead letters");
                    self.dead_letter(judge, &e.id, &field("job"), &field("id"), &bad.to_string(), *deliveries).await?;
                }
            }
        }
        Ok(out)
    }

    /// A connection for [`Queue::lease`], with a response timeout longer than `block`.
    pub async fn lease_connection(url: &str, block: Duration) -> Result<LeaseConnection> {
        Self::lease_connection_with(url, block, None).await
    }

    /// [`Queue::lease_connection`] to a `rediss://` server signed by `ca`.
    pub async fn lease_connection_with(url: &str, block: Duration, ca: Option<&std::path::Path>) -> Result<LeaseConnection> {
        Ok(LeaseConnection(conn::connect(url, block + Duration::from_secs(10), ca).await?))
    }

    /// Take over up to `count` entries idle longer than the lease timeout (their worker died
    /// or stalled). Each comes with its delivery count, this one included.
    pub async fn reclaim(&self, judge: &str, consumer: &str, count: usize) -> Result<Vec<Entry>> {
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&k.items)
            .arg(&self.cfg.group)
            .arg(consumer)
            .arg(self.cfg.lease_timeout.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => return Ok(vec![]),
            other => other?,
        };
        if reply.claimed.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for e in &reply.claimed {
            pipe.cmd("XPENDING").arg(&k.items).arg(&self.cfg.group).arg(&e.id).arg(&e.id).arg(1);
        }
        let pending: Vec<StreamPendingCountReply> = pipe.query_async(&mut c).await?;
        let claimed: Vec<(StreamId, u64)> = reply
            .claimed
            .into_iter()
            .zip(pending)
            .map(|(e, p)| {
                let deliveries = p.ids.first().map(|x| x.times_delivered as u64).unwrap_or(1);
                (e, deliveries)
            })
            .collect();
        self.decode_or_bury(judge, &k, claimed).await
    }

    /// Renew the leases this consumer still holds among `ids`, so they are not reclaimed
    /// (no delivery is counted). Returns the ids still held: the others were taken over
    /// after a lease timeout, or acknowledged, and are left alone.
    pub async fn touch(&self, judge: &str, consumer: &str, ids: &[String]) -> Result<Vec<String>> {
        self.set_idle(judge, consumer, ids, 0).await
    }

    /// Make entries this consumer holds reclaimable at once (a worker shutting down before
    /// it could finish them), without counting a delivery.
    pub async fn release(&self, judge: &str, consumer: &str, ids: &[String]) -> Result<()> {
        self.set_idle(judge, consumer, ids, self.cfg.lease_timeout.as_millis() as u64 + 1).await.map(drop)
    }

    /// Set the idle time of the entries `consumer` still holds among `ids`; returns those.
    pub(crate) async fn set_idle(&self, judge: &str, consumer: &str, ids: &[String], idle_ms: u64) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let k = self.keys(judge)?;
        let mut c = self.conn.clone();
        let mut held = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let h: Vec<String> = self.renew.key(&k.items).arg(&self.cfg.group).arg(consumer).arg(idle_ms).arg(chunk).invoke_async(&mut c).await?;
            held.extend(h);
        }
        Ok(held)
    }
}

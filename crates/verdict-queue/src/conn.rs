//! Connections to Redis: one server, or a Redis Cluster.
//!
//! `--redis-url` names one server (`redis://host:6379/`, `rediss://` for TLS), or a cluster:
//! several nodes separated by commas, or one node with the scheme `redis+cluster://`
//! (`rediss+cluster://`). A cluster client learns the slot map from the nodes it is given and
//! follows it as slots move; every key of one judge shares a hash tag, so each command,
//! pipeline and script of the queue lands on the one node that serves the judge.

use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::Result;

/// A connection to one server (reconnecting by itself after a restart) or to a cluster.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The nodes of a cluster URL (several, comma-separated, or one `redis+cluster://`), as
/// plain `redis://` / `rediss://` URLs; `None` for a single server's URL.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let nodes: Vec<&str> = url.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    let marked = nodes.iter().any(|n| n.starts_with("redis+cluster://") || n.starts_with("rediss+cluster://"));
    if nodes.len() < 2 && !marked {
        return None;
    }
    Some(nodes.iter().map(|n| n.replacen("redis+cluster://", "redis://", 1).replacen("rediss+cluster://", "rediss://", 1)).collect())
}

fn read_ca(path: &Path) -> Result<Vec<u8>> {
    Ok(std::fs::read(path).map_err(|e| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "cannot read the Redis CA certificate", format!("{}: {e}", path.display()))))?)
}

/// A client for one server's `url`; a `rediss://` one trusts `ca` if given (a private CA),
/// else the system's roots.
fn client(url: &str, ca: Option<&Path>) -> Result<redis::Client> {
    match ca {
        Some(path) => Ok(redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert: Some(read_ca(path)?) })?),
        None => Ok(redis::Client::open(url)?),
    }
}

/// Connect to `url` (a server or a cluster), waiting at most `timeout` for any answer.
pub async fn connect(url: &str, timeout: Duration, ca: Option<&Path>) -> Result<Conn> {
    if let Some(nodes) = cluster_nodes(url) {
        let mut builder = ClusterClientBuilder::new(nodes).connection_timeout(Duration::from_secs(5)).response_timeout(timeout).retries(3);
        if let Some(path) = ca {
            builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(read_ca(path)?) });
        }
        return Ok(Conn::Cluster(builder.build()?.get_async_connection().await?));
    }
    let cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    Ok(Conn::Single(ConnectionManager::new_with_config(client(url, ca)?, cfg).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_are_told_apart() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379/"), None);
        assert_eq!(cluster_nodes("redis://a:7000, redis://b:7001"), Some(vec!["redis://a:7000".into(), "redis://b:7001".into()]));
        assert_eq!(cluster_nodes("rediss+cluster://a:7000"), Some(vec!["rediss://a:7000".into()]));
    }
}

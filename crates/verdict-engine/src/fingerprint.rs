//! Fingerprints of model folders: a SHA-256 over the content of every file that decides
//! what a model writes — `config.json`, the tokenizer, the chat template and every weight
//! file — so a retrained checkpoint of the same shape is a different judge.
//!
//! Hashing a 15 GB checkpoint takes seconds to tens of seconds, so weight files' digests are
//! cached by (path, size, modification time, inode) in a small JSON file: a restart with the
//! same files reads nothing but their metadata, and any rewrite of a file changes its
//! modification time and so its entry.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

/// Files at least this large are cached; smaller ones are cheaper to hash than to look up.
const CACHE_FROM_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    sha256: String,
}

/// Where cached digests live (`None`: hash everything every time).
#[derive(Debug, Clone, Default)]
pub struct DigestCache {
    path: Option<PathBuf>,
}

impl DigestCache {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: Some(path.into()) }
    }

    pub fn none() -> Self {
        Self { path: None }
    }

    fn load(&self) -> BTreeMap<String, CacheEntry> {
        // A missing or unreadable cache only costs a re-hash.
        self.path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn store(&self, entries: &BTreeMap<String, CacheEntry>) {
        let Some(path) = &self.path else { return };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Write then rename, so a concurrent reader sees the old or the new file whole.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec_pretty(entries).unwrap_or_default())?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "could not save the fingerprint cache");
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io { path: path.to_path_buf(), source }
}

/// SHA-256 of a file's content, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of a set of files: each file's name and content digest, in the order
/// given. 32 hex digits (128 bits).
pub fn fingerprint(files: &[PathBuf], cache: &DigestCache) -> Result<String> {
    let mut entries = cache.load();
    let mut changed = false;
    let mut digests: Vec<Option<String>> = vec![None; files.len()];
    let mut todo = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let meta = std::fs::metadata(f).map_err(io(f))?;
        let key = f.canonicalize().map_err(io(f))?.to_string_lossy().into_owned();
        let stamp = (meta.len(), meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128, meta.ino());
        if meta.len() >= CACHE_FROM_BYTES {
            if let Some(e) = entries.get(&key).filter(|e| (e.size, e.mtime_ns, e.inode) == stamp) {
                digests[i] = Some(e.sha256.clone());
                continue;
            }
        }
        todo.push((i, key, stamp, meta.len() >= CACHE_FROM_BYTES));
    }
    // Shards hash in parallel: reading is the cost, and disks serve several streams.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    for chunk in todo.chunks(threads) {
        let hashed: Vec<Result<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|(i, ..)| s.spawn(|| sha256_file(&files[*i]))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(EngineError::Device("hashing thread panicked".into())))).collect()
        });
        for ((i, key, stamp, cacheable), digest) in chunk.iter().zip(hashed) {
            let digest = digest?;
            if *cacheable {
                entries.insert(key.clone(), CacheEntry { size: stamp.0, mtime_ns: stamp.1, inode: stamp.2, sha256: digest.clone() });
                changed = true;
            }
            digests[*i] = Some(digest);
        }
    }
    if changed {
        cache.store(&entries);
    }
    let mut h = Sha256::new();
    h.update(b"verdict/fingerprint/v1\0");
    for (f, d) in files.iter().zip(digests) {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(d.unwrap_or_default().as_bytes());
        h.update(b"\0");
    }
    Ok(hex(&h.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_not_size_decides_and_the_cache_follows_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("model.safetensors");
        let big = CACHE_FROM_BYTES as usize + 10;
        std::fs::write(&w, vec![1u8; big]).unwrap();
        let cache = DigestCache::at(dir.path().join("cache.json"));
        let a = fingerprint(std::slice::from_ref(&w), &cache).unwrap();
        assert_eq!(a.len(), 32);
        assert!(dir.path().join("cache.json").is_file(), "a large file's digest is cached");
        assert_eq!(fingerprint(std::slice::from_ref(&w), &cache).unwrap(), a);
        // Same size, one byte different: another fingerprint, with and without the cache.
        let mut other = vec![1u8; big];
        other[big / 2] = 2;
        std::fs::write(&w, &other).unwrap();
        let b = fingerprint(std::slice::from_ref(&w), &cache).unwrap();
        assert_ne!(a, b);
        assert_eq!(fingerprint(std::slice::from_ref(&w), &DigestCache::none()).unwrap(), b);
    }
}

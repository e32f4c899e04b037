//! Bearer tokens on the wire: where a process finds its token, the client interceptor that
//! sends it, and the one hash the coordinator's token file stores (so the file never holds
//! a token itself).
//!
//! A token is read from a file (`--token-file`, `VERDICT_TOKEN_FILE`) or the environment
//! (`VERDICT_TOKEN`), never from a flag: a flag shows in `ps` to every user of the machine.

use std::path::Path;

use sha2::{Digest, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The environment variable holding a token.
pub const TOKEN_ENV: &str = "VERDICT_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the token from {0} is empty")]
    Empty(String),
    #[error("the token from {0} holds characters a header cannot carry: use printable ASCII without spaces")]
    Unprintable(String),
}

/// How a token is stored: `sha256:` and the hex digest. Tokens are 256 random bits, so a
/// plain digest is enough (nothing to brute-force, unlike a password).
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A new random token: `vdt_` and 64 hex digits (256 bits from the OS's generator).
pub fn new_token() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    let c = uuid::Uuid::new_v4().simple().to_string();
    // A v4 UUID has 122 random bits; three of them, less their fixed digits, give 256+.
    let digits: String = [a, b, c].iter().flat_map(|u| u.chars().enumerate().filter(|(i, _)| *i != 12 && *i != 16).map(|(_, ch)| ch)).take(64).collect();
    format!("vdt_{digits}")
}

fn checked(token: &str, from: &str) -> Result<String, TokenError> {
    let t = token.trim();
    if t.is_empty() {
        return Err(TokenError::Empty(from.into()));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Unprintable(from.into()));
    }
    Ok(t.to_string())
}

/// This process's token: the file's if one is named, else `VERDICT_TOKEN`'s, else none.
pub fn load_token(file: Option<&Path>) -> Result<Option<String>, TokenError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.display().to_string(), source })?;
        return checked(&text, &path.display().to_string()).map(Some);
    }
    match std::env::var(TOKEN_ENV) {
        Ok(v) => checked(&v, TOKEN_ENV).map(Some),
        Err(_) => Ok(None),
    }
}

/// Sends `authorization: Bearer TOKEN` with every call (nothing when there is no token).
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Self, TokenError> {
        match token {
            None => Ok(Self(None)),
            Some(t) => {
                let t = checked(t, "the caller")?;
                let v = MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| TokenError::Unprintable("the caller".into()))?;
                Ok(Self(Some(v)))
            }
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel whose calls carry the bearer token.
pub type AuthedChannel = InterceptedService<Channel, Bearer>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert!(a[4..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(token_hash("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_token_file_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  vdt_x\n").unwrap();
        assert_eq!(load_token(Some(&p)).unwrap().as_deref(), Some("vdt_x"));
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(load_token(Some(&p)), Err(TokenError::Empty(_))));
        std::fs::write(&p, "a b").unwrap();
        assert!(matches!(load_token(Some(&p)), Err(TokenError::Unprintable(_))));
        let missing = dir.path().join("missing");
        let e = load_token(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }
}

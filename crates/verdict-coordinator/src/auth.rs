//! Who is calling, and what they may do.
//!
//! Authentication is an interceptor on every service but health: it reads the bearer token,
//! finds its identity in the token table (by hash: the table never holds a token) and puts
//! the [`Identity`] in the request's extensions, or answers `UNAUTHENTICATED`.
//! Authorization is each handler's: [`Identity::require`] for the role a method needs, and
//! [`Identity::owns`] for a job (a client sees only the jobs it created; the admin all).
//!
//! The token file has one line per token: `ROLE NAME sha256:HEX` (`verdict token new`
//! prints such a line). Roles: `worker` (reports and heartbeats), `client` (its own jobs),
//! `admin` (everything). Several tokens may share a name (rotation: add the new one, move
//! the clients, remove the old one); `kill -HUP` the coordinator to read the file again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tonic::{Request, Status};
use verdict_proto::auth::token_hash;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Client,
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "worker" => Some(Role::Worker),
            "client" => Some(Role::Client),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
}

/// The caller of a request, as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// The owner of jobs created while authentication is off.
pub const ANONYMOUS: &str = "anonymous";

impl Identity {
    /// `PERMISSION_DENIED` unless the caller has one of `roles` (the admin always has).
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), Status> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            return Ok(());
        }
        Err(Status::permission_denied(format!("{} {:?} may not {what}", self.role.as_str(), self.name)))
    }

    /// Whether the caller may see and change a job owned by `owner`.
    pub fn owns(&self, owner: &str) -> bool {
        self.role == Role::Admin || (self.role == Role::Client && self.name == owner)
    }

    /// `PERMISSION_DENIED` unless the caller may see and change `job` (owned by `owner`).
    pub fn check_owner(&self, job: uuid::Uuid, owner: &str) -> Result<(), Status> {
        if self.owns(owner) {
            return Ok(());
        }
        Err(Status::permission_denied(format!("job {job} belongs to another client than {:?}", self.name)))
    }

    /// The jobs a listing shows: `None` for all (the admin), else the caller's own.
    pub fn listing_owner(&self) -> Option<&str> {
        (self.role != Role::Admin).then_some(self.name.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} line {line}: {problem}")]
    Line { path: String, line: usize, problem: String },
    #[error("{0} holds no token: every call would be refused")]
    Empty(String),
}

/// Token hashes and the identities they stand for.
#[derive(Debug, Default)]
pub struct TokenTable {
    by_hash: HashMap<String, Identity>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

impl TokenTable {
    pub fn parse(text: &str, path: &str) -> Result<Self, AuthError> {
        let mut by_hash = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: String| AuthError::Line { path: path.into(), line: i + 1, problem };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, hash] = fields[..] else {
                return Err(bad("expected `ROLE NAME sha256:HEX` (ROLE: worker, client or admin)".into()));
            };
            let role = Role::parse(role).ok_or_else(|| bad(format!("role {role:?} is not one of worker, client, admin")))?;
            if !valid_name(name) {
                return Err(bad(format!("name {name:?}: use letters, digits and . _ @ - (at most 64)")));
            }
            let hex = hash.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            let Some(hex) = hex else {
                // A bare token pasted here would be a secret in a file meant to hold none.
                return Err(bad("the third field must be `sha256:` and 64 hex digits, the token's hash (`verdict token new` prints the line)".into()));
            };
            let key = format!("sha256:{}", hex.to_ascii_lowercase());
            if by_hash.insert(key, Identity { name: name.to_string(), role }).is_some() {
                return Err(bad("this token's hash appears on an earlier line too".into()));
            }
        }
        if by_hash.is_empty() {
            return Err(AuthError::Empty(path.into()));
        }
        Ok(Self { by_hash })
    }

    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn identify(&self, token: &str) -> Option<Identity> {
        self.by_hash.get(&token_hash(token)).cloned()
    }
}

/// How callers are told apart.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No tokens: every caller is the admin `anonymous` (loopback, or `--insecure`).
    Open,
    /// Tokens from a file, read again on [`Auth::reload`].
    Tokens { path: PathBuf, table: Arc<RwLock<TokenTable>> },
}

impl Auth {
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let table = TokenTable::load(path)?;
        Ok(Auth::Tokens { path: path.to_path_buf(), table: Arc::new(RwLock::new(table)) })
    }

    pub fn enabled(&self) -> bool {
        matches!(self, Auth::Tokens { .. })
    }

    /// Read the token file again; on error the old table stays (a typo must not lock
    /// everyone out).
    pub fn reload(&self) -> Result<usize, AuthError> {
        match self {
            Auth::Open => Ok(0),
            Auth::Tokens { path, table } => {
                let fresh = TokenTable::load(path)?;
                let n = fresh.len();
                if let Ok(mut t) = table.write() {
                    *t = fresh;
                }
                Ok(n)
            }
        }
    }

    /// The caller named by a request's `authorization` header.
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Identity, Status> {
        let table = match self {
            Auth::Open => return Ok(Identity { name: ANONYMOUS.into(), role: Role::Admin }),
            Auth::Tokens { table, .. } => table,
        };
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("no token: send `authorization: Bearer TOKEN` (set VERDICT_TOKEN or --token-file)"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| Status::unauthenticated("the authorization header is not `Bearer TOKEN`"))?;
        let table = table.read().map_err(|_| Status::internal("the token table is poisoned"))?;
        table.identify(token).ok_or_else(|| Status::unauthenticated("unknown token"))
    }
}

/// The interceptor: authenticate, and hand the identity to the handler.
#[derive(Clone)]
pub struct Authenticate(pub Auth);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let who = self.0.authenticate(req.metadata())?;
        req.extensions_mut().insert(who);
        Ok(req)
    }
}

/// The identity the interceptor found for this request.
pub fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    req.extensions().get::<Identity>().cloned().ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn table() -> Auth {
        let text = format!(
            "# team tokens\n\nclient alice {}\nworker gpu-pool {}\nadmin ops {}\n",
            token_hash("ta"),
            token_hash("tw"),
            token_hash("tadmin")
        );
        Auth::Tokens { path: "t".into(), table: Arc::new(RwLock::new(TokenTable::parse(&text, "t").unwrap())) }
    }

    fn with(header: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(h) = header {
            m.insert("authorization", h.parse().unwrap());
        }
        m
    }

    #[test]
    fn tokens_map_to_identities_and_anything_else_is_unauthenticated() {
        let a = table();
        assert_eq!(a.authenticate(&with(Some("Bearer ta"))).unwrap(), Identity { name: "alice".into(), role: Role::Client });
        assert_eq!(a.authenticate(&with(Some("Bearer tw"))).unwrap().role, Role::Worker);
        for h in [None, Some("Bearer nope"), Some("ta"), Some("Basic ta"), Some("Bearer ")] {
            let e = a.authenticate(&with(h)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{h:?}");
        }
        assert_eq!(Auth::Open.authenticate(&with(None)).unwrap().role, Role::Admin);
    }

    #[test]
    fn roles_and_ownership() {
        let alice = Identity { name: "alice".into(), role: Role::Client };
        let worker = Identity { name: "alice".into(), role: Role::Worker };
        let admin = Identity { name: "ops".into(), role: Role::Admin };
        assert!(alice.require(&[Role::Client], "submit").is_ok());
        assert_eq!(alice.require(&[Role::Worker], "report results").unwrap_err().code(), tonic::Code::PermissionDenied);
        assert!(admin.require(&[Role::Worker], "report results").is_ok());
        assert!(alice.owns("alice") && !alice.owns("bob") && admin.owns("bob"));
        // A worker token never owns jobs, even under a client's name.
        assert!(!worker.owns("alice"));
        assert_eq!(alice.listing_owner(), Some("alice"));
        assert_eq!(admin.listing_owner(), None);
    }

    #[test]
    fn a_bad_line_is_named_and_a_bare_token_refused() {
        let e = TokenTable::parse("client alice vdt_secret\n", "tokens").unwrap_err().to_string();
        assert!(e.contains("tokens line 1") && e.contains("sha256:"), "{e}");
        let e = TokenTable::parse(&format!("\nboss x {}\n", token_hash("a")), "tokens").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("boss"), "{e}");
        let h = token_hash("a");
        let e = TokenTable::parse(&format!("client a {h}\nclient b {h}\n"), "tokens").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("earlier"), "{e}");
        assert!(matches!(TokenTable::parse("# nothing\n", "tokens"), Err(AuthError::Empty(_))));
    }
}

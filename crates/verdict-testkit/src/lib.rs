//! Throwaway servers for tests: a Redis and a Postgres of their own, on free ports, in
//! temporary folders, stopped when the handle drops. They are started from the installed
//! binaries (`redis-server`; Postgres' `initdb` and `postgres`), so tests never touch
//! anyone's data and run on any Debian machine; when a binary is missing and we are root,
//! it is installed with apt-get first.
//!
//! Postgres refuses to run as root, so as root the server runs as the `postgres` user.
//!
//! Every server also gets a watchdog: a small shell loop that stops it (and removes its
//! folder) once the test process is gone. A server kept in a `static` is never dropped,
//! and a test binary killed mid-run drops nothing; the watchdog still stops both within a
//! second, so no test run leaves a server behind.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port on 127.0.0.1")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

static INSTALL: Mutex<()> = Mutex::new(());

/// Install Debian packages if `probe` is not found and we may.
fn ensure(probe: impl Fn() -> Option<PathBuf>, packages: &[&str]) -> PathBuf {
    if let Some(p) = probe() {
        return p;
    }
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = probe() {
        return p;
    }
    assert!(is_root(), "{packages:?} not installed and not root: install them (apt-get install {})", packages.join(" "));
    let _ = Command::new("apt-get").arg("update").status();
    let st = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("apt-get");
    assert!(st.success(), "apt-get install {packages:?} failed");
    probe().unwrap_or_else(|| panic!("{packages:?} installed but still not found"))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Stop `child` with `signal`, and remove `dir`, once this process has exited.
fn watchdog(child: &Child, signal: &str, dir: &Path) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -{signal} {child} 2>/dev/null; \
         for _ in $(seq 40); do kill -0 {child} 2>/dev/null || break; sleep 0.25; done; kill -9 {child} 2>/dev/null; rm -rf '{dir}'",
        parent = std::process::id(),
        child = child.id(),
        dir = dir.display(),
    );
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a Ctrl-C meant for the tests does not stop it first.
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!("warning: no watchdog for the test server {}: {e}", child.id());
    }
}

fn stop(child: &mut Child, signal: i32) {
    // SAFETY: kill on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A Redis server of our own.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    /// Serving TLS only (`rediss://`), with this certificate and key.
    tls: Option<(PathBuf, PathBuf)>,
    /// More `redis-server` arguments (a cluster node's).
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Self {
        let bin = ensure(|| which("redis-server"), &["redis-server"]);
        Self::start_on(&bin, free_port(), None, &[])
    }

    /// A Redis that speaks TLS only, with this certificate and key (PEM): `url()` is then
    /// `rediss://`.
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        let bin = ensure(|| which("redis-server"), &["redis-server"]);
        Self::start_on(&bin, free_port(), Some((cert.to_path_buf(), key.to_path_buf())), &[])
    }

    fn start_on(bin: &Path, port: u16, tls: Option<(PathBuf, PathBuf)>, extra: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(bin);
        match &tls {
            None => cmd.args(["--port", &port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let mut child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        wait_for_port(port, &mut child, "redis-server");
        watchdog(&child, "TERM", dir.path());
        Redis { child, port, _dir: dir, tls, extra: extra.to_vec() }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Kill the server, as a crash would; `start_again` brings a new, empty one up.
    pub fn kill(&mut self) {
        stop(&mut self.child, libc::SIGKILL);
    }

    /// Start a new, empty server on the same port (after `kill`).
    pub fn start_again(&mut self) {
        let bin = ensure(|| which("redis-server"), &["redis-server"]);
        *self = Self::start_on(&bin, self.port, self.tls.clone(), &self.extra.clone());
    }

    /// Stop the server (as a crash would) and start a new, empty one on the same port.
    pub fn restart(&mut self) {
        stop(&mut self.child, libc::SIGKILL);
        let bin = ensure(|| which("redis-server"), &["redis-server"]);
        *self = Self::start_on(&bin, self.port, self.tls.clone(), &self.extra.clone());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop(&mut self.child, libc::SIGTERM);
    }
}

/// A Redis Cluster of our own: `masters` nodes started with `--cluster-enabled yes` (each
/// with its own folder, port and bus port), no replicas, joined with `redis-cli --cluster
/// create`; ready when every node reports `cluster_state:ok`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Self {
        let bin = ensure(|| which("redis-server"), &["redis-server"]);
        let cli = ensure(|| which("redis-cli"), &["redis-tools"]);
        let nodes: Vec<Redis> = (0..masters)
            .map(|_| {
                let extra: Vec<String> = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000", "--cluster-port"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([free_port().to_string()])
                    .collect();
                Redis::start_on(&bin, free_port(), None, &extra)
            })
            .collect();
        let out = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(out.status.success(), "redis-cli --cluster create failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            loop {
                let info = Command::new(&cli).args(["-p", &n.port.to_string(), "cluster", "info"]).output().expect("redis-cli cluster info");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok within 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes }
    }

    /// Every node, comma-separated: how `--redis-url` names a cluster.
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}/", n.port)).collect::<Vec<_>>().join(",")
    }

    /// How many keys each node holds (DBSIZE), in node order: where a cluster put the work.
    pub fn keys_per_node(&self) -> Vec<u64> {
        let cli = ensure(|| which("redis-cli"), &["redis-tools"]);
        self.nodes
            .iter()
            .map(|n| {
                let out = Command::new(&cli).args(["-p", &n.port.to_string(), "dbsize"]).output().expect("redis-cli dbsize");
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
            })
            .collect()
    }
}

fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file() && p.join("postgres").is_file())
        .collect();
    dirs.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    dirs.pop().or_else(|| which("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
}

/// The uid and gid to run Postgres as: ourselves, or `postgres` when we are root.
fn postgres_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "running as root needs a `postgres` user to run the test database as");
    // SAFETY: pw is non-null and points to libc's static passwd entry.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// Run `cmd` as the `postgres` user when we are root (Postgres refuses to run as root).
fn as_postgres_user(cmd: &mut Command) {
    if let Some((uid, gid)) = postgres_user() {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    cmd.current_dir("/tmp");
}

/// A Postgres server of our own (trust auth, user `postgres`, fsync off).
pub struct Postgres {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_with_tls(None)
    }

    /// A Postgres that also offers TLS with this certificate and key (PEM); connect with
    /// `?sslmode=verify-full&sslrootcert=CA`.
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with_tls(Some((cert, key)))
    }

    fn start_with_tls(tls: Option<(&Path, &Path)>) -> Self {
        let bin = ensure(postgres_bin_dir, &["postgresql"]);
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        if let Some((uid, gid)) = postgres_user() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let mut init = Command::new(bin.join("initdb"));
        init.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]).stdout(Stdio::null());
        as_postgres_user(&mut init);
        let out = init.output().expect("spawning initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        if let Some((cert, key)) = tls {
            // In the data folder, where `ssl = on` finds them, owned by the server's user and
            // private (Postgres refuses a key others may read).
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(name);
                std::fs::copy(from, &to).expect("copying the TLS files");
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
                if let Some((uid, gid)) = postgres_user() {
                    std::os::unix::fs::chown(&to, Some(uid), Some(gid)).expect("chown");
                }
            }
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push_str("\nssl = on\n");
            std::fs::write(&conf, text).expect("postgresql.conf");
        }
        let port = free_port();
        let child = Self::launch(&bin, dir.path(), port);
        Postgres { child, port, _dir: dir }
    }

    /// Run the server on `dir`'s data folder at `port`, once it accepts connections.
    fn launch(bin: &Path, dir: &Path, port: u16) -> Child {
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .arg("-k")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_postgres_user(&mut cmd);
        let mut child = cmd.spawn().expect("spawning postgres");
        wait_for_port(port, &mut child, "postgres");
        // SIGINT is Postgres' fast shutdown.
        watchdog(&child, "INT", dir);
        child
    }

    /// Shut the server down (fast shutdown: clients are disconnected); `start_again`
    /// brings it back with its data.
    pub fn stop(&mut self) {
        stop(&mut self.child, libc::SIGINT);
    }

    /// Start the server again on the same port and data (after `stop`).
    pub fn start_again(&mut self) {
        let bin = postgres_bin_dir().expect("postgres binaries");
        self.child = Self::launch(&bin, self._dir.path(), self.port);
    }

    /// URL of database `name` (create it with [`Postgres::create_database`]).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Create a fresh database and return its URL.
    pub fn create_database(&self, name: &str) -> String {
        let bin = postgres_bin_dir().expect("postgres binaries").join("createdb");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&bin)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name])
                .output()
                .expect("spawning createdb");
            if out.status.success() {
                return self.url(name);
            }
            // The server accepts TCP a moment before it accepts logins; and two databases
            // created at once from template1 collide ("being accessed by other users").
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                Instant::now() < deadline && (err.contains("starting up") || err.contains("being accessed by other users")),
                "createdb {name} failed: {err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Postgres {
    /// Run SQL in database `db` as the superuser, stopping at the first error.
    pub fn sql(&self, db: &str, sql: &str) {
        let out = self.psql(&self.url(db), sql);
        assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Run SQL through `psql` at a connection URL (as whichever role it names).
    pub fn psql(&self, url: &str, sql: &str) -> std::process::Output {
        let bin = postgres_bin_dir().expect("postgres binaries").join("psql");
        Command::new(&bin).args(["-v", "ON_ERROR_STOP=1", "-q", "-d", url, "-c", sql]).output().expect("spawning psql")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is Postgres' fast shutdown.
        stop(&mut self.child, libc::SIGINT);
    }
}

/// A unique name for per-test databases, stream keys and the like.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The openssl command (installed with apt-get when missing, as Redis and Postgres are), for
/// the certificates of the TLS tests.
pub fn openssl() -> PathBuf {
    ensure(|| which("openssl"), &["openssl"])
}

/// Debian's headless-capable Chromium, installed with apt-get when missing (as Redis and
/// Postgres are), for the tests of the HTML report and the dashboard.
pub fn chromium() -> PathBuf {
    ensure(|| which("chromium").or_else(|| which("chromium-browser")), &["chromium"])
}

/// Load `url` in headless Chromium, let its scripts run (fetches included) for up to
/// `budget` of virtual time, and return the DOM as it then stands: what a user would see,
/// not the HTML the server sent. Each call has its own profile folder, so tests may run
/// at once; a browser that hangs is killed after a minute.
pub fn browser_dom(url: &str, budget: Duration) -> String {
    let profile = tempfile::tempdir().expect("a temporary folder for the browser profile");
    let out = Command::new("timeout")
        .arg("60")
        .arg(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .args(["--dump-dom", url])
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && dom.contains("<html"), "chromium could not load {url} ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    dom
}

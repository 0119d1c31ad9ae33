//! The node under test: start the `rethink-node` executable next to the bench
//! (free port, temporary data directory, configuration by environment), wait
//! for `/healthz`, kill it on drop; read a process's RSS from `/proc`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the node gets to answer `/healthz` with 200 (a debug build compiling its stubs
/// takes tens of seconds).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the node could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("cannot locate the bench executable: {0}")]
    CurrentExe(#[source] io::Error),
    #[error(
        "node executable {0} not found: run `cargo build --release -p rethink-node` first \
         (or `cargo build -p rethink-node` for a debug bench), or pass --url"
    )]
    Missing(PathBuf),
    #[error("cannot pick a free port: {0}")]
    Port(#[source] io::Error),
    #[error("cannot create a temporary data directory: {0}")]
    DataDir(#[source] io::Error),
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the node exited during startup ({0})")]
    Exited(ExitStatus),
    #[error("the node did not answer GET /healthz with 200 within {0:?} (last: {1})")]
    NotHealthy(Duration, String),
}

/// A node process started by the bench; killed (and its data dir removed) on drop.
#[derive(Debug)]
pub(crate) struct NodeProcess {
    child: Child,
    addr: SocketAddr,
    // Dropped after the child is killed (fields drop after `Drop::drop`).
    _data_dir: tempfile::TempDir,
}

impl NodeProcess {
    /// The executable `rethink-node` in the bench executable's directory.
    pub(crate) fn executable() -> Result<PathBuf, NodeError> {
        let exe = std::env::current_exe().map_err(NodeError::CurrentExe)?;
        let dir = exe.parent().ok_or_else(|| {
            NodeError::CurrentExe(io::Error::other("the executable path has no parent"))
        })?;
        let node = dir.join(format!("rethink-node{}", std::env::consts::EXE_SUFFIX));
        if node.is_file() {
            Ok(node)
        } else {
            Err(NodeError::Missing(node))
        }
    }

    /// Starts the node for `domain` on a free port (with configuration file `config`, if
    /// given) and waits until it is healthy.
    pub(crate) async fn start(domain: &str, config: Option<&Path>) -> Result<Self, NodeError> {
        Self::start_with(domain, config, true, &[]).await
    }

    /// As [`Self::start`]; `lift_session_rate`: the session rate limit set out of reach (the
    /// load generators send far past any runtime's rate), else the node's own; `env`: more
    /// settings, applied last.
    pub(crate) async fn start_with(
        domain: &str,
        config: Option<&Path>,
        lift_session_rate: bool,
        env: &[(&str, &str)],
    ) -> Result<Self, NodeError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let port = free_port().map_err(NodeError::Port)?;
        Self::start_on(domain, config, port, lift_session_rate, &env).await
    }

    /// Like [`NodeProcess::start_with`], on `port` and with more `RETHINK_*` settings in `env`.
    pub(crate) async fn start_on(
        domain: &str,
        config: Option<&Path>,
        port: u16,
        lift_session_rate: bool,
        env: &[(String, String)],
    ) -> Result<Self, NodeError> {
        let path = Self::executable()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data_dir = tempfile::Builder::new()
            .prefix("rethink-bench-")
            .tempdir()
            .map_err(NodeError::DataDir)?;
        let mut command = Command::new(&path);
        if let Some(config) = config {
            command.env("RETHINK_CONFIG", config);
        }
        command
            .env("RETHINK_LISTEN", addr.to_string())
            .env("RETHINK_DOMAIN", domain)
            .env("RETHINK_DATA_DIR", data_dir.path())
            .env("RETHINK_LOG", "warn");
        if lift_session_rate {
            command
                .env("RETHINK_SESSION__RATE_PER_SECOND", "1000000")
                .env("RETHINK_SESSION__RATE_BURST", "1000000");
        }
        let child = command
            // The load generators send far past any client's rate: measure the node, not its
            // Matrix rate limiter.
            .env("RETHINK_MATRIX__RATE_LIMIT__ENABLED", "false")
            .env("RETHINK_AUTH__ALLOW_ANONYMOUS", "true")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            // The node's logs go to our stderr so that `--json` output stays clean.
            .stdout(Stdio::from(io::stderr()))
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| NodeError::Spawn { path, source })?;
        let mut node = NodeProcess {
            child,
            addr,
            _data_dir: data_dir,
        };
        node.wait_healthy().await?;
        Ok(node)
    }

    /// The WebSocket URL of the node.
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The base URL of the node's HTTP API (the Matrix Client-Server API).
    pub(crate) fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    async fn wait_healthy(&mut self) -> Result<(), NodeError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last: String;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NodeError::Exited(status));
            }
            match tokio::time::timeout(Duration::from_secs(1), healthz(self.addr)).await {
                Ok(Ok(200)) => return Ok(()),
                Ok(Ok(status)) => last = format!("HTTP {status}"),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
            if Instant::now() >= deadline {
                return Err(NodeError::NotHealthy(START_TIMEOUT, last));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // Already exited: nothing to kill. Errors here cannot be reported usefully.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// `GET /healthz` over a plain HTTP/1.1 connection; returns the status code.
async fn healthz(addr: SocketAddr) -> io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    // The status line is enough; stop reading once it is complete.
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status_line(&buf)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.x response"))
}

/// The status code of an HTTP/1.x response's first line.
fn parse_status_line(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.split(|&b| b == b'\r').next()?).ok()?;
    let mut parts = text.split(' ');
    parts.next()?.starts_with("HTTP/1.").then_some(())?;
    parts.next()?.parse().ok()
}

/// Resident set size of process `pid` in MiB (`VmRSS` of `/proc/<pid>/status`);
/// `None` where it cannot be read (not Linux, process gone).
pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    rss_kib(pid).map(|kib| kib as f64 / 1024.0)
}

/// Resident set size of process `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&status)
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// The soft limit on open files of this process (`/proc/self/limits`), if known.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed() {
        let status = "Name:\trethink-node\nVmPeak:\t  20000 kB\nVmRSS:\t   12288 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12288));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn own_rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = rss_mib(std::process::id()).expect("own RSS");
            assert!(rss > 0.0);
            assert!(open_files_limit().is_some());
        }
    }

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            Some(200)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().expect("port"), 0);
    }
}

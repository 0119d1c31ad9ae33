//! [`NodeProcess`]: the node's real program (`rethink-node-under-test`, the same code as the
//! `rethink-node` binary) run as a child process on a data directory the test owns, so that a test
//! can kill it with a real SIGKILL (nothing flushed, memory gone) or stop it with a real SIGTERM,
//! and start it again on the same directory and port.
//!
//! Readiness is the node's own signal: its "rethink-node listening" log line, which names the
//! bound address. No polling, no sleeps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::client::RtMemory;
use super::{DOMAIN, Rt};

/// How long a node may take to start or to exit before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// A node running as a child process.
#[derive(Debug)]
pub(crate) struct NodeProcess {
    child: Option<Child>,
    addr: SocketAddr,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    /// The node's log lines (stderr and stdout), collected by a background task.
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl NodeProcess {
    /// Starts the node on `data_dir` (domain `example.com`, an ephemeral port), with extra
    /// `RETHINK_*` settings in `env`.
    pub(crate) async fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::start(data_dir.to_path_buf(), env, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start(data_dir: PathBuf, env: Vec<(String, String)>, listen: SocketAddr) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rethink-node-under-test"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env("RETHINK_DOMAIN", DOMAIN)
            .env("RETHINK_LISTEN", listen.to_string())
            .env("RETHINK_DATA_DIR", &data_dir)
            // As `Config::for_tests`: tests send faster than clients; a test turns it on.
            .env("RETHINK_MATRIX__RATE_LIMIT__ENABLED", "false")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the node program starts");
        let (tx, mut log) = tokio::sync::mpsc::unbounded_channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let addr = tokio::time::timeout(DEADLINE, async {
            let mut seen = Vec::new();
            loop {
                match log.recv().await {
                    Some(line) => {
                        if let Some(addr) = listening_addr(&line) {
                            return addr;
                        }
                        seen.push(line);
                    }
                    None => panic!("the node exited before listening:\n{}", seen.join("\n")),
                }
            }
        })
        .await
        .expect("the node listens in time");
        Self {
            child: Some(child),
            addr,
            data_dir,
            env,
            log,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A runtime `name` connected over WebSocket with its session opened (as [`Rt::open`] on a
    /// [`super::TestNode`]); panics unless the node answers 200.
    pub(crate) async fn open_rt(&self, name: &str) -> Rt {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .expect("connect");
        let mut rt = Rt::from_ws(ws, name);
        let resp = rt.open_session(json!({})).await;
        assert_eq!(resp["body"]["code"], 200, "open: {resp}");
        rt
    }

    /// Reconnects `memory`'s runtime and sends its re-open without waiting for the answer (as
    /// [`RtMemory::resume`] on a [`super::TestNode`]); returns the client and the re-open sent.
    pub(crate) async fn resume_rt(&self, memory: &RtMemory) -> (Rt, Value) {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .expect("reconnect");
        let mut rt = Rt::from_ws(ws, "resumed");
        rt.url = memory.url.clone();
        rt.token = memory.token.clone();
        rt.last_seq = memory.last_seq;
        let msg = json!({
            "id": memory.next_id + 1000, "type": "re-open", "from": rt.url, "to": "mn:/session",
            "body": {"runtimeToken": rt.token, "lastSeq": rt.last_seq}
        });
        rt.send(&msg).await;
        (rt, msg)
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("the node is running")
    }

    /// Kills the node with SIGKILL and waits for it to be gone.
    pub(crate) async fn kill(&mut self) {
        let mut child = self.child.take().expect("the node is running");
        child.start_kill().expect("SIGKILL sent");
        let status = tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("a killed node is gone in time")
            .expect("wait");
        assert!(
            !status.success(),
            "a killed node does not exit successfully"
        );
    }

    /// Sends SIGTERM (the operator's graceful stop) without waiting.
    pub(crate) fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "SIGTERM sent");
    }

    /// Waits for the node to exit, at most `within`; `None` if it is still running then.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("the node is running");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => {
                self.child = None;
                Some(status.expect("wait"))
            }
            Err(_) => None,
        }
    }

    /// Log lines the node has written and not yet taken. Once the node has exited, every line up
    /// to the end of its output (the pipes' end is the signal that nothing more comes).
    pub(crate) async fn drain_log(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.child.is_some() {
            while let Ok(line) = self.log.try_recv() {
                lines.push(line);
            }
            return lines;
        }
        let all = async {
            while let Some(line) = self.log.recv().await {
                lines.push(line);
            }
        };
        tokio::time::timeout(DEADLINE, all)
            .await
            .expect("the exited node's output ends in time");
        lines
    }

    /// Sends the process signal `sig` (`"-STOP"`, `"-CONT"`, as `kill` takes it).
    pub(crate) fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {sig}");
    }

    /// Waits for the next log line containing `needle` (skipping the lines before it), at most
    /// the start deadline; returns it.
    pub(crate) async fn wait_for_log(&mut self, needle: &str) -> String {
        let found = async {
            while let Some(line) = self.log.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(DEADLINE, found).await {
            Ok(Some(line)) => strip_ansi(&line),
            Ok(None) => panic!("the node's output ended without a line containing {needle:?}"),
            Err(_) => panic!("no log line containing {needle:?} within {DEADLINE:?}"),
        }
    }

    /// Starts the node again on the same data directory, port and settings (after [`kill`] or
    /// after it exited).
    ///
    /// [`kill`]: Self::kill
    pub(crate) async fn restart(self) -> Self {
        assert!(self.child.is_none(), "stop the node before restarting it");
        Self::start(self.data_dir, self.env, self.addr).await
    }
}

/// The bound address in the node's "rethink-node listening" log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("rethink-node listening") {
        return None;
    }
    let clean = strip_ansi(line);
    let start = clean.find("addr=")? + "addr=".len();
    let rest = &clean[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_listening_line_with_or_without_colours() {
        let plain = "2026-12-02T07:00:00Z  INFO rethink_node::node: rethink-node listening addr=127.0.0.1:4567 domain=example.com";
        assert_eq!(
            super::listening_addr(plain),
            Some("127.0.0.1:4567".parse().unwrap())
        );
        let coloured = "\u{1b}[32m INFO\u{1b}[0m rethink-node listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:9 x";
        assert_eq!(
            super::listening_addr(coloured),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(super::listening_addr("something else addr=1.2.3.4:5"), None);
    }
}

//! [`Relay`]: a TCP relay in front of a server (the node, PostgreSQL) that a test can cut or take
//! down, so that the server's client sees its connections lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Every accepted connection is piped to the target; [`Relay::cut`] closes every connection it
/// carries (both sockets dropped, so both ends see the loss); [`Relay::set_down`] also drops
/// every new connection at once while down.
pub(crate) struct Relay {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Relay {
    /// A relay on 127.0.0.1 at a free port to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (is_down, list) = (Arc::clone(&down), Arc::clone(&conns));
        let accept = tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                if is_down.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let pipe = tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                list.lock().unwrap().push(pipe.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            down,
            conns,
            accept,
        }
    }

    /// Where the relay listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection the relay carries; returns how many there were.
    pub(crate) fn cut(&self) -> usize {
        let conns: Vec<AbortHandle> = self.conns.lock().unwrap().drain(..).collect();
        for c in &conns {
            c.abort();
        }
        conns.len()
    }

    /// Down: every connection is cut and new ones are dropped at once. Up: piped again.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.cut();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

//! [`Relay`]: a TCP relay in front of a server (the node, PostgreSQL) that a test can cut or take
//! down, so that the server's client sees its connections lost, or make swallow what the client
//! writes (a connection that stops carrying it, before the client notices).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Every accepted connection is piped to the target; [`Relay::cut`] closes every connection it
/// carries (both sockets dropped, so both ends see the loss); [`Relay::set_down`] also drops
/// every new connection at once while down; [`Relay::swallow`] stops passing on what clients
/// write (it is read and counted, never forwarded).
pub(crate) struct Relay {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    swallowing: Arc<AtomicBool>,
    swallowed: watch::Sender<u64>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Relay {
    /// A relay on 127.0.0.1 at a free port to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let swallowing = Arc::new(AtomicBool::new(false));
        let (swallowed, _) = watch::channel(0u64);
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (is_down, list) = (Arc::clone(&down), Arc::clone(&conns));
        let (swallow, count) = (Arc::clone(&swallowing), swallowed.clone());
        let accept = tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                if is_down.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (swallow, count) = (Arc::clone(&swallow), count.clone());
                let pipe = tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(target).await.unwrap();
                    let (mut client_in, mut client_out) = inbound.split();
                    let (mut server_in, mut server_out) = outbound.split();
                    let up = async {
                        let mut buf = vec![0u8; 16 << 10];
                        loop {
                            let n = match client_in.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if swallow.load(Ordering::SeqCst) {
                                count.send_modify(|c| *c += n as u64);
                            } else if server_out.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = server_out.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut server_in, &mut client_out).await;
                        let _ = client_out.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
                list.lock().unwrap().push(pipe.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            down,
            swallowing,
            swallowed,
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

    /// From now on, what clients write is swallowed; the receiver counts the bytes.
    pub(crate) fn swallow(&self) -> watch::Receiver<u64> {
        self.swallowed.send_replace(0);
        self.swallowing.store(true, Ordering::SeqCst);
        self.swallowed.subscribe()
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

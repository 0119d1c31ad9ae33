//! [`KeepAlive`]: the Matrix Client-Server API over one HTTP/1.1 connection kept alive, for tests
//! that send thousands of requests (a busy room), to a [`TestNode`](super::TestNode) or a node
//! running as a child process (any address). Bodies are sent as given, so a test can send bytes
//! no JSON library would write (a lone surrogate escape).

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::matrix::V3;

/// One kept-alive connection to a node.
pub(crate) struct KeepAlive {
    stream: BufReader<TcpStream>,
}

impl KeepAlive {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// One request: status and JSON body (`Null` if empty, a JSON string if not JSON).
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or_default();
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&request)
            .await
            .expect("write");
        self.read_response().await
    }

    async fn read_response(&mut self) -> (u16, Value) {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("status line {line:?}"));
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.expect("header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').expect("header line");
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().expect("length"),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await.expect("chunk size");
                let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await.expect("chunk");
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await.expect("body");
        }
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        (status, json)
    }

    /// `PUT {V3}{path}` with a JSON body, as `token`.
    pub(crate) async fn put(&mut self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.call("PUT", &format!("{V3}{path}"), Some(token), Some(&bytes))
            .await
    }

    /// `POST {V3}{path}` with a JSON body, as `token` (or anonymously).
    pub(crate) async fn post(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.call("POST", &format!("{V3}{path}"), token, Some(&bytes))
            .await
    }

    /// `GET {V3}{path}`, as `token`.
    pub(crate) async fn get(&mut self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", &format!("{V3}{path}"), Some(token), None)
            .await
    }

    /// Registers `name` (password `pw-<name>`) through the dummy flow: (access token, device).
    pub(crate) async fn register(&mut self, name: &str) -> (String, String) {
        let req = json!({"username": name, "password": format!("pw-{name}")});
        let (status, uia) = self.post("/register", None, &req).await;
        assert_eq!(status, 401, "{uia}");
        let mut req = req;
        req["auth"] = json!({"type": "m.login.dummy", "session": uia["session"]});
        let (status, done) = self.post("/register", None, &req).await;
        assert_eq!(status, 200, "{done}");
        (
            done["access_token"].as_str().unwrap().to_owned(),
            done["device_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Logs `name` in on a new device: its access token.
    pub(crate) async fn login(&mut self, name: &str) -> String {
        let (status, done) = self
            .post(
                "/login",
                None,
                &super::matrix::password_login(name, &format!("pw-{name}")),
            )
            .await;
        assert_eq!(status, 200, "{done}");
        done["access_token"].as_str().unwrap().to_owned()
    }

    /// Creates a room: its ID.
    pub(crate) async fn create_room(&mut self, token: &str, body: &Value) -> String {
        let (status, done) = self.post("/createRoom", Some(token), body).await;
        assert_eq!(status, 200, "{done}");
        done["room_id"].as_str().unwrap().to_owned()
    }

    /// Sends a text message with transaction `txn`: the status and answer.
    pub(crate) async fn send_text(
        &mut self,
        token: &str,
        room: &str,
        txn: &str,
        text: &str,
    ) -> (u16, Value) {
        self.put(
            &format!("/rooms/{room}/send/m.room.message/{txn}"),
            token,
            &super::matrix::text(text),
        )
        .await
    }
}

//! The Matrix Client-Server API over raw HTTP/1.1 (one request per connection, so a test sees
//! exactly the status and body the node sent), and a logged-in matrix-sdk client.

use matrix_sdk::Client;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DOMAIN, NodeProcess, TestNode};

/// A node these helpers talk to: in this process ([`TestNode`]) or a node program
/// ([`NodeProcess`], several of them in a cluster).
pub(crate) trait Served {
    fn addr(&self) -> std::net::SocketAddr;
}

impl Served for TestNode {
    fn addr(&self) -> std::net::SocketAddr {
        TestNode::addr(self)
    }
}

/// A node's address, for a task that cannot borrow the node.
impl Served for std::net::SocketAddr {
    fn addr(&self) -> std::net::SocketAddr {
        *self
    }
}

impl Served for NodeProcess {
    fn addr(&self) -> std::net::SocketAddr {
        NodeProcess::addr(self)
    }
}

/// `/_matrix/client/v3`.
pub(crate) const V3: &str = "/_matrix/client/v3";

/// One HTTP/1.1 request: status and JSON body (`Null` if empty, a JSON string if the body is
/// not JSON). `body` is sent as is, with `Content-Type: application/json`.
pub(crate) async fn call(
    node: &impl Served,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    call_at(node.addr(), method, path, token, body).await
}

/// [`call`] to a node at `addr` (a [`super::process::NodeProcess`], say).
pub(crate) async fn call_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    } else if method == "POST" || method == "PUT" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    if let Some(b) = body {
        s.write_all(b).await.expect("write body");
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8(out).expect("utf-8 response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    (status, json)
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// `fut`'s output, which must come within [`RECV_TIMEOUT`](super::client::RECV_TIMEOUT): for a
/// `/sync` long-poll on a node with a manual clock, which nothing but a wake-up can end.
pub(crate) async fn woken<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(super::client::RECV_TIMEOUT, fut)
        .await
        .expect("the long-poll is woken")
}

/// `GET` with `token`.
pub(crate) async fn get(node: &impl Served, path: &str, token: &str) -> (u16, Value) {
    call(node, "GET", path, Some(token), None).await
}

/// `POST` of `body` with `token`.
pub(crate) async fn post(
    node: &impl Served,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    send(node, "POST", path, Some(token), body).await
}

/// `PUT` of `body` with `token`.
pub(crate) async fn put(node: &impl Served, path: &str, token: &str, body: &Value) -> (u16, Value) {
    send(node, "PUT", path, Some(token), body).await
}

/// `DELETE` with `body` and `token`.
pub(crate) async fn delete(
    node: &impl Served,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    send(node, "DELETE", path, Some(token), body).await
}

/// `GET` without an access token.
pub(crate) async fn anon_get(node: &impl Served, path: &str) -> (u16, Value) {
    call(node, "GET", path, None, None).await
}

/// `POST` of `body` without an access token.
pub(crate) async fn anon_post(node: &impl Served, path: &str, body: &Value) -> (u16, Value) {
    send(node, "POST", path, None, body).await
}

/// A request with a JSON body.
async fn send(
    node: &impl Served,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let body = body.to_string();
    call(node, method, path, token, Some(body.as_bytes())).await
}

/// Asserts a Matrix error answer: status, `errcode`, and an `error` message.
#[track_caller]
pub(crate) fn assert_error(answer: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["errcode"], errcode, "{}", answer.1);
    assert!(answer.1["error"].is_string(), "{}", answer.1);
}

/// Asserts a 200 answer and returns its body.
#[track_caller]
pub(crate) fn ok(answer: (u16, Value)) -> Value {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1
}

/// The full Matrix user ID of `name` on the test domain.
pub(crate) fn user_id(name: &str) -> String {
    format!("@{name}:{DOMAIN}")
}

/// A logged-in device: its user, its device and its access token. Its request methods take
/// paths below [`V3`].
pub(crate) struct Session {
    pub(crate) user_id: String,
    pub(crate) device_id: String,
    pub(crate) token: String,
}

impl Session {
    /// The device a successful register or login answer names.
    fn from_login(done: &Value) -> Self {
        let field = |name: &str| done[name].as_str().expect(name).to_owned();
        Self {
            user_id: field("user_id"),
            device_id: field("device_id"),
            token: field("access_token"),
        }
    }

    /// `GET {V3}{path}`.
    pub(crate) async fn get(&self, node: &impl Served, path: &str) -> (u16, Value) {
        get(node, &format!("{V3}{path}"), &self.token).await
    }

    /// `PUT {V3}{path}`.
    pub(crate) async fn put(&self, node: &impl Served, path: &str, body: &Value) -> (u16, Value) {
        put(node, &format!("{V3}{path}"), &self.token, body).await
    }

    /// `POST {V3}{path}`.
    pub(crate) async fn post(&self, node: &impl Served, path: &str, body: &Value) -> (u16, Value) {
        post(node, &format!("{V3}{path}"), &self.token, body).await
    }

    /// `POST {V3}{path}` with no body at all.
    pub(crate) async fn post_empty(&self, node: &impl Served, path: &str) -> (u16, Value) {
        call(
            node,
            "POST",
            &format!("{V3}{path}"),
            Some(&self.token),
            None,
        )
        .await
    }

    /// `DELETE {V3}{path}`.
    pub(crate) async fn delete(
        &self,
        node: &impl Served,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        delete(node, &format!("{V3}{path}"), &self.token, body).await
    }
}

/// Registers `name` (password `pw-<name>`) through the dummy flow; returns the access token.
pub(crate) async fn register(node: &impl Served, name: &str) -> String {
    register_session(node, name).await.token
}

/// Registers `name` (password `pw-<name>`) through the dummy flow; returns its first device.
pub(crate) async fn register_session(node: &impl Served, name: &str) -> Session {
    let path = format!("{V3}/register");
    let req = json!({"username": name, "password": format!("pw-{name}")});
    let (status, uia) = anon_post(node, &path, &req).await;
    assert_eq!(status, 401, "{uia}");
    let mut req = req;
    req["auth"] = json!({"type": "m.login.dummy", "session": uia["session"]});
    let (status, done) = anon_post(node, &path, &req).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], user_id(name));
    Session::from_login(&done)
}

/// The body of an `m.login.password` login of `user` (a localpart or a full user ID).
pub(crate) fn password_login(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    })
}

/// Logs `user` in with `password` on a new device; returns the 200 answer's body.
pub(crate) async fn login_with(node: &impl Served, user: &str, password: &str) -> Value {
    ok(anon_post(
        node,
        &format!("{V3}/login"),
        &password_login(user, password),
    )
    .await)
}

/// Logs `name` (registered with [`register`]) in on a new device.
pub(crate) async fn login(node: &impl Served, name: &str) -> Session {
    Session::from_login(&login_with(node, name, &format!("pw-{name}")).await)
}

/// `{V3}/rooms/{room}/{rest}`.
pub(crate) fn room_path(room: &str, rest: &str) -> String {
    format!("{V3}/rooms/{room}/{rest}")
}

/// `POST /rooms/{room}/invite` of `user` (a full user ID) by `token`.
pub(crate) async fn invite(node: &impl Served, token: &str, room: &str, user: &str) {
    let body = json!({"user_id": user});
    ok(post(node, &room_path(room, "invite"), token, &body).await);
}

/// `POST /rooms/{room}/join` by `token`.
pub(crate) async fn join(node: &impl Served, token: &str, room: &str) {
    ok(post(node, &room_path(room, "join"), token, &json!({})).await);
}

/// `GET /sync` with `since` (if any) and no waiting; returns the body.
pub(crate) async fn sync(node: &impl Served, token: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("{V3}/sync?timeout=0&since={since}"),
        None => format!("{V3}/sync?timeout=0"),
    };
    ok(get(node, &path, token).await)
}

/// The `next_batch` token of a `/sync` answer.
pub(crate) fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Registers alice and creates a room of hers with `body`: her token and the room ID.
pub(crate) async fn room_of_alice(node: &impl Served, body: &Value) -> (String, String) {
    let alice = register(node, "alice").await;
    let room = create_room(node, &alice, body).await;
    (alice, room)
}

/// `GET /rooms/{room}/event/{event}`.
pub(crate) async fn get_event(
    node: &impl Served,
    token: &str,
    room: &str,
    event: &str,
) -> (u16, Value) {
    get(node, &room_path(room, &format!("event/{event}")), token).await
}

/// The event IDs of a `/messages` page's `chunk`, in order.
pub(crate) fn chunk_ids(page: &Value) -> Vec<String> {
    event_ids(page["chunk"].as_array().expect("chunk"))
}

/// The event IDs of `events`, in order.
pub(crate) fn event_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

/// `POST /createRoom` with `body`; returns the room ID.
pub(crate) async fn create_room(node: &impl Served, token: &str, body: &Value) -> String {
    let created = ok(post(node, &format!("{V3}/createRoom"), token, body).await);
    created["room_id"].as_str().expect("room_id").to_owned()
}

/// The path that sends an `m.room.message` to `room` with transaction ID `txn`.
pub(crate) fn send_path(room: &str, txn: &str) -> String {
    room_path(room, &format!("send/m.room.message/{txn}"))
}

/// The content of an `m.text` message.
pub(crate) fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

/// Sends an `m.room.message` text with transaction ID `txn`; returns the event ID.
pub(crate) async fn send_text(
    node: &impl Served,
    token: &str,
    room: &str,
    txn: &str,
    body: &str,
) -> String {
    let sent = ok(put(node, &send_path(room, txn), token, &text(body)).await);
    sent["event_id"].as_str().expect("event_id").to_owned()
}

/// `GET /rooms/{room}/messages?{query}`.
pub(crate) async fn messages(node: &impl Served, token: &str, room: &str, query: &str) -> Value {
    ok(get(node, &room_path(room, &format!("messages?{query}")), token).await)
}

/// Every event of a room, oldest first, read backwards from the newest in pages of 100.
pub(crate) async fn whole_history(node: &impl Served, token: &str, room: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut query = "dir=b&limit=100".to_owned();
    loop {
        let page = messages(node, token, room, &query).await;
        out.extend(page["chunk"].as_array().expect("chunk").iter().cloned());
        match page["end"].as_str() {
            Some(end) => query = format!("dir=b&limit=100&from={end}"),
            None => break,
        }
    }
    out.reverse();
    out
}

/// The bodies of the `m.room.message` events among `events`.
pub(crate) fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// A matrix-sdk client of the node, not logged in.
pub(crate) async fn sdk_client(node: &impl Served) -> Client {
    Client::builder()
        .homeserver_url(format!("http://{}", node.addr()))
        .build()
        .await
        .expect("matrix-sdk client")
}

/// A matrix-sdk client of the node, logged in as `name` (registered with [`register`]).
pub(crate) async fn sdk_login(node: &impl Served, name: &str) -> Client {
    let client = sdk_client(node).await;
    sdk_password_login(&client, name).await;
    client
}

/// Logs `client` in as `name` with the password [`register`] gave it.
async fn sdk_password_login(client: &Client, name: &str) {
    client
        .matrix_auth()
        .login_username(name, &format!("pw-{name}"))
        .send()
        .await
        .expect("password login");
}

/// The user ID of `name` on the test node, as matrix-sdk's type.
pub(crate) fn sdk_user_id(name: &str) -> matrix_sdk::ruma::OwnedUserId {
    matrix_sdk::ruma::UserId::parse(user_id(name)).expect("a user ID")
}

/// One matrix-sdk `/sync` from the client's last token, long-polling up to `timeout` (it
/// returns as soon as there is something new).
pub(crate) async fn sdk_sync(
    client: &Client,
    timeout: std::time::Duration,
) -> matrix_sdk::sync::SyncResponse {
    client
        .sync_once(matrix_sdk::config::SyncSettings::default().timeout(timeout))
        .await
        .expect("sync")
}

/// Sends `text` to `room` as `client` (a room it knows); returns the event ID.
pub(crate) async fn sdk_say(
    client: &Client,
    room: &matrix_sdk::ruma::OwnedRoomId,
    text: &str,
) -> matrix_sdk::ruma::OwnedEventId {
    client
        .get_room(room)
        .expect("room known to the client")
        .send(matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain(text))
        .await
        .expect("send")
        .response
        .event_id
}

/// Percent-encodes a query parameter value.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A matrix-sdk client of the node logged in as `name` (registered with [`register`]) that
/// bootstraps cross-signing when it logs in (uploading its master, self-signing and user-signing
/// keys, and signing its device with them); returns once that is done.
pub(crate) async fn sdk_login_cross_signing(node: &impl Served, name: &str) -> Client {
    let settings = matrix_sdk::encryption::EncryptionSettings {
        auto_enable_cross_signing: true,
        ..Default::default()
    };
    let client = Client::builder()
        .homeserver_url(format!("http://{}", node.addr()))
        .with_encryption_settings(settings)
        .build()
        .await
        .expect("matrix-sdk client");
    sdk_password_login(&client, name).await;
    client
        .encryption()
        .wait_for_e2ee_initialization_tasks()
        .await;
    client
}

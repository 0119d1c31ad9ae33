//! The Matrix side of WebAssembly connectors (`[connectors.<name>.matrix]`): [`NodeMatrix`]
//! implements `rethink_stubs::MatrixPort` for the `appservice` imports, and feeds each
//! connector's `on-event` with the room events that concern it.
//!
//! - Acting: each call is a request to the node's own Client-Server routes, made in-process
//!   (no socket), with the connector's `as_token` (random per start, held only here) and
//!   `?user_id=` (masquerading). So the rules of external services apply unchanged: a user
//!   outside the namespace is refused (403, `M_EXCLUSIVE` / `M_FORBIDDEN`), rooms and aliases
//!   are checked by the same handlers, the policy point sees the same requests.
//! - Events: one feeder task per connector follows the room stream from where it was at start
//!   and applies the interest rule of external services (`appservice::interest`); each event
//!   goes to the current instance's [`MatrixEvents`] queue, whose `send` waits while it is full
//!   (the feeder stays behind; nothing is dropped); an instance replaced (a new catalogue
//!   version) handles what it queued, and the feeder goes on with the new one. Not persisted: events committed while the
//!   node is down are not replayed to a connector.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{self, Method, Request, StatusCode};
use rethink_stubs::{BoxFuture, Failure, MatrixEvents, MatrixPort};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::appservice::interest::Interest;
use crate::config::registration_id;
use crate::locks::lock;
use crate::node::Node;

/// Most room events read from the stream at once by a feeder.
const FEED_BATCH: u32 = 100;

/// The Matrix side of the node's connectors.
#[derive(Debug, Default)]
pub struct NodeMatrix {
    /// The connectors with a Matrix side.
    names: Vec<String>,
    /// The node, once it exists (the connectors start before it).
    node: OnceLock<Node>,
    /// The `on-event` queue of each connector's current instance.
    events: Mutex<HashMap<String, MatrixEvents>>,
    /// Transaction ids of sent events.
    txn: AtomicU64,
}

impl NodeMatrix {
    /// The glue of the connectors named (`[connectors.<name>.matrix]`).
    pub fn new(names: Vec<String>) -> Self {
        Self {
            names,
            ..Self::default()
        }
    }

    /// Whether stub instance `name` is a connector with a Matrix side.
    pub(super) fn serves(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Gives the node to the glue (once); calls before this are refused with 503.
    pub fn bind(&self, node: Node) {
        let _ = self.node.set(node);
    }

    /// Remembers the `on-event` queue of `connector`'s new instance.
    pub(super) fn attach(&self, connector: &str, events: MatrixEvents) {
        lock(&self.events).insert(connector.to_owned(), events);
    }

    fn queue(&self, connector: &str) -> Option<MatrixEvents> {
        lock(&self.events).get(connector).cloned()
    }

    /// Registers each connector's sender user (so that it can be invited before it acted) and
    /// starts one feeder per connector with a Matrix side (after [`Self::bind`]).
    pub async fn start_feeds(self: &Arc<Self>) {
        let Some(node) = self.node.get() else { return };
        for c in &node.config().appservices.connectors {
            let sender = &c.registration.sender_localpart;
            if let Err(e) = node.accounts().create_appservice_user(sender).await {
                tracing::warn!(connector = %c.name, error = %e, "connector sender not registered");
            }
            tokio::spawn(Arc::clone(self).feed(node.clone(), c.name.clone()));
        }
    }

    async fn feed(self: Arc<Self>, node: Node, connector: String) {
        let id = registration_id(&connector);
        let stop = node.shutdown_token().clone();
        let mut pos = node.stream().visible();
        loop {
            let commit = node.stream().next_commit();
            let visible = node.stream().visible();
            while pos < visible {
                let Some(service) = node.appservices().directory().by_id(&id).cloned() else {
                    return;
                };
                let server = node.appservices().server_name().to_string();
                let mut interest = Interest::new(&service, node.rooms(), &server);
                let events = match node
                    .rooms()
                    .store()
                    .events_between(pos, visible, FEED_BATCH)
                    .await
                {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(connector, error = %e, "connector feed: reading events");
                        break;
                    }
                };
                pos = match events.last() {
                    Some(last) if events.len() >= FEED_BATCH as usize => last.stream,
                    _ => visible,
                };
                for pdu in &events {
                    match interest.concerns(pdu).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(connector, error = %e, "connector feed: interest");
                            continue;
                        }
                    }
                    let json = pdu.to_client::<()>(None, true).into_json().get().to_owned();
                    if !self.deliver(&connector, json, &stop).await {
                        return;
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = commit => {}
            }
        }
    }

    /// Gives `json` to the connector's current instance, waiting while its queue is full; after
    /// a replacement of the instance (its queue closed), to the new one. `false` once the
    /// connector or the node stopped.
    async fn deliver(&self, connector: &str, json: String, stop: &CancellationToken) -> bool {
        let mut last: Option<MatrixEvents> = None;
        loop {
            let Some(queue) = self.queue(connector) else {
                return false;
            };
            if last.as_ref().is_some_and(|l| l.same_queue(&queue)) {
                tracing::warn!(connector, "connector feed: the connector stopped");
                return false;
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                sent = queue.send(json.clone()) => if sent.is_ok() {
                    return true;
                },
            }
            last = Some(queue);
        }
    }

    /// A request to the node's Client-Server routes as `connector`'s service, acting as `user`.
    async fn call(
        &self,
        connector: &str,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Value,
    ) -> Result<Value, Failure> {
        let node = self
            .node
            .get()
            .ok_or_else(|| Failure::new(503, "the node is starting"))?;
        let service = node
            .appservices()
            .directory()
            .by_id(&registration_id(connector))
            .cloned()
            .ok_or_else(|| Failure::new(403, "this connector has no Matrix namespace"))?;
        let mut uri = path.to_owned();
        if let Some(user) = user {
            uri.push_str("?user_id=");
            uri.extend(form_urlencoded::byte_serialize(user.as_bytes()));
        }
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", service.registration.as_token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .map_err(|e| Failure::new(400, e.to_string()))?;
        let response = crate::matrix::router()
            .with_state(node.clone())
            .oneshot(request)
            .await
            .map_err(|e| Failure::new(500, e.to_string()))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .map_err(|e| Failure::new(502, e.to_string()))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let code = match status {
            StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                status.as_u16()
            }
            StatusCode::TOO_MANY_REQUESTS => 429,
            s if s.is_client_error() => 400,
            _ => 503,
        };
        let text = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("");
        // Outside the connector's namespace is a 403 for the guest, whatever the route's status.
        let code = if text("errcode") == "M_EXCLUSIVE" {
            403
        } else {
            code
        };
        Err(Failure::new(
            code,
            format!("{} {}", text("errcode"), text("error"))
                .trim()
                .to_owned(),
        ))
    }
}

/// Segment of a URL path (room ids and aliases have `!`, `#`, `:`).
fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn field(v: &Value, k: &str) -> Result<String, Failure> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Failure::new(502, format!("the answer has no {k}")))
}

impl MatrixPort for NodeMatrix {
    fn register_user<'a>(
        &'a self,
        connector: &'a str,
        localpart: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let body = json!({
                "type": "m.login.application_service",
                "username": localpart,
                "inhibit_login": true,
            });
            let server = self
                .node
                .get()
                .map(|n| n.appservices().server_name().to_string())
                .unwrap_or_default();
            let user_id = format!("@{localpart}:{server}");
            match self
                .call(
                    connector,
                    Method::POST,
                    "/_matrix/client/v3/register",
                    None,
                    body,
                )
                .await
            {
                Ok(v) => field(&v, "user_id"),
                // Already registered: fine if it is in the namespace (checked by acting as it).
                Err(f) if f.description.starts_with("M_USER_IN_USE") => Ok(user_id),
                Err(f) => Err(f),
            }
        })
    }

    fn join_room<'a>(
        &'a self,
        connector: &'a str,
        user_id: &'a str,
        room: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let path = format!("/_matrix/client/v3/join/{}", seg(room));
            let v = self
                .call(connector, Method::POST, &path, Some(user_id), json!({}))
                .await?;
            field(&v, "room_id")
        })
    }

    fn send_event<'a>(
        &'a self,
        connector: &'a str,
        user_id: &'a str,
        room_id: &'a str,
        event_type: &'a str,
        content: &'a str,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let content: Value = serde_json::from_str(content)
                .map_err(|e| Failure::new(400, format!("content is not JSON: {e}")))?;
            if !content.is_object() {
                return Err(Failure::new(400, "content must be a JSON object"));
            }
            let txn = self.txn.fetch_add(1, Ordering::Relaxed);
            let path = format!(
                "/_matrix/client/v3/rooms/{}/send/{}/c{}-{txn}",
                seg(room_id),
                seg(event_type),
                std::process::id(),
            );
            let v = self
                .call(connector, Method::PUT, &path, Some(user_id), content)
                .await?;
            field(&v, "event_id")
        })
    }

    fn create_room<'a>(
        &'a self,
        connector: &'a str,
        user_id: &'a str,
        alias_localpart: Option<&'a str>,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let mut body = json!({});
            if let Some(a) = alias_localpart {
                body["room_alias_name"] = json!(a);
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let v = self
                .call(
                    connector,
                    Method::POST,
                    "/_matrix/client/v3/createRoom",
                    Some(user_id),
                    body,
                )
                .await?;
            field(&v, "room_id")
        })
    }
}

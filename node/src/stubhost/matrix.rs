//! The Matrix side of WebAssembly connectors (`[connectors.<name>.matrix]`): [`NodeMatrix`]
//! implements `rethink_stubs::MatrixPort` for the `appservice` imports, and feeds each
//! connector's `on-event` with the room events that concern it.
//!
//! - Acting: each call is a request to the node's own Client-Server routes, made in-process
//!   (no socket), with the connector's `as_token` (random per start, held only here) and
//!   `?user_id=` (masquerading). So the rules of external services apply unchanged: a user
//!   outside the namespace is refused (403, `M_EXCLUSIVE` / `M_FORBIDDEN`), rooms and aliases
//!   are checked by the same handlers, the policy point sees the same requests.
//!   `create-room` takes an alias only in the connector's alias namespace (403 otherwise), and
//!   a room with an alias is public (`public_chat`: joined by its alias), one without private.
//! - Events: one feeder task per connector (`feed.rs`) follows the room stream from the
//!   connector's durable feed position; [`MatrixPort::handled`] stores the position of each
//!   event the host acknowledges.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{self, Method, Request, StatusCode};
use rethink_connectors::Kind;
use rethink_stubs::{BoxFuture, EventOutcome, Failure, KvStore, MatrixEvents, MatrixPort};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::feed::{FeedPositions, feed};
use crate::appservice::leader::while_held;
use crate::config::registration_id;
use crate::locks::lock;
use crate::node::Node;

/// The Matrix side of the node's connectors.
#[derive(Debug)]
pub struct NodeMatrix {
    /// The connectors with a Matrix side.
    names: Vec<String>,
    /// The node, once it exists (the connectors start before it).
    node: OnceLock<Node>,
    /// The `on-event` queue of each connector's current instance.
    events: Mutex<HashMap<String, MatrixEvents>>,
    /// Transaction ids of sent events.
    txn: AtomicU64,
    /// Each connector's feed position.
    pub(super) positions: FeedPositions,
}

impl NodeMatrix {
    /// The glue of the connectors named (`[connectors.<name>.matrix]`); their feed positions
    /// are kept in `kv` (the stubs' store).
    pub fn new(names: Vec<String>, kv: Arc<dyn KvStore>) -> Self {
        Self {
            names,
            node: OnceLock::new(),
            events: Mutex::default(),
            txn: AtomicU64::new(0),
            positions: FeedPositions::new(kv),
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

    pub(super) fn queue(&self, connector: &str) -> Option<MatrixEvents> {
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
            let (matrix, name) = (Arc::clone(self), c.name.clone());
            let stop = node.shutdown_token().clone();
            match node.appservices().leader() {
                // In a cluster one node feeds each connector (`appservice/leader.rs`); the
                // others' instances handle its bus messages only.
                Some(leader) => {
                    let key = format!("rethink.connector-feed.{name}");
                    let node = node.clone();
                    tokio::spawn(while_held(leader.clone(), key, stop, move |stop| {
                        feed(Arc::clone(&matrix), node.clone(), name.clone(), stop)
                    }));
                }
                None => {
                    tokio::spawn(feed(matrix, node.clone(), name, stop));
                }
            }
        }
    }

    /// 403 unless `#<localpart>:<server>` is in `connector`'s alias namespace (the WIT's rule
    /// for `create-room`; the route itself only refuses another service's exclusive alias).
    fn check_alias(&self, connector: &str, localpart: &str) -> Result<(), Failure> {
        let node = self
            .node
            .get()
            .ok_or_else(|| Failure::new(503, "the node is starting"))?;
        let alias = format!("#{localpart}:{}", node.appservices().server_name());
        let inside = node
            .appservices()
            .directory()
            .by_id(&registration_id(connector))
            .is_some_and(|s| s.registration.namespaces.matches(Kind::Alias, &alias));
        if inside {
            Ok(())
        } else {
            Err(Failure::new(
                403,
                format!("M_EXCLUSIVE {alias} is not in this connector's alias namespace"),
            ))
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
                self.check_alias(connector, a)?;
                body["room_alias_name"] = json!(a);
                // A room with an alias is meant to be found and joined by it.
                body["preset"] = json!("public_chat");
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

    fn handled<'a>(
        &'a self,
        connector: &'a str,
        position: u64,
        outcome: EventOutcome,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if outcome == EventOutcome::Skipped {
                tracing::error!(connector, position, "connector feed: an event was skipped");
            }
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            self.positions.store(connector, position).await;
        })
    }
}

//! [`Registry`]: the registrations, the messages that change and read them, expiry, and the
//! status of the runtimes they live in. Pure logic over an [`Io`] (the host's imports in the
//! component, a recorder in the unit tests).

use std::collections::BTreeMap;

use rethink_guest_envelope::Msg;
use serde_json::{Value, json};

use crate::record::{self, Criteria, Limits, Record};

/// The one timer: the next expiry.
pub(crate) const EXPIRY_TIMER: u64 = 1;
/// Where registrations are kept in the key-value store.
pub(crate) const PREFIX: &str = "reg/";

/// A refusal of the host: a reTHINK code and its description.
pub(crate) type Refusal = (u16, String);

/// What the registry uses of its host.
pub(crate) trait Io {
    fn now_ms(&self) -> u64;
    fn send(&mut self, msg: Msg) -> Result<(), Refusal>;
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Refusal>;
    fn kv_delete(&mut self, key: &str);
    fn set_timer(&mut self, id: u64, delay_ms: u64);
    fn cancel_timer(&mut self, id: u64);
    fn warn(&mut self, text: &str);
}

/// The registry's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) domain: String,
    /// Its own address (`domain://registry.<domain>`).
    pub(crate) address: String,
    pub(crate) max_registrations: usize,
    pub(crate) limits: Limits,
}

/// The registrations and the runtimes they live in.
#[derive(Debug)]
pub(crate) struct Registry {
    settings: Settings,
    /// The node's address: runtime status updates come from it.
    node: String,
    records: BTreeMap<String, Record>,
    /// Runtime URL → how many registrations live in it (its `/status` is subscribed while
    /// there are any).
    runtimes: BTreeMap<String, usize>,
    next_id: u64,
    /// Status notices of the message being handled, sent after its answer.
    notices: Vec<Msg>,
}

/// An answer: a code and either a value or a description.
type Answer = (u16, Value);

fn refuse(code: u16, text: impl Into<String>) -> Answer {
    (code, Value::String(text.into()))
}

impl Registry {
    /// A registry holding `records` (read back from the store): it subscribes to their
    /// runtimes' status and arms the expiry timer (expiring at once what expired meanwhile).
    pub(crate) fn new(settings: Settings, records: Vec<Record>, io: &mut dyn Io) -> Self {
        let node = format!("domain://msg-node.{}", settings.domain);
        let mut r = Self {
            settings,
            node,
            records: BTreeMap::new(),
            runtimes: BTreeMap::new(),
            next_id: io.now_ms(),
            notices: Vec::new(),
        };
        for rec in records {
            *r.runtimes.entry(rec.runtime.clone()).or_default() += 1;
            r.records.insert(rec.url.clone(), rec);
        }
        let runtimes: Vec<String> = r.runtimes.keys().cloned().collect();
        for rt in runtimes {
            r.subscription(io, "subscribe", &rt);
        }
        r.expire(io);
        r.flush(io);
        r
    }

    /// How many registrations there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Handles one message delivered to the registry.
    pub(crate) fn on_message(&mut self, io: &mut dyn Io, msg: &Msg) {
        if msg.kind == "response" {
            // The node's answer to a subscription carries the runtimes' current status.
            if msg.from == format!("{}/sm", self.node) {
                self.subscribed(io, msg);
                self.flush(io);
            }
            return;
        }
        let to_registry = msg.to.contains(&self.settings.address);
        if !to_registry {
            if msg.kind == "update" && msg.from == self.node {
                self.runtime_status(io, msg);
                self.flush(io);
            }
            return;
        }
        let body = msg.body_value();
        let (code, value) = match msg.kind.as_str() {
            "create" => self.register(io, msg, &body, false),
            "update" => self.update(io, msg, &body),
            "delete" => self.delete(io, msg, &body),
            "read" => self.read(&body),
            other => refuse(
                400,
                format!("the registry answers create, read, update and delete, not {other}"),
            ),
        };
        let body = if code < 300 {
            if value.is_null() {
                json!({ "code": code })
            } else {
                json!({ "code": code, "value": value })
            }
        } else {
            json!({ "code": code, "description": value })
        };
        let mut reply = msg.reply(body);
        reply.from.clone_from(&self.settings.address);
        if let Err((code, text)) = io.send(reply) {
            io.warn(&format!("registry: an answer was refused: {code} {text}"));
        }
        self.flush(io);
    }

    /// Sends the status notices collected while handling a message or a timer.
    fn flush(&mut self, io: &mut dyn Io) {
        for msg in std::mem::take(&mut self.notices) {
            let what = format!("{} to {}", msg.body.as_deref().unwrap_or(""), msg.to[0]);
            if let Err((code, text)) = io.send(msg) {
                io.warn(&format!(
                    "registry: the notice {what} was refused: {code} {text}"
                ));
            }
        }
    }

    /// The runtime a message comes from: `hyperty-runtime://<domain>/<id>` of a sender at or
    /// below it, in this registry's domain. The bus guarantees the sender owns its `from`.
    fn sender_runtime(&self, from: &str) -> Option<String> {
        let rest = from.strip_prefix("hyperty-runtime://")?;
        let mut parts = rest.splitn(3, '/');
        let (domain, id) = (parts.next()?, parts.next()?);
        (domain == self.settings.domain && !id.is_empty())
            .then(|| format!("hyperty-runtime://{domain}/{id}"))
    }

    fn register(&mut self, io: &mut dyn Io, msg: &Msg, body: &Value, update: bool) -> Answer {
        let Some(runtime) = self.sender_runtime(&msg.from) else {
            return refuse(
                403,
                "registrations are made by a runtime of this domain (from hyperty-runtime://<domain>/<id>/...)",
            );
        };
        let value = body.get("value").unwrap_or(&Value::Null);
        let mut rec = match record::parse(value, &runtime, io.now_ms(), &self.settings.limits) {
            Ok(rec) => rec,
            Err(e) => return refuse(400, e.0),
        };
        let existing = self.records.get(&rec.url);
        match existing {
            Some(old) if old.runtime != runtime => {
                return refuse(403, format!("{} is registered by another runtime", rec.url));
            }
            Some(old) => rec.started_ms = old.started_ms,
            None if update => return refuse(404, format!("{} is not registered", rec.url)),
            None if self.records.len() >= self.settings.max_registrations => {
                return refuse(
                    413,
                    format!(
                        "the registry holds at most {} registrations",
                        self.settings.max_registrations
                    ),
                );
            }
            None => {}
        }
        let was_live = existing.is_some_and(|o| o.status == "live");
        if let Err(e) = self.put(io, rec.clone()) {
            return e;
        }
        if !was_live {
            self.notify(&rec.url, "live");
        }
        self.arm(io);
        (200, Value::Null)
    }

    fn update(&mut self, io: &mut dyn Io, msg: &Msg, body: &Value) -> Answer {
        if body.get("value").is_some_and(Value::is_object) {
            return self.register(io, msg, body, true);
        }
        // A keep-alive: `body.resource` names the registration.
        let Some(url) = body.get("resource").and_then(Value::as_str) else {
            return refuse(
                400,
                "an update needs body.resource (a keep-alive) or body.value (the registration)",
            );
        };
        let runtime = self.sender_runtime(&msg.from);
        let Some(rec) = self.records.get(url) else {
            return refuse(404, format!("{url} is not registered"));
        };
        if runtime.as_deref() != Some(rec.runtime.as_str()) {
            return refuse(403, format!("{url} is registered by another runtime"));
        }
        let mut rec = rec.clone();
        rec.last_modified_ms = io.now_ms();
        let revived = rec.status != "live";
        rec.status = "live".into();
        if let Err(e) = self.put(io, rec) {
            return e;
        }
        if revived {
            self.notify(url, "live");
        }
        self.arm(io);
        (200, Value::Null)
    }

    fn delete(&mut self, io: &mut dyn Io, msg: &Msg, body: &Value) -> Answer {
        let value = body.get("value");
        let url = body
            .get("resource")
            .or_else(|| value.and_then(|v| v.get("hypertyURL")))
            .or_else(|| value.and_then(|v| v.get("url")))
            .and_then(Value::as_str);
        let Some(url) = url else {
            return refuse(
                400,
                "a delete needs body.resource (or body.value.hypertyURL / url)",
            );
        };
        let runtime = self.sender_runtime(&msg.from);
        match self.records.get(url) {
            None => return refuse(404, format!("{url} is not registered")),
            Some(rec) if runtime.as_deref() != Some(rec.runtime.as_str()) => {
                return refuse(403, format!("{url} is registered by another runtime"));
            }
            Some(_) => {}
        }
        let url = url.to_owned();
        self.remove(io, &url, "deleted");
        self.arm(io);
        (200, Value::Null)
    }

    fn read(&self, body: &Value) -> Answer {
        let c: Criteria = match record::criteria(body, &self.settings.limits) {
            Ok(c) => c,
            Err(e) => return refuse(400, e.0),
        };
        let found: serde_json::Map<String, Value> = self
            .records
            .values()
            .filter(|r| c.matches(r))
            .map(|r| (r.url.clone(), r.to_value()))
            .collect();
        if found.is_empty() {
            return refuse(404, "no registration matches");
        }
        (200, Value::Object(found))
    }

    /// `update` from the node to `<runtime>/status`: `body.value` is `live`, `disconnected`
    /// or `expired`; the runtime's registrations follow.
    fn runtime_status(&mut self, io: &mut dyn Io, msg: &Msg) {
        let body = msg.body_value();
        let Some(status) = body.get("value").and_then(Value::as_str) else {
            return;
        };
        for to in &msg.to {
            if let Some(runtime) = to.strip_suffix("/status") {
                self.apply_status(io, runtime, status);
            }
        }
        self.arm(io);
    }

    /// The node's answer to a `subscribe` to `<runtime>/status`: `body.value.status` maps each
    /// runtime to its current status (after a node restart, `disconnected` until it resumes).
    fn subscribed(&mut self, io: &mut dyn Io, msg: &Msg) {
        let body = msg.body_value();
        let Some(found) = body
            .get("value")
            .and_then(|v| v.get("status"))
            .and_then(Value::as_object)
        else {
            return;
        };
        for (runtime, status) in found {
            if let Some(status) = status.as_str() {
                self.apply_status(io, runtime, status);
            }
        }
        self.arm(io);
    }

    /// `runtime`'s registrations take `status` (`expired`: removed); each change is noticed.
    fn apply_status(&mut self, io: &mut dyn Io, runtime: &str, status: &str) {
        let urls: Vec<String> = self
            .records
            .values()
            .filter(|r| r.runtime == runtime)
            .map(|r| r.url.clone())
            .collect();
        for url in urls {
            match status {
                "expired" => self.remove(io, &url, "expired"),
                "live" | "disconnected" => {
                    let Some(mut rec) = self.records.get(&url).cloned() else {
                        continue;
                    };
                    if rec.status == status {
                        continue;
                    }
                    rec.status = status.to_owned();
                    if status == "live" {
                        rec.last_modified_ms = io.now_ms();
                    }
                    if self.put(io, rec).is_ok() {
                        self.notify(&url, status);
                    }
                }
                _ => {}
            }
        }
    }

    /// The expiry timer fired.
    pub(crate) fn on_timer(&mut self, io: &mut dyn Io) {
        self.expire(io);
        self.flush(io);
    }

    fn expire(&mut self, io: &mut dyn Io) {
        let now = io.now_ms();
        let due: Vec<String> = self
            .records
            .values()
            .filter(|r| r.expires_at_ms() <= now)
            .map(|r| r.url.clone())
            .collect();
        for url in due {
            self.remove(io, &url, "expired");
        }
        self.arm(io);
    }

    /// Sets the timer for the next expiry (or cancels it).
    fn arm(&mut self, io: &mut dyn Io) {
        match self.records.values().map(Record::expires_at_ms).min() {
            Some(at) => io.set_timer(EXPIRY_TIMER, at.saturating_sub(io.now_ms())),
            None => io.cancel_timer(EXPIRY_TIMER),
        }
    }

    /// Stores `rec` (persisted first: nothing is kept that the store refused).
    fn put(&mut self, io: &mut dyn Io, rec: Record) -> Result<(), Answer> {
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        io.kv_set(&format!("{PREFIX}{}", rec.url), &bytes)
            .map_err(|(code, text)| refuse(code, format!("not stored: {text}")))?;
        let runtime = rec.runtime.clone();
        if self.records.insert(rec.url.clone(), rec).is_none() {
            let n = self.runtimes.entry(runtime.clone()).or_default();
            *n += 1;
            if *n == 1 {
                self.subscription(io, "subscribe", &runtime);
            }
        }
        Ok(())
    }

    /// Forgets `url` and tells its subscribers `status`.
    fn remove(&mut self, io: &mut dyn Io, url: &str, status: &str) {
        let Some(rec) = self.records.remove(url) else {
            return;
        };
        io.kv_delete(&format!("{PREFIX}{url}"));
        if let Some(n) = self.runtimes.get_mut(&rec.runtime) {
            *n -= 1;
            if *n == 0 {
                self.runtimes.remove(&rec.runtime);
                self.subscription(io, "unsubscribe", &rec.runtime);
            }
        }
        self.notify(url, status);
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// `update` to the subscribers of `<url>/registration`, sent by [`Self::flush`].
    fn notify(&mut self, url: &str, status: &str) {
        let msg = Msg {
            id: self.id(),
            kind: "update".into(),
            from: self.settings.address.clone(),
            to: vec![format!("{url}/registration")],
            body: Some(
                json!({"resource": url, "attribute": "status", "value": status}).to_string(),
            ),
            extra: None,
        };
        self.notices.push(msg);
    }

    /// Subscribes to (or unsubscribes from) `<runtime>/status` at the node.
    fn subscription(&mut self, io: &mut dyn Io, kind: &str, runtime: &str) {
        let msg = Msg {
            id: self.id(),
            kind: kind.into(),
            from: self.settings.address.clone(),
            to: vec![format!("{}/sm", self.node)],
            body: Some(json!({ "resources": [format!("{runtime}/status")] }).to_string()),
            extra: None,
        };
        if let Err((code, text)) = io.send(msg) {
            io.warn(&format!(
                "registry: {kind} to {runtime}/status refused: {code} {text}"
            ));
        }
    }
}

#[cfg(test)]
mod tests;

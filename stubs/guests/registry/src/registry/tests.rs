use std::collections::BTreeMap;

use rethink_guest_envelope::Msg;
use serde_json::{Value, json};

use super::{Io, Refusal, Registry, Settings};
use crate::record::Limits;

#[derive(Default)]
struct Recorder {
    now: u64,
    sent: Vec<Msg>,
    kv: BTreeMap<String, Vec<u8>>,
    timer: Option<u64>,
}

impl Io for Recorder {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn send(&mut self, msg: Msg) -> Result<(), Refusal> {
        self.sent.push(msg);
        Ok(())
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Refusal> {
        self.kv.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) {
        self.kv.remove(key);
    }
    fn set_timer(&mut self, _id: u64, delay_ms: u64) {
        self.timer = Some(self.now + delay_ms);
    }
    fn cancel_timer(&mut self, _id: u64) {
        self.timer = None;
    }
    fn warn(&mut self, _text: &str) {}
}

fn settings() -> Settings {
    Settings {
        domain: "d".into(),
        address: "domain://registry.d".into(),
        max_registrations: 2,
        limits: Limits {
            default_expires: 60,
            max_expires: 3600,
            max_list: 8,
            max_text: 256,
        },
    }
}

fn msg(kind: &str, from: &str, body: Value) -> Msg {
    Msg {
        id: "1".into(),
        kind: kind.into(),
        from: from.into(),
        to: vec!["domain://registry.d".into()],
        body: Some(body.to_string()),
        extra: None,
    }
}

fn last_code(io: &Recorder) -> u64 {
    io.sent
        .iter()
        .rfind(|m| m.kind == "response")
        .expect("an answer")
        .body_value()["code"]
        .as_u64()
        .expect("a code")
}

const RT: &str = "hyperty-runtime://d/rt1/registry";

#[test]
fn register_keep_alive_expire_and_notify() {
    let mut io = Recorder::default();
    let mut r = Registry::new(settings(), Vec::new(), &mut io);
    let create =
        json!({"value": {"hypertyURL": "hyperty://d/h1", "user": "user://i/a", "expires": 10}});
    r.on_message(&mut io, &msg("create", RT, create));
    assert_eq!(last_code(&io), 200);
    assert!(io.sent.iter().any(|m| m.kind == "subscribe"));
    assert!(
        io.sent
            .iter()
            .any(|m| m.to == ["hyperty://d/h1/registration"])
    );
    assert_eq!(io.timer, Some(10_000));
    io.now = 9_000;
    r.on_message(
        &mut io,
        &msg("update", RT, json!({"resource": "hyperty://d/h1"})),
    );
    assert_eq!(last_code(&io), 200);
    assert_eq!(io.timer, Some(19_000));
    r.on_message(
        &mut io,
        &msg(
            "update",
            "hyperty-runtime://d/rt2",
            json!({"resource": "hyperty://d/h1"}),
        ),
    );
    assert_eq!(last_code(&io), 403);
    io.now = 19_000;
    io.sent.clear();
    r.on_timer(&mut io);
    assert_eq!(r.len(), 0);
    assert!(io.kv.is_empty());
    let notice = io
        .sent
        .iter()
        .find(|m| m.kind == "update")
        .expect("expired notice");
    assert_eq!(notice.body_value()["value"], "expired");
    assert!(io.sent.iter().any(|m| m.kind == "unsubscribe"));
}

#[test]
fn bounded_and_refusing_strangers() {
    let mut io = Recorder::default();
    let mut r = Registry::new(settings(), Vec::new(), &mut io);
    for (i, want) in [(1, 200), (2, 200), (3, 413)] {
        let v = json!({"value": {"url": format!("comm://d/o{i}")}});
        r.on_message(&mut io, &msg("create", RT, v));
        assert_eq!(last_code(&io), want);
    }
    r.on_message(
        &mut io,
        &msg(
            "create",
            "hyperty://d/h",
            json!({"value": {"url": "comm://d/x"}}),
        ),
    );
    assert_eq!(last_code(&io), 403);
    r.on_message(&mut io, &msg("execute", RT, json!({})));
    assert_eq!(last_code(&io), 400);
}

#[test]
fn the_answer_to_a_status_subscription_sets_the_status() {
    let mut io = Recorder::default();
    let mut r = Registry::new(settings(), Vec::new(), &mut io);
    let create = json!({"value": {"hypertyURL": "hyperty://d/h1", "user": "user://i/a"}});
    r.on_message(&mut io, &msg("create", RT, create));
    assert_eq!(last_code(&io), 200);
    io.sent.clear();
    let answer = |status: &str| Msg {
        id: "9".into(),
        kind: "response".into(),
        from: "domain://msg-node.d/sm".into(),
        to: vec!["domain://registry.d".into()],
        body: Some(
            json!({"code": 200, "value": {"resources": ["hyperty-runtime://d/rt1/status"],
                "status": {"hyperty-runtime://d/rt1": status}}})
            .to_string(),
        ),
        extra: None,
    };
    r.on_message(&mut io, &answer("disconnected"));
    let notice = io
        .sent
        .iter()
        .find(|m| m.to == ["hyperty://d/h1/registration"])
        .expect("a status notice");
    assert_eq!(notice.body_value()["value"], "disconnected");
    let stored: Value = serde_json::from_slice(&io.kv["reg/hyperty://d/h1"]).expect("stored");
    assert_eq!(stored["status"], "disconnected");
    // The same status again changes nothing; `expired` removes the registration.
    io.sent.clear();
    r.on_message(&mut io, &answer("disconnected"));
    assert!(io.sent.is_empty());
    r.on_message(&mut io, &answer("expired"));
    assert_eq!(r.len(), 0);
}

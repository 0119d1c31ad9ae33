//! The session driven through a recording [`Io`]: what it writes to the socket, hands to the
//! bus, stores and schedules, for each event the host would deliver.

use std::collections::BTreeMap;

use super::*;
use crate::io::Failure;

#[derive(Debug, Default)]
struct Rec {
    sockets: u64,
    /// (socket, text) written.
    ws: Vec<(u64, String)>,
    bus: Vec<Msg>,
    /// A code the bus refuses with, while set.
    bus_refuses: Option<u16>,
    kv: BTreeMap<String, Vec<u8>>,
    timers: BTreeMap<u64, u64>,
    closed: Vec<u64>,
}

impl Io for Rec {
    fn bus_send(&mut self, message: &Msg) -> Result<(), Failure> {
        if let Some(code) = self.bus_refuses {
            return Err(Failure {
                code,
                description: "refused".into(),
            });
        }
        self.bus.push(message.clone());
        Ok(())
    }
    fn ws_open(&mut self, _url: &str) -> Result<u64, Failure> {
        self.sockets += 1;
        Ok(self.sockets)
    }
    fn ws_send(&mut self, socket: u64, text: &str) -> Result<(), Failure> {
        self.ws.push((socket, text.to_owned()));
        Ok(())
    }
    fn ws_close(&mut self, socket: u64, _code: u16, _reason: &str) {
        self.closed.push(socket);
    }
    fn set_timer(&mut self, timer: Timer, delay_ms: u64) {
        self.timers.insert(timer as u64, delay_ms);
    }
    fn cancel_timer(&mut self, timer: Timer) {
        self.timers.remove(&(timer as u64));
    }
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key).cloned()
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Failure> {
        self.kv.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) {
        self.kv.remove(key);
    }
    fn monotonic_ms(&mut self) -> u64 {
        42
    }
    fn log(&mut self, _level: Level, _message: &str) {}
}

impl Rec {
    /// The written frames, parsed, and forgets them.
    fn take_ws(&mut self) -> Vec<Value> {
        self.ws
            .drain(..)
            .map(|(_, t)| serde_json::from_str(&t).expect("JSON"))
            .collect()
    }
}

fn cfg(extra: &[(&str, &str)]) -> Config {
    let mut entries: BTreeMap<String, String> = [
        ("url", "ws://127.0.0.1:1/ws"),
        ("runtime", "hyperty-runtime://d/rt"),
        ("ack_every", "3"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    entries.insert(
        "stub".into(),
        "hyperty-runtime://d/rt/protostub/default".into(),
    );
    Config::from_entries(&entries).expect("config")
}

fn frame(seq: u64, id: u64, kind: &str) -> String {
    format!(
        r#"{{"id":{id},"type":"{kind}","from":"hyperty://d/peer","to":"hyperty://d/me","body":{{"n":{id}}},"seq":{seq}}}"#
    )
}

fn bus_msg(id: u64) -> Msg {
    Msg::parse(&format!(
        r#"{{"id":{id},"type":"create","from":"hyperty://d/me","to":"hyperty://d/peer","body":{{}}}}"#
    ))
    .expect("msg")
}

/// Connects and answers the handshake with 200 (seq `seq`); returns the handshake sent.
fn open(s: &mut Session, io: &mut Rec, seq: u64) -> Value {
    s.connect(io);
    let socket = io.sockets;
    s.on_opened(io, socket);
    let sent = io.take_ws().pop().expect("handshake");
    let answer = format!(
        r#"{{"id":{},"type":"response","from":"mn:/session","to":"hyperty-runtime://d/rt","body":{{"code":200,"value":{{"runtimeToken":"tok"}}}},"seq":{seq}}}"#,
        sent["id"]
    );
    s.on_text(io, socket, &answer);
    sent
}

#[test]
fn opens_forwards_both_ways_and_acks_in_batches() {
    let mut io = Rec::default();
    let mut s = Session::new(cfg(&[("token", "secret")]), &mut io);
    let hello = open(&mut s, &mut io, 1);
    assert_eq!(hello["type"], "open");
    assert_eq!(hello["body"]["token"], "secret");
    // Frames 2 and 3: to the bus without seq, with via; the third frame (with the answer to
    // open, ack_every = 3) is acknowledged at once, after the position is saved.
    s.on_text(&mut io, 1, &frame(2, 10, "create"));
    assert!(io.take_ws().is_empty(), "no ack before ack_every frames");
    assert!(io.timers.contains_key(&(Timer::Ack as u64)));
    s.on_text(&mut io, 1, &frame(3, 11, "create"));
    let ack = io.take_ws();
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0]["type"], "ack");
    assert_eq!(ack[0]["body"]["seq"], 3);
    let saved: Value = serde_json::from_slice(&io.kv[SAVED_KEY]).expect("saved");
    assert_eq!(saved["lastSeq"], 3);
    assert_eq!(saved["runtimeToken"], "tok");
    assert_eq!(io.bus.len(), 2);
    assert_eq!(io.bus[0].extra, None, "seq is not forwarded");
    assert_eq!(
        io.bus[0].body.as_deref(),
        Some(r#"{"via":"hyperty-runtime://d/rt/protostub/default","n":10}"#)
    );
    // Bus to node.
    s.on_message(&mut io, bus_msg(7));
    assert_eq!(io.take_ws()[0]["id"], 7);
}

#[test]
fn a_lost_connection_resumes_and_replays_what_was_not_confirmed() {
    let mut io = Rec::default();
    let mut s = Session::new(cfg(&[]), &mut io);
    open(&mut s, &mut io, 1);
    s.on_text(&mut io, 1, &frame(2, 10, "create"));
    s.on_message(&mut io, bus_msg(7)); // written, never answered
    s.on_message(&mut io, bus_msg(8)); // written, answered below
    s.on_message(&mut io, bus_msg(9)); // written after 8, not answered
    io.take_ws();
    let answer8 = r#"{"id":8,"type":"response","from":"hyperty://d/peer","to":"hyperty://d/me","body":{"code":200},"seq":3}"#;
    s.on_text(&mut io, 1, answer8);
    assert_eq!(
        io.take_ws()[0]["body"]["seq"],
        3,
        "the third frame is acknowledged"
    );
    s.on_closed(&mut io, 1, 1006, "");
    // Disconnected: a new message waits; a reconnect is scheduled.
    s.on_message(&mut io, bus_msg(10));
    assert!(io.take_ws().is_empty());
    assert!(io.timers.contains_key(&(Timer::Reconnect as u64)));
    s.on_timer(&mut io, Timer::Reconnect);
    s.on_opened(&mut io, 2);
    let reopen = io.take_ws().pop().expect("re-open");
    assert_eq!(reopen["type"], "re-open");
    assert_eq!(reopen["body"]["runtimeToken"], "tok");
    assert_eq!(reopen["body"]["lastSeq"], 3);
    // The node replays frame 3 (already delivered: dropped) and 4, then answers.
    s.on_text(&mut io, 2, answer8);
    s.on_text(&mut io, 2, &frame(4, 12, "update"));
    let ok = format!(
        r#"{{"id":{},"type":"response","from":"mn:/session","to":"hyperty-runtime://d/rt","body":{{"code":200,"value":{{"resumed":true}}}},"seq":5}}"#,
        reopen["id"]
    );
    s.on_text(&mut io, 2, &ok);
    let ids: Vec<Value> = io
        .take_ws()
        .into_iter()
        .filter(|f| f["type"] != "ack")
        .map(|f| f["id"].clone())
        .collect();
    // 9 was not confirmed (only 7 and 8 were, by the answer to 8), then the queued 10.
    assert_eq!(ids, vec![json!(9), json!(10)]);
    let bus_ids: Vec<&str> = io.bus.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        bus_ids,
        vec!["10", "8", "12"],
        "no duplicate of the replayed frame"
    );
}

#[test]
fn a_refused_reopen_opens_a_new_session_and_a_full_queue_answers_503() {
    let mut io = Rec::default();
    io.kv.insert(
        SAVED_KEY.into(),
        br#"{"url":"ws://127.0.0.1:1/ws","runtime":"hyperty-runtime://d/rt","runtimeToken":"old","lastSeq":9}"#.to_vec(),
    );
    let mut s = Session::new(cfg(&[("queue_max", "2")]), &mut io);
    s.connect(&mut io);
    for id in 1..=3 {
        s.on_message(&mut io, bus_msg(id));
    }
    assert_eq!(io.bus.len(), 1);
    assert_eq!(io.bus[0].kind, "response");
    assert_eq!(io.bus[0].body_value()["code"], 503);
    assert_eq!(io.bus[0].to, vec!["hyperty://d/me"]);
    s.on_opened(&mut io, 1);
    let reopen = io.take_ws().pop().expect("re-open");
    assert_eq!(reopen["body"]["lastSeq"], 9);
    let refused = format!(
        r#"{{"id":{},"type":"response","from":"mn:/session","to":"hyperty-runtime://d/rt","body":{{"code":404,"description":"expired"}},"seq":0}}"#,
        reopen["id"]
    );
    s.on_text(&mut io, 1, &refused);
    assert!(!io.kv.contains_key(SAVED_KEY));
    let fresh = io.take_ws().pop().expect("open");
    assert_eq!(fresh["type"], "open");
}

#[test]
fn loops_are_dropped_and_a_busy_bus_holds_the_ack() {
    let mut io = Rec::default();
    let mut s = Session::new(cfg(&[]), &mut io);
    open(&mut s, &mut io, 1);
    let mut looped = bus_msg(5);
    looped.body = Some(r#"{"via":"hyperty-runtime://d/rt/protostub/default"}"#.into());
    s.on_message(&mut io, looped);
    assert!(
        io.take_ws().is_empty(),
        "a message that came through this stub is dropped"
    );
    io.bus_refuses = Some(503);
    for seq in 2..=4 {
        s.on_text(&mut io, 1, &frame(seq, seq, "create"));
    }
    assert!(
        io.take_ws().is_empty(),
        "nothing acknowledged while the bus refuses"
    );
    io.bus_refuses = None;
    s.on_timer(&mut io, Timer::Retry);
    let ids: Vec<&str> = io.bus.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, vec!["2", "3", "4"]);
    let ack = io.take_ws().pop().expect("ack");
    assert_eq!(ack["body"]["seq"], 4);
}

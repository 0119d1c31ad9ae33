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
    now: u64,
}

impl Io for Rec {
    fn bus_send(&mut self, message: Msg) -> Result<(), (Failure, Msg)> {
        if let Some(code) = self.bus_refuses {
            return Err((
                Failure {
                    code,
                    description: "refused".into(),
                },
                message,
            ));
        }
        self.bus.push(message);
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
    fn kv_keys(&mut self, prefix: &str, limit: u32) -> Vec<String> {
        self.kv
            .keys()
            .filter(|k| k.starts_with(prefix))
            .take(limit as usize)
            .cloned()
            .collect()
    }
    fn monotonic_ms(&mut self) -> u64 {
        42
    }
    fn now_ms(&mut self) -> u64 {
        self.now
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

/// The answer of the node to `sync` `id`: it has handled every `cseq` up to `cseq`.
fn synced(id: &Value, cseq: u64, seq: u64) -> String {
    format!(
        r#"{{"id":{id},"type":"response","from":"mn:/session","to":"hyperty-runtime://d/rt","body":{{"code":200,"value":{{"cseq":{cseq}}}}},"seq":{seq}}}"#
    )
}

fn stored(io: &Rec) -> Vec<String> {
    io.kv
        .keys()
        .filter(|k| k.starts_with("out/"))
        .cloned()
        .collect()
}

#[test]
fn a_lost_connection_resumes_and_replays_what_was_not_confirmed() {
    let mut io = Rec::default();
    let mut s = Session::new(cfg(&[]), &mut io);
    open(&mut s, &mut io, 1);
    s.on_text(&mut io, 1, &frame(2, 10, "create"));
    s.on_message(&mut io, bus_msg(7)); // written, then a sync
    s.on_message(&mut io, bus_msg(8)); // written (the sync is on its way)
    s.on_message(&mut io, bus_msg(9)); // written after the node's count below
    let sent = io.take_ws();
    let kinds: Vec<&str> = sent
        .iter()
        .map(|f| f["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, vec!["create", "sync", "create", "create"]);
    let cseqs: Vec<&Value> = sent.iter().map(|f| &f["cseq"]).collect();
    assert_eq!(cseqs, vec![&json!(1), &Value::Null, &json!(2), &json!(3)]);
    assert_eq!(
        stored(&io).len(),
        3,
        "each message stored before it is written"
    );
    // The node had handled 7 and 8 when it answered the sync.
    s.on_text(&mut io, 1, &synced(&sent[1]["id"], 2, 3));
    let after = io.take_ws();
    assert_eq!(after[0]["type"], "sync", "9 still waits: another sync");
    assert_eq!(
        after[1]["body"]["seq"], 3,
        "the third frame is acknowledged"
    );
    assert_eq!(stored(&io), vec![format!("out/{:016x}", 3)]);
    let saved: Value = serde_json::from_slice(&io.kv[SAVED_KEY]).expect("saved");
    assert_eq!(saved["cseq"], 2);
    s.on_closed(&mut io, 1, 1006, "");
    // Disconnected: a new message waits (stored); a reconnect is scheduled.
    s.on_message(&mut io, bus_msg(10));
    assert!(io.take_ws().is_empty());
    assert_eq!(stored(&io).len(), 2);
    assert!(io.timers.contains_key(&(Timer::Reconnect as u64)));
    s.on_timer(&mut io, Timer::Reconnect);
    s.on_opened(&mut io, 2);
    let reopen = io.take_ws().pop().expect("re-open");
    assert_eq!(reopen["type"], "re-open");
    assert_eq!(reopen["body"]["runtimeToken"], "tok");
    assert_eq!(reopen["body"]["lastSeq"], 3);
    // The node replays frame 3 (already delivered: dropped) and 4, then answers: it had
    // handled nothing more than 2.
    s.on_text(&mut io, 2, &synced(&sent[1]["id"], 2, 3));
    s.on_text(&mut io, 2, &frame(4, 12, "update"));
    let ok = format!(
        r#"{{"id":{},"type":"response","from":"mn:/session","to":"hyperty-runtime://d/rt","body":{{"code":200,"value":{{"resumed":true,"cseq":2}}}},"seq":5}}"#,
        reopen["id"]
    );
    s.on_text(&mut io, 2, &ok);
    let resent: Vec<(Value, Value)> = io
        .take_ws()
        .into_iter()
        .filter(|f| f["type"] != "ack" && f["type"] != "sync")
        .map(|f| (f["id"].clone(), f["cseq"].clone()))
        .collect();
    // 9 was not confirmed, then the queued 10, with the numbers they were stored with.
    assert_eq!(resent, vec![(json!(9), json!(3)), (json!(10), json!(4))]);
    let bus_ids: Vec<&str> = io.bus.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        bus_ids,
        vec!["10", "12"],
        "no duplicate of the replayed frame"
    );
}

#[test]
fn a_restarted_instance_sends_what_it_stored_once_and_skips_host_replays() {
    let mut io = Rec::default();
    let mut s = Session::new(cfg(&[]), &mut io);
    open(&mut s, &mut io, 1);
    for (id, g) in [(7, 100), (8, 101), (9, 102)] {
        let mut m = bus_msg(id);
        m.extra = Some(format!(r#"{{"gseq":{g}}}"#));
        s.on_message(&mut io, m);
    }
    let sent = io.take_ws();
    assert_eq!(sent[0]["gseq"], Value::Null, "gseq stays with the host");
    let record: Value = serde_json::from_slice(&io.kv[&format!("out/{:016x}", 3)]).expect("record");
    assert_eq!(
        record["g"], 102,
        "the record says the host may drop up to 102"
    );
    s.on_text(&mut io, 1, &synced(&sent[1]["id"], 1, 2));
    // The instance traps: a new one starts from the kv store alone.
    drop(s);
    io.ws.clear();
    let mut s = Session::new(cfg(&[]), &mut io);
    let hs = open(&mut s, &mut io, 3);
    assert_eq!(hs["type"], "re-open");
    // The host replays 101 and 102 (it had not learnt we hold them): not taken again.
    for (id, g) in [(8, 101), (9, 102), (11, 103)] {
        let mut m = bus_msg(id);
        m.extra = Some(format!(r#"{{"gseq":{g}}}"#));
        s.on_message(&mut io, m);
    }
    let resent: Vec<(Value, Value)> = io
        .take_ws()
        .into_iter()
        .filter(|f| f["type"] == "create")
        .map(|f| (f["id"].clone(), f["cseq"].clone()))
        .collect();
    // The answer to open had no cseq: 8 and 9 are sent again (the node drops what it has),
    // then 11; the replays of 8 and 9 by the host are not.
    assert_eq!(
        resent,
        vec![
            (json!(8), json!(2)),
            (json!(9), json!(3)),
            (json!(11), json!(4))
        ]
    );
    let saved: Value = serde_json::from_slice(&io.kv[SAVED_KEY]).expect("saved");
    assert_eq!(saved["g"], 102, "a replay announces what is held");
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
    let saved: Value = serde_json::from_slice(&io.kv[SAVED_KEY]).expect("saved");
    assert_eq!(
        saved["runtimeToken"],
        Value::Null,
        "the old session is forgotten"
    );
    let fresh = io.take_ws().pop().expect("open");
    assert_eq!(fresh["type"], "open");
}

#[test]
fn a_reopen_refused_for_its_credential_keeps_the_session_for_the_next_one() {
    let mut io = Rec::default();
    io.kv.insert(
        SAVED_KEY.into(),
        br#"{"url":"ws://127.0.0.1:1/ws","runtime":"hyperty-runtime://d/rt","runtimeToken":"old","lastSeq":9}"#.to_vec(),
    );
    let mut s = Session::new(cfg(&[]), &mut io);
    s.connect(&mut io);
    s.on_opened(&mut io, 1);
    let reopen = io.take_ws().pop().expect("re-open");
    let refused = format!(
        r#"{{"id":{},"type":"response","from":"mn:/session","to":"hyperty-runtime://d/rt","body":{{"code":401,"description":"invalid token"}},"seq":0}}"#,
        reopen["id"]
    );
    s.on_text(&mut io, 1, &refused);
    assert!(io.take_ws().is_empty(), "no new open on that socket");
    let saved: Value = serde_json::from_slice(&io.kv[SAVED_KEY]).expect("saved");
    assert_eq!(saved["runtimeToken"], "old", "the session is kept");
    // The next connection (a restarted instance has a new credential) re-opens it.
    s.on_timer(&mut io, Timer::Reconnect);
    s.on_opened(&mut io, 2);
    let again = io.take_ws().pop().expect("re-open");
    assert_eq!(again["type"], "re-open");
    assert_eq!(again["body"]["runtimeToken"], "old");
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

#[test]
fn close_on_request_ends_the_session_and_forgets_it() {
    let mut io = Rec::default();
    let mut s = Session::new(cfg(&[]), &mut io);
    open(&mut s, &mut io, 1);
    s.on_text(&mut io, 1, &frame(2, 10, "create"));
    s.on_message(&mut io, bus_msg(7)); // written, unconfirmed: answered 503 by the close
    io.take_ws();
    io.bus.clear();
    let close =
        Msg::parse(r#"{"id":99,"type":"close","from":"hyperty://d/me","to":"mn:/session"}"#)
            .expect("close");
    s.on_message(&mut io, close);
    let sent = io.take_ws();
    assert_eq!(sent.len(), 2, "the last ack, then close: {sent:?}");
    assert_eq!(sent[0]["type"], "ack");
    assert_eq!(sent[1]["type"], "close");
    let saved: Value = serde_json::from_slice(&io.kv[SAVED_KEY]).expect("saved");
    assert_eq!(
        saved["runtimeToken"],
        Value::Null,
        "the session is forgotten"
    );
    assert!(stored(&io).is_empty(), "answered messages are not kept");
    let answers: Vec<(String, Value)> = io
        .bus
        .iter()
        .map(|m| (m.id.clone(), m.body_value()["code"].clone()))
        .collect();
    assert_eq!(
        answers,
        vec![("7".into(), json!(503)), ("99".into(), json!(200))]
    );
    // The node closes the socket; a later message opens a new session.
    s.on_closed(&mut io, 1, 1000, "closed");
    assert!(
        !io.timers.contains_key(&(Timer::Reconnect as u64)),
        "no reconnect after close"
    );
    s.on_message(&mut io, bus_msg(8));
    s.on_opened(&mut io, 2);
    assert_eq!(io.take_ws()[0]["type"], "open");
}

#[test]
fn queued_messages_past_the_delivery_timeout_are_answered_504_in_order() {
    let mut io = Rec {
        now: 1_000_000,
        ..Rec::default()
    };
    let mut s = Session::new(
        cfg(&[("deliver_timeout_ms", "5000"), ("domain", "b.test")]),
        &mut io,
    );
    s.connect(&mut io); // never opened: the node is down
    s.on_message(&mut io, bus_msg(1));
    io.now += 2_000;
    s.on_message(&mut io, bus_msg(2));
    assert_eq!(
        io.timers.get(&(Timer::Expire as u64)),
        Some(&5_000),
        "due with the oldest"
    );
    io.now += 3_000;
    s.on_timer(&mut io, Timer::Expire);
    let answers: Vec<(String, Value)> = io
        .bus
        .iter()
        .map(|m| (m.id.clone(), m.body_value().clone()))
        .collect();
    assert_eq!(answers.len(), 1, "only the first is due: {answers:?}");
    assert_eq!(answers[0].0, "1");
    assert_eq!(answers[0].1["code"], 504);
    assert_eq!(
        answers[0].1["description"],
        "no delivery to b.test within 5 s"
    );
    assert_eq!(stored(&io).len(), 1, "the answered one is forgotten");
    assert_eq!(io.timers.get(&(Timer::Expire as u64)), Some(&2_000));
}

#[test]
fn a_message_written_before_a_lost_connection_is_answered_504_too_once_due() {
    let mut io = Rec {
        now: 1_000_000,
        ..Rec::default()
    };
    let mut s = Session::new(cfg(&[("deliver_timeout_ms", "5000")]), &mut io);
    open(&mut s, &mut io, 1);
    s.on_message(&mut io, bus_msg(1)); // written: the node may have handled it
    assert_eq!(
        io.timers.get(&(Timer::Expire as u64)),
        Some(&5_000),
        "a written message is due too"
    );
    s.on_closed(&mut io, 1, 1006, "");
    io.now += 1_000;
    s.on_message(&mut io, bus_msg(2)); // never written
    io.now += 4_000;
    s.on_timer(&mut io, Timer::Expire);
    let answered: Vec<&str> = io.bus.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(answered, vec!["1"], "the re-open was never answered");
    assert_eq!(io.bus[0].body_value()["code"], 504);
    io.now += 1_000;
    s.on_timer(&mut io, Timer::Expire);
    let answered: Vec<&str> = io.bus.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(answered, vec!["1", "2"]);
    assert!(stored(&io).is_empty(), "both forgotten");
    // Not written again when the node is back.
    s.on_timer(&mut io, Timer::Reconnect);
    s.on_opened(&mut io, 2);
    let reopen = io.take_ws().pop().expect("re-open");
    let answer = format!(
        r#"{{"id":{},"type":"response","from":"mn:/session","to":"hyperty-runtime://d/rt","body":{{"code":200,"value":{{"cseq":0}}}},"seq":1}}"#,
        reopen["id"]
    );
    s.on_text(&mut io, 2, &answer);
    let sent: Vec<Value> = io.take_ws();
    assert!(
        sent.iter().all(|f| f["to"] == "mn:/session"),
        "nothing but control: {sent:?}"
    );
}

#[test]
fn a_queue_over_its_bytes_answers_503_and_takes_again_once_confirmed() {
    let mut io = Rec::default();
    let one = bus_msg(7).to_json().len() + r#","cseq":"1""#.len();
    // Room for two messages, not three.
    let bytes = (2 * one + one / 2).to_string();
    let mut s = Session::new(cfg(&[("queue_max_bytes", &bytes)]), &mut io);
    open(&mut s, &mut io, 1);
    for id in 7..=9 {
        s.on_message(&mut io, bus_msg(id));
    }
    let refused: Vec<(Value, Value)> = io
        .bus
        .drain(..)
        .map(|m| (json!(m.kind), m.body_value()["code"].clone()))
        .collect();
    assert_eq!(refused, vec![(json!("response"), json!(503))], "9 is refused");
    let sent = io.take_ws();
    assert_eq!(sent[1]["type"], "sync");
    // The node handled 7 and 8: their bytes are free again.
    s.on_text(&mut io, 1, &synced(&sent[1]["id"], 2, 2));
    s.on_message(&mut io, bus_msg(10));
    assert!(io.bus.is_empty(), "10 is taken: {:?}", io.bus);
    let written: Vec<Value> = io
        .take_ws()
        .into_iter()
        .filter(|f| f["type"] == "create")
        .map(|f| f["id"].clone())
        .collect();
    assert_eq!(written, vec![json!(10)]);
}

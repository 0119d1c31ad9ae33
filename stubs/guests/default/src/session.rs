//! The client side of the node's session protocol: one connection at a time, `open` or
//! `re-open`, frames from the node to the bus with cumulative batched acks, bus messages to the
//! node with a bounded queue while disconnected, reconnection with backoff and jitter. What is
//! kept, and what "without loss" covers, is in the crate docs.

use std::collections::VecDeque;

use rethink_guest_envelope::Msg;
use serde_json::{Value, json};

use crate::config::Config;
use crate::frames::{self, SESSION};
use crate::io::{Io, Level, Timer};
use crate::store::{self, Out, SAVED_KEY};

/// Where the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Conn {
    /// No socket; the reconnect timer is set (unless nothing is to be done).
    Idle,
    /// `ws-open` asked for; waiting for `ws-opened`.
    Connecting { socket: u64 },
    /// `open` or `re-open` sent with id `id`; waiting for its answer.
    Handshake {
        socket: u64,
        id: String,
        resume: bool,
    },
    /// The session is attached to this socket.
    Open { socket: u64 },
    /// `close` sent on request; waiting for the node to close the socket.
    Closing { socket: u64 },
    /// Closed on request: the next message from the bus opens a new session.
    Closed,
}

impl Conn {
    fn socket(&self) -> Option<u64> {
        match *self {
            Conn::Connecting { socket }
            | Conn::Handshake { socket, .. }
            | Conn::Open { socket }
            | Conn::Closing { socket } => Some(socket),
            Conn::Idle | Conn::Closed => None,
        }
    }
}

/// A frame from the node the bus has not taken yet (it answered 503 or 429).
#[derive(Debug)]
struct Pending {
    /// Its `seq` in the current session (0 when it belongs to an ended session).
    seq: u64,
    msg: Msg,
}

/// The stub's state between calls.
#[derive(Debug)]
pub(crate) struct Session {
    cfg: Config,
    conn: Conn,
    /// The node's `runtimeToken` for our session, if we have one.
    token: Option<String>,
    /// The highest `seq` received (handed to the bus, or waiting in `inbound`).
    received: u64,
    /// Every frame up to this `seq` has been handed to the bus (or dropped as undeliverable).
    delivered: u64,
    /// The last `seq` acknowledged to the node (and saved in the kv store).
    acked: u64,
    /// Frames handed to the bus since the last ack.
    unacked_frames: u64,
    ack_timer: bool,
    retry_timer: bool,
    /// Frames from the node waiting for the bus, in order.
    inbound: VecDeque<Pending>,
    /// Bus messages not yet written to the node, in order (each stored in the kv store).
    queue: VecDeque<Out>,
    /// Bus messages written to the socket that the node has not yet confirmed handled.
    unconfirmed: VecDeque<Out>,
    /// The bytes of the texts in `queue` and `unconfirmed` (bounded by `queue_max_bytes`).
    queued_bytes: usize,
    /// The last `cseq` given to a message.
    last_cseq: u64,
    /// The highest `cseq` the node confirmed handled (its stored message is gone).
    confirmed: u64,
    /// The highest host queue position (`gseq`) taken (`store.rs`).
    g_max: u64,
    /// The id of the `sync` waiting for its answer.
    sync_id: Option<String>,
    expiry_timer: bool,
    backoff_ms: u64,
    rng: u64,
    next_id: u64,
}

impl Session {
    /// A session with `cfg`, resuming the one saved in the kv store if it was for the same
    /// node and runtime, with the stored messages for the node queued again.
    pub(crate) fn new(cfg: Config, io: &mut dyn Io) -> Self {
        let saved = io
            .kv_get(SAVED_KEY)
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        let confirmed = saved.as_ref().and_then(|v| v["cseq"].as_u64()).unwrap_or(0);
        let (stored, stored_g) = store::load(io, cfg.queue_max);
        let g_max = saved
            .as_ref()
            .and_then(|v| v["g"].as_u64())
            .unwrap_or(0)
            .max(stored_g);
        let mut queue = VecDeque::with_capacity(stored.len());
        for out in stored {
            if out.cseq <= confirmed {
                store::remove(io, out.cseq);
            } else {
                queue.push_back(out);
            }
        }
        let last_cseq = queue.back().map_or(confirmed, |o| o.cseq.max(confirmed));
        let queued_bytes = queue.iter().map(|o| o.text.len()).sum();
        if !queue.is_empty() {
            io.log(
                Level::Info,
                &format!("{} stored messages for the node queued again", queue.len()),
            );
        }
        let (token, last_seq) = saved
            .filter(|v| v["url"] == cfg.url.as_str() && v["runtime"] == cfg.runtime.as_str())
            .and_then(|v| {
                Some((
                    v["runtimeToken"].as_str()?.to_owned(),
                    v["lastSeq"].as_u64()?,
                ))
            })
            .map_or((None, 0), |(t, s)| (Some(t), s));
        let seed = io.monotonic_ms()
            ^ cfg.runtime.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        Self {
            backoff_ms: cfg.backoff_min_ms,
            cfg,
            conn: Conn::Idle,
            token,
            received: last_seq,
            delivered: last_seq,
            acked: last_seq,
            unacked_frames: 0,
            ack_timer: false,
            retry_timer: false,
            inbound: VecDeque::new(),
            queue,
            unconfirmed: VecDeque::new(),
            queued_bytes,
            last_cseq,
            confirmed,
            g_max,
            sync_id: None,
            expiry_timer: false,
            rng: seed | 1,
            next_id: 0,
        }
    }

    /// Opens the WebSocket to the node.
    pub(crate) fn connect(&mut self, io: &mut dyn Io) {
        self.arm_expiry(io);
        match io.ws_open(&self.cfg.url) {
            Ok(socket) => {
                self.conn = Conn::Connecting { socket };
                io.set_timer(Timer::Handshake, self.cfg.handshake_timeout_ms);
            }
            Err(f) => {
                io.log(
                    Level::Error,
                    &format!(
                        "ws-open {} refused: {} {}",
                        self.cfg.url, f.code, f.description
                    ),
                );
                self.conn = Conn::Idle;
                self.schedule_reconnect(io);
            }
        }
    }

    /// The socket is open: `re-open` when there is a session to resume, else `open`.
    pub(crate) fn on_opened(&mut self, io: &mut dyn Io, socket: u64) {
        if self.conn != (Conn::Connecting { socket }) {
            return;
        }
        self.handshake(io, socket);
    }

    fn handshake(&mut self, io: &mut dyn Io, socket: u64) {
        let id = self.control_id();
        let resume = self.token.is_some();
        let mut body = serde_json::Map::new();
        if let Some(token) = &self.token {
            body.insert("runtimeToken".into(), json!(token));
            // Frames received but still waiting for the bus are in memory: not asked again.
            body.insert("lastSeq".into(), json!(self.received));
        } else {
            // A new session numbers its frames afresh; frames still waiting for the bus
            // belong to the ended one (nothing to acknowledge for them).
            self.received = 0;
            self.delivered = 0;
            self.acked = 0;
            for p in &mut self.inbound {
                p.seq = 0;
            }
        }
        if let Some(token) = &self.cfg.token {
            body.insert("token".into(), json!(token));
        }
        let kind = if resume { "re-open" } else { "open" };
        let msg = frames::control(&id, kind, &self.cfg.runtime, Value::Object(body));
        self.conn = Conn::Handshake { socket, id, resume };
        if io.ws_send(socket, &msg.to_json()).is_err() {
            self.lost(io, socket);
        }
    }

    /// A text message from the node: one frame, or a batch (a JSON array).
    pub(crate) fn on_text(&mut self, io: &mut dyn Io, socket: u64, text: &str) {
        if self.conn.socket() != Some(socket) {
            return;
        }
        match frames::parse(text) {
            Ok(messages) => {
                for msg in messages {
                    self.on_frame(io, socket, msg);
                }
            }
            Err(e) => io.log(Level::Warn, &format!("unreadable frame from the node: {e}")),
        }
        self.schedule_ack(io);
    }

    fn on_frame(&mut self, io: &mut dyn Io, socket: u64, mut msg: Msg) {
        let seq = msg
            .take_extra("seq")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if seq != 0 {
            if seq <= self.received {
                return; // replayed: already handed to the bus, or waiting for it
            }
            self.received = seq;
        }
        if let Conn::Handshake { id, resume, .. } = &self.conn
            && msg.kind == "response"
            && msg.from == SESSION
            && msg.id == *id
        {
            let resume = *resume;
            self.on_handshake_answer(io, socket, seq, resume, &msg);
            return;
        }
        if msg.from == SESSION && msg.kind == "response" {
            let body = msg.body_value();
            if self.sync_id.as_deref() == Some(msg.id.as_str()) {
                self.sync_id = None;
                self.mark_delivered(seq);
                if let Some(cseq) = body["value"]["cseq"].as_u64() {
                    self.confirm_upto(io, cseq);
                }
                self.maybe_sync(io);
                return;
            }
            // The answer to `close`, or a refusal of one of our acks.
            let level = if body["code"] == 200 {
                Level::Debug
            } else {
                Level::Warn
            };
            io.log(level, &format!("from the session: {body}"));
            self.mark_delivered(seq);
            return;
        }
        frames::set_via(&mut msg, &self.cfg.stub);
        self.inbound.push_back(Pending { seq, msg });
        self.drain_inbound(io);
    }

    fn mark_delivered(&mut self, seq: u64) {
        if seq > self.delivered {
            self.delivered = seq;
            self.unacked_frames += 1;
        }
    }

    /// Hands the waiting frames to the bus, in order, until the bus asks to wait.
    fn drain_inbound(&mut self, io: &mut dyn Io) {
        while let Some(Pending { seq, msg }) = self.inbound.pop_front() {
            match io.bus_send(msg) {
                Ok(()) => {}
                Err((f, msg)) if f.code == 503 || f.code == 429 => {
                    self.inbound.push_front(Pending { seq, msg });
                    if !self.retry_timer {
                        self.retry_timer = true;
                        io.set_timer(Timer::Retry, self.cfg.backoff_min_ms);
                    }
                    return;
                }
                Err((f, msg)) => io.log(
                    Level::Warn,
                    &format!(
                        "dropped a message from the node the bus refused ({} {}): {} to {:?}",
                        f.code, f.description, msg.from, msg.to
                    ),
                ),
            }
            self.mark_delivered(seq);
        }
    }

    fn on_handshake_answer(
        &mut self,
        io: &mut dyn Io,
        socket: u64,
        seq: u64,
        resume: bool,
        msg: &Msg,
    ) {
        let body = msg.body_value();
        let code = body["code"].as_u64().unwrap_or(0);
        io.cancel_timer(Timer::Handshake);
        if code == 200 {
            if let Some(token) = body["value"]["runtimeToken"].as_str() {
                self.token = Some(token.to_owned());
            }
            self.mark_delivered(seq);
            self.conn = Conn::Open { socket };
            self.backoff_ms = self.cfg.backoff_min_ms;
            if let Some(cseq) = body["value"]["cseq"].as_u64() {
                // Handled before the connection was lost: not sent again.
                self.confirm_upto(io, cseq);
            }
            io.log(
                Level::Info,
                &format!(
                    "session {} at {}",
                    if resume { "resumed" } else { "opened" },
                    self.cfg.url
                ),
            );
            self.save(io, self.acked);
            self.flush_queue(io);
            self.maybe_sync(io);
            return;
        }
        let description = body["description"].as_str().unwrap_or("").to_owned();
        let transient = matches!(code, 429 | 500 | 502 | 503 | 504);
        // 401: our credential was refused (an expired node proof, say), not the session: it is
        // kept for the credential the host gives next (a restart of the instance with a new
        // `token`), and tried again meanwhile with the backoff. A session opened by another
        // identity is not ours to keep.
        let credential = code == 401 && !description.contains("another identity");
        if resume && credential {
            io.log(
                Level::Warn,
                &format!("re-open refused ({code} {description}): the session is kept for a new credential"),
            );
            io.ws_close(socket, 1000, "credential refused");
            self.lost(io, socket);
            return;
        }
        if resume && !transient {
            // The session is gone (expired, closed, or refused to this identity): a new one.
            io.log(
                Level::Warn,
                &format!("re-open refused ({code} {description}): opening a new session"),
            );
            self.token = None;
            self.save(io, 0);
            self.handshake(io, socket);
            return;
        }
        io.log(
            Level::Error,
            &format!(
                "{} refused: {code} {description}",
                if resume { "re-open" } else { "open" }
            ),
        );
        io.ws_close(socket, 1000, "session refused");
        self.lost(io, socket);
    }

    /// The socket is closed (or the handshake timed out): everything written but not known
    /// to be read goes back to the front of the queue, and a reconnection is scheduled.
    pub(crate) fn on_closed(&mut self, io: &mut dyn Io, socket: u64, code: u16, reason: &str) {
        if self.conn.socket() != Some(socket) {
            return;
        }
        io.log(Level::Info, &format!("connection closed: {code} {reason}"));
        self.lost(io, socket);
    }

    fn lost(&mut self, io: &mut dyn Io, socket: u64) {
        io.cancel_timer(Timer::Handshake);
        self.sync_id = None;
        while let Some(m) = self.unconfirmed.pop_back() {
            self.queue.push_front(m);
        }
        self.arm_expiry(io);
        if self.conn == (Conn::Closing { socket }) {
            self.conn = Conn::Closed;
            if !self.queue.is_empty() {
                // Messages that came while the session was closing: a new session.
                self.connect(io);
            }
            return;
        }
        self.conn = Conn::Idle;
        self.schedule_reconnect(io);
    }

    fn schedule_reconnect(&mut self, io: &mut dyn Io) {
        let d = self.backoff_ms;
        self.backoff_ms = d.saturating_mul(2).min(self.cfg.backoff_max_ms);
        // Full jitter over the upper half: [d/2, d].
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let delay = d / 2 + self.rng % (d / 2 + 1);
        io.set_timer(Timer::Reconnect, delay);
    }

    fn schedule_ack(&mut self, io: &mut dyn Io) {
        if self.unacked_frames >= self.cfg.ack_every {
            self.send_ack(io);
        } else if self.delivered > self.acked && !self.ack_timer {
            self.ack_timer = true;
            io.set_timer(Timer::Ack, self.cfg.ack_delay_ms);
        }
    }

    /// Acknowledges every frame handed to the bus, after saving the position.
    fn send_ack(&mut self, io: &mut dyn Io) {
        let Conn::Open { socket } = self.conn else {
            return;
        };
        if self.delivered <= self.acked {
            return;
        }
        self.save(io, self.delivered);
        let id = self.control_id();
        let ack = frames::control(
            &id,
            "ack",
            &self.cfg.runtime,
            json!({ "seq": self.delivered }),
        );
        if io.ws_send(socket, &ack.to_json()).is_ok() {
            self.acked = self.delivered;
            self.unacked_frames = 0;
            if self.ack_timer {
                self.ack_timer = false;
                io.cancel_timer(Timer::Ack);
            }
        }
    }

    /// Saves the session (token and `lastSeq`, the confirmed `cseq` and the highest host
    /// queue position taken) so that a restarted instance resumes it.
    fn save(&self, io: &mut dyn Io, last_seq: u64) {
        let saved = json!({
            "url": self.cfg.url,
            "runtime": self.cfg.runtime,
            "runtimeToken": self.token,
            "lastSeq": last_seq,
            "cseq": self.confirmed,
            "g": self.g_max,
        });
        if let Err(f) = io.kv_set(SAVED_KEY, saved.to_string().as_bytes()) {
            io.log(
                Level::Warn,
                &format!("saving the session failed: {} {}", f.code, f.description),
            );
        }
    }

    /// Ends the session on request: `close` to the node, queued messages answered 503.
    fn close(&mut self, io: &mut dyn Io) {
        self.send_ack(io);
        match self.conn.clone() {
            Conn::Open { socket } | Conn::Handshake { socket, .. } => {
                let id = self.control_id();
                let close = frames::control(&id, "close", &self.cfg.runtime, json!({}));
                let _ = io.ws_send(socket, &close.to_json());
                self.conn = Conn::Closing { socket };
            }
            Conn::Connecting { socket } => {
                io.ws_close(socket, 1000, "closed on request");
                self.conn = Conn::Closed;
            }
            Conn::Idle => {
                io.cancel_timer(Timer::Reconnect);
                self.conn = Conn::Closed;
            }
            Conn::Closing { .. } | Conn::Closed => {}
        }
        io.cancel_timer(Timer::Handshake);
        self.token = None;
        self.received = 0;
        self.delivered = 0;
        self.acked = 0;
        self.sync_id = None;
        let dropped: Vec<Out> = self
            .unconfirmed
            .drain(..)
            .chain(self.queue.drain(..))
            .collect();
        self.queued_bytes = 0;
        self.confirmed = self.last_cseq;
        self.save(io, 0);
        for out in dropped {
            store::remove(io, out.cseq);
            self.answer(io, &out.msg, 503, "the session was closed");
        }
    }

    /// Timer `timer` fired.
    pub(crate) fn on_timer(&mut self, io: &mut dyn Io, timer: Timer) {
        match timer {
            Timer::Reconnect => {
                if self.conn == Conn::Idle {
                    self.connect(io);
                }
            }
            Timer::Ack => {
                self.ack_timer = false;
                self.send_ack(io);
            }
            Timer::Retry => {
                self.retry_timer = false;
                self.drain_inbound(io);
                self.flush_queue(io);
                self.maybe_sync(io);
                self.schedule_ack(io);
            }
            Timer::Expire => self.expire(io),
            Timer::Handshake => {
                if let Some(socket) = self.conn.socket()
                    && !matches!(self.conn, Conn::Open { .. })
                {
                    io.log(
                        Level::Warn,
                        "no answer to the handshake in time: reconnecting",
                    );
                    io.ws_close(socket, 1000, "handshake timeout");
                    self.lost(io, socket);
                }
            }
        }
    }

    fn control_id(&mut self) -> String {
        self.next_id += 1;
        format!("\"stub-{}\"", self.next_id)
    }
}

mod outgoing;
#[cfg(test)]
mod tests;

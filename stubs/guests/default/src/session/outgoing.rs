//! Bus messages for the node: numbered (`cseq`) and stored before they are taken, written in
//! order, confirmed by the node's answer to `sync` (or to `re-open`), and forgotten only then.

use rethink_guest_envelope::Msg;
use serde_json::json;

use super::{Conn, Session};
use crate::frames::{self, SESSION};
use crate::io::{Io, Level, Timer};
use crate::store::{self, Out};

impl Session {
    /// A message from the bus, for the node.
    pub(crate) fn on_message(&mut self, io: &mut dyn Io, msg: Msg) {
        if frames::via(&msg).as_deref() == Some(self.cfg.stub.as_str()) {
            io.log(
                Level::Debug,
                &format!("dropped a message that came through this stub: {}", msg.id),
            );
            return;
        }
        if msg.to.first().map(String::as_str) == Some(SESSION) {
            if msg.kind == "close" {
                self.close(io);
                self.answer(io, &msg, 200, "session closed");
            } else {
                self.answer(
                    io,
                    &msg,
                    400,
                    "the stub manages the session: only close is accepted",
                );
            }
            return;
        }
        let mut msg = msg;
        let g = msg
            .take_extra("gseq")
            .and_then(|g| g.parse::<u64>().ok())
            .filter(|_| self.cfg.report_held);
        if let Some(g) = g
            && g <= self.g_max
        {
            // The host's queue gave it again (it restarted before it learnt we hold it).
            self.save(io, self.acked);
            return;
        }
        let cseq = self.last_cseq + 1;
        msg.set_extra("cseq", &cseq.to_string());
        let text = msg.to_json();
        let full = self.queue.len() + self.unconfirmed.len() >= self.cfg.queue_max
            || (self.queued_bytes > 0
                && self.queued_bytes + text.len() > self.cfg.queue_max_bytes);
        if full {
            let why = format!("the queue to {} is full", self.cfg.peer);
            self.answer(io, &msg, 503, &why);
            self.taken(io, g);
            return;
        }
        let out = Out {
            cseq,
            text,
            msg,
            taken_ms: io.now_ms(),
        };
        if let Err(f) = store::put(io, &out, g) {
            io.log(
                Level::Warn,
                &format!("storing a message failed: {} {}", f.code, f.description),
            );
            self.answer(io, &out.msg, 503, "the stub cannot store the message");
            self.taken(io, g);
            return;
        }
        self.last_cseq = cseq;
        self.queued_bytes += out.text.len();
        if let Some(g) = g {
            self.g_max = g;
        }
        if self.conn == Conn::Closed {
            self.connect(io);
        }
        if matches!(self.conn, Conn::Open { .. }) && self.queue.is_empty() {
            self.write(io, out);
            self.maybe_sync(io);
        } else {
            self.queue.push_back(out);
            self.arm_expiry(io);
        }
    }

    /// Sets the expiry timer for the oldest queued message (with `deliver_timeout_ms`).
    pub(crate) fn arm_expiry(&mut self, io: &mut dyn Io) {
        let timeout = self.cfg.deliver_timeout_ms;
        if timeout == 0 || self.expiry_timer {
            return;
        }
        // The oldest message not confirmed: written and waiting for the node's word, else
        // queued.
        let Some(oldest) = self.unconfirmed.front().or(self.queue.front()) else {
            return;
        };
        let due = oldest.taken_ms.saturating_add(timeout);
        self.expiry_timer = true;
        let now = io.now_ms();
        io.set_timer(Timer::Expire, due.saturating_sub(now));
    }

    /// Answers 504 to the messages the node has not confirmed handled and taken
    /// `deliver_timeout_ms` ago or more (oldest first), and forgets them: never written, or
    /// written and not confirmed (before a lost connection whose `re-open` has not been
    /// answered, or on a connection where the node does not answer): each message is either
    /// confirmed or answered 504 within that time, whatever the connection does. A message
    /// written before it is answered so may have been handled by the node already (the 504
    /// says it was not confirmed); it is never written again after it.
    pub(super) fn expire(&mut self, io: &mut dyn Io) {
        self.expiry_timer = false;
        let timeout = self.cfg.deliver_timeout_ms;
        let now = io.now_ms();
        let why = format!(
            "no delivery to {} within {} s",
            self.cfg.peer,
            timeout / 1000
        );
        let mut due = Vec::new();
        for q in [&mut self.unconfirmed, &mut self.queue] {
            let (late, kept): (Vec<Out>, Vec<Out>) = q
                .drain(..)
                .partition(|o| now.saturating_sub(o.taken_ms) >= timeout);
            *q = kept.into();
            due.extend(late);
        }
        for out in due {
            self.queued_bytes = self.queued_bytes.saturating_sub(out.text.len());
            store::remove(io, out.cseq);
            self.answer(io, &out.msg, 504, &why);
        }
        self.arm_expiry(io);
    }

    /// A message at host queue position `g` was answered, not stored: recorded, so that the
    /// host drops it from its queue and a replay is not taken.
    pub(super) fn taken(&mut self, io: &mut dyn Io, g: Option<u64>) {
        if let Some(g) = g {
            self.g_max = self.g_max.max(g);
            self.save(io, self.acked);
        }
    }

    /// Asks the node which messages it has handled, unless a `sync` is on its way or nothing
    /// waits for confirmation.
    pub(super) fn maybe_sync(&mut self, io: &mut dyn Io) {
        let Conn::Open { socket } = self.conn else {
            return;
        };
        if self.sync_id.is_some() || self.unconfirmed.is_empty() {
            return;
        }
        let id = self.control_id();
        let sync = frames::control(&id, "sync", &self.cfg.runtime, json!({}));
        if io.ws_send(socket, &sync.to_json()).is_ok() {
            self.sync_id = Some(id);
        }
    }

    /// The node has handled every message up to `cseq`: their stored copies go (after the
    /// session record says so, so that a restart in between does not send them again).
    pub(super) fn confirm_upto(&mut self, io: &mut dyn Io, cseq: u64) {
        if cseq <= self.confirmed {
            return;
        }
        self.confirmed = cseq.min(self.last_cseq);
        self.save(io, self.acked);
        let mut freed = 0;
        for q in [&mut self.unconfirmed, &mut self.queue] {
            while q.front().is_some_and(|o| o.cseq <= cseq) {
                if let Some(o) = q.pop_front() {
                    freed += o.text.len();
                    store::remove(io, o.cseq);
                }
            }
        }
        self.queued_bytes = self.queued_bytes.saturating_sub(freed);
    }

    /// Answers `msg` (unless it is itself a response) with `code`.
    pub(super) fn answer(&mut self, io: &mut dyn Io, msg: &Msg, code: u16, description: &str) {
        if msg.kind == "response" {
            return;
        }
        let reply = msg.reply(json!({ "code": code, "description": description }));
        if let Err((f, _)) = io.bus_send(reply) {
            io.log(
                Level::Warn,
                &format!(
                    "answer {code} to {} refused: {} {}",
                    msg.from, f.code, f.description
                ),
            );
        }
    }

    /// Writes one message to the open socket; false (and the message back at the queue's
    /// front) if the socket did not take it.
    pub(super) fn write(&mut self, io: &mut dyn Io, out: Out) -> bool {
        let Conn::Open { socket } = self.conn else {
            self.queue.push_front(out);
            return false;
        };
        match io.ws_send(socket, &out.text) {
            Ok(()) => {
                self.unconfirmed.push_back(out);
                self.arm_expiry(io);
                true
            }
            Err(f) => {
                self.queue.push_front(out);
                if f.code == 503 && !self.retry_timer {
                    self.retry_timer = true;
                    io.set_timer(Timer::Retry, self.cfg.backoff_min_ms);
                }
                false
            }
        }
    }

    pub(super) fn flush_queue(&mut self, io: &mut dyn Io) {
        while let Some(out) = self.queue.pop_front() {
            if !self.write(io, out) {
                return;
            }
        }
    }
}

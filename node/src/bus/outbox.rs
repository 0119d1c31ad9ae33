//! The session outbox: every frame the node owes a runtime, numbered by `seq`, kept until the
//! runtime acknowledges it, bounded in messages and bytes. The bounds hold for every frame
//! pushed here, the node's own answers included; frames moved from another node
//! ([`Outbox::push_moved`]) go past them.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::store::Settle;

/// One frame owed to the runtime: the message JSON (without `seq`) and its sequence number.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub json: Arc<str>,
    /// Fired when the connection's writer has written the frame to the socket (its sender
    /// waits for this or for the commit, see `Bus::route`).
    pub settle: Option<Settle>,
    /// Not to be written yet, nor any frame after it (so the order holds): either before it is
    /// committed ([`Outbox::release`]: the frame and the record that its message was handled
    /// are in one transaction, `bus/handled.rs`), or, when `moved`, before its move from
    /// another node is committed ([`Outbox::release_moved`], `cluster/`).
    pub held: bool,
    /// Moved from another node's queue (`cluster/`): held until the move is committed, dropped
    /// if it is not ([`Outbox::drop_moved`]).
    pub moved: bool,
}

/// The outbox is full: the message is refused (503 to its sender), nothing is dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the recipient's outbox is full ({messages} messages, {bytes} bytes)")]
pub struct OutboxFull {
    pub messages: usize,
    pub bytes: usize,
}

/// Unacknowledged frames of one session, in `seq` order.
#[derive(Debug)]
pub struct Outbox {
    entries: VecDeque<Entry>,
    next_seq: u64,
    /// Highest seq handed to the current connection's writer.
    sent: u64,
    /// Highest seq acknowledged by the runtime.
    acked: u64,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    /// A lower bound on messages set for a while (a gateway whose domain is down holds at
    /// most its queue limit), on top of `max_messages`.
    cap: Option<usize>,
}

impl Outbox {
    /// An empty outbox whose first frame gets `next_seq`.
    pub fn new(next_seq: u64, max_messages: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            next_seq,
            sent: next_seq - 1,
            acked: next_seq - 1,
            bytes: 0,
            max_messages,
            max_bytes,
            cap: None,
        }
    }

    /// Rebuilds an outbox from persisted entries (ascending seq, all above `acked`).
    pub fn restore(
        acked: u64,
        next_seq: u64,
        entries: Vec<(u64, String)>,
        max_messages: usize,
        max_bytes: usize,
    ) -> Self {
        let mut outbox = Self::new(next_seq, max_messages, max_bytes);
        outbox.acked = acked;
        outbox.sent = acked;
        for (seq, json) in entries {
            if seq > acked {
                outbox.bytes += json.len();
                outbox.entries.push_back(Entry {
                    seq,
                    json: Arc::from(json),
                    settle: None,
                    held: false,
                    moved: false,
                });
            }
        }
        outbox
    }

    /// Appends a frame within the bounds, returning its seq.
    pub fn push(&mut self, json: Arc<str>, settle: Option<Settle>) -> Result<u64, OutboxFull> {
        self.push_entry(json, settle, false)
    }

    /// Appends a frame that is not written before [`Outbox::release`] (nor any after it).
    pub fn push_held(&mut self, json: Arc<str>, settle: Option<Settle>) -> Result<u64, OutboxFull> {
        self.push_entry(json, settle, true)
    }

    /// Lets the held frame `seq` be written (nothing if it is gone).
    pub fn release(&mut self, seq: u64) {
        let i = self.entries.partition_point(|e| e.seq < seq);
        if let Some(e) = self.entries.get_mut(i).filter(|e| e.seq == seq) {
            e.held = false;
        }
    }

    /// Appends a frame moved from another node, not written until [`Outbox::release_moved`].
    /// Beyond the bounds too: it was accepted already, on another node (whose own check bounds
    /// it).
    pub fn push_moved(&mut self, json: Arc<str>) -> u64 {
        self.append(json, None, true, true)
    }

    /// Lets every moved frame be written (the move is committed).
    pub fn release_moved(&mut self) {
        for e in self.entries.iter_mut().filter(|e| e.moved) {
            e.held = false;
            e.moved = false;
        }
    }

    /// Forgets every moved frame still held (the move was not committed). Returns how many.
    pub fn drop_moved(&mut self) -> usize {
        let before = self.entries.len();
        let mut bytes = 0;
        self.entries.retain(|e| {
            if e.moved {
                bytes += e.json.len();
            }
            !e.moved
        });
        self.bytes -= bytes;
        before - self.entries.len()
    }

    fn push_entry(
        &mut self,
        json: Arc<str>,
        settle: Option<Settle>,
        held: bool,
    ) -> Result<u64, OutboxFull> {
        if !self.has_room_for(json.len()) {
            return Err(OutboxFull {
                messages: self.entries.len(),
                bytes: self.bytes,
            });
        }
        Ok(self.append(json, settle, held, false))
    }

    fn append(&mut self, json: Arc<str>, settle: Option<Settle>, held: bool, moved: bool) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += json.len();
        self.entries.push_back(Entry {
            seq,
            json,
            settle,
            held,
            moved,
        });
        seq
    }

    /// Whether a frame of `len` bytes fits.
    pub fn has_room_for(&self, len: usize) -> bool {
        let max = self
            .cap
            .map_or(self.max_messages, |c| c.min(self.max_messages));
        self.entries.len() < max && self.bytes + len <= self.max_bytes
    }

    /// Caps the messages held at `cap` on top of the outbox's bounds (`None`: its bounds only).
    /// Entries already held stay.
    pub fn set_cap(&mut self, cap: Option<usize>) {
        self.cap = cap;
    }

    /// Drops every entry up to `seq` (cumulative acknowledgement). Returns how many were dropped.
    /// An acknowledgement above what was sent is clamped to what was sent.
    pub fn ack(&mut self, seq: u64) -> usize {
        let seq = seq.min(self.sent.max(self.acked));
        if seq <= self.acked {
            return 0;
        }
        self.acked = seq;
        let mut dropped = 0;
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.json.len();
                dropped += 1;
            }
        }
        dropped
    }

    /// Prepares a replay for a resuming runtime that has seen everything up to `last_seq`:
    /// acknowledges it and marks everything after it as not sent. Returns how many were dropped.
    pub fn resume_from(&mut self, last_seq: u64) -> usize {
        self.sent = self.sent.max(last_seq.min(self.next_seq - 1));
        let dropped = self.ack(last_seq);
        self.sent = self.acked;
        dropped
    }

    /// Marks everything unacknowledged as not sent (the connection was lost).
    pub fn rewind(&mut self) {
        self.sent = self.acked;
    }

    /// Renders up to `max` unsent frames (with `seq`) into `out` and marks them sent. The
    /// frames' settle signals go to `settles`, to be fired once the frames are on the socket.
    pub fn take_unsent(&mut self, max: usize, out: &mut Vec<String>, settles: &mut Vec<Settle>) {
        let start = self.entries.partition_point(|e| e.seq <= self.sent);
        for e in self.entries.range_mut(start..).take(max) {
            if e.held {
                break;
            }
            let mut frame = String::new();
            rethink_proto::Envelope::write_frame(&e.json, e.seq, &mut frame);
            out.push(frame);
            settles.extend(e.settle.take());
            self.sent = e.seq;
        }
    }

    /// Whether frames wait to be written.
    pub fn has_unsent(&self) -> bool {
        let start = self.entries.partition_point(|e| e.seq <= self.sent);
        self.entries.get(start).is_some_and(|e| !e.held)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Every frame still owed (acknowledged or not written yet), in `seq` order, without the
    /// moved frames whose move is not committed: what another node taking the session over
    /// must deliver (`bus/handover.rs`).
    pub fn snapshot(&self) -> Vec<(u64, Arc<str>)> {
        self.entries
            .iter()
            .filter(|e| !e.moved)
            .map(|e| (e.seq, Arc::clone(&e.json)))
            .collect()
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> Arc<str> {
        Arc::from(format!(
            r#"{{"id":{n},"type":"x","from":"a://d/1","to":"a://d/2"}}"#
        ))
    }

    #[test]
    fn bounds_refuse_without_dropping() {
        let mut o = Outbox::new(1, 2, 1 << 20);
        assert_eq!(o.push(msg(1), None), Ok(1));
        assert_eq!(o.push(msg(2), None), Ok(2));
        assert!(o.push(msg(3), None).is_err());
        assert_eq!(o.len(), 2);
        assert!(!o.has_room_for(1));
        let small = Outbox::new(1, 100, 10).push(msg(1), None);
        assert!(small.is_err(), "byte bound");
    }

    #[test]
    fn ack_is_cumulative_and_clamped_to_what_was_sent() {
        let mut o = Outbox::new(1, 10, 1 << 20);
        for n in 0..5 {
            o.push(msg(n), None).unwrap();
        }
        let mut frames = Vec::new();
        o.take_unsent(3, &mut frames, &mut Vec::new());
        assert_eq!(frames.len(), 3);
        assert!(frames[0].starts_with(r#"{"seq":1,"id":0"#));
        assert_eq!(o.ack(100), 3, "cannot ack what was never sent");
        assert_eq!(o.acked(), 3);
        assert_eq!(o.ack(2), 0);
        assert!(o.has_unsent());
    }

    #[test]
    fn resume_replays_after_last_seq_in_order() {
        let mut o = Outbox::new(1, 10, 1 << 20);
        for n in 0..5 {
            o.push(msg(n), None).unwrap();
        }
        let mut frames = Vec::new();
        o.take_unsent(10, &mut frames, &mut Vec::new());
        assert!(!o.has_unsent());
        assert_eq!(o.resume_from(2), 2);
        frames.clear();
        o.take_unsent(10, &mut frames, &mut Vec::new());
        let seqs: Vec<u64> = frames
            .iter()
            .map(|f| {
                serde_json::from_str::<serde_json::Value>(f).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [3, 4, 5]);
    }

    #[test]
    fn taking_a_frame_hands_over_its_settle_signal_once() {
        let mut o = Outbox::new(1, 10, 1 << 20);
        let (settle, mut settled) = Settle::new();
        o.push(msg(1), Some(settle)).unwrap();
        o.push(msg(2), None).unwrap();
        let (mut frames, mut settles) = (Vec::new(), Vec::new());
        o.take_unsent(10, &mut frames, &mut settles);
        assert_eq!((frames.len(), settles.len()), (2, 1));
        assert!(settled.try_recv().is_err(), "not fired by taking");
        settles.drain(..).for_each(|s| s.fire());
        assert!(settled.try_recv().is_ok());
        // A replay after a lost connection carries no signal any more.
        o.rewind();
        frames.clear();
        o.take_unsent(10, &mut frames, &mut settles);
        assert_eq!((frames.len(), settles.len()), (2, 0));
    }

    #[test]
    fn moved_frames_and_those_after_them_wait_for_release() {
        let mut o = Outbox::new(1, 10, 1 << 20);
        o.push(msg(1), None).unwrap();
        assert_eq!(o.push_moved(msg(2)), 2);
        o.push(msg(3), None).unwrap();
        let mut frames = Vec::new();
        o.take_unsent(10, &mut frames, &mut Vec::new());
        assert_eq!(frames.len(), 1, "stops at the held frame");
        assert!(!o.has_unsent());
        o.release_moved();
        assert!(o.has_unsent());
        o.take_unsent(10, &mut frames, &mut Vec::new());
        assert_eq!(frames.len(), 3);
        assert!(frames[1].starts_with(r#"{"seq":2,"id":2"#), "{}", frames[1]);
        let n = o.push_moved(msg(4));
        assert_eq!((n, o.drop_moved(), o.len()), (4, 1, 3));
        assert!(!o.has_unsent());
    }

    #[test]
    fn a_snapshot_has_what_is_owed_without_uncommitted_moves() {
        let mut o = Outbox::new(1, 10, 1 << 20);
        for n in 1..=3 {
            o.push(msg(n), None).unwrap();
        }
        let mut frames = Vec::new();
        o.take_unsent(10, &mut frames, &mut Vec::new());
        o.ack(1);
        o.push_moved(msg(4));
        let seqs: Vec<u64> = o.snapshot().into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(
            seqs,
            [2, 3],
            "written or not, unacknowledged; no move in flight"
        );
        o.release_moved();
        assert_eq!(o.snapshot().len(), 3);
    }

    #[test]
    fn restore_keeps_numbering() {
        let mut o = Outbox::restore(
            4,
            100,
            vec![(3, "{}".into()), (5, r#"{"a":1}"#.into())],
            10,
            1 << 20,
        );
        assert_eq!(o.len(), 1);
        assert_eq!(o.push(msg(1), None), Ok(100));
    }
}

//! Reading ahead while a frame is handled: acknowledgements are applied at once (they may be
//! what frees the outbox room the handling waits for), other frames are held in order, bounded
//! by `HOLD_FRAMES` frames and the session's largest frame in bytes.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::Message;
use futures_util::{Stream, StreamExt};

use super::{End, HOLD_FRAMES, ReadError};
use crate::bus::Session;
use crate::node::Node;
use crate::ws::control;

/// Frames read ahead while an earlier frame is handled, in order, bounded.
pub(super) struct Held {
    frames: VecDeque<Message>,
    bytes: usize,
    max_bytes: usize,
}

impl Held {
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    fn size(msg: &Message) -> usize {
        match msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        }
    }

    pub(super) fn has_room(&self) -> bool {
        self.frames.len() < HOLD_FRAMES && self.bytes < self.max_bytes
    }

    pub(super) fn push(&mut self, msg: Message) {
        self.bytes += Self::size(&msg);
        self.frames.push_back(msg);
    }

    pub(super) fn pop(&mut self) -> Option<Message> {
        let msg = self.frames.pop_front()?;
        self.bytes -= Self::size(&msg);
        Some(msg)
    }
}

/// Runs `work` (the handling of one frame) while reading what arrives meanwhile:
/// acknowledgements are applied at once (they may be what frees the outbox room `work` waits
/// for), pings and pongs skipped, other frames held (while `held` has room; then nothing more
/// is read until `work` is done). `Err` when the connection ended meanwhile.
pub(super) async fn with_acks<R, RE, F>(
    node: &Node,
    session: &Arc<Session>,
    stream: &mut R,
    held: &mut Held,
    work: F,
) -> Result<F::Output, End>
where
    R: Stream<Item = Result<Message, RE>> + Unpin,
    RE: ReadError,
    F: Future,
{
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return Ok(out),
            msg = stream.next(), if held.has_room() => match msg {
                None => return Err(End::PeerGone),
                Some(Err(e)) => return Err(read_failed(&e)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => return Err(End::PeerGone),
                Some(Ok(Message::Text(text))) => match control::short_ack(&text) {
                    Some(seq) => node.bus().ack(session, seq).await,
                    None => held.push(Message::Text(text)),
                },
                Some(Ok(other)) => held.push(other),
            },
        }
    }
}

/// How a failed read ends the connection.
pub(super) fn read_failed<RE: ReadError>(e: &RE) -> End {
    if e.is_invalid_utf8() {
        tracing::debug!(error = %e, "invalid UTF-8 in a text frame");
        End::InvalidUtf8
    } else {
        tracing::debug!(error = %e, "read failed");
        End::PeerGone
    }
}

//! Send-to-sync accounting of the Matrix scenario: the acknowledged sends (each
//! with the number of receivers it should reach) against the deliveries the
//! receivers' syncs saw, giving per-delivery and first-delivery latencies over
//! the sends of the measured window, and the deliveries that never came.

use std::collections::HashMap;

use crate::stats::{Latencies, Summary};

/// An acknowledged send (200 with an `event_id`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub(crate) seq: u64,
    /// Room members other than the sender: the syncs that should return it.
    pub(crate) receivers: u32,
    /// The PUT started in the measured window.
    pub(crate) in_window: bool,
}

/// A benchmark message returned by a receiver's sync (not its own, not a repeat).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivery {
    pub(crate) seq: u64,
    /// From the start of the PUT to the sync response, in ns.
    pub(crate) latency_ns: u64,
}

/// The accounting's result.
#[derive(Debug, Default)]
pub(crate) struct DeliveryFigures {
    /// Receivers the acknowledged sends should reach, summed.
    pub(crate) expected: u64,
    /// Deliveries of acknowledged sends.
    pub(crate) delivered: u64,
    /// Expected but never seen.
    pub(crate) missing: u64,
    /// Deliveries of messages whose send was not acknowledged (failed or cut off).
    pub(crate) unacknowledged: u64,
    /// Every delivery of a measured send.
    pub(crate) every: Option<Summary>,
    /// The first delivery of each measured send (the fastest receiver).
    pub(crate) first: Option<Summary>,
}

/// Matches `deliveries` with `sent`.
pub(crate) fn account(sent: &[Sent], deliveries: &[Delivery]) -> DeliveryFigures {
    struct Slot {
        sent: Sent,
        delivered: u32,
        first_ns: u64,
    }
    let mut slots: HashMap<u64, Slot> = sent
        .iter()
        .map(|&s| {
            (
                s.seq,
                Slot {
                    sent: s,
                    delivered: 0,
                    first_ns: u64::MAX,
                },
            )
        })
        .collect();
    let mut figures = DeliveryFigures::default();
    let mut every = Latencies::default();
    for d in deliveries {
        let Some(slot) = slots.get_mut(&d.seq) else {
            figures.unacknowledged += 1;
            continue;
        };
        slot.delivered += 1;
        slot.first_ns = slot.first_ns.min(d.latency_ns);
        figures.delivered += 1;
        if slot.sent.in_window {
            every.record_ns(d.latency_ns);
        }
    }
    let mut first = Latencies::default();
    for slot in slots.values() {
        figures.expected += u64::from(slot.sent.receivers);
        figures.missing += u64::from(slot.sent.receivers.saturating_sub(slot.delivered));
        if slot.sent.in_window && slot.delivered > 0 {
            first.record_ns(slot.first_ns);
        }
    }
    figures.every = every.summarize();
    figures.first = first.summarize();
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seq: u64, receivers: u32, in_window: bool) -> Sent {
        Sent {
            seq,
            receivers,
            in_window,
        }
    }

    fn delivery(seq: u64, latency_us: u64) -> Delivery {
        Delivery {
            seq,
            latency_ns: latency_us * 1_000,
        }
    }

    #[test]
    fn first_and_every_delivery() {
        let sends = [sent(1, 3, true), sent(2, 3, true), sent(3, 2, false)];
        let deliveries = [
            delivery(1, 300),
            delivery(1, 100),
            delivery(1, 200),
            delivery(2, 400),
            delivery(2, 500),
            // Warm-up send: counted as delivered, not timed.
            delivery(3, 9_000),
            delivery(3, 9_000),
            // A send that was never acknowledged.
            delivery(4, 50),
        ];
        let f = account(&sends, &deliveries);
        assert_eq!(f.expected, 8);
        assert_eq!(f.delivered, 7);
        assert_eq!(f.missing, 1, "seq 2 reached 2 of 3 receivers");
        assert_eq!(f.unacknowledged, 1);
        let every = f.every.expect("every");
        assert_eq!(every.count, 5);
        assert_eq!(every.max_us, 500);
        assert_eq!(every.p50_us, 300);
        let first = f.first.expect("first");
        assert_eq!(first.count, 2);
        assert_eq!((first.p50_us, first.max_us), (100, 400));
    }

    #[test]
    fn nothing_delivered() {
        let f = account(&[sent(1, 4, true)], &[]);
        assert_eq!((f.expected, f.delivered, f.missing), (4, 0, 4));
        assert!(f.every.is_none());
        assert!(f.first.is_none());
    }
}

-- Client transactions of room events (`send`, `redact`), the truth of their idempotence: a
-- repeated transaction (same sender, device, room, endpoint and ID) returns its first event for
-- `matrix.txn_retention_secs` after it was accepted, however many events the room got since.
-- Written in the same commit as the event (rooms::Rooms, store::rooms::AppendEvent); rows past
-- the retention are pruned (store::rooms::PruneTxns). The events keep their own txn columns for
-- `unsigned.transaction_id`.
CREATE TABLE room_txns (
    sender      TEXT NOT NULL,
    device      TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    -- `send` or `redact`.
    scope       TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    -- When the node accepted the event (unix ms).
    received_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX room_txns_key ON room_txns (sender, device, room_id, scope, txn_id);
CREATE INDEX room_txns_by_age ON room_txns (received_ms);
CREATE INDEX room_txns_by_room ON room_txns (room_id, received_ms);

-- The transactions stored before this table existed (the latest of a key wins).
INSERT OR REPLACE INTO room_txns (sender, device, room_id, scope, txn_id, event_id, received_ms)
SELECT sender, txn_device, room_id, txn_scope, txn_id, event_id, received_ms
FROM events WHERE txn_id IS NOT NULL AND txn_device IS NOT NULL AND txn_scope IS NOT NULL
ORDER BY stream;

-- Rooms read their recent transactions from room_txns now.
DROP INDEX events_with_txn;

-- The transaction queues of Matrix application services (node/src/appservice), in their own
-- file appservice.db: under Matrix load the stream writer holds rethink.db's write lock for most
-- of each second, and the queue's writes waited for it (BENCHMARKS.md, 2026-12-02 fourth session).
--
-- Per service: the stream position its transactions were made up to, the next transaction ID
-- and the highest seq of its bus session already put in a transaction; and the transactions not
-- yet delivered, in order. A transaction and the position it covers are written in one commit,
-- so a restart (or a kill) neither loses nor repeats events, and an ID is never given to
-- different content. Nodes before this file kept the same tables in rethink.db (its migrations
-- 0009 and 0010); their rows are moved here at start (store::appservice).

CREATE TABLE appservice_state (
    as_id      TEXT PRIMARY KEY NOT NULL,
    stream_pos INTEGER NOT NULL,
    next_txn   INTEGER NOT NULL,
    bus_seq    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE appservice_txns (
    as_id   TEXT NOT NULL,
    txn_id  INTEGER NOT NULL,
    body    TEXT NOT NULL,
    items   INTEGER NOT NULL,
    PRIMARY KEY (as_id, txn_id)
);

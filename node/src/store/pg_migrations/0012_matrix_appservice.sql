-- The transaction queues of Matrix application services (node/src/appservice): the tables of
-- SQLite's appservice_migrations/0001_appservice.sql (the file appservice.db), in PostgreSQL's
-- types. On PostgreSQL they share the one database of store.url with the other Matrix stores.
--
-- Per service: the stream position its transactions were made up to, the next transaction ID
-- and the highest seq of its bus session already put in a transaction; and the transactions not
-- yet delivered, in order. A transaction and the position it covers are written in one commit,
-- so a restart (or a kill) neither loses nor repeats events, and an ID is never given to
-- different content.

CREATE TABLE appservice_state (
    as_id      TEXT PRIMARY KEY NOT NULL,
    stream_pos BIGINT NOT NULL,
    next_txn   BIGINT NOT NULL,
    bus_seq    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE appservice_txns (
    as_id   TEXT NOT NULL,
    txn_id  BIGINT NOT NULL,
    body    TEXT NOT NULL,
    items   BIGINT NOT NULL,
    PRIMARY KEY (as_id, txn_id)
);

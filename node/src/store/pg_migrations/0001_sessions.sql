-- The bus's tables in PostgreSQL (store.url = postgres://...): sessions and their outboxes
-- (ARCHITECTURE.md, "Durability"). The same tables as bus_migrations/0001_sessions.sql for
-- SQLite, in PostgreSQL types; the two are kept in step by the store tests, which run one test
-- body against both backends (store/tests.rs).
-- Sequence numbers are u64 values stored as BIGINT; they stay below 2^53.

-- Node-wide counters; `epoch` counts the starts of the node.
CREATE TABLE node_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT
);

-- One row per resumable session.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    runtime_url   TEXT NOT NULL,
    token_hash    BYTEA NOT NULL,
    identity_json TEXT NOT NULL,
    acked_seq     BIGINT NOT NULL DEFAULT 0
);

-- Addresses allocated to a session; `ord` keeps the allocation order, `alloc_key` the
-- allocationKey they were allocated under (NULL when none).
CREATE TABLE session_addresses (
    session   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    address   TEXT NOT NULL,
    ord       BIGINT NOT NULL,
    alloc_key TEXT,
    PRIMARY KEY (session, address)
);

-- Addresses a session subscribes to; `ord` keeps the order they were added in (SQLite's rowid).
CREATE TABLE session_subscriptions (
    session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    ord     BIGINT NOT NULL,
    PRIMARY KEY (session, address)
);

-- Unacknowledged messages of a session. No foreign key: this is the hot path, inserts filter on
-- the session's existence themselves and DeleteSession removes the rows explicitly.
CREATE TABLE outbox (
    session TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    json    TEXT NOT NULL,
    PRIMARY KEY (session, seq)
);

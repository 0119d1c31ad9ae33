-- The bus's own database file, bus.db: sessions and their outboxes (ARCHITECTURE.md, "Durability").
-- Kept apart from rethink.db (Matrix) so that the two group-commit writers never wait for each
-- other's SQLite write lock. Nodes before the split kept these tables in rethink.db; they are
-- moved here once at start (SqliteStore::open).
-- Sequence numbers are u64 values stored as INTEGER; they stay below 2^53.

-- Node-wide counters; `epoch` counts the starts of the node.
CREATE TABLE node_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER
);

-- One row per resumable session.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    runtime_url   TEXT NOT NULL,
    token_hash    BLOB NOT NULL,
    identity_json TEXT NOT NULL,
    acked_seq     INTEGER NOT NULL DEFAULT 0
);

-- Addresses allocated to a session; `ord` keeps the allocation order, `alloc_key` the
-- allocationKey they were allocated under (NULL when none).
CREATE TABLE session_addresses (
    session   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    address   TEXT NOT NULL,
    ord       INTEGER NOT NULL,
    alloc_key TEXT,
    PRIMARY KEY (session, address)
);

-- Addresses a session subscribes to.
CREATE TABLE session_subscriptions (
    session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    PRIMARY KEY (session, address)
);

-- Unacknowledged messages of a session. No foreign key: this is the hot path, inserts filter on
-- the session's existence themselves and DeleteSession removes the rows explicitly.
CREATE TABLE outbox (
    session TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    json    TEXT NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;

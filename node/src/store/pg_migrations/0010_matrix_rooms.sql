-- Matrix rooms, events and the stream that orders what /sync reports: the tables of SQLite's
-- migrations/0003_rooms.sql and 0008_room_txns.sql (the server keys are in 0009), in
-- PostgreSQL's types.

-- The last committed stream position (one row, id 0). Every node's stream writer locks this
-- row (`SELECT ... FOR UPDATE`) for the length of its commit, so positions are handed out and
-- committed in order across the nodes of a cluster.
CREATE TABLE stream_head (
    id  INTEGER PRIMARY KEY CHECK (id = 0),
    pos BIGINT NOT NULL
);
INSERT INTO stream_head (id, pos) VALUES (0, 0);

CREATE TABLE rooms (
    room_id    TEXT PRIMARY KEY NOT NULL,
    version    TEXT NOT NULL,
    creator    TEXT NOT NULL,
    -- Listed in the public room directory.
    published  BIGINT NOT NULL DEFAULT 0
);

-- Every event, in stream order. `json` is the PDU as signed (without its event_id), redacted
-- in place when a redaction is accepted.
CREATE TABLE events (
    stream      BIGINT PRIMARY KEY NOT NULL,
    event_id    TEXT NOT NULL UNIQUE,
    room_id     TEXT NOT NULL REFERENCES rooms(room_id),
    type        TEXT NOT NULL,
    state_key   TEXT,
    sender      TEXT NOT NULL,
    json        TEXT NOT NULL,
    txn_device  TEXT,
    txn_scope   TEXT,
    txn_id      TEXT,
    received_ms BIGINT NOT NULL,
    redacted_because TEXT
);
CREATE INDEX events_by_room ON events (room_id, stream);

CREATE TABLE room_state (
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    stream    BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

CREATE TABLE memberships (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream     BIGINT NOT NULL,
    forgotten  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id, stream);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);

CREATE TABLE bridged_objects (
    object_url TEXT PRIMARY KEY NOT NULL,
    room_id    TEXT NOT NULL UNIQUE
);

-- Client transactions of room events, unique per key: a transaction retried on any node finds
-- the first one's event.
CREATE TABLE room_txns (
    -- Stands in for SQLite's rowid in the pruning query.
    id          BIGSERIAL PRIMARY KEY,
    sender      TEXT NOT NULL,
    device      TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    scope       TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX room_txns_key ON room_txns (sender, device, room_id, scope, txn_id);
CREATE INDEX room_txns_by_age ON room_txns (received_ms);
CREATE INDEX room_txns_by_room ON room_txns (room_id, received_ms);

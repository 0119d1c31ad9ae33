-- Matrix rooms, events and the stream that orders what /sync reports (DESIGN.md sections 5, 8).

-- The last committed stream position (one row, id 0).
CREATE TABLE stream_head (
    id  INTEGER PRIMARY KEY CHECK (id = 0),
    pos INTEGER NOT NULL
);

-- The server's signing keys (ed25519, PKCS#8 DER), generated on first start.
CREATE TABLE server_keys (
    key_id     TEXT PRIMARY KEY NOT NULL,
    pkcs8      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE rooms (
    room_id    TEXT PRIMARY KEY NOT NULL,
    version    TEXT NOT NULL,
    creator    TEXT NOT NULL,
    -- Listed in the public room directory.
    published  INTEGER NOT NULL DEFAULT 0
);

-- Every event, in stream order. `json` is the PDU as signed (without its event_id), redacted
-- in place when a redaction is accepted.
CREATE TABLE events (
    stream      INTEGER PRIMARY KEY NOT NULL,
    event_id    TEXT NOT NULL UNIQUE,
    room_id     TEXT NOT NULL REFERENCES rooms(room_id),
    type        TEXT NOT NULL,
    state_key   TEXT,
    sender      TEXT NOT NULL,
    json        TEXT NOT NULL,
    -- The transaction that sent it (client-server idempotence), if any: per device, endpoint
    -- (`send` or `redact`) and room.
    txn_device  TEXT,
    txn_scope   TEXT,
    txn_id      TEXT,
    -- When the node accepted it (unix ms): rooms remember recent transactions by it.
    received_ms INTEGER NOT NULL,
    -- The client form of the redaction that redacted this event, if any.
    redacted_because TEXT
);
CREATE INDEX events_by_room ON events (room_id, stream);
CREATE INDEX events_with_txn ON events (room_id, received_ms) WHERE txn_id IS NOT NULL;

-- The current state of each room.
CREATE TABLE room_state (
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    stream    INTEGER NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- Current membership of each user in each room (a projection of room_state), with the stream
-- position of the membership event.
CREATE TABLE memberships (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream     INTEGER NOT NULL,
    forgotten  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id, stream);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);

-- reTHINK data objects (comm://domain/id) bridged to rooms.
CREATE TABLE bridged_objects (
    object_url TEXT PRIMARY KEY NOT NULL,
    room_id    TEXT NOT NULL UNIQUE
);

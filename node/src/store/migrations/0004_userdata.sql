-- Per-user Matrix data (DESIGN.md sections 5 and 8): filters, profiles, account data, receipts,
-- end-to-end encryption keys and to-device messages. `stream` columns are positions of the
-- Matrix stream (0003_rooms.sql, `stream_head`), given by the stream writer at commit time, so
-- that /sync can report what changed between two tokens. Times are unix milliseconds.

-- Sync filters, by ID; a filter belongs to the user who uploaded it.
CREATE TABLE filters (
    filter_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL,
    json      TEXT NOT NULL
);

-- Profiles of users; a user without a row has an empty profile.
CREATE TABLE profiles (
    user_id     TEXT PRIMARY KEY NOT NULL,
    displayname TEXT,
    avatar_url  TEXT
);

-- Account data, global (room_id '') or per room; the latest content of each type.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    content TEXT NOT NULL,
    stream  INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_by_stream ON account_data (user_id, stream);

-- The latest receipt of each user, type (m.read, m.read.private) and thread ('' unthreaded) in
-- each room.
CREATE TABLE receipts (
    room_id  TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    type     TEXT NOT NULL,
    thread   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    stream   INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, type, thread)
);
CREATE INDEX receipts_by_stream ON receipts (room_id, stream);

-- The identity keys each device uploaded (DeviceKeys JSON, as signed by the device).
CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    json      TEXT NOT NULL,
    stream    INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys (fallback = 0, removed when claimed) and fallback keys (fallback = 1, one per
-- algorithm, kept when claimed) of each device.
CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    fallback  INTEGER NOT NULL,
    json      TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, fallback, key_id)
);
CREATE INDEX one_time_keys_by_algorithm ON one_time_keys (user_id, device_id, fallback, algorithm);

-- Each change of a user's device list (keys uploaded, device deleted), in stream order.
CREATE TABLE device_list_changes (
    stream  INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (stream, user_id)
);

-- To-device messages waiting for their recipient device; deleted once the device has synced
-- past them.
CREATE TABLE to_device (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream    INTEGER NOT NULL,
    -- The event as sent to the device: {"type", "sender", "content"}.
    json      TEXT NOT NULL
);
CREATE INDEX to_device_by_device ON to_device (user_id, device_id, stream);

-- sendToDevice transactions already applied (idempotence per sending device).
CREATE TABLE to_device_txns (
    sender    TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    PRIMARY KEY (sender, device_id, txn_id)
);

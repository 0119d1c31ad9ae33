-- Per-user Matrix data besides filters and profiles (0008): account data, receipts, end-to-end
-- encryption keys, device-list changes, to-device messages, presence and cross-signing. The
-- tables of SQLite's migrations/0004_userdata.sql, 0005_presence.sql, 0006_fallback_keys_used.sql
-- and 0007_cross_signing.sql, in PostgreSQL's types (the modules of userdata/ run the same SQL on
-- both). `stream` columns are positions of the Matrix stream (`stream_head`, 0010); times are
-- unix milliseconds; JSON is stored as text, as the client sent it (signatures depend on it).

-- Account data, global (room_id '') or per room; the latest content of each type.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    content TEXT NOT NULL,
    stream  BIGINT NOT NULL,
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
    ts       BIGINT NOT NULL,
    stream   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, type, thread)
);
CREATE INDEX receipts_by_stream ON receipts (room_id, stream);

-- The identity keys each device uploaded (DeviceKeys JSON, as signed by the device).
CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    json      TEXT NOT NULL,
    stream    BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys (fallback = 0, removed when claimed) and fallback keys (fallback = 1, one per
-- algorithm, kept when claimed, `used` = 1 once a claim handed them out) of each device.
CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    fallback  BIGINT NOT NULL,
    json      TEXT NOT NULL,
    used      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, fallback, key_id)
);
CREATE INDEX one_time_keys_by_algorithm ON one_time_keys (user_id, device_id, fallback, algorithm);

-- Each change of a user's device list (keys uploaded, device deleted, cross-signing keys or
-- signatures), in stream order.
CREATE TABLE device_list_changes (
    stream  BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (stream, user_id)
);

-- To-device messages waiting for their recipient device; deleted once the device has synced
-- past them. `id` orders the messages of one position (SQLite's AUTOINCREMENT).
CREATE TABLE to_device (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream    BIGINT NOT NULL,
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

-- Each user's last set presence.
CREATE TABLE presence (
    user_id        TEXT PRIMARY KEY,
    presence       TEXT NOT NULL,
    status_msg     TEXT,
    -- When the presence was last set (unix ms).
    last_active_ms BIGINT NOT NULL,
    stream         BIGINT NOT NULL
);
CREATE INDEX presence_by_stream ON presence (stream);

-- The latest cross-signing key of each user and usage ('master', 'self_signing',
-- 'user_signing'): its public key (unpadded base64) and the CrossSigningKey object as uploaded,
-- signatures included, in canonical JSON.
CREATE TABLE cross_signing_keys (
    user_id    TEXT NOT NULL,
    usage      TEXT NOT NULL,
    public_key TEXT NOT NULL,
    json       TEXT NOT NULL,
    stream     BIGINT NOT NULL,
    PRIMARY KEY (user_id, usage)
);

-- Signatures uploaded through keys/signatures/upload (see 0007_cross_signing.sql of SQLite).
CREATE TABLE key_signatures (
    target_user TEXT NOT NULL,
    target_key  TEXT NOT NULL,
    signer_user TEXT NOT NULL,
    signer_key  TEXT NOT NULL,
    signature   TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key)
);
CREATE INDEX key_signatures_by_signer ON key_signatures (signer_user, signer_key);

-- Matrix accounts, devices and access tokens (DESIGN.md sections 5 and 8).
-- Times are unix seconds. Secrets are never stored: passwords as argon2 PHC strings, access
-- tokens as their SHA-256.

-- One row per local account @localpart:server_name.
CREATE TABLE accounts (
    localpart        TEXT PRIMARY KEY NOT NULL,
    -- argon2 PHC string; NULL for an account that cannot log in with a password (created by a
    -- JWT login).
    password_hash    TEXT,
    -- The verified reTHINK identity (user://idp/sub) the account belongs to, if any.
    external_subject TEXT UNIQUE,
    created_at       INTEGER NOT NULL
);

-- A device of an account: what a login creates and a logout deletes.
CREATE TABLE devices (
    localpart    TEXT NOT NULL REFERENCES accounts(localpart) ON DELETE CASCADE,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (localpart, device_id)
);

-- Access tokens (SHA-256 of the token), each bound to one device; at most one per device.
CREATE TABLE access_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    FOREIGN KEY (localpart, device_id) REFERENCES devices(localpart, device_id) ON DELETE CASCADE
);

CREATE INDEX access_tokens_by_device ON access_tokens (localpart, device_id);

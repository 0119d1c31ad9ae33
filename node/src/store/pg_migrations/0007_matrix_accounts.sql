-- Matrix accounts, devices and access tokens: the tables of migrations/0002_accounts.sql (SQLite)
-- in PostgreSQL types (store/accounts.rs runs the same SQL on both). Times are unix seconds;
-- passwords are argon2 PHC strings, access tokens their SHA-256.

CREATE TABLE accounts (
    localpart        TEXT PRIMARY KEY,
    password_hash    TEXT,
    external_subject TEXT UNIQUE,
    created_at       BIGINT NOT NULL
);

CREATE TABLE devices (
    localpart    TEXT NOT NULL REFERENCES accounts(localpart) ON DELETE CASCADE,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id)
);

CREATE TABLE access_tokens (
    token_hash BYTEA PRIMARY KEY,
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (localpart, device_id) REFERENCES devices(localpart, device_id) ON DELETE CASCADE
);

CREATE INDEX access_tokens_by_device ON access_tokens (localpart, device_id);

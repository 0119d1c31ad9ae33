-- The server's signing keys (ed25519, PKCS#8 DER), generated on first start: the table of
-- migrations/0003_rooms.sql (SQLite) in PostgreSQL types (rooms/signing.rs runs the same SQL on
-- both). The nodes of a cluster share the first key stored.
CREATE TABLE server_keys (
    key_id     TEXT PRIMARY KEY,
    pkcs8      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

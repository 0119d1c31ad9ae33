-- The key-value store of the protocol stubs the node runs (host.kv-* in stubs/wit/stub.wit): one
-- namespace per stub instance name. Bounded by the host (key, value and total size per stub).
-- Keys compare in byte order (COLLATE "C"), as the WIT promises for kv-keys.
CREATE TABLE stub_kv (
    stub  TEXT NOT NULL,
    key   TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (stub, key)
);

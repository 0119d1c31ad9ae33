-- The key-value store of the protocol stubs the node runs (host.kv-* in stubs/wit/stub.wit): one
-- namespace per stub instance name. Bounded by the host (key, value and total size per stub).
CREATE TABLE stub_kv (
    stub  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (stub, key)
) WITHOUT ROWID;

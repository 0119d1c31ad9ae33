-- The key-value store of the protocol stubs the node runs (host.kv-* in stubs/wit/stub.wit), in a
-- file of its own (`stubs.db`): one namespace per stub instance name, bounded by the host (key,
-- value and total size per stub). Older nodes kept these tables in bus.db (bus migrations 0002
-- and 0003); `store/sqlite/moves.rs` moves them here once.
CREATE TABLE stub_kv (
    stub  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (stub, key)
) WITHOUT ROWID;
-- The bytes (keys and values) each stub keeps in stub_kv, kept up to date by every write in the
-- same transaction, so that the quota check of a write costs O(1) instead of a sum over the
-- stub's keys.
CREATE TABLE stub_kv_total (
    stub  TEXT PRIMARY KEY NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;

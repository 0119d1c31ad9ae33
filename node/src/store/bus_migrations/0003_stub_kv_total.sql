-- The bytes (keys and values) each stub keeps in stub_kv, kept up to date by every write in the
-- same transaction, so that the quota check of a write costs O(1) instead of a sum over the
-- stub's keys.
CREATE TABLE stub_kv_total (
    stub  TEXT PRIMARY KEY NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO stub_kv_total (stub, bytes)
SELECT stub, SUM(length(CAST(key AS BLOB)) + length(value)) FROM stub_kv GROUP BY stub;

-- Fallback keys (one_time_keys rows with fallback = 1, 0004_userdata.sql) are marked used when a
-- claim hands one out, so that /sync can list the algorithms whose fallback key is still unused
-- (`device_unused_fallback_key_types`) and the device knows when to replace it. A new fallback key
-- of the algorithm replaces the row and starts unused.
ALTER TABLE one_time_keys ADD COLUMN used INTEGER NOT NULL DEFAULT 0;

-- The device-list changes of one user in a range of positions (device_list_changes,
-- 0011_matrix_userdata.sql, whose primary key is (stream, user_id); as SQLite's
-- migrations/0012_device_list_changes_by_user.sql): `GET /keys/changes` and `/sync` look, for
-- each user sharing a room with the caller, for one change in the range (userdata/keys.rs
-- `changed_users`), so that a request reads no more than those users however long the range.
CREATE INDEX device_list_changes_by_user ON device_list_changes (user_id, stream);

-- As migrations/0013_profile_members.sql (SQLite): a profile change is re-sent as the user's
-- member events by a task (matrix/profile.rs); `members_version` counts the changes,
-- `members_done` is the change whose re-send has finished.
ALTER TABLE profiles
    ADD COLUMN members_version BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN members_done BIGINT NOT NULL DEFAULT 0;
CREATE INDEX profiles_members_behind ON profiles (user_id) WHERE members_version > members_done;

-- A profile change is re-sent as the user's member events in their joined rooms by a task
-- (matrix/profile.rs), not in the request: `members_version` counts the user's profile changes,
-- `members_done` is the change whose re-send has finished. A node that starts re-sends the
-- profiles whose re-send a stop or a crash interrupted (members_version > members_done).
ALTER TABLE profiles ADD COLUMN members_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE profiles ADD COLUMN members_done INTEGER NOT NULL DEFAULT 0;
CREATE INDEX profiles_members_behind ON profiles (user_id) WHERE members_version > members_done;

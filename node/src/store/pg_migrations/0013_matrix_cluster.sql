-- Matrix on several nodes (one database).

-- The chain of a room's events (as SQLite's migrations/0011_event_chain.sql): two nodes that
-- build an event on the same predecessor cannot both commit it.
ALTER TABLE events ADD COLUMN prev_event TEXT;
CREATE UNIQUE INDEX events_chain ON events (room_id, prev_event);

-- What each stream position concerns, written by the stream writer in the commit of the
-- position: another node reads the positions it did not write from here, updates its caches
-- and change marks, and wakes its long-polling /sync requests (stream::remote).
CREATE TABLE stream_log (
    pos         BIGINT PRIMARY KEY,
    -- The users to wake, one per line.
    users       TEXT NOT NULL,
    -- The room that got an event at this position.
    room_events TEXT,
    -- The room whose per-room user data changed at this position.
    room_extras TEXT
);

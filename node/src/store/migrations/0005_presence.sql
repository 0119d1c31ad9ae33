-- Matrix presence (DESIGN.md section 5): each user's last set presence, written through the
-- stream writer so that /sync reports changes to the users sharing a room.
CREATE TABLE presence (
    user_id        TEXT PRIMARY KEY NOT NULL,
    presence       TEXT NOT NULL,
    status_msg     TEXT,
    -- When the presence was last set (unix ms).
    last_active_ms INTEGER NOT NULL,
    stream         INTEGER NOT NULL
);
CREATE INDEX presence_by_stream ON presence (stream);

-- Each event of a room names the room's previous event (its `prev_events`), and no two events
-- of a room name the same one: the room's history is one chain. On one node the room engine
-- never builds two events on one predecessor; in a cluster two nodes may, from stale images of
-- the room, and this index refuses the second (rooms::Rooms reloads the room and builds again).
ALTER TABLE events ADD COLUMN prev_event TEXT;
CREATE UNIQUE INDEX events_chain ON events (room_id, prev_event);

-- The node that last took each duty's advisory lock (`appservice/leader.rs`): a node that
-- takes a lock another node held last waits before it starts the duty, so that the former
-- holder (its lock connection gone, itself maybe still running) has noticed and stopped.
CREATE TABLE duty_holders (
    duty TEXT PRIMARY KEY,
    node TEXT NOT NULL
);

-- The highest `cseq` handled for each session (a node session's: another domain's stub numbers
-- what it sends), written in the same transaction as the outbox entries the message made, so
-- that a killed node drops what the other node sends again after it restarts (bus/handled.rs).
ALTER TABLE sessions ADD COLUMN cseq INTEGER NOT NULL DEFAULT 0;

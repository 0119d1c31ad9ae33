-- As bus_migrations/0004_session_cseq.sql: the highest `cseq` handled for each session, written
-- with the outbox entries the message made.
ALTER TABLE sessions ADD COLUMN cseq BIGINT NOT NULL DEFAULT 0;

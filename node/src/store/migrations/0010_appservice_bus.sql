-- reTHINK messages in application-service transactions (node/src/appservice): per service, the
-- highest seq of its bus session's outbox already put in a transaction, so that a frame still in
-- the outbox after a kill (between the transaction's commit and the outbox's acknowledgement) is
-- not sent twice.

ALTER TABLE appservice_state ADD COLUMN bus_seq INTEGER NOT NULL DEFAULT 0;

-- reTHINK messages and ephemeral data in application-service transactions (node/src/appservice):
-- per service, the highest seq of its bus session's outbox already put in a transaction (so a
-- frame still in the outbox after a kill, between the transaction's commit and the outbox's
-- acknowledgement, is not sent twice), and the positions of the ephemeral streams (typing,
-- receipts, presence, to-device) already looked at.

ALTER TABLE appservice_state ADD COLUMN bus_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE appservice_state ADD COLUMN ephemeral_pos TEXT NOT NULL DEFAULT '';

-- Matrix application services (node/src/appservice, DESIGN.md section 10): per service, the
-- stream position its transactions were made up to and the next transaction ID; and the
-- transactions not yet delivered, in order. A transaction and the position it covers are written
-- in one commit, so a restart (or a kill) neither loses nor repeats events, and an ID is never
-- given to different content.

CREATE TABLE appservice_state (
    as_id      TEXT PRIMARY KEY NOT NULL,
    stream_pos INTEGER NOT NULL,
    next_txn   INTEGER NOT NULL
);

CREATE TABLE appservice_txns (
    as_id   TEXT NOT NULL,
    txn_id  INTEGER NOT NULL,
    body    TEXT NOT NULL,
    items   INTEGER NOT NULL,
    PRIMARY KEY (as_id, txn_id)
);

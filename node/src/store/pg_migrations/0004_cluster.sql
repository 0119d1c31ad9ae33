-- Clustering (cluster.nats_url; node/src/cluster/): several nodes share these tables.

-- The node holding each session (NULL: a node without clustering). A session is delivered only
-- by its node; another node takes it over (an UPDATE of this column under the row's lock) only
-- when its node's heartbeat is older than cluster.membership_timeout_ms.
ALTER TABLE sessions ADD COLUMN node TEXT;
CREATE INDEX sessions_node ON sessions (node);
CREATE INDEX sessions_runtime_url ON sessions (runtime_url);
CREATE INDEX sessions_token_hash ON sessions (token_hash);
-- The address book by address, for the nodes routing to sessions they do not hold.
CREATE INDEX session_addresses_address ON session_addresses (address);
CREATE INDEX session_subscriptions_address ON session_subscriptions (address);

-- Membership: each node writes its heartbeat here (the database's clock, one clock for all).
CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL
);

-- Messages for a session held by another node, stored by the sender's node before it tells the
-- holder over NATS. The holder moves them into the session's outbox (a DELETE and the outbox
-- INSERT in one transaction), in id order; a node taking a session over moves what is left.
-- `sender`: the session the message came from (NULL: made by the node, e.g. a Matrix event on a
-- bridged object), which the holder checks owns the message's `from` (`sender_from`);
-- `recipient`: the address it was routed for, `transport` the sender's (`context.transport`):
-- the holder decides the policies again with what it knows of the recipient.
CREATE TABLE cluster_inbox (
    id          BIGSERIAL PRIMARY KEY,
    session     TEXT NOT NULL,
    json        TEXT NOT NULL,
    sender      TEXT,
    sender_from TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    transport   TEXT NOT NULL
);
CREATE INDEX cluster_inbox_session ON cluster_inbox (session, id);

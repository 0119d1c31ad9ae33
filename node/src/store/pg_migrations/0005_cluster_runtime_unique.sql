-- A runtime URL is one session in the whole cluster: a node opening a session inserts its row
-- itself (INSERT ... ON CONFLICT (runtime_url) DO NOTHING), so that of two nodes opening one
-- runtime URL at once exactly one wins (node/src/cluster/link.rs, `claim_runtime`).
DROP INDEX sessions_runtime_url;
CREATE UNIQUE INDEX sessions_runtime_url ON sessions (runtime_url);

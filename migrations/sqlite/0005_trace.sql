-- Tamper-evident events: each node's events form a hash chain, sealed in the order the node wrote them.
ALTER TABLE events ADD COLUMN seq INTEGER;        -- per-node sequence number, from 1; NULL until sealed
ALTER TABLE events ADD COLUMN prev_hash TEXT;     -- the hash of the node's event with seq - 1
ALTER TABLE events ADD COLUMN hash TEXT;          -- SHA-256 over prev_hash and this row's content
CREATE UNIQUE INDEX events_chain ON events (node, seq);
CREATE INDEX events_unsealed ON events (node, id) WHERE seq IS NULL;

-- Delegation copies: each copy is its own recipient; this names whose copy it is.
ALTER TABLE recipients ADD COLUMN copy_of TEXT;
-- Retention: when the body was purged (unix ms); the events stay.
ALTER TABLE messages ADD COLUMN purged_at INTEGER;
CREATE INDEX recipients_final ON recipients (status, updated_at);

-- The recipient directory of our domains, and per-address delegates who get a copy.
CREATE TABLE directory (
    address     TEXT PRIMARY KEY,             -- lower case
    name        TEXT NOT NULL DEFAULT '',
    added_at    INTEGER NOT NULL
);
CREATE TABLE delegations (
    address     TEXT NOT NULL,                -- lower case, the delegating address
    delegate    TEXT NOT NULL,                -- who receives a copy
    added_at    INTEGER NOT NULL,
    PRIMARY KEY (address, delegate)
);

-- Accepted messages, their recipients (the queue), and the append-only event log.
CREATE TABLE messages (
    id           TEXT PRIMARY KEY,          -- UUIDv7, also in our Received: header
    direction    TEXT NOT NULL,             -- inbound | outbound
    sender       TEXT NOT NULL,             -- envelope sender; '' for <>
    size         BIGINT NOT NULL,
    body         BYTEA,                      -- the message as queued (with our Received:)
    received_at  BIGINT NOT NULL,          -- unix milliseconds
    node         TEXT NOT NULL,
    config_hash  TEXT NOT NULL
);

CREATE TABLE recipients (
    id               BIGSERIAL PRIMARY KEY,
    message_id       TEXT NOT NULL REFERENCES messages(id),
    address          TEXT NOT NULL,
    domain           TEXT NOT NULL,
    status           TEXT NOT NULL,          -- queued | deferred | delivered | failed
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_reply       TEXT,
    lease_owner      TEXT,
    lease_until      BIGINT,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX recipients_due ON recipients (status, next_attempt_at);
CREATE INDEX recipients_message ON recipients (message_id);

CREATE TABLE events (
    id           BIGSERIAL PRIMARY KEY,
    message_id   TEXT NOT NULL,
    recipient    TEXT,
    at           BIGINT NOT NULL,           -- unix milliseconds
    node         TEXT NOT NULL,
    kind         TEXT NOT NULL,              -- received | attempt | delivered | deferred | failed | ...
    detail       TEXT NOT NULL,              -- JSON
    config_hash  TEXT NOT NULL
);
CREATE INDEX events_message ON events (message_id, id);

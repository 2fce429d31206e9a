-- Whether the sender was already told that this recipient is delayed (queue.warn_after).
ALTER TABLE recipients ADD COLUMN warned BIGINT NOT NULL DEFAULT 0;

-- Whether the sender was already told that this recipient is delayed (queue.warn_after).
ALTER TABLE recipients ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;

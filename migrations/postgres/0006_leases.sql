-- The scheduler's next wake-up reads leased recipients alone: few, whatever the queue's size.
CREATE INDEX recipients_leased ON recipients (lease_until) WHERE lease_until IS NOT NULL;

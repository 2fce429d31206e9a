-- Bad points per client address, fed by the gateway's own verdicts, decaying over time.
CREATE TABLE reputation (
    ip          TEXT PRIMARY KEY,
    points      DOUBLE PRECISION NOT NULL,
    updated_at  BIGINT NOT NULL          -- unix milliseconds, when `points` was last computed
);

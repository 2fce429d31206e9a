-- Bad points per client address, fed by the gateway's own verdicts, decaying over time.
CREATE TABLE reputation (
    ip          TEXT PRIMARY KEY,
    points      REAL NOT NULL,
    updated_at  INTEGER NOT NULL          -- unix milliseconds, when `points` was last computed
);

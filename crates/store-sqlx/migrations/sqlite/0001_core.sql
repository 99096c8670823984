-- recon's own bookkeeping: runs, watermarks, lease-row locks.
CREATE TABLE IF NOT EXISTS recon_runs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT    NOT NULL UNIQUE,
    runner      TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    dry_run     INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    report      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS recon_runs_runner_started ON recon_runs (runner, started_at);
CREATE INDEX IF NOT EXISTS recon_runs_started ON recon_runs (started_at);
CREATE TABLE IF NOT EXISTS recon_watermarks (
    name       TEXT PRIMARY KEY,
    position   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recon_locks (
    name        TEXT PRIMARY KEY,
    token       TEXT NOT NULL,
    holder      TEXT,
    expires_at  TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);

-- recon's own bookkeeping: runs, watermarks, lease-row locks.
CREATE TABLE IF NOT EXISTS recon_runs (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT        NOT NULL UNIQUE,
    runner      TEXT        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    status      TEXT        NOT NULL,
    dry_run     BIGINT      NOT NULL,
    duration_ms BIGINT      NOT NULL,
    report      TEXT        NOT NULL
);
CREATE INDEX IF NOT EXISTS recon_runs_runner_started ON recon_runs (runner, started_at);
CREATE INDEX IF NOT EXISTS recon_runs_started ON recon_runs (started_at);
CREATE TABLE IF NOT EXISTS recon_watermarks (
    name       TEXT PRIMARY KEY,
    position   TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS recon_locks (
    name        TEXT PRIMARY KEY,
    token       TEXT        NOT NULL,
    holder      TEXT,
    expires_at  TIMESTAMPTZ NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL
);

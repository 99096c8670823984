-- recon's own bookkeeping: runs, watermarks, lease-row locks.
CREATE TABLE IF NOT EXISTS recon_runs (
    seq         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    run_id      VARCHAR(64)  NOT NULL UNIQUE,
    runner      VARCHAR(255) NOT NULL,
    started_at  DATETIME(6)  NOT NULL,
    finished_at DATETIME(6)  NOT NULL,
    status      VARCHAR(16)  NOT NULL,
    dry_run     BIGINT       NOT NULL,
    duration_ms BIGINT       NOT NULL,
    report      LONGTEXT     NOT NULL,
    INDEX recon_runs_runner_started (runner, started_at),
    INDEX recon_runs_started (started_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE IF NOT EXISTS recon_watermarks (
    name       VARCHAR(255) NOT NULL PRIMARY KEY,
    position   DATETIME(6)  NOT NULL,
    updated_at DATETIME(6)  NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE IF NOT EXISTS recon_locks (
    name        VARCHAR(255) NOT NULL PRIMARY KEY,
    token       VARCHAR(128) NOT NULL,
    holder      VARCHAR(255),
    expires_at  DATETIME(6)  NOT NULL,
    acquired_at DATETIME(6)  NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

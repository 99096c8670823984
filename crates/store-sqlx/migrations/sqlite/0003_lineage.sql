-- lineage-checksum: fingerprints, per-record lineage, failed records.
-- Keys compare by bytes (SQLite's default BINARY collation); timestamps are fixed-width
-- RFC 3339 text at microseconds, so text order is time order; JSON is text.
CREATE TABLE IF NOT EXISTS recon_fingerprints (
    namespace    TEXT NOT NULL,
    record_key   TEXT NOT NULL,
    fingerprint  BLOB NOT NULL,
    source_group TEXT,
    seen_run     TEXT,
    seen_at      TEXT,
    PRIMARY KEY (namespace, record_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recon_fingerprints_group
    ON recon_fingerprints (namespace, source_group, record_key);
CREATE TABLE IF NOT EXISTS recon_lineage (
    pipeline    TEXT    NOT NULL,
    record_key  TEXT    NOT NULL,
    stage       TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    stage_at    TEXT    NOT NULL,
    stage_times TEXT    NOT NULL,
    fingerprint BLOB,
    retry_count INTEGER NOT NULL,
    last_error  TEXT,
    metadata    TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (pipeline, record_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recon_lineage_stuck ON recon_lineage (pipeline, status, stage_at);
CREATE INDEX IF NOT EXISTS recon_lineage_stage ON recon_lineage (pipeline, stage, status);
CREATE TABLE IF NOT EXISTS recon_failed_records (
    pipeline        TEXT    NOT NULL,
    record_key      TEXT    NOT NULL,
    stage           TEXT    NOT NULL,
    error_type      TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    first_failed_at TEXT    NOT NULL,
    last_failed_at  TEXT    NOT NULL,
    next_attempt_at TEXT,
    state           TEXT    NOT NULL,
    resolved_at     TEXT,
    resolution      TEXT,
    PRIMARY KEY (pipeline, record_key, stage)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recon_failed_records_due
    ON recon_failed_records (pipeline, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS recon_failed_records_error_type
    ON recon_failed_records (pipeline, state, error_type);

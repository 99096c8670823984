-- lineage-checksum: fingerprints, per-record lineage, failed records.
-- Every text column that is compared or sorted uses COLLATE "C" (byte order, as the memory
-- stores); timestamps are timestamptz (microseconds); JSON is jsonb.
CREATE TABLE IF NOT EXISTS recon_fingerprints (
    namespace    TEXT COLLATE "C" NOT NULL,
    record_key   TEXT COLLATE "C" NOT NULL,
    fingerprint  BYTEA NOT NULL,
    source_group TEXT COLLATE "C",
    seen_run     TEXT COLLATE "C",
    seen_at      TIMESTAMPTZ,
    PRIMARY KEY (namespace, record_key)
);
CREATE INDEX IF NOT EXISTS recon_fingerprints_group
    ON recon_fingerprints (namespace, source_group, record_key);
CREATE TABLE IF NOT EXISTS recon_lineage (
    pipeline    TEXT COLLATE "C" NOT NULL,
    record_key  TEXT COLLATE "C" NOT NULL,
    stage       TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL,
    stage_at    TIMESTAMPTZ NOT NULL,
    stage_times JSONB       NOT NULL,
    fingerprint BYTEA,
    retry_count BIGINT      NOT NULL,
    last_error  TEXT,
    metadata    JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (pipeline, record_key)
);
CREATE INDEX IF NOT EXISTS recon_lineage_stuck ON recon_lineage (pipeline, status, stage_at);
CREATE INDEX IF NOT EXISTS recon_lineage_stage ON recon_lineage (pipeline, stage, status);
CREATE TABLE IF NOT EXISTS recon_failed_records (
    pipeline        TEXT COLLATE "C" NOT NULL,
    record_key      TEXT COLLATE "C" NOT NULL,
    stage           TEXT COLLATE "C" NOT NULL,
    error_type      TEXT COLLATE "C" NOT NULL,
    message         TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    attempts        BIGINT      NOT NULL,
    first_failed_at TIMESTAMPTZ NOT NULL,
    last_failed_at  TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ,
    state           TEXT COLLATE "C" NOT NULL,
    resolved_at     TIMESTAMPTZ,
    resolution      TEXT,
    PRIMARY KEY (pipeline, record_key, stage)
);
CREATE INDEX IF NOT EXISTS recon_failed_records_due
    ON recon_failed_records (pipeline, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS recon_failed_records_error_type
    ON recon_failed_records (pipeline, state, error_type);

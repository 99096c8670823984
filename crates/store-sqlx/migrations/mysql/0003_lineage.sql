-- lineage-checksum: fingerprints, per-record lineage, failed records.
-- utf8mb4_nopad_bin: keys compare by code point (= UTF-8 byte order) and, unlike
-- utf8mb4_bin, without ignoring trailing spaces ("a" and "a " are two keys). Timestamps are
-- DATETIME(6) in UTC; JSON columns are MariaDB's JSON (LONGTEXT checked with JSON_VALID).
CREATE TABLE IF NOT EXISTS recon_fingerprints (
    namespace    VARCHAR(128) NOT NULL,
    record_key   VARCHAR(255) NOT NULL,
    fingerprint  BINARY(32)   NOT NULL,
    source_group VARCHAR(128),
    seen_run     VARCHAR(128),
    seen_at      DATETIME(6),
    PRIMARY KEY (namespace, record_key),
    INDEX recon_fingerprints_group (namespace, source_group, record_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
CREATE TABLE IF NOT EXISTS recon_lineage (
    pipeline    VARCHAR(128) NOT NULL,
    record_key  VARCHAR(255) NOT NULL,
    stage       VARCHAR(64)  NOT NULL,
    status      VARCHAR(16)  NOT NULL,
    stage_at    DATETIME(6)  NOT NULL,
    stage_times JSON         NOT NULL,
    fingerprint BINARY(32),
    retry_count BIGINT       NOT NULL,
    last_error  TEXT,
    metadata    JSON         NOT NULL,
    created_at  DATETIME(6)  NOT NULL,
    updated_at  DATETIME(6)  NOT NULL,
    PRIMARY KEY (pipeline, record_key),
    INDEX recon_lineage_stuck (pipeline, status, stage_at),
    INDEX recon_lineage_stage (pipeline, stage, status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;
CREATE TABLE IF NOT EXISTS recon_failed_records (
    pipeline        VARCHAR(128) NOT NULL,
    record_key      VARCHAR(255) NOT NULL,
    stage           VARCHAR(64)  NOT NULL,
    error_type      VARCHAR(128) NOT NULL,
    message         TEXT         NOT NULL,
    payload         JSON         NOT NULL,
    attempts        BIGINT       NOT NULL,
    first_failed_at DATETIME(6)  NOT NULL,
    last_failed_at  DATETIME(6)  NOT NULL,
    next_attempt_at DATETIME(6),
    state           VARCHAR(16)  NOT NULL,
    resolved_at     DATETIME(6),
    resolution      VARCHAR(128),
    PRIMARY KEY (pipeline, record_key, stage),
    INDEX recon_failed_records_due (pipeline, state, next_attempt_at),
    INDEX recon_failed_records_error_type (pipeline, state, error_type)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_nopad_bin;

-- recon's own job queue (queue-rehydrate's JobQueue): many named queues in one table.
-- entity_key is text; entity_key_type ('integer' | 'text') says how to read it back.
-- Queue names, ids, kinds and states compare case-sensitively (utf8mb4_bin; note that
-- MariaDB's _bin collations ignore trailing spaces). entity_key keeps the database's default
-- collation so that it compares with the host's key column through its index; the store
-- adds a byte comparison where exactness matters.
CREATE TABLE IF NOT EXISTS recon_queued_jobs (
    queue           VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    id              VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    kind            VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    entity_key      VARCHAR(255),
    entity_key_type VARCHAR(16),
    run_at          DATETIME(6)  NOT NULL,
    state           VARCHAR(16)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    payload         LONGTEXT,
    created_at      DATETIME(6)  NOT NULL,
    PRIMARY KEY (queue, id),
    INDEX recon_queued_jobs_waiting (queue, state, id),
    INDEX recon_queued_jobs_entity (queue, state, entity_key, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

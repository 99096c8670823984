-- recon's own job queue (queue-rehydrate's JobQueue): many named queues in one table.
-- entity_key is text; entity_key_type ('integer' | 'text') says how to read it back.
-- Job ids and queue names order byte by byte (COLLATE "C"); entity_key keeps the database's
-- default collation so that it compares with the host's key column through its index.
CREATE TABLE IF NOT EXISTS recon_queued_jobs (
    queue           TEXT COLLATE "C" NOT NULL,
    id              TEXT COLLATE "C" NOT NULL,
    kind            TEXT        NOT NULL,
    entity_key      TEXT,
    entity_key_type TEXT,
    run_at          TIMESTAMPTZ NOT NULL,
    state           TEXT        NOT NULL,
    payload         TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (queue, id)
);
CREATE INDEX IF NOT EXISTS recon_queued_jobs_waiting ON recon_queued_jobs (queue, state, id);
CREATE INDEX IF NOT EXISTS recon_queued_jobs_entity ON recon_queued_jobs (queue, state, entity_key, id);

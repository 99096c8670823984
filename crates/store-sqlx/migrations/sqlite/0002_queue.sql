-- recon's own job queue (queue-rehydrate's JobQueue): many named queues in one table.
-- entity_key is text; entity_key_type ('integer' | 'text') says how to read it back.
CREATE TABLE IF NOT EXISTS recon_queued_jobs (
    queue           TEXT NOT NULL,
    id              TEXT NOT NULL,
    kind            TEXT NOT NULL,
    entity_key      TEXT,
    entity_key_type TEXT,
    run_at          TEXT NOT NULL,
    state           TEXT NOT NULL,
    payload         TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (queue, id)
);
CREATE INDEX IF NOT EXISTS recon_queued_jobs_waiting ON recon_queued_jobs (queue, state, id);
CREATE INDEX IF NOT EXISTS recon_queued_jobs_entity ON recon_queued_jobs (queue, state, entity_key, id);

-- Verdict's store: jobs, their items, each item's samples and verdict.
-- Effects are exactly-once through primary keys and upserts: a redelivered item writes the
-- same rows again.

CREATE TABLE jobs (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL DEFAULT '',
    -- The judge model's name; it selects the queue stream.
    judge       TEXT NOT NULL,
    -- verdict_core::LabelSpec as JSON.
    spec        JSONB NOT NULL,
    -- No more items will be added.
    sealed      BOOLEAN NOT NULL DEFAULT FALSE,
    cancelled   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);

CREATE TABLE items (
    job_id       UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    item_id      TEXT NOT NULL,
    -- Content key of (item, spec), hex: equal keys give equal verdicts (dedup).
    key          TEXT NOT NULL,
    -- verdict_core::Item as JSON.
    item         JSONB NOT NULL,
    -- queued | done | rejected | dead | cancelled
    state        TEXT NOT NULL DEFAULT 'queued',
    -- Answered from a stored verdict with the same key, without running the judge.
    deduplicated BOOLEAN NOT NULL DEFAULT FALSE,
    -- Why the item has no verdict (rejected, dead), naming the field where there is one.
    error        TEXT,
    -- The Redis stream entry that carries the item, while queued.
    entry_id     TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_id)
);
CREATE INDEX items_job_state ON items (job_id, state);
CREATE INDEX items_queued_age ON items (updated_at) WHERE state = 'queued';

CREATE TABLE verdicts (
    job_id      UUID NOT NULL,
    item_id     TEXT NOT NULL,
    key         TEXT NOT NULL,
    judge       TEXT NOT NULL,
    template    TEXT NOT NULL,
    summed      INT[] NOT NULL,
    mean        FLOAT8[] NOT NULL,
    winner      INT,
    margin      INT NOT NULL,
    tie         BOOLEAN NOT NULL,
    valid       INT NOT NULL,
    agreement   FLOAT8 NOT NULL,
    -- The worker that produced it ('' when copied by dedup).
    worker      TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_id),
    FOREIGN KEY (job_id, item_id) REFERENCES items (job_id, item_id) ON DELETE CASCADE
);
CREATE INDEX verdicts_key ON verdicts (key);

CREATE TABLE samples (
    job_id            UUID NOT NULL,
    item_id           TEXT NOT NULL,
    sample_index      INT NOT NULL,
    -- permutation[j] = input index of the response shown as Response j+1.
    permutation       INT[] NOT NULL,
    principles        TEXT NOT NULL,
    critique          TEXT NOT NULL,
    -- In input order; NULL when the sample is invalid.
    scores            SMALLINT[],
    -- valid | forced | invalid
    status            TEXT NOT NULL,
    -- verdict_core::ParseFailure as JSON, for invalid samples.
    failure           JSONB,
    -- eos | score_block | length
    finish            TEXT NOT NULL,
    prompt_tokens     INT NOT NULL,
    completion_tokens INT NOT NULL,
    meta_score        REAL,
    raw               TEXT NOT NULL,
    PRIMARY KEY (job_id, item_id, sample_index),
    FOREIGN KEY (job_id, item_id) REFERENCES items (job_id, item_id) ON DELETE CASCADE
);

-- What the Celery peer writes: one verdict row and k sample rows per item, with the columns
-- Verdict stores (the samples' text included), keyed the same way so a redelivery upserts.
CREATE TABLE verdicts (
    item_id     TEXT PRIMARY KEY,
    summed      INT[] NOT NULL,
    winner      INT,
    margin      INT NOT NULL,
    valid       INT NOT NULL,
    agreement   FLOAT8 NOT NULL,
    enqueued_at TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE samples (
    item_id           TEXT NOT NULL,
    sample_index      INT NOT NULL,
    permutation       INT[] NOT NULL,
    principles        TEXT NOT NULL,
    critique          TEXT NOT NULL,
    scores            SMALLINT[],
    status            TEXT NOT NULL,
    completion_tokens INT NOT NULL,
    raw               TEXT NOT NULL,
    PRIMARY KEY (item_id, sample_index)
);

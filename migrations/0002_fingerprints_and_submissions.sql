-- Judge identity: which weights produced each verdict, and the weights each judge name
-- stands for. A verdict's key includes its fingerprints, so dedup never crosses weights.
ALTER TABLE verdicts ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE verdicts ADD COLUMN meta_fingerprint TEXT;

-- A judge name is bound to the fingerprints of the workers that serve it, and may be
-- rebound to other weights only while none of its items is queued.
CREATE TABLE judges (
    name             TEXT PRIMARY KEY,
    fingerprint      TEXT NOT NULL,
    meta_fingerprint TEXT,
    -- The judge's context length in tokens, as its workers report it.
    context_length   INT,
    bound_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The content key of an item alone (prompt and responses), to tell a re-sent item from
-- another item under the same id without reading the job.
ALTER TABLE items ADD COLUMN content TEXT NOT NULL DEFAULT '';

-- Submissions: when items last arrived, and what went wrong with a submission.
ALTER TABLE jobs ADD COLUMN submitted_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE jobs ADD COLUMN note TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_open ON jobs (submitted_at) WHERE NOT sealed AND NOT cancelled;
CREATE INDEX jobs_judge ON jobs (judge) WHERE NOT cancelled;

-- With statistics that lag a large submission, the planner preferred this index for
-- per-message lookups (`job_id = $1 AND state = 'queued'`) and walked every queued item of
-- the job. The primary key (job_id, item_id) serves both those lookups and a job's
-- progress counts.
DROP INDEX items_job_state;

-- A job's progress from counters instead of a GROUP BY over its items (issue 12: a watcher
-- must cost O(1) queries, whatever the job's size). Statement-level triggers keep, per job,
-- how many items are in each state; each connection writes its own shard of the counters,
-- so concurrent reports of one job do not queue on one row. Reading sums the shards.
CREATE TABLE job_counts (
    job_id       UUID NOT NULL,
    shard        SMALLINT NOT NULL,
    state        TEXT NOT NULL,
    deduplicated BOOLEAN NOT NULL,
    n            BIGINT NOT NULL,
    PRIMARY KEY (job_id, shard, state, deduplicated)
);

CREATE FUNCTION verdict_count_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Rows are upserted in key order, so two statements never wait on each other's rows
    -- in opposite orders.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_counts (job_id, shard, state, deduplicated, n)
        SELECT job_id, pg_backend_pid() % 16, state, deduplicated, count(*)
        FROM new_rows GROUP BY job_id, state, deduplicated ORDER BY job_id, state, deduplicated
        ON CONFLICT (job_id, shard, state, deduplicated) DO UPDATE SET n = job_counts.n + EXCLUDED.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO job_counts (job_id, shard, state, deduplicated, n)
        SELECT job_id, pg_backend_pid() % 16, state, deduplicated, sum(d)
        FROM (SELECT job_id, state, deduplicated, 1 AS d FROM new_rows
              UNION ALL
              SELECT job_id, state, deduplicated, -1 AS d FROM old_rows) AS moved
        GROUP BY job_id, state, deduplicated HAVING sum(d) <> 0 ORDER BY job_id, state, deduplicated
        ON CONFLICT (job_id, shard, state, deduplicated) DO UPDATE SET n = job_counts.n + EXCLUDED.n;
    ELSE
        INSERT INTO job_counts (job_id, shard, state, deduplicated, n)
        SELECT job_id, pg_backend_pid() % 16, state, deduplicated, -count(*)
        FROM old_rows GROUP BY job_id, state, deduplicated ORDER BY job_id, state, deduplicated
        ON CONFLICT (job_id, shard, state, deduplicated) DO UPDATE SET n = job_counts.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

-- No item may change while the counters are filled from the items as they are.
LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE;
CREATE TRIGGER items_count_insert AFTER INSERT ON items REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION verdict_count_items();
CREATE TRIGGER items_count_update AFTER UPDATE ON items REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION verdict_count_items();
CREATE TRIGGER items_count_delete AFTER DELETE ON items REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION verdict_count_items();
INSERT INTO job_counts (job_id, shard, state, deduplicated, n)
SELECT job_id, 0, state, deduplicated, count(*) FROM items GROUP BY job_id, state, deduplicated;

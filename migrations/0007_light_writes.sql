-- Fewer writes per item (issue 13: the control plane at 10k+ verdicts a second).
--
-- A sample row's foreign key named its item: each of an item's k sample rows checked the
-- item row and locked it (FOR KEY SHARE), rewriting the item's tuple header k times, on
-- pages the report's own UPDATE of the item dirtied again. A sample now hangs off its
-- verdict, which the same transaction has just written (samples are only ever stored with
-- their verdict); the verdict still names its item, and deleting a job still removes its
-- items, verdicts and samples.
ALTER TABLE samples DROP CONSTRAINT samples_job_id_item_id_fkey;
ALTER TABLE samples ADD CONSTRAINT samples_verdict_fkey
    FOREIGN KEY (job_id, item_id) REFERENCES verdicts (job_id, item_id) ON DELETE CASCADE NOT VALID;
ALTER TABLE samples VALIDATE CONSTRAINT samples_verdict_fkey;

-- Room on each page for the HOT update that records an item's queue entry right after
-- its insert (only the unindexed entry_id changes, so no index is touched).
ALTER TABLE items SET (fillfactor = 85);

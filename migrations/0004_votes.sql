-- What a vote reads of each of an item's samples, kept on its verdict's row, so that a
-- re-vote at another k (and an export at it) reads one narrow row per item instead of k
-- sample rows that carry the whole judgement text.
-- votes: per sample in index order, [sample_index, status (0 valid, 1 forced, 2 invalid),
-- score of response 1, ..., score of response n] (scores 0 when invalid), flattened;
-- vote_meta: each sample's meta-RM score, in the same order (NULL when no meta RM ran).
-- Verdicts stored before this migration have NULL votes and are read from their samples.
ALTER TABLE verdicts ADD COLUMN votes SMALLINT[], ADD COLUMN vote_meta REAL[];

-- Jobs belong to the client identity that created them (issue 12: authentication).
-- Jobs created before this migration, or while authentication was off, belong to
-- 'anonymous', which only the admin role reaches once tokens are on.
ALTER TABLE jobs ADD COLUMN owner text NOT NULL DEFAULT 'anonymous';
CREATE INDEX jobs_owner_created ON jobs (owner, created_at DESC, id DESC);

-- Least-privilege Postgres roles for Verdict. The owner creates and migrates the schema
-- (`verdict migrate`, or a coordinator started without --no-migrate); coordinators run as
-- verdict_app, which reads and writes rows and nothing else (`verdict coordinator
-- --no-migrate`). Run as a superuser in the Verdict database after the first migration,
-- and again after each upgrade that adds tables. Tested by
-- crates/verdict-cli/tests/hardening.rs. Replace the password.
CREATE ROLE verdict_app LOGIN PASSWORD 'CHANGE-ME-app';
GRANT CONNECT ON DATABASE verdict TO verdict_app;
GRANT USAGE ON SCHEMA public TO verdict_app;
-- Rows only: no DELETE, no TRUNCATE, no DDL. The migrations table is read to check that
-- the schema is current.
GRANT SELECT, INSERT, UPDATE ON jobs, items, verdicts, samples, judges, job_counts TO verdict_app;
GRANT SELECT ON _sqlx_migrations TO verdict_app;

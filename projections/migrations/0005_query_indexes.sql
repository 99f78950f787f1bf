-- Indexes for the HTTP API's reads (orchestrator/api/reads.py) and the
-- console's analytics. scripts/bench_api.py measures them on a million
-- executions (with --explain: the plan of each list query).
--
-- Lists are newest first, ORDER BY created_at DESC, id DESC, a page at a time
-- after a keyset cursor (created_at, id). Each list index ends in
-- (created_at DESC, id DESC), so a filtered page is read in order from the
-- index and stops after `limit` rows, however deep the page. They replace
-- 0001's three, which ordered ties by id ascending (a page needed a sort).
--
-- Nothing here indexes updated_at, which every event changes: projector
-- updates that change no indexed column stay HOT (fillfactor 80 leaves room).
--
-- The file runs in one transaction. The new indexes are built first (the
-- table stays readable; writes wait) and 0001's dropped last, so the
-- exclusive lock DROP INDEX takes is held only for the moment before commit.

CREATE INDEX workflow_executions_newest_idx
    ON workflow_executions (created_at DESC, id DESC);
CREATE INDEX workflow_executions_status_newest_idx
    ON workflow_executions (status, created_at DESC, id DESC);
-- a workflow (every version), and a workflow's version
CREATE INDEX workflow_executions_workflow_newest_idx
    ON workflow_executions (workflow_name, created_at DESC, id DESC);
CREATE INDEX workflow_executions_workflow_version_newest_idx
    ON workflow_executions (workflow_name, workflow_version, created_at DESC, id DESC);

-- input.<path>=<value> / output.<path>=<value>: jsonb containment (@>).
-- jsonb_path_ops indexes a hash per path-to-value: smaller and faster than the
-- default opclass, which also serves key-exists operators the API never uses.
-- The planner estimates containment by testing the column's histogram (a
-- sample of whole documents): a common value (a third of the rows) walks the
-- newest index and filters, a rare one (a customer id) reads these and sorts
-- the few rows found. With the default 100 entries, an id that happens to be
-- in the sample counts as 1% of the rows, and its page walked the whole table
-- (a second at 1M rows); with 1,000 it counts as 0.1%, still a GIN read.
-- ANALYZE then samples 300,000 rows (about 10 s at 1M rows, autovacuum's).
ALTER TABLE workflow_executions
    ALTER COLUMN input SET STATISTICS 1000,
    ALTER COLUMN output SET STATISTICS 1000;
CREATE INDEX workflow_executions_input_idx
    ON workflow_executions USING gin (input jsonb_path_ops);
CREATE INDEX workflow_executions_output_idx
    ON workflow_executions USING gin (output jsonb_path_ops);

-- Analytics (orchestrator/api/analytics.py) of one workflow: its executions that
-- ended in a time window (0006's index on finished_at serves every workflow at
-- once). Ending an execution changes its indexed status anyway, so this costs
-- the projector one more index entry per ended execution, nothing per event.
-- Steps get no index on finished_at: analytics reaches them through their
-- primary key from these executions, and step updates stay HOT.
CREATE INDEX workflow_executions_workflow_finished_idx
    ON workflow_executions (workflow_name, finished_at);

ANALYZE workflow_executions;  -- the histograms above, now rather than at autovacuum's next visit

DROP INDEX workflow_executions_created_idx;
DROP INDEX workflow_executions_status_created_idx;
DROP INDEX workflow_executions_workflow_created_idx;

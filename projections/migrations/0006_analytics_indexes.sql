-- Analytics (GET /api/v1/analytics, the console's analytics page): executions
-- that ended in a time window. Throughput by status, durations per workflow
-- and failure reasons read this index alone (index-only scans: the INCLUDEd
-- columns are all they need); per-step figures join the most recent of them
-- to step_executions through its primary key, so step_executions needs no
-- new index and its updates stay HOT.
-- Partial: executions still running have no finished_at and are left out.
-- Ending an execution already changes `status` (indexed), so the update that
-- sets finished_at was not HOT before this index either: it costs the
-- projector one more index entry per ended execution, nothing per event.
CREATE INDEX IF NOT EXISTS workflow_executions_finished_idx
    ON workflow_executions (finished_at)
    INCLUDE (workflow_name, status, started_at, created_at)
    WHERE finished_at IS NOT NULL;

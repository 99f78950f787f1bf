-- Event schema v2: executions started by other executions, compensation,
-- wait_for_event steps and the services' circuit breakers.
-- Nullable columns without defaults (or with a constant default): adding them
-- rewrites no existing row. Existing rows read as "no parent, no
-- compensation, main steps", which is what their (v1) events say.

ALTER TABLE workflow_executions
    -- WorkflowStarted / WorkflowStartRejected: the execution that started this one, and why
    ADD COLUMN parent_execution_id       text,
    ADD COLUMN parent_relation           text,   -- "compensation"
    -- ChildExecutionRequested (relation compensation): the compensation workflow's execution
    ADD COLUMN compensation_execution_id text,
    -- CompensationStarted -> running; CompensationFinished -> its outcome
    ADD COLUMN compensation_status       text CHECK (compensation_status IN ('running', 'completed', 'failed')),
    ADD COLUMN compensation_error        text,   -- CompensationFinished.error (why compensation failed)
    ADD COLUMN compensation_trigger      text,   -- CompensationStarted.trigger: failed | cancelled
    ADD COLUMN compensation_reason       text;   -- CompensationStarted.error: why the execution is ending

-- "the executions this one started" (status, audit): few rows have a parent.
CREATE INDEX workflow_executions_parent_idx
    ON workflow_executions (parent_execution_id, created_at, id)
    WHERE parent_execution_id IS NOT NULL;

ALTER TABLE step_executions
    -- 'compensation': the row was created while the execution was compensating
    -- (a step of spec.compensation.steps; names never collide with main steps)
    ADD COLUMN phase       text NOT NULL DEFAULT 'main' CHECK (phase IN ('main', 'compensation')),
    -- StepWaiting: the event type, or "signal:<name>"; NULL for steps that never waited
    ADD COLUMN waiting_for text,
    -- StepAttemptFailed.breaker: the service's circuit breaker after the last attempt
    -- that reported one (closed | open | half_open)
    ADD COLUMN breaker     text;

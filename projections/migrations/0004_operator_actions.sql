-- Event schema v4: operators' actions. An execution can be `paused`
-- (ExecutionPaused / ExecutionResumed); a retried one goes back to `running`
-- (ExecutionRetried); an operator's StepSkipped carries the step's output,
-- which lands in the existing `output` column.

-- The new constraint admits every value the old one did, so existing rows need
-- no check: NOT VALID skips the scan while the constraint holds for new rows.
ALTER TABLE workflow_executions DROP CONSTRAINT workflow_executions_status_check;
ALTER TABLE workflow_executions ADD CONSTRAINT workflow_executions_status_check CHECK (status IN
    ('pending', 'running', 'paused', 'compensating', 'completed', 'failed', 'cancelled')) NOT VALID;

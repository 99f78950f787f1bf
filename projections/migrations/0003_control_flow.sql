-- Event schema v3: control flow. switch, loop, for_each, workflow and delay
-- steps; steps withdrawn before they ended (StepCancelled).
-- Nullable columns without defaults: adding them rewrites no existing row, and
-- existing rows read as "a plain step, not inside a block", which is what
-- their (v1, v2) events say.

-- A step can now end `cancelled`. The new constraint admits every value the
-- old one did, so existing rows need no check: NOT VALID skips the scan of the
-- whole table while the constraint holds for every row written from now on.
ALTER TABLE step_executions DROP CONSTRAINT step_executions_status_check;
ALTER TABLE step_executions ADD CONSTRAINT step_executions_status_check CHECK (status IN
    ('pending', 'running', 'retrying', 'completed', 'failed', 'skipped', 'waiting', 'cancelled')) NOT VALID;

ALTER TABLE step_executions
    -- The composite step whose block runs this step: a switch case's step has
    -- the switch's name; `pay_all[3].charge` (item 3 of for_each pay_all) has
    -- `pay_all`; `outer[1].inner[0].leaf` has `outer[1].inner`. NULL at top level.
    ADD COLUMN parent_step          text,
    -- ChildExecutionRequested (relation subworkflow): a workflow step's child execution
    ADD COLUMN child_execution_id   text,
    -- BranchChosen: the case a switch runs (its name, `case<i>`, or `default`)
    ADD COLUMN branch               text,
    -- ItemsResolved: how many items a for_each runs over
    ADD COLUMN items_total          integer,
    -- IterationStarted / IterationFinished of a loop or for_each: iterations
    -- (items) started, and ended completed or failed (cancelled ones are in
    -- neither); NULL for every other step
    ADD COLUMN iterations_started   integer,
    ADD COLUMN iterations_completed integer,
    ADD COLUMN iterations_failed    integer,
    -- StepWaiting.timeout_at: when a delay step wakes, or a wait gives up
    ADD COLUMN wait_until           timestamptz;

-- `status` of a child execution: "started by <parent>, step <key>". Few rows
-- have a child, and the column is set once, so updates stay HOT otherwise.
CREATE INDEX step_executions_child_idx
    ON step_executions (child_execution_id)
    WHERE child_execution_id IS NOT NULL;

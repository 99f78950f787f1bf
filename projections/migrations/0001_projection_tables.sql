-- Projection tables built from wf.events and wf.definitions by the projector.
-- Every row is derived from Kafka only: the tables can be truncated and
-- rebuilt from offset 0 (`orchestrator projections rebuild`).
-- Timestamps are the recorded times of events (the decider's `now`), never
-- the projector's clock, so a rebuild reproduces them exactly; only
-- `projected_at` columns record when the projector wrote a row.

CREATE TABLE workflow_definitions (
    name            text        NOT NULL,
    version         text        NOT NULL,
    digest          text        NOT NULL,
    source          text        NOT NULL,
    source_format   text        NOT NULL,
    registered_at   timestamptz NOT NULL,
    registered_by   text,
    step_count      integer     NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    projected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE workflow_executions (
    id               text        PRIMARY KEY,
    workflow_name    text        NOT NULL,
    workflow_version text,        -- NULL only for a rejected start that named no version
    status           text        NOT NULL CHECK (status IN
                         ('pending', 'running', 'compensating', 'completed', 'failed', 'cancelled')),
    input            jsonb,       -- sensitive values redacted to "***"
    output           jsonb,
    error            text,
    failed_step      text,
    requested_by     text,
    created_at       timestamptz NOT NULL,  -- recorded_at of the first event
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL,  -- recorded_at of the last event
    last_sequence    integer     NOT NULL,
    projected_at     timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);  -- room for HOT updates: most events change no indexed column

CREATE INDEX workflow_executions_status_created_idx
    ON workflow_executions (status, created_at DESC, id);
CREATE INDEX workflow_executions_workflow_created_idx
    ON workflow_executions (workflow_name, workflow_version, created_at DESC, id);
CREATE INDEX workflow_executions_created_idx
    ON workflow_executions (created_at DESC, id);

CREATE TABLE step_executions (
    execution_id  text        NOT NULL,
    step_name     text        NOT NULL,
    step_type     text,        -- NULL when the definition could not be found
    status        text        NOT NULL CHECK (status IN
                      ('pending', 'running', 'retrying', 'completed', 'failed', 'skipped', 'waiting')),
    attempts      integer     NOT NULL DEFAULT 0,
    output        jsonb,
    error         text,
    status_reason text,        -- why a step was skipped
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL,  -- recorded_at of the last event that touched the step
    projected_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_id, step_name)
) WITH (fillfactor = 80);

CREATE TABLE execution_events (
    execution_id    text        NOT NULL,
    sequence        integer     NOT NULL,
    event_type      text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    cause           text        NOT NULL,
    payload         jsonb       NOT NULL,  -- the event's fields, sensitive values redacted
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    PRIMARY KEY (execution_id, sequence),
    UNIQUE (kafka_partition, kafka_offset)
);

-- Where each projection stands, per topic-partition: written in the same
-- transaction as the rows, read back on partition assignment.
CREATE TABLE projection_offsets (
    projection  text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Alert events waiting to be put on the EventBridge alert bus. A row is written in the same
-- transaction as the evidence record of the transition it reports (keyed by that record's
-- event id), so an alert exists exactly once per transition and is never lost when
-- publishing fails: the publisher retries until EventBridge accepts it.
CREATE TABLE alert_outbox (
    id               bigserial   PRIMARY KEY,
    evidence_event_id text       NOT NULL UNIQUE,
    evidence_seq     bigint      NOT NULL,
    evidence_hash    text        NOT NULL,
    detail_type      text        NOT NULL,
    detail           jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0,
    last_error       text,
    published_at     timestamptz
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE published_at IS NULL;

-- One row per reconcile sweep, so every replica reports the same "last success" time.
CREATE TABLE reconcile_runs (
    id            bigserial   PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    succeeded     boolean,
    repositories  integer     NOT NULL DEFAULT 0,
    images        integer     NOT NULL DEFAULT 0,
    changes       integer     NOT NULL DEFAULT 0,
    error         text
);
CREATE INDEX reconcile_runs_success ON reconcile_runs (finished_at) WHERE succeeded;
